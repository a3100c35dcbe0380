//! Integration tests of the keeper: real `pgpilot` monitor and keeper
//! processes, each keeper with its real PostgreSQL, real streaming
//! replication, real kills.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod config;
mod conflict;
mod copy_heartbeat;
mod demo;
mod drop;
mod election;
mod fast_forward;
mod fencing;
mod forced_failover;
mod hooks;
mod http_endpoints;
mod keeper_restart;
mod lease_bound;
mod lifecycle;
mod maintenance;
mod restarts;
mod rotate;
mod ssl;
mod standby_restart;
mod supervision;
mod switchover;
mod switchover_bench;
mod systemd;
mod unknown_status;
mod watch;
