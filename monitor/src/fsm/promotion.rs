//! From a chosen candidate to a writable primary: the promotion step, the
//! lease gate, and a planned switchover's own waits and ways out.
//!
//! A planned switchover ([`crate::core::Core::switchover`]) assigns the
//! old primary `draining` and records the candidate, a secondary that
//! goes on streaming from it. The candidate is told to promote
//! (secondary -> stop_replication) only once the old primary stopped
//! cleanly (its keeper reports the LSN of its
//! shutdown checkpoint: every commit it acknowledged lies before it) and
//! the candidate has received WAL up to there. PostgreSQL's fast shutdown
//! waits until its walsenders have sent everything to the standbys that
//! stream, so that is a matter of the candidate's next report. Then it
//! promotes straight to writable (secondary -> wait_primary): the old
//! primary reported a stopped state, so there is no lease to wait for and
//! no read-only step (a report and a decision fewer in the write gap).
//!
//! Ways out: an old primary that dies before it stopped cleanly makes it
//! a failover (an election when other standbys may hold its commits); a
//! candidate that cannot promote gives the old primary back its role
//! ([`switchover_abort`]).

use pgpilot_proto::NodeState::*;

use super::failover::{followers, start_election};
use super::health::{age, is_fenced, is_healthy, keeper_silent, secs, silence};
use super::rules::{assign, quorum_counts};
use super::{is_in, Action, FsmConfig, GroupView, NodeView, Timestamp};

/// The old primary a promotion of `c` replaces: the node told to go.
fn being_replaced(g: &GroupView, c: i64) -> Option<&NodeView> {
    g.nodes
        .iter()
        .find(|o| o.id != c && matches!(o.assigned, Draining | DemoteTimeout))
}

/// Where a planned switchover's old primary is.
enum OldPrimary<'a> {
    /// Stopped cleanly, and the candidate has all its WAL: promote.
    Done(String),
    /// Still stopping, or the candidate has not reported the last WAL yet.
    Wait,
    /// Gone before it stopped cleanly (its keeper went silent, or
    /// PostgreSQL stopped without a shutdown checkpoint): a failover now.
    Died(&'a NodeView, String),
}

/// The old primary of the switchover to `c`: the node told to go.
fn old_primary<'a>(
    g: &'a GroupView,
    c: &NodeView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> OldPrimary<'a> {
    // None: dropped and gone; `switchover_abort` ends the switchover.
    let Some(o) = being_replaced(g, c.id) else {
        return OldPrimary::Wait;
    };
    // After a monitor restart its stored "stopped" carries no shutdown
    // LSN yet: wait for its next report rather than take it for a crash.
    // (A keeper that stays silent falls through: the keeper-silent case.)
    if !o.heard && !keeper_silent(o, now, cfg) {
        return OldPrimary::Wait;
    }
    let stopped = matches!(o.reported, Draining | DemoteTimeout) && !o.pg_running;
    match o.shutdown_lsn {
        Some(end) if stopped => {
            // The candidate's LSN counts only from a report of a running,
            // readable standby: it is what it received.
            if c.pg_running && !c.status_unknown && c.lsn >= end {
                OldPrimary::Done(format!(
                    "old primary node {} stopped cleanly at LSN {end} and node {} has received WAL up to {}",
                    o.id, c.id, c.lsn
                ))
            } else if keeper_silent(o, now, cfg)
                && age(o.goal_changed_at, now) > cfg.promotion_timeout
            {
                // Its keeper is gone and nobody got its last WAL (the
                // abort found no heir): a failover. With synchronous
                // replication on, what the candidate lacks was never
                // acknowledged, or is on another quorum standby (an
                // election then).
                OldPrimary::Died(
                    o,
                    format!(
                        "old primary node {} stopped cleanly but its keeper is gone, and no standby \
                         received its last WAL within promotion_timeout",
                        o.id
                    ),
                )
            } else {
                OldPrimary::Wait
            }
        }
        _ if stopped => OldPrimary::Died(
            o,
            format!(
                "old primary node {} stopped without a clean shutdown during the switchover",
                o.id
            ),
        ),
        // A silent keeper is one witness; the second, as for any failover,
        // is the candidate's lost stream. A primary cut off from the
        // monitor alone still writes, under its fencing exemption while
        // every standby streams from it, and the lease gate would not
        // know (simulation, seed 663964: two writable nodes). Without the
        // second witness the switchover is given up after
        // promotion_timeout (`switchover_abort`).
        _ if keeper_silent(o, now, cfg)
            && c.upstream_silent
                .is_some_and(|d| d >= cfg.replication_lost_timeout) =>
        {
            OldPrimary::Died(
                o,
                format!(
                    "old primary node {}'s keeper went silent during the switchover ({}), and node \
                     {} lost its stream",
                    o.id,
                    silence(o, now).map_or("never reported".into(), secs),
                    c.id
                ),
            )
        }
        _ => OldPrimary::Wait,
    }
}

