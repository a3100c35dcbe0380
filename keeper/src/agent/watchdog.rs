//! Fencing that does not wait for the keeper's loop. The loop may be busy
//! (starting PostgreSQL through a minute of crash recovery, a slow step)
//! when the lease runs out, and the monitor promotes another node once it
//! did. At the engine's deadline ([`crate::engine::Engine::fence_deadline`],
//! the one definition the loop uses too) the postmaster gets SIGQUIT
//! (immediate shutdown, every session ends); the loop then finds
//! PostgreSQL down and, without a lease, does not restart it.
//!
//! The watchdog signals only a postmaster it has verified to be this
//! node's ([`pgpilot_pgproc::find_postmaster`]: postmaster.pid in PGDATA
//! names it, it is alive, runs postgres, and its working directory is
//! PGDATA, which the postmaster changes into at start, before it writes
//! postmaster.pid). A stale postmaster.pid after a crash may name a pid
//! the kernel has since given to another process; that process is never
//! signalled. Reading postmaster.pid rather than waiting for the loop's
//! handle also covers a postmaster that is still starting (it writes the
//! file before crash recovery begins) and one the keeper adopted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::engine::Mono;

/// How often the fencing watchdog looks at the deadline: the fencing
/// delay this adds to the lease is at most this.
const WATCHDOG_POLL: Duration = Duration::from_millis(50);

/// The deadline the loop hands to the watchdog. A plain mutex: it is held
/// only to copy an `Option<Duration>`, never across an await.
#[derive(Clone, Debug, Default)]
pub(super) struct Arm(Arc<Mutex<Option<Mono>>>);

impl Arm {
    pub(super) fn set(&self, deadline: Option<Mono>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    fn get(&self) -> Option<Mono> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) async fn run(arm: Arm, pgdata: PathBuf, cancel: CancellationToken) {
    // The postmaster already signalled: once is enough, and a restarted
    // one (new pid, after a new lease moved the deadline) is fair game.
    let mut signalled: Option<i32> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(WATCHDOG_POLL) => {}
        }
        let Some(deadline) = arm.get() else {
            continue;
        };
        if clock::now() < deadline {
            continue;
        }
        let Some(pid) = our_postmaster(&pgdata) else {
            continue;
        };
        if signalled == Some(pid) {
            continue;
        }
        tracing::error!(
            "fencing: the lease ran out while the keeper was busy; stopping PostgreSQL (pid {pid}) now"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGQUIT,
        );
        signalled = Some(pid);
    }
}

/// The pid of the live postmaster of `pgdata`, verified (see the module
/// doc), or `None`.
fn our_postmaster(pgdata: &Path) -> Option<i32> {
    match pgpilot_pgproc::find_postmaster(pgdata) {
        pgpilot_pgproc::Found::Running(pm) => Some(pm.pid()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_pid_file_names_no_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid is alive, but its working directory is not PGDATA.
        let me = std::process::id();
        std::fs::write(dir.path().join("postmaster.pid"), format!("{me}\n/x\n")).unwrap();
        assert_eq!(our_postmaster(dir.path()), None);
        std::fs::write(dir.path().join("postmaster.pid"), "garbage\n").unwrap();
        assert_eq!(our_postmaster(dir.path()), None);
        std::fs::remove_file(dir.path().join("postmaster.pid")).unwrap();
        assert_eq!(our_postmaster(dir.path()), None);
    }

    /// Spawns `program` (a copy of `sleep` just written) in `dir`. Another
    /// test thread forking meanwhile holds the copy's write descriptor until it
    /// execs, and exec then fails with ETXTBSY: retried.
    fn spawn_copy(program: &Path, dir: &Path) -> std::process::Child {
        for _ in 0..100 {
            match std::process::Command::new(program)
                .arg("30")
                .current_dir(dir)
                .spawn()
            {
                Ok(child) => return child,
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("spawn {}: {e}", program.display()),
            }
        }
        panic!("{} stayed busy", program.display())
    }

    #[test]
    fn a_live_postgres_in_pgdata_is_the_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        // Stands in for a postmaster: alive, running an executable called
        // postgres, working directory PGDATA.
        let fake = dir.path().join("postgres");
        std::fs::copy("/bin/sleep", &fake).unwrap();
        let mut child = spawn_copy(&fake, dir.path());
        let pid = child.id() as i32;
        let pid_file = format!("{pid}\n{}\n", dir.path().display());
        std::fs::write(dir.path().join("postmaster.pid"), pid_file).unwrap();
        assert_eq!(our_postmaster(dir.path()), Some(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(our_postmaster(dir.path()), None, "a dead pid is no one");
    }

    #[test]
    fn a_live_process_in_pgdata_that_is_not_postgres_is_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        // An operator's program sitting in PGDATA got the stale file's pid.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let pid_file = format!("{}\n{}\n", child.id(), dir.path().display());
        std::fs::write(dir.path().join("postmaster.pid"), pid_file).unwrap();
        assert_eq!(our_postmaster(dir.path()), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
