//! The steps of a transition (as the engine plans them), acted out on
//! the simulated PostgreSQL.

use pgpilot_keeper::plan::{Role, Step};

use super::pg::{parse_ssn, Data};
use super::World;

impl World {
    pub(super) fn run_step(&mut self, i: usize, step: &Step) -> Result<(), String> {
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
            // Test-only: a voter's WAL receiver keeps following the old
            // primary although the keeper configured it to stop.
            Step::Configure(Role::Standby { upstream: None })
                if self.keep_streaming
                    && self.engine(i).state().assigned == pgpilot_proto::NodeState::ReportLsn => {}
            Step::Configure(role) => {
                configure(&mut self.nodes[i], role);
                self.engine(i).role_applied(Some(role.clone()));
            }
            Step::Start => {
                if self.nodes[i].start_fails_until.is_some() {
                    return Err("postgres fails to start".into());
                }
                self.nodes[i].pg.start()?;
                self.nodes[i].keeper.expected_running = true;
            }
            // The simulated PostgreSQL has no buffers to write.
            Step::Checkpoint | Step::TimelineCheckpoint => {}
            Step::Stop => {
                self.ship_final_wal(i);
                self.nodes[i].pg.shut_down();
                self.nodes[i].keeper.expected_running = false;
                self.engine(i).role_applied(None);
            }
            // Passwords are not simulated: the monitor's simulation never
            // rotates, so neither step changes anything it models.
            Step::EnsureReplicationRole | Step::SetReplicationPassword { .. } => {}
            // Parked until the monitor confirmed it (`run_steps`).
            Step::Announce => {
                if !self.engine(i).announce_confirmed() {
                    return Err("the announced start is not confirmed".into());
                }
                self.engine(i).announce_went_on();
            }
            Step::WaitSyncStandby => {
                let me = &self.nodes[i];
                let (k, names) = me.pg.ssn().and_then(parse_ssn).unwrap_or((1, Vec::new()));
                let len = me.pg.lsn();
                // As many as a commit needs (ANY k), as the agent waits.
                let caught_up = names
                    .iter()
                    .filter(|j| {
                        let s = &self.nodes[**j - 1].pg;
                        s.streaming_from == Some(i) && s.lsn() >= len
                    })
                    .count()
                    >= k.max(1);
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
            Step::WaitReplayedTo(target) => {
                // Replay catches up one step after the WAL arrived.
                let d = self.nodes[i].pg.data.as_ref().ok_or("no data")?;
                if (d.replayed as u64) < target.0 {
                    return Err(format!(
                        "replay reached {}, not {} yet",
                        d.replayed, target.0
                    ));
                }
            }
            // No hooks in the simulation.
            Step::PrePromote { .. } => {}
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
}

/// The settings file and standby.signal for `role`; a running standby told
/// to follow nobody stops its WAL receiver.
pub(super) fn configure(n: &mut super::Node, role: &Role) {
    let running = n.pg.running;
    if let Some(d) = n.pg.data.as_mut() {
        let changed = d.config != *role;
        d.config = role.clone();
        match role {
            Role::Standby { upstream } => {
                d.standby_signal = true;
                if upstream.is_none() {
                    n.pg.streaming_from = None;
                }
                // A new primary_conninfo restarts the receiver.
                if changed {
                    n.pg.receiver_hung_on = None;
                }
            }
            Role::Primary { .. } if !running => d.standby_signal = false,
            Role::Primary { .. } => {}
        }
    }
}
