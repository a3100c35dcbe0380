//! The pgpilot wire protocol and the domain types that the monitor, the
//! keeper and the CLI share.
//!
//! - [`pb`]: generated prost/tonic code for `proto/pgpilot.proto`.
//! - [`state`]: names and properties of [`NodeState`] (DESIGN.md section 4).
//! - [`lsn`]: [`Lsn`], PostgreSQL's `X/X` write-ahead log position.
//! - [`edges`]: the one table of (from, to) edges the monitor may assign,
//!   each with the keeper action that reaches it.
//! - [`client`]: the one way to build a monitor client (TLS, credential).
//! - [`credential`]: the tokens callers present, and how they are checked.
//! - [`discover`]: fetching the monitor's CA by the join token's fingerprint.
//! - [`listen`]: [`HttpListen`], where an HTTP listener binds (`--http-listen`).
//! - [`error`]: [`ErrorCode`], mapped to and from `tonic::Code`.

pub mod client;
pub mod credential;
pub mod discover;
pub mod edges;
pub mod error;
pub mod listen;
pub mod lsn;
pub mod state;

/// Generated code for the `pgpilot.v1` package.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("pgpilot.v1");

    /// The generation only: a reply printed with `{:?}` (a test's
    /// assertion, a debug line) must not show the password.
    impl std::fmt::Debug for ReplicationPassword {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ReplicationPassword")
                .field("generation", &self.generation)
                .field("password", &"***")
                .finish()
        }
    }
}

pub use edges::{action_for, KeeperAction, EDGES};
pub use error::ErrorCode;
pub use listen::HttpListen;
pub use lsn::Lsn;
pub use pb::NodeState;

/// Replication slot and `application_name` of a node: `pgpilot_node_<id>`.
pub fn node_slot_name(node_id: i64) -> String {
    format!("pgpilot_node_{node_id}")
}

/// The default TCP port of the monitor's gRPC API.
pub const DEFAULT_MONITOR_PORT: u16 = 5430;

/// PostgreSQL's replication timeouts as every keeper configures them (one
/// definition: the keeper writes them, the keeper's engine and the
/// simulation reason with them, the monitor's config check holds its
/// timings against them).
pub mod replication_timeouts {
    /// wal_receiver_timeout. A WAL receiver that heard nothing for half of
    /// it pings its upstream, which answers at once: an idle but healthy
    /// primary is therefore never silent much longer than 600 ms, which
    /// replication_lost_timeout (the standby's failover witness) must
    /// exceed with room to spare. A receiver whose upstream went silent (a
    /// cut, a freeze) stays in pg_stat_wal_receiver, 'streaming' with an
    /// ever older last message, this long before it reconnects.
    pub const WAL_RECEIVER_TIMEOUT_MS: u64 = 1200;
    /// wal_sender_timeout. A walsender that got no reply for half of it
    /// asks its standby for one, so a live standby's last reply is at most
    /// about 600 ms old even when nothing is written (its own status
    /// interval is 1 s, the shortest PostgreSQL allows): the primary's
    /// fencing exemption, counted from the oldest reply, then outlasts the
    /// keeper's next look. A standby silent this long is let go, so
    /// synchronous commits do not wait on a dead connection longer than
    /// the monitor takes to act on it.
    pub const WAL_SENDER_TIMEOUT_MS: u64 = 1200;
    /// How long a keeper waits for PostgreSQL's status each round. A
    /// fresh local connection and one query take milliseconds; a read
    /// slower than this counts as unknown (no exemption is drawn from it).
    pub const KEEPER_STATUS_TIMEOUT_MS: u64 = 200;
    /// How long before its fencing exemption would lapse a primary's
    /// keeper looks at its standbys again: a status read and a little room.
    /// An exemption drawn from a standby reply up to
    /// WAL_SENDER_TIMEOUT_MS / 2 old must outlast it, which the monitor's
    /// `Timings::validate` checks against the lease and clock margin.
    pub const EXEMPTION_LOOK_AHEAD_MS: u64 = KEEPER_STATUS_TIMEOUT_MS + 50;
}
