//! Bootstrap, failover and rejoin of a two-node group, driven through the
//! keeper protocol against a real monitor, checked through the CLI.

use std::time::{Duration, Instant};

use pgpilot_proto::NodeState::{self, *};

use crate::keeper::{event_descriptions, register, show_state, triple, Report};
use crate::support::{eventually, MonitorProc, NodePg, TestDir};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_failover_and_rejoin() {
    let dir = TestDir::new("lifecycle");
    let monitor = MonitorProc::start(&dir).await;
    let mut a_pg = NodePg::create(&dir, "a").await;
    let b_pg = NodePg::create(&dir, "b").await;
    let mut c = monitor.client().await;
    let uri = monitor.uri.as_str();

    // --- Bootstrap: A alone is single.
    let join = monitor.join_token();
    let ra = register(&mut c, &join, "a", a_pg.port).await;
    assert_eq!(NodeState::from_wire(ra.assigned_state).unwrap(), Single);
    let a = ra.node_id;
    let mut a_report = Report::of(&ra, Single);
    a_report.system_identifier = a_pg.system_identifier().await;
    let (goal, reply) = a_report.send(&mut c).await;
    assert_eq!(goal, Single);
    assert_eq!(reply.synchronous_standby_names, "");
    assert_eq!(show_state(uri), vec![triple("a", "single", "single")]);

    // Watch pushes committed events: open it before B registers.
    let mut watch = c
        .watch(pgpilot_proto::pb::WatchRequest {
            formation: "default".into(),
            group_id: Some(0),
        })
        .await
        .unwrap()
        .into_inner();

    // B joins: it waits for A, which prepares for a standby.
    let rb = register(&mut c, &join, "b", b_pg.port).await;
    let pushed = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        pushed.description.contains("registered node") && pushed.node_name == "b",
        "{pushed:?}"
    );
    assert_eq!(
        NodeState::from_wire(rb.assigned_state).unwrap(),
        WaitStandby
    );
    let b = rb.node_id;
    let mut b_report = Report::of(&rb, WaitStandby);
    assert_eq!(a_report.send(&mut c).await.0, WaitPrimary);
    a_report.state = WaitPrimary;
    assert_eq!(a_report.send(&mut c).await.0, WaitPrimary);
    // The primary is ready: B may clone it.
    assert_eq!(b_report.send(&mut c).await.0, Catchingup);
    b_report.state = Catchingup;
    b_report.system_identifier = a_report.system_identifier;
    b_report.upstream_silent_ms = Some(0);
    assert_eq!(b_report.send(&mut c).await.0, Secondary);
    b_report.state = Secondary;
    b_report.send(&mut c).await;
    // A caught-up standby: synchronous replication on.
    let (goal, reply) = a_report.send(&mut c).await;
    assert_eq!(goal, Primary);
    assert_eq!(
        reply.synchronous_standby_names,
        format!("ANY 1 (pgpilot_node_{b})")
    );
    a_report.state = Primary;
    a_report.replication_state = "quorum".into();
    a_report.send(&mut c).await;
    assert_eq!(
        show_state(uri),
        vec![
            triple("a", "primary", "primary"),
            triple("b", "secondary", "secondary")
        ]
    );
    let events = event_descriptions(uri);
    assert!(
        events
            .iter()
            .any(|e| e.contains("registered node") && e.contains("\"b\"")),
        "{events:#?}"
    );

    // --- Failover: A's Postgres and keeper die. Only when the monitor's
    // probes fail *and* B has lost replication does B get promoted.
    a_pg.crash().await;
    let crashed = Instant::now();
    let goal = eventually("B assigned prepare_promotion", DEADLINE, || {
        let mut c = c.clone();
        let mut r = b_report.clone();
        async move {
            r.upstream_silent_ms = Some(crashed.elapsed().as_millis() as u64);
            let (goal, _) = r.send(&mut c).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            (goal != Secondary).then_some(goal)
        }
    })
    .await;
    assert_eq!(goal, PreparePromotion);
    let events = event_descriptions(uri);
    assert!(
        events
            .iter()
            .any(|e| e.contains("prepare_promotion") && e.contains("replication")),
        "no event explains the promotion: {events:#?}"
    );
    b_report.upstream_silent_ms = Some(crashed.elapsed().as_millis() as u64);
    b_report.state = PreparePromotion;
    assert_eq!(b_report.send(&mut c).await.0, StopReplication);
    b_report.state = StopReplication;
    b_report.generation_seen = 2;
    // Read-only until A's lease is over; A never acknowledges.
    let goal = eventually("B assigned wait_primary", DEADLINE, || {
        let mut c = c.clone();
        let r = b_report.clone();
        async move {
            let (goal, _) = r.send(&mut c).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (goal != StopReplication).then_some(goal)
        }
    })
    .await;
    assert_eq!(goal, WaitPrimary);
    b_report.state = WaitPrimary;
    b_report.tli = 2;
    b_report.upstream_silent_ms = None;
    b_report.send(&mut c).await;
    let state = show_state(uri);
    assert_eq!(
        state[1],
        triple("b", "wait_primary", "wait_primary"),
        "{state:?}"
    );
    assert_eq!(state[0].2, "demoted", "{state:?}");

    // --- Rejoin: A comes back, learns it was demoted, rewinds, follows B.
    a_pg.start().await;
    a_report.generation_seen = 1;
    let (goal, reply) = a_report.send(&mut c).await;
    assert_eq!(goal, Demoted);
    assert_eq!(reply.generation, 2);
    a_report.state = Demoted;
    a_report.pg_running = false;
    a_report.generation_seen = 2;
    let goal = eventually("A assigned catchingup", DEADLINE, || {
        let mut c = c.clone();
        let (r, other) = (a_report.clone(), b_report.clone());
        async move {
            other.send(&mut c).await; // the new primary stays healthy
            let (goal, _) = r.send(&mut c).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (goal != Demoted).then_some(goal)
        }
    })
    .await;
    assert_eq!(goal, Catchingup);
    a_report.state = Catchingup;
    a_report.pg_running = true;
    a_report.tli = 2;
    a_report.replication_state.clear();
    a_report.upstream_silent_ms = Some(0);
    let goal = eventually("A assigned secondary", DEADLINE, || {
        let mut c = c.clone();
        let (r, other) = (a_report.clone(), b_report.clone());
        async move {
            other.send(&mut c).await; // the new primary stays healthy
            let (goal, _) = r.send(&mut c).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (goal != Catchingup).then_some(goal)
        }
    })
    .await;
    assert_eq!(goal, Secondary);
    a_report.state = Secondary;
    a_report.send(&mut c).await;
    b_report.replication_state = "quorum".into();
    let (goal, reply) = b_report.send(&mut c).await;
    assert_eq!(goal, Primary);
    assert_eq!(
        reply.synchronous_standby_names,
        format!("ANY 1 (pgpilot_node_{a})")
    );
    b_report.state = Primary;
    b_report.send(&mut c).await;
    assert_eq!(
        show_state(uri),
        vec![
            triple("a", "secondary", "secondary"),
            triple("b", "primary", "primary")
        ]
    );
    let text = crate::support::pgpilot_ok(&["show", "events", "--monitor", uri, "--count", "5"]);
    assert!(
        text.contains("Assigned State") && text.contains("primary"),
        "{text}"
    );
}
