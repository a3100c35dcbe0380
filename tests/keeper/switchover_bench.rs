//! Benchmark, not a test: what a planned switchover costs an application
//! (issue 9's targets: write unavailability <= 0.3 s median and <= 0.5 s
//! worst, no acknowledged commit lost, the command back within 2 s).
//! `./dev bench switchover` runs it; `./dev test` and CI skip it
//! (`#[ignore]`). It asserts no timing; it prints a report and writes a
//! CSV (`PGPILOT_BENCH_CSV`, default /tmp/pgpilot-bench/switchover.csv,
//! with the logs and a timeline per switchover beside it).
//!
//! Two nodes; a client commits one row every 20 ms through `show uri`'s
//! URI (target_session_attrs=read-write, reconnecting at once after an
//! error). `PGPILOT_BENCH_SWITCHOVERS` (default 10) switchovers, the
//! direction alternating, each once the group is back to primary and
//! secondary. For each:
//!
//! - write unavailability: from the last commit acknowledged by the old
//!   primary to the first acknowledged by the new one;
//! - the command's wall time (`pgpilot perform switchover --wait 60`,
//!   the real binary, until it exited);
//! - rows lost: acknowledged, missing on the final primary.
//!
//! Where the time goes comes from the keepers' logs (their own lines and
//! PostgreSQL's, forwarded) and the monitor's events, all on this
//! machine's clock: each switchover's marks, as offsets from the start of
//! the command, go into `<csv>.timeline.txt`, and the report gives the
//! median of each phase.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use pgpilot_proto::pb::ShowEventsRequest;

use crate::support::bench::{env_num, machine, ms, stats};
use crate::support::writer::{self, Ack, Writer};
use crate::support::*;
use crate::switchover::operator;

const STEP: Duration = Duration::from_secs(120);
const WRITE_EVERY: Duration = Duration::from_millis(20);
const CSV: &str = "/tmp/pgpilot-bench/switchover.csv";

/// (mark, on which node, what its log line contains), in the order they
/// happen.
const MARKS: &[(&str, Side, &str)] = &[
    (
        "old: draining goal",
        Side::Old,
        "transition primary -> draining",
    ),
    (
        "old: checkpoint done",
        Side::Old,
        "checkpoint before stopping took",
    ),
    (
        "old: fast shutdown",
        Side::Old,
        "received fast shutdown request",
    ),
    ("old: shut down", Side::Old, "database system is shut down"),
    ("old: draining reached", Side::Old, "reached draining"),
    (
        "new: wait_primary goal",
        Side::New,
        "transition secondary -> wait_primary",
    ),
    (
        "new: promote request",
        Side::New,
        "received promote request",
    ),
    (
        "new: writable",
        Side::New,
        "\"default_transaction_read_only\" changed to \"off\"",
    ),
    (
        "new: wait_primary reached",
        Side::New,
        "reached wait_primary",
    ),
];

/// The phases of the report: (name, from mark, to mark).
const PHASES: &[(&str, &str, &str)] = &[
    (
        "request -> old primary's goal",
        "command start",
        "old: draining goal",
    ),
    (
        "checkpoint (writes go on)",
        "old: draining goal",
        "old: checkpoint done",
    ),
    ("shutdown", "old: checkpoint done", "old: draining reached"),
    (
        "old report -> candidate's goal",
        "old: draining reached",
        "new: wait_primary goal",
    ),
    (
        "promote (straight to writable)",
        "new: wait_primary goal",
        "new: writable",
    ),
    ("client reconnect", "new: writable", "client: first new ack"),
    (
        "(gap) last old ack -> fast shutdown",
        "client: last old ack",
        "old: fast shutdown",
    ),
];

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Old,
    New,
}

#[derive(Debug, Default)]
struct Round {
    from: String,
    to: String,
    start: Option<Instant>,
    unavailable: Duration,
    command: Duration,
    /// Failed client attempts (refused, read-only, errors) in the gap.
    failures: usize,
    lost: usize,
    /// (mark, ms from the command's start), sorted by time.
    marks: Vec<(String, f64)>,
}

impl Round {
    fn mark(&self, name: &str) -> Option<f64> {
        self.marks.iter().find(|(m, _)| m == name).map(|(_, t)| *t)
    }
}

