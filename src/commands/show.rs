//! `show uri|state|events|settings`; `show standby-names` is in
//! `settings.rs`, `show systemd` in `systemd.rs`.

use pgpilot_proto::{pb, Lsn, NodeState};
use serde_json::json;

use super::{connect, status_error};
use crate::cli::Show;
use crate::output::table;

pub(super) fn state_name(v: i32) -> String {
    NodeState::from_wire(v).map_or_else(|_| format!("unknown({v})"), |s| s.name().to_string())
}

pub async fn show(cmd: Show) -> anyhow::Result<()> {
    match cmd {
        Show::JoinToken { pgdata } => {
            let abs = std::path::absolute(&pgdata)?;
            let path = pgpilot_monitor::auth::join_token_path(&abs);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "read {}: {e}; --pgdata must be the monitor's data directory, on the monitor's machine",
                    path.display()
                )
            })?;
            pgpilot_proto::credential::JoinToken::parse(&text).map_err(|e| {
                anyhow::anyhow!("{} holds no valid join token: {e}", path.display())
            })?;
            println!("{}", text.trim());
        }
        Show::Uri { target, formation } => {
            let mut client = connect(&target).await?;
            let reply = client
                .show_uri(pb::ShowUriRequest {
                    formation: formation.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if target.json {
                let list: Vec<_> = reply
                    .entries
                    .iter()
                    .map(|e| json!({"type": e.r#type, "name": e.name, "uri": e.uri}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = reply
                    .entries
                    .into_iter()
                    .map(|e| vec![e.r#type, e.name, e.uri])
                    .collect();
                print!("{}", table(&["Type", "Name", "Connection String"], &rows));
            }
        }
        Show::State { target, formation } => {
            let mut client = connect(&target).await?;
            let reply = client
                .show_state(pb::ShowStateRequest {
                    formation: formation.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if target.json {
                let list: Vec<_> = reply.nodes.iter().map(node_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = reply.nodes.iter().map(node_row).collect();
                print!("{}", table(&NODE_HEADER, &rows));
            }
        }
        Show::Events {
            target,
            formation,
            count,
        } => {
            let mut client = connect(&target).await?;
            let reply = client
                .show_events(pb::ShowEventsRequest {
                    formation: formation.unwrap_or_default(),
                    count,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if target.json {
                let list: Vec<_> = reply.events.iter().map(event_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = reply
                    .events
                    .into_iter()
                    .map(|e| {
                        vec![
                            e.time,
                            format!("{}/{}", e.group_id, e.node_id),
                            state_name(e.reported_state),
                            state_name(e.assigned_state),
                            e.description,
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "Event Time",
                            "Node",
                            "Current State",
                            "Assigned State",
                            "Comment"
                        ],
                        &rows
                    )
                );
            }
        }
        Show::Settings { target, formation } => {
            let mut client = connect(&target).await?;
            let reply = client
                .show_settings(pb::ShowSettingsRequest {
                    formation: formation.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if target.json {
                let list: Vec<_> = reply
                    .settings
                    .iter()
                    .map(|s| json!({"context": s.context, "name": s.name, "setting": s.setting, "value": s.value}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = reply
                    .settings
                    .into_iter()
                    .map(|s| vec![s.context, s.name, s.setting, s.value])
                    .collect();
                print!("{}", table(&["Context", "Name", "Setting", "Value"], &rows));
            }
        }
        Show::Systemd { pgdata, user } => super::systemd::show(&pgdata, user.as_deref())?,
        Show::StandbyNames { target, formation } => {
            super::settings::standby_names(&target, &formation.formation).await?;
        }
    }
    Ok(())
}

fn connection(n: &pb::NodeStatus) -> String {
    let conn = NodeState::from_wire(n.reported_state)
        .map_or("none".to_string(), |s| s.connection().to_string());
    match n.health.as_str() {
        "bad" => format!("{conn} !"),
        "unknown" => format!("{conn} ?"),
        _ => conn,
    }
}

/// The columns of [`node_row`], as `show state` and `watch` head them.
pub(super) const NODE_HEADER: [&str; 7] = [
    "Name",
    "Node",
    "Host:Port",
    "TLI: LSN",
    "Connection",
    "Reported State",
    "Assigned State",
];

pub(super) fn node_row(n: &pb::NodeStatus) -> Vec<String> {
    vec![
        n.name.clone(),
        n.node_id.to_string(),
        format!("{}:{}", n.host, n.port),
        format!("{:>3}: {}", n.reported_tli, Lsn(n.reported_lsn)),
        connection(n),
        state_name(n.reported_state),
        state_name(n.assigned_state),
    ]
}

pub(super) fn node_json(n: &pb::NodeStatus) -> serde_json::Value {
    json!({
        "node_id": n.node_id,
        "name": n.name,
        "formation": n.formation,
        "group_id": n.group_id,
        "host": n.host,
        "port": n.port,
        "reported_state": state_name(n.reported_state),
        "assigned_state": state_name(n.assigned_state),
        "health": n.health,
        "connection": connection(n),
        "pg_running": n.pg_running,
        "reported_tli": n.reported_tli,
        "reported_lsn": Lsn(n.reported_lsn).to_string(),
        "candidate_priority": n.candidate_priority,
        "replication_quorum": n.replication_quorum,
        "last_report": n.last_report,
    })
}

pub(super) fn event_json(e: &pb::Event) -> serde_json::Value {
    json!({
        "event_id": e.event_id,
        "time": e.time,
        "formation": e.formation,
        "group_id": e.group_id,
        "node_id": e.node_id,
        "node_name": e.node_name,
        "reported_state": state_name(e.reported_state),
        "assigned_state": state_name(e.assigned_state),
        "description": e.description,
    })
}
