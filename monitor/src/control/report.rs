//! NodeActive: a keeper's heartbeat and report.

use std::time::Duration;

use pgpilot_proto::{pb, Lsn, NodeState};

use super::{register::set_group_sysid, unknown_node, Control};
use crate::error::{MonitorError, Result};
use crate::fsm::{self, GroupView, Timestamp};
use crate::live::LiveReport;
use crate::store::{group_view, report_allowed, u64_from_db, u64_to_db, GroupRow, NodeRow};

/// Longest keeper error kept in an event.
const MAX_ERROR_CHARS: usize = 500;

/// The fields of a report that are worth a write when they change. The
/// rest (LSN, time, WAL receiver age) stays in memory until the next write.
#[derive(PartialEq)]
struct Significant {
    reported: NodeState,
    pg_running: bool,
    tli: i32,
    system_identifier: Option<i64>,
}

impl Control {
    pub async fn node_active(
        &self,
        req: pb::NodeActiveRequest,
        now: Timestamp,
    ) -> Result<pb::NodeActiveResponse> {
        let reported = NodeState::from_wire(req.reported_state).map_err(|e| {
            MonitorError::InvalidArgument(format!(
                "reported state: {e}; upgrade the keeper or the monitor so they agree"
            ))
        })?;
        let tli = i32::try_from(req.timeline).map_err(|_| {
            MonitorError::InvalidArgument(format!("timeline {} is out of range", req.timeline))
        })?;
        let (formation, group_id) = self.group_of(req.node_id).await?;
        let _guard = self.lock_group(&formation, group_id).await;

        // Dry run on an unlocked read: we hold the group's in-process lock,
        // and every writer of this group takes it, so these rows are current.
        let (group, nodes) = self
            .store
            .read_group(&formation, group_id)
            .await?
            .ok_or_else(|| unknown_node(req.node_id))?;
        let row = nodes
            .iter()
            .find(|n| n.node_id == req.node_id)
            .ok_or_else(|| unknown_node(req.node_id))?;
        let report = check_report(&req, reported, tli, row, &group)?;
        let previous = self.live.get(req.node_id);
        self.live.set(
            req.node_id,
            live_report(&req, reported, now, previous.as_ref()),
        );

        let stored = Significant {
            reported: row.reported()?,
            pg_running: row.pg_running,
            tli: row.reported_tli,
            system_identifier: row.system_identifier,
        };
        let mut view = group_view(&group, &nodes, &self.live)?;
        apply_to_view(&mut view, req.node_id, &report);
        // A new reason why the keeper cannot reach its goal is an event.
        // Numbers (LSNs, pids, times) change on every attempt; the same
        // failure with other numbers is not new.
        let new_error = (!req.transition_error.is_empty()
            && previous.as_ref().is_none_or(|p| {
                error_kind(&p.transition_error) != error_kind(&req.transition_error)
            }))
        .then(|| req.transition_error.clone());
        if stored == report && new_error.is_none() && fsm::decide(&view, now, &self.fsm).is_empty()
        {
            return Ok(self.reply(&view, &nodes, &group, req.node_id));
        }

        let mut tx = self.begin(&formation, group_id, now).await?;
        let Some(node) = tx.node_mut(req.node_id) else {
            return Err(unknown_node(req.node_id));
        };
        let old_state = node.reported_state.clone();
        node.reported_state = report.reported.name().to_string();
        node.pg_running = report.pg_running;
        node.reported_tli = report.tli;
        node.system_identifier = report.system_identifier;
        let name = node.name.clone();
        tx.persist_live(req.node_id, &self.live);
        tx.save_node(req.node_id).await?;
        if tx.group.system_identifier.is_none() && report.system_identifier.is_some() {
            set_group_sysid(&mut tx, report.system_identifier).await?;
        }
        if old_state != report.reported.name() {
            tx.event(
                req.node_id,
                format!("node {} {name:?} reported {}", req.node_id, report.reported),
            )
            .await?;
        }
        if let Some(error) = new_error {
            let goal = row.assigned()?;
            tx.event(
                req.node_id,
                format!(
                    "node {} {name:?} cannot reach {goal} yet: {}",
                    req.node_id,
                    error.chars().take(MAX_ERROR_CHARS).collect::<String>()
                ),
            )
            .await?;
        }
        if stored.pg_running != report.pg_running {
            let what = if report.pg_running {
                "running again"
            } else {
                "not running (its keeper could not restart it)"
            };
            tx.event(
                req.node_id,
                format!("node {} {name:?} reports PostgreSQL {what}", req.node_id),
            )
            .await?;
        }
        tx.decide(&self.live, &self.fsm).await?;
        let view = tx.view(&self.live)?;
        let reply = self.reply(&view, &tx.nodes, &tx.group, req.node_id);
        self.commit(tx).await?;
        Ok(reply)
    }

