//! `pgpilot run` and `pgpilot stop` for a node, and the end of
//! `create postgres`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgpilot_proto::NodeState;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Stopped};
use crate::config::KeeperConfig;
use crate::files::{config_path, pid_path, write_durably};
use crate::statefile::KeeperState;

/// How long `pgpilot stop` waits for the keeper to stop PostgreSQL (a fast
/// shutdown writes a checkpoint first).
const STOP_WAIT: Duration = Duration::from_secs(90);

/// States in which `create postgres` (without --run) is done.
pub const CREATED_STATES: &[NodeState] = &[
    NodeState::Single,
    NodeState::WaitPrimary,
    NodeState::Primary,
    NodeState::Catchingup,
    NodeState::Secondary,
];

/// Whether `pgdata` belongs to a node.
pub fn is_node(pgdata: &Path) -> bool {
    config_path(pgdata).is_file()
}

/// Runs the keeper until `cancel` fires or the node is dropped. With
/// `until`, returns once the node reached one of those states.
pub async fn run_node(
    config: KeeperConfig,
    state: KeeperState,
    cancel: CancellationToken,
    until: &[NodeState],
) -> anyhow::Result<Stopped> {
    let pgdata = config.pgdata.clone();
    let _pid = PidFile::create(&pgdata)?;
    tracing::info!(
        "keeper of node {} {:?} starting in state {} (goal {})",
        state.node_id,
        state.name,
        state.current,
        state.assigned
    );
    let mut agent = Agent::new(config, state).await?;
    let stopped = agent.run_until(cancel, until).await?;
    match stopped {
        Stopped::Dropped => tracing::info!("node dropped from the monitor; PostgreSQL stopped"),
        Stopped::Cancelled => tracing::info!("keeper stopped; PostgreSQL stopped"),
        Stopped::Reached(s) => tracing::info!("node reached {s}"),
    }
    Ok(stopped)
}

/// Loads a node's configuration and state for `pgpilot run`.
pub fn load(pgdata: &Path) -> anyhow::Result<(KeeperConfig, KeeperState)> {
    let config = KeeperConfig::load(pgdata)?;
    let state = KeeperState::load(pgdata)?.with_context(|| {
        format!(
            "the node in {} never registered with the monitor: re-run `pgpilot create postgres --pgdata {}`",
            pgdata.display(),
            pgdata.display()
        )
    })?;
    Ok((config, state))
}

/// `pgpilot stop --pgdata DIR`: SIGTERM to the keeper, then wait for it.
pub async fn stop_node(pgdata: &Path) -> anyhow::Result<()> {
    let path = pid_path(pgdata);
    let Some(pid) = read_live_pid(&path)? else {
        bail!("no keeper runs for {}", pgdata.display());
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM).with_context(|| format!("signal pid {pid}"))?;
    let deadline = Instant::now() + STOP_WAIT;
    while process_alive(pid) {
        if Instant::now() > deadline {
            bail!(
                "the keeper (pid {pid}) did not stop within {} s; see its log",
                STOP_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

/// The pid in a pid file, if that process still runs.
fn read_live_pid(path: &Path) -> anyhow::Result<Option<i32>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", path.display()))?;
    Ok(process_alive(pid).then_some(pid))
}

/// The keeper's pid file; removed when dropped.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn create(pgdata: &Path) -> anyhow::Result<PidFile> {
        let path = pid_path(pgdata);
        if let Some(pid) = read_live_pid(&path)? {
            if pid != std::process::id() as i32 {
                bail!(
                    "a keeper already runs for {} (pid {pid}): stop it with `pgpilot stop --pgdata {}`",
                    pgdata.display(),
                    pgdata.display()
                );
            }
        }
        write_durably(&path, format!("{}\n", std::process::id()).as_bytes(), 0o644)?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
