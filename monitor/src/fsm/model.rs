//! Inputs and outputs of the group state machine.

use std::time::Duration;

use pgpilot_proto::{Lsn, NodeState};

/// Wall-clock time as the monitor sees it. Every timestamp the FSM compares
/// was taken by the monitor process itself, so they share one clock.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Result of the monitor's connection probes of a node's Postgres.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not probed since the monitor started.
    Unknown,
    /// The last probe round completed a connection handshake.
    Good,
    /// The last probe round failed every attempt.
    Bad,
}

/// A health name that is not one of unknown, good, bad.
#[derive(Debug, thiserror::Error)]
#[error("unknown health {0:?}")]
pub struct UnknownHealth(pub String);

impl TryFrom<String> for Health {
    type Error = UnknownHealth;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "unknown" => Ok(Health::Unknown),
            "good" => Ok(Health::Good),
            "bad" => Ok(Health::Bad),
            _ => Err(UnknownHealth(s)),
        }
    }
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Good => "good",
            Health::Bad => "bad",
        }
    }
}

/// One node as the store holds it, after the triggering update.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// PostgreSQL's system identifier, once the keeper reported it.
    pub system_identifier: Option<u64>,
    /// The state the keeper last reported (the last goal it reached).
    pub reported: NodeState,
    /// The goal the monitor assigned.
    pub assigned: NodeState,
    /// The keeper's last report said Postgres runs. A keeper reports false
    /// only after its own restart attempts failed (its restart grace).
    pub pg_running: bool,
    pub tli: u32,
    /// The last LSN the keeper reported; see `status_unknown`.
    pub lsn: Lsn,
    /// The keeper's last report said it could not read PostgreSQL's status
    /// (a failed or timed-out query): `lsn` and `tli` are then not what
    /// the node holds now, and no rule may count them as final.
    pub status_unknown: bool,
    /// The keeper's last report said PostgreSQL is stopped after a clean
    /// shutdown, which ended at this LSN (its shutdown checkpoint): every
    /// commit the node ever acknowledged lies before it.
    pub shutdown_lsn: Option<Lsn>,
    /// The keeper's last report said PostgreSQL runs in recovery (true)
    /// or out of it (false); `None` when it did not say (no status, or an
    /// older keeper). Out of recovery in a standby's state is a
    /// leadership conflict ([`super::conflict_of`]).
    pub in_recovery: Option<bool>,
    /// This monitor process has had a report from the keeper. After a
    /// restart the stored fields are what an earlier process heard, and
    /// `last_report` only says "not before our start".
    pub heard: bool,
    /// On a primary: best sync_state of pgpilot standbys, "" when none streams.
    pub replication_state: String,
    /// On a standby: how long its WAL receiver had not heard from the
    /// primary when the keeper built its last report; `None` if unknown.
    pub upstream_silent: Option<Duration>,
    pub candidate_priority: i32,
    pub replication_quorum: bool,
    /// When the operator took replication quorum away from this node, until
    /// a primary confirmed synchronous_standby_names without it: until
    /// then it may hold acknowledged commits no other standby has, and the
    /// failover rules still count it as a quorum standby
    /// ([`super::quorum_counts`]).
    pub quorum_dropped_at: Option<Timestamp>,
    /// The operator asked for maintenance while this node was the
    /// primary: once a switchover moved the primary away and it stopped
    /// (`demoted`), it goes into maintenance instead of rejoining.
    pub maintenance_requested: bool,
    /// When the operator's `perform failover` replaced this writer. No
    /// standby had to lose its stream first, so its keeper may have kept
    /// writing under the fencing exemption ("every other node streams from
    /// me") until the election stopped the standbys' streams: its lease is
    /// counted from then as well ([`super::is_fenced`]; simulation, seed
    /// 592520: two writable nodes after a forced failover during a
    /// partition of the primary from the monitor only).
    pub failed_over_at: Option<Timestamp>,
    pub health: Health,
    /// When the prober last changed `health`.
    pub last_probe: Option<Timestamp>,
    /// Why the keeper last said it cannot reach its goal ("" when it can).
    pub transition_error: String,
    /// The operator dropped this node with `--force`: its keeper is gone
    /// for good, so its row goes once it can no longer accept writes
    /// (instead of once its keeper reports `dropped`).
    pub drop_forced: bool,
    /// The state the node had reported when the operator dropped it.
    pub dropped_from: Option<NodeState>,
    /// When the monitor received the keeper's last NodeActive.
    pub last_report: Option<Timestamp>,
    /// When `assigned` last changed (drives drain and stall clocks).
    pub goal_changed_at: Timestamp,
    /// On a primary: since when its reports say no standby streams from it
    /// (None while one does). Drives the stall rule.
    pub replication_stall_since: Option<Timestamp>,
}

