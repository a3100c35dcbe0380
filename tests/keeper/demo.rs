//! `pgpilot demo` reaches primary/secondary, stops cleanly on SIGINT and
//! leaves no process or directory behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn demo_runs_and_cleans_up_on_sigint() {
    let mut child = Command::new(pgpilot_bin())
        .arg("demo")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
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
