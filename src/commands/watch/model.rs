//! What `pgpilot watch` shows, as plain data: the nodes as the monitor's
//! `show state` last listed them, the latest events, and whether the
//! monitor answers. Every change is a pure function of a monitor reply or
//! a Watch event ([`Update`]), so the view is tested without a monitor or
//! a terminal.

use std::collections::VecDeque;

use pgpilot_proto::{pb, Lsn, NodeState};

/// How many events the model keeps (the view shows those that fit).
pub const EVENTS_KEPT: usize = 50;

/// Whether the monitor answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not asked yet.
    Connecting,
    /// The last request was answered.
    Live,
    /// The last connection or request failed: the shell retries.
    Unreachable(String),
}

/// One thing the I/O shell learned from the monitor.
#[derive(Clone, Debug)]
pub enum Update {
    /// A fresh `show state` and `show events` (oldest event first), read at
    /// `at` (RFC 3339 or any time text the header shows as is).
    Snapshot {
        nodes: Vec<pb::NodeStatus>,
        events: Vec<pb::Event>,
        at: String,
    },
    /// One event from the Watch stream, before the next snapshot.
    Event(pb::Event),
    /// The monitor could not be reached or refused: why.
    Unreachable(String),
}

/// A node as the view shows it: the monitor's row and its lag behind the
/// writer of its group.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub status: pb::NodeStatus,
    /// Bytes of WAL behind the group's writer, by the last reports; `None`
    /// for the writer itself, or when there is no writer or a position is
    /// unknown.
    pub lag: Option<u64>,
}

/// Everything on the screen.
#[derive(Clone, Debug)]
pub struct WatchModel {
    /// The monitor asked, as the operator named it.
    pub monitor: String,
    /// Only this formation; `None`: every formation.
    pub formation: Option<String>,
    pub link: Link,
    /// Sorted by formation, group, node id.
    pub nodes: Vec<NodeView>,
    /// Oldest first, at most [`EVENTS_KEPT`], no event id twice.
    pub events: VecDeque<pb::Event>,
    /// When the last snapshot was read; `None` before the first.
    pub updated: Option<String>,
}

impl WatchModel {
    pub fn new(monitor: String, formation: Option<String>) -> WatchModel {
        WatchModel {
            monitor,
            formation,
            link: Link::Connecting,
            nodes: Vec::new(),
            events: VecDeque::new(),
            updated: None,
        }
    }

    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Snapshot { nodes, events, at } => {
                self.set_nodes(nodes);
                for e in events {
                    self.add_event(e);
                }
                self.link = Link::Live;
                self.updated = Some(at);
            }
            Update::Event(e) => {
                // The event carries the node's states as of the change:
                // show them at once, the next snapshot has the rest.
                if let Some(n) = self
                    .nodes
                    .iter_mut()
                    .find(|n| n.status.node_id == e.node_id)
                {
                    n.status.reported_state = e.reported_state;
                    n.status.assigned_state = e.assigned_state;
                }
                self.add_event(e);
                self.link = Link::Live;
            }
            Update::Unreachable(reason) => self.link = Link::Unreachable(reason),
        }
    }

    fn set_nodes(&mut self, mut nodes: Vec<pb::NodeStatus>) {
        nodes.sort_by(|a, b| {
            (&a.formation, a.group_id, a.node_id).cmp(&(&b.formation, b.group_id, b.node_id))
        });
        let lags: Vec<Option<u64>> = nodes.iter().map(|n| lag(n, &nodes)).collect();
        self.nodes = nodes
            .into_iter()
            .zip(lags)
            .map(|(status, lag)| NodeView { status, lag })
            .collect();
    }

    /// Inserts `e` in event-id order, once, and forgets the oldest beyond
    /// [`EVENTS_KEPT`].
    fn add_event(&mut self, e: pb::Event) {
        match self
            .events
            .binary_search_by_key(&e.event_id, |x| x.event_id)
        {
            Ok(_) => return,
            Err(at) => self.events.insert(at, e),
        }
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }
}

fn writes(n: &pb::NodeStatus) -> bool {
    NodeState::from_wire(n.reported_state).is_ok_and(NodeState::accepts_writes)
}

/// `n`'s distance behind the node of its group that reports a writable
/// state. Position 0 is a position nobody reported.
fn lag(n: &pb::NodeStatus, all: &[pb::NodeStatus]) -> Option<u64> {
    if writes(n) || n.reported_lsn == 0 {
        return None;
    }
    let writer = all
        .iter()
        .find(|w| w.formation == n.formation && w.group_id == n.group_id && writes(w))?;
    (writer.reported_lsn != 0).then(|| Lsn(writer.reported_lsn).distance_from(Lsn(n.reported_lsn)))
}

