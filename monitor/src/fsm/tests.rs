//! Table-driven tests of every rule (the acceptance criteria of decide).

use pgpilot_proto::NodeState::{self, *};

use super::builders::*;
use super::*;

/// What one decide call must return, in order.
#[derive(Debug, PartialEq)]
pub(super) enum Want {
    Bump,
    Goal(i64, NodeState),
    Remove(i64),
    Forget,
    /// The group waits for this node (an event says why).
    WaitFor(i64),
}
use Want::{Bump, Forget, Goal, Remove, WaitFor};

pub(super) struct Case {
    name: &'static str,
    group: GroupView,
    now: Timestamp,
    want: Vec<Want>,
    /// Substring of the concatenated reasons.
    reason: &'static str,
}

/// Runs decide, checks the exact actions, the reason, and the fixpoint
/// property: the view with the actions applied decides nothing more.
pub(super) fn check(c: &Case) {
    let cfg = FsmConfig::whole_seconds();
    let actions = decide(&c.group, c.now, &cfg);
    let got: Vec<Want> = actions
        .iter()
        .map(|a| match a {
            Action::BumpGeneration { .. } => Bump,
            Action::AssignGoal { node_id, goal, .. } => Goal(*node_id, *goal),
            Action::RemoveNode { node_id, .. } => Remove(*node_id),
            Action::ForgetSystemIdentifier => Forget,
            Action::Wait { node_id, .. } => WaitFor(*node_id),
            other => panic!("the rules never return {other:?}"),
        })
        .collect();
    assert_eq!(got, c.want, "case {:?}: {actions:#?}", c.name);
    let reasons: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::BumpGeneration { reason }
            | Action::AssignGoal { reason, .. }
            | Action::RemoveNode { reason, .. }
            | Action::Wait { reason, .. } => reason.as_str(),
            _ => "",
        })
        .collect();
    let reasons = reasons.join(" | ");
    assert!(
        reasons.contains(c.reason),
        "case {:?}: reason {reasons:?} lacks {:?}",
        c.name,
        c.reason
    );
    // Applied in order, every assignment changes a goal.
    let mut after = c.group.clone();
    for a in &actions {
        if let Action::AssignGoal { node_id, goal, .. } = a {
            let before = after.node(*node_id).expect("node exists");
            assert_ne!(
                before.assigned, *goal,
                "case {:?}: no-op assignment",
                c.name
            );
        }
        apply(&mut after, std::slice::from_ref(a), c.now);
    }
    let again = decide(&after, c.now, &cfg);
    assert!(
        again.is_empty(),
        "case {:?}: not a fixpoint, then {again:#?}",
        c.name
    );
}

pub(super) fn case(
    name: &'static str,
    nodes: Vec<NodeView>,
    now: Timestamp,
    want: Vec<Want>,
    reason: &'static str,
) -> Case {
    Case {
        name,
        group: group(nodes),
        now,
        want,
        reason,
    }
}

