//! The monitor's pure core: every operation on a group as a function of
//! the group's view, the event and `now`, returning the [`Action`]s the
//! store must apply in one transaction (DESIGN.md §2, STYLE.md 16b).
//!
//! The daemon (`crate::control`) locks the group, loads its view, calls
//! one of these, applies the actions and commits. The simulation (the
//! test-only `pgpilot-sim` crate) calls the very same functions on an
//! in-memory view. Nothing is decided anywhere else.
//!
//! Each operation changes the view it is given to what the group is after
//! the event (the caller builds its reply from it), and returns the list
//! of durable effects in order. An empty list means nothing durable
//! changed: a heartbeat that only moved volatile fields (time, LSN) costs
//! no write.
//!
//! - [`Core::register`]: a keeper joins (`register.rs`).
//! - [`Core::report`]: a keeper's heartbeat (`report.rs`).
//! - [`Core::probe`], [`Core::drop_node`], [`Core::tick`]: health changes,
//!   the operator's drop and the clock (`ops.rs`).
//! - [`Core::switchover`]: the operator's planned switchover
//!   (`switchover.rs`); [`Core::set_candidate_priority`],
//!   [`Core::set_replication_quorum`], [`Core::set_number_sync_standbys`]:
//!   the operator's settings (`settings.rs`).
//! - [`reply`]: what a keeper is told (`reply.rs`).
//! - [`password`]: the replication password's rotation.

mod failover;
mod maintenance;
mod ops;
pub mod password;
mod register;
mod reply;
mod report;
mod settings;
mod switchover;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failover_gate;
#[cfg(test)]
mod tests_operator;

pub use ops::mark_dropped;
pub use register::NewNode;
pub use reply::{node_info, reply, ssn_for};
pub use report::{report_allowed, Report};
pub use settings::PRIORITY_RANGE;

use crate::error::MonitorError;
use crate::fsm::{self, Action, FsmConfig, GroupView, Rule, Timestamp, RULES};

/// The state machine's rules and timings. Production uses [`Core::new`];
/// a mutation test builds one with a rule replaced ([`Core::with_rules`]).
#[derive(Clone)]
pub struct Core {
    pub cfg: FsmConfig,
    rules: Vec<Rule>,
}

impl Core {
    pub fn new(cfg: FsmConfig) -> Core {
        Core {
            cfg,
            rules: RULES.to_vec(),
        }
    }

    /// The core with another rule table (tests and the simulation only:
    /// production has no way to change a rule).
    pub fn with_rules(cfg: FsmConfig, rules: Vec<Rule>) -> Core {
        Core { cfg, rules }
    }

    /// Runs the rules to their fixpoint on `g`, applying and appending
    /// their actions.
    pub fn settle(&self, g: &mut GroupView, now: Timestamp, out: &mut Vec<Action>) {
        let actions = fsm::decide_with(&self.rules, g, now, &self.cfg);
        fsm::apply(g, &actions, now);
        out.extend(actions);
    }

    /// At the start of a monitor process: goal times an earlier process
    /// stored on a clock that was ahead of ours (it was stepped back
    /// meanwhile) are taken to be our start. Rules compare goal times with
    /// each other (was a quorum standby dropped after the primary last
    /// re-applied its settings?), and such a time would look newer than
    /// anything this process does (found by the simulation, seed 61019).
    ///
    /// All goal times of the group move back by the same amount, so their
    /// order (which the rules compare) is kept.
    pub fn rebase_clock(&self, g: &mut GroupView, started_at: Timestamp) -> Vec<Action> {
        let Some(latest) = g.nodes.iter().map(|n| n.goal_changed_at).max() else {
            return Vec::new();
        };
        if latest <= started_at {
            return Vec::new();
        }
        let shift = latest - started_at;
        g.nodes
            .iter_mut()
            .map(|n| {
                n.goal_changed_at -= shift;
                if let Some(t) = n.replication_stall_since.as_mut() {
                    *t = (*t - shift).min(started_at);
                }
                // Compared with goal times: moves with them.
                if let Some(t) = n.quorum_dropped_at.as_mut() {
                    *t -= shift;
                }
                Action::RebaseGoalTime { node_id: n.id }
            })
            .collect()
    }

    /// The clock: rules that fire on time alone (lease expiry, silence,
    /// stall).
    pub fn tick(&self, g: &mut GroupView, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        self.settle(g, now, &mut out);
        out
    }
}

pub(crate) fn unknown_node(node_id: i64) -> MonitorError {
    MonitorError::NotFound(format!(
        "node {node_id} is not registered with this monitor; it may have been dropped: \
         register the node again with `pgpilot create postgres`"
    ))
}