/// Rule 8: the candidate is ready; it stops replicating and promotes
/// read-only, the old primary is told to go (demote_timeout).
pub(super) fn promotion_step(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    let Some(c) = g.nodes.iter().find(|n| is_in(n, PreparePromotion)) else {
        return vec![];
    };
    promote(g, c, "promoting it read-only")
}

/// The candidate is told to promote read-only, the old primary to go.
fn promote(g: &GroupView, c: &NodeView, detail: &str) -> Vec<Action> {
    let mut out = vec![assign(
        c,
        StopReplication,
        format!("node {} assigned stop_replication: {detail}", c.id),
    )];
    for o in g.nodes.iter().filter(|o| o.assigned == Draining) {
        let why = format!(
            "node {} assigned demote_timeout: node {} is being promoted",
            o.id, c.id
        );
        out.push(assign(o, DemoteTimeout, why));
    }
    out
}

/// Rule 8b, a planned switchover's promotion: once the old primary
/// stopped cleanly and the candidate (still a secondary) has received all
/// its WAL, the candidate promotes. If the old primary dies first, it is
/// a failover: an election when other standbys may hold commits the
/// candidate lacks (ANY k of several), else the candidate, its only
/// quorum standby, holds every commit (synchronous replication was on).
pub(super) fn switchover_step(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(c) = g
        .switchover_to
        .and_then(|id| g.node(id))
        .filter(|c| is_in(c, Secondary))
    else {
        return vec![];
    };
    let (why, old) = match old_primary(g, c, now, cfg) {
        OldPrimary::Wait => return vec![],
        OldPrimary::Done(why) => (why, None),
        OldPrimary::Died(o, why) => (why, Some(o)),
    };
    let done = Action::SetSwitchover { candidate: None };
    if let Some(o) = old.filter(|o| followers(g, o).any(|s| s.id != c.id && quorum_counts(s))) {
        let why = format!("election: {why}");
        // Waits (keeping the switchover's record, so this rule tries
        // again) while a voter cannot vote.
        return match start_election(g, o, &why, now, cfg) {
            Some(election) => std::iter::once(done).chain(election).collect(),
            None => vec![],
        };
    }
    if !is_healthy(c, now, cfg) {
        return vec![]; // given up instead, see `switchover_abort`
    }
    match old {
        // The old primary stopped cleanly (it takes no writes and, told to
        // stay demoted, never will again) and the candidate has all its
        // WAL: writable at once, no lease to wait for.
        None => {
            let mut out = vec![done];
            out.push(assign(
                c,
                WaitPrimary,
                format!("node {} assigned wait_primary: {why}: promoting it", c.id),
            ));
            for o in g
                .nodes
                .iter()
                .filter(|o| o.id != c.id && matches!(o.assigned, Draining | DemoteTimeout))
            {
                out.push(assign(
                    o,
                    Demoted,
                    format!(
                        "node {} assigned demoted: node {} is the new primary",
                        o.id, c.id
                    ),
                ));
            }
            for s in g
                .nodes
                .iter()
                .filter(|s| s.id != c.id && s.assigned == Secondary)
            {
                out.push(assign(
                    s,
                    Catchingup,
                    format!(
                        "node {} assigned catchingup: it must follow new primary node {}",
                        s.id, c.id
                    ),
                ));
            }
            out
        }
        // Died: it may still take writes until its lease is over, so the
        // candidate promotes read-only, behind the lease gate.
        Some(_) => {
            let detail =
                format!("{why}, and it was the only quorum standby: promoting it read-only");
            std::iter::once(done)
                .chain(promote(g, c, &detail))
                .collect()
        }
    }
}

