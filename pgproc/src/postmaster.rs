//! postmaster.pid and the process it names: which postmaster runs in a
//! data directory, checked, never guessed.
//!
//! A postmaster.pid outlives its postmaster after a crash (SIGKILL, a
//! machine that lost power), and by the time anyone reads it the kernel
//! may have given its pid to another process. So a pid is taken for this
//! data directory's postmaster only when the process behind it is alive,
//! works in this data directory (the postmaster changes into it at start,
//! before it writes the file) and runs a postgres executable, and the
//! file names this data directory. Once found, a postmaster is known by
//! its pid *and* its start time in clock ticks since boot (field 22 of
//! `/proc/PID/stat`), so that a pid reused later is never mistaken for it.
//!
//! The start time written in postmaster.pid (line 3) is not used for the
//! check: it is wall-clock time, and a machine whose clock was stepped
//! after PostgreSQL started (common right after boot, when NTP corrects a
//! wrong RTC) would make a live postmaster look stale. A stale verdict on
//! a live postmaster costs a failed start and, for a keeper, a node
//! reported down; the checks above already tell a postgres process working
//! in this data directory from anything else.

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// postmaster.pid as PostgreSQL writes it (`src/include/utils/pidfile.h`,
/// `LOCK_FILE_LINE_*`). PostgreSQL fills it in while it starts: a file read
/// early may lack the later lines, which are then `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidFile {
    /// Line 1.
    pub pid: i32,
    /// Line 2: the data directory, as the postmaster was given it (made
    /// absolute, symlinks kept).
    pub data_dir: PathBuf,
    /// Line 3: when it started, seconds since the epoch on the wall clock
    /// (for logs only; see the module doc).
    pub start_time: Option<i64>,
    /// Line 4.
    pub port: Option<u16>,
    /// Line 5: the first Unix socket directory (empty until the socket
    /// exists).
    pub socket_dir: Option<PathBuf>,
    /// Line 6: the first listen address (`*`, an address, or empty).
    pub listen_address: Option<String>,
    /// Line 8: `starting`, `stopping`, `ready` or `standby`.
    pub status: Option<String>,
}

