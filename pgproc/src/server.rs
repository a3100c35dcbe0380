//! A postmaster as a supervised child process.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::{Error, OsUser, PgBin, PgCommand, Result};

/// Log lines kept for error messages and [`PostgresHandle::log_tail`].
const LOG_TAIL: usize = 50;
/// How often start-up polls postmaster.pid: fast enough that a failover is
/// not slowed by the poll, slow enough to cost nothing.
const READY_POLL: Duration = Duration::from_millis(25);
/// Longest a Unix socket path may be (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

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
}

/// A running postmaster we started. Dropping it stops PostgreSQL
/// (immediate shutdown, then SIGKILL): a handle never leaks a server.
pub struct PostgresHandle {
    child: Option<Child>,
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
        // SIGQUIT: immediate shutdown, the postmaster takes its backends
        // with it (see PgCommand::death_signal for why it must not outlive
        // us).
        let mut cmd = PgCommand::new(bin, "postgres")
            .user(runner)
            .death_signal(Signal::SIGQUIT)
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
        let mut child = cmd
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start postgres for {}", pgdata.display()))?;
        let pid = child.id().context("postgres exited at once")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(forward_log(stream, opts.tag.clone(), log.clone()));
        }
        // From here on, Drop stops the server if we fail.
        let mut handle = PostgresHandle {
            child: Some(child),
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
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        if lines.first()?.trim() != self.pid.to_string() {
            return None;
        }
        lines.get(7).map(|s| s.trim().to_string())
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
    pub async fn stop(mut self, mode: ShutdownMode, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .context("postgres handle already stopped")?;
        let _ = kill(Pid::from_raw(self.pid as i32), mode.signal());
        if let Ok(status) = tokio::time::timeout(timeout, child.wait()).await {
            return Ok(status.context("wait for postgres")?);
        }
        tracing::warn!(
            pid = self.pid,
            "postgres did not stop within {} s; immediate shutdown",
            timeout.as_secs()
        );
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGQUIT);
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            return Ok(status.context("wait for postgres")?);
        }
        let _ = child.start_kill();
        Ok(child.wait().await.context("wait for postgres")?)
    }

    /// Resolves when the postmaster exits. Cancel-safe.
    pub async fn wait_exit(&mut self) -> Result<ExitStatus> {
        match self.child.as_mut() {
            Some(c) => Ok(c.wait().await.context("wait for postgres")?),
            None => std::future::pending().await,
        }
    }

    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait().context("poll postgres")?),
            None => Ok(None),
        }
    }
}

impl Drop for PostgresHandle {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        // Immediate shutdown stops the backends too; SIGKILL of the
        // postmaster alone would leave them holding shared memory.
        let pid = Pid::from_raw(self.pid as i32);
        let _ = kill(pid, Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.start_kill();
        let _ = child.try_wait();
    }
}

async fn forward_log(
    stream: impl tokio::io::AsyncRead + Unpin,
    tag: String,
    log: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if ["ERROR:", "FATAL:", "PANIC:", "WARNING:"]
            .iter()
            .any(|k| line.contains(k))
        {
            tracing::warn!(target: "pg", node = %tag, "{line}");
        } else if line.contains("DEBUG") {
            tracing::debug!(target: "pg", node = %tag, "{line}");
        } else {
            tracing::info!(target: "pg", node = %tag, "{line}");
        }
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_TAIL {
            log.pop_front();
        }
        log.push_back(line);
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
