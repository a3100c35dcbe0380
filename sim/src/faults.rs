//! The faults, by name, with their seeded starts and ends, and the
//! operator's drops.

use pgpilot_proto::NodeState;
use rand::Rng;

use super::{Cut, World};

/// A fault the simulation injects. The order is part of every seed: a
/// seed draws an index into [`FAULTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The whole machine (keeper and PostgreSQL) is down for a while.
    MachineCrash,
    PgKilled,
    /// The keeper process dies (PostgreSQL with it) and restarts later.
    KeeperKilled,
    /// SIGSTOP: the machine stops running, then resumes.
    Freeze,
    /// The link between a node and another party (node or monitor) cut.
    Partition,
    /// A node cut from every other party.
    Isolation,
    /// The monitor process is down; it restarts with its memory lost.
    MonitorDown,
    /// PostgreSQL dies and fails to start for a while.
    PgStartFails,
    /// PostgreSQL crashes soon after every start for a while.
    CrashLoop,
    /// The keeper's status reads fail or time out for a while.
    StatusFails,
    /// The operator drops a node (forced or not).
    OperatorDrop,
    /// Replay stops advancing for a while (a slow disk, a long CHECKPOINT
    /// or lock conflict on a standby): promotion and report_lsn wait.
    SlowReplay,
    /// Name lookups fail on a node for a while: connections it has stay
    /// up, new ones (to the monitor, the WAL receiver's to its upstream)
    /// cannot be made.
    DnsFails,
}

const FAULTS: [Fault; 13] = [
    Fault::MachineCrash,
    Fault::PgKilled,
    Fault::KeeperKilled,
    Fault::Freeze,
    Fault::Partition,
    Fault::Isolation,
    Fault::MonitorDown,
    Fault::PgStartFails,
    Fault::CrashLoop,
    Fault::StatusFails,
    Fault::OperatorDrop,
    Fault::SlowReplay,
    Fault::DnsFails,
];

