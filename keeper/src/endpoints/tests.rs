//! Every rule of the endpoints, on hand-made snapshots (the snapshot of
//! a real engine is in `tests_view.rs`).

use std::time::Duration;

use pgpilot_proto::NodeState;
use NodeState::*;

use super::*;

pub(super) fn s(secs: f64) -> Mono {
    Duration::from_secs_f64(secs)
}

/// A writable node whose lease runs until 13 s.
fn writer(state: NodeState) -> View {
    View {
        node_id: 1,
        current: state,
        assigned: state,
        fence_deadline: (state != Single).then(|| s(13.0)),
        pg_running: true,
        pg: Some(PgView {
            in_recovery: false,
            timeline: 1,
            streaming: false,
        }),
        lag_bytes: None,
        synchronous: false,
    }
}

/// A standby in `state`, streaming, 1000 bytes behind, not synchronous.
fn standby(state: NodeState) -> View {
    View {
        node_id: 2,
        current: state,
        assigned: state,
        fence_deadline: None,
        pg_running: true,
        pg: Some(PgView {
            in_recovery: true,
            timeline: 1,
            streaming: true,
        }),
        lag_bytes: Some(1000),
        synchronous: false,
    }
}

pub(super) fn code(v: &View, now: f64, e: Endpoint, lag: Option<u64>) -> u16 {
    status(v, s(now), e, &Query { max_lag: lag }).code
}

/// (what, view, now, (primary, replica, read-only, sync, health)) without
/// a lag limit.
#[test]
fn every_endpoint_for_every_kind_of_node() {
    let mut cases: Vec<(&str, View, f64, [u16; 5])> = vec![
        (
            "primary, lease valid",
            writer(Primary),
            12.9,
            [200, 503, 200, 503, 200],
        ),
        (
            "primary, lease ends now",
            writer(Primary),
            13.0,
            [503, 503, 503, 503, 200],
        ),
        (
            "primary, lease over",
            writer(Primary),
            20.0,
            [503, 503, 503, 503, 200],
        ),
        (
            "wait_primary",
            writer(WaitPrimary),
            12.0,
            [200, 503, 200, 503, 200],
        ),
        (
            "apply_settings",
            writer(ApplySettings),
            12.0,
            [200, 503, 200, 503, 200],
        ),
        (
            "single never fences",
            writer(Single),
            1e6,
            [200, 503, 200, 503, 200],
        ),
        (
            "secondary",
            standby(Secondary),
            0.0,
            [503, 200, 200, 503, 200],
        ),
        (
            "catchingup",
            standby(Catchingup),
            0.0,
            [503, 200, 200, 503, 200],
        ),
    ];
    let mut v = writer(Primary);
    v.assigned = Draining;
    cases.push(("primary told to drain", v, 12.0, [503, 503, 503, 503, 200]));
    let mut v = writer(Primary);
    v.current = DemoteTimeout;
    v.assigned = Primary;
    v.fence_deadline = None;
    v.pg_running = false;
    v.pg = None;
    cases.push(("fenced primary", v, 12.0, [503, 503, 503, 503, 503]));
    let mut v = writer(Primary);
    v.pg_running = false;
    v.pg = None;
    cases.push((
        "primary, PostgreSQL stopped",
        v,
        12.0,
        [503, 503, 503, 503, 503],
    ));
    let mut v = writer(Primary);
    v.pg = None;
    cases.push((
        "primary, status unreadable",
        v,
        12.0,
        [200, 503, 200, 503, 200],
    ));
    let mut v = writer(Primary);
    v.pg = None;
    cases.push((
        "primary, status unreadable, lease over",
        v,
        13.5,
        [503, 503, 503, 503, 200],
    ));
    let mut v = writer(Primary);
    v.pg = Some(PgView {
        in_recovery: true,
        ..Default::default()
    });
    cases.push((
        "writable state in recovery",
        v,
        12.0,
        [503, 503, 503, 503, 200],
    ));
    // A promoted node that has not reached its writable goal yet.
    let mut v = writer(StopReplication);
    v.assigned = WaitPrimary;
    v.fence_deadline = Some(s(13.0));
    cases.push((
        "promoting, not writable yet",
        v,
        12.0,
        [503, 503, 503, 503, 200],
    ));
    let mut v = standby(Secondary);
    v.synchronous = true;
    cases.push(("synchronous secondary", v, 0.0, [503, 200, 200, 200, 200]));
    let mut v = standby(Secondary);
    v.synchronous = true;
    v.pg = Some(PgView {
        in_recovery: true,
        timeline: 1,
        streaming: false,
    });
    cases.push(("standby not streaming", v, 0.0, [503, 503, 503, 503, 200]));
    let mut v = standby(Secondary);
    v.pg = None;
    cases.push((
        "standby, status unreadable",
        v,
        0.0,
        [503, 503, 503, 503, 200],
    ));
    let mut v = standby(Secondary);
    v.pg_running = false;
    v.pg = None;
    cases.push((
        "standby, PostgreSQL stopped",
        v,
        0.0,
        [503, 503, 503, 503, 503],
    ));
    for state in [WaitMaintenance, PrepareMaintenance, Maintenance] {
        let mut v = standby(Secondary);
        v.synchronous = true;
        v.assigned = state;
        cases.push((
            "going into maintenance",
            v.clone(),
            0.0,
            [503, 503, 503, 503, 200],
        ));
        v.current = state;
        cases.push(("in maintenance", v, 0.0, [503, 503, 503, 503, 200]));
    }
    let mut v = standby(Secondary);
    v.assigned = Dropped;
    cases.push(("standby being dropped", v, 0.0, [503, 503, 503, 503, 200]));
    for (what, view, now, want) in cases {
        let got = Endpoint::ALL.map(|e| code(&view, now, e, None));
        assert_eq!(got, want, "{what}: {view:?}");
        for (e, c) in Endpoint::ALL.iter().zip(got) {
            let a = status(&view, s(now), *e, &Query::default());
            assert_eq!(a.body.reason.is_some(), c != 200, "{what} {e:?}: {a:?}");
        }
    }
}

