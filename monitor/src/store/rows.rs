//! Rows of the monitor schema, typed, and their conversion to FSM views.

use std::time::Duration;

use pgpilot_proto::{pb, Lsn, NodeState};
use sqlx::FromRow;

use crate::fsm::{Health, NodeView, Timestamp};

/// A `node` row as stored. States and health are typed: a value the
/// schema does not know fails the read ("corrupt monitor store") instead
/// of travelling on as a string.
#[derive(Clone, Debug, FromRow)]
pub struct NodeRow {
    pub node_id: i64,
    pub formation: String,
    pub group_id: i32,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub system_identifier: Option<i64>,
    #[sqlx(try_from = "String")]
    pub reported_state: NodeState,
    #[sqlx(try_from = "String")]
    pub assigned_state: NodeState,
    pub pg_running: bool,
    pub reported_tli: i32,
    pub reported_lsn: i64,
    pub replication_state: String,
    pub upstream_silent_ms: Option<i64>,
    pub candidate_priority: i32,
    pub replication_quorum: bool,
    pub quorum_dropped_at: Option<Timestamp>,
    pub maintenance_requested: bool,
    pub failed_over_at: Option<Timestamp>,
    #[sqlx(try_from = "String")]
    pub health: Health,
    pub last_report: Option<Timestamp>,
    pub last_probe: Option<Timestamp>,
    pub goal_changed_at: Timestamp,
    pub replication_stall_since: Option<Timestamp>,
    pub drop_forced: bool,
    pub dropped_from: Option<String>,
    pub registered_at: Timestamp,
}

pub const NODE_COLUMNS: &str =
    "node_id, formation, group_id, name, host, port, system_identifier, \
     reported_state, assigned_state, pg_running, reported_tli, reported_lsn, replication_state, \
     upstream_silent_ms, candidate_priority, replication_quorum, quorum_dropped_at, maintenance_requested, failed_over_at, health, last_report, last_probe, \
     goal_changed_at, replication_stall_since, drop_forced, dropped_from, registered_at";

/// The group row plus the formation settings the FSM needs.
#[derive(Clone, Debug, FromRow)]
pub struct GroupRow {
    pub formation: String,
    pub group_id: i32,
    pub generation: i64,
    pub system_identifier: Option<i64>,
    pub waiting_for: Option<String>,
    pub switchover_to: Option<i64>,
    pub number_sync_standbys: i32,
    pub dbname: String,
}

/// An `event` row.
#[derive(Clone, Debug, FromRow)]
pub struct EventRow {
    pub event_id: i64,
    pub event_time: Timestamp,
    pub formation: String,
    pub group_id: i32,
    pub node_id: i64,
    pub node_name: String,
    #[sqlx(try_from = "String")]
    pub reported_state: NodeState,
    #[sqlx(try_from = "String")]
    pub assigned_state: NodeState,
    pub description: String,
}

impl EventRow {
    pub fn to_pb(&self) -> pb::Event {
        pb::Event {
            event_id: self.event_id,
            time: self.event_time.to_rfc3339(),
            formation: self.formation.clone(),
            group_id: self.group_id,
            node_id: self.node_id,
            node_name: self.node_name.clone(),
            reported_state: self.reported_state as i32,
            assigned_state: self.assigned_state as i32,
            description: self.description.clone(),
        }
    }
}

/// System identifiers and LSNs are u64; the store keeps their bit pattern in
/// a bigint. These two functions are the only place that converts.
pub fn u64_to_db(v: u64) -> i64 {
    v as i64
}
pub fn u64_from_db(v: i64) -> u64 {
    v as u64
}

impl NodeRow {
    pub fn to_view(&self) -> anyhow::Result<NodeView> {
        Ok(NodeView {
            id: self.node_id,
            name: self.name.clone(),
            host: self.host.clone(),
            port: u16::try_from(self.port)
                .map_err(|_| anyhow::anyhow!("corrupt monitor store: port {}", self.port))?,
            system_identifier: self.system_identifier.map(u64_from_db),
            reported: self.reported_state,
            assigned: self.assigned_state,
            pg_running: self.pg_running,
            tli: u32::try_from(self.reported_tli).map_err(|_| {
                anyhow::anyhow!("corrupt monitor store: reported_tli {}", self.reported_tli)
            })?,
            lsn: Lsn(u64_from_db(self.reported_lsn)),
            status_unknown: false,
            shutdown_lsn: None,
            in_recovery: None,
            heard: false,
            replication_state: self.replication_state.clone(),
            upstream_silent: self
                .upstream_silent_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            candidate_priority: self.candidate_priority,
            replication_quorum: self.replication_quorum,
            quorum_dropped_at: self.quorum_dropped_at,
            maintenance_requested: self.maintenance_requested,
            failed_over_at: self.failed_over_at,
            health: self.health,
            last_probe: self.last_probe,
            transition_error: String::new(),
            drop_forced: self.drop_forced,
            dropped_from: self
                .dropped_from
                .as_deref()
                .map(|s| s.parse::<NodeState>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("corrupt monitor store: {e}"))?,
            last_report: self.last_report,
            goal_changed_at: self.goal_changed_at,
            replication_stall_since: self.replication_stall_since,
        })
    }

    pub fn host_port(&self) -> String {
        host_port(&self.host, self.port)
    }

    pub fn to_status(&self) -> pb::NodeStatus {
        pb::NodeStatus {
            node_id: self.node_id,
            name: self.name.clone(),
            formation: self.formation.clone(),
            group_id: self.group_id,
            host: self.host.clone(),
            port: self.port as u32,
            reported_state: self.reported_state as i32,
            assigned_state: self.assigned_state as i32,
            health: self.health.name().to_string(),
            reported_tli: self.reported_tli as u32,
            reported_lsn: u64_from_db(self.reported_lsn),
            candidate_priority: self.candidate_priority,
            replication_quorum: self.replication_quorum,
            pg_running: self.pg_running,
            last_report: self.last_report.map(|t| t.to_rfc3339()).unwrap_or_default(),
        }
    }
}

/// `host:port`, with IPv6 literals in brackets as libpq URIs want them.
pub fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
