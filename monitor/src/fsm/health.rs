//! Health predicates the rules, the store and the CLI share (DESIGN.md §5).
//!
//! "Unhealthy" and "healthy" are deliberately not complements: a keeper that
//! went silent while the probes still succeed (or were never run) is
//! neither. Such a node is not failed over (one witness is not enough) and
//! is not trusted as a candidate either.

use std::time::Duration;

use pgpilot_proto::NodeState;

use super::{FsmConfig, NodeView, Timestamp};

/// How long ago `t` was, as seen at `now`; zero if `t` is in the future.
pub fn age(t: Timestamp, now: Timestamp) -> Duration {
    (now - t).to_std().unwrap_or(Duration::ZERO)
}

/// How long the node's keeper has been silent; `None` if it never reported.
pub fn silence(node: &NodeView, now: Timestamp) -> Option<Duration> {
    node.last_report.map(|t| age(t, now))
}

/// The keeper has not reported within `node_unhealthy_timeout`.
pub fn keeper_silent(node: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    silence(node, now).is_none_or(|s| s > cfg.node_unhealthy_timeout)
}

/// DESIGN.md §5: the keeper is silent *and* the probes fail, or the keeper
/// itself says Postgres is down (it only says so after its restart grace).
/// Silence alone is not enough: a monitor-side network problem must not
/// look like a dead node.
pub fn is_unhealthy(node: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    (keeper_silent(node, now, cfg) && node.health == crate::fsm::Health::Bad) || !node.pg_running
}

/// Good enough to be promoted or declared caught up: Postgres runs, the
/// probes do not fail, and the keeper reported recently.
pub fn is_healthy(node: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    node.pg_running && node.health != crate::fsm::Health::Bad && !keeper_silent(node, now, cfg)
}

/// The monitor may assume the node's keeper has fenced itself: its lease,
/// counted from the monitor's receipt of its last report plus the clock
/// margin, is over. The keeper counts its lease from when it *sent* that
/// report, so it expires no later than this. A node that never reported
/// never held a lease.
pub fn lease_expired(node: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    silence(node, now).is_none_or(|s| s > cfg.lease + cfg.clock_margin)
}

/// The node cannot be acknowledging writes: its last report was a state in
/// which Postgres does not accept writes (the keeper persists a state only
/// after the transition succeeded), or its lease expired.
///
/// The lease alone is not proof for a node the operator dropped without
/// `--force`: a keeper keeps a lapsed lease while every standby streams
/// from it (the fencing exemption), and a drop, unlike a failover, needs no
/// standby to have lost its stream first. Its keeper is alive by the
/// operator's word, so its report of a stopped state is awaited (found by
/// the simulation, seed 78723: two writable nodes). `--force` says the
/// machine is gone for good, and the lease is then taken as proof.
///
/// After the operator's `perform failover` the lease also counts from
/// that moment (see `NodeView::failed_over_at`): until the election's
/// voters stopped streaming, the keeper's exemption vouched for it.
pub fn is_fenced(node: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    let dropped_alive = node.assigned == NodeState::Dropped && !node.drop_forced;
    let exempt_until_forced = node
        .failed_over_at
        .is_some_and(|t| age(t, now) <= cfg.lease + cfg.clock_margin);
    !node.reported.accepts_writes()
        || (lease_expired(node, now, cfg) && !dropped_alive && !exempt_until_forced)
}

/// reported == assigned == `state` (DESIGN.md §3).
pub fn is_in(node: &NodeView, state: NodeState) -> bool {
    node.reported == state && node.assigned == state
}

/// Seconds with one decimal, for reasons ("3.2 s").
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
