//! The two-node lifecycle: bootstrap, failover after a whole node dies,
//! rejoin of the old primary with pg_rewind.

use std::time::Duration;

use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_failover_and_rewind_rejoin() {
    let dir = TestDir::new("k-life");
    let monitor = MonitorProc::start(&dir).await;

    // A alone: single, no synchronous replication.
    let mut a = KeeperProc::create(&dir, &monitor.uri, "a");
    wait_state(&monitor, "a", "single", STEP).await;
    assert_eq!(
        a.query("SHOW synchronous_standby_names").await.unwrap(),
        Some(String::new())
    );

    // B joins: A primary with B in synchronous_standby_names, B secondary.
    let mut b = KeeperProc::create(&dir, &monitor.uri, "b");
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_state(&monitor, "a", "primary", STEP).await;
    assert_eq!(
        a.query("SHOW synchronous_standby_names").await.unwrap(),
        Some("ANY 1 (pgpilot_node_2)".into())
    );
    let slots =
        "SELECT string_agg(slot_name::text, ',' ORDER BY slot_name) FROM pg_replication_slots";
    assert_eq!(a.query(slots).await.unwrap(), Some("pgpilot_node_2".into()));
    assert_eq!(b.query(slots).await.unwrap(), Some("pgpilot_node_1".into()));

    // Writes on A reach B; B refuses writes.
    a.query("CREATE TABLE acked (i int PRIMARY KEY)")
        .await
        .unwrap();
    a.query("INSERT INTO acked SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let count = "SELECT count(*)::text FROM acked";
    eventually("row count 100 on b", STEP, || async {
        (b.query(count).await.ok().flatten().as_deref() == Some("100")).then_some(())
    })
    .await;
    let err = b.query("INSERT INTO acked VALUES (0)").await.unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");

    // More acknowledged writes, one commit each, right up to the kill.
    for i in 101..=200 {
        a.query(&format!("INSERT INTO acked VALUES ({i})"))
            .await
            .unwrap();
    }

    // A dies whole: keeper and PostgreSQL, SIGKILL.
    a.kill9();
    wait_state(&monitor, "b", "wait_primary", STEP).await;
    assert_eq!(
        b.query(count).await.unwrap(),
        Some("200".into()),
        "every acknowledged row survived the failover"
    );
    b.query("INSERT INTO acked VALUES (201)").await.unwrap();

    // A comes back and rejoins as a secondary through pg_rewind.
    a.run();
    wait_state(&monitor, "a", "secondary", STEP).await;
    wait_state(&monitor, "b", "primary", STEP).await;
    let rejoin = &a.state()["last_rejoin"];
    assert_eq!(rejoin["method"], "pg_rewind", "{rejoin}");
    assert!(a.log().contains("rejoined node 2 with pg_rewind"));
    eventually("row 201 on a", STEP, || async {
        (a.query(count).await.ok().flatten().as_deref() == Some("201")).then_some(())
    })
    .await;
    assert_eq!(
        b.query("SHOW synchronous_standby_names").await.unwrap(),
        Some("ANY 1 (pgpilot_node_1)".into())
    );

    // Second round, the fallback: without the functions pg_rewind needs on
    // its source, the old primary is copied afresh with pg_basebackup.
    b.query(
        "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) \
         FROM pgpilot_replicator",
    )
    .await
    .unwrap();
    b.query("INSERT INTO acked VALUES (202)").await.unwrap();
    b.kill9();
    wait_state(&monitor, "a", "wait_primary", STEP).await;
    assert_eq!(a.query(count).await.unwrap(), Some("202".into()));
    b.run();
    wait_state(&monitor, "b", "secondary", STEP).await;
    let rejoin = &b.state()["last_rejoin"];
    assert_eq!(rejoin["method"], "pg_basebackup", "{rejoin}");
    assert!(b
        .log()
        .contains("pg_rewind from node 1 failed, falling back to pg_basebackup"));
    eventually("row 202 on b", STEP, || async {
        (b.query(count).await.ok().flatten().as_deref() == Some("202")).then_some(())
    })
    .await;
}
