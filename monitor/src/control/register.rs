//! Register: a keeper joins a formation.

use anyhow::Context;
use pgpilot_proto::{pb, NodeState};

use super::Control;
use crate::error::{MonitorError, Result};
use crate::fsm::Timestamp;
use crate::store::{u64_from_db, u64_to_db, GroupTx};

/// pgsql formations have one group; more are for sharded setups later.
const GROUP_ID: i32 = 0;

fn invalid(msg: impl Into<String>) -> MonitorError {
    MonitorError::InvalidArgument(msg.into())
}

/// Checks the request on its own, before touching the store.
fn validate(req: &pb::RegisterRequest) -> Result<NodeState> {
    if req.formation.is_empty() {
        return Err(invalid(
            "formation is empty: pass --formation (default \"default\")",
        ));
    }
    if req.host.trim().is_empty() {
        return Err(invalid(
            "host is empty: pass --hostname with an address other nodes and the monitor can reach",
        ));
    }
    if req.port == 0 || req.port > 65535 {
        return Err(invalid(format!(
            "port {} is out of range 1..65535",
            req.port
        )));
    }
    if req.dbname.is_empty() {
        return Err(invalid(
            "dbname is empty: pass --dbname (default \"postgres\")",
        ));
    }
    if !(0..=100).contains(&req.candidate_priority) {
        return Err(invalid(format!(
            "candidate priority {} is out of range 0..100",
            req.candidate_priority
        )));
    }
    if req.name.len() > 63 || req.name.chars().any(|c| c.is_control()) {
        return Err(invalid("node name must be at most 63 printable characters"));
    }
    match NodeState::from_wire(req.initial_state) {
        Ok(s @ (NodeState::Init | NodeState::Single)) => Ok(s),
        _ => Err(invalid(format!(
            "initial state {} is not one a node can register in: use init (new node) or single (existing running primary)",
            req.initial_state
        ))),
    }
}

