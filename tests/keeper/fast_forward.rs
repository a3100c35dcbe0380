//! fast_forward on real PostgreSQL: an election's winner by candidate
//! priority that lacks commits another voter holds fetches them from that
//! voter before it is promoted.
//!
//! Three nodes: primary P ("a"), standbys A ("b", candidate priority 90)
//! and B ("c", candidate priority 0: never promoted), both in
//! `ANY 1 (..)`. A's WAL receiver is frozen (SIGSTOP) until P let it go,
//! so the rows committed next are acknowledged by B alone. P dies. In the
//! election B is the most advanced voter but may not be promoted; A wins
//! by priority, streams the missing WAL from B (B itself streams from
//! nobody in report_lsn) and only then is promoted: it ends with every
//! row that only B had. Without fast_forward the election waits for good
//! ("the most advanced standby has candidate priority 0").

use std::time::Duration;

use super::forced_failover::{operator, text};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
const ROWS: u32 = 20;
const COUNT: &str = "SELECT count(*)::text FROM acked";

#[tokio::test(flavor = "multi_thread")]
async fn the_winner_by_priority_fetches_what_a_priority_0_voter_has_first() {
    let dir = TestDir::new("k-ffwd");
    let monitor = MonitorProc::start(&dir).await;
    let (mut p, a, b) = primary_and_two_secondaries(&dir, &monitor).await;
    for (name, prio) in [("b", "90"), ("c", "0")] {
        let (out, _) = operator(
            &monitor,
            &[
                "set",
                "node",
                "candidate-priority",
                "--name",
                name,
                prio,
                "--wait",
                "60",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
    }

    // A stops receiving WAL: its WAL receiver is frozen until P's
    // walsender gave up on it (wal_sender_timeout).
    let mut frozen = Frozen::default();
    let receiver = freeze_wal_receiver(&a, &p, &mut frozen).await;

    // Commits that only B acknowledged (ANY 1 of A and B).
    commit_rows(&p, ROWS).await;
    eventually("every row on B", STEP, || async {
        (b.query(COUNT).await.ok().flatten() == Some(ROWS.to_string())).then_some(())
    })
    .await;

    // P dies, then A's WAL receiver resumes: nobody sends it P's WAL now.
    p.kill9();
    frozen.resume(receiver);
    let a_rows = a.query(COUNT).await.ok().flatten();
    eprintln!("A holds {a_rows:?} of the {ROWS} rows; B holds all");
    assert_ne!(
        a_rows.as_deref(),
        Some(ROWS.to_string().as_str()),
        "A got the rows from P after all: the test would prove nothing"
    );

    // A, not B, is promoted, with every row.
    let new = new_primary_among(&monitor, &[&a, &b], STEP * 2).await;
    let events = monitor.events().await;
    assert_eq!(new, 0, "B (priority 0) was promoted: {events:#?}");
    assert_eq!(
        a.query(COUNT).await.unwrap(),
        Some(ROWS.to_string()),
        "A was promoted without the rows only B had: {events:#?}"
    );
    for want in [
        "assigned fast_forward: elected by candidate priority (90)",
        "its fast_forward reached LSN",
    ] {
        assert!(
            events.iter().any(|e| e.contains(want)),
            "no event says {want:?}: {events:#?}"
        );
    }

    // B follows the new primary, and so does a new row.
    a.query(&format!("INSERT INTO acked VALUES ({})", ROWS + 1))
        .await
        .unwrap();
    wait_state(&monitor, &b.name, "secondary", STEP).await;
    eventually("every row on B", STEP, || async {
        (b.query(COUNT).await.ok().flatten() == Some((ROWS + 1).to_string())).then_some(())
    })
    .await;
}
