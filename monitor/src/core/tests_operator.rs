//! The operator's switchover and settings, on small views.

use pgpilot_proto::{Lsn, NodeState::*};

use super::Core;
use crate::error::MonitorError;
use crate::fsm::builders::*;
use crate::fsm::{quorum_counts, Action, FsmConfig, GroupView, NodeView, Timestamp};

fn core() -> Core {
    Core::new(FsmConfig::whole_seconds())
}

/// The keeper of `id` reports `state` at `now` (reached its goal, or not).
fn reports(g: &mut GroupView, id: i64, state: pgpilot_proto::NodeState, now: Timestamp) {
    let n = g.nodes.iter_mut().find(|n| n.id == id).unwrap();
    n.reported = state;
    n.last_report = Some(now);
}

fn node_mut(g: &mut GroupView, id: i64) -> &mut NodeView {
    g.nodes.iter_mut().find(|n| n.id == id).unwrap()
}

/// Node 1 stops cleanly at LSN 120 MB, as its keeper reports it.
fn old_primary_stops_cleanly(g: &mut GroupView, now: Timestamp) {
    reports(g, 1, Draining, now);
    let o = node_mut(g, 1);
    o.pg_running = false;
    o.shutdown_lsn = Some(Lsn(120 * MB));
}

fn refused(r: crate::error::Result<Vec<Action>>, needle: &str) {
    match r {
        Err(MonitorError::FailedPrecondition(m) | MonitorError::InvalidArgument(m)) => {
            assert!(m.contains(needle), "{m:?} does not say {needle:?}")
        }
        other => panic!("expected a refusal saying {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_switchover_promotes_only_once_the_candidate_has_the_old_primarys_last_wal() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    let generation = g.generation;
    core().switchover(&mut g, None, t0()).unwrap();
    assert_eq!(g.node(1).unwrap().assigned, Draining);
    assert_eq!(
        g.node(2).unwrap().assigned,
        Secondary,
        "it goes on streaming"
    );
    assert_eq!(g.generation, generation + 1);
    assert_eq!(g.switchover_to, Some(2));

    // The old primary still runs: wait.
    reports(&mut g, 2, Secondary, at(0.01));
    core().tick(&mut g, at(0.01));
    assert_eq!(g.node(2).unwrap().assigned, Secondary);

    // Stopped cleanly; the candidate's last report is older than that.
    old_primary_stops_cleanly(&mut g, at(0.1));
    core().tick(&mut g, at(0.1));
    assert_eq!(g.node(2).unwrap().assigned, Secondary);

    // The candidate reports the old primary's last WAL: promote.
    node_mut(&mut g, 2).lsn = Lsn(120 * MB + 200);
    reports(&mut g, 2, Secondary, at(0.12));
    core().tick(&mut g, at(0.12));
    // Writable at once, no read-only step and no lease wait: the old
    // primary stopped.
    assert_eq!(g.node(2).unwrap().assigned, WaitPrimary);
    assert_eq!(g.node(1).unwrap().assigned, Demoted);
    assert_eq!(g.switchover_to, None);
}

#[test]
fn a_named_candidate_is_taken_and_an_ineligible_one_is_refused_without_a_change() {
    let base = group(vec![
        node(1, Primary),
        node(2, Secondary).prio(90),
        node(3, Secondary).prio(0),
        node(4, Catchingup),
    ]);
    let mut g = base.clone();
    refused(
        core().switchover(&mut g, Some(3), t0()),
        "candidate priority is 0",
    );
    refused(
        core().switchover(&mut g, Some(4), t0()),
        "caught-up secondary",
    );
    refused(core().switchover(&mut g, Some(1), t0()), "primary already");
    assert!(matches!(
        core().switchover(&mut g, Some(9), t0()),
        Err(MonitorError::NotFound(_))
    ));
    assert_eq!(g, base, "a refusal changes nothing");
    let mut g = base.clone();
    g.nodes.push(node(5, Secondary).prio(10));
    core().switchover(&mut g, Some(5), t0()).unwrap();
    assert_eq!(g.switchover_to, Some(5));
    // The best by priority when none is named.
    let mut g = base.clone();
    core().switchover(&mut g, None, t0()).unwrap();
    assert_eq!(g.switchover_to, Some(2));
}

#[test]
fn a_switchover_is_refused_unless_the_group_is_at_rest_with_a_primary() {
    for (nodes, needle) in [
        (vec![node(1, Single)], "state primary"),
        (
            vec![node(1, WaitPrimary), node(2, Catchingup)],
            "state primary",
        ),
        (
            vec![node(1, Primary).pg_down(), node(2, Secondary)],
            "not healthy",
        ),
        (
            vec![
                node(1, Primary),
                node(2, Secondary),
                node(3, WaitStandby).goal(Catchingup),
            ],
            "on its way",
        ),
        (
            vec![node(1, Primary).goal(ApplySettings), node(2, Secondary)],
            "on its way",
        ),
        (
            vec![node(1, Primary), node(2, Secondary).prio(0)],
            "no standby can take over",
        ),
    ] {
        let mut g = group(nodes);
        let before = g.clone();
        refused(core().switchover(&mut g, None, t0()), needle);
        assert_eq!(g, before);
    }
    // One under way already.
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    core().switchover(&mut g, Some(2), t0()).unwrap();
    let before = g.clone();
    refused(core().switchover(&mut g, Some(3), at(0.01)), "under way");
    assert_eq!(g, before);
}

#[test]
fn an_old_primary_that_dies_mid_switchover_makes_it_an_election_when_others_may_hold_commits() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    core().switchover(&mut g, Some(2), t0()).unwrap();
    reports(&mut g, 2, Secondary, at(0.01));
    reports(&mut g, 3, Secondary, at(0.01));
    // Node 1 crashed while stopping: stopped, no clean shutdown.
    reports(&mut g, 1, Draining, at(0.2));
    node_mut(&mut g, 1).pg_running = false;
    core().tick(&mut g, at(0.2));
    // Node 3 may hold commits node 2 lacks (ANY 1 of both): both vote.
    assert_eq!(g.node(2).unwrap().assigned, ReportLsn);
    assert_eq!(g.node(3).unwrap().assigned, ReportLsn);
    assert_eq!(g.switchover_to, None);
}

#[test]
fn an_old_primary_that_dies_mid_switchover_of_two_nodes_leaves_the_candidate_to_promote() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    core().switchover(&mut g, None, t0()).unwrap();
    // Node 1's keeper went silent before it stopped, but node 2 still
    // streams from it: cut off from the monitor only, it may still write
    // (its fencing exemption): no promotion (simulation, seed 663964).
    let mut quiet = g.clone();
    for n in [4.0, 5.0] {
        reports(&mut quiet, 2, Secondary, at(n));
        core().tick(&mut quiet, at(n));
    }
    assert_eq!(quiet.node(2).unwrap().assigned, Secondary);
    // Its machine died: node 2 lost its stream as well.
    for n in [4.0, 5.0] {
        reports(&mut g, 2, Secondary, at(n));
        node_mut(&mut g, 2).upstream_silent = Some(std::time::Duration::from_secs_f64(n));
        core().tick(&mut g, at(n));
    }
    assert_eq!(g.node(2).unwrap().assigned, StopReplication);
    // The lease gate still waits for the old primary's lease.
    reports(&mut g, 2, StopReplication, at(5.1));
    core().tick(&mut g, at(5.1));
    assert_eq!(
        g.node(2).unwrap().assigned,
        WaitPrimary,
        "silent > lease + margin"
    );
}

