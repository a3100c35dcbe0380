//! Operator hooks from keeper.toml: `pre_promote` and `on_role_change`.
//!
//! A hook is a command, either a string run by `/bin/sh -c` or a list
//! (program and arguments, run directly). The keeper appends two
//! arguments, the old and the new role (`$1` and `$2` of a shell string),
//! and sets the environment:
//!
//! | variable | value |
//! |---|---|
//! | `PGPILOT_NODE_ID` | this node's id |
//! | `PGPILOT_NODE_NAME` | this node's name |
//! | `PGPILOT_FORMATION` | the formation |
//! | `PGPILOT_OLD_ROLE`, `PGPILOT_NEW_ROLE` | `primary`, `standby` or `stopped` ([`role_of`]) |
//! | `PGPILOT_OLD_STATE`, `PGPILOT_NEW_STATE` | the node states (`secondary`, `wait_primary`, ...) |
//! | `PGPILOT_TIMELINE` | PostgreSQL's timeline as the keeper last read it (empty if unknown) |
//! | `PGDATA` | the data directory |
//!
//! - `pre_promote` runs on the candidate as a step of its promotion, just
//!   before `pg_promote()` (with PostgreSQL replayed and still in
//!   recovery), e.g. to power off the old primary. A non-zero exit or a
//!   timeout fails the promotion: the keeper reports why (an event on the
//!   monitor) and tries again on its next round (running the hook again);
//!   after `promotion_timeout` the monitor gives the promotion to another
//!   standby that holds everything, or waits.
//! - `on_role_change` runs after every change of role (a transition whose
//!   role differs, a self-fence): for a VIP, PgBouncer, DNS. It runs
//!   beside the keeper's loop and never delays it (nor fencing); a failure
//!   is logged.
//!
//! Both are killed after `hook_timeout` (default 30 s). Their output goes
//! to the keeper's log, line by line, tagged `hook`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_proto::state::Connection;
use pgpilot_proto::NodeState;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The default of `hook_timeout`: long enough to power off a machine
/// through an out-of-band controller, short enough that a hung hook
/// cannot hold a promotion for long.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// A hook's command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    /// Run by `/bin/sh -c`; the arguments are `$1`, `$2`.
    Shell(String),
    /// A program and its arguments (must not be empty).
    Argv(Vec<String>),
}

/// The role a state stands for, as hooks name it.
pub fn role_of(s: NodeState) -> &'static str {
    match s.connection() {
        Connection::ReadWrite => "primary",
        Connection::ReadOnly => "standby",
        Connection::None => "stopped",
    }
}

/// What a hook is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookEnv {
    pub node_id: i64,
    pub node_name: String,
    pub formation: String,
    pub old: NodeState,
    pub new: NodeState,
    /// The roles the hook is told of: those of `old` and `new`
    /// ([`HookEnv::role_change`]), except for `pre_promote`, whose new
    /// role is the primary's whatever state the promotion goes through.
    pub old_role: &'static str,
    pub new_role: &'static str,
    pub timeline: Option<u32>,
}

impl HookEnv {
    /// The environment of a change from `old` to `new`, the roles theirs.
    pub fn role_change(
        node_id: i64,
        node_name: String,
        formation: String,
        old: NodeState,
        new: NodeState,
        timeline: Option<u32>,
    ) -> HookEnv {
        HookEnv {
            node_id,
            node_name,
            formation,
            old,
            new,
            old_role: role_of(old),
            new_role: role_of(new),
            timeline,
        }
    }

    fn vars(&self, pgdata: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("PGPILOT_NODE_ID", self.node_id.to_string()),
            ("PGPILOT_NODE_NAME", self.node_name.clone()),
            ("PGPILOT_FORMATION", self.formation.clone()),
            ("PGPILOT_OLD_ROLE", self.old_role.into()),
            ("PGPILOT_NEW_ROLE", self.new_role.into()),
            ("PGPILOT_OLD_STATE", self.old.name().into()),
            ("PGPILOT_NEW_STATE", self.new.name().into()),
            (
                "PGPILOT_TIMELINE",
                self.timeline.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("PGDATA", pgdata.display().to_string()),
        ]
    }
}

/// Environment variables of the keeper that hooks never see.
const SECRET_ENV: [&str; 5] = [
    "PGPILOT_JOIN_TOKEN",
    "PGPILOT_MONITOR_DATABASE_URL",
    "PGPILOT_TOKEN",
    "PGPILOT_TOKEN_FILE",
    "PGPASSWORD",
];

