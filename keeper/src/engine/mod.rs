//! The keeper's engine: every decision of the keeper (DESIGN.md §7), as a
//! state machine without I/O and with an explicit `now`.
//!
//! Two drivers run this same code: the daemon ([`crate::agent`], with
//! [`crate::clock::now`] and a real PostgreSQL) and the simulation (with
//! simulated time and a simulated PostgreSQL). Neither keeps a private copy
//! of a decision (STYLE.md 16b): the lease, the fencing deadline, the
//! restart budget, the failover witness (upstream silence), the timing
//! contract and what goes into a report are all here. [`crate::plan`]
//! keeps the pure step planning the engine hands out.
//!
//! # Time
//!
//! [`Mono`] is a monotonic instant, as time since an arbitrary origin. The
//! daemon uses CLOCK_BOOTTIME so that a suspended machine's lease is not
//! still valid on resume; a simulation may start at zero.
//!
//! # One round, in order
//!
//! 0. Once, at start-up and before arming the watchdog: if the driver
//!    adopted a PostgreSQL an earlier keeper left running,
//!    [`Engine::pg_adopted`] (see the `adopt` module for the fencing rule).
//! 1. [`Engine::observe`] with what was just read of PostgreSQL. A status
//!    read that failed or timed out while the process runs is
//!    `running: true, status: None` ("unknown").
//! 2. If [`Engine::should_start_pg`]: start it, then
//!    [`Engine::pg_start_result`]. Whenever the driver finds that a
//!    PostgreSQL it had started exited on its own: [`Engine::pg_died`].
//!    Both return true when the restart budget just ran out (log it).
//!    After a successful start, observe again: until then the engine
//!    knows the process runs but not its status, and would report
//!    `status_unknown`.
//! 3. [`Engine::request`] builds the report; note `now` as `sent_at`
//!    *before* sending it, and give up on it after
//!    [`Engine::report_timeout`].
//! 4. [`Engine::on_reply`] with `sent_at`, or [`Engine::on_no_reply`].
//!    `on_no_reply` returns [`Engine::must_fence`]: if true, stop
//!    PostgreSQL at once (immediate shutdown), then [`Engine::fenced`].
//!    `on_reply` returns a [`Decision`]:
//!    - `Ignore`: log the reason, nothing else;
//!    - `Steady(goal)`: start PostgreSQL if [`Engine::should_start_pg`]
//!      now says so (a writable node just got its lease), apply
//!      [`Engine::role_to_apply`] then [`Engine::role_applied`];
//!    - `Transition { from, goal }`: run the steps of [`Engine::plan`],
//!      then [`Engine::transition_ok`] or [`Engine::transition_failed`].
//!      Record a rejoin with [`Engine::record_rejoin`].
//! 5. Whenever [`Engine::needs_save`]: write [`Engine::state`] durably,
//!    then [`Engine::saved`]. A state must be on disk before the next
//!    report claims it.
//! 6. Sleep [`Engine::next_wait`] (or until woken).
//!
//! After every reply, and after the steps of a steady round: store the
//! password [`Engine::password_to_store`] names, then
//! [`Engine::password_stored`] (see the `password` module; a writable
//! primary's [`Engine::steady_steps`] include the step that sets a
//! rotated password on the role, then [`Engine::role_password_set`]).
//!
//! Fencing has one definition, [`Engine::fence_deadline`]: the loop uses
//! it through [`Engine::must_fence`], and a watchdog beside a busy loop
//! (starting PostgreSQL, a slow step) is armed with the same deadline
//! after every engine call that can move it.
//!
//! # Beside the steps
//!
//! Steps can take hours (a copy of a big database, a rewind, crash
//! recovery); the report goes on meanwhile. Before running steps, call
//! [`Engine::steps_started`]; while they run, report every
//! [`Engine::beat_wait`] (observe, [`Engine::request`], then
//! [`Engine::on_reply_beside`] or [`Engine::on_no_reply`]); end with
//! [`Engine::transition_ok`], [`Engine::transition_failed`] or
//! [`Engine::steps_ended`]. A reply beside the steps never starts other
//! steps: see [`Beside`] for what it can ask instead.

mod adopt;
mod announce;
mod beside;
mod budget;
mod fencing;
mod password;
mod steady;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_adopt;
#[cfg(test)]
mod tests_beside;
#[cfg(test)]
mod tests_conflict;
#[cfg(test)]
mod tests_password;
#[cfg(test)]
mod tests_shutdown;
mod types;

