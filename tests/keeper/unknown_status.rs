//! Dead end 1 of "Never stuck": a standby whose PostgreSQL cannot report
//! its status is not out-voted by a less advanced one.
//!
//! Three nodes: primary P ("a"), standbys A ("b") and B ("c"), both in
//! `ANY 1 (..)`. B's PostgreSQL becomes too slow to answer its keeper
//! (every new connection waits a second after authentication,
//! `post_auth_delay`, longer than the keeper's 1 s status budget), so B's
//! keeper reports `status_unknown` and the monitor keeps B's last known
//! LSN, which goes stale: B still streams and acknowledges commits through
//! its running WAL receiver, and the monitor's probes still get answers.
//! A stops receiving WAL (its WAL receiver is SIGSTOPped until P let it
//! go), so the rows committed next are acknowledged by B alone. P dies; in
//! the election both standbys stop streaming and report report_lsn, B
//! with its status still unknown and its stale LSN not ahead of A's. A
//! must not be elected (it lacks the rows), nor anyone while B's position
//! is unknown; the monitor names B as what the election waits for. Once
//! B's PostgreSQL answers in time again, B is elected with every row and A
//! follows it.
//!
//! The delay of one second sits between the keeper's budgets: a status
//! read (1 s, connection included) always times out, a transition's
//! connections (2 s each) still succeed, so B completes report_lsn with
//! its status unknown. If those budgets change, the checks that B's LSN
//! at the monitor is stale and that B reaches report_lsn fail loudly.
//!
//! Why not SIGSTOP B's postmaster: the monitor's probes then get no answer
//! either, B is not healthy, and the failover rule starts no election at
//! all ("no automatic failover from unhealthy primary node 1: quorum
//! standby node 3 is not healthy"); B's keeper could not complete
//! report_lsn either. A is safe then, but by another rule: the election's
//! rule for an unknown status is never reached.

use std::time::{Duration, Instant};

use pgpilot_proto::pb::ShowStateRequest;
use pgpilot_proto::Lsn;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How long the group is watched, once both standbys reported report_lsn,
/// for a wrong election (the monitor decides within a second of a report).
const WATCH: Duration = Duration::from_secs(15);
const ROWS: u32 = 20;
const COUNT: &str = "SELECT count(*)::text FROM acked";
/// Goals that make a node the election's winner or writable.
const ELECTED: [&str; 6] = [
    "prepare_promotion",
    "stop_replication",
    "wait_primary",
    "primary",
    "single",
    "apply_settings",
];

/// The LSN the monitor holds for node `name`.
async fn stored_lsn(monitor: &MonitorProc, name: &str) -> Lsn {
    let nodes = monitor
        .client()
        .await
        .show_state(ShowStateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    Lsn(nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name} in show state"))
        .reported_lsn)
}

async fn lsn_on(k: &KeeperProc, sql: &str) -> Lsn {
    k.query(sql)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{sql} on {}: NULL", k.name))
        .parse()
        .unwrap()
}

/// How often B's keeper said it cannot read PostgreSQL's status.
fn unreadable_count(k: &KeeperProc) -> usize {
    k.log().matches("cannot read PostgreSQL's status").count()
}

/// Node states, after checking that neither standby is being elected or
/// writable and that A's PostgreSQL is still in recovery.
async fn nobody_elected(
    monitor: &MonitorProc,
    behind: &KeeperProc,
    unknown: &KeeperProc,
) -> std::collections::BTreeMap<String, (String, String)> {
    let states = node_states(&mut monitor.client().await).await;
    for k in [behind, unknown] {
        if let Some((reported, assigned)) = states.get(&k.name) {
            assert!(
                !ELECTED.contains(&assigned.as_str()) && !ELECTED.contains(&reported.as_str()),
                "node {} is {reported} with goal {assigned} while B's status is unknown: {states:?}\n\
                 events:\n{}",
                k.name,
                monitor.events().await.join("\n")
            );
        }
    }
    if let Ok(Some(r)) = behind.query("SELECT pg_is_in_recovery()::text").await {
        assert_eq!(r, "true", "A's PostgreSQL left recovery: {states:?}");
    }
    states
}

