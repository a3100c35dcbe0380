//! Register: a keeper joins a formation.

use pgpilot_proto::pb;

use super::Control;
use crate::core::NewNode;
use crate::error::{MonitorError, Result};
use crate::fsm::Timestamp;
use crate::metrics::Cause;

/// pgsql formations have one group; more are for sharded setups later.
const GROUP_ID: i32 = 0;

impl Control {
    pub async fn register(
        &self,
        req: pb::RegisterRequest,
        now: Timestamp,
    ) -> Result<pb::RegisterResponse> {
        let new = NewNode::from_wire(&req)?;
        if !self.store.formation_exists(&req.formation).await? {
            let known: Vec<String> = self
                .store
                .formations()
                .await?
                .into_iter()
                .map(|f| f.0)
                .collect();
            return Err(MonitorError::NotFound(format!(
                "formation {:?} does not exist on this monitor; known formations: {}",
                req.formation,
                known.join(", ")
            )));
        }
        let _guard = self.lock_group(&req.formation, GROUP_ID).await;
        self.store.ensure_group(&req.formation, GROUP_ID).await?;
        let mut tx = self.begin(&req.formation, GROUP_ID, now).await?;
        // host:port is unique across formations, so it is the store's
        // check, not the group's.
        if let Some((id, formation)) = tx.node_at(&new.host, new.port).await? {
            return Err(MonitorError::AlreadyExists(format!(
                "{}:{} is already registered as node {id} in formation {formation:?}: \
                 each node needs its own host:port; drop node {id} first if it is gone",
                new.host, new.port
            )));
        }
        let node_id = tx.next_node_id().await?;
        let actions = self.core.register(&mut tx.view, node_id, &new, now)?;
        // The current password, never a pending one: the role may not
        // accept that yet (see `crate::core::password`).
        let passwords = tx.passwords().await?;
        let (credential, digest) = crate::auth::node_credential(node_id);
        tx.apply(&actions).await?;
        tx.set_credential_digest(node_id, &digest).await?;
        let view = self.commit_applied(tx, &actions, Cause::Register).await?;
        self.keys.add_node(node_id, digest);
        // The FSM never removes a node in its registration round; a missing
        // node here would be a bug, reported as such.
        let node = view.node(node_id).ok_or_else(|| {
            MonitorError::Other(anyhow::anyhow!(
                "the registered node vanished before commit"
            ))
        })?;
        Ok(pb::RegisterResponse {
            node_id,
            group_id: GROUP_ID,
            name: node.name.clone(),
            assigned_state: node.assigned as i32,
            generation: view.generation,
            replication_password: passwords.current,
            replication_password_generation: passwords.generation,
            node_credential: credential.token(),
        })
    }
}