use std::time::Duration;

use pgpilot_proto::{pb, NodeState};

use crate::plan::{self, Goal, Observed, PlanError, Role, Step};
use crate::statefile::{KeeperState, RejoinRecord};

pub use beside::Beside;
pub use budget::{RESTART_BACKOFF, RESTART_LIMIT, RESTART_WINDOW};
pub use types::{
    fresh_standbys, Decision, Observation, PgStatus, FRESH_REPLY_MS, STATUS_TIMEOUT,
    WAL_RECEIVER_TIMEOUT_MS,
};

/// A monotonic instant: time since an arbitrary origin.
pub type Mono = Duration;

/// The lease the keeper assumes before the monitor named one: the
/// monitor's default (DESIGN.md §8, `FsmConfig::default`).
pub const DEFAULT_LEASE: Duration = Duration::from_millis(1200);
/// How long a report may take before the first reply named a limit. It
/// must come back well within the lease, or the keeper could not fence in
/// time: the lease runs from when the report was *sent*.
pub const DEFAULT_REPORT_TIMEOUT: Duration = Duration::from_millis(400);
/// How long a catching-up standby may go without streaming from an
/// upstream the monitor reports up before it is rewound (and how often).
pub const STUCK_STANDBY: Duration = Duration::from_secs(30);
/// The shortest wait between rounds: a deadline already past (fencing
/// failed and is retried) must not turn the loop into a busy loop.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// The keeper's decisions and the memory they need. See the module doc
/// for the order of calls in one round.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The persisted part (the state file's contents).
    state: KeeperState,
    /// `state` changed since it was last saved.
    dirty: bool,
    /// The keeper config's poll interval: used until a reply names one.
    config_poll: Duration,
    lease: Duration,
    /// When the last report that got a reply was *sent*.
    lease_start: Option<Mono>,
    /// When this keeper adopted a PostgreSQL it found running (see
    /// [`Engine::pg_adopted`]): until its first reply, the fencing
    /// deadline is one round later.
    adopted_at: Option<Mono>,
    last_reply: Option<pb::NodeActiveResponse>,
    /// The monitor's timing contract, from its last reply (0 = not said).
    poll_ms: u64,
    report_timeout_ms: u64,
    /// The monitor's clock margin (0 before a monitor said it).
    margin_ms: u64,
    obs: Observation,
    /// When our WAL receiver last heard from its upstream.
    upstream_contact: Option<Mono>,
    /// With no contact known: the first time this process saw the node in
    /// recovery without a streaming receiver. The silence counts from
    /// there, a lower bound on the true silence (a keeper restarted beside
    /// a standby whose primary is already gone must still be able to
    /// witness the failure).
    silence_since: Option<Mono>,
    /// When the driver last observed PostgreSQL (with a status or not).
    last_look: Option<Mono>,
    /// When every other node was last seen streaming from this one (the
    /// fencing exemption, see [`Engine::fence_deadline`]).
    exempt_seen: Option<Mono>,
    /// Reports in a row that got no reply (see [`Engine::next_wait`]).
    failed_reports: u32,
    /// When PostgreSQL's status was last read (the exemption holds only
    /// through observations that follow each other closely).
    last_status_at: Option<Mono>,
    /// When a catching-up standby that could not stream was last rewound.
    last_stuck_rejoin: Option<Mono>,
    budget: budget::Budget,
    /// The role the settings were last verified for; `None` forces a
    /// re-check (after a start, a stop, a fence).
    applied_role: Option<Role>,
    /// Why the last transition attempt failed; sent with every report
    /// until a transition succeeds or the node is steady.
    transition_error: String,
    /// The goal of the steps under way (a transition, or a steady state's
    /// steps), while they run beside the heartbeat.
    busy: Option<Goal>,
    /// Before a standby's start after a copy or a rewind ([`announce`]).
    announce: Option<announce::Announce>,
    /// The generation of the replication password the driver holds in
    /// keeper.toml ([`Engine::password_stored`]; 0: none known).
    password_held: i64,
}

