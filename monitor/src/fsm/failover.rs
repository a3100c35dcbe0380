//! The failover rules: choosing a candidate (directly or by an
//! election), promoting it read-only, and the lease gate that lets it take
//! writes once no other node can.

use pgpilot_proto::{action_for, NodeState::*};

use super::fast_forward::{assign_fast_forward, fast_forward_source, must_hold};
use super::health::{age, is_healthy, is_in, is_unhealthy, keeper_silent, secs, silence};
use super::rules::{
    assign, failover_under_way, primary, quorum_counts, settings_pending_drop, sync_writer,
};
use super::{Action, FsmConfig, GroupView, NodeView, Timestamp};

/// Rule 7b, the election: once every standby told to report_lsn stopped
/// streaming and reported (its LSN is final), the voter with the highest
/// candidate priority (then the most advanced) is promoted. A candidate
/// behind a quorum standby would lose commits that standby acknowledged:
/// it fetches the missing WAL from a voter that has it first
/// ([`super::fast_forward`]); when no such voter is healthy, only a voter
/// that holds everything may win.
pub(super) fn elect(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let voters: Vec<&NodeView> = g.nodes.iter().filter(|n| n.assigned == ReportLsn).collect();
    // One winner per election: once a candidate is on its way, the other
    // voters wait for the lease gate to send them to it.
    if voters.is_empty() || promoting(g) {
        return vec![];
    }
    // A quorum standby that was not a voter when the election began (it
    // was still copying its data) and now runs as a follower may stream
    // from the old primary and acknowledge its commits: it votes too, and
    // the election waits for it (simulation, seed 417095: a copy that
    // finished just after the election began acknowledged a commit the
    // winner lacked).
    //
    // Only one that reported since the election began: a node whose last
    // word is older (a dead machine, whose last report still says its
    // PostgreSQL runs) joined nothing, and was either a voter from the
    // start, a blocker the election waited for, or left out by the
    // operator's `perform failover` (found by a real-process test: the
    // election pulled the dead standby the operator had left out back in,
    // and waited for it forever).
    let began = voters.iter().map(|v| v.goal_changed_at).min();
    let late: Vec<Action> = g
        .nodes
        .iter()
        .filter(|n| {
            matches!(n.assigned, Secondary | Catchingup)
                && quorum_counts(n)
                && n.pg_running
                && n.reported != ReportLsn
                && can_report_lsn(n)
                && n.heard
                && began.is_some_and(|t| n.last_report.is_some_and(|r| r > t))
                // Its goal is older than the election: not one the
                // operator left out of it (sent to catchingup since).
                && began.is_some_and(|t| n.goal_changed_at <= t)
        })
        .map(|n| {
            assign(
                n,
                ReportLsn,
                format!(
                    "node {} assigned report_lsn: it joined during the election and may follow the old primary",
                    n.id
                ),
            )
        })
        .collect();
    if !late.is_empty() {
        return late;
    }
    // Quorum voters may hold acknowledged commits: wait for each. A
    // non-quorum voter cannot, so one that never reports is not waited for.
    // A voter whose keeper could not read its status has no final LSN yet.
    let reported = has_final_lsn;
    if voters.iter().any(|n| quorum_counts(n) && !reported(n)) {
        return vec![];
    }
    // Most advanced by (timeline, LSN): a voter on an older timeline (it
    // was left out of an earlier failover and has not rewound yet) holds
    // WAL past that timeline's fork, which no acknowledged commit of the
    // newer timeline's primary is in; its LSN does not compare
    // (simulation, seed 482222: such a voter won and a rewind discarded
    // acknowledged commits).
    let most_advanced = must_hold(g);
    let holds_all = |n: &NodeView| most_advanced.is_none_or(|m| (n.tli, n.lsn) >= m);
    let best = voters
        .iter()
        .filter(|n| {
            reported(n)
                && n.candidate_priority > 0
                && is_healthy(n, now, cfg)
                // One that gave way after its fetch wins again only once
                // it reported report_lsn (the keeper has no fast_forward
                // -> fast_forward step; review: it looped in one decision).
                && n.reported != FastForward
                && (holds_all(n) || fast_forward_source(g, n, now, cfg).is_some())
        })
        .max_by_key(|n| (n.candidate_priority, n.tli, n.lsn, std::cmp::Reverse(n.id)));
    let Some(c) = best else {
        return vec![];
    };
    if !holds_all(c) {
        let src = fast_forward_source(g, c, now, cfg).expect("filtered on it");
        return vec![assign_fast_forward(c, src, voters.len())];
    }
    let why = format!(
        "node {} assigned prepare_promotion: elected with LSN {} among {} standbys",
        c.id,
        c.lsn,
        voters.len()
    );
    vec![assign(c, PreparePromotion, why)]
}

