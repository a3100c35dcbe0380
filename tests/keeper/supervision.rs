//! PostgreSQL dies under a living keeper: restarted in place, no failover;
//! when it cannot start, the keeper says so and the monitor fails over.

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_in_place_or_failed_over_when_it_cannot_start() {
    let dir = TestDir::new("k-sup");
    let monitor = MonitorProc::start(&dir).await;
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    let failovers = monitor.count_events("prepare_promotion").await;

    // SIGKILL the postmaster only: the keeper starts it again.
    let old = a.postmaster_pid().expect("A's postmaster runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("a new postmaster on A, taking queries", STEP, || async {
        let restarted = a.postmaster_pid().is_some_and(|p| p != old);
        (restarted && a.query("SELECT 'up'").await.is_ok()).then_some(())
    })
    .await;
    a.query("CREATE TABLE after_restart (i int)").await.unwrap();
    // Well past the monitor's failover timeouts: still no failover.
    tokio::time::sleep(Duration::from_secs(6)).await;
    wait_state(&monitor, "a", "primary", STEP).await;
    wait_state(&monitor, "b", "secondary", STEP).await;
    assert_eq!(
        monitor.count_events("prepare_promotion").await,
        failovers,
        "no failover happened"
    );
    assert!(a
        .log()
        .contains("PostgreSQL is not running in state primary: starting it"));

    // Break a setting and kill it again: it cannot start, the keeper
    // reports it down, and the monitor promotes B.
    let conf = a.pgdata.join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}\nshared_buffers = 'not a size'\n")).unwrap();
    let pid = a.postmaster_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_state(&monitor, "b", "wait_primary", STEP).await;
    b.query("CREATE TABLE on_new_primary (i int)")
        .await
        .unwrap();
    assert!(a.log().contains("reporting it down"));
}
