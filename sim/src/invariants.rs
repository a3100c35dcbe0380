//! The invariants, each checked in one place after every step: the
//! promises of DESIGN.md §1 as the simulation can see them.

use pgpilot_proto::NodeState;

use super::{Node, World};

impl World {
    pub(super) fn check(&mut self) {
        let nodes = &self.nodes;
        self.forgiven.retain(|i| nodes[*i].pg.accepts_writes());
        let writable: Vec<usize> = (0..self.nodes.len())
            .filter(|i| {
                let n = &self.nodes[*i];
                n.pg.accepts_writes() && !n.frozen() && n.down_until.is_none()
            })
            .collect();
        if writable.len() > 1 {
            let ids: Vec<i64> = writable.iter().map(|i| self.nodes[*i].id).collect();
            self.violate(format!("nodes {ids:?} accept writes at the same time"));
        }
        for i in writable {
            let d = self.nodes[i].pg.data.as_ref().expect("writable");
            if let Some(lost) = self.acked.iter().find(|id| !d.ids.contains(id)) {
                let (lost, id) = (*lost, self.nodes[i].id);
                let (_, by, at) = self
                    .ack_log
                    .iter()
                    .find(|(r, _, _)| *r == lost)
                    .copied()
                    .unwrap_or_default();
                let holders: Vec<i64> = self
                    .nodes
                    .iter()
                    .filter(|n| n.pg.data.as_ref().is_some_and(|d| d.ids.contains(&lost)))
                    .map(|n| n.id)
                    .collect();
                self.violate(format!(
                    "acknowledged commit {lost} (acknowledged by node {} at {:.1}s; held by nodes {holders:?}) \
                     is missing on node {id}, which accepts writes",
                    by + 1,
                    at as f64 / 1000.0
                ));
            }
        }
    }

    /// A promotion was just decided: was the primary in fact fine?
    pub(super) fn check_needless_failover(&mut self) {
        // The operator dropped the primary: a failover asked for.
        let dropped_writer = self.monitor.stored.nodes.iter().any(|n| {
            n.assigned == NodeState::Dropped && n.dropped_from.is_some_and(|s| s.accepts_writes())
        });
        if dropped_writer {
            return;
        }
        let alive = |n: &Node| n.down_until.is_none() && !n.frozen() && n.pg.running;
        let Some(p) = (0..self.nodes.len())
            .find(|i| alive(&self.nodes[*i]) && self.nodes[*i].pg.accepts_writes())
        else {
            return;
        };
        let registered: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != p && self.monitor.stored.node(self.nodes[*j].id).is_some())
            .collect();
        let all_stream = !registered.is_empty()
            && registered
                .iter()
                .all(|j| self.nodes[*j].pg.streaming_from == Some(p));
        if all_stream {
            self.needless_failovers += 1;
            self.log(format!(
                "NEEDLESS failover: node {} was healthy and every other node streamed from it",
                p + 1
            ));
        }
    }

    /// Liveness: once the faults healed, the group has one writable
    /// primary and every other node is its secondary. A machine lost for
    /// good is left out; with one (or with a standby that may never be
    /// promoted) the group may also end waiting, provided the monitor
    /// says what for (promise 3).
    pub(super) fn check_converged(&mut self) -> Result<(), String> {
        let view = self.monitor.view();
        let lost: Vec<i64> = self.nodes.iter().filter(|n| n.lost).map(|n| n.id).collect();
        let nodes: Vec<_> = view
            .nodes
            .iter()
            .filter(|n| !lost.contains(&n.id))
            .collect();
        let converged = nodes.iter().all(|n| n.reported == n.assigned);
        // Without a quorum standby the primary stays wait_primary.
        let quorum_standby = |p: i64| nodes.iter().any(|n| n.id != p && n.replication_quorum);
        let primaries = nodes
            .iter()
            .filter(|n| match n.assigned {
                NodeState::Primary | NodeState::Single => true,
                NodeState::WaitPrimary => !quorum_standby(n.id),
                _ => false,
            })
            .count();
        let secondaries = nodes
            .iter()
            .filter(|n| n.assigned == NodeState::Secondary)
            .count();
        let remaining = self
            .nodes
            .iter()
            .filter(|n| !n.keeper.gone && !n.lost)
            .count();
        if converged && primaries == 1 && primaries + secondaries == remaining {
            return Ok(());
        }
        // Every machine is lost or dropped (seed 579259: the operator
        // dropped the standby, then the last node's machine was lost for
        // good): there is nothing left to converge.
        if remaining == 0 {
            return Ok(());
        }
        // A wait is allowed only for what may have no safe way forward: a
        // lost machine, or a priority-0 node (the node itself, or a dropped
        // primary whose only complete standby it is). Any other named wait
        // is a liveness failure like no wait at all.
        let wait = pgpilot_monitor::fsm::current_wait(&view, self.timestamp(), self.monitor.cfg());
        let prio0: Vec<i64> = (0..self.nodes.len())
            .filter(|i| self.params.priorities.get(*i) == Some(&0))
            .map(|i| self.nodes[i].id)
            .collect();
        let allowed = wait.as_ref().is_some_and(|(id, why)| {
            lost.contains(id)
                || prio0.contains(id)
                || (!prio0.is_empty()
                    && why.starts_with("no standby is promoted yet after primary node")
                    && view
                        .node(*id)
                        .is_some_and(|n| n.assigned == NodeState::Dropped))
        });
        if let Some((_, w)) = wait.filter(|_| allowed) {
            self.log(format!("ENDED WAITING (allowed here): {w}"));
            self.ended_waiting = Some(w);
            return Ok(());
        }
        let states: Vec<String> = view
            .nodes
            .iter()
            .map(|n| format!("node {}: {}/{}", n.id, n.reported, n.assigned))
            .collect();
        let what = format!(
            "no convergence {} s after the faults healed: {}{}",
            self.params.converge_within_ms / 1000,
            states.join(", "),
            view.waiting_for
                .as_ref()
                .map_or(String::new(), |w| format!("; the monitor says: {w}"))
        );
        self.violate(what.clone());
        Err(what)
    }
}
