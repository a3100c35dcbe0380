//! Benchmark, not a test (issue #10 item 4): what a failover costs an
//! application, and how much of that pgpilot itself spends. `./dev bench
//! failover` runs it; `cargo test` and CI skip it (`#[ignore]`). Root
//! only, as the rest of the fault suite. It asserts no timing: it prints
//! a report (bench/report.rs) and writes every figure to a CSV. A round
//! whose invariants fail (those of [`Cluster::check`], and for `freeze`
//! that of freeze.rs) fails the test once the report is printed.
//!
//! Every round runs on a cluster of its own ([`Cluster`]: a monitor and
//! nodes a (primary) and b, each in its own network namespace), the writer
//! committing every `PGPILOT_BENCH_WRITE_MS` through the formation URI
//! with [`ATTEMPT_TIMEOUT`] per attempt, the checker trying each node as
//! often. The scenarios, each `PGPILOT_BENCH_ROUNDS` times:
//!
//! - `kill`: SIGKILL of a's keeper and postmaster (kill.rs, scenario a);
//! - `freeze`: SIGSTOP of a's keeper, postmaster and every child for
//!   [`HOLD`], then SIGCONT (freeze.rs, scenario b);
//! - `partition`: a cut off from the monitor and b for [`HOLD`], then
//!   healed (partition.rs, scenario c);
//! - `switchover`: `pgpilot perform switchover`, as an operator runs it;
//! - `stress`, once, only when asked for: `stress-ng` on the whole
//!   machine for `PGPILOT_BENCH_STRESS_SECS`, no fault; it must cause no
//!   failover and lose no commit.
//!
//! The figures, from the fault (the first signal, the cut in place, the
//! command's start):
//! the first commit acknowledged by the new primary to the writer and to
//! the checker, the longest time without a writer commit, acknowledged
//! commits missing on the final primary, and checker commits the old
//! primary acknowledged after the fault.

mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::bench::env_num;
use crate::support::*;

use report::Round;

/// How long a freeze or a partition lasts: past every failover timeout
/// of the defaults, so that the new primary took writes well before the
/// old one comes back (and the old one's comeback is measured too: late
/// answers, rejoining).
const HOLD: Duration = Duration::from_secs(20);
/// The writer's attempt timeout (per host and per commit) in the bench:
/// an application that gives a node 1 s. The app-writer figure includes
/// it whenever the writer was waiting on the old primary at the fault.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const CSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/failover_bench.csv");
const FAULTS: [&str; 4] = ["kill", "freeze", "partition", "switchover"];

