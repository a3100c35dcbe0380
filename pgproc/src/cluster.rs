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
    pub checkpoint_lsn: String,
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
        assert!(super::parse_controldata("garbage").is_err());
    }
}
