//! What every scenario shares: a monitor and two data nodes, each in its
//! own network namespace ([`Net`]), an application writer through the
//! formation URI and the split-brain checker, and the final checks.

use std::time::{Duration, Instant};

use crate::checker::{self, CheckAck, Checker};
use crate::support::netns::{self, Net};
use crate::support::writer::{self, Ack, Writer};
use crate::support::*;

pub const STEP: Duration = Duration::from_secs(90);
/// How often the application writer commits.
pub const WRITE_EVERY: Duration = Duration::from_millis(50);

/// The product's defaults (monitor/src/config.rs `Timings`), which the
/// suite runs with: the bounds it asserts are stated from them.
pub const LEASE: Duration = Duration::from_millis(1200);
pub const CLOCK_MARGIN: Duration = Duration::from_millis(300);
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times each scenario runs: `PGPILOT_FAULT_REPEAT` (default 1).
pub fn repeats() -> usize {
    std::env::var("PGPILOT_FAULT_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// False (after saying so) when the suite cannot run here.
pub fn can_run(test: &str) -> bool {
    if netns::is_root() {
        return true;
    }
    eprintln!("{test}: skipped: needs root for network namespaces");
    false
}

/// Runs `scenario` [`repeats`] times, numbering the rounds. Each round
/// is a task of its own: a failed round does not stop the next ones, and
/// the test fails at the end, saying how many rounds passed.
pub async fn repeat<F, Fut>(test: &str, mut scenario: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if !can_run(test) {
        return;
    }
    let n = repeats();
    let mut failed = Vec::new();
    for round in 1..=n {
        eprintln!("=== {test}: round {round}/{n} ===");
        if tokio::spawn(scenario(round)).await.is_err() {
            eprintln!("=== {test}: round {round}/{n} FAILED ===");
            failed.push(round);
        }
    }
    eprintln!("=== {test}: {}/{n} rounds passed ===", n - failed.len());
    assert!(failed.is_empty(), "{test}: rounds {failed:?} of {n} failed");
}

/// A monitor "m" and nodes "a" (primary) and "b" (secondary), each in its
/// own namespace; the writer and the checker running. Fields drop in
/// order: clients, keepers, monitor, network, directory.
pub struct Cluster {
    pub writer: Option<Writer>,
    pub checker: Option<Checker>,
    pub a: KeeperProc,
    pub b: KeeperProc,
    pub monitor: MonitorProc,
    pub net: Net,
    /// Held for its Drop (removed on success, kept on failure).
    #[allow(dead_code)]
    pub dir: TestDir,
}

/// The clients' pace: how often the writer commits and the checker tries
/// each node, and the writer's attempt timeout.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub write_every: Duration,
    pub attempt_timeout: Duration,
    pub check_every: Duration,
}

impl Default for Load {
    /// The scenarios' pace.
    fn default() -> Load {
        Load {
            write_every: WRITE_EVERY,
            attempt_timeout: writer::ATTEMPT_TIMEOUT,
            check_every: checker::EVERY,
        }
    }
}

/// What [`Cluster::check`] found: the outcome, and every invariant that
/// failed (empty when all held).
pub struct Checked {
    pub outcome: Outcome,
    pub violations: Vec<String>,
}

impl Cluster {
    pub async fn start(name: &str) -> Cluster {
        Cluster::start_with(name, Load::default()).await
    }

    pub async fn start_with(name: &str, load: Load) -> Cluster {
        let net = Net::new(&["m", "a", "b"]);
        let dir = TestDir::new(name);
        let monitor = MonitorProc::start_on(&dir, Some(net.host("m"))).await;
        let a = KeeperProc::create_on(&dir, &monitor.uri, "a", Some(net.host("a")), &[]);
        wait_state(&monitor, "a", "single", STEP).await;
        // The test process connects from the bridge's address: let the
        // application role in (before b copies pg_hba.conf from a).
        allow_app(&a, &net.gateway.to_string()).await;
        writer::prepare(&a).await;
        checker::prepare(&a).await;
        let b = KeeperProc::create_on(&dir, &monitor.uri, "b", Some(net.host("b")), &[]);
        wait_state(&monitor, "b", "secondary", STEP).await;
        wait_state(&monitor, "a", "primary", STEP).await;
        let writer = Writer::start_with(
            &writer::formation_uri(&monitor),
            load.write_every,
            load.attempt_timeout,
        );
        let checker = Checker::start_every(&[&a, &b], load.check_every);
        writer.wait_acks_on(a.port, 0, 10, STEP).await;
        Cluster {
            writer: Some(writer),
            checker: Some(checker),
            a,
            b,
            monitor,
            net,
            dir,
        }
    }

    pub fn writer(&self) -> &Writer {
        self.writer.as_ref().unwrap()
    }

    pub fn node(&self, name: &str) -> &KeeperProc {
        match name {
            "a" => &self.a,
            "b" => &self.b,
            _ => panic!("no node {name}"),
        }
    }

    /// Waits until `primary` is primary and the other node secondary,
    /// then until the writer committed 10 more on `primary`; stops the
    /// clients and checks that every acknowledged commit (writer and
    /// checker) is on `primary` and that the checker saw no split brain
    /// (`writers`: how many nodes may have taken writes in turn).
    pub async fn finish(mut self, primary: &str, writers: usize) -> Outcome {
        let Checked {
            outcome,
            violations,
        } = self.check(primary, writers).await;
        if let Some(v) = violations.first() {
            panic!("{v}");
        }
        let standby = if primary == "a" { "b" } else { "a" };
        eprintln!(
            "converged: {primary} primary, {standby} secondary; {} commits by the writer, {} by \
             the checker, all on {primary}; {} failed writer attempts",
            outcome.acks.len(),
            outcome.checks.len(),
            outcome.failures.len()
        );
        outcome
    }

    /// [`Cluster::finish`]'s waits and checks, returning what failed
    /// instead of panicking: a benchmark records the round's figures
    /// first. The waits still panic on their deadlines. The clients are
    /// stopped; the cluster is left to the caller (dropped while
    /// panicking, it keeps its directory and prints the state).
    pub async fn check(&mut self, primary: &str, writers: usize) -> Checked {
        let standby = if primary == "a" { "b" } else { "a" };
        wait_state(&self.monitor, primary, "primary", STEP).await;
        wait_state(&self.monitor, standby, "secondary", STEP).await;
        let p = self.node(primary);
        let w = self.writer();
        w.wait_acks_on(p.port, w.acks().len(), 10, STEP).await;
        let failures = w.failures();
        let acks = self.writer.take().unwrap().stop().await;
        let checks = self.checker.take().unwrap().stop().await;
        let p = self.node(primary);
        let mut violations = Vec::new();
        let missing = writer::missing(p, &acks).await;
        if !missing.is_empty() {
            violations.push(format!(
                "acknowledged commits missing on the final primary {primary}: {missing:?}"
            ));
        }
        let mut c = p.connect().await.unwrap();
        let held: std::collections::BTreeSet<i64> =
            sqlx::query_scalar(&format!("SELECT id FROM {}", checker::TABLE))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let lost: Vec<&CheckAck> = checks.iter().filter(|a| !held.contains(&a.id)).collect();
        if !lost.is_empty() {
            violations.push(format!(
                "checker commits acknowledged but missing on {primary}: {lost:?}"
            ));
        }
        let lost = lost.len();
        if let Err(e) = checker::split_brain(&checks, writers, primary, &held) {
            violations.push(format!("split brain: {e}"));
        }
        Checked {
            outcome: Outcome {
                acks,
                checks,
                failures,
                missing,
                lost,
            },
            violations,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for args in [
                &["show", "state", "--monitor", &self.monitor.uri][..],
                &[
                    "show",
                    "events",
                    "--count",
                    "40",
                    "--monitor",
                    &self.monitor.uri,
                ][..],
            ] {
                let out = pgpilot(args);
                eprintln!(
                    "--- pgpilot {} ---\n{}{}",
                    args[..2].join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// What a finished scenario saw.
pub struct Outcome {
    pub acks: Vec<Ack>,
    pub checks: Vec<CheckAck>,
    pub failures: Vec<writer::Failure>,
    /// The writer's acknowledged ids missing on the final primary.
    pub missing: Vec<i64>,
    /// How many of the checker's acknowledged commits it lacks.
    pub lost: usize,
}

impl Outcome {
    /// The first commit acknowledged by the node on `port` after `from`.
    pub fn first_on(&self, port: u16, from: Instant) -> Option<Duration> {
        self.acks
            .iter()
            .find(|a| a.port == port && a.at >= from)
            .map(|a| a.at - from)
    }

    /// How many of the writer's commits the node on `port` acknowledged
    /// in `[from, to)`.
    pub fn acks_on(&self, port: u16, from: Instant, to: Instant) -> usize {
        self.acks
            .iter()
            .filter(|a| a.port == port && a.at >= from && a.at < to)
            .count()
    }

    /// The first commit the checker (straight to the node, no
    /// reconnecting client) had acknowledged by `node` after `from`: when
    /// the node took writes, whatever the application's timeouts.
    pub fn first_check_on(&self, node: &str, from: Instant) -> Option<Duration> {
        self.checks
            .iter()
            .filter(|k| k.node == node && k.acked >= from)
            .map(|k| k.acked - from)
            .min()
    }

    /// The longest time without an acknowledged commit from `from` on
    /// (counting from `from` itself).
    pub fn longest_gap(&self, from: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for a in self.acks.iter().filter(|a| a.at >= from) {
            gap = gap.max(a.at - last);
            last = a.at;
        }
        gap
    }

    /// Failed writer attempts at or after `from`.
    pub fn failures_since(&self, from: Instant) -> usize {
        self.failures.iter().filter(|f| f.at >= from).count()
    }
}

/// Polls `done` every 20 ms until it holds; panics with `what` if it does
/// not by `deadline`. For bounds: a deadline, not a measurement.
pub async fn by_deadline(what: &str, deadline: Instant, mut done: impl FnMut() -> bool) -> Instant {
    loop {
        if done() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: deadline passed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGSTOP a whole node, as a machine that stops: its postmaster first
/// (it forks no more), its keeper, then every child of either (backends,
/// pg_ctl...). Everything still stopped is continued when `frozen` drops.
/// Returns the pids in SIGCONT order (children, postmaster, keeper last).
pub fn freeze_node(k: &KeeperProc, frozen: &mut Frozen) -> Vec<i32> {
    let pm = k.postmaster_pid().expect("a postmaster");
    let keeper = k.child.as_ref().expect("a keeper").id() as i32;
    frozen.stop(pm);
    frozen.stop(keeper);
    let mut children = Vec::new();
    for _ in 0..10 {
        let mut found = false;
        for parent in [pm, keeper].into_iter().chain(children.clone()) {
            for c in children_of(parent) {
                // A child that exited meanwhile is skipped; a stopped
                // one cannot exit, so the second SIGSTOP finds it.
                let stopped = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c),
                    nix::sys::signal::Signal::SIGSTOP,
                )
                .is_ok();
                if stopped && !children.contains(&c) {
                    frozen.stop(c);
                    children.push(c);
                    found = true;
                }
            }
        }
        if !found {
            break;
        }
    }
    children.extend([pm, keeper]);
    children
}

/// Gone or a zombie: it runs no code any more.
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// How many promotions the monitor's latest events mention.
pub async fn promotions(monitor: &MonitorProc) -> usize {
    monitor.count_events("prepare_promotion").await
}

/// Adds a line for the application role from `from` below the keeper's
/// managed block of `k`'s pg_hba.conf. The keeper rewrites that file too
/// (its block, keeping the rest): so the line is written atomically (a
/// reload must never parse a half-written file: it once refused the
/// keeper's own local connections), and checked again after a reload
/// until it holds.
async fn allow_app(k: &KeeperProc, from: &str) {
    let hba = k.pgdata.join("pg_hba.conf");
    let line = format!("host all app {from}/32 scram-sha-256");
    eventually("the application's line in pg_hba.conf", STEP, || async {
        let text = std::fs::read_to_string(&hba).ok()?;
        if !text.contains(&line) {
            let tmp = hba.with_extension("conf.test-tmp");
            std::fs::write(&tmp, format!("{text}{line}\n")).ok()?;
            std::fs::rename(&tmp, &hba).ok()?;
        }
        k.query("SELECT pg_reload_conf()::text").await.ok()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = std::fs::read_to_string(&hba).ok()?;
        text.contains(&line).then_some(())
    })
    .await;
}

#[test]
fn the_bounds_follow_the_product_defaults() {
    let t = pgpilot_monitor::config::Timings::default();
    assert_eq!(
        (LEASE, CLOCK_MARGIN, STALL_TIMEOUT),
        (t.lease, t.clock_margin, t.replication_stall_timeout)
    );
}
