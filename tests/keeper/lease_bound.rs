//! Benchmark, not a test: how soon a node whose lease ran out stops
//! accepting writes, measured on real processes ("Never stuck": the bound
//! the monitor's lease gate relies on). `./dev bench` runs it; `./dev
//! test` and CI skip it (`#[ignore]`). It asserts no timing; it prints a
//! report and writes /tmp/pgpilot-bench/lease_bound.csv.
//!
//! Each round freezes the whole primary node, as a machine that stops
//! (SIGSTOP to its postmaster, its keeper and every child of either),
//! until the monitor has failed over (the old primary assigned draining,
//! demote_timeout or demoted, the standby writable in wait_primary or
//! primary), and at least lease + clock_margin. Then every process gets
//! SIGCONT back to back (children, postmaster, keeper: the keeper last, the
//! most room for PostgreSQL), and the bench measures
//!
//! (a) how long until the old postmaster is gone (exited: /proc/PID/stat
//!     missing or a zombie), polled every 1 ms;
//! (b) how many commits a client connection opened before the freeze gets
//!     acknowledged after SIGCONT: an INSERT (its own transaction) sent
//!     while the node is frozen, so in flight at resume, then more until
//!     the connection dies, with statement_timeout 100 ms
//!     (`PGPILOT_BENCH_STATEMENT_TIMEOUT_MS`) and synchronous_commit as
//!     configured;
//! (c) when the keeper logged its fencing line, against SIGCONT (wall
//!     clock, the log's microsecond timestamps), and when it forwarded
//!     PostgreSQL's "received immediate shutdown request".
//!
//! Also reported: the old primary's silence when the monitor opened the
//! gate (its event says "silent 4.6 s") and how long sending the SIGCONTs
//! took (the first processes resumed compete with the sender for the CPUs;
//! every figure counts from the keeper's SIGCONT, the last one).
//!
//! The old primary then rejoins as a secondary by itself, and the next
//! round freezes the other node: the roles alternate in one cluster.
//! `PGPILOT_BENCH_ROUNDS` (default 5) sets the rounds. The keepers' and
//! the monitor's logs are copied beside the CSV.
//!
//! What the figures mean: the gate opens lease + clock_margin after the
//! monitor *received* the old primary's last report; the keeper's lease
//! ends at most one lease after it *sent* that report, so the node must
//! stop within clock_margin of its lease's end. A frozen node resumes with
//! its lease long over: what (a) measures is the fencing reaction after
//! SIGCONT, the part of the bound that is the keeper's. Meanwhile (b)
//! checks that the gap costs no acknowledged commit (nobody streams from
//! the old primary any more, so a commit waits for a synchronous standby
//! that is gone). A statement_timeout that cancels that wait acknowledges
//! the local commit (with a WARNING): the short timeout probes that race,
//! which the fencing must win by killing the backend first.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgpilot_proto::pb::ShowEventsRequest;

use crate::support::bench::{env_num, ms, opt_ms, stats};
use crate::support::*;

const STEP: Duration = Duration::from_secs(120);
/// The monitor's defaults (the test monitor runs with them).
const LEASE: Duration = Duration::from_secs(3);
const CLOCK_MARGIN: Duration = Duration::from_secs(1);
/// How long the failover may take from the freeze.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);
/// How long the old postmaster may take to go after SIGCONT before the
/// round says it never fenced.
const GONE_DEADLINE: Duration = Duration::from_secs(30);
const CSV: &str = "/tmp/pgpilot-bench/lease_bound.csv";

/// Every process of a frozen node; continued on drop if still stopped
/// (a failed bench leaves nothing stopped behind).
struct Frozen {
    /// In SIGCONT order: children, then the postmaster, the keeper last.
    pids: Vec<i32>,
    stopped: bool,
}

fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

/// The process exited: no /proc entry, or a zombie not yet reaped.
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

impl Frozen {
    /// SIGSTOP the postmaster first (it forks no more), then the keeper,
    /// then every child of either, until no new one turns up.
    fn node(keeper: i32, postmaster: i32) -> Frozen {
        let mut parents = vec![postmaster, keeper];
        for p in &parents {
            kill(Pid::from_raw(*p), Signal::SIGSTOP).expect("SIGSTOP");
        }
        let mut children: Vec<i32> = Vec::new();
        loop {
            let mut found = false;
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if parents.contains(&pid) || children.contains(&pid) {
                    continue;
                }
                if ppid_of(pid).is_some_and(|pp| parents.contains(&pp) || children.contains(&pp))
                    && kill(Pid::from_raw(pid), Signal::SIGSTOP).is_ok()
                {
                    children.push(pid);
                    found = true;
                }
            }
            if !found {
                break;
            }
        }
        // SIGCONT order: children, postmaster, keeper.
        children.append(&mut parents);
        Frozen {
            pids: children,
            stopped: true,
        }
    }

    /// SIGCONT to every process back to back; returns the instant after
    /// the last one and how long the sending took.
    fn resume(&mut self) -> (Instant, SystemTime, Duration) {
        let start = Instant::now();
        for pid in &self.pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.stopped = false;
        (now, wall, now - start)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.stopped {
            for pid in &self.pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
            }
        }
    }
}

