//! The simulated monitor: the real core ([`pgpilot_monitor::core::Core`])
//! and the real heartbeat table ([`pgpilot_monitor::live::Live`]) around
//! an in-memory store, doing exactly what `control/` does around the
//! database: build the view from the stored rows and the live overlay,
//! call the core, keep what it returns.

use pgpilot_monitor::core::{self, Core, NewNode, Report};
use pgpilot_monitor::fsm::{Action, FsmConfig, GroupView, Health, Timestamp};
use pgpilot_monitor::live::{Live, LiveReport};
use pgpilot_proto::{pb, NodeState};

pub struct SimMonitor {
    /// The group as the store holds it (written whenever an operation
    /// returned actions, as the daemon writes).
    pub stored: GroupView,
    pub core: Core,
    /// The heartbeat table; lost when the monitor restarts.
    live: Live,
    /// Leadership conflicts the core found (`Action::Conflict`): no fault
    /// of the simulation promotes or starts a PostgreSQL outside its
    /// keeper, so each one is a false alarm, counted by the sweep.
    pub conflicts: u32,
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
    pub fn new(core: Core, now: Timestamp) -> SimMonitor {
        SimMonitor {
            stored: GroupView {
                formation: "default".into(),
                group_id: 0,
                number_sync_standbys: 0,
                generation: 1,
                system_identifier: None,
                dbname: "postgres".into(),
                waiting_for: None,
                switchover_to: None,
                nodes: Vec::new(),
            },
            core,
            live: Live::new(now),
            conflicts: 0,
        }
    }

    pub fn cfg(&self) -> &FsmConfig {
        &self.core.cfg
    }

    /// The group as an operation sees it: stored rows with the overlay.
    pub fn view(&self) -> GroupView {
        let mut v = self.stored.clone();
        v.nodes = v.nodes.into_iter().map(|n| self.live.overlay(n)).collect();
        v
    }

    /// Keeps the result of an operation as `control/` does.
    /// The trace names a removed node's reported state from the view the
    /// operation started from (still `self.stored` here).
    fn keep(&mut self, view: GroupView, actions: &[Action]) -> Vec<Assigned> {
        let removes = actions
            .iter()
            .any(|a| matches!(a, Action::RemoveNode { .. }));
        let before = removes.then(|| self.view());
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::AssignGoal {
                    node_id,
                    goal,
                    reason,
                } => out.push(Assigned {
                    node_id: *node_id,
                    goal: *goal,
                    reported: view
                        .node(*node_id)
                        .or(before.as_ref().and_then(|b| b.node(*node_id)))
                        .map_or(NodeState::Init, |n| n.reported),
                    reason: reason.clone(),
                }),
                Action::RemoveNode { node_id, .. } => self.live.forget(*node_id),
                Action::Conflict { .. } => self.conflicts += 1,
                _ => {}
            }
        }
        if !actions.is_empty() {
            self.stored = view;
        }
        out
    }

    /// Register, as `control/register.rs` does.
    pub fn register(
        &mut self,
        node_id: i64,
        priority: i32,
        quorum: bool,
        now: Timestamp,
    ) -> Result<(NodeState, Vec<Assigned>), String> {
        let new = NewNode {
            name: String::new(),
            host: format!("node{node_id}"),
            port: 5432,
            dbname: "postgres".into(),
            system_identifier: None,
            candidate_priority: priority,
            replication_quorum: quorum,
            initial: NodeState::Init,
        };
        let mut view = self.view();
        let actions = self
            .core
            .register(&mut view, node_id, &new, now)
            .map_err(|e| e.to_string())?;
        let assigned = view
            .node(node_id)
            .map_or(NodeState::Dropped, |n| n.assigned);
        Ok((assigned, self.keep(view, &actions)))
    }

    /// NodeActive, as `control/report.rs` handles it.
    pub fn node_active(
        &mut self,
        req: &pb::NodeActiveRequest,
        now: Timestamp,
    ) -> Result<(pb::NodeActiveResponse, Vec<Assigned>), String> {
        let report = Report::from_wire(req).map_err(|e| e.to_string())?;
        let mut view = self.view();
        let actions = self
            .core
            .report(&mut view, &report, now)
            .map_err(|e| e.to_string())?;
        if let Some(n) = view.node(req.node_id) {
            self.live.set(req.node_id, LiveReport::of(n));
        }
        let reply = core::reply(&view, req.node_id, now, &self.core.cfg);
        Ok((reply, self.keep(view, &actions)))
    }

    /// A probe round's result.
    pub fn probe(&mut self, node_id: i64, health: Health, now: Timestamp) -> Vec<Assigned> {
        let mut view = self.view();
        let actions = self
            .core
            .probe(&mut view, node_id, health, "simulated", now);
        self.keep(view, &actions)
    }

    /// The monitor's periodic tick.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Assigned> {
        let mut view = self.view();
        let actions = self.core.tick(&mut view, now);
        self.keep(view, &actions)
    }

    /// The operator's `drop node`.
    pub fn drop_node(
        &mut self,
        node_id: i64,
        force: bool,
        now: Timestamp,
    ) -> Result<Vec<Assigned>, String> {
        let mut view = self.view();
        let actions = self
            .core
            .drop_node(&mut view, node_id, force, now)
            .map_err(|e| e.to_string())?;
        Ok(self.keep(view, &actions))
    }

    /// An operator's command: a core operation on the group's view (it
    /// may refuse, changing nothing).
    pub fn operate(
        &mut self,
        op: impl FnOnce(&Core, &mut GroupView) -> pgpilot_monitor::error::Result<Vec<Action>>,
    ) -> Result<Vec<Assigned>, String> {
        let mut view = self.view();
        let actions = op(&self.core, &mut view).map_err(|e| e.to_string())?;
        Ok(self.keep(view, &actions))
    }

    /// A restart loses the in-memory heartbeat table; the stored rows stay.
    pub fn restart(&mut self, now: Timestamp) {
        self.live = Live::new(now);
        // As the daemon does at start.
        let mut view = self.view();
        let actions = self.core.rebase_clock(&mut view, now);
        self.keep(view, &actions);
    }
}
