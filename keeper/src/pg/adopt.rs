//! A PostgreSQL this keeper did not start: left running by an earlier
//! keeper of the node (it died, or exited alone to be upgraded), adopted
//! rather than restarted; and letting go of PostgreSQL when this keeper
//! exits alone. The fencing rules for an adopted server are the engine's
//! (`engine::adopt`).

use anyhow::{bail, Context};
use pgpilot_pgproc::{self as pgproc, Found, PostgresHandle, Postmaster, ShutdownMode};

use super::{LocalPg, STOP_TIMEOUT};
use crate::files::{log_fifo, socket_dir};

impl LocalPg {
    /// At keeper start-up, before anything else touches PostgreSQL: takes
    /// over the postmaster an earlier keeper of this node left running
    /// (it died, or exited alone to be upgraded), found through PGDATA's
    /// postmaster.pid and checked (see [`pgproc::find_postmaster`]).
    /// Returns its pid when adopted. Nothing is done to the server, its
    /// settings are verified again by the next steady round. A stale pid
    /// file is cleared when its pid was reused or is a zombie (see `take_over`
    /// for the rest).
    pub async fn adopt(&mut self) -> anyhow::Result<Option<u32>> {
        if self.handle.is_some() || !self.has_pgdata() {
            return Ok(self.pid());
        }
        match self.found_postmaster()? {
            Some(pm) => self.take_over(pm).await,
            None => Ok(None),
        }
    }

    /// The live postmaster of PGDATA, if one runs. A postmaster.pid left
    /// by a crash whose pid now belongs to another process, or to the
    /// killed postmaster not yet reaped, is removed: PostgreSQL would
    /// refuse to start because of it (see [`pgproc::Stale`]).
    pub(super) fn found_postmaster(&self) -> anyhow::Result<Option<Postmaster>> {
        match pgproc::find_postmaster(&self.pgdata) {
            Found::Nothing => Ok(None),
            Found::Running(pm) => Ok(Some(pm)),
            Found::Stale(s) if s.blocks_start => {
                let path = self.pgdata.join("postmaster.pid");
                tracing::warn!(
                    "{} is stale ({}): PostgreSQL would refuse to start beside it; removing it",
                    path.display(),
                    s.why
                );
                // The socket's lock file names the same pid and PostgreSQL
                // checks it the same way: it goes too.
                let socket_lock =
                    socket_dir(&self.pgdata).join(format!(".s.PGSQL.{}.lock", self.port));
                if let Some(pid) = s.pid {
                    remove_if_it_names(&path, pid)?;
                    remove_if_it_names(&socket_lock, pid)?;
                }
                Ok(None)
            }
            Found::Stale(s) => {
                // A dead pid: PostgreSQL sees that itself and starts.
                tracing::info!(
                    "{} names no running postmaster ({}): not adopted",
                    self.pgdata.join("postmaster.pid").display(),
                    s.why
                );
                Ok(None)
            }
        }
    }

    /// A postmaster this keeper did not start runs in PGDATA. It is adopted
    /// (true) when the keeper can reach it where it starts its own (port,
    /// socket directory: else every status read would fail while it
    /// looked up), and when PostgreSQL may outlive the keeper. With
    /// `postgres_dies_with_keeper` it is stopped instead (fast shutdown)
    /// and then started as this keeper's child by the usual rules: it
    /// would outlive this keeper, which that setting forbids (it runs when
    /// the setting was turned on under a running server, or was started
    /// by hand).
    pub(super) async fn take_over(&mut self, pm: Postmaster) -> anyhow::Result<Option<u32>> {
        let pid = pm.pid();
        let sockets = socket_dir(&self.pgdata);
        let port_ok = pm.file.port.is_none_or(|p| p == self.port);
        let socket_ok = pm.file.socket_dir.as_ref().is_none_or(|d| *d == sockets);
        if !port_ok || !socket_ok {
            bail!(
                "adopt the PostgreSQL running in {} (pid {pid}): it listens on port {} with its \
                 socket in {}, not on port {} in {} where the keeper reaches it; stop it \
                 (pg_ctl stop -D {} -m fast) and let the keeper start it",
                self.pgdata.display(),
                pm.file.port.map_or("?".into(), |p| p.to_string()),
                pm.file
                    .socket_dir
                    .as_ref()
                    .map_or("?".into(), |d| d.display().to_string()),
                self.port,
                sockets.display(),
                self.pgdata.display()
            );
        }
        let status = pm.file.status.clone().unwrap_or_else(|| "unknown".into());
        if self.dies_with_keeper {
            tracing::warn!(
                "PostgreSQL (pid {pid}, {status}) runs in {} but was not started by this keeper, \
                 and postgres_dies_with_keeper is set: stopping it (fast shutdown); the keeper \
                 starts it again as its child",
                self.pgdata.display()
            );
            let exit = PostgresHandle::adopt(pm, &self.tag, None)
                .stop(ShutdownMode::Fast, STOP_TIMEOUT)
                .await
                .context("stop the PostgreSQL the keeper did not start")?;
            tracing::info!("PostgreSQL stopped ({exit})");
            return Ok(None);
        }
        let handle = PostgresHandle::adopt(pm, &self.tag, Some(&log_fifo(&self.pgdata)));
        tracing::info!(
            pid,
            "adopted the PostgreSQL running in {} (status {status}): not restarted",
            self.pgdata.display()
        );
        self.handle = Some(handle);
        Ok(Some(pid as u32))
    }

    /// Lets go of PostgreSQL without stopping it: the keeper exits alone
    /// (`pgpilot stop --keeper-only`), the next one adopts it. Returns its
    /// pid. Only where PostgreSQL outlives its keeper: with
    /// `postgres_dies_with_keeper` it is stopped (fast shutdown) instead,
    /// and `None` returned.
    pub async fn release(&mut self) -> anyhow::Result<Option<u32>> {
        if self.dies_with_keeper {
            self.stop().await?;
            return Ok(None);
        }
        Ok(self.handle.take().map(|h| h.detach()))
    }
}

/// Removes the lock file `path` if its first line is still `pid`: a
/// postmaster started since it was read (by hand) has written its own
/// pid there, and its lock file must stay.
fn remove_if_it_names(path: &std::path::Path, pid: i32) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    if text.lines().next().map(str::trim) != Some(pid.to_string().as_str()) {
        return Ok(());
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::remove_if_it_names;

    #[test]
    fn a_lock_file_goes_only_while_it_names_the_stale_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGSQL.5432.lock");
        std::fs::write(&path, "4242\n/data\n").unwrap();
        // Another postmaster wrote its own pid since: kept.
        remove_if_it_names(&path, 4141).unwrap();
        assert!(path.exists());
        remove_if_it_names(&path, 4242).unwrap();
        assert!(!path.exists());
        // None: nothing to do.
        remove_if_it_names(&path, 4242).unwrap();
    }
}
