//! When a writable node must stop taking writes: the lease, the "every
//! other node streams from me" exemption, and when the loop looks again
//! (DESIGN.md §7). One definition: the agent's watchdog and the
//! simulation enforce [`Engine::fence_deadline`].

use std::time::Duration;

use pgpilot_proto::{node_slot_name, NodeState};

use super::{Engine, Mono, PgStatus, MIN_WAIT};

/// How long before the exemption would lapse the keeper reads its
/// standbys again ([`pgpilot_proto::replication_timeouts::EXEMPTION_LOOK_AHEAD_MS`]:
/// the status read's budget and a little room). The report that follows
/// is cut short so that the next look comes in time too (see
/// [`Engine::report_timeout_at`]): a report hanging on a monitor cut off
/// by dropped packets would otherwise outlast an exemption refreshed from
/// a standby reply that is already up to wal_sender_timeout / 2 (600 ms)
/// old on an idle primary, and the primary would fence although its
/// standby streams (found by a review: with a 400 ms look-ahead and a
/// whole report timeout, about one look in twelve).
const EXEMPTION_LOOK_AHEAD: Duration =
    Duration::from_millis(pgpilot_proto::replication_timeouts::EXEMPTION_LOOK_AHEAD_MS);

impl Engine {
    /// Every other node of the group streams from this one (see
    /// [`Engine::fence_deadline`] for why that vouches for the primary).
    pub(super) fn all_others_stream(&self, s: &PgStatus) -> bool {
        let others: Vec<i64> = self
            .last_reply
            .iter()
            .flat_map(|r| r.other_nodes.iter().map(|n| n.node_id))
            .collect();
        !others.is_empty()
            && others
                .iter()
                .all(|id| s.streaming_standbys.contains(&node_slot_name(*id)))
    }

    pub(super) fn lease_valid(&self, now: Mono) -> bool {
        self.lease_start.is_some_and(|t| now < t + self.lease)
    }

    /// How long the exemption vouches for this node after the oldest
    /// standby reply it saw. A standby becomes a failover witness once it
    /// has heard nothing for replication_lost_timeout (at least a lease) on
    /// its clock; this node's clock may run slower than the monitor's, down
    /// to lease / (lease + margin) of it (what the lease gate's margin
    /// covers). So the exemption lasts lease * lease / (lease + margin) on
    /// this clock: at most a lease in truth, before any witness (found by
    /// the simulation once walsenders outlived their standbys, seed 12030:
    /// a full lease on a clock at 0.77 is 3.9 s, the witness came at 3 s).
    /// Before a monitor named its margin, a third of the lease.
    pub(super) fn exemption(&self) -> Duration {
        let lease = self.lease.as_millis() as u64;
        let margin = match self.margin_ms {
            0 => lease / 3,
            m => m,
        };
        Duration::from_millis(lease * lease / (lease + margin).max(1))
    }

    /// When a writable node must stop taking writes (DESIGN.md §7), or
    /// `None` for a node that never fences (not writable, or `single`: no
    /// other node can be promoted in its place). Never `None` for a
    /// writable node that can be replaced: a watchdog armed with it always
    /// has a deadline.
    ///
    /// The lease ends one lease after the last successful report was sent
    /// (no report yet: already ended, unless this keeper adopted a running
    /// PostgreSQL, see [`Engine::pg_adopted`]). The exemption "every other node
    /// streams from me" holds a little less than a lease (see
    /// [`Engine::exemption`]) after it was last observed: a loop too busy
    /// to look again cannot keep it forever.
    pub fn fence_deadline(&self) -> Option<Mono> {
        let current = self.state.current;
        // On its way into a writable state (a fenced node restarting as
        // primary, a promoted one allowing writes), PostgreSQL takes
        // writes before the state says so: it fences like a writable node
        // (simulation, seed 453620: a fenced primary restarting as primary
        // kept writing through an operator's failover).
        let toward = self.busy.as_ref().map(|b| b.state);
        let writable = |s: NodeState| s.accepts_writes() && s != NodeState::Single;
        if !writable(current) && !toward.is_some_and(writable) {
            return None;
        }
        let lease_end = self.lease_end();
        let exempt_end = self
            .exempt_seen
            .map_or(Mono::ZERO, |t| t + self.exemption());
        Some(lease_end.max(exempt_end))
    }

    /// The lease ran out: stop PostgreSQL at once, then [`Engine::fenced`].
    pub fn must_fence(&self, now: Mono) -> bool {
        self.fence_deadline().is_some_and(|d| now >= d)
    }

    /// PostgreSQL was stopped for fencing: the node self-assigns
    /// demote_timeout (and comes back if the monitor did not fail over).
    pub fn fenced(&mut self) {
        self.state.current = NodeState::DemoteTimeout;
        self.dirty = true;
        self.applied_role = None;
        self.exempt_seen = None;
        // Fencing ends whatever ran: the steps were dropped.
        self.busy = None;
        self.announce = None;
    }

    /// How long the report about to be sent at `now` may take: the
    /// monitor's report timeout, cut short while every standby streams
    /// from this node (the exemption can carry it past its lease), so that
    /// the round after it still looks at the standbys before the deadline
    /// (see [`EXEMPTION_LOOK_AHEAD`]). A healthy round is never cut: its
    /// report goes a poll after the last one, far from the deadline.
    pub fn report_timeout_at(&self, now: Mono) -> Duration {
        let normal = self.report_timeout();
        let Some(d) = self.fence_deadline() else {
            return normal;
        };
        if self.exempt_seen.is_none() {
            return normal;
        }
        normal
            .min(d.saturating_sub(EXEMPTION_LOOK_AHEAD).saturating_sub(now))
            .max(MIN_WAIT)
    }

    /// Until the next round: the poll interval, or sooner when the fencing
    /// deadline comes first, so that fencing is never late by a whole
    /// interval. After a report that got no reply the next one goes at
    /// once, once: a poll plus a report timeout is two thirds of the
    /// lease, so waiting a whole poll after one timed-out report would let
    /// the lease of a primary without the exemption (wait_primary, or a
    /// standby not streaming) run out although the monitor answers the
    /// next report (found by a review). A second failure in a row waits
    /// the poll again: a monitor that is down is not hammered.
    pub fn next_wait(&self, now: Mono) -> Duration {
        let poll = if self.failed_reports == 1 {
            MIN_WAIT
        } else {
            self.poll_interval()
        };
        let Some(d) = self.fence_deadline() else {
            return poll;
        };
        // While every standby streams from this node, look at them again
        // a little before the deadline, the lease's or the exemption's:
        // a look then renews the exemption past it (the monitor may not
        // answer the reports). Else wake just past the deadline to fence.
        let wake = if self.exempt_seen.is_some() {
            d.saturating_sub(EXEMPTION_LOOK_AHEAD)
        } else {
            d + Duration::from_millis(1)
        };
        poll.min(wake.saturating_sub(now)).max(MIN_WAIT)
    }
}
