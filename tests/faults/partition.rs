//! Scenarios c, d and e: network partitions, made with nftables inside
//! one node's namespace on its own link (tests/support/netns.rs). The
//! test process (writer, checker) still reaches every node.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

/// Longer than every failover timeout of the defaults (node_unhealthy 1
/// s, lease + clock_margin 1.5 s, replication_lost 1.2 s), several times
/// over: a rule that acted on the cut would have acted.
const QUIET: Duration = Duration::from_secs(10);
/// How long writes may block when the standby is cut off. The monitor's
/// stall clock starts once the primary reports no walsender at all, and
/// a walsender whose standby went silent (packets dropped, no reset)
/// lasts wal_sender_timeout (the product's, proto's replication_timeouts);
/// then the stall timeout (10 s), a report and a keeper round, plus room
/// for a loaded machine.
const WAL_SENDER_TIMEOUT: Duration =
    Duration::from_millis(pgpilot_proto::replication_timeouts::WAL_SENDER_TIMEOUT_MS);
const BLOCKED_AT_MOST: Duration = WAL_SENDER_TIMEOUT
    .saturating_add(STALL_TIMEOUT)
    .saturating_add(Duration::from_secs(5));

/// c. The primary is cut off from the monitor and the standby: it fences
/// itself before the monitor's lease gate can open (lease + clock_margin
/// after its last report, so at the latest that long after the cut), the
/// standby is promoted, and after healing the old primary rejoins.
#[tokio::test(flavor = "multi_thread")]
async fn c_primary_cut_off_from_monitor_and_standby_fences_and_rejoins() {
    repeat("c_primary_cut_off", |round| async move {
        let c = Cluster::start(&format!("f-c{round}")).await;
        let b_port = c.b.port;
        let pm = c.a.postmaster_pid().unwrap();
        let cut = Instant::now();
        c.net.cut("a", &["m", "b"]);
        let fenced = by_deadline(
            "a fences within lease + clock_margin of the cut",
            cut + LEASE + CLOCK_MARGIN,
            || dead(pm),
        )
        .await;
        c.writer().wait_acks_on(b_port, 0, 5, STEP).await;
        let healed = Instant::now();
        c.net.heal("a");
        let out = c.finish("b", 2).await;
        eprintln!(
            "scenario c: a fenced {} ms after the cut; first write on b {} ms after the cut; \
             longest write gap {} ms; healed {} ms after the cut",
            (fenced - cut).as_millis(),
            out.first_on(b_port, cut).unwrap().as_millis(),
            out.longest_gap(cut).as_millis(),
            (healed - cut).as_millis()
        );
    })
    .await;
}

/// d. The primary is cut off from the monitor only; the standby still
/// streams from it, which keeps its lease exemption: no failover, no
/// fencing, writes go on, and after healing nothing changed.
#[tokio::test(flavor = "multi_thread")]
async fn d_primary_cut_off_from_the_monitor_only_keeps_serving() {
    repeat("d_primary_cut_off_from_monitor", |round| async move {
        let c = Cluster::start(&format!("f-d{round}")).await;
        let a_port = c.a.port;
        let pm = c.a.postmaster_pid().unwrap();
        let promoted_before = promotions(&c.monitor).await;
        let cut = Instant::now();
        c.net.cut("a", &["m"]);
        tokio::time::sleep(QUIET).await;
        assert_eq!(c.a.postmaster_pid(), Some(pm), "a kept its PostgreSQL");
        c.net.heal("a");
        let healed = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        let out = c.finish("a", 1).await;
        let during = out.acks_on(a_port, cut, healed);
        eprintln!(
            "scenario d: {during} commits on a during the {} s cut; longest write gap {} ms; \
             {} failed writer attempts",
            QUIET.as_secs(),
            out.longest_gap(cut).as_millis(),
            out.failures_since(cut)
        );
        assert_eq!(out.failures_since(cut), 0, "no write failed");
        assert!(during > 0, "writes continued during the cut");
    })
    .await;
}

/// d, idle: the same cut on a nearly idle primary. An idle
/// primary's standby replies only when the walsender asks, every
/// wal_sender_timeout / 2 (600 ms), so the fencing exemption is drawn from
/// a reply up to that old while every report hangs on the dropped
/// packets; the keeper must still renew it before it lapses (a review
/// found it fenced about one look in twelve when a hanging report delayed
/// the look).
#[tokio::test(flavor = "multi_thread")]
async fn d_idle_primary_cut_off_from_the_monitor_only_keeps_its_postgres() {
    repeat("d_idle_primary_cut_off_from_monitor", |round| async move {
        // A commit a second (the harness waits for 10 at the start): the
        // standby's reply then ages past 600 ms between commits, as on an
        // idle primary (the walsender asks for one every 600 ms of
        // silence, which no write interval above that shortens).
        let idle = Load {
            write_every: Duration::from_secs(1),
            check_every: Duration::from_secs(5),
            ..Load::default()
        };
        let c = Cluster::start_with(&format!("f-di{round}"), idle).await;
        let pm = c.a.postmaster_pid().unwrap();
        let promoted_before = promotions(&c.monitor).await;
        c.net.cut("a", &["m"]);
        tokio::time::sleep(QUIET).await;
        let fenced = c.a.log().contains("fencing:");
        let same = c.a.postmaster_pid() == Some(pm);
        c.net.heal("a");
        tokio::time::sleep(Duration::from_secs(3)).await;
        eprintln!(
            "scenario d (idle): same postmaster after the {} s cut: {same}; fenced: {fenced}",
            QUIET.as_secs()
        );
        assert!(!fenced, "a fenced although its standby streamed");
        assert!(same, "a kept its PostgreSQL");
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        c.finish("a", 1).await;
    })
    .await;
}

/// e. The standby is cut off from the primary only (both reach the
/// monitor): the primary goes wait_primary after the stall timeout and
/// writes resume; after healing the standby catches up.
#[tokio::test(flavor = "multi_thread")]
async fn e_standby_cut_off_from_the_primary_then_catches_up() {
    repeat("e_standby_cut_off_from_primary", |round| async move {
        let c = Cluster::start(&format!("f-e{round}")).await;
        let a_port = c.a.port;
        let promoted_before = promotions(&c.monitor).await;
        let cut = Instant::now();
        c.net.cut("b", &["a"]);
        wait_state(&c.monitor, "a", "wait_primary", BLOCKED_AT_MOST + STEP).await;
        let after = c.writer().acks().len();
        c.writer().wait_acks_on(a_port, after, 10, STEP).await;
        c.net.heal("b");
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        let out = c.finish("a", 1).await;
        let gap = out.longest_gap(cut);
        eprintln!(
            "scenario e: longest write gap {} ms (bound {} ms); {} failed writer attempts",
            gap.as_millis(),
            BLOCKED_AT_MOST.as_millis(),
            out.failures_since(cut)
        );
        assert!(gap <= BLOCKED_AT_MOST, "writes blocked {gap:?}");
    })
    .await;
}
