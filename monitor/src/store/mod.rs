//! The monitor's durable state, in its own PostgreSQL (sqlx).
//!
//! What is stored, and why:
//! - `formation`: the services and their settings (dbname,
//!   number_sync_standbys), because goals and synchronous_standby_names
//!   depend on them.
//! - `node_group`: one row per group with its **generation**, the fencing
//!   token bumped in the same transaction as each promotion decision, and
//!   the system identifier every node of the group must share. Every
//!   decision locks this row first (`SELECT ... FOR UPDATE`), so decisions
//!   about one group are serialized even across connections.
//! - `node`: identity, the assigned goal (the monitor's intent) and the last
//!   *significant* report (state, Postgres running, timeline), health, and
//!   the clocks the FSM compares. Goals must survive a monitor restart or a
//!   restarted monitor could hand out a second writable goal.
//! - the formation's replication password, its generation and a
//!   rotation's pending one (`passwords.rs`): every node needs the
//!   password the role accepts, and a rotation must survive a monitor
//!   restart halfway.
//! - `event`: every goal change, newly reported state, health change,
//!   registration and removal, with a sentence saying why: the audit trail
//!   an operator reads after an incident.
//!
//! The store owns every SQL statement of the monitor; the operations in
//! `crate::control` only call it.
//!
//! Volatile heartbeat fields (time of last report, LSN) are kept in memory
//! between writes; see [`crate::live`].
//!
//! Every change to a group runs in one [`GroupTx`]: lock the group row, read
//! the group's rows *after* locking, apply the change, run the pure FSM on
//! those fresh rows until it has nothing more to do, write goals and events,
//! commit. Never decide on a row read before the update (pg_auto_failover
//! once made both nodes writable that way).

mod passwords;
mod rows;
mod tx;

pub use passwords::Passwords;
pub use rows::*;
pub use tx::{group_view, GroupTx};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::time::Duration;

/// Embedded migrations from the workspace's `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool on the monitor's database.
#[derive(Clone)]
pub struct Store {
    pub pool: PgPool,
}

impl Store {
    /// Connects, retrying for up to `wait` (the private PostgreSQL may still
    /// be starting), and runs the migrations.
    pub async fn open(options: PgConnectOptions, wait: Duration) -> anyhow::Result<Store> {
        let deadline = tokio::time::Instant::now() + wait;
        let pool = loop {
            let attempt = PgPoolOptions::new()
                .max_connections(16)
                // Bounded so an unreachable database turns into an
                // Unavailable error for the caller instead of a hang.
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("monitor database not reachable yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("connect to the monitor database"),
            }
        };
        MIGRATOR
            .run(&pool)
            .await
            .context("run the monitor schema migrations")?;
        Ok(Store { pool })
    }

    /// The (formation, group) a node belongs to, if it exists.
    pub async fn group_of(&self, node_id: i64) -> anyhow::Result<Option<(String, i32)>> {
        sqlx::query_as("SELECT formation, group_id FROM node WHERE node_id = $1")
            .bind(node_id)
            .fetch_optional(&self.pool)
            .await
            .context("look up the node's group")
    }

    /// The group row (with formation settings) and its nodes, unlocked:
    /// for dry runs and reads only, never for a decision that writes.
    pub async fn read_group(
        &self,
        formation: &str,
        group_id: i32,
    ) -> anyhow::Result<Option<(GroupRow, Vec<NodeRow>)>> {
        let mut conn = self.pool.acquire().await.context("acquire a connection")?;
        let Some(group) = tx::select_group(&mut conn, formation, group_id, false).await? else {
            return Ok(None);
        };
        let nodes = tx::select_nodes(&mut conn, formation, group_id).await?;
        Ok(Some((group, nodes)))
    }

    /// Every (formation, group) that has nodes.
    pub async fn groups(&self) -> anyhow::Result<Vec<(String, i32)>> {
        sqlx::query_as("SELECT DISTINCT formation, group_id FROM node ORDER BY formation, group_id")
            .fetch_all(&self.pool)
            .await
            .context("list groups")
    }

    /// Every node, in formation then id order.
    pub async fn nodes(&self, formation: Option<&str>) -> anyhow::Result<Vec<NodeRow>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM node WHERE ($1::text IS NULL OR formation = $1) \
             ORDER BY formation, group_id, node_id"
        );
        sqlx::query_as(&sql)
            .bind(formation)
            .fetch_all(&self.pool)
            .await
            .context("list nodes")
    }

    /// Creates the group's row if it is new (a first registration).
    pub async fn ensure_group(&self, formation: &str, group_id: i32) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO node_group (formation, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(formation)
        .bind(group_id)
        .execute(&self.pool)
        .await
        .context("create the group row")?;
        Ok(())
    }

    /// The newest `count` events (of one formation, or all), oldest first.
    pub async fn events(
        &self,
        formation: Option<&str>,
        count: u32,
    ) -> anyhow::Result<Vec<EventRow>> {
        let mut rows: Vec<EventRow> = sqlx::query_as(
            "SELECT event_id, event_time, formation, group_id, node_id, node_name, reported_state, \
             assigned_state, description FROM event WHERE ($1::text IS NULL OR formation = $1) \
             ORDER BY event_id DESC LIMIT $2",
        )
        .bind(formation)
        .bind(i64::from(count))
        .fetch_all(&self.pool)
        .await
        .context("read events")?;
        rows.reverse();
        Ok(rows)
    }

    /// The credential digest of every node that has one.
    pub async fn credential_digests(&self) -> anyhow::Result<Vec<(i64, String)>> {
        sqlx::query_as(
            "SELECT node_id, credential_digest FROM node WHERE credential_digest IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .context("read the nodes' credential digests")
    }

    /// Whether a formation exists.
    pub async fn formation_exists(&self, name: &str) -> anyhow::Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM formation WHERE name = $1)")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .context("look up the formation")
    }

    /// Names of all formations.
    pub async fn formations(&self) -> anyhow::Result<Vec<(String, String, i32)>> {
        sqlx::query_as("SELECT name, dbname, number_sync_standbys FROM formation ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .context("list formations")
    }
}
