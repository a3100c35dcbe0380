//! What goes into the engine (an observation of PostgreSQL) and what comes
//! out of a reply (a decision), as plain data a simulation can build.

use std::time::Duration;

use pgpilot_proto::{Lsn, NodeState};

use crate::plan::Goal;

/// What the keeper reports about a running PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgStatus {
    pub in_recovery: bool,
    pub timeline: u32,
    /// Flush LSN on a primary; received (or, before anything was received
    /// since start, replayed) LSN on a standby.
    pub lsn: Lsn,
    /// Best sync_state among pgpilot standbys streaming from us, or "".
    pub replication_state: String,
    /// pgpilot standbys streaming from us that replied within the last
    /// [`FRESH_REPLY_MS`] (application_name; see [`fresh_standbys`]).
    pub streaming_standbys: Vec<String>,
    /// How long ago the least recent of those last replied.
    pub oldest_reply_ms: Option<u64>,
    /// Our WAL receiver, if one runs: streaming now, and milliseconds since
    /// it last heard from the upstream (`None` before its first message: a
    /// receiver still connecting has heard nothing).
    pub wal_receiver: Option<(bool, Option<u64>)>,
    /// On a standby: the position it replayed, what its readers see
    /// (`None` on a primary, or before anything was replayed).
    pub replay_lsn: Option<Lsn>,
    /// On a standby: the upstream's end of WAL as its WAL receiver last
    /// heard it (pg_stat_wal_receiver.latest_end_lsn, sent with every
    /// message and keepalive): how far the primary was, which this node's
    /// lag is measured against. `None` without a receiver.
    pub upstream_wal_end: Option<Lsn>,
    /// The generation of the replication role's password as this node's
    /// PostgreSQL has the role (its comment, see
    /// `pg::sql::set_replication_password`); `None` when it has none.
    pub role_password_generation: Option<i64>,
}

/// A standby whose last reply is older than this does not count as
/// streaming: a walsender stays 'streaming' until wal_sender_timeout after
/// its standby went silent, while a live standby replies at least every
/// half of it (the walsender asks for a reply then). The exemption counts
/// from the oldest fresh reply, so this bounds only what counts, not how
/// long the exemption lasts.
pub const FRESH_REPLY_MS: u64 = pgpilot_proto::replication_timeouts::WAL_SENDER_TIMEOUT_MS;

/// How long reading PostgreSQL's status may take (connect included). A
/// round without the monitor is the wait, this read and a report that
/// times out; with the defaults (400 ms poll, 400 ms report timeout, 1.2 s
/// lease) that is at most the five sixths of a lease over which the
/// fencing exemption carries on (see `Engine::observe`). The read takes a
/// few milliseconds even on a loaded machine; a slower one is reported as
/// "status unknown", which the monitor does not count as an LSN.
pub const STATUS_TIMEOUT: Duration =
    Duration::from_millis(pgpilot_proto::replication_timeouts::KEEPER_STATUS_TIMEOUT_MS);

/// wal_receiver_timeout as the keeper configures it (see
/// [`pgpilot_proto::replication_timeouts`]). A contact that began and ended
/// between two looks of the keeper is seen only if the next look comes
/// within this time (see `Engine::observe`).
pub use pgpilot_proto::replication_timeouts::WAL_RECEIVER_TIMEOUT_MS;

/// From every pgpilot walsender in state 'streaming' (its standby's
/// application_name and how long ago that standby last replied, in ms):
/// the standbys that count as streaming, and how long ago the least recent
/// of them replied (what the fencing exemption counts from). One
/// definition for the agent (which reads pg_stat_replication) and the
/// simulation.
pub fn fresh_standbys(
    walsenders: impl IntoIterator<Item = (String, u64)>,
) -> (Vec<String>, Option<u64>) {
    let mut names = Vec::new();
    let mut oldest: Option<u64> = None;
    for (name, reply_ms) in walsenders {
        if reply_ms <= FRESH_REPLY_MS {
            oldest = Some(oldest.map_or(reply_ms, |o| o.max(reply_ms)));
            names.push(name);
        }
    }
    (names, oldest)
}

/// What the driver saw of its PostgreSQL this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub has_pgdata: bool,
    /// The postmaster process runs.
    pub running: bool,
    /// `None` when not running, or when the status could not be read
    /// (query failed or timed out): then nothing is known of its LSN.
    pub status: Option<PgStatus>,
    /// From pg_control, once read.
    pub system_identifier: Option<u64>,
    /// A pg_rewind of PGDATA was cut short (`rewind.partial`): the data
    /// is not to be started, only replaced by a copy.
    pub rewind_interrupted: bool,
    /// PostgreSQL does not run and its last stop was a primary's clean
    /// shutdown (pg_control says "shut down"): where its shutdown
    /// checkpoint starts ("Latest checkpoint location"). Every commit it
    /// ever acknowledged lies before it. `None` while it runs, after a
    /// crash or an immediate shutdown, for a standby ("shut down in
    /// recovery"), or when pg_control was not read.
    pub shutdown_lsn: Option<Lsn>,
}

/// What a reply asks of the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: the reply is stale (older generation) or unusable.
    Ignore(String),
    /// The goal is the current state: keep PostgreSQL in line with it.
    Steady(Goal),
    /// Run the transition from `from` to `goal.state`.
    Transition { from: NodeState, goal: Goal },
}
