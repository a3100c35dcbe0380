//! The edge-table test: explore every configuration of a small group
//! reachable from registration under abstract keeper, Postgres, network,
//! clock and operator events, run `decide` to a fixpoint after each, and
//! check that the monitor only ever asks keepers for edges in
//! [`pgpilot_proto::EDGES`], that every edge there is asked for somewhere,
//! and that no two nodes may take writes at once.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use pgpilot_proto::NodeState::{self, *};
use pgpilot_proto::{Lsn, EDGES};

use super::builders::{t0, NodeExt, MB};
use super::*;

/// What a node's keeper knows that the monitor only learns by a report.
#[derive(Clone, Debug)]
struct Local {
    /// The keeper process runs and reaches the monitor.
    alive: bool,
    state: NodeState,
    pg_up: bool,
    tli: u32,
    /// The WAL receiver lost the primary at this time.
    lost_since: Option<Timestamp>,
    /// No standby streams from this (primary) node since.
    stall_since: Option<Timestamp>,
    far_behind: bool,
}

#[derive(Clone)]
struct Sim {
    now: Timestamp,
    next_id: i64,
    group: GroupView,
    local: HashMap<i64, Local>,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Converge(i64),
    Die(i64),
    Revive(i64),
    PgDie(i64),
    PgRevive(i64),
    Fence(i64),
    LoseRepl(i64),
    RegainRepl(i64),
    StallOn(i64),
    StallOff(i64),
    Far(i64),
    Near(i64),
    Drop(i64),
    Register,
    Advance(u64),
}

/// Limits of one exploration.
struct Limits {
    /// Node ids registered over the whole run.
    max_ids: i64,
    /// Rows at the same time.
    max_rows: usize,
    /// Explore LSN distance and primary-side stall events.
    lsn_and_stall: bool,
    /// Faults (dead keeper, Postgres down, replication lost, stall, far
    /// behind) present at once; failover needs two.
    max_faults: usize,
    /// Nodes the operator drops over the run.
    max_drops: usize,
    max_configs: usize,
}

fn runs(s: NodeState) -> bool {
    matches!(
        s,
        Single
            | WaitPrimary
            | Primary
            | ApplySettings
            | Catchingup
            | Secondary
            | PreparePromotion
            | StopReplication
    )
}

fn standby_like(s: NodeState) -> bool {
    matches!(s, Catchingup | Secondary)
}

impl Sim {
    fn new() -> Sim {
        let group = GroupView {
            formation: "default".into(),
            group_id: 0,
            number_sync_standbys: 1,
            generation: 1,
            nodes: vec![],
        };
        Sim {
            now: t0(),
            next_id: 1,
            group,
            local: HashMap::new(),
        }
    }

    fn faults(&self) -> usize {
        self.local
            .values()
            .map(|l| {
                usize::from(!l.alive)
                    + usize::from(l.alive && !l.pg_up && runs(l.state))
                    + usize::from(l.lost_since.is_some())
                    + usize::from(l.stall_since.is_some())
                    + usize::from(l.far_behind)
            })
            .sum()
    }

    fn events(&self, lim: &Limits, cfg: &FsmConfig) -> Vec<Ev> {
        let may_fail = self.faults() < lim.max_faults;
        // One step of 3.1 s crosses node_unhealthy_timeout and
        // replication_lost_timeout, two cross lease + margin, four the stall
        // timeout: every threshold of the default FsmConfig.
        let mut out = vec![Ev::Advance(3100)];
        if self.next_id <= lim.max_ids && self.group.nodes.len() < lim.max_rows {
            out.push(Ev::Register);
        }
        for n in &self.group.nodes {
            let l = &self.local[&n.id];
            let id = n.id;
            if l.alive && l.state != n.assigned {
                out.push(Ev::Converge(id));
            }
            if !l.alive {
                out.push(Ev::Revive(id));
            } else if may_fail {
                out.push(Ev::Die(id));
            }
            if l.alive && l.pg_up && may_fail {
                out.push(Ev::PgDie(id));
            }
            if l.alive && !l.pg_up && runs(l.state) {
                out.push(Ev::PgRevive(id));
            }
            if !l.alive && l.state.accepts_writes() && !lease_expired(n, self.now, cfg) {
                // The keeper fences only once its own lease is over.
            } else if !l.alive && l.state.accepts_writes() {
                out.push(Ev::Fence(id));
            }
            if l.alive && standby_like(l.state) {
                if l.lost_since.is_some() {
                    out.push(Ev::RegainRepl(id));
                } else if may_fail {
                    out.push(Ev::LoseRepl(id));
                }
                if lim.lsn_and_stall && l.far_behind {
                    out.push(Ev::Near(id));
                } else if lim.lsn_and_stall && may_fail {
                    out.push(Ev::Far(id));
                }
            }
            if l.alive && lim.lsn_and_stall && l.state.accepts_writes() {
                if l.stall_since.is_some() {
                    out.push(Ev::StallOff(id));
                } else if may_fail {
                    out.push(Ev::StallOn(id));
                }
            }
            let dropped = self
                .group
                .nodes
                .iter()
                .filter(|n| n.assigned == Dropped)
                .count();
            let removed = (self.next_id - 1) as usize - self.group.nodes.len();
            if n.assigned != Dropped && dropped + removed < lim.max_drops {
                out.push(Ev::Drop(id));
            }
        }
        out
    }

