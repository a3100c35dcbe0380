//! The simulated keeper: the real engine ([`pgpilot_keeper::engine`])
//! driven the way `pgpilot_keeper::agent` drives it, with every step
//! acting on a [`super::pg::SimPg`] instead of PostgreSQL. Nothing is
//! decided here: the lease, fencing, the restart budget, the failover
//! witness, what goes into a report and the steps of a transition all
//! come from the engine.

use std::time::Duration;

use pgpilot_keeper::engine::{fresh_standbys, Decision, Engine, Mono, Observation, PgStatus};
use pgpilot_keeper::plan::{PlanError, Step};
use pgpilot_keeper::statefile::KeeperState;
use pgpilot_proto::pb;
use pgpilot_proto::{node_slot_name, Lsn, NodeState};

use super::pg::parse_ssn;
use super::{World, TICK_MS};

/// The keeper configuration's poll interval (the monitor's reply says the
/// same).
const POLL: Duration = Duration::from_secs(1);
/// Chance that a keeper crash strikes in the middle of a transition.
const CRASH_MID_TRANSITION: f64 = 0.03;
/// Chance that a copy or rewind takes a while (a big database): the
/// keeper reports beside it.
const SLOW_TRANSITION: f64 = 0.05;

/// What survives a keeper crash: its state file, and the highest
/// generation it ever acted on (for the check that no keeper acts on an
/// older one, across restarts).
#[derive(Clone, Debug)]
pub struct Persisted {
    pub acted_generation: i64,
    pub state: Option<KeeperState>,
}

#[derive(Clone, Debug)]
pub struct SimKeeper {
    pub file: Persisted,
    pub next_at: u64,
    /// The running process's memory; `None` before registration.
    pub engine: Option<Engine>,
    /// This keeper started the PostgreSQL that runs (a PostgreSQL that
    /// stops without the keeper stopping it died).
    pub(super) expected_running: bool,
    /// The keeper reached `dropped` and exited for good.
    pub gone: bool,
    /// It reached `dropped`: one last report, then it exits (as the
    /// agent does).
    pub(super) exit_after_report: bool,
    /// Steps under way that take a while (a big copy, a rewind), with
    /// reports beside them ([`crate::beside`]).
    pub(super) running: Option<super::beside::Running>,
    /// When its last report was sent (on its own clock).
    pub(super) last_sent: Option<Mono>,
}

impl SimKeeper {
    pub fn new(start_at: u64) -> SimKeeper {
        SimKeeper {
            file: Persisted {
                acted_generation: 0,
                state: None,
            },
            next_at: start_at,
            engine: None,
            expected_running: false,
            gone: false,
            exit_after_report: false,
            running: None,
            last_sent: None,
        }
    }

    /// A new keeper process: memory gone, state file kept.
    pub fn restart(&mut self, now: u64) {
        let file = self.file.clone();
        let gone = self.gone;
        *self = SimKeeper::new(now);
        self.engine = file.state.clone().map(|s| Engine::new(s, POLL));
        self.file = file;
        self.gone = gone;
    }

    /// Writes the state file when the engine asks for it.
    pub(super) fn save(&mut self) {
        if let Some(e) = self.engine.as_mut() {
            if e.needs_save() {
                self.file.state = Some(e.state().clone());
                e.saved();
            }
        }
    }
}

impl World {
    /// Sim time `ms` on node `i`'s monotonic clock, which may run slower
    /// than the monitor's (the clock margin is there for that).
    pub(super) fn mono(&self, i: usize, ms: u64) -> Mono {
        Duration::from_millis((ms as f64 * self.nodes[i].clock_rate) as u64)
    }
}

impl World {
    /// The fencing watchdog: it runs beside the loop, so a frozen or busy
    /// loop still fences at the engine's deadline (every step, as the real
    /// one polls every 50 ms).
    pub(super) fn watchdog(&mut self, i: usize) {
        let now = self.mono(i, self.now);
        let n = &mut self.nodes[i];
        let Some(e) = n.keeper.engine.as_ref() else {
            return;
        };
        if n.pg.running && e.must_fence(now) {
            n.pg.kill();
            let id = n.id;
            self.log(format!(
                "node {id} watchdog stops postgres: the lease ran out"
            ));
        }
    }

