//! Keeper restarts: in the middle of a basebackup the join completes; in a
//! steady state nothing changes.

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_basebackup_then_restarted_in_steady_states() {
    let dir = TestDir::new("k-restart");
    let monitor = MonitorProc::start(&dir).await;
    let mut a = KeeperProc::create(&dir, &monitor.uri, "a");
    wait_state(&monitor, "a", "single", STEP).await;
    // Enough data that the copy takes a moment.
    a.query(
        "CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 200000) g",
    )
    .await
    .unwrap();

    let mut b = KeeperProc::create(&dir, &monitor.uri, "b");
    let partial = pgpilot_keeper::files::clone_dir(&b.pgdata);
    eventually("b's basebackup under way", STEP, || async {
        partial.exists().then_some(())
    })
    .await;
    b.kill_keeper();
    assert!(
        !pgpilot_pgproc::is_pgdata(&b.pgdata),
        "the keeper died before the copy was complete, so PGDATA holds none"
    );
    b.run();
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_state(&monitor, "a", "primary", STEP).await;
    assert!(!partial.exists(), "the incomplete copy was cleared");
    assert!(b.log().contains("removing the incomplete copy"));
    assert_eq!(
        b.query("SELECT count(*)::text FROM big").await.unwrap(),
        Some("200000".into())
    );

    // Restart each keeper in its steady state: no goal changes.
    let before = monitor.count_events(" assigned ").await;
    for k in [&mut b, &mut a] {
        if k.name == "b" {
            // From another shell: `pgpilot stop` signals the keeper and
            // waits until it stopped PostgreSQL and exited.
            pgpilot_ok(&["stop", "--pgdata", path_str(&k.pgdata)]);
            let mut child = k.child.take().unwrap();
            assert!(wait_child(&mut child, Duration::from_secs(10)).success());
            assert!(k.postmaster_pid().is_none(), "PostgreSQL stopped too");
        } else {
            assert!(k.stop().success());
        }
        k.run();
        let name = k.name.clone();
        let state = if name == "a" { "primary" } else { "secondary" };
        // Give it a few heartbeats in its state again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        wait_state(&monitor, &name, state, STEP).await;
    }
    wait_state(&monitor, "a", "primary", STEP).await;
    wait_state(&monitor, "b", "secondary", STEP).await;
    assert_eq!(
        monitor.count_events(" assigned ").await,
        before,
        "no goal changed"
    );
}
