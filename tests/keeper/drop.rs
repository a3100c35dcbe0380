//! The operator drops a dead primary of three nodes (`drop node --force`)
//! before automatic failover acted: a secondary is still promoted, with
//! every acknowledged row. (Before, the row went at once and the group
//! kept two secondaries and no primary, forever.)

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_dead_primary_of_three_promotes_a_secondary() {
    let dir = TestDir::new("k-dropprim");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, b, c) = primary_and_two_secondaries(&dir, &monitor).await;
    commit_rows(&a, 20).await;
    let a_id = a.state()["node_id"]
        .as_i64()
        .expect("node id in the state file");

    a.kill9();
    // At once, before the monitor could see the primary as unhealthy.
    let id = a_id.to_string();
    pgpilot_ok(&[
        "drop",
        "node",
        "--monitor",
        &monitor.uri,
        "--node-id",
        &id,
        "--force",
    ]);
    let new = [&b, &c][new_primary_among(&monitor, &[&b, &c], STEP).await];
    let count = "SELECT count(*)::text FROM acked";
    assert_eq!(new.query(count).await.unwrap(), Some("20".into()));
    eventually("the dropped primary's row removed", STEP, || async {
        let states = node_states(&mut monitor.client().await).await;
        (!states.contains_key("a")).then_some(())
    })
    .await;
    assert!(
        monitor
            .count_events("the operator dropped primary node")
            .await
            >= 1
    );
}
