//! `pgpilot watch` on a pseudo-terminal, its screen read back through a
//! terminal emulator: it shows a primary and its secondary, then the
//! failover after the primary dies, and quits on `q` with the terminal
//! restored. Without a terminal it refuses and names `--once`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// A well-formed operator credential for monitors nobody runs: the watch
/// gets as far as trying to reach them.
const SOME_TOKEN: &str = "PGO1.abababababababababababababababababababababababababababababababab";

const STEP: Duration = Duration::from_secs(60);
const ROWS: u16 = 50;
const COLS: u16 = 120;

/// A `pgpilot` process whose stdin, stdout and stderr are a pseudo-
/// terminal of its own (its controlling terminal), and the screen it drew.
struct OnPty {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
}

impl OnPty {
    fn spawn(args: &[&str]) -> OnPty {
        Self::spawn_with(args, &[])
    }

    fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> OnPty {
        let size = nix::pty::Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("open a pseudo-terminal");
        let slave: OwnedFd = pty.slave;
        // As the monitor's operator (its CA and token in the environment).
        let mut cmd = pgpilot_command(args);
        cmd.envs(env.iter().copied())
            .env("TERM", "xterm-256color")
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; nothing else
        // runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn pgpilot watch");
        // The parent's copies of the slave go: the master reads EOF once
        // the child is gone.
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let mut reader = master.try_clone().unwrap();
        let parser = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                parser.lock().unwrap().process(&buf[..n]);
            }
        });
        OnPty {
            child,
            master,
            screen,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn alternate_screen(&self) -> bool {
        self.screen.lock().unwrap().screen().alternate_screen()
    }

    /// Waits until `check` finds what it looks for on the screen (the
    /// screen is printed if the deadline passes: see `Drop`).
    async fn until<T>(&self, what: &str, check: impl Fn(&str) -> Option<T>) -> T {
        eventually(&format!("{what} on the screen"), STEP, || {
            let found = check(&self.contents());
            async move { found }
        })
        .await
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- pgpilot watch's screen ---\n{}", self.contents());
        }
    }
}

/// The reported and assigned states of node `name` on the screen, read
/// under the table's header.
fn states(screen: &str, name: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines.iter().position(|l| l.contains("Reported State"))?;
    let reported = lines[header].find("Reported State")?;
    let assigned = lines[header].find("Assigned State")?;
    let row = lines[header + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let cell = |at: usize| {
        row.get(at..)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    };
    Some((cell(reported), cell(assigned)))
}

fn pair(s: &str) -> (String, String) {
    (s.to_string(), s.to_string())
}

/// The lines under "Events".
fn events(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| l.trim() != "Events")
        .skip(1)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_shows_a_failover_and_quits_on_q() {
    let dir = TestDir::new("k-watch");
    let mut monitor = MonitorProc::start(&dir).await;
    let (mut a, _b) = primary_and_secondary(&dir, &monitor).await;

    let mut watch = OnPty::spawn(&["watch", "--monitor", &monitor.uri]);
    watch
        .until("a primary, b secondary", |s| {
            (states(s, "a") == Some(pair("primary")) && states(s, "b") == Some(pair("secondary")))
                .then_some(())
        })
        .await;
    let screen = watch.contents();
    assert!(watch.alternate_screen(), "{screen}");
    assert!(screen.contains(&monitor.uri), "{screen}");
    assert!(
        screen.lines().nth(1).is_some_and(|l| l.trim() == "live"),
        "{screen}"
    );
    assert!(screen.contains("formation default, group 0"), "{screen}");
    // The same frame as plain text, for scripts.
    let once = pgpilot_ok(&["watch", "--once", "--monitor", &monitor.uri]);
    assert_eq!(states(&once, "a"), Some(pair("primary")), "{once}");
    assert_eq!(states(&once, "b"), Some(pair("secondary")), "{once}");

    // The primary dies whole; the screen follows the failover.
    a.kill9();
    watch
        .until("b promoted", |s| {
            states(s, "b").filter(|(r, _)| r == "wait_primary" || r == "primary")
        })
        .await;
    watch
        .until("the promotion's event", |s| {
            events(s)
                .iter()
                .any(|l| l.contains("b (0/2)") && l.contains("assigned prepare_promotion"))
                .then_some(())
        })
        .await;

    // The monitor goes away and comes back: the screen says so, keeps
    // the last rows, and follows the monitor again once it is back.
    monitor.stop();
    watch
        .until("the monitor unreachable", |s| {
            s.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("monitor unreachable: "))
                .then_some(())
        })
        .await;
    assert!(
        states(&watch.contents(), "b").is_some(),
        "{}",
        watch.contents()
    );
    monitor.restart().await;
    watch
        .until("the monitor live again", |s| {
            s.lines()
                .nth(1)
                .is_some_and(|l| l.trim() == "live")
                .then_some(())
        })
        .await;

    watch.master.write_all(b"q").unwrap();
    let status = wait_child(&mut watch.child, Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", watch.contents());
    // The terminal is back: raw mode off and the alternate screen left
    // (the emulator is on the main screen again).
    assert!(!watch.alternate_screen(), "{}", watch.contents());
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_says_when_the_monitor_is_unreachable_and_quits_on_ctrl_c() {
    // Nobody listens on this port.
    let uri = format!("http://127.0.0.1:{}", free_port());
    let mut watch = OnPty::spawn_with(
        &["watch", "--monitor", &uri],
        &[("PGPILOT_TOKEN", SOME_TOKEN)],
    );
    watch
        .until("the unreachable monitor", |s| {
            // The status wraps under the header, up to the blank line.
            let status: Vec<&str> = s
                .lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .collect();
            let status = status.join(" ");
            (status.starts_with("monitor unreachable: ")
                && status.trim_end().ends_with("; retrying"))
            .then_some(())
        })
        .await;
    watch.master.write_all(b"\x03").unwrap();
    let status = wait_child(&mut watch.child, Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", watch.contents());
    assert!(!watch.alternate_screen());
}

#[test]
fn watch_without_a_terminal_names_once_and_once_fails_without_a_monitor() {
    let out = Command::new(pgpilot_bin())
        .args(["watch", "--monitor", "http://127.0.0.1:1"])
        .env("PGPILOT_TOKEN", SOME_TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stdout is not one") && err.contains("--once"),
        "{err}"
    );
    // --once does not retry: a monitor it cannot ask is an error.
    let out = pgpilot_command(&["watch", "--once", "--monitor", "http://127.0.0.1:1"])
        .env("PGPILOT_TOKEN", SOME_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
}
