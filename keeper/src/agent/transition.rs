//! Running a transition's steps (planned by the engine) and keeping a
//! steady state in line. Every step is idempotent; the new state is
//! persisted only after all of them succeeded (by the loop, through the
//! engine), so a keeper killed halfway re-runs the transition. Each step's
//! I/O runs beside the heartbeat ([`super::beside`]).

use std::time::{Duration, Instant};

use anyhow::Context;
use pgpilot_proto::{pb, NodeState};
use tokio_util::sync::CancellationToken;

use super::beside::{beside, Beat, Cut};
use super::Agent;
use crate::config::KeeperConfig;
use crate::hooks::{self, HookEnv};
use crate::pg::copy::Rejoined;
use crate::pg::{sql, LocalPg};
use crate::plan::{Goal, Role, Step};
use crate::statefile::RejoinRecord;

/// How long turning synchronous replication on waits for a standby to
/// confirm everything; then the transition fails and is retried on the
/// next round (the heartbeat goes on beside the wait, so this bounds only
/// how stale the reason reported with it can get).
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long promotion waits for the WAL receiver to stop and replay to end.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CHECKPOINT before a planned stop may take (connecting
/// included). It only shortens the shutdown checkpoint that follows, which
/// writes whatever is left anyway; past this the node stops regardless, so
/// a slow disk or a huge backlog costs a switchover at most this much more
/// than a stop without it. As long as the keeper's statement_timeout,
/// which would cancel the statement (not the checkpointer's work) then.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a step's I/O did that the engine or the agent must hear of.
enum Done {
    Nothing,
    /// PGDATA was replaced (initdb, a copy): its system identifier is read
    /// again.
    NewPgdata,
    Rejoined(Rejoined),
    /// The settings were written and verified for this role (`None`:
    /// PostgreSQL stopped).
    Role(Option<Role>),
    /// The replication role's password is this generation's now.
    PasswordSet(i64),
}

/// The heartbeat's share of the agent ([`Beat`]), borrowed field by field
/// so that a step's I/O may hold the PostgreSQL handle meanwhile.
macro_rules! beat {
    ($agent:expr) => {
        Beat {
            engine: &mut $agent.engine,
            link: &mut $agent.link,
            probe: &$agent.probe,
            fence: &$agent.fence,
            published: &$agent.published,
            wake: &$agent.wake,
            pgdata: &$agent.config.pgdata,
            system_identifier: $agent.system_identifier,
            noted: &mut $agent.beside_note,
        }
    };
}

impl Agent {
    /// Runs the steps from `from` to `goal.state`. On success (`None`) the
    /// caller records the new state ([`crate::engine::Engine::transition_ok`]);
    /// `Some` says why the steps were cut short.
    pub(super) async fn transition(
        &mut self,
        from: NodeState,
        goal: &Goal,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<Cut>> {
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
        self.engine.steps_started(goal);
        self.beside_note.clear();
        if let Some(cut) = self
            .run_steps(&steps, cancel)
            .await
            .with_context(|| format!("{from} -> {}", goal.state))?
        {
            return Ok(Some(cut));
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
        Ok(None)
    }

    /// Runs `steps` in order, each beside the heartbeat. The engine must
    /// have been told ([`crate::engine::Engine::steps_started`]).
    async fn run_steps(
        &mut self,
        steps: &[Step],
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<Cut>> {
        for step in steps {
            tracing::debug!("step {step:?}");
            if let Step::Start = step {
                // Short and bounded (lookups of 1 s, a reload): before the
                // start, not beside it, as it needs the engine's view.
                self.reconcile_hba().await?;
            }
            if let Step::Announce = step {
                if let Some(cut) = self.announce(cancel).await? {
                    return Ok(Some(cut));
                }
                continue;
            }
            let node_id = self.engine.state().node_id;
            let name = self.engine.state().name.clone();
            let pending = self
                .engine
                .last_reply()
                .and_then(|r| r.pending_replication_password.clone());
            let io = step_io(
                &mut self.pg,
                &self.config,
                pending.as_ref(),
                node_id,
                &name,
                step,
            );
            let beat = beat!(self);
            let done = match beside(io, beat, cancel).await {
                Ok(done) => done.with_context(|| format!("step {step:?}"))?,
                Err(cut) => return Ok(Some(cut)),
            };
            self.step_done(done)?;
        }
        Ok(None)
    }

    /// [`Step::Announce`]: reports at once, saying PostgreSQL runs, and
    /// waits (reporting every poll) for a reply that keeps the goal; a
    /// reply that moved on ends the steps (see
    /// [`crate::engine::Engine::announce_started`]). No timeout of its
    /// own: without the monitor's word a standby does not start, and its
    /// keeper keeps reporting meanwhile.
    async fn announce(&mut self, cancel: &CancellationToken) -> anyhow::Result<Option<Cut>> {
        self.engine.announce_started(crate::clock::now());
        let beat = beat!(self);
        match beside(std::future::pending::<()>(), beat, cancel).await {
            Err(Cut::Confirmed) => {
                self.engine.announce_went_on();
                Ok(None)
            }
            Err(cut) => Ok(Some(cut)),
            Ok(()) => unreachable!("a pending future never ends"),
        }
    }

    /// Tells the engine what a step did (between steps: never beside one).
    fn step_done(&mut self, done: Done) -> anyhow::Result<()> {
        match done {
            Done::Nothing => {}
            Done::NewPgdata => self.system_identifier = None,
            Done::Rejoined(r) => {
                self.system_identifier = None;
                let generation = self.engine.state().generation_seen;
                self.engine.record_rejoin(RejoinRecord {
                    method: r.method.to_string(),
                    generation,
                    detail: r.detail,
                });
                self.persist()?;
            }
            Done::Role(role) => self.engine.role_applied(role),
            Done::PasswordSet(generation) => self.engine.role_password_set(generation),
        }
        Ok(())
    }

    /// In a steady state: settings, pg_hba.conf and slots stay as they must.
    /// A standby told to follow another node is rewound first (see
    /// [`crate::engine::Engine::steady_steps`]).
    pub(super) async fn reconcile(
        &mut self,
        goal: &Goal,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<Cut>> {
        let rogue = self.engine.out_of_recovery();
        let steps = self.engine.steady_steps(crate::clock::now(), goal);
        if rogue {
            // A human must look: something outside pgpilot promoted or
            // started this PostgreSQL.
            tracing::error!(
                state = %goal.state,
                "leadership conflict: PostgreSQL is out of recovery in state {}, which the monitor \
                 did not make writable; fencing it: stop, rewind from node {:?}, restart as a standby",
                goal.state,
                goal.primary.as_ref().map(|u| u.node_id)
            );
            self.metrics.fenced();
        } else if steps.len() > 1 {
            tracing::info!(
                "following node {:?} now: rewinding before it streams from it",
                goal.primary.as_ref().map(|u| u.node_id)
            );
        }
        self.engine.steps_started(goal);
        let ran = self
            .run_steps(&steps, cancel)
            .await
            .with_context(|| format!("stay {}", goal.state));
        self.engine.steps_ended();
        if let Some(cut) = ran? {
            return Ok(Some(cut));
        }
        self.persist()?;
        self.reconcile_access().await?;
        Ok(None)
    }
}

/// One step's I/O on PostgreSQL (no engine, no monitor: it runs beside the
/// heartbeat, which holds those). Preconditions and effects are the
/// step's ([`Step`]); dropping the future is safe (see [`super::beside`]).
async fn step_io(
    pg: &mut LocalPg,
    config: &KeeperConfig,
    pending: Option<&pb::ReplicationPassword>,
    node_id: i64,
    name: &str,
    step: &Step,
) -> anyhow::Result<Done> {
    let password = &config.replication_password;
    Ok(match step {
        Step::InitOrAdopt => {
            crate::setup::init_or_adopt(config, pg).await?;
            Done::NewPgdata
        }
        Step::Clone(up) => match pg.clone_from(up, node_id, password).await? {
            true => Done::NewPgdata,
            false => Done::Nothing,
        },
        Step::Rewind(up) => Done::Rejoined(pg.rewind_from(up, node_id, password).await?),
        Step::Configure(role) => {
            pg.configure(role, node_id, password).await?;
            Done::Role(Some(role.clone()))
        }
        Step::Start => {
            pg.start().await?;
            Done::Nothing
        }
        // Run by the driver itself (`Agent::announce`): it needs the engine.
        Step::Announce => Done::Nothing,
        Step::Checkpoint => {
            checkpoint_before_stop(pg).await;
            Done::Nothing
        }
        Step::Stop => {
            pg.stop().await?;
            Done::Role(None)
        }
        Step::EnsureReplicationRole => {
            let mut c = pg.connect().await?;
            sql::ensure_replication_role(&mut c, password, config.replication_password_generation)
                .await?;
            Done::Nothing
        }
        Step::SetReplicationPassword { generation } => {
            let password = match pending {
                _ if *generation == config.replication_password_generation => password,
                Some(p) if p.generation == *generation => &p.password,
                _ => anyhow::bail!(
                    "the replication password of generation {generation} is no longer known \
                     to this keeper: the next report fetches the one to set"
                ),
            };
            let mut c = pg.connect().await?;
            sql::set_replication_password(&mut c, password, *generation).await?;
            tracing::info!(
                "set the replication role's new password (generation {generation}); standbys \
                 switch to it once the monitor makes it current"
            );
            Done::PasswordSet(*generation)
        }
        Step::WaitSyncStandby => {
            let mut c = pg.connect().await?;
            let k = sql::sync_quorum(&mut c).await?;
            let lsn = sql::wait_sync_standby(&mut c, k, SYNC_TIMEOUT).await?;
            tracing::info!("{k} synchronous standby(s) have flushed everything up to {lsn}");
            Done::Nothing
        }
        Step::WaitReplayed => {
            let mut c = pg.connect().await?;
            let lsn = sql::wait_replayed(&mut c, REPLAY_TIMEOUT).await?;
            tracing::info!("WAL receiver stopped, everything received is replayed (up to {lsn})");
            Done::Nothing
        }
        Step::WaitReplayedTo(target) => {
            let mut c = pg.connect().await?;
            let lsn = sql::wait_replayed_to(&mut c, *target, REPLAY_TIMEOUT).await?;
            tracing::info!(
                "fast_forward: replayed up to {lsn} (the voter's final LSN is {target})"
            );
            Done::Nothing
        }
        Step::PrePromote { from, to } => {
            if let Some(cmd) = &config.pre_promote {
                let timeline = match pg.connect().await {
                    Ok(mut c) => sql::status(&mut c).await.ok().map(|s| s.timeline),
                    Err(_) => None,
                };
                let env = HookEnv {
                    node_id,
                    node_name: name.to_string(),
                    formation: config.formation.clone(),
                    old: *from,
                    new: *to,
                    old_role: hooks::role_of(*from),
                    new_role: "primary",
                    timeline,
                };
                tracing::info!("running the pre_promote hook before promoting");
                hooks::run(
                    "pre_promote",
                    cmd,
                    &env,
                    &config.pgdata,
                    config.hook_timeout,
                )
                .await
                .context("the pre_promote hook refused the promotion")?;
            }
            Done::Nothing
        }
        Step::Promote => {
            let mut c = pg.connect().await?;
            sql::promote(&mut c).await?;
            tracing::info!("promoted");
            Done::Nothing
        }
        Step::TimelineCheckpoint => {
            let mut c = pg.connect().await?;
            sql::timeline_checkpoint(&mut c).await?;
            tracing::info!("checkpointed: pg_control names the new timeline");
            Done::Nothing
        }
    })
}

/// [`Step::Checkpoint`]: never fails. Whatever goes wrong is logged and the
/// stop that follows goes on: a failed CHECKPOINT must never keep a node
/// that is being demoted from stopping.
async fn checkpoint_before_stop(pg: &LocalPg) {
    let started = Instant::now();
    let run = async {
        let mut c = pg.connect().await?;
        sql::checkpoint(&mut c).await
    };
    match tokio::time::timeout(CHECKPOINT_TIMEOUT, run).await {
        Ok(Ok(())) => tracing::info!(
            "checkpoint before stopping took {} ms",
            started.elapsed().as_millis()
        ),
        Ok(Err(e)) => tracing::warn!(
            "failed to checkpoint before stopping: {e:#}; stopping anyway (the shutdown \
             checkpoint writes everything)"
        ),
        Err(_) => tracing::warn!(
            "the checkpoint before stopping took over {} ms; stopping anyway (the shutdown \
             checkpoint finishes it)",
            CHECKPOINT_TIMEOUT.as_millis()
        ),
    }
}
