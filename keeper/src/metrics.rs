//! The keeper's Prometheus metrics, served as `/metrics` on its HTTP
//! listener (Prometheus text format 0.0.4).
//!
//! What the node is (its states, PostgreSQL up, replay lag) is taken from
//! the endpoints' snapshot ([`View`]) at scrape time, so it is never older
//! than the agent's last look; what happened (fencing, reports to the
//! monitor) is counted where it happens.
//!
//! | name | type | what |
//! |---|---|---|
//! | `pgpilot_node_reported_state{state}` | gauge | 1 for the state the node reached, 0 for every other |
//! | `pgpilot_node_assigned_state{state}` | gauge | 1 for the monitor's goal, 0 for every other |
//! | `pgpilot_postgres_up` | gauge | 1 while PostgreSQL runs |
//! | `pgpilot_replication_lag_bytes` | gauge | a standby's replay lag (absent when unknown) |
//! | `pgpilot_fence_events_total` | counter | times this keeper stopped PostgreSQL because its lease ran out |
//! | `pgpilot_node_active_duration_seconds{outcome}` | histogram | NodeActive round trips: ok, refused, timeout |

use std::sync::Mutex;
use std::time::Duration;

use pgpilot_proto::state::ALL_STATES;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::endpoints::View;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(&'static str, &'static str)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// How a report to the monitor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The monitor answered with an error (or the connection failed).
    Refused,
    /// No answer within the report timeout.
    Timeout,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    reported: Family<Labels, Gauge>,
    assigned: Family<Labels, Gauge>,
    pg_up: Gauge,
    /// No labels; empty while the lag is unknown, so that the series is
    /// absent rather than a made-up 0.
    lag: Family<Labels, Gauge>,
    fence_events: Counter,
    node_active: Histograms,
    /// Refreshing the gauges from the snapshot and encoding is one step:
    /// two scrapes at once must not see each other's half-refreshed
    /// families. Held only for that synchronous step, never across an
    /// await.
    scrape: Mutex<()>,
}

/// NodeActive round trips: 1 ms to 2 s (the report timeout is at most
/// 800 ms).
fn node_active_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reported = Family::<Labels, Gauge>::default();
        let assigned = Family::<Labels, Gauge>::default();
        let pg_up = Gauge::default();
        let lag = Family::<Labels, Gauge>::default();
        let fence_events = Counter::default();
        let node_active: Histograms = Family::new_with_constructor(node_active_histogram);
        registry.register(
            "pgpilot_node_reported_state",
            "The state this node reached (1) among every state (0)",
            reported.clone(),
        );
        registry.register(
            "pgpilot_node_assigned_state",
            "The state the monitor assigned this node (1) among every state (0)",
            assigned.clone(),
        );
        registry.register(
            "pgpilot_postgres_up",
            "Whether this node's PostgreSQL runs (1) or not (0)",
            pg_up.clone(),
        );
        registry.register_with_unit(
            "pgpilot_replication_lag",
            "WAL the primary has that this standby has not replayed",
            Unit::Bytes,
            lag.clone(),
        );
        registry.register(
            "pgpilot_fence_events",
            "Times this keeper stopped PostgreSQL because its lease ran out",
            fence_events.clone(),
        );
        registry.register_with_unit(
            "pgpilot_node_active_duration",
            "Round trips of this keeper's reports (NodeActive) to the monitor",
            Unit::Seconds,
            node_active.clone(),
        );
        Metrics {
            registry,
            reported,
            assigned,
            pg_up,
            lag,
            fence_events,
            node_active,
            scrape: Mutex::new(()),
        }
    }

    /// The keeper stopped PostgreSQL for fencing.
    pub fn fenced(&self) {
        self.fence_events.inc();
    }

    /// One report to the monitor took `took` and ended with `outcome`.
    pub fn node_active(&self, outcome: Outcome, took: Duration) {
        self.node_active
            .get_or_create(&vec![("outcome", outcome.label())])
            .observe(took.as_secs_f64());
    }

    /// The exposition for a scrape, with the node as `view` shows it.
    pub fn encode(&self, view: &View) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for s in ALL_STATES {
            let labels = vec![("state", s.name())];
            self.reported
                .get_or_create(&labels)
                .set(i64::from(s == view.current));
            self.assigned
                .get_or_create(&labels)
                .set(i64::from(s == view.assigned));
        }
        self.pg_up.set(i64::from(view.pg_running));
        self.lag.clear();
        if let Some(lag) = view.lag_bytes {
            self.lag
                .get_or_create(&Vec::new())
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_proto::NodeState;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.fenced();
        m.node_active(Outcome::Ok, Duration::from_millis(3));
        let view = View {
            current: NodeState::Secondary,
            assigned: NodeState::Secondary,
            pg_running: true,
            lag_bytes: Some(4096),
            ..Default::default()
        };
        let text = m.encode(&view);
        for line in [
            "# TYPE pgpilot_node_reported_state gauge",
            "pgpilot_node_reported_state{state=\"secondary\"} 1",
            "pgpilot_node_reported_state{state=\"primary\"} 0",
            "pgpilot_node_assigned_state{state=\"secondary\"} 1",
            "pgpilot_postgres_up 1",
            "# TYPE pgpilot_replication_lag_bytes gauge",
            "pgpilot_replication_lag_bytes 4096",
            "# TYPE pgpilot_fence_events_total counter",
            "pgpilot_fence_events_total 1",
            "# TYPE pgpilot_node_active_duration_seconds histogram",
            "pgpilot_node_active_duration_seconds_count{outcome=\"ok\"} 1",
            "pgpilot_node_active_duration_seconds_bucket{outcome=\"ok\",le=\"0.004\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Unknown lag: no series at all.
        let text = m.encode(&View::default());
        assert!(!text.contains("pgpilot_replication_lag_bytes "), "{text}");
        assert!(text.contains("pgpilot_postgres_up 0"), "{text}");
    }
}