#[test]
fn a_candidate_that_cannot_promote_gives_the_old_primary_its_role_back() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    core().switchover(&mut g, Some(2), t0()).unwrap();
    old_primary_stops_cleanly(&mut g, at(0.1));
    reports(&mut g, 3, Secondary, at(0.1));
    // The candidate's PostgreSQL died before it had the last WAL.
    reports(&mut g, 2, Secondary, at(0.2));
    node_mut(&mut g, 2).pg_running = false;
    core().tick(&mut g, at(0.2));
    assert_eq!(g.node(1).unwrap().assigned, WaitPrimary);
    assert_eq!(g.node(2).unwrap().assigned, Catchingup);
    assert_eq!(g.node(3).unwrap().assigned, Catchingup);
    assert_eq!(g.switchover_to, None);
}

#[test]
fn settings_are_checked_and_a_bad_value_changes_nothing() {
    let base = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    let mut g = base.clone();
    refused(
        core().set_candidate_priority(&mut g, 2, 101, t0()),
        "out of range",
    );
    refused(
        core().set_candidate_priority(&mut g, 2, -1, t0()),
        "out of range",
    );
    refused(
        core().set_number_sync_standbys(&mut g, 3, t0()),
        "more than the 2 quorum standbys",
    );
    refused(
        core().set_number_sync_standbys(&mut g, -1, t0()),
        "out of range",
    );
    assert!(matches!(
        core().set_replication_quorum(&mut g, 7, false, t0()),
        Err(MonitorError::NotFound(_))
    ));
    assert_eq!(g, base);
    // Unchanged values are no change at all.
    assert!(core()
        .set_candidate_priority(&mut g, 2, 50, t0())
        .unwrap()
        .is_empty());
    assert_eq!(g, base);
    // A priority change needs no settings round.
    core().set_candidate_priority(&mut g, 2, 80, t0()).unwrap();
    assert_eq!(g.node(2).unwrap().candidate_priority, 80);
    assert_eq!(g.node(1).unwrap().assigned, Primary);
    // number_sync_standbys 2 needs both quorum standbys.
    core().set_number_sync_standbys(&mut g, 2, t0()).unwrap();
    assert_eq!(g.number_sync_standbys, 2);
    assert_eq!(g.node(1).unwrap().assigned, ApplySettings);
    // Raising it waits for the group to be at rest; lowering it does not:
    // it is the way out of writes that wait for too many standbys
    // (simulation, seed 695654).
    core().set_number_sync_standbys(&mut g, 1, t0()).unwrap();
    assert_eq!(g.number_sync_standbys, 1);
    refused(
        core().set_number_sync_standbys(&mut g, 2, t0()),
        "on its way",
    );
}

