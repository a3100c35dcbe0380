//! The cost of a heartbeat, read from the monitor's own database: a report
//! that changes nothing writes no row; one that changes something writes in
//! exactly one transaction. Row versions (`xmin`) tell, exactly.

use pgpilot_proto::NodeState;
use sqlx::{ConnectOptions, Connection};

use crate::keeper::{bootstrapped, Bootstrapped};
use crate::support::{MonitorProc, TestDir};

/// (node_id, xmin) of every node row, and the number of events.
async fn versions(monitor: &MonitorProc) -> (Vec<(i64, String)>, i64) {
    let mut conn = pgpilot_monitor::private_pg::connect_options(
        &monitor.pgdata,
        pgpilot_monitor::private_pg::DATABASE,
    )
    .connect()
    .await
    .unwrap();
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT node_id, xmin::text FROM node ORDER BY node_id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (rows, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_heartbeats_write_nothing() {
    let dir = TestDir::new("writes");
    let Bootstrapped {
        monitor,
        mut c,
        mut a,
        mut b,
        a_pg: _a_pg_held,
        b_pg: _b_pg_held,
        ..
    } = bootstrapped(&dir).await;

    let before = versions(&monitor).await;
    for i in 0..50u64 {
        // LSNs move under load: still no write.
        a.lsn += 100 * i;
        b.lsn += 100 * i;
        b.upstream_silent_ms = Some(i % 3);
        assert_eq!(a.send(&mut c).await.0, NodeState::Primary);
        assert_eq!(b.send(&mut c).await.0, NodeState::Secondary);
    }
    let after = versions(&monitor).await;
    assert_eq!(before, after, "unchanged heartbeats wrote to the store");

    // A change (Postgres down on the standby) is one transaction: every row
    // it touched carries the same transaction id, and it logged events.
    b.pg_running = false;
    let (goal, _) = b.send(&mut c).await;
    assert_eq!(goal, NodeState::Catchingup);
    let changed = versions(&monitor).await;
    let touched: Vec<&String> = changed
        .0
        .iter()
        .zip(&after.0)
        .filter(|(new, old)| new.1 != old.1)
        .map(|(new, _)| &new.1)
        .collect();
    assert_eq!(
        touched.len(),
        2,
        "standby and primary goals change: {changed:?}"
    );
    assert!(
        touched.iter().all(|x| *x == touched[0]),
        "more than one transaction: {touched:?}"
    );
    assert!(changed.1 > after.1, "no event for the change");
}

/// A keeper that cannot reach its goal says why; each new reason is one
/// event, a repeated one costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_errors_become_events_once() {
    let dir = TestDir::new("errors");
    let Bootstrapped {
        monitor,
        mut c,
        mut b,
        a_pg: _a_pg_held,
        b_pg: _b_pg_held,
        ..
    } = bootstrapped(&dir).await;

    let (_, events) = versions(&monitor).await;
    // Repeats, and the same failure with other numbers (an LSN that moved,
    // another attempt), are no news.
    for attempt in 0..5 {
        b.transition_error = format!("pg_basebackup failed: no route to host (attempt {attempt})");
        b.send(&mut c).await;
    }
    let (_, once) = versions(&monitor).await;
    assert_eq!(
        once,
        events + 1,
        "one event for a new error, none for repeats"
    );
    b.transition_error = "pg_basebackup failed: disk full".into();
    b.send(&mut c).await;
    let (_, twice) = versions(&monitor).await;
    assert_eq!(twice, events + 2);
    assert_eq!(
        monitor
            .count_events("cannot reach secondary yet: pg_basebackup failed: disk full")
            .await,
        1
    );
}
