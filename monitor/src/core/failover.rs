//! The operator's `perform failover [--allow-data-loss]`: the way out when
//! automatic failover will not act because it cannot prove that a
//! standby holds every acknowledged commit (a quorum standby is missing,
//! the primary was not in `primary`, an election waits for a voter).
//!
//! Without the flag it goes on only when that still loses nothing: with
//! `ANY k (...)` every acknowledged commit is on k quorum standbys, so an
//! election without fewer than k of them still sees each commit on a
//! voter, and the most advanced voter wins. Otherwise it refuses and
//! names the nodes it would need. With the flag it goes on anyway and
//! records, in an event, the LSN range that may be lost.

use pgpilot_proto::NodeState::*;

use super::Core;
use crate::error::{MonitorError, Result};
use crate::fsm::{
    self, has_final_lsn, is_healthy, quorum_counts, Action, GroupView, NodeView, Timestamp,
};

impl Core {
    pub fn failover(
        &self,
        g: &mut GroupView,
        allow_data_loss: bool,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        let mut out = if let Some(c) = g.nodes.iter().find(|n| n.assigned == FastForward) {
            skip_fast_forward(g, c, allow_data_loss, now, &self.cfg)?
        } else if election_waiting(g) {
            leave_out_of_election(g, allow_data_loss, now, &self.cfg)?
        } else {
            let out = start_forced_election(g, allow_data_loss, now, &self.cfg)?;
            // The writer it replaces may write under its exemption until
            // the voters stop streaming: see `NodeView::failed_over_at`.
            if let Some(p) = g.nodes.iter_mut().find(|n| {
                n.assigned.accepts_writes()
                    || (n.assigned == Dropped && n.dropped_from.is_some_and(|s| s.accepts_writes()))
            }) {
                p.failed_over_at = Some(now);
            }
            out
        };
        fsm::apply(g, &out, now);
        self.settle(g, now, &mut out);
        Ok(out)
    }
}

fn refuse<T>(why: String) -> Result<T> {
    Err(MonitorError::FailedPrecondition(why))
}

/// An election is under way and has no winner yet.
fn election_waiting(g: &GroupView) -> bool {
    g.nodes.iter().any(|n| n.assigned == ReportLsn) && !fsm::promoting(g)
}

/// An election's winner fetches the WAL it lacks from a more advanced
/// voter (fast_forward). That loses nothing, so without the flag the
/// command refuses and says what the group waits for. With it the winner
/// is promoted with what it has, and the event names the range the
/// voters hold beyond it.
fn skip_fast_forward(
    g: &GroupView,
    c: &NodeView,
    allow_data_loss: bool,
    now: Timestamp,
    cfg: &fsm::FsmConfig,
) -> Result<Vec<Action>> {
    let src = fsm::fast_forward_of(g, c.id, now, cfg).and_then(|(s, _)| s);
    let theirs = g
        .nodes
        .iter()
        .filter(|v| v.assigned == ReportLsn && v.tli == c.tli)
        .map(|v| v.lsn)
        .max()
        .unwrap_or(c.lsn);
    if !allow_data_loss {
        let wait = fsm::current_wait(g, now, cfg).map_or(String::new(), |(_, why)| {
            format!(" (the group waits: {why})")
        });
        return refuse(format!(
            "node {} was elected and fetches the WAL it lacks (up to LSN {theirs}) from {} before \
             it is promoted (fast_forward), which loses nothing{wait}; to promote it at once \
             without that WAL: `pgpilot perform failover --allow-data-loss`",
            c.id,
            src.map_or("a more advanced voter".to_string(), |s| format!(
                "node {}",
                s.id
            )),
        ));
    }
    Ok(vec![
        note(
            c.id,
            format!(
                "perform failover --allow-data-loss asked by the operator: node {} is promoted \
                 without finishing its fast_forward",
                c.id
            ),
        ),
        note(c.id, loss(c.lsn, theirs, "the voters ahead of the winner")),
        Action::AssignGoal {
            node_id: c.id,
            goal: PreparePromotion,
            reason: format!(
                "node {} assigned prepare_promotion: the operator gave up its fast_forward",
                c.id
            ),
        },
    ])
}

