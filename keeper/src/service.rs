//! `pgpilot run` and `pgpilot stop` for a node, and the end of
//! `create postgres`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgpilot_proto::NodeState;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, KeeperOnly, Stopped};
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
/// `until`, returns once the node reached one of those states. When
/// `keeper_only` is set as `cancel` fires, PostgreSQL is left running.
pub async fn run_node(
    config: KeeperConfig,
    state: KeeperState,
    cancel: CancellationToken,
    keeper_only: KeeperOnly,
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
    let stopped = agent.run_until(cancel, until, &keeper_only).await?;
    match stopped {
        Stopped::Dropped => tracing::info!("node dropped from the monitor; PostgreSQL stopped"),
        Stopped::Cancelled => tracing::info!("keeper stopped; PostgreSQL stopped"),
        Stopped::KeeperOnly => tracing::info!("keeper stopped alone"),
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

/// How long `pgpilot stop --keeper-only` waits for the keeper to exit (it
/// only ends its loop: a step under way is cut short).
const KEEPER_ONLY_WAIT: Duration = Duration::from_secs(30);

/// `pgpilot stop --pgdata DIR`: SIGTERM to the keeper, which stops
/// PostgreSQL (fast shutdown) and exits; then wait for it. A PostgreSQL
/// still running without a keeper (its keeper died, or exited alone) is
/// stopped the same way, so that this stops both whatever ran.
pub async fn stop_node(pgdata: &Path) -> anyhow::Result<()> {
    let keeper = read_live_pid(&pid_path(pgdata))?;
    if let Some(pid) = keeper {
        kill(Pid::from_raw(pid), Signal::SIGTERM).with_context(|| format!("signal pid {pid}"))?;
        wait_exit(pid, STOP_WAIT, "the keeper").await?;
    }
    match pgpilot_pgproc::find_postmaster(pgdata) {
        pgpilot_pgproc::Found::Running(pm) => {
            let pid = pm.pid();
            tracing::info!(pid, "PostgreSQL runs without a keeper: fast shutdown");
            pm.signal(Signal::SIGINT);
            let deadline = Instant::now() + STOP_WAIT;
            while pm.alive() {
                if Instant::now() > deadline {
                    bail!(
                        "PostgreSQL (pid {pid}) did not stop within {} s; see its log",
                        STOP_WAIT.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }
        _ if keeper.is_some() => Ok(()),
        _ => bail!(
            "nothing runs for {}: no pgpilot process, no PostgreSQL",
            pgdata.display()
        ),
    }
}

/// `pgpilot stop --keeper-only --pgdata DIR`: the keeper exits and leaves
/// PostgreSQL running (SIGUSR2), for `pgpilot run` (or its service
/// manager) to start a keeper again that adopts it: how a keeper is
/// restarted, e.g. to upgrade it, without a restart of PostgreSQL.
/// Returns the pid of the PostgreSQL left running, if one runs.
pub async fn stop_keeper_only(pgdata: &Path) -> anyhow::Result<Option<i32>> {
    let config = KeeperConfig::load(pgdata)?;
    if config.postgres_dies_with_keeper {
        bail!(
            "{} sets postgres_dies_with_keeper = true: PostgreSQL cannot outlive its keeper, so \
             the keeper cannot stop alone. Stop both with `pgpilot stop --pgdata {}`, or set \
             postgres_dies_with_keeper = false (it applies from PostgreSQL's next start)",
            config_path(pgdata).display(),
            pgdata.display()
        );
    }
    let Some(pid) = read_live_pid(&pid_path(pgdata))? else {
        bail!("no keeper runs for {}", pgdata.display());
    };
    kill(Pid::from_raw(pid), Signal::SIGUSR2).with_context(|| format!("signal pid {pid}"))?;
    wait_exit(pid, KEEPER_ONLY_WAIT, "the keeper").await?;
    Ok(match pgpilot_pgproc::find_postmaster(pgdata) {
        pgpilot_pgproc::Found::Running(pm) => Some(pm.pid()),
        _ => None,
    })
}

async fn wait_exit(pid: i32, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() > deadline {
            bail!(
                "{what} (pid {pid}) did not stop within {} s; see its log",
                timeout.as_secs()
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
