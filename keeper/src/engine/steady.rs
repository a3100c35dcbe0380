//! A steady state: keeping PostgreSQL's settings in line with the goal,
//! and the few steady states that need more than a reload (a standby told
//! to follow another node, a catching-up standby that cannot stream).

use pgpilot_proto::NodeState;

use super::{Engine, Mono, STUCK_STANDBY};
use crate::plan::{self, Goal, Role, Step, Upstream};

impl Engine {
    /// The configuration to apply in a steady state, if PostgreSQL runs
    /// and the settings were not verified for it yet.
    pub fn role_to_apply(&self, goal: &Goal) -> Option<Role> {
        plan::steady_role(self.state.current, goal)
            .filter(|r| self.obs.running && self.applied_role.as_ref() != Some(r))
    }

    /// The settings were written and verified for `role` (`None`: stopped,
    /// or unknown).
    pub fn role_applied(&mut self, role: Option<Role>) {
        let following = match &role {
            Some(Role::Standby { upstream: Some(u) }) => Some(u.node_id),
            Some(Role::Primary { .. }) => None,
            // Not streaming (an election, a promotion), or stopped: still
            // the node whose WAL it has.
            _ => self.state.following,
        };
        if following != self.state.following {
            self.state.following = following;
            self.dirty = true;
        }
        self.applied_role = role;
    }

    /// In a steady state: the steps that keep PostgreSQL in line with the
    /// goal. Usually the settings for its role ([`Engine::role_to_apply`]);
    /// but a standby told to follow another node than the one it streamed
    /// from is rewound first (dead end 12: an asynchronous standby ahead of
    /// a newly promoted node, or an election's loser, could never stream
    /// again; pg_rewind is a no-op for one that is behind).
    ///
    /// And a catching-up standby that has not streamed for
    /// [`STUCK_STANDBY`] although the monitor reports its upstream up is
    /// rewound too, at most every [`STUCK_STANDBY`]: its WAL may have
    /// diverged from that upstream's in a way the node it follows does not
    /// show (the upstream itself was rewound; simulation seed 96626).
    ///
    /// With nothing else to do, a writable primary sets a rotated
    /// replication password on the role ([`Engine::password_step`]).
    pub fn steady_steps(&mut self, now: Mono, goal: &Goal) -> Vec<Step> {
        let steps = self.settings_steps(now, goal);
        if steps.is_empty() {
            return self.password_step().into_iter().collect();
        }
        steps
    }

    /// The role's password was set to `generation` by this keeper
    /// ([`Step::SetReplicationPassword`]): what PostgreSQL shows now.
    pub fn role_password_set(&mut self, generation: i64) {
        if let Some(s) = self.obs.status.as_mut() {
            s.role_password_generation = Some(generation);
        }
    }

    fn settings_steps(&mut self, now: Mono, goal: &Goal) -> Vec<Step> {
        if self.out_of_recovery() {
            return fence_rogue(goal);
        }
        let rejoin = |u: &Upstream, role: &Role| {
            vec![
                Step::Stop,
                Step::Rewind(u.clone()),
                Step::Configure(role.clone()),
                Step::Start,
            ]
        };
        let standby = matches!(
            self.state.current,
            NodeState::Catchingup | NodeState::Secondary
        );
        // A rewind of a steady standby was cut short: its data is replaced
        // by a copy (the Rewind step sees the marker), at most every
        // STUCK_STANDBY while the copy keeps failing.
        if self.obs.rewind_interrupted && standby {
            if let Some(u) = goal.primary.clone().filter(|_| {
                self.last_stuck_rejoin
                    .is_none_or(|t| now.saturating_sub(t) > STUCK_STANDBY)
            }) {
                self.last_stuck_rejoin = Some(now);
                let role = Role::Standby {
                    upstream: Some(u.clone()),
                };
                return rejoin(&u, &role);
            }
        }
        if let Some(role) = self.role_to_apply(goal) {
            // Only from an upstream the monitor reports up: pg_rewind needs
            // it running, and stopping this standby for a rewind that
            // cannot work, every round, leaves it unhealthy for good,
            // which blocks every failover (simulation, seed 450650: the
            // new primary's machine was lost). Meanwhile it is configured
            // to follow it; if it diverged it cannot stream, and the
            // stuck-standby rewind below comes once the upstream is up.
            return match (&role, self.state.following) {
                (Role::Standby { upstream: Some(u) }, Some(f))
                    if f != u.node_id && standby && self.upstream_reported_up(goal) =>
                {
                    rejoin(u, &role)
                }
                _ => vec![Step::Configure(role)],
            };
        }
        let stuck = self.state.current == NodeState::Catchingup
            && self.obs.status.as_ref().is_some_and(|s| {
                s.in_recovery && !s.wal_receiver.is_some_and(|(streaming, _)| streaming)
            })
            && self.upstream_silent(now).is_some_and(|d| d > STUCK_STANDBY)
            && self
                .last_stuck_rejoin
                .is_none_or(|t| now.saturating_sub(t) > STUCK_STANDBY)
            && self.upstream_reported_up(goal);
        match (&self.applied_role, &goal.primary) {
            (Some(role @ Role::Standby { upstream: Some(_) }), Some(u)) if stuck => {
                self.last_stuck_rejoin = Some(now);
                rejoin(u, &role.clone())
            }
            _ => Vec::new(),
        }
    }

    /// A leadership conflict on this node: its state is a standby's
    /// ([`NodeState::requires_recovery`]) but its PostgreSQL runs out of
    /// recovery, so it takes writes the monitor never assigned (promoted
    /// or started by hand, a data directory restored without
    /// standby.signal). [`Engine::steady_steps`] fences it.
    pub fn out_of_recovery(&self) -> bool {
        self.state.current.requires_recovery()
            && self.obs.running
            && self.obs.status.as_ref().is_some_and(|s| !s.in_recovery)
    }

    /// The monitor's last reply says the node to follow reports a writable
    /// state and is healthy (so a standby that cannot stream from it is not
    /// merely waiting for a primary that is down: stopping it to rewind
    /// would then only make it unhealthy, which blocks failover).
    fn upstream_reported_up(&self, goal: &Goal) -> bool {
        let Some(u) = &goal.primary else {
            return false;
        };
        self.last_reply.as_ref().is_some_and(|r| {
            r.other_nodes.iter().any(|n| {
                n.node_id == u.node_id
                    && n.healthy
                    && NodeState::from_wire(n.reported_state).is_ok_and(|s| s.accepts_writes())
            })
        })
    }
}

/// The steps that fence a standby found out of recovery
/// ([`Engine::out_of_recovery`]): stop it at once (a fast shutdown ends
/// every session and leaves a clean shutdown for pg_rewind), make it a
/// standby again before anything else (so that a restart after a failed
/// step comes up in recovery), rewind it from the node to follow (its
/// timeline forked when it was promoted) and start it as a standby. With
/// no node to follow it only restarts in recovery; the stuck-standby
/// rewind takes over once an upstream is up.
fn fence_rogue(goal: &Goal) -> Vec<Step> {
    let role = Role::Standby {
        upstream: goal.primary.clone(),
    };
    let mut steps = vec![Step::Stop, Step::Configure(role.clone())];
    if let Some(u) = &goal.primary {
        steps.extend([Step::Rewind(u.clone()), Step::Configure(role)]);
    }
    steps.push(Step::Start);
    steps
}
