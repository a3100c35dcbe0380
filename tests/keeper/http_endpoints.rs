//! The keepers' HTTP endpoints on real processes: what /primary, /replica,
//! /read-only, /sync and /health answer on a primary, a synchronous
//! standby, a standby whose replay lags, a standby in maintenance with its
//! PostgreSQL stopped by the operator, and a primary that fenced itself;
//! the keepers' and the monitor's /metrics, parsed. And HAProxy, routing
//! writes by `/primary` as the README configures it, across the kill of
//! the primary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgpilot_pgproc::{self as pgproc, PgBin, PgCommand};

use crate::forced_failover::{operator, text};
use crate::support::http::{self, code, get, scrape};
use crate::support::writer::{self, Writer};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
const ENDPOINTS: [&str; 5] = ["/primary", "/replica", "/read-only", "/sync", "/health"];

/// What each endpoint answers, in [`ENDPOINTS`]' order (`None`: nothing
/// answers).
async fn codes(port: u16) -> [Option<u16>; 5] {
    let mut out = [None; 5];
    for (o, path) in out.iter_mut().zip(ENDPOINTS) {
        *o = code(port, path).await;
    }
    out
}

/// Waits until `port` answers `want` on every endpoint.
async fn wait_codes(what: &str, port: u16, want: [u16; 5]) {
    let want = want.map(Some);
    eventually(what, STEP, || async {
        let got = codes(port).await;
        (got == want).then_some(())
    })
    .await;
}