/// Runs hook `what` to its end or its timeout (then kills it). Its output
/// goes to the log. Errors on a failed spawn, a non-zero exit or the
/// timeout.
pub async fn run(
    what: &str,
    cmd: &HookCommand,
    env: &HookEnv,
    pgdata: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let args = [env.old_role, env.new_role];
    let mut c = match cmd {
        HookCommand::Shell(s) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(s).arg(format!("pgpilot-{what}")).args(args);
            c
        }
        HookCommand::Argv(v) => {
            let Some((prog, rest)) = v.split_first() else {
                bail!("the {what} hook is an empty list");
            };
            let mut c = tokio::process::Command::new(prog);
            c.args(rest).args(args);
            c
        }
    };
    // A hook gets the keeper's environment minus its secrets: with
    // `create postgres --run` that holds the join token, and a hook's
    // output goes to the log.
    for secret in SECRET_ENV {
        c.env_remove(secret);
    }
    c.envs(env.vars(pgdata))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c
        .spawn()
        .with_context(|| format!("start the {what} hook"))?;
    let lines = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        let what = what.to_string();
        async move {
            let Some(r) = r else { return };
            let mut l = BufReader::new(r).lines();
            while let Ok(Some(line)) = l.next_line().await {
                tracing::info!(target: "hook", hook = %what, "{line}");
            }
        }
    };
    let out = lines(child.stdout.take().map(|s| Box::new(s) as _));
    let err = lines(child.stderr.take().map(|s| Box::new(s) as _));
    let wait = async {
        let (status, _, _) = tokio::join!(child.wait(), out, err);
        status
    };
    let status = match tokio::time::timeout(timeout, wait).await {
        Ok(s) => s.with_context(|| format!("wait for the {what} hook"))?,
        // Dropping the wait drops the child: kill_on_drop kills it.
        Err(_) => bail!("the {what} hook timed out after {timeout:?} and was killed"),
    };
    if !status.success() {
        bail!("the {what} hook failed ({status})");
    }
    tracing::info!(hook = %what, "the {what} hook succeeded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv {
        HookEnv::role_change(
            2,
            "b".into(),
            "default".into(),
            NodeState::Secondary,
            NodeState::WaitPrimary,
            Some(3),
        )
    }

    #[test]
    fn roles() {
        assert_eq!(role_of(NodeState::WaitPrimary), "primary");
        assert_eq!(role_of(NodeState::Secondary), "standby");
        assert_eq!(role_of(NodeState::Demoted), "stopped");
    }

    #[test]
    fn config_forms() {
        #[derive(Deserialize)]
        struct T {
            h: HookCommand,
        }
        let t: T = toml::from_str("h = \"echo hi\"").unwrap();
        assert_eq!(t.h, HookCommand::Shell("echo hi".into()));
        let t: T = toml::from_str("h = [\"/bin/echo\", \"hi\"]").unwrap();
        assert_eq!(
            t.h,
            HookCommand::Argv(vec!["/bin/echo".into(), "hi".into()])
        );
    }

    #[tokio::test]
    async fn arguments_environment_exit_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "echo \"$1 $2 $PGPILOT_NODE_ID $PGPILOT_NODE_NAME $PGPILOT_FORMATION \
             $PGPILOT_OLD_ROLE $PGPILOT_NEW_ROLE $PGPILOT_OLD_STATE $PGPILOT_NEW_STATE \
             $PGPILOT_TIMELINE\" > {}",
            out.display()
        );
        let t = Duration::from_secs(10);
        run("test", &HookCommand::Shell(script), &env(), dir.path(), t)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "standby primary 2 b default standby primary secondary wait_primary 3\n"
        );
        let argv = HookCommand::Argv(vec!["/bin/sh".into(), "-c".into(), "exit 3".into()]);
        let e = run("test", &argv, &env(), dir.path(), t).await.unwrap_err();
        assert!(format!("{e:#}").contains("failed"), "{e:#}");
        let slow = HookCommand::Shell("sleep 30".into());
        let started = std::time::Instant::now();
        let e = run(
            "test",
            &slow,
            &env(),
            dir.path(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(format!("{e:#}").contains("timed out"), "{e:#}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let empty = HookCommand::Argv(vec![]);
        assert!(run("test", &empty, &env(), dir.path(), t).await.is_err());
    }
}