impl PidFile {
    /// `None` when the first two lines are not a pid and a directory.
    pub fn parse(text: &str) -> Option<PidFile> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let pid: i32 = lines.first()?.parse().ok().filter(|p| *p > 0)?;
        let data_dir = PathBuf::from(lines.get(1).filter(|l| !l.is_empty())?);
        let line = |i: usize| lines.get(i).copied().filter(|l| !l.is_empty());
        Some(PidFile {
            pid,
            data_dir,
            start_time: line(2).and_then(|l| l.parse().ok()),
            port: line(3).and_then(|l| l.parse().ok()),
            socket_dir: line(4).map(PathBuf::from),
            listen_address: line(5).map(str::to_string),
            status: line(7).map(str::to_string),
        })
    }

    /// postmaster.pid of `pgdata`: `Ok(None)` when there is none;
    /// `Ok(Some(Err(text)))` when it holds something unreadable.
    pub fn read(pgdata: &Path) -> std::io::Result<Option<Result<PidFile, String>>> {
        match std::fs::read_to_string(pgdata.join("postmaster.pid")) {
            Ok(text) => Ok(Some(PidFile::parse(&text).ok_or(text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What postmaster.pid of a data directory says, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No postmaster.pid: no postmaster runs there (PostgreSQL removes the
    /// file whenever it exits by itself, an immediate shutdown included).
    Nothing,
    /// postmaster.pid names no live postmaster of this data directory.
    Stale(Stale),
    Running(Postmaster),
}

/// A postmaster.pid that names no live postmaster of its data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub pid: Option<i32>,
    /// Why, for the log: "pid 123 does not run".
    pub why: String,
    /// The pid still names a process that is provably not this data
    /// directory's postmaster: a live process that is something else
    /// (another program, or a postgres of another data directory: a pid
    /// reused after a crash), or the killed postmaster itself as a zombie
    /// its new parent has not reaped yet (init reaps orphans when it gets
    /// to it: on the machines we test on, up to 2 s after the kill, by
    /// when a fast failover already wants this node rewound). PostgreSQL's
    /// own check (`CreateLockFile`) only sees that the pid exists and
    /// refuses to start (pg_rewind's single-user recovery too), so the
    /// file must go. Removing it cannot let two postmasters share the data
    /// directory: PostgreSQL also refuses to start while the shared memory
    /// segment of a postmaster of this directory is still attached (its
    /// key comes from the directory's inode, not from the file), which
    /// covers children of a killed postmaster still running.
    /// False whenever the process could not be looked at (permissions):
    /// then the file is left to PostgreSQL.
    pub blocks_start: bool,
}

/// A live postmaster of a data directory, known by its pid and its start
/// time since boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postmaster {
    pub file: PidFile,
    /// Field 22 of /proc/PID/stat when it was found.
    start_ticks: u64,
}

impl Postmaster {
    pub fn pid(&self) -> i32 {
        self.file.pid
    }

    /// Still the same process and not a zombie: a reused pid has another
    /// start time.
    pub fn alive(&self) -> bool {
        proc_stat(self.pid()).is_ok_and(|s| s.running && s.start_ticks == self.start_ticks)
    }

    /// Sends `signal` if it is still this process (see [`Postmaster::alive`]).
    /// False when it is gone.
    pub fn signal(&self, signal: Signal) -> bool {
        // The check and the kill are not atomic; a pid is reused only after
        // the process was reaped and the pid space wrapped, which takes far
        // longer than the microseconds in between.
        self.alive() && kill(Pid::from_raw(self.pid()), signal).is_ok()
    }
}

/// The postmaster of `pgdata`, checked as the module doc says.
pub fn find_postmaster(pgdata: &Path) -> Found {
    let file = match PidFile::read(pgdata) {
        Ok(None) => return Found::Nothing,
        Ok(Some(Ok(f))) => f,
        Ok(Some(Err(text))) => {
            return Found::Stale(Stale {
                pid: None,
                why: format!("postmaster.pid holds no pid and data directory: {text:?}"),
                blocks_start: false,
            })
        }
        Err(e) => {
            return Found::Stale(Stale {
                pid: None,
                why: format!("cannot read postmaster.pid: {e}"),
                blocks_start: false,
            })
        }
    };
    let pid = file.pid;
    let stale = |why: String, blocks_start: bool| {
        Found::Stale(Stale {
            pid: Some(pid),
            why,
            blocks_start,
        })
    };
    let stat = match proc_stat(pid) {
        Ok(s) if s.running => s,
        Ok(_) => return stale(format!("pid {pid} has exited and is not reaped yet"), true),
        Err(_) => return stale(format!("pid {pid} does not run"), false),
    };
    let ours = match std::fs::canonicalize(pgdata) {
        Ok(p) => p,
        Err(e) => return stale(format!("cannot resolve {}: {e}", pgdata.display()), false),
    };
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) if cwd == ours => {}
        Ok(cwd) => {
            return stale(
                format!(
                    "pid {pid} works in {}, not in this data directory",
                    cwd.display()
                ),
                true,
            )
        }
        Err(e) => return stale(format!("cannot look at pid {pid}: {e}"), false),
    }
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        // "postgres", also "postgres (deleted)" once a package upgrade
        // replaced the binary under a running server, or a wrapper's name
        // such as ".postgres-wrapped": a name without it is no postmaster.
        Ok(exe) if exe_is_postgres(&exe) => {}
        Ok(exe) => {
            return stale(
                format!("pid {pid} runs {}, not postgres", exe.display()),
                true,
            )
        }
        Err(e) => return stale(format!("cannot look at pid {pid}: {e}"), false),
    }
    if std::fs::canonicalize(&file.data_dir).ok().as_ref() != Some(&ours) {
        return stale(
            format!(
                "postmaster.pid names data directory {}, not this one",
                file.data_dir.display()
            ),
            false,
        );
    }
    Found::Running(Postmaster {
        file,
        start_ticks: stat.start_ticks,
    })
}

fn exe_is_postgres(exe: &Path) -> bool {
    exe.file_name()
        .is_some_and(|n| n.to_string_lossy().contains("postgres"))
}

/// What the module needs of /proc/PID/stat.
struct ProcStat {
    /// Not a zombie (Z) nor dead (X): it still runs code.
    running: bool,
    start_ticks: u64,
}