/// A voter's LSN is final: it stopped streaming and reported (a winner
/// that gave way, [`election_timeout`], may still report
/// prepare_promotion: it stopped streaming before it was elected). A voter
/// whose keeper could not read its status has no final LSN yet.
pub fn has_final_lsn(n: &NodeView) -> bool {
    matches!(n.reported, ReportLsn | FastForward | PreparePromotion)
        && n.pg_running
        && !n.status_unknown
}

/// An election has its winner: it is on its way to promotion (fetching
/// what it lacks first, or being promoted).
pub fn promoting(g: &GroupView) -> bool {
    g.nodes
        .iter()
        .any(|n| matches!(n.assigned, FastForward | PreparePromotion | StopReplication))
}

/// Rule 7d, the election's timeout: a winner that cannot get on with its
/// promotion gives way, so that an election never waits for a dead node
/// while another could take its place. It gives way when it is unhealthy
/// (its machine died), or when it has not taken its goal within
/// `promotion_timeout` (a fast_forward whose source died, or that fetches
/// for longer), and only to a voter that holds everything the winner
/// reported and everything the voters hold: any other voter may lack
/// commits only those acknowledged. The heir is chosen in the same
/// decision (the winner, back in report_lsn, may be unable to vote again:
/// its PostgreSQL may be down).
///
/// Only while its goal is fast_forward or prepare_promotion: nothing told it to promote
/// yet, so it acknowledged nothing and holds no new timeline. Once told to
/// stop replicating it may have promoted (read-only is only a default a
/// session can override), and the group waits for it, saying so
/// ([`super::waits`]).
pub(super) fn election_timeout(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(c) = g.nodes.iter().find(|n| {
        matches!(n.assigned, FastForward | PreparePromotion)
            && matches!(n.reported, ReportLsn | FastForward | PreparePromotion)
    }) else {
        return vec![];
    };
    // A winner in fast_forward lacks what its source holds: the heir must
    // hold that too.
    let needed = must_hold(g).map_or((c.tli, c.lsn), |m| m.max((c.tli, c.lsn)));
    let why = if !is_healthy(c, now, cfg) {
        "is not healthy".to_string()
    } else if age(c.goal_changed_at, now) > cfg.promotion_timeout {
        format!(
            "has not taken its goal within promotion_timeout ({})",
            secs(cfg.promotion_timeout)
        )
    } else {
        return vec![];
    };
    let Some(heir) = g
        .nodes
        .iter()
        .filter(|v| {
            v.id != c.id
                && v.assigned == ReportLsn
                && has_final_lsn(v)
                && v.candidate_priority > 0
                && is_healthy(v, now, cfg)
                && (v.tli, v.lsn) >= needed
        })
        .max_by_key(|v| (v.candidate_priority, v.tli, v.lsn, std::cmp::Reverse(v.id)))
    else {
        return vec![];
    };
    vec![
        assign(
            c,
            ReportLsn,
            format!(
                "node {} assigned report_lsn: the election's winner {why}; node {} holds all the \
                 voters hold (LSN {}) and takes its place",
                c.id, heir.id, needed.1
            ),
        ),
        assign(
            heir,
            PreparePromotion,
            format!(
                "node {} assigned prepare_promotion: elected with LSN {} in place of node {}",
                heir.id, heir.lsn, c.id
            ),
        ),
    ]
}

