//! Running PostgreSQL server programs: finding the binaries, the OS user
//! they run as, initdb and pg_controldata, and a supervised postmaster.
//!
//! - [`bin`]: [`PgBin`], the directory of the server binaries.
//! - [`user`]: [`OsUser`]; PostgreSQL refuses to run as root, so when
//!   pgpilot runs as root every PostgreSQL program runs as an unprivileged
//!   user (created if missing).
//! - [`command`]: [`PgCommand`], the one way to run a PostgreSQL program to
//!   completion: explicit environment, always checks the exit status.
//! - [`cluster`]: initdb, pg_controldata, "is this a PGDATA".
//! - [`files`]: [`write_durably`], temp file + fsync + rename + dir fsync.
//! - [`postmaster`]: postmaster.pid, and which postmaster runs in a data
//!   directory, checked (a stale file's pid may have been reused).
//! - [`server`]: [`PostgresHandle`], a postmaster as a supervised child
//!   (or adopted from an earlier process, see [`Lifetime`]) with its log
//!   lines forwarded to tracing.
//! - [`systemd`]: telling a service manager (systemd `Type=notify`) that
//!   the service is ready, stopping, or alive (`WatchdogSec=`).

pub mod bin;
pub mod cluster;
pub mod command;
pub mod files;
mod log;
pub mod postmaster;
pub mod server;
pub mod systemd;
pub mod user;

pub use bin::PgBin;
pub use cluster::{controldata, initdb, is_pgdata, ControlData, InitdbOptions};
pub use command::PgCommand;
pub use files::{set_mode, state_dir, write_durably};
pub use log::redact_passwords;
pub use postmaster::{find_postmaster, Found, PidFile, Postmaster, Stale};
pub use server::{socket_dir_for, Exit, Lifetime, PostgresHandle, ShutdownMode, StartOptions};
pub use user::{chown_dir, postgres_runner, OsUser};

/// Errors a caller branches on; everything else is [`Error::Other`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No PostgreSQL server binaries were found.
    #[error("PostgreSQL server binaries not found: {0}")]
    BinariesNotFound(String),
    /// initdb was pointed at a directory that holds something.
    #[error("{0} is not empty: initdb needs an empty or missing directory")]
    NotEmpty(String),
    /// The postmaster did not come up; the tail of its log says why.
    #[error("PostgreSQL did not start: {reason}\n{}", log_tail.join("\n"))]
    StartFailed {
        reason: String,
        log_tail: Vec<String>,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
