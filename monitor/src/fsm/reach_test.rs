//! The edge-table test: explore every configuration of a small group
//! reachable from registration under abstract keeper, Postgres, network,
//! clock and operator events (`reach_model.rs`), run `decide` to a fixpoint
//! after each, and check that the monitor only ever asks keepers for edges
//! in [`pgpilot_proto::EDGES`], that every edge there is asked for
//! somewhere, and that no two nodes may take writes at once.

use std::collections::{BTreeSet, HashSet, VecDeque};

use pgpilot_proto::NodeState;
use pgpilot_proto::EDGES;

use super::reach_model::{Ev, Limits, Sim};
use super::*;

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
                // The lease gate: a promoted node becomes writable only
                // when no other node can still acknowledge writes.
                if n.reported == NodeState::StopReplication && goal.accepts_writes() {
                    let open: Vec<i64> = work
                        .nodes
                        .iter()
                        .filter(|o| o.id != n.id && !is_fenced(o, sim.now, cfg))
                        .map(|o| o.id)
                        .collect();
                    assert!(
                        open.is_empty(),
                        "node {} writable while {open:?} may write, after {trace:?}",
                        n.id
                    );
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
    let mut start = Sim::new();
    start.ranked = lim.ranked_priorities;
    explore_from(start, lim, seen);
}

/// A group of `nodes` that registered and converged (a primary and its
/// secondaries) with no fault: the start of explorations that would pass
/// their bounds if they explored every interleaving of the bootstrap too.
fn converged(nodes: usize, lim: &Limits) -> Sim {
    let cfg = FsmConfig::default();
    let mut sim = Sim::new();
    sim.ranked = lim.ranked_priorities;
    let mut trace = Vec::new();
    let mut seen = Seen::default();
    for _ in 0..100 {
        let next = if sim.group.nodes.len() < nodes {
            Some(Ev::Register)
        } else {
            sim.group
                .nodes
                .iter()
                .find(|n| n.reported != n.assigned)
                .map(|n| Ev::Converge(n.id))
        };
        let Some(ev) = next else {
            let mut states: Vec<NodeState> = sim.group.nodes.iter().map(|n| n.reported).collect();
            states.sort();
            let mut want = vec![NodeState::Primary];
            want.extend(std::iter::repeat_n(NodeState::Secondary, nodes - 1));
            want.sort();
            assert_eq!(states, want, "the bootstrap did not converge: {trace:?}");
            return sim;
        };
        sim.step(ev);
        trace.push(ev);
        settle(&mut sim, &cfg, &mut seen, &trace);
    }
    panic!("the bootstrap did not converge in 100 steps: {trace:?}");
}

fn explore_from(start: Sim, lim: &Limits, seen: &mut Seen) {
    let cfg = FsmConfig::default();
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
        far_behind: true,
        stall: true,
        max_faults: 2,
        max_drops: 2,
        max_switchovers: 1,
        max_forced: 1,
        max_maintenance: 1,
        max_configs: 1_000_000,
        ranked_priorities: false,
    };
    explore(&two, &mut seen);
    eprintln!("two: {} configurations", seen.configs);
    // Three at a time, for apply_settings and multi-standby failover.
    // A node that re-registers after a drop.
    let again = Limits {
        max_ids: 3,
        max_rows: 2,
        far_behind: false,
        stall: false,
        max_faults: 1,
        max_drops: 2,
        max_switchovers: 0,
        max_forced: 0,
        max_maintenance: 0,
        max_configs: 200_000,
        ranked_priorities: false,
    };
    explore(&again, &mut seen);
    eprintln!("again: {} configurations", seen.configs);
    let three = Limits {
        max_ids: 3,
        max_rows: 3,
        far_behind: false,
        stall: false,
        max_faults: 1,
        max_drops: 1,
        max_switchovers: 1,
        // Its state space would pass the limit; the simulation drives
        // perform failover in groups of three.
        max_forced: 0,
        max_maintenance: 0,
        max_configs: 2_000_000,
        ranked_priorities: false,
    };
    explore(&three, &mut seen);
    // A standby's maintenance while an election may come (it votes on its
    // way in), without drops and switchovers to stay within bounds.
    let maintenance = Limits {
        max_drops: 0,
        max_switchovers: 0,
        max_maintenance: 1,
        ..three
    };
    explore(&maintenance, &mut seen);
    eprintln!("maintenance: {} configurations", seen.configs);
    // An election whose winner by candidate priority is behind another
    // voter (fast_forward): priorities rise with the id, and a standby
    // may fall behind.
    let fast_forward = Limits {
        far_behind: true,
        max_faults: 2,
        max_drops: 1,
        max_switchovers: 0,
        max_maintenance: 0,
        ranked_priorities: true,
        ..three
    };
    explore_from(converged(3, &fast_forward), &fast_forward, &mut seen);
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