    /// Applies an event, then the keepers that are alive report.
    fn step(&mut self, ev: Ev) {
        self.now += chrono::Duration::milliseconds(10);
        let writable_tli = self
            .group
            .nodes
            .iter()
            .find(|n| n.assigned.accepts_writes())
            .map(|n| n.tli);
        let max_tli = self
            .group
            .nodes
            .iter()
            .map(|n| self.local[&n.id].tli)
            .max()
            .unwrap_or(1);
        let now = self.now;
        match ev {
            Ev::Advance(ms) => self.now += chrono::Duration::milliseconds(ms as i64),
            Ev::Register => {
                let id = self.next_id;
                self.next_id += 1;
                let goal = if self.group.nodes.is_empty() {
                    Single
                } else {
                    WaitStandby
                };
                let mut n = super::builders::node(id, Init).goal(goal);
                n.goal_changed_at = now;
                n.last_report = Some(now);
                n.pg_running = false;
                self.group.nodes.push(n);
                let l = Local {
                    alive: true,
                    state: Init,
                    pg_up: false,
                    tli: 1,
                    lost_since: None,
                    stall_since: None,
                    far_behind: false,
                };
                self.local.insert(id, l);
            }
            Ev::Drop(id) => {
                let n = self.group.nodes.iter_mut().find(|n| n.id == id).unwrap();
                n.assigned = Dropped;
                n.goal_changed_at = now;
            }
            Ev::Converge(id) => {
                let goal = self.group.node(id).unwrap().assigned;
                let l = self.local.get_mut(&id).unwrap();
                let from = l.state;
                l.state = goal;
                l.pg_up = runs(goal);
                if goal == StopReplication {
                    l.tli = max_tli + 1; // promotion opens a new timeline
                }
                if goal == Catchingup && matches!(from, WaitStandby | Demoted) {
                    l.tli = writable_tli.unwrap_or(l.tli); // base backup or rewind
                    l.lost_since = None;
                }
                if !goal.accepts_writes() {
                    l.stall_since = None;
                }
                if !standby_like(goal) {
                    l.lost_since = None;
                }
            }
            Ev::Die(id) => self.local.get_mut(&id).unwrap().alive = false,
            Ev::Revive(id) => {
                let l = self.local.get_mut(&id).unwrap();
                l.alive = true;
                l.pg_up = runs(l.state);
            }
            Ev::PgDie(id) => self.local.get_mut(&id).unwrap().pg_up = false,
            Ev::PgRevive(id) => self.local.get_mut(&id).unwrap().pg_up = true,
            Ev::Fence(id) => {
                let l = self.local.get_mut(&id).unwrap();
                l.state = DemoteTimeout;
                l.pg_up = false;
                l.stall_since = None;
            }
            Ev::LoseRepl(id) => self.local.get_mut(&id).unwrap().lost_since = Some(now),
            Ev::RegainRepl(id) => self.local.get_mut(&id).unwrap().lost_since = None,
            Ev::StallOn(id) => self.local.get_mut(&id).unwrap().stall_since = Some(now),
            Ev::StallOff(id) => self.local.get_mut(&id).unwrap().stall_since = None,
            Ev::Far(id) => self.local.get_mut(&id).unwrap().far_behind = true,
            Ev::Near(id) => self.local.get_mut(&id).unwrap().far_behind = false,
        }
        self.report();
    }

