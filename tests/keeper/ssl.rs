//! PostgreSQL's side of "secure by default" (issue #11, item 3): SSL for
//! replication, pg_rewind and the monitor's probes, SCRAM, hostssl-only
//! managed pg_hba.conf lines, no secret in `ps`, logs or events; and
//! operator-supplied certificates with sslmode=verify-full.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::ConnectOptions;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

/// The replication password the monitor handed to a node.
pub(crate) fn replication_password(k: &KeeperProc) -> String {
    let text = std::fs::read_to_string(pgpilot_keeper::files::config_path(&k.pgdata)).unwrap();
    let config: pgpilot_keeper::config::KeeperConfig = toml::from_str(&text).unwrap();
    assert!(!config.replication_password.is_empty());
    config.replication_password
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// "streaming walsenders over SSL / all walsenders" on `k`.
async fn ssl_walsenders(k: &KeeperProc) -> Option<String> {
    k.query(
        "SELECT count(*) FILTER (WHERE s.ssl)::text || '/' || count(*)::text \
         FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'",
    )
    .await
    .ok()
    .flatten()
}

pub(crate) async fn wait_ssl_walsenders(k: &KeeperProc, want: &str) {
    eventually(
        &format!("{want} SSL walsenders on {}", k.name),
        STEP,
        || async { (ssl_walsenders(k).await.as_deref() == Some(want)).then_some(()) },
    )
    .await;
}

/// A TCP connection to `k` as `user`.
pub(crate) async fn tcp(
    k: &KeeperProc,
    user: &str,
    password: &str,
    mode: PgSslMode,
) -> Result<sqlx::PgConnection, sqlx::Error> {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(k.port)
        .username(user)
        .password(password)
        .database("postgres")
        .ssl_mode(mode)
        .connect()
        .await
}

/// Samples `ps -eo args` every 50 ms until stopped; returns every line
/// that contained one of the secrets.
pub(crate) struct PsWatch {
    secrets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<std::collections::HashSet<String>>>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl PsWatch {
    pub(crate) fn start(secrets: Vec<String>) -> PsWatch {
        let secrets = Arc::new(Mutex::new(secrets));
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let (s, f) = (stop.clone(), found.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = 0;
            while !s.load(Ordering::Relaxed) {
                let out = std::process::Command::new("ps")
                    .args(["-eo", "args"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                // Every distinct line is kept and matched in `finish`, so
                // a secret learnt later is found in lines sampled before.
                let mut lines = f.lock().unwrap();
                for line in text.lines() {
                    if !lines.contains(line) {
                        lines.insert(line.to_string());
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        PsWatch {
            secrets,
            stop,
            found,
            thread: Some(thread),
        }
    }

    /// Watches for `secret` too from now on.
    pub(crate) fn add(&self, secret: String) {
        self.secrets.lock().unwrap().push(secret);
    }

    /// (samples taken, lines that held a secret).
    pub(crate) fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.thread.take().unwrap().join().unwrap();
        let secrets = self.secrets.lock().unwrap().clone();
        let leaked = self
            .found
            .lock()
            .unwrap()
            .iter()
            .filter(|l| secrets.iter().any(|s| l.contains(s.as_str())))
            .cloned()
            .collect();
        (n, leaked)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_and_scram_through_bootstrap_failover_and_rewind_rejoin() {
    let dir = TestDir::new("k-ssl");
    let monitor = MonitorProc::start(&dir).await;
    // The control plane's secrets, watched for from before the nodes
    // are created (`create postgres` holds the join token).
    let secret_of = |token: &str| token.trim().split('.').nth(1).unwrap().to_string();
    let mut secrets = vec![
        secret_of(&monitor.join_token()),
        secret_of(&monitor.auth().token.unwrap()),
    ];
    let ps = PsWatch::start(secrets.clone());
    let (mut a, b) = primary_and_secondary(&dir, &monitor).await;
    let password = replication_password(&a);
    ps.add(password.clone());
    secrets.push(password.clone());
    for k in [&a, &b] {
        let credential =
            std::fs::read_to_string(pgpilot_keeper::monitor_auth::credential_path(&k.pgdata))
                .unwrap();
        let credential = credential.trim().rsplit('.').next().unwrap().to_string();
        ps.add(credential.clone());
        secrets.push(credential);
    }

    // Both servers run SSL with their own generated certificate, outside
    // PGDATA, the key 0600; passwords are stored as SCRAM verifiers.
    for k in [&a, &b] {
        assert_eq!(k.query("SHOW ssl").await.unwrap(), Some("on".into()));
        assert_eq!(
            k.query("SHOW password_encryption").await.unwrap(),
            Some("scram-sha-256".into())
        );
        let ssl = pgpilot_keeper::pg::ssl::ssl_dir(&k.pgdata);
        assert_eq!(mode(&ssl.join("server.key")), 0o600);
        assert_eq!(
            k.query("SHOW ssl_key_file").await.unwrap(),
            Some(ssl.join("server.key").to_string_lossy().into_owned())
        );
        assert!(!k.pgdata.join("server.key").exists());
        let verifier = k
            .query("SELECT rolpassword FROM pg_authid WHERE rolname = 'pgpilot_replicator'")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(
            verifier.starts_with("SCRAM-SHA-256$"),
            "{}",
            verifier.chars().take(14).collect::<String>()
        );
    }
    let a_cert = std::fs::read(pgpilot_keeper::pg::ssl::ssl_dir(&a.pgdata).join("server.crt"));
    let b_cert = std::fs::read(pgpilot_keeper::pg::ssl::ssl_dir(&b.pgdata).join("server.crt"));
    assert_ne!(a_cert.unwrap(), b_cert.unwrap(), "one certificate per node");

    // B streams from A over SSL; its primary_conninfo says so, and the
    // file that holds it (with the password) is 0600.
    wait_ssl_walsenders(&a, "1/1").await;
    let conninfo = b.query("SHOW primary_conninfo").await.unwrap().unwrap();
    assert!(conninfo.contains(" sslmode=require"), "{conninfo}");
    assert_eq!(
        mode(&b.pgdata.join(pgpilot_keeper::files::PG_CONF_NAME)),
        0o600
    );

    // The managed block is hostssl and SCRAM only; plain text is refused
    // for our roles, SSL with the password is let in.
    let hba = std::fs::read_to_string(a.pgdata.join("pg_hba.conf")).unwrap();
    let block: Vec<&str> = hba
        .lines()
        .skip_while(|l| !l.starts_with("# BEGIN pgpilot"))
        .take_while(|l| !l.starts_with("# END pgpilot"))
        .skip(1)
        .collect();
    assert!(!block.is_empty());
    for l in &block {
        assert!(
            (l.starts_with("hostssl ") && l.ends_with(" scram-sha-256"))
                || (l.starts_with("host ") && l.ends_with(" reject")),
            "{l}"
        );
    }
    // The monitor probed both nodes all through the bootstrap: over SSL,
    // or the reject line would have logged a refusal every second.
    let no_plain_probe = |k: &KeeperProc, from: usize| {
        let log = k.log();
        let refused: Vec<&str> = log[from.min(log.len())..]
            .lines()
            .filter(|l| l.contains("no encryption") || l.contains("SSL error"))
            .collect();
        assert!(refused.is_empty(), "{}: {refused:?}", k.name);
    };
    no_plain_probe(&a, 0);
    no_plain_probe(&b, 0);
    for user in ["pgpilot_replicator", "pgpilot_monitor"] {
        let err = tcp(&a, user, &password, PgSslMode::Disable)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no encryption"), "{user}: {err}");
    }
    let mut c = tcp(&a, "pgpilot_replicator", &password, PgSslMode::Require)
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(ssl);
    drop(c);
    let err = tcp(&a, "pgpilot_replicator", "wrong", PgSslMode::Require)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");

    // The monitor's probe: it talks SSL (a plain-text probe would be
    // refused by the reject line and logged every second), and a direct
    // probe of both nodes says they accept connections.
    for k in [&a, &b] {
        let outcome =
            pgpilot_monitor::health::probe::probe("127.0.0.1", k.port, Duration::from_secs(2))
                .await;
        assert_eq!(
            outcome,
            pgpilot_monitor::health::probe::ProbeOutcome::Accepting
        );
    }
    // (Our own plain-text attempts above were logged; probes since not.)
    let since = (a.log().len(), b.log().len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    no_plain_probe(&a, since.0);
    no_plain_probe(&b, since.1);

    // Failover, then the old primary rejoins with pg_rewind, over SSL.
    a.query("CREATE TABLE t (i int)").await.unwrap();
    a.query("INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    a.kill9();
    wait_state(&monitor, "b", "wait_primary", STEP).await;
    b.query("INSERT INTO t VALUES (11)").await.unwrap();
    a.run();
    wait_state(&monitor, "a", "secondary", STEP).await;
    wait_state(&monitor, "b", "primary", STEP).await;
    let rejoin = &a.state()["last_rejoin"];
    assert_eq!(rejoin["method"], "pg_rewind", "{rejoin}");
    wait_ssl_walsenders(&b, "1/1").await;
    eventually("row 11 on a", STEP, || async {
        (a.query("SELECT count(*)::text FROM t")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("11"))
        .then_some(())
    })
    .await;

    // No secret anywhere: ps (sampled all along, pg_rewind included),
    // the logs of every process, the monitor's events.
    let (samples, leaked) = ps.finish();
    assert!(samples > 20, "{samples} ps samples");
    assert!(leaked.is_empty(), "a secret is in ps: {leaked:?}");
    let events = monitor.events().await.join("\n");
    for (i, secret) in secrets.iter().enumerate() {
        for (what, log) in [
            ("a", a.log()),
            ("b", b.log()),
            ("monitor", monitor.logged()),
        ] {
            assert!(
                !log.contains(secret.as_str()),
                "secret {i} is in the log of {what}"
            );
        }
        assert!(
            !events.contains(secret.as_str()),
            "secret {i} is in an event"
        );
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it (PEM files in
/// `dir`): (ca, cert, key).
fn operator_files(dir: &Path, tag: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("pgpilot test CA {tag}"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut node = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    node.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = node.signed_by(&key, &ca).unwrap();
    let path = |n: &str| {
        let p = dir.join(format!("{tag}-{n}"));
        p.to_string_lossy().into_owned()
    };
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_certificates_with_a_ca_mean_verify_full() {
    let dir = TestDir::new("k-sslca");
    let monitor = MonitorProc::start(&dir).await;
    let (ca, cert, key) = operator_files(&dir.path, "ours");
    let flags = [
        "--ssl-cert-file",
        cert.as_str(),
        "--ssl-key-file",
        key.as_str(),
        "--ssl-ca-file",
        ca.as_str(),
    ];
    let a = KeeperProc::create_with(&dir, &monitor.uri, "a", &flags);
    wait_state(&monitor, "a", "single", STEP).await;
    let b = KeeperProc::create_with(&dir, &monitor.uri, "b", &flags);
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_state(&monitor, "a", "primary", STEP).await;

    // keeper.toml keeps the operator's paths; the files are installed.
    let toml = std::fs::read_to_string(pgpilot_keeper::files::config_path(&b.pgdata)).unwrap();
    assert!(toml.contains("[ssl]"), "{toml}");
    assert!(toml.contains(&format!("ca_file = \"{ca}\"")), "{toml}");
    let installed = pgpilot_keeper::pg::ssl::ssl_dir(&a.pgdata);
    assert_eq!(
        std::fs::read_to_string(installed.join("server.crt")).unwrap(),
        std::fs::read_to_string(&cert).unwrap()
    );

    // B's stream (and its pg_basebackup before it) verified A's
    // certificate against the CA and its host name.
    let conninfo = b.query("SHOW primary_conninfo").await.unwrap().unwrap();
    assert!(
        conninfo.contains(" sslmode=verify-full sslrootcert="),
        "{conninfo}"
    );
    wait_ssl_walsenders(&a, "1/1").await;

    // verify-full is a real check: the right CA passes, another fails.
    let password = replication_password(&a);
    let (other_ca, _, _) = operator_files(&dir.path, "theirs");
    for (root, ok) in [(&ca, true), (&other_ca, false)] {
        let r = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(a.port)
            .username("pgpilot_replicator")
            .password(&password)
            .database("postgres")
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(root.as_str())
            .connect()
            .await;
        assert_eq!(r.is_ok(), ok, "root {root}: {:?}", r.err());
    }
}

#[test]
fn ssl_flags_are_checked_before_anything_is_created() {
    let dir = TestDir::new("k-sslflags");
    let pgdata = dir.join("n");
    let out = pgpilot(&[
        "create",
        "postgres",
        "--pgdata",
        path_str(&pgdata),
        "--monitor",
        "http://127.0.0.1:1",
        "--ssl-cert-file",
        "/nonexistent/cert.pem",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ssl-key-file"), "{err}");
    assert!(!pgdata.exists());
}
