//! The operator's `enable maintenance` / `disable maintenance` of a
//! standby. It leaves the synchronous set first (the primary applies
//! synchronous_standby_names without it, with the wait every change to
//! them gets), then its keeper neither restarts nor reconfigures its
//! PostgreSQL, and the monitor counts it out of failovers: the operator
//! may stop, restart or upgrade it freely. Disable brings it back as
//! `catchingup`, then `secondary`. Maintenance of the primary is a
//! planned switchover first; the old primary then stays stopped in
//! maintenance instead of rejoining.

use pgpilot_proto::NodeState::*;

use super::{unknown_node, Core};
use crate::error::{MonitorError, Result};
use crate::fsm::{self, is_in, Action, GroupView, Timestamp};

impl Core {
    pub fn enable_maintenance(
        &self,
        g: &mut GroupView,
        node_id: i64,
        allow_failover: bool,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        let n = g
            .node(node_id)
            .ok_or_else(|| unknown_node(node_id))?
            .clone();
        if matches!(n.assigned, Maintenance | WaitMaintenance) {
            return Ok(Vec::new());
        }
        let refuse = |why: String| Err(MonitorError::FailedPrecondition(why));
        // Moving the primary is never a side effect the operator did not
        // ask for (pg_auto_failover's `--allow-failover`).
        if n.assigned.accepts_writes() && !allow_failover {
            return refuse(format!(
                "node {node_id} is the primary: maintenance of it moves the primary to another \
                 node first (a switchover); add --allow-failover to do that"
            ));
        }
        if n.assigned.accepts_writes() {
            // A switchover first (refused, changing nothing, when it cannot
            // run: its reason says why); then `enter_maintenance`.
            let mut out = self.switchover(g, None, now).map_err(|e| match e {
                MonitorError::FailedPrecondition(why) => MonitorError::FailedPrecondition(format!(
                    "node {node_id} is the primary, and maintenance of it starts with a \
                     switchover, which cannot run now: {why}"
                )),
                other => other,
            })?;
            let request = [
                Action::MaintenanceRequest { node_id, on: true },
                Action::Note {
                    node_id,
                    description: format!(
                        "enable maintenance of primary node {node_id} asked by the operator: \
                         a switchover first"
                    ),
                },
            ];
            fsm::apply(g, &request, now);
            out.splice(0..0, request);
            return Ok(out);
        }
        if let Some(busy) = fsm::operation_under_way(g) {
            return refuse(format!(
                "{busy}; retry once it is done (`pgpilot show state`)"
            ));
        }
        if !is_in(&n, Secondary) && !is_in(&n, Catchingup) {
            return refuse(format!(
                "node {node_id} is {}: only a standby (secondary or catchingup) goes into maintenance",
                n.reported
            ));
        }
        // The quorum standbys left must still be enough for each commit,
        // or every write would wait for good.
        if n.replication_quorum {
            let left = g
                .nodes
                .iter()
                .filter(|s| {
                    s.id != node_id
                        && s.replication_quorum
                        && !s.assigned.accepts_writes()
                        && !matches!(s.assigned, Dropped | WaitMaintenance | Maintenance)
                })
                .count() as i32;
            // (With none left, synchronous replication goes off instead:
            // the primary runs as wait_primary meanwhile.)
            if left > 0 && left < g.number_sync_standbys {
                return refuse(format!(
                    "node {node_id} is one of the {} quorum standbys and number_sync_standbys is {}: \
                     lower it first (`pgpilot set formation number-sync-standbys {left}`)",
                    left + 1,
                    g.number_sync_standbys
                ));
            }
        }
        let sync_primary = g.nodes.iter().find(|p| is_in(p, Primary)).map(|p| p.id);
        let mut out = vec![Action::Note {
            node_id,
            description: format!("enable maintenance of node {node_id} asked by the operator"),
        }];
        let goal = match sync_primary {
            // It may hold commits only it acknowledged until the primary
            // confirmed names without it: it counts for failover until then.
            Some(p) if n.replication_quorum => {
                if let Some(m) = g.nodes.iter_mut().find(|m| m.id == node_id) {
                    m.quorum_dropped_at = Some(now);
                }
                out.push(Action::SaveNode { node_id });
                out.push(Action::AssignGoal {
                    node_id,
                    goal: WaitMaintenance,
                    reason: format!(
                        "node {node_id} assigned wait_maintenance: it leaves the synchronous set \
                         before its maintenance"
                    ),
                });
                out.push(Action::AssignGoal {
                    node_id: p,
                    goal: ApplySettings,
                    reason: format!(
                        "node {p} assigned apply_settings: node {node_id} goes into maintenance"
                    ),
                });
                return self.done(g, out, now);
            }
            _ => Maintenance,
        };
        out.push(Action::AssignGoal {
            node_id,
            goal,
            reason: format!(
                "node {node_id} assigned maintenance: no commit waits for it; its keeper leaves \
                 PostgreSQL alone until `pgpilot disable maintenance`"
            ),
        });
        self.done(g, out, now)
    }

    pub fn disable_maintenance(
        &self,
        g: &mut GroupView,
        node_id: i64,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        let n = g
            .node(node_id)
            .ok_or_else(|| unknown_node(node_id))?
            .clone();
        let refuse = |why: String| Err(MonitorError::FailedPrecondition(why));
        match n.assigned {
            Maintenance if n.reported == Maintenance => {}
            Maintenance | WaitMaintenance => {
                return refuse(format!(
                    "node {node_id} is on its way into maintenance ({} -> {}): retry once it is \
                     there (`pgpilot show state`)",
                    n.reported, n.assigned
                ))
            }
            _ => return Ok(Vec::new()),
        }
        let Some(p) = g.nodes.iter().find(|p| p.assigned.accepts_writes()) else {
            return refuse(format!(
                "the group has no primary for node {node_id} to follow; it stays in maintenance"
            ));
        };
        let p = (p.id, is_in(p, Primary));
        let mut out = vec![
            Action::Note {
                node_id,
                description: format!("disable maintenance of node {node_id} asked by the operator"),
            },
            Action::AssignGoal {
                node_id,
                goal: Catchingup,
                reason: format!(
                    "node {node_id} assigned catchingup: its maintenance is over, it follows \
                     primary node {}",
                    p.0
                ),
            },
        ];
        if p.1 && n.replication_quorum {
            out.push(Action::AssignGoal {
                node_id: p.0,
                goal: ApplySettings,
                reason: format!(
                    "node {} assigned apply_settings: quorum standby node {node_id} is back",
                    p.0
                ),
            });
        }
        self.done(g, out, now)
    }

    /// Applies the operation's own actions, then the rules.
    fn done(&self, g: &mut GroupView, mut out: Vec<Action>, now: Timestamp) -> Result<Vec<Action>> {
        fsm::apply(g, &out, now);
        self.settle(g, now, &mut out);
        Ok(out)
    }
}