/// Runs `sql` (no result) as the superuser on `k`.
async fn execute(k: &KeeperProc, sql: &str) {
    let mut c = k.connect().await.unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// `pg_ctl stop -m fast` as the operator runs it.
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

fn state_of<'a>(e: &'a http::Exposition, metric: &str) -> Vec<&'a str> {
    e.find(metric, &[])
        .into_iter()
        .filter(|s| s.value == 1.0)
        .map(|s| s.labels["state"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_on_primary_standby_lagging_standby_stopped_postgres_and_fenced_primary() {
    let dir = TestDir::new("k-http");
    let mut monitor = MonitorProc::start(&dir).await;
    let (a, mut b) = primary_and_secondary(&dir, &monitor).await;
    let (ap, bp) = (a.http_port(), b.http_port());

    // --- A primary and its synchronous standby. The standby learns that
    // it is synchronous from a reply after the primary reported primary.
    wait_codes("a answering as the primary", ap, [200, 503, 200, 503, 200]).await;
    wait_codes(
        "b answering as a synchronous standby",
        bp,
        [503, 200, 200, 200, 200],
    )
    .await;
    // HAProxy's check method, and HEAD.
    for (method, port, want) in [
        ("OPTIONS", ap, 200),
        ("OPTIONS", bp, 503),
        ("HEAD", ap, 200),
    ] {
        let got = http::request(port, method, "/primary").await.unwrap().code;
        assert_eq!(got, want, "{method} /primary on port {port}");
    }
    let body = get(ap, "/primary").await.json();
    assert_eq!(body["state"], "primary", "{body}");
    assert_eq!(body["assigned_state"], "primary", "{body}");
    assert_eq!(body["role"], "primary", "{body}");
    assert_eq!(body["timeline"], 1, "{body}");
    assert!(body["lag_bytes"].is_null(), "{body}");
    assert!(body.get("reason").is_none(), "{body}");
    let standby = get(bp, "/primary").await;
    assert_eq!(standby.content_type, "application/json");
    let body = standby.json();
    assert_eq!(body["role"], "replica", "{body}");
    assert_eq!(body["synchronous"], true, "{body}");
    assert_eq!(body["reason"], "state secondary takes no writes", "{body}");
    assert!(body["lag_bytes"].is_u64(), "{body}");
    assert_eq!(get(bp, "/replica?lag=16MB").await.code, 200);
    let bad = get(bp, "/replica?lag=fast").await;
    assert_eq!(bad.code, 400, "{}", bad.body);
    assert!(bad.json()["reason"]
        .as_str()
        .unwrap()
        .contains("not a size"));
    assert_eq!(get(bp, "/nowhere").await.code, 404);

    // Both /metrics parse and say what the nodes are.
    let am = scrape(ap).await;
    assert_eq!(state_of(&am, "pgpilot_node_reported_state"), ["primary"]);
    assert_eq!(state_of(&am, "pgpilot_node_assigned_state"), ["primary"]);
    assert_eq!(am.value("pgpilot_postgres_up", &[]), 1.0);
    assert_eq!(am.value("pgpilot_fence_events_total", &[]), 0.0);
    assert!(
        am.value(
            "pgpilot_node_active_duration_seconds_count",
            &[("outcome", "ok")]
        ) >= 1.0
    );
    assert!(am.find("pgpilot_replication_lag_bytes", &[]).is_empty());
    let bm = scrape(bp).await;
    assert_eq!(state_of(&bm, "pgpilot_node_reported_state"), ["secondary"]);
    assert!(bm.value("pgpilot_replication_lag_bytes", &[]) >= 0.0);
    let mm = scrape(monitor.http_port).await;
    for (node, state) in [("a", "primary"), ("b", "secondary")] {
        for metric in ["pgpilot_node_reported_state", "pgpilot_node_assigned_state"] {
            let on = [("node", node), ("state", state)];
            assert_eq!(mm.value(metric, &on), 1.0, "{metric}{on:?}");
        }
        assert_eq!(mm.value("pgpilot_node_healthy", &[("node", node)]), 1.0);
    }
    assert!(mm.value("pgpilot_node_replication_lag_bytes", &[("node", "b")]) >= 0.0);
    assert!(mm
        .find("pgpilot_node_replication_lag_bytes", &[("node", "a")])
        .is_empty());
    assert_eq!(mm.value("pgpilot_leadership_conflicts_total", &[]), 0.0);
    assert_eq!(mm.value("pgpilot_failovers_total", &[("group", "0")]), 0.0);

    // --- A lagging standby: b's replay is paused while a writes.
    execute(&b, "SELECT pg_wal_replay_pause()").await;
    a.query("CREATE TABLE bulk AS SELECT generate_series(1, 200000) AS i")
        .await
        .unwrap();
    eventually("b lagging by more than 1 MB", STEP, || async {
        (code(bp, "/replica?lag=1MB").await == Some(503)).then_some(())
    })
    .await;
    let body = get(bp, "/replica?lag=1MB").await.json();
    let lag = body["lag_bytes"].as_u64().unwrap();
    assert!(lag > 1 << 20, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("replay lag"),
        "{body}"
    );
    for (path, want) in [
        ("/replica", 200),
        ("/replica?lag=1GB", 200),
        ("/read-only?lag=1MB", 503),
        ("/sync?lag=1MB", 503),
        ("/sync", 200),
        ("/read-only", 200),
    ] {
        assert_eq!(get(bp, path).await.code, want, "{path}");
    }
    assert!(scrape(bp).await.value("pgpilot_replication_lag_bytes", &[]) > f64::from(1 << 20));
    execute(&b, "SELECT pg_wal_replay_resume()").await;
    eventually("b caught up again", STEP, || async {
        (code(bp, "/replica?lag=1MB").await == Some(200)).then_some(())
    })
    .await;

    // --- A standby whose PostgreSQL is stopped: b in maintenance, its
    // PostgreSQL stopped by the operator (the keeper leaves it so).
    let (out, _) = operator(
        &monitor,
        &["enable", "maintenance", "--name", "b", "--wait", "60"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    wait_state(&monitor, "b", "maintenance", STEP).await;
    // In maintenance, b serves no reads even while it still streams.
    assert_eq!(code(bp, "/replica").await, Some(503));
    operator_stops_postgres(&b).await;
    wait_codes("b down in maintenance", bp, [503; 5]).await;
    let body = get(bp, "/health").await.json();
    assert_eq!(
        (
            body["state"].as_str(),
            body["role"].as_str(),
            &body["pg_running"]
        ),
        (
            Some("maintenance"),
            Some("stopped"),
            &serde_json::json!(false)
        ),
        "{body}"
    );
    assert_eq!(scrape(bp).await.value("pgpilot_postgres_up", &[]), 0.0);
    // The primary takes writes alone meanwhile (wait_primary).
    wait_state(&monitor, "a", "wait_primary", STEP).await;
    wait_codes("a still the primary", ap, [200, 503, 200, 503, 200]).await;
    let (out, _) = operator(
        &monitor,
        &["disable", "maintenance", "--name", "b", "--wait", "60"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_state(&monitor, "a", "primary", STEP).await;
    wait_codes(
        "b a synchronous standby again",
        bp,
        [503, 200, 200, 200, 200],
    )
    .await;

    // --- A primary that fences itself: the monitor goes, then the
    // standby; nothing vouches for a any more. Once its PostgreSQL is
    // gone, /primary has said 503 already.
    assert!(monitor.stop().success());
    assert!(b.stop().success());
    let (mut first_503, mut gone) = (None::<Instant>, None::<Instant>);
    let deadline = Instant::now() + STEP;
    while gone.is_none() {
        assert!(Instant::now() < deadline, "a did not fence within {STEP:?}");
        let pg_gone = a.postmaster_pid().is_none();
        let c = code(ap, "/primary").await;
        if c == Some(503) && first_503.is_none() {
            first_503 = Some(Instant::now());
        }
        if pg_gone {
            assert_eq!(
                c,
                Some(503),
                "a's PostgreSQL is gone and /primary says {c:?}"
            );
            gone = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (first_503, gone) = (first_503.unwrap(), gone.unwrap());
    eprintln!(
        "a's /primary said 503 {:.0} ms before its PostgreSQL was seen gone",
        gone.saturating_duration_since(first_503).as_secs_f64() * 1000.0
    );
    eventually("a fenced", STEP, || async {
        (a.state()["current"] == "demote_timeout").then_some(())
    })
    .await;
    wait_codes("a fenced: every endpoint 503", ap, [503; 5]).await;
    let body = get(ap, "/primary").await.json();
    assert_eq!(body["state"], "demote_timeout", "{body}");
    assert_eq!(body["role"], "stopped", "{body}");
    assert_eq!(
        scrape(ap).await.value("pgpilot_fence_events_total", &[]),
        1.0
    );

    // The monitor is back: it counts the fence it hears of, and a serves
    // again (it did not fail over).
    monitor.restart().await;
    wait_codes("a the primary again", ap, [200, 503, 200, 503, 200]).await;
    let mm = scrape(monitor.http_port).await;
    assert_eq!(
        mm.value("pgpilot_fence_events_total", &[("node", "a")]),
        1.0
    );
    assert_eq!(
        mm.value("pgpilot_fence_events_total", &[("node", "b")]),
        0.0
    );
    b.run();
    wait_state(&monitor, "b", "secondary", STEP).await;
}

/// HAProxy: `PGPILOT_HAPROXY`, else `haproxy` on PATH or in /usr/sbin
/// (where Debian puts it).
fn haproxy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGPILOT_HAPROXY") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

/// The README's HAProxy configuration for writes, on `front`, with
/// `nodes` as (PostgreSQL port, HTTP port).
fn haproxy_config(front: u16, nodes: &[(&str, u16, u16)]) -> String {
    let mut c = format!(
        "global\n    maxconn 100\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30m\n    \
         timeout server 30m\n    timeout check 1s\n\n\
         listen pgpilot_primary\n    bind 127.0.0.1:{front}\n    \
         option httpchk OPTIONS /primary\n    http-check expect status 200\n    \
         default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions\n"
    );
    for (name, pg, http) in nodes {
        c.push_str(&format!(
            "    server {name} 127.0.0.1:{pg} check port {http}\n"
        ));
    }
    c
}

/// A haproxy child, killed and reaped on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_routes_writes_by_primary_across_a_kill_of_the_primary() {
    let Some(bin) = haproxy_bin() else {
        // CI installs it (scripts/install-deps): there a missing haproxy
        // is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "haproxy not found: scripts/install-deps installs Debian's haproxy"
        );
        eprintln!(
            "SKIPPED: haproxy not found (PGPILOT_HAPROXY, PATH, /usr/sbin): run scripts/install-deps"
        );
        return;
    };
    let dir = TestDir::new("k-haproxy");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, b) = primary_and_secondary(&dir, &monitor).await;
    writer::prepare(&a).await;
    let front = free_port();
    let config = haproxy_config(
        front,
        &[("a", a.port, a.http_port()), ("b", b.port, b.http_port())],
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, &config).unwrap();
    let check = Command::new(&bin)
        .args(["-c", "-f", path_str(&cfg)])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy refuses the README's configuration: {}\n{config}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let _haproxy = Haproxy(
        Command::new(&bin)
            .args(["-db", "-f", path_str(&cfg)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy"),
    );

    let uri = format!("postgres://127.0.0.1:{front}/postgres");
    let client = Writer::start(&uri, Duration::from_millis(20));
    client.wait_acks_on(front, 0, 20, STEP).await;
    let before = client.acks().len();
    a.kill9();
    let killed = Instant::now();
    new_primary_among(&monitor, &[&b], STEP).await;
    client.wait_acks_on(front, before, 20, STEP).await;
    let failures = client.failures();
    let acks = client.stop().await;

    // Every write HAProxy got acknowledged is on the new primary.
    let lost = writer::missing(&b, &acks).await;
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on b: {lost:?}"
    );
    // None went to a read-only node: haproxy only routed to /primary.
    assert!(
        !failures.iter().any(|f| f.error == "read-only"),
        "haproxy routed a connection to a read-only node: {failures:?}"
    );
    let last_before = acks
        .iter()
        .filter(|x| x.at < killed)
        .map(|x| x.at)
        .max()
        .unwrap();
    let first_after = acks.iter().find(|x| x.at > killed).map(|x| x.at).unwrap();
    let longest = acks
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .max()
        .unwrap();
    eprintln!(
        "through haproxy: {} acknowledged commits, 0 lost; write gap across the kill {:.0} ms \
         (first commit {:.0} ms after the kill), longest gap {:.0} ms, {} failed attempts",
        acks.len(),
        first_after.duration_since(last_before).as_secs_f64() * 1000.0,
        first_after.duration_since(killed).as_secs_f64() * 1000.0,
        longest.as_secs_f64() * 1000.0,
        failures.len()
    );

    // The monitor counted one failover; b's keeper says it is the writer.
    let mm = scrape(monitor.http_port).await;
    assert_eq!(mm.value("pgpilot_failovers_total", &[("group", "0")]), 1.0);
    assert_eq!(
        mm.value("pgpilot_switchovers_total", &[("group", "0")]),
        0.0
    );
    assert_eq!(mm.value("pgpilot_group_generation", &[("group", "0")]), 2.0);
    assert!(mm.sum("pgpilot_events_total", &[("kind", "goal")]) >= 1.0);
    let bm = scrape(b.http_port()).await;
    let states = state_of(&bm, "pgpilot_node_reported_state");
    assert!(
        states == ["wait_primary"] || states == ["primary"],
        "{states:?}"
    );
    assert_eq!(code(b.http_port(), "/primary").await, Some(200));
}