    fn report(&mut self) {
        let now = self.now;
        for n in &mut self.group.nodes {
            let l = &self.local[&n.id];
            if !l.alive {
                n.health = Health::Bad;
                continue;
            }
            n.reported = l.state;
            n.pg_running = l.pg_up;
            n.health = if l.pg_up { Health::Good } else { Health::Bad };
            n.last_report = Some(now);
            n.tli = l.tli;
            n.lsn = Lsn(if l.far_behind { 0 } else { 100 * MB });
            n.upstream_silent = Some(
                l.lost_since
                    .map_or(Duration::ZERO, |t| super::health::age(t, now)),
            );
            n.replication_stall_since = l.stall_since;
        }
    }

    /// The abstraction the search dedupes on: everything the rules and the
    /// events can tell apart, with times reduced to which thresholds they
    /// passed.
    fn key(&self, cfg: &FsmConfig) -> Vec<i64> {
        let now = self.now;
        let past = |t: Option<Timestamp>, limits: &[Duration]| -> i64 {
            match t {
                None => -1,
                Some(t) => {
                    let a = super::health::age(t, now);
                    limits.iter().filter(|d| a > **d).count() as i64
                }
            }
        };
        // Timelines only matter by equality: rank them, or repeated
        // failovers would make the space infinite.
        let mut tlis: Vec<u32> = self
            .group
            .nodes
            .iter()
            .flat_map(|n| [n.tli, self.local[&n.id].tli])
            .collect();
        tlis.sort_unstable();
        tlis.dedup();
        let tli = |t: u32| tlis.iter().position(|x| *x == t).unwrap() as i64;
        // Only rule 13 reads goal_changed_at: was a node dropped after the
        // primary's last goal change?
        let primary_gca = self
            .group
            .nodes
            .iter()
            .find(|n| n.assigned.accepts_writes())
            .map(|n| n.goal_changed_at);
        let mut k = vec![self.next_id];
        for n in &self.group.nodes {
            let l = &self.local[&n.id];
            let dropped_after =
                n.assigned == Dropped && primary_gca.is_some_and(|t| n.goal_changed_at > t);
            k.extend([
                n.id,
                n.reported as i64,
                n.assigned as i64,
                n.pg_running as i64,
                tli(n.tli),
                n.lsn.0 as i64,
                past(
                    n.last_report,
                    &[cfg.node_unhealthy_timeout, cfg.lease + cfg.clock_margin],
                ),
                n.upstream_silent
                    .map_or(-1, |d| (d >= cfg.replication_lost_timeout) as i64),
                past(n.replication_stall_since, &[cfg.replication_stall_timeout]),
                dropped_after as i64,
                l.alive as i64,
            ]);
            // What a dead keeper will report when it comes back; a live
            // one's local state is what it just reported.
            if !l.alive {
                k.extend([
                    l.state as i64,
                    tli(l.tli),
                    past(l.lost_since, &[cfg.replication_lost_timeout]),
                    past(l.stall_since, &[cfg.replication_stall_timeout]),
                    l.far_behind as i64,
                ]);
            }
        }
        k
    }
}

/// What one exploration saw.
#[derive(Default)]
struct Seen {
    /// (reported, goal) of every assignment to a node not in that goal, and
    /// every (reported, assigned) pair standing at a fixpoint (including the
    /// store's own registration and drop goals).
    edges: BTreeSet<(NodeState, NodeState)>,
    configs: usize,
}

/// Runs decide the way the store does (apply, decide again, at most 10
/// rounds) and checks that one call already reaches the fixpoint.
fn settle(sim: &mut Sim, cfg: &FsmConfig, seen: &mut Seen, trace: &[Ev]) {
    for round in 0..10 {
        let actions = decide(&sim.group, sim.now, cfg);
        if actions.is_empty() {
            return;
        }
        assert_eq!(
            round, 0,
            "decide did not reach its fixpoint in one call after {trace:?}: {actions:#?}"
        );
        let mut work = sim.group.clone();
        for a in &actions {
            if let Action::AssignGoal { node_id, goal, .. } = a {
                let n = work.node(*node_id).expect("assignment to a missing node");
                assert_ne!(n.assigned, *goal, "no-op assignment after {trace:?}");
                if n.reported != *goal {
                    seen.edges.insert((n.reported, *goal));
                }
            }
            apply(&mut work, std::slice::from_ref(a), sim.now);
        }
        sim.group = work;
        let gone: Vec<i64> = sim
            .local
            .keys()
            .copied()
            .filter(|id| sim.group.node(*id).is_none())
            .collect();
        for id in gone {
            sim.local.remove(&id);
        }
    }
    panic!("no fixpoint in 10 rounds after {trace:?}");
}