/// Polls every second until `done` holds for the states (checking
/// [`nobody_elected`] at every poll), failing after `timeout`.
async fn watch_until<F>(
    what: &str,
    timeout: Duration,
    monitor: &MonitorProc,
    behind: &KeeperProc,
    unknown: &KeeperProc,
    mut done: F,
) where
    F: FnMut(&std::collections::BTreeMap<String, (String, String)>) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let states = nobody_elected(monitor, behind, unknown).await;
        if done(&states) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {states:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn reported(states: &std::collections::BTreeMap<String, (String, String)>, name: &str) -> String {
    states.get(name).map(|s| s.0.clone()).unwrap_or_default()
}

fn assigned(states: &std::collections::BTreeMap<String, (String, String)>, name: &str) -> String {
    states.get(name).map(|s| s.1.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_with_unknown_status_is_not_outvoted_by_a_less_advanced_one() {
    let dir = TestDir::new("k-unknown");
    let monitor = MonitorProc::start(&dir).await;
    let (mut p, behind, unknown) = primary_and_two_secondaries(&dir, &monitor).await;
    // Declared after the keepers: dropped, so continued, before them.
    let mut frozen = Frozen::default();
    let node_id = |k: &KeeperProc| k.state()["node_id"].as_i64().expect("node id");
    let unknown_id = node_id(&unknown);

    // B's PostgreSQL answers new connections only after a second: its
    // keeper's status reads (1 s budget, connection included) time out,
    // while its WAL receiver keeps streaming and the probes get answers.
    let before = unreadable_count(&unknown);
    set_and_reload(&unknown, "ALTER SYSTEM SET post_auth_delay = 1").await;
    eventually("B's keeper cannot read its status", STEP, || async {
        (unreadable_count(&unknown) >= before + 2).then_some(())
    })
    .await;

    // A stops receiving WAL: its WAL receiver is frozen until P's
    // walsender gave up on it (wal_sender_timeout), so that nothing
    // committed from now on is even on its way to A.
    let receiver = freeze_wal_receiver(&behind, &p, &mut frozen).await;

    // Commits that only B acknowledged (ANY 1 of A and B).
    commit_rows(&p, ROWS).await;
    let acked = lsn_on(&p, "SELECT pg_current_wal_flush_lsn()::text").await;
    eventually("every row on B", STEP, || async {
        (unknown.query(COUNT).await.ok().flatten() == Some(ROWS.to_string())).then_some(())
    })
    .await;
    let stale = stored_lsn(&monitor, &unknown.name).await;
    assert!(
        stale < acked,
        "the monitor should not know B's position ({stale}) past the acknowledged rows ({acked})"
    );

    // P dies, then A's WAL receiver resumes: its walsender is gone, and
    // nobody else sends it P's WAL.
    p.kill9();
    frozen.resume(receiver);
    let behind_lsn = lsn_on(
        &behind,
        "SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
    )
    .await;
    assert!(behind_lsn < acked, "A received {behind_lsn} >= {acked}");
    eprintln!(
        "acknowledged up to {acked}; A holds {behind_lsn}; the monitor holds {stale} for B (status unknown)"
    );

    // The election: both standbys stop streaming and report, B with its
    // status still unknown and its stale LSN.
    let (a_name, b_name) = (behind.name.clone(), unknown.name.clone());
    watch_until(
        "both standbys in report_lsn",
        STEP * 2,
        &monitor,
        &behind,
        &unknown,
        |s| {
            [&a_name, &b_name]
                .iter()
                .all(|n| reported(s, n) == "report_lsn" && assigned(s, n) == "report_lsn")
        },
    )
    .await;
    let (a_stored, b_stored) = (
        stored_lsn(&monitor, &a_name).await,
        stored_lsn(&monitor, &b_name).await,
    );
    eprintln!("both in report_lsn: the monitor holds {a_stored} for A, {b_stored} for B");
    assert!(
        b_stored < acked,
        "B's status was read: the monitor holds {b_stored} for B"
    );

    // Nobody is elected while B's position is unknown, and the monitor
    // says the election waits for B.
    let wait = format!("election waits for node {unknown_id}:");
    let why = "(it reports report_lsn, its keeper cannot read PostgreSQL's status)";
    let watched = Instant::now();
    let mut named = false;
    while !named || watched.elapsed() < WATCH {
        nobody_elected(&monitor, &behind, &unknown).await;
        named = named
            || monitor
                .events()
                .await
                .iter()
                .any(|e| e.contains(&wait) && e.contains(why));
        assert!(
            watched.elapsed() < STEP,
            "no event says the election waits for B: {:?}",
            monitor.events().await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        stored_lsn(&monitor, &a_name).await < acked,
        "A got the rows after all"
    );

    // B's PostgreSQL answers in time again: B is elected with every row,
    // and A follows it.
    set_and_reload(&unknown, "ALTER SYSTEM RESET post_auth_delay").await;
    let new = new_primary_among(&monitor, &[&behind, &unknown], STEP).await;
    assert_eq!(new, 1, "A was promoted: {:?}", monitor.events().await);
    assert_eq!(unknown.query(COUNT).await.unwrap(), Some(ROWS.to_string()));
    unknown
        .query(&format!("INSERT INTO acked VALUES ({})", ROWS + 1))
        .await
        .unwrap();
    wait_state(&monitor, &a_name, "secondary", STEP).await;
    eventually("every row on A", STEP, || async {
        (behind.query(COUNT).await.ok().flatten() == Some((ROWS + 1).to_string())).then_some(())
    })
    .await;
    let elected = format!("node {unknown_id} assigned prepare_promotion: elected with LSN");
    let all = monitor.events().await;
    assert_eq!(
        all.iter()
            .filter(|e| e.contains("elected with LSN"))
            .count(),
        1,
        "{all:?}"
    );
    assert!(all.iter().any(|e| e.contains(&elected)), "{all:?}");
}

/// Runs an ALTER SYSTEM on `node` and reloads its configuration.
async fn set_and_reload(node: &KeeperProc, alter: &str) {
    node.query(alter).await.unwrap();
    node.query("SELECT pg_reload_conf()::text").await.unwrap();
}
