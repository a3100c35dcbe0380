//! The operator's commands as seeded actions: planned switchovers (to the
//! best standby or a named one), `perform failover` with and without
//! `--allow-data-loss`, maintenance of a node (whose PostgreSQL the
//! operator may stop meanwhile; every maintenance ends after the heal),
//! candidate priority, replication quorum and number_sync_standbys changes, at any moment of the fault window,
//! through the monitor's real core like every other event. A command the
//! monitor refuses changes nothing; the trace says why.
//!
//! They draw from their own random stream, so that a seed's faults are
//! the same with operator actions on or off.

use pgpilot_monitor::core::PRIORITY_RANGE;
use pgpilot_proto::NodeState;
use rand::Rng;

use super::World;

/// Chance per step (10 ms) that the operator acts, inside the fault
/// window: about one command every 4 s.
const OPERATOR_RATE: f64 = 0.0025;

impl World {
    pub(super) fn operator(&mut self) {
        if self.params.operator && self.now >= self.params.heal_at_ms {
            self.end_maintenances();
        }
        if !self.params.operator
            || self.now < self.params.faults_from_ms
            || self.now >= self.params.heal_at_ms
            || self.monitor_down_until.is_some()
            || !self.op_rng.random_bool(OPERATOR_RATE)
        {
            return;
        }
        let ids: Vec<i64> = self
            .monitor
            .stored
            .nodes
            .iter()
            .filter(|n| n.assigned != NodeState::Dropped)
            .map(|n| n.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.op_rng.random_range(0..ids.len())];
        let ts = self.timestamp();
        let mut loss_allowed = false;
        let (what, result) = match self.op_rng.random_range(0..12) {
            10 => (
                format!("enable maintenance node {id}"),
                self.monitor
                    .operate(|core, g| core.enable_maintenance(g, id, true, ts)),
            ),
            11 => {
                // In maintenance, the operator stops its PostgreSQL (the
                // keeper must not start it again) before ending it.
                let i = (id - 1) as usize;
                let in_maintenance = self
                    .monitor
                    .stored
                    .node(id)
                    .is_some_and(|n| n.reported == NodeState::Maintenance);
                if in_maintenance && self.nodes[i].pg.running && self.op_rng.random_bool(0.5) {
                    self.nodes[i].pg.shut_down();
                    self.log(format!(
                        "OPERATOR stops postgres of node {id} (maintenance)"
                    ));
                    return;
                }
                (
                    format!("disable maintenance node {id}"),
                    self.monitor
                        .operate(|core, g| core.disable_maintenance(g, id, ts)),
                )
            }
            0..=3 => {
                let named = self.op_rng.random_bool(0.5).then_some(id);
                let what = match named {
                    Some(id) => format!("perform switchover --candidate node {id}"),
                    None => "perform switchover".to_string(),
                };
                (
                    what,
                    self.monitor
                        .operate(|core, g| core.switchover(g, named, ts)),
                )
            }
            4 | 5 => {
                // Mostly usable priorities; sometimes 0 (never promoted).
                let p = [0, 10, 50, 100][self.op_rng.random_range(0..4)];
                debug_assert!(PRIORITY_RANGE.contains(&p));
                (
                    format!("set node {id} candidate-priority {p}"),
                    self.monitor
                        .operate(|core, g| core.set_candidate_priority(g, id, p, ts)),
                )
            }
            6 | 7 => {
                let q = self.op_rng.random_bool(0.6);
                (
                    format!("set node {id} replication-quorum {q}"),
                    self.monitor
                        .operate(|core, g| core.set_replication_quorum(g, id, q, ts)),
                )
            }
            9 => {
                loss_allowed = self.op_rng.random_bool(0.5);
                (
                    format!(
                        "perform failover{}",
                        if loss_allowed {
                            " --allow-data-loss"
                        } else {
                            ""
                        }
                    ),
                    self.monitor
                        .operate(|core, g| core.failover(g, loss_allowed, ts)),
                )
            }
            _ => {
                let n = self.op_rng.random_range(0..=2);
                (
                    format!("set formation number-sync-standbys {n}"),
                    self.monitor
                        .operate(|core, g| core.set_number_sync_standbys(g, n, ts)),
                )
            }
        };
        match result {
            Ok(changes) => {
                self.log(format!("OPERATOR {what}"));
                // A switchover is a promotion the operator asked for, not
                // a needless failover.
                self.last_generation = self.monitor.stored.generation;
                if loss_allowed {
                    // The operator accepted losing what was acknowledged
                    // so far, and what the old writer acknowledges until
                    // it stops; nothing else may be lost.
                    self.acked.clear();
                    // Also one whose PostgreSQL is down for now but whose
                    // keeper is in a writable state: it restarts it as a
                    // writer while its lease lasts (seed 688592).
                    self.forgiven = (0..self.nodes.len())
                        .filter(|i| {
                            self.nodes[*i].pg.accepts_writes()
                                || self.nodes[*i]
                                    .keeper
                                    .engine
                                    .as_ref()
                                    .is_some_and(|e| e.state().current.accepts_writes())
                        })
                        .collect();
                }
                self.note_assignments(changes);
            }
            Err(e) => self.log(format!("OPERATOR {what} refused: {e}")),
        }
    }
}

impl World {
    /// After the heal the operator ends every maintenance (until the
    /// monitor accepts) and gives every node its candidate priority of the
    /// run's shape back (a group whose every standby has priority 0 waits
    /// for exactly that), so that the group can converge.
    fn end_maintenances(&mut self) {
        if self.monitor_down_until.is_some() {
            return;
        }
        let ts = self.timestamp();
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let want = self.params.priorities.get(i).copied().unwrap_or(50);
            if self
                .monitor
                .stored
                .node(id)
                .is_some_and(|n| n.candidate_priority != want)
            {
                if let Ok(changes) = self
                    .monitor
                    .operate(|core, g| core.set_candidate_priority(g, id, want, ts))
                {
                    self.log(format!(
                        "OPERATOR set node {id} candidate-priority {want} (after the heal)"
                    ));
                    self.note_assignments(changes);
                }
            }
        }
        // And the run's replication quorums and number_sync_standbys: a
        // group asked for more synchronous standbys than it has waits for
        // exactly that, and says so (seed 654350).
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let want = self.params.quorum.get(i).copied().unwrap_or(true);
            if self
                .monitor
                .stored
                .node(id)
                .is_some_and(|n| n.replication_quorum != want)
            {
                if let Ok(changes) = self
                    .monitor
                    .operate(|core, g| core.set_replication_quorum(g, id, want, ts))
                {
                    self.log(format!(
                        "OPERATOR set node {id} replication-quorum {want} (after the heal)"
                    ));
                    self.note_assignments(changes);
                }
            }
        }
        if self.monitor.stored.number_sync_standbys > 1 {
            if let Ok(changes) = self
                .monitor
                .operate(|core, g| core.set_number_sync_standbys(g, 1, ts))
            {
                self.log("OPERATOR set formation number-sync-standbys 1 (after the heal)".into());
                self.note_assignments(changes);
            }
        }
        let ids: Vec<i64> = self
            .monitor
            .stored
            .nodes
            .iter()
            .filter(|n| {
                n.assigned == NodeState::Maintenance && n.reported == NodeState::Maintenance
            })
            .map(|n| n.id)
            .collect();
        for id in ids {
            if let Ok(changes) = self
                .monitor
                .operate(|core, g| core.disable_maintenance(g, id, ts))
            {
                self.log(format!(
                    "OPERATOR disable maintenance node {id} (after the heal)"
                ));
                self.note_assignments(changes);
            }
        }
    }
}
