//! A postmaster as a supervised process: started as our child, or
//! adopted from an earlier process that started it ([`Lifetime`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

use crate::log::{ensure_fifo, forward_log, open_fifo, LOG_TAIL};
use crate::postmaster::{PidFile, Postmaster};
use crate::{Error, OsUser, PgBin, PgCommand, Result};

/// How often start-up polls postmaster.pid: fast enough that a failover is
/// not slowed by the poll, slow enough to cost nothing.
const READY_POLL: Duration = Duration::from_millis(25);
/// Longest a Unix socket path may be (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How often the exit of an adopted postmaster (not our child: no
/// waitpid) is looked for while we wait for it to stop.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// How to stop a postmaster (PostgreSQL's three shutdown modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SIGTERM: wait for clients to disconnect.
    Smart,
    /// SIGINT: disconnect clients, checkpoint, stop. Ships the last WAL to
    /// connected standbys, which is why demotion uses it.
    Fast,
    /// SIGQUIT: stop at once without a checkpoint; crash recovery at the
    /// next start.
    Immediate,
}

impl ShutdownMode {
    fn signal(self) -> Signal {
        match self {
            ShutdownMode::Smart => Signal::SIGTERM,
            ShutdownMode::Fast => Signal::SIGINT,
            ShutdownMode::Immediate => Signal::SIGQUIT,
        }
    }
}

/// What becomes of a postmaster when the process that started it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// It dies with us (PR_SET_PDEATHSIG: SIGQUIT, an immediate shutdown
    /// that takes its backends along), and its log comes through a pipe.
    /// For a server that must not run unsupervised: the monitor's private
    /// PostgreSQL, or a keeper's when its operator prefers that a primary
    /// without a keeper be down rather than up without fencing.
    DiesWithUs,
    /// It keeps running when we exit (a crash, an OOM kill, a restart to
    /// upgrade), so that a later process adopts it
    /// ([`PostgresHandle::adopt`]) and nothing is restarted. Its stdout and
    /// stderr go to the FIFO `log_fifo` (created if missing), not to a pipe
    /// that would die with us: whoever supervises the server reads the
    /// FIFO, and a later process opens it again, so the log keeps going to
    /// the supervisor's log. Lines written while nobody reads it are lost
    /// (the write fails with EPIPE, which PostgreSQL ignores: it runs with
    /// SIGPIPE ignored); lines not yet read stay in the pipe for the next
    /// reader.
    Outlives { log_fifo: PathBuf },
}

/// How to start a postmaster.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub port: u16,
    pub socket_dir: PathBuf,
    /// "" listens on the Unix socket only.
    pub listen_addresses: String,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// Tags every forwarded log line ("monitor", "node_1").
    pub tag: String,
    pub ready_timeout: Duration,
    pub lifetime: Lifetime,
}

/// How a postmaster ended.
#[derive(Debug)]
pub enum Exit {
    /// Our child: its exit status.
    Status(ExitStatus),
    /// An adopted postmaster is not our child: its exit status went to its
    /// parent (init, or a subreaper). Its log says how it ended.
    NotOurChild,
}

impl Exit {
    /// An exit status of 0.
    pub fn success(&self) -> bool {
        matches!(self, Exit::Status(s) if s.success())
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Status(s) => write!(f, "{s}"),
            Exit::NotOurChild => write!(f, "exit status unknown: adopted, not our child"),
        }
    }
}

/// The postmaster behind a handle.
enum Proc {
    Child(Child),
    /// Started by an earlier process: known by pid and start time, watched
    /// by polling /proc (it cannot be waited for).
    Adopted(Postmaster),
}

