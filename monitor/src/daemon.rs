//! `pgpilot run` for a monitor: supervise the private PostgreSQL, serve
//! gRPC, probe nodes; on cancel stop gRPC first, then PostgreSQL.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpilot_pgproc::{systemd, PgBin};
use tokio_util::sync::CancellationToken;

use crate::config::MonitorConfig;
use crate::control::Control;
use crate::files::{monitor_config_path, monitor_created_marker, pid_path, write_durably};
use crate::private_pg::{self, PrivatePg};
use crate::server::serve;
use crate::store::Store;

/// A private PostgreSQL that dies is restarted, but not forever: this many
/// restarts within [`RESTART_WINDOW`] means something is broken (disk full,
/// bad setting) and a human must look.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(300);

/// Loads a created monitor's configuration for `--pgdata DIR`.
pub fn load(pgdata: &Path) -> anyhow::Result<MonitorConfig> {
    let pgdata = std::path::absolute(pgdata)?;
    if !monitor_config_path(&pgdata).is_file() {
        bail!(
            "{} has no pgpilot monitor: create one with `pgpilot create monitor --pgdata {}`",
            pgdata.display(),
            pgdata.display()
        );
    }
    if !monitor_created_marker(&pgdata).is_file() {
        bail!(
            "the monitor in {} was not completely created: re-run `pgpilot create monitor --pgdata {}`",
            pgdata.display(),
            pgdata.display()
        );
    }
    MonitorConfig::load(&monitor_config_path(&pgdata))
}

/// Runs the monitor until `cancel` fires or its PostgreSQL cannot be kept up.
pub async fn run_monitor(config: MonitorConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let pg_cancel = CancellationToken::new();
    let (pg_task, options) = match &config.database_url {
        Some(url) => (None, url.parse().context("parse database_url")?),
        None => {
            let bin = PgBin::discover()?;
            let pg = private_pg::start(&bin, &config).await?;
            let task = tokio::spawn(supervise(
                bin,
                config.clone(),
                pg,
                pg_cancel.clone(),
                cancel.clone(),
            ));
            (
                Some(task),
                private_pg::connect_options(&config.pgdata, private_pg::DATABASE),
            )
        }
    };
    let result = async {
        let store = Store::open(options, Duration::from_secs(30)).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                "listen on {}: is another monitor running? choose another address with --listen",
                config.listen
            )
            })?;
        let http = crate::server::bind_http(&config.http_listen()?).await?;
        write_durably(
            &pid_path(&config.pgdata),
            std::process::id().to_string().as_bytes(),
            0o644,
        )?;
        let started = crate::clock::now();
        let keys = crate::auth::Keys::load(&config.pgdata)?;
        let tls = if config.ssl {
            Some(crate::tls::server_identity(&config.pgdata)?)
        } else {
            tracing::warn!("TLS is off (ssl = false in monitor.toml): credentials cross the network in clear text");
            None
        };
        let control = Control::new(
            store.clone(),
            config.timings.clone(),
            config.monitor_uri(),
            keys,
            started,
        );
        control.load_credentials().await?;
        control.rebase_clocks(started).await?;
        // The listener is bound and the store open: connections from here
        // on are served (the first ones wait in the listen backlog).
        systemd::ready(&format!("serving gRPC on {}", config.listen));
        let stopping = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                cancel.cancelled().await;
                systemd::stopping("stopping: gRPC first, then PostgreSQL");
            }
        });
        let served = serve(control, listener, tls, http, cancel.clone()).await;
        if cancel.is_cancelled() {
            stopping.await.ok();
        } else {
            stopping.abort();
        }
        store.pool.close().await;
        served
    }
    .await;
    // gRPC is down (or never came up): now PostgreSQL.
    pg_cancel.cancel();
    if let Some(task) = pg_task {
        task.await.context("join the PostgreSQL supervisor")??;
    }
    std::fs::remove_file(pid_path(&config.pgdata)).ok();
    result
}

/// Keeps the private PostgreSQL running until `stop` fires, then stops it.
/// Gives up (cancelling the whole monitor) after too many restarts.
async fn supervise(
    bin: PgBin,
    config: MonitorConfig,
    mut pg: PrivatePg,
    stop: CancellationToken,
    monitor: CancellationToken,
) -> anyhow::Result<()> {
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return pg.stop().await,
            exit = pg.handle.wait_exit() => {
                tracing::warn!("the monitor's PostgreSQL exited unexpectedly ({exit:?}); restarting it");
            }
        }
        restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
        if restarts.len() >= MAX_RESTARTS {
            monitor.cancel();
            bail!(
                "the monitor's PostgreSQL died {MAX_RESTARTS} times in {} s; see its log lines above",
                RESTART_WINDOW.as_secs()
            );
        }
        restarts.push(Instant::now());
        loop {
            match private_pg::start(&bin, &config).await {
                Ok(new) => {
                    pg = new;
                    break;
                }
                Err(e) if stop.is_cancelled() => return Err(e),
                Err(e) => {
                    tracing::error!("failed to restart the monitor's PostgreSQL: {e:#}");
                    restarts.push(Instant::now());
                    if restarts.len() >= MAX_RESTARTS {
                        monitor.cancel();
                        return Err(e.context("restart the monitor's PostgreSQL"));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
