//! The endpoints' snapshot of a real engine, driven through its public
//! calls the way the agent drives it: the fencing deadline, a standby's
//! lag and whether it is synchronous.

use std::time::Duration;

use pgpilot_proto::{pb, Lsn, NodeState};
use NodeState::*;

use super::tests::{code, s};
use super::*;
use crate::engine::{Engine, Observation, PgStatus};
use crate::statefile::KeeperState;

fn engine(current: NodeState) -> Engine {
    Engine::new(
        KeeperState {
            node_id: 1,
            group_id: 0,
            name: "node_1".into(),
            current,
            assigned: current,
            generation_seen: 5,
            last_rejoin: None,
            following: None,
        },
        Duration::from_secs(1),
    )
}

fn running(status: PgStatus) -> Observation {
    Observation {
        has_pgdata: true,
        running: true,
        status: Some(status),
        ..Default::default()
    }
}

/// A reply for node 1 naming node 2 as the writer (reported `writer`, at
/// LSN `writer_lsn`) and node 3, with the group's names `ssn`.
fn reply(
    state: NodeState,
    writer: NodeState,
    writer_lsn: u64,
    ssn: &str,
) -> pb::NodeActiveResponse {
    let node = |id: i64, primary: bool| pb::NodeInfo {
        node_id: id,
        host: "10.0.0.2".into(),
        port: 5432,
        is_primary: primary,
        reported_state: if primary {
            writer as i32
        } else {
            Secondary as i32
        },
        lsn: if primary { writer_lsn } else { 0 },
        ..Default::default()
    };
    pb::NodeActiveResponse {
        assigned_state: state as i32,
        generation: 5,
        lease_ms: 3000,
        clock_margin_ms: 1000,
        other_nodes: vec![node(2, true), node(3, false)],
        group_synchronous_standby_names: ssn.into(),
        ..Default::default()
    }
}

fn standby_status(replayed: Option<u64>, upstream_end: Option<u64>) -> PgStatus {
    PgStatus {
        in_recovery: true,
        timeline: 3,
        lsn: Lsn(900),
        wal_receiver: Some((true, Some(10))),
        replay_lsn: replayed.map(Lsn),
        upstream_wal_end: upstream_end.map(Lsn),
        ..Default::default()
    }
}

#[test]
fn a_primary_says_503_from_the_moment_it_would_fence() {
    let mut e = engine(Primary);
    e.observe(
        s(10.0),
        running(PgStatus {
            timeline: 1,
            lsn: Lsn(100),
            ..Default::default()
        }),
    );
    e.on_reply(s(10.0), s(10.1), reply(Primary, Secondary, 0, ""));
    let v = View::of(&e);
    assert_eq!(v.fence_deadline, Some(s(13.0)));
    for (now, want) in [(10.5, 200), (12.999, 200), (13.0, 503), (14.0, 503)] {
        assert_eq!(code(&v, now, Endpoint::Primary, None), want, "at {now}");
        // Exactly when the engine itself says it must fence.
        assert_eq!(want == 503, e.must_fence(s(now)), "at {now}");
    }
    // Fenced: demote_timeout, PostgreSQL stopped.
    e.fenced();
    e.observe(s(13.1), Observation::default());
    let v = View::of(&e);
    assert_eq!(v.current, DemoteTimeout);
    assert_eq!(
        Endpoint::ALL.map(|ep| code(&v, 13.1, ep, None)),
        [503; 5],
        "{v:?}"
    );
}

#[test]
fn a_standby_learns_its_lag_and_whether_it_is_synchronous() {
    let ssn = "ANY 1 (pgpilot_node_1, pgpilot_node_3)";
    // (what, writer reported, writer lsn, ssn, replayed, upstream end, lag, sync)
    type Case = (
        &'static str,
        NodeState,
        u64,
        &'static str,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        bool,
    );
    let cases: &[Case] = &[
        (
            "receiver ahead of the report",
            Primary,
            500,
            ssn,
            Some(100),
            Some(700),
            Some(600),
            true,
        ),
        (
            "report ahead of the receiver",
            Primary,
            500,
            ssn,
            Some(100),
            Some(300),
            Some(400),
            true,
        ),
        (
            "replayed past both",
            Primary,
            500,
            ssn,
            Some(800),
            Some(700),
            Some(0),
            true,
        ),
        (
            "no report of the writer's position",
            Primary,
            0,
            ssn,
            Some(100),
            Some(300),
            Some(200),
            true,
        ),
        (
            "nothing known of the writer",
            Primary,
            0,
            ssn,
            Some(100),
            None,
            None,
            true,
        ),
        (
            "nothing replayed yet",
            Primary,
            500,
            ssn,
            None,
            Some(300),
            None,
            true,
        ),
        (
            "apply_settings keeps it on",
            ApplySettings,
            500,
            ssn,
            Some(500),
            None,
            Some(0),
            true,
        ),
        (
            "writer not confirmed sync on",
            WaitPrimary,
            500,
            ssn,
            Some(500),
            None,
            Some(0),
            false,
        ),
        (
            "not named",
            Primary,
            500,
            "ANY 1 (pgpilot_node_3)",
            Some(500),
            None,
            Some(0),
            false,
        ),
        (
            "a name that only starts the same",
            Primary,
            500,
            "ANY 1 (pgpilot_node_10)",
            Some(500),
            None,
            Some(0),
            false,
        ),
        (
            "no names",
            Primary,
            500,
            "",
            Some(500),
            None,
            Some(0),
            false,
        ),
    ];
    for (what, writer, writer_lsn, names, replayed, end, lag, sync) in cases {
        let mut e = engine(Secondary);
        e.observe(s(10.0), running(standby_status(*replayed, *end)));
        e.on_reply(
            s(10.0),
            s(10.1),
            reply(Secondary, *writer, *writer_lsn, names),
        );
        let v = View::of(&e);
        assert_eq!(v.lag_bytes, *lag, "{what}");
        assert_eq!(v.synchronous, *sync, "{what}");
        assert_eq!(v.fence_deadline, None, "{what}");
        assert_eq!(
            code(&v, 10.5, Endpoint::Sync, None),
            if *sync { 200 } else { 503 },
            "{what}"
        );
        assert_eq!(code(&v, 10.5, Endpoint::Replica, None), 200, "{what}");
        assert_eq!(code(&v, 10.5, Endpoint::Primary, None), 503, "{what}");
    }
    // Before any reply: no writer known, no lag from it, not synchronous.
    let mut e = engine(Secondary);
    e.observe(s(10.0), running(standby_status(Some(100), Some(150))));
    let v = View::of(&e);
    assert_eq!((v.lag_bytes, v.synchronous), (Some(50), false));
    // A primary has no lag.
    let mut e = engine(Primary);
    e.observe(s(10.0), running(PgStatus::default()));
    assert_eq!(View::of(&e).lag_bytes, None);
}
