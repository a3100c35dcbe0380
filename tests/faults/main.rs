//! The fault suite (issue #10, item 3): real monitor, keeper and
//! PostgreSQL processes, each data node and the monitor in a network
//! namespace of its own (tests/support/netns.rs), faults made by killing,
//! freezing and cutting network paths with nftables. Root only: as any
//! other user every test says it is skipped and passes.
//!
//! Every scenario asserts that every commit acknowledged (to the
//! application writer, through the formation URI, and to the split-brain
//! checker) is on the final primary, that no two nodes acknowledged a
//! commit at the same moment (see checker.rs for the definition), and
//! that the group converges. `PGPILOT_FAULT_REPEAT=N` runs each N times.
//!
//! bench.rs is the failover benchmark (`./dev bench failover`, ignored by
//! `cargo test`): the same faults, measured and reported.

#[path = "../support/mod.rs"]
mod support;

mod checker;
mod harness;

mod bench;

mod freeze;
mod keeper_restart;
mod kill;
mod monitor_down;
mod partition;
