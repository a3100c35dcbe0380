//! What keepers report on every heartbeat, kept in memory.
//!
//! A heartbeat that changes nothing must not cost a write transaction
//! (thousands of keepers report every second), yet the FSM needs the time of
//! each keeper's last report and its latest LSN. Those volatile fields live
//! here and are overlaid on the stored rows whenever the monitor decides;
//! they reach the store with the next write of the row.
//!
//! After a monitor restart this table is empty. The stored `last_report`
//! is then older than the truth, so [`Live::overlay`] never lets a node look
//! as if it reported before the monitor started: that keeps both the
//! silence detection (no failover on stale data) and the lease gate (the
//! old primary's lease is never taken to expire early) on the safe side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgpilot_proto::Lsn;

use crate::fsm::{Health, NodeView, Timestamp};

/// The volatile part of one keeper's last report.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveReport {
    pub at: Timestamp,
    pub lsn: Lsn,
    pub replication_state: String,
    pub upstream_silent: Option<Duration>,
    /// On a primary: since when its reports say no standby streams.
    pub replication_stall_since: Option<Timestamp>,
    /// Why the keeper could not reach its goal, as it last said.
    pub transition_error: String,
    /// The keeper could not read PostgreSQL's status in that report.
    pub status_unknown: bool,
    /// PostgreSQL stopped cleanly at this LSN (see `NodeView::shutdown_lsn`).
    pub shutdown_lsn: Option<Lsn>,
    /// See `NodeView::in_recovery`.
    pub in_recovery: Option<bool>,
}

impl LiveReport {
    /// The volatile fields of a node as the core left them.
    pub fn of(n: &NodeView) -> LiveReport {
        LiveReport {
            at: n.last_report.unwrap_or_default(),
            lsn: n.lsn,
            replication_state: n.replication_state.clone(),
            upstream_silent: n.upstream_silent,
            replication_stall_since: n.replication_stall_since,
            transition_error: n.transition_error.clone(),
            status_unknown: n.status_unknown,
            shutdown_lsn: n.shutdown_lsn,
            in_recovery: n.in_recovery,
        }
    }
}

#[derive(Clone)]
pub struct Live {
    started_at: Timestamp,
    reports: Arc<Mutex<HashMap<i64, LiveReport>>>,
    /// The health last written to the store per node, so that an unchanged
    /// probe result costs no query at all.
    health: Arc<Mutex<HashMap<i64, Health>>>,
}

impl Live {
    pub fn new(started_at: Timestamp) -> Self {
        Live {
            started_at,
            reports: Arc::default(),
            health: Arc::default(),
        }
    }

    pub fn get(&self, node_id: i64) -> Option<LiveReport> {
        self.lock().get(&node_id).cloned()
    }

    pub fn set(&self, node_id: i64, report: LiveReport) {
        self.lock().insert(node_id, report);
    }

    pub fn forget(&self, node_id: i64) {
        self.lock().remove(&node_id);
        lock(&self.health).remove(&node_id);
    }

    /// The health last stored for a node, if this process knows it.
    pub fn known_health(&self, node_id: i64) -> Option<Health> {
        lock(&self.health).get(&node_id).copied()
    }

    /// Remembers the health the store now holds for a node.
    pub fn set_known_health(&self, node_id: i64, health: Health) {
        lock(&self.health).insert(node_id, health);
    }

    /// The node as the FSM must see it: stored fields, then the live ones.
    pub fn overlay(&self, mut view: NodeView) -> NodeView {
        // What this process heard is the newest word: the store only ever
        // holds what it wrote from this table, or what an earlier process
        // wrote before it started (on a wall clock that may since have
        // been stepped back, so a stored time can look newer than it is:
        // found by the simulation, seed 51195).
        match self.get(view.id) {
            Some(live) => {
                view.last_report = Some(live.at);
                view.lsn = live.lsn;
                view.replication_state = live.replication_state;
                view.upstream_silent = live.upstream_silent;
                view.replication_stall_since = live.replication_stall_since;
                view.transition_error = live.transition_error;
                view.status_unknown = live.status_unknown;
                view.shutdown_lsn = live.shutdown_lsn;
                view.in_recovery = live.in_recovery;
                view.heard = true;
            }
            // This process has not heard from the keeper: what the row says of
            // its position may be older than a report the previous monitor
            // process received (it is written only with significant changes),
            // so no rule may count it as final until the keeper reports again.
            //
            // Its last report is then taken to be our own start: in real time
            // every report the store holds came before it. Neither earlier (the
            // lease gate must not open on a stale time) nor later (a stored time
            // from a clock that was ahead before a step back would make a dead
            // node look alive for as long as the step).
            None => {
                view.heard = false;
                view.status_unknown = true;
                view.shutdown_lsn = None;
                view.in_recovery = None;
                view.last_report = Some(self.started_at);
            }
        }
        view
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, LiveReport>> {
        lock(&self.reports)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a map inconsistent
    // (single inserts and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::builders::{at, node, t0};
    use pgpilot_proto::NodeState;

    #[test]
    fn after_a_restart_nothing_stored_is_taken_as_final() {
        // The row says the node reported at t0; this process started later
        // and has heard nothing yet.
        let live = Live::new(at(10.0));
        let v = live.overlay(node(1, NodeState::ReportLsn));
        assert!(v.status_unknown, "a stored LSN is not a final one");
        assert_eq!(v.last_report, Some(at(10.0)), "never before our start");
        // A stored time ahead of our start (the clock stepped back across
        // the restart) does not make the node look alive for longer.
        let mut ahead = node(1, NodeState::Primary);
        ahead.last_report = Some(at(3600.0));
        assert_eq!(live.overlay(ahead).last_report, Some(at(10.0)));
        // Once the keeper reports, its word counts.
        let mut n = node(1, NodeState::ReportLsn);
        n.last_report = Some(at(11.0));
        live.set(1, LiveReport::of(&n));
        let v = live.overlay(node(1, NodeState::ReportLsn));
        assert!(!v.status_unknown);
        assert_eq!(v.last_report, Some(at(11.0)));
        // Even when a stored time looks newer (a clock stepped back).
        let mut ahead = node(1, NodeState::ReportLsn);
        ahead.last_report = Some(at(3600.0));
        assert_eq!(live.overlay(ahead).last_report, Some(at(11.0)));
        let _ = t0();
    }
}
