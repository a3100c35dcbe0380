//! Register: a keeper joins a group.

use pgpilot_proto::{pb, Lsn, NodeState};

use super::Core;
use crate::error::{MonitorError, Result};
use crate::fsm::{Action, GroupView, Health, NodeView, Timestamp};

/// A registration request, checked on its own.
#[derive(Clone, Debug)]
pub struct NewNode {
    /// Empty: the monitor names it `node_<id>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub system_identifier: Option<u64>,
    pub candidate_priority: i32,
    pub replication_quorum: bool,
    /// `init` (an empty PGDATA) or `single` (an existing running primary).
    pub initial: NodeState,
}

fn invalid(msg: impl Into<String>) -> MonitorError {
    MonitorError::InvalidArgument(msg.into())
}

impl NewNode {
    /// Checks a request's fields, before anything is looked up.
    pub fn from_wire(req: &pb::RegisterRequest) -> Result<NewNode> {
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
        let port = u16::try_from(req.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("port {} is out of range 1..65535", req.port)))?;
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
        let initial = match NodeState::from_wire(req.initial_state) {
            Ok(s @ (NodeState::Init | NodeState::Single)) => s,
            _ => {
                return Err(invalid(format!(
                    "initial state {} is not one a node can register in: use init (new node) or single (existing running primary)",
                    req.initial_state
                )))
            }
        };
        Ok(NewNode {
            name: req.name.clone(),
            host: req.host.clone(),
            port,
            dbname: req.dbname.clone(),
            system_identifier: (req.system_identifier != 0).then_some(req.system_identifier),
            candidate_priority: req.candidate_priority,
            replication_quorum: req.replication_quorum,
            initial,
        })
    }
}

impl Core {
    /// Adds node `node_id` (allocated by the store) to the group.
    pub fn register(
        &self,
        g: &mut GroupView,
        node_id: i64,
        req: &NewNode,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        let name = if req.name.is_empty() {
            format!("node_{node_id}")
        } else {
            req.name.clone()
        };
        if let Some(other) = g.nodes.iter().find(|n| n.name == name) {
            return Err(MonitorError::AlreadyExists(format!(
                "formation {:?} already has a node named {name:?} (node {} at {}:{}): choose another --name, \
                 or drop the old node first",
                g.formation, other.id, other.host, other.port
            )));
        }
        if let (Some(theirs), Some(group)) = (req.system_identifier, g.system_identifier) {
            if theirs != group {
                return Err(MonitorError::FailedPrecondition(format!(
                    "this node's PostgreSQL has system identifier {theirs}, but group {} of formation {:?} \
                     has {group}: it is a different database cluster; use an empty PGDATA so the node is \
                     cloned from the primary",
                    g.group_id, g.formation
                )));
            }
        }
        let live_nodes = g
            .nodes
            .iter()
            .filter(|n| n.assigned != NodeState::Dropped)
            .count();
        let (reported, assigned) = match (live_nodes, req.initial) {
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
                    g.group_id, g.formation
                )))
            }
            (_, _) => (NodeState::Init, NodeState::WaitStandby),
        };
        let mut out = Vec::new();
        // The first node fixes the formation's dbname; later nodes agree.
        if live_nodes == 0 {
            if g.dbname != req.dbname {
                g.dbname = req.dbname.clone();
                out.push(Action::SaveDbname);
            }
        } else if g.dbname != req.dbname {
            return Err(MonitorError::FailedPrecondition(format!(
                "formation {:?} serves database {:?}, not {:?}: pass --dbname {}",
                g.formation, g.dbname, req.dbname, g.dbname
            )));
        }
        g.nodes.push(NodeView {
            id: node_id,
            name: name.clone(),
            host: req.host.clone(),
            port: req.port,
            system_identifier: req.system_identifier,
            reported,
            assigned,
            pg_running: false,
            tli: 0,
            lsn: Lsn(0),
            status_unknown: false,
            shutdown_lsn: None,
            in_recovery: None,
            heard: true,
            replication_state: String::new(),
            upstream_silent: None,
            candidate_priority: req.candidate_priority,
            replication_quorum: req.replication_quorum,
            quorum_dropped_at: None,
            failed_over_at: None,
            maintenance_requested: false,
            health: Health::Unknown,
            last_probe: None,
            transition_error: String::new(),
            drop_forced: false,
            dropped_from: None,
            last_report: None,
            goal_changed_at: now,
            replication_stall_since: None,
        });
        out.push(Action::AddNode { node_id });
        if g.system_identifier.is_none() && req.system_identifier.is_some() {
            g.system_identifier = req.system_identifier;
            out.push(Action::SaveGroupSystemIdentifier);
        }
        out.push(Action::Note {
            node_id,
            description: format!(
                "registered node {node_id} {name:?} ({}:{}) in formation {:?} as {assigned}",
                req.host, req.port, g.formation
            ),
        });
        self.settle(g, now, &mut out);
        Ok(out)
    }
}
