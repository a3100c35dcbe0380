//! Deterministic simulation of the monitor and its keepers (issue #4,
//! DESIGN.md §9.2).
//!
//! The real pure cores run here: the monitor's core
//! ([`pgpilot_monitor::core::Core`], every operation the daemon runs)
//! behind an in-memory stand-in for the store ([`monitor::SimMonitor`]), and
//! the keeper's planner ([`pgpilot_keeper::plan`]) behind a stand-in for
//! the agent loop ([`keeper`]). PostgreSQL ([`pg::SimPg`]), the network,
//! the clock and every fault are simulated; one seeded RNG decides
//! everything, so a seed replays exactly.
//!
//! After every 100 ms step the invariants are checked:
//! - at most one node accepts writes, and every acknowledged commit is in
//!   the WAL of every node that accepts writes (so no acknowledged write is
//!   ever lost to a failover);
//! - a keeper never acts on a goal older than a generation it has seen;
//! - no keeper is ever given a goal it has no transition for;
//! - once the faults heal, the group converges to one primary and its
//!   secondaries within a bounded time.

mod keeper;
mod monitor;
pub mod mutations;
mod pg;
#[cfg(test)]
mod tests;

pub use pgpilot_monitor::core::Core;

use std::collections::VecDeque;
use std::time::Duration;

use pgpilot_keeper::plan::Role;
use pgpilot_proto::NodeState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use keeper::SimKeeper;
use monitor::{Assigned, SimMonitor};
use pg::SimPg;
use pgpilot_monitor::fsm::{FsmConfig, Health, Timestamp};

/// One simulation step.
pub const TICK_MS: u64 = 100;
/// How many trace lines a failure prints.
const TRACE_LINES: usize = 400;

/// The shape of one run.
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    /// Faults start once the group had time to form.
    pub faults_from_ms: u64,
    /// Faults are injected until then; then everything heals.
    pub heal_at_ms: u64,
    /// The group must have converged this long after the heal.
    pub converge_within_ms: u64,
    /// Chance per step that a new fault starts.
    pub fault_rate: f64,
    /// Replication quorum of each node (a node without it is an
    /// asynchronous standby that never acknowledges commits).
    pub quorum: Vec<bool>,
    /// The operator may drop one node during the faults.
    pub drops: bool,
}

impl Params {
    pub fn for_seed(seed: u64) -> Params {
        let nodes = if seed % 3 == 2 { 3 } else { 2 };
        let mut quorum = vec![true; nodes];
        if seed % 5 == 1 {
            quorum[nodes - 1] = false;
        }
        Params {
            nodes,
            faults_from_ms: 8_000,
            heal_at_ms: 48_000,
            converge_within_ms: 60_000,
            fault_rate: 0.03,
            quorum,
            drops: seed % 4 == 3,
        }
    }
}

pub struct Node {
    pub id: i64,
    pub pg: SimPg,
    pub keeper: SimKeeper,
    pub frozen_until: Option<u64>,
    /// The whole machine is down (keeper and PostgreSQL) until then.
    pub down_until: Option<u64>,
    /// The keeper process is down until then (PostgreSQL died with it).
    pub keeper_down_until: Option<u64>,
    /// PostgreSQL fails to start until then (a broken setting, a full disk).
    pub start_fails_until: Option<u64>,
    /// PostgreSQL crashes soon after every start until then.
    pub crash_loop_until: Option<u64>,
    /// The keeper's status query fails or times out until then.
    pub status_fails_until: Option<u64>,
}

impl Node {
    fn frozen(&self) -> bool {
        self.frozen_until.is_some()
    }

    /// Its keeper process runs and is not frozen (it reached `dropped` and
    /// exited, or was dropped for good with its machine).
    fn keeper_runs(&self) -> bool {
        self.down_until.is_none()
            && self.keeper_down_until.is_none()
            && !self.frozen()
            && !self.keeper.gone
    }
}

/// A link cut between two parties (0 = the monitor, i = node i) until a time.
#[derive(Clone, Copy, Debug)]
struct Cut {
    a: usize,
    b: usize,
    until: u64,
}

