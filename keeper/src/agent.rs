//! The keeper's loop (DESIGN.md §7): observe PostgreSQL, report to the
//! monitor, run the transition to the goal it assigns, keep PostgreSQL,
//! pg_hba.conf and slots in line, and fence when the lease runs out.
//!
//! One task does everything in order, so two transitions never overlap.
//! A Watch stream on the group wakes it early; the poll interval is the
//! heartbeat otherwise.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pgpilot_pgproc::controldata;
use pgpilot_proto::pb::{self, monitor_client::MonitorClient};
use pgpilot_proto::{node_slot_name, Lsn, NodeState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::config::KeeperConfig;
use crate::pg::{hba, sql, LocalPg};
use crate::plan::{self, Goal, Observed, Role, Step};
use crate::statefile::{KeeperState, RejoinRecord};

/// A report must come back well within the lease, or the keeper could not
/// fence in time: the lease runs from when the report was *sent*.
const REPORT_TIMEOUT: Duration = Duration::from_millis(800);
/// PostgreSQL that dies is restarted this many times within
/// [`RESTART_WINDOW`] before the keeper reports it down (which lets the
/// monitor fail over) and retries only every [`RESTART_BACKOFF`].
const RESTART_LIMIT: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
const RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// The lease the keeper assumes before the monitor named one.
const DEFAULT_LEASE: Duration = Duration::from_secs(3);
/// How long turning synchronous replication on waits for a standby to
/// confirm everything; then the transition fails and is retried on the
/// next round. Shorter than the monitor's node_unhealthy_timeout (3 s), so
/// the wait never makes this node's heartbeat look dead.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long promotion waits for the WAL receiver to stop and replay to end.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the fencing watchdog looks at the lease.
const WATCHDOG_POLL: Duration = Duration::from_millis(50);

/// What the fencing watchdog needs: when the lease of a writable node ends
/// and which postmaster to stop then.
#[derive(Clone, Copy, Debug, Default)]
struct Fence {
    deadline: Option<Instant>,
    postmaster: Option<u32>,
}

/// Why [`Agent::run_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    Cancelled,
    Reached(NodeState),
    Dropped,
}

pub struct Agent {
    pub config: KeeperConfig,
    pub state: KeeperState,
    pub pg: LocalPg,
    client: MonitorClient<Channel>,
    wake: Arc<Notify>,
    lease: Duration,
    /// When the last successful report was sent.
    lease_start: Option<Instant>,
    last_reply: Option<pb::NodeActiveResponse>,
    /// When our WAL receiver last heard from its upstream.
    upstream_contact: Option<Instant>,
    restarts: VecDeque<Instant>,
    next_restart: Option<Instant>,
    system_identifier: Option<u64>,
    applied_role: Option<Role>,
    monitor_addrs: Vec<String>,
    report_failures: u32,
    /// Why the last transition attempt failed; sent with every report
    /// until a transition succeeds.
    transition_error: String,
    /// When each other node's host name was last resolved, and to what.
    resolved: std::collections::HashMap<String, (Instant, Vec<std::net::IpAddr>)>,
    fence: Arc<std::sync::Mutex<Fence>>,
    /// As last observed: every other node streams from this one, so the
    /// lease does not fence it (see [`plan::must_fence`]).
    exempt_from_fencing: bool,
}

impl Agent {
    pub async fn new(config: KeeperConfig, state: KeeperState) -> anyhow::Result<Agent> {
        let client = pgpilot_proto::client::connect_lazy(&config.monitor)?;
        let pg = LocalPg::new(&config, &state.name)?;
        let monitor_addrs = monitor_addresses(&config.monitor).await;
        Ok(Agent {
            config,
            state,
            pg,
            client,
            wake: Arc::new(Notify::new()),
            lease: DEFAULT_LEASE,
            lease_start: None,
            last_reply: None,
            upstream_contact: None,
            restarts: VecDeque::new(),
            next_restart: None,
            system_identifier: None,
            applied_role: None,
            monitor_addrs,
            report_failures: 0,
            transition_error: String::new(),
            resolved: Default::default(),
            fence: Default::default(),
            exempt_from_fencing: false,
        })
    }