fn check_invariants(sim: &Sim, trace: &[Ev]) {
    let g = &sim.group;
    let writable_goals: Vec<i64> = g
        .nodes
        .iter()
        .filter(|n| n.assigned.accepts_writes())
        .map(|n| n.id)
        .collect();
    assert!(
        writable_goals.len() <= 1,
        "two writable goals {writable_goals:?} after {trace:?}\n{:#?}",
        g.nodes
    );
    let both: Vec<i64> = g
        .nodes
        .iter()
        .filter(|n| n.assigned.accepts_writes() && n.reported.accepts_writes())
        .map(|n| n.id)
        .collect();
    assert!(
        both.len() <= 1,
        "two writable nodes {both:?} after {trace:?}"
    );
}

fn explore(lim: &Limits, seen: &mut Seen) {
    let cfg = FsmConfig::default();
    let start = Sim::new();
    let mut visited: HashSet<Vec<i64>> = HashSet::new();
    visited.insert(start.key(&cfg));
    // Traces are kept as parent links so a failure prints how it got there.
    let mut traces: Vec<(usize, Option<Ev>)> = vec![(0, None)];
    let mut queue = VecDeque::from([(start, 0usize)]);
    let trace_of = |traces: &Vec<(usize, Option<Ev>)>, mut i: usize| {
        let mut out = Vec::new();
        while let (p, Some(ev)) = traces[i] {
            out.push(ev);
            i = p;
        }
        out.reverse();
        out
    };
    while let Some((sim, ti)) = queue.pop_front() {
        for ev in sim.events(lim, &cfg) {
            let mut next = sim.clone();
            next.step(ev);
            let mut trace = trace_of(&traces, ti);
            trace.push(ev);
            settle(&mut next, &cfg, seen, &trace);
            check_invariants(&next, &trace);
            for n in &next.group.nodes {
                if n.reported != n.assigned {
                    seen.edges.insert((n.reported, n.assigned));
                }
            }
            if visited.insert(next.key(&cfg)) {
                assert!(
                    visited.len() <= lim.max_configs,
                    "more than {} configurations",
                    lim.max_configs
                );
                traces.push((ti, Some(ev)));
                queue.push_back((next, traces.len() - 1));
            }
        }
    }
    seen.configs += visited.len();
}

#[test]
fn every_assigned_edge_is_in_the_table_and_back() {
    let mut seen = Seen::default();
    // Two nodes at a time, three over the run (drop and re-register).
    let two = Limits {
        max_ids: 2,
        max_rows: 2,
        lsn_and_stall: true,
        max_faults: 2,
        max_drops: 2,
        max_configs: 200_000,
    };
    explore(&two, &mut seen);
    eprintln!("two: {} configurations", seen.configs);
    // Three at a time, for apply_settings and multi-standby failover.
    // A node that re-registers after a drop.
    let again = Limits {
        max_ids: 3,
        max_rows: 2,
        lsn_and_stall: false,
        max_faults: 1,
        max_drops: 2,
        max_configs: 200_000,
    };
    explore(&again, &mut seen);
    eprintln!("again: {} configurations", seen.configs);
    let three = Limits {
        max_ids: 3,
        max_rows: 3,
        lsn_and_stall: false,
        max_faults: 1,
        max_drops: 1,
        max_configs: 200_000,
    };
    explore(&three, &mut seen);
    eprintln!(
        "explored {} configurations, {} edges",
        seen.configs,
        seen.edges.len()
    );

    let table: BTreeSet<(NodeState, NodeState)> = EDGES.iter().map(|(f, t, _)| (*f, *t)).collect();
    let missing: Vec<String> = seen
        .edges
        .difference(&table)
        .map(|(f, t)| format!("({f}, {t})"))
        .collect();
    let unused: Vec<String> = table
        .difference(&seen.edges)
        .map(|(f, t)| format!("({f}, {t})"))
        .collect();
    assert!(
        missing.is_empty(),
        "edges the monitor assigns but EDGES lacks: {}",
        missing.join(", ")
    );
    assert!(
        unused.is_empty(),
        "edges in EDGES the monitor never assigns: {}",
        unused.join(", ")
    );
}
