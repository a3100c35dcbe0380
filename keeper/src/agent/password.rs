//! A rotated replication password, stored (the decision of which one is
//! the engine's, see `crate::engine::password`).

use anyhow::Context;

use super::Agent;

impl Agent {
    /// Stores the replication password the engine names
    /// ([`Engine::password_to_store`]) in keeper.toml, with its
    /// generation, in one durable rename (a crash leaves the old pair or
    /// the new one), then uses it. A keeper.toml that went back to an
    /// older pair (restored, or rewritten by a `config set` that raced
    /// this) heals itself: the keeper reports the older generation, and
    /// the monitor sends the current password again.
    pub(super) fn store_password(&mut self) -> anyhow::Result<()> {
        let Some(generation) = self.engine.password_to_store() else {
            return Ok(());
        };
        let Some(reply) = self.engine.last_reply() else {
            return Ok(());
        };
        let Some(new) = [
            &reply.replication_password,
            &reply.pending_replication_password,
        ]
        .into_iter()
        .flatten()
        .find(|p| p.generation == generation) else {
            return Ok(());
        };
        let mut config = self.config.clone();
        config.replication_password = new.password.clone();
        config.replication_password_generation = generation;
        config
            .save()
            .context("store the new replication password in keeper.toml")?;
        self.config = config;
        self.engine.password_stored(generation);
        tracing::info!(
            "using the replication password of generation {generation} from now on (stored in \
             keeper.toml)"
        );
        Ok(())
    }
}