/// An election waits for voters that do not report a final LSN: they are
/// left out (sent to follow the winner, which they do once they are back).
fn leave_out_of_election(
    g: &GroupView,
    allow_data_loss: bool,
    now: Timestamp,
    cfg: &fsm::FsmConfig,
) -> Result<Vec<Action>> {
    let voters: Vec<&NodeView> = g.nodes.iter().filter(|n| n.assigned == ReportLsn).collect();
    let leave_out: Vec<&NodeView> = voters
        .iter()
        .copied()
        .filter(|v| quorum_counts(v) && !(has_final_lsn(v) && is_healthy(v, now, cfg)))
        .collect();
    if leave_out.is_empty() {
        let wait = fsm::current_wait(g, now, cfg).map_or("nothing".to_string(), |(_, why)| why);
        return refuse(format!(
            "the election waits for no voter it could go on without (it waits for: {wait})"
        ));
    }
    let present: Vec<&NodeView> = voters
        .iter()
        .copied()
        .filter(|v| !leave_out.iter().any(|m| m.id == v.id) && has_final_lsn(v))
        .collect();
    let old = g
        .nodes
        .iter()
        .find(|n| matches!(n.assigned, Draining | DemoteTimeout) || n.assigned == Dropped);
    // Every quorum standby that will not vote, not only the voters left
    // out now (some were left out earlier, or were never voters).
    let missing = missing_quorum(g, old.map(|o| o.id), &present);
    if !present.iter().any(|v| v.candidate_priority > 0) {
        return refuse(
            "no voter that reported its final LSN has a candidate priority above 0: raise one \
             (`pgpilot set node candidate-priority --name NAME 50`)"
                .into(),
        );
    }
    // The old primary is no longer in `primary`: its number_sync_standbys
    // is not known to be confirmed (see `confirmed_k`), so 1.
    let k = confirmed_k(g, None);
    let names = names(&missing);
    let mut out = vec![note(
        leave_out[0].id,
        format!(
            "perform failover{} asked by the operator: the election goes on without {names}",
            flag(allow_data_loss)
        ),
    )];
    if !missing.is_empty() && missing.len() >= k {
        let best = present.iter().map(|v| v.lsn).max().unwrap_or_default();
        let theirs = missing.iter().map(|m| m.lsn).max().unwrap_or_default();
        if !allow_data_loss {
            return refuse(format!(
                "{names} may hold acknowledged commits no voter has (every commit is on {k} of the \
                 quorum standbys, and {} of them are missing): bring {} back, or accept losing \
                 them with `pgpilot perform failover --allow-data-loss`",
                missing.len(),
                if missing.len() == 1 { "it" } else { "one of them" }
            ));
        }
        out.push(note(leave_out[0].id, loss(best, theirs, &names)));
    }
    for m in &leave_out {
        out.push(Action::AssignGoal {
            node_id: m.id,
            goal: Catchingup,
            reason: format!(
                "node {} assigned catchingup: left out of the election by the operator; it follows \
                 the winner once it is back",
                m.id
            ),
        });
    }
    Ok(out)
}

/// No election under way: the writer is gone and automatic failover did
/// not act. An election starts without the quorum standbys it would wait
/// for.
fn start_forced_election(
    g: &GroupView,
    allow_data_loss: bool,
    now: Timestamp,
    cfg: &fsm::FsmConfig,
) -> Result<Vec<Action>> {
    // Not `operation_under_way`: a dead writer is often not at its goal.
    let promoting = g.nodes.iter().find(|n| {
        matches!(
            n.assigned,
            PreparePromotion | StopReplication | Draining | DemoteTimeout
        )
    });
    if let Some(n) = promoting {
        return refuse(format!(
            "a promotion is under way (node {} is assigned {}): perform failover acts on a group \
             whose primary is gone, or on an election that waits for a voter",
            n.id, n.assigned
        ));
    }
    if let Some(id) = g.switchover_to {
        return refuse(format!("a switchover to node {id} is under way"));
    }
    let writer = g
        .nodes
        .iter()
        .find(|n| n.assigned.accepts_writes())
        .or_else(|| {
            // A dropped writer whose row stays (nothing replaced it yet).
            g.nodes.iter().find(|n| {
                n.assigned == Dropped && n.dropped_from.is_some_and(|s| s.accepts_writes())
            })
        });
    let Some(p) = writer else {
        return refuse("the group has no primary to fail over from".into());
    };
    let dropped = p.assigned == Dropped;
    if !dropped && is_healthy(p, now, cfg) {
        return refuse(format!(
            "primary node {} is healthy: for a planned change use `pgpilot perform switchover`",
            p.id
        ));
    }
    if !dropped
        && p.reported != DemoteTimeout
        && pgpilot_proto::action_for(p.reported, DemoteTimeout).is_none()
    {
        return refuse(format!(
            "node {} is {} on its way to {}: wait until it is in a state it can be demoted from",
            p.id, p.reported, p.assigned
        ));
    }
    // On its way into a writable state (a fenced primary restarting as
    // primary): its PostgreSQL may take writes already although it
    // reports a stopped state. Only once its lease is over is it fenced
    // for certain (simulation, seed 453620).
    if !dropped
        && !p.reported.accepts_writes()
        && p.assigned.accepts_writes()
        && !fsm::lease_expired(p, now, cfg)
    {
        return refuse(format!(
            "node {} is on its way from {} to {}: it may take writes already; retry once its lease \
             is over (lease {} + margin {} after its last report)",
            p.id,
            p.reported,
            p.assigned,
            fsm::secs(cfg.lease),
            fsm::secs(cfg.clock_margin)
        ));
    }
    if p.assigned == Single {
        return refuse(format!(
            "node {} is the only node of the group: there is no standby to promote",
            p.id
        ));
    }
    let voters: Vec<&NodeView> = fsm::followers(g, p)
        .filter(|s| is_healthy(s, now, cfg) && fsm::can_report_lsn(s))
        .collect();
    if !voters.iter().any(|v| v.candidate_priority > 0) {
        return refuse(format!(
            "no healthy standby of node {} with a candidate priority above 0 can be promoted",
            p.id
        ));
    }
    let present: Vec<&NodeView> = voters.clone();
    // Every quorum standby that will not vote: the election's blockers,
    // and those it would not even wait for (a dropped quorum standby the
    // primary had not yet confirmed names without, ...).
    let blockers = missing_quorum(g, Some(p.id), &present);
    let sync_on = fsm::sync_writer(p) || (dropped && p.dropped_from == Some(Primary));
    let k = confirmed_k(g, Some(p));
    let safe = sync_on && blockers.len() < k;
    let names = names(&blockers);
    if !safe && !allow_data_loss {
        return refuse(if !sync_on {
            format!(
                "node {} was {} (synchronous replication not known to be on): commits it \
                 acknowledged may exist only on it; bring it back, or accept losing them with \
                 `pgpilot perform failover --allow-data-loss`",
                p.id, p.reported
            )
        } else {
            format!(
                "{names} may hold acknowledged commits no other standby has (every commit is on \
                 {k} of the quorum standbys, and {} of them cannot vote); bring {} back, or accept \
                 losing them with `pgpilot perform failover --allow-data-loss`",
                blockers.len(),
                if blockers.len() == 1 {
                    "it"
                } else {
                    "one of them"
                }
            )
        });
    }
    let why = format!(
        "election: perform failover{} asked by the operator: primary node {} is {}{}",
        flag(allow_data_loss),
        p.id,
        if dropped { "dropped" } else { "not healthy" },
        if blockers.is_empty() {
            String::new()
        } else {
            format!(", going on without {names}")
        }
    );
    let mut out = vec![note(p.id, why.clone())];
    if !safe {
        let best = voters.iter().map(|v| v.lsn).max().unwrap_or_default();
        let theirs = blockers
            .iter()
            .map(|b| b.lsn)
            .chain([p.lsn])
            .max()
            .unwrap_or_default();
        out.push(note(
            p.id,
            loss(
                best,
                theirs,
                &format!(
                    "node {}{}",
                    p.id,
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" and {names}")
                    }
                ),
            ),
        ));
    }
    out.extend(fsm::election(g, p, &why, now, cfg));
    if !dropped {
        out.push(Action::AssignGoal {
            node_id: p.id,
            goal: DemoteTimeout,
            reason: format!(
                "node {} assigned demote_timeout: the operator failed over from it",
                p.id
            ),
        });
    }
    Ok(out)
}

