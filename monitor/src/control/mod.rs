//! The monitor's operations: each one locks its group, decides on fresh
//! rows and commits, or answers from a read without writing.
//!
//! - [`register`](Control::register), [`node_active`](Control::node_active):
//!   the keeper protocol (`register.rs`, `report.rs`).
//! - [`record_probe`](Control::record_probe), [`tick`](Control::tick):
//!   health changes and time-driven rules (`health.rs`).
//! - [`drop_node`](Control::drop_node) and the operator reads (`reads.rs`).

mod health;
mod reads;
mod register;
pub(crate) mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Timings;
use crate::error::{MonitorError, Result};
use crate::events::EventBus;
use crate::fsm::{FsmConfig, Timestamp};
use crate::live::Live;
use crate::store::{GroupTx, Store};

pub use health::ProbeResult;

/// Shared by the gRPC service and the prober.
#[derive(Clone)]
pub struct Control {
    pub store: Store,
    pub live: Live,
    pub bus: EventBus,
    pub timings: Arc<Timings>,
    pub fsm: Arc<FsmConfig>,
    /// The URI keepers use to reach this monitor (`show uri`).
    pub monitor_uri: Arc<String>,
    locks: Arc<Mutex<HashMap<(String, i32), GroupLock>>>,
}

/// Held while one operation decides about a group. The database row lock
/// serializes writers across connections; this in-process lock also covers
/// the dry run that decides whether a write is needed at all, so a
/// heartbeat cannot miss a decision another task is about to commit.
type GroupLock = Arc<tokio::sync::Mutex<()>>;

/// The guard of a [`GroupLock`].
pub type GroupGuard = tokio::sync::OwnedMutexGuard<()>;

impl Control {
    pub fn new(store: Store, timings: Timings, monitor_uri: String, now: Timestamp) -> Self {
        Control {
            store,
            live: Live::new(now),
            bus: EventBus::default(),
            fsm: Arc::new(timings.fsm_config()),
            timings: Arc::new(timings),
            monitor_uri: Arc::new(monitor_uri),
            locks: Arc::default(),
        }
    }

    pub async fn lock_group(&self, formation: &str, group_id: i32) -> GroupGuard {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry((formation.to_string(), group_id))
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }

    /// Begins the group's transaction; the group must exist.
    async fn begin(&self, formation: &str, group_id: i32, now: Timestamp) -> Result<GroupTx> {
        GroupTx::begin(&self.store.pool, formation, group_id, now)
            .await?
            .ok_or_else(|| {
                MonitorError::NotFound(format!(
                    "group {group_id} of formation {formation:?} does not exist"
                ))
            })
    }

    /// Commits and publishes the transaction's events.
    async fn commit(&self, tx: GroupTx) -> Result<()> {
        let events = tx.commit().await?;
        self.bus.publish(events);
        Ok(())
    }

    /// Marks a node for removal: its keeper stops Postgres, reports
    /// `dropped`, and the row is deleted. With `force` the row is deleted at
    /// once (the keeper is gone for good).
    pub async fn drop_node(&self, node_id: i64, force: bool, now: Timestamp) -> Result<()> {
        let (formation, group_id) = self.group_of(node_id).await?;
        let _guard = self.lock_group(&formation, group_id).await;
        let mut tx = self.begin(&formation, group_id, now).await?;
        let Some(node) = tx.node(node_id).cloned() else {
            return Err(unknown_node(node_id));
        };
        if force {
            tx.event(
                node_id,
                format!(
                    "node {node_id} {:?} ({}) removed by the operator (forced)",
                    node.name,
                    node.host_port()
                ),
            )
            .await?;
            sqlx::query("DELETE FROM node WHERE node_id = $1")
                .bind(node_id)
                .execute(tx.conn())
                .await
                .map_err(anyhow::Error::from)?;
            tx.nodes.retain(|n| n.node_id != node_id);
            self.live.forget(node_id);
        } else if node.assigned_state != "dropped" {
            let n = tx.node_mut(node_id).expect("checked above");
            n.assigned_state = "dropped".into();
            n.goal_changed_at = now;
            tx.save_node(node_id).await?;
            tx.event(
                node_id,
                format!(
                    "node {node_id} {:?} ({}) assigned dropped by the operator",
                    node.name,
                    node.host_port()
                ),
            )
            .await?;
        }
        tx.decide(&self.live, &self.fsm).await?;
        self.commit(tx).await
    }

    async fn group_of(&self, node_id: i64) -> Result<(String, i32)> {
        self.store
            .group_of(node_id)
            .await?
            .ok_or_else(|| unknown_node(node_id))
    }
}

fn unknown_node(node_id: i64) -> MonitorError {
    MonitorError::NotFound(format!(
        "node {node_id} is not registered with this monitor; it may have been dropped: \
         register the node again with `pgpilot create postgres`"
    ))
}
