//! The monitor's /metrics on a real monitor process, with the keeper
//! protocol driven by hand: parsed, and following the group through a
//! failover, a self-fencing report and a switchover.

use std::time::{Duration, Instant};

use pgpilot_proto::pb;
use pgpilot_proto::NodeState::*;

use crate::keeper::{bootstrapped, Bootstrapped, Report};
use crate::support::http::{scrape, Exposition};
use crate::support::{eventually, TestDir};

const DEADLINE: Duration = Duration::from_secs(30);

fn one(e: &Exposition, metric: &str, node: &str, state: &str) -> f64 {
    e.value(metric, &[("node", node), ("state", state)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_group_through_a_failover_and_a_fence() {
    let dir = TestDir::new("metrics");
    let Bootstrapped {
        monitor,
        mut a_pg,
        b_pg: _b_pg,
        mut c,
        a: mut a_report,
        b: mut b_report,
        ..
    } = bootstrapped(&dir).await;
    let port = monitor.http_port;
    // A report that is refused (node a's credential, for no such node) is
    // timed too.
    let bogus = a_report.sign(Report::new(999, Secondary).request());
    assert!(c.node_active(bogus).await.is_err());

    // --- Steady: a primary, b 256 bytes behind it.
    a_report.lsn = 0x300_0100;
    b_report.lsn = 0x300_0000;
    a_report.send(&mut c).await;
    b_report.send(&mut c).await;
    let m = scrape(port).await;
    for (node, state) in [("a", "primary"), ("b", "secondary")] {
        for metric in ["pgpilot_node_reported_state", "pgpilot_node_assigned_state"] {
            assert_eq!(one(&m, metric, node, state), 1.0, "{metric} {node}");
            assert_eq!(one(&m, metric, node, "single"), 0.0, "{metric} {node}");
            // One series per state, one of them 1.
            let all = m.find(metric, &[("node", node)]);
            assert_eq!(all.len(), 20, "{metric} {node}");
            assert_eq!(all.iter().filter(|s| s.value == 1.0).count(), 1);
        }
        assert_eq!(m.value("pgpilot_node_healthy", &[("node", node)]), 1.0);
        assert_eq!(
            m.value("pgpilot_fence_events_total", &[("node", node)]),
            0.0
        );
    }
    let b = m.find("pgpilot_node_healthy", &[("node", "b")])[0].clone();
    assert_eq!(b.labels["formation"], "default");
    assert_eq!(b.labels["group"], "0");
    assert_eq!(b.labels["node_id"], b_report.node_id.to_string());
    assert_eq!(
        m.value("pgpilot_node_replication_lag_bytes", &[("node", "b")]),
        256.0
    );
    assert!(m
        .find("pgpilot_node_replication_lag_bytes", &[("node", "a")])
        .is_empty());
    let group = [("formation", "default"), ("group", "0")];
    assert_eq!(m.value("pgpilot_group_generation", &group), 1.0);
    assert_eq!(m.value("pgpilot_failovers_total", &group), 0.0);
    assert_eq!(m.value("pgpilot_switchovers_total", &group), 0.0);
    assert_eq!(m.value("pgpilot_leadership_conflicts_total", &[]), 0.0);
    assert!(
        m.sum(
            "pgpilot_events_total",
            &[("kind", "note"), ("cause", "register")]
        ) >= 2.0
    );
    assert!(
        m.sum(
            "pgpilot_events_total",
            &[("kind", "goal"), ("cause", "report")]
        ) >= 1.0
    );
    let ok = m.value(
        "pgpilot_node_active_duration_seconds_count",
        &[("outcome", "ok")],
    );
    assert!(ok >= 8.0, "{ok} reports counted");
    assert_eq!(
        m.value(
            "pgpilot_node_active_duration_seconds_count",
            &[("outcome", "error")]
        ),
        1.0
    );
    let inf = m.value(
        "pgpilot_node_active_duration_seconds_bucket",
        &[("outcome", "ok"), ("le", "+Inf")],
    );
    assert_eq!(inf, ok, "the +Inf bucket counts every report");
    assert_eq!(m.types["pgpilot_node_active_duration_seconds"], "histogram");
    assert_eq!(m.types["pgpilot_probe_duration_seconds"], "histogram");
    assert!(
        m.value(
            "pgpilot_probe_duration_seconds_count",
            &[("outcome", "accepting")]
        ) >= 2.0
    );

    // --- Failover: a's PostgreSQL and keeper die; b lost replication.
    a_pg.crash().await;
    let crashed = Instant::now();
    eventually("b assigned prepare_promotion", DEADLINE, || {
        let mut c = c.clone();
        let mut r = b_report.clone();
        async move {
            r.upstream_silent_ms = Some(crashed.elapsed().as_millis() as u64);
            let (goal, _) = r.send(&mut c).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            (goal == PreparePromotion).then_some(())
        }
    })
    .await;
    let m = scrape(port).await;
    assert_eq!(m.value("pgpilot_failovers_total", &group), 1.0);
    assert_eq!(m.value("pgpilot_switchovers_total", &group), 0.0);
    assert_eq!(m.value("pgpilot_group_generation", &group), 2.0);
    assert_eq!(
        one(&m, "pgpilot_node_assigned_state", "b", "prepare_promotion"),
        1.0
    );
    assert_eq!(m.value("pgpilot_node_healthy", &[("node", "a")]), 0.0);
    assert!(
        m.value(
            "pgpilot_probe_duration_seconds_count",
            &[("outcome", "no_response")]
        ) >= 1.0
    );

    // --- a's keeper is back and says it fenced itself (demote_timeout,
    // which nobody assigned it): one fence, counted once.
    a_report.state = DemoteTimeout;
    a_report.pg_running = false;
    for _ in 0..2 {
        a_report.send(&mut c).await;
    }
    let m = scrape(port).await;
    assert_eq!(m.value("pgpilot_fence_events_total", &[("node", "a")]), 1.0);
    assert_eq!(m.value("pgpilot_fence_events_total", &[("node", "b")]), 0.0);
    assert_eq!(
        one(&m, "pgpilot_node_reported_state", "a", "demote_timeout"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_is_counted_as_one() {
    let dir = TestDir::new("metrics-so");
    let Bootstrapped {
        monitor,
        a_pg: _a_pg,
        b_pg: _b_pg,
        mut c,
        ..
    } = bootstrapped(&dir).await;
    c.perform_switchover(pb::PerformSwitchoverRequest {
        formation: "default".into(),
        candidate: String::new(),
    })
    .await
    .unwrap();
    let m = scrape(monitor.http_port).await;
    let group = [("formation", "default"), ("group", "0")];
    assert_eq!(m.value("pgpilot_switchovers_total", &group), 1.0);
    assert_eq!(m.value("pgpilot_failovers_total", &group), 0.0);
    assert_eq!(m.value("pgpilot_group_generation", &group), 2.0);
    assert_eq!(one(&m, "pgpilot_node_assigned_state", "a", "draining"), 1.0);
    assert!(m.sum("pgpilot_events_total", &[("cause", "operator")]) >= 2.0);
}

#[test]
fn a_bad_http_listen_is_refused_naming_the_fix() {
    let dir = TestDir::new("metrics-bad");
    let out = crate::support::pgpilot(&[
        "create",
        "monitor",
        "--pgdata",
        crate::support::path_str(&dir.join("m")),
        "--http-listen",
        "0.0.0.0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_listen \"0.0.0.0\" has no port"), "{err}");
    assert!(err.contains("or off"), "{err}");
    assert!(!dir.join("m").exists(), "nothing created");
}
