//! One decision about one group, in one transaction.

use anyhow::{bail, Context};
use pgpilot_proto::pb;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::rows::{u64_to_db, GroupRow, NodeRow, NODE_COLUMNS};
use crate::fsm::{self, Action, GroupView, NodeView, Timestamp};
use crate::live::Live;

pub(super) async fn select_group(
    conn: &mut PgConnection,
    formation: &str,
    group_id: i32,
    for_update: bool,
) -> anyhow::Result<Option<GroupRow>> {
    let sql = format!(
        "SELECT g.formation, g.group_id, g.generation, g.system_identifier, g.waiting_for, g.switchover_to, \
                f.number_sync_standbys, f.dbname \
         FROM node_group g JOIN formation f ON f.name = g.formation \
         WHERE g.formation = $1 AND g.group_id = $2 {}",
        if for_update { "FOR UPDATE OF g" } else { "" }
    );
    sqlx::query_as(&sql)
        .bind(formation)
        .bind(group_id)
        .fetch_optional(&mut *conn)
        .await
        .context("read the group row")
}

pub(super) async fn select_nodes(
    conn: &mut PgConnection,
    formation: &str,
    group_id: i32,
) -> anyhow::Result<Vec<NodeRow>> {
    let sql = format!(
        "SELECT {NODE_COLUMNS} FROM node WHERE formation = $1 AND group_id = $2 ORDER BY node_id"
    );
    sqlx::query_as(&sql)
        .bind(formation)
        .bind(group_id)
        .fetch_all(&mut *conn)
        .await
        .context("read the group's nodes")
}