    pub(super) fn keeper_tick(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let now = self.now;
        if self.nodes[i].keeper.engine.is_none() {
            self.register(i);
            self.nodes[i].keeper.next_at = now + 1000;
            return;
        }
        // A keeper that starts in `dropped` (it reached it, then was
        // restarted) only says so once more and exits, as the agent does.
        let s = self.engine(i).state();
        if s.current == NodeState::Dropped && s.assigned == NodeState::Dropped {
            self.nodes[i].keeper.exit_after_report = true;
        }
        if self.nodes[i].keeper.expected_running && !self.nodes[i].pg.running {
            self.nodes[i].keeper.expected_running = false;
            let mono_now = self.mono(i, now);
            let spent = self.engine(i).pg_died(mono_now);
            self.log(format!(
                "node {id} keeper: postgres died{}",
                if spent {
                    ", restart budget spent: reporting it down"
                } else {
                    ""
                }
            ));
        }
        self.observe(i);
        self.maybe_start(i);
        if self.nodes[i].keeper.running.is_some() {
            return self.beside_tick(i);
        }
        let reply = self.report(i);
        if self.nodes[i].keeper.gone {
            return;
        }
        let Some((sent_at, reply)) = reply else {
            let mono_now = self.mono(i, now);
            if self.engine(i).on_no_reply(mono_now) {
                self.fence(i);
            }
            self.nodes[i].keeper.save();
            // The driver waited for the report as long as the engine let
            // it (the report was sent this tick).
            let wait = self
                .engine(i)
                .report_timeout_at(mono_now)
                .max(self.engine(i).next_wait(mono_now));
            self.nodes[i].keeper.next_at = now + super::ms(wait).max(TICK_MS);
            return;
        };
        let generation = reply.generation;
        let mono_now = self.mono(i, now);
        let decision = self.engine(i).on_reply(sent_at, mono_now, reply);
        self.nodes[i].keeper.save();
        match decision {
            Decision::Ignore(why) => {
                self.log(format!("node {id}: {why}"));
                self.schedule(i);
            }
            Decision::Steady(goal) => {
                // A writable node may have just got its lease.
                self.maybe_start(i);
                let mono_now = self.mono(i, now);
                let steps = self.engine(i).steady_steps(mono_now, &goal);
                for step in &steps {
                    if let Err(e) = self.run_step(i, step) {
                        self.log(format!(
                            "node {id}: stay {}: {step:?} failed: {e}",
                            goal.state
                        ));
                        break;
                    }
                }
                self.nodes[i].keeper.save();
                let k = &self.nodes[i].keeper;
                if k.engine.as_ref().is_some_and(|e| {
                    e.state().current == NodeState::Dropped
                        && e.state().assigned == NodeState::Dropped
                }) {
                    self.nodes[i].keeper.gone = true;
                    self.log(format!("node {id} keeper exits: dropped"));
                    return;
                }
                self.schedule(i);
            }
            Decision::Transition { from, goal } => {
                let acted = self.nodes[i].keeper.file.acted_generation;
                if generation < acted {
                    self.violate(format!(
                        "node {id} acts on a goal of generation {generation} after acting on generation {acted}"
                    ));
                    return;
                }
                self.nodes[i].keeper.file.acted_generation = generation;
                self.transition(i, from, goal);
            }
        }
    }

    fn register(&mut self, i: usize) {
        let id = self.nodes[i].id;
        if !self.monitor_reachable(i) {
            return;
        }
        let ts = self.timestamp();
        let quorum = self.params.quorum.get(i).copied().unwrap_or(true);
        let priority = self.params.priorities.get(i).copied().unwrap_or(50);
        let (assigned, changes) = match self.monitor.register(id, priority, quorum, ts) {
            Ok(r) => r,
            Err(e) => {
                self.violate(format!("node {id} cannot register: {e}"));
                return;
            }
        };
        let state = KeeperState {
            node_id: id,
            group_id: 0,
            name: format!("node_{id}"),
            current: NodeState::Init,
            assigned,
            generation_seen: self.monitor.stored.generation,
            last_rejoin: None,
            following: None,
        };
        let k = &mut self.nodes[i].keeper;
        k.file.state = Some(state.clone());
        k.engine = Some(Engine::new(state, POLL));
        self.log(format!("node {id} registered, goal {assigned}"));
        self.note_assignments(changes);
    }

    pub(super) fn engine(&mut self, i: usize) -> &mut Engine {
        self.nodes[i]
            .keeper
            .engine
            .as_mut()
            .expect("a registered keeper has an engine")
    }

    fn transition(&mut self, i: usize, from: NodeState, goal: pgpilot_keeper::plan::Goal) {
        let id = self.nodes[i].id;
        let steps = match self.engine(i).plan(&goal) {
            Ok(s) => s,
            Err(e @ PlanError::NoEdge { .. }) => {
                self.violate(format!("node {id}: {e}"));
                return;
            }
            Err(e) => {
                self.log(format!("node {id}: {e}"));
                self.engine(i).transition_failed(e.to_string());
                self.schedule(i);
                return;
            }
        };
        let crash_after = self
            .rng_chance(CRASH_MID_TRANSITION)
            .then(|| self.rng_below(steps.len().max(1)));
        self.run_steps(i, from, goal, steps, crash_after, false);
    }

