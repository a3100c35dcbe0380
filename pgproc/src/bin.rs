//! Where the PostgreSQL server binaries are.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The directory holding `postgres`, `initdb`, `pg_ctl`, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// `PG_BINDIR` when set, else `pg_config --bindir` (pg_config from
    /// `PG_CONFIG` or PATH). Never a hard-coded path.
    pub fn discover() -> Result<PgBin> {
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            return PgBin::from_dir(PathBuf::from(dir)).map_err(|e| {
                Error::BinariesNotFound(format!("PG_BINDIR is set but unusable: {e}"))
            });
        }
        let pg_config = std::env::var_os("PG_CONFIG").unwrap_or_else(|| "pg_config".into());
        let out = std::process::Command::new(&pg_config)
            .arg("--bindir")
            .output()
            .map_err(|e| {
                Error::BinariesNotFound(format!(
                    "cannot run {}: {e}; install PostgreSQL's server package (Debian: postgresql-15) \
                     or set PG_BINDIR to the directory holding initdb and postgres",
                    pg_config.to_string_lossy()
                ))
            })?;
        if !out.status.success() {
            return Err(Error::BinariesNotFound(format!(
                "{} --bindir failed: {}; set PG_BINDIR instead",
                pg_config.to_string_lossy(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PgBin::from_dir(PathBuf::from(dir))
    }

    /// A directory that must hold `postgres` and `initdb`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<PgBin> {
        let dir = dir.into();
        for program in ["postgres", "initdb", "pg_ctl", "pg_controldata"] {
            if !dir.join(program).is_file() {
                return Err(Error::BinariesNotFound(format!(
                    "{} has no {program}: install PostgreSQL's server package (Debian: postgresql-15) \
                     or set PG_BINDIR to the right directory",
                    dir.display()
                )));
            }
        }
        Ok(PgBin { dir })
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
