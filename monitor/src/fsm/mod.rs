//! The pure group state machine: no I/O, time comes in as `now`.
//!
//! [`decide`] takes a snapshot of one group as it is *after* the triggering
//! report, health change or command was applied ([`GroupView`]), the
//! current time and the timings ([`FsmConfig`]), and returns the
//! [`Action`]s the store must apply in the same transaction. The store runs
//! it again after applying them until it returns nothing (a fixpoint), so
//! rules may be written one step at a time.

mod model;

pub use model::*;

/// Decides what the group must do next. See the module documentation.
pub fn decide(group: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let _ = (group, now, cfg);
    Vec::new()
}

/// TEMPORARY until the FSM lands.
pub fn synchronous_standby_names(group: &GroupView) -> String {
    let _ = group;
    String::new()
}
