//! The keeper's decisions, as plain functions (DESIGN.md §2): from its
//! current state, the monitor's goal and what it observed of PostgreSQL to
//! the steps it must run. No I/O here; [`crate::agent`] runs the steps and
//! the simulator (issue #4) can run this same code.

use pgpilot_proto::{action_for, KeeperAction, Lsn, NodeState};

/// The node a standby streams from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub node_id: i64,
    pub host: String,
    pub port: u16,
}

/// How PostgreSQL is configured (the keeper's settings file and
/// standby.signal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in recovery. `ssn` is synchronous_standby_names; `read_only`
    /// sets default_transaction_read_only (a promoted node stays read-only
    /// until the monitor's lease gate lets it take writes).
    Primary { ssn: String, read_only: bool },
    /// In recovery, streaming from `upstream`; `None` while being promoted:
    /// the WAL receiver is off so nothing more arrives from the old primary.
    Standby { upstream: Option<Upstream> },
}

/// One thing to do to PostgreSQL. Every step is idempotent: it checks what
/// is already done and does only the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// initdb, unless PGDATA already holds a cluster, which must then be a
    /// stopped primary of this group.
    InitOrAdopt,
    /// pg_basebackup from the upstream through this node's slot, unless
    /// PGDATA already holds a complete copy.
    Clone(Upstream),
    /// pg_rewind from the upstream, falling back to a fresh clone.
    Rewind(Upstream),
    /// Write the settings file (and standby.signal) for the role, reload if
    /// PostgreSQL runs, and verify with SHOW.
    Configure(Role),
    /// Before a standby that was not streaming (a copy, a rewind) starts
    /// PostgreSQL: a report that says it runs, and a reply that keeps the
    /// goal ([`crate::engine::Engine::announce_started`]). Until then it
    /// reported PostgreSQL stopped, and an election may have begun without
    /// it, counting on it to acknowledge nothing.
    Announce,
    Start,
    /// CHECKPOINT while a primary still takes writes, just before a
    /// planned [`Step::Stop`]: the shutdown checkpoint then has little
    /// left to write, and the time between the last commit on this node
    /// and the candidate's promotion (a switchover's write gap) stays
    /// short. Best effort and bounded: a failure or a timeout is logged
    /// and the stop goes on (its own checkpoint writes everything anyway).
    Checkpoint,
    /// Fast shutdown: ships the last WAL to connected standbys.
    Stop,
    /// The replication role with the formation's password (primary only).
    EnsureReplicationRole,
    /// Set the replication role's password to the one of this generation
    /// (a rotation; see `crate::engine::password`). Carries the
    /// generation, never the password: steps are logged. Writable
    /// primary only.
    SetReplicationPassword {
        generation: i64,
    },
    /// Wait until a standby named in synchronous_standby_names has flushed
    /// everything this primary had flushed when synchronous replication was
    /// turned on. Commits acknowledged while it was off (`wait_primary`)
    /// are then on a standby too, before the node reports `primary` and
    /// becomes a failover source (found by the simulation, seed 1126).
    WaitSyncStandby,
    /// Wait until the WAL receiver stopped and everything received was
    /// replayed: the promoted node then has every commit its old primary
    /// shipped to it.
    WaitReplayed,
    /// Wait until replay reached this LSN (a fast_forward's source's
    /// final LSN), streaming from the source meanwhile.
    WaitReplayedTo(Lsn),
    /// The operator's `pre_promote` hook (a no-op without one), just
    /// before [`Step::Promote`]: its failure fails the promotion. Carries
    /// the states the hook is told of.
    PrePromote {
        from: NodeState,
        to: NodeState,
    },
    Promote,
    /// A CHECKPOINT on a promoted node, once it takes writes: pg_control
    /// names the new timeline only after the first checkpoint since the
    /// promotion, and until then pg_rewind against this node finds "the
    /// same timeline" and rewinds nothing. After the writable
    /// configuration, not before: it writes every buffer dirtied since
    /// the last restartpoint, which can take seconds, and those must not
    /// be seconds without writes.
    TimelineCheckpoint,
}

