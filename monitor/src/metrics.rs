//! The monitor's Prometheus metrics, served as `/metrics` on its HTTP
//! listener (`http_listen` in monitor.toml; Prometheus text format 0.0.4).
//!
//! What each node *is* is computed at scrape time from the store and the
//! live table (the same views the state machine decides on), so it can
//! never drift from them; what *happened* is counted where it happens: in
//! the control shells once a decision is committed ([`Metrics::committed`],
//! [`Metrics::fenced`]), in the gRPC layer (NodeActive latency) and in the
//! prober (probe latency).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pgpilot_node_reported_state` | gauge | formation, group, node_id, node, state | 1 for the state the node reported, 0 for every other |
//! | `pgpilot_node_assigned_state` | gauge | same | 1 for the node's goal, 0 for every other |
//! | `pgpilot_node_healthy` | gauge | formation, group, node_id, node | 1 when the monitor finds the node healthy (PostgreSQL runs, probes pass, its keeper reports) |
//! | `pgpilot_node_replication_lag_bytes` | gauge | same | the writer's last reported LSN minus the node's (standbys whose position is known) |
//! | `pgpilot_group_generation` | gauge | formation, group | the fencing generation |
//! | `pgpilot_failovers_total` | counter | formation, group | promotion decisions other than planned switchovers (automatic, operator's `perform failover`, a dropped primary, an election's winner giving way) |
//! | `pgpilot_switchovers_total` | counter | formation, group | planned switchovers and promotions the monitor started |
//! | `pgpilot_fence_events_total` | counter | formation, group, node_id, node | reports of a writer that fenced itself (demote_timeout it was not assigned) |
//! | `pgpilot_events_total` | counter | kind, cause | events recorded: kind goal, wait, removal, note, conflict; cause register, report, probe, tick, operator, drop, start |
//! | `pgpilot_leadership_conflicts_total` | counter | | leadership conflicts begun: a node accepting writes in a standby's state, or two nodes reporting writable states (`fsm::conflict_of`); each counted once, when found |
//! | `pgpilot_node_active_duration_seconds` | histogram | outcome | NodeActive handling, ok or error |
//! | `pgpilot_probe_duration_seconds` | histogram | outcome | one probe attempt: accepting, rejecting, no_response |

use std::sync::Mutex;
use std::time::Duration;

use pgpilot_proto::state::ALL_STATES;
use pgpilot_proto::NodeState;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::fsm::{self, Action, FsmConfig, GroupView, NodeView, Timestamp};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Which operation committed a decision (the `cause` of its events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Register,
    Report,
    Probe,
    Tick,
    Operator,
    Drop,
    /// The monitor's own start (clock rebase).
    Start,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::Register => "register",
            Cause::Report => "report",
            Cause::Probe => "probe",
            Cause::Tick => "tick",
            Cause::Operator => "operator",
            Cause::Drop => "drop",
            Cause::Start => "start",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    reported: Family<Labels, Gauge>,
    assigned: Family<Labels, Gauge>,
    healthy: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    generation: Family<Labels, Gauge>,
    failovers: Family<Labels, Counter>,
    switchovers: Family<Labels, Counter>,
    fence_events: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    leadership_conflicts: Counter,
    auth_refusals: Family<Labels, Counter>,
    node_active: Histograms,
    probes: Histograms,
    /// Refreshing the per-node gauges and encoding is one step: two
    /// scrapes at once must not see each other's half-refreshed families.
    /// Held only for that synchronous step, never across an await.
    scrape: Mutex<()>,
}

/// NodeActive handling: 0.5 ms to 4 s.
fn node_active_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// One probe attempt: 0.5 ms to 2 s (the probe timeout defaults to 1 s).
fn probe_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 13))
}

fn group_labels(g: &GroupView) -> Labels {
    vec![
        ("formation", g.formation.clone()),
        ("group", g.group_id.to_string()),
    ]
}

