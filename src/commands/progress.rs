//! Following a change the monitor accepted: every event of the group is
//! printed as it arrives on the Watch stream, and `show state` decides
//! when the change is done. The decision is a pure function of the
//! group's nodes ([`Goal::reached`]), so it is tested without a monitor.

use std::time::Duration;

use anyhow::Context;
use pgpilot_proto::pb;
use pgpilot_proto::NodeState;
use serde_json::json;
use tokio::time::Instant;
use tonic::Streaming;

use super::show::{event_json, node_json, state_name};
use super::status_error;

type Client = pgpilot_proto::client::Client;

/// How often `show state` is read when no event arrives: a Watch stream
/// that fell behind skips events (the monitor drops them rather than
/// holding memory for a slow client), so an event is a wake-up, never
/// the only way to notice that the change is done.
const POLL: Duration = Duration::from_secs(1);

/// What a command waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Goal {
    /// A switchover: another node than the old primary (its id; 0 when
    /// the group had none) reports wait_primary or primary.
    NewPrimary { old_primary: i64 },
    /// A setting: every node of the group reports its assigned state.
    Converged,
}

impl Goal {
    /// Whether the group's nodes, as `show state` lists them, are there.
    pub fn reached(&self, nodes: &[pb::NodeStatus]) -> bool {
        match self {
            Goal::NewPrimary { old_primary } => new_primary(nodes, *old_primary).is_some(),
            Goal::Converged => nodes.iter().all(|n| n.reported_state == n.assigned_state),
        }
    }

    fn describe(&self) -> String {
        match self {
            Goal::NewPrimary { old_primary } => format!(
                "a node other than the old primary (node {old_primary}) to report \
                 wait_primary or primary"
            ),
            Goal::Converged => "every node of the group to report its assigned state".into(),
        }
    }
}

/// The node, other than `old_primary`, that reports a writable state.
pub fn new_primary(nodes: &[pb::NodeStatus], old_primary: i64) -> Option<&pb::NodeStatus> {
    nodes.iter().find(|n| {
        n.node_id != old_primary
            && matches!(
                NodeState::from_wire(n.reported_state),
                Ok(NodeState::WaitPrimary | NodeState::Primary)
            )
    })
}

