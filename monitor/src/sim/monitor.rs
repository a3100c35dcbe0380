//! The simulated monitor: the real FSM ([`crate::fsm::decide`]) and the
//! real report check ([`crate::store::report_allowed`]) around an in-memory
//! group, doing what `control/report.rs`, `control/register.rs` and
//! `control/health.rs` do around the store.

use std::time::Duration;

use pgpilot_proto::{pb, Lsn, NodeState};

use crate::control::report::{node_info, ssn_for};
use crate::fsm::{self, Action, FsmConfig, GroupView, Health, NodeView, Timestamp};
use crate::store::report_allowed;

pub struct SimMonitor {
    pub view: GroupView,
    pub cfg: FsmConfig,
    pub lease: Duration,
    /// When this monitor process started: like `live.rs`, no node looks
    /// as if it reported before that.
    pub started_at: Timestamp,
}

/// One goal the monitor assigned, for the invariant checks and the trace.
#[derive(Clone, Debug)]
pub struct Assigned {
    pub node_id: i64,
    pub goal: NodeState,
    pub reported: NodeState,
    pub reason: String,
}

impl SimMonitor {
    pub fn new(cfg: FsmConfig, now: Timestamp) -> SimMonitor {
        let lease = cfg.lease;
        SimMonitor {
            view: GroupView {
                formation: "default".into(),
                group_id: 0,
                number_sync_standbys: 0,
                generation: 1,
                nodes: Vec::new(),
            },
            cfg,
            lease,
            started_at: now,
        }
    }

    /// Register, as `control/register.rs` decides the initial goal.
    pub fn register(&mut self, node_id: i64, now: Timestamp) -> (NodeState, Vec<Assigned>) {
        let live = self
            .view
            .nodes
            .iter()
            .filter(|n| n.assigned != NodeState::Dropped)
            .count();
        let assigned = if live == 0 {
            NodeState::Single
        } else {
            NodeState::WaitStandby
        };
        self.view.nodes.push(NodeView {
            id: node_id,
            name: format!("node_{node_id}"),
            reported: NodeState::Init,
            assigned,
            pg_running: false,
            tli: 0,
            lsn: Lsn(0),
            replication_state: String::new(),
            upstream_silent: None,
            candidate_priority: 50,
            replication_quorum: true,
            health: Health::Unknown,
            last_report: None,
            goal_changed_at: now,
            replication_stall_since: None,
        });
        let changes = self.decide(now);
        (assigned, changes)
    }

    /// NodeActive, as `control/report.rs` handles it.
    pub fn node_active(
        &mut self,
        req: &pb::NodeActiveRequest,
        now: Timestamp,
    ) -> Result<(pb::NodeActiveResponse, Vec<Assigned>), String> {
        let reported = NodeState::from_wire(req.reported_state).map_err(|e| e.to_string())?;
        let generation = self.view.generation;
        let node = self
            .view
            .nodes
            .iter_mut()
            .find(|n| n.id == req.node_id)
            .ok_or("unknown node")?;
        if !report_allowed(node.reported, node.assigned, reported) {
            return Err(format!(
                "node {} reported {reported}, was {} with goal {}",
                node.id, node.reported, node.assigned
            ));
        }
        if req.generation_seen > generation {
            return Err("generation from the future".into());
        }
        let wal = req.wal_receiver.unwrap_or_default();
        node.replication_stall_since =
            if reported.accepts_writes() && req.replication_state.is_empty() {
                Some(node.replication_stall_since.unwrap_or(now))
            } else {
                None
            };
        node.reported = reported;
        node.pg_running = req.pg_running;
        node.tli = req.timeline;
        node.lsn = Lsn(req.lsn);
        node.replication_state = req.replication_state.clone();
        node.upstream_silent = wal.upstream_silent_ms.map(Duration::from_millis);
        node.last_report = Some(now);
        let changes = self.decide(now);
        Ok((self.reply(req.node_id), changes))
    }

    /// A probe round's result; a change re-runs the FSM.
    pub fn probe(&mut self, node_id: i64, health: Health, now: Timestamp) -> Vec<Assigned> {
        match self.view.nodes.iter_mut().find(|n| n.id == node_id) {
            Some(n) if n.health != health => n.health = health,
            _ => return Vec::new(),
        }
        self.decide(now)
    }

    /// The monitor's periodic tick: rules that fire on time alone.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Assigned> {
        self.decide(now)
    }

    /// A restart loses the in-memory heartbeat table; the stored rows stay.
    pub fn restart(&mut self, now: Timestamp) {
        self.started_at = now;
    }

    /// The store's loop: decide, apply, until nothing changes.
    fn decide(&mut self, now: Timestamp) -> Vec<Assigned> {
        let mut out = Vec::new();
        for _ in 0..10 {
            let mut seen = self.view.clone();
            for n in &mut seen.nodes {
                n.last_report = Some(
                    n.last_report
                        .map_or(self.started_at, |t| t.max(self.started_at)),
                );
            }
            let actions = fsm::decide(&seen, now, &self.cfg);
            if actions.is_empty() {
                break;
            }
            for a in &actions {
                if let Action::AssignGoal {
                    node_id,
                    goal,
                    reason,
                } = a
                {
                    let reported = self
                        .view
                        .node(*node_id)
                        .map_or(NodeState::Init, |n| n.reported);
                    out.push(Assigned {
                        node_id: *node_id,
                        goal: *goal,
                        reported,
                        reason: reason.clone(),
                    });
                }
            }
            fsm::apply(&mut self.view, &actions, now);
        }
        out
    }

    /// The reply `control/report.rs` builds.
    pub fn reply(&self, node_id: i64) -> pb::NodeActiveResponse {
        let assigned = self
            .view
            .node(node_id)
            .map_or(NodeState::Dropped, |n| n.assigned);
        let other_nodes = self
            .view
            .nodes
            .iter()
            .filter(|n| n.id != node_id)
            .map(|n| node_info(n, &format!("node{}", n.id), 5432))
            .collect();
        let synchronous_standby_names = ssn_for(&self.view, assigned);
        pb::NodeActiveResponse {
            assigned_state: assigned as i32,
            generation: self.view.generation,
            lease_ms: self.lease.as_millis() as u64,
            other_nodes,
            synchronous_standby_names,
            dbname: "postgres".into(),
        }
    }
}
