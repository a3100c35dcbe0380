//! One module per command family.

mod config;
mod demo;
mod monitor;
pub mod node;
mod operator;
mod progress;
mod settings;
mod show;
mod systemd;
mod watch;

use std::path::Path;

use anyhow::{bail, Context};
use pgpilot_monitor::files::monitor_config_path;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Create, Drop, Target};

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Create(Create::Monitor(args)) => monitor::create(args).await,
        Command::Create(Create::Postgres(args)) => node::create(args).await,
        Command::Stop(args) => node::stop(&args.pgdata, args.keeper_only).await,
        Command::Run(args) => run(&args.pgdata).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Watch(args) => watch::watch(args).await,
        Command::Config(cmd) => config::config(cmd),
        Command::Show(show) => show::show(show).await,
        Command::Perform(cmd) => operator::perform(cmd).await,
        Command::Set(cmd) => operator::set(cmd).await,
        Command::Get(cmd) => settings::get(cmd).await,
        Command::Enable(cmd) => operator::maintenance(cmd, true).await,
        Command::Disable(cmd) => operator::maintenance(cmd, false).await,
        Command::Drop(Drop::Node {
            target,
            node_id,
            force,
        }) => {
            let mut client = connect(&target).await?;
            client
                .drop_node(pgpilot_proto::pb::DropNodeRequest { node_id, force })
                .await
                .map_err(status_error)?;
            println!(
                "node {node_id} {}",
                if force {
                    "is being removed (forced): its row goes once it cannot accept writes"
                } else {
                    "is being dropped"
                }
            );
            Ok(())
        }
    }
}

async fn run(pgdata: &Path) -> anyhow::Result<()> {
    let abs = std::path::absolute(pgdata)?;
    if monitor_config_path(&abs).is_file() {
        return monitor::run(&abs).await;
    }
    if pgpilot_keeper::service::is_node(&abs) {
        return node::run(&abs).await;
    }
    bail!(
        "{} has no pgpilot monitor or node: create one with `pgpilot create monitor --pgdata {}` \
         or `pgpilot create postgres --pgdata {} --monitor URI`",
        abs.display(),
        abs.display(),
        abs.display()
    )
}

/// Cancels `token` on the first SIGTERM or SIGINT. Further signals are
/// logged: shutdown is already under way and must finish in order
/// (gRPC, then PostgreSQL) so nothing is left running.
pub fn cancel_on_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if token.is_cancelled() {
                tracing::warn!("already shutting down");
            } else {
                tracing::info!("signal received, shutting down");
                token.cancel();
            }
        }
    });
    Ok(())
}

/// A keeper's signals: SIGTERM and SIGINT stop the keeper and PostgreSQL
/// (as [`cancel_on_signals`]); SIGUSR2 (`pgpilot stop --keeper-only`)
/// stops the keeper alone and leaves PostgreSQL running. A SIGTERM or
/// SIGINT after a SIGUSR2 still stops both, as long as the keeper has not
/// let go of PostgreSQL yet.
///
/// Why not SIGTERM for a keeper-only stop: service managers send SIGTERM
/// to stop a service (`systemctl stop`, a shutdown of the machine), and a
/// stopped service must not leave PostgreSQL behind.
pub fn cancel_on_node_signals(
    token: CancellationToken,
    keeper_only: pgpilot_keeper::agent::KeeperOnly,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("install the SIGUSR2 handler")?;
    tokio::spawn(async move {
        loop {
            let alone = tokio::select! {
                _ = term.recv() => false,
                _ = int.recv() => false,
                _ = usr2.recv() => true,
            };
            if token.is_cancelled() {
                if !alone && keeper_only.get() {
                    tracing::info!("signal received: stopping PostgreSQL too");
                    keeper_only.set(false);
                } else {
                    tracing::warn!("already shutting down");
                }
                continue;
            }
            if alone {
                tracing::info!(
                    "SIGUSR2 received: the keeper stops alone, PostgreSQL keeps running"
                );
                keeper_only.set(true);
            } else {
                tracing::info!("signal received, shutting down");
            }
            token.cancel();
        }
    });
    Ok(())
}

/// The monitor URI a command talks to: --monitor, else the configuration
/// found through --pgdata.
pub fn monitor_uri(target: &Target) -> anyhow::Result<String> {
    if let Some(uri) = &target.monitor {
        return Ok(uri.clone());
    }
    let Some(pgdata) = &target.pgdata else {
        bail!("say which monitor to ask: pass --monitor URI (or set PGPILOT_MONITOR), or --pgdata DIR of the monitor or of a node");
    };
    let abs = std::path::absolute(pgdata)?;
    let path = monitor_config_path(&abs);
    if path.is_file() {
        let config = pgpilot_monitor::config::MonitorConfig::load(&path)?;
        // From this machine, reach the monitor where it listens.
        let addr = config.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        return Ok(format!("http://{host}:{}", addr.port()));
    }
    bail!(
        "{} has no pgpilot monitor or node configuration: pass --monitor URI instead",
        abs.display()
    )
}

pub async fn connect(
    target: &Target,
) -> anyhow::Result<pgpilot_proto::pb::monitor_client::MonitorClient<tonic::transport::Channel>> {
    let uri = monitor_uri(target)?;
    pgpilot_monitor::rpc::connect(&uri).await
}

/// A refused request, as the operator should read it.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the monitor refused: {}", status.message())
}
