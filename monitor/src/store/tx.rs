//! One decision about one group, in one transaction.

use anyhow::{bail, Context};
use pgpilot_proto::{pb, NodeState};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::rows::{u64_to_db, GroupRow, NodeRow, NODE_COLUMNS};
use crate::fsm::{self, Action, FsmConfig, GroupView, Timestamp};
use crate::live::Live;

/// How many rounds of the FSM one decision may take. Each round applies
/// the previous round's goals; a correct FSM settles in two or three. The
/// cap turns an FSM bug that oscillates into an error instead of a hang.
const MAX_FSM_ROUNDS: usize = 10;

pub(super) async fn select_group(
    conn: &mut PgConnection,
    formation: &str,
    group_id: i32,
    for_update: bool,
) -> anyhow::Result<Option<GroupRow>> {
    let sql = format!(
        "SELECT g.formation, g.group_id, g.generation, g.system_identifier, \
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
        nodes: nodes
            .iter()
            .map(|n| Ok(live.overlay(n.to_view()?)))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// An open transaction holding the lock on one group row.
pub struct GroupTx {
    tx: Transaction<'static, Postgres>,
    pub now: Timestamp,
    pub group: GroupRow,
    /// The group's rows as read after the lock, kept in step with every write.
    pub nodes: Vec<NodeRow>,
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
    ) -> anyhow::Result<Option<GroupTx>> {
        let mut tx = pool.begin().await.context("begin a transaction")?;
        let Some(group) = select_group(&mut tx, formation, group_id, true).await? else {
            return Ok(None);
        };
        let nodes = select_nodes(&mut tx, formation, group_id).await?;
        Ok(Some(GroupTx {
            tx,
            now,
            group,
            nodes,
            events: Vec::new(),
        }))
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub fn node(&self, node_id: i64) -> Option<&NodeRow> {
        self.nodes.iter().find(|n| n.node_id == node_id)
    }

    pub fn node_mut(&mut self, node_id: i64) -> Option<&mut NodeRow> {
        self.nodes.iter_mut().find(|n| n.node_id == node_id)
    }

    pub fn view(&self, live: &Live) -> anyhow::Result<GroupView> {
        group_view(&self.group, &self.nodes, live)
    }

    /// Writes a node row back whole (the in-memory copy is the truth inside
    /// this transaction).
    pub async fn save_node(&mut self, node_id: i64) -> anyhow::Result<()> {
        let Some(n) = self.node(node_id).cloned() else {
            bail!("node {node_id} vanished inside its own transaction");
        };
        sqlx::query(
            "UPDATE node SET system_identifier = $2, reported_state = $3, assigned_state = $4, \
             pg_running = $5, reported_tli = $6, reported_lsn = $7, replication_state = $8, \
             upstream_silent_ms = $9, health = $10, last_report = $11, last_probe = $12, \
             goal_changed_at = $13, replication_stall_since = $14 WHERE node_id = $1",
        )
        .bind(n.node_id)
        .bind(n.system_identifier)
        .bind(&n.reported_state)
        .bind(&n.assigned_state)
        .bind(n.pg_running)
        .bind(n.reported_tli)
        .bind(n.reported_lsn)
        .bind(&n.replication_state)
        .bind(n.upstream_silent_ms)
        .bind(&n.health)
        .bind(n.last_report)
        .bind(n.last_probe)
        .bind(n.goal_changed_at)
        .bind(n.replication_stall_since)
        .execute(&mut *self.tx)
        .await
        .context("update the node row")?;
        Ok(())
    }

    /// Records an event about a node; it is published after commit.
    pub async fn event(&mut self, node_id: i64, description: String) -> anyhow::Result<()> {
        let Some(n) = self.node(node_id).cloned() else {
            bail!("event for unknown node {node_id}");
        };
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO event (event_time, formation, group_id, node_id, node_name, \
             reported_state, assigned_state, description) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING event_id",
        )
        .bind(self.now)
        .bind(&n.formation)
        .bind(n.group_id)
        .bind(n.node_id)
        .bind(&n.name)
        .bind(&n.reported_state)
        .bind(&n.assigned_state)
        .bind(&description)
        .fetch_one(&mut *self.tx)
        .await
        .context("insert an event")?;
        tracing::info!(
            formation = %n.formation, group = n.group_id, node_id = n.node_id,
            reported = %n.reported_state, assigned = %n.assigned_state, "{description}"
        );
        self.events.push(pb::Event {
            event_id,
            time: self.now.to_rfc3339(),
            formation: n.formation.clone(),
            group_id: n.group_id,
            node_id: n.node_id,
            node_name: n.name.clone(),
            reported_state: n.reported()? as i32,
            assigned_state: n.assigned()? as i32,
            description,
        });
        Ok(())
    }

    /// Runs the FSM on the fresh rows until it settles, applying each
    /// round's actions. Returns whether anything changed.
    pub async fn decide(&mut self, live: &Live, cfg: &FsmConfig) -> anyhow::Result<bool> {
        let mut changed = false;
        for _ in 0..MAX_FSM_ROUNDS {
            let actions = fsm::decide(&self.view(live)?, self.now, cfg);
            if actions.is_empty() {
                return Ok(changed);
            }
            changed = true;
            for action in actions {
                self.apply(action, live).await?;
            }
        }
        bail!(
            "the group state machine of {}/{} did not settle after {MAX_FSM_ROUNDS} rounds; \
             this is a pgpilot bug, please report it with `pgpilot show events`",
            self.group.formation,
            self.group.group_id
        )
    }

    async fn apply(&mut self, action: Action, live: &Live) -> anyhow::Result<()> {
        match action {
            Action::BumpGeneration { reason } => {
                self.group.generation = sqlx::query_scalar(
                    "UPDATE node_group SET generation = generation + 1 \
                     WHERE formation = $1 AND group_id = $2 RETURNING generation",
                )
                .bind(&self.group.formation)
                .bind(self.group.group_id)
                .fetch_one(&mut *self.tx)
                .await
                .context("bump the group generation")?;
                tracing::info!(
                    formation = %self.group.formation, group = self.group.group_id,
                    generation = self.group.generation, "generation bumped: {reason}"
                );
            }
            Action::AssignGoal {
                node_id,
                goal,
                reason,
            } => {
                let now = self.now;
                let Some(node) = self.node_mut(node_id) else {
                    bail!("the FSM assigned {goal} to node {node_id}, which is not in the group");
                };
                node.assigned_state = goal.name().to_string();
                node.goal_changed_at = now;
                self.persist_live(node_id, live);
                self.save_node(node_id).await?;
                self.event(node_id, reason).await?;
            }
            Action::RemoveNode { node_id, reason } => {
                self.event(node_id, reason).await?;
                sqlx::query("DELETE FROM node WHERE node_id = $1")
                    .bind(node_id)
                    .execute(&mut *self.tx)
                    .await
                    .context("delete the node row")?;
                self.nodes.retain(|n| n.node_id != node_id);
                live.forget(node_id);
            }
        }
        Ok(())
    }

    /// Copies the live heartbeat fields into the row before it is written,
    /// so the store catches up with memory whenever it writes anyway.
    pub fn persist_live(&mut self, node_id: i64, live: &Live) {
        let Some(report) = live.get(node_id) else {
            return;
        };
        if let Some(n) = self.node_mut(node_id) {
            n.last_report = Some(report.at);
            n.reported_lsn = u64_to_db(report.lsn.0);
            n.replication_state = report.replication_state;
            n.upstream_silent_ms = report.upstream_silent.map(|d| d.as_millis() as i64);
            n.replication_stall_since = report.replication_stall_since;
        }
    }

    /// Commits and returns the events to publish.
    pub async fn commit(self) -> anyhow::Result<Vec<pb::Event>> {
        self.tx.commit().await.context("commit")?;
        Ok(self.events)
    }
}

/// The node that currently holds (or is being given) the write role: its
/// goal accepts writes. The FSM guarantees at most one.
pub fn writable_goal(view: &GroupView) -> Option<i64> {
    view.nodes
        .iter()
        .find(|n| n.assigned.accepts_writes())
        .map(|n| n.id)
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

impl GroupTx {
    /// Reads one node row inside this transaction.
    pub async fn reload_node(&mut self, node_id: i64) -> anyhow::Result<NodeRow> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM node WHERE node_id = $1");
        sqlx::query_as(&sql)
            .bind(node_id)
            .fetch_one(&mut *self.tx)
            .await
            .context("read the node row")
    }
}
