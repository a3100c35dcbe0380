//! initdb, pg_controldata, and recognising a data directory.

use std::path::Path;

use anyhow::{anyhow, Context};

use crate::{chown_dir, Error, OsUser, PgBin, PgCommand, Result};

/// Options of [`initdb`].
#[derive(Clone, Debug)]
pub struct InitdbOptions {
    /// Name of the bootstrap superuser.
    pub superuser: String,
    /// Authentication for local (Unix socket) connections: "trust" or "peer".
    pub auth_local: String,
    /// Authentication for TCP connections, e.g. "scram-sha-256" or "reject".
    pub auth_host: String,
    pub data_checksums: bool,
    /// Skip fsync (tests only: a crash may corrupt the cluster).
    pub no_sync: bool,
}

/// Whether `path` holds a PostgreSQL data directory.
pub fn is_pgdata(path: &Path) -> bool {
    path.join("PG_VERSION").is_file() && path.join("global/pg_control").is_file()
}

/// Creates a cluster in `pgdata` (mode 0700, owned by the runner). Refuses
/// a directory that holds anything.
pub async fn initdb(
    bin: &PgBin,
    runner: &Option<OsUser>,
    pgdata: &Path,
    opts: &InitdbOptions,
) -> Result<()> {
    match std::fs::read_dir(pgdata) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::NotEmpty(pgdata.display().to_string()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(pgdata)
                .with_context(|| format!("create {}", pgdata.display()))?;
        }
        Err(e) => {
            return Err(anyhow!(e)
                .context(format!("read {}", pgdata.display()))
                .into())
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", pgdata.display()))?;
    chown_dir(runner, pgdata, false)?;
    let mut cmd = PgCommand::new(bin, "initdb")
        .user(runner)
        .arg("--pgdata")
        .arg(pgdata)
        .arg(format!("--username={}", opts.superuser))
        .arg(format!("--auth-local={}", opts.auth_local))
        .arg(format!("--auth-host={}", opts.auth_host))
        .args(["--encoding=UTF8", "--locale=C"]);
    if opts.data_checksums {
        cmd = cmd.arg("--data-checksums");
    }
    if opts.no_sync {
        cmd = cmd.arg("--no-sync");
    }
    cmd.run().await?;
    Ok(())
}

/// What pg_controldata says about a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    pub system_identifier: u64,
    /// "in production", "shut down", "in archive recovery", ...
    pub state: String,
    /// Timeline of the latest checkpoint.
    pub timeline: u32,
    /// "Latest checkpoint location": where the latest checkpoint record
    /// starts, as PostgreSQL prints an LSN ("0/1734F28").
    pub checkpoint_lsn: String,
}

impl ControlData {
    /// The cluster was last stopped cleanly as a primary: pg_control says
    /// "shut down", which PostgreSQL writes only once its shutdown
    /// checkpoint is on disk. Then [`ControlData::checkpoint_lsn`] is that
    /// shutdown checkpoint, the last record it wrote, and every commit it
    /// ever acknowledged lies before it. Not "shut down in recovery" (a
    /// standby: it writes no WAL of its own, what it has came from its
    /// upstream), not "in production" (what a crash or an immediate
    /// shutdown leaves: WAL may follow the last checkpoint), nor any
    /// other state. Meaningful only while no postmaster runs in PGDATA: a
    /// running primary's pg_control says "in production".
    pub fn shut_down_cleanly(&self) -> bool {
        self.state == "shut down"
    }
}

pub async fn controldata(
    bin: &PgBin,
    runner: &Option<OsUser>,
    pgdata: &Path,
) -> Result<ControlData> {
    let out = PgCommand::new(bin, "pg_controldata")
        .user(runner)
        .arg(pgdata)
        .run()
        .await?;
    parse_controldata(&out.stdout).map_err(Into::into)
}

fn parse_controldata(text: &str) -> anyhow::Result<ControlData> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| anyhow!("pg_controldata printed no {name:?}"))
    };
    Ok(ControlData {
        system_identifier: field("Database system identifier")?
            .parse()
            .context("parse the system identifier")?,
        state: field("Database cluster state")?,
        timeline: field("Latest checkpoint's TimeLineID")?
            .parse()
            .context("parse the timeline")?,
        checkpoint_lsn: field("Latest checkpoint location")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_controldata() {
        let text = "pg_control version number:            1300\n\
                    Database system identifier:           7312345678901234567\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/1734F28\n\
                    Latest checkpoint's TimeLineID:       1\n";
        let c = super::parse_controldata(text).unwrap();
        assert_eq!(c.system_identifier, 7312345678901234567);
        assert_eq!(c.state, "shut down");
        assert_eq!(c.timeline, 1);
        assert_eq!(c.checkpoint_lsn, "0/1734F28");
        assert!(c.shut_down_cleanly());
        assert!(super::parse_controldata("garbage").is_err());
    }

    /// Only a primary's clean stop counts (pg_controldata's wording, as
    /// PostgreSQL 15 prints it; LC_ALL=C, see `PgCommand`).
    #[test]
    fn only_a_clean_primary_stop_is_shut_down() {
        let with_state = |state: &str| {
            let text = format!(
                "Database system identifier:           7312345678901234567\n\
                 Database cluster state:               {state}\n\
                 Latest checkpoint location:           0/3000028\n\
                 Latest checkpoint's REDO location:    0/3000028\n\
                 Latest checkpoint's TimeLineID:       2\n"
            );
            super::parse_controldata(&text).unwrap()
        };
        let c = with_state("shut down");
        assert!(c.shut_down_cleanly());
        assert_eq!(c.checkpoint_lsn, "0/3000028", "not the REDO line");
        for state in [
            "shut down in recovery",
            "in production",
            "shutting down",
            "in crash recovery",
            "in archive recovery",
            "starting up",
        ] {
            let c = with_state(state);
            assert_eq!(c.state, state);
            assert!(!c.shut_down_cleanly(), "{state}");
        }
    }
}
