//! `pgpilot demo`: a local cluster on loopback in a temporary directory.
//!
//! Creates a monitor and `--nodes` PostgreSQL nodes on free loopback ports,
//! all in this process (one tokio task each), waits until the group has a
//! primary and its secondaries, prints `show state` and `show uri`, and
//! runs until Ctrl-C. Then it stops every keeper (each stops its
//! PostgreSQL), the monitor, and removes the directory unless `--keep`.
//!
//! Quiet: before Ctrl-C it prints a line of progress per process, the
//! tables and what to try; the log (PostgreSQL's lines and every
//! keeper's) goes to `demo.log` in the directory, or to stderr with
//! `--verbose`. A demo that fails keeps its directory and prints the end
//! of the log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpilot_keeper::config::{Auth, KeeperConfig};
use pgpilot_keeper::monitor_auth::Join;
use pgpilot_monitor::config::Timings;
use pgpilot_monitor::daemon::run_monitor;
use pgpilot_monitor::setup::{create_monitor, CreateMonitor};
use pgpilot_proto::credential::JoinToken;
use pgpilot_proto::{pb, NodeState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, Show, Target};

/// The demo's log, in its directory.
const LOG_FILE: &str = "demo.log";

/// How many of the log's last lines a failed demo prints.
const FAILURE_TAIL: usize = 20;

/// Bootstrapping a node takes a second or two here; a slow disk may need
/// much more, but never this much.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (dir, created_dir) = match &args.dir {
        Some(d) => (std::path::absolute(d)?, false),
        None => (temp_dir()?, true),
    };
    let log = dir.join(LOG_FILE);
    if !args.verbose {
        crate::logfile::log_to(&log).with_context(|| format!("create {}", log.display()))?;
    }
    let result = run(&dir, &args).await;
    if result.is_err() && !args.verbose {
        eprintln!("{}", log_tail(&log, FAILURE_TAIL));
        eprintln!("the whole log is {}", log.display());
    }
    if args.keep || !created_dir || result.is_err() {
        println!("demo files kept in {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("failed to remove {}: {e}", dir.display());
    }
    result
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("find a free loopback port")?
        .port())
}

async fn run(dir: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    let req = CreateMonitor {
        pgdata: dir.join("monitor"),
        listen: ([127, 0, 0, 1], free_port()?).into(),
        hostname: Some("127.0.0.1".into()),
        database_url: None,
        pg_user: "postgres".into(),
        http_listen: Some(pgpilot_proto::HttpListen::At {
            host: "127.0.0.1".into(),
            port: free_port()?,
        }),
        // TLS and credentials on, as in production.
        ssl: true,
        certs: None,
        timings: Timings::default(),
    };
    let log = if args.verbose {
        "stderr".to_string()
    } else {
        dir.join(LOG_FILE).display().to_string()
    };
    println!(
        "starting a monitor and {} node{} in {}; their log goes to {log}{}",
        args.nodes,
        if args.nodes == 1 { "" } else { "s" },
        dir.display(),
        if args.verbose {
            ""
        } else {
            " (--verbose shows it)"
        },
    );
    let (_, config) = create_monitor(&req).await?;
    let monitor_dir = config.pgdata.clone();
    let (uri, auth) = super::monitor_target(&local_target(&monitor_dir))?;
    let join_text = std::fs::read_to_string(pgpilot_monitor::auth::join_token_path(&monitor_dir))?;
    let remote = Remote {
        uri: uri.clone(),
        auth,
        monitor_dir: monitor_dir.clone(),
        join: Join {
            token: JoinToken::parse(&join_text)?,
            ca_file: None,
        },
    };
    let cancel = CancellationToken::new();
    super::cancel_on_signals(cancel.clone())?;
    let monitor = tokio::spawn(run_monitor(config, cancel.child_token()));
    let nodes_cancel = CancellationToken::new();
    let mut nodes: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();

    let started = bring_up(
        dir,
        args,
        &remote,
        &cancel,
        &nodes_cancel,
        &mut nodes,
        &monitor,
    )
    .await;
    if let Err(e) = &started {
        eprintln!("demo failed: {e:#}");
    } else {
        println!("\npgpilot demo in {}\n", dir.display());
        show(&remote, |target| Show::State {
            target,
            formation: None,
        })
        .await;
        println!();
        show(&remote, |target| Show::Uri {
            target,
            formation: None,
        })
        .await;
        let formation = formation_uri(&remote).await;
        let m = monitor_dir.display();
        println!(
            "\nConnect:     psql '{formation}'\n\
             Watch:       pgpilot watch --pgdata {m}   (live; q quits)\n\
             Switchover:  pgpilot perform switchover --pgdata {m}\n\
             Then:        pgpilot show state --pgdata {m}   (or show events)\n\
             Join token:  pgpilot show join-token --pgdata {m}\n\
             Log:         {}{}\n\
             Ctrl-C stops the demo.",
            log,
            if args.keep || args.verbose {
                ""
            } else {
                " (gone at Ctrl-C unless --keep)"
            },
        );
        cancel.cancelled().await;
    }
    // Keepers first (each stops its PostgreSQL), then the monitor.
    nodes_cancel.cancel();
    for n in nodes {
        match n.await {
            Ok(Err(e)) => eprintln!("node: {e:#}"),
            Err(e) => eprintln!("node task: {e}"),
            Ok(Ok(())) => {}
        }
    }
    cancel.cancel();
    monitor.await.context("join the monitor")??;
    started
}