#[test]
fn a_node_that_lost_its_quorum_counts_for_failover_until_a_primary_confirmed_names_without_it() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    let number = g.number_sync_standbys;
    core()
        .set_replication_quorum(&mut g, 3, false, t0())
        .unwrap();
    assert_eq!(g.node(1).unwrap().assigned, ApplySettings);
    let n3 = g.node(3).unwrap();
    assert!(!n3.replication_quorum && quorum_counts(n3));
    assert_eq!(g.number_sync_standbys, number);
    assert!(!crate::fsm::synchronous_standby_names(&g).contains("node_3"));

    // The primary applies the new names, then reaches primary with them.
    reports(&mut g, 1, ApplySettings, at(0.1));
    core().tick(&mut g, at(0.1));
    assert_eq!(g.node(1).unwrap().assigned, Primary);
    assert!(quorum_counts(g.node(3).unwrap()), "not confirmed yet");
    reports(&mut g, 1, Primary, at(0.2));
    core().tick(&mut g, at(0.2));
    assert!(!quorum_counts(g.node(3).unwrap()), "confirmed");

    // The last quorum standby cannot lose its quorum while one is required.
    refused(
        core().set_replication_quorum(&mut g, 2, false, at(1.0)),
        "lower it first",
    );
}

#[test]
fn a_primary_that_dies_while_applying_a_quorum_loss_waits_for_that_node_in_the_election() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary).lsn_mb(100).prio(50),
        node(3, Secondary).lsn_mb(101).prio(10),
    ]);
    core()
        .set_replication_quorum(&mut g, 3, false, t0())
        .unwrap();
    reports(&mut g, 1, ApplySettings, at(0.1));
    core().tick(&mut g, at(0.1));
    // Dies before it confirmed the new names; both standbys lost it.
    g.nodes[0] = g.nodes[0]
        .clone()
        .pg_down()
        .bad()
        .silent_since(Some(at(0.1)));
    for id in [2, 3] {
        reports(&mut g, id, Secondary, at(5.0));
        node_mut(&mut g, id).upstream_silent = Some(std::time::Duration::from_secs(5));
    }
    core().tick(&mut g, at(5.0));
    assert_eq!(g.node(3).unwrap().assigned, ReportLsn, "node 3 votes");
    for id in [2, 3] {
        reports(&mut g, id, ReportLsn, at(5.2));
    }
    core().tick(&mut g, at(5.2));
    // Node 2 wins by priority, but lacks what node 3 may have
    // acknowledged under the old names: it fetches that from node 3 first.
    assert_eq!(g.node(2).unwrap().assigned, FastForward);
    assert_eq!(g.node(3).unwrap().assigned, ReportLsn);
    let cfg = crate::fsm::FsmConfig::whole_seconds();
    let r = crate::core::reply::reply(&g, 2, at(5.2), &cfg);
    let ff = r.fast_forward.expect("the reply names the source");
    assert_eq!((ff.node_id, ff.lsn), (3, 101 * MB));
}

/// A dead machine: probes failing, its keeper silent since t0, and its
/// last report still saying PostgreSQL runs (it never said otherwise).
fn dead(n: NodeView) -> NodeView {
    n.bad().silent_since(Some(t0()))
}

