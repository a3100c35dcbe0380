//! The pgpilot monitor.
//!
//! - [`clock`]: wall-clock timestamps that advance monotonically.
//! - [`fsm`]: the pure group state machine (no I/O, explicit `now`).
//! - [`core`]: every operation on a group (registration, report, probe,
//!   drop, tick) as a pure function returning actions; the daemon and the
//!   simulation both run it.
//! - [`store`]: the durable state in the monitor's PostgreSQL, and the
//!   one-transaction-per-decision discipline.
//! - [`live`]: heartbeat fields kept in memory between writes.
//! - [`control`]: the operations (register, report, probe results, ticks,
//!   drop, reads), each deciding under its group's lock.
//! - [`health`]: the prober (a real connection handshake per node).
//! - [`events`]: the bus that feeds Watch streams after commit.
//! - [`metrics`]: the Prometheus metrics served as `/metrics`.
//! - [`auth`]: who may call what (credentials, the one authorisation layer).
//! - [`tls`]: the monitor's CA and server certificate.
//! - [`rpc`]: the gRPC service.
//! - [`server`]: wiring and ordered shutdown of a running monitor.
//! - [`config`]: the configuration file and the validated timings.
//! - [`setup`], [`daemon`], [`private_pg`], [`files`]: `create monitor`,
//!   `run`, the private PostgreSQL, and pgpilot's own files.
//! - [`error`]: [`MonitorError`](error::MonitorError), mapped to gRPC codes.
#![deny(clippy::print_stdout)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod conn_limit;
pub mod control;
pub mod core;
pub mod daemon;
pub mod error;
pub mod events;
pub mod files;
pub mod fsm;
pub mod health;
pub mod live;
pub mod metrics;
pub mod private_pg;
pub mod rpc;
pub mod server;
pub mod setup;
pub mod store;
pub mod tls;
