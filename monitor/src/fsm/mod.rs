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

mod health;
mod model;
mod rules;
mod ssn;
mod steady;
pub mod switches;

#[cfg(test)]
mod builders;
#[cfg(test)]
mod reach_model;
#[cfg(test)]
mod reach_test;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failover;

pub use health::{is_fenced, is_healthy, is_in, is_unhealthy, keeper_silent, lease_expired};
pub use model::*;
pub use ssn::synchronous_standby_names;

use rules::*;
use steady::*;

type Rule = fn(&GroupView, Timestamp, &FsmConfig) -> Vec<Action>;

/// Rules in priority order; the first that fires wins each round.
/// Failover rules precede every rule that could turn synchronous
/// replication off (DESIGN.md §8).
const RULES: &[Rule] = &[
    remove_dropped,
    alone,
    fenced_while_draining,
    elect,
    promotion_step,
    lease_gate,
    failover,
    stall,
    standby_lost,
    single_to_wait_primary,
    standby_join,
    apply_settings_done,
    catchup_done,
    enable_sync,
    rejoin,
    drop_sync_standby,
];

/// A safety cap on rounds inside one [`decide`] call; every round changes at
/// least one goal or removes a node, and no rule undoes another's goal with
/// the same inputs, so real runs need a handful.
const MAX_ROUNDS: usize = 32;

/// Decides what the group must do next. See the module documentation.
pub fn decide(group: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let mut work = group.clone();
    let mut out = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let Some(actions) = RULES
            .iter()
            .map(|rule| rule(&work, now, cfg))
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
        Action::BumpGeneration { .. } => true,
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
        }
    }
}
