//! Before a node that was not streaming starts PostgreSQL as a standby
//! (after a copy or a rewind: [`crate::plan::Step::Announce`]), it tells
//! the monitor and waits for the monitor's word.
//!
//! Until then its reports said PostgreSQL is stopped, and a stopped node
//! acknowledges nothing: the monitor starts an election without waiting
//! for it. If it then started streaming from the old primary (a primary
//! cut off from the monitor but not from it, or one the operator
//! dropped), that primary could get a commit acknowledged through it that
//! no voter has, and the election's winner would lack it (simulation,
//! seed 539495: a copy that finished just as the operator dropped the
//! primary). So first a report that says PostgreSQL runs (the monitor now
//! counts the node as one that may acknowledge), then a reply to it that
//! keeps the goal: same generation, same goal, same node to follow. A
//! reply that moved on (a promotion was decided since) ends the steps
//! before PostgreSQL starts.

use super::{Beside, Engine, Mono};
use crate::plan::Goal;

/// An announcement under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Announce {
    since: Mono,
    confirmed: bool,
    /// The driver went on past the announcement: the start under way
    /// still counts as running in reports, but no reply ends a step.
    went_on: bool,
}

impl Engine {
    /// The driver reached [`crate::plan::Step::Announce`]: from now on the
    /// reports say PostgreSQL runs.
    pub fn announce_started(&mut self, now: Mono) {
        self.announce = Some(Announce {
            since: now,
            confirmed: false,
            went_on: false,
        });
    }

    /// A reply to a report sent since the announcement kept the goal:
    /// PostgreSQL may start (and the driver has not gone on yet).
    pub fn announce_confirmed(&self) -> bool {
        self.announce.is_some_and(|a| a.confirmed && !a.went_on)
    }

    /// The driver goes on to the start. Until the steps end the reports
    /// still say PostgreSQL runs: it is being started, and may stream.
    pub fn announce_went_on(&mut self) {
        if let Some(a) = self.announce.as_mut() {
            a.went_on = true;
        }
    }

    /// An announcement is under way and no report since it was sent.
    pub(super) fn announce_unsent(&self, last_sent: Option<Mono>) -> bool {
        self.announce
            .is_some_and(|a| !a.confirmed && last_sent.is_none_or(|t| t < a.since))
    }

    pub(super) fn announcing(&self) -> bool {
        self.announce.is_some()
    }

    /// What a reply beside the steps says of the announcement: `None`
    /// when it says nothing (none under way, or a reply to a report sent
    /// before it) or confirms it.
    pub(super) fn on_announce_reply(
        &mut self,
        sent_at: Mono,
        busy: &Goal,
        goal: &Goal,
    ) -> Option<Beside> {
        let a = self.announce.as_mut()?;
        if sent_at < a.since || a.went_on {
            return None;
        }
        // A newer generation alone ends nothing: the monitor answered the
        // announcing report (it counts this node as running from then),
        // and still names the same node to follow. During an election it
        // names none. (Ending a rejoin after its rewind costs a whole copy
        // next time: pg_rewind refuses a target left in recovery.)
        let follows = |g: &Goal| g.primary.as_ref().map(|u| u.node_id);
        if goal.state != busy.state || follows(goal) != follows(busy) {
            return Some(Beside::Abandon(format!(
                "did not start PostgreSQL as a standby of node {}: the monitor moved on before \
                 confirming it (goal {}, following {})",
                follows(busy).map_or("?".into(), |id| id.to_string()),
                goal.state,
                follows(goal).map_or("nobody".into(), |id| format!("node {id}"))
            )));
        }
        a.confirmed = true;
        None
    }
}
