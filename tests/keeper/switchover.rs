//! The operator's planned changes of primary on real processes: `perform
//! switchover` and `perform promotion` run as an operator runs them (the
//! real binary, `--wait`), while an application commits through the
//! formation URI of `show uri`. Every acknowledged commit survives, the
//! old primary comes back as a secondary with its own data (it stopped
//! cleanly: pg_rewind has nothing to do, no new copy), and a refusal
//! changes nothing.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::forced_failover::snapshot;
use crate::support::writer::{self, Writer};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How often the test client commits.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// A file of the test's in each old primary's PGDATA: a new copy
/// (pg_basebackup replaces PGDATA whole) or a real rewind (pg_rewind
/// removes what the source does not have) would take it away.
const MARKER: &str = "pgpilot-test-marker";

/// `pgpilot ARGS --monitor M --wait 60`, off the async workers (the
/// client task keeps committing meanwhile); with its wall time.
pub async fn operator(monitor: &MonitorProc, args: &[&str]) -> (Output, Duration) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--monitor", &monitor.uri, "--wait", "60"].map(String::from));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        pgpilot(&args)
    })
    .await
    .unwrap();
    (out, started.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn place_marker(node: &KeeperProc) {
    std::fs::write(node.pgdata.join(MARKER), "placed by the test\n").unwrap();
}

/// `old` was the primary: it is a secondary again, rejoined with
/// pg_rewind at the switchover's generation and not copied afresh.
async fn back_as_secondary_without_copy(monitor: &MonitorProc, old: &KeeperProc) {
    wait_state(monitor, &old.name, "secondary", STEP).await;
    let rejoin = &old.state()["last_rejoin"];
    assert_eq!(rejoin["method"], "pg_rewind", "{rejoin}");
    // It stopped cleanly before the promotion: no WAL past the fork.
    let detail = rejoin["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no rewind required"), "{rejoin}");
    assert_eq!(
        rejoin["generation"],
        old.state()["generation_seen"],
        "rejoined in this generation: {rejoin}"
    );
    assert!(
        old.pgdata.join(MARKER).is_file(),
        "{}: the marker in PGDATA is gone: its data was replaced or rewound",
        old.name
    );
    let log = old.log();
    assert!(!log.contains("falling back to pg_basebackup"), "{log}");
}

/// One switchover from `old` to `new` under the client's writes: the
/// command succeeds, `new` is writable and holds every acknowledged
/// commit, the client commits on it, `old` is a secondary again.
async fn switch(
    monitor: &MonitorProc,
    client: &Writer,
    args: &[&str],
    old: &KeeperProc,
    new: &KeeperProc,
) {
    place_marker(old);
    let before = client.acks().len();
    let (out, took) = operator(monitor, args).await;
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("done: {} ", new.name)), "{said}");
    eprintln!("{args:?} took {:.2} s", took.as_secs_f64());
    client.wait_acks_on(new.port, before, 10, STEP).await;
    assert_eq!(
        writer::missing(new, &client.acks()).await,
        Vec::<i64>::new()
    );
    back_as_secondary_without_copy(monitor, old).await;
    wait_state(monitor, &new.name, "primary", STEP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_and_back_keeps_every_acknowledged_commit() {
    let dir = TestDir::new("k-swo");
    let monitor = MonitorProc::start(&dir).await;
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 20, STEP).await;

    switch(&monitor, &client, &["perform", "switchover"], &a, &b).await;
    // And back: it repeats.
    switch(&monitor, &client, &["perform", "switchover"], &b, &a).await;

    let acks = client.stop().await;
    assert_eq!(writer::missing(&a, &acks).await, Vec::<i64>::new());
    assert!(acks.iter().any(|k| k.port == b.port), "b took commits");
    assert_eq!(
        monitor
            .count_events("switchover asked by the operator")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn promotion_of_a_named_node_of_three() {
    let dir = TestDir::new("k-promo");
    let monitor = MonitorProc::start(&dir).await;
    let (a, b, c) = primary_and_two_secondaries(&dir, &monitor).await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 20, STEP).await;

    // b is the best candidate (same priority and LSN, lower id): promote c.
    switch(
        &monitor,
        &client,
        &["perform", "promotion", "--name", "c"],
        &a,
        &c,
    )
    .await;
    wait_state(&monitor, "b", "secondary", STEP).await;
    let acks = client.stop().await;
    assert_eq!(writer::missing(&c, &acks).await, Vec::<i64>::new());
    let states = node_states(&mut monitor.client().await).await;
    for (name, want) in [("a", "secondary"), ("b", "secondary"), ("c", "primary")] {
        assert_eq!(states[name], (want.into(), want.into()), "{states:?}");
    }
    // b follows c and has its commits.
    let last = acks.last().unwrap().id;
    eventually("b replays the last commit", STEP, || async {
        let q = format!(
            "SELECT count(*)::text FROM {} WHERE id = {last}",
            writer::TABLE
        );
        (b.query(&q).await.ok().flatten().as_deref() == Some("1")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_priority_change_picks_the_next_candidate() {
    let dir = TestDir::new("k-prio");
    let monitor = MonitorProc::start(&dir).await;
    let (a, _b, c) = primary_and_two_secondaries(&dir, &monitor).await;
    let (out, _) = operator(
        &monitor,
        &["set", "node", "candidate-priority", "--name", "c", "100"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 5, STEP).await;

    switch(&monitor, &client, &["perform", "switchover"], &a, &c).await;
    let acks = client.stop().await;
    assert_eq!(writer::missing(&c, &acks).await, Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_to_a_priority_zero_node_is_refused_and_changes_nothing() {
    let dir = TestDir::new("k-swo-no");
    let monitor = MonitorProc::start(&dir).await;
    let (_a, _b) = primary_and_secondary(&dir, &monitor).await;
    let (out, _) = operator(
        &monitor,
        &["set", "node", "candidate-priority", "--name", "b", "0"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));

    let before = snapshot(&monitor).await;
    let events_before = monitor.events().await;
    for (args, reason) in [
        (
            &["perform", "switchover", "--candidate", "b"][..],
            "its candidate priority is 0",
        ),
        (&["perform", "switchover"][..], "no standby can take over"),
        (
            &["perform", "promotion", "--name", "b"][..],
            "its candidate priority is 0",
        ),
    ] {
        let (out, took) = operator(&monitor, args).await;
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{args:?}: {}", text(&out));
        // A deadline, not a timing claim: it did not follow the change
        // until --wait ran out.
        assert!(took < STEP, "{args:?} refused at once, not after --wait");
    }
    // A moment for anything the requests might have set going.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(snapshot(&monitor).await, before);
    let events_after = monitor.events().await;
    assert_eq!(
        events_after.len(),
        events_before.len(),
        "new events: {:?}",
        &events_after[events_before.len().min(events_after.len())..]
    );
    assert!(!events_after.iter().any(|e| e.contains("switchover")));
}
