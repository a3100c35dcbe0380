//! The simulated keeper: the agent loop of `pgpilot_keeper::agent`, step for
//! step, with the real pure decisions of `pgpilot_keeper::plan`, acting on
//! a [`super::pg::SimPg`].

use std::time::Duration;

use pgpilot_keeper::plan::{self, Observed, PlanError, Role, Step};
use pgpilot_proto::{node_slot_name, pb, NodeState};

use super::pg::{parse_ssn, Data};
use super::{World, TICK_MS};

const POLL: Duration = Duration::from_secs(1);
/// As in the agent: a report that does not come back costs this long.
const REPORT_TIMEOUT_MS: u64 = 800;
/// Chance that a keeper crash strikes in the middle of a transition.
const CRASH_MID_TRANSITION: f64 = 0.03;

/// What survives a keeper crash is only [`Persisted`] (its state file).
#[derive(Clone, Debug)]
pub struct Persisted {
    /// Highest generation of a goal this keeper acted on (for the check
    /// that no keeper ever acts on an older one, across restarts).
    pub acted_generation: i64,
    pub registered: bool,
    pub current: NodeState,
    pub assigned: NodeState,
    pub generation_seen: i64,
}

#[derive(Clone, Debug)]
pub struct SimKeeper {
    pub file: Persisted,
    pub next_at: u64,
    lease_start: Option<u64>,
    lease_ms: u64,
    last_reply: Option<pb::NodeActiveResponse>,
    upstream_contact: Option<u64>,
    applied_role: Option<Role>,
}

impl SimKeeper {
    pub fn new(start_at: u64) -> SimKeeper {
        SimKeeper {
            file: Persisted {
                acted_generation: 0,
                registered: false,
                current: NodeState::Init,
                assigned: NodeState::Init,
                generation_seen: 0,
            },
            next_at: start_at,
            lease_start: None,
            lease_ms: 3000,
            last_reply: None,
            upstream_contact: None,
            applied_role: None,
        }
    }

    /// A new keeper process: memory gone, state file kept.
    pub fn restart(&mut self, now: u64) {
        let file = self.file.clone();
        *self = SimKeeper::new(now);
        self.file = file;
    }

    fn lease_valid(&self, now: u64) -> bool {
        self.lease_start
            .is_some_and(|t| now.saturating_sub(t) <= self.lease_ms)
    }
}

