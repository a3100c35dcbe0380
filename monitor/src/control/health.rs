//! Health changes from the prober, and time-driven decisions.

use super::Control;
use crate::error::Result;
use crate::fsm::{Health, Timestamp};
use crate::metrics::Cause;

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
    /// write transaction, nor even a read.
    pub async fn record_probe(&self, result: ProbeResult, now: Timestamp) -> Result<()> {
        if self.live.known_health(result.node_id) == Some(result.health) {
            return Ok(());
        }
        let Some((formation, group_id)) = self.store.group_of(result.node_id).await? else {
            return Ok(()); // dropped while being probed
        };
        let _guard = self.lock_group(&formation, group_id).await;
        let Some(mut view) = self.read_view(&formation, group_id).await? else {
            return Ok(());
        };
        let (id, health) = (result.node_id, result.health);
        if self
            .core
            .probe(&mut view, id, health, &result.detail, now)
            .is_empty()
        {
            self.live.set_known_health(id, health);
            return Ok(());
        }
        let mut tx = self.begin(&formation, group_id, now).await?;
        let actions = self
            .core
            .probe(&mut tx.view, id, health, &result.detail, now);
        self.finish(tx, &actions, Cause::Probe).await?;
        self.live.set_known_health(id, health);
        Ok(())
    }

    /// At start: goal times stored by an earlier process on a clock that
    /// was ahead are rebased to our start (see [`crate::core::Core::rebase_clock`]).
    pub async fn rebase_clocks(&self, now: Timestamp) -> Result<()> {
        for (formation, group_id) in self.store.groups().await? {
            let _guard = self.lock_group(&formation, group_id).await;
            let mut tx = self.begin(&formation, group_id, now).await?;
            let actions = self.core.rebase_clock(&mut tx.view, now);
            if !actions.is_empty() {
                tracing::warn!(
                    formation = %formation, group = group_id,
                    "{} goal time(s) were ahead of this monitor's clock (the system clock was set back?): taken as now",
                    actions.len()
                );
            }
            self.finish(tx, &actions, Cause::Start).await?;
        }
        Ok(())
    }

    /// Re-runs a group's FSM for the rules that fire on time alone (lease
    /// expiry, silence, stall). Writes only when the FSM has something to do.
    pub async fn tick(&self, formation: &str, group_id: i32, now: Timestamp) -> Result<()> {
        let _guard = self.lock_group(formation, group_id).await;
        let Some(mut view) = self.read_view(formation, group_id).await? else {
            return Ok(());
        };
        if self.core.tick(&mut view, now).is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(formation, group_id, now).await?;
        let actions = self.core.tick(&mut tx.view, now);
        self.finish(tx, &actions, Cause::Tick).await?;
        Ok(())
    }
}
