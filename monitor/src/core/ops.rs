//! Health changes and the operator's drop.

use pgpilot_proto::NodeState;

use super::{unknown_node, Core};
use crate::error::{MonitorError, Result};
use crate::fsm::{self, Action, GroupView, Health, Timestamp};

impl Core {
    /// A probe round's result. Only a *change* of health is an event and
    /// a write.
    pub fn probe(
        &self,
        g: &mut GroupView,
        node_id: i64,
        health: Health,
        detail: &str,
        now: Timestamp,
    ) -> Vec<Action> {
        let Some(n) = g.nodes.iter_mut().find(|n| n.id == node_id) else {
            return Vec::new(); // dropped while being probed
        };
        if n.health == health {
            return Vec::new();
        }
        let old = std::mem::replace(&mut n.health, health);
        n.last_probe = Some(now);
        let mut out = vec![
            Action::SaveNode { node_id },
            Action::Note {
                node_id,
                description: format!(
                    "node {node_id} {:?} health changed from {} to {}: {detail}",
                    n.name,
                    old.name(),
                    health.name()
                ),
            },
        ];
        self.settle(g, now, &mut out);
        out
    }

    /// The operator drops a node. Its goal becomes `dropped`: its keeper
    /// stops PostgreSQL and reports, then the row goes. With `force` the
    /// keeper is taken to be gone for good: the row goes as soon as the
    /// node can no longer accept writes (its lease ran out), and a dropped
    /// primary is replaced like a failed one (see the failover rule).
    pub fn drop_node(
        &self,
        g: &mut GroupView,
        node_id: i64,
        force: bool,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        let mut out = mark_dropped(g, node_id, force, now, &self.cfg)?;
        self.settle(g, now, &mut out);
        Ok(out)
    }
}

/// The operator's drop itself, before the rules run (the edge-table test
/// explores it this way): refuses a drop that could lose acknowledged
/// commits, records how the node left, and assigns `dropped`.
pub fn mark_dropped(
    g: &mut GroupView,
    node_id: i64,
    force: bool,
    now: Timestamp,
    cfg: &crate::fsm::FsmConfig,
) -> Result<Vec<Action>> {
    {
        let n = g
            .node(node_id)
            .ok_or_else(|| unknown_node(node_id))?
            .clone();
        if let Some(why) = fsm::drop_refusal(g, &n, now, cfg) {
            return Err(MonitorError::FailedPrecondition(why));
        }
        let mut out = Vec::new();
        if force && !n.drop_forced {
            if let Some(m) = g.nodes.iter_mut().find(|m| m.id == node_id) {
                m.drop_forced = true;
            }
            out.push(Action::SaveNode { node_id });
        }
        if n.assigned != NodeState::Dropped {
            // A writer counts as a primary (its standbys hold every
            // acknowledged commit between them) only when it reported and
            // was assigned `primary`; any other writer, including one that
            // fenced itself or is on its way to wait_primary, may have
            // acknowledged commits with synchronous replication off.
            let from = if n.reported == NodeState::Primary && n.assigned == NodeState::Primary {
                NodeState::Primary
            } else if n.assigned.accepts_writes() || n.reported.accepts_writes() {
                NodeState::WaitPrimary
            } else {
                n.reported
            };
            if let Some(m) = g.nodes.iter_mut().find(|m| m.id == node_id) {
                m.dropped_from = Some(from);
            }
            if !out.contains(&Action::SaveNode { node_id }) {
                out.push(Action::SaveNode { node_id });
            }
            let mut why = format!(
                "node {node_id} {:?} ({}:{}) assigned dropped by the operator{}",
                n.name,
                n.host,
                n.port,
                if force { " (forced)" } else { "" }
            );
            if n.assigned.accepts_writes() && g.nodes.len() > 1 {
                why.push_str(if n.reported == NodeState::Primary && n.assigned == NodeState::Primary {
                    ": it was the primary with synchronous replication on, so a standby that \
                     holds every acknowledged commit is promoted"
                } else {
                    ": it was the writer without synchronous replication, so no standby is known \
                     to hold every acknowledged commit and none is promoted automatically"
                });
            }
            let assign = Action::AssignGoal {
                node_id,
                goal: NodeState::Dropped,
                reason: why,
            };
            fsm::apply(g, std::slice::from_ref(&assign), now);
            out.push(assign);
        }
        Ok(out)
    }
}