pub struct World {
    params: Params,
    rng: StdRng,
    /// Simulated milliseconds since the start.
    pub now: u64,
    base: Timestamp,
    pub monitor: SimMonitor,
    monitor_down_until: Option<u64>,
    next_probe: u64,
    pub nodes: Vec<Node>,
    cuts: Vec<Cut>,
    next_record: u64,
    /// Commits waiting for their synchronous acknowledgement: (node index, id).
    pending: Vec<(usize, u64)>,
    acked: Vec<u64>,
    /// (id, node index, time) of each acknowledgement, for messages.
    ack_log: Vec<(u64, usize, u64)>,
    trace: VecDeque<String>,
    pub violation: Option<String>,
    /// How many trace lines to keep (a replay keeps them all).
    pub trace_limit: usize,
    /// Failovers decided while the primary was healthy and every other
    /// node streamed from it (counted, reported with the seed sweep).
    pub needless_failovers: u32,
    /// The generation last seen, to spot each new promotion decision.
    last_generation: i64,
    /// The operator dropped a node already (at most one per run).
    dropped_one: bool,
    /// How far the wall clock was stepped (NTP, an operator) before the
    /// running monitor process started: it reads the wall clock once.
    monitor_clock_step_ms: i64,
    /// Test-only: the simulated keeper skips the wait for a synchronous
    /// standby before it reports `primary` (the planner's
    /// `Step::WaitSyncStandby`), to prove the simulation notices.
    pub skip_sync_wait: bool,
}

impl World {
    pub fn new(seed: u64, params: Params) -> World {
        World::with_core(seed, params, Core::new(FsmConfig::default()))
    }

    /// A world whose monitor runs `core` (a mutation test passes one with
    /// a rule replaced).
    pub fn with_core(seed: u64, params: Params, core: Core) -> World {
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a fixed time");
        let nodes = (0..params.nodes)
            .map(|i| Node {
                id: i as i64 + 1,
                pg: SimPg::default(),
                keeper: SimKeeper::new(i as u64 * 1000),
                frozen_until: None,
                down_until: None,
                keeper_down_until: None,
                start_fails_until: None,
                crash_loop_until: None,
                status_fails_until: None,
            })
            .collect();
        World {
            params,
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            base,
            monitor: SimMonitor::new(core, base),
            monitor_down_until: None,
            next_probe: 1000,
            nodes,
            cuts: Vec::new(),
            next_record: 1,
            pending: Vec::new(),
            acked: Vec::new(),
            ack_log: Vec::new(),
            trace: VecDeque::new(),
            violation: None,
            trace_limit: TRACE_LINES,
            skip_sync_wait: false,
            needless_failovers: 0,
            last_generation: 1,
            dropped_one: false,
            monitor_clock_step_ms: 0,
        }
    }

