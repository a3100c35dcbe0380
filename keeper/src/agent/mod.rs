//! The keeper's daemon: the I/O shell around [`crate::engine`] (DESIGN.md
//! §7). It reads PostgreSQL, sends the engine's report to the monitor,
//! runs the steps the engine plans, and writes the state file when the
//! engine says so; every decision is the engine's.
//!
//! One task does everything in order, so two transitions never overlap.
//! While a step runs (it may take hours: a copy, a rewind, crash
//! recovery), the same task keeps reporting beside it ([`beside`]: the two
//! are futures of one `select!` over disjoint parts of the agent, the step
//! holding PostgreSQL, the heartbeat the engine and the monitor link), and
//! what the replies say is the engine's to decide; they never start
//! another transition. Beside it run helpers that never decide
//! anything: a Watch stream on the group wakes the loop early ([`watch`];
//! the poll interval is the heartbeat otherwise), the fencing watchdog
//! ([`watchdog`]) stops PostgreSQL at the engine's deadline when the loop
//! is too busy to, and the HTTP listener ([`crate::http`]) answers from
//! the snapshot the loop publishes ([`Published`]).
//!
//! - [`report`]: observing PostgreSQL and reporting to the monitor.
//! - [`transition`]: running a transition's steps, and the steady state.
//! - [`beside`]: the heartbeat beside a step, and how a step is cut short.
//! - [`access`]: pg_hba.conf, replication slots, host name lookups.
//! - [`password`]: storing a rotated replication password.

mod access;
mod beside;
mod password;
mod report;
mod transition;
mod watch;
mod watchdog;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgpilot_proto::NodeState;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::KeeperConfig;
use crate::endpoints::View;
use crate::engine::{Decision, Engine, RESTART_BACKOFF, RESTART_LIMIT, RESTART_WINDOW};
use crate::metrics::Metrics;
use crate::pg::{LocalPg, Probe};
use crate::statefile::KeeperState;

/// Why [`Agent::run_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// PostgreSQL was stopped too.
    Cancelled,
    /// Cancelled with [`KeeperOnly`] set: the keeper let go of PostgreSQL,
    /// which keeps running for the next keeper to adopt (unless
    /// `postgres_dies_with_keeper`: then it was stopped).
    KeeperOnly,
    Reached(NodeState),
    Dropped,
}

/// Set before cancelling a keeper that is to exit alone (`pgpilot stop
/// --keeper-only`, i.e. SIGUSR2: to restart it, e.g. for an upgrade),
/// leaving PostgreSQL running; cleared again by a stop of both (SIGTERM,
/// SIGINT), which wins whenever it comes before the keeper is done.
#[derive(Clone, Debug, Default)]
pub struct KeeperOnly(Arc<AtomicBool>);

