//! Where a keeper keeps its files: `PGDATA.pgpilot/` beside the data
//! directory, because pg_basebackup and pg_rewind replace PGDATA whole.

use std::path::{Path, PathBuf};

pub use pgpilot_pgproc::{state_dir, write_durably};

/// The keeper's configuration (TOML, mode 0600: it holds the replication
/// password).
pub fn config_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("keeper.toml")
}

/// The keeper's state (JSON): node id, current state, generation seen.
pub fn state_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("keeper.state.json")
}

/// The private Unix socket directory of the node's PostgreSQL (mode 0700,
/// owned by its OS user): local connections are trusted, so only that user
/// and root may reach the socket.
pub fn socket_dir(pgdata: &Path) -> PathBuf {
    pgpilot_pgproc::socket_dir_for(&state_dir(pgdata).join("run"))
}

/// Where pg_basebackup writes a new copy before it replaces PGDATA: a copy
/// is only ever moved into place once it is complete.
pub fn clone_dir(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("clone.partial")
}

/// Present while pg_rewind runs on PGDATA. pg_rewind cut short (a
/// SIGTERM, a step abandoned, a crash) leaves a data directory that is
/// likely unusable: with the marker there, the keeper never starts
/// PostgreSQL on it nor rewinds it again, it copies the data anew.
pub fn rewind_marker(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("rewind.partial")
}

/// The FIFO the node's PostgreSQL writes its log to (stdout and stderr)
/// when it outlives its keeper: each keeper reads it and forwards the
/// lines to its own log, the next one included (see
/// `pgpilot_pgproc::Lifetime`). Outside PGDATA, like everything of ours.
pub fn log_fifo(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("postgres.log.fifo")
}

/// The pid file of a running keeper for this PGDATA (`pgpilot stop` reads it).
pub fn pid_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("pgpilot.pid")
}

/// The settings file the keeper owns inside PGDATA, included from
/// postgresql.conf. It is rewritten whole on every change.
pub const PG_CONF_NAME: &str = "postgresql.pgpilot.conf";
