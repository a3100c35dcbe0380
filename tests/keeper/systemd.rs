//! `pgpilot run` speaks systemd's notification protocol: a fake service
//! manager (a Unix datagram socket named by NOTIFY_SOCKET) hears READY=1
//! once the monitor serves and once the keeper's first round reported,
//! WATCHDOG=1 keep-alives while WATCHDOG_USEC is set, and STOPPING=1 at
//! SIGTERM. `show systemd` prints units that match.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A fake service manager: the socket and everything received on it.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    heard: Vec<String>,
}

impl Manager {
    fn bind(path: std::path::PathBuf) -> Manager {
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Manager {
            socket,
            path,
            heard: Vec::new(),
        }
    }

    /// Waits until a message holds the line `line`; returns that message.
    fn expect(&mut self, line: &str, timeout: Duration, child: &mut Child) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.heard.push(msg.clone());
                if msg.lines().any(|l| l == line) {
                    return msg;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("exited with {status} before {line}; heard {:?}", self.heard);
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {timeout:?}; heard {:?}",
                self.heard
            );
        }
    }

    /// `pgpilot run --pgdata DIR` with NOTIFY_SOCKET and a watchdog of
    /// `watchdog`. systemd sets WATCHDOG_PID to the service's pid: a shell
    /// that execs pgpilot keeps its pid, so it can set it.
    fn run(&self, pgdata: &Path, log: &Path, watchdog: Duration) -> Child {
        Command::new("sh")
            .args([
                "-c",
                "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
                pgpilot_bin(),
                "run",
                "--pgdata",
                path_str(pgdata),
            ])
            .env("NOTIFY_SOCKET", &self.path)
            .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap()
    }
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_notifies_ready_watchdog_and_stopping() {
    let dir = TestDir::new("k-sd");
    // Created by the fixture, then run again under the fake manager.
    let mut fixture = MonitorProc::start(&dir).await;
    assert!(fixture.stop().success());
    let monitor_pgdata = fixture.pgdata.clone();
    let uri = fixture.uri.clone();
    let auth = fixture.auth();

    let unit = pgpilot_ok(&["show", "systemd", "--pgdata", path_str(&monitor_pgdata)]);
    assert!(unit.lines().any(|l| l == "KillMode=mixed"), "{unit}");
    assert!(unit.lines().any(|l| l == "Type=notify"), "{unit}");
    assert!(
        unit.lines().any(|l| l
            == format!(
                "ExecStart={} run --pgdata {}",
                std::fs::canonicalize(pgpilot_bin()).unwrap().display(),
                monitor_pgdata.display()
            )),
        "{unit}"
    );

    let mut mm = Manager::bind(dir.join("monitor.notify"));
    let mut monitor = mm.run(
        &monitor_pgdata,
        &dir.join("monitor-sd.log"),
        Duration::from_secs(2),
    );
    let ready = mm.expect("READY=1", Duration::from_secs(90), &mut monitor);
    assert!(ready.contains("STATUS=serving gRPC on"), "{ready}");
    assert!(pgpilot_proto::client::connect(&uri, &auth).await.is_ok());
    // The probe loop's keep-alives (every round, a second apart).
    mm.expect("WATCHDOG=1", Duration::from_secs(10), &mut monitor);
    mm.expect("WATCHDOG=1", Duration::from_secs(10), &mut monitor);

    // A node: created (the command returns at `single`), then run.
    let pgdata = dir.join("a");
    let args = KeeperProc::create_args(&dir, &uri, "a", free_port());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pgpilot_ok(&args);
    let unit = pgpilot_ok(&["show", "systemd", "--pgdata", path_str(&pgdata)]);
    for line in ["KillMode=process", "Restart=always", "WatchdogSec=120s"] {
        assert!(unit.lines().any(|l| l == line), "{line}:\n{unit}");
    }

    let mut km = Manager::bind(dir.join("keeper.notify"));
    let mut keeper = km.run(&pgdata, &dir.join("a-sd.log"), Duration::from_secs(2));
    let ready = km.expect("READY=1", Duration::from_secs(90), &mut keeper);
    assert!(
        ready.contains("STATUS=node \"a\" single (goal single)"),
        "{ready}"
    );
    // Nothing before READY but keep-alives: READY=1 is the first message
    // that says anything.
    assert!(
        km.heard[..km.heard.len() - 1]
            .iter()
            .all(|m| m.trim() == "WATCHDOG=1"),
        "{:?}",
        km.heard
    );
    // The loop's keep-alives: at most one per quarter interval (500 ms),
    // at least one per round (1 s).
    let start = Instant::now();
    for _ in 0..3 {
        km.expect("WATCHDOG=1", Duration::from_secs(5), &mut keeper);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );

    sigterm(&keeper);
    let stopping = km.expect("STOPPING=1", Duration::from_secs(30), &mut keeper);
    assert!(
        stopping.contains("stopping the keeper and PostgreSQL"),
        "{stopping}"
    );
    assert!(wait_child(&mut keeper, Duration::from_secs(60)).success());

    sigterm(&monitor);
    mm.expect("STOPPING=1", Duration::from_secs(30), &mut monitor);
    assert!(wait_child(&mut monitor, Duration::from_secs(60)).success());
}

#[test]
fn no_notify_socket_no_notification() {
    // Nothing to assert beyond "runs as before": every other test runs
    // `pgpilot run` without NOTIFY_SOCKET. Here: `show systemd` refuses a
    // directory without a monitor or node, naming what to do.
    let dir = TestDir::new("k-sd-none");
    let out = pgpilot(&["show", "systemd", "--pgdata", path_str(&dir.join("x"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no pgpilot monitor or node"), "{err}");
}