/// One round's figures.
#[derive(Debug, Default, Clone)]
struct Round {
    round: usize,
    old_primary: String,
    processes: usize,
    /// SIGSTOP to SIGCONT.
    freeze: Duration,
    /// SIGSTOP to the monitor showing the failover.
    failover_seen: Duration,
    /// The old primary's silence when the gate opened, from the monitor's
    /// event ("silent 4.1 s"), in seconds.
    gate_silence_s: Option<f64>,
    sigcont_spread: Duration,
    /// (a) SIGCONT to the postmaster gone; None: not within GONE_DEADLINE.
    postmaster_gone: Option<Duration>,
    /// SIGCONT to the client connection failing for good.
    conn_dead: Option<Duration>,
    /// (b) commits acknowledged after SIGCONT.
    acked_after: u32,
    /// Statements cancelled by statement_timeout after SIGCONT.
    cancelled: u32,
    /// How the connection ended.
    conn_end: String,
    /// (c) SIGCONT to the keeper's fencing line (signed, wall clock).
    fence_log_ms: Option<f64>,
    /// Which fencing path logged: "watchdog" or "loop".
    fence_path: String,
    /// SIGCONT to PostgreSQL's "received immediate shutdown request", as
    /// forwarded into the keeper's log (its timestamp, not PostgreSQL's).
    pg_sigquit_ms: Option<f64>,
    /// "canceling wait for synchronous replication" lines after the
    /// freeze: commits acknowledged locally by a cancel.
    syncrep_cancels: usize,
}

/// The lines of a keeper's `log` logged at or after `since`, with their
/// time (the log's first field, RFC 3339 with microseconds).
fn lines_since(log: &str, since: SystemTime) -> impl Iterator<Item = (SystemTime, &str)> {
    let since: chrono::DateTime<chrono::Utc> = since.into();
    log.lines().filter_map(move |line| {
        let ts = line.split_whitespace().next()?;
        let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
        let t = t.with_timezone(&chrono::Utc);
        (t >= since).then_some((t.into(), line))
    })
}

/// The first fencing line of `log` at or after `since`: (its time, path).
fn fencing_line(log: &str, since: SystemTime) -> Option<(SystemTime, &'static str)> {
    lines_since(log, since).find_map(|(t, line)| {
        if !line.contains("fencing:") {
            return None;
        }
        let path = if line.contains("while the keeper was busy") {
            "watchdog"
        } else {
            "loop"
        };
        Some((t, path))
    })
}

/// Signed milliseconds from `from` to `to`.
fn signed_ms(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// The old primary's silence named by the latest gate event about it.
async fn gate_silence(
    monitor: &MonitorProc,
    old_id: Option<i64>,
    since: SystemTime,
) -> Option<f64> {
    let since: chrono::DateTime<chrono::Utc> = since.into();
    let events = monitor
        .client()
        .await
        .show_events(ShowEventsRequest {
            formation: String::new(),
            count: 50,
        })
        .await
        .ok()?
        .into_inner()
        .events;
    let old = format!("node {} lease expired (silent ", old_id?);
    events.iter().rev().find_map(|e| {
        let t = chrono::DateTime::parse_from_rfc3339(&e.time).ok()?;
        if t.with_timezone(&chrono::Utc) < since {
            return None;
        }
        let rest = e.description.split_once(&old)?.1;
        rest.split_whitespace().next()?.parse().ok()
    })
}

async fn node_id(monitor: &MonitorProc, name: &str) -> Option<i64> {
    monitor
        .client()
        .await
        .show_state(pgpilot_proto::pb::ShowStateRequest::default())
        .await
        .ok()?
        .into_inner()
        .nodes
        .into_iter()
        .find(|n| n.name == name)
        .map(|n| n.node_id)
}

/// How the client's commits after SIGCONT went.
#[derive(Debug, Default)]
struct ClientEnd {
    acked: Vec<Instant>,
    cancelled: u32,
    dead_at: Option<Instant>,
    how: String,
}

/// INSERTs (each its own transaction) on `conn` until the connection
/// fails with anything but a statement timeout; the first is sent at once,
/// while the node is frozen.
async fn write_until_dead(mut conn: sqlx::PgConnection, round: usize) -> ClientEnd {
    let mut end = ClientEnd::default();
    let give_up = Instant::now() + Duration::from_secs(120);
    for i in 1.. {
        let sql = format!("INSERT INTO bench_lease VALUES ({round}, {i})");
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            sqlx::query(&sql).execute(&mut conn),
        )
        .await;
        match r {
            Ok(Ok(_)) => end.acked.push(Instant::now()),
            Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("57014") => {
                end.cancelled += 1
            }
            Ok(Err(e)) => {
                end.dead_at = Some(Instant::now());
                end.how = e.to_string();
                return end;
            }
            Err(_) => {
                end.how = "no answer within 60 s".into();
                return end;
            }
        }
        if Instant::now() > give_up {
            end.how = "still alive after 120 s".into();
            return end;
        }
    }
    unreachable!()
}

