//! Scenario h in namespaces: the primary's keeper SIGKILLed (and left
//! away past every failover timeout), then a keeper-only stop, each time
//! followed by `pgpilot run`, which adopts the running PostgreSQL: no
//! failover, no failed write, the same postmaster throughout. The
//! loopback version with more checks is tests/keeper/keeper_restart.rs.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

/// Well past node_unhealthy_timeout (1 s), lease + clock_margin (1.5 s)
/// and replication_lost_timeout (1.2 s): a rule that acted on the keeper's
/// absence would have acted, several times over.
const NO_KEEPER: Duration = Duration::from_secs(6);

async fn adopted(c: &Cluster, since: usize) {
    eventually("a adopts its PostgreSQL", STEP, || async {
        (c.a.log()
            .matches("adopted the PostgreSQL running in")
            .count()
            > since)
            .then_some(())
    })
    .await;
    wait_state(&c.monitor, "a", "primary", STEP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h_primary_keeper_killed_and_restarted_costs_nothing() {
    repeat("h_primary_keeper_restart", |round| async move {
        let mut c = Cluster::start(&format!("f-h{round}")).await;
        let a_port = c.a.port;
        let pm = c.a.postmaster_pid();
        let promoted_before = promotions(&c.monitor).await;
        let killed = Instant::now();
        c.a.kill_keeper();
        tokio::time::sleep(NO_KEEPER).await;
        assert_eq!(c.a.postmaster_pid(), pm, "PostgreSQL outlived its keeper");
        c.a.run();
        adopted(&c, 0).await;

        let out = pgpilot(&["stop", "--keeper-only", "--pgdata", path_str(&c.a.pgdata)]);
        assert!(out.status.success(), "{out:?}");
        let mut keeper = c.a.child.take().unwrap();
        assert!(wait_child(&mut keeper, Duration::from_secs(10)).success());
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.a.run();
        adopted(&c, 1).await;
        assert_eq!(c.a.postmaster_pid(), pm, "the same postmaster");
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        let out = c.finish("a", 1).await;
        eprintln!(
            "scenario h: longest write gap {} ms over both keeper restarts; {} failed writer \
             attempts",
            out.longest_gap(killed).as_millis(),
            out.failures_since(killed)
        );
        assert_eq!(out.failures_since(killed), 0, "no write failed");
        assert!(out.acks.iter().all(|k| k.port == a_port));
    })
    .await;
}