#[test]
fn perform_failover_goes_on_without_a_missing_quorum_standby_only_when_that_loses_nothing() {
    // Node 3, a quorum standby, died with the primary: automatic failover
    // waits (it may hold commits node 2 lacks).
    let base = group(vec![
        dead(node(1, Primary)),
        node(2, Secondary).silent_since(Some(at(5.0))).upstream(5.0),
        dead(node(3, Secondary)),
    ]);
    let mut g = base.clone();
    core().tick(&mut g, at(5.0));
    assert_eq!(
        g.node(2).unwrap().assigned,
        Secondary,
        "automatic failover waits"
    );
    let before = g.clone();
    refused(
        core().failover(&mut g, false, at(5.0)),
        "node 3 may hold acknowledged commits",
    );
    assert_eq!(g, before);
    // With ANY 2, every commit is on node 2 too: no loss without node 3.
    let mut g2 = base.clone();
    g2.number_sync_standbys = 2;
    core().failover(&mut g2, false, at(5.0)).unwrap();
    assert_eq!(g2.node(2).unwrap().assigned, ReportLsn);
    assert_eq!(g2.node(1).unwrap().assigned, DemoteTimeout);
    // With the flag, an election without it, and an event on the loss.
    let actions = core().failover(&mut g, true, at(5.0)).unwrap();
    assert_eq!(g.node(2).unwrap().assigned, ReportLsn);
    assert_ne!(g.node(3).unwrap().assigned, ReportLsn, "left out");
    assert!(actions.iter().any(
        |a| matches!(a, Action::Note { description, .. } if description.contains("DATA LOSS"))
    ));
    assert!(g.generation > before.generation);
    // Node 2 reports its final LSN and wins; the dead node 3 is not
    // pulled back into the election.
    reports(&mut g, 2, ReportLsn, at(5.2));
    core().tick(&mut g, at(5.2));
    assert_ne!(g.node(3).unwrap().assigned, ReportLsn);
    assert_eq!(g.node(2).unwrap().assigned, PreparePromotion);
}

#[test]
fn perform_failover_refuses_a_healthy_primary_and_a_writer_without_synchronous_replication() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    refused(core().failover(&mut g, true, t0()), "perform switchover");
    let mut g = group(vec![
        dead(node(1, WaitPrimary)),
        node(2, Catchingup).silent_since(Some(at(5.0))),
    ]);
    let before = g.clone();
    refused(core().failover(&mut g, false, at(5.0)), "was wait_primary");
    assert_eq!(g, before);
    core().failover(&mut g, true, at(5.0)).unwrap();
    assert_eq!(g.node(2).unwrap().assigned, ReportLsn);
    assert_eq!(g.node(1).unwrap().assigned, DemoteTimeout);
}

#[test]
fn perform_failover_leaves_a_voter_that_never_reports_out_of_the_election() {
    let mut g = group(vec![
        dead(node(1, Primary)).goal(Draining),
        node(2, ReportLsn).lsn_mb(100),
        dead(node(3, Secondary)).goal(ReportLsn),
    ]);
    g.nodes[1].last_report = Some(at(5.0));
    core().tick(&mut g, at(5.0));
    assert_eq!(g.node(2).unwrap().assigned, ReportLsn, "waits for node 3");
    refused(core().failover(&mut g, false, at(5.0)), "node 3 may hold");
    core().failover(&mut g, true, at(5.0)).unwrap();
    assert_eq!(g.node(3).unwrap().assigned, Catchingup);
    assert_eq!(g.node(2).unwrap().assigned, PreparePromotion);
}