/// Polls /proc every millisecond until `pid` exited.
fn wait_exited(pid: i32, from: Instant) -> Option<Duration> {
    loop {
        if exited(pid) {
            return Some(from.elapsed());
        }
        if from.elapsed() > GONE_DEADLINE {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn one_round(
    monitor: &MonitorProc,
    old: &KeeperProc,
    new: &KeeperProc,
    round: usize,
    stmt_timeout_ms: u64,
    settings: &mut Option<(String, String)>,
) -> Round {
    let mut out = Round {
        round,
        old_primary: old.name.clone(),
        ..Round::default()
    };
    let old_id = node_id(monitor, &old.name).await;

    // The client: connected before the freeze, one commit acknowledged
    // (by the synchronous standby) to show it works.
    let mut conn = old.connect().await.expect("connect to the primary");
    sqlx::query(&format!("INSERT INTO bench_lease VALUES ({round}, 0)"))
        .execute(&mut conn)
        .await
        .expect("a commit before the freeze");
    if settings.is_none() {
        let show = |s: &'static str| {
            let q = format!("SHOW {s}");
            async move { old.query(&q).await.ok().flatten().unwrap_or_default() }
        };
        *settings = Some((
            show("synchronous_commit").await,
            show("synchronous_standby_names").await,
        ));
    }
    sqlx::query(&format!("SET statement_timeout = {stmt_timeout_ms}"))
        .execute(&mut conn)
        .await
        .unwrap();

    let keeper_pid = old.child.as_ref().expect("keeper runs").id() as i32;
    let postmaster = old.postmaster_pid().expect("the old primary's postmaster");
    let stopped_at = Instant::now();
    let stopped_wall = SystemTime::now();
    let mut frozen = Frozen::node(keeper_pid, postmaster);
    out.processes = frozen.pids.len();

    // A write in flight at resume.
    let client = tokio::spawn(write_until_dead(conn, round));

    let done = eventually("the failover", FAILOVER_DEADLINE, || async {
        let states = node_states(&mut monitor.client().await).await;
        let old_goal = states.get(&old.name).map(|(_, g)| g.as_str());
        let new_writable = states
            .get(&new.name)
            .is_some_and(|(r, g)| r == g && (r == "wait_primary" || r == "primary"));
        (new_writable && matches!(old_goal, Some("draining" | "demote_timeout" | "demoted")))
            .then_some(())
    });
    done.await;
    out.failover_seen = stopped_at.elapsed();
    let min_freeze = LEASE + CLOCK_MARGIN + Duration::from_secs(1);
    if let Some(rest) = min_freeze.checked_sub(stopped_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    // Resume and measure on a thread of its own: nothing else runs there.
    let watcher = std::thread::spawn(move || {
        let (at, wall, spread) = frozen.resume();
        (at, wall, spread, wait_exited(postmaster, at))
    });
    let (resumed, resumed_wall, spread, gone) = watcher.join().unwrap();
    out.freeze = resumed - stopped_at;
    out.sigcont_spread = spread;
    out.postmaster_gone = gone;

    let end = client.await.unwrap();
    out.acked_after = end.acked.iter().filter(|t| **t >= resumed).count() as u32;
    out.cancelled = end.cancelled;
    out.conn_dead = end.dead_at.map(|t| t.saturating_duration_since(resumed));
    out.conn_end = end.how;

    // The fencing line may come a moment after the postmaster went.
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut line = fencing_line(&old.log(), stopped_wall);
    while line.is_none() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
        line = fencing_line(&old.log(), stopped_wall);
    }
    if let Some((t, path)) = line {
        out.fence_log_ms = Some(signed_ms(resumed_wall, t));
        out.fence_path = path.into();
    }
    let log = old.log();
    out.pg_sigquit_ms = lines_since(&log, stopped_wall)
        .find(|(_, l)| l.contains("received immediate shutdown request"))
        .map(|(t, _)| signed_ms(resumed_wall, t));
    out.syncrep_cancels = lines_since(&log, stopped_wall)
        .filter(|(_, l)| l.contains("canceling wait for synchronous replication"))
        .count();
    out.gate_silence_s = gate_silence(monitor, old_id, stopped_wall).await;
    out
}

fn report(rounds: &[Round], settings: &(String, String), stmt_timeout_ms: u64) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "\n=== lease bound: fencing after a whole-node freeze ({} rounds, {} cores) ===",
        rounds.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        r,
        "lease {} ms, clock_margin {} ms; client: synchronous_commit={}, \
         synchronous_standby_names='{}', statement_timeout={} ms",
        LEASE.as_millis(),
        CLOCK_MARGIN.as_millis(),
        settings.0,
        settings.1,
        stmt_timeout_ms
    );
    let _ = writeln!(
        r,
        "{:>5} {:>4} {:>5} {:>9} {:>9} {:>8} {:>8} {:>11} {:>10} {:>6} {:>6} {:>12} {:>10}",
        "round",
        "node",
        "procs",
        "freeze_ms",
        "fail_ms",
        "gate_s",
        "cont_us",
        "(a)gone_ms",
        "conn_ms",
        "(b)ack",
        "cancel",
        "(c)fence_ms",
        "pg_quit_ms"
    );
    for x in rounds {
        let _ = writeln!(
            r,
            "{:>5} {:>4} {:>5} {:>9.0} {:>9.0} {:>8} {:>8.0} {:>11} {:>10} {:>6} {:>6} {:>12} {:>10}",
            x.round,
            x.old_primary,
            x.processes,
            ms(x.freeze),
            ms(x.failover_seen),
            x.gate_silence_s.map_or("-".into(), |s| format!("{s:.1}")),
            x.sigcont_spread.as_secs_f64() * 1e6,
            opt_ms(x.postmaster_gone),
            opt_ms(x.conn_dead),
            x.acked_after,
            x.cancelled,
            x.fence_log_ms
                .map_or("-".into(), |m| format!("{m:.1} {}", x.fence_path)),
            x.pg_sigquit_ms.map_or("-".into(), |m| format!("{m:.1}")),
        );
    }
    for x in rounds {
        let _ = writeln!(
            r,
            "round {}: the client connection ended: {}",
            x.round, x.conn_end
        );
    }
    let gone: Vec<f64> = rounds
        .iter()
        .filter_map(|x| x.postmaster_gone.map(ms))
        .collect();
    let never = rounds.len() - gone.len();
    let fence: Vec<f64> = rounds.iter().filter_map(|x| x.fence_log_ms).collect();
    let conn: Vec<f64> = rounds.iter().filter_map(|x| x.conn_dead.map(ms)).collect();
    let acked: u32 = rounds.iter().map(|x| x.acked_after).sum();
    let quit: Vec<f64> = rounds.iter().filter_map(|x| x.pg_sigquit_ms).collect();
    let syncrep: usize = rounds.iter().map(|x| x.syncrep_cancels).sum();
    let line = |what: &str, v: &[f64]| match stats(v) {
        Some((lo, med, hi)) => {
            format!("{what}: min {lo:.1} ms, median {med:.1} ms, max {hi:.1} ms")
        }
        None => format!("{what}: no figures"),
    };
    let _ = writeln!(r, "{}", line("(a) SIGCONT -> old postmaster gone", &gone));
    let _ = writeln!(
        r,
        "{}",
        line("    SIGCONT -> client connection dead", &conn)
    );
    let _ = writeln!(
        r,
        "{}",
        line("(c) SIGCONT -> keeper's fencing line", &fence)
    );
    let _ = writeln!(
        r,
        "{}",
        line(
            "    SIGCONT -> PostgreSQL logs the immediate shutdown",
            &quit
        )
    );
    let _ = writeln!(
        r,
        "(b) commits acknowledged after SIGCONT: {acked} in all (expected 0); \
         synchronous-replication waits cancelled in PostgreSQL's log: {syncrep}"
    );
    if never > 0 {
        let _ = writeln!(
            r,
            "!!! {never} round(s): the old postmaster was still there {} s after SIGCONT",
            GONE_DEADLINE.as_secs()
        );
    }
    if acked > 0 {
        let _ = writeln!(
            r,
            "!!! the old primary acknowledged commits after it resumed"
        );
    }
    if let Some((_, _, hi)) = stats(&gone) {
        let margin = ms(CLOCK_MARGIN);
        let _ = writeln!(
            r,
            "bound: a frozen primary resumes with its lease over and is gone within {hi:.1} ms \
             of SIGCONT (worst round), {:.1}% of the {margin:.0} ms clock_margin. The gate opens \
             lease + margin after the monitor received the last report; the keeper's lease ends \
             at most one lease after it sent it, so the node must stop within the margin of its \
             lease's end: measured reaction {hi:.1} ms < {margin:.0} ms.",
            100.0 * hi / margin
        );
    }
    r
}