fn proc_stat(pid: i32) -> std::io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold anything,
    // spaces and parentheses included: the fields that follow start after
    // the last ')'.
    let bad = || std::io::Error::other(format!("unexpected /proc/{pid}/stat: {text:?}"));
    let (_, rest) = text.rsplit_once(')').ok_or_else(bad)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    let state = fields.first().ok_or_else(bad)?;
    let start_ticks = fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok(ProcStat {
        running: !state.starts_with(['Z', 'X']),
        start_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: &str =
        "4242\n/var/lib/pg/data\n1760000000\n5432\n/run/pg\n*\n  5432001   3\nready   \n";

    #[test]
    fn parses_every_line_and_a_file_still_being_written() {
        let f = PidFile::parse(READY).unwrap();
        assert_eq!(f.pid, 4242);
        assert_eq!(f.data_dir, PathBuf::from("/var/lib/pg/data"));
        assert_eq!(f.start_time, Some(1_760_000_000));
        assert_eq!(f.port, Some(5432));
        assert_eq!(f.socket_dir, Some(PathBuf::from("/run/pg")));
        assert_eq!(f.listen_address.as_deref(), Some("*"));
        assert_eq!(f.status.as_deref(), Some("ready"));
        // Early in start-up: no socket yet, no status.
        let early = PidFile::parse("4242\n/d\n1760000000\n5432\n\n").unwrap();
        assert_eq!(early.socket_dir, None);
        assert_eq!(early.status, None);
        for bad in ["", "x\n/d\n", "0\n/d\n", "12\n", "12\n\n"] {
            assert_eq!(PidFile::parse(bad), None, "{bad:?}");
        }
    }

    /// A process that stands in for a postmaster: alive, working in `dir`.
    fn sleeper(dir: &Path) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir)
            .spawn()
            .unwrap()
    }

    fn write_pid_file(dir: &Path, pid: u32) {
        std::fs::write(
            dir.join("postmaster.pid"),
            format!("{pid}\n{}\n1760000000\n5432\n", dir.display()),
        )
        .unwrap();
    }

    #[test]
    fn a_live_process_that_is_not_postgres_is_a_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_postmaster(dir.path()), Found::Nothing);
        // Alive and working in the data directory, but `sleep`.
        let mut child = sleeper(dir.path());
        write_pid_file(dir.path(), child.id());
        match find_postmaster(dir.path()) {
            Found::Stale(s) => {
                assert!(s.blocks_start, "{s:?}");
                assert!(s.why.contains("not postgres"), "{s:?}");
            }
            other => panic!("{other:?}"),
        }
        // Our own pid works elsewhere.
        write_pid_file(dir.path(), std::process::id());
        match find_postmaster(dir.path()) {
            Found::Stale(s) => assert!(s.blocks_start && s.why.contains("works in"), "{s:?}"),
            other => panic!("{other:?}"),
        }
        // The killed process not reaped yet (a zombie): PostgreSQL would
        // see its pid and refuse to start, so the file must go.
        write_pid_file(dir.path(), child.id());
        child.kill().unwrap();
        let zombie = (0..200).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            match find_postmaster(dir.path()) {
                Found::Stale(s) if s.why.contains("not reaped") => Some(s),
                _ => None,
            }
        });
        assert!(zombie.is_some_and(|s| s.blocks_start));
        // A dead pid is left to PostgreSQL.
        child.wait().unwrap();
        write_pid_file(dir.path(), child.id());
        match find_postmaster(dir.path()) {
            Found::Stale(s) => assert!(!s.blocks_start && s.why.contains("does not run"), "{s:?}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.path().join("postmaster.pid"), "garbage\n").unwrap();
        assert!(matches!(find_postmaster(dir.path()), Found::Stale(s) if !s.blocks_start));
    }

    #[test]
    fn a_postgres_named_process_in_the_data_directory_is_found_and_tracked() {
        let dir = tempfile::tempdir().unwrap();
        // A copy of `sleep` named postgres stands in for one (a symlink
        // would not do: /proc/PID/exe names the file it resolves to).
        let fake = dir.path().join("postgres");
        std::fs::copy(which_sleep(), &fake).unwrap();
        let mut child = spawn_copy(&fake, dir.path());
        write_pid_file(dir.path(), child.id());
        let pm = match find_postmaster(dir.path()) {
            Found::Running(pm) => pm,
            other => panic!("{other:?}"),
        };
        assert_eq!(pm.pid(), child.id() as i32);
        assert!(pm.alive());
        // Another data directory named in the file: not this one's.
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n/elsewhere\n", child.id()),
        )
        .unwrap();
        assert!(matches!(find_postmaster(dir.path()), Found::Stale(s) if !s.blocks_start));
        assert!(pm.signal(Signal::SIGKILL));
        child.wait().unwrap();
        assert!(!pm.alive(), "a reaped process is gone");
        assert!(!pm.signal(Signal::SIGKILL), "never signalled twice");
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

    fn which_sleep() -> PathBuf {
        ["/usr/bin/sleep", "/bin/sleep"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("sleep")
    }
}
