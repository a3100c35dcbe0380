//! `create monitor` and `run` for a monitor.

use std::path::Path;

use pgpilot_monitor::config::Timings;
use pgpilot_monitor::daemon;
use pgpilot_monitor::setup::{create_monitor, CreateMonitor, Created};
use tokio_util::sync::CancellationToken;

use crate::cli::CreateMonitorArgs;

pub async fn create(args: CreateMonitorArgs) -> anyhow::Result<()> {
    let req = CreateMonitor {
        pgdata: args.pgdata.clone(),
        listen: args.listen,
        hostname: args.hostname,
        database_url: args.database_url,
        pg_user: args.pg_user,
        http_listen: args.http_listen,
        ssl: !args.no_ssl,
        certs: match (args.ssl_ca_file, args.server_cert, args.server_key) {
            (Some(ca_file), Some(cert_file), Some(key_file)) => {
                Some(pgpilot_monitor::tls::SuppliedCerts {
                    ca_file,
                    cert_file,
                    key_file,
                })
            }
            _ => None,
        },
        timings: Timings::default(),
    };
    let (created, config) = create_monitor(&req).await?;
    match created {
        Created::New => println!(
            "created monitor in {}; keepers use {}",
            config.pgdata.display(),
            config.monitor_uri()
        ),
        Created::AlreadyDone => println!(
            "monitor in {} already exists; nothing changed (keepers use {})",
            config.pgdata.display(),
            config.monitor_uri()
        ),
    }
    if args.run {
        return run(&config.pgdata).await;
    }
    Ok(())
}

pub async fn run(pgdata: &Path) -> anyhow::Result<()> {
    let config = daemon::load(pgdata)?;
    let cancel = CancellationToken::new();
    super::cancel_on_signals(cancel.clone())?;
    daemon::run_monitor(config, cancel).await
}