    /// The monitor's clock: monotonic within one monitor process, with
    /// the wall-clock step the process found when it started.
    pub fn timestamp(&self) -> Timestamp {
        self.base + chrono::Duration::milliseconds(self.now as i64 + self.monitor_clock_step_ms)
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= self.trace_limit {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>7.1}s {line}", self.now as f64 / 1000.0));
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.log(format!("VIOLATION: {what}"));
            self.violation = Some(what);
        }
    }

    pub fn trace(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn new_record(&mut self) -> u64 {
        self.next_record += 1;
        self.next_record
    }

    /// Whether parties `a` and `b` can talk (0 = monitor, i = node i).
    fn link(&self, a: usize, b: usize) -> bool {
        !self
            .cuts
            .iter()
            .any(|c| (c.a == a && c.b == b) || (c.a == b && c.b == a))
    }

    fn monitor_reachable(&self, node: usize) -> bool {
        self.monitor_down_until.is_none() && self.link(0, node + 1)
    }

    fn note_assignments(&mut self, changes: Vec<Assigned>) {
        let generation = self.monitor.stored.generation;
        if generation > self.last_generation {
            self.last_generation = generation;
            self.check_needless_failover();
        }
        let woke = !changes.is_empty();
        for c in changes {
            self.log(format!(
                "monitor: node {} (reported {}) assigned {}: {}",
                c.node_id, c.reported, c.goal, c.reason
            ));
        }
        if woke {
            // The Watch stream wakes every reachable keeper of the group.
            for i in 0..self.nodes.len() {
                if self.monitor_reachable(i) {
                    let k = &mut self.nodes[i].keeper;
                    k.next_at = k.next_at.min((self.now + TICK_MS).max(k.busy_until));
                }
            }
        }
    }

    /// Runs the whole schedule; returns the first violation.
    pub fn run(&mut self) -> Result<(), String> {
        let end = self.params.heal_at_ms + self.params.converge_within_ms;
        while self.now < end {
            self.step();
            if let Some(v) = &self.violation {
                return Err(v.clone());
            }
        }
        self.check_converged()
    }

    pub fn step(&mut self) {
        self.now += TICK_MS;
        self.faults();
        self.replicate();
        self.acknowledge();
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.random_range(0..=i);
            order.swap(i, j);
        }
        for i in order {
            if self.nodes[i].keeper_runs() && self.nodes[i].keeper.next_at <= self.now {
                self.keeper_tick(i);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].keeper_runs() {
                self.watchdog(i);
            }
        }
        self.monitor_step();
        self.clients();
        self.check();
    }

    fn monitor_step(&mut self) {
        if self.monitor_down_until.is_some() {
            return;
        }
        let now = self.timestamp();
        if self.now >= self.next_probe {
            self.next_probe = self.now + 1000;
            for i in 0..self.nodes.len() {
                let n = &self.nodes[i];
                if self.monitor.stored.node(n.id).is_none() {
                    continue;
                }
                let ok =
                    self.link(0, i + 1) && n.down_until.is_none() && !n.frozen() && n.pg.running;
                let health = if ok { Health::Good } else { Health::Bad };
                let id = n.id;
                let changes = self.monitor.probe(id, health, now);
                self.note_assignments(changes);
            }
        }
        let changes = self.monitor.tick(now);
        self.note_assignments(changes);
    }

    /// Standbys stream from their upstream when they can: a standby whose
    /// WAL is a prefix of the upstream's receives all of it at once.
    fn replicate(&mut self) {
        // Replay runs one step behind what was received.
        for n in &mut self.nodes {
            if n.pg.running && !n.frozen() {
                if let Some(d) = n.pg.data.as_mut() {
                    d.replayed = d.wal.len();
                }
            }
        }
        for j in 0..self.nodes.len() {
            let n = &self.nodes[j];
            let upstream = match n.pg.data.as_ref().map(|d| &d.config) {
                Some(Role::Standby { upstream: Some(u) }) => Some((u.node_id - 1) as usize),
                _ => None,
            };
            let mut from = None;
            if let Some(u) = upstream {
                let src = &self.nodes[u];
                let ok = n.pg.running
                    && n.pg.in_recovery
                    && !n.frozen()
                    && src.pg.running
                    && !src.frozen()
                    && u != j
                    && self.link(j + 1, u + 1);
                if ok {
                    let (mine, theirs) = (n.pg.data.as_ref(), src.pg.data.as_ref());
                    if let (Some(mine), Some(theirs)) = (mine, theirs) {
                        if mine.is_prefix_of(theirs) {
                            from = Some((u, theirs.wal.clone(), theirs.tli));
                        }
                    }
                }
            }
            let now = self.now;
            let n = &mut self.nodes[j];
            match from {
                Some((u, wal, tli)) => {
                    let d = n.pg.data.as_mut().expect("checked");
                    if d.wal.len() < wal.len() {
                        for id in &wal[d.wal.len()..] {
                            d.ids.insert(*id);
                        }
                        d.wal = wal;
                    }
                    d.tli = d.tli.max(tli);
                    n.pg.streaming_from = Some(u);
                    n.pg.last_contact = Some(now);
                }
                None => {
                    if !n.frozen() {
                        n.pg.streaming_from = None;
                    }
                }
            }
        }
    }

    /// A commit is acknowledged once enough of the standbys named in
    /// synchronous_standby_names have flushed it (PostgreSQL's ANY k).
    fn acknowledge(&mut self) {
        let mut still = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (i, id) in pending {
            let n = &self.nodes[i];
            if !n.pg.running || n.down_until.is_some() {
                continue; // the client got an error: not acknowledged
            }
            if n.frozen() {
                still.push((i, id));
                continue;
            }
            let ok = match n.pg.ssn().and_then(pg::parse_ssn) {
                None => true,
                Some((k, ids)) => {
                    let have = ids
                        .iter()
                        .filter(|j| {
                            let s = &self.nodes[**j - 1];
                            s.pg.streaming_from == Some(i)
                                && s.pg.data.as_ref().is_some_and(|d| d.ids.contains(&id))
                        })
                        .count();
                    have >= k
                }
            };
            if ok {
                self.acked.push(id);
                self.ack_log.push((id, i, self.now));
            } else {
                still.push((i, id));
            }
        }
        self.pending = still;
    }

    /// Clients write to every node that accepts writes.
    fn clients(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.pg.accepts_writes()
                && !n.frozen()
                && n.down_until.is_none()
                && self.rng.random_bool(0.5)
            {
                let id = self.new_record();
                let n = &mut self.nodes[i];
                n.pg.data.as_mut().expect("writable").append(id);
                self.pending.push((i, id));
            }
        }
    }

    fn check(&mut self) {
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
    fn check_needless_failover(&mut self) {
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

    fn check_converged(&mut self) -> Result<(), String> {
        let view = self.monitor.view();
        let converged = view.nodes.iter().all(|n| n.reported == n.assigned);
        // Without a quorum standby the primary stays wait_primary.
        let quorum_standby = |p: i64| view.nodes.iter().any(|n| n.id != p && n.replication_quorum);
        let primaries = view
            .nodes
            .iter()
            .filter(|n| match n.assigned {
                NodeState::Primary | NodeState::Single => true,
                NodeState::WaitPrimary => !quorum_standby(n.id),
                _ => false,
            })
            .count();
        let secondaries = view
            .nodes
            .iter()
            .filter(|n| n.assigned == NodeState::Secondary)
            .count();
        let remaining = self.nodes.iter().filter(|n| !n.keeper.gone).count();
        if converged && primaries == 1 && primaries + secondaries == remaining {
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

    /// Starts and ends faults.
    fn faults(&mut self) {
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
            ] {
                if until.is_some_and(|t| t <= now) {
                    *until = None;
                }
            }
            // A crash loop: PostgreSQL dies a moment after each start.
            if n.crash_loop_until.is_some() && n.pg.running && self.rng.random_bool(0.5) {
                n.pg.stop();
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
        if now < self.params.faults_from_ms || now >= self.params.heal_at_ms {
            return;
        }
        if !self.rng.random_bool(self.params.fault_rate) {
            return;
        }
        let n = self.nodes.len();
        let i = self.rng.random_range(0..n);
        let dur = self.rng.random_range(1..=8) * 1000 + self.rng.random_range(0..10) * 100;
        match self.rng.random_range(0..11) {
            7 => {
                let node = &mut self.nodes[i];
                node.start_fails_until = Some(now + dur * 4);
                node.pg.stop();
                self.log(format!(
                    "FAULT node {} postgres killed and fails to start for {} ms",
                    i + 1,
                    dur * 4
                ));
            }
            8 => {
                self.nodes[i].crash_loop_until = Some(now + dur * 4);
                self.log(format!(
                    "FAULT node {} postgres crash loop for {} ms",
                    i + 1,
                    dur * 4
                ));
            }
            9 => {
                self.nodes[i].status_fails_until = Some(now + dur);
                self.log(format!(
                    "FAULT node {} status reads fail for {dur} ms",
                    i + 1
                ));
            }
            10 => self.operator_drop(i),
            0 => {
                let node = &mut self.nodes[i];
                if node.down_until.is_none() {
                    node.down_until = Some(now + dur);
                    node.pg.stop();
                    self.log(format!("FAULT node {} machine crash for {dur} ms", i + 1));
                }
            }
            1 => {
                if self.nodes[i].pg.running {
                    self.nodes[i].pg.stop();
                    self.log(format!("FAULT node {} postgres killed", i + 1));
                }
            }
            2 => {
                let node = &mut self.nodes[i];
                if node.keeper_down_until.is_none() && node.down_until.is_none() {
                    node.keeper_down_until = Some(now + dur / 2);
                    // PostgreSQL never outlives its keeper.
                    node.pg.stop();
                    self.log(format!(
                        "FAULT node {} keeper killed (postgres with it)",
                        i + 1
                    ));
                }
            }
            3 => {
                let node = &mut self.nodes[i];
                if node.frozen_until.is_none() {
                    node.frozen_until = Some(now + dur);
                    self.log(format!("FAULT node {} frozen for {dur} ms", i + 1));
                }
            }
            4 => {
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
            5 => {
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
            _ => {
                if self.monitor_down_until.is_none() {
                    self.monitor_down_until = Some(now + dur / 2);
                    self.log(format!("FAULT monitor down for {} ms", dur / 2));
                }
            }
        }
    }

    fn heal(&mut self) {
        self.log("HEAL: every fault ends".into());
        self.cuts.clear();
        let now = self.now;
        if self.monitor_down_until.take().is_some() {
            let ts = self.timestamp();
            self.monitor.restart(ts);
        }
        for n in &mut self.nodes {
            n.frozen_until = None;
            n.start_fails_until = None;
            n.crash_loop_until = None;
            n.status_fails_until = None;
            // Both faults end (`a || b` would leave the second one set
            // when the first was).
            let machine = n.down_until.take().is_some();
            let keeper = n.keeper_down_until.take().is_some();
            if machine || keeper {
                n.keeper.restart(now);
            }
        }
    }
}

impl World {
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
            n.pg.stop();
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
}

/// The command that replays one seed, printed with every failure.
pub fn replay_command(seed: u64) -> String {
    format!(
        "PGPILOT_SIM_SEED={seed} cargo test -p pgpilot-sim --lib tests::replay_one_seed -- --nocapture"
    )
}

/// Duration as sim milliseconds.
pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
