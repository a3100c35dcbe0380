//! The operator's commands: switchover, promotion and the settings. Each
//! is the shell of [`Control::drop_node`]: resolve the node's name, lock
//! the group, begin its transaction, let the core decide, apply its
//! actions and commit. A refusal of the core rolls the transaction back,
//! so nothing changes; the core's notes record who asked for what.

use crate::core::Core;
use crate::error::{MonitorError, Result};
use crate::fsm::{Action, GroupView, Timestamp};
use crate::store::NodeRow;
use pgpilot_proto::NodeState;

use super::Control;
use crate::metrics::Cause;

/// The writable node when an operation began, for the CLI to wait until
/// another one is writable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverStarted {
    pub group_id: i32,
    pub old_primary: Option<(i64, String)>,
}

impl Control {
    /// A planned switchover (see `Core::switchover`): to the node named
    /// `candidate`, or with `None` to the best standby.
    pub async fn perform_switchover(
        &self,
        formation: &str,
        candidate: Option<&str>,
        now: Timestamp,
    ) -> Result<SwitchoverStarted> {
        let (group_id, candidate_id) = match candidate {
            Some(name) => {
                let node = self.node_named(formation, name).await?;
                (node.group_id, Some(node.node_id))
            }
            None => (self.formation_group(formation).await?, None),
        };
        self.switchover(formation, group_id, candidate_id, false, now)
            .await
    }

