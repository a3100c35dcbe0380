//! `pgpilot demo` reaches primary/secondary, prints under 30 lines (its
//! log goes to demo.log), stops cleanly on SIGINT and leaves no process
//! or directory behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn demo_runs_and_cleans_up_on_sigint() {
    let mut child = Command::new(pgpilot_bin())
        .arg("demo")
        // The default level: the log is what must stay off the terminal.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // However the test ends, the demo gets its SIGINT.
    struct Interrupt(u32);
    impl Drop for Interrupt {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
    let _guard = Interrupt(child.id());
    // stdout and stderr, in the order they come: what the terminal shows.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {line}"));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut out = Vec::new();
    while !out
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops the demo"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("demo not ready in time:\n{}", out.join("\n"));
            }
        }
    }
    let text = out.join("\n");
    assert!(out.len() < 30, "{} lines before Ctrl-C:\n{text}", out.len());
    assert!(!text.contains("stderr:"), "{text}");
    assert!(!text.contains(" INFO ") && !text.contains("LOG:"), "{text}");
    assert!(
        text.contains("Switchover:  pgpilot perform switchover --pgdata /"),
        "{text}"
    );
    assert!(text.contains("Connect:     psql 'postgres://"), "{text}");
    // The watch line it prints works as printed (as one plain frame here:
    // this test has no terminal).
    let watch = text
        .lines()
        .find_map(|l| l.strip_prefix("Watch:       pgpilot "))
        .and_then(|l| l.split("   (").next())
        .unwrap_or_else(|| panic!("no watch line: {text}"));
    let mut args: Vec<&str> = watch.split_whitespace().collect();
    args.push("--once");
    let frame = pgpilot_ok(&args);
    assert!(frame.contains("formation default, group 0"), "{frame}");
    let node_line = |state: &str, conn: &str| {
        text.lines().any(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.len() == 7 && cells[4] == conn && cells[5] == state && cells[6] == state
        })
    };
    assert!(node_line("primary", "read-write"), "{text}");
    assert!(node_line("secondary", "read-only"), "{text}");
    assert!(text.contains("target_session_attrs=read-write"), "{text}");
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("pgpilot demo in "))
        .expect("the demo names its directory")
        .trim()
        .to_string();
    assert!(std::path::Path::new(&dir).is_dir());
    // The log went to the file instead: PostgreSQL's lines and the keepers'.
    let log = std::fs::read_to_string(format!("{dir}/demo.log")).unwrap();
    assert!(log.lines().count() > 50, "{log}");
    assert!(log.contains("LOG:"), "{log}");
    assert!(log.contains("keeper of node"), "{log}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_child(&mut child, Duration::from_secs(90));
    assert!(status.success(), "demo exited with {status}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} was removed");
    let leftovers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir))
        .collect::<Vec<_>>();
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
}

#[test]
fn demo_verbose_logs_to_stderr() {
    let mut child = Command::new(pgpilot_bin())
        .args(["demo", "--nodes", "1", "--verbose"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logged = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // A demo that hangs before it is ready is killed, so the loop below
    // ends.
    let (done, hung) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if hung.recv_timeout(Duration::from_secs(180)).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut ready = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.contains("Ctrl-C stops the demo") {
            ready = true;
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        }
    }
    let status = wait_child(&mut child, Duration::from_secs(90));
    let _ = done.send(());
    guard.join().unwrap();
    let logged = logged.join().unwrap();
    assert!(ready, "the demo never got ready:\n{}", logged.join("\n"));
    assert!(status.success(), "demo exited with {status}");
    assert!(
        logged.iter().any(|l| l.contains("LOG:")),
        "{}",
        logged.join("\n")
    );
}