fn node_labels(g: &GroupView, n: &NodeView) -> Labels {
    let mut l = group_labels(g);
    l.push(("node_id", n.id.to_string()));
    l.push(("node", n.name.clone()));
    l
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            reported: Family::default(),
            assigned: Family::default(),
            healthy: Family::default(),
            lag: Family::default(),
            generation: Family::default(),
            failovers: Family::default(),
            switchovers: Family::default(),
            fence_events: Family::default(),
            events: Family::default(),
            leadership_conflicts: Counter::default(),
            auth_refusals: Family::default(),
            node_active: Family::new_with_constructor(node_active_histogram),
            probes: Family::new_with_constructor(probe_histogram),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        r.register(
            "pgpilot_node_reported_state",
            "The state each node reported (1) among every state (0)",
            m.reported.clone(),
        );
        r.register(
            "pgpilot_node_assigned_state",
            "The state the monitor assigned each node (1) among every state (0)",
            m.assigned.clone(),
        );
        r.register(
            "pgpilot_node_healthy",
            "Whether the monitor finds the node healthy: PostgreSQL runs, probes pass, its keeper reports",
            m.healthy.clone(),
        );
        r.register_with_unit(
            "pgpilot_node_replication_lag",
            "The writer's last reported WAL position minus the node's",
            Unit::Bytes,
            m.lag.clone(),
        );
        r.register(
            "pgpilot_group_generation",
            "The group's fencing generation, bumped by every promotion decision",
            m.generation.clone(),
        );
        r.register(
            "pgpilot_failovers",
            "Promotion decisions other than planned switchovers",
            m.failovers.clone(),
        );
        r.register(
            "pgpilot_switchovers",
            "Planned switchovers (and promotions) the monitor started",
            m.switchovers.clone(),
        );
        r.register(
            "pgpilot_fence_events",
            "Reports of a writer that fenced itself (stopped PostgreSQL when its lease ran out)",
            m.fence_events.clone(),
        );
        r.register(
            "pgpilot_events",
            "Events recorded, by kind and by the operation that caused them",
            m.events.clone(),
        );
        r.register(
            "pgpilot_leadership_conflicts",
            "Leadership conflicts found: a node accepting writes the monitor did not assign, or two writable nodes",
            m.leadership_conflicts.clone(),
        );
        r.register(
            "pgpilot_auth_refusals",
            "gRPC requests refused for their credential, by reason",
            m.auth_refusals.clone(),
        );
        r.register_with_unit(
            "pgpilot_node_active_duration",
            "Time to handle a keeper's NodeActive report",
            Unit::Seconds,
            m.node_active.clone(),
        );
        r.register_with_unit(
            "pgpilot_probe_duration",
            "Time of one health probe attempt (a connection handshake)",
            Unit::Seconds,
            m.probes.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// One NodeActive took `took`.
    pub fn node_active(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.node_active
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .observe(took.as_secs_f64());
    }

    /// One probe attempt took `took`.
    pub fn probe(&self, outcome: &'static str, took: Duration) {
        self.probes
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .observe(took.as_secs_f64());
    }

    /// A request was refused for its credential.
    pub fn auth_refused(&self, reason: &'static str) {
        self.auth_refusals
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A leadership conflict began (see `fsm::conflict_of`).
    pub fn leadership_conflict(&self) {
        self.leadership_conflicts.inc();
    }

    /// `actions` of an operation caused by `cause` were committed on
    /// group `g` (the view as the decision left it).
    pub fn committed(&self, g: &GroupView, actions: &[Action], cause: Cause) {
        let switchover = actions
            .iter()
            .any(|a| matches!(a, Action::SetSwitchover { candidate: Some(_) }));
        for a in actions {
            let kind = match a {
                Action::BumpGeneration { .. } => {
                    let family = if switchover {
                        &self.switchovers
                    } else {
                        &self.failovers
                    };
                    family.get_or_create(&group_labels(g)).inc();
                    continue;
                }
                Action::AssignGoal { .. } => "goal",
                Action::RemoveNode { .. } => "removal",
                Action::Wait { .. } => "wait",
                Action::Note { .. } => "note",
                Action::Conflict { .. } => {
                    self.leadership_conflict();
                    "conflict"
                }
                _ => continue,
            };
            self.events
                .get_or_create(&vec![
                    ("kind", kind.to_string()),
                    ("cause", cause.label().to_string()),
                ])
                .inc();
        }
    }

    /// Node `n` of `g` reported that it fenced itself.
    pub fn fenced(&self, g: &GroupView, n: &NodeView) {
        self.fence_events.get_or_create(&node_labels(g, n)).inc();
    }

    /// The exposition for a scrape, with the groups as `groups` shows them.
    pub fn encode(&self, groups: &[GroupView], now: Timestamp, cfg: &FsmConfig) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        // Nodes that left are no series any more.
        for f in [&self.reported, &self.assigned, &self.healthy, &self.lag] {
            f.clear();
        }
        self.generation.clear();
        for g in groups {
            let group = group_labels(g);
            self.generation.get_or_create(&group).set(g.generation);
            // Counters exist at 0 from the start: `increase()` over a
            // series that appears only with its first count misses it.
            let _ = self.failovers.get_or_create(&group);
            let _ = self.switchovers.get_or_create(&group);
            let writer = g.nodes.iter().find(|n| n.assigned.accepts_writes());
            for n in &g.nodes {
                let labels = node_labels(g, n);
                let _ = self.fence_events.get_or_create(&labels);
                for s in ALL_STATES {
                    let mut l = labels.clone();
                    l.push(("state", s.name().to_string()));
                    self.reported
                        .get_or_create(&l)
                        .set(i64::from(s == n.reported));
                    self.assigned
                        .get_or_create(&l)
                        .set(i64::from(s == n.assigned));
                }
                self.healthy
                    .get_or_create(&labels)
                    .set(i64::from(fsm::is_healthy(n, now, cfg)));
                if let Some(lag) = lag(writer, n) {
                    self.lag
                        .get_or_create(&labels)
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// A standby's lag behind the writer as the monitor last heard them both;
/// `None` for the writer itself and for positions not known.
fn lag(writer: Option<&NodeView>, n: &NodeView) -> Option<u64> {
    let w = writer.filter(|w| w.id != n.id)?;
    let known = |x: &NodeView| x.heard && !x.status_unknown && x.reported != NodeState::Init;
    (known(w) && known(n)).then(|| w.lsn.distance_from(n.lsn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::builders::{at, group, node};
    use pgpilot_proto::Lsn;
    use NodeState::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn every_series_with_its_labels() {
        let m = Metrics::new();
        let mut a = node(1, Primary);
        a.lsn = Lsn(5000);
        a.heard = true;
        let mut b = node(2, Secondary);
        b.lsn = Lsn(4000);
        b.heard = true;
        let g = group(vec![a, b.clone()]);
        m.committed(
            &g,
            &[
                Action::BumpGeneration { reason: "x".into() },
                Action::AssignGoal {
                    node_id: 2,
                    goal: PreparePromotion,
                    reason: "x".into(),
                },
                Action::AssignGoal {
                    node_id: 1,
                    goal: Draining,
                    reason: "x".into(),
                },
            ],
            Cause::Tick,
        );
        m.committed(
            &g,
            &[
                Action::Note {
                    node_id: 2,
                    description: "x".into(),
                },
                Action::BumpGeneration { reason: "x".into() },
                Action::SetSwitchover { candidate: Some(2) },
            ],
            Cause::Operator,
        );
        m.fenced(&g, &b);
        m.node_active(true, Duration::from_millis(2));
        m.probe("accepting", Duration::from_millis(1));
        let text = m.encode(std::slice::from_ref(&g), at(1.0), &FsmConfig::default());
        let name = &g.nodes[1].name;
        let node2 = format!(
            "formation=\"{}\",group=\"0\",node_id=\"2\",node=\"{name}\"",
            g.formation
        );
        let group0 = format!("formation=\"{}\",group=\"0\"", g.formation);
        for want in [
            format!("pgpilot_node_reported_state{{{node2},state=\"secondary\"}} 1"),
            format!("pgpilot_node_reported_state{{{node2},state=\"primary\"}} 0"),
            format!("pgpilot_node_assigned_state{{{node2},state=\"secondary\"}} 1"),
            format!("pgpilot_node_replication_lag_bytes{{{node2}}} 1000"),
            format!("pgpilot_failovers_total{{{group0}}} 1"),
            format!("pgpilot_switchovers_total{{{group0}}} 1"),
            format!("pgpilot_fence_events_total{{{node2}}} 1"),
            format!("pgpilot_group_generation{{{group0}}} {}", g.generation),
            "pgpilot_events_total{kind=\"goal\",cause=\"tick\"} 2".to_string(),
            "pgpilot_events_total{kind=\"note\",cause=\"operator\"} 1".to_string(),
            "pgpilot_leadership_conflicts_total 0".to_string(),
            "pgpilot_node_active_duration_seconds_count{outcome=\"ok\"} 1".to_string(),
            "pgpilot_probe_duration_seconds_count{outcome=\"accepting\"} 1".to_string(),
            "# TYPE pgpilot_node_healthy gauge".to_string(),
        ] {
            assert!(
                lines(&text).contains(&want.as_str()),
                "no {want:?} in\n{text}"
            );
        }
        let node1 = format!(
            "formation=\"{}\",group=\"0\",node_id=\"1\",node=\"node_1\"",
            g.formation
        );
        assert!(
            lines(&text).contains(&format!("pgpilot_fence_events_total{{{node1}}} 0").as_str()),
            "{text}"
        );
        // The writer has no lag series; a node that left has no series.
        assert!(!text.contains(
            "pgpilot_node_replication_lag_bytes{formation=\"default\",group=\"0\",node_id=\"1\""
        ));
        let text = m.encode(&[], at(1.0), &FsmConfig::default());
        assert!(!text.contains("pgpilot_node_reported_state{"), "{text}");
        assert!(!text.contains("pgpilot_node_healthy{"), "{text}");
        assert!(
            text.contains("pgpilot_failovers_total"),
            "counters stay: {text}"
        );
    }

    #[test]
    fn lag_only_between_known_positions() {
        let mut w = node(1, Primary);
        w.lsn = Lsn(100);
        w.heard = true;
        let mut s = node(2, Secondary);
        s.lsn = Lsn(40);
        s.heard = true;
        assert_eq!(lag(Some(&w), &s), Some(60));
        assert_eq!(lag(Some(&w), &w), None);
        assert_eq!(lag(None, &s), None);
        s.lsn = Lsn(200);
        assert_eq!(lag(Some(&w), &s), Some(0));
        s.status_unknown = true;
        assert_eq!(lag(Some(&w), &s), None);
        s.status_unknown = false;
        s.heard = false;
        assert_eq!(lag(Some(&w), &s), None);
    }
}
