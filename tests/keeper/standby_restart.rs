//! The failover witness survives a keeper restart: the primary dies whole
//! while the standby's keeper is restarted too. The new keeper process
//! never saw its WAL receiver stream, yet its standby must still be
//! promoted (the silence counts from its first look, a lower bound).

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn standby_promoted_although_its_keeper_restarted_after_the_primary_died() {
    let dir = TestDir::new("k-standby-restart");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, mut b) = primary_and_secondary(&dir, &monitor).await;
    a.query("CREATE TABLE acked (i int)").await.unwrap();
    a.query("INSERT INTO acked SELECT generate_series(1, 10)")
        .await
        .unwrap();

    // The primary dies whole, and right after it the standby's keeper
    // (its PostgreSQL keeps running); then the standby's keeper comes back
    // and adopts it.
    a.kill9();
    b.kill_keeper();
    b.run();

    wait_state(&monitor, "b", "wait_primary", STEP).await;
    let count = "SELECT count(*)::text FROM acked";
    eventually("b takes writes", STEP, || async {
        b.query("INSERT INTO acked VALUES (11)").await.ok()
    })
    .await;
    assert_eq!(b.query(count).await.unwrap(), Some("11".into()));
}
