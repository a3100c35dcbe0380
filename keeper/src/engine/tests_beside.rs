//! Replies beside long steps (see `beside.rs`): the report goes on, no
//! second transition starts, the lease follows only a goal that keeps to
//! the steps, a writable node whose goal moved on fences, and steps that
//! follow a node that is no longer the primary are abandoned.

use super::tests::{engine, primary_with_lease, reply, s, stopped};
use super::*;
use NodeState::*;

/// `reply` with node `primary` of the others marked as the primary.
fn reply_naming(
    state: NodeState,
    generation: i64,
    others: &[i64],
    primary: i64,
) -> pb::NodeActiveResponse {
    let mut r = reply(state, generation, others);
    for n in &mut r.other_nodes {
        n.is_primary = n.node_id == primary;
    }
    r
}

/// A new standby told to copy node 2 (sent at 10 s), its copy started.
fn copying() -> (Engine, Goal) {
    let mut e = engine(WaitStandby);
    e.observe(s(10.0), stopped());
    let d = e.on_reply(s(10.0), s(10.1), reply_naming(Catchingup, 5, &[2, 3], 2));
    let Decision::Transition {
        from: WaitStandby,
        goal,
    } = d
    else {
        panic!("{d:?}");
    };
    e.saved();
    e.steps_started(&goal);
    (e, goal)
}

#[test]
fn replies_beside_a_copy_start_nothing_and_change_nothing_on_disk() {
    let (mut e, goal) = copying();
    assert_eq!(e.steps_running(), Some(&goal));
    // The same goal: go on.
    let v = e.on_reply_beside(s(11.0), s(11.1), reply_naming(Catchingup, 5, &[2, 3], 2));
    assert_eq!(v, Beside::Continue);
    // A changed goal of the same generation waits for the copy.
    let v = e.on_reply_beside(s(12.0), s(12.1), reply_naming(Dropped, 5, &[2, 3], 2));
    assert!(
        matches!(&v, Beside::Deferred(w) if w.contains("dropped")),
        "{v:?}"
    );
    // A newer generation (a failover elsewhere) waits too.
    let v = e.on_reply_beside(s(13.0), s(13.1), reply_naming(Catchingup, 6, &[2, 3], 2));
    assert!(matches!(v, Beside::Deferred(_)), "{v:?}");
    // Nothing of it is the state's: the disk keeps what the copy acts on.
    assert!(!e.needs_save());
    assert_eq!(e.state().assigned, Catchingup);
    assert_eq!(e.state().generation_seen, 5);
    assert_eq!(e.state().current, WaitStandby);
    // The report beside the copy says what the node is: leaving
    // wait_standby, PostgreSQL not running.
    let req = e.request(s(14.0));
    assert_eq!(req.reported_state, WaitStandby as i32);
    assert!(!req.pg_running);
    // Once the copy ended, the next round takes the changed goal.
    e.transition_ok(Catchingup);
    assert_eq!(e.steps_running(), None);
    let d = e.on_reply(s(15.0), s(15.1), reply_naming(Dropped, 6, &[2, 3], 2));
    assert!(
        matches!(&d, Decision::Transition { from: Catchingup, goal } if goal.state == Dropped),
        "{d:?}"
    );
}

#[test]
fn a_copy_from_a_node_that_is_no_longer_the_primary_is_abandoned() {
    let (mut e, _) = copying();
    // No primary named (an election under way): the copy goes on.
    let v = e.on_reply_beside(s(11.0), s(11.1), reply(Catchingup, 6, &[2, 3]));
    assert!(matches!(v, Beside::Deferred(_)), "{v:?}");
    let v = e.on_reply_beside(s(12.0), s(12.1), reply_naming(Catchingup, 6, &[2, 3], 3));
    assert!(
        matches!(&v, Beside::Abandon(w) if w.contains("follow node 2") && w.contains("node 3")),
        "{v:?}"
    );
    e.transition_failed("abandoned".into());
    assert_eq!(e.steps_running(), None);
    assert_eq!(e.state().current, WaitStandby);
}

