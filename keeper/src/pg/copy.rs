//! Getting a copy of the primary's data: pg_basebackup for a new standby,
//! pg_rewind (falling back to pg_basebackup) for an old primary.
//!
//! A copy is made in `PGDATA.pgpilot/clone.partial` and moved into place
//! only once pg_basebackup succeeded, so an interrupted copy is thrown away
//! and redone, and a complete one is never redone. The old data of a
//! rejoining node is removed only once its replacement is complete.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpilot_pgproc::{chown_dir, controldata, is_pgdata, PgCommand};
use pgpilot_proto::node_slot_name;

use super::conf::REPLICATION_USER;
use super::LocalPg;
use crate::files::clone_dir;
use crate::plan::Upstream;

/// pg_basebackup of a large database takes long; this bounds a hung one.
const CLONE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const REWIND_TIMEOUT: Duration = Duration::from_secs(3600);

/// How a rejoin got the data in line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejoined {
    /// "pg_rewind" or "pg_basebackup".
    pub method: &'static str,
    pub detail: String,
}

impl LocalPg {
    /// Clones the upstream into PGDATA unless PGDATA already holds a cluster.
    /// Returns whether a copy was made.
    pub async fn clone_from(
        &mut self,
        up: &Upstream,
        node_id: i64,
        password: &str,
    ) -> anyhow::Result<bool> {
        if self.has_pgdata() {
            tracing::info!(
                "{} already holds a complete copy; not cloning again",
                self.pgdata.display()
            );
            return Ok(false);
        }
        if let Ok(mut entries) = std::fs::read_dir(&self.pgdata) {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty and holds no PostgreSQL cluster: move its contents away, then run again",
                    self.pgdata.display()
                );
            }
        }
        self.basebackup(up, node_id, password).await?;
        self.install_clone()?;
        Ok(true)
    }

    async fn basebackup(&self, up: &Upstream, node_id: i64, password: &str) -> anyhow::Result<()> {
        let dir = clone_dir(&self.pgdata);
        // pg_basebackup writes backup_manifest last: with it, the copy is
        // complete (the keeper died before moving it in) and is kept.
        if is_pgdata(&dir) && dir.join("backup_manifest").is_file() {
            tracing::info!("{} holds a complete copy; using it", dir.display());
            return Ok(());
        }
        if dir.exists() {
            tracing::info!("removing the incomplete copy left in {}", dir.display());
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        self.ensure_ssl()?;
        pgpilot_pgproc::set_mode(&dir, 0o700)?;
        chown_dir(&self.runner, &dir, false)?;
        let slot = node_slot_name(node_id);
        tracing::info!(
            "copying the data of node {} ({}:{}) with pg_basebackup through slot {slot}, at most {} kB/s",
            up.node_id,
            up.host,
            up.port,
            self.max_rate_kb
        );
        let started = Instant::now();
        let mut cmd = PgCommand::new(&self.bin, "pg_basebackup")
            .user(&self.runner)
            .arg("--pgdata")
            .arg(&dir)
            .args([
                format!("--host={}", up.host),
                format!("--port={}", up.port),
                format!("--username={REPLICATION_USER}"),
                format!("--slot={slot}"),
            ])
            .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"])
            // maximum_backup_rate: the data files' rate (the WAL stream
            // beside them is not throttled, so the copy cannot fall behind
            // the primary's WAL recycling).
            .arg(format!("--max-rate={}k", self.max_rate_kb))
            // Not the slot's name: as pgpilot_node_N the copy's WAL stream
            // would count as a synchronous standby and could acknowledge
            // commits into a copy that may yet be thrown away.
            .env("PGAPPNAME", format!("pgpilot_clone_{node_id}"))
            .env("PGCONNECT_TIMEOUT", "5")
            .timeout(CLONE_TIMEOUT)
            .stderr_to_terminal();
        // SSL as for streaming (pg_basebackup takes host and port as
        // options, so sslmode goes in the environment).
        for (k, v) in self.ssl.client.env() {
            cmd = cmd.env(k, v);
        }
        if cmd.is_stderr_terminal() {
            cmd = cmd.arg("--progress");
        }
        if !password.is_empty() {
            cmd = cmd.env("PGPASSWORD", password);
        }
        cmd.run().await.with_context(|| {
            format!(
                "pg_basebackup from {}:{} failed; it is retried from scratch on the next attempt",
                up.host, up.port
            )
        })?;
        tracing::info!(
            "pg_basebackup finished in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Moves a complete copy into PGDATA (which must be empty or absent).
    fn install_clone(&self) -> anyhow::Result<()> {
        let dir = clone_dir(&self.pgdata);
        if !is_pgdata(&dir) {
            bail!("{} is not a complete copy", dir.display());
        }
        if self.pgdata.exists() {
            std::fs::remove_dir(&self.pgdata).with_context(|| {
                format!(
                    "remove the empty {} before moving the copy in",
                    self.pgdata.display()
                )
            })?;
        }
        std::fs::rename(&dir, &self.pgdata)
            .with_context(|| format!("move {} to {}", dir.display(), self.pgdata.display()))?;
        if let Some(parent) = self.pgdata.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("fsync {}", parent.display()))?;
        }
        // A new copy is in place: whatever a cut-short rewind left is gone,
        // and so goes the marker that guarded it.
        let marker = crate::files::rewind_marker(&self.pgdata);
        if marker.exists() {
            std::fs::remove_file(&marker)
                .with_context(|| format!("remove {}", marker.display()))?;
        }
        Ok(())
    }

    /// Rewinds this stopped old primary to follow `up`; falls back to a
    /// fresh copy when pg_rewind cannot do it.
    pub async fn rewind_from(
        &mut self,
        up: &Upstream,
        node_id: i64,
        password: &str,
    ) -> anyhow::Result<Rejoined> {
        if !self.has_pgdata() {
            self.clone_from(up, node_id, password).await?;
            return Ok(Rejoined {
                method: "pg_basebackup",
                detail: "no local data was left to rewind".into(),
            });
        }
        let before = controldata(&self.bin, &self.runner, &self.pgdata)
            .await
            .ok();
        let marker = crate::files::rewind_marker(&self.pgdata);
        if marker.exists() {
            let why = anyhow::anyhow!(
                "an earlier pg_rewind of this data directory was interrupted ({} exists)",
                marker.display()
            );
            return self
                .replace_by_copy(up, node_id, password, why, before)
                .await;
        }
        // No password here: it would show in `ps`. It goes in the
        // environment, which only the same OS user and root can read.
        let source = format!(
            "host={} port={} user={REPLICATION_USER} dbname=postgres connect_timeout=5 {}",
            super::conf::quote(&up.host),
            up.port,
            self.ssl.client.conninfo_parts().join(" ")
        );
        self.ensure_ssl()?;
        let mut cmd = PgCommand::new(&self.bin, "pg_rewind")
            .user(&self.runner)
            .arg("--target-pgdata")
            .arg(&self.pgdata)
            .arg(format!("--source-server={source}"))
            .timeout(REWIND_TIMEOUT);
        if !password.is_empty() {
            cmd = cmd.env("PGPASSWORD", password);
        }
        let started = Instant::now();
        crate::files::write_durably(&marker, b"pg_rewind runs on this data directory\n", 0o600)?;
        match cmd.run().await {
            Ok(out) => {
                let said = format!("{}\n{}", out.stdout, out.stderr);
                for line in said.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::info!(target: "pg", program = "pg_rewind", "{line}");
                }
                let diverged = said
                    .lines()
                    .find(|l| l.contains("diverged at"))
                    .map(|l| l.trim().trim_start_matches("pg_rewind: ").to_string())
                    .unwrap_or_else(|| "no rewind was required".into());
                // A clean stop before the other node's promotion (a
                // switchover): this node has no WAL past the fork, and
                // pg_rewind changes nothing.
                let discarded = match &before {
                    _ if said.contains("no rewind required") => format!(
                        "{}no rewind required: nothing was discarded",
                        if diverged.contains("diverged at") {
                            format!("{diverged}; ")
                        } else {
                            String::new()
                        }
                    ),
                    Some(c) => format!(
                        "{diverged}; local WAL past that point on timeline {} was discarded (the old \
                         primary's last checkpoint was at {})",
                        c.timeline, c.checkpoint_lsn
                    ),
                    None => format!("{diverged}; local WAL past that point was discarded"),
                };
                std::fs::remove_file(&marker)
                    .with_context(|| format!("remove {}", marker.display()))?;
                tracing::info!(
                    "rejoined node {} with pg_rewind in {:.1} s: {discarded}",
                    up.node_id,
                    started.elapsed().as_secs_f64()
                );
                Ok(Rejoined {
                    method: "pg_rewind",
                    detail: discarded,
                })
            }
            Err(e) => {
                // pg_rewind changes the target only once it says where it
                // rewinds from; a failure before that (the source cannot
                // be reached, the target needs crash recovery it could not
                // finish, ...) left PGDATA as it was, so it is not marked.
                let e = anyhow::Error::from(e);
                if !format!("{e:#}").contains("rewinding from last common checkpoint") {
                    std::fs::remove_file(&marker)
                        .with_context(|| format!("remove {}", marker.display()))?;
                }
                self.replace_by_copy(up, node_id, password, e, before).await
            }
        }
    }

    /// pg_rewind cannot be used (it failed, or an earlier run was cut
    /// short): a new copy replaces PGDATA whole.
    async fn replace_by_copy(
        &mut self,
        up: &Upstream,
        node_id: i64,
        password: &str,
        e: anyhow::Error,
        before: Option<pgpilot_pgproc::ControlData>,
    ) -> anyhow::Result<Rejoined> {
        tracing::warn!(
            "pg_rewind from node {} failed, falling back to pg_basebackup: {e:#}",
            up.node_id
        );
        self.basebackup(up, node_id, password).await?;
        // Only now, with a complete copy at hand, the old data goes:
        // moved aside, the copy moved in, then deleted, so a crash at any
        // point leaves either the old or the new PGDATA.
        let aside = crate::files::state_dir(&self.pgdata).join("replaced.old");
        if aside.exists() {
            std::fs::remove_dir_all(&aside)
                .with_context(|| format!("remove {}", aside.display()))?;
        }
        std::fs::rename(&self.pgdata, &aside)
            .with_context(|| format!("move the old data {} aside", self.pgdata.display()))?;
        self.install_clone()?;
        std::fs::remove_dir_all(&aside)
            .with_context(|| format!("remove the old data in {}", aside.display()))?;
        let detail = match &before {
            Some(c) => format!(
                "pg_rewind failed ({e}); the whole old data directory was replaced, discarding \
                 local WAL up to checkpoint {} on timeline {}",
                c.checkpoint_lsn, c.timeline
            ),
            None => format!("pg_rewind failed ({e}); the old data directory was replaced"),
        };
        tracing::warn!("rejoined node {} with pg_basebackup: {detail}", up.node_id);
        Ok(Rejoined {
            method: "pg_basebackup",
            detail,
        })
    }
}