impl World {
    pub(super) fn keeper_tick(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let now = self.now;
        if !self.nodes[i].keeper.file.registered {
            if self.monitor_reachable(i) {
                let ts = self.timestamp();
                let (assigned, changes) = match self.monitor.register(id, 50, true, ts) {
                    Ok(r) => r,
                    Err(e) => {
                        self.violate(format!("node {id} cannot register: {e}"));
                        return;
                    }
                };
                let gen = self.monitor.stored.generation;
                let k = &mut self.nodes[i].keeper;
                k.file.registered = true;
                k.file.assigned = assigned;
                k.file.generation_seen = gen;
                self.log(format!("node {id} registered, goal {assigned}"));
                self.note_assignments(changes);
            }
            self.nodes[i].keeper.next_at = now + 1000;
            return;
        }
        self.supervise(i);
        let req = self.observe(i);
        let streaming: Vec<String> = (0..self.nodes.len())
            .filter(|j| self.nodes[*j].pg.streaming_from == Some(i))
            .map(|j| node_slot_name(j as i64 + 1))
            .collect();
        // The network: while faults run, a request or its reply may be
        // lost, and a request takes up to 300 ms to arrive (the keeper's
        // lease counts from when it was sent, the monitor's from receipt).
        let (delay, lose_request, lose_reply) = self.network_weather();
        let reply = if self.monitor_reachable(i) && !lose_request {
            let ts = self.timestamp();
            match self.monitor.node_active(&req, ts) {
                Ok((_, changes)) if lose_reply => {
                    self.note_assignments(changes);
                    self.log(format!("node {id}: reply lost"));
                    None
                }
                Ok((reply, changes)) => {
                    self.nodes[i].keeper.lease_start = Some(now.saturating_sub(delay));
                    self.note_assignments(changes);
                    Some(reply)
                }
                Err(e) => {
                    self.log(format!("node {id}: the monitor refused the report: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let Some(reply) = reply else {
            self.maybe_fence(i, &streaming);
            let k = &mut self.nodes[i].keeper;
            k.next_at = now + REPORT_TIMEOUT_MS.max(TICK_MS);
            return;
        };
        let k = &mut self.nodes[i].keeper;
        if !plan::accept_goal(k.file.generation_seen, reply.generation) {
            k.next_at = now + super::ms(POLL);
            return;
        }
        let goal_state = NodeState::from_wire(reply.assigned_state).expect("a known state");
        k.file.generation_seen = reply.generation;
        k.file.assigned = goal_state;
        k.lease_ms = reply.lease_ms;
        let goal = plan::goal_from_reply(&reply, goal_state);
        k.last_reply = Some(reply.clone());
        if goal_state == k.file.current {
            self.supervise(i);
            self.reconcile(i, &goal);
            self.schedule(i);
            return;
        }
        let from = k.file.current;
        let acted = k.file.acted_generation;
        if reply.generation < acted {
            self.violate(format!(
                "node {id} acts on a goal of generation {} after acting on generation {acted}",
                reply.generation
            ));
            return;
        }
        k.file.acted_generation = reply.generation;
        let seen = Observed {
            running: self.nodes[i].pg.running,
            in_recovery: self.nodes[i]
                .pg
                .running
                .then_some(self.nodes[i].pg.in_recovery),
        };
        let steps = match plan::plan(from, &goal, seen) {
            Ok(s) => s,
            Err(e @ PlanError::NoEdge { .. }) => {
                self.violate(format!("node {id}: {e}"));
                return;
            }
            Err(e) => {
                self.log(format!("node {id}: {e}"));
                self.schedule(i);
                return;
            }
        };
        let crash_after = self
            .rng_chance(CRASH_MID_TRANSITION)
            .then(|| self.rng_below(steps.len().max(1)));
        for (n, step) in steps.iter().enumerate() {
            if crash_after == Some(n) && now < self.params.heal_at_ms {
                let node = &mut self.nodes[i];
                node.keeper_down_until = Some(now + 2000);
                node.pg.stop();
                self.log(format!(
                    "FAULT node {id} keeper killed during {from} -> {goal_state} before {step:?}"
                ));
                return;
            }
            if let Err(e) = self.run_step(i, step) {
                self.log(format!(
                    "node {id}: {from} -> {goal_state}: {step:?} failed: {e}"
                ));
                self.schedule(i);
                return;
            }
        }
        let k = &mut self.nodes[i].keeper;
        k.file.current = goal_state;
        // Report again at once, as the agent does after a transition.
        k.next_at = now + TICK_MS;
        self.log(format!("node {id} reached {goal_state} (from {from})"));
    }

    fn schedule(&mut self, i: usize) {
        let now = self.now;
        let k = &mut self.nodes[i].keeper;
        let left = k
            .lease_start
            .map(|t| Duration::from_millis((t + k.lease_ms).saturating_sub(now)));
        let wait = plan::next_wait(POLL, k.file.current, left);
        k.next_at = now + super::ms(wait).max(TICK_MS);
    }

    fn supervise(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let k = &n.keeper;
        if plan::may_start(k.file.current, k.lease_valid(now))
            && n.pg.data.is_some()
            && !n.pg.running
        {
            let _ = n.pg.start();
            n.keeper.applied_role = None;
            let msg = format!(
                "node {} keeper starts postgres in {}",
                n.id, n.keeper.file.current
            );
            self.log(msg);
        }
    }

    fn observe(&mut self, i: usize) -> pb::NodeActiveRequest {
        let now = self.now;
        let ssn_names = self.nodes[i]
            .pg
            .ssn()
            .and_then(parse_ssn)
            .map(|(_, ids)| ids)
            .unwrap_or_default();
        let standbys: Vec<usize> = (0..self.nodes.len())
            .filter(|j| self.nodes[*j].pg.streaming_from == Some(i))
            .collect();
        let replication_state = if standbys.is_empty() {
            String::new()
        } else if standbys.iter().any(|j| ssn_names.contains(&(j + 1))) {
            "quorum".to_string()
        } else {
            "async".to_string()
        };
        let n = &mut self.nodes[i];
        if n.pg.streaming_from.is_some() {
            n.keeper.upstream_contact = n.pg.last_contact;
        }
        let running = n.pg.running;
        let wal_receiver = running.then(|| pb::WalReceiver {
            streaming: n.pg.streaming_from.is_some(),
            upstream_silent_ms: if n.pg.in_recovery {
                n.keeper.upstream_contact.map(|c| now.saturating_sub(c))
            } else {
                None
            },
        });
        let k = &n.keeper;
        pb::NodeActiveRequest {
            node_id: n.id,
            reported_state: k.file.current as i32,
            generation_seen: k.file.generation_seen,
            pg_running: plan::report_pg_running(
                running,
                k.file.current,
                n.pg.data.is_some(),
                false,
            ),
            timeline: if running {
                n.pg.data.as_ref().map_or(0, |d| d.tli)
            } else {
                0
            },
            lsn: if running { n.pg.lsn() } else { 0 },
            replication_state: if running {
                replication_state
            } else {
                String::new()
            },
            wal_receiver,
            system_identifier: 0,
            transition_error: String::new(),
            status_unknown: false,
        }
    }

    fn maybe_fence(&mut self, i: usize, streaming: &[String]) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let k = &n.keeper;
        let others: Vec<i64> = k
            .last_reply
            .iter()
            .flat_map(|r| r.other_nodes.iter().map(|o| o.node_id))
            .collect();
        let all_streaming = !others.is_empty()
            && others
                .iter()
                .all(|o| streaming.contains(&node_slot_name(*o)));
        let since = k.lease_start.map(|t| Duration::from_millis(now - t));
        let lease = Duration::from_millis(k.lease_ms);
        if plan::must_fence(k.file.current, since, lease, all_streaming) {
            n.pg.stop();
            n.keeper.file.current = NodeState::DemoteTimeout;
            n.keeper.applied_role = None;
            let id = n.id;
            self.log(format!("node {id} fences itself: lease expired"));
        }
    }

    fn reconcile(&mut self, i: usize, goal: &plan::Goal) {
        let n = &mut self.nodes[i];
        if let Some(role) = plan::steady_role(n.keeper.file.current, goal) {
            if n.pg.running && n.keeper.applied_role.as_ref() != Some(&role) {
                configure(n, &role);
                n.keeper.applied_role = Some(role);
            }
        }
    }

    fn run_step(&mut self, i: usize, step: &Step) -> Result<(), String> {
        match step {
            Step::InitOrAdopt => {
                let n = &mut self.nodes[i];
                if n.pg.data.is_none() {
                    n.pg.data = Some(Data::new(Role::Primary {
                        ssn: String::new(),
                        read_only: false,
                    }));
                }
            }
            Step::Clone(up) => {
                if self.nodes[i].pg.data.is_none() {
                    let src = self.source(i, up.node_id)?;
                    let mut d = Data::new(Role::Standby { upstream: None });
                    d.set_wal(&src.0, src.1);
                    self.nodes[i].pg.data = Some(d);
                }
            }
            Step::Rewind(up) => {
                let (wal, tli) = self.source(i, up.node_id)?;
                let id = self.nodes[i].id;
                let Some(d) = self.nodes[i].pg.data.as_mut() else {
                    let mut d = Data::new(Role::Standby { upstream: None });
                    d.set_wal(&wal, tli);
                    self.nodes[i].pg.data = Some(d);
                    return Ok(());
                };
                let common = d.wal.iter().zip(&wal).take_while(|(a, b)| a == b).count();
                let discarded: Vec<u64> = d.wal[common..].to_vec();
                d.set_wal(&wal[..common], tli);
                let lost: Vec<u64> = discarded
                    .iter()
                    .filter(|r| self.acked.contains(r))
                    .copied()
                    .collect();
                self.log(format!(
                    "node {id} rewound to node {}: {} record(s) discarded",
                    up.node_id,
                    discarded.len()
                ));
                if !lost.is_empty() {
                    self.violate(format!(
                        "node {id}'s rewind discarded acknowledged commits {lost:?}"
                    ));
                }
            }
            Step::Configure(role) => {
                let n = &mut self.nodes[i];
                configure(n, role);
                n.keeper.applied_role = Some(role.clone());
            }
            Step::Start => self.nodes[i].pg.start()?,
            Step::Stop => {
                self.nodes[i].pg.stop();
                self.nodes[i].keeper.applied_role = None;
            }
            Step::EnsureReplicationRole => {}
            Step::WaitSyncStandby => {
                let me = &self.nodes[i];
                let names = me
                    .pg
                    .ssn()
                    .and_then(parse_ssn)
                    .map(|(_, ids)| ids)
                    .unwrap_or_default();
                let len = me.pg.lsn();
                let caught_up = names.iter().any(|j| {
                    let s = &self.nodes[*j - 1].pg;
                    s.streaming_from == Some(i) && s.lsn() >= len
                });
                if !caught_up && !self.skip_sync_wait {
                    return Err("no synchronous standby has everything yet".into());
                }
            }
            Step::WaitReplayed => {
                // The receiver stopped with Configure(Standby { upstream:
                // None }); replay catches up one step later.
                let pg = &self.nodes[i].pg;
                if pg.streaming_from.is_some() {
                    return Err("the WAL receiver still runs".into());
                }
                if pg.data.as_ref().is_some_and(|d| d.replayed < d.wal.len()) {
                    return Err("replay has not caught up yet".into());
                }
            }
            Step::Promote => {
                let rec = self.new_record();
                let n = &mut self.nodes[i];
                if !n.pg.running {
                    return Err("postgres is not running".into());
                }
                if n.pg.in_recovery {
                    let d = n.pg.data.as_mut().expect("running");
                    // What was received but not replayed would be lost.
                    if d.replayed < d.wal.len() {
                        return Err("promotion before replay finished".into());
                    }
                    n.pg.in_recovery = false;
                    d.standby_signal = false;
                    d.tli += 1;
                    d.append(rec);
                    let (id, tli) = (n.id, d.tli);
                    self.log(format!("node {id} promoted to timeline {tli}"));
                }
            }
        }
        Ok(())
    }

    /// WAL and timeline of the node to copy or rewind from, if reachable.
    fn source(&self, i: usize, node_id: i64) -> Result<(Vec<u64>, u32), String> {
        let u = (node_id - 1) as usize;
        let src = &self.nodes[u];
        if !self.link(i + 1, u + 1) || !src.pg.running || src.frozen() {
            return Err(format!("node {node_id} cannot be reached"));
        }
        let d = src.pg.data.as_ref().ok_or("the source has no data")?;
        Ok((d.wal.clone(), d.tli))
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

    fn rng_chance(&mut self, p: f64) -> bool {
        use rand::Rng;
        self.rng.random_bool(p)
    }

    fn rng_below(&mut self, n: usize) -> usize {
        use rand::Rng;
        self.rng.random_range(0..n)
    }
}

/// The settings file and standby.signal for `role`; a running standby told
/// to follow nobody stops its WAL receiver.
fn configure(n: &mut super::Node, role: &Role) {
    let running = n.pg.running;
    if let Some(d) = n.pg.data.as_mut() {
        d.config = role.clone();
        match role {
            Role::Standby { upstream } => {
                d.standby_signal = true;
                if upstream.is_none() {
                    n.pg.streaming_from = None;
                }
            }
            Role::Primary { .. } if !running => d.standby_signal = false,
            Role::Primary { .. } => {}
        }
    }
}
