//! A standby found out of recovery (a leadership conflict): the engine
//! fences it and says so in its reports.

use super::tests::{engine, primary_streamed_by, reply, running, s, standby};
use super::*;
use crate::plan::{Goal, Role, Step, Upstream};
use NodeState::*;

fn up(id: i64) -> Upstream {
    Upstream {
        node_id: id,
        host: "10.0.0.2".into(),
        port: 5432,
    }
}

fn goal(state: NodeState, primary: Option<Upstream>) -> Goal {
    Goal {
        state,
        ssn: String::new(),
        primary,
        fast_forward: None,
    }
}

#[test]
fn a_secondary_out_of_recovery_is_stopped_made_a_standby_and_rewound() {
    let mut e = engine(Secondary);
    // Promoted by hand: it runs as a primary would.
    e.observe(s(1.0), running(primary_streamed_by(&[])));
    assert!(e.out_of_recovery());
    assert_eq!(e.request(s(1.0)).in_recovery, Some(false));
    let d = e.on_reply(s(1.0), s(1.1), reply(Secondary, 5, &[2]));
    assert!(matches!(d, Decision::Steady(_)), "{d:?}");
    let role = Role::Standby {
        upstream: Some(up(2)),
    };
    // The settings were verified for its role before: fencing does not
    // depend on them.
    e.role_applied(Some(role.clone()));
    assert_eq!(
        e.steady_steps(s(1.1), &goal(Secondary, Some(up(2)))),
        vec![
            Step::Stop,
            Step::Configure(role.clone()),
            Step::Rewind(up(2)),
            Step::Configure(role),
            Step::Start
        ]
    );
}

#[test]
fn without_a_node_to_follow_it_only_restarts_in_recovery() {
    let mut e = engine(Catchingup);
    e.observe(s(1.0), running(primary_streamed_by(&[])));
    assert_eq!(
        e.steady_steps(s(1.0), &goal(Catchingup, None)),
        vec![
            Step::Stop,
            Step::Configure(Role::Standby { upstream: None }),
            Step::Start
        ]
    );
}

#[test]
fn states_a_promotion_runs_under_or_writable_ones_are_no_conflict() {
    for state in [
        PreparePromotion,
        StopReplication,
        WaitPrimary,
        Primary,
        Single,
    ] {
        let mut e = engine(state);
        e.observe(s(1.0), running(primary_streamed_by(&[])));
        assert!(!e.out_of_recovery(), "{state}");
    }
    // In recovery, or no status: nothing to fence.
    let mut e = engine(Secondary);
    e.observe(s(1.0), running(standby(Some((true, Some(0))))));
    assert!(!e.out_of_recovery());
    assert_eq!(e.request(s(1.0)).in_recovery, Some(true));
    e.observe(s(2.0), super::tests::status_unknown());
    assert!(!e.out_of_recovery());
    assert_eq!(e.request(s(2.0)).in_recovery, None);
}
