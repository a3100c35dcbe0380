//! The operator's settings: a node's candidate priority and replication
//! quorum, the formation's number_sync_standbys. Each is checked against
//! the group, then applied through the same goals as every other change
//! of synchronous_standby_names (the primary goes through apply_settings,
//! which waits for a quorum standby under the new names before it reports
//! `primary` again); never a free-form write.

use pgpilot_proto::NodeState::*;

use super::{unknown_node, Core};
use crate::error::{MonitorError, Result};
use crate::fsm::{self, is_in, Action, GroupView, Timestamp};

/// Candidate priorities, as pg_auto_failover has them: 0 never promoted.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = 0..=100;

impl Core {
    /// Sets a node's candidate priority (0 = never promoted). It changes
    /// who is promoted next, not what a commit needs: no settings round.
    /// Allowed during a failover: raising a priority is the way out of an
    /// election that waits because every standby had priority 0.
    pub fn set_candidate_priority(
        &self,
        g: &mut GroupView,
        node_id: i64,
        priority: i32,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        if !PRIORITY_RANGE.contains(&priority) {
            return Err(MonitorError::InvalidArgument(format!(
                "candidate priority {priority} is out of range: use {}..={} (0 = never promoted)",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            )));
        }
        let n = settable(g, node_id)?;
        let old = n.candidate_priority;
        if old == priority {
            return Ok(Vec::new());
        }
        n.candidate_priority = priority;
        let mut out = vec![
            Action::SaveNode { node_id },
            Action::Note {
                node_id,
                description: format!(
                    "node {node_id} candidate priority set from {old} to {priority} by the operator"
                ),
            },
        ];
        self.settle(g, now, &mut out);
        Ok(out)
    }

    /// Sets whether a node counts for synchronous replication. Only with
    /// the group at rest: the primary applies the new
    /// synchronous_standby_names through apply_settings. A node that loses
    /// its quorum keeps counting as a quorum standby for every failover
    /// rule until a primary confirmed names without it
    /// (`NodeView::quorum_dropped_at`): it may hold commits only it
    /// acknowledged.
    pub fn set_replication_quorum(
        &self,
        g: &mut GroupView,
        node_id: i64,
        quorum: bool,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        settable(g, node_id)?;
        if g.node(node_id)
            .is_some_and(|n| n.replication_quorum == quorum)
        {
            return Ok(Vec::new());
        }
        at_rest(g)?;
        if !quorum {
            let left = quorum_standbys(g, Some(node_id));
            if (left as i32) < g.number_sync_standbys {
                return Err(MonitorError::FailedPrecondition(format!(
                    "node {node_id} is one of the {} quorum standbys and number_sync_standbys is {}: \
                     lower it first (`pgpilot set formation number-sync-standbys {left}`)",
                    left + 1,
                    g.number_sync_standbys
                )));
            }
        }
        let n = settable(g, node_id)?;
        n.replication_quorum = quorum;
        if !quorum {
            n.quorum_dropped_at = Some(now);
        }
        let mut out = vec![
            Action::SaveNode { node_id },
            Action::Note {
                node_id,
                description: format!(
                    "node {node_id} replication quorum set to {quorum} by the operator"
                ),
            },
        ];
        out.extend(reapply(
            g,
            now,
            &format!("node {node_id} replication quorum changed"),
        ));
        self.settle(g, now, &mut out);
        Ok(out)
    }

    /// Sets how many quorum standbys must confirm each commit (`ANY k`,
    /// k = max(1, n)). Refused above the group's number of quorum
    /// standbys: writes would wait for standbys that do not exist.
    pub fn set_number_sync_standbys(
        &self,
        g: &mut GroupView,
        n: i32,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        if n < 0 {
            return Err(MonitorError::InvalidArgument(format!(
                "number_sync_standbys {n} is out of range: use 0 or more"
            )));
        }
        let quorum = quorum_standbys(g, None);
        if n as usize > quorum {
            return Err(MonitorError::FailedPrecondition(format!(
                "number_sync_standbys {n} is more than the {quorum} quorum standbys of group {}: \
                 writes would wait for standbys that do not exist; add standbys or set \
                 replication quorum on more of them first",
                g.group_id
            )));
        }
        if g.number_sync_standbys == n {
            return Ok(Vec::new());
        }
        // Lowering it is the way out of a primary whose writes wait for
        // more synchronous standbys than it has, and such a group is not at
        // rest (simulation, seed 695654: a fenced primary restarting as
        // primary waited for two standbys for good, and the override the
        // wait names was refused). It loses nothing: commits acknowledged
        // so far are on at least as many standbys as the new value says,
        // and every failover rule counting on k takes the new, smaller
        // one. Raising it waits for the group to be at rest.
        if n > g.number_sync_standbys {
            at_rest(g)?;
        }
        let old = std::mem::replace(&mut g.number_sync_standbys, n);
        let mut out = vec![Action::SaveFormationSettings];
        if let Some(p) = g.nodes.iter().find(|p| p.assigned.accepts_writes()) {
            out.push(Action::Note {
                node_id: p.id,
                description: format!(
                    "formation {} number_sync_standbys set from {old} to {n} by the operator",
                    g.formation
                ),
            });
        }
        if old.max(1) != n.max(1) {
            out.extend(reapply(g, now, "number_sync_standbys changed"));
        }
        self.settle(g, now, &mut out);
        Ok(out)
    }
}

/// The node, which must exist and not be on its way out.
fn settable(g: &mut GroupView, node_id: i64) -> Result<&mut crate::fsm::NodeView> {
    let n = g
        .nodes
        .iter_mut()
        .find(|n| n.id == node_id)
        .ok_or_else(|| unknown_node(node_id))?;
    if n.assigned == Dropped {
        return Err(MonitorError::FailedPrecondition(format!(
            "node {node_id} is being dropped"
        )));
    }
    Ok(n)
}

fn at_rest(g: &GroupView) -> Result<()> {
    match fsm::operation_under_way(g) {
        Some(busy) => Err(MonitorError::FailedPrecondition(format!(
            "{busy}; retry once it is done (`pgpilot show state`)"
        ))),
        None => Ok(()),
    }
}

/// Standbys with replication quorum (not the writer, not being dropped),
/// leaving out `except`.
fn quorum_standbys(g: &GroupView, except: Option<i64>) -> usize {
    g.nodes
        .iter()
        .filter(|n| {
            Some(n.id) != except
                && n.replication_quorum
                && !matches!(n.assigned, Dropped | WaitMaintenance | Maintenance)
                && !n.assigned.accepts_writes()
        })
        .count()
}

/// A primary with synchronous replication on re-applies its settings.
fn reapply(g: &mut GroupView, now: Timestamp, why: &str) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|p| is_in(p, Primary)) else {
        // wait_primary or single: replication is off, and the names are
        // applied when it is turned on.
        return Vec::new();
    };
    let assign = vec![Action::AssignGoal {
        node_id: p.id,
        goal: ApplySettings,
        reason: format!("node {} assigned apply_settings: {why}", p.id),
    }];
    fsm::apply(g, &assign, now);
    assign
}
