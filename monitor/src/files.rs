//! Where pgpilot keeps its own files, and how it writes them.
//!
//! pg_rewind and pg_basebackup replace a data directory whole, so nothing
//! of ours lives inside PGDATA: `--pgdata DIR` has a sibling `DIR.pgpilot/`
//! with the configuration and state of the monitor or keeper of DIR.

use std::path::{Path, PathBuf};

pub use pgpilot_pgproc::{state_dir, write_durably};

/// The monitor's configuration file for `--pgdata DIR`.
pub fn monitor_config_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("monitor.toml")
}

/// Present once `create monitor` finished: a re-run changes nothing.
pub fn monitor_created_marker(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("monitor.created")
}

/// Present while `create monitor` runs initdb: a DIR that holds a partial
/// cluster and this marker was ours and may be cleared and redone.
pub fn initdb_marker(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("initdb.started")
}

/// The pid file of a running `pgpilot run` for this DIR.
pub fn pid_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("pgpilot.pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_is_a_sibling() {
        assert_eq!(
            state_dir(Path::new("/var/lib/pg/main")),
            Path::new("/var/lib/pg/main.pgpilot")
        );
        assert_eq!(
            state_dir(Path::new("rel/dir/")),
            Path::new("rel/dir.pgpilot")
        );
    }
}
