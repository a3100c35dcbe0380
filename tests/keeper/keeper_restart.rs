//! Keeper restarts cost nothing (issue #10, item 1 and scenario h): a
//! keeper that is SIGKILLed, or stopped alone with `pgpilot stop
//! --keeper-only`, leaves PostgreSQL running; `pgpilot run` adopts it
//! (same postmaster), and there is no failover, no goal change and no
//! failed write while a client commits through the formation URI. With
//! `--postgres-dies-with-keeper` the old behaviour holds: PostgreSQL dies
//! with its keeper, and a keeper-only stop is refused. A stale
//! postmaster.pid naming a live process that is not PostgreSQL is never
//! adopted.
//!
//! Timings are measured and printed, not asserted.

use std::time::{Duration, Instant};

use crate::forced_failover::{diagnostics, text};
use crate::support::writer::{self, Ack, Writer};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How often the test client commits.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// How long the primary runs without a keeper: past the monitor's
/// node_unhealthy_timeout (3 s), the lease and clock margin (3 s + 1 s)
/// and replication_lost_timeout (3 s), so that a rule acting on a silent
/// keeper would have acted.
const NO_KEEPER: Duration = Duration::from_secs(6);

/// What must not change across a keeper restart.
#[derive(Debug, PartialEq, Eq)]
struct Roles {
    a_postmaster: Option<i32>,
    b_postmaster: Option<i32>,
    generation: i64,
    timeline: String,
    promotions: usize,
    goal_changes: usize,
}

async fn roles(monitor: &MonitorProc, a: &KeeperProc, b: &KeeperProc) -> Roles {
    Roles {
        a_postmaster: a.postmaster_pid(),
        b_postmaster: b.postmaster_pid(),
        generation: a.state()["generation_seen"].as_i64().unwrap_or(-1),
        timeline: a
            .query("SELECT timeline_id::text FROM pg_control_checkpoint()")
            .await
            .unwrap()
            .unwrap_or_default(),
        promotions: monitor.count_events("prepare_promotion").await,
        goal_changes: monitor.count_events(" assigned ").await,
    }
}

