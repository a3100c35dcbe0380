//! The monitor's operations, as thin shells around [`crate::core`]: each
//! one locks its group, loads its view, lets the core decide, applies the
//! core's actions through the store and commits; or answers from a read
//! without writing.
//!
//! - [`register`](Control::register), [`node_active`](Control::node_active):
//!   the keeper protocol (`register.rs`, `report.rs`).
//! - [`record_probe`](Control::record_probe), [`tick`](Control::tick):
//!   health changes and time-driven rules (`health.rs`).
//! - [`drop_node`](Control::drop_node) and the operator reads (`reads.rs`).
//! - The operator's commands: switchover, promotion, settings
//!   (`operator.rs`); the rotation of the replication password
//!   (`password.rs`).

mod health;
mod operator;
mod password;
mod reads;
mod register;
mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Keys;
use crate::config::Timings;
use crate::core::{self, Core};
use crate::error::{MonitorError, Result};
use crate::events::EventBus;
use crate::fsm::{Action, GroupView, Timestamp};
use crate::live::Live;
use crate::metrics::{Cause, Metrics};
use crate::store::{GroupTx, Store};

pub use health::ProbeResult;
pub use operator::SwitchoverStarted;

/// Shared by the gRPC service and the prober.
#[derive(Clone)]
pub struct Control {
    pub store: Store,
    pub live: Live,
    pub bus: EventBus,
    pub timings: Arc<Timings>,
    pub core: Arc<Core>,
    /// The URI keepers use to reach this monitor (`show uri`).
    pub monitor_uri: Arc<String>,
    /// Counted once a decision is committed ([`Control::finish`]), and
    /// by the gRPC layer and the prober.
    pub metrics: Arc<Metrics>,
    /// Credentials: the tokens' digests, and each node's (see
    /// [`crate::auth`]). Node entries follow the rows: added by Register,
    /// removed with the row, so a dropped node's credential stops working.
    pub keys: Arc<Keys>,
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
    pub fn new(
        store: Store,
        timings: Timings,
        monitor_uri: String,
        keys: Keys,
        now: Timestamp,
    ) -> Self {
        Control {
            store,
            live: Live::new(now),
            bus: EventBus::default(),
            core: Arc::new(Core::new(timings.fsm_config())),
            timings: Arc::new(timings),
            monitor_uri: Arc::new(monitor_uri),
            metrics: Arc::default(),
            keys: Arc::new(keys),
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
        GroupTx::begin(&self.store.pool, formation, group_id, now, &self.live)
            .await?
            .ok_or_else(|| {
                MonitorError::NotFound(format!(
                    "group {group_id} of formation {formation:?} does not exist"
                ))
            })
    }

    /// The group's view from an unlocked read, for dry runs: the caller
    /// holds the group's in-process lock, and every writer of the group
    /// takes it, so the rows are current.
    async fn read_view(&self, formation: &str, group_id: i32) -> Result<Option<GroupView>> {
        let Some((group, nodes)) = self.store.read_group(formation, group_id).await? else {
            return Ok(None);
        };
        Ok(Some(crate::store::group_view(&group, &nodes, &self.live)?))
    }

    /// Applies the actions, commits and publishes the events; counts them
    /// (as caused by `cause`) in the metrics. Nodes that left the group
    /// are forgotten by the live table.
    async fn finish(&self, mut tx: GroupTx, actions: &[Action], cause: Cause) -> Result<GroupView> {
        tx.apply(actions).await?;
        self.commit_applied(tx, actions, cause).await
    }

    /// [`Control::finish`] for a transaction whose actions are applied.
    async fn commit_applied(
        &self,
        tx: GroupTx,
        actions: &[Action],
        cause: Cause,
    ) -> Result<GroupView> {
        let view = tx.view.clone();
        let events = tx.commit().await?;
        self.metrics.committed(&view, actions, cause);
        for a in actions {
            if let Action::RemoveNode { node_id, .. } = a {
                self.live.forget(*node_id);
                self.keys.remove_node(*node_id);
            }
        }
        self.bus.publish(events);
        Ok(view)
    }

    /// The operator drops a node (see [`Core::drop_node`]).
    pub async fn drop_node(&self, node_id: i64, force: bool, now: Timestamp) -> Result<()> {
        let (formation, group_id) = self.group_of(node_id).await?;
        let _guard = self.lock_group(&formation, group_id).await;
        let mut tx = self.begin(&formation, group_id, now).await?;
        let actions = self.core.drop_node(&mut tx.view, node_id, force, now)?;
        self.finish(tx, &actions, Cause::Drop).await?;
        Ok(())
    }

    /// Loads the nodes' credential digests (at start).
    pub async fn load_credentials(&self) -> Result<()> {
        self.keys.set_nodes(self.store.credential_digests().await?);
        Ok(())
    }

    async fn group_of(&self, node_id: i64) -> Result<(String, i32)> {
        self.store
            .group_of(node_id)
            .await?
            .ok_or_else(|| core::unknown_node(node_id))
    }
}
