//! synchronous_standby_names of a group's primary (DESIGN.md §7).

use pgpilot_proto::{node_slot_name, NodeState};

use super::GroupView;

/// The value the group's primary must apply:
/// `ANY k (pgpilot_node_a, pgpilot_node_b, ...)` over the other nodes with
/// replication quorum (whatever their state, except those being dropped or
/// going into or in maintenance),
/// ordered by candidate priority descending then id, with
/// k = max(1, number_sync_standbys). Empty when there is no primary, when
/// the primary's goal is single or wait_primary (replication off by
/// definition), or when no standby has replication quorum.
///
/// k is not capped at the list length: asking for more synchronous
/// standbys than exist makes writes wait, which is the durability contract
/// the operator asked for, not something to silently weaken here.
pub fn synchronous_standby_names(group: &GroupView) -> String {
    let Some(primary) = group.nodes.iter().find(|n| n.assigned.accepts_writes()) else {
        return String::new();
    };
    if matches!(primary.assigned, NodeState::Single | NodeState::WaitPrimary) {
        return String::new();
    }
    let mut standbys: Vec<_> = group
        .nodes
        .iter()
        .filter(|n| {
            n.id != primary.id
                && n.replication_quorum
                && !matches!(
                    n.assigned,
                    NodeState::Dropped | NodeState::WaitMaintenance | NodeState::Maintenance
                )
        })
        .collect();
    if standbys.is_empty() {
        return String::new();
    }
    standbys.sort_by_key(|n| (std::cmp::Reverse(n.candidate_priority), n.id));
    let names: Vec<String> = standbys.iter().map(|n| node_slot_name(n.id)).collect();
    let k = group.number_sync_standbys.max(1);
    format!("ANY {k} ({})", names.join(", "))
}
