//! Health changes from the prober, and time-driven decisions.

use super::Control;
use crate::error::Result;
use crate::fsm::{self, Health, Timestamp};
use crate::store::group_view;

/// The outcome of one probe round of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub node_id: i64,
    pub health: Health,
    /// Why, for the event: "3 attempts failed: connection refused".
    pub detail: String,
}

impl Control {
    /// Records a probe round. Only a *change* of health is written (with
    /// an event) and re-runs the group's FSM: an unchanged result costs no
    /// write transaction.
    pub async fn record_probe(&self, result: ProbeResult, now: Timestamp) -> Result<()> {
        if self.live.known_health(result.node_id) == Some(result.health) {
            return Ok(());
        }
        let Some((formation, group_id)) = self.store.group_of(result.node_id).await? else {
            return Ok(()); // dropped while being probed
        };
        let _guard = self.lock_group(&formation, group_id).await;
        let Some((_, nodes)) = self.store.read_group(&formation, group_id).await? else {
            return Ok(());
        };
        let Some(row) = nodes.iter().find(|n| n.node_id == result.node_id) else {
            return Ok(());
        };
        if row.health == result.health.name() {
            self.live.set_known_health(result.node_id, result.health);
            return Ok(());
        }
        let mut tx = self.begin(&formation, group_id, now).await?;
        let Some(node) = tx.node_mut(result.node_id) else {
            return Ok(());
        };
        let old = std::mem::replace(&mut node.health, result.health.name().to_string());
        node.last_probe = Some(now);
        let name = node.name.clone();
        tx.persist_live(result.node_id, &self.live);
        tx.save_node(result.node_id).await?;
        tx.event(
            result.node_id,
            format!(
                "node {} {name:?} health changed from {old} to {}: {}",
                result.node_id,
                result.health.name(),
                result.detail
            ),
        )
        .await?;
        tx.decide(&self.live, &self.fsm).await?;
        self.commit(tx).await?;
        self.live.set_known_health(result.node_id, result.health);
        Ok(())
    }

    /// Re-runs a group's FSM for the rules that fire on time alone (lease
    /// expiry, silence, stall). Writes only when the FSM has something to do.
    pub async fn tick(&self, formation: &str, group_id: i32, now: Timestamp) -> Result<()> {
        let _guard = self.lock_group(formation, group_id).await;
        let Some((group, nodes)) = self.store.read_group(formation, group_id).await? else {
            return Ok(());
        };
        let view = group_view(&group, &nodes, &self.live)?;
        if fsm::decide(&view, now, &self.fsm).is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(formation, group_id, now).await?;
        tx.decide(&self.live, &self.fsm).await?;
        self.commit(tx).await
    }
}
