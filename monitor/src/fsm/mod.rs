//! The pure group state machine: no I/O, time comes in as `now`.
//!
//! [`decide`] takes a snapshot of one group as it is *after* the triggering
//! report, health change or command was applied ([`GroupView`]), the
//! current time and the timings ([`FsmConfig`]), and returns the
//! [`Action`]s the store must apply in the same transaction. The store runs
//! it again after applying them until it returns nothing (a fixpoint).
//! `decide` itself already iterates its rules to a fixpoint on a working
//! copy, so the second call returns nothing; the store's loop is a safety
//! net.
//!
//! The rules (see `rules.rs` and `steady.rs`) follow pg_auto_failover's
//! `group_state_machine.c`, with two changes that matter for data safety:
//! failover needs two witnesses, and a promoted node becomes writable only
//! once the old primary acknowledged or its lease expired (DESIGN.md §5).
//!
//! Self-fencing (rule 12): a primary's keeper whose lease expired stops
//! Postgres and reports `demote_timeout` while its goal is still
//! `primary` (or `wait_primary`/`single`/`apply_settings`). The FSM does
//! nothing special for it: it never fails over from a node that does not
//! *report* `primary` (the fenced node may have fenced before synchronous
//! replication was on), and it keeps the goal, so as soon as the keeper
//! reaches the monitor again it takes the `demote_timeout -> <goal>` edge
//! (RestartAsPrimary). If the monitor did fail over meanwhile, the node's
//! goal is already draining/demote_timeout/demoted and it stays stopped.

mod conflict;
mod failover;
mod fast_forward;
mod health;
mod maintenance;
mod model;
mod promotion;
mod rules;
mod ssn;
mod steady;
mod waits;

#[cfg(test)]
pub(crate) mod builders;
#[cfg(test)]
mod reach_model;
#[cfg(test)]
mod reach_test;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failover;
#[cfg(test)]
mod tests_fast_forward;

pub use conflict::{conflict_of, Conflict};
pub use health::{is_fenced, is_healthy, is_in, is_unhealthy, keeper_silent, lease_expired, secs};
pub use model::*;
pub use ssn::synchronous_standby_names;

use failover::*;
pub use failover::{
    can_report_lsn, election, election_blockers, followers, has_final_lsn, promoting,
};
use fast_forward::fast_forward_step;
pub use fast_forward::{fast_forward_of, fast_forward_source};
use maintenance::*;
use promotion::*;
pub use rules::drop_refusal;
use rules::*;
pub use rules::{operation_under_way, primary, quorum_counts, sync_writer};
use steady::*;
pub use waits::current_wait;
use waits::explain_wait;

/// One rule: a pure function of the group, the time and the timings.
pub type RuleFn = fn(&GroupView, Timestamp, &FsmConfig) -> Vec<Action>;

/// A rule with the name tests and the simulation know it by.
#[derive(Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub run: RuleFn,
}

const fn rule(name: &'static str, run: RuleFn) -> Rule {
    Rule { name, run }
}

/// Rules in priority order; the first that fires wins each round.
/// Failover rules precede every rule that could turn synchronous
/// replication off (DESIGN.md §8). The table is public so that a test can
/// run the state machine with one rule replaced from outside (a mutation
/// test) without any switch inside the rules themselves.
pub const RULES: &[Rule] = &[
    rule("fenced_while_draining", fenced_while_draining),
    rule("alone", alone),
    // Before the row of a dropped quorum standby goes, the primary
    // re-applies synchronous_standby_names with the wait that every change
    // to it gets (a forced drop used to skip it).
    rule("drop_sync_standby", drop_sync_standby),
    rule("remove_dropped", remove_dropped),
    rule("forget_cluster", forget_cluster),
    rule("switchover_abort", switchover_abort),
    rule("election_timeout", election_timeout),
    rule("elect", elect),
    rule("fast_forward_step", fast_forward_step),
    rule("switchover_step", switchover_step),
    rule("promotion_step", promotion_step),
    rule("lease_gate", lease_gate),
    rule("failover", failover),
    rule("stall", stall),
    rule("standby_lost", standby_lost),
    rule("single_to_wait_primary", single_to_wait_primary),
    rule("standby_join", standby_join),
    rule("apply_settings_done", apply_settings_done),
    rule("catchup_done", catchup_done),
    rule("enable_sync", enable_sync),
    rule("rejoin", rejoin),
    rule("confirm_quorum_drop", confirm_quorum_drop),
    rule("enter_maintenance", enter_maintenance),
    // Last: only a group that no rule moves on is waiting.
    rule("explain_wait", explain_wait),
];

