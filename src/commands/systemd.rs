//! `show systemd --pgdata DIR`: a systemd unit for the monitor or node of
//! DIR, consistent with how each one stops (README "Keeper restarts").
//!
//! The two differ in one thing. A keeper's PostgreSQL outlives the keeper
//! (the next keeper adopts it), so systemd must signal the keeper alone
//! (`KillMode=process`). A monitor's private PostgreSQL dies with the
//! monitor (it is started with PR_SET_PDEATHSIG), and the monitor stops it
//! itself in order on SIGTERM, so `KillMode=mixed`: SIGTERM to the monitor
//! alone, SIGKILL to anything still left in the unit after it exited.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context};
use pgpilot_monitor::files::monitor_config_path;

/// What the unit is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Monitor,
    Node,
}

/// `pgpilot show systemd`: prints the unit.
pub fn show(pgdata: &Path, user: Option<&str>) -> anyhow::Result<()> {
    let abs = std::path::absolute(pgdata)?;
    let kind = if monitor_config_path(&abs).is_file() {
        Kind::Monitor
    } else if pgpilot_keeper::service::is_node(&abs) {
        Kind::Node
    } else {
        bail!(
            "{} has no pgpilot monitor or node: create one first (`pgpilot create monitor` or \
             `pgpilot create postgres`), then ask for its unit",
            abs.display()
        );
    };
    let user = match user {
        Some(u) => u.to_string(),
        None => owner(&pgpilot_pgproc::state_dir(&abs))?,
    };
    let exe = std::env::current_exe().context("find the path of this pgpilot binary")?;
    print!("{}", unit(kind, &abs, &exe, &user));
    Ok(())
}

/// The user owning pgpilot's files of DIR: `pgpilot run` must run as the
/// user that created them (root included: pgpilot then runs PostgreSQL
/// as the unprivileged `pg_user` of its configuration).
fn owner(dir: &Path) -> anyhow::Result<String> {
    let uid = std::fs::metadata(dir)
        .with_context(|| format!("read the owner of {}", dir.display()))?
        .uid();
    Ok(
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => u.name,
            _ => uid.to_string(),
        },
    )
}

/// The unit's text.
pub fn unit(kind: Kind, pgdata: &Path, exe: &Path, user: &str) -> String {
    let dir = pgdata.display();
    let exe = exe.display();
    let name = pgdata.file_name().map_or_else(
        || "pgpilot".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (what, kill, watchdog) = match kind {
        Kind::Monitor => (
            "monitor",
            "\
# SIGTERM to the monitor alone: it stops serving gRPC, then stops its
# private PostgreSQL (fast shutdown). Anything left in the unit after the
# monitor exited gets SIGKILL. Its PostgreSQL dies with it in any case
# (a crashed monitor's PostgreSQL is started afresh, crash recovery
# included, by the next `pgpilot run`).
KillMode=mixed",
            "\
# The monitor's probe loop sends a keep-alive after every round. A round
# takes a few seconds at most (probe_timeout and retries per node, plus
# up to 5 s waiting for a connection to its own database while its
# PostgreSQL restarts): a monitor silent for 60 s is hung, and systemd
# kills it (SIGABRT) and starts it again (Restart=always).
WatchdogSec=60s",
        ),
        Kind::Node => (
            "keeper",
            "\
# The keeper stops PostgreSQL itself on SIGTERM (systemctl stop). With the
# default KillMode=control-group, systemd would kill PostgreSQL whenever
# the keeper exits or crashes, and there would be nothing left to adopt.
KillMode=process",
            "\
# The keeper's loop sends a keep-alive every round (about a second) and
# from the heartbeat beside a long step (a copy, a rewind). Its worst
# stall without one is a PostgreSQL start waiting up to 60 s for crash
# recovery, or a stop (30 s of fast shutdown, then immediate): 120 s is
# twice the longest. A keeper silent that long is hung; systemd kills it
# (SIGABRT) alone, PostgreSQL keeps running, and the keeper systemd starts
# again adopts it (with postgres_dies_with_keeper = true, PostgreSQL dies
# with it instead). Meanwhile the keeper's fencing watchdog (a task of its
# own) still stops a primary whose lease ran out.
WatchdogSec=120s",
        ),
    };
    format!(
        "\
# pgpilot {what} of {dir}, as printed by `pgpilot show systemd --pgdata {dir}`.
# Install:
#   pgpilot show systemd --pgdata {dir} > /etc/systemd/system/pgpilot-{name}.service
#   systemctl daemon-reload && systemctl enable --now pgpilot-{name}
# Stop it with `systemctl stop`, not `pgpilot stop`: with Restart=always
# systemd would start it again. To restart a keeper alone (a new pgpilot
# binary), `pgpilot stop --keeper-only --pgdata {dir}`.
[Unit]
Description=pgpilot {what} of {dir}
After=network-online.target
Wants=network-online.target

[Service]
# READY=1 once the service serves: the monitor once gRPC listens, a keeper
# once its first round reported (whether the monitor answered or not).
Type=notify
# pgpilot must run as the owner of {dir}.pgpilot (who created it).
User={user}
ExecStart={exe} run --pgdata {dir}
{kill}
# Starts it again after a crash, a watchdog kill, and after `pgpilot stop
# --keeper-only`.
Restart=always
RestartSec=1s
# A first start may wait for PostgreSQL's crash recovery (up to 60 s).
TimeoutStartSec=120s
# A stop waits for PostgreSQL's fast shutdown (its checkpoint).
TimeoutStopSec=120s
{watchdog}

[Install]
WantedBy=multi-user.target
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_unit_signals_the_keeper_alone_and_has_a_watchdog() {
        let u = unit(
            Kind::Node,
            Path::new("/var/lib/pg/node1"),
            Path::new("/usr/local/bin/pgpilot"),
            "postgres",
        );
        for line in [
            "Type=notify",
            "User=postgres",
            "ExecStart=/usr/local/bin/pgpilot run --pgdata /var/lib/pg/node1",
            "KillMode=process",
            "Restart=always",
            "TimeoutStopSec=120s",
            "WatchdogSec=120s",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing:\n{u}");
        }
        assert!(u.contains("pgpilot-node1.service"), "{u}");
        assert!(!u.contains("ExecStop="), "{u}");
    }

    #[test]
    fn monitor_unit_takes_its_postgres_with_it() {
        let u = unit(
            Kind::Monitor,
            Path::new("/var/lib/pg/monitor"),
            Path::new("/opt/pgpilot"),
            "root",
        );
        for line in [
            "Type=notify",
            "User=root",
            "ExecStart=/opt/pgpilot run --pgdata /var/lib/pg/monitor",
            "KillMode=mixed",
            "Restart=always",
            "WatchdogSec=60s",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing:\n{u}");
        }
    }
}
