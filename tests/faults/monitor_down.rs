//! Scenario f: the monitor down for 30 s (its process SIGKILLed; its
//! PostgreSQL goes with it), while the standby streams: no role change,
//! writes go on, and once the monitor is back the states are the same.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

const DOWN: Duration = Duration::from_secs(30);
/// The longest the writer may go without a commit while the monitor is
/// away: nothing should wait on it at all (the writer commits every 50
/// ms); this leaves room for a loaded machine.
const GAP_AT_MOST: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn f_monitor_killed_for_30_s_changes_nothing() {
    repeat("f_monitor_killed", |round| async move {
        let mut c = Cluster::start(&format!("f-f{round}")).await;
        let a_port = c.a.port;
        let pm = (c.a.postmaster_pid(), c.b.postmaster_pid());
        let before = node_states(&mut c.monitor.client().await).await;
        let promoted_before = promotions(&c.monitor).await;
        let killed = Instant::now();
        let _ = c.monitor.child.kill();
        let _ = c.monitor.child.wait();
        tokio::time::sleep(DOWN).await;
        assert_eq!((c.a.postmaster_pid(), c.b.postmaster_pid()), pm);
        let back = Instant::now();
        c.monitor.restart().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(node_states(&mut c.monitor.client().await).await, before);
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        let out = c.finish("a", 1).await;
        let during = out
            .acks
            .iter()
            .filter(|k| k.at >= killed && k.at < back && k.port == a_port)
            .count();
        let gap = out.longest_gap(killed);
        eprintln!(
            "scenario f: {during} commits on a while the monitor was down {} s; longest write \
             gap {} ms; {} failed writer attempts",
            DOWN.as_secs(),
            gap.as_millis(),
            out.failures_since(killed)
        );
        assert_eq!(out.failures_since(killed), 0, "no write failed");
        assert!(gap <= GAP_AT_MOST, "writes paused {gap:?}");
    })
    .await;
}
