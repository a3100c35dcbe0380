//! NodeActive: a keeper's heartbeat and report.

use pgpilot_proto::{pb, NodeState};

use super::Control;
use crate::core::{self, password, Report};
use crate::error::Result;
use crate::fsm::{Action, GroupView, Timestamp};
use crate::live::LiveReport;
use crate::metrics::Cause;
use crate::store::Passwords;

impl Control {
    pub async fn node_active(
        &self,
        req: pb::NodeActiveRequest,
        now: Timestamp,
    ) -> Result<pb::NodeActiveResponse> {
        let report = Report::from_wire(&req)?;
        let (formation, group_id) = self.group_of(report.node_id).await?;
        let _guard = self.lock_group(&formation, group_id).await;

        // Dry run: a heartbeat that changes nothing durable costs no
        // write transaction, only the live table.
        let mut view = self
            .read_view(&formation, group_id)
            .await?
            .ok_or_else(|| core::unknown_node(report.node_id))?;
        let fenced = self_fenced(&view, &report);
        let actions = self.core.report(&mut view, &report, now)?;
        let passwords = self.store.passwords(&formation).await?;
        let rotated =
            password::rotation_done(passwords.generations(), req.role_password_generation);
        if actions.is_empty() && rotated.is_none() {
            if fenced {
                self.count_fence(&view, report.node_id);
            }
            self.remember(&view, report.node_id);
            let reply = core::reply(&view, report.node_id, now, &self.core.cfg);
            return Ok(with_passwords(reply, &view, &req, &passwords));
        }
        // Decide again on the rows read after the lock (never on rows read
        // before: pg_auto_failover once made two nodes writable that way).
        let mut tx = self.begin(&formation, group_id, now).await?;
        let mut actions = self.core.report(&mut tx.view, &report, now)?;
        if let Some(generation) = rotated {
            if tx.complete_rotation(generation).await? && tx.view.node(report.node_id).is_some() {
                actions.push(Action::Note {
                    node_id: report.node_id,
                    description: format!(
                        "the replication role has the new replication password (generation \
                         {generation}) on this node: it is current now; standbys switch to it \
                         and new nodes get it"
                    ),
                });
            }
        }
        let view = self.finish(tx, &actions, Cause::Report).await?;
        if fenced {
            self.count_fence(&view, report.node_id);
        }
        self.remember(&view, report.node_id);
        // Read again: the rotation may have completed in this transaction.
        let passwords = self.store.passwords(&formation).await?;
        let reply = core::reply(&view, report.node_id, now, &self.core.cfg);
        Ok(with_passwords(reply, &view, &req, &passwords))
    }

    fn count_fence(&self, view: &GroupView, node_id: i64) {
        if let Some(n) = view.node(node_id) {
            self.metrics.fenced(view, n);
        }
    }

    /// Keeps the volatile part of the node's report in memory.
    fn remember(&self, view: &GroupView, node_id: i64) {
        if let Some(n) = view.node(node_id) {
            self.live.set(node_id, LiveReport::of(n));
        }
    }
}

/// The reply with the passwords the core's rules say it must carry
/// ([`password::to_send`]): the current one to a keeper that holds an
/// older one, the pending one to the writable node.
fn with_passwords(
    mut reply: pb::NodeActiveResponse,
    view: &GroupView,
    req: &pb::NodeActiveRequest,
    p: &Passwords,
) -> pb::NodeActiveResponse {
    let writable = view
        .node(req.node_id)
        .is_some_and(|n| n.assigned.accepts_writes() || n.reported.accepts_writes());
    let send = password::to_send(
        p.generations(),
        req.replication_password_generation,
        writable,
    );
    if send.current {
        reply.replication_password = Some(pb::ReplicationPassword {
            generation: p.generation,
            password: p.current.clone(),
        });
    }
    if let (true, Some(pending)) = (send.pending, &p.pending) {
        reply.pending_replication_password = Some(pb::ReplicationPassword {
            generation: p.generation + 1,
            password: pending.clone(),
        });
    }
    reply
}

/// The report says the node fenced itself: it newly reports
/// demote_timeout, a state its keeper self-assigns when its lease ran out,
/// while the monitor had not assigned it (a demotion the monitor asked
/// for is no fence). Counted once: the next report finds demote_timeout
/// reported already.
fn self_fenced(view: &GroupView, report: &Report) -> bool {
    report.reported == NodeState::DemoteTimeout
        && view.node(report.node_id).is_some_and(|n| {
            n.reported != NodeState::DemoteTimeout && n.assigned != NodeState::DemoteTimeout
        })
}