/// Rule 7: automatic failover, only from `primary` (synchronous
/// replication on, so a caught-up secondary has every acknowledged commit;
/// a primary mid-`apply_settings` too, see [`sync_writer`]: every quorum
/// standby of the old names and the new is a follower that votes)
/// and only with two witnesses: the monitor finds the primary unhealthy,
/// and the candidate lost its WAL stream (or the primary's own keeper says
/// Postgres is down). The monitor alone losing the primary is a network
/// problem on the monitor's side, not a reason to fail over.
///
/// Rule 7c: a primary the operator dropped (it last reported `primary`,
/// so its standbys hold every acknowledged commit between them) is
/// replaced the same way; the drop is the witness. Its row stays until a
/// promotion is under way (see `remove_dropped`).
pub(super) fn failover(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let (p, dropped) = match g.nodes.iter().find(|n| sync_writer(n)) {
        // A quorum standby was dropped and the primary has not re-applied
        // its settings without it: the others may lack its commits.
        Some(p) if settings_pending_drop(g, p).is_some() => return vec![],
        Some(p) if is_unhealthy(p, now, cfg) => (p, false),
        Some(_) => return vec![],
        None => match g
            .nodes
            .iter()
            .find(|n| n.assigned == Dropped && n.dropped_from == Some(Primary))
        {
            Some(p) if primary(g).is_none() && !failover_under_way(g) => (p, true),
            _ => return vec![],
        },
    };
    let witness = |s: &NodeView| {
        if dropped {
            Some(format!("the operator dropped primary node {}", p.id))
        } else if !p.pg_running {
            Some(format!(
                "primary node {}'s keeper reports Postgres down",
                p.id
            ))
        } else {
            match s.upstream_silent {
                Some(d) if d >= cfg.replication_lost_timeout => {
                    Some(format!("node {} lost replication {} ago", s.id, secs(d)))
                }
                _ => None,
            }
        }
    };
    // Any quorum secondary may hold a commit the others lack: never pick a
    // candidate behind one of them for a direct promotion. With other
    // followers it is an election, whose winner fetches what it lacks
    // first ([`super::fast_forward`]): there the candidate only has to be
    // one that may win.
    let most_advanced = g
        .nodes
        .iter()
        .filter(|s| s.id != p.id && s.assigned == Secondary && quorum_counts(s))
        .map(|s| s.lsn)
        .max();
    let best = g
        .nodes
        .iter()
        .filter(|s| {
            s.id != p.id
                && is_in(s, Secondary)
                && is_healthy(s, now, cfg)
                && !s.status_unknown
                && s.candidate_priority > 0
                && p.lsn.distance_from(s.lsn) <= cfg.promote_wal_threshold
                && (most_advanced.is_none_or(|m| s.lsn >= m)
                    || followers(g, p).any(|o| o.id != s.id))
                && witness(s).is_some()
        })
        .max_by_key(|s| (s.candidate_priority, s.lsn, std::cmp::Reverse(s.id)));
    let Some(c) = best else {
        return vec![];
    };
    let down = if dropped {
        "was dropped by the operator".to_string()
    } else if !p.pg_running {
        "reports Postgres down".to_string()
    } else {
        let s = silence(p, now).map_or("never reported".into(), |s| format!("silent {}", secs(s)));
        format!("{s} and probes failing")
    };
    // The old primary is told to go, unless the operator dropped it (its
    // goal stays `dropped`).
    let demote = |why: String| (!dropped).then(|| assign(p, Draining, why));
    // With another standby besides the candidate, a commit may have been
    // acknowledged by that standby only (ANY k of several), and a standby
    // still following the old primary could acknowledge its pending
    // commits if it came back (a frozen primary resuming). So it is an
    // election ([`start_election`]).
    // (The simulation loses acknowledged commits without this: seeds 4
    // and 131 with PGPILOT_SIM_NODES=3.)
    if followers(g, p).any(|s| s.id != c.id) {
        let why = format!(
            "election: primary node {} {down}, {}",
            p.id,
            witness(c).unwrap_or_default()
        );
        let Some(mut out) = start_election(g, p, &why, now, cfg) else {
            return vec![];
        };
        out.extend(demote(format!(
            "node {} assigned draining: an election is under way",
            p.id
        )));
        return out;
    }
    let why = format!(
        "node {} assigned prepare_promotion: primary node {} {down}, {}",
        c.id,
        p.id,
        witness(c).unwrap_or_default()
    );
    let mut out = vec![
        Action::BumpGeneration {
            reason: why.clone(),
        },
        assign(c, PreparePromotion, why),
    ];
    out.extend(demote(format!(
        "node {} assigned draining: node {} is being promoted",
        p.id, c.id
    )));
    out
}

