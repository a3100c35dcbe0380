//! Drops through the real monitor and its store: a keeper's `dropped`
//! report removes its row in the same transaction that records it, a
//! forced drop of a standby removes it at once (it cannot accept writes),
//! a forced drop of a writer waits for its lease, and a group whose last
//! node went accepts a new cluster.

use std::time::Duration;

use pgpilot_proto::{pb, NodeState};

use crate::keeper::{bootstrapped, register_request, show_state, triple, Bootstrapped};
use crate::support::{eventually, TestDir};

async fn drop_node(c: &mut pgpilot_proto::client::Client, node_id: i64, force: bool) {
    c.drop_node(pb::DropNodeRequest { node_id, force })
        .await
        .unwrap_or_else(|e| panic!("drop node {node_id} (force {force}) refused: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_report_removes_the_row() {
    let dir = TestDir::new("drops-report");
    let Bootstrapped {
        monitor,
        mut c,
        a,
        mut b,
        a_pg: _a_pg_held,
        b_pg: _b_pg_held,
        ..
    } = bootstrapped(&dir).await;
    drop_node(&mut c, b.node_id, false).await;
    assert_eq!(b.send(&mut c).await.0, NodeState::Dropped);
    b.state = NodeState::Dropped;
    // The report of `dropped` is written, recorded and the row deleted in
    // one transaction (it failed as "vanished" before).
    assert_eq!(b.send(&mut c).await.0, NodeState::Dropped);
    assert_eq!(a.send(&mut c).await.0, NodeState::Single);
    assert_eq!(
        show_state(&monitor.uri),
        vec![triple("a", "primary", "single")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_drops_and_a_new_cluster_after_the_last_node() {
    let dir = TestDir::new("drops-force");
    let Bootstrapped {
        monitor,
        mut c,
        mut a,
        b,
        a_pg: _a_pg_held,
        b_pg: _b_pg_held,
        ..
    } = bootstrapped(&dir).await;
    // A standby cannot accept writes: its row goes at once.
    drop_node(&mut c, b.node_id, true).await;
    assert_eq!(
        show_state(&monitor.uri),
        vec![triple("a", "primary", "single")]
    );
    assert_eq!(a.send(&mut c).await.0, NodeState::Single);
    a.state = NodeState::Single;
    a.send(&mut c).await;
    // The writer may still accept writes until its lease runs out: its row
    // stays until then, then goes by itself.
    drop_node(&mut c, a.node_id, true).await;
    assert_eq!(
        show_state(&monitor.uri),
        vec![triple("a", "single", "dropped")]
    );
    eventually(
        "the dropped writer's row removed",
        Duration::from_secs(30),
        || async { show_state(&monitor.uri).is_empty().then_some(()) },
    )
    .await;
    // The group forgot its system identifier: another cluster may start it.
    let mut req = register_request("fresh", crate::support::free_port());
    req.system_identifier = 12345;
    let reply = c
        .register(crate::keeper::signed(req, &monitor.join_token()))
        .await
        .unwrap_or_else(|e| panic!("a new first node was refused: {e}"))
        .into_inner();
    assert_eq!(
        NodeState::from_wire(reply.assigned_state).unwrap(),
        NodeState::Single
    );
}
