//! `pgpilot config get|set|check` on a keeper.toml and a monitor.toml
//! (written by the configurations' own `save`; no process runs): a
//! change is validated as `run` validates, a refused one leaves the file
//! as it was, secrets are not printed.

use std::path::Path;
use std::time::Duration;

use pgpilot_keeper::config::{Auth, KeeperConfig};
use pgpilot_monitor::config::{MonitorConfig, Timings};

use crate::support::*;

fn keeper_toml(pgdata: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(pgpilot_keeper::files::state_dir(pgdata)).unwrap();
    KeeperConfig {
        pgdata: pgdata.to_path_buf(),
        monitor: "http://127.0.0.1:5430".into(),
        formation: "default".into(),
        name: "a".into(),
        hostname: "127.0.0.1".into(),
        pgport: 5432,
        listen_addresses: "*".into(),
        dbname: "postgres".into(),
        username: "postgres".into(),
        candidate_priority: 50,
        replication_quorum: true,
        auth: Auth::Scram,
        pg_user: "postgres".into(),
        poll_interval: Duration::from_millis(400),
        maximum_backup_rate: "100M".into(),
        http_listen: None,
        postgres_dies_with_keeper: false,
        pre_promote: None,
        on_role_change: None,
        hook_timeout: Duration::from_secs(30),
        replication_password: "s3cret-pw".into(),
        replication_password_generation: 1,
        ssl: Default::default(),
    }
    .save()
    .unwrap();
    pgpilot_keeper::files::config_path(pgdata)
}

