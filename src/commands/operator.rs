//! `perform switchover|promotion` and `set node|formation ...`: send the
//! request, then follow it on the Watch stream until it is done (see
//! `progress.rs`). A refusal is the monitor's message and an error exit.

use std::time::Duration;

use pgpilot_proto::pb;
use serde_json::json;

use super::progress::{self, new_primary, Goal};
use super::show::node_json;
use super::{connect, status_error};
use crate::cli::{Maintenance, Perform, Set, SetFormation, SetNode, Target, WaitArg};

pub async fn perform(cmd: Perform) -> anyhow::Result<()> {
    let (target, formation, wait, what) = match &cmd {
        Perform::Switchover {
            target,
            formation,
            wait,
            ..
        } => (target, &formation.formation, *wait, "switchover"),
        Perform::Promotion {
            target,
            formation,
            wait,
            ..
        } => (target, &formation.formation, *wait, "promotion"),
        Perform::Failover {
            target,
            formation,
            wait,
            ..
        } => (target, &formation.formation, *wait, "failover"),
    };
    let mut client = connect(target).await?;
    let events = subscribe_if_waiting(&mut client, formation, wait).await?;
    let reply = match &cmd {
        Perform::Switchover { candidate, .. } => {
            client
                .perform_switchover(pb::PerformSwitchoverRequest {
                    formation: formation.clone(),
                    candidate: candidate.clone().unwrap_or_default(),
                })
                .await
        }
        Perform::Promotion { name, .. } => {
            client
                .perform_promotion(pb::PerformPromotionRequest {
                    formation: formation.clone(),
                    name: name.clone(),
                })
                .await
        }
        Perform::Failover {
            allow_data_loss, ..
        } => {
            client
                .perform_failover(pb::PerformFailoverRequest {
                    formation: formation.clone(),
                    allow_data_loss: *allow_data_loss,
                })
                .await
        }
    }
    .map_err(status_error)?
    .into_inner();

    let old = json!({"node_id": reply.old_primary_id, "name": reply.old_primary_name});
    let Some(events) = events else {
        return accepted(
            target,
            what,
            formation,
            json!({"old_primary": old}),
            &format!("{what} accepted by the monitor"),
        );
    };
    let goal = Goal::NewPrimary {
        old_primary: reply.old_primary_id,
    };
    let nodes = progress::follow(
        &mut client,
        events,
        formation,
        reply.group_id,
        &goal,
        Duration::from_secs(wait.seconds),
        target.json,
    )
    .await?;
    let new = new_primary(&nodes, reply.old_primary_id);
    if target.json {
        let list: Vec<_> = nodes.iter().map(node_json).collect();
        println!(
            "{}",
            json!({
                "type": "result", "status": "done", "operation": what,
                "formation": formation, "old_primary": old,
                "new_primary": new.map(node_json), "nodes": list,
            })
        );
    } else if let Some(n) = new {
        println!(
            "{what} done: {} (node {}) is writable now, {} (node {}) was the primary",
            n.name, n.node_id, reply.old_primary_name, reply.old_primary_id
        );
    }
    Ok(())
}

pub async fn set(cmd: Set) -> anyhow::Result<()> {
    let (target, formation, wait) = match &cmd {
        Set::Node(
            SetNode::CandidatePriority {
                target,
                formation,
                wait,
                ..
            }
            | SetNode::ReplicationQuorum {
                target,
                formation,
                wait,
                ..
            },
        )
        | Set::Formation(SetFormation::NumberSyncStandbys {
            target,
            formation,
            wait,
            ..
        }) => (target, &formation.formation, *wait),
    };
    let mut client = connect(target).await?;
    let events = subscribe_if_waiting(&mut client, formation, wait).await?;
    let (change, reply) = match &cmd {
        Set::Node(SetNode::CandidatePriority { name, value, .. }) => (
            json!({"setting": "candidate_priority", "name": name, "value": value}),
            client
                .set_candidate_priority(pb::SetCandidatePriorityRequest {
                    formation: formation.clone(),
                    name: name.clone(),
                    candidate_priority: *value,
                })
                .await,
        ),
        Set::Node(SetNode::ReplicationQuorum { name, value, .. }) => (
            json!({"setting": "replication_quorum", "name": name, "value": value}),
            client
                .set_replication_quorum(pb::SetReplicationQuorumRequest {
                    formation: formation.clone(),
                    name: name.clone(),
                    replication_quorum: *value,
                })
                .await,
        ),
        Set::Formation(SetFormation::NumberSyncStandbys { value, .. }) => (
            json!({"setting": "number_sync_standbys", "value": value}),
            client
                .set_number_sync_standbys(pb::SetNumberSyncStandbysRequest {
                    formation: formation.clone(),
                    number_sync_standbys: *value,
                })
                .await,
        ),
    };
    let reply = reply.map_err(status_error)?.into_inner();
    let what = match change["name"].as_str() {
        Some(node) => format!(
            "{} of {node} set to {}",
            change["setting"].as_str().unwrap_or(""),
            change["value"]
        ),
        None => format!(
            "{} of formation {formation} set to {}",
            change["setting"].as_str().unwrap_or(""),
            change["value"]
        ),
    };
    converge(
        &mut client,
        events,
        target,
        formation,
        reply.group_id,
        wait,
        ("set", change, &what),
    )
    .await
}