/// Signed milliseconds from `from` to `to`.
fn signed_ms(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// The time of the first line of `log` at or after `since` containing
/// `text` (the log's first field is RFC 3339 with microseconds).
fn first_line(log: &str, since: SystemTime, text: &str) -> Option<SystemTime> {
    let since: chrono::DateTime<chrono::Utc> = since.into();
    log.lines().find_map(|line| {
        let ts = line.split_whitespace().next()?;
        let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
        let t = t.with_timezone(&chrono::Utc);
        (t >= since && line.contains(text)).then(|| t.into())
    })
}

/// The monitor's events since `since`: (ms from it, node, description).
async fn events_since(monitor: &MonitorProc, since: SystemTime) -> Vec<(f64, String)> {
    let events = monitor
        .client()
        .await
        .show_events(ShowEventsRequest {
            formation: String::new(),
            count: 100,
        })
        .await
        .map(|r| r.into_inner().events)
        .unwrap_or_default();
    events
        .into_iter()
        .filter_map(|e| {
            let t: SystemTime = chrono::DateTime::parse_from_rfc3339(&e.time)
                .ok()?
                .with_timezone(&chrono::Utc)
                .into();
            let at = signed_ms(since, t);
            (at >= -1.0).then(|| (at, format!("monitor: [{}] {}", e.node_name, e.description)))
        })
        .collect()
}

/// One switchover from `old` to `new`, under the client's writes.
async fn one_round(
    monitor: &MonitorProc,
    client: &Writer,
    old: &KeeperProc,
    new: &KeeperProc,
    timeline: &mut String,
) -> Round {
    let before = client.acks().len();
    let (start, wall) = (Instant::now(), SystemTime::now());
    let (out, command) = operator(monitor, &["perform", "switchover"]).await;
    assert!(
        out.status.success(),
        "switchover {} -> {} failed: {}",
        old.name,
        new.name,
        String::from_utf8_lossy(&out.stderr)
    );
    client.wait_acks_on(new.port, before, 3, STEP).await;
    let acks = client.acks();
    let first_new = (before.max(1)..acks.len())
        .find(|&i| acks[i].port == new.port)
        .unwrap();
    let (last_old, first) = (&acks[first_new - 1], &acks[first_new]);
    let failures = client
        .failures()
        .iter()
        .filter(|f| f.at > last_old.at && f.at < first.at)
        .count();
    // The old primary back as a secondary, the new one primary: the next
    // switchover starts from rest, and the logs are complete.
    wait_state(monitor, &old.name, "secondary", STEP).await;
    wait_state(monitor, &new.name, "primary", STEP).await;

    let mut marks = vec![
        ("command start".to_string(), 0.0),
        ("command end".to_string(), ms(command)),
        (
            "client: last old ack".into(),
            signed_ms(wall, last_old.wall),
        ),
        ("client: first new ack".into(), signed_ms(wall, first.wall)),
    ];
    let (old_log, new_log) = (old.log(), new.log());
    for (name, side, text) in MARKS {
        let log = if *side == Side::Old {
            &old_log
        } else {
            &new_log
        };
        if let Some(t) = first_line(log, wall, text) {
            marks.push((name.to_string(), signed_ms(wall, t)));
        }
    }
    marks.sort_by(|x, y| x.1.total_cmp(&y.1));
    let mut lines: Vec<(f64, String)> = marks.iter().map(|(m, t)| (*t, m.clone())).collect();
    lines.extend(events_since(monitor, wall).await);
    lines.sort_by(|x, y| x.0.total_cmp(&y.0));
    let _ = writeln!(
        timeline,
        "--- switchover {}: {} -> {}",
        timeline.matches("--- ").count() + 1,
        old.name,
        new.name
    );
    for (t, what) in lines.iter().filter(|(t, _)| *t < ms(command) + 2000.0) {
        let _ = writeln!(timeline, "{t:>9.1} ms  {what}");
    }
    Round {
        from: old.name.clone(),
        to: new.name.clone(),
        start: Some(start),
        unavailable: first.at - last_old.at,
        command,
        failures,
        lost: 0,
        marks,
    }
}

fn report(rounds: &[Round], acked: usize, lost: usize) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "\n=== switchover: {} planned switchovers, two nodes, a commit every {} ms ===",
        rounds.len(),
        WRITE_EVERY.as_millis()
    );
    let _ = writeln!(r, "machine: {}", machine());
    let _ = writeln!(
        r,
        "{:>3} {:>9} {:>15} {:>11} {:>9} {:>5}",
        "#", "from->to", "unavailable_ms", "command_ms", "failures", "lost"
    );
    for (i, x) in rounds.iter().enumerate() {
        let _ = writeln!(
            r,
            "{:>3} {:>9} {:>15.1} {:>11.1} {:>9} {:>5}",
            i + 1,
            format!("{}->{}", x.from, x.to),
            ms(x.unavailable),
            ms(x.command),
            x.failures,
            x.lost
        );
    }
    let line = |what: &str, v: &[f64]| match stats(v) {
        Some((lo, med, hi)) => {
            format!("{what}: min {lo:.1} ms, median {med:.1} ms, max {hi:.1} ms")
        }
        None => format!("{what}: no figures"),
    };
    let un: Vec<f64> = rounds.iter().map(|x| ms(x.unavailable)).collect();
    let cmd: Vec<f64> = rounds.iter().map(|x| ms(x.command)).collect();
    let _ = writeln!(r, "{}", line("write unavailability", &un));
    let _ = writeln!(r, "{}", line("command wall time   ", &cmd));
    let _ = writeln!(
        r,
        "rows lost: {lost} of {acked} acknowledged (on the final primary)"
    );
    let _ = writeln!(r, "where the time goes (median over the switchovers, ms):");
    for (name, from, to) in PHASES {
        let v: Vec<f64> = rounds
            .iter()
            .filter_map(|x| Some(x.mark(to)? - x.mark(from)?))
            .collect();
        let _ = match stats(&v) {
            Some((lo, med, hi)) => writeln!(
                r,
                "  {name:<38} {med:>7.1}   (min {lo:.1}, max {hi:.1}, {} of {})",
                v.len(),
                rounds.len()
            ),
            None => writeln!(r, "  {name:<38}       -   (no marks)"),
        };
    }
    r
}

