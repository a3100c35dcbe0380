//! The pgpilot keeper: runs beside one PostgreSQL node, reports to the
//! monitor and applies the goals it assigns (DESIGN.md §7).
//!
//! - [`plan`]: the pure decisions (goal + observation -> steps, fencing).
//! - [`agent`]: the loop that runs them.
//! - [`pg`]: the node's PostgreSQL: process, settings, HBA, SQL, copies.
//! - [`setup`]: `create postgres`.
//! - [`config`], [`statefile`], [`files`]: the keeper's own files.
//! - [`service`]: `run` and `stop` for a node.

pub mod agent;
pub mod config;
pub mod files;
pub mod pg;
pub mod plan;
pub mod service;
pub mod setup;
pub mod statefile;

pub use pgpilot_proto as proto;
