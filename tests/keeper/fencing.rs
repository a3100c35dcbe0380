//! The lease: a primary keeps serving through a monitor outage while its
//! standby streams from it, fences itself once nothing vouches for it, and
//! comes back when the monitor does.

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn primary_fences_only_when_nothing_vouches_for_it() {
    let dir = TestDir::new("k-fence");
    let mut monitor = MonitorProc::start(&dir).await;
    let (a, mut b) = primary_and_secondary(&dir, &monitor).await;
    a.query("CREATE TABLE t (i int)").await.unwrap();

    // The monitor goes away for longer than the lease (1.2 s): the standby
    // still streams from A, so A keeps taking writes.
    assert!(monitor.stop().success());
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.query("INSERT INTO t VALUES (1)").await.unwrap();
    assert!(a.postmaster_pid().is_some());

    // Now the standby goes too: nothing vouches for A, which fences.
    assert!(b.stop().success());
    eventually("A fenced", STEP, || async {
        (a.postmaster_pid().is_none() && a.state()["current"] == "demote_timeout").then_some(())
    })
    .await;
    assert!(a.log().contains("fencing"));

    // The monitor is back and did not fail over: A serves again.
    monitor.restart().await;
    eventually("A writable again", STEP, || async {
        a.query("INSERT INTO t VALUES (2)").await.ok().map(|_| ())
    })
    .await;
    b.run();
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_state(&monitor, "a", "primary", STEP).await;
}