    fn reply(
        &self,
        view: &GroupView,
        nodes: &[NodeRow],
        group: &GroupRow,
        node_id: i64,
    ) -> pb::NodeActiveResponse {
        // A node that reported `dropped` has just been removed: tell it so.
        let assigned = view
            .node(node_id)
            .map_or(NodeState::Dropped, |n| n.assigned);
        let other_nodes = view
            .nodes
            .iter()
            .filter(|n| n.id != node_id)
            .filter_map(|n| {
                let row = nodes.iter().find(|r| r.node_id == n.id)?;
                Some(node_info(n, &row.host, row.port as u32))
            })
            .collect();
        let synchronous_standby_names = ssn_for(view, assigned);
        pb::NodeActiveResponse {
            assigned_state: assigned as i32,
            generation: view.generation,
            lease_ms: self.timings.lease.as_millis() as u64,
            other_nodes,
            synchronous_standby_names,
            dbname: group.dbname.clone(),
        }
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

/// What a keeper learns of another node of its group.
pub(crate) fn node_info(n: &fsm::NodeView, host: &str, port: u32) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: n.id,
        name: n.name.clone(),
        host: host.to_string(),
        port,
        reported_state: n.reported as i32,
        assigned_state: n.assigned as i32,
        lsn: n.lsn.0,
        is_primary: n.assigned.accepts_writes(),
    }
}

/// synchronous_standby_names for a node with goal `assigned`: only the
/// writable one applies it.
pub(crate) fn ssn_for(view: &GroupView, assigned: NodeState) -> String {
    if assigned.accepts_writes() {
        fsm::synchronous_standby_names(view)
    } else {
        String::new()
    }
}

/// Checks a report against the node's row and group, returning its
/// significant fields. A refused report changes nothing.
fn check_report(
    req: &pb::NodeActiveRequest,
    reported: NodeState,
    tli: i32,
    row: &NodeRow,
    group: &GroupRow,
) -> Result<Significant> {
    let (previous, goal) = (row.reported()?, row.assigned()?);
    if !report_allowed(previous, goal, reported) {
        return Err(MonitorError::FailedPrecondition(format!(
            "node {} reported {reported}, but it was {previous} with goal {goal}: a keeper reports only \
             its last state or a goal it was given; check that no other keeper uses node id {}",
            row.node_id, row.node_id
        )));
    }
    if req.generation_seen > group.generation {
        return Err(MonitorError::FailedPrecondition(format!(
            "node {} has seen generation {}, but the monitor's group is at {}: the monitor's store is \
             older than what the node saw (restored from a backup?) or the node belongs to another monitor",
            row.node_id, req.generation_seen, group.generation
        )));
    }
    let mut system_identifier = row.system_identifier;
    if req.system_identifier != 0 {
        let theirs = u64_to_db(req.system_identifier);
        for (what, known) in [
            ("node", row.system_identifier),
            ("group", group.system_identifier),
        ] {
            if let Some(known) = known.filter(|k| *k != theirs) {
                return Err(MonitorError::FailedPrecondition(format!(
                    "node {} reports system identifier {}, but its {what} has {}: its PGDATA belongs to \
                     another database cluster; stop the keeper and re-create the node with an empty PGDATA",
                    row.node_id,
                    req.system_identifier,
                    u64_from_db(known)
                )));
            }
        }
        system_identifier = Some(theirs);
    }
    Ok(Significant {
        reported,
        pg_running: req.pg_running,
        tli,
        system_identifier,
    })
}

fn live_report(
    req: &pb::NodeActiveRequest,
    reported: NodeState,
    now: Timestamp,
    previous: Option<&LiveReport>,
) -> LiveReport {
    let wal = req.wal_receiver.unwrap_or_default();
    // The stall clock runs while a writable node reports that no standby
    // streams from it, and restarts from zero as soon as one does.
    let replication_stall_since = if reported.accepts_writes() && req.replication_state.is_empty() {
        Some(
            previous
                .and_then(|p| p.replication_stall_since)
                .unwrap_or(now),
        )
    } else {
        None
    };
    LiveReport {
        at: now,
        lsn: Lsn(req.lsn),
        replication_state: req.replication_state.clone(),
        upstream_silent: wal.upstream_silent_ms.map(Duration::from_millis),
        replication_stall_since,
        transition_error: req.transition_error.clone(),
    }
}

fn apply_to_view(view: &mut GroupView, node_id: i64, report: &Significant) {
    if let Some(n) = view.nodes.iter_mut().find(|n| n.id == node_id) {
        n.reported = report.reported;
        n.pg_running = report.pg_running;
        n.tli = report.tli as u32;
    }
}
