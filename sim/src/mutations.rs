//! Mutation tests' one mechanism: a monitor core whose rule table has one
//! production rule wrapped from outside, so that the rule decides on a
//! doctored view. Nothing inside the rules knows about it (STYLE.md 16b).

use pgpilot_monitor::core::Core;
use pgpilot_monitor::fsm::{Action, FsmConfig, GroupView, Rule, RuleFn, Timestamp, RULES};
use pgpilot_proto::NodeState;

/// A safety rule of the monitor, switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The lease gate believes every other node is fenced.
    LeaseGate,
    /// Failover believes every standby lost its WAL stream.
    SecondWitness,
    /// Failover ignores whether synchronous replication is on: a
    /// wait_primary counts as a primary and its catching-up standbys as
    /// secondaries.
    OnlyFromPrimary,
    /// The election believes every voter has the same LSN.
    ElectionByLsn,
    /// A liveness rule: an election's winner never gives way.
    ElectionTimeout,
}

fn production(name: &str) -> RuleFn {
    RULES
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no production rule named {name}"))
        .run
}

fn lease_gate(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let mut g = g.clone();
    for n in &mut g.nodes {
        n.last_report = None; // every lease looks expired
    }
    production("lease_gate")(&g, now, cfg)
}

fn failover_without_witness(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let mut g = g.clone();
    for n in &mut g.nodes {
        n.upstream_silent = Some(std::time::Duration::from_secs(3600));
    }
    production("failover")(&g, now, cfg)
}

fn failover_from_wait_primary(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let mut g = g.clone();
    for n in &mut g.nodes {
        let pair = (n.reported, n.assigned);
        let seen = match pair {
            (NodeState::WaitPrimary, NodeState::WaitPrimary) => NodeState::Primary,
            (NodeState::Catchingup, NodeState::Catchingup) => NodeState::Secondary,
            _ => continue,
        };
        n.reported = seen;
        n.assigned = seen;
    }
    production("failover")(&g, now, cfg)
}

fn elect_blind(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let mut g = g.clone();
    for n in &mut g.nodes {
        n.lsn = pgpilot_proto::Lsn(0);
    }
    production("elect")(&g, now, cfg)
}

fn never_give_way(_: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    vec![]
}

/// The production core with `m` applied.
pub fn core_with(m: Mutation, cfg: FsmConfig) -> Core {
    let (name, wrapped): (&str, RuleFn) = match m {
        Mutation::LeaseGate => ("lease_gate", lease_gate),
        Mutation::SecondWitness => ("failover", failover_without_witness),
        Mutation::OnlyFromPrimary => ("failover", failover_from_wait_primary),
        Mutation::ElectionByLsn => ("elect", elect_blind),
        Mutation::ElectionTimeout => ("election_timeout", never_give_way),
    };
    let rules = RULES
        .iter()
        .map(|r| {
            if r.name == name {
                Rule {
                    name: r.name,
                    run: wrapped,
                }
            } else {
                *r
            }
        })
        .collect();
    Core::with_rules(cfg, rules)
}