impl World {
    /// Starts and ends faults.
    pub(super) fn faults(&mut self) {
        let now = self.now;
        // Ends first.
        if self.monitor_down_until.is_some_and(|t| t <= now) {
            self.monitor_down_until = None;
            // Half the time the wall clock was stepped meanwhile, by up to
            // an hour either way.
            if self.rng.random_bool(0.5) {
                self.monitor_clock_step_ms += self.rng.random_range(-3_600_000..=3_600_000);
            }
            let ts = self.timestamp();
            self.monitor.restart(ts);
            self.log(format!(
                "monitor back (in-memory state lost), its wall clock stepped by {} s in all",
                self.monitor_clock_step_ms / 1000
            ));
        }
        self.cuts.retain(|c| c.until > now);
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if n.frozen_until.is_some_and(|t| t <= now) {
                n.frozen_until = None;
                self.log(format!("node {} resumed", i + 1));
            }
            let n = &mut self.nodes[i];
            if n.down_until.is_some_and(|t| t <= now) {
                n.down_until = None;
                n.keeper.restart(now);
                self.log(format!("node {} machine back, keeper starts", i + 1));
            }
            let n = &mut self.nodes[i];
            if n.keeper_down_until.is_some_and(|t| t <= now) {
                n.keeper_down_until = None;
                n.keeper.restart(now);
                self.log(format!("node {} keeper restarted", i + 1));
            }
            let n = &mut self.nodes[i];
            for until in [
                &mut n.start_fails_until,
                &mut n.crash_loop_until,
                &mut n.status_fails_until,
                &mut n.replay_stalled_until,
                &mut n.dns_fails_until,
            ] {
                if until.is_some_and(|t| t <= now) {
                    *until = None;
                }
            }
            // A crash loop: PostgreSQL dies a moment after each start.
            if n.crash_loop_until.is_some() && n.pg.running && self.rng.random_bool(0.5) {
                n.pg.kill();
                self.log(format!(
                    "FAULT node {} postgres crashed (crash loop)",
                    i + 1
                ));
            }
        }
        if now == self.params.heal_at_ms {
            self.heal();
            return;
        }
        if now > self.params.heal_at_ms {
            // About 5 s after the heal on average, and at the latest 20 s
            // after it: the group needs the rest of the convergence window
            // to go on without it (seed 662784: lost 0.4 s before the end).
            let lost_one = self.nodes.iter().any(|n| n.lost);
            let last_chance = now >= self.params.heal_at_ms + 20_000;
            if self.params.lose_one && !lost_one && (last_chance || self.rng.random_bool(0.02)) {
                self.lose_machine();
            }
            return;
        }
        if now < self.params.faults_from_ms {
            return;
        }
        if !self.rng.random_bool(self.params.fault_rate) {
            return;
        }
        let n = self.nodes.len();
        let i = self.rng.random_range(0..n);
        let dur = self.rng.random_range(1..=8) * 1000 + self.rng.random_range(0..10) * 100;
        match FAULTS[self.rng.random_range(0..FAULTS.len())] {
            Fault::PgStartFails => {
                let node = &mut self.nodes[i];
                node.start_fails_until = Some(now + dur * 4);
                node.pg.kill();
                self.log(format!(
                    "FAULT node {} postgres killed and fails to start for {} ms",
                    i + 1,
                    dur * 4
                ));
            }
            Fault::CrashLoop => {
                self.nodes[i].crash_loop_until = Some(now + dur * 4);
                self.log(format!(
                    "FAULT node {} postgres crash loop for {} ms",
                    i + 1,
                    dur * 4
                ));
            }
            Fault::StatusFails => {
                self.nodes[i].status_fails_until = Some(now + dur);
                self.log(format!(
                    "FAULT node {} status reads fail for {dur} ms",
                    i + 1
                ));
            }
            Fault::OperatorDrop => self.operator_drop(i),
            Fault::SlowReplay => {
                self.nodes[i].replay_stalled_until = Some(now + dur * 4);
                self.log(format!(
                    "FAULT node {} replay stalls for {} ms",
                    i + 1,
                    dur * 4
                ));
            }
            Fault::DnsFails => {
                self.nodes[i].dns_fails_until = Some(now + dur * 2);
                self.log(format!(
                    "FAULT node {} name lookups fail for {} ms",
                    i + 1,
                    dur * 2
                ));
            }
            Fault::MachineCrash => {
                let node = &mut self.nodes[i];
                if node.down_until.is_none() {
                    node.down_until = Some(now + dur);
                    node.pg.kill();
                    self.log(format!("FAULT node {} machine crash for {dur} ms", i + 1));
                }
            }
            Fault::PgKilled => {
                if self.nodes[i].pg.running {
                    self.nodes[i].pg.kill();
                    self.log(format!("FAULT node {} postgres killed", i + 1));
                }
            }
            Fault::KeeperKilled => {
                let node = &mut self.nodes[i];
                if node.keeper_down_until.is_none() && node.down_until.is_none() {
                    node.keeper_down_until = Some(now + dur / 2);
                    // PostgreSQL never outlives its keeper.
                    node.pg.kill();
                    self.log(format!(
                        "FAULT node {} keeper killed (postgres with it)",
                        i + 1
                    ));
                }
            }
            Fault::Freeze => {
                let node = &mut self.nodes[i];
                if node.frozen_until.is_none() {
                    node.frozen_until = Some(now + dur);
                    self.log(format!("FAULT node {} frozen for {dur} ms", i + 1));
                }
            }
            Fault::Partition => {
                let mut b = self.rng.random_range(0..=n);
                if b == i + 1 {
                    b = 0;
                }
                self.cuts.push(Cut {
                    a: i + 1,
                    b,
                    until: now + dur,
                });
                let other = if b == 0 {
                    "the monitor".to_string()
                } else {
                    format!("node {b}")
                };
                self.log(format!(
                    "FAULT partition node {} | {other} for {dur} ms",
                    i + 1
                ));
            }
            Fault::Isolation => {
                for b in 0..=n {
                    if b != i + 1 {
                        self.cuts.push(Cut {
                            a: i + 1,
                            b,
                            until: now + dur,
                        });
                    }
                }
                self.log(format!("FAULT node {} isolated for {dur} ms", i + 1));
            }
            Fault::MonitorDown => {
                if self.monitor_down_until.is_none() {
                    self.monitor_down_until = Some(now + dur / 2);
                    self.log(format!("FAULT monitor down for {} ms", dur / 2));
                }
            }
        }
    }

    pub(super) fn heal(&mut self) {
        self.log("HEAL: every fault ends".into());
        self.cuts.clear();
        let now = self.now;
        if self.monitor_down_until.take().is_some() {
            let ts = self.timestamp();
            self.monitor.restart(ts);
        }
        for n in self.nodes.iter_mut().filter(|n| !n.lost) {
            n.frozen_until = None;
            n.start_fails_until = None;
            n.crash_loop_until = None;
            n.status_fails_until = None;
            n.replay_stalled_until = None;
            n.dns_fails_until = None;
            // Both faults end (`a || b` would leave the second one set
            // when the first was).
            let machine = n.down_until.take().is_some();
            let keeper = n.keeper_down_until.take().is_some();
            if machine || keeper {
                n.keeper.restart(now);
            }
        }
    }
    /// The operator drops node `i` (at most once per run, never the last
    /// node): with `--force` as for a machine that is gone for good (it is
    /// taken away for the rest of the run), or normally, when its keeper
    /// takes it out. A writer is dropped only as a primary with
    /// synchronous replication on: dropping a wait_primary leaves no
    /// standby known to hold every commit, and the group then waits for
    /// an operator decision (perform failover, not simulated yet).
    fn operator_drop(&mut self, i: usize) {
        if !self.params.drops || self.dropped_one {
            return;
        }
        let id = self.nodes[i].id;
        let stored = &self.monitor.stored;
        let Some(node) = stored.node(id) else {
            return;
        };
        let others = stored
            .nodes
            .iter()
            .filter(|n| n.id != id && n.assigned != NodeState::Dropped)
            .count();
        let writer_with_sync_off = node.assigned.accepts_writes()
            && !(node.assigned == NodeState::Primary && node.reported == NodeState::Primary);
        if others == 0 || writer_with_sync_off || self.monitor_down_until.is_some() {
            return;
        }
        let force = self.rng.random_bool(0.5);
        let ts = self.timestamp();
        let changes = match self.monitor.drop_node(id, force, ts) {
            Ok(changes) => changes,
            // The monitor says no (it could lose acknowledged commits):
            // the operator is told why, nothing changed.
            Err(e) => {
                self.log(format!("OPERATOR drop node {id} refused: {e}"));
                return;
            }
        };
        if force {
            let n = &mut self.nodes[i];
            n.pg.kill();
            n.keeper.gone = true;
        }
        self.dropped_one = true;
        self.log(format!(
            "OPERATOR drop node {id}{}",
            if force {
                " --force (its machine is gone for good)"
            } else {
                ""
            }
        ));
        self.note_assignments(changes);
    }

    /// One machine is gone for good: it never comes back and nobody
    /// drops it (the operator is away).
    fn lose_machine(&mut self) {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].keeper.gone)
            .collect();
        if alive.len() < 2 {
            return;
        }
        let i = alive[self.rng.random_range(0..alive.len())];
        self.lose(i);
    }

    /// Freezes node `i` (SIGSTOP of every process) for `dur` ms (for
    /// scenario tests; the seeded schedule uses the same fault).
    pub fn freeze(&mut self, i: usize, dur: u64) {
        self.nodes[i].frozen_until = Some(self.now + dur);
        self.log(format!("FAULT node {} frozen for {dur} ms", i + 1));
    }

    /// Machine `i` is gone for good (also for scenario tests).
    pub fn lose(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.down_until = Some(u64::MAX);
        node.frozen_until = None;
        node.pg.kill();
        node.lost = true;
        self.log(format!("FAULT node {} machine lost for good", i + 1));
    }

    /// Cuts node `i` off from every other party for `dur` ms (for
    /// scenario tests; the seeded schedule uses the same fault).
    pub fn isolate(&mut self, i: usize, dur: u64) {
        let now = self.now;
        for b in 0..=self.nodes.len() {
            if b != i + 1 {
                self.cuts.push(Cut {
                    a: i + 1,
                    b,
                    until: now + dur,
                });
            }
        }
        self.log(format!("FAULT node {} isolated for {dur} ms", i + 1));
    }
}
