//! NodeActive: a keeper's heartbeat and report.

use std::time::Duration;

use pgpilot_proto::{pb, Lsn, NodeState};

use super::{unknown_node, Core};
use crate::error::{MonitorError, Result};
use crate::fsm::{self, Action, GroupView, Timestamp};

/// Longest keeper error kept in an event.
const MAX_ERROR_CHARS: usize = 500;

/// One keeper report, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub node_id: i64,
    pub reported: NodeState,
    pub generation_seen: i64,
    pub pg_running: bool,
    /// The keeper could not read PostgreSQL's status: `tli`, `lsn` and
    /// `replication_state` mean nothing.
    pub status_unknown: bool,
    /// PostgreSQL is stopped after a clean shutdown that ended here.
    pub shutdown_lsn: Option<Lsn>,
    pub tli: u32,
    pub lsn: Lsn,
    pub replication_state: String,
    pub upstream_silent: Option<Duration>,
    pub system_identifier: Option<u64>,
    pub transition_error: String,
    /// PostgreSQL runs and is (true) or is not (false) in recovery;
    /// `None` when unknown (no status, stopped, or an older keeper).
    pub in_recovery: Option<bool>,
}

impl Report {
    pub fn from_wire(req: &pb::NodeActiveRequest) -> Result<Report> {
        let reported = NodeState::from_wire(req.reported_state).map_err(|e| {
            MonitorError::InvalidArgument(format!(
                "reported state: {e}; upgrade the keeper or the monitor so they agree"
            ))
        })?;
        if i32::try_from(req.timeline).is_err() {
            return Err(MonitorError::InvalidArgument(format!(
                "timeline {} is out of range",
                req.timeline
            )));
        }
        let wal = req.wal_receiver.unwrap_or_default();
        Ok(Report {
            node_id: req.node_id,
            reported,
            generation_seen: req.generation_seen,
            pg_running: req.pg_running,
            status_unknown: req.status_unknown,
            // Only a stopped PostgreSQL has one: a report that says both
            // is contradictory and keeps no shutdown LSN.
            shutdown_lsn: req.shutdown_lsn.filter(|_| !req.pg_running).map(Lsn),
            tli: req.timeline,
            lsn: Lsn(req.lsn),
            replication_state: req.replication_state.clone(),
            upstream_silent: wal.upstream_silent_ms.map(Duration::from_millis),
            system_identifier: (req.system_identifier != 0).then_some(req.system_identifier),
            transition_error: req.transition_error.clone(),
            in_recovery: req
                .in_recovery
                .filter(|_| req.pg_running && !req.status_unknown),
        })
    }
}

/// Whether a state may be reported by a keeper whose last report was
/// `previous` and whose goal is `goal`: its last state, its goal, a goal the
/// monitor may have assigned from `previous` and since replaced (goals can
/// change before the keeper gets there), or demote_timeout when a writable
/// node fences itself (DESIGN.md section 7).
pub fn report_allowed(previous: NodeState, goal: NodeState, reported: NodeState) -> bool {
    reported == previous
        || reported == goal
        || pgpilot_proto::action_for(previous, reported).is_some()
        // Self-fencing: a writable node, or one that reached a writable
        // goal but crashed or lost the monitor before it could say so
        // (found by the simulation, seed 11: refusing it left the group
        // stuck forever).
        || (reported == NodeState::DemoteTimeout
            && (previous.accepts_writes() || goal.accepts_writes()))
}

