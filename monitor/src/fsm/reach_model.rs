//! The abstract group the edge-table test (`reach_test.rs`) explores:
//! keepers, their Postgres, replication, the clock and the operator, as
//! events on top of the monitor's [`GroupView`].

use std::collections::HashMap;
use std::time::Duration;

use pgpilot_proto::Lsn;
use pgpilot_proto::NodeState::{self, *};

use super::builders::{t0, NodeExt, MB};
use super::*;

/// What a node's keeper knows that the monitor only learns by a report.
#[derive(Clone, Debug)]
pub(super) struct Local {
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
    /// A keeper that died (or froze) mid-transition: the goal it was on
    /// its way to, which it may still reach when it comes back although
    /// the monitor moved its goal on meanwhile.
    in_flight: Option<NodeState>,
    /// PostgreSQL stopped by the keeper itself (a fast shutdown), not by
    /// a crash: the keeper reports a shutdown LSN.
    clean_stop: bool,
}

#[derive(Clone)]
pub(super) struct Sim {
    pub(super) now: Timestamp,
    pub(super) next_id: i64,
    pub(super) group: GroupView,
    pub(super) local: HashMap<i64, Local>,
    /// Planned switchovers the operator asked for (accepted or not).
    pub(super) switchovers: usize,
    /// `perform failover` commands the operator gave (accepted or not).
    pub(super) forced: usize,
    /// Maintenance enables the operator gave (accepted only).
    pub(super) maintenance: usize,
    /// Candidate priorities rise with the node id (10, 20, ...), so an
    /// election's winner by priority may be behind another voter
    /// (fast_forward); otherwise every node has 50.
    pub(super) ranked: bool,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Ev {
    Converge(i64),
    Die(i64),
    Revive(i64),
    /// The keeper comes back and finishes the transition it was in when
    /// it died, towards a goal that may be stale by now.
    ReviveFinishing(i64),
    PgDie(i64),
    PgRevive(i64),
    Fence(i64),
    LoseRepl(i64),
    RegainRepl(i64),
    StallOn(i64),
    StallOff(i64),
    Far(i64),
    Near(i64),
    /// The operator drops a node, with `--force` or not.
    Drop(i64, bool),
    /// The operator asks for a planned switchover to this node.
    Switchover(i64),
    /// The operator's `perform failover`, with `--allow-data-loss` or not.
    ForcedFailover(bool),
    /// The operator enables (true) or disables maintenance of a node.
    Maintenance(i64, bool),
    Register,
    Advance(u64),
}

/// Limits of one exploration.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    /// Node ids registered over the whole run.
    pub(super) max_ids: i64,
    /// Rows at the same time.
    pub(super) max_rows: usize,
    /// Explore LSN distance (a standby far behind).
    pub(super) far_behind: bool,
    /// Explore primary-side stall events.
    pub(super) stall: bool,
    /// Faults (dead keeper, Postgres down, replication lost, stall, far
    /// behind) present at once; failover needs two.
    pub(super) max_faults: usize,
    /// Nodes the operator drops over the run.
    pub(super) max_drops: usize,
    /// Switchovers the operator asks for over the run.
    pub(super) max_switchovers: usize,
    /// `perform failover` commands over the run.
    pub(super) max_forced: usize,
    /// Maintenance enables over the run (ending one is always offered).
    pub(super) max_maintenance: usize,
    pub(super) max_configs: usize,
    /// See [`Sim::ranked`].
    pub(super) ranked_priorities: bool,
}

/// Whether the keeper runs PostgreSQL in a state: the keeper's own rule.
fn runs(s: NodeState) -> bool {
    s.wants_running()
}

fn standby_like(s: NodeState) -> bool {
    matches!(s, Catchingup | Secondary)
}

impl Sim {
    pub(super) fn new() -> Sim {
        let group = GroupView {
            formation: "default".into(),
            group_id: 0,
            number_sync_standbys: 1,
            generation: 1,
            system_identifier: None,
            dbname: "postgres".into(),
            waiting_for: None,
            switchover_to: None,
            nodes: vec![],
        };
        Sim {
            now: t0(),
            next_id: 1,
            group,
            local: HashMap::new(),
            switchovers: 0,
            forced: 0,
            maintenance: 0,
            ranked: false,
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

    pub(super) fn events(&self, lim: &Limits, cfg: &FsmConfig) -> Vec<Ev> {
        let may_fail = self.faults() < lim.max_faults;
        // One step of 3.1 s crosses node_unhealthy_timeout and
        // replication_lost_timeout, two cross lease + margin, four the stall
        // timeout: every threshold of the default FsmConfig.
        let mut out = vec![Ev::Advance(3100)];
        {
            // Enables are limited; ending a maintenance always may happen.
            let core = crate::core::Core::new(cfg.clone());
            let enable = self.maintenance < lim.max_maintenance;
            for n in &self.group.nodes {
                for on in [true, false].into_iter().filter(|on| enable || !on) {
                    let mut g = self.group.clone();
                    let r = if on {
                        core.enable_maintenance(&mut g, n.id, true, self.now)
                    } else {
                        core.disable_maintenance(&mut g, n.id, self.now)
                    };
                    if r.is_ok_and(|a| !a.is_empty()) {
                        out.push(Ev::Maintenance(n.id, on));
                    }
                }
            }
        }
        if self.forced < lim.max_forced {
            // Only where the command does something: a refusal changes
            // nothing (its unit tests check that).
            let core = crate::core::Core::new(cfg.clone());
            for allow in [false, true] {
                let mut g = self.group.clone();
                if core.failover(&mut g, allow, self.now).is_ok() {
                    out.push(Ev::ForcedFailover(allow));
                }
            }
        }
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
                if l.in_flight.is_some_and(|g| g != n.assigned) {
                    out.push(Ev::ReviveFinishing(id));
                }
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
                if lim.far_behind && l.far_behind {
                    out.push(Ev::Near(id));
                } else if lim.far_behind && may_fail {
                    out.push(Ev::Far(id));
                }
            }
            if l.alive && lim.stall && l.state.accepts_writes() {
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
                out.push(Ev::Drop(id, false));
                out.push(Ev::Drop(id, true));
            }
            if self.switchovers < lim.max_switchovers
                && n.assigned == Secondary
                && n.reported == Secondary
            {
                out.push(Ev::Switchover(id));
            }
        }
        out
    }