impl Control {
    pub async fn register(
        &self,
        req: pb::RegisterRequest,
        now: Timestamp,
    ) -> Result<pb::RegisterResponse> {
        let initial = validate(&req)?;
        if !self.store.formation_exists(&req.formation).await? {
            let known: Vec<String> = self
                .store
                .formations()
                .await?
                .into_iter()
                .map(|f| f.0)
                .collect();
            return Err(MonitorError::NotFound(format!(
                "formation {:?} does not exist on this monitor; known formations: {}",
                req.formation,
                known.join(", ")
            )));
        }
        let _guard = self.lock_group(&req.formation, GROUP_ID).await;
        sqlx::query(
            "INSERT INTO node_group (formation, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&req.formation)
        .bind(GROUP_ID)
        .execute(&self.store.pool)
        .await
        .context("create the group row")?;
        let mut tx = self.begin(&req.formation, GROUP_ID, now).await?;
        let node_id = self.insert_node(&mut tx, &req, initial, now).await?;
        tx.decide(&self.live, &self.fsm).await?;
        let node = tx.node(node_id).cloned();
        let generation = tx.group.generation;
        let replication_password: String =
            sqlx::query_scalar("SELECT replication_password FROM formation WHERE name = $1")
                .bind(&req.formation)
                .fetch_one(tx.conn())
                .await
                .context("read the formation's replication password")?;
        self.commit(tx).await?;
        // The FSM never removes a node in its registration round; a missing
        // row here would be a bug, reported as such.
        let node = node.context("the registered node vanished before commit")?;
        Ok(pb::RegisterResponse {
            node_id,
            group_id: GROUP_ID,
            name: node.name.clone(),
            assigned_state: node.assigned()? as i32,
            generation,
            replication_password,
        })
    }

    async fn insert_node(
        &self,
        tx: &mut GroupTx,
        req: &pb::RegisterRequest,
        initial: NodeState,
        now: Timestamp,
    ) -> Result<i64> {
        if let Some(other) = tx.nodes.iter().find(|n| n.name == req.name) {
            return Err(MonitorError::AlreadyExists(format!(
                "formation {:?} already has a node named {:?} (node {} at {}): choose another --name, \
                 or drop the old node first",
                req.formation, req.name, other.node_id, other.host_port()
            )));
        }
        let taken: Option<(i64, String)> =
            sqlx::query_as("SELECT node_id, formation FROM node WHERE host = $1 AND port = $2")
                .bind(&req.host)
                .bind(req.port as i32)
                .fetch_optional(tx.conn())
                .await
                .context("look for a node at the same address")?;
        if let Some((id, formation)) = taken {
            return Err(MonitorError::AlreadyExists(format!(
                "{}:{} is already registered as node {id} in formation {formation:?}: \
                 each node needs its own host:port; drop node {id} first if it is gone",
                req.host, req.port
            )));
        }
        let sysid = (req.system_identifier != 0).then(|| u64_to_db(req.system_identifier));
        if let (Some(theirs), Some(group)) = (sysid, tx.group.system_identifier) {
            if theirs != group {
                return Err(MonitorError::FailedPrecondition(format!(
                    "this node's PostgreSQL has system identifier {}, but group {} of formation {:?} \
                     has {}: it is a different database cluster; use an empty PGDATA so the node is \
                     cloned from the primary",
                    req.system_identifier,
                    GROUP_ID,
                    req.formation,
                    u64_from_db(group)
                )));
            }
        }
        let live_nodes = tx
            .nodes
            .iter()
            .filter(|n| n.assigned_state != "dropped")
            .count();
        let (reported, assigned) = match (live_nodes, initial) {
            (0, _) if req.candidate_priority == 0 => {
                return Err(MonitorError::FailedPrecondition(
                    "the first node of a group becomes its primary, so its candidate priority must be above 0"
                        .into(),
                ))
            }
            (0, NodeState::Single) => (NodeState::Single, NodeState::Single),
            (0, _) => (NodeState::Init, NodeState::Single),
            (_, NodeState::Single) => {
                return Err(MonitorError::FailedPrecondition(format!(
                    "group {} of formation {:?} already has {live_nodes} node(s), so this node cannot \
                     join as a running primary; register it with an empty PGDATA to be cloned as a standby",
                    GROUP_ID, req.formation
                )))
            }
            (_, _) => (NodeState::Init, NodeState::WaitStandby),
        };
        self.check_dbname(tx, req, live_nodes).await?;
        let node_id: i64 = sqlx::query_scalar("SELECT nextval('node_node_id_seq')")
            .fetch_one(tx.conn())
            .await
            .context("allocate a node id")?;
        let name = if req.name.is_empty() {
            format!("node_{node_id}")
        } else {
            req.name.clone()
        };
        sqlx::query(
            "INSERT INTO node (node_id, formation, group_id, name, host, port, system_identifier, \
             reported_state, assigned_state, candidate_priority, replication_quorum, \
             goal_changed_at, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(node_id)
        .bind(&req.formation)
        .bind(GROUP_ID)
        .bind(&name)
        .bind(&req.host)
        .bind(req.port as i32)
        .bind(sysid)
        .bind(reported.name())
        .bind(assigned.name())
        .bind(req.candidate_priority)
        .bind(req.replication_quorum)
        .bind(now)
        .execute(tx.conn())
        .await?;
        if tx.group.system_identifier.is_none() && sysid.is_some() {
            set_group_sysid(tx, sysid).await?;
        }
        // Re-read so the in-memory rows match the store exactly.
        let row = crate::store::GroupTx::reload_node(tx, node_id).await?;
        tx.nodes.push(row);
        tx.event(
            node_id,
            format!(
                "registered node {node_id} {name:?} ({}:{}) in formation {:?} as {assigned}",
                req.host, req.port, req.formation
            ),
        )
        .await?;
        Ok(node_id)
    }

    /// The first node fixes the formation's dbname; later nodes must agree.
    async fn check_dbname(
        &self,
        tx: &mut GroupTx,
        req: &pb::RegisterRequest,
        live_nodes: usize,
    ) -> Result<()> {
        if live_nodes == 0 {
            sqlx::query("UPDATE formation SET dbname = $2 WHERE name = $1")
                .bind(&req.formation)
                .bind(&req.dbname)
                .execute(tx.conn())
                .await
                .context("set the formation dbname")?;
            tx.group.dbname = req.dbname.clone();
        } else if tx.group.dbname != req.dbname {
            return Err(MonitorError::FailedPrecondition(format!(
                "formation {:?} serves database {:?}, not {:?}: pass --dbname {}",
                req.formation, tx.group.dbname, req.dbname, tx.group.dbname
            )));
        }
        Ok(())
    }
}

pub(super) async fn set_group_sysid(tx: &mut GroupTx, sysid: Option<i64>) -> Result<()> {
    let (formation, group_id) = (tx.group.formation.clone(), tx.group.group_id);
    sqlx::query(
        "UPDATE node_group SET system_identifier = $3 WHERE formation = $1 AND group_id = $2",
    )
    .bind(formation)
    .bind(group_id)
    .bind(sysid)
    .execute(tx.conn())
    .await
    .context("record the group's system identifier")?;
    tx.group.system_identifier = sysid;
    Ok(())
}