/// Rule 9, the lease gate: the promoted candidate becomes writable only
/// when no other node can still acknowledge writes, i.e. the old primary
/// reported a stopped state or its lease (from its last report, not from
/// the decision) has expired. Other standbys must re-validate against the
/// new timeline before they count as secondaries again.
pub(super) fn lease_gate(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(c) = g.nodes.iter().find(|n| is_in(n, StopReplication)) else {
        return vec![];
    };
    let others: Vec<&NodeView> = g.nodes.iter().filter(|o| o.id != c.id).collect();
    // After the operator's `perform failover` the old writer's exemption
    // ("every other node streams from me") ran until the first voter
    // stopped streaming, which happened before the candidate was told to
    // promote: a lease (and the margin) from then (review of the
    // seed-592520 fix: voters may stop well after the command).
    let exempt_after_forced = |o: &NodeView| {
        o.failed_over_at.is_some()
            && o.reported.accepts_writes()
            && age(c.goal_changed_at, now) <= cfg.lease + cfg.clock_margin
    };
    if others
        .iter()
        .any(|o| !is_fenced(o, now, cfg) || exempt_after_forced(o))
    {
        return vec![];
    }
    let why_old = |o: &NodeView| {
        if !o.reported.accepts_writes() {
            format!("node {} reported {}", o.id, o.reported)
        } else {
            let s =
                silence(o, now).map_or("never reported".into(), |s| format!("silent {}", secs(s)));
            format!(
                "node {} lease expired ({s}, lease {} + margin {})",
                o.id,
                secs(cfg.lease),
                secs(cfg.clock_margin)
            )
        }
    };
    let olds: Vec<&&NodeView> = others
        .iter()
        .filter(|o| matches!(o.assigned, Draining | DemoteTimeout))
        .collect();
    let detail: Vec<String> = olds.iter().map(|o| why_old(o)).collect();
    let detail = if detail.is_empty() {
        "no old primary left".to_string()
    } else {
        detail.join(", ")
    };
    let mut out = vec![assign(
        c,
        WaitPrimary,
        format!("node {} assigned wait_primary: {detail}", c.id),
    )];
    for o in olds {
        out.push(assign(
            o,
            Demoted,
            format!(
                "node {} assigned demoted: node {} is the new primary",
                o.id, c.id
            ),
        ));
    }
    for s in others
        .iter()
        .filter(|s| matches!(s.assigned, Secondary | ReportLsn))
    {
        let why = format!(
            "node {} assigned catchingup: it must follow new primary node {}",
            s.id, c.id
        );
        out.push(assign(s, Catchingup, why));
    }
    out
}