impl Core {
    /// Checks a report against the node and its group and applies it. A
    /// refused report changes nothing.
    pub fn report(&self, g: &mut GroupView, r: &Report, now: Timestamp) -> Result<Vec<Action>> {
        let (generation, group_sysid) = (g.generation, g.system_identifier);
        let conflict_before = fsm::conflict_of(g, r.node_id, now, &self.cfg);
        let n = g
            .nodes
            .iter_mut()
            .find(|n| n.id == r.node_id)
            .ok_or_else(|| unknown_node(r.node_id))?;
        if !report_allowed(n.reported, n.assigned, r.reported) {
            return Err(MonitorError::FailedPrecondition(format!(
                "node {} reported {}, but it was {} with goal {}: a keeper reports only \
                 its last state or a goal it was given; check that no other keeper uses node id {}",
                n.id, r.reported, n.reported, n.assigned, n.id
            )));
        }
        if r.generation_seen > generation {
            return Err(MonitorError::FailedPrecondition(format!(
                "node {} has seen generation {}, but the monitor's group is at {generation}: the monitor's \
                 store is older than what the node saw (restored from a backup?) or the node belongs to \
                 another monitor",
                n.id, r.generation_seen
            )));
        }
        if let Some(theirs) = r.system_identifier {
            for (what, known) in [("node", n.system_identifier), ("group", group_sysid)] {
                if let Some(known) = known.filter(|k| *k != theirs) {
                    return Err(MonitorError::FailedPrecondition(format!(
                        "node {} reports system identifier {theirs}, but its {what} has {known}: its PGDATA \
                         belongs to another database cluster; stop the keeper and re-create the node with \
                         an empty PGDATA",
                        n.id
                    )));
                }
            }
        }
        let significant =
            |n: &crate::fsm::NodeView| (n.reported, n.pg_running, n.tli, n.system_identifier);
        let before = significant(n);
        let (old_state, old_running) = (n.reported, n.pg_running);
        let old_error = std::mem::replace(&mut n.transition_error, r.transition_error.clone());

        // Volatile fields: they reach the store with the next write.
        n.last_report = Some(now);
        n.status_unknown = r.status_unknown;
        if !r.status_unknown {
            n.tli = r.tli;
            n.lsn = r.lsn;
            n.replication_state = r.replication_state.clone();
        }
        n.upstream_silent = r.upstream_silent;
        n.shutdown_lsn = r.shutdown_lsn;
        // The stall clock runs while a writable node reports that no
        // standby streams from it, and restarts from zero as soon as one
        // does. An unknown status leaves it as it was.
        if !r.status_unknown {
            n.replication_stall_since = (r.reported.accepts_writes()
                && n.replication_state.is_empty())
            .then(|| n.replication_stall_since.unwrap_or(now));
        }
        n.reported = r.reported;
        // A state without writes: whatever it wrote under its exemption
        // is over (see `NodeView::failed_over_at`).
        if !r.reported.accepts_writes() {
            n.failed_over_at = None;
        }
        n.pg_running = r.pg_running;
        n.in_recovery = r.in_recovery;
        if r.system_identifier.is_some() {
            n.system_identifier = r.system_identifier;
        }

        let mut out = Vec::new();
        if significant(n) != before {
            out.push(Action::SaveNode { node_id: n.id });
        }
        let (id, name, goal) = (n.id, n.name.clone(), n.assigned);
        if old_state != r.reported {
            out.push(Action::Note {
                node_id: id,
                description: format!("node {id} {name:?} reported {}", r.reported),
            });
        }
        // A new reason why the keeper cannot reach its goal is an event.
        // Numbers (LSNs, pids, times) change on every attempt; the same
        // failure with other numbers is not new.
        if !r.transition_error.is_empty()
            && error_kind(&old_error) != error_kind(&r.transition_error)
        {
            out.push(Action::Note {
                node_id: id,
                description: format!(
                    "node {id} {name:?} cannot reach {goal} yet: {}",
                    r.transition_error
                        .chars()
                        .take(MAX_ERROR_CHARS)
                        .collect::<String>()
                ),
            });
        }
        if old_running != r.pg_running {
            let what = if r.pg_running {
                "running again".to_string()
            } else if r.reported.wants_running() {
                "not running (its keeper could not restart it)".to_string()
            } else {
                // A planned stop (draining, demoted, ...): no failure.
                format!("stopped, as {} wants", r.reported)
            };
            out.push(Action::Note {
                node_id: id,
                description: format!("node {id} {name:?} reports PostgreSQL {what}"),
            });
        }
        conflict_news(
            conflict_before,
            fsm::conflict_of(g, id, now, &self.cfg),
            &name,
            &mut out,
        );
        if g.system_identifier.is_none() && r.system_identifier.is_some() {
            g.system_identifier = r.system_identifier;
            out.push(Action::SaveGroupSystemIdentifier);
        }
        self.settle(g, now, &mut out);
        Ok(out)
    }
}

/// A leadership conflict that began with this report is an ERROR event
/// (once: a report that finds it under way already adds nothing); one that
/// ended is a note.
fn conflict_news(
    before: Option<fsm::Conflict>,
    after: Option<fsm::Conflict>,
    name: &str,
    out: &mut Vec<Action>,
) {
    match (before, after) {
        (None, Some(c)) => out.push(Action::Conflict {
            node_id: c.node_id,
            other: c.other,
            description: c.description,
        }),
        (Some(c), None) => out.push(Action::Note {
            node_id: c.node_id,
            description: format!(
                "node {} {name:?} is in no leadership conflict any more",
                c.node_id
            ),
        }),
        _ => {}
    }
}

/// An error message with every run of digits replaced by `#`.
fn error_kind(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            out.push(ch);
            in_number = false;
        }
    }
    out
}
