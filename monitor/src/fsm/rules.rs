//! The rules of the group state machine, one function each.
//!
//! [`super::decide`] runs them (these and [`super::steady`]) in
//! [`super::RULES`] order on a working copy of the
//! group: the first rule that returns actions wins, its actions are applied
//! to the copy, and the list is run again until no rule fires. Every rule
//! must only return assignments that change a goal, so this terminates.
//!
//! Ordering matters where two rules could claim the same node: the failover
//! rules come before every rule that turns synchronous replication off, and
//! those rules also check [`failover_under_way`] themselves (DESIGN.md §8:
//! a goal assigned for a failover must never be overwritten by a rule that
//! turns synchronous replication off; pg_auto_failover lost acknowledged
//! writes exactly that way).

use pgpilot_proto::NodeState::{self, *};

use super::health::{age, is_fenced, is_healthy, is_in, is_unhealthy, secs};
use super::{Action, FsmConfig, GroupView, NodeView, Timestamp};

pub(super) fn assign(node: &NodeView, goal: NodeState, reason: String) -> Action {
    Action::AssignGoal {
        node_id: node.id,
        goal,
        reason,
    }
}

/// Nodes not being dropped.
pub(super) fn active(g: &GroupView) -> impl Iterator<Item = &NodeView> {
    g.nodes.iter().filter(|n| n.assigned != Dropped)
}

/// The node whose goal accepts writes (at most one: the reachability test
/// checks it).
pub fn primary(g: &GroupView) -> Option<&NodeView> {
    active(g).find(|n| n.assigned.accepts_writes())
}

/// A promotion has been decided and is not finished: from the moment the
/// candidate is chosen until it is allowed to take writes. Rules that turn
/// synchronous replication off must not fire then.
pub(super) fn failover_under_way(g: &GroupView) -> bool {
    g.nodes.iter().any(|n| {
        matches!(
            n.assigned,
            FastForward | PreparePromotion | StopReplication | Draining | DemoteTimeout | ReportLsn
        )
    })
}

/// Why the group is not at rest for an operator's change (a switchover,
/// a settings change), if it is not: a failover or switchover under way,
/// a node on its way to its goal, a node being dropped. The operator
/// retries once it is done.
pub fn operation_under_way(g: &GroupView) -> Option<String> {
    if let Some(n) = g.nodes.iter().find(|n| {
        matches!(
            n.assigned,
            FastForward | PreparePromotion | StopReplication | Draining | DemoteTimeout | ReportLsn
        )
    }) {
        return Some(format!(
            "a failover or switchover is under way (node {} is assigned {})",
            n.id, n.assigned
        ));
    }
    if let Some(id) = g.switchover_to {
        return Some(format!("a switchover to node {id} is under way"));
    }
    if let Some(n) = g.nodes.iter().find(|n| n.assigned == Dropped) {
        return Some(format!("node {} is being dropped", n.id));
    }
    g.nodes.iter().find(|n| n.reported != n.assigned).map(|n| {
        format!(
            "node {} is on its way from {} to {}",
            n.id, n.reported, n.assigned
        )
    })
}

/// A standby the primary may count on for synchronous replication right
/// now: it reached secondary, has replication quorum and is healthy.
pub(super) fn healthy_sync_secondary(
    g: &GroupView,
    p: &NodeView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> bool {
    g.nodes.iter().any(|s| {
        s.id != p.id && is_in(s, Secondary) && s.replication_quorum && is_healthy(s, now, cfg)
    })
}

/// The node may hold acknowledged commits that no other standby has, as
/// a member of synchronous_standby_names: it has replication quorum, or
/// the operator took it away and no primary has confirmed new names
/// without it yet ([`confirm_quorum_drop`]). Every failover rule asks
/// this, not `replication_quorum` (which says what the names will be).
pub fn quorum_counts(n: &NodeView) -> bool {
    (n.replication_quorum && n.assigned != Maintenance) || n.quorum_dropped_at.is_some()
}

/// A primary confirmed synchronous_standby_names that no longer name a
/// node whose replication quorum the operator took away: it reached
/// `primary` (which waits for a quorum standby under the names it
/// applied) on a goal assigned after the change, so commits from then on
/// need none of the node's acknowledgements, and those from before are
/// on a quorum standby too.
pub(super) fn confirm_quorum_drop(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|p| is_in(p, Primary)) else {
        return vec![];
    };
    g.nodes
        .iter()
        .filter(|n| n.id != p.id && n.quorum_dropped_at.is_some_and(|t| p.goal_changed_at > t))
        .map(|n| Action::QuorumDropConfirmed { node_id: n.id })
        .collect()
}