#[test]
fn bootstrap_rules() {
    let cases = [
        case(
            "single alone stays",
            vec![node(1, Single)],
            t0(),
            vec![],
            "",
        ),
        case(
            "single + wait_standby -> wait_primary",
            vec![node(1, Single), node(2, Init).goal(WaitStandby)],
            t0(),
            vec![Goal(1, WaitPrimary)],
            "node 2 joins",
        ),
        case(
            "wait_standby waits while the primary is not ready",
            vec![node(1, Single).goal(WaitPrimary), node(2, WaitStandby)],
            t0(),
            vec![],
            "",
        ),
        case(
            "wait_standby + wait_primary -> catchingup",
            vec![node(1, WaitPrimary), node(2, WaitStandby)],
            t0(),
            vec![Goal(2, Catchingup)],
            "ready for it",
        ),
        case(
            "wait_standby + primary -> catchingup and apply_settings",
            vec![node(1, Primary), node(2, Secondary), node(3, WaitStandby)],
            t0(),
            vec![Goal(3, Catchingup), Goal(1, ApplySettings)],
            "quorum standby node 3 joins",
        ),
        case(
            "non-quorum joiner: no apply_settings",
            vec![
                node(1, Primary),
                node(2, Secondary),
                node(3, WaitStandby).quorum(false),
            ],
            t0(),
            vec![Goal(3, Catchingup)],
            "",
        ),
        case(
            "apply_settings reached with a healthy secondary -> primary",
            vec![
                node(1, ApplySettings),
                node(2, Secondary),
                node(3, Catchingup),
            ],
            t0(),
            vec![Goal(1, Primary)],
            "settings applied",
        ),
        case(
            "apply_settings reached without a secondary -> wait_primary",
            vec![
                node(1, ApplySettings),
                node(2, Catchingup),
                node(3, Catchingup).lsn_mb(1),
            ],
            t0(),
            vec![Goal(1, WaitPrimary)],
            "no healthy quorum secondary",
        ),
        case(
            "catchingup close and on the same timeline -> secondary, primary on",
            vec![node(1, WaitPrimary), node(2, Catchingup).lsn_mb(90)],
            t0(),
            vec![Goal(2, Secondary)],
            "10485760 bytes behind",
        ),
        case(
            "secondary reached -> wait_primary becomes primary",
            vec![node(1, WaitPrimary), node(2, Secondary)],
            t0(),
            vec![Goal(1, Primary)],
            "quorum secondary is caught up",
        ),
        case(
            "catchingup too far behind stays",
            vec![node(1, WaitPrimary), node(2, Catchingup).lsn_mb(50)],
            t0(),
            vec![],
            "",
        ),
        case(
            "catchingup on another timeline stays",
            vec![node(1, WaitPrimary).tli(2), node(2, Catchingup)],
            t0(),
            vec![],
            "",
        ),
        case(
            "catchingup not streaming stays",
            vec![node(1, WaitPrimary), node(2, Catchingup).upstream(5.0)],
            t0(),
            vec![],
            "",
        ),
        case(
            "catchingup while the primary is stalled stays",
            vec![
                node(1, WaitPrimary).stall_since(at(-11.0)),
                node(2, Catchingup),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "unhealthy catchingup stays",
            vec![node(1, WaitPrimary), node(2, Catchingup).pg_down()],
            t0(),
            vec![],
            "",
        ),
        case(
            "secondary with quorum false: primary stays wait_primary",
            vec![node(1, WaitPrimary), node(2, Secondary).quorum(false)],
            t0(),
            vec![],
            "",
        ),
    ];
    cases.iter().for_each(check);
}

#[test]
fn alone_and_drop_rules() {
    let cases = [
        case(
            "primary alone -> single",
            vec![node(1, Primary), node(2, Secondary).goal(Dropped)],
            t0(),
            vec![Goal(1, Single)],
            "only node left",
        ),
        case(
            "wait_primary alone -> single",
            vec![node(1, WaitPrimary)],
            t0(),
            vec![Goal(1, Single)],
            "only node left",
        ),
        case(
            "apply_settings alone -> wait_primary first (no edge to single)",
            vec![node(1, ApplySettings)],
            t0(),
            vec![Goal(1, WaitPrimary)],
            "",
        ),
        case(
            "wait_standby alone stays",
            vec![node(2, WaitStandby)],
            t0(),
            vec![],
            "",
        ),
        case(
            "standby whose primary was dropped and stopped -> single",
            vec![node(1, DemoteTimeout).goal(Dropped), node(2, Secondary)],
            t0(),
            vec![Goal(2, Single)],
            "node 2 assigned single",
        ),
        case(
            "standby alone waits while the dropped primary may still write",
            vec![node(1, Primary).goal(Dropped), node(2, Catchingup)],
            at(1.0),
            vec![],
            "",
        ),
        case(
            // Dead end 3: a catching-up standby may lack acknowledged
            // commits; it was made writable here before.
            "catching-up standby alone is not made writable",
            vec![
                node(1, Primary).goal(Dropped),
                node(2, Catchingup).silent_since(Some(at(4.0))),
            ],
            at(4.1),
            vec![],
            "",
        ),
        case(
            "demoted old primary alone is not made writable",
            vec![node(1, Demoted)],
            t0(),
            vec![],
            "",
        ),
        case(
            "secondary alone after a dropped wait_primary is not made writable",
            vec![
                node(1, WaitPrimary)
                    .dropped(WaitPrimary, true)
                    .silent_since(Some(at(-10.0))),
                node(2, Secondary),
            ],
            t0(),
            vec![WaitFor(1)],
            "dropped while wait_primary",
        ),
        case(
            // Dead end 11: two secondaries, the primary dropped for good.
            "dropped primary of three: election among its secondaries",
            vec![
                node(1, Primary)
                    .dropped(Primary, true)
                    .silent_since(Some(at(-10.0))),
                node(2, Secondary),
                node(3, Secondary),
            ],
            t0(),
            vec![Bump, Goal(2, ReportLsn), Goal(3, ReportLsn), Remove(1)],
            "the operator dropped primary node 1",
        ),
        case(
            // Seed 7475: the loser of an earlier election, still in
            // report_lsn on its way to a winner that is now dropped.
            "dropped primary: an earlier election's loser votes as it is",
            vec![
                node(1, Secondary),
                node(2, Primary).dropped(Primary, true),
                node(3, ReportLsn).goal(Catchingup),
            ],
            at(1.0),
            vec![Bump, Goal(1, ReportLsn), Goal(3, ReportLsn)],
            "the operator dropped primary node 2",
        ),
        case(
            // Seed 78723: its keeper may keep a lapsed lease while the
            // standby streams from it.
            "a primary dropped without --force is waited for, lease or not",
            vec![
                node(1, Primary)
                    .dropped(Primary, false)
                    .silent_since(Some(at(-10.0)))
                    .changed_at(at(-10.0)),
                node(2, Secondary),
            ],
            t0(),
            // Promoted read-only; the lease gate waits for node 1's word.
            vec![Bump, Goal(2, PreparePromotion), WaitFor(1)],
            "until its keeper stops PostgreSQL",
        ),
        case(
            "dropped primary of two: its secondary is promoted once it is fenced",
            vec![node(1, Primary).dropped(Primary, true), node(2, Secondary)],
            at(1.0),
            vec![Bump, Goal(2, PreparePromotion)],
            "the operator dropped primary node 1",
        ),
        case(
            "a dropped primary that may still write is kept while it may",
            vec![
                node(1, Primary).dropped(Primary, true),
                node(2, StopReplication),
                node(3, Catchingup),
            ],
            at(1.0),
            vec![],
            "",
        ),
        case(
            // Dead end 2: a forced drop used to delete the row at once.
            "force-dropped quorum standby: the primary re-applies its settings first",
            vec![
                node(1, Primary).changed_at(at(-5.0)),
                node(2, Secondary),
                node(3, Secondary).dropped(Secondary, true),
            ],
            t0(),
            // The row stays until the new names are confirmed (primary
            // again): a failover from apply_settings must still see it.
            vec![Goal(1, ApplySettings)],
            "quorum standby node 3 dropped",
        ),
        case(
            "force-dropped quorum standby: its row goes once the primary confirmed its new settings",
            vec![
                node(1, Primary).changed_at(at(1.0)),
                node(2, Secondary),
                node(3, Secondary).dropped(Secondary, true),
            ],
            at(2.0),
            vec![Remove(3)],
            "removed from the group",
        ),
        case(
            "standby that never copied the data waits again",
            vec![node(2, WaitStandby).goal(Catchingup)],
            t0(),
            vec![Goal(2, WaitStandby)],
            "before it copied",
        ),
        case(
            "reported dropped -> the primary is alone, the row goes",
            vec![node(1, Primary), node(2, Dropped)],
            t0(),
            vec![Goal(1, Single), Remove(2)],
            "node 2 reported dropped",
        ),
        case(
            "dropping a sync standby of a 3-node primary -> apply_settings",
            vec![
                node(1, Primary).changed_at(at(-5.0)),
                node(2, Secondary),
                node(3, Secondary).goal(Dropped),
            ],
            t0(),
            vec![Goal(1, ApplySettings)],
            "quorum standby node 3 dropped",
        ),
        case(
            "drop older than the primary's last goal change: settings already applied",
            vec![
                node(1, Primary).changed_at(at(1.0)),
                node(2, Secondary),
                node(3, Secondary).goal(Dropped),
            ],
            at(1.0),
            vec![],
            "",
        ),
        case(
            "dropping the only sync secondary of 3 -> apply_settings (then wait_primary)",
            vec![
                node(1, Primary).changed_at(at(-5.0)),
                node(2, Catchingup),
                node(3, Secondary).goal(Dropped),
            ],
            t0(),
            vec![Goal(1, ApplySettings)],
            "quorum standby node 3 dropped",
        ),
    ];
    cases.iter().for_each(check);
    // Dead end 14: a new first node was refused forever before.
    let mut last = case(
        "last node removed: the group forgets its system identifier",
        vec![node(1, Dropped)],
        t0(),
        vec![Remove(1), Forget],
        "reported dropped",
    );
    last.group.system_identifier = Some(42);
    check(&last);
}

#[test]
fn synchronous_standby_names_cases() {
    let ssn = |nodes: Vec<NodeView>, nss: i32| {
        let mut g = group(nodes);
        g.number_sync_standbys = nss;
        synchronous_standby_names(&g)
    };
    assert_eq!(
        ssn(vec![node(1, Primary), node(2, Secondary)], 0),
        "ANY 1 (pgpilot_node_2)"
    );
    assert_eq!(ssn(vec![node(1, WaitPrimary), node(2, Catchingup)], 1), "");
    assert_eq!(ssn(vec![node(1, Single)], 1), "");
    assert_eq!(
        ssn(vec![node(1, Primary), node(2, Secondary).quorum(false)], 1),
        ""
    );
    assert_eq!(
        ssn(vec![node(1, Primary).goal(Draining), node(2, Secondary)], 1),
        ""
    );
    let three = || {
        vec![
            node(4, Secondary).prio(50),
            node(1, Primary),
            node(2, Secondary).prio(0),
            node(3, Catchingup).prio(90),
            node(5, Secondary).prio(50),
            node(6, Secondary).goal(Dropped),
        ]
    };
    assert_eq!(
        ssn(three(), 1),
        "ANY 1 (pgpilot_node_3, pgpilot_node_4, pgpilot_node_5, pgpilot_node_2)"
    );
    assert_eq!(
        ssn(three(), 2),
        "ANY 2 (pgpilot_node_3, pgpilot_node_4, pgpilot_node_5, pgpilot_node_2)"
    );
    // apply_settings is a primary with replication on.
    assert_eq!(
        ssn(vec![node(1, ApplySettings), node(2, Secondary)], 1),
        "ANY 1 (pgpilot_node_2)"
    );
}
