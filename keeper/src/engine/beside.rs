//! Replies that arrive while steps run (DESIGN.md §7, "Never stuck" dead
//! end 6). A copy of a big database, a rewind or crash recovery can take
//! hours; a keeper that stopped reporting meanwhile looked dead to the
//! monitor, and a quorum standby that looks dead blocks every automatic
//! failover (it may hold commits nobody else has). So the driver keeps
//! reporting beside the steps, with the usual report: the state being
//! left, PostgreSQL as observed.
//!
//! One rule holds throughout: a reply beside the steps never starts other
//! steps. A changed goal is taken by the first round after they ended
//! (the driver reports again at once then). What a reply can do instead
//! is renew the lease, end the steps ([`Beside::Abandon`]: they follow a
//! node that is no longer the primary) or fence a writable node
//! ([`Beside::Fence`]: the monitor has moved on and the steps cannot take
//! the new goal before they end).
//!
//! Nothing here changes the persisted state: the goal and generation on
//! disk are the ones the steps act on until they end.

use std::time::Duration;

use pgpilot_proto::{pb, NodeState};

use super::{Engine, Mono, MIN_WAIT};
use crate::plan::{self, Goal};

/// What a reply received beside the steps asks of the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Beside {
    /// The goal is the one the steps work for: go on.
    Continue,
    /// The goal changed, or a newer generation came: go on; the new goal
    /// is taken once the steps ended. Log the reason (once).
    Deferred(String),
    /// The reply is stale or unusable: go on, log it.
    Ignore(String),
    /// The steps follow a node the monitor no longer names as the primary
    /// (a copy from a primary that froze could hang for hours): drop them
    /// ([`Engine::transition_failed`] with the reason) and take the goal
    /// on the next round.
    Abandon(String),
    /// A writable node whose goal moved on (a newer generation: another
    /// node was promoted; or a goal without writes): drop the steps and
    /// fence now ([`Engine::fenced`]). The monitor's lease gate waits for
    /// this node to report a state without writes, and it would not before
    /// the steps ended.
    Fence(String),
}

impl Engine {
    /// The driver starts the steps toward `goal` (a transition, or a steady
    /// state's steps) and reports beside them until they end.
    pub fn steps_started(&mut self, goal: &Goal) {
        self.busy = Some(goal.clone());
        self.announce = None;
    }

    /// The goal of the steps under way, if any.
    pub fn steps_running(&self) -> Option<&Goal> {
        self.busy.as_ref()
    }

    /// The steps ended without a verdict on a transition: a steady state's
    /// steps finished, or the driver dropped them (cancelled).
    pub fn steps_ended(&mut self) {
        self.busy = None;
        self.announce = None;
    }

    /// How long until the next report beside the steps: one poll interval
    /// after the last report was sent (whatever came of it), sooner when
    /// the fencing deadline comes first.
    pub fn beat_wait(&self, now: Mono, last_sent: Option<Mono>) -> Duration {
        // An announcement goes out at once (see [`super::announce`]).
        let due = match last_sent {
            _ if self.announce_unsent(last_sent) => now,
            None => now,
            Some(t) => t + self.poll_interval(),
        };
        let mut wait = due.saturating_sub(now);
        if let Some(d) = self.fence_deadline() {
            wait = wait.min(d.saturating_sub(now) + Duration::from_millis(1));
        }
        wait.max(MIN_WAIT)
    }

    /// A reply to the report sent at `sent_at`, received while the steps
    /// toward [`Engine::steps_running`] run. Starts nothing (see the module
    /// doc); takes the timing contract and the group's view (the other
    /// nodes, for the fencing exemption) from any current reply.
    ///
    /// The lease is renewed only by a reply of the generation the steps act
    /// on whose goal keeps to them: a newer generation means a promotion
    /// was decided since, and a node on its way into a writable state must
    /// not arrive there with a lease lent by an older decision.
    pub fn on_reply_beside(
        &mut self,
        sent_at: Mono,
        _now: Mono,
        reply: pb::NodeActiveResponse,
    ) -> Beside {
        // The monitor answered, whatever the reply says: the next failed
        // report is the first in a row again (see `Engine::next_wait`).
        self.failed_reports = 0;
        let seen = self.state.generation_seen;
        if !plan::accept_goal(seen, reply.generation) {
            // Vouches for nothing: no lease either.
            return Beside::Ignore(format!(
                "ignoring a reply of generation {} while working: already saw generation {seen}",
                reply.generation
            ));
        }
        let goal_state = match NodeState::from_wire(reply.assigned_state) {
            Ok(s) => s,
            Err(e) => return Beside::Ignore(format!("the monitor assigned an unknown state: {e}")),
        };
        let busy = self.busy.clone().unwrap_or_else(|| Goal {
            state: self.state.current,
            ssn: String::new(),
            primary: None,
            fast_forward: None,
        });
        let newer = reply.generation > seen;
        let goal = plan::goal_from_reply(&reply, goal_state);
        self.take_contract(&reply);
        self.last_reply = Some(reply);
        // A writable node that can be replaced (not `single`).
        let writable = self.fence_deadline().is_some();
        let keeps_writes = !newer && (goal_state.accepts_writes() || goal_state == busy.state);
        if writable && !keeps_writes {
            return Beside::Fence(format!(
                "the monitor assigned {goal_state} (generation {}) while this node, {}, works \
                 toward {}: it stops taking writes now rather than when that ends",
                self.last_reply.as_ref().map_or(0, |r| r.generation),
                self.state.current,
                busy.state
            ));
        }
        if let (Some(from), Some(to)) = (&busy.primary, &goal.primary) {
            if from.node_id != to.node_id {
                return Beside::Abandon(format!(
                    "abandoned the steps toward {}: they follow node {}, and the monitor now names \
                     node {} as the primary",
                    busy.state, from.node_id, to.node_id
                ));
            }
        }
        if let Some(verdict) = self.on_announce_reply(sent_at, &busy, &goal) {
            return verdict;
        }
        // A fetch toward a goal the monitor moved away from (the winner
        // gave way, or the operator promotes it without the fetch) would
        // hold the new goal until the fetch times out: its source may be
        // dead.
        if busy.state == NodeState::FastForward && goal_state != NodeState::FastForward {
            return Beside::Abandon(format!(
                "abandoned the fast_forward: the monitor now assigns {goal_state}"
            ));
        }
        if newer {
            return Beside::Deferred(format!(
                "goal {goal_state} of generation {} waits until the steps toward {} end (no lease \
                 from it meanwhile)",
                self.last_reply.as_ref().map_or(0, |r| r.generation),
                busy.state
            ));
        }
        // Only a goal that keeps to the steps lends a lease: a node on its
        // way into a writable state must not arrive there with a lease lent
        // by a goal without writes. (A writable node got here only with a
        // goal that keeps its writes: see the fence above.)
        if goal_state == busy.state
            || (self.state.current.accepts_writes() && goal_state.accepts_writes())
        {
            self.renew_lease(sent_at);
        }
        if goal_state != busy.state {
            return Beside::Deferred(format!(
                "goal {goal_state} waits until the steps toward {} end",
                busy.state
            ));
        }
        Beside::Continue
    }
}