/// Each node as `name (node N): reported X, assigned Y`, for the message
/// of a timeout.
pub fn where_it_stopped(nodes: &[pb::NodeStatus]) -> String {
    if nodes.is_empty() {
        return "the group has no nodes".into();
    }
    nodes
        .iter()
        .map(|n| {
            format!(
                "{} (node {}): reported {}, assigned {}",
                n.name,
                n.node_id,
                state_name(n.reported_state),
                state_name(n.assigned_state)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Subscribes to the formation's events. Call it before sending the
/// request: the monitor publishes a change's events when it commits, and
/// a subscription made after that would miss them.
pub async fn subscribe(
    client: &mut Client,
    formation: &str,
) -> anyhow::Result<Streaming<pb::Event>> {
    Ok(client
        .watch(pb::WatchRequest {
            formation: formation.to_string(),
            group_id: None,
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// Prints the group's events until `goal` is reached (returns the group's
/// nodes then) or `wait` ran out (an error that says where it stopped).
pub async fn follow(
    client: &mut Client,
    events: Streaming<pb::Event>,
    formation: &str,
    group_id: i32,
    goal: &Goal,
    wait: Duration,
    json: bool,
) -> anyhow::Result<Vec<pb::NodeStatus>> {
    let deadline = Instant::now() + wait;
    let mut events = Some(events);
    loop {
        let nodes = group_nodes(client, formation, group_id).await?;
        if goal.reached(&nodes) {
            return Ok(nodes);
        }
        if Instant::now() >= deadline {
            if json {
                let list: Vec<_> = nodes.iter().map(node_json).collect();
                println!(
                    "{}",
                    json!({"type": "result", "status": "timeout", "nodes": list})
                );
            }
            anyhow::bail!(
                "timed out after {} s waiting for {}; where it stopped: {}; follow it with \
                 `pgpilot show state` and `pgpilot show events`",
                wait.as_secs(),
                goal.describe(),
                where_it_stopped(&nodes)
            );
        }
        let next_poll = (Instant::now() + POLL).min(deadline);
        match events.as_mut() {
            Some(stream) => tokio::select! {
                item = stream.message() => match item {
                    Ok(Some(e)) if e.group_id == group_id => print_event(&e, json),
                    Ok(Some(_)) => {}
                    // The monitor went away or closed the stream: go on
                    // reading `show state` until the deadline.
                    Ok(None) | Err(_) => events = None,
                },
                () = tokio::time::sleep_until(next_poll) => {}
            },
            None => tokio::time::sleep_until(next_poll).await,
        }
    }
}

/// The nodes of one group of the formation, from `show state`.
async fn group_nodes(
    client: &mut Client,
    formation: &str,
    group_id: i32,
) -> anyhow::Result<Vec<pb::NodeStatus>> {
    let state = client
        .show_state(pb::ShowStateRequest {
            formation: formation.to_string(),
        })
        .await
        .map_err(status_error)
        .context("read the state of the formation")?
        .into_inner();
    Ok(state
        .nodes
        .into_iter()
        .filter(|n| n.group_id == group_id)
        .collect())
}

/// One line per event: JSON (`"type": "event"`) or text.
fn print_event(e: &pb::Event, json: bool) {
    if json {
        let mut v = event_json(e);
        v["type"] = "event".into();
        println!("{v}");
    } else {
        // The time of day to the millisecond: the date is today's, and
        // the monitor's nanoseconds are noise on a terminal.
        let time = chrono::DateTime::parse_from_rfc3339(&e.time)
            .map_or_else(|_| e.time.clone(), |t| t.format("%H:%M:%S%.3f").to_string());
        println!(
            "{time}  {} (node {}): reported {}, assigned {}: {}",
            e.node_name,
            e.node_id,
            state_name(e.reported_state),
            state_name(e.assigned_state),
            e.description
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i64, reported: NodeState, assigned: NodeState) -> pb::NodeStatus {
        pb::NodeStatus {
            node_id: id,
            name: format!("n{id}"),
            reported_state: reported as i32,
            assigned_state: assigned as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_switchover_is_done_once_another_node_reports_writable() {
        use NodeState::*;
        let goal = Goal::NewPrimary { old_primary: 1 };
        // The old primary still writable, the candidate on its way.
        let during = [
            node(1, Primary, Draining),
            node(2, Secondary, PreparePromotion),
        ];
        assert!(!goal.reached(&during));
        // Assigned is not enough: the candidate must report it.
        let assigned_only = [
            node(1, Demoted, Demoted),
            node(2, StopReplication, WaitPrimary),
        ];
        assert!(!goal.reached(&assigned_only));
        let done = [
            node(1, Demoted, Catchingup),
            node(2, WaitPrimary, WaitPrimary),
        ];
        assert!(goal.reached(&done));
        assert_eq!(new_primary(&done, 1).map(|n| n.node_id), Some(2));
        // The old primary reporting primary again is not a switchover.
        let back = [node(1, Primary, Primary), node(2, Secondary, Secondary)];
        assert!(!goal.reached(&back));
    }

    #[test]
    fn a_setting_is_done_once_every_node_reports_its_goal() {
        use NodeState::*;
        let during = [
            node(1, Primary, ApplySettings),
            node(2, Secondary, Secondary),
        ];
        assert!(!Goal::Converged.reached(&during));
        let done = [node(1, Primary, Primary), node(2, Secondary, Secondary)];
        assert!(Goal::Converged.reached(&done));
    }

    #[test]
    fn a_timeout_names_every_node_state() {
        use NodeState::*;
        let nodes = [
            node(1, Primary, ApplySettings),
            node(2, Secondary, Secondary),
        ];
        assert_eq!(
            where_it_stopped(&nodes),
            "n1 (node 1): reported primary, assigned apply_settings; \
             n2 (node 2): reported secondary, assigned secondary"
        );
        assert_eq!(where_it_stopped(&[]), "the group has no nodes");
    }
}