/// One group of one formation, every node that has a row.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupView {
    pub formation: String,
    pub group_id: i32,
    /// Formation setting; k of `ANY k (...)` is max(1, this).
    pub number_sync_standbys: i32,
    /// Bumped with every promotion decision (fencing token).
    pub generation: i64,
    /// The system identifier every node of the group must share; set by
    /// the first node that reports one, cleared when the group is empty.
    pub system_identifier: Option<u64>,
    /// The database the formation serves (fixed by its first node).
    pub dbname: String,
    /// What the group waits for, as last recorded (see `fsm::waits`).
    pub waiting_for: Option<String>,
    /// A planned switchover under way: the candidate's node id, from the
    /// operator's request until the candidate is told to promote or the
    /// switchover is given up (see `fsm::promotion`).
    pub switchover_to: Option<i64>,
    pub nodes: Vec<NodeView>,
}

impl GroupView {
    pub fn node(&self, id: i64) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// What the store must do, in order, in the deciding transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Increase the group generation by one. Always comes before the
    /// assignments of the promotion it fences.
    BumpGeneration { reason: String },
    /// Set a node's goal; `reason` becomes the event's description.
    AssignGoal {
        node_id: i64,
        goal: NodeState,
        reason: String,
    },
    /// Delete the node's row: its keeper reported `dropped`, or it was
    /// dropped with `--force` and can no longer accept writes.
    RemoveNode { node_id: i64, reason: String },
    /// The group has no node left: forget its system identifier, so that
    /// a new first node (a new cluster) can register.
    ForgetSystemIdentifier,
    /// Write the node's row from the view (a significant report field,
    /// its health or a drop flag changed).
    SaveNode { node_id: i64 },
    /// Insert the node (registration) from the view.
    AddNode { node_id: i64 },
    /// Write the node's goal time from the view (see
    /// `Core::rebase_clock`).
    RebaseGoalTime { node_id: i64 },
    /// Write the group's system identifier from the view.
    SaveGroupSystemIdentifier,
    /// Write the formation's dbname from the view (first node).
    SaveDbname,
    /// The group cannot move on by itself: record why, once, as an
    /// event on the node it waits for.
    Wait { node_id: i64, reason: String },
    /// The recorded wait is over.
    WaitOver,
    /// A primary confirmed synchronous_standby_names without this node,
    /// whose replication quorum the operator took away: forget when that
    /// was (`NodeView::quorum_dropped_at`).
    QuorumDropConfirmed { node_id: i64 },
    /// Record the planned switchover under way (`GroupView::switchover_to`),
    /// or that none is.
    SetSwitchover { candidate: Option<i64> },
    /// Set or clear a node's `maintenance_requested`.
    MaintenanceRequest { node_id: i64, on: bool },
    /// Write the formation settings (number_sync_standbys) from the view.
    SaveFormationSettings,
    /// An event about a node with no goal change (a report, a health
    /// change, a keeper's error, an operator's request).
    Note { node_id: i64, description: String },
    /// A leadership conflict began (see [`super::conflict_of`]): an
    /// ERROR event on `node_id` that names `other` too, counted in
    /// `pgpilot_leadership_conflicts_total`. Emitted once per conflict,
    /// when it starts, not with every report while it lasts.
    Conflict {
        node_id: i64,
        other: Option<i64>,
        description: String,
    },
}

/// Timings and thresholds of the state machine (DESIGN.md section 8).
#[derive(Clone, Debug, PartialEq)]
pub struct FsmConfig {
    /// A keeper silent this long, with failing probes, makes its node unhealthy.
    pub node_unhealthy_timeout: Duration,
    /// A standby whose WAL receiver has not heard from the primary this long
    /// is the second witness of a primary failure.
    pub replication_lost_timeout: Duration,
    /// How long a writable node may go on without a successful NodeActive.
    pub lease: Duration,
    /// Added to the lease on the monitor's side for clock-rate differences.
    pub clock_margin: Duration,
    /// A live primary with no standby streaming for this long goes to
    /// wait_primary so writes do not hang forever.
    pub replication_stall_timeout: Duration,
    /// catchingup -> secondary only within this many bytes of the primary.
    pub sync_wal_threshold: u64,
    /// A secondary further behind than this is never promoted.
    pub promote_wal_threshold: u64,
    /// How often keepers report (handed to them with every reply).
    pub poll_interval: Duration,
    /// How long a keeper waits for one report's reply; shorter than the
    /// lease less the poll interval, so a renewal always lands in time.
    pub report_timeout: Duration,
    /// An election's winner that has not promoted this long after it was
    /// chosen (its promotion keeps failing) gives way to another standby
    /// that holds everything it reported; a winner that died gives way as
    /// soon as it is unhealthy.
    pub promotion_timeout: Duration,
}

