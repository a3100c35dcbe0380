//! The operator's `perform failover [--allow-data-loss]` on real
//! processes: a quorum standby's machine dies, then the primary's, so
//! automatic failover waits (the dead standby may hold commits the other
//! lacks) and says so in an event. Without the flag the command refuses,
//! names the missing standby and changes nothing, unless fewer than
//! number_sync_standbys quorum standbys are missing (then every
//! acknowledged commit is on the one left); with the flag it promotes the
//! standby left and records the accepted loss. On a healthy primary it
//! refuses and points to `perform switchover`.
//!
//! A client commits throughout through the formation URI; every check of
//! "what survived" is against the commits it saw acknowledged.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::writer::{self, Ack, Writer};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How often the test client commits.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// How long the test watches that nothing moves by itself (no automatic
/// promotion, no change after a refusal).
const QUIET: Duration = Duration::from_secs(3);

/// `pgpilot ARGS --monitor M`, off the async workers (the client keeps
/// committing meanwhile); with its wall time.
pub(crate) async fn operator(monitor: &MonitorProc, args: &[&str]) -> (Output, Duration) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--monitor", &monitor.uri].map(String::from));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        pgpilot(&args)
    })
    .await
    .unwrap();
    (out, started.elapsed())
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Prints `show state` and `show events` when the test fails.
pub(crate) struct Diagnostics {
    uri: String,
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for args in [
                &["show", "state", "--monitor", &self.uri][..],
                &["show", "events", "--count", "60", "--monitor", &self.uri][..],
            ] {
                let out = pgpilot(args);
                eprintln!("--- pgpilot {} ---\n{}", args[..2].join(" "), text(&out));
            }
        }
    }
}

pub(crate) fn diagnostics(monitor: &MonitorProc) -> Diagnostics {
    Diagnostics {
        uri: monitor.uri.clone(),
    }
}

pub(crate) fn node_id(k: &KeeperProc) -> i64 {
    k.state()["node_id"]
        .as_i64()
        .expect("node id in the state file")
}

/// Gone or a zombie: it runs no code any more.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// The node's machine dies: SIGKILL its keeper, its postmaster and every
/// child of the postmaster at once (a WAL receiver orphaned by a killed
/// postmaster would otherwise go on acknowledging WAL for a moment).
/// Returns once none of them runs, with that instant.
async fn machine_dies(k: &mut KeeperProc) -> Instant {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pm = k.postmaster_pid().expect("the node's postmaster runs");
    let mut pids = children_of(pm);
    pids.push(pm);
    if let Some(c) = &k.child {
        pids.push(c.id() as i32);
    }
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    k.kill_keeper();
    eventually(
        &format!("every process of {} gone", k.name),
        Duration::from_secs(10),
        || async { pids.iter().all(|&p| dead(p)).then_some(()) },
    )
    .await;
    Instant::now()
}

/// Waits until an event contains `text`; returns it.
async fn wait_event(monitor: &MonitorProc, text: &str, timeout: Duration) -> String {
    eventually(&format!("an event with {text:?}"), timeout, || async {
        monitor
            .events()
            .await
            .into_iter()
            .find(|e| e.contains(text))
    })
    .await
}

/// Waits until the monitor took `k` for unhealthy (a secondary it
/// assigned catchingup, its health "bad").
async fn seen_unhealthy(monitor: &MonitorProc, k: &KeeperProc) {
    let id = node_id(k);
    wait_event(
        monitor,
        &format!("node {id} assigned catchingup: it is unhealthy"),
        STEP,
    )
    .await;
}

/// What an operator command could change: each node's states, timeline
/// and settings, and the formation's settings.
pub(crate) async fn snapshot(monitor: &MonitorProc) -> (Vec<String>, String) {
    let nodes = monitor
        .client()
        .await
        .show_state(pgpilot_proto::pb::ShowStateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| {
            format!(
                "{} {} {} tli {} priority {} quorum {}",
                n.name,
                n.reported_state,
                n.assigned_state,
                n.reported_tli,
                n.candidate_priority,
                n.replication_quorum
            )
        })
        .collect();
    let settings = pgpilot_ok(&["show", "settings", "--monitor", &monitor.uri, "--json"]);
    (nodes, settings)
}

