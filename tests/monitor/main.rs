//! Integration tests of the monitor: a real `pgpilot` monitor process with
//! its private PostgreSQL, real PostgreSQL servers standing for the data
//! nodes (so the health probes are real), and the keeper protocol driven
//! by hand over gRPC.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod concurrency;
mod drops;
mod keeper;
mod lifecycle;
mod metrics;
mod operator;
mod security;
mod writes;