#[test]
fn a_lag_limit_applies_to_standbys_only() {
    let mut sync = standby(Secondary);
    sync.synchronous = true;
    // lag 1000 bytes: (limit, replica, read-only, sync)
    for (limit, want) in [(2000, 200), (1000, 200), (999, 503), (0, 503)] {
        for e in [Endpoint::Replica, Endpoint::ReadOnly, Endpoint::Sync] {
            assert_eq!(code(&sync, 0.0, e, Some(limit)), want, "{e:?} lag={limit}");
        }
    }
    let a = status(
        &sync,
        s(0.0),
        Endpoint::Replica,
        &Query { max_lag: Some(10) },
    );
    assert_eq!(
        a.body.reason.as_deref(),
        Some("replay lag of 1000 bytes is over the 10 bytes asked for")
    );
    // Unknown lag with a limit: not known to be within it.
    sync.lag_bytes = None;
    assert_eq!(code(&sync, 0.0, Endpoint::Replica, Some(1 << 30)), 503);
    assert_eq!(code(&sync, 0.0, Endpoint::Replica, None), 200);
    // A primary is read-only-able whatever the limit says.
    assert_eq!(
        code(&writer(Primary), 12.0, Endpoint::ReadOnly, Some(0)),
        200
    );
    assert_eq!(
        code(&writer(Primary), 12.0, Endpoint::Primary, Some(0)),
        200
    );
}

#[test]
fn the_body_says_what_the_node_is() {
    let mut v = standby(Secondary);
    v.synchronous = true;
    let a = status(&v, s(0.0), Endpoint::Primary, &Query::default());
    assert_eq!(a.code, 503);
    let json = serde_json::to_value(&a.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "node_id": 2,
            "state": "secondary",
            "assigned_state": "secondary",
            "role": "replica",
            "pg_running": true,
            "timeline": 1,
            "lag_bytes": 1000,
            "synchronous": true,
            "reason": "state secondary takes no writes",
        })
    );
    let ok = status(
        &writer(Primary),
        s(1.0),
        Endpoint::Primary,
        &Query::default(),
    );
    let json = serde_json::to_value(&ok.body).unwrap();
    assert_eq!(json["role"], "primary");
    assert!(json.get("reason").is_none(), "{json}");
    assert_eq!(json["lag_bytes"], serde_json::Value::Null);
    let mut stopped = writer(Primary);
    stopped.pg_running = false;
    stopped.pg = None;
    let a = status(&stopped, s(1.0), Endpoint::Health, &Query::default());
    assert_eq!(a.body.role, "stopped");
    assert_eq!(a.body.timeline, None);
    let mut unknown = writer(Primary);
    unknown.pg = None;
    assert_eq!(
        status(&unknown, s(1.0), Endpoint::Health, &Query::default())
            .body
            .role,
        "unknown"
    );
    let a = status(
        &writer(Primary),
        s(13.0),
        Endpoint::Primary,
        &Query::default(),
    );
    assert!(a.body.reason.unwrap().contains("lease ran out"));
}

#[test]
fn lag_sizes_and_queries() {
    for (text, bytes) in [
        ("0", 0),
        ("1048576", 1 << 20),
        ("16MB", 16 << 20),
        ("16mb", 16 << 20),
        ("16MiB", 16 << 20),
        ("16M", 16 << 20),
        ("1kB", 1024),
        ("2GB", 2 << 30),
        ("1TB", 1 << 40),
        ("10B", 10),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
    }
    for text in [
        "",
        "MB",
        "-1",
        "1.5MB",
        "16 XB",
        "16PB",
        "99999999999999999999",
        "20000000TB",
    ] {
        let e = parse_size(text).unwrap_err();
        assert!(e.contains("is not a size"), "{text:?}: {e}");
        assert!(e.contains("?lag=16MB"), "{e}");
    }
    assert_eq!(parse_query(None), Ok(Query::default()));
    assert_eq!(parse_query(Some("")), Ok(Query::default()));
    assert_eq!(
        parse_query(Some("lag=16MB")),
        Ok(Query {
            max_lag: Some(16 << 20)
        })
    );
    assert_eq!(
        parse_query(Some("haproxy=1&lag=100")),
        Ok(Query { max_lag: Some(100) })
    );
    assert!(parse_query(Some("lag=fast")).is_err());
    assert!(parse_query(Some("lag")).is_err());
}