    /// `perform promotion`: a switchover to the node named `name`, which
    /// must not be the primary already.
    pub async fn perform_promotion(
        &self,
        formation: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<SwitchoverStarted> {
        let node = self.node_named(formation, name).await?;
        self.switchover(formation, node.group_id, Some(node.node_id), true, now)
            .await
    }

    async fn switchover(
        &self,
        formation: &str,
        group_id: i32,
        candidate: Option<i64>,
        promotion: bool,
        now: Timestamp,
    ) -> Result<SwitchoverStarted> {
        let _guard = self.lock_group(formation, group_id).await;
        let mut tx = self.begin(formation, group_id, now).await?;
        let old_primary = tx
            .view
            .nodes
            .iter()
            .find(|n| n.assigned.accepts_writes())
            .map(|n| (n.id, n.name.clone()));
        if let (true, Some(id), Some((primary, name))) = (promotion, candidate, &old_primary) {
            // The core would say the candidate is no eligible standby;
            // the operator asked for something that already holds.
            if id == *primary {
                return Err(MonitorError::FailedPrecondition(format!(
                    "node {id} {name:?} is the primary of formation {formation:?} already: \
                     nothing to promote; to move the primary elsewhere, promote another node \
                     or run `pgpilot perform switchover`"
                )));
            }
        }
        let actions = self.core.switchover(&mut tx.view, candidate, now)?;
        self.finish(tx, &actions, Cause::Operator).await?;
        Ok(SwitchoverStarted {
            group_id,
            old_primary,
        })
    }

    /// `perform failover [--allow-data-loss]` (see [`Core::failover`]).
    ///
    /// [`Core::failover`]: crate::core::Core::failover
    pub async fn perform_failover(
        &self,
        formation: &str,
        allow_data_loss: bool,
        now: Timestamp,
    ) -> Result<SwitchoverStarted> {
        let group_id = self.formation_group(formation).await?;
        let _guard = self.lock_group(formation, group_id).await;
        let mut tx = self.begin(formation, group_id, now).await?;
        // The node being replaced: the writer, a dropped writer, or the
        // old primary of an election under way.
        let old_primary = tx
            .view
            .nodes
            .iter()
            .find(|n| n.assigned.accepts_writes())
            .or_else(|| {
                tx.view.nodes.iter().find(|n| {
                    matches!(n.assigned, NodeState::Draining | NodeState::DemoteTimeout)
                        || (n.assigned == NodeState::Dropped
                            && n.dropped_from.is_some_and(|s| s.accepts_writes()))
                })
            })
            .map(|n| (n.id, n.name.clone()));
        let actions = self.core.failover(&mut tx.view, allow_data_loss, now)?;
        self.finish(tx, &actions, Cause::Operator).await?;
        Ok(SwitchoverStarted {
            group_id,
            old_primary,
        })
    }

    /// `set node candidate-priority`; returns the node's group.
    pub async fn set_candidate_priority(
        &self,
        formation: &str,
        name: &str,
        priority: i32,
        now: Timestamp,
    ) -> Result<i32> {
        let node = self.node_named(formation, name).await?;
        self.decide(formation, node.group_id, now, |core, g| {
            core.set_candidate_priority(g, node.node_id, priority, now)
        })
        .await
    }

    /// `set node replication-quorum`; returns the node's group.
    pub async fn set_replication_quorum(
        &self,
        formation: &str,
        name: &str,
        quorum: bool,
        now: Timestamp,
    ) -> Result<i32> {
        let node = self.node_named(formation, name).await?;
        self.decide(formation, node.group_id, now, |core, g| {
            core.set_replication_quorum(g, node.node_id, quorum, now)
        })
        .await
    }

    /// `enable maintenance` / `disable maintenance`; returns the node's group.
    pub async fn set_maintenance(
        &self,
        formation: &str,
        name: &str,
        enable: bool,
        allow_failover: bool,
        now: Timestamp,
    ) -> Result<i32> {
        let node = self.node_named(formation, name).await?;
        self.decide(formation, node.group_id, now, |core, g| {
            if enable {
                core.enable_maintenance(g, node.node_id, allow_failover, now)
            } else {
                core.disable_maintenance(g, node.node_id, now)
            }
        })
        .await
    }

    /// `set formation number-sync-standbys`; returns the formation's group.
    pub async fn set_number_sync_standbys(
        &self,
        formation: &str,
        n: i32,
        now: Timestamp,
    ) -> Result<i32> {
        let group_id = self.formation_group(formation).await?;
        self.decide(formation, group_id, now, |core, g| {
            core.set_number_sync_standbys(g, n, now)
        })
        .await
    }

    /// One decision of the core about a group, as every operation makes
    /// it: lock the group, begin its transaction, decide, apply and
    /// commit (a refusal rolls back). Returns the group.
    async fn decide(
        &self,
        formation: &str,
        group_id: i32,
        now: Timestamp,
        op: impl FnOnce(&Core, &mut GroupView) -> Result<Vec<Action>>,
    ) -> Result<i32> {
        let _guard = self.lock_group(formation, group_id).await;
        let mut tx = self.begin(formation, group_id, now).await?;
        let actions = op(&self.core, &mut tx.view)?;
        self.finish(tx, &actions, Cause::Operator).await?;
        Ok(group_id)
    }

    /// The row of the node called `name` in `formation`. Names are unique
    /// within a formation. The row is read before the group is locked: a
    /// node dropped meanwhile is refused by the core as unknown.
    async fn node_named(&self, formation: &str, name: &str) -> Result<NodeRow> {
        self.must_exist(formation).await?;
        let nodes = self.store.nodes(Some(formation)).await?;
        if let Some(n) = nodes.iter().find(|n| n.name == name) {
            return Ok(n.clone());
        }
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        Err(MonitorError::NotFound(if names.is_empty() {
            format!("formation {formation:?} has no node named {name:?}: it has no nodes yet")
        } else {
            format!(
                "formation {formation:?} has no node named {name:?}; its nodes are {}: \
                 pass one of them (see `pgpilot show state`)",
                names.join(", ")
            )
        }))
    }

    /// The formation's group. A pgsql formation has exactly one (see
    /// `register.rs`); the first is taken should there ever be more.
    pub(super) async fn formation_group(&self, formation: &str) -> Result<i32> {
        self.must_exist(formation).await?;
        self.store
            .groups()
            .await?
            .into_iter()
            .find(|(f, _)| f == formation)
            .map(|(_, g)| g)
            .ok_or_else(|| {
                MonitorError::FailedPrecondition(format!(
                    "formation {formation:?} has no nodes yet: register one with \
                     `pgpilot create postgres --formation {formation}` first"
                ))
            })
    }

    async fn must_exist(&self, formation: &str) -> Result<()> {
        self.check_formation(formation).await.map(|_| ())
    }
}
