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

use super::health::{age, is_fenced, is_healthy, is_in, is_unhealthy, secs, silence};
use super::switches::{self, Rule};
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
pub(super) fn primary(g: &GroupView) -> Option<&NodeView> {
    active(g).find(|n| n.assigned.accepts_writes())
}

/// A promotion has been decided and is not finished: from the moment the
/// candidate is chosen until it is allowed to take writes. Rules that turn
/// synchronous replication off must not fire then.
pub(super) fn failover_under_way(g: &GroupView) -> bool {
    g.nodes.iter().any(|n| {
        matches!(
            n.assigned,
            PreparePromotion | StopReplication | Draining | DemoteTimeout | ReportLsn
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

/// Rules 1 and 13: a keeper that reported `dropped` has stopped Postgres
/// and exited; its row goes.
pub(super) fn remove_dropped(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    g.nodes
        .iter()
        .filter(|n| n.reported == Dropped)
        .map(|n| Action::RemoveNode {
            node_id: n.id,
            reason: format!("node {} reported dropped: removed from the group", n.id),
        })
        .collect()
}

/// Rule 1: the only node left becomes `single`. Writable only once every
/// node being dropped cannot take writes any more (it reported a
/// non-writable state, or its lease expired): the operator dropped it, but
/// its Postgres may still run until its keeper hears about it.
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
    let was_primary_or_standby = matches!(
        n.assigned,
        WaitPrimary
            | Primary
            | ApplySettings
            | Catchingup
            | Secondary
            | Draining
            | DemoteTimeout
            | Demoted
    );
    // Mid-promotion states finish through the promotion rules first (they
    // need no old primary), so the keeper is never asked to jump from
    // prepare_promotion or stop_replication straight to single.
    let settled = matches!(
        n.reported,
        Single
            | WaitPrimary
            | Primary
            | ApplySettings
            | Catchingup
            | Secondary
            | Draining
            | DemoteTimeout
            | Demoted
    );
    if !was_primary_or_standby || !settled {
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

/// Rule 7b, the election: once every standby told to report_lsn stopped
/// streaming and reported (its LSN is final), the most advanced one with a
/// candidate priority above 0 is promoted. A candidate behind a quorum
/// standby would lose commits that standby acknowledged: then nobody is
/// promoted (fetching the missing WAL first, fast_forward, comes later).
pub(super) fn elect(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let voters: Vec<&NodeView> = g.nodes.iter().filter(|n| n.assigned == ReportLsn).collect();
    // One winner per election: once a candidate is on its way, the other
    // voters wait for the lease gate to send them to it.
    let promoting = g
        .nodes
        .iter()
        .any(|n| matches!(n.assigned, PreparePromotion | StopReplication));
    if voters.is_empty() || promoting {
        return vec![];
    }
    // Quorum voters may hold acknowledged commits: wait for each. A
    // non-quorum voter cannot, so one that never reports is not waited for.
    let reported = |n: &NodeView| n.reported == ReportLsn && n.pg_running;
    if voters.iter().any(|n| n.replication_quorum && !reported(n)) {
        return vec![];
    }
    let most_advanced = voters
        .iter()
        .filter(|n| n.replication_quorum)
        .map(|n| n.lsn)
        .max();
    let best = voters
        .iter()
        .filter(|n| {
            reported(n)
                && n.candidate_priority > 0
                && is_healthy(n, now, cfg)
                && most_advanced.is_none_or(|m| n.lsn >= m)
        })
        .max_by_key(|n| (n.candidate_priority, n.lsn, std::cmp::Reverse(n.id)));
    let Some(c) = best else {
        return vec![];
    };
    let why = format!(
        "node {} assigned prepare_promotion: elected with LSN {} among {} standbys",
        c.id,
        c.lsn,
        voters.len()
    );
    vec![assign(c, PreparePromotion, why)]
}

/// Rule 8: the candidate is ready; it stops replicating and promotes
/// read-only, the old primary is told to go (demote_timeout).
pub(super) fn promotion_step(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    let Some(c) = g.nodes.iter().find(|n| is_in(n, PreparePromotion)) else {
        return vec![];
    };
    let mut out = vec![assign(
        c,
        StopReplication,
        format!(
            "node {} assigned stop_replication: promoting it read-only",
            c.id
        ),
    )];
    for o in g.nodes.iter().filter(|o| o.assigned == Draining) {
        let why = format!(
            "node {} assigned demote_timeout: node {} is being promoted",
            o.id, c.id
        );
        out.push(assign(o, DemoteTimeout, why));
    }
    out
}

/// Rule 9, the lease gate: the promoted candidate becomes writable only
/// when no other node can still acknowledge writes, i.e. the old primary
/// reported a stopped state or its lease (from its last report, not from
/// the decision) has expired. Other standbys must re-validate against the
/// new timeline before they count as secondaries again.
pub(super) fn lease_gate(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(c) = g.nodes.iter().find(|n| is_in(n, StopReplication)) else {
        return vec![];
    };
    let others: Vec<&NodeView> = g.nodes.iter().filter(|o| o.id != c.id).collect();
    if others.iter().any(|o| !is_fenced(o, now, cfg)) && !switches::is_off(Rule::LeaseGate) {
        return vec![];
    }
    let why_old = |o: &NodeView| {
        if !o.reported.accepts_writes() {
            format!("node {} reported {}", o.id, o.reported)
        } else {
            let s =
                silence(o, now).map_or("never reported".into(), |s| format!("silent {}", secs(s)));
            format!(
                "node {} lease expired ({s}, lease {} + margin {})",
                o.id,
                secs(cfg.lease),
                secs(cfg.clock_margin)
            )
        }
    };
    let olds: Vec<&&NodeView> = others
        .iter()
        .filter(|o| matches!(o.assigned, Draining | DemoteTimeout))
        .collect();
    let detail: Vec<String> = olds.iter().map(|o| why_old(o)).collect();
    let detail = if detail.is_empty() {
        "no old primary left".to_string()
    } else {
        detail.join(", ")
    };
    let mut out = vec![assign(
        c,
        WaitPrimary,
        format!("node {} assigned wait_primary: {detail}", c.id),
    )];
    for o in olds {
        out.push(assign(
            o,
            Demoted,
            format!(
                "node {} assigned demoted: node {} is the new primary",
                o.id, c.id
            ),
        ));
    }
    for s in others
        .iter()
        .filter(|s| matches!(s.assigned, Secondary | ReportLsn))
    {
        let why = format!(
            "node {} assigned catchingup: it must follow new primary node {}",
            s.id, c.id
        );
        out.push(assign(s, Catchingup, why));
    }
    out
}

/// Rule 7: automatic failover, only from `primary` (synchronous
/// replication on, so a caught-up secondary has every acknowledged commit)
/// and only with two witnesses: the monitor finds the primary unhealthy,
/// and the candidate lost its WAL stream (or the primary's own keeper says
/// Postgres is down). The monitor alone losing the primary is a network
/// problem on the monitor's side, not a reason to fail over.
pub(super) fn failover(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|n| is_in(n, Primary)) else {
        return vec![];
    };
    if !is_unhealthy(p, now, cfg) {
        return vec![];
    }
    let witness = |s: &NodeView| {
        if !p.pg_running {
            Some(format!(
                "primary node {}'s keeper reports Postgres down",
                p.id
            ))
        } else {
            match s.upstream_silent {
                Some(d) if d >= cfg.replication_lost_timeout => {
                    Some(format!("node {} lost replication {} ago", s.id, secs(d)))
                }
                _ => None,
            }
        }
    };
    // Any quorum secondary may hold a commit the others lack: never pick a
    // candidate behind one of them (full elections come later).
    let most_advanced = g
        .nodes
        .iter()
        .filter(|s| s.id != p.id && s.assigned == Secondary && s.replication_quorum)
        .map(|s| s.lsn)
        .max();
    let best = g
        .nodes
        .iter()
        .filter(|s| {
            s.id != p.id
                && is_in(s, Secondary)
                && is_healthy(s, now, cfg)
                && s.candidate_priority > 0
                && p.lsn.distance_from(s.lsn) <= cfg.promote_wal_threshold
                && most_advanced.is_none_or(|m| s.lsn >= m)
                && witness(s).is_some()
        })
        .max_by_key(|s| (s.candidate_priority, s.lsn, std::cmp::Reverse(s.id)));
    let Some(c) = best else {
        return vec![];
    };
    let down = if !p.pg_running {
        "reports Postgres down".to_string()
    } else {
        let s = silence(p, now).map_or("never reported".into(), |s| format!("silent {}", secs(s)));
        format!("{s} and probes failing")
    };
    // With another standby besides the candidate, a commit may have been
    // acknowledged by that standby only (ANY k of several), and a standby
    // still following the old primary could acknowledge its pending
    // commits if it came back (a frozen primary resuming). So it is an
    // election: every standby stops streaming and reports its final LSN
    // (report_lsn), then the most advanced is promoted ([`elect`]). A
    // quorum standby that is not healthy may hold commits nobody else
    // has: no automatic failover then.
    // (The simulation loses acknowledged commits without this: seeds 4
    // and 131 with PGPILOT_SIM_NODES=3.)
    // Standbys that may be streaming from the primary. An old primary
    // (draining, demoted, ...) or a node still waiting for its copy is not.
    let followers: Vec<&NodeView> = g
        .nodes
        .iter()
        .filter(|s| s.id != p.id && matches!(s.assigned, Secondary | Catchingup))
        .collect();
    if followers.iter().any(|s| s.id != c.id) {
        if followers
            .iter()
            .any(|s| s.replication_quorum && !is_healthy(s, now, cfg))
        {
            return vec![];
        }
        let why = format!(
            "election: primary node {} {down}, {}",
            p.id,
            witness(c).unwrap_or_default()
        );
        let mut out = vec![Action::BumpGeneration {
            reason: why.clone(),
        }];
        for s in g.nodes.iter().filter(|s| {
            s.id != p.id && matches!(s.assigned, Secondary | Catchingup) && is_healthy(s, now, cfg)
        }) {
            out.push(assign(
                s,
                ReportLsn,
                format!("node {} assigned report_lsn: {why}", s.id),
            ));
        }
        out.push(assign(
            p,
            Draining,
            format!("node {} assigned draining: an election is under way", p.id),
        ));
        return out;
    }
    let why = format!(
        "node {} assigned prepare_promotion: primary node {} {down}, {}",
        c.id,
        p.id,
        witness(c).unwrap_or_default()
    );
    vec![
        Action::BumpGeneration {
            reason: why.clone(),
        },
        assign(c, PreparePromotion, why),
        assign(
            p,
            Draining,
            format!(
                "node {} assigned draining: node {} is being promoted",
                p.id, c.id
            ),
        ),
    ]
}

/// Rule 6: the primary still reaches the monitor but no standby has
/// streamed from it for `replication_stall_timeout`: with synchronous
/// replication on its writes would hang forever, so it goes wait_primary
/// and the standbys lose eligibility (they may now miss commits).
pub(super) fn stall(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|n| is_in(n, Primary)) else {
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