impl KeeperOnly {
    pub fn set(&self, alone: bool) {
        self.0.store(alone, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How often a dropped keeper tries its last report before it exits
/// anyway (one second apart); the operator can still `drop node --force`.
const FINAL_REPORT_ATTEMPTS: u32 = 10;

pub struct Agent {
    /// The CA and node credential the monitor connections use.
    auth: pgpilot_proto::client::ClientAuth,
    pub config: KeeperConfig,
    pub pg: LocalPg,
    /// Reads PostgreSQL beside a step that holds `pg`.
    probe: Probe,
    engine: Engine,
    link: report::Link,
    wake: Arc<Notify>,
    /// Read once from pg_control; cleared when PGDATA is replaced.
    system_identifier: Option<u64>,
    monitor_addrs: Vec<String>,
    resolved: access::Resolved,
    fence: watchdog::Arm,
    /// The last reason logged beside the steps (logged once, not every
    /// second of a long copy).
    beside_note: String,
    /// The snapshot the HTTP endpoints answer from.
    published: Published,
    /// What the service manager was last told (`READY=1` goes with the
    /// first one, see [`Agent::tell_service_manager`]); `None` before the
    /// first round reported.
    announced: Option<String>,
    metrics: Arc<Metrics>,
    /// Bound at start (a taken port is refused then), served while the
    /// loop runs.
    http: Option<TcpListener>,
}

/// The endpoints' snapshot of the engine ([`View::of`]), published after
/// every engine call that can change it: a watch channel, so a request
/// never waits for the loop and the loop never waits for a request.
pub(crate) struct Published(tokio::sync::watch::Sender<View>);

impl Published {
    pub(crate) fn publish(&self, engine: &Engine) {
        self.0.send_replace(View::of(engine));
    }
}

impl Agent {
    pub async fn new(config: KeeperConfig, state: KeeperState) -> anyhow::Result<Agent> {
        let auth = crate::monitor_auth::client_auth(&config)?;
        let client = pgpilot_proto::client::connect_lazy(&config.monitor, &auth)?;
        let pg = LocalPg::new(&config, &state.name)?;
        let monitor_addrs = access::monitor_addresses(&config.monitor).await;
        let http = crate::http::bind(&config.http_listen()?).await?;
        let mut engine = Engine::new(state, config.poll_interval);
        engine.password_stored(config.replication_password_generation);
        let metrics = Arc::new(Metrics::new());
        Ok(Agent {
            auth,
            config,
            probe: pg.probe(),
            pg,
            published: Published(tokio::sync::watch::Sender::new(View::of(&engine))),
            engine,
            link: report::Link::new(client, metrics.clone()),
            metrics,
            http,
            wake: Arc::new(Notify::new()),
            system_identifier: None,
            monitor_addrs,
            resolved: Default::default(),
            fence: Default::default(),
            beside_note: String::new(),
            announced: None,
        })
    }

    /// Runs until cancelled, dropped, or (with `until`) the node reached
    /// one of those states. PostgreSQL is stopped on the way out, unless
    /// cancelled with `keeper_only` set.
    pub async fn run_until(
        &mut self,
        cancel: CancellationToken,
        until: &[NodeState],
        keeper_only: &KeeperOnly,
    ) -> anyhow::Result<Stopped> {
        // First of all, before the watchdog is armed: a PostgreSQL an
        // earlier keeper left running is adopted, and the engine told, so
        // that fencing resumes at once with the adoption's deadline rather
        // than the past deadline of a writable node without a lease.
        match self.pg.adopt().await {
            Ok(Some(_)) => self.engine.pg_adopted(clock::now()),
            Ok(None) => {}
            // Not adopted (it runs where the keeper cannot reach it): the
            // loop's starts fail with the same reason and spend the
            // restart budget, so the node is reported down.
            Err(e) => tracing::error!("failed to {e:#}"),
        }
        let state = self.engine.state();
        let watch = tokio::spawn(watch::watch_group(
            self.config.monitor.clone(),
            self.auth.clone(),
            self.config.formation.clone(),
            state.group_id,
            self.wake.clone(),
            cancel.child_token(),
        ));
        // Armed before the first round: a keeper restarted in a writable
        // state fences from its first instant until it has a lease.
        self.arm();
        let watchdog = tokio::spawn(watchdog::run(
            self.fence.clone(),
            self.config.pgdata.clone(),
            cancel.child_token(),
        ));
        let http_cancel = cancel.child_token();
        let http = self.http.take().map(|listener| {
            tokio::spawn(crate::http::serve(
                listener,
                self.published.0.subscribe(),
                self.metrics.clone(),
                http_cancel.clone(),
            ))
        });
        let result = self.main_loop(&cancel, until).await;
        if cancel.is_cancelled() {
            pgpilot_pgproc::systemd::stopping(if keeper_only.get() {
                "stopping the keeper alone: PostgreSQL keeps running"
            } else {
                "stopping the keeper and PostgreSQL"
            });
        }
        watch.abort();
        watchdog.abort();
        // The endpoints go with the loop: nothing keeps their snapshot
        // current any more.
        http_cancel.cancel();
        if let Some(h) = http {
            h.abort();
        }
        if let Ok(Stopped::Reached(_) | Stopped::Dropped) = result {
            // Tell the monitor the state was reached before going away (a
            // dropped node's row goes once it reported `dropped`). A lost
            // report would leave the row `dropped` forever, so it is tried
            // again, a bounded number of times.
            let attempts = if result.as_ref().is_ok_and(|r| *r == Stopped::Dropped) {
                FINAL_REPORT_ATTEMPTS
            } else {
                1
            };
            for attempt in 1..=attempts {
                self.observe().await;
                if self.report().await.is_some() {
                    break;
                }
                if attempt < attempts {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        if matches!(result, Ok(Stopped::Cancelled)) && keeper_only.get() {
            return self.leave_postgres_running().await;
        }
        if let Err(e) = self.pg.stop().await {
            tracing::error!("failed to {e:#}");
        }
        result
    }

    /// The end of a keeper-only stop: PostgreSQL is left running, the
    /// next keeper adopts it. Fencing ends here with this process: until
    /// the next keeper runs, synchronous replication is what keeps a cut
    /// off primary from acknowledging commits (see the engine's `adopt`).
    async fn leave_postgres_running(&mut self) -> anyhow::Result<Stopped> {
        match self.pg.release().await {
            Ok(Some(pid)) => tracing::info!(
                pid,
                "keeper exiting alone: PostgreSQL keeps running; `pgpilot run --pgdata {}` adopts it",
                self.config.pgdata.display()
            ),
            Ok(None) if self.config.postgres_dies_with_keeper => tracing::warn!(
                "asked to exit alone, but postgres_dies_with_keeper is set: PostgreSQL was stopped too"
            ),
            Ok(None) => tracing::info!("keeper exiting alone; PostgreSQL was not running"),
            Err(e) => tracing::error!("failed to {e:#}"),
        }
        Ok(Stopped::KeeperOnly)
    }

    async fn main_loop(
        &mut self,
        cancel: &CancellationToken,
        until: &[NodeState],
    ) -> anyhow::Result<Stopped> {
        loop {
            if cancel.is_cancelled() {
                return Ok(Stopped::Cancelled);
            }
            // Once a round: a loop that hangs stops the keep-alives, and
            // systemd (WatchdogSec=) kills the keeper. The heartbeat beside
            // a long step pings too (`beside`): it is this same task.
            pgpilot_pgproc::systemd::watchdog_ping();
            let progressed = match self.tick(cancel).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("{e:#}");
                    false
                }
            };
            self.arm();
            let s = self.engine.state();
            if s.current == NodeState::Dropped && s.assigned == NodeState::Dropped {
                return Ok(Stopped::Dropped);
            }
            if until.contains(&s.current) && s.current == s.assigned {
                return Ok(Stopped::Reached(s.current));
            }
            if progressed {
                continue;
            }
            let wait = self.engine.next_wait(clock::now());
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Stopped::Cancelled),
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One round (see the engine's module doc for the order). Returns true
    /// when a transition completed (report again at once so the monitor
    /// can take the next step).
    async fn tick(&mut self, cancel: &CancellationToken) -> anyhow::Result<bool> {
        self.observe().await;
        self.supervise().await;
        let answer = self.report().await;
        self.tell_service_manager(answer.is_some());
        let Some((sent_at, reply)) = answer else {
            if self.engine.on_no_reply(clock::now()) {
                self.fence().await?;
            }
            return Ok(false);
        };
        let decision = self.engine.on_reply(sent_at, clock::now(), reply);
        self.arm();
        self.persist()?;
        // Before any step: a copy or a rewind must use the password the
        // role accepts now.
        self.store_password()?;
        match decision {
            Decision::Ignore(why) => {
                tracing::warn!("{why}");
                Ok(false)
            }
            Decision::Steady(goal) => {
                // A writable node waits for a lease before it starts
                // PostgreSQL; it just got one. Only in a steady state: an
                // old primary whose goal moved on must never come up
                // writable, not even briefly.
                self.supervise().await;
                let cut = self.reconcile(&goal, cancel).await?;
                // The pending password this primary just set on the role.
                self.store_password()?;
                match cut {
                    Some(cut) => self.cut_short(cut).await,
                    None => Ok(false),
                }
            }
            Decision::Transition { from, goal } => {
                match self.transition(from, &goal, cancel).await {
                    Ok(None) => {
                        self.engine.transition_ok(goal.state);
                        self.role_changed(from, goal.state).await;
                        self.arm();
                        self.persist()?;
                        Ok(true)
                    }
                    Ok(Some(cut)) => self.cut_short(cut).await,
                    Err(e) => {
                        self.engine.transition_failed(format!("{e:#}"));
                        Err(e)
                    }
                }
            }
        }
    }

    /// `READY=1` after the first round's report, whether the monitor
    /// answered or not, then `STATUS=` whenever the line changes. Not
    /// later: the keeper is doing its job once it supervises PostgreSQL
    /// and reports (a monitor outage must not fail the unit's start), and
    /// the first round's step may be a copy that takes hours, longer than
    /// any start timeout.
    fn tell_service_manager(&mut self, answered: bool) {
        let s = self.engine.state();
        let status = if answered {
            format!("node {:?} {} (goal {})", s.name, s.current, s.assigned)
        } else {
            format!(
                "node {:?} {} (goal {}); the monitor does not answer",
                s.name, s.current, s.assigned
            )
        };
        if self.announced.as_deref() == Some(status.as_str()) {
            return;
        }
        if self.announced.is_none() {
            pgpilot_pgproc::systemd::ready(&status);
        } else {
            pgpilot_pgproc::systemd::status(&status);
        }
        self.announced = Some(status);
    }

    /// Writes the state file when the engine changed it. Before the next
    /// report: the monitor must never hear of a state the disk lacks.
    fn persist(&mut self) -> anyhow::Result<()> {
        if self.engine.needs_save() {
            self.engine.state().save(&self.config.pgdata)?;
            self.engine.saved();
        }
        Ok(())
    }

    /// Hands the engine's fencing deadline to the watchdog. Called after
    /// every engine call that can move it, and before anything that may
    /// keep the loop busy.
    fn arm(&self) {
        self.fence.set(self.engine.fence_deadline());
        self.published.publish(&self.engine);
    }

    /// Takes the exits of PostgreSQL the loop did not ask for.
    fn note_deaths(&mut self) {
        for _ in 0..self.pg.take_deaths() {
            if self.engine.pg_died(clock::now()) {
                self.budget_spent("died");
            }
        }
    }

    fn budget_spent(&self, how: &str) {
        tracing::error!(
            "PostgreSQL {how} {RESTART_LIMIT} times within {} s: reporting it down; retrying every {} s",
            RESTART_WINDOW.as_secs(),
            RESTART_BACKOFF.as_secs()
        );
    }

    /// Starts PostgreSQL when the engine says so (a state that wants it
    /// running, a lease for a writable node, within the restart budget).
    async fn supervise(&mut self) {
        self.note_deaths();
        if !self.engine.should_start_pg(clock::now()) {
            return;
        }
        let current = self.engine.state().current;
        tracing::warn!("PostgreSQL is not running in state {current}: starting it");
        // Crash recovery can take a minute: the watchdog keeps the lease's
        // deadline all along, so a start cannot outlive the lease.
        self.arm();
        let result = self.pg.start().await;
        if let Err(e) = &result {
            tracing::error!("failed to {e:#}");
        }
        if self.engine.pg_start_result(clock::now(), result.is_ok()) {
            self.budget_spent("failed");
        }
        if result.is_ok() {
            // The report must carry the new PostgreSQL's position, not
            // "status unknown".
            self.observe().await;
        }
    }

    /// Starts the `on_role_change` hook if the role changed from `from`'s
    /// to `to`'s ([`crate::hooks::role_of`]). It runs in a task of its
    /// own: neither the loop nor fencing waits for it.
    async fn role_changed(&mut self, from: NodeState, to: NodeState) {
        let Some(cmd) = self.config.on_role_change.clone() else {
            return;
        };
        if crate::hooks::role_of(from) == crate::hooks::role_of(to) {
            return;
        }
        if to.wants_running() {
            // The timeline the new role runs on (a promotion's new one).
            self.observe().await;
        }
        let env = crate::hooks::HookEnv::role_change(
            self.engine.state().node_id,
            self.engine.state().name.clone(),
            self.config.formation.clone(),
            from,
            to,
            self.engine.timeline(),
        );
        let (pgdata, timeout) = (self.config.pgdata.clone(), self.config.hook_timeout);
        tracing::info!(
            "role changed from {} to {}: running the on_role_change hook",
            crate::hooks::role_of(from),
            crate::hooks::role_of(to)
        );
        // Not tracked for shutdown: a hook outliving its keeper's exit is
        // killed with the runtime (kill_on_drop), which is what a hook
        // timeout does too.
        tokio::spawn(async move {
            if let Err(e) = crate::hooks::run("on_role_change", &cmd, &env, &pgdata, timeout).await
            {
                tracing::warn!("failed to run the on_role_change hook: {e:#}");
            }
        });
    }

    /// Self-fencing (DESIGN.md §7): the lease ran out.
    async fn fence(&mut self) -> anyhow::Result<()> {
        tracing::error!(
            "fencing: lease of {} ms expired without a word from the monitor; stopping PostgreSQL \
             so that no write is acknowledged while another node may be promoted",
            self.engine.lease().as_millis(),
        );
        self.fence_now().await
    }

    /// Stops PostgreSQL at once and tells the engine (the caller logged why).
    async fn fence_now(&mut self) -> anyhow::Result<()> {
        // Immediate shutdown ends every session at once; acknowledged
        // commits are already on a synchronous standby.
        self.pg.stop_immediately().await?;
        let from = self.engine.state().current;
        self.engine.fenced();
        self.role_changed(from, NodeState::DemoteTimeout).await;
        self.metrics.fenced();
        self.arm();
        self.persist()
    }
}
