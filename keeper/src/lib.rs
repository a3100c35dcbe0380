//! The pgpilot keeper: runs beside one PostgreSQL node, reports to the
//! monitor and applies the goals it assigns (DESIGN.md §7).
//!
//! - [`engine`]: every keeper decision, sans I/O, with an explicit `now`
//!   (lease, fencing deadline, restart budget, what a report says).
//! - [`plan`]: the pure step planning (goal + observation -> steps).
//! - [`agent`]: the daemon, an I/O shell around the engine.
//! - [`clock`]: the one clock (CLOCK_BOOTTIME) of the agent and watchdog.
//! - [`pg`]: the node's PostgreSQL: process, settings, HBA, SQL, copies.
//! - [`setup`]: `create postgres`.
//! - [`endpoints`]: what the HTTP checks (`/primary`, `/replica`, ...)
//!   answer, pure; [`http`]: the listener serving them and `/metrics`
//!   ([`metrics`]).
//! - [`config`], [`statefile`], [`files`]: the keeper's own files.
//! - [`hooks`]: the operator's `pre_promote` and `on_role_change` commands.
//! - [`service`]: `run` and `stop` for a node.

pub mod agent;
pub mod clock;
pub mod config;
pub mod endpoints;
pub mod engine;
pub mod files;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod monitor_auth;
pub mod pg;
pub mod plan;
pub mod service;
pub mod setup;
pub mod statefile;

pub use pgpilot_proto as proto;
