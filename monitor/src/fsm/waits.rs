//! Promise 3: a group that waits says what it waits for.
//!
//! [`explain_wait`] runs last: it names the first reason the group cannot
//! move on by itself (a voter that does not report, a quorum standby that
//! blocks failover, a node that may lack acknowledged commits and is not
//! promoted without an operator), and records it once as an event on the
//! node it concerns. Short waits that are part of normal operation (a
//! lease running out, a keeper taking its next step) are named only once
//! they last longer than [`grace`]. Reasons carry no times or LSNs, so the
//! same wait is one event however long it lasts.

use pgpilot_proto::NodeState::*;

use super::failover::{can_report_lsn, lost_election_not_back};

use super::health::{age, is_fenced, is_healthy, is_in, is_unhealthy, keeper_silent};
use super::rules::{active, primary, quorum_counts, settings_pending_drop, sync_writer};
use super::{Action, FsmConfig, GroupView, NodeView, Timestamp};

/// How long a normal wait may last before it is named.
fn grace(cfg: &FsmConfig) -> std::time::Duration {
    cfg.node_unhealthy_timeout + cfg.lease + cfg.clock_margin
}

/// Records the group's current wait when it changed.
pub(super) fn explain_wait(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let wait = current_wait(g, now, cfg);
    let text = wait.as_ref().map(|(_, why)| why.clone());
    if text == g.waiting_for {
        return vec![];
    }
    match wait {
        Some((node_id, reason)) => vec![Action::Wait { node_id, reason }],
        None => vec![Action::WaitOver],
    }
}

