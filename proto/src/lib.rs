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
