//! Three nodes: the primary dies, both standbys stop streaming and report
//! their LSN, one is elected and promoted, the other follows it. (Both
//! hold the same WAL here; the choice of the most advanced is the FSM
//! tests' and the simulation's to check.)

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_elect_a_new_primary() {
    let dir = TestDir::new("k-elect");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, b, c) = primary_and_two_secondaries(&dir, &monitor).await;
    commit_rows(&a, 50).await;

    a.kill9();
    let count = "SELECT count(*)::text FROM acked";
    let (new, other) = match new_primary_among(&monitor, &[&b, &c], STEP).await {
        0 => (&b, &c),
        _ => (&c, &b),
    };
    assert_eq!(new.query(count).await.unwrap(), Some("50".into()));
    new.query("INSERT INTO acked VALUES (51)").await.unwrap();
    wait_state(&monitor, &other.name, "secondary", STEP).await;
    eventually("row 51 on the other standby", STEP, || async {
        (other.query(count).await.ok().flatten().as_deref() == Some("51")).then_some(())
    })
    .await;
    assert!(monitor.count_events("assigned report_lsn").await >= 2);
    assert_eq!(monitor.count_events("elected with LSN").await, 1);
}
