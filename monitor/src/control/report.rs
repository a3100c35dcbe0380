//! NodeActive: a keeper's heartbeat and report.

use pgpilot_proto::{pb, NodeState};

use super::Control;
use crate::core::{self, Report};
use crate::error::Result;
use crate::fsm::{GroupView, Timestamp};
use crate::live::LiveReport;
use crate::metrics::Cause;

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
        if actions.is_empty() {
            if fenced {
                self.count_fence(&view, report.node_id);
            }
            self.remember(&view, report.node_id);
            return Ok(core::reply(&view, report.node_id, now, &self.core.cfg));
        }
        // Decide again on the rows read after the lock (never on rows read
        // before: pg_auto_failover once made two nodes writable that way).
        let mut tx = self.begin(&formation, group_id, now).await?;
        let actions = self.core.report(&mut tx.view, &report, now)?;
        let view = self.finish(tx, &actions, Cause::Report).await?;
        if fenced {
            self.count_fence(&view, report.node_id);
        }
        self.remember(&view, report.node_id);
        Ok(core::reply(&view, report.node_id, now, &self.core.cfg))
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
