//! The lease gate after the operator's `perform failover`: the old
//! writer's keeper may have kept writing under its fencing exemption
//! ("every other node streams from me") until the election stopped the
//! standbys' streams, so its lease counts from the command as well.

use pgpilot_proto::NodeState::*;

use super::Core;
use crate::fsm::builders::*;
use crate::fsm::{FsmConfig, GroupView};

fn reports(g: &mut GroupView, id: i64, state: pgpilot_proto::NodeState, now: f64) {
    let n = g.nodes.iter_mut().find(|n| n.id == id).unwrap();
    n.reported = state;
    n.last_report = Some(at(now));
}

#[test]
fn the_old_writer_of_a_forced_failover_is_fenced_a_lease_after_the_command() {
    let core = Core::new(FsmConfig::whole_seconds());
    // The primary lost the monitor only: its standbys still stream from
    // it (no witness), so automatic failover does not act; its keeper
    // keeps writing under the exemption.
    let mut g = group(vec![
        node(1, Primary).bad().silent_since(Some(t0())),
        node(2, Secondary).silent_since(Some(at(5.0))),
        node(3, Secondary).silent_since(Some(at(5.0))).lsn_mb(99),
    ]);
    core.tick(&mut g, at(5.0));
    assert_eq!(
        g.node(2).unwrap().assigned,
        Secondary,
        "no witness, no failover"
    );
    // Past its lease by its last report, but not by the command.
    core.failover(&mut g, false, at(5.0)).unwrap();
    assert_eq!(g.node(1).unwrap().failed_over_at, Some(at(5.0)));
    for id in [2, 3] {
        reports(&mut g, id, ReportLsn, 5.1);
    }
    core.tick(&mut g, at(5.1));
    reports(&mut g, 2, PreparePromotion, 5.2);
    core.tick(&mut g, at(5.2));
    reports(&mut g, 2, StopReplication, 5.3);
    for s in [5.3, 7.0, 9.0, 9.2] {
        core.tick(&mut g, at(s));
        assert_eq!(
            g.node(2).unwrap().assigned,
            StopReplication,
            "writable at {s} s while node 1 may still write under its exemption"
        );
    }
    // A lease and the margin after the candidate was told to promote (at
    // 5.2 s): the voters had stopped streaming before that.
    core.tick(&mut g, at(9.3));
    assert_eq!(g.node(2).unwrap().assigned, WaitPrimary);
}