/// What the keeper saw of its PostgreSQL before planning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub running: bool,
    /// `Some(true)` when running in recovery; `None` when not running.
    pub in_recovery: Option<bool>,
}

/// What the monitor asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goal {
    pub state: NodeState,
    /// synchronous_standby_names the monitor wants (writable goals only).
    pub ssn: String,
    /// The node assigned a writable state, if any other is.
    pub primary: Option<Upstream>,
    /// For goal fast_forward: how far to replay, and the voter to fetch
    /// from (`None` while none that has it is healthy).
    pub fast_forward: Option<(Option<Upstream>, Lsn)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the monitor assigned {to} while this node is {from}, and no transition leads there: the monitor and keeper versions disagree")]
    NoEdge { from: NodeState, to: NodeState },
    #[error("goal {0} needs a primary to follow, and the monitor named none yet: waiting")]
    NoPrimary(NodeState),
    #[error("goal fast_forward needs the LSN to fetch up to, and the monitor named none: the monitor and keeper versions disagree")]
    NoFastForwardTarget,
}

/// The steps that take this node from `from` to `goal.state`.
pub fn plan(from: NodeState, goal: &Goal, seen: Observed) -> Result<Vec<Step>, PlanError> {
    use Step::*;
    let to = goal.state;
    let action = action_for(from, to).ok_or(PlanError::NoEdge { from, to })?;
    let upstream = || goal.primary.clone().ok_or(PlanError::NoPrimary(to));
    let writable = |ssn: &str| {
        Configure(Role::Primary {
            ssn: ssn.to_string(),
            read_only: false,
        })
    };
    // Promotion steps; skipped when a previous run already promoted.
    let promote = |steps: &mut Vec<Step>| {
        if seen.in_recovery != Some(false) {
            steps.extend([
                Configure(Role::Standby { upstream: None }),
                Start,
                WaitReplayed,
                PrePromote { from, to },
                Promote,
            ]);
        }
    };
    let mut steps = match action {
        KeeperAction::Noop => vec![],
        KeeperAction::InitPrimary => {
            vec![InitOrAdopt, writable(""), Start, EnsureReplicationRole]
        }
        KeeperAction::InitStandby => {
            let u = upstream()?;
            vec![
                Clone(u.clone()),
                Configure(Role::Standby { upstream: Some(u) }),
                Announce,
                Start,
            ]
        }
        KeeperAction::EnableSyncRep => vec![writable(&goal.ssn), Start, WaitSyncStandby],
        KeeperAction::DisableSyncRep => vec![writable(""), Start],
        // A planned demotion of a running primary (a switchover drains
        // it): checkpoint while it still takes writes. Every other stop
        // (a demotion that timed out, a drop) stops at once.
        KeeperAction::StopPostgres
            if matches!(from, NodeState::Primary | NodeState::ApplySettings)
                && to == NodeState::Draining
                && seen.running =>
        {
            vec![Checkpoint, Stop]
        }
        KeeperAction::StopPostgres | KeeperAction::Drop => vec![Stop],
        KeeperAction::PromoteReadOnly => {
            let mut steps = vec![];
            promote(&mut steps);
            steps.push(Configure(Role::Primary {
                ssn: String::new(),
                read_only: true,
            }));
            steps
        }
        // The LSN reported after this must be final: the receiver is gone
        // and everything received is replayed.
        KeeperAction::StopStreaming => vec![
            Configure(Role::Standby { upstream: None }),
            Start,
            WaitReplayed,
        ],
        // Its source streams from nobody, so what it has is final: stream
        // it all, then stop streaming (as in report_lsn) so that the LSN
        // reported with fast_forward is final too. Without a source (none
        // that has it is healthy) it only replays what it received, and
        // fails the wait if that is not enough: the monitor decides.
        KeeperAction::FastForward => {
            let (src, lsn) = goal
                .fast_forward
                .clone()
                .ok_or(PlanError::NoFastForwardTarget)?;
            vec![
                Configure(Role::Standby { upstream: src }),
                Start,
                WaitReplayedTo(lsn),
                Configure(Role::Standby { upstream: None }),
                WaitReplayed,
            ]
        }
        KeeperAction::AllowWrites => vec![writable(&goal.ssn), TimelineCheckpoint],
        KeeperAction::PromoteWritable => {
            let mut steps = vec![];
            promote(&mut steps);
            steps.extend([writable(""), TimelineCheckpoint]);
            steps
        }
        KeeperAction::Rejoin => {
            let u = upstream()?;
            vec![
                Stop,
                Rewind(u.clone()),
                Configure(Role::Standby { upstream: Some(u) }),
                Announce,
                Start,
            ]
        }
        KeeperAction::RestartAsPrimary => vec![writable(&goal.ssn), Start],
    };
    // The monitor fails over only from a node that *reported* primary, so
    // reporting it promises that a standby has every commit this node ever
    // acknowledged, including those from before synchronous replication
    // was on. Every way into `primary` ends with that check (a fenced
    // wait_primary coming back as primary lost commits without it: the
    // simulation, seed 2464).
    if to == NodeState::Primary && steps.last() != Some(&WaitSyncStandby) {
        steps.push(WaitSyncStandby);
    }
    Ok(steps)
}

