//! PostgreSQL's log, forwarded to tracing (target `pg`, tagged with the
//! node), from a pipe or from the FIFO a postmaster that outlives us writes
//! to (see [`crate::server::Lifetime`]).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Result;

/// Log lines kept for error messages and
/// [`crate::PostgresHandle::log_tail`].
pub(crate) const LOG_TAIL: usize = 50;

/// Creates the FIFO at `path` unless there is one.
pub(crate) fn ensure_fifo(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(anyhow::anyhow!(
            "{} exists and is not a FIFO: remove it (pgpilot creates it for PostgreSQL's log)",
            path.display()
        )
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use nix::sys::stat::Mode;
            nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
                .with_context(|| format!("create the FIFO {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("look at {}", path.display()))
            .into()),
    }
}

/// The read end of a log FIFO (non-blocking, on the tokio reactor).
pub(crate) fn open_fifo(path: &Path) -> Result<tokio::net::unix::pipe::Receiver> {
    Ok(tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(path)
        .with_context(|| format!("open {} for reading", path.display()))?)
}

pub(crate) async fn forward_log(
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