/// The node the group waits for and why, if it cannot move on by itself.
pub fn current_wait(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Option<(i64, String)> {
    let long = |n: &NodeView| age(n.goal_changed_at, now) > grace(cfg);
    // An election whose quorum voter does not report its final LSN.
    let voters: Vec<&NodeView> = g.nodes.iter().filter(|n| n.assigned == ReportLsn).collect();
    if !voters.is_empty() && !super::promoting(g) {
        if let Some(v) = voters.iter().find(|v| {
            quorum_counts(v)
                && long(v)
                && (v.reported != ReportLsn || !v.pg_running || v.status_unknown)
        }) {
            return Some((
                v.id,
                format!(
                    "election waits for node {}: it may hold acknowledged commits and has not reported \
                     its final LSN (it reports {}{})",
                    v.id,
                    v.reported,
                    if v.status_unknown { ", its keeper cannot read PostgreSQL's status" } else { "" }
                ),
            ));
        }
        let most = voters
            .iter()
            .filter(|v| quorum_counts(v))
            .max_by_key(|v| (v.tli, v.lsn));
        if let Some(m) =
            most.filter(|m| voters.iter().all(|v| long(v)) && m.candidate_priority == 0)
        {
            return Some((
                m.id,
                format!(
                    "election waits: node {} is the most advanced standby but has candidate priority 0, \
                     and no candidate holds all it has",
                    m.id
                ),
            ));
        }
        if let Some(v) = voters.iter().find(|v| long(v) && !is_healthy(v, now, cfg)) {
            return Some((
                v.id,
                format!("election waits: node {} is not healthy", v.id),
            ));
        }
    }
    if let Some(w) = super::promotion::switchover_wait(g, now, cfg) {
        return Some(w);
    }
    // An election's winner that cannot finish its promotion, with no other
    // voter holding all it reported to take its place
    // (`failover::election_timeout` lets one take it otherwise).
    if let Some(c) = g
        .nodes
        .iter()
        .find(|n| n.assigned == FastForward && n.reported != FastForward)
    {
        // A fetch from a voter that is gone, or slower than
        // promotion_timeout, with no voter holding everything to take its
        // place.
        let src = super::fast_forward_of(g, c.id, now, cfg).and_then(|(s, _)| s);
        let stuck = if !is_healthy(c, now, cfg) {
            Some(format!("node {} is not healthy", c.id))
        } else if src.is_none() {
            Some("no voter that holds the WAL it lacks is healthy".to_string())
        } else if age(c.goal_changed_at, now) > cfg.promotion_timeout {
            Some(format!(
                "it has not finished within promotion_timeout (fetching from node {}; its keeper's \
                 transition errors are events)",
                src.map_or(0, |s| s.id)
            ))
        } else {
            None
        };
        if let Some(what) = stuck.filter(|_| long(c)) {
            return Some((
                c.id,
                format!(
                    "failover waits for node {}: elected by candidate priority, it must first fetch \
                     the WAL it lacks from a more advanced voter (fast_forward), and {what}; no other \
                     voter with candidate priority above 0 holds everything; `pgpilot perform \
                     failover --allow-data-loss` promotes it without that WAL",
                    c.id
                ),
            ));
        }
    }
    if let Some(c) = g.nodes.iter().find(|n| {
        matches!(n.assigned, PreparePromotion | StopReplication) && n.reported != StopReplication
    }) {
        let stuck = if !is_healthy(c, now, cfg) {
            Some("is not healthy")
        } else if age(c.goal_changed_at, now) > cfg.promotion_timeout {
            Some("has not taken its goal within promotion_timeout (its keeper's transition errors are events)")
        } else {
            None
        };
        let told_to_promote = c.assigned == StopReplication;
        if let Some(what) = stuck.filter(|_| long(c)) {
            return Some((
                c.id,
                format!(
                    "failover waits for node {}: it was chosen to be promoted and {what}, and {}",
                    c.id,
                    if told_to_promote {
                        "it may have promoted already, so no other standby is promoted in its place"
                    } else {
                        "no other standby with candidate priority above 0 is known to hold everything \
                         it reported"
                    }
                ),
            ));
        }
    }
    // A promoted candidate waits for the old primary to stop accepting writes.
    if let Some(c) = g
        .nodes
        .iter()
        .find(|n| is_in(n, StopReplication) && long(n))
    {
        if let Some(o) = g
            .nodes
            .iter()
            .find(|o| o.id != c.id && !is_fenced(o, now, cfg))
        {
            if o.assigned == Dropped && !o.drop_forced {
                return Some((
                    o.id,
                    format!(
                        "node {} stays read-only: node {} was dropped and may accept writes until its keeper \
                         stops PostgreSQL and reports it; if that machine is gone for good, drop node {} \
                         with --force",
                        c.id, o.id, o.id
                    ),
                ));
            }
            return Some((
                c.id,
                format!(
                    "node {} stays read-only: node {} may still accept writes (it reports {} and its keeper \
                     still renews its lease)",
                    c.id, o.id, o.reported
                ),
            ));
        }
    }
    // Automatic failover blocked by a quorum standby that may hold commits.
    if let Some(p) = g
        .nodes
        .iter()
        .find(|n| sync_writer(n) && is_unhealthy(n, now, cfg))
    {
        if let Some(d) = settings_pending_drop(g, p) {
            return Some((
                p.id,
                format!(
                    "no automatic failover from unhealthy primary node {}: quorum standby node {} was \
                     dropped before the primary re-applied synchronous replication without it, so the \
                     other standbys may lack commits only node {} acknowledged",
                    p.id, d.id, d.id
                ),
            ));
        }
        let blocker = failover_blocker(g, p, now, cfg);
        if let Some((s, what)) = blocker {
            return Some((
                s.id,
                format!(
                    "no automatic failover from unhealthy primary node {}: quorum standby node {} {what} \
                     (it may hold acknowledged commits the others lack)",
                    p.id, s.id
                ),
            ));
        }
        // Every standby that could take over is excluded by the operator.
        let standbys: Vec<&NodeView> = active(g).filter(|s| s.id != p.id).collect();
        if !standbys.is_empty() && standbys.iter().all(|s| s.candidate_priority == 0) {
            return Some((
                p.id,
                format!(
                    "no automatic failover from unhealthy primary node {}: every standby has candidate \
                     priority 0",
                    p.id
                ),
            ));
        }
        // The most advanced quorum secondary may not be promoted, and every
        // candidate lacks some of what it has.
        let most = standbys
            .iter()
            .filter(|s| s.assigned == Secondary && quorum_counts(s))
            .max_by_key(|s| s.lsn);
        let behind = |s: &NodeView| most.is_some_and(|m| s.lsn < m.lsn);
        if let Some(m) = most.filter(|m| m.candidate_priority == 0) {
            let long_down =
                !p.pg_running || super::health::silence(p, now).is_none_or(|d| d > grace(cfg));
            if long_down
                && standbys
                    .iter()
                    .all(|s| s.candidate_priority == 0 || behind(s))
            {
                return Some((
                    m.id,
                    format!(
                        "no automatic failover from unhealthy primary node {}: node {} is the most advanced \
                         quorum standby but has candidate priority 0, and no candidate holds all it has",
                        p.id, m.id
                    ),
                ));
            }
        }
        // No standby may be promoted (the failover rule's candidates), for
        // longer than a failover normally takes.
        let candidate = |s: &&NodeView| {
            is_in(s, Secondary)
                && s.candidate_priority > 0
                && is_healthy(s, now, cfg)
                && !s.status_unknown
                && p.lsn.distance_from(s.lsn) <= cfg.promote_wal_threshold
        };
        // A keeper that reports PostgreSQL down says so after its restart
        // budget: no need to wait for that.
        let long_down =
            !p.pg_running || super::health::silence(p, now).is_none_or(|d| d > grace(cfg));
        if long_down && !standbys.is_empty() && !standbys.iter().any(candidate) {
            return Some((
                p.id,
                format!(
                    "no automatic failover from unhealthy primary node {}: no standby may be promoted (none \
                     is a healthy secondary with candidate priority above 0 within promote_wal_threshold)",
                    p.id
                ),
            ));
        }
    }
    // A writer that is not healthy and was not known to be in `primary`
    // (wait_primary, single, on its way into or out of primary, mid
    // apply_settings, or fenced with its keeper gone): it may have
    // acknowledged commits without a synchronous standby, so no standby
    // is promoted without an operator.
    if let Some(w) = active(g).find(|n| {
        n.assigned.accepts_writes()
            && !sync_writer(n)
            && is_unhealthy(n, now, cfg)
            && (n.reported != DemoteTimeout || keeper_silent(n, now, cfg))
            && long(n)
    }) {
        if active(g).any(|s| s.id != w.id) {
            return Some((
                w.id,
                format!(
                    "no automatic failover from node {}: it is not healthy, and as it reports {} with goal \
                     {} it may have acknowledged commits without a synchronous standby, so no standby is \
                     known to hold them all",
                    w.id, w.reported, w.assigned
                ),
            ));
        }
    }
    // A dropped writer whose keeper has not said it stopped.
    if let Some(d) = g.nodes.iter().find(|d| {
        d.assigned == Dropped && !is_fenced(d, now, cfg) && long(d) && active(g).next().is_some()
    }) {
        return Some((
            d.id,
            format!(
                "node {} was dropped and may accept writes until its keeper stops PostgreSQL and \
                 reports it; no other node is made writable before; if that machine is gone for good, \
                 drop node {} with --force",
                d.id, d.id
            ),
        ));
    }
    // A dropped writer whose standbys are not known to hold every commit.
    if primary(g).is_none() && active(g).next().is_some() {
        let promoting = g.nodes.iter().any(|n| {
            matches!(
                n.assigned,
                FastForward | PreparePromotion | StopReplication | ReportLsn
            )
        });
        if let Some(d) = g.nodes.iter().find(|d| {
            d.assigned == Dropped && d.dropped_from == Some(Primary) && !promoting && long(d)
        }) {
            if let Some((s, what)) = failover_blocker(g, d, now, cfg) {
                return Some((
                    s.id,
                    format!(
                        "no standby is promoted yet after primary node {} was dropped: quorum standby \
                         node {} {what} (it may hold acknowledged commits the others lack)",
                        d.id, s.id
                    ),
                ));
            }
            return Some((
                d.id,
                format!(
                    "no standby is promoted yet after primary node {} was dropped: none is a healthy \
                     secondary with candidate priority above 0 within promote_wal_threshold",
                    d.id
                ),
            ));
        }
        if let Some(d) = g.nodes.iter().find(|d| {
            d.assigned == Dropped
                && d.dropped_from
                    .is_some_and(|s| s.accepts_writes() && s != Primary)
        }) {
            return Some((
                d.id,
                format!(
                    "no standby is promoted: node {} was dropped while {} (synchronous replication off), \
                     so no standby is known to hold every acknowledged commit",
                    d.id,
                    d.dropped_from.unwrap_or(Dropped)
                ),
            ));
        }
        let mut act = active(g);
        if let (Some(n), None) = (act.next(), act.next()) {
            if matches!(n.assigned, Catchingup | Draining | DemoteTimeout | Demoted) && long(n) {
                return Some((
                    n.id,
                    format!(
                        "node {} is the only node left but is not made writable: as {} it may lack \
                         acknowledged commits",
                        n.id, n.assigned
                    ),
                ));
            }
        }
    }
    // Commits need more synchronous standbys than there are healthy
    // secondaries (number_sync_standbys of 2 or more: with 1, the primary
    // turns synchronous replication off instead): writes wait, as asked.
    if let Some(w) = short_of_sync_standbys(g, now, cfg) {
        return Some(w);
    }
    None
}

/// A quorum follower of `p` that keeps the failover rule from acting: it
/// may hold commits the others lack and cannot vote (not healthy, or on
/// its way into a state with no edge to report_lsn). One whose keeper just
/// said its PostgreSQL is stopped acknowledges nothing and is skipped, as
/// the rule skips it.
fn failover_blocker<'a>(
    g: &'a GroupView,
    p: &NodeView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Option<(&'a NodeView, String)> {
    g.nodes.iter().find_map(|s| {
        let follower =
            s.id != p.id && matches!(s.assigned, Secondary | Catchingup) && quorum_counts(s);
        let stopped = !s.pg_running && s.heard && !keeper_silent(s, now, cfg);
        if !follower || (!can_report_lsn(s) && stopped) || lost_election_not_back(s, now, cfg) {
            None
        } else if !can_report_lsn(s) {
            Some((
                s,
                format!(
                    "is still on its way into {} (it reports {})",
                    s.assigned, s.reported
                ),
            ))
        } else if !is_healthy(s, now, cfg) {
            Some((s, "is not healthy".to_string()))
        } else {
            None
        }
    })
}

/// A writer in (or on its way into) `primary` whose commits need k >= 2
/// synchronous standbys while fewer are healthy secondaries: writes wait
/// until one is back, or until the operator lowers number_sync_standbys.
fn short_of_sync_standbys(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Option<(i64, String)> {
    let p = primary(g).filter(|p| matches!(p.assigned, Primary | ApplySettings))?;
    let k = g.number_sync_standbys.max(1);
    if k < 2 || age(p.goal_changed_at, now) <= grace(cfg) {
        return None;
    }
    let standbys = || {
        g.nodes.iter().filter(|s| {
            s.id != p.id
                && s.replication_quorum
                && !matches!(s.assigned, Dropped | WaitMaintenance | Maintenance)
        })
    };
    let healthy = standbys()
        .filter(|s| is_in(s, Secondary) && is_healthy(s, now, cfg))
        .count() as i32;
    if healthy >= k {
        return None;
    }
    let Some(missing) = standbys().find(|s| !(is_in(s, Secondary) && is_healthy(s, now, cfg)))
    else {
        // Every quorum standby is a healthy secondary, and there are fewer
        // than k of them (a node that lost its replication quorum while it
        // was the primary is a standby now; simulation, seed 654350).
        return Some((
            p.id,
            format!(
                "writes on primary node {} wait: each commit needs {k} synchronous standbys \
                 (number_sync_standbys) and only {healthy} standbys have replication quorum; give \
                 another node replication quorum (`pgpilot set node replication-quorum --name NAME \
                 true`), or lower it (`pgpilot set formation number-sync-standbys {healthy}`)",
                p.id
            ),
        ));
    };
    Some((
        missing.id,
        format!(
            "writes on primary node {} wait: each commit needs {k} synchronous standbys \
             (number_sync_standbys) and only {healthy} are healthy secondaries; bring node {} back, \
             or lower it (`pgpilot set formation number-sync-standbys {healthy}`)",
            p.id, missing.id
        ),
    ))
}