async fn bring_up(
    dir: &Path,
    args: &DemoArgs,
    remote: &Remote,
    cancel: &CancellationToken,
    nodes_cancel: &CancellationToken,
    nodes: &mut Vec<JoinHandle<anyhow::Result<()>>>,
    monitor: &JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Nodes register at once; the monitor must be up first.
    let deadline = Instant::now() + NODE_READY_TIMEOUT;
    let uri = remote.uri.as_str();
    while remote.connect().await.is_err() {
        if monitor.is_finished() || cancel.is_cancelled() || Instant::now() > deadline {
            bail!("the monitor did not come up; see its log");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..=args.nodes {
        let config = KeeperConfig {
            pgdata: dir.join(format!("node{i}")),
            monitor: uri.to_string(),
            formation: "default".into(),
            name: format!("node{i}"),
            hostname: "127.0.0.1".into(),
            pgport: free_port()?,
            listen_addresses: "127.0.0.1".into(),
            dbname: "postgres".into(),
            username: "postgres".into(),
            candidate_priority: 50,
            replication_quorum: true,
            // Loopback only, and gone at Ctrl-C: the printed URIs work
            // without a password.
            auth: Auth::Trust,
            pg_user: "postgres".into(),
            poll_interval: Duration::from_secs(1),
            maximum_backup_rate: pgpilot_keeper::config::DEFAULT_BACKUP_RATE.into(),
            http_listen: Some(pgpilot_proto::HttpListen::At {
                host: "127.0.0.1".into(),
                port: free_port()?,
            }),
            // The demo's directory goes at Ctrl-C: a demo killed outright
            // must not leave PostgreSQL servers behind.
            postgres_dies_with_keeper: true,
            replication_password: String::new(),
            replication_password_generation: 0,
            pre_promote: None,
            on_role_change: None,
            hook_timeout: pgpilot_keeper::hooks::DEFAULT_HOOK_TIMEOUT,
            ssl: Default::default(),
        };
        let token = nodes_cancel.child_token();
        let join = remote.join.clone();
        nodes.push(tokio::spawn(async move {
            super::node::create_and_run(config, Some(join), true, token, Default::default()).await
        }));
        let want: &[NodeState] = if i == 1 {
            &[NodeState::Single]
        } else {
            &[NodeState::Secondary]
        };
        wait_for(remote, &format!("node{i}"), want, cancel, monitor, nodes).await?;
    }
    if args.nodes > 1 {
        // The primary turns synchronous replication on right after its
        // first secondary caught up.
        wait_for(
            remote,
            "node1",
            &[NodeState::Primary],
            cancel,
            monitor,
            nodes,
        )
        .await?;
    }
    Ok(())
}

/// Waits until node `name` is in one of `want` (reported and assigned)
/// and the monitor has probed it.
async fn wait_for(
    remote: &Remote,
    name: &str,
    want: &[NodeState],
    cancel: &CancellationToken,
    monitor: &JoinHandle<anyhow::Result<()>>,
    nodes: &[JoinHandle<anyhow::Result<()>>],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + NODE_READY_TIMEOUT;
    loop {
        if cancel.is_cancelled() {
            bail!("interrupted");
        }
        if monitor.is_finished() || nodes.iter().any(|n| n.is_finished()) {
            bail!("a process of the demo stopped early; see its log");
        }
        if let Ok(mut c) = remote.connect().await {
            if let Ok(r) = c.show_state(pb::ShowStateRequest::default()).await {
                let ready = r.into_inner().nodes.iter().any(|n| {
                    // Probed too, so the table shows no "?".
                    n.name == name
                        && n.health == "good"
                        && n.reported_state == n.assigned_state
                        && want.iter().any(|w| *w as i32 == n.reported_state)
                });
                if ready {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not become {} within {} s",
                want[0],
                NODE_READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How the demo reaches its monitor: as an operator on the monitor's
/// machine does, through the monitor's directory.
struct Remote {
    uri: String,
    auth: pgpilot_proto::client::ClientAuth,
    monitor_dir: PathBuf,
    /// What the demo's nodes present to register.
    join: Join,
}

impl Remote {
    async fn connect(&self) -> anyhow::Result<pgpilot_proto::client::Client> {
        Ok(pgpilot_proto::client::connect(&self.uri, &self.auth).await?)
    }
}

fn local_target(monitor_dir: &Path) -> Target {
    Target {
        monitor: None,
        pgdata: Some(monitor_dir.to_path_buf()),
        ca_file: None,
        token_file: None,
        json: false,
    }
}

async fn show(remote: &Remote, cmd: impl FnOnce(Target) -> Show) {
    let target = local_target(&remote.monitor_dir);
    if let Err(e) = super::show::show(cmd(target)).await {
        eprintln!("{e:#}");
    }
}

/// The formation's connection string, as `show uri` lists it.
async fn formation_uri(remote: &Remote) -> String {
    let entries = match remote.connect().await {
        Ok(mut c) => c
            .show_uri(pb::ShowUriRequest::default())
            .await
            .map(|r| r.into_inner().entries)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    entries
        .into_iter()
        .find(|e| e.r#type == "formation")
        .map_or_else(|| "see the table above".to_string(), |e| e.uri)
}

/// The last `n` lines of the log, for a demo that failed.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn temp_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgpilot-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // PostgreSQL may run as another OS user (when we are root): let it in.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}