/// The configuration a node keeps while it stays in `state`, so that a
/// restarted PostgreSQL or a changed upstream is put right without a goal
/// change. `None` for states where PostgreSQL is stopped.
pub fn steady_role(state: NodeState, goal: &Goal) -> Option<Role> {
    use NodeState::*;
    match state {
        Single | WaitPrimary => Some(Role::Primary {
            ssn: String::new(),
            read_only: false,
        }),
        Primary | ApplySettings => Some(Role::Primary {
            ssn: goal.ssn.clone(),
            read_only: false,
        }),
        StopReplication => Some(Role::Primary {
            ssn: String::new(),
            read_only: true,
        }),
        Catchingup | Secondary | PreparePromotion | WaitMaintenance => goal
            .primary
            .clone()
            .map(|u| Role::Standby { upstream: Some(u) }),
        // In an election: streams from nobody, so the old primary cannot
        // get acknowledgements through this node.
        ReportLsn | FastForward => Some(Role::Standby { upstream: None }),
        _ => None,
    }
}

/// The goal as a monitor reply states it: the assigned state, the
/// synchronous_standby_names to apply, and the node to follow (the one
/// whose goal accepts writes).
pub fn goal_from_reply(reply: &pgpilot_proto::pb::NodeActiveResponse, state: NodeState) -> Goal {
    let primary = reply
        .other_nodes
        .iter()
        .find(|n| n.is_primary)
        .map(|n| Upstream {
            node_id: n.node_id,
            host: n.host.clone(),
            port: n.port as u16,
        });
    // The source by its id among the other nodes (its address is theirs).
    let fast_forward = reply.fast_forward.as_ref().map(|f| {
        let src = reply
            .other_nodes
            .iter()
            .find(|n| n.node_id == f.node_id)
            .map(|n| Upstream {
                node_id: n.node_id,
                host: n.host.clone(),
                port: n.port as u16,
            });
        (src, Lsn(f.lsn))
    });
    Goal {
        state,
        ssn: reply.synchronous_standby_names.clone(),
        primary,
        fast_forward,
    }
}

/// Whether the keeper may start a stopped PostgreSQL in `current` now. A
/// writable node needs a valid lease first: the monitor may have promoted
/// another node while this keeper was away.
pub fn may_start(current: NodeState, lease_valid: bool) -> bool {
    current.wants_running()
        && (!current.accepts_writes() || current == NodeState::Single || lease_valid)
}

