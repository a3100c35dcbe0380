//! The operator's `enable maintenance` / `disable maintenance` on real
//! processes. A quorum standby leaves the synchronous set, goes into
//! maintenance, and the operator stops its PostgreSQL by hand: its keeper
//! does not start it again and keeps reporting, and nothing fails over.
//! Disable brings it back as a secondary. On the primary it is a
//! switchover first; the old primary then stays stopped in maintenance.
//!
//! A client commits throughout through the formation URI; every check of
//! "what survived" is against the commits it saw acknowledged.

use std::time::{Duration, Instant};

use pgpilot_pgproc::{self as pgproc, PgBin, PgCommand};

use crate::forced_failover::{diagnostics, node_id, operator, text};
use crate::support::writer::{self, Writer};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How often the test client commits.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// How long the test watches that the keeper leaves the stopped
/// PostgreSQL alone and that nothing fails over.
const HANDS_OFF: Duration = Duration::from_secs(5);

/// `show state --json`'s row of node `name`.
fn state_row(monitor: &MonitorProc, name: &str) -> serde_json::Value {
    let out = pgpilot_ok(&["show", "state", "--json", "--monitor", &monitor.uri]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {out}"))
}

/// What `show standby-names` prints (synchronous_standby_names of the
/// primary).
fn standby_names(monitor: &MonitorProc) -> String {
    pgpilot_ok(&["show", "standby-names", "--monitor", &monitor.uri])
        .trim()
        .to_string()
}

/// `pg_ctl stop -D PGDATA -m fast` as the operator runs it: as the OS
/// user PostgreSQL runs as.
async fn operator_stops_postgres(k: &KeeperProc) {
    let bin = PgBin::discover().expect("PostgreSQL binaries");
    let runner = pgproc::postgres_runner(None).unwrap();
    PgCommand::new(&bin, "pg_ctl")
        .args(["stop", "-w", "-m", "fast", "-D", path_str(&k.pgdata)])
        .user(&runner)
        .timeout(STEP)
        .run()
        .await
        .unwrap_or_else(|e| panic!("pg_ctl stop of {}: {e:#}", k.name));
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_of_a_standby_leaves_its_stopped_postgres_alone_and_fails_nothing_over() {
    let dir = TestDir::new("k-maint");
    let monitor = MonitorProc::start(&dir).await;
    let _diag = diagnostics(&monitor);
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    let b_slot = format!("pgpilot_node_{}", node_id(&b));
    assert_eq!(standby_names(&monitor), format!("ANY 1 ({b_slot})"));
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 20, STEP).await;

    let (out, took) = operator(
        &monitor,
        &["enable", "maintenance", "--name", "b", "--wait", "60"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "enable maintenance took {:.2} s: {}",
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    wait_state(&monitor, "b", "maintenance", STEP).await;
    // No quorum standby is left: a commits alone, as wait_primary.
    wait_state(&monitor, "a", "wait_primary", STEP).await;
    let names = standby_names(&monitor);
    assert!(!names.contains(&b_slot), "b still named: {names:?}");
    assert_eq!(
        a.query("SHOW synchronous_standby_names").await.unwrap(),
        Some(String::new())
    );
    let after = client.acks().len();
    client.wait_acks_on(a.port, after, 10, STEP).await;

    // The operator stops b's PostgreSQL by hand.
    let pm = b.postmaster_pid().expect("b's postmaster runs");
    operator_stops_postgres(&b).await;
    let stopped = Instant::now();
    let acks_at_stop = client.acks().len();
    let report_at_stop = state_row(&monitor, "b")["last_report"].clone();
    tokio::time::sleep(HANDS_OFF).await;

    // The keeper left it down.
    let pid_file = std::fs::read_to_string(b.pgdata.join("postmaster.pid"));
    assert!(
        pid_file
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        "b's PostgreSQL was started again: {pid_file:?}"
    );
    assert_eq!(b.postmaster_pid(), None);
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pm), None).is_err(),
        "b's old postmaster {pm} still runs"
    );
    // It still reports, and says so honestly.
    let row = state_row(&monitor, "b");
    eprintln!("b after {HANDS_OFF:?} with PostgreSQL down: {row}");
    assert_eq!(row["reported_state"], "maintenance", "{row}");
    assert_eq!(row["assigned_state"], "maintenance", "{row}");
    assert_eq!(row["pg_running"], false, "{row}");
    assert_ne!(
        row["last_report"], report_at_stop,
        "b's keeper sent no report in {HANDS_OFF:?}"
    );
    // No failover: a is the writable primary and takes the client's commits.
    let states = node_states(&mut monitor.client().await).await;
    assert_eq!(
        states["a"],
        ("wait_primary".to_string(), "wait_primary".to_string()),
        "{states:?}"
    );
    assert_eq!(
        a.query("SELECT pg_is_in_recovery()::text").await.unwrap(),
        Some("false".into())
    );
    let acks = client.acks();
    let during: Vec<_> = acks[acks_at_stop..].iter().collect();
    assert!(
        during.len() >= 50,
        "only {} commits in the {:.1} s b's PostgreSQL was down",
        during.len(),
        stopped.elapsed().as_secs_f64()
    );
    assert!(during.iter().all(|x| x.port == a.port), "{during:?}");
    let events = monitor.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.contains("failover") && !e.contains("failovers")),
        "{events:?}"
    );

    let (out, took) = operator(
        &monitor,
        &["disable", "maintenance", "--name", "b", "--wait", "60"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "disable maintenance took {:.2} s: {}",
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_state(&monitor, "a", "primary", STEP).await;
    assert_eq!(standby_names(&monitor), format!("ANY 1 ({b_slot})"));
    assert!(
        b.postmaster_pid().is_some(),
        "b's PostgreSQL is not running"
    );
    assert_eq!(
        b.query("SELECT pg_is_in_recovery()::text").await.unwrap(),
        Some("true".into())
    );

    let after = client.acks().len();
    client.wait_acks_on(a.port, after, 10, STEP).await;
    let failures = client.failures().len();
    let acks = client.stop().await;
    eprintln!(
        "{} rows acknowledged, {failures} failed attempts",
        acks.len()
    );
    assert!(acks.iter().all(|x| x.port == a.port));
    assert_eq!(writer::missing(&a, &acks).await, Vec::<i64>::new());
    for line in b
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        eprintln!("b's log: {line}");
    }
    let events = monitor.events().await;
    for e in events.iter().filter(|e| e.contains("maintenance")) {
        eprintln!("event: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_of_the_primary_is_a_switchover_first() {
    let dir = TestDir::new("k-maint-p");
    let monitor = MonitorProc::start(&dir).await;
    let _diag = diagnostics(&monitor);
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 5, STEP).await;

    let (out, took) = operator(
        &monitor,
        &[
            "enable",
            "maintenance",
            "--name",
            "a",
            "--allow-failover",
            "--wait",
            "60",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "enable maintenance of the primary took {:.2} s",
        took.as_secs_f64()
    );
    // The primary moved to b, and a stays stopped in maintenance instead
    // of rejoining.
    wait_state(&monitor, "a", "maintenance", STEP).await;
    wait_state(&monitor, "b", "wait_primary", STEP).await;
    tokio::time::sleep(HANDS_OFF).await;
    let row = state_row(&monitor, "a");
    assert_eq!(row["reported_state"], "maintenance", "{row}");
    assert!(
        a.postmaster_pid().is_none(),
        "a's PostgreSQL runs in maintenance"
    );
    let n = client.acks().len();
    client.wait_acks_on(b.port, n, 5, STEP).await;

    let (out, _) = operator(
        &monitor,
        &["disable", "maintenance", "--name", "a", "--wait", "60"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    wait_state(&monitor, "a", "secondary", STEP).await;
    wait_state(&monitor, "b", "primary", STEP).await;
    let acks = client.stop().await;
    assert_eq!(writer::missing(&b, &acks).await, Vec::<i64>::new());
    let events = monitor.events().await;
    assert!(
        events.iter().any(|e| e.contains("a switchover first")),
        "{events:?}"
    );
}