/// A safety cap on rounds inside one [`decide`] call; every round changes at
/// least one goal or removes a node, and no rule undoes another's goal with
/// the same inputs, so real runs need a handful.
const MAX_ROUNDS: usize = 32;

/// Decides what the group must do next with the production rules. See the
/// module documentation.
pub fn decide(group: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    decide_with(RULES, group, now, cfg)
}

/// [`decide`] with an explicit rule table: the one fixpoint loop of the
/// monitor (the store, the operations and the simulation all come here).
pub fn decide_with(
    rules: &[Rule],
    group: &GroupView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Vec<Action> {
    let mut work = group.clone();
    let mut out = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let Some(actions) = rules
            .iter()
            .map(|rule| (rule.run)(&work, now, cfg))
            .find(|a| !a.is_empty())
        else {
            break;
        };
        debug_assert!(
            actions.iter().all(|a| changes(&work, a)),
            "no-op action {actions:?}"
        );
        apply(&mut work, &actions, now);
        out.extend(actions);
    }
    out
}

fn changes(g: &GroupView, a: &Action) -> bool {
    match a {
        Action::AssignGoal { node_id, goal, .. } => {
            g.node(*node_id).is_some_and(|n| n.assigned != *goal)
        }
        Action::RemoveNode { node_id, .. } => g.node(*node_id).is_some(),
        Action::ForgetSystemIdentifier => g.system_identifier.is_some(),
        Action::Wait { reason, .. } => g.waiting_for.as_ref() != Some(reason),
        Action::WaitOver => g.waiting_for.is_some(),
        Action::SetSwitchover { candidate } => g.switchover_to != *candidate,
        Action::MaintenanceRequest { node_id, on } => g
            .node(*node_id)
            .is_some_and(|n| n.maintenance_requested != *on),
        Action::QuorumDropConfirmed { node_id } => g
            .node(*node_id)
            .is_some_and(|n| n.quorum_dropped_at.is_some()),
        Action::BumpGeneration { .. } => true,
        // Not produced by rules: the operations in `crate::core` emit them
        // after changing the view themselves.
        Action::SaveNode { .. }
        | Action::RebaseGoalTime { .. }
        | Action::AddNode { .. }
        | Action::SaveGroupSystemIdentifier
        | Action::SaveDbname
        | Action::SaveFormationSettings
        | Action::Note { .. }
        | Action::Conflict { .. } => false,
    }
}

/// Applies actions to a view the way the store applies them to its rows
/// (used by [`decide`] itself and by tests; the store may use it to keep
/// its in-memory view in step).
pub fn apply(group: &mut GroupView, actions: &[Action], now: Timestamp) {
    for a in actions {
        match a {
            Action::BumpGeneration { .. } => group.generation += 1,
            Action::AssignGoal { node_id, goal, .. } => {
                if let Some(n) = group.nodes.iter_mut().find(|n| n.id == *node_id) {
                    n.assigned = *goal;
                    n.goal_changed_at = now;
                }
            }
            Action::RemoveNode { node_id, .. } => group.nodes.retain(|n| n.id != *node_id),
            Action::ForgetSystemIdentifier => group.system_identifier = None,
            Action::Wait { reason, .. } => group.waiting_for = Some(reason.clone()),
            Action::WaitOver => group.waiting_for = None,
            Action::SetSwitchover { candidate } => group.switchover_to = *candidate,
            Action::MaintenanceRequest { node_id, on } => {
                if let Some(n) = group.nodes.iter_mut().find(|n| n.id == *node_id) {
                    n.maintenance_requested = *on;
                }
            }
            Action::QuorumDropConfirmed { node_id } => {
                if let Some(n) = group.nodes.iter_mut().find(|n| n.id == *node_id) {
                    n.quorum_dropped_at = None;
                }
            }
            // The view already holds what these write.
            Action::SaveNode { .. }
            | Action::RebaseGoalTime { .. }
            | Action::AddNode { .. }
            | Action::SaveGroupSystemIdentifier
            | Action::SaveDbname
            | Action::SaveFormationSettings
            | Action::Note { .. }
            | Action::Conflict { .. } => {}
        }
    }
}
