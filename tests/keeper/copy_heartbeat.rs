//! A third node copies the primary slowly (`--maximum-backup-rate`) and
//! keeps reporting while it copies, so it does not block a failover: its
//! keeper is heard, PostgreSQL not running, so the monitor knows it holds
//! no commit ("Never stuck", dead end 6). Before, the keeper sent nothing
//! while pg_basebackup ran; the monitor saw a silent quorum standby and
//! waited for it, here for as long as the copy hung.
//!
//! The primary *freezes* (every PostgreSQL process stopped with SIGSTOP,
//! its keeper SIGKILLed) instead of dying: a dead primary ends the copy at
//! once (its walsender exits with the postmaster), and the copying keeper
//! speaks again within a second anyway. A frozen one, or a partition,
//! leaves pg_basebackup waiting on an open connection for hours. Once the
//! monitor names the new primary, the copy from the old one is abandoned
//! and the node copies the new primary and follows it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgpilot_proto::NodeState;

use crate::support::*;

const STEP: Duration = Duration::from_secs(90);

/// The third node's keeper, started with its own flags (the support's
/// `KeeperProc::create` takes none); SIGTERM on drop.
struct Third {
    child: Child,
    log: PathBuf,
}

impl Drop for Third {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = wait_child_quietly(&mut self.child, Duration::from_secs(30));
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- log of c ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

fn wait_child_quietly(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// PostgreSQL processes stopped with SIGSTOP; killed (and continued, so
/// the kill lands) on drop.
struct Frozen(Vec<i32>);

impl Frozen {
    /// Stops the postmaster first (it forks no more), then its children.
    fn postmaster_and_children(postmaster: i32) -> Frozen {
        kill(Pid::from_raw(postmaster), Signal::SIGSTOP).unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                pids.push(pid);
            }
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
        }
    }
}

/// (reported state, pg_running, last_report) of node `name`.
async fn seen(monitor: &MonitorProc, name: &str) -> Option<(NodeState, bool, String)> {
    let nodes = monitor
        .client()
        .await
        .show_state(pgpilot_proto::pb::ShowStateRequest::default())
        .await
        .ok()?
        .into_inner()
        .nodes;
    let n = nodes.into_iter().find(|n| n.name == name)?;
    Some((
        NodeState::from_wire(n.reported_state).ok()?,
        n.pg_running,
        n.last_report,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_copying_keeps_reporting_and_does_not_block_failover() {
    let dir = TestDir::new("k-copybeat");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, b) = primary_and_secondary(&dir, &monitor).await;
    commit_rows(&a, 20).await;
    // About 45 MB of table, on top of the cluster's own files: at 3 MB/s
    // the copy takes 20 s and more.
    a.query(
        "CREATE TABLE filler AS SELECT i, repeat('x', 200) AS pad \
         FROM generate_series(1, 190000) i",
    )
    .await
    .unwrap();

    let c_pgdata = dir.join("c");
    let mut args = KeeperProc::create_args(&dir, &monitor.uri, "c", free_port());
    args.extend(["--maximum-backup-rate", "3M", "--run"].map(String::from));
    let log = dir.join("c.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(pgpilot_bin())
        .args(&args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let _c = Third {
        child,
        log: log.clone(),
    };
    let clone_dir = pgpilot_keeper::files::clone_dir(&c_pgdata);
    let copying = || clone_dir.is_dir() && !pgpilot_pgproc::is_pgdata(&c_pgdata);

    // (a) While it copies, the monitor keeps hearing from it: its last
    // report moves on, it reports wait_standby with PostgreSQL stopped.
    let reports = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually("three reports from c while it copies", STEP, || async {
        if let Some((NodeState::WaitStandby, false, at)) = seen(&monitor, "c").await {
            if copying() && !at.is_empty() {
                reports.lock().unwrap().insert(at);
            }
        }
        (reports.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    assert!(copying(), "the copy must still run: lower the rate");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("at most 3072 kB/s"),
        "pg_basebackup runs with --max-rate"
    );

    // (b) The primary freezes: the copy from it hangs. The secondary is
    // promoted all the same, while c still copies (or has not started
    // over from the new primary yet).
    // Failover is only from `primary`: c's arrival made a re-apply its
    // settings (apply_settings) first.
    wait_state(&monitor, "a", "primary", STEP).await;
    assert!(copying(), "the copy must still run: lower the rate");
    let postmaster = a.postmaster_pid().expect("a's postmaster");
    let _frozen = Frozen::postmaster_and_children(postmaster);
    a.kill_keeper();
    new_primary_among(&monitor, &[&b], STEP).await;
    let (c_state, _, _) = seen(&monitor, "c").await.unwrap();
    assert_eq!(c_state, NodeState::WaitStandby, "c is still copying");
    assert!(!pgpilot_pgproc::is_pgdata(&c_pgdata), "c has no copy yet");
    let count = "SELECT count(*)::text FROM acked";
    assert_eq!(b.query(count).await.unwrap(), Some("20".into()));

    // Afterwards c gives up on the frozen node, copies the new primary and
    // follows it.
    b.query("INSERT INTO acked VALUES (21)").await.unwrap();
    wait_state(&monitor, "c", "secondary", Duration::from_secs(180)).await;
    let c_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        c_log.contains("abandoned the steps toward catchingup"),
        "c abandoned the copy from the frozen node"
    );
    let c_query = |sql: &'static str| {
        let pgdata = c_pgdata.clone();
        async move {
            use sqlx::ConnectOptions;
            let port: u16 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
                .ok()?
                .lines()
                .nth(3)?
                .trim()
                .parse()
                .ok()?;
            let mut conn = sqlx::postgres::PgConnectOptions::new()
                .socket(pgpilot_keeper::files::socket_dir(&pgdata))
                .port(port)
                .username("postgres")
                .database("postgres")
                .connect()
                .await
                .ok()?;
            sqlx::query_scalar::<_, String>(sql)
                .fetch_one(&mut conn)
                .await
                .ok()
        }
    };
    eventually("row 21 on c", STEP, || async {
        (c_query("SELECT count(*)::text FROM acked").await.as_deref() == Some("21")).then_some(())
    })
    .await;
}