#[test]
fn a_quorum_standby_leaves_the_synchronous_set_before_its_maintenance() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    core().enable_maintenance(&mut g, 3, true, t0()).unwrap();
    assert_eq!(g.node(3).unwrap().assigned, WaitMaintenance);
    assert_eq!(g.node(1).unwrap().assigned, ApplySettings);
    assert!(!crate::fsm::synchronous_standby_names(&g).contains("node_3"));
    assert!(quorum_counts(g.node(3).unwrap()), "counts until confirmed");
    reports(&mut g, 3, WaitMaintenance, at(0.05));
    reports(&mut g, 1, ApplySettings, at(0.1));
    core().tick(&mut g, at(0.1));
    assert_eq!(
        g.node(3).unwrap().assigned,
        WaitMaintenance,
        "not confirmed yet"
    );
    reports(&mut g, 1, Primary, at(0.2));
    core().tick(&mut g, at(0.2));
    assert_eq!(g.node(3).unwrap().assigned, Maintenance);
    // Its PostgreSQL stopped by the operator: not a voter, no failover
    // blocker, no restart.
    reports(&mut g, 3, Maintenance, at(0.3));
    node_mut(&mut g, 3).pg_running = false;
    assert!(!quorum_counts(g.node(3).unwrap()));
    core().tick(&mut g, at(0.3));
    assert_eq!(g.node(1).unwrap().assigned, Primary);
    // Back: it follows the primary, which takes it into its names again.
    core().disable_maintenance(&mut g, 3, at(1.0)).unwrap();
    assert_eq!(g.node(3).unwrap().assigned, Catchingup);
    assert_eq!(g.node(1).unwrap().assigned, ApplySettings);
    assert!(crate::fsm::synchronous_standby_names(&g).contains("node_3"));
}

#[test]
fn a_standby_without_quorum_goes_into_maintenance_at_once() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary).quorum(false),
    ]);
    core().enable_maintenance(&mut g, 3, true, t0()).unwrap();
    assert_eq!(g.node(3).unwrap().assigned, Maintenance);
    assert_eq!(g.node(1).unwrap().assigned, Primary);
    refused(
        core().disable_maintenance(&mut g, 3, t0()),
        "on its way into maintenance",
    );
}

#[test]
fn perform_failover_counts_every_quorum_standby_that_will_not_vote() {
    // k = 2, quorum standbys 2..5; node 3 left out of the election
    // earlier (now catchingup, dead), node 4 does not report: going on
    // without node 4 too would leave two missing (a commit on 3 and 4 only).
    let mut g = group(vec![
        dead(node(1, Primary)).goal(Draining),
        node(2, ReportLsn).silent_since(Some(at(5.0))),
        dead(node(3, Secondary))
            .goal(Catchingup)
            .changed_at(at(1.0)),
        dead(node(4, Secondary)).goal(ReportLsn),
        node(5, ReportLsn).silent_since(Some(at(5.0))),
    ]);
    g.number_sync_standbys = 2;
    let before = g.clone();
    refused(core().failover(&mut g, false, at(5.0)), "node 3, node 4");
    assert_eq!(g, before);
    // A dropped quorum standby whose drop the primary had not confirmed
    // counts too (ANY 1 (2, 3), 3 dropped, the primary died applying it).
    let mut g = group(vec![
        dead(node(1, Primary)).goal(ApplySettings),
        node(2, Secondary).silent_since(Some(at(5.0))).upstream(5.0),
        node(3, Secondary).dropped(Secondary, false),
    ]);
    refused(core().failover(&mut g, false, at(5.0)), "node 3");
    // A number_sync_standbys raised but not yet confirmed counts as 1.
    let mut g = group(vec![
        dead(node(1, Primary)).goal(ApplySettings),
        node(2, Secondary).silent_since(Some(at(5.0))).upstream(5.0),
        dead(node(3, Secondary)),
    ]);
    g.number_sync_standbys = 2;
    refused(core().failover(&mut g, false, at(5.0)), "node 3");
}

#[test]
fn a_switchover_never_waits_for_good() {
    // The candidate is dropped: refused while it is the candidate.
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary).quorum(false),
        node(3, Secondary),
    ]);
    core().switchover(&mut g, Some(2), t0()).unwrap();
    refused(
        core().drop_node(&mut g, 2, true, t0()),
        "candidate of a switchover",
    );
    // The old primary's stop keeps failing: after promotion_timeout it
    // takes writes again.
    let cfg = FsmConfig::whole_seconds();
    let late = cfg.promotion_timeout.as_secs_f64() + 1.0;
    reports(&mut g, 1, Primary, at(late));
    for id in [2, 3] {
        reports(&mut g, id, Secondary, at(late));
    }
    core().tick(&mut g, at(late));
    assert_eq!(g.node(1).unwrap().assigned, WaitPrimary);
    assert_eq!(g.switchover_to, None);
    // Stopped cleanly, its keeper gone, the candidate dead: another
    // secondary with its last WAL takes over.
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    core().switchover(&mut g, Some(2), t0()).unwrap();
    old_primary_stops_cleanly(&mut g, at(0.1));
    node_mut(&mut g, 3).lsn = Lsn(121 * MB);
    reports(&mut g, 3, Secondary, at(5.0));
    node_mut(&mut g, 2).pg_running = false;
    reports(&mut g, 2, Secondary, at(5.0));
    core().tick(&mut g, at(5.0));
    assert_eq!(
        g.node(3).unwrap().assigned,
        WaitPrimary,
        "passed on to node 3"
    );
}

