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
    /// The state the keeper last reported (the last goal it reached).
    pub reported: NodeState,
    /// The goal the monitor assigned.
    pub assigned: NodeState,
    /// The keeper's last report said Postgres runs. A keeper reports false
    /// only after its own restart attempts failed (its restart grace).
    pub pg_running: bool,
    pub tli: u32,
    pub lsn: Lsn,
    /// On a primary: best sync_state of pgpilot standbys, "" when none streams.
    pub replication_state: String,
    /// On a standby: how long its WAL receiver had not heard from the
    /// primary when the keeper built its last report; `None` if unknown.
    pub upstream_silent: Option<Duration>,
    pub candidate_priority: i32,
    pub replication_quorum: bool,
    pub health: Health,
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
    /// Delete the node's row: its keeper reported `dropped`.
    RemoveNode { node_id: i64, reason: String },
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
}

impl Default for FsmConfig {
    fn default() -> Self {
        FsmConfig {
            node_unhealthy_timeout: Duration::from_secs(3),
            replication_lost_timeout: Duration::from_secs(3),
            lease: Duration::from_secs(3),
            clock_margin: Duration::from_secs(1),
            replication_stall_timeout: Duration::from_secs(10),
            sync_wal_threshold: 16 * 1024 * 1024,
            promote_wal_threshold: 16 * 1024 * 1024,
        }
    }
}