/// The FSM's view of a group: stored rows with the live heartbeat overlay.
pub fn group_view(group: &GroupRow, nodes: &[NodeRow], live: &Live) -> anyhow::Result<GroupView> {
    Ok(GroupView {
        formation: group.formation.clone(),
        group_id: group.group_id,
        number_sync_standbys: group.number_sync_standbys,
        generation: group.generation,
        system_identifier: group.system_identifier.map(super::u64_from_db),
        dbname: group.dbname.clone(),
        waiting_for: group.waiting_for.clone(),
        switchover_to: group.switchover_to,
        nodes: nodes
            .iter()
            .map(|n| Ok(live.overlay(n.to_view()?)))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// An open transaction holding the lock on one group row.
///
/// `view` is the group as read *after* the lock (with the live overlay):
/// the operation in `crate::core` changes it, and [`GroupTx::apply`]
/// writes what its actions name from it.
pub struct GroupTx {
    pub(super) tx: Transaction<'static, Postgres>,
    pub now: Timestamp,
    pub view: GroupView,
    /// The view as last written, replayed action by action so that each
    /// event records the states of the moment it describes.
    written: GroupView,
    events: Vec<pb::Event>,
}

impl GroupTx {
    /// Begins a transaction and locks the group row. `None` if the group
    /// does not exist.
    pub async fn begin(
        pool: &PgPool,
        formation: &str,
        group_id: i32,
        now: Timestamp,
        live: &Live,
    ) -> anyhow::Result<Option<GroupTx>> {
        let mut tx = pool.begin().await.context("begin a transaction")?;
        let Some(group) = select_group(&mut tx, formation, group_id, true).await? else {
            return Ok(None);
        };
        let nodes = select_nodes(&mut tx, formation, group_id).await?;
        let view = group_view(&group, &nodes, live)?;
        Ok(Some(GroupTx {
            tx,
            now,
            written: view.clone(),
            view,
            events: Vec::new(),
        }))
    }

    /// Writes the effects of `actions` (returned by a `crate::core`
    /// operation that changed `self.view`), in order.
    pub async fn apply(&mut self, actions: &[Action]) -> anyhow::Result<()> {
        for action in actions {
            self.apply_one(action).await?;
        }
        // Whatever the operation changed of its nodes is now written.
        self.written = self.view.clone();
        Ok(())
    }

    async fn apply_one(&mut self, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::BumpGeneration { reason } => {
                let generation: i64 = sqlx::query_scalar(
                    "UPDATE node_group SET generation = generation + 1 \
                     WHERE formation = $1 AND group_id = $2 RETURNING generation",
                )
                .bind(&self.view.formation)
                .bind(self.view.group_id)
                .fetch_one(&mut *self.tx)
                .await
                .context("bump the group generation")?;
                self.written.generation = generation;
                tracing::info!(
                    formation = %self.view.formation, group = self.view.group_id,
                    generation, "generation bumped: {reason}"
                );
            }
            Action::AssignGoal {
                node_id, reason, ..
            } => {
                fsm::apply(&mut self.written, std::slice::from_ref(action), self.now);
                self.save_node(*node_id).await?;
                self.event(*node_id, reason.clone()).await?;
            }
            Action::QuorumDropConfirmed { node_id }
            | Action::MaintenanceRequest { node_id, .. } => {
                fsm::apply(&mut self.written, std::slice::from_ref(action), self.now);
                self.save_node(*node_id).await?;
            }
            Action::SaveNode { node_id } => {
                // The written copy takes the node's reported side; its goal
                // moves with the AssignGoal actions that follow.
                if let (Some(w), Some(v)) = (
                    self.written.nodes.iter_mut().find(|n| n.id == *node_id),
                    self.view.node(*node_id),
                ) {
                    let (assigned, changed) = (w.assigned, w.goal_changed_at);
                    *w = v.clone();
                    w.assigned = assigned;
                    w.goal_changed_at = changed;
                }
                self.save_node(*node_id).await?;
            }
            Action::RebaseGoalTime { node_id } => {
                if let (Some(w), Some(v)) = (
                    self.written.nodes.iter_mut().find(|n| n.id == *node_id),
                    self.view.node(*node_id),
                ) {
                    w.goal_changed_at = v.goal_changed_at;
                }
                self.save_node(*node_id).await?;
            }
            Action::AddNode { node_id } => {
                let Some(n) = self.view.node(*node_id).cloned() else {
                    bail!("node {node_id} was added but is not in the view");
                };
                self.insert_node(&n).await?;
                self.written.nodes.push(n);
            }
            Action::RemoveNode { node_id, reason } => {
                self.event(*node_id, reason.clone()).await?;
                sqlx::query("DELETE FROM node WHERE node_id = $1")
                    .bind(node_id)
                    .execute(&mut *self.tx)
                    .await
                    .context("delete the node row")?;
                self.written.nodes.retain(|n| n.id != *node_id);
            }
            Action::ForgetSystemIdentifier | Action::SaveGroupSystemIdentifier => {
                sqlx::query(
                    "UPDATE node_group SET system_identifier = $3 WHERE formation = $1 AND group_id = $2",
                )
                .bind(&self.view.formation)
                .bind(self.view.group_id)
                .bind(self.view.system_identifier.map(u64_to_db))
                .execute(&mut *self.tx)
                .await
                .context("record the group's system identifier")?;
            }
            Action::Wait { node_id, reason } => {
                self.save_wait().await?;
                self.event(*node_id, reason.clone()).await?;
            }
            Action::WaitOver => self.save_wait().await?,
            Action::SetSwitchover { .. } => {
                sqlx::query(
                    "UPDATE node_group SET switchover_to = $3 WHERE formation = $1 AND group_id = $2",
                )
                .bind(&self.view.formation)
                .bind(self.view.group_id)
                .bind(self.view.switchover_to)
                .execute(&mut *self.tx)
                .await
                .context("record the switchover under way")?;
            }
            Action::SaveFormationSettings => {
                sqlx::query("UPDATE formation SET number_sync_standbys = $2 WHERE name = $1")
                    .bind(&self.view.formation)
                    .bind(self.view.number_sync_standbys)
                    .execute(&mut *self.tx)
                    .await
                    .context("set the formation's number_sync_standbys")?;
            }
            Action::SaveDbname => {
                sqlx::query("UPDATE formation SET dbname = $2 WHERE name = $1")
                    .bind(&self.view.formation)
                    .bind(&self.view.dbname)
                    .execute(&mut *self.tx)
                    .await
                    .context("set the formation dbname")?;
            }
            Action::Note {
                node_id,
                description,
            } => self.event(*node_id, description.clone()).await?,
            // A human must look (STYLE.md 8): logged at ERROR.
            Action::Conflict {
                node_id,
                description,
                ..
            } => self.record(*node_id, description.clone(), true).await?,
        }
        Ok(())
    }

    /// Writes a node row whole from the view: its goal as replayed so far,
    /// everything else as the operation left it (including the live
    /// heartbeat fields, so the store catches up with memory whenever it
    /// writes anyway).
    async fn save_node(&mut self, node_id: i64) -> anyhow::Result<()> {
        let Some(w) = self.written.node(node_id) else {
            bail!("node {node_id} vanished inside its own transaction");
        };
        // Gone from the view: a later action of the same list removes its
        // row (a keeper's `dropped` report, a forced drop of a fenced node);
        // its events are still recorded, from the written copy.
        let Some(v) = self.view.node(node_id) else {
            return Ok(());
        };
        let n = NodeView {
            assigned: w.assigned,
            goal_changed_at: w.goal_changed_at,
            ..v.clone()
        };
        sqlx::query(
            "UPDATE node SET system_identifier = $2, reported_state = $3, assigned_state = $4, \
             pg_running = $5, reported_tli = $6, reported_lsn = $7, replication_state = $8, \
             upstream_silent_ms = $9, health = $10, last_report = $11, last_probe = $12, \
             goal_changed_at = $13, replication_stall_since = $14, drop_forced = $15, \
             dropped_from = $16, candidate_priority = $17, replication_quorum = $18, \
             quorum_dropped_at = $19, maintenance_requested = $20, failed_over_at = $21 \
             WHERE node_id = $1",
        )
        .bind(n.id)
        .bind(n.system_identifier.map(u64_to_db))
        .bind(n.reported.name())
        .bind(n.assigned.name())
        .bind(n.pg_running)
        .bind(n.tli as i32)
        .bind(u64_to_db(n.lsn.0))
        .bind(&n.replication_state)
        .bind(n.upstream_silent.map(|d| d.as_millis() as i64))
        .bind(n.health.name())
        .bind(n.last_report)
        .bind(n.last_probe)
        .bind(n.goal_changed_at)
        .bind(n.replication_stall_since)
        .bind(n.drop_forced)
        .bind(n.dropped_from.map(|s| s.name()))
        .bind(n.candidate_priority)
        .bind(n.replication_quorum)
        .bind(n.quorum_dropped_at)
        .bind(n.maintenance_requested)
        .bind(n.failed_over_at)
        .execute(&mut *self.tx)
        .await
        .context("update the node row")?;
        Ok(())
    }

    async fn insert_node(&mut self, n: &NodeView) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO node (node_id, formation, group_id, name, host, port, system_identifier, \
             reported_state, assigned_state, candidate_priority, replication_quorum, \
             goal_changed_at, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(n.id)
        .bind(&self.view.formation)
        .bind(self.view.group_id)
        .bind(&n.name)
        .bind(&n.host)
        .bind(i32::from(n.port))
        .bind(n.system_identifier.map(u64_to_db))
        .bind(n.reported.name())
        .bind(n.assigned.name())
        .bind(n.candidate_priority)
        .bind(n.replication_quorum)
        .bind(n.goal_changed_at)
        .bind(self.now)
        .execute(&mut *self.tx)
        .await
        .context("insert the node row")?;
        Ok(())
    }

    /// Records an event about a node, with its states as written so far;
    /// it is published after commit.
    async fn event(&mut self, node_id: i64, description: String) -> anyhow::Result<()> {
        self.record(node_id, description, false).await
    }

    /// [`Self::event`], logged at ERROR when `error`.
    async fn record(
        &mut self,
        node_id: i64,
        description: String,
        error: bool,
    ) -> anyhow::Result<()> {
        let Some(n) = self.written.node(node_id).cloned() else {
            bail!("event for unknown node {node_id}");
        };
        let (formation, group_id) = (self.view.formation.clone(), self.view.group_id);
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO event (event_time, formation, group_id, node_id, node_name, \
             reported_state, assigned_state, description) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING event_id",
        )
        .bind(self.now)
        .bind(&formation)
        .bind(group_id)
        .bind(n.id)
        .bind(&n.name)
        .bind(n.reported.name())
        .bind(n.assigned.name())
        .bind(&description)
        .fetch_one(&mut *self.tx)
        .await
        .context("insert an event")?;
        if error {
            tracing::error!(
                formation = %formation, group = group_id, node_id = n.id,
                reported = %n.reported, assigned = %n.assigned, "{description}"
            );
        } else {
            tracing::info!(
                formation = %formation, group = group_id, node_id = n.id,
                reported = %n.reported, assigned = %n.assigned, "{description}"
            );
        }
        self.events.push(pb::Event {
            event_id,
            time: self.now.to_rfc3339(),
            formation,
            group_id,
            node_id: n.id,
            node_name: n.name.clone(),
            reported_state: n.reported as i32,
            assigned_state: n.assigned as i32,
            description,
        });
        Ok(())
    }

    async fn save_wait(&mut self) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE node_group SET waiting_for = $3 WHERE formation = $1 AND group_id = $2",
        )
        .bind(&self.view.formation)
        .bind(self.view.group_id)
        .bind(&self.view.waiting_for)
        .execute(&mut *self.tx)
        .await
        .context("record what the group waits for")?;
        Ok(())
    }

    /// A new node id from the sequence.
    pub async fn next_node_id(&mut self) -> anyhow::Result<i64> {
        sqlx::query_scalar("SELECT nextval('node_node_id_seq')")
            .fetch_one(&mut *self.tx)
            .await
            .context("allocate a node id")
    }

    /// The node already registered at `host:port`, in any formation.
    pub async fn node_at(
        &mut self,
        host: &str,
        port: u16,
    ) -> anyhow::Result<Option<(i64, String)>> {
        sqlx::query_as("SELECT node_id, formation FROM node WHERE host = $1 AND port = $2")
            .bind(host)
            .bind(i32::from(port))
            .fetch_optional(&mut *self.tx)
            .await
            .context("look for a node at the same address")
    }

    /// Keeps the digest of node `node_id`'s credential (registration, in
    /// the transaction that adds the node).
    pub async fn set_credential_digest(
        &mut self,
        node_id: i64,
        digest: &str,
    ) -> anyhow::Result<()> {
        sqlx::query("UPDATE node SET credential_digest = $2 WHERE node_id = $1")
            .bind(node_id)
            .bind(digest)
            .execute(&mut *self.tx)
            .await
            .context("store the node's credential digest")?;
        Ok(())
    }

    /// Commits and returns the events to publish.
    pub async fn commit(self) -> anyhow::Result<Vec<pb::Event>> {
        self.tx.commit().await.context("commit")?;
        Ok(self.events)
    }
}