/// How long a keeper waits for a reply: at most 800 ms, and at most half
/// of what the lease leaves after one poll interval, so that a keeper whose
/// first attempt timed out still renews its lease in time. One definition
/// for the monitor's config and the state machine's defaults.
pub fn report_timeout_for(lease: Duration, poll_interval: Duration) -> Duration {
    (lease.saturating_sub(poll_interval) / 2).min(Duration::from_millis(800))
}

/// The defaults (DESIGN.md §8), chosen together for "a killed or frozen
/// primary is replaced in about 2 s, a busy machine causes no failover".
/// A failover waits for the later of two things: the old primary's lease
/// gate (lease + clock_margin after its last report reached the monitor)
/// and the standby's witness (its WAL receiver silent for
/// replication_lost_timeout, seen in its next report, a poll later at
/// most). Both come about 1.3-1.5 s after a kill or a freeze; the election
/// and the promotion add 0.2-0.4 s. `Timings::validate` checks every
/// combination an operator can write against the same rules.
impl FsmConfig {
    /// The timings the rule tables are written against, in whole seconds
    /// (the first defaults: 3 s lease and silences, 1 s clock margin and
    /// poll): the tables test the rules, not today's defaults, which
    /// `Timings::validate` and the simulation check. The simulation's
    /// mutation tests use them too, where a failover must come well
    /// within a lease.
    pub fn whole_seconds() -> FsmConfig {
        FsmConfig {
            node_unhealthy_timeout: Duration::from_secs(3),
            replication_lost_timeout: Duration::from_secs(3),
            lease: Duration::from_secs(3),
            clock_margin: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            report_timeout: Duration::from_millis(800),
            ..FsmConfig::default()
        }
    }
}

impl Default for FsmConfig {
    fn default() -> Self {
        let lease = Duration::from_millis(1200);
        // Keepers report every 400 ms, and a report that got no reply is
        // retried at once (the keeper's `Engine::next_wait`): the lease
        // then survives one lost report (a poll plus a report timeout is
        // two thirds of it, the retry has the last third), and a dead
        // primary's last report is 200 ms old on average when it dies.
        let poll_interval = Duration::from_millis(400);
        FsmConfig {
            // Two and a half polls: one late report under load is not
            // silence. Silence alone never fails a node over (the probes
            // must fail too, and a standby must have lost its stream).
            node_unhealthy_timeout: Duration::from_millis(1000),
            // At least the lease (the fencing exemption's argument), and
            // twice the 600 ms after which a standby's WAL receiver pings
            // an idle primary (wal_receiver_timeout, 1.2 s, halved): an
            // idle but healthy primary never looks silent this long.
            replication_lost_timeout: lease,
            // What a failover waits for at least: a writable node without a
            // successful report for this long stops PostgreSQL. Below this,
            // a loaded machine (a report lost, a slow scheduling) would
            // make healthy primaries fence themselves too often.
            lease,
            // The lease gate waits this much longer than the lease: it
            // covers the keepers' clocks running as slow as 0.8 of the
            // monitor's over a lease (real clocks differ by parts per
            // million; the margin is mostly for the watchdog's 50 ms look
            // and a stop of PostgreSQL under load).
            clock_margin: Duration::from_millis(300),
            // A live primary with no standby streaming for this long turns
            // synchronous replication off so writes do not hang: far longer
            // than a failover, so a dead primary is replaced before its
            // standby's silence could be taken for a dead standby.
            replication_stall_timeout: Duration::from_secs(10),
            sync_wal_threshold: 16 * 1024 * 1024,
            promote_wal_threshold: 16 * 1024 * 1024,
            poll_interval,
            report_timeout: report_timeout_for(lease, poll_interval),
            promotion_timeout: Duration::from_secs(30),
        }
    }
}