/// A running postmaster we started or adopted. Dropping it stops
/// PostgreSQL (immediate shutdown, then SIGKILL): a handle never leaks a
/// server; [`PostgresHandle::detach`] is the one way to leave it running.
pub struct PostgresHandle {
    proc: Option<Proc>,
    /// The tasks that forward its log; ended by [`PostgresHandle::detach`]
    /// (the next supervisor reads the FIFO), else by the end of the log.
    forwarders: Vec<tokio::task::AbortHandle>,
    pid: u32,
    port: u16,
    socket_dir: PathBuf,
    pgdata: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl PostgresHandle {
    /// Starts `postgres` and waits until postmaster.pid says it is ready
    /// (or a standby accepting read-only connections). On any failure the
    /// child is killed and reaped, and the error carries its last log lines.
    pub async fn start(
        bin: &PgBin,
        runner: &Option<OsUser>,
        pgdata: &Path,
        opts: &StartOptions,
    ) -> Result<PostgresHandle> {
        // DiesWithUs: SIGQUIT, an immediate shutdown, the postmaster takes
        // its backends with it.
        let death_signal = match opts.lifetime {
            Lifetime::DiesWithUs => Some(Signal::SIGQUIT),
            Lifetime::Outlives { .. } => None,
        };
        let mut cmd = PgCommand::new(bin, "postgres")
            .user(runner)
            .death_signal(death_signal)
            .arg("-D")
            .arg(pgdata)
            .arg("-p")
            .arg(opts.port.to_string())
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                opts.socket_dir.display()
            ))
            .arg("-c")
            .arg(format!("listen_addresses={}", opts.listen_addresses));
        for (k, v) in &opts.settings {
            cmd = cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let mut command = cmd.command();
        // The FIFO's read end is opened first: then opening the write end
        // does not block, and reads see no end of file before the server
        // holds the write end.
        let fifo_reader = match &opts.lifetime {
            Lifetime::DiesWithUs => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
            Lifetime::Outlives { log_fifo } => {
                ensure_fifo(log_fifo)?;
                let reader = open_fifo(log_fifo)?;
                // Blocking (its own open file description): PostgreSQL must
                // wait, not drop lines, when the reader is slow.
                let writer = std::fs::OpenOptions::new()
                    .write(true)
                    .open(log_fifo)
                    .with_context(|| format!("open {} for writing", log_fifo.display()))?;
                let second = writer
                    .try_clone()
                    .with_context(|| format!("duplicate {}", log_fifo.display()))?;
                command
                    .stdout(Stdio::from(writer))
                    .stderr(Stdio::from(second));
                Some(reader)
            }
        };
        // The command holds our copies of the write end until it is dropped.
        let spawned = command.spawn();
        drop(command);
        let mut child =
            spawned.with_context(|| format!("start postgres for {}", pgdata.display()))?;
        let pid = child.id().context("postgres exited at once")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let mut streams: Vec<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = Vec::new();
        if let Some(s) = child.stdout.take() {
            streams.push(Box::new(s));
        }
        if let Some(s) = child.stderr.take() {
            streams.push(Box::new(s));
        }
        if let Some(r) = fifo_reader {
            streams.push(Box::new(r));
        }
        let forwarders = streams
            .into_iter()
            .map(|stream| {
                tokio::spawn(forward_log(stream, opts.tag.clone(), log.clone())).abort_handle()
            })
            .collect();
        // From here on, Drop stops the server if we fail.
        let mut handle = PostgresHandle {
            proc: Some(Proc::Child(child)),
            forwarders,
            pid,
            port: opts.port,
            socket_dir: opts.socket_dir.clone(),
            pgdata: pgdata.to_path_buf(),
            log,
        };
        handle.wait_ready(opts.ready_timeout).await?;
        Ok(handle)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                // Give the log forwarder a moment to read the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(self.start_failed(format!("postgres exited with {status}")));
            }
            if self
                .pid_file_status()
                .is_some_and(|s| s == "ready" || s == "standby")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.start_failed(format!("not ready within {} s", timeout.as_secs())));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The status line of postmaster.pid, if the file is ours.
    fn pid_file_status(&self) -> Option<String> {
        let file = PidFile::read(&self.pgdata).ok()??.ok()?;
        (file.pid == self.pid as i32)
            .then_some(file.status)
            .flatten()
    }

    /// Takes over `postmaster`, found running by
    /// [`crate::find_postmaster`]: an earlier process started it with
    /// [`Lifetime::Outlives`] and exited. Nothing is done to the server.
    /// When its stderr is the FIFO `log_fifo` (checked in
    /// /proc/PID/fd/2, not assumed), its log is forwarded again, tagged
    /// `tag`; otherwise (started by hand, or by an older pgpilot) the log
    /// stays wherever it goes, and that is logged. Call it within a tokio
    /// runtime.
    pub fn adopt(postmaster: Postmaster, tag: &str, log_fifo: Option<&Path>) -> PostgresHandle {
        let pid = postmaster.pid() as u32;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let mut forwarders = Vec::new();
        if let Some(fifo) = log_fifo {
            let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2"));
            match stderr {
                Ok(p) if p == fifo || std::fs::canonicalize(fifo).is_ok_and(|f| f == p) => {
                    match open_fifo(fifo) {
                        Ok(reader) => {
                            let task = forward_log(reader, tag.to_string(), log.clone());
                            forwarders.push(tokio::spawn(task).abort_handle());
                        }
                        Err(e) => tracing::warn!(
                            pid,
                            "failed to forward the log of the adopted PostgreSQL: {e:#}"
                        ),
                    }
                }
                other => tracing::warn!(
                    pid,
                    "the adopted PostgreSQL does not write its log to {} (its stderr is {}): \
                     its log is not forwarded until it is restarted",
                    fifo.display(),
                    match other {
                        Ok(p) => p.display().to_string(),
                        Err(e) => format!("unknown: {e}"),
                    }
                ),
            }
        }
        PostgresHandle {
            pid,
            port: postmaster.file.port.unwrap_or(0),
            socket_dir: postmaster.file.socket_dir.clone().unwrap_or_default(),
            pgdata: postmaster.file.data_dir.clone(),
            log,
            forwarders,
            proc: Some(Proc::Adopted(postmaster)),
        }
    }

    /// Lets go of the server without stopping it (a keeper that exits
    /// alone, for a later one to adopt). Returns its pid. A server started
    /// with [`Lifetime::DiesWithUs`] still dies when we exit.
    pub fn detach(mut self) -> u32 {
        // A tokio Child dropped without kill_on_drop keeps running; tokio
        // reaps it in the background should it exit before we do.
        self.proc = None;
        for f in &self.forwarders {
            f.abort();
        }
        self.pid
    }

    /// Whether we adopted it rather than started it.
    pub fn is_adopted(&self) -> bool {
        matches!(self.proc, Some(Proc::Adopted(_)))
    }

    fn start_failed(&self, reason: String) -> Error {
        Error::StartFailed {
            reason,
            log_tail: self.log_tail(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The last log lines PostgreSQL wrote.
    pub fn log_tail(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stops PostgreSQL in `mode`; if it has not exited after `timeout`,
    /// escalates to immediate shutdown, then SIGKILL.
    pub async fn stop(mut self, mode: ShutdownMode, timeout: Duration) -> Result<Exit> {
        let proc = self
            .proc
            .take()
            .context("postgres handle already stopped")?;
        let pid = self.pid;
        match proc {
            Proc::Child(mut child) => {
                let _ = kill(Pid::from_raw(pid as i32), mode.signal());
                if let Ok(status) = tokio::time::timeout(timeout, child.wait()).await {
                    return Ok(Exit::Status(status.context("wait for postgres")?));
                }
                warn_escalation(pid, timeout);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT);
                let wait = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                if let Ok(status) = wait {
                    return Ok(Exit::Status(status.context("wait for postgres")?));
                }
                let _ = child.start_kill();
                Ok(Exit::Status(
                    child.wait().await.context("wait for postgres")?,
                ))
            }
            Proc::Adopted(pm) => {
                pm.signal(mode.signal());
                if wait_gone(&pm, timeout).await {
                    return Ok(Exit::NotOurChild);
                }
                warn_escalation(pid, timeout);
                pm.signal(Signal::SIGQUIT);
                if wait_gone(&pm, Duration::from_secs(5)).await {
                    return Ok(Exit::NotOurChild);
                }
                pm.signal(Signal::SIGKILL);
                if wait_gone(&pm, Duration::from_secs(5)).await {
                    return Ok(Exit::NotOurChild);
                }
                Err(anyhow::anyhow!("postgres (pid {pid}) survived SIGKILL for 5 s").into())
            }
        }
    }

    /// Resolves when the postmaster exits. Cancel-safe.
    pub async fn wait_exit(&mut self) -> Result<Exit> {
        match self.proc.as_mut() {
            Some(Proc::Child(c)) => Ok(Exit::Status(c.wait().await.context("wait for postgres")?)),
            Some(Proc::Adopted(pm)) => {
                while pm.alive() {
                    tokio::time::sleep(EXIT_POLL).await;
                }
                Ok(Exit::NotOurChild)
            }
            None => std::future::pending().await,
        }
    }

    pub fn try_exit_status(&mut self) -> Result<Option<Exit>> {
        match self.proc.as_mut() {
            Some(Proc::Child(c)) => Ok(c.try_wait().context("poll postgres")?.map(Exit::Status)),
            Some(Proc::Adopted(pm)) => Ok((!pm.alive()).then_some(Exit::NotOurChild)),
            None => Ok(None),
        }
    }
}

fn warn_escalation(pid: u32, timeout: Duration) {
    tracing::warn!(
        pid,
        "postgres did not stop within {} s; immediate shutdown",
        timeout.as_secs()
    );
}

/// Polls until the adopted postmaster is gone; false after `timeout`.
async fn wait_gone(pm: &Postmaster, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pm.alive() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
    true
}

impl Drop for PostgresHandle {
    fn drop(&mut self) {
        // Immediate shutdown stops the backends too; SIGKILL of the
        // postmaster alone would leave them holding shared memory.
        let deadline = Instant::now() + Duration::from_secs(3);
        match self.proc.take() {
            None => {}
            Some(Proc::Child(mut child)) => {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGQUIT);
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.start_kill();
                let _ = child.try_wait();
            }
            Some(Proc::Adopted(pm)) => {
                if !pm.signal(Signal::SIGQUIT) {
                    return;
                }
                while Instant::now() < deadline {
                    if !pm.alive() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                pm.signal(Signal::SIGKILL);
            }
        }
    }
}

/// `preferred` when a socket file in it fits the Unix path limit, else a
/// short directory under the temp dir derived from `preferred` (stable
/// across runs, so every process computes the same one).
pub fn socket_dir_for(preferred: &Path) -> PathBuf {
    if preferred.as_os_str().len() + "/.s.PGSQL.65535.lock".len() <= MAX_SOCKET_PATH {
        return preferred.to_path_buf();
    }
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in preferred.as_os_str().as_encoded_bytes() {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    std::env::temp_dir().join(format!("pgpilot-{hash:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dir_short_and_long() {
        let short = Path::new("/tmp/x/run");
        assert_eq!(socket_dir_for(short), short);
        let long = PathBuf::from(format!("/tmp/{}/run", "d".repeat(120)));
        let dir = socket_dir_for(&long);
        assert!(dir.as_os_str().len() < 40, "{dir:?}");
        assert_eq!(socket_dir_for(&long), dir, "not deterministic");
    }
}