fn write_csv(rounds: &[Round]) -> std::io::Result<()> {
    let path = std::path::Path::new(CSV);
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut s = String::from(
        "round,old_primary,processes,freeze_ms,failover_seen_ms,gate_silence_s,sigcont_spread_us,\
         postmaster_gone_ms,conn_dead_ms,acked_after_sigcont,cancelled,fence_log_ms,fence_path,\
         pg_sigquit_ms,syncrep_cancels,lease_ms,clock_margin_ms\n",
    );
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for x in rounds {
        let _ = writeln!(
            s,
            "{},{},{},{:.3},{:.3},{},{:.1},{},{},{},{},{},{},{},{},{},{}",
            x.round,
            x.old_primary,
            x.processes,
            ms(x.freeze),
            ms(x.failover_seen),
            o(x.gate_silence_s),
            x.sigcont_spread.as_secs_f64() * 1e6,
            o(x.postmaster_gone.map(ms)),
            o(x.conn_dead.map(ms)),
            x.acked_after,
            x.cancelled,
            o(x.fence_log_ms),
            x.fence_path,
            o(x.pg_sigquit_ms),
            x.syncrep_cancels,
            LEASE.as_millis(),
            CLOCK_MARGIN.as_millis()
        );
    }
    std::fs::write(path, s)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: ./dev bench"]
async fn lease_bound() {
    let rounds = env_num("PGPILOT_BENCH_ROUNDS", 5) as usize;
    let stmt_timeout_ms = env_num("PGPILOT_BENCH_STATEMENT_TIMEOUT_MS", 100);
    let started = Instant::now();
    let dir = TestDir::new("bench-lease");
    let monitor = MonitorProc::start(&dir).await;
    let (a, b) = primary_and_secondary(&dir, &monitor).await;
    a.query("CREATE TABLE bench_lease (round int, i int)")
        .await
        .unwrap();
    let nodes = [a, b];
    let mut primary = 0;
    let mut results = Vec::new();
    let mut settings = None;
    for round in 1..=rounds {
        let (old, new) = (&nodes[primary], &nodes[1 - primary]);
        let t = Instant::now();
        let x = one_round(&monitor, old, new, round, stmt_timeout_ms, &mut settings).await;
        eprintln!(
            "round {round}: {} frozen {:.1} s, gone {} ms after SIGCONT, {} acknowledged",
            x.old_primary,
            x.freeze.as_secs_f64(),
            opt_ms(x.postmaster_gone),
            x.acked_after
        );
        let fenced = x.postmaster_gone.is_some();
        results.push(x);
        if !fenced {
            break;
        }
        // The old primary rejoins by itself; the new one reports primary
        // once it is a synchronous standby again.
        wait_state(&monitor, &old.name, "secondary", STEP).await;
        wait_state(&monitor, &new.name, "primary", STEP).await;
        eprintln!(
            "round {round} done in {:.1} s (rejoin included)",
            t.elapsed().as_secs_f64()
        );
        primary = 1 - primary;
    }
    // The logs, for a look behind the figures.
    let out_dir = std::path::Path::new(CSV).parent().unwrap();
    let _ = std::fs::create_dir_all(out_dir);
    for f in ["a.log", "b.log", "monitor.log"] {
        let _ = std::fs::copy(dir.join(f), out_dir.join(format!("lease_bound.{f}")));
    }
    let text = report(&results, settings.as_ref().unwrap(), stmt_timeout_ms);
    println!("{text}");
    println!(
        "total {:.1} s; CSV: {CSV} ({})",
        started.elapsed().as_secs_f64(),
        match write_csv(&results) {
            Ok(()) => "written".to_string(),
            Err(e) => format!("not written: {e}"),
        }
    );
}