/// Rules 1 and 13: a keeper that reported `dropped` has stopped Postgres
/// and exited; its row goes. A node dropped with `--force` (its keeper is
/// gone for good) goes once it cannot accept writes any more, unless the
/// failover rule still needs its last report (it was the writer and
/// nothing replaced it yet: whether its standbys hold every commit
/// depends on whether it reported `primary`).
pub(super) fn remove_dropped(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    g.nodes
        .iter()
        .filter(|n| n.assigned == Dropped)
        .filter(|n| (n.reported == Dropped || n.drop_forced) && !must_keep(g, n, now, cfg))
        .map(|n| Action::RemoveNode {
            node_id: n.id,
            reason: if n.reported == Dropped {
                format!("node {} reported dropped: removed from the group", n.id)
            } else {
                format!(
                    "node {} removed from the group: dropped by the operator with --force and no longer accepting writes",
                    n.id
                )
            },
        })
        .collect()
}

/// A dropped quorum standby whose drop the primary has not yet turned into
/// new synchronous_standby_names (with the wait every change to them
/// gets): the other standbys may lack commits only it acknowledged. While
/// the primary is in apply_settings its new names are not confirmed yet,
/// so every dropped quorum standby still counts.
pub(super) fn settings_pending_drop<'a>(g: &'a GroupView, p: &NodeView) -> Option<&'a NodeView> {
    g.nodes.iter().find(|d| {
        d.id != p.id
            && d.assigned == Dropped
            && quorum_counts(d)
            && (d.goal_changed_at > p.goal_changed_at || !is_in(p, Primary))
    })
}

/// A writer with synchronous replication on for certain: in `primary`,
/// or between `primary` and `apply_settings` either way (a settings change
/// keeps synchronous replication on: `apply_settings -> primary` waits for
/// a quorum standby under the new names before it reports). Not one whose
/// goal is `wait_primary`: it may have turned synchronous replication off
/// without having reported it.
pub fn sync_writer(n: &NodeView) -> bool {
    matches!(n.reported, Primary | ApplySettings) && matches!(n.assigned, Primary | ApplySettings)
}

/// A dropped node's row must stay: it may still accept writes, it was
/// the writer and neither a new writer nor a promotion exists yet, or the
/// primary has not yet re-applied its settings without it.
fn must_keep(g: &GroupView, d: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    let pending = g
        .nodes
        .iter()
        .find(|n| sync_writer(n))
        .and_then(|p| settings_pending_drop(g, p))
        .is_some_and(|x| x.id == d.id);
    pending
        || !is_fenced(d, now, cfg)
        || (d.dropped_from.is_some_and(|s| s.accepts_writes())
            && active(g).next().is_some()
            && primary(g).is_none()
            && !failover_under_way(g))
}

/// Rule 14: a group whose last node went forgets its system identifier,
/// so that a new first node (a new cluster) can register.
pub(super) fn forget_cluster(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    if g.nodes.is_empty() && g.system_identifier.is_some() {
        vec![Action::ForgetSystemIdentifier]
    } else {
        vec![]
    }
}

/// Rule 1: the only node left becomes `single`, when it is the writer
/// already (its goal accepts writes) or a caught-up `secondary`.
/// Writable only once every node being dropped cannot take writes any more
/// (it reported a non-writable state, or its lease expired): the operator
/// dropped it, but its Postgres may still run until its keeper hears.
///
/// A node that may lack acknowledged commits is never made writable here
/// (a demoted old primary, a catching-up standby): it keeps its goal, and
/// only an explicit operator decision may promote it.
pub(super) fn alone(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let mut act = active(g);
    let (Some(n), None) = (act.next(), act.next()) else {
        return vec![];
    };
    // A standby that never got its copy of the data has nothing to serve:
    // it waits for a new primary instead.
    if n.assigned == Catchingup && matches!(n.reported, WaitStandby | Init) {
        let why = format!(
            "node {} assigned wait_standby: its primary left the group before it copied the data",
            n.id
        );
        return vec![assign(n, WaitStandby, why)];
    }
    let writer = matches!(n.assigned, WaitPrimary | Primary | ApplySettings)
        // Not apply_settings: it has no edge to single; it goes to
        // wait_primary first (apply_settings_done), then here.
        && matches!(n.reported, Single | WaitPrimary | Primary | DemoteTimeout);
    let complete_standby = is_in(n, Secondary)
        && n.replication_quorum
        && !n.status_unknown
        && g.nodes.iter().all(writer_left_complete);
    if !writer && !complete_standby {
        return vec![];
    }
    // Wait: a dropped node may still accept writes.
    if g.nodes
        .iter()
        .any(|d| d.assigned == Dropped && !is_fenced(d, now, cfg))
    {
        return vec![];
    }
    let why = format!(
        "node {} assigned single: it is the only node left in the group",
        n.id
    );
    vec![assign(n, Single, why)]
}

/// A dropped node that was the writer left its standbys complete only if
/// it had reported `primary` (synchronous replication on); other nodes
/// say nothing against it.
fn writer_left_complete(d: &NodeView) -> bool {
    d.assigned != Dropped
        || d.dropped_from
            .is_none_or(|s| !s.accepts_writes() || s == Primary)
}

