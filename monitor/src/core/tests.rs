//! The operations of the core on small views (the rules themselves have
//! their table tests in `fsm`).

use pgpilot_proto::NodeState::*;

use super::Core;
use crate::error::MonitorError;
use crate::fsm::builders::*;
use crate::fsm::{Action, FsmConfig};

fn core() -> Core {
    Core::new(FsmConfig::whole_seconds())
}

#[test]
fn dropping_a_node_of_a_failover_under_way_is_refused_and_changes_nothing() {
    let mut g = group(vec![
        node(1, Primary).goal(Draining).bad(),
        node(2, ReportLsn),
        node(3, ReportLsn),
    ]);
    let before = g.clone();
    for force in [false, true] {
        let err = core().drop_node(&mut g, 3, force, t0()).unwrap_err();
        assert!(
            matches!(&err, MonitorError::FailedPrecondition(m) if m.contains("failover under way")),
            "{err}"
        );
        assert_eq!(g, before);
    }
}

#[test]
fn a_dropped_writer_counts_as_primary_only_when_it_was_one() {
    for (node1, from) in [
        (node(1, Primary), Primary),
        // On its way to wait_primary: sync may already be off.
        (node(1, Primary).goal(WaitPrimary), WaitPrimary),
        // Fenced itself: it may have acknowledged in wait_primary.
        (node(1, DemoteTimeout).goal(WaitPrimary), WaitPrimary),
    ] {
        let mut g = group(vec![node1, node(2, Secondary).quorum(false)]);
        core().drop_node(&mut g, 1, true, at(1.0)).unwrap();
        assert_eq!(g.node(1).unwrap().dropped_from, Some(from));
    }
}

#[test]
fn a_forced_drop_of_a_standby_makes_the_primary_reapply_its_settings_then_removes_it() {
    let mut g = group(vec![
        node(1, Primary).changed_at(at(-5.0)),
        node(2, Secondary),
        node(3, Secondary),
    ]);
    let actions = core().drop_node(&mut g, 3, true, t0()).unwrap();
    assert_eq!(g.node(1).unwrap().assigned, ApplySettings);
    // The row stays until the new names are confirmed: a failover from
    // apply_settings must still see that node 3 may hold commits.
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::RemoveNode { node_id: 3, .. })),
        "{actions:?}"
    );
    assert!(g.node(3).is_some());
}

/// A report of node `id` in `state` whose PostgreSQL is (or is not) in
/// recovery.
fn report_of(id: i64, state: pgpilot_proto::NodeState, in_recovery: bool) -> super::Report {
    super::Report::from_wire(&pgpilot_proto::pb::NodeActiveRequest {
        node_id: id,
        reported_state: state as i32,
        pg_running: true,
        timeline: 1,
        lsn: 100 * MB,
        in_recovery: Some(in_recovery),
        ..Default::default()
    })
    .unwrap()
}

fn conflicts(actions: &[Action]) -> Vec<(i64, Option<i64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Conflict { node_id, other, .. } => Some((*node_id, *other)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_standby_found_out_of_recovery_is_one_conflict_while_it_lasts() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    let c = core();
    let a = c
        .report(&mut g, &report_of(1, Primary, false), at(0.5))
        .unwrap();
    assert_eq!(conflicts(&a), vec![]);
    let a = c
        .report(&mut g, &report_of(2, Secondary, true), at(0.5))
        .unwrap();
    assert_eq!(conflicts(&a), vec![]);
    // Promoted by hand: one ERROR event naming both nodes.
    let a = c
        .report(&mut g, &report_of(2, Secondary, false), at(1.0))
        .unwrap();
    assert_eq!(conflicts(&a), vec![(2, Some(1))], "{a:?}");
    let Some(Action::Conflict { description, .. }) =
        a.iter().find(|a| matches!(a, Action::Conflict { .. }))
    else {
        unreachable!()
    };
    assert!(
        description.contains("node 2 \"node_2\"") && description.contains("node 1 \"node_1\""),
        "{description}"
    );
    // No goal changes: the keeper fences it by itself.
    assert!(
        !a.iter().any(|a| matches!(a, Action::AssignGoal { .. })),
        "{a:?}"
    );
    // Every later report while it lasts, from either node: nothing new.
    for t in [1.5, 2.0, 2.5] {
        let a = c
            .report(&mut g, &report_of(2, Secondary, false), at(t))
            .unwrap();
        assert_eq!(conflicts(&a), vec![], "{a:?}");
        let a = c
            .report(&mut g, &report_of(1, Primary, false), at(t))
            .unwrap();
        assert_eq!(conflicts(&a), vec![], "{a:?}");
    }
    // Fenced (back in recovery): a note, then a new conflict is new.
    let a = c
        .report(&mut g, &report_of(2, Secondary, true), at(3.0))
        .unwrap();
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Note { description, .. }
            if description.contains("no leadership conflict"))),
        "{a:?}"
    );
    let a = c
        .report(&mut g, &report_of(2, Secondary, false), at(3.5))
        .unwrap();
    assert_eq!(conflicts(&a), vec![(2, Some(1))]);
}

#[test]
fn an_older_keeper_that_does_not_say_is_no_conflict() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    let mut r = report_of(2, Secondary, false);
    r.in_recovery = None;
    let a = core().report(&mut g, &r, at(1.0)).unwrap();
    assert_eq!(conflicts(&a), vec![]);
}

#[test]
fn a_second_writer_is_one_conflict_naming_the_first() {
    let mut g = group(vec![node(1, Primary), node(2, Secondary)]);
    let c = core();
    c.report(&mut g, &report_of(1, Primary, false), at(0.5))
        .unwrap();
    // As if node 2 reported a writable state (a keeper on a restored
    // data directory): the core checks the report first, so put the view
    // where that report is allowed.
    g.nodes[1].reported = Single;
    g.nodes[1].assigned = Single;
    let a = c
        .report(&mut g, &report_of(2, Single, false), at(1.0))
        .unwrap();
    assert_eq!(conflicts(&a), vec![(2, Some(1))], "{a:?}");
    let a = c
        .report(&mut g, &report_of(1, Primary, false), at(1.5))
        .unwrap();
    assert_eq!(conflicts(&a), vec![], "{a:?}");
}