/// Follows a settings change until the group reached its goals, then
/// prints the result (`operation`, the change as JSON, and its text).
async fn converge(
    client: &mut pgpilot_proto::client::Client,
    events: Option<tonic::Streaming<pb::Event>>,
    target: &Target,
    formation: &str,
    group_id: i32,
    wait: WaitArg,
    (operation, change, what): (&str, serde_json::Value, &str),
) -> anyhow::Result<()> {
    let Some(events) = events else {
        return accepted(target, operation, formation, change, what);
    };
    let nodes = progress::follow(
        client,
        events,
        formation,
        group_id,
        &Goal::Converged,
        Duration::from_secs(wait.seconds),
        target.json,
    )
    .await?;
    if target.json {
        let mut out = change;
        out["type"] = "result".into();
        out["status"] = "done".into();
        out["operation"] = operation.into();
        out["formation"] = formation.into();
        out["nodes"] = nodes.iter().map(node_json).collect();
        println!("{out}");
    } else {
        println!("{what}: every node of the group reached its assigned state");
    }
    Ok(())
}

/// `enable maintenance` (`on`) or `disable maintenance`.
pub async fn maintenance(cmd: Maintenance, on: bool) -> anyhow::Result<()> {
    let Maintenance::Maintenance {
        target,
        formation,
        wait,
        name,
        allow_failover,
    } = cmd;
    if allow_failover && !on {
        anyhow::bail!(
            "--allow-failover is for `enable maintenance` (of a primary); `disable maintenance` \
             takes none"
        );
    }
    let formation = &formation.formation;
    let mut client = connect(&target).await?;
    let events = subscribe_if_waiting(&mut client, formation, wait).await?;
    let reply = client
        .set_maintenance(pb::SetMaintenanceRequest {
            formation: formation.clone(),
            name: name.clone(),
            enable: on,
            allow_failover,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let what = format!(
        "maintenance of {name} {}",
        if on { "enabled" } else { "disabled" }
    );
    let change = json!({"setting": "maintenance", "name": name, "value": on});
    converge(
        &mut client,
        events,
        &target,
        formation,
        reply.group_id,
        wait,
        ("maintenance", change, &what),
    )
    .await
}

/// The event stream, subscribed before the request is sent; none with
/// `--wait 0`, which does not follow the change.
async fn subscribe_if_waiting(
    client: &mut pgpilot_proto::client::Client,
    formation: &str,
    wait: WaitArg,
) -> anyhow::Result<Option<tonic::Streaming<pb::Event>>> {
    if wait.seconds == 0 {
        return Ok(None);
    }
    Ok(Some(progress::subscribe(client, formation).await?))
}

/// `--wait 0`: the monitor accepted; nothing is followed.
fn accepted(
    target: &Target,
    operation: &str,
    formation: &str,
    mut extra: serde_json::Value,
    text: &str,
) -> anyhow::Result<()> {
    if target.json {
        extra["type"] = "result".into();
        extra["status"] = "accepted".into();
        extra["operation"] = operation.into();
        extra["formation"] = formation.into();
        println!("{extra}");
    } else {
        println!("{text} (not waiting: --wait 0)");
    }
    Ok(())
}
