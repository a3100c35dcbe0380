//! Running a transition's steps (planned by the engine) and keeping a
//! steady state in line. Every step is idempotent; the new state is
//! persisted only after all of them succeeded (by the loop, through the
//! engine), so a keeper killed halfway re-runs the transition.

use std::time::{Duration, Instant};

use anyhow::Context;
use pgpilot_proto::NodeState;

use super::Agent;
use crate::pg::sql;
use crate::plan::{Goal, Step};
use crate::statefile::RejoinRecord;

/// How long turning synchronous replication on waits for a standby to
/// confirm everything; then the transition fails and is retried on the
/// next round. Shorter than the monitor's node_unhealthy_timeout (3 s), so
/// the wait never makes this node's heartbeat look dead.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long promotion waits for the WAL receiver to stop and replay to end.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

impl Agent {
    /// Runs the steps from `from` to `goal.state`. On success the caller
    /// records the new state ([`crate::engine::Engine::transition_ok`]).
    pub(super) async fn transition(&mut self, from: NodeState, goal: &Goal) -> anyhow::Result<()> {
        // Plan on a fresh look: PostgreSQL may have been started since the
        // round's observation, and a promotion must know whether a keeper
        // killed halfway already promoted.
        self.observe().await;
        let steps = self.engine.plan(goal)?;
        tracing::info!(
            "transition {from} -> {}: {} step(s)",
            goal.state,
            steps.len()
        );
        let started = Instant::now();
        for step in steps {
            tracing::debug!("step {step:?}");
            self.run_step(&step, goal)
                .await
                .with_context(|| format!("{from} -> {}: step {step:?}", goal.state))?;
        }
        // The other nodes' access and slots are in place before the
        // monitor hears of the new state (a joining standby copies from us
        // as soon as we report wait_primary).
        self.reconcile_access().await?;
        tracing::info!(
            "reached {} in {} ms",
            goal.state,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    async fn run_step(&mut self, step: &Step, goal: &Goal) -> anyhow::Result<()> {
        let node_id = self.engine.state().node_id;
        let password = self.config.replication_password.clone();
        match step {
            Step::InitOrAdopt => {
                crate::setup::init_or_adopt(&self.config, &self.pg).await?;
                self.system_identifier = None;
            }
            Step::Clone(up) => {
                if self.pg.clone_from(up, node_id, &password).await? {
                    self.system_identifier = None;
                }
            }
            Step::Rewind(up) => {
                let r = self.pg.rewind_from(up, node_id, &password).await?;
                self.system_identifier = None;
                let generation = self.engine.state().generation_seen;
                self.engine.record_rejoin(RejoinRecord {
                    method: r.method.to_string(),
                    generation,
                    detail: r.detail,
                });
                self.persist()?;
            }
            Step::Configure(role) => {
                self.pg.configure(role, node_id, &password).await?;
                self.engine.role_applied(Some(role.clone()));
            }
            Step::Start => {
                self.reconcile_hba().await?;
                self.pg.start().await?;
            }
            Step::Stop => {
                self.pg.stop().await?;
                self.engine.role_applied(None);
            }
            Step::EnsureReplicationRole => {
                let mut c = self.pg.connect().await?;
                sql::ensure_replication_role(&mut c, &password).await?;
            }
            Step::WaitSyncStandby => {
                let mut c = self.pg.connect().await?;
                let lsn = sql::wait_sync_standby(&mut c, SYNC_TIMEOUT).await?;
                tracing::info!("a synchronous standby has flushed everything up to {lsn}");
            }
            Step::WaitReplayed => {
                let mut c = self.pg.connect().await?;
                let lsn = sql::wait_replayed(&mut c, REPLAY_TIMEOUT).await?;
                tracing::info!(
                    "WAL receiver stopped, everything received is replayed (up to {lsn})"
                );
            }
            Step::Promote => {
                let mut c = self.pg.connect().await?;
                sql::promote(&mut c).await?;
                tracing::info!("promoted (goal {})", goal.state);
            }
        }
        Ok(())
    }

    /// In a steady state: settings, pg_hba.conf and slots stay as they must.
    /// A standby told to follow another node is rewound first (see
    /// [`crate::engine::Engine::steady_steps`]).
    pub(super) async fn reconcile(&mut self, goal: &Goal) -> anyhow::Result<()> {
        let steps = self.engine.steady_steps(crate::clock::now(), goal);
        if steps.len() > 1 {
            tracing::info!(
                "following node {:?} now: rewinding before it streams from it",
                goal.primary.as_ref().map(|u| u.node_id)
            );
        }
        for step in &steps {
            self.run_step(step, goal)
                .await
                .with_context(|| format!("stay {}: step {step:?}", goal.state))?;
        }
        self.persist()?;
        self.reconcile_access().await
    }
}
