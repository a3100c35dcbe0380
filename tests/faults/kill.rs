//! Scenarios a and g: a whole node killed (SIGKILL of its keeper and its
//! postmaster) under a continuous write load.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

/// How soon the standby must take writes after the primary's kill: the
/// defaults give about 1.5 s (the lease gate opens lease + clock_margin
/// after the old primary's last report); the rest is room for a loaded
/// machine (a deadline, not the measurement: see `./dev bench failover`).
const NEW_PRIMARY_WITHIN: Duration = Duration::from_secs(15);
/// How long writes may block after the standby's kill: the primary goes
/// wait_primary once no standby streamed for replication_stall_timeout
/// (10 s), plus a keeper report and a keeper round to apply it, plus
/// room for a loaded machine.
const BLOCKED_AT_MOST: Duration = STALL_TIMEOUT.saturating_add(Duration::from_secs(5));

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_node_killed_under_write_load() {
    repeat("a_primary_node_killed", |round| async move {
        let mut c = Cluster::start(&format!("f-a{round}")).await;
        let killed = Instant::now();
        c.a.kill9();
        let b_port = c.b.port;
        c.writer()
            .wait_acks_on(b_port, 0, 5, NEW_PRIMARY_WITHIN)
            .await;
        // The old primary comes back and rejoins as a standby.
        c.a.run();
        let out = c.finish("b", 2).await;
        let first = out.first_on(b_port, killed).unwrap();
        eprintln!(
            "scenario a: first write on the new primary {} ms after the kill (the checker's \
             first commit there {} ms); longest write gap {} ms",
            first.as_millis(),
            out.first_check_on("b", killed).unwrap().as_millis(),
            out.longest_gap(killed).as_millis()
        );
        assert!(first <= NEW_PRIMARY_WITHIN);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn g_standby_killed_writes_block_at_most_the_stall_timeout() {
    repeat("g_standby_killed", |round| async move {
        let mut c = Cluster::start(&format!("f-g{round}")).await;
        let killed = Instant::now();
        c.b.kill9();
        wait_state(&c.monitor, "a", "wait_primary", STEP).await;
        let a_port = c.a.port;
        let after = c.writer().acks().len();
        c.writer().wait_acks_on(a_port, after, 10, STEP).await;
        c.b.run();
        let out = c.finish("a", 1).await;
        let gap = out.longest_gap(killed);
        eprintln!(
            "scenario g: longest write gap {} ms after the standby's kill (bound {} ms); {} \
             failed writer attempts",
            gap.as_millis(),
            BLOCKED_AT_MOST.as_millis(),
            out.failures_since(killed)
        );
        assert!(gap <= BLOCKED_AT_MOST, "writes blocked {gap:?}");
    })
    .await;
}
