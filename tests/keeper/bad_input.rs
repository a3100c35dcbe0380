//! `create postgres` refuses what it cannot use, with an error that names
//! the problem and the fix, and leaves nothing registered; an existing
//! stopped primary is adopted as the first node without initdb.

use std::time::{Duration, Instant};

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

fn create(dir: &TestDir, monitor: &str, name: &str, port: u16) -> (bool, String) {
    create_with_http(dir, monitor, name, port, None)
}

/// `create`, with `--http-listen http` when given.
fn create_with_http(
    dir: &TestDir,
    monitor: &str,
    name: &str,
    port: u16,
    http: Option<&str>,
) -> (bool, String) {
    let mut args = KeeperProc::create_args(dir, monitor, name, port);
    if let Some(http) = http {
        let at = args.iter().position(|a| a == "--http-listen").unwrap();
        args[at + 1] = http.to_string();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pgpilot(&args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_down_is_a_clear_error_after_bounded_retries() {
    let dir = TestDir::new("k-nomon");
    let nobody = format!("http://127.0.0.1:{}", free_port());
    // A well-formed join token where create_args looks for it: the node
    // gets as far as trying to reach the monitor.
    let token = pgpilot_monitor::auth::join_token_path(&dir.join("monitor"));
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, format!("PGJ1.{}\n", "ab".repeat(32))).unwrap();
    let started = Instant::now();
    let (ok, out) = create(&dir, &nobody, "a", free_port());
    assert!(!ok);
    assert!(out.contains("cannot reach the monitor"), "{out}");
    assert!(out.contains("gave up after 5 attempts"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pgdata_port_and_system_identifier_are_refused() {
    let dir = TestDir::new("k-bad");
    let monitor = MonitorProc::start(&dir).await;

    // A non-empty directory that is not PostgreSQL.
    std::fs::create_dir_all(dir.join("junk")).unwrap();
    std::fs::write(dir.join("junk/notes.txt"), "mine").unwrap();
    let (ok, out) = create(&dir, &monitor.uri, "junk", free_port());
    assert!(!ok);
    assert!(
        out.contains("is not empty and is not a PostgreSQL data directory"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("junk/notes.txt")).unwrap(),
        "mine"
    );

    // A port somebody else listens on.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (ok, out) = create(&dir, &monitor.uri, "busy", port);
    assert!(!ok);
    assert!(
        out.contains(&format!("port {port} is already in use")),
        "{out}"
    );
    drop(taken);
    // An HTTP address somebody else listens on, and one that is none.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().to_string();
    let (ok, out) = create_with_http(&dir, &monitor.uri, "busy", free_port(), Some(&http));
    assert!(!ok);
    assert!(
        out.contains(&format!("cannot listen for HTTP on {http}")),
        "{out}"
    );
    assert!(out.contains("--http-listen off"), "{out}");
    drop(taken);
    let (ok, out) = create_with_http(&dir, &monitor.uri, "busy", free_port(), Some("8432"));
    assert!(!ok);
    assert!(out.contains("http_listen \"8432\" has no port"), "{out}");
    assert!(
        node_states(&mut monitor.client().await).await.is_empty(),
        "nothing registered"
    );

    // An existing stopped primary becomes the first node without initdb.
    let mut existing = NodePg::create(&dir, "adopted").await;
    existing.execute("CREATE TABLE kept (i int)").await;
    existing.stop().await;
    let a = KeeperProc::create(&dir, &monitor.uri, "adopted");
    wait_state(&monitor, "adopted", "single", STEP).await;
    assert_eq!(
        a.query("SELECT string_agg(relname, ',') FROM pg_class WHERE relname = 'kept'")
            .await
            .unwrap(),
        Some("kept".into()),
        "the adopted cluster kept its data"
    );
    assert!(
        !a.log().contains("initdb in"),
        "no initdb for an adopted cluster"
    );

    // A second node whose PGDATA is another cluster.
    let mut other = NodePg::create(&dir, "other").await;
    other.stop().await;
    let (ok, out) = create(&dir, &monitor.uri, "other", free_port());
    assert!(!ok);
    assert!(out.contains("system identifier"), "{out}");
    assert!(out.contains("different database cluster"), "{out}");
    let states = node_states(&mut monitor.client().await).await;
    assert_eq!(states.len(), 1, "{states:?}");
}
