//! Rows of the monitor schema and their conversion to FSM views.

use std::time::Duration;

use anyhow::{anyhow, Context};
use pgpilot_proto::{pb, Lsn, NodeState};
use sqlx::FromRow;

use crate::fsm::{Health, NodeView, Timestamp};

/// A `node` row as stored.
#[derive(Clone, Debug, FromRow)]
pub struct NodeRow {
    pub node_id: i64,
    pub formation: String,
    pub group_id: i32,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub system_identifier: Option<i64>,
    pub reported_state: String,
    pub assigned_state: String,
    pub pg_running: bool,
    pub reported_tli: i32,
    pub reported_lsn: i64,
    pub replication_state: String,
    pub upstream_silent_ms: Option<i64>,
    pub candidate_priority: i32,
    pub replication_quorum: bool,
    pub health: String,
    pub last_report: Option<Timestamp>,
    pub last_probe: Option<Timestamp>,
    pub goal_changed_at: Timestamp,
    pub replication_stall_since: Option<Timestamp>,
    pub registered_at: Timestamp,
}

pub const NODE_COLUMNS: &str =
    "node_id, formation, group_id, name, host, port, system_identifier, \
     reported_state, assigned_state, pg_running, reported_tli, reported_lsn, replication_state, \
     upstream_silent_ms, candidate_priority, replication_quorum, health, last_report, last_probe, \
     goal_changed_at, replication_stall_since, registered_at";

/// The group row plus the formation settings the FSM needs.
#[derive(Clone, Debug, FromRow)]
pub struct GroupRow {
    pub formation: String,
    pub group_id: i32,
    pub generation: i64,
    pub system_identifier: Option<i64>,
    pub number_sync_standbys: i32,
    pub dbname: String,
}

pub fn parse_state(s: &str) -> anyhow::Result<NodeState> {
    s.parse::<NodeState>()
        .map_err(|e| anyhow!("corrupt monitor store: {e}"))
}

pub fn parse_health(s: &str) -> anyhow::Result<Health> {
    match s {
        "unknown" => Ok(Health::Unknown),
        "good" => Ok(Health::Good),
        "bad" => Ok(Health::Bad),
        other => Err(anyhow!("corrupt monitor store: unknown health {other:?}")),
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
    pub fn reported(&self) -> anyhow::Result<NodeState> {
        parse_state(&self.reported_state)
    }
    pub fn assigned(&self) -> anyhow::Result<NodeState> {
        parse_state(&self.assigned_state)
    }

    pub fn to_view(&self) -> anyhow::Result<NodeView> {
        Ok(NodeView {
            id: self.node_id,
            name: self.name.clone(),
            reported: self.reported()?,
            assigned: self.assigned()?,
            pg_running: self.pg_running,
            tli: u32::try_from(self.reported_tli).context("corrupt reported_tli")?,
            lsn: Lsn(u64_from_db(self.reported_lsn)),
            replication_state: self.replication_state.clone(),
            upstream_silent: self
                .upstream_silent_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            candidate_priority: self.candidate_priority,
            replication_quorum: self.replication_quorum,
            health: parse_health(&self.health)?,
            last_report: self.last_report,
            goal_changed_at: self.goal_changed_at,
            replication_stall_since: self.replication_stall_since,
        })
    }

    pub fn host_port(&self) -> String {
        host_port(&self.host, self.port)
    }

    pub fn to_status(&self) -> anyhow::Result<pb::NodeStatus> {
        Ok(pb::NodeStatus {
            node_id: self.node_id,
            name: self.name.clone(),
            formation: self.formation.clone(),
            group_id: self.group_id,
            host: self.host.clone(),
            port: self.port as u32,
            reported_state: self.reported()? as i32,
            assigned_state: self.assigned()? as i32,
            health: self.health.clone(),
            reported_tli: self.reported_tli as u32,
            reported_lsn: u64_from_db(self.reported_lsn),
            candidate_priority: self.candidate_priority,
            replication_quorum: self.replication_quorum,
            pg_running: self.pg_running,
            last_report: self.last_report.map(|t| t.to_rfc3339()).unwrap_or_default(),
        })
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