/// `pgpilot ARGS` that must fail: its stderr.
fn refused(args: &[&str]) -> String {
    let out = pgpilot(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keeper_config_get_set_check() {
    let dir = TestDir::new("k-config");
    let pgdata = dir.join("a");
    let path = keeper_toml(&pgdata);
    let d = path_str(&pgdata);
    let get = |key: &str| pgpilot_ok(&["config", "get", "--pgdata", d, key]);

    assert!(pgpilot_ok(&["config", "check", "--pgdata", d]).contains("is valid"));
    assert_eq!(get("maximum_backup_rate"), "100M\n");
    assert_eq!(get("pgport"), "5432\n");
    // Absent: the default that applies.
    assert_eq!(get("http_listen"), "127.0.0.1:8432\n");
    // The secret is not printed.
    assert_eq!(get("replication_password"), "***\n");

    // A good change: written, and what it takes to apply said.
    let said = pgpilot_ok(&["config", "set", "--pgdata", d, "maximum_backup_rate", "50M"]);
    assert!(
        said.contains("applies when the keeper next starts"),
        "{said}"
    );
    assert!(said.contains("--keeper-only"), "{said}");
    assert_eq!(get("maximum_backup_rate"), "50M\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let said = pgpilot_ok(&[
        "config",
        "set",
        "--pgdata",
        d,
        "postgres_dies_with_keeper",
        "true",
    ]);
    assert!(said.contains("PostgreSQL's next start"), "{said}");
    pgpilot_ok(&["config", "set", "--pgdata", d, "http_listen", "off"]);
    assert_eq!(get("http_listen"), "off\n");
    // The password survived the rewrites.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("s3cret-pw"), "{text}");

    // Bad values: refused with the reason, the file unchanged.
    let before = std::fs::read(&path).unwrap();
    for (key, value, why) in [
        (
            "maximum_backup_rate",
            "fast",
            "maximum_backup_rate \"fast\" is not a rate",
        ),
        ("poll_interval", "1h", "would fence itself"),
        ("poll_interval", "soon", "poll_interval"),
        (
            "postgres_dies_with_keeper",
            "maybe",
            "postgres_dies_with_keeper",
        ),
        ("http_listen", "nowhere", "has no port"),
        ("monitor", "localhost:5430", "is not a monitor URI"),
        ("pgport", "6000", "the monitor registered it"),
        (
            "candidate_priority",
            "10",
            "pgpilot set node candidate-priority",
        ),
        ("replication_password", "x", "not changed with `config set`"),
    ] {
        let err = refused(&["config", "set", "--pgdata", d, key, value]);
        assert!(err.contains(why), "{key} = {value}: {err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{key} = {value} changed the file"
        );
        if !err.contains("config set") {
            assert!(err.contains("is unchanged"), "{err}");
        }
    }
    // An unknown key names the valid ones.
    let err = refused(&["config", "get", "--pgdata", d, "max_rate"]);
    assert!(err.contains("has no key \"max_rate\""), "{err}");
    assert!(err.contains("maximum_backup_rate, http_listen"), "{err}");
    let err = refused(&["config", "set", "--pgdata", d, "max_rate", "1"]);
    assert!(err.contains("its keys are pgdata, monitor"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // check is run's validation: a file run refuses, check refuses.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("poll_interval = \"400ms\"", "poll_interval = \"5s\""),
    )
    .unwrap();
    let err = refused(&["config", "check", "--pgdata", d]);
    assert!(err.contains("would fence itself"), "{err}");
    let err = refused(&["run", "--pgdata", d]);
    assert!(err.contains("would fence itself"), "{err}");
    // ... and set can repair it.
    pgpilot_ok(&["config", "set", "--pgdata", d, "poll_interval", "400ms"]);
    pgpilot_ok(&["config", "check", "--pgdata", d]);

    let err = refused(&["config", "check", "--pgdata", path_str(&dir.join("none"))]);
    assert!(err.contains("has no pgpilot monitor or node"), "{err}");
}

#[test]
fn monitor_config_get_set_check() {
    let dir = TestDir::new("k-config-m");
    let pgdata = dir.join("monitor");
    std::fs::create_dir_all(pgpilot_monitor::files::state_dir(&pgdata)).unwrap();
    let path = pgpilot_monitor::files::monitor_config_path(&pgdata);
    MonitorConfig {
        listen: "127.0.0.1:5430".parse().unwrap(),
        hostname: "127.0.0.1".into(),
        pgdata: pgdata.clone(),
        database_url: Some("postgres://u:pw@db/x".into()),
        pg_user: "postgres".into(),
        http_listen: None,
        ssl: true,
        timings: Timings::default(),
    }
    .save(&path)
    .unwrap();
    let d = path_str(&pgdata);
    let get = |key: &str| pgpilot_ok(&["config", "get", "--pgdata", d, key]);
    pgpilot_ok(&["config", "check", "--pgdata", d]);
    assert_eq!(get("listen"), "127.0.0.1:5430\n");
    assert_eq!(get("timings.lease"), "1s 200ms\n");
    assert_eq!(get("database_url"), "***\n");
    assert_eq!(get("http_listen"), "127.0.0.1:8430\n");

    let said = pgpilot_ok(&["config", "set", "--pgdata", d, "timings.probe_retries", "3"]);
    assert!(
        said.contains("applies when the monitor next starts"),
        "{said}"
    );
    assert_eq!(get("timings.probe_retries"), "3\n");

    let before = std::fs::read(&path).unwrap();
    let err = refused(&["config", "set", "--pgdata", d, "timings.lease", "400ms"]);
    assert!(
        err.contains(
            "timings.lease (400ms) must be longer than timings.keeper_poll_interval (400ms)"
        ),
        "{err}"
    );
    assert!(err.contains("is unchanged"), "{err}");
    let err = refused(&["config", "set", "--pgdata", d, "listen", "somewhere"]);
    assert!(err.contains("listen"), "{err}");
    let err = refused(&["config", "get", "--pgdata", d, "lease"]);
    assert!(err.contains("timings.lease"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// Before the monitor's first reply names the timing contract, a keeper
/// assumes one of its own: it must be the monitor's default, or a fresh
/// keeper would fence (or trust its lease) on other numbers than the
/// monitor's lease gate counts with.
#[test]
fn the_contract_a_keeper_assumes_is_the_monitors_default() {
    let d = pgpilot_monitor::fsm::FsmConfig::default();
    assert_eq!(pgpilot_keeper::engine::DEFAULT_LEASE, d.lease);
    assert_eq!(
        pgpilot_keeper::engine::DEFAULT_REPORT_TIMEOUT,
        d.report_timeout
    );
}
