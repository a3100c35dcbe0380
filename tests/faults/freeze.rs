//! Scenario b: the primary node frozen (SIGSTOP of its keeper, its
//! postmaster and every child) until the standby takes writes and 2 s
//! more, then resumed.
//!
//! The bound: after SIGCONT the old primary decides nothing: an answer it
//! sends then is for a commit sent before the freeze and held by the new
//! primary (at most the writer's one in flight, and checker commits sent
//! before every process was stopped), and its
//! postmaster has exited within clock_margin (300 ms) of the resume. The
//! monitor's lease gate opened lease + clock_margin after the node's last
//! report, assuming the node stops within clock_margin of its lease's
//! end; for a node frozen past the failover that end lies in the past.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

const NEW_PRIMARY_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn b_primary_frozen_past_the_failover_then_resumed() {
    repeat("b_primary_frozen", |round| async move {
        let c = Cluster::start(&format!("f-b{round}")).await;
        let (a_port, b_port) = (c.a.port, c.b.port);
        let old_pm = c.a.postmaster_pid().unwrap();
        let mut frozen = Frozen::default();
        let froze = Instant::now();
        let pids = freeze_node(&c.a, &mut frozen);
        // A commit sent after this cannot be decided before SIGCONT.
        let all_frozen = Instant::now();
        c.writer()
            .wait_acks_on(b_port, 0, 5, NEW_PRIMARY_WITHIN)
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for pid in &pids {
            frozen.resume(*pid);
        }
        let resumed = Instant::now();
        let gone = by_deadline(
            "the old primary's postmaster exits within clock_margin of SIGCONT",
            resumed + CLOCK_MARGIN,
            || dead(old_pm),
        )
        .await;
        let out = c.finish("b", 2).await;
        // After SIGCONT a decides nothing: an answer it sends then is for
        // a commit sent before the freeze and decided before it (finish
        // checked that b holds it: b took nothing from a once promoted),
        // delivered late by a backend frozen just before answering.
        let late: Vec<_> = out
            .acks
            .iter()
            .filter(|a| a.port == a_port && a.at >= resumed)
            .collect();
        assert!(
            late.len() <= 1,
            "a acknowledged more than the writer's one commit in flight after resuming: {late:?}"
        );
        let late: Vec<_> = out
            .checks
            .iter()
            .filter(|k| k.node == "a" && k.acked >= resumed)
            .collect();
        assert!(
            late.iter().all(|k| k.sent < all_frozen),
            "a acknowledged checks sent during the freeze after resuming: {late:?}"
        );
        eprintln!(
            "scenario b: {} processes frozen; first write on the new primary {} ms after the \
             freeze (the checker's first commit there {} ms); postmaster gone {} ms after SIGCONT; longest write gap {} ms; {} answer(s) \
             for commits decided before the freeze delivered after SIGCONT",
            pids.len(),
            out.first_on(b_port, froze).unwrap().as_millis(),
            out.first_check_on("b", froze).unwrap().as_millis(),
            (gone - resumed).as_millis(),
            out.longest_gap(froze).as_millis(),
            late.len()
        );
    })
    .await;
}
