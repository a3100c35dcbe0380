//! The replication password's rotation, as the keeper decides it (the
//! monitor's side is `pgpilot_monitor::core::password`). The engine sees
//! generations only; the driver looks the passwords up in the last reply
//! and in keeper.toml, so no decision, step or log line carries one.
//!
//! Two rules, both idempotent:
//!
//! - **Hold** ([`Engine::password_to_store`]): a newer *current*
//!   password in a reply is stored (keeper.toml, durably) and used from
//!   then on; so is the *pending* one once this node's PostgreSQL shows it
//!   on the role. A standby configured to stream is then configured again:
//!   its primary_conninfo gets the new password and the reload restarts
//!   its WAL receiver with it. The monitor makes a password current only
//!   once the role has it, so this never hands a standby a password the
//!   primary refuses.
//! - **Set** ([`Engine::password_step`]): on a writable primary (steady,
//!   running, writes allowed), when the role's generation (its comment,
//!   replicated with the role) is older than the newest password this
//!   keeper knows, pending or held, set it (ALTER ROLE). A new primary
//!   after a failover in the middle of a rotation sets it too if the old
//!   primary's ALTER ROLE never reached it, and does nothing if it did.

use super::Engine;
use crate::plan::{Role, Step};

impl Engine {
    /// The generation of the password the driver holds (keeper.toml), at
    /// start and after each [`Engine::password_to_store`] it stored.
    pub fn password_stored(&mut self, generation: i64) {
        if generation == self.password_held {
            return;
        }
        self.password_held = generation;
        // A standby streams with the password in primary_conninfo: the
        // steady round configures it again (a reload, which restarts the
        // WAL receiver with the new password).
        if matches!(self.applied_role, Some(Role::Standby { upstream: Some(_) })) {
            self.applied_role = None;
        }
    }

    /// The generation of the password this keeper holds.
    pub fn password_held(&self) -> i64 {
        self.password_held
    }

    /// Which password of the last reply to store now, by generation: the
    /// current one if newer than the one held; else the pending one if
    /// newer and this node's role already has it.
    pub fn password_to_store(&self) -> Option<i64> {
        let reply = self.last_reply.as_ref()?;
        let role = self
            .obs
            .status
            .as_ref()
            .and_then(|s| s.role_password_generation);
        let current = reply
            .replication_password
            .as_ref()
            .map(|p| p.generation)
            .filter(|g| *g > self.password_held);
        let pending = reply
            .pending_replication_password
            .as_ref()
            .map(|p| p.generation)
            .filter(|g| *g > self.password_held && role.is_some_and(|r| r >= *g));
        current.or(pending)
    }

    /// On a writable primary: the step that sets the newest password
    /// this keeper knows on the role, when the role has an older one.
    /// Only with writes allowed (`read_only: false` verified): a node
    /// still behind the monitor's lease gate writes nothing, not even a
    /// catalog row.
    pub fn password_step(&self) -> Option<Step> {
        if !self.state.current.accepts_writes()
            || !self.obs.running
            || !matches!(
                self.applied_role,
                Some(Role::Primary {
                    read_only: false,
                    ..
                })
            )
        {
            return None;
        }
        let status = self.obs.status.as_ref().filter(|s| !s.in_recovery)?;
        let pending = self
            .last_reply
            .as_ref()
            .and_then(|r| r.pending_replication_password.as_ref())
            .map_or(0, |p| p.generation);
        let target = self.password_held.max(pending);
        // 0: nothing known yet (a keeper.toml from before rotation, before
        // the first reply): nothing to set.
        (target > 0 && status.role_password_generation.unwrap_or(0) < target)
            .then_some(Step::SetReplicationPassword { generation: target })
    }
}