/// What the keeper reports as `pg_running` (DESIGN.md §5): "down" only once
/// the restart budget is spent; a PostgreSQL the keeper is (re)starting
/// counts as running, or every keeper restart of a primary would hand the
/// monitor a failover witness.
pub fn report_pg_running(
    running: bool,
    current: NodeState,
    has_pgdata: bool,
    restarts_given_up: bool,
) -> bool {
    running || (current.wants_running() && has_pgdata && !restarts_given_up)
}

/// The fencing token: a goal from an older generation than one already
/// seen is ignored (it was decided before a promotion this node knows of).
pub fn accept_goal(generation_seen: i64, reply_generation: i64) -> bool {
    reply_generation >= generation_seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_proto::EDGES;
    use NodeState::*;

    fn goal(state: NodeState, primary: bool) -> Goal {
        Goal {
            state,
            ssn: "ANY 1 (pgpilot_node_2)".into(),
            primary: primary.then(|| Upstream {
                node_id: 1,
                host: "10.0.0.1".into(),
                port: 5432,
            }),
            fast_forward: (state == FastForward).then(|| (Some(voter()), Lsn(0x3000148))),
        }
    }

    fn voter() -> Upstream {
        Upstream {
            node_id: 3,
            host: "10.0.0.3".into(),
            port: 5432,
        }
    }

    const RUNNING_STANDBY: Observed = Observed {
        running: true,
        in_recovery: Some(true),
    };

    #[test]
    fn every_edge_has_a_plan_when_a_primary_is_known() {
        for (from, to, _) in EDGES {
            let steps = plan(*from, &goal(*to, true), Observed::default());
            assert!(steps.is_ok(), "{from} -> {to}: {steps:?}");
        }
    }

    #[test]
    fn unknown_edge_is_an_error_not_a_guess() {
        let err = plan(Init, &goal(Primary, true), Observed::default()).unwrap_err();
        assert_eq!(
            err,
            PlanError::NoEdge {
                from: Init,
                to: Primary
            }
        );
    }

    #[test]
    fn standby_steps_wait_for_a_primary() {
        assert_eq!(
            plan(WaitStandby, &goal(Catchingup, false), Observed::default()),
            Err(PlanError::NoPrimary(Catchingup))
        );
        assert_eq!(
            plan(Demoted, &goal(Catchingup, false), Observed::default()),
            Err(PlanError::NoPrimary(Catchingup))
        );
    }

    #[test]
    fn promotion_is_read_only_and_waits_for_replay() {
        let steps = plan(
            PreparePromotion,
            &goal(StopReplication, false),
            RUNNING_STANDBY,
        )
        .unwrap();
        let promote = steps.iter().position(|s| *s == Step::Promote).unwrap();
        let replayed = steps.iter().position(|s| *s == Step::WaitReplayed).unwrap();
        assert!(replayed < promote);
        assert_eq!(
            steps[0],
            Step::Configure(Role::Standby { upstream: None }),
            "the WAL receiver stops before replay is awaited"
        );
        assert_eq!(
            steps.last(),
            Some(&Step::Configure(Role::Primary {
                ssn: String::new(),
                read_only: true
            }))
        );
        // Re-run after the keeper died past the promotion: no second promote.
        let promoted = Observed {
            running: true,
            in_recovery: Some(false),
        };
        let again = plan(PreparePromotion, &goal(StopReplication, false), promoted).unwrap();
        assert!(!again.contains(&Step::Promote));
    }

    #[test]
    fn fast_forward_streams_from_the_voter_then_stops() {
        let steps = plan(ReportLsn, &goal(FastForward, false), RUNNING_STANDBY).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Configure(Role::Standby {
                    upstream: Some(voter())
                }),
                Step::Start,
                Step::WaitReplayedTo(Lsn(0x3000148)),
                Step::Configure(Role::Standby { upstream: None }),
                Step::WaitReplayed,
            ]
        );
        // Without a source (none healthy): it replays what it received.
        let mut g = goal(FastForward, false);
        g.fast_forward = Some((None, Lsn(0x3000148)));
        let steps = plan(ReportLsn, &g, RUNNING_STANDBY).unwrap();
        assert_eq!(steps[0], Step::Configure(Role::Standby { upstream: None }));
        assert_eq!(steps[2], Step::WaitReplayedTo(Lsn(0x3000148)));
        // Without a target: an error that names the version mismatch.
        g.fast_forward = None;
        assert_eq!(
            plan(ReportLsn, &g, RUNNING_STANDBY),
            Err(PlanError::NoFastForwardTarget)
        );
        assert_eq!(
            steady_role(FastForward, &g),
            Some(Role::Standby { upstream: None })
        );
    }

    #[test]
    fn primary_is_reported_only_once_a_standby_has_everything() {
        for (from, to, _) in EDGES.iter().filter(|(_, to, _)| *to == Primary) {
            let steps = plan(*from, &goal(*to, false), RUNNING_STANDBY).unwrap();
            assert_eq!(steps.last(), Some(&Step::WaitSyncStandby), "{from} -> {to}");
        }
    }

    #[test]
    fn writes_allowed_only_by_allow_writes_with_monitors_ssn() {
        let steps = plan(StopReplication, &goal(WaitPrimary, false), RUNNING_STANDBY).unwrap();
        // Writes first, then the checkpoint that puts the new timeline
        // into pg_control (it may take seconds: not seconds without writes).
        assert_eq!(
            steps,
            vec![
                Step::Configure(Role::Primary {
                    ssn: "ANY 1 (pgpilot_node_2)".into(),
                    read_only: false
                }),
                Step::TimelineCheckpoint
            ]
        );
    }

    #[test]
    fn rejoin_stops_before_rewinding() {
        let steps = plan(Demoted, &goal(Catchingup, true), Observed::default()).unwrap();
        assert!(matches!(
            steps[..],
            [
                Step::Stop,
                Step::Rewind(_),
                Step::Configure(Role::Standby { upstream: Some(_) }),
                Step::Announce,
                Step::Start
            ]
        ));
    }

    const RUNNING_PRIMARY: Observed = Observed {
        running: true,
        in_recovery: Some(false),
    };

    #[test]
    fn a_drained_primary_checkpoints_before_it_stops() {
        for from in [Primary, ApplySettings] {
            let steps = plan(from, &goal(Draining, false), RUNNING_PRIMARY).unwrap();
            assert_eq!(steps, vec![Step::Checkpoint, Step::Stop], "{from}");
            // Already stopped (a keeper that died after the stop): nothing
            // to checkpoint.
            let steps = plan(from, &goal(Draining, false), Observed::default()).unwrap();
            assert_eq!(steps, vec![Step::Stop], "{from}, stopped");
        }
    }

    #[test]
    fn other_stops_do_not_checkpoint() {
        for (from, to, action) in EDGES {
            if !matches!(action, KeeperAction::StopPostgres | KeeperAction::Drop)
                || (matches!(from, Primary | ApplySettings) && *to == Draining)
            {
                continue;
            }
            let steps = plan(*from, &goal(*to, true), RUNNING_PRIMARY).unwrap();
            assert_eq!(steps, vec![Step::Stop], "{from} -> {to}");
        }
        // Nor does any other edge.
        for (from, to, _) in EDGES {
            let steps = plan(*from, &goal(*to, true), RUNNING_PRIMARY).unwrap();
            if steps.contains(&Step::Checkpoint) {
                assert!(
                    matches!(from, Primary | ApplySettings) && *to == Draining,
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn stopped_states_do_not_run_postgres() {
        for s in [Init, WaitStandby, Draining, DemoteTimeout, Demoted, Dropped] {
            assert!(!s.wants_running(), "{s}");
            assert_eq!(steady_role(s, &goal(s, true)), None, "{s}");
        }
        for (_, to, action) in EDGES {
            if matches!(action, KeeperAction::StopPostgres | KeeperAction::Drop) {
                assert!(!to.wants_running(), "{to} is reached by stopping");
            }
        }
    }
}