#[test]
fn a_writable_node_keeps_its_lease_beside_steps_only_under_a_goal_that_keeps_to_them() {
    // (what, reply state, generation, verdict is a fence, deadline after)
    let cases: &[(&str, NodeState, i64, bool, f64)] = &[
        ("the steps' goal", ApplySettings, 5, false, 14.0),
        ("another writable goal", WaitPrimary, 5, false, 14.0),
        ("a goal without writes", Draining, 5, true, 13.0),
        ("a newer generation", ApplySettings, 6, true, 13.0),
        ("a stale generation", ApplySettings, 4, false, 13.0),
    ];
    for (what, state, generation, fence, deadline) in cases {
        let mut e = primary_with_lease();
        let goal = plan::goal_from_reply(&reply(ApplySettings, 5, &[2]), ApplySettings);
        e.steps_started(&goal);
        let v = e.on_reply_beside(s(11.0), s(11.1), reply(*state, *generation, &[2]));
        assert_eq!(matches!(v, Beside::Fence(_)), *fence, "{what}: {v:?}");
        assert_eq!(e.fence_deadline(), Some(s(*deadline)), "{what}");
        assert!(!e.needs_save(), "{what}");
    }
}

#[test]
fn no_reply_beside_the_steps_fences_at_the_deadline() {
    let mut e = primary_with_lease();
    let goal = plan::goal_from_reply(&reply(ApplySettings, 5, &[2]), ApplySettings);
    e.steps_started(&goal);
    assert!(!e.on_no_reply(s(12.9)));
    assert!(e.on_no_reply(s(13.0)));
    e.fenced();
    assert_eq!(e.steps_running(), None);
    assert_eq!(e.state().current, DemoteTimeout);
}

#[test]
fn a_promotion_under_way_gets_no_lease_from_a_newer_generation() {
    let mut e = engine(PreparePromotion);
    let d = e.on_reply(s(10.0), s(10.1), reply(WaitPrimary, 5, &[2]));
    let Decision::Transition { goal, .. } = d else {
        panic!("{d:?}");
    };
    e.steps_started(&goal);
    let v = e.on_reply_beside(s(12.0), s(12.1), reply(WaitPrimary, 5, &[2]));
    assert_eq!(v, Beside::Continue);
    // On its way into a writable state it fences like a writable node,
    // with the lease of the last reply of its own generation.
    assert_eq!(e.fence_deadline(), Some(s(15.0)));
    // A newer generation: it may take writes already, so it stops now
    // rather than when its steps end (simulation, seed 453620).
    let v = e.on_reply_beside(s(14.0), s(14.1), reply(WaitPrimary, 6, &[2]));
    assert!(matches!(v, Beside::Fence(_)), "{v:?}");
}

#[test]
fn beat_wait_counts_from_the_last_report() {
    let mut e = engine(Secondary);
    e.on_reply(s(10.0), s(10.1), reply(Secondary, 5, &[2]));
    assert_eq!(
        e.beat_wait(s(10.3), Some(s(10.0))),
        Duration::from_millis(700)
    );
    assert_eq!(e.beat_wait(s(12.0), Some(s(10.0))), MIN_WAIT, "overdue");
    assert_eq!(e.beat_wait(s(12.0), None), MIN_WAIT, "never reported");
    // A writable node: never later than just past its fencing deadline.
    let e = primary_with_lease();
    assert_eq!(
        e.beat_wait(s(12.5), Some(s(12.4))),
        Duration::from_millis(501)
    );
}