    /// Runs a transition's steps from the first of `steps`. A copy or a
    /// rewind may take a while: the steps then park ([`crate::beside`]),
    /// the keeper reports beside them, and they go on from that step once
    /// it is done (`resumed`: it is not parked again).
    pub(super) fn run_steps(
        &mut self,
        i: usize,
        from: NodeState,
        goal: pgpilot_keeper::plan::Goal,
        steps: Vec<Step>,
        crash_after: Option<usize>,
        resumed: bool,
    ) {
        let (id, now) = (self.nodes[i].id, self.now);
        for (n, step) in steps.iter().enumerate() {
            if crash_after == Some(n) && now < self.params.heal_at_ms {
                let node = &mut self.nodes[i];
                node.keeper_down_until = Some(now + 2000);
                node.pg.kill();
                self.log(format!(
                    "FAULT node {id} keeper killed during {from} -> {} before {step:?}",
                    goal.state
                ));
                return;
            }
            let first_resumed = resumed && n == 0;
            if matches!(step, Step::Clone(_) | Step::Rewind(_))
                && !first_resumed
                && now < self.params.heal_at_ms
                && self.rng_chance(SLOW_TRANSITION)
            {
                let takes = self.rng_below(20) as u64 * 1000 + 2000;
                self.park(i, from, goal, steps[n..].to_vec(), Some(takes));
                return;
            }
            // As the agent: reports at once and waits for the reply.
            if matches!(step, Step::Announce)
                && !(first_resumed && self.engine(i).announce_confirmed())
            {
                self.park(i, from, goal, steps[n..].to_vec(), None);
                return;
            }
            if let Err(e) = self.run_step(i, step) {
                self.log(format!(
                    "node {id}: {from} -> {}: {step:?} failed: {e}",
                    goal.state
                ));
                self.engine(i).transition_failed(e);
                self.schedule(i);
                return;
            }
        }
        self.engine(i).transition_ok(goal.state);
        self.nodes[i].keeper.save();
        if goal.state == NodeState::Dropped {
            self.nodes[i].keeper.exit_after_report = true;
        }
        // Report again at once, as the agent does after a transition.
        self.nodes[i].keeper.next_at = now + TICK_MS;
        self.log(format!("node {id} reached {} (from {from})", goal.state));
    }

    /// One report to the monitor, as the agent sends it: its reply, or
    /// `None` when there was none (the keeper then did what the agent
    /// does without one, and is scheduled; or it exited, dropped).
    pub(super) fn report(&mut self, i: usize) -> Option<(Mono, pb::NodeActiveResponse)> {
        let id = self.nodes[i].id;
        let now = self.now;
        // The network: while faults run, a request or its reply may be
        // lost, and a request takes up to 300 ms to arrive (the keeper's
        // lease counts from when it was sent, the monitor's from receipt).
        let mono_now = self.mono(i, now);
        let req = self.engine(i).request(mono_now);
        let (delay, lose_request, lose_reply) = self.network_weather();
        let sent_at = self.mono(i, now.saturating_sub(delay));
        let mut refused = false;
        // Without name lookups a broken connection to the monitor stays
        // broken; one that is up carries on.
        let reachable = self.monitor_down_until.is_none() && self.link(0, i + 1);
        let n = &mut self.nodes[i];
        if reachable && n.dns_fails_until.is_none() {
            n.monitor_conn_broken = false;
        } else if !reachable {
            n.monitor_conn_broken = true;
        }
        let connected = !self.nodes[i].monitor_conn_broken;
        let reply = if connected && !lose_request {
            let ts = self.timestamp();
            match self.monitor.node_active(&req, ts) {
                Ok((_, changes)) if lose_reply => {
                    self.note_assignments(changes);
                    self.log(format!("node {id}: reply lost"));
                    None
                }
                Ok((reply, changes)) => {
                    self.note_assignments(changes);
                    Some(reply)
                }
                Err(e) => {
                    self.log(format!("node {id}: the monitor refused the report: {e}"));
                    refused = true;
                    None
                }
            }
        } else {
            None
        };
        // A dropped keeper exits once its last report was answered (or
        // refused: its row is gone), as the agent does.
        if self.nodes[i].keeper.exit_after_report && (reply.is_some() || refused) {
            self.nodes[i].keeper.gone = true;
            self.log(format!("node {id} keeper exits: dropped"));
            return None;
        }
        self.nodes[i].keeper.last_sent = Some(sent_at);
        reply.map(|r| (sent_at, r))
    }