impl Engine {
    /// An engine for a keeper process that just started with `state` (its
    /// state file) and the configured poll interval.
    pub fn new(state: KeeperState, config_poll: Duration) -> Engine {
        Engine {
            state,
            dirty: false,
            config_poll,
            lease: DEFAULT_LEASE,
            lease_start: None,
            adopted_at: None,
            last_reply: None,
            poll_ms: 0,
            report_timeout_ms: 0,
            margin_ms: 0,
            failed_reports: 0,
            obs: Observation::default(),
            upstream_contact: None,
            silence_since: None,
            last_look: None,
            exempt_seen: None,
            last_status_at: None,
            last_stuck_rejoin: None,
            budget: budget::Budget::default(),
            applied_role: None,
            transition_error: String::new(),
            busy: None,
            announce: None,
            password_held: 0,
        }
    }

    pub fn state(&self) -> &KeeperState {
        &self.state
    }

    /// PostgreSQL's timeline as last observed (for hooks).
    pub fn timeline(&self) -> Option<u32> {
        self.obs.status.as_ref().map(|s| s.timeline)
    }

    /// The state changed and must be written before the next report.
    pub fn needs_save(&self) -> bool {
        self.dirty
    }

    /// The driver wrote [`Engine::state`] durably.
    pub fn saved(&mut self) {
        self.dirty = false;
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn last_reply(&self) -> Option<&pb::NodeActiveResponse> {
        self.last_reply.as_ref()
    }

    pub fn observation(&self) -> &Observation {
        &self.obs
    }

    pub fn transition_error(&self) -> &str {
        &self.transition_error
    }

    /// How often to report: the monitor's word once it gave one.
    pub fn poll_interval(&self) -> Duration {
        match self.poll_ms {
            0 => self.config_poll,
            ms => Duration::from_millis(ms),
        }
    }

    /// How long one report may take before the keeper gives up on it.
    pub fn report_timeout(&self) -> Duration {
        match self.report_timeout_ms {
            0 => DEFAULT_REPORT_TIMEOUT,
            ms => Duration::from_millis(ms),
        }
    }

    /// Step 1 of a round: what the driver just read of PostgreSQL.
    pub fn observe(&mut self, now: Mono, obs: Observation) {
        match &obs.status {
            Some(s) => {
                self.note_upstream(now, s);
                // The exemption vouches for this node only while no standby
                // can have been a failover witness (silent for the
                // monitor's replication_lost_timeout, as long as a lease).
                // So it starts only under a valid lease, and carries on past
                // the lease only through observations at most five sixths of
                // a lease apart (a round without the monitor takes a poll
                // plus a report timeout, 800 ms of a 1.2 s lease; a standby is
                // a witness only after replication_lost_timeout, which the
                // monitor keeps at least a lease): a gap (a freeze, a
                // stalled loop) or a lapse ends it
                // until the monitor answers again. Without this, a frozen
                // primary resuming as its standby was being promoted saw that
                // standby stream from it one last time and kept writing
                // (simulation, seed 11137).
                let close = self
                    .last_status_at
                    .is_some_and(|t| now.saturating_sub(t) <= self.lease * 5 / 6);
                let carries_on = self.exempt_seen.is_some() && close;
                // Counted from the oldest standby reply, not from now.
                let heard =
                    now.saturating_sub(Duration::from_millis(s.oldest_reply_ms.unwrap_or(0)));
                self.exempt_seen = (self.all_others_stream(s)
                    && (self.lease_valid(now) || carries_on))
                    .then_some(heard);
                self.last_status_at = Some(now);
            }
            // Nobody streams from a PostgreSQL that does not run.
            None if !obs.running => self.exempt_seen = None,
            // Unknown: the last exemption stands until it expires. The WAL
            // receiver may well be streaming meanwhile: silence the keeper
            // did not see is not silence, or a standby whose status reads
            // failed for a while would be a failover witness the moment
            // they work again, against a primary it streamed from all
            // along (simulation, seed 273492: two writable nodes).
            // So the silence clock stops for the time not seen (it is not
            // reset: a standby whose reads fail now and then still becomes
            // a witness of a primary that is really gone).
            None => {
                let unseen = self
                    .last_look
                    .map_or(Duration::ZERO, |t| now.saturating_sub(t));
                let shift = |t: Option<Mono>| t.map(|t| (t + unseen).min(now));
                self.upstream_contact = shift(self.upstream_contact);
                self.silence_since = shift(self.silence_since);
            }
        }
        self.obs = obs;
        self.last_look = Some(now);
    }

    /// Only a receiver that streams has heard from the primary: one that is
    /// (re)connecting, which happens every second once the primary is
    /// gone, must not reset the silence the monitor counts as the failover
    /// witness.
    fn note_upstream(&mut self, now: Mono, s: &PgStatus) {
        if !s.in_recovery {
            return;
        }
        // Silence this keeper did not look at for longer than the WAL
        // receiver lingers is not silence it saw: a contact in between
        // (which may have renewed the primary's exemption) left no trace
        // by now. The silence clock stops for that time, as for an
        // unreadable status (simulation, seed 441910: a missed contact
        // made this standby a failover witness too early).
        let linger = Duration::from_millis(WAL_RECEIVER_TIMEOUT_MS);
        let unseen = self
            .last_look
            .map_or(Duration::ZERO, |t| now.saturating_sub(t))
            .saturating_sub(linger);
        if !unseen.is_zero() && !matches!(s.wal_receiver, Some((true, Some(_)))) {
            let shift = |t: Option<Mono>| t.map(|t| (t + unseen).min(now));
            self.upstream_contact = shift(self.upstream_contact);
            self.silence_since = shift(self.silence_since);
        }
        match s.wal_receiver {
            Some((true, Some(silent_ms))) => {
                let contact = now.saturating_sub(Duration::from_millis(silent_ms));
                if self.upstream_contact.is_none_or(|c| contact > c) {
                    self.upstream_contact = Some(contact);
                }
            }
            _ if self.upstream_contact.is_none() => {
                self.silence_since.get_or_insert(now);
            }
            _ => {}
        }
    }

    /// How long the upstream has been silent, as far as this process knows.
    pub fn upstream_silent(&self, now: Mono) -> Option<Duration> {
        self.upstream_contact
            .or(self.silence_since)
            .map(|c| now.saturating_sub(c))
    }

    /// Whether to start a stopped PostgreSQL now: the state wants it
    /// running, a writable node holds a lease (the monitor may have
    /// promoted another node while this keeper was away), and the restart
    /// budget is not spent (or its backoff is over).
    ///
    /// Never while steps run ([`Engine::steps_started`]): they own
    /// PostgreSQL. A rewind or a copy stops it on purpose, and a start
    /// beside them would bring up the old data directory, still following
    /// the old primary; a quorum standby that streams from a primary the
    /// monitor already replaced gives that primary the synchronous ack of
    /// a commit the new primary never sees (simulation, seed 847934).
    pub fn should_start_pg(&self, now: Mono) -> bool {
        self.busy.is_none()
            && !self.obs.running
            && self.obs.has_pgdata
            && plan::may_start(self.state.current, self.lease_valid(now))
            && self.budget.may_start(now)
    }

    /// A start the engine asked for finished. True when the restart budget
    /// just ran out: the node is reported down from now on.
    pub fn pg_start_result(&mut self, now: Mono, ok: bool) -> bool {
        // The settings are verified again on the next steady round.
        self.applied_role = None;
        if ok {
            self.obs.running = true;
            self.obs.shutdown_lsn = None;
            false
        } else {
            self.budget.failed(now)
        }
    }

    /// A PostgreSQL that was running exited on its own. It counts against
    /// the restart budget like a failed start: one that starts and then
    /// crashes in a loop is reported down too. True when the budget just
    /// ran out.
    pub fn pg_died(&mut self, now: Mono) -> bool {
        self.obs.running = false;
        self.obs.status = None;
        self.applied_role = None;
        self.exempt_seen = None;
        self.budget.failed(now)
    }

    /// Step 3: the report for the monitor.
    pub fn request(&self, now: Mono) -> pb::NodeActiveRequest {
        let status = self.obs.status.as_ref();
        let in_standby = status.is_some_and(|s| s.in_recovery);
        let wal_receiver = status.map(|s| pb::WalReceiver {
            streaming: s.wal_receiver.is_some_and(|w| w.0),
            upstream_silent_ms: if in_standby {
                self.upstream_silent(now).map(|d| d.as_millis() as u64)
            } else {
                None
            },
        });
        pb::NodeActiveRequest {
            node_id: self.state.node_id,
            reported_state: self.state.current as i32,
            generation_seen: self.state.generation_seen,
            // Announcing a start (see [`announce`]): counted as running.
            pg_running: self.announcing()
                || plan::report_pg_running(
                    self.obs.running,
                    self.state.current,
                    self.obs.has_pgdata,
                    self.budget.spent(now),
                ),
            timeline: status.map_or(0, |s| s.timeline),
            lsn: status.map_or(0, |s| s.lsn.0),
            replication_state: status
                .map(|s| s.replication_state.clone())
                .unwrap_or_default(),
            wal_receiver,
            system_identifier: self.obs.system_identifier.unwrap_or(0),
            transition_error: self.transition_error.clone(),
            // Without a status nothing is known of the position, whether
            // PostgreSQL runs or not: a node whose PostgreSQL is being
            // restarted is reported running (see `report_pg_running`), and
            // its "LSN 0" once won an election (simulation, seed 6017).
            status_unknown: status.is_none(),
            // Only of a PostgreSQL that does not run: the start the engine
            // asked for may have come after the observation.
            shutdown_lsn: self
                .obs
                .shutdown_lsn
                .filter(|_| !self.obs.running)
                .map(|l| l.0),
            // What the monitor checks leadership conflicts with: a
            // standby's state with PostgreSQL out of recovery.
            in_recovery: status.map(|s| s.in_recovery),
            replication_password_generation: self.password_held,
            role_password_generation: status.and_then(|s| s.role_password_generation),
        }
    }

    /// Step 4: the monitor answered the report sent at `sent_at`.
    pub fn on_reply(
        &mut self,
        sent_at: Mono,
        _now: Mono,
        reply: pb::NodeActiveResponse,
    ) -> Decision {
        self.renew_lease(sent_at);
        if !plan::accept_goal(self.state.generation_seen, reply.generation) {
            return Decision::Ignore(format!(
                "ignoring goal {:?} of generation {}: already saw generation {}",
                NodeState::from_wire(reply.assigned_state).map(|s| s.name()),
                reply.generation,
                self.state.generation_seen
            ));
        }
        let goal_state = match NodeState::from_wire(reply.assigned_state) {
            Ok(s) => s,
            Err(e) => {
                return Decision::Ignore(format!("the monitor assigned an unknown state: {e}"))
            }
        };
        if reply.generation != self.state.generation_seen || goal_state != self.state.assigned {
            self.state.generation_seen = reply.generation;
            self.state.assigned = goal_state;
            self.dirty = true;
        }
        self.take_contract(&reply);
        let goal = plan::goal_from_reply(&reply, goal_state);
        self.last_reply = Some(reply);
        if goal_state == self.state.current {
            self.transition_error.clear();
            Decision::Steady(goal)
        } else {
            Decision::Transition {
                from: self.state.current,
                goal,
            }
        }
    }

    /// The lease counts from when the report was sent, so it ends no later
    /// than the monitor believes it does.
    fn renew_lease(&mut self, sent_at: Mono) {
        self.failed_reports = 0;
        if self.lease_start.is_none_or(|t| sent_at > t) {
            self.lease_start = Some(sent_at);
        }
    }

    /// The timing contract of a reply (fields it leaves at 0 keep theirs).
    fn take_contract(&mut self, reply: &pb::NodeActiveResponse) {
        self.lease = Duration::from_millis(reply.lease_ms.max(1));
        if reply.poll_interval_ms > 0 {
            self.poll_ms = reply.poll_interval_ms;
        }
        if reply.report_timeout_ms > 0 {
            self.report_timeout_ms = reply.report_timeout_ms;
        }
        if reply.clock_margin_ms > 0 {
            self.margin_ms = reply.clock_margin_ms;
        }
    }

    /// Step 4, the other way: no reply (unreachable, refused, timed out).
    /// Returns [`Engine::must_fence`].
    pub fn on_no_reply(&mut self, now: Mono) -> bool {
        self.failed_reports = self.failed_reports.saturating_add(1);
        self.must_fence(now)
    }

    /// The steps from the current state to `goal`, given this round's
    /// observation.
    pub fn plan(&self, goal: &Goal) -> Result<Vec<Step>, PlanError> {
        let seen = Observed {
            running: self.obs.running,
            in_recovery: self.obs.status.as_ref().map(|s| s.in_recovery),
        };
        plan::plan(self.state.current, goal, seen)
    }

    /// Every step of the transition to `state` succeeded.
    pub fn transition_ok(&mut self, state: NodeState) {
        self.state.current = state;
        self.dirty = true;
        self.transition_error.clear();
        self.busy = None;
        self.announce = None;
    }

    /// A step failed; the error goes with every report until a transition
    /// succeeds. The current state is unchanged: the transition re-runs.
    pub fn transition_failed(&mut self, err: String) {
        self.transition_error = err;
        self.busy = None;
        self.announce = None;
    }

    pub fn record_rejoin(&mut self, record: RejoinRecord) {
        self.state.last_rejoin = Some(record);
        self.dirty = true;
    }
}
