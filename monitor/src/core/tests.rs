//! The operations of the core on small views (the rules themselves have
//! their table tests in `fsm`).

use pgpilot_proto::NodeState::*;

use super::Core;
use crate::error::MonitorError;
use crate::fsm::builders::*;
use crate::fsm::{Action, FsmConfig};

fn core() -> Core {
    Core::new(FsmConfig::default())
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