/// What the environment asks for.
pub struct Config {
    pub rounds: usize,
    /// Among [`FAULTS`], in the order given.
    pub faults: Vec<&'static str>,
    /// How long `stress` runs, if it does.
    pub stress: Option<Duration>,
    pub write_every: Duration,
    pub attempt_timeout: Duration,
    pub csv: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let names: Vec<String> = match std::env::var("PGPILOT_BENCH_SCENARIOS") {
            Ok(v) => v.split(',').map(|s| s.trim().to_string()).collect(),
            Err(_) => FAULTS.iter().map(|s| s.to_string()).collect(),
        };
        let mut faults = Vec::new();
        let mut stress = std::env::var("PGPILOT_BENCH_STRESS_SECS").is_ok();
        for n in names.iter().filter(|n| !n.is_empty()) {
            match FAULTS.iter().find(|f| *f == n) {
                Some(f) if !faults.contains(f) => faults.push(*f),
                Some(_) => {}
                None if n == "stress" => stress = true,
                None => {
                    panic!("PGPILOT_BENCH_SCENARIOS: unknown scenario {n}: {FAULTS:?} or stress")
                }
            }
        }
        let stress_secs = env_num("PGPILOT_BENCH_STRESS_SECS", 600);
        Config {
            rounds: env_num("PGPILOT_BENCH_ROUNDS", 5) as usize,
            faults,
            stress: stress.then(|| Duration::from_secs(stress_secs)),
            write_every: Duration::from_millis(env_num("PGPILOT_BENCH_WRITE_MS", 20)),
            attempt_timeout: ATTEMPT_TIMEOUT,
            csv: std::env::var("PGPILOT_BENCH_CSV").map_or(CSV.into(), PathBuf::from),
        }
    }

    fn load(&self, scenario: &str) -> Load {
        Load {
            write_every: self.write_every,
            attempt_timeout: self.attempt_timeout,
            check_every: self.check_every(scenario),
        }
    }

    /// As often as the writer where a failover is measured: the checker's
    /// figure is late by up to one interval (it tries b after b became
    /// writable). Under `stress`, with no such figure, the scenarios'
    /// pace: the split-brain check compares every pair of the checker's
    /// commits, and 10 minutes at 20 ms would make that check slow.
    fn check_every(&self, scenario: &str) -> Duration {
        match scenario {
            "stress" => crate::checker::EVERY,
            _ => self.write_every,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: ./dev bench failover"]
async fn failover_bench() {
    if !can_run("failover_bench") {
        return;
    }
    let cfg = Arc::new(Config::from_env());
    let started = Instant::now();
    let mut rounds: Vec<Round> = Vec::new();
    // Round after round of every scenario rather than one scenario after
    // another: a slow spell of the machine spreads over all of them.
    let mut todo: Vec<(&'static str, usize)> = (1..=cfg.rounds)
        .flat_map(|round| cfg.faults.iter().map(move |&s| (s, round)))
        .collect();
    if cfg.stress.is_some() {
        todo.push(("stress", 1));
    }
    for (scenario, round) in todo {
        rounds.push(run_round(&cfg, scenario, round).await);
        // Every line as soon as it is known: a benchmark stopped halfway
        // keeps what it measured.
        let _ = report::write_csv(&cfg.csv, &rounds);
    }
    println!("{}", report::text(&cfg, &rounds));
    println!(
        "total {:.1} s; CSV: {} ({})",
        started.elapsed().as_secs_f64(),
        cfg.csv.display(),
        match report::write_csv(&cfg.csv, &rounds) {
            Ok(()) => "written".to_string(),
            Err(e) => format!("not written: {e}"),
        }
    );
    let failed: Vec<String> = rounds
        .iter()
        .filter_map(|r| Some(format!("{} {}: {}", r.scenario, r.round, r.error.as_ref()?)))
        .collect();
    assert!(failed.is_empty(), "rounds failed:\n{}", failed.join("\n"));
}

/// One round in a task of its own, so that a panic (a deadline, a failed
/// invariant) ends the round, not the benchmark. The round leaves its
/// figures in `slot` before it checks its invariants: a failed round is
/// reported with what it measured.
async fn run_round(cfg: &Arc<Config>, scenario: &'static str, round: usize) -> Round {
    eprintln!("=== failover_bench: {scenario} round {round} ===");
    let slot = Arc::new(Mutex::new(None));
    let task = tokio::spawn({
        let (cfg, slot) = (cfg.clone(), slot.clone());
        async move {
            let name = format!("fb-{scenario}{round}");
            let c = Cluster::start_with(&name, cfg.load(scenario)).await;
            match scenario {
                "stress" => stress(c, &cfg, slot).await,
                _ => fault(c, scenario, round, slot).await,
            }
        }
    });
    let result = task.await;
    let mut r = slot
        .lock()
        .unwrap()
        .take()
        .unwrap_or_else(|| Round::new(scenario, round));
    if let Err(e) = result {
        r.error = Some(panic_text(e));
    }
    eprintln!(
        "=== failover_bench: {scenario} round {round}: {} ===",
        r.summary()
    );
    r
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// A fault on a (or a switchover from it), b the new primary.
async fn fault(
    mut c: Cluster,
    scenario: &'static str,
    round: usize,
    slot: Arc<Mutex<Option<Round>>>,
) {
    let (a_port, b_port) = (c.a.port, c.b.port);
    let mut r = Round::new(scenario, round);
    let mut frozen = Frozen::default();
    // For freeze: a commit sent after this cannot be decided before
    // SIGCONT; the instant of SIGCONT.
    let mut all_frozen = None;
    let mut resumed = None;
    let mut t0 = Instant::now();
    match scenario {
        "kill" => {
            c.a.kill9();
            // a restarted only once b took writes: else a may come back
            // as the primary before the failover.
            c.writer().wait_acks_on(b_port, 0, 5, STEP).await;
            c.a.run();
        }
        "freeze" => {
            let pids = freeze_node(&c.a, &mut frozen);
            all_frozen = Some(Instant::now());
            tokio::time::sleep_until((t0 + HOLD).into()).await;
            for pid in &pids {
                frozen.resume(*pid);
            }
            resumed = Some(Instant::now());
        }
        "partition" => {
            c.net.cut("a", &["m", "b"]);
            // The fault's instant is when the rules are in place: nft
            // commits them at the end of two process runs (the cut
            // removes any earlier one first), tens of ms on a busy
            // machine, while packets still pass.
            t0 = Instant::now();
            tokio::time::sleep_until((t0 + HOLD).into()).await;
            c.net.heal("a");
        }
        "switchover" => {
            let uri = c.monitor.uri.clone();
            let out = tokio::task::spawn_blocking(move || {
                pgpilot(&["perform", "switchover", "--monitor", &uri, "--wait", "60"])
            })
            .await
            .unwrap();
            r.command = Some(t0.elapsed());
            assert!(
                out.status.success(),
                "pgpilot perform switchover failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        _ => unreachable!("{scenario}"),
    }
    let Checked {
        outcome: out,
        mut violations,
    } = c.check("b", 2).await;
    r.measure(&out, t0, ("a", a_port), Some(("b", b_port)));
    if let (Some(all_frozen), Some(resumed)) = (all_frozen, resumed) {
        // freeze.rs's invariant: after SIGCONT a decides nothing. An
        // answer it sends then is for a commit sent before the freeze
        // (at most the writer's one in flight), held by b (checked).
        let late = out
            .acks
            .iter()
            .filter(|x| x.port == a_port && x.at >= resumed)
            .count();
        if late > 1 {
            violations.push(format!(
                "a acknowledged {late} writer commits after SIGCONT"
            ));
        }
        let sent_frozen: Vec<_> = out
            .checks
            .iter()
            .filter(|k| k.node == "a" && k.acked >= resumed && k.sent >= all_frozen)
            .collect();
        if !sent_frozen.is_empty() {
            violations.push(format!(
                "a acknowledged checks sent during the freeze after SIGCONT: {sent_frozen:?}"
            ));
        }
    }
    finish_round(r, violations, slot);
}

/// No fault: stress-ng on the whole machine while the writer commits.
async fn stress(mut c: Cluster, cfg: &Config, slot: Arc<Mutex<Option<Round>>>) {
    let secs = cfg.stress.unwrap();
    let mut r = Round::new("stress", 1);
    let promoted = promotions(&c.monitor).await;
    let goals = c.monitor.count_events(" assigned ").await;
    let t0 = Instant::now();
    let mut load = StressNg::start(secs, &c.dir.path);
    load.wait(secs + STEP).await;
    r.duration = Some(t0.elapsed());
    let failovers = promotions(&c.monitor).await - promoted;
    r.failovers = Some(failovers);
    r.goal_changes = Some(c.monitor.count_events(" assigned ").await - goals);
    let Checked {
        outcome: out,
        mut violations,
    } = c.check("a", 1).await;
    r.measure(&out, t0, ("a", c.a.port), None);
    if failovers > 0 {
        violations.push(format!(
            "{failovers} failover(s) under stress, none expected"
        ));
    }
    // A primary that fenced itself (its lease ran out under load) is no
    // failover, but it is a goal change (demote_timeout, then back) and a
    // line in its keeper's log: either fails the round too.
    if r.goal_changes.is_some_and(|g| g > 0) {
        violations.push(format!(
            "{} goal change(s) under stress, none expected",
            r.goal_changes.unwrap_or(0)
        ));
    }
    for (name, k) in [("a", &c.a), ("b", &c.b)] {
        if k.log().contains("fencing:") {
            violations.push(format!("{name}'s keeper fenced under stress"));
        }
    }
    finish_round(r, violations, slot);
}

/// Leaves the figures for the report, then fails the round (its task)
/// if an invariant did not hold: the cluster, dropped while panicking,
/// keeps its directory and prints the monitor's state and the logs.
fn finish_round(r: Round, violations: Vec<String>, slot: Arc<Mutex<Option<Round>>>) {
    *slot.lock().unwrap() = Some(r);
    if !violations.is_empty() {
        panic!("{}", violations.join("; "));
    }
}

/// `stress-ng` over the whole machine: every core busy (`--cpu 2`), sync
/// and disk writes (`--io 2 --hdd 1`, in the round's directory). Stopped
/// on drop (a failed round must not leave the machine loaded).
///
/// In a process group of its own: when it ends, stress-ng signals its
/// whole group to be sure no worker outlives it, which in the test's
/// group killed the test process and the nodes' PostgreSQL.
struct StressNg(Child);

impl StressNg {
    fn start(secs: Duration, dir: &Path) -> StressNg {
        let log = std::fs::File::create(dir.join("stress-ng.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new("stress-ng")
            .args(["--cpu", "2", "--io", "2", "--hdd", "1"])
            .arg("--timeout")
            .arg(format!("{}s", secs.as_secs()))
            .arg("--temp-path")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start stress-ng (scripts/install-deps installs it as root): {e}")
            });
        StressNg(child)
    }

    /// Waits until stress-ng exited by itself (its `--timeout`).
    async fn wait(&mut self, at_most: Duration) {
        let deadline = Instant::now() + at_most;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "stress-ng: {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stress-ng still runs after {at_most:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for StressNg {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        // SIGTERM to its group: stress-ng and its workers (the group's
        // id is stress-ng's pid).
        let group = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
