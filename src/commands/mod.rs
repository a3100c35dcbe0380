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

use crate::cli::{Cli, Command, Create, Drop, Rotate, Target};
use pgpilot_proto::client::ClientAuth;

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Create(Create::Monitor(args)) => monitor::create(args).await,
        Command::Create(Create::Postgres(args)) => node::create(args).await,
        Command::Stop(args) => node::stop(&args.pgdata, args.keeper_only).await,
        Command::Run(args) => run(&args.pgdata).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Watch(args) => watch::watch(args).await,
        Command::Config(cmd) => config::config(cmd),
        Command::Rotate(Rotate::JoinToken { target }) => {
            let mut client = connect(&target).await?;
            let reply = client
                .rotate_join_token(pgpilot_proto::pb::RotateJoinTokenRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", reply.join_token);
            eprintln!(
                "the old join token no longer registers nodes; registered nodes are unaffected"
            );
            Ok(())
        }
        Command::Rotate(Rotate::ReplicationPassword { target, formation }) => {
            let mut client = connect(&target).await?;
            let reply = client
                .rotate_replication_password(pgpilot_proto::pb::RotateReplicationPasswordRequest {
                    formation: formation.formation.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "replication password generation {} of formation {:?} is pending: the primary's \
                 keeper sets it on the replication role, then standbys switch to it; \
                 `pgpilot show settings` shows replication_password_generation {} once it is current",
                reply.generation, formation.formation, reply.generation
            );
            Ok(())
        }
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

/// The monitor a command talks to and how: --monitor (with --ca-file and
/// a credential from --token-file or PGPILOT_TOKEN), else what --pgdata
/// holds: a monitor's URI, CA and operator credential, or a node's
/// monitor URI, its copy of the CA and its own credential.
pub fn monitor_target(target: &Target) -> anyhow::Result<(String, ClientAuth)> {
    let (uri, mut auth) = match (&target.monitor, &target.pgdata) {
        (Some(uri), _) => (uri.clone(), ClientAuth::default()),
        (None, None) => bail!("say which monitor to ask: pass --monitor URI (or set PGPILOT_MONITOR), or --pgdata DIR of the monitor or of a node"),
        (None, Some(pgdata)) => from_pgdata(&std::path::absolute(pgdata)?)?,
    };
    // With --pgdata the directory's own CA and credential are used: the
    // environment an operator set for remote monitors must not replace
    // them (a read token would refuse every operator command).
    if target.monitor.is_none() {
        return Ok((uri, auth));
    }
    if let Some(file) = &target.ca_file {
        auth.ca_pem = Some(
            std::fs::read(file).with_context(|| format!("read --ca-file {}", file.display()))?,
        );
    }
    if let Some(file) = &target.token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read --token-file {}", file.display()))?;
        auth.token = Some(text.trim().to_string());
    } else if let Ok(token) = std::env::var("PGPILOT_TOKEN") {
        auth.token = Some(token.trim().to_string());
    }
    if auth.token.is_none() {
        bail!(
            "no credential to present to {uri}: set PGPILOT_TOKEN or pass --token-file FILE (the \
             monitor's DIR.pgpilot/credentials/operator-token, or read-token for show commands), \
             or run on the monitor's machine with --pgdata MONITOR_DIR"
        );
    }
    Ok((uri, auth))
}

fn from_pgdata(abs: &Path) -> anyhow::Result<(String, ClientAuth)> {
    let path = monitor_config_path(abs);
    if path.is_file() {
        let config = pgpilot_monitor::config::MonitorConfig::load(&path)?;
        // From this machine, reach the monitor where it listens (its
        // certificate names loopback and the listen address too).
        let addr = config.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let scheme = if config.ssl { "https" } else { "http" };
        let ca_pem = if config.ssl {
            Some(pgpilot_monitor::tls::ca_pem(abs)?)
        } else {
            None
        };
        let token =
            pgpilot_monitor::auth::read_token(&pgpilot_monitor::auth::operator_token_path(abs))?;
        return Ok((
            format!("{scheme}://{host}:{}", addr.port()),
            ClientAuth {
                ca_pem,
                token: Some(token.token()),
            },
        ));
    }
    if pgpilot_keeper::files::config_path(abs).is_file() {
        let config = pgpilot_keeper::config::KeeperConfig::load(abs)?;
        let auth = pgpilot_keeper::monitor_auth::client_auth(&config)?;
        return Ok((config.monitor.clone(), auth));
    }
    bail!(
        "{} has no pgpilot monitor or node configuration: pass --monitor URI instead",
        abs.display()
    )
}

pub async fn connect(target: &Target) -> anyhow::Result<pgpilot_proto::client::Client> {
    let (uri, auth) = monitor_target(target)?;
    Ok(pgpilot_proto::client::connect(&uri, &auth).await?)
}

/// A refused request, as the operator should read it. A transport
/// failure on the first request (a lazy connection) gets the hint
/// `connect` would have given.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let text = pgpilot_proto::client::explain_status(&status);
    match status.code() {
        // Transport failures (a TLS mismatch shows as a cancelled request
        // when the connection is cut under it).
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Internal
        | tonic::Code::Cancelled
            if text != status.message() =>
        {
            anyhow::anyhow!("cannot talk to the monitor: {text}")
        }
        _ => anyhow::anyhow!("the monitor refused: {}", status.message()),
    }
}