/// Standbys that may be streaming from `p`. An old primary (draining,
/// demoted, ...) or a node still waiting for its copy is not, nor one in
/// maintenance (the operator may have stopped it; it left the synchronous
/// set first); one on its way into maintenance still is.
pub fn followers<'a>(g: &'a GroupView, p: &'a NodeView) -> impl Iterator<Item = &'a NodeView> {
    g.nodes.iter().filter(move |s| {
        s.id != p.id && matches!(s.assigned, Secondary | Catchingup | WaitMaintenance)
    })
}

/// An election among the standbys that may hold `p`'s acknowledged
/// commits (its followers): every one stops streaming and reports its
/// final LSN (report_lsn), then the most advanced is promoted ([`elect`]).
/// `None` while one of [`election_blockers`] may hold commits nobody else
/// has: the group waits for it.
pub(super) fn start_election(
    g: &GroupView,
    p: &NodeView,
    why: &str,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Option<Vec<Action>> {
    election_blockers(g, p, now, cfg)
        .is_empty()
        .then(|| election(g, p, why, now, cfg))
}

/// The quorum followers of `p` an election would have to wait for: one
/// that is unhealthy, or still on its way into catchingup with its
/// PostgreSQL running (a rejoining old primary that may stream already:
/// no edge to report_lsn yet), may hold commits nobody else has. One whose
/// keeper just said its PostgreSQL is stopped acknowledges nothing and
/// waits for a primary to follow: waiting for it would wait forever
/// (found by the simulation, seed 887). A silent keeper's word is stale:
/// its PostgreSQL may have started and stream (seed 54563). The
/// operator's `perform failover` goes on without them when that provably
/// loses nothing, or when told to.
pub fn election_blockers<'a>(
    g: &'a GroupView,
    p: &'a NodeView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Vec<&'a NodeView> {
    let rejoining_stopped = |s: &NodeView| {
        // A stored "stopped" after a monitor restart is stale too
        // (seed 80195).
        !can_report_lsn(s) && !s.pg_running && s.heard && !keeper_silent(s, now, cfg)
    };
    followers(g, p)
        .filter(|s| {
            quorum_counts(s)
                && !rejoining_stopped(s)
                && !lost_election_not_back(s, now, cfg)
                && (!is_healthy(s, now, cfg) || !can_report_lsn(s))
        })
        .collect()
}

/// The election itself: a new generation, and report_lsn for every
/// follower of `p` that can vote.
pub fn election(
    g: &GroupView,
    p: &NodeView,
    why: &str,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Vec<Action> {
    let mut out = vec![Action::BumpGeneration {
        reason: why.to_string(),
    }];
    for s in followers(g, p).filter(|s| is_healthy(s, now, cfg) && can_report_lsn(s)) {
        out.push(assign(
            s,
            ReportLsn,
            format!("node {} assigned report_lsn: {why}", s.id),
        ));
    }
    out
}

/// Whether the node can be told to report its LSN for an election: it
/// already does (an earlier election's loser still on its way to the
/// winner, which is gone now: seed 7475), or its state has an edge there.
pub fn can_report_lsn(s: &NodeView) -> bool {
    s.reported == ReportLsn || action_for(s.reported, ReportLsn).is_some()
}

/// A loser of the election that made the current primary, not yet
/// following it (it still reports report_lsn while told to catch up),
/// whose keeper said recently that it streams from nobody (PostgreSQL
/// stopped, or its WAL receiver silent for replication_lost_timeout): at
/// the election it held nothing the winner lacked (the winner was the most
/// advanced quorum voter), and it acknowledged nothing since, so it cannot
/// hold commits the other standbys lack. Waiting for it would wait for
/// nothing (simulation, seed 312200: a loser that could not rewind from a
/// winner whose machine was lost blocked the next failover for good).
///
/// "Recently" is what makes it safe: its report is younger than
/// replication_lost_timeout less the clock margin, and a failover is
/// decided only once a standby heard nothing from the primary for
/// replication_lost_timeout. A loser that began to stream and acknowledge
/// after that report did so while the primary lived, and has reported
/// since (every poll), or its report would be too old by now.
pub(super) fn lost_election_not_back(s: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    let fresh =
        silence(s, now).is_some_and(|d| d + cfg.clock_margin < cfg.replication_lost_timeout);
    let streams_from_nobody = !s.pg_running
        || s.upstream_silent
            .is_some_and(|d| d >= cfg.replication_lost_timeout);
    s.reported == ReportLsn && s.assigned == Catchingup && s.heard && fresh && streams_from_nobody
}