fn write_csv(path: &std::path::Path, rounds: &[Round]) -> std::io::Result<()> {
    let mut s = String::from("switchover,from,to,unavailable_ms,command_ms,failures,lost");
    for (name, _, _) in PHASES {
        let _ = write!(s, ",{name}");
    }
    s.push('\n');
    for (i, x) in rounds.iter().enumerate() {
        let _ = write!(
            s,
            "{},{},{},{:.3},{:.3},{},{}",
            i + 1,
            x.from,
            x.to,
            ms(x.unavailable),
            ms(x.command),
            x.failures,
            x.lost
        );
        for (_, from, to) in PHASES {
            let v = (|| Some(x.mark(to)? - x.mark(from)?))();
            let _ = write!(s, ",{}", v.map_or(String::new(), |v| format!("{v:.3}")));
        }
        s.push('\n');
    }
    std::fs::write(path, s)
}

/// Which round each lost commit was acknowledged in.
fn attribute_lost(rounds: &mut [Round], acks: &[Ack], lost: &[i64]) {
    for id in lost {
        let Some(ack) = acks.iter().find(|a| a.id == *id) else {
            continue;
        };
        if let Some(r) = rounds
            .iter_mut()
            .rev()
            .find(|r| r.start.is_some_and(|s| s <= ack.at))
        {
            r.lost += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: ./dev bench switchover"]
async fn switchover_bench() {
    let n = env_num("PGPILOT_BENCH_SWITCHOVERS", 10) as usize;
    let csv = std::path::PathBuf::from(std::env::var("PGPILOT_BENCH_CSV").unwrap_or(CSV.into()));
    let started = Instant::now();
    let dir = TestDir::new("bench-swo");
    let monitor = MonitorProc::start(&dir).await;
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 10, STEP).await;

    let nodes = [a, b];
    let mut rounds = Vec::new();
    let mut timeline = String::new();
    for i in 0..n {
        let (old, new) = (&nodes[i % 2], &nodes[1 - i % 2]);
        let x = one_round(&monitor, &client, old, new, &mut timeline).await;
        eprintln!(
            "switchover {}: {} -> {}: writes unavailable {:.1} ms, command {:.1} ms",
            i + 1,
            x.from,
            x.to,
            ms(x.unavailable),
            ms(x.command)
        );
        rounds.push(x);
    }
    let acks = client.stop().await;
    let last = &nodes[n % 2];
    let lost = writer::missing(last, &acks).await;
    attribute_lost(&mut rounds, &acks, &lost);

    let out_dir = csv.parent().unwrap_or(std::path::Path::new("."));
    let _ = std::fs::create_dir_all(out_dir);
    let stem = csv.file_stem().unwrap().to_string_lossy().into_owned();
    for f in ["a.log", "b.log", "monitor.log"] {
        let _ = std::fs::copy(dir.join(f), out_dir.join(format!("{stem}.{f}")));
    }
    let _ = std::fs::write(out_dir.join(format!("{stem}.timeline.txt")), &timeline);
    println!("{}", report(&rounds, acks.len(), lost.len()));
    println!(
        "total {:.1} s; CSV: {} ({}); timelines and logs beside it",
        started.elapsed().as_secs_f64(),
        csv.display(),
        match write_csv(&csv, &rounds) {
            Ok(()) => "written".to_string(),
            Err(e) => format!("not written: {e}"),
        }
    );
}