/// An old primary told to drain that already fenced itself (it reports
/// demote_timeout) is further along than draining: take its word.
pub(super) fn fenced_while_draining(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    g.nodes
        .iter()
        .filter(|n| n.assigned == Draining && n.reported == DemoteTimeout)
        .map(|n| {
            let why = format!(
                "node {} assigned demote_timeout: it already fenced itself",
                n.id
            );
            assign(n, DemoteTimeout, why)
        })
        .collect()
}

/// Rule 6: the primary still reaches the monitor but no standby has
/// streamed from it for `replication_stall_timeout`: with synchronous
/// replication on its writes would hang forever, so it goes wait_primary
/// and the standbys lose eligibility (they may now miss commits).
///
/// Dead end 8: the same holds for a node on its way into `primary` (it
/// reports wait_primary or apply_settings and has applied the new
/// synchronous_standby_names) whose wait for a synchronous standby keeps
/// failing because none streams: once its goal has been `primary` for the
/// stall timeout too, it goes back to wait_primary.
pub(super) fn stall(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let entering = |n: &NodeView| {
        n.assigned == Primary
            && matches!(n.reported, WaitPrimary | ApplySettings)
            && age(n.goal_changed_at, now) > cfg.replication_stall_timeout
    };
    let Some(p) = g.nodes.iter().find(|n| is_in(n, Primary) || entering(n)) else {
        return vec![];
    };
    let Some(since) = p.replication_stall_since else {
        return vec![];
    };
    let stalled = age(since, now);
    if stalled <= cfg.replication_stall_timeout || !is_healthy(p, now, cfg) || failover_under_way(g)
    {
        return vec![];
    }
    let why = format!(
        "node {} assigned wait_primary: no standby streamed from it for {} (replication_stall_timeout {})",
        p.id,
        secs(stalled),
        secs(cfg.replication_stall_timeout)
    );
    let mut out = vec![assign(p, WaitPrimary, why)];
    for s in g.nodes.iter().filter(|s| s.assigned == Secondary) {
        let why = format!(
            "node {} assigned catchingup: primary node {} has replication off",
            s.id, p.id
        );
        out.push(assign(s, Catchingup, why));
    }
    out
}

/// Rule 5: an unhealthy secondary loses eligibility; a primary left with
/// no quorum secondary turns synchronous replication off to stay writable
/// (number_sync_standbys = 0 semantics) - but never while a failover is
/// under way.
pub(super) fn standby_lost(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = primary(g) else { return vec![] };
    if p.assigned == Single || failover_under_way(g) {
        return vec![];
    }
    let mut out = Vec::new();
    let lost: Vec<&NodeView> = g
        .nodes
        .iter()
        .filter(|s| s.id != p.id && s.assigned == Secondary && is_unhealthy(s, now, cfg))
        .collect();
    for s in &lost {
        let why = format!("node {} assigned catchingup: it is unhealthy", s.id);
        out.push(assign(s, Catchingup, why));
    }
    let remaining = g.nodes.iter().any(|s| {
        s.id != p.id
            && s.assigned == Secondary
            && s.replication_quorum
            && !lost.iter().any(|l| l.id == s.id)
    });
    if p.assigned == Primary && !remaining {
        let why = format!(
            "node {} assigned wait_primary: no quorum secondary left",
            p.id
        );
        out.push(assign(p, WaitPrimary, why));
    }
    out
}

/// Why the operator may not drop `n` now, if not: a node that takes part
/// in a promotion (a voter, the candidate) is needed by it, and a quorum
/// standby may hold acknowledged commits nobody else has while a failover
/// is under way or the writer is unhealthy (the election would no longer
/// count it).
pub fn drop_refusal(
    g: &GroupView,
    n: &NodeView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Option<String> {
    if matches!(
        n.assigned,
        FastForward | PreparePromotion | StopReplication | ReportLsn
    ) {
        return Some(format!(
            "node {} takes part in a failover under way (it is assigned {}): dropping it now could \
             lose acknowledged commits only it has; wait until the group has a primary again \
             (`pgpilot show state`, `pgpilot show events`)",
            n.id, n.assigned
        ));
    }
    if g.switchover_to == Some(n.id) {
        return Some(format!(
            "node {} is the candidate of a switchover under way: wait until it is done \
             (`pgpilot show state`)",
            n.id
        ));
    }
    if n.assigned == Dropped || !quorum_counts(n) || n.assigned.accepts_writes() {
        return None;
    }
    // Not healthy is enough (a primary whose PostgreSQL crash-loops is not
    // yet "unhealthy": its keeper is still restarting it; seed 61019).
    let writer_unhealthy = primary(g).is_some_and(|p| p.id != n.id && !is_healthy(p, now, cfg));
    (failover_under_way(g) || writer_unhealthy).then(|| {
        format!(
            "node {} may hold acknowledged commits that no other node has, and {}: dropping it now \
             could lose them; wait until the group has a primary again (`pgpilot show state`)",
            n.id,
            if failover_under_way(g) {
                "a failover is under way"
            } else {
                "the primary is not healthy"
            }
        )
    })
}
