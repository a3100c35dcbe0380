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

mod beside;
mod faults;
mod invariants;
mod keeper;
mod monitor;
pub mod mutations;
mod operator;
mod pg;
mod replication;
mod steps;
#[cfg(test)]
mod tests;

pub use pgpilot_monitor::core::Core;

use std::collections::VecDeque;
use std::time::Duration;

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
    /// Each machine's clock rate against the monitor's. The lease gate's
    /// clock margin (300 ms on a 1.2 s lease) covers rates down to 0.8.
    pub clock_rates: Vec<f64>,
    /// Candidate priority of each node (0: never promoted).
    pub priorities: Vec<i32>,
    /// Soon after the heal, one machine is lost for good (never back, and
    /// nobody drops it): the group must go on without it, or say what it
    /// waits for.
    pub lose_one: bool,
    /// The operator switches over and changes settings during the faults
    /// (`operator.rs`).
    pub operator: bool,
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
            clock_rates: (0..nodes as u64)
                .map(|i| match (seed / 7 + i) % 5 {
                    0 => 0.81,
                    1 => 0.9,
                    _ => 1.0,
                })
                .collect(),
            // Sometimes the last node is never promoted, and sometimes
            // one node is preferred: an election's winner by priority is
            // then often behind another voter (fast_forward).
            priorities: (0..nodes)
                .map(|i| {
                    if seed % 11 == 6 && i == nodes - 1 {
                        0
                    } else if seed % 11 == 2 && i as u64 == (seed / 11) % nodes as u64 {
                        90
                    } else {
                        50
                    }
                })
                .collect(),
            lose_one: seed % 13 == 5,
            operator: seed % 2 == 0,
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
    /// Replay does not advance until then.
    pub replay_stalled_until: Option<u64>,
    /// Name lookups fail until then: no new connection from this node.
    pub dns_fails_until: Option<u64>,
    /// The keeper's connection to the monitor broke (it found the monitor
    /// unreachable) and has not been made again.
    pub monitor_conn_broken: bool,
    /// How fast this machine's monotonic clock runs against the
    /// monitor's (1.0, or slower: its lease then lasts longer in truth).
    pub clock_rate: f64,
    /// The machine is gone for good: down, and no heal brings it back.
    pub lost: bool,
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
    /// The operator's own stream (see `operator.rs`).
    op_rng: StdRng,
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
    /// Writers the operator failed over from with --allow-data-loss, until
    /// they stop taking writes: what they acknowledge may be lost.
    forgiven: Vec<usize>,
    /// (id, node index, time) of each acknowledgement, for messages.
    ack_log: Vec<(u64, usize, u64)>,
    trace: VecDeque<String>,
    pub violation: Option<String>,
    /// How many trace lines to keep (a replay keeps them all).
    pub trace_limit: usize,
    /// Failovers decided while the primary was healthy and every other
    /// node streamed from it (counted, reported with the seed sweep).
    pub needless_failovers: u32,
    /// Election winners told to fast_forward, and those of them that
    /// finished it (promoted next with everything the voters held).
    pub fast_forwards: (u32, u32),
    /// The generation last seen, to spot each new promotion decision.
    last_generation: i64,
    /// The operator dropped a node already (at most one per run).
    dropped_one: bool,
    /// How far the wall clock was stepped (NTP, an operator) before the
    /// running monitor process started: it reads the wall clock once.
    monitor_clock_step_ms: i64,
    /// What the monitor said the group waits for when the run ended
    /// without converging, where that is allowed (a machine lost for good,
    /// a standby that may never be promoted).
    pub ended_waiting: Option<String>,
    /// Test-only: the simulated keeper skips the wait for a synchronous
    /// standby before it reports `primary` (the planner's
    /// `Step::WaitSyncStandby`), to prove the simulation notices.
    pub skip_sync_wait: bool,
    /// Test-only: a voter's simulated WAL receiver ignores the keeper's
    /// order to stop (it keeps following the old primary), to prove the
    /// simulation notices.
    pub keep_streaming: bool,
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
                replay_stalled_until: None,
                dns_fails_until: None,
                monitor_conn_broken: false,
                clock_rate: params.clock_rates.get(i).copied().unwrap_or(1.0),
                lost: false,
            })
            .collect();
        World {
            params,
            rng: StdRng::seed_from_u64(seed),
            op_rng: StdRng::seed_from_u64(seed ^ 0x6f70_6572_6174_6f72),
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
            forgiven: Vec::new(),
            ack_log: Vec::new(),
            trace: VecDeque::new(),
            violation: None,
            trace_limit: TRACE_LINES,
            skip_sync_wait: false,
            keep_streaming: false,
            needless_failovers: 0,
            fast_forwards: (0, 0),
            last_generation: 1,
            dropped_one: false,
            monitor_clock_step_ms: 0,
            ended_waiting: None,
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
            if c.goal == pgpilot_proto::NodeState::FastForward {
                self.fast_forwards.0 += 1;
            }
            if c.goal == pgpilot_proto::NodeState::PreparePromotion
                && c.reported == pgpilot_proto::NodeState::FastForward
            {
                self.fast_forwards.1 += 1;
            }
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
                    k.next_at = k.next_at.min(self.now + TICK_MS);
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
        self.operator();
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