/// `k` is a standby in recovery and assigned secondary: not promoted.
async fn not_promoted(monitor: &MonitorProc, k: &KeeperProc) {
    let states = node_states(&mut monitor.client().await).await;
    assert_eq!(
        states[&k.name].1, "secondary",
        "{} was given another goal: {states:?}",
        k.name
    );
    assert_eq!(
        k.query("SELECT pg_is_in_recovery()::text").await.unwrap(),
        Some("true".into()),
        "{} is out of recovery",
        k.name
    );
}

/// The commits that started after `instant` (the client commits one at a
/// time: a commit after one acknowledged at or after `instant` started
/// after it).
fn started_after(acks: &[Ack], instant: Instant) -> Vec<Ack> {
    let Some(first) = acks.iter().find(|a| a.at >= instant).map(|a| a.id) else {
        return vec![];
    };
    acks.iter().filter(|a| a.id > first).cloned().collect()
}

/// Waits (bounded: a standby replays what it flushed at once) until every
/// row of `acks` is on `node`, which may still be a standby.
async fn on_node(node: &KeeperProc, acks: &[Ack]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let missing = writer::missing(node, acks).await;
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} lacks acknowledged rows {missing:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills b's machine and then a's, and waits until the monitor says the
/// group waits for b; c stays a standby. Returns when b's processes were
/// all gone.
async fn lose_b_then_a(
    monitor: &MonitorProc,
    a: &mut KeeperProc,
    b: &mut KeeperProc,
    c: &KeeperProc,
) -> Instant {
    let b_died = machine_dies(b).await;
    seen_unhealthy(monitor, b).await;
    machine_dies(a).await;
    let wait = format!(
        "no automatic failover from unhealthy primary node {}: quorum standby node {}",
        node_id(a),
        node_id(b)
    );
    let took = Instant::now();
    let event = wait_event(monitor, &wait, STEP).await;
    eprintln!(
        "wait event after {:.1} s: {event}",
        took.elapsed().as_secs_f64()
    );
    tokio::time::sleep(QUIET).await;
    not_promoted(monitor, c).await;
    b_died
}

fn print_events(events: &[String], about: &[&str]) {
    for e in events
        .iter()
        .filter(|e| about.iter().any(|w| e.contains(w)))
    {
        eprintln!("event: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failover_refuses_without_the_flag_and_loses_nothing_acknowledged_after_b_died() {
    let dir = TestDir::new("k-ffo");
    let monitor = MonitorProc::start(&dir).await;
    let _diag = diagnostics(&monitor);
    let (mut a, mut b, c) = primary_and_two_secondaries(&dir, &monitor).await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 20, STEP).await;

    let b_died = lose_b_then_a(&monitor, &mut a, &mut b, &c).await;
    let b_id = node_id(&b);
    // a is gone: nothing more is acknowledged until c is promoted. Once b
    // was dead every commit needed c's flush (ANY 1 (b, c)); c replays it
    // even before any promotion.
    let acked_before = client.acks();
    let after_b = started_after(&acked_before, b_died);
    eprintln!("{} rows acknowledged after b died", after_b.len());
    assert!(!after_b.is_empty(), "a took commits after b died");
    on_node(&c, &after_b).await;

    // Without the flag: refused, naming b; nothing changes.
    let before = snapshot(&monitor).await;
    let events_before = monitor.events().await;
    let (out, took) = operator(&monitor, &["perform", "failover", "--wait", "60"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("node {b_id}")), "{}", text(&out));
    assert!(err.contains("--allow-data-loss"), "{}", text(&out));
    assert!(took < STEP, "refused at once, not after --wait");
    eprintln!("refusal ({:.2} s): {}", took.as_secs_f64(), err.trim());
    tokio::time::sleep(QUIET).await;
    assert_eq!(snapshot(&monitor).await, before);
    let events_after = monitor.events().await;
    assert_eq!(
        events_after,
        events_before,
        "new events: {:?}",
        &events_after[events_before.len().min(events_after.len())..]
    );
    not_promoted(&monitor, &c).await;

    // With it: c is promoted, the loss is recorded.
    let (out, took) = operator(
        &monitor,
        &["perform", "failover", "--allow-data-loss", "--wait", "60"],
    )
    .await;
    let returned = Instant::now();
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "perform failover --allow-data-loss took {:.2} s: {}",
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert_eq!(new_primary_among(&monitor, &[&c], STEP).await, 0);
    let events = monitor.events().await;
    print_events(
        &events,
        &["DATA LOSS", "perform failover", "no automatic failover"],
    );
    assert!(events.iter().any(|e| e.contains("DATA LOSS")), "{events:?}");

    let after = client.acks().len();
    client.wait_acks_on(c.port, after, 10, STEP).await;
    let acks = client.stop().await;
    let since: Vec<Ack> = acks.iter().filter(|a| a.at > returned).cloned().collect();
    assert!(since.iter().all(|a| a.port == c.port), "{since:?}");
    assert_eq!(writer::missing(&c, &since).await, Vec::<i64>::new());
    // Before b died a commit needed b or c: b may have taken some alone.
    let lost = writer::missing(&c, &acked_before).await;
    eprintln!(
        "{} of {} rows acknowledged before the command are not on c: {lost:?}",
        lost.len(),
        acked_before.len()
    );
    assert_eq!(writer::missing(&c, &after_b).await, Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failover_with_two_sync_standbys_needs_no_flag() {
    let dir = TestDir::new("k-ffo2");
    let monitor = MonitorProc::start(&dir).await;
    let _diag = diagnostics(&monitor);
    let (mut a, mut b, c) = primary_and_two_secondaries(&dir, &monitor).await;
    let (out, _) = operator(
        &monitor,
        &[
            "set",
            "formation",
            "number-sync-standbys",
            "2",
            "--wait",
            "60",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    eventually("ANY 2 on the primary", STEP, || async {
        (a.query("SHOW synchronous_standby_names")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("ANY 2 (pgpilot_node_2, pgpilot_node_3)"))
        .then_some(())
    })
    .await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 20, STEP).await;

    // With b dead a's commits wait for a second standby: a acknowledges
    // nothing more.
    let b_died = lose_b_then_a(&monitor, &mut a, &mut b, &c).await;
    let acked_before = client.acks();
    let after_b = started_after(&acked_before, b_died);
    eprintln!(
        "{} rows acknowledged in all, {} of them started after b died",
        acked_before.len(),
        after_b.len()
    );
    assert_eq!(after_b.len(), 0, "ANY 2 without b acknowledged {after_b:?}");
    // Each commit was on both standbys: c has them all before anything.
    on_node(&c, &acked_before).await;

    let (out, took) = operator(&monitor, &["perform", "failover", "--wait", "60"]).await;
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "perform failover took {:.2} s: {}",
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert_eq!(new_primary_among(&monitor, &[&c], STEP).await, 0);
    let events = monitor.events().await;
    print_events(&events, &["perform failover", "no automatic failover"]);
    assert!(
        !events.iter().any(|e| e.contains("DATA LOSS")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("perform failover asked by the operator")),
        "{events:?}"
    );

    let after = client.acks().len();
    client.wait_acks_on(c.port, after, 10, STEP).await;
    let acks = client.stop().await;
    assert_eq!(writer::missing(&c, &acks).await, Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failover_on_a_healthy_primary_is_refused_and_changes_nothing() {
    let dir = TestDir::new("k-ffo-no");
    let monitor = MonitorProc::start(&dir).await;
    let _diag = diagnostics(&monitor);
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    // Both probed healthy first: the prober's health events are not
    // changes the command made (the standby's first one once landed
    // inside the quiet window, on a loaded machine).
    for k in [&a, &b] {
        let probed = format!("node {} \"{}\" health changed from ", node_id(k), k.name);
        eventually("both nodes probed healthy", STEP, || async {
            let events = monitor.events().await;
            // The node's last health change made it good.
            let last = events.iter().rev().find(|e| e.contains(&probed));
            last.is_some_and(|e| e.contains("to good")).then_some(())
        })
        .await;
    }

    let before = snapshot(&monitor).await;
    let events_before = monitor.events().await;
    for args in [
        &["perform", "failover", "--wait", "60"][..],
        &["perform", "failover", "--allow-data-loss", "--wait", "60"][..],
    ] {
        let (out, took) = operator(&monitor, args).await;
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("perform switchover"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(
            err.contains(&format!("primary node {} is healthy", node_id(&a))),
            "{args:?}: {}",
            text(&out)
        );
        assert!(took < STEP, "{args:?} refused at once, not after --wait");
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(snapshot(&monitor).await, before);
    let events_after = monitor.events().await;
    assert_eq!(
        events_after,
        events_before,
        "new events: {:?}",
        &events_after[events_before.len().min(events_after.len())..]
    );
    assert_eq!(
        a.query("SELECT pg_is_in_recovery()::text").await.unwrap(),
        Some("false".into())
    );
    assert_eq!(
        b.query("SELECT pg_is_in_recovery()::text").await.unwrap(),
        Some("true".into())
    );
}
