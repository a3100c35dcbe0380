//! A keeper that adopts the PostgreSQL an earlier keeper left running:
//! one round to prove a lease, then the usual rules.

use super::tests::{engine, primary_streamed_by, reply, running, s, standby};
use super::*;
use NodeState::*;

/// A keeper restarted in `primary` that found its PostgreSQL running at 10 s.
fn adopted_primary() -> Engine {
    let mut e = engine(Primary);
    e.pg_adopted(s(10.0));
    e
}

#[test]
fn an_adopted_primary_has_one_round_to_prove_a_lease() {
    let mut e = adopted_primary();
    // One lease (1.2 s: a status read and two reports) after the
    // adoption, not at once as for a keeper without a lease and without
    // PostgreSQL.
    assert_eq!(e.adoption_window(), Duration::from_millis(1200));
    assert_eq!(e.fence_deadline(), Some(s(11.2)));
    assert!(!e.must_fence(s(10.0)));
    e.observe(s(10.1), running(primary_streamed_by(&[])));
    // The first report went unanswered: the round is not over yet.
    assert!(!e.on_no_reply(s(11.0)));
    assert!(e.next_wait(s(11.0)) <= Duration::from_millis(201));
    // Then it fences, like any writable node whose lease ran out.
    assert!(e.on_no_reply(s(11.2)));
    e.fenced();
    assert_eq!(e.state().current, DemoteTimeout);
    assert_eq!(e.fence_deadline(), None);
}

#[test]
fn the_first_reply_gives_an_adopted_primary_its_lease_and_a_settings_check() {
    let mut e = adopted_primary();
    e.observe(s(10.05), running(primary_streamed_by(&["pgpilot_node_2"])));
    let d = e.on_reply(s(10.06), s(10.07), reply(Primary, 5, &[2]));
    let Decision::Steady(goal) = d else {
        panic!("{d:?}")
    };
    // The lease counts from the report, as for any keeper.
    assert_eq!(e.fence_deadline(), Some(s(13.06)));
    assert!(!e.must_fence(s(13.0)));
    // It runs: nothing to start, but its settings are verified again.
    assert!(!e.should_start_pg(s(10.07)));
    assert!(e.role_to_apply(&goal).is_some());
    assert!(!e.request(s(10.1)).status_unknown);
}

#[test]
fn the_window_is_not_a_lease() {
    // Every standby streams from the adopted primary, but without a reply
    // the keeper knows no lease: no exemption, and the window still ends.
    let mut e = adopted_primary();
    e.observe(s(10.1), running(primary_streamed_by(&["pgpilot_node_2"])));
    assert_eq!(e.fence_deadline(), Some(s(11.2)));
    // It died within the window: no writable start without a lease.
    assert!(!e.pg_died(s(10.5)));
    assert!(!e.should_start_pg(s(10.6)));
}

#[test]
fn an_adopted_primary_whose_goal_moved_on_is_not_left_writable() {
    // The monitor failed over while no keeper ran: the first reply names
    // a newer generation and a goal without writes. The engine plans the
    // old primary's way out (its steps stop PostgreSQL) instead of
    // keeping it steady.
    let mut e = adopted_primary();
    e.observe(s(10.1), running(primary_streamed_by(&[])));
    let d = e.on_reply(s(10.1), s(10.2), reply(Draining, 6, &[2]));
    assert!(
        matches!(&d, Decision::Transition { from: Primary, goal } if goal.state == Draining),
        "{d:?}"
    );
    assert_eq!(e.state().generation_seen, 6);
}

#[test]
fn adopted_standbys_and_single_nodes_never_fence() {
    for state in [Secondary, Catchingup, Single] {
        let mut e = engine(state);
        e.pg_adopted(s(10.0));
        assert_eq!(e.fence_deadline(), None, "{state}");
        e.observe(s(10.1), running(standby(Some((true, Some(5))))));
        assert!(!e.on_no_reply(s(100.0)), "{state}");
    }
}

#[test]
fn without_adoption_a_writable_node_still_fences_at_once() {
    // The rule adoption changes, unchanged for a keeper that found no
    // PostgreSQL running (see a_writable_node_without_a_lease_has_a_past_deadline).
    let e = engine(Primary);
    assert_eq!(e.fence_deadline(), Some(Mono::ZERO));
}
