//! What a keeper is told after its report.

use pgpilot_proto::{pb, NodeState};

use crate::fsm::{self, FsmConfig, GroupView, NodeView};

/// The reply to node `node_id`, from the group as it is after its report.
/// It carries the timing contract (lease, poll interval, report timeout),
/// so a keeper never runs on timings that contradict the monitor's.
pub fn reply(
    g: &GroupView,
    node_id: i64,
    now: crate::fsm::Timestamp,
    cfg: &FsmConfig,
) -> pb::NodeActiveResponse {
    // A node that reported `dropped` has just been removed: tell it so.
    let assigned = g.node(node_id).map_or(NodeState::Dropped, |n| n.assigned);
    pb::NodeActiveResponse {
        assigned_state: assigned as i32,
        generation: g.generation,
        lease_ms: millis(cfg.lease),
        other_nodes: g
            .nodes
            .iter()
            .filter(|n| n.id != node_id)
            .map(|n| node_info(n, fsm::is_healthy(n, now, cfg)))
            .collect(),
        synchronous_standby_names: ssn_for(g, assigned),
        dbname: g.dbname.clone(),
        poll_interval_ms: millis(cfg.poll_interval),
        report_timeout_ms: millis(cfg.report_timeout),
        clock_margin_ms: millis(cfg.clock_margin),
        group_synchronous_standby_names: fsm::synchronous_standby_names(g),
        fast_forward: fsm::fast_forward_of(g, node_id, now, cfg).map(|(src, lsn)| {
            pb::FastForwardSource {
                node_id: src.map_or(0, |s| s.id),
                lsn: lsn.0,
            }
        }),
        // The shell adds them (`control::report`): the core's view holds
        // no secret.
        replication_password: None,
        pending_replication_password: None,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a keeper learns of another node of its group.
pub fn node_info(n: &NodeView, healthy: bool) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: n.id,
        name: n.name.clone(),
        host: n.host.clone(),
        port: u32::from(n.port),
        reported_state: n.reported as i32,
        assigned_state: n.assigned as i32,
        lsn: n.lsn.0,
        is_primary: n.assigned.accepts_writes(),
        healthy,
    }
}

/// synchronous_standby_names for a node with goal `assigned`: only the
/// writable one applies it.
pub fn ssn_for(view: &GroupView, assigned: NodeState) -> String {
    if assigned.accepts_writes() {
        fsm::synchronous_standby_names(view)
    } else {
        String::new()
    }
}
