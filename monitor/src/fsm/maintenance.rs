//! Maintenance of a standby: it leaves the synchronous set first, then its
//! keeper leaves its PostgreSQL alone (no restart, no reconfiguration)
//! until the operator ends the maintenance
//! ([`crate::core::Core::enable_maintenance`]).

use pgpilot_proto::NodeState::*;

use super::health::is_in;
use super::rules::{assign, sync_writer};
use super::{Action, FsmConfig, GroupView, Timestamp};

/// A standby on its way into maintenance goes there once no commit can
/// need it: a primary confirmed synchronous_standby_names without it
/// (`confirm_quorum_drop` cleared its `quorum_dropped_at`), or no writer
/// has synchronous replication on (no failover happens from one, and it
/// confirms the names when it turns replication on again).
pub(super) fn enter_maintenance(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    // An old primary whose maintenance was asked for: it stopped, and
    // another node took over (it was demoted).
    if let Some(n) = g
        .nodes
        .iter()
        .find(|n| n.maintenance_requested && is_in(n, Demoted))
    {
        return vec![
            Action::MaintenanceRequest {
                node_id: n.id,
                on: false,
            },
            assign(
                n,
                Maintenance,
                format!(
                    "node {} assigned maintenance: the primary moved away from it as the operator \
                     asked; its keeper leaves PostgreSQL alone until `pgpilot disable maintenance`",
                    n.id
                ),
            ),
        ];
    }
    // Writable again (the switchover was given up): the request is void.
    if let Some(n) = g.nodes.iter().find(|n| {
        n.maintenance_requested && n.assigned.accepts_writes() && g.switchover_to.is_none()
    }) {
        return vec![Action::MaintenanceRequest {
            node_id: n.id,
            on: false,
        }];
    }
    let sync_on = g.nodes.iter().any(sync_writer);
    g.nodes
        .iter()
        .filter(|n| is_in(n, WaitMaintenance) && (n.quorum_dropped_at.is_none() || !sync_on))
        .map(|n| {
            assign(
                n,
                Maintenance,
                format!(
                    "node {} assigned maintenance: it left the synchronous set; its keeper leaves \
                     PostgreSQL alone until `pgpilot disable maintenance`",
                    n.id
                ),
            )
        })
        .collect()
}
