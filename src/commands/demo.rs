//! `pgpilot demo`: a local cluster on loopback in a temporary directory.
//!
//! Today it runs the monitor alone (the keeper comes with its own issue):
//! it creates the monitor on a free loopback port, starts it, prints
//! `show uri` and `show state`, runs until Ctrl-C, then stops everything
//! and removes the directory unless `--keep`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pgpilot_monitor::config::Timings;
use pgpilot_monitor::daemon::run_monitor;
use pgpilot_monitor::setup::{create_monitor, CreateMonitor};
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (dir, created_dir) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (temp_dir()?, true),
    };
    let result = run(&dir, &args).await;
    if args.keep || !created_dir {
        println!("demo files kept in {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("failed to remove {}: {e}", dir.display());
    }
    result
}

async fn run(dir: &std::path::Path, args: &DemoArgs) -> anyhow::Result<()> {
    let _ = args;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("find a free loopback port")?
        .port();
    let req = CreateMonitor {
        pgdata: dir.join("monitor"),
        listen: ([127, 0, 0, 1], port).into(),
        hostname: Some("127.0.0.1".into()),
        database_url: None,
        pg_user: "postgres".into(),
        timings: Timings::default(),
    };
    let (_, config) = create_monitor(&req).await?;
    let uri = config.monitor_uri();
    let cancel = CancellationToken::new();
    super::cancel_on_signals(cancel.clone())?;
    let monitor = tokio::spawn(run_monitor(config, cancel.clone()));

    let mut client = loop {
        if monitor.is_finished() {
            return monitor.await.context("join the monitor")?;
        }
        if let Ok(c) = pgpilot_monitor::rpc::connect(&uri).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let uris = client
        .show_uri(pgpilot_proto::pb::ShowUriRequest::default())
        .await
        .map_err(super::status_error)?
        .into_inner();
    println!("pgpilot demo in {}", dir.display());
    for e in uris.entries {
        println!("  {:<9} {:<9} {}", e.r#type, e.name, e.uri);
    }
    println!("monitor running; try `pgpilot show state --monitor {uri}`. Ctrl-C stops the demo.");
    monitor.await.context("join the monitor")?
}

fn temp_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgpilot-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // PostgreSQL may run as another OS user (when we are root): let it in.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}