#[test]
fn a_node_on_its_way_into_a_writable_state_gets_no_lease_from_a_goal_without_writes() {
    let mut e = engine(PreparePromotion);
    let d = e.on_reply(s(10.0), s(10.1), reply(WaitPrimary, 5, &[2]));
    let Decision::Transition { goal, .. } = d else {
        panic!("{d:?}");
    };
    e.steps_started(&goal);
    // Same generation, but the goal moved to one without writes.
    // It lends no lease, and a node on its way into writes stops at once.
    let v = e.on_reply_beside(s(12.0), s(12.1), reply(Demoted, 5, &[2]));
    assert!(matches!(v, Beside::Fence(_)), "{v:?}");
    assert_eq!(
        e.fence_deadline(),
        Some(s(13.0)),
        "only the reply that assigned wait_primary lent a lease"
    );
}

/// Seed 539495 of the simulation: a copy that finished as a promotion was
/// decided must not start streaming from the old primary. Before its
/// start it reports PostgreSQL running, and starts only on a reply to
/// that report that keeps the goal.
#[test]
fn a_start_after_a_copy_waits_for_the_monitors_word_and_a_newer_generation_ends_it() {
    let (mut e, _) = copying();
    e.announce_started(s(20.0));
    assert!(
        e.request(s(20.0)).pg_running,
        "the report announces the start"
    );
    assert_eq!(
        e.beat_wait(s(20.0), Some(s(19.9))),
        MIN_WAIT,
        "the announcement goes out at once"
    );
    // A reply to a report sent before the announcement says nothing of it.
    let v = e.on_reply_beside(s(19.9), s(20.1), reply_naming(Catchingup, 5, &[2, 3], 2));
    assert_eq!(v, Beside::Continue);
    assert!(!e.announce_confirmed());
    // One to the announcement that keeps the goal: go.
    let v = e.on_reply_beside(s(20.0), s(20.1), reply_naming(Catchingup, 5, &[2, 3], 2));
    assert_eq!(v, Beside::Continue);
    assert!(e.announce_confirmed());
    // The driver goes on to the start: replies beside it end nothing, and
    // the reports still say PostgreSQL runs (it is being started).
    e.announce_went_on();
    assert!(!e.announce_confirmed());
    let v = e.on_reply_beside(s(21.0), s(21.1), reply_naming(Catchingup, 5, &[2, 3], 2));
    assert_eq!(v, Beside::Continue);
    assert!(e.request(s(21.0)).pg_running);

    // The monitor moved on meanwhile (an election: a newer generation,
    // nobody to follow): the steps end before PostgreSQL starts.
    let (mut e, _) = copying();
    e.announce_started(s(20.0));
    let v = e.on_reply_beside(s(20.0), s(20.1), reply(Catchingup, 6, &[2, 3]));
    assert!(
        matches!(&v, Beside::Abandon(w) if w.contains("did not start PostgreSQL")),
        "{v:?}"
    );
    assert!(!e.announce_confirmed());
    // Another node to follow, same generation: ended too.
    let (mut e, _) = copying();
    e.announce_started(s(20.0));
    let v = e.on_reply_beside(s(20.0), s(20.1), reply_naming(Catchingup, 5, &[2, 3], 3));
    assert!(matches!(v, Beside::Abandon(_)), "{v:?}");
}

#[test]
fn no_start_beside_steps_they_own_postgres() {
    // A standby being rewound toward a new primary: the rewind stopped
    // PostgreSQL on purpose. A start beside it would bring the old data
    // directory up, still following the old primary, whose synchronous
    // commits it could then acknowledge (simulation, seed 847934).
    let mut e = engine(Secondary);
    e.observe(s(10.0), stopped());
    assert!(e.should_start_pg(s(10.0)), "a stopped standby is restarted");
    let d = e.on_reply(s(10.0), s(10.1), reply_naming(Catchingup, 5, &[2, 3], 3));
    let Decision::Transition { goal, .. } = d else {
        panic!("{d:?}");
    };
    e.steps_started(&goal);
    assert!(!e.should_start_pg(s(10.2)), "the steps own PostgreSQL");
    e.steps_ended();
    assert!(
        e.should_start_pg(s(10.3)),
        "the next round may start it again"
    );
}