    /// Applies an event, then the keepers that are alive report.
    pub(super) fn step(&mut self, ev: Ev) {
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
                if self.ranked {
                    n.candidate_priority = 10 * id as i32;
                }
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
                    in_flight: None,
                    clean_stop: false,
                };
                self.local.insert(id, l);
            }
            Ev::Drop(id, force) => {
                // The production drop (it may refuse); the rules run after.
                let cfg = super::FsmConfig::default();
                let _ = crate::core::mark_dropped(&mut self.group, id, force, now, &cfg);
            }
            Ev::Switchover(id) => {
                // The production operation (it may refuse).
                self.switchovers += 1;
                let core = crate::core::Core::new(super::FsmConfig::default());
                let _ = core.switchover(&mut self.group, Some(id), now);
            }
            Ev::Maintenance(id, on) => {
                self.maintenance += usize::from(on);
                let core = crate::core::Core::new(super::FsmConfig::default());
                let _ = if on {
                    core.enable_maintenance(&mut self.group, id, true, now)
                } else {
                    core.disable_maintenance(&mut self.group, id, now)
                };
            }
            Ev::ForcedFailover(allow) => {
                self.forced += 1;
                let core = crate::core::Core::new(super::FsmConfig::default());
                let _ = core.failover(&mut self.group, allow, now);
            }
            Ev::Converge(id) => {
                let goal = self.group.node(id).unwrap().assigned;
                self.reach(id, goal, max_tli, writable_tli);
            }
            Ev::Die(id) => {
                let goal = self.group.node(id).unwrap().assigned;
                let l = self.local.get_mut(&id).unwrap();
                l.alive = false;
                l.in_flight = (goal != l.state
                    && pgpilot_proto::action_for(l.state, goal).is_some())
                .then_some(goal);
            }
            Ev::Revive(id) => {
                let l = self.local.get_mut(&id).unwrap();
                l.alive = true;
                l.pg_up = runs(l.state);
                l.in_flight = None;
            }
            Ev::ReviveFinishing(id) => {
                let l = self.local.get_mut(&id).unwrap();
                l.alive = true;
                let goal = l.in_flight.take().expect("offered only with one");
                self.reach(id, goal, max_tli, writable_tli);
            }
            Ev::PgDie(id) => {
                let l = self.local.get_mut(&id).unwrap();
                l.pg_up = false;
                l.clean_stop = false;
            }
            Ev::PgRevive(id) => self.local.get_mut(&id).unwrap().pg_up = true,
            Ev::Fence(id) => {
                let l = self.local.get_mut(&id).unwrap();
                l.state = DemoteTimeout;
                l.pg_up = false;
                l.clean_stop = false;
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

    /// The keeper finished its transition to `goal`.
    fn reach(&mut self, id: i64, goal: NodeState, max_tli: u32, writable_tli: Option<u32>) {
        let l = self.local.get_mut(&id).unwrap();
        let from = l.state;
        l.state = goal;
        l.clean_stop = l.pg_up && !runs(goal) || (l.clean_stop && !runs(goal));
        l.pg_up = runs(goal);
        if goal == StopReplication {
            l.tli = max_tli + 1; // promotion opens a new timeline
        }
        if goal == FastForward {
            l.far_behind = false; // it fetched what the voters hold
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
            n.shutdown_lsn = (!l.pg_up && l.clean_stop).then_some(Lsn(100 * MB));
        }
    }

    /// The abstraction the search dedupes on: everything the rules and the
    /// events can tell apart, with times reduced to which thresholds they
    /// passed.
    pub(super) fn key(&self, cfg: &FsmConfig) -> Vec<i64> {
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
        let mut k = vec![
            self.next_id,
            self.switchovers as i64,
            self.forced as i64,
            self.maintenance as i64,
            self.group.switchover_to.unwrap_or(-1),
        ];
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
                n.shutdown_lsn.is_some() as i64,
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
                    l.in_flight.map_or(-1, |g| g as i64),
                    l.clean_stop as i64,
                ]);
            }
        }
        k
    }
}