/// Bytes as `0 B`, `16 kB`, `3.2 MB`... (powers of 1024, as PostgreSQL's
/// `pg_size_pretty` counts).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 10.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn node(id: i64, name: &str, reported: NodeState, lsn: u64) -> pb::NodeStatus {
        pb::NodeStatus {
            node_id: id,
            name: name.into(),
            formation: "default".into(),
            group_id: 0,
            host: "localhost".into(),
            port: 5500 + id as u32,
            reported_state: reported as i32,
            assigned_state: reported as i32,
            health: "good".into(),
            reported_tli: 1,
            reported_lsn: lsn,
            candidate_priority: 50,
            replication_quorum: true,
            pg_running: true,
            last_report: String::new(),
        }
    }

    pub fn event(id: i64, node: &pb::NodeStatus, assigned: NodeState, text: &str) -> pb::Event {
        pb::Event {
            event_id: id,
            time: format!("2026-12-02T10:25:{:02}Z", id % 60),
            formation: node.formation.clone(),
            group_id: node.group_id,
            node_id: node.node_id,
            node_name: node.name.clone(),
            reported_state: node.reported_state,
            assigned_state: assigned as i32,
            description: text.into(),
        }
    }

    fn snapshot(nodes: Vec<pb::NodeStatus>, events: Vec<pb::Event>) -> Update {
        Update::Snapshot {
            nodes,
            events,
            at: "10:25:00".into(),
        }
    }

    #[test]
    fn lag_is_measured_from_the_writer_of_the_group() {
        let mut m = WatchModel::new("http://m".into(), None);
        let mut other = node(3, "c", NodeState::Secondary, 100);
        other.group_id = 1;
        m.apply(snapshot(
            vec![
                node(2, "b", NodeState::Secondary, 0x3000),
                node(1, "a", NodeState::Primary, 0x5000),
                other,
            ],
            vec![],
        ));
        let lags: Vec<_> = m
            .nodes
            .iter()
            .map(|n| (n.status.name.as_str(), n.lag))
            .collect();
        // Sorted by group then id; group 1 has no writer.
        assert_eq!(
            lags,
            [("a", None), ("b", Some(0x2000)), ("c", None)],
            "{lags:?}"
        );
        assert_eq!(m.link, Link::Live);
    }

    #[test]
    fn events_are_kept_once_in_order_and_bounded() {
        let a = node(1, "a", NodeState::Primary, 1);
        let mut m = WatchModel::new("http://m".into(), None);
        m.apply(snapshot(
            vec![a.clone()],
            vec![
                event(2, &a, NodeState::Primary, "two"),
                event(1, &a, NodeState::Primary, "one"),
            ],
        ));
        m.apply(Update::Event(event(2, &a, NodeState::Primary, "two")));
        m.apply(Update::Event(event(3, &a, NodeState::Primary, "three")));
        let ids: Vec<_> = m.events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        for id in 4..200 {
            m.apply(Update::Event(event(id, &a, NodeState::Primary, "x")));
        }
        assert_eq!(m.events.len(), EVENTS_KEPT);
        assert_eq!(m.events.back().unwrap().event_id, 199);
    }

    #[test]
    fn an_event_moves_its_node_at_once_and_unreachable_keeps_the_rows() {
        let a = node(1, "a", NodeState::Primary, 1);
        let b = node(2, "b", NodeState::Secondary, 1);
        let mut m = WatchModel::new("http://m".into(), None);
        m.apply(snapshot(vec![a, b.clone()], vec![]));
        let mut e = event(7, &b, NodeState::PreparePromotion, "failover");
        e.reported_state = NodeState::Secondary as i32;
        m.apply(Update::Event(e));
        assert_eq!(
            m.nodes[1].status.assigned_state,
            NodeState::PreparePromotion as i32
        );
        m.apply(Update::Unreachable("connection refused".into()));
        assert_eq!(m.link, Link::Unreachable("connection refused".into()));
        assert_eq!(m.nodes.len(), 2, "the last rows stay on screen");
    }

    #[test]
    fn bytes_read_like_pg_size_pretty() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(16 * 1024), "16 kB");
        assert_eq!(bytes(3_400_000), "3.2 MB");
    }
}