/// The quorum standbys that may hold acknowledged commits of the old
/// primary `p` and are not among the voters `present`: whatever their
/// state (left out of an earlier election, dropped before the primary
/// confirmed names without them, unhealthy), except those that never held
/// its data (still waiting for their copy) and earlier old primaries.
fn missing_quorum<'a>(
    g: &'a GroupView,
    p: Option<i64>,
    present: &[&NodeView],
) -> Vec<&'a NodeView> {
    g.nodes
        .iter()
        .filter(|n| {
            Some(n.id) != p
                && !present.iter().any(|v| v.id == n.id)
                && quorum_counts(n)
                && !matches!(n.reported, Init | WaitStandby)
                && !matches!(n.assigned, Draining | DemoteTimeout | Demoted)
        })
        .collect()
}

/// How many quorum standbys every acknowledged commit of `p` is known to
/// be on: number_sync_standbys once `p` is in `primary` under it (it got
/// there through a wait for that many standbys to have everything, and
/// every later change of the setting takes it through apply_settings
/// again), else 1.
fn confirmed_k(g: &GroupView, p: Option<&NodeView>) -> usize {
    match p {
        Some(p) if fsm::is_in(p, Primary) => g.number_sync_standbys.max(1) as usize,
        _ => 1,
    }
}

fn note(node_id: i64, description: String) -> Action {
    Action::Note {
        node_id,
        description,
    }
}

fn flag(allow_data_loss: bool) -> &'static str {
    if allow_data_loss {
        " --allow-data-loss"
    } else {
        ""
    }
}

fn names(nodes: &[&NodeView]) -> String {
    let ids: Vec<String> = nodes.iter().map(|n| format!("node {}", n.id)).collect();
    ids.join(", ")
}

/// The event that says what the operator accepted to lose.
fn loss(best: pgpilot_proto::Lsn, theirs: pgpilot_proto::Lsn, whose: &str) -> String {
    format!(
        "DATA LOSS accepted by the operator (--allow-data-loss): commits acknowledged by {whose} \
         and not on the winner may be lost; the voters reach LSN {best}, {whose} last reported \
         LSN {theirs}{}",
        if theirs > best {
            format!(", so at least the range {best}..{theirs}")
        } else {
            String::new()
        }
    )
}