/// The longest time between two commits acknowledged from `from` on.
fn longest_gap(acks: &[Ack], from: Instant) -> Duration {
    let at: Vec<Instant> = acks.iter().map(|a| a.at).filter(|t| *t >= from).collect();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Waits until the keeper of `k`, started again, adopted its PostgreSQL
/// and reported `state` again.
async fn adopted(monitor: &MonitorProc, k: &KeeperProc, state: &str) {
    eventually(
        &format!("{} adopts its PostgreSQL", k.name),
        STEP,
        || async {
            k.log()
                .contains("adopted the PostgreSQL running in")
                .then_some(())
        },
    )
    .await;
    wait_state(monitor, &k.name, state, STEP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keeper_restarts_beside_a_primary_and_a_standby_cost_no_failover_and_no_write() {
    let dir = TestDir::new("k-adopt");
    let monitor = MonitorProc::start(&dir).await;
    let _diagnostics = diagnostics(&monitor);
    let (mut a, mut b) = primary_and_secondary(&dir, &monitor).await;
    writer::prepare(&a).await;
    let client = Writer::start(&writer::formation_uri(&monitor), WRITE_EVERY);
    client.wait_acks_on(a.port, 0, 20, STEP).await;
    let first_ack = client.acks()[0].at;
    let before = roles(&monitor, &a, &b).await;
    assert!(before.a_postmaster.is_some() && before.b_postmaster.is_some());

    // 1. The primary's keeper is SIGKILLed (a crash, the OOM killer) and
    //    stays away well past every failover timeout.
    let killed = Instant::now();
    a.kill_keeper();
    let acked = client.acks().len();
    tokio::time::sleep(NO_KEEPER).await;
    assert_eq!(
        a.postmaster_pid(),
        before.a_postmaster,
        "PostgreSQL outlived its keeper"
    );
    let without_keeper = client.acks().len() - acked;
    a.run();
    adopted(&monitor, &a, "primary").await;
    client
        .wait_acks_on(a.port, client.acks().len(), 20, STEP)
        .await;
    let after_kill = roles(&monitor, &a, &b).await;
    println!(
        "SIGKILL: {without_keeper} commits acknowledged in {} ms without a keeper; longest \
         gap between commits {} ms; failed writes {}",
        NO_KEEPER.as_millis(),
        longest_gap(&client.acks(), killed).as_millis(),
        client.failures().iter().filter(|f| f.at >= killed).count()
    );
    assert!(
        without_keeper > 0,
        "the primary took writes without a keeper"
    );
    assert_eq!(
        after_kill, before,
        "no restart, no failover, no goal change"
    );

    // 2. A keeper-only stop, as for an upgrade, then `pgpilot run` again.
    let graceful = Instant::now();
    let (out, took) =
        operator_at(&["stop", "--keeper-only", "--pgdata", path_str(&a.pgdata)]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keeps running"),
        "{}",
        text(&out)
    );
    let mut keeper = a.child.take().unwrap();
    assert!(wait_child(&mut keeper, Duration::from_secs(10)).success());
    assert_eq!(a.postmaster_pid(), before.a_postmaster);
    assert!(a
        .log()
        .contains("keeper exiting alone: PostgreSQL keeps running"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.run();
    adopted(&monitor, &a, "primary").await;
    client
        .wait_acks_on(a.port, client.acks().len(), 20, STEP)
        .await;
    println!(
        "keeper-only stop ({} ms) and run: longest gap between commits {} ms; failed writes {}",
        took.as_millis(),
        longest_gap(&client.acks(), graceful).as_millis(),
        client
            .failures()
            .iter()
            .filter(|f| f.at >= graceful)
            .count()
    );
    assert_eq!(roles(&monitor, &a, &b).await, before);

    // 3. The synchronous standby's keeper is SIGKILLed and started again.
    let standby = Instant::now();
    b.kill_keeper();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.run();
    adopted(&monitor, &b, "secondary").await;
    client
        .wait_acks_on(a.port, client.acks().len(), 20, STEP)
        .await;
    println!(
        "standby's keeper SIGKILLed and run: longest gap between commits {} ms; failed writes {}",
        longest_gap(&client.acks(), standby).as_millis(),
        client.failures().iter().filter(|f| f.at >= standby).count()
    );
    assert_eq!(roles(&monitor, &a, &b).await, before);

    // The group converged, nothing was lost, nothing failed.
    wait_state(&monitor, "a", "primary", STEP).await;
    wait_state(&monitor, "b", "secondary", STEP).await;
    let failures: Vec<_> = client
        .failures()
        .into_iter()
        .filter(|f| f.at >= first_ack)
        .collect();
    let acks = client.stop().await;
    let missing = writer::missing(&a, &acks).await;
    println!(
        "{} commits acknowledged, {} missing on the primary, {} failed writes",
        acks.len(),
        missing.len(),
        failures.len()
    );
    assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    assert!(acks.iter().all(|k| k.port == a.port), "every commit on a");
    assert!(
        failures.is_empty(),
        "no write failed after the first commit: {failures:?}"
    );

    // `pgpilot stop` stops both: an adopted PostgreSQL with its keeper,
    // and a PostgreSQL whose keeper is gone.
    for k in [&mut a, &mut b] {
        let pid = k.postmaster_pid().expect("its postmaster");
        if k.name == "b" {
            k.kill_keeper();
        }
        let (out, _) = operator_at(&["stop", "--pgdata", path_str(&k.pgdata)]).await;
        assert!(out.status.success(), "{}", text(&out));
        if let Some(mut keeper) = k.child.take() {
            assert!(wait_child(&mut keeper, Duration::from_secs(10)).success());
        }
        assert!(!alive(pid), "{}'s PostgreSQL stopped", k.name);
    }
}

/// `pgpilot ARGS` off the async workers (the client keeps committing
/// meanwhile), with its wall time.
async fn operator_at(args: &[&str]) -> (std::process::Output, Duration) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pgpilot(&args)
    })
    .await
    .unwrap();
    (out, started.elapsed())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_option_postgres_dies_with_its_keeper_and_cannot_be_left_alone() {
    let dir = TestDir::new("k-dies-with");
    let monitor = MonitorProc::start(&dir).await;
    let mut a = KeeperProc::create_with(&dir, &monitor.uri, "a", &["--postgres-dies-with-keeper"]);
    wait_state(&monitor, "a", "single", STEP).await;
    let config = std::fs::read_to_string(pgpilot_keeper::files::config_path(&a.pgdata)).unwrap();
    assert!(
        config.contains("postgres_dies_with_keeper = true"),
        "{config}"
    );
    let pid = a.postmaster_pid().expect("a's postmaster");

    // A keeper-only stop is refused, and says why; nothing stops.
    let out = pgpilot(&["stop", "--keeper-only", "--pgdata", path_str(&a.pgdata)]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres_dies_with_keeper = true"), "{err}");
    assert!(err.contains("pgpilot stop --pgdata"), "{err}");
    assert!(a.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_eq!(a.postmaster_pid(), Some(pid));

    // SIGKILL of the keeper takes PostgreSQL with it.
    a.kill_keeper();
    eventually("a's PostgreSQL gone with its keeper", STEP, || async {
        (!alive(pid)).then_some(())
    })
    .await;
    // The next keeper starts a new one (nothing to adopt).
    a.run();
    eventually("a new postmaster on a, taking queries", STEP, || async {
        let new = a.postmaster_pid().is_some_and(|p| p != pid);
        (new && a.query("SELECT 1::text").await.is_ok()).then_some(())
    })
    .await;
    wait_state(&monitor, "a", "single", STEP).await;
    assert!(!a.log().contains("adopted the PostgreSQL"));
}

/// Kills the stand-in process when the test ends, passed or not.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_postmaster_pid_naming_a_live_process_is_not_adopted() {
    let dir = TestDir::new("k-stale-pid");
    let monitor = MonitorProc::start(&dir).await;
    let mut a = KeeperProc::create(&dir, &monitor.uri, "a");
    wait_state(&monitor, "a", "single", STEP).await;
    let old = a.postmaster_pid().expect("a's postmaster");
    pgpilot_ok(&["stop", "--pgdata", path_str(&a.pgdata)]);
    let mut keeper = a.child.take().unwrap();
    assert!(wait_child(&mut keeper, Duration::from_secs(10)).success());
    assert_eq!(a.postmaster_pid(), None, "`pgpilot stop` stops both");

    // As after a crash and a reboot: postmaster.pid names a pid that now
    // belongs to another program, run by PostgreSQL's OS user (so that
    // PostgreSQL's own check sees a live pid) and working in PGDATA (so
    // that the working directory alone does not tell it apart).
    let runner = pgpilot_pgproc::postgres_runner(None).unwrap();
    let mut sleep = std::process::Command::new("sleep");
    sleep.arg("600").current_dir(&a.pgdata);
    if let Some(u) = &runner {
        use std::os::unix::process::CommandExt;
        sleep.uid(u.uid).gid(u.gid);
    }
    let sleeper = Sleeper(sleep.spawn().unwrap());
    let impostor = sleeper.0.id() as i32;
    let pid_file = a.pgdata.join("postmaster.pid");
    std::fs::write(
        &pid_file,
        format!(
            "{impostor}\n{}\n1760000000\n{}\n{}\n127.0.0.1\n  5432001  3\nready   \n",
            a.pgdata.display(),
            a.port,
            pgpilot_keeper::files::socket_dir(&a.pgdata).display()
        ),
    )
    .unwrap();
    if let Some(u) = &runner {
        nix::unistd::chown(
            &pid_file,
            Some(nix::unistd::Uid::from_raw(u.uid)),
            Some(nix::unistd::Gid::from_raw(u.gid)),
        )
        .unwrap();
    }

    a.run();
    eventually("a new postmaster on a, taking queries", STEP, || async {
        let new = a
            .postmaster_pid()
            .is_some_and(|p| p != impostor && p != old);
        (new && a.query("SELECT 1::text").await.is_ok()).then_some(())
    })
    .await;
    wait_state(&monitor, "a", "single", STEP).await;
    assert!(alive(impostor), "the impostor was never signalled");
    let log = a.log();
    assert!(
        log.contains("PostgreSQL would refuse to start beside it; removing it"),
        "{log}"
    );
    assert!(!log.contains("adopted the PostgreSQL"), "{log}");
}
