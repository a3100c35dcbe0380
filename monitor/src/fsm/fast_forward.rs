//! fast_forward: an election's winner by candidate priority that lacks
//! WAL another voter has fetches it from that voter before it promotes
//! (pg_auto_failover's model). Without it an election whose most
//! advanced voter has candidate priority 0 (or is a preferred node's
//! weaker peer) waited for the operator; now the operator's priorities
//! decide who leads, and no acknowledged commit is lost for it.
//!
//! The source is a voter: it stopped streaming and reported its final
//! LSN, so what it holds cannot grow, and nothing it holds can be
//! acknowledged by anyone any more. The winner streams from it (its slot
//! for the winner keeps the WAL: every node keeps a slot for every
//! other) until replay reaches that LSN, stops streaming again, and
//! reports `fast_forward`; then it is promoted like any winner.

use pgpilot_proto::{Lsn, NodeState::*};

use super::failover::has_final_lsn;
use super::health::is_healthy;
use super::rules::{assign, quorum_counts};
use super::{Action, FsmConfig, GroupView, NodeView, Timestamp};

/// The voters of the election under way.
pub(super) fn voters(g: &GroupView) -> impl Iterator<Item = &NodeView> {
    g.nodes.iter().filter(|n| n.assigned == ReportLsn)
}

/// What every candidate must hold: the most advanced quorum voter's
/// (timeline, LSN). Only a quorum standby can have acknowledged a
/// commit, so a non-quorum voter ahead of it holds nothing acknowledged
/// that the quorum voters lack.
pub(super) fn must_hold(g: &GroupView) -> Option<(u32, Lsn)> {
    voters(g)
        .filter(|n| quorum_counts(n))
        .map(|n| (n.tli, n.lsn))
        .max()
}

/// Where `c` would fetch what it lacks: the most advanced healthy voter
/// with a final LSN on `c`'s timeline holding everything [`must_hold`]
/// names. Any candidate priority: a priority-0 node is never promoted,
/// but it may serve its WAL. `None` when no such voter is there (then
/// only a voter that holds everything itself may win). Only the same
/// timeline: a winner on an older one may hold WAL past the newer
/// timeline's fork, and could not stream from it.
pub fn fast_forward_source<'a>(
    g: &'a GroupView,
    c: &NodeView,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Option<&'a NodeView> {
    let m = must_hold(g);
    voters(g)
        .filter(|v| {
            v.id != c.id
                && has_final_lsn(v)
                && is_healthy(v, now, cfg)
                && v.tli == c.tli
                && m.is_none_or(|m| (v.tli, v.lsn) >= m)
        })
        .max_by_key(|v| (v.lsn, std::cmp::Reverse(v.id)))
}

/// The fast_forward a node assigned it is told to do (for the keeper's
/// reply): the LSN to replay up to, and the voter to stream it from.
/// `None` for every other goal. The source is `None` while no voter that
/// holds the LSN is healthy: the node may have received it all already
/// and only need to replay it; otherwise it keeps trying, and the
/// election's timeout or the operator moves the group on.
pub fn fast_forward_of<'a>(
    g: &'a GroupView,
    node_id: i64,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Option<(Option<&'a NodeView>, Lsn)> {
    let c = g.node(node_id).filter(|c| c.assigned == FastForward)?;
    let src = fast_forward_source(g, c, now, cfg);
    let lsn = src.map(|s| s.lsn).or(must_hold(g).map(|m| m.1))?;
    Some((src, lsn))
}

/// The winner is told to fast-forward from its source.
pub(super) fn assign_fast_forward(c: &NodeView, src: &NodeView, voters: usize) -> Action {
    assign(
        c,
        FastForward,
        format!(
            "node {} assigned fast_forward: elected by candidate priority ({}) among {voters} \
             standbys with LSN {}; it fetches the WAL up to LSN {} from node {} first",
            c.id, c.candidate_priority, c.lsn, src.lsn, src.id
        ),
    )
}

/// Rule 7e: a winner that reached fast_forward holds everything the
/// quorum voters hold: it is promoted. If it still lacks some (a voter's
/// final LSN is higher than its source's was: not expected, as the
/// source held everything when it was chosen), it gives way and the
/// election runs again.
pub(super) fn fast_forward_step(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    let Some(c) = g.nodes.iter().find(|n| super::is_in(n, FastForward)) else {
        return vec![];
    };
    match must_hold(g) {
        Some(m) if (c.tli, c.lsn) < m => vec![assign(
            c,
            ReportLsn,
            format!(
                "node {} assigned report_lsn: after its fast_forward it holds LSN {}, still behind \
                 LSN {} of a quorum voter; the election runs again",
                c.id, c.lsn, m.1
            ),
        )],
        _ => vec![assign(
            c,
            PreparePromotion,
            format!(
                "node {} assigned prepare_promotion: its fast_forward reached LSN {}, all the \
                 voters hold",
                c.id, c.lsn
            ),
        )],
    }
}
