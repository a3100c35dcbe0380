//! `rotate replication-password`: the operator's side of a rotation (see
//! `crate::core::password` for how it completes without locking a
//! standby out).

use super::Control;
use crate::core::password;
use crate::error::{MonitorError, Result};
use crate::fsm::{Action, Timestamp};
use crate::metrics::Cause;

impl Control {
    /// Stores a new replication password for `formation` as pending.
    /// Returns its generation and the formation's group. Refused while a
    /// rotation is pending, and for a formation without nodes (there is
    /// no role to change; the first node gets the current password).
    pub async fn rotate_replication_password(
        &self,
        formation: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<(i64, i32)> {
        let group_id = self.formation_group(formation).await?;
        let _guard = self.lock_group(formation, group_id).await;
        let mut tx = self.begin(formation, group_id, now).await?;
        let generations = tx.passwords().await?.generations();
        let generation = password::begin_rotation(generations, formation)?;
        if !tx.begin_rotation(generations.current).await? {
            return Err(MonitorError::FailedPrecondition(format!(
                "another rotation of the replication password of formation {formation:?} came \
                 first: see `pgpilot show events`, then rotate again if you still need to"
            )));
        }
        // The event goes on the node that is to set the password.
        let writer = tx
            .view
            .nodes
            .iter()
            .find(|n| n.assigned.accepts_writes())
            .or(tx.view.nodes.first())
            .map(|n| n.id);
        let actions: Vec<Action> = writer
            .map(|node_id| Action::Note {
                node_id,
                description: format!(
                    "{by} rotated the replication password: generation {generation} is pending \
                     until the writable node's keeper sets it on the replication role; the old \
                     one stays current until then"
                ),
            })
            .into_iter()
            .collect();
        self.finish(tx, &actions, Cause::Operator).await?;
        Ok((generation, group_id))
    }
}
