//! The pgpilot monitor.
//!
//! - [`fsm`]: the pure group state machine (no I/O, explicit `now`).
pub mod fsm;
