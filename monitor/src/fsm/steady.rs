//! Steady-state rules: bootstrap, joining standbys, catching up, turning
//! synchronous replication on, rejoin and settings changes.

use pgpilot_proto::NodeState::*;

use super::health::{age, is_healthy, is_in};
use super::rules::{active, assign, failover_under_way, healthy_sync_secondary, primary};
use super::{Action, FsmConfig, GroupView, NodeView, Timestamp};

/// Rule 2: a single node gets a standby: it prepares (slot, HBA) for it.
pub(super) fn single_to_wait_primary(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|n| is_in(n, Single)) else {
        return vec![];
    };
    match active(g).find(|n| n.id != p.id && n.assigned == WaitStandby) {
        Some(s) => {
            let why = format!(
                "node {} assigned wait_primary: node {} joins as a standby",
                p.id, s.id
            );
            vec![assign(p, WaitPrimary, why)]
        }
        None => vec![],
    }
}

/// Rule 3: the primary is ready for the waiting standby, which copies the
/// data. A primary with synchronous replication on re-applies its settings
/// so that the new quorum standby is part of synchronous_standby_names.
pub(super) fn standby_join(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    let Some(p) = primary(g).filter(|p| is_in(p, WaitPrimary) || is_in(p, Primary)) else {
        return vec![];
    };
    let Some(s) = g.nodes.iter().find(|s| is_in(s, WaitStandby)) else {
        return vec![];
    };
    let why = format!(
        "node {} assigned catchingup: primary node {} is ready for it",
        s.id, p.id
    );
    let mut out = vec![assign(s, Catchingup, why)];
    if p.assigned == Primary && s.replication_quorum {
        let why = format!(
            "node {} assigned apply_settings: quorum standby node {} joins",
            p.id, s.id
        );
        out.push(assign(p, ApplySettings, why));
    }
    out
}

/// Rule 3, second half: settings applied; synchronous replication stays on
/// only with a healthy quorum secondary to acknowledge commits.
pub(super) fn apply_settings_done(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|n| is_in(n, ApplySettings)) else {
        return vec![];
    };
    if healthy_sync_secondary(g, p, now, cfg) {
        let why = format!("node {} assigned primary: settings applied", p.id);
        return vec![assign(p, Primary, why)];
    }
    if failover_under_way(g) {
        return vec![];
    }
    let why = format!(
        "node {} assigned wait_primary: settings applied, no healthy quorum secondary",
        p.id
    );
    vec![assign(p, WaitPrimary, why)]
}

/// A writer a standby can follow and catch up with: in wait_primary or
/// primary, or on its way from one to the other. On its way into
/// primary it may wait for more synchronous standbys (number_sync_standbys
/// of 2 or more), which a catching-up or rejoining standby is to become
/// (simulation, seed 438470: the old primary waited to rejoin a primary
/// that waited for it).
fn serving(p: &NodeView) -> bool {
    matches!(p.reported, WaitPrimary | Primary) && matches!(p.assigned, WaitPrimary | Primary)
}

/// Rule 4: a catching-up standby that streams, is on the primary's
/// timeline and close enough becomes eligible for promotion.
pub(super) fn catchup_done(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = primary(g).filter(|p| serving(p)) else {
        return vec![];
    };
    // Complementary to the stall rule, so the two cannot ping-pong.
    let primary_stalled = p
        .replication_stall_since
        .is_some_and(|t| age(t, now) > cfg.replication_stall_timeout);
    if primary_stalled {
        return vec![];
    }
    let ready = g.nodes.iter().find(|s| {
        s.id != p.id
            && is_in(s, Catchingup)
            && is_healthy(s, now, cfg)
            && !s.status_unknown
            && s.tli == p.tli
            && p.lsn.distance_from(s.lsn) <= cfg.sync_wal_threshold
            && s.upstream_silent
                .is_none_or(|d| d < cfg.replication_lost_timeout)
    });
    match ready {
        Some(s) => {
            let why = format!(
                "node {} assigned secondary: streaming on timeline {}, {} bytes behind primary node {}",
                s.id,
                s.tli,
                p.lsn.distance_from(s.lsn),
                p.id
            );
            vec![assign(s, Secondary, why)]
        }
        None => vec![],
    }
}

/// Rule 4, second half: a wait_primary with a healthy quorum secondary
/// turns synchronous replication on, which makes failover possible.
pub(super) fn enable_sync(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = g.nodes.iter().find(|n| is_in(n, WaitPrimary)) else {
        return vec![];
    };
    if !healthy_sync_secondary(g, p, now, cfg) {
        return vec![];
    }
    let why = format!(
        "node {} assigned primary: a quorum secondary is caught up",
        p.id
    );
    vec![assign(p, Primary, why)]
}

/// Rule 11: a demoted old primary rewinds and follows the new primary.
pub(super) fn rejoin(g: &GroupView, now: Timestamp, cfg: &FsmConfig) -> Vec<Action> {
    let Some(p) = primary(g).filter(|p| serving(p) && is_healthy(p, now, cfg)) else {
        return vec![];
    };
    // Not one whose maintenance was asked for (`enter_maintenance`).
    match g
        .nodes
        .iter()
        .find(|n| is_in(n, Demoted) && !n.maintenance_requested)
    {
        Some(n) => {
            let why = format!(
                "node {} assigned catchingup: rejoining new primary node {}",
                n.id, p.id
            );
            vec![assign(n, Catchingup, why)]
        }
        None => vec![],
    }
}

/// Rule 13: a quorum standby was dropped (its goal changed to dropped
/// after the primary's last goal change) while synchronous replication is
/// on: the primary re-applies synchronous_standby_names without it.
pub(super) fn drop_sync_standby(g: &GroupView, _: Timestamp, _: &FsmConfig) -> Vec<Action> {
    // Until it has, the other standbys are not known to hold the commits
    // only the dropped one acknowledged: no failover from this primary
    // ([`super::rules::settings_pending_drop`]), and the dropped row stays.
    let Some(p) = g.nodes.iter().find(|n| is_in(n, Primary)) else {
        return vec![];
    };
    let dropped = g.nodes.iter().find(|d| {
        d.assigned == Dropped && d.replication_quorum && d.goal_changed_at > p.goal_changed_at
    });
    match dropped {
        Some(d) => {
            let why = format!(
                "node {} assigned apply_settings: quorum standby node {} dropped",
                p.id, d.id
            );
            vec![assign(p, ApplySettings, why)]
        }
        None => vec![],
    }
}
