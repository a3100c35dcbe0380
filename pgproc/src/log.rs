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

/// `text` with every `password=...` value hidden. PostgreSQL logs the
/// new value of every setting a reload changed, primary_conninfo and its
/// password included (`parameter "primary_conninfo" changed to ...`, at
/// every rotation of the replication password): each line it writes is
/// passed through this before it reaches a log.
pub fn redact_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("password=") {
        out.push_str(&rest[..i + "password=".len()]);
        out.push_str("***");
        rest = &rest[i + "password=".len()..];
        // Skip the value: quoted ('...' with \' escapes) or up to a space.
        let mut chars = rest.char_indices().peekable();
        let end = match chars.peek() {
            Some((_, '\\')) | Some((_, '\'')) => {
                let mut end = rest.len();
                let mut escaped = false;
                for (k, ch) in rest.char_indices().skip(1) {
                    if escaped {
                        escaped = false;
                    } else if ch == '\\' {
                        escaped = true;
                    } else if ch == '\'' {
                        end = k + 1;
                        break;
                    }
                }
                end
            }
            _ => rest.find([' ', '"']).unwrap_or(rest.len()),
        };
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

pub(crate) async fn forward_log(
    stream: impl tokio::io::AsyncRead + Unpin,
    tag: String,
    log: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = redact_passwords(&line);
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
