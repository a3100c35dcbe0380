//! Small builders for test views.

use std::time::Duration;

use chrono::TimeZone;
use pgpilot_proto::{Lsn, NodeState};

use super::*;

pub fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// `t0()` plus `s` seconds.
pub fn at(s: f64) -> Timestamp {
    t0() + chrono::Duration::milliseconds((s * 1000.0) as i64)
}

pub const MB: u64 = 1024 * 1024;

/// A healthy node that reported `state` at `t0()`, reached and assigned.
pub fn node(id: i64, state: NodeState) -> NodeView {
    NodeView {
        id,
        name: format!("node_{id}"),
        host: format!("node{id}.test"),
        port: 5432,
        system_identifier: None,
        status_unknown: false,
        shutdown_lsn: None,
        in_recovery: None,
        heard: true,
        last_probe: None,
        transition_error: String::new(),
        drop_forced: false,
        dropped_from: None,
        reported: state,
        assigned: state,
        pg_running: true,
        tli: 1,
        lsn: Lsn(100 * MB),
        replication_state: String::new(),
        upstream_silent: Some(Duration::ZERO),
        candidate_priority: 50,
        replication_quorum: true,
        quorum_dropped_at: None,
        maintenance_requested: false,
        failed_over_at: None,
        health: Health::Good,
        last_report: Some(t0()),
        goal_changed_at: t0(),
        replication_stall_since: None,
    }
}

pub trait NodeExt {
    fn goal(self, s: NodeState) -> Self;
    fn silent_since(self, t: Option<Timestamp>) -> Self;
    fn bad(self) -> Self;
    fn pg_down(self) -> Self;
    fn upstream(self, secs: f64) -> Self;
    fn lsn_mb(self, mb: u64) -> Self;
    fn prio(self, p: i32) -> Self;
    fn quorum(self, q: bool) -> Self;
    fn tli(self, t: u32) -> Self;
    fn stall_since(self, t: Timestamp) -> Self;
    fn changed_at(self, t: Timestamp) -> Self;
    /// Dropped by the operator after it had reported `from`.
    fn dropped(self, from: NodeState, forced: bool) -> Self;
    /// Its keeper could not read PostgreSQL's status.
    fn unknown(self) -> Self;
}

impl NodeExt for NodeView {
    fn goal(mut self, s: NodeState) -> Self {
        self.assigned = s;
        self
    }
    fn silent_since(mut self, t: Option<Timestamp>) -> Self {
        self.last_report = t;
        self
    }
    fn bad(mut self) -> Self {
        self.health = Health::Bad;
        self
    }
    fn pg_down(mut self) -> Self {
        self.pg_running = false;
        self
    }
    fn upstream(mut self, secs: f64) -> Self {
        self.upstream_silent = Some(Duration::from_secs_f64(secs));
        self
    }
    fn lsn_mb(mut self, mb: u64) -> Self {
        self.lsn = Lsn(mb * MB);
        self
    }
    fn prio(mut self, p: i32) -> Self {
        self.candidate_priority = p;
        self
    }
    fn quorum(mut self, q: bool) -> Self {
        self.replication_quorum = q;
        self
    }
    fn tli(mut self, t: u32) -> Self {
        self.tli = t;
        self
    }
    fn stall_since(mut self, t: Timestamp) -> Self {
        self.replication_stall_since = Some(t);
        self
    }
    fn changed_at(mut self, t: Timestamp) -> Self {
        self.goal_changed_at = t;
        self
    }
    fn dropped(mut self, from: NodeState, forced: bool) -> Self {
        self.assigned = NodeState::Dropped;
        self.dropped_from = Some(from);
        self.drop_forced = forced;
        self
    }
    fn unknown(mut self) -> Self {
        self.status_unknown = true;
        self
    }
}

pub fn group(nodes: Vec<NodeView>) -> GroupView {
    GroupView {
        formation: "default".into(),
        group_id: 0,
        number_sync_standbys: 1,
        generation: 1,
        system_identifier: None,
        dbname: "postgres".into(),
        waiting_for: None,
        switchover_to: None,
        nodes,
    }
}
