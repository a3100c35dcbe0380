//! `create postgres`, `run` and `stop` for a PostgreSQL node.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use pgpilot_keeper::agent::KeeperOnly;
use pgpilot_keeper::config::{Auth, KeeperConfig};
use pgpilot_keeper::monitor_auth::Join;
use pgpilot_keeper::service::{self, CREATED_STATES};
use pgpilot_keeper::setup::{create_node, Created};
use pgpilot_proto::credential::JoinToken;
use tokio_util::sync::CancellationToken;

use crate::cli::{AuthArg, CreatePostgresArgs};

pub fn config_from(args: &CreatePostgresArgs) -> anyhow::Result<KeeperConfig> {
    // Written out, default included, so that keeper.toml says where the
    // endpoints are.
    let http_listen = match &args.http_listen {
        Some(l) => l.clone(),
        None => pgpilot_proto::HttpListen::default_for(&args.hostname, args.pgport)?,
    };
    Ok(KeeperConfig {
        pgdata: std::path::absolute(&args.pgdata)?,
        monitor: args.monitor.clone(),
        formation: args.formation.clone(),
        name: args.name.clone().unwrap_or_default(),
        hostname: args.hostname.clone(),
        pgport: args.pgport,
        listen_addresses: args.listen_addresses.clone(),
        dbname: args.dbname.clone(),
        username: args.username.clone(),
        candidate_priority: args.candidate_priority,
        replication_quorum: args.replication_quorum,
        auth: match args.auth {
            AuthArg::ScramSha256 => Auth::Scram,
            AuthArg::Trust => Auth::Trust,
            AuthArg::TrustRemote => Auth::TrustRemote,
        },
        pg_user: args.pg_user.clone(),
        poll_interval: Duration::from_secs(1),
        maximum_backup_rate: args.maximum_backup_rate.clone(),
        http_listen: Some(http_listen),
        postgres_dies_with_keeper: args.postgres_dies_with_keeper,
        replication_password: String::new(),
        replication_password_generation: 0,
        pre_promote: None,
        on_role_change: None,
        hook_timeout: pgpilot_keeper::hooks::DEFAULT_HOOK_TIMEOUT,
        // PostgreSQL SSL (issue #11): operator files, absolute.
        ssl: pgpilot_keeper::config::SslConfig {
            cert_file: absolute_opt(&args.ssl_cert_file)?,
            key_file: absolute_opt(&args.ssl_key_file)?,
            ca_file: absolute_opt(&args.ssl_ca_file)?,
        },
    })
}

fn absolute_opt(p: &Option<std::path::PathBuf>) -> anyhow::Result<Option<std::path::PathBuf>> {
    Ok(p.as_deref().map(std::path::absolute).transpose()?)
}

pub async fn create(args: CreatePostgresArgs) -> anyhow::Result<()> {
    let config = config_from(&args)?;
    let join = join_from(&args)?;
    let cancel = CancellationToken::new();
    let keeper_only = KeeperOnly::default();
    super::cancel_on_node_signals(cancel.clone(), keeper_only.clone())?;
    create_and_run(config, join, args.run, cancel, keeper_only).await
}

/// The join token of `--join-token`, PGPILOT_JOIN_TOKEN or
/// `--join-token-file`, checked; `None` when none was given (fine for a
/// node that is already registered).
fn join_from(args: &CreatePostgresArgs) -> anyhow::Result<Option<Join>> {
    let text = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("read --join-token-file {}", f.display()))?,
        (None, None) => return Ok(None),
    };
    let token = JoinToken::parse(&text).map_err(|e| {
        anyhow::anyhow!("the join token is not valid: {e}; `pgpilot show join-token --pgdata MONITOR_DIR` prints it")
    })?;
    Ok(Some(Join {
        token,
        ca_file: args.ca_file.clone(),
    }))
}

/// Creates (or resumes creating) a node, then runs its keeper until it
/// reached its first steady state, or until cancelled with `run`.
pub async fn create_and_run(
    config: KeeperConfig,
    join: Option<Join>,
    run: bool,
    cancel: CancellationToken,
    keeper_only: KeeperOnly,
) -> anyhow::Result<()> {
    let (created, config, state) = create_node(config, join.as_ref()).await?;
    let pgdata = config.pgdata.clone();
    match created {
        Created::New => println!(
            "registered node {} {:?} in {}",
            state.node_id,
            state.name,
            pgdata.display()
        ),
        Created::Resumed => println!(
            "node {} {:?} in {} was already registered; continuing",
            state.node_id,
            state.name,
            pgdata.display()
        ),
    }
    let until: &[_] = if run { &[] } else { CREATED_STATES };
    let stopped = service::run_node(config, state, cancel, keeper_only, until).await?;
    if let pgpilot_keeper::agent::Stopped::Reached(s) = stopped {
        println!(
            "node in {} is {s}; start its keeper with `pgpilot run --pgdata {}`",
            pgdata.display(),
            pgdata.display()
        );
    }
    Ok(())
}

pub async fn run(pgdata: &Path) -> anyhow::Result<()> {
    let (config, state) = service::load(pgdata)?;
    let cancel = CancellationToken::new();
    let keeper_only = KeeperOnly::default();
    super::cancel_on_node_signals(cancel.clone(), keeper_only.clone())?;
    service::run_node(config, state, cancel, keeper_only, &[]).await?;
    Ok(())
}

pub async fn stop(pgdata: &Path, keeper_only: bool) -> anyhow::Result<()> {
    let abs = std::path::absolute(pgdata)?;
    if !keeper_only {
        service::stop_node(&abs).await?;
        println!("keeper and PostgreSQL of {} stopped", abs.display());
        return Ok(());
    }
    match service::stop_keeper_only(&abs).await? {
        Some(pid) => println!(
            "keeper of {} stopped; PostgreSQL (pid {pid}) keeps running: start the keeper again \
             with `pgpilot run --pgdata {}`, it adopts it",
            abs.display(),
            abs.display()
        ),
        None => println!(
            "keeper of {} stopped; PostgreSQL was not running",
            abs.display()
        ),
    }
    Ok(())
}