    pub(super) fn schedule(&mut self, i: usize) {
        let now = self.now;
        let mono_now = self.mono(i, now);
        let wait = self.engine(i).next_wait(mono_now);
        self.nodes[i].keeper.next_at = now + super::ms(wait).max(TICK_MS);
    }

    /// Starts PostgreSQL when the engine says so (a failing start is a
    /// fault the simulation injects).
    fn maybe_start(&mut self, i: usize) {
        let now = self.mono(i, self.now);
        if !self.engine(i).should_start_pg(now) {
            return;
        }
        let broken = self.nodes[i].start_fails_until.is_some();
        let ok = !broken && self.nodes[i].pg.start().is_ok();
        let spent = self.engine(i).pg_start_result(now, ok);
        let n = &mut self.nodes[i];
        if ok {
            n.keeper.expected_running = true;
        }
        let (id, current) = (n.id, n.keeper.engine.as_ref().map(|e| e.state().current));
        self.log(format!(
            "node {id} keeper starts postgres in {current:?}: {}{}",
            if ok { "started" } else { "it fails to start" },
            if spent {
                ", restart budget spent: reporting it down"
            } else {
                ""
            }
        ));
        if ok {
            self.observe(i);
        }
    }

    /// What the keeper reads of its PostgreSQL.
    pub(super) fn observe(&mut self, i: usize) {
        let now = self.now;
        let n = &self.nodes[i];
        // What pg_stat_replication lists, judged by the engine's rule.
        let (fresh, oldest_reply_ms) = fresh_standbys(
            n.pg.walsenders
                .iter()
                .map(|(j, t)| (node_slot_name(*j as i64 + 1), now.saturating_sub(*t))),
        );
        let standbys: Vec<usize> = (0..self.nodes.len())
            .filter(|j| fresh.contains(&node_slot_name(*j as i64 + 1)))
            .collect();
        let ssn_names =
            n.pg.ssn()
                .and_then(parse_ssn)
                .map(|(_, ids)| ids)
                .unwrap_or_default();
        let replication_state = if standbys.is_empty() {
            String::new()
        } else if standbys.iter().any(|j| ssn_names.contains(&(j + 1))) {
            "quorum".to_string()
        } else {
            "async".to_string()
        };
        let status_fails = n.status_fails_until.is_some();
        let status = (n.pg.running && !status_fails).then(|| PgStatus {
            in_recovery: n.pg.in_recovery,
            timeline: n.pg.data.as_ref().map_or(0, |d| d.tli),
            lsn: Lsn(n.pg.lsn()),
            replication_state,
            oldest_reply_ms,
            streaming_standbys: fresh,
            wal_receiver: n.pg.in_recovery.then(|| {
                match n.pg.streaming_from.or(n.pg.receiver_hung_on) {
                    Some(_) => (true, n.pg.last_contact.map(|c| now.saturating_sub(c))),
                    None => (false, None),
                }
            }),
            // What only the HTTP endpoints read (lag): not simulated.
            replay_lsn: None,
            upstream_wal_end: None,
            // Passwords are not simulated (no rotation happens).
            role_password_generation: None,
        });
        let obs = Observation {
            has_pgdata: n.pg.data.is_some(),
            running: n.pg.running,
            status,
            system_identifier: None,
            rewind_interrupted: false,
            // As the agent reads pg_control: only while stopped, and only
            // after a primary's clean stop (not a crash, not a standby).
            shutdown_lsn: n.pg.shutdown_lsn().map(Lsn),
        };
        let mono_now = self.mono(i, now);
        self.engine(i).observe(mono_now, obs);
    }

    /// The keeper's own fencing (the loop's turn; the watchdog may have
    /// been first).
    pub(super) fn fence(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let n = &mut self.nodes[i];
        n.pg.kill();
        n.keeper.expected_running = false;
        self.engine(i).fenced();
        self.log(format!("node {id} fences itself: lease expired"));
    }

    /// (delay ms, request lost, reply lost) for one report.
    fn network_weather(&mut self) -> (u64, bool, bool) {
        use rand::Rng;
        if self.now < self.params.faults_from_ms || self.now >= self.params.heal_at_ms {
            return (0, false, false);
        }
        let delay = self.rng.random_range(0..=3) * TICK_MS;
        (
            delay,
            self.rng.random_bool(0.02),
            self.rng.random_bool(0.02),
        )
    }

    pub(super) fn rng_chance(&mut self, p: f64) -> bool {
        use rand::Rng;
        self.rng.random_bool(p)
    }

    pub(super) fn rng_below(&mut self, n: usize) -> usize {
        use rand::Rng;
        self.rng.random_range(0..n)
    }
}