/// A planned switchover whose candidate cannot promote is given up, or
/// passed on, so that it never waits for good:
///
/// - the candidate left (dropped, or moved on without being told to
///   promote), is not healthy, or did not get the old primary's last WAL
///   within `promotion_timeout` of the request;
/// - or the old primary's stop keeps failing for `promotion_timeout` (it
///   still reports a writable state and runs).
///
/// Then, if the old primary's keeper is there, the old primary takes
/// writes again (`wait_primary`) and the standbys follow it: nothing told
/// any other node to promote, so no other node can have taken writes. If
/// its keeper is gone but it stopped cleanly, another healthy secondary
/// that has its last WAL takes the candidate's place.
pub(super) fn switchover_abort(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(id) = g.switchover_to else {
        return vec![];
    };
    let done = Action::SetSwitchover { candidate: None };
    let c = g.node(id);
    let told_to_promote =
        c.is_some_and(|c| matches!(c.assigned, StopReplication | WaitPrimary | Primary));
    let Some(o) = being_replaced(g, id).filter(|_| !told_to_promote) else {
        // Promoting, or nothing left to replace: its own part is over.
        return vec![done];
    };
    if let Some(c) = c.filter(|c| c.assigned == Secondary) {
        if matches!(old_primary(g, c, now, cfg), OldPrimary::Done(_)) {
            return vec![]; // ready: `switchover_step` promotes it
        }
    }
    let timed_out = age(o.goal_changed_at, now) > cfg.promotion_timeout;
    let why = match c {
        None => format!("candidate node {id} was dropped"),
        Some(c) if c.assigned != Secondary => {
            format!("candidate node {id} is {} now", c.assigned)
        }
        Some(c) if !is_healthy(c, now, cfg) => format!("candidate node {id} is not healthy"),
        Some(_) if timed_out && o.reported.accepts_writes() => format!(
            "old primary node {} did not stop within promotion_timeout ({})",
            o.id,
            secs(cfg.promotion_timeout)
        ),
        Some(_) if timed_out => format!(
            "candidate node {id} did not get the old primary's last WAL within promotion_timeout ({})",
            secs(cfg.promotion_timeout)
        ),
        Some(_) => return vec![],
    };
    let alive = !keeper_silent(o, now, cfg);
    let stopped = matches!(o.reported, Draining | DemoteTimeout) && !o.pg_running;
    let still_primary = o.reported.accepts_writes() && o.pg_running;
    if alive && (stopped || still_primary) {
        let mut out = vec![
            done,
            assign(
                o,
                WaitPrimary,
                format!(
                    "node {} assigned wait_primary: switchover given up: {why}",
                    o.id
                ),
            ),
        ];
        for s in g
            .nodes
            .iter()
            .filter(|s| s.id != o.id && s.assigned == Secondary)
        {
            out.push(assign(
                s,
                Catchingup,
                format!(
                    "node {} assigned catchingup: the switchover was given up, node {} is the primary again",
                    s.id, o.id
                ),
            ));
        }
        return out;
    }
    // Its keeper is gone: another secondary with its last WAL, if any.
    let heir = o.shutdown_lsn.filter(|_| stopped).and_then(|end| {
        g.nodes
            .iter()
            .filter(|s| {
                s.id != id
                    && is_in(s, Secondary)
                    && is_healthy(s, now, cfg)
                    && !s.status_unknown
                    && s.candidate_priority > 0
                    && s.lsn >= end
            })
            .max_by_key(|s| (s.candidate_priority, s.lsn, std::cmp::Reverse(s.id)))
    });
    // (Its promotion's event names the clean stop it relies on.)
    heir.map_or_else(Vec::new, |h| {
        vec![Action::SetSwitchover {
            candidate: Some(h.id),
        }]
    })
}

/// What a planned switchover waits for, once that lasts longer than a
/// normal step: the old primary to stop cleanly, or the candidate to
/// report its last WAL (ways out: the switchover is given up after
/// `promotion_timeout`, or becomes a failover if the old primary dies).
pub(super) fn switchover_wait(
    g: &GroupView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Option<(i64, String)> {
    let c = g.node(g.switchover_to?)?;
    let o = g
        .nodes
        .iter()
        .find(|o| o.id != c.id && matches!(o.assigned, Draining | DemoteTimeout))?;
    if age(o.goal_changed_at, now) <= cfg.node_unhealthy_timeout {
        return None;
    }
    let stopped = matches!(o.reported, Draining | DemoteTimeout) && !o.pg_running;
    Some(if stopped {
        (
            c.id,
            format!(
                "switchover waits for node {} to report the old primary's last WAL (after \
                 promotion_timeout {} it is given up, passed on, or made a failover)",
                c.id,
                secs(cfg.promotion_timeout)
            ),
        )
    } else {
        (
            o.id,
            format!(
                "switchover waits for old primary node {} to stop cleanly (its keeper's transition \
                 errors are events; after promotion_timeout it takes writes again)",
                o.id
            ),
        )
    })
}