    /// Runs until cancelled, dropped, or (with `until`) the node reached
    /// one of those states. PostgreSQL is stopped on the way out.
    pub async fn run_until(
        &mut self,
        cancel: CancellationToken,
        until: &[NodeState],
    ) -> anyhow::Result<Stopped> {
        let watch = tokio::spawn(watch_group(
            self.config.monitor.clone(),
            self.config.formation.clone(),
            self.state.group_id,
            self.wake.clone(),
            cancel.child_token(),
        ));
        let watchdog = tokio::spawn(fence_watchdog(self.fence.clone(), cancel.child_token()));
        let result = self.main_loop(&cancel, until).await;
        watch.abort();
        watchdog.abort();
        if let Ok(Stopped::Reached(_) | Stopped::Dropped) = result {
            // Tell the monitor the state was reached before going away (a
            // dropped node's row goes once it reported `dropped`).
            let status = self.observe().await;
            self.report(status.as_ref()).await;
        }
        if let Err(e) = self.pg.stop().await {
            tracing::error!("{e:#}");
        }
        result
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
            let progressed = match self.tick().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("{e:#}");
                    false
                }
            };
            self.arm_watchdog();
            if self.state.current == NodeState::Dropped && self.state.assigned == NodeState::Dropped
            {
                return Ok(Stopped::Dropped);
            }
            if until.contains(&self.state.current) && self.state.current == self.state.assigned {
                return Ok(Stopped::Reached(self.state.current));
            }
            if progressed {
                continue;
            }
            let wait = self.next_wait();
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Stopped::Cancelled),
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Until the next tick: the poll interval, or sooner when the lease
    /// runs out, so fencing is never late by a whole interval.
    fn next_wait(&self) -> Duration {
        let left = self
            .lease_start
            .map(|t| (t + self.lease).saturating_duration_since(Instant::now()));
        plan::next_wait(self.config.poll_interval, self.state.current, left)
    }

    /// One round. Returns true when a transition completed (report again
    /// at once so the monitor can take the next step).
    async fn tick(&mut self) -> anyhow::Result<bool> {
        self.supervise().await;
        let status = self.observe().await;
        let streaming = status
            .as_ref()
            .map(|s| s.streaming_standbys.clone())
            .unwrap_or_default();
        self.exempt_from_fencing = self.all_standbys_streaming(&streaming);
        let Some(reply) = self.report(status.as_ref()).await else {
            self.maybe_fence(&streaming).await?;
            return Ok(false);
        };
        if !plan::accept_goal(self.state.generation_seen, reply.generation) {
            tracing::warn!(
                "ignoring goal {:?} of generation {}: already saw generation {}",
                NodeState::from_wire(reply.assigned_state).map(|s| s.name()),
                reply.generation,
                self.state.generation_seen
            );
            return Ok(false);
        }
        let goal_state = NodeState::from_wire(reply.assigned_state)
            .map_err(|e| anyhow::anyhow!("the monitor assigned an unknown state: {e}"))?;
        if reply.generation != self.state.generation_seen || goal_state != self.state.assigned {
            self.state.generation_seen = reply.generation;
            self.state.assigned = goal_state;
            self.state.save(&self.config.pgdata)?;
        }
        self.lease = Duration::from_millis(reply.lease_ms.max(1));
        let goal = plan::goal_from_reply(&reply, goal_state);
        self.last_reply = Some(reply);
        // A writable node waits for a lease before it starts PostgreSQL;
        // it just got one. Only when the goal stays: an old primary whose
        // goal moved on must never come up writable, not even briefly.
        if goal_state == self.state.current {
            self.supervise().await;
        }
        if goal_state != self.state.current {
            return match self.transition(&goal).await {
                Ok(()) => {
                    self.transition_error.clear();
                    Ok(true)
                }
                Err(e) => {
                    self.transition_error = format!("{e:#}");
                    Err(e)
                }
            };
        }
        self.transition_error.clear();
        self.reconcile(&goal).await?;
        Ok(false)
    }

    /// Keeps PostgreSQL running in states that want it, within a restart
    /// budget. A writable node without a valid lease is not restarted: it
    /// fences instead (see [`Agent::maybe_fence`]).
    async fn supervise(&mut self) {
        let current = self.state.current;
        if !plan::may_start(current, self.lease_valid())
            || !self.pg.has_pgdata()
            || self.pg.is_running()
        {
            return;
        }
        let now = Instant::now();
        if self.next_restart.is_some_and(|t| now < t) {
            return;
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| now - *t > RESTART_WINDOW)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        tracing::warn!("PostgreSQL is not running in state {current}: starting it");
        match self.pg.start().await {
            Ok(()) => {
                self.next_restart = None;
                // The settings are re-verified on the next reconcile.
                self.applied_role = None;
            }
            Err(e) => {
                tracing::error!("{e:#}");
                if self.restarts.len() >= RESTART_LIMIT {
                    tracing::error!(
                        "PostgreSQL failed to start {} times within {} s: reporting it down; retrying every {} s",
                        self.restarts.len(),
                        RESTART_WINDOW.as_secs(),
                        RESTART_BACKOFF.as_secs()
                    );
                    self.next_restart = Some(now + RESTART_BACKOFF);
                }
            }
        }
    }

    /// Tells the watchdog when this node's lease ends, if it holds a
    /// state that accepts writes (and may be replaced: not `single`).
    fn arm_watchdog(&self) {
        let current = self.state.current;
        let deadline =
            (current.accepts_writes() && current != NodeState::Single && !self.exempt_from_fencing)
                .then(|| self.lease_start.map(|t| t + self.lease))
                .flatten();
        let mut f = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        *f = Fence {
            deadline,
            postmaster: self.pg.pid(),
        };
    }

    fn lease_valid(&self) -> bool {
        self.lease_start.is_some_and(|t| t.elapsed() <= self.lease)
    }

    async fn observe(&mut self) -> Option<sql::Status> {
        if self.system_identifier.is_none() && self.pg.has_pgdata() {
            match controldata(&self.pg.bin, &self.pg.runner, &self.pg.pgdata).await {
                Ok(c) => self.system_identifier = Some(c.system_identifier),
                Err(e) => tracing::warn!("pg_controldata: {e:#}"),
            }
        }
        if !self.pg.is_running() {
            return None;
        }
        match self.read_status().await {
            Ok(s) => {
                // Only a receiver that streams has heard from the primary:
                // one that is (re)connecting, which happens every second
                // once the primary is gone, must not reset the silence the
                // monitor counts as the failover witness.
                if let Some((true, Some(silent_ms))) = s.wal_receiver {
                    let contact = Instant::now().checked_sub(Duration::from_millis(silent_ms));
                    if let Some(contact) = contact {
                        if self.upstream_contact.is_none_or(|c| contact > c) {
                            self.upstream_contact = Some(contact);
                        }
                    }
                }
                Some(s)
            }
            Err(e) => {
                tracing::warn!("cannot read PostgreSQL's status: {e:#}");
                None
            }
        }
    }

    async fn read_status(&self) -> anyhow::Result<sql::Status> {
        let mut c = self.pg.connect().await?;
        sql::status(&mut c).await
    }

    async fn in_recovery(&self) -> Option<bool> {
        let mut c = self.pg.connect().await.ok()?;
        sql::in_recovery(&mut c).await.ok()
    }

    /// NodeActive. `None` when the monitor could not be reached or refused.
    async fn report(&mut self, status: Option<&sql::Status>) -> Option<pb::NodeActiveResponse> {
        let running = status.is_some();
        let in_standby = status.is_some_and(|s| s.in_recovery);
        let wal_receiver = status.map(|s| pb::WalReceiver {
            streaming: s.wal_receiver.is_some_and(|w| w.0),
            upstream_silent_ms: if in_standby {
                self.upstream_contact
                    .map(|c| c.elapsed().as_millis() as u64)
            } else {
                None
            },
        });
        let req = pb::NodeActiveRequest {
            node_id: self.state.node_id,
            reported_state: self.state.current as i32,
            generation_seen: self.state.generation_seen,
            pg_running: plan::report_pg_running(
                running,
                self.state.current,
                self.pg.has_pgdata(),
                self.next_restart.is_some(),
            ),
            timeline: status.map_or(0, |s| s.timeline),
            lsn: status.map_or(0, |s| s.lsn.0),
            replication_state: status
                .map(|s| s.replication_state.clone())
                .unwrap_or_default(),
            wal_receiver,
            system_identifier: self.system_identifier.unwrap_or(0),
            transition_error: self.transition_error.clone(),
        };
        let sent = Instant::now();
        let mut request = tonic::Request::new(req);
        request.set_timeout(REPORT_TIMEOUT);
        let result = tokio::time::timeout(REPORT_TIMEOUT, self.client.node_active(request)).await;
        match result {
            Ok(Ok(reply)) => {
                if self.report_failures > 0 {
                    tracing::info!("the monitor answers again");
                }
                self.report_failures = 0;
                self.lease_start = Some(sent);
                self.arm_watchdog();
                Some(reply.into_inner())
            }
            Ok(Err(status)) => {
                self.report_failed(format!(
                    "the monitor refused the report: {}",
                    status.message()
                ));
                None
            }
            Err(_) => {
                self.report_failed(format!(
                    "the monitor did not answer within {} ms",
                    REPORT_TIMEOUT.as_millis()
                ));
                None
            }
        }
    }

    fn report_failed(&mut self, why: String) {
        self.report_failures += 1;
        // Once, then every 30th attempt: a long outage must not flood the log.
        if self.report_failures == 1 || self.report_failures % 30 == 0 {
            tracing::warn!("{why} ({} failed report(s) in a row)", self.report_failures);
        }
    }

    /// Self-fencing (DESIGN.md §7): see [`plan::must_fence`].
    /// Every other node of the group streams from this one (see
    /// [`plan::must_fence`]).
    fn all_standbys_streaming(&self, streaming: &[String]) -> bool {
        let others: Vec<i64> = self
            .last_reply
            .iter()
            .flat_map(|r| r.other_nodes.iter().map(|n| n.node_id))
            .collect();
        !others.is_empty()
            && others
                .iter()
                .all(|id| streaming.contains(&node_slot_name(*id)))
    }

    async fn maybe_fence(&mut self, streaming: &[String]) -> anyhow::Result<()> {
        let all_streaming = self.all_standbys_streaming(streaming);
        let since = self.lease_start.map(|t| t.elapsed());
        if !plan::must_fence(self.state.current, since, self.lease, all_streaming) {
            return Ok(());
        }
        tracing::error!(
            "fencing: lease of {} ms expired without a word from the monitor{}; stopping PostgreSQL \
             so that no write is acknowledged while another node may be promoted",
            self.lease.as_millis(),
            since.map_or(" since the keeper started".to_string(), |s| format!(
                " (last report sent {} ms ago)",
                s.as_millis()
            ))
        );
        // Immediate shutdown ends every session at once; acknowledged
        // commits are already on a synchronous standby.
        self.pg.stop_immediately().await?;
        self.state.current = NodeState::DemoteTimeout;
        self.state.save(&self.config.pgdata)?;
        self.applied_role = None;
        Ok(())
    }

    async fn transition(&mut self, goal: &Goal) -> anyhow::Result<()> {
        let from = self.state.current;
        let running = self.pg.is_running();
        let in_recovery = if running {
            self.in_recovery().await
        } else {
            None
        };
        let seen = Observed {
            running,
            in_recovery,
        };
        let steps = plan::plan(from, goal, seen)?;
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
        self.state.current = goal.state;
        self.state.save(&self.config.pgdata)?;
        tracing::info!(
            "reached {} in {} ms",
            goal.state,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    async fn run_step(&mut self, step: &Step, goal: &Goal) -> anyhow::Result<()> {
        let node_id = self.state.node_id;
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
                self.state.last_rejoin = Some(RejoinRecord {
                    method: r.method.to_string(),
                    generation: self.state.generation_seen,
                    detail: r.detail,
                });
                self.state.save(&self.config.pgdata)?;
            }
            Step::Configure(role) => {
                let role = role.clone();
                self.pg.configure(&role, node_id, &password).await?;
                self.applied_role = Some(role);
            }
            Step::Start => {
                self.reconcile_hba().await?;
                self.pg.start().await?;
            }
            Step::Stop => {
                self.pg.stop().await?;
                self.applied_role = None;
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
    async fn reconcile(&mut self, goal: &Goal) -> anyhow::Result<()> {
        if let Some(role) = plan::steady_role(self.state.current, goal) {
            if self.pg.is_running() && self.applied_role.as_ref() != Some(&role) {
                self.pg
                    .configure(&role, self.state.node_id, &self.config.replication_password)
                    .await?;
                self.applied_role = Some(role);
            }
        }
        self.reconcile_access().await
    }

    async fn reconcile_access(&mut self) -> anyhow::Result<()> {
        if !self.pg.has_pgdata() {
            return Ok(());
        }
        self.reconcile_hba().await?;
        if self.pg.is_running() {
            self.reconcile_slots().await?;
        }
        Ok(())
    }

    async fn reconcile_hba(&mut self) -> anyhow::Result<()> {
        let hosts: Vec<String> = match &self.last_reply {
            Some(r) => r.other_nodes.iter().map(|n| n.host.clone()).collect(),
            None => Vec::new(),
        };
        let mut others = Vec::new();
        for host in hosts {
            // Looked up once a minute, bounded, and remembered: this runs
            // every round, and a DNS hiccup must neither stall the loop nor
            // flip pg_hba.conf between addresses and the bare host name.
            let known = self.resolved.get(&host).cloned();
            let ips = match known {
                Some((at, ips)) if at.elapsed() < RESOLVE_EVERY => ips,
                _ => {
                    let fresh = resolve_ips(&host).await;
                    if fresh.is_empty() {
                        known.map(|(_, ips)| ips).unwrap_or_default()
                    } else {
                        self.resolved
                            .insert(host.clone(), (Instant::now(), fresh.clone()));
                        fresh
                    }
                }
            };
            others.extend(hba::hba_address(&host, &ips));
        }
        let lines = hba::managed_lines(&others, &self.monitor_addrs, self.config.auth);
        self.pg.write_hba(&lines).await
    }

    /// A slot for every other node, on the primary and on standbys alike,
    /// so that whoever is promoted already keeps the WAL the others need.
    /// On a standby the slots do not advance by themselves: they are moved
    /// to what each node reported.
    async fn reconcile_slots(&mut self) -> anyhow::Result<()> {
        let Some(reply) = &self.last_reply else {
            return Ok(());
        };
        let wanted: Vec<(String, Lsn)> = reply
            .other_nodes
            .iter()
            .filter(|n| NodeState::from_wire(n.assigned_state) != Ok(NodeState::Dropped))
            .map(|n| (node_slot_name(n.node_id), Lsn(n.lsn)))
            .collect();
        let mut c = self.pg.connect().await?;
        let in_recovery = sql::in_recovery(&mut c).await?;
        let existing = sql::pgpilot_slots(&mut c).await?;
        for (name, lsn) in &wanted {
            if !existing.iter().any(|(n, _)| n == name) {
                sql::create_slot(&mut c, name).await?;
                tracing::info!("created replication slot {name}");
            } else if in_recovery && lsn.0 > 0 {
                sql::advance_slot(&mut c, name, *lsn).await?;
            }
        }
        for (name, active) in existing {
            if !active && !wanted.iter().any(|(n, _)| *n == name) {
                sql::drop_slot(&mut c, &name).await?;
                tracing::info!("dropped replication slot {name}: no such node any more");
            }
        }
        Ok(())
    }
}

/// Fencing that does not wait for the keeper's loop: that loop may be busy
/// (starting PostgreSQL, a slow query) when the lease runs out, and the
/// monitor promotes another node once it did. At the deadline the
/// postmaster gets SIGQUIT (immediate shutdown, every session ends); the
/// loop then finds PostgreSQL down and, without a lease, does not restart
/// it but reports `demote_timeout` as usual.
async fn fence_watchdog(fence: Arc<std::sync::Mutex<Fence>>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(WATCHDOG_POLL) => {}
        }
        let mut f = fence.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(deadline), Some(pid)) = (f.deadline, f.postmaster) else {
            continue;
        };
        if Instant::now() <= deadline {
            continue;
        }
        tracing::error!(
            "fencing: the lease ran out while the keeper was busy; stopping PostgreSQL (pid {pid}) now"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        *f = Fence::default();
    }
}

/// How long one host name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the other nodes' host names are looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// The addresses of a host name; empty when it does not resolve in time.
async fn resolve_ips(host: &str) -> Vec<std::net::IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    }
}

/// pg_hba.conf addresses for a host name.
async fn resolve(host: &str) -> Vec<String> {
    hba::hba_address(host, &resolve_ips(host).await)
}

async fn monitor_addresses(uri: &str) -> Vec<String> {
    let host = uri
        .split("://")
        .nth(1)
        .unwrap_or(uri)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, _)) => h,
        None => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Vec::new();
    }
    resolve(host).await
}

/// Wakes the agent whenever an event of its group is committed; reconnects
/// after errors. Polling still runs, so a lost stream only costs latency.
async fn watch_group(
    uri: String,
    formation: String,
    group_id: i32,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        let stream = async {
            let mut client = pgpilot_proto::client::connect(&uri).await?;
            let mut stream = client
                .watch(pb::WatchRequest {
                    formation: formation.clone(),
                    group_id: Some(group_id),
                })
                .await?
                .into_inner();
            while let Some(_event) = stream.message().await? {
                wake.notify_one();
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = stream => if let Err(e) = r {
                tracing::debug!("watch stream ended: {e:#}");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