#[test]
fn after_a_monitor_restart_a_stored_stop_is_not_taken_for_a_crash() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    core().switchover(&mut g, Some(2), t0()).unwrap();
    reports(&mut g, 1, Draining, at(0.1));
    let o = node_mut(&mut g, 1);
    o.pg_running = false;
    o.heard = false; // the restarted monitor has not heard it yet
    core().tick(&mut g, at(0.2));
    assert_eq!(g.node(2).unwrap().assigned, Secondary, "waits, no election");
    assert_eq!(g.node(3).unwrap().assigned, Secondary);
}

#[test]
fn a_primary_short_of_its_synchronous_standbys_says_so() {
    let mut g = group(vec![
        node(1, Primary)
            .changed_at(at(-60.0))
            .silent_since(Some(at(5.0))),
        node(2, Secondary).silent_since(Some(at(5.0))),
        dead(node(3, Secondary)),
    ]);
    g.number_sync_standbys = 2;
    let (id, why) = crate::fsm::current_wait(&g, at(5.0), &FsmConfig::whole_seconds()).unwrap();
    assert_eq!(id, 3);
    assert!(why.contains("number-sync-standbys 1"), "{why}");
}

#[test]
fn maintenance_of_the_primary_is_a_switchover_first() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    // Only when asked for: it moves the primary.
    let before = g.clone();
    refused(
        core().enable_maintenance(&mut g, 1, false, t0()),
        "add --allow-failover",
    );
    assert_eq!(g, before, "a refusal changes nothing");
    core().enable_maintenance(&mut g, 1, true, t0()).unwrap();
    assert_eq!(g.node(1).unwrap().assigned, Draining);
    assert_eq!(g.switchover_to, Some(2));
    assert!(g.node(1).unwrap().maintenance_requested);
    old_primary_stops_cleanly(&mut g, at(0.1));
    node_mut(&mut g, 2).lsn = Lsn(121 * MB);
    reports(&mut g, 2, Secondary, at(0.12));
    core().tick(&mut g, at(0.12));
    assert_eq!(g.node(2).unwrap().assigned, WaitPrimary);
    assert_eq!(g.node(1).unwrap().assigned, Demoted);
    reports(&mut g, 2, WaitPrimary, at(0.3));
    reports(&mut g, 1, Demoted, at(0.3));
    core().tick(&mut g, at(0.3));
    assert_eq!(g.node(1).unwrap().assigned, Maintenance, "not a rejoin");
    assert!(!g.node(1).unwrap().maintenance_requested);
    // A switchover that cannot run: refused, nothing changed.
    let mut g = group(vec![node(1, Primary), node(2, Secondary).prio(0)]);
    let before = g.clone();
    refused(
        core().enable_maintenance(&mut g, 1, true, t0()),
        "starts with a switchover",
    );
    assert_eq!(g, before);
}

#[test]
fn a_switchover_whose_old_primary_is_gone_after_a_clean_stop_becomes_a_failover() {
    let cfg = FsmConfig::whole_seconds();
    let late = cfg.promotion_timeout.as_secs_f64() + 1.0;
    // Nobody received its last WAL, its keeper is gone (and, the other
    // case, a monitor restart lost the shutdown LSN).
    for restarted in [false, true] {
        let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
        core().switchover(&mut g, Some(2), t0()).unwrap();
        old_primary_stops_cleanly(&mut g, at(0.1));
        if restarted {
            let o = node_mut(&mut g, 1);
            o.heard = false;
            o.shutdown_lsn = None;
        }
        node_mut(&mut g, 2).lsn = Lsn(119 * MB);
        reports(&mut g, 2, Secondary, at(late));
        core().tick(&mut g, at(late));
        assert_eq!(
            g.node(2).unwrap().assigned,
            StopReplication,
            "restarted {restarted}: promoted read-only, behind the lease gate"
        );
    }
}

#[test]
fn maintenance_may_not_leave_fewer_quorum_standbys_than_commits_need() {
    let mut g = group(vec![
        node(1, Primary),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    g.number_sync_standbys = 2;
    let before = g.clone();
    refused(
        core().enable_maintenance(&mut g, 3, true, t0()),
        "lower it first",
    );
    assert_eq!(g, before);
}
