//! `pgpilot create postgres`: check the data directory, register with the
//! monitor, then let the agent bring the node to its first steady state
//! (initdb or adopt for the first node, pg_basebackup for the others).
//!
//! Re-running after an interruption continues: the configuration and state
//! files say what was done, and every step is idempotent.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_pgproc::{self as pgproc, controldata, is_pgdata, set_mode, InitdbOptions};
use pgpilot_proto::{pb, NodeState};

use crate::config::KeeperConfig;
use crate::files::{state_dir, state_path};
use crate::monitor_auth::{prepare_join, save_credential, Join};
use crate::pg::LocalPg;
use crate::statefile::KeeperState;
use pgpilot_proto::client::ClientAuth;

/// Attempts to reach the monitor before `create postgres` gives up.
const REGISTER_ATTEMPTS: u32 = 5;
const REGISTER_RETRY: Duration = Duration::from_secs(2);

/// What `create postgres` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// The node was registered by an earlier run; that run's settings hold.
    Resumed,
}

/// Checks PGDATA and the port, writes the configuration and registers.
/// Returns the node's state file.
pub async fn create_node(
    mut config: KeeperConfig,
    join: Option<&Join>,
) -> anyhow::Result<(Created, KeeperConfig, KeeperState)> {
    config.validate()?;
    let pgdata = config.pgdata.clone();
    if let Some(state) = KeeperState::load(&pgdata)? {
        let existing = KeeperConfig::load(&pgdata)?;
        if existing.monitor != config.monitor || existing.pgport != config.pgport {
            tracing::warn!(
                "node {} was created with monitor {} and port {}; those settings are kept",
                state.node_id,
                existing.monitor,
                existing.pgport
            );
        }
        return Ok((Created::Resumed, existing, state));
    }
    let Some(join) = join else {
        bail!(
            "registering a node needs the formation's join token: set PGPILOT_JOIN_TOKEN or pass \
             --join-token-file FILE (`pgpilot show join-token --pgdata MONITOR_DIR` prints it)"
        );
    };
    check_pgdata(&pgdata)?;
    check_port_free(config.pgport)?;
    check_http_free(&config.http_listen()?)?;
    let system_identifier = if is_pgdata(&pgdata) {
        let bin = pgproc::PgBin::discover()?;
        let runner = pgproc::postgres_runner(Some(&config.pg_user))?;
        let c = check_adoptable(&bin, &runner, &pgdata, true).await?;
        c.system_identifier
    } else {
        0
    };
    let dir = state_dir(&pgdata);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // PostgreSQL's OS user must traverse it to reach its socket directory
    // (run/, 0700 and its own) and the clone directory; our files in it
    // are 0600.
    set_mode(&dir, 0o711)?;
    config.save()?;
    let auth = prepare_join(&config, join).await?;

    let req = pb::RegisterRequest {
        formation: config.formation.clone(),
        name: config.name.clone(),
        host: config.hostname.clone(),
        port: config.pgport as u32,
        dbname: config.dbname.clone(),
        system_identifier,
        candidate_priority: config.candidate_priority,
        replication_quorum: config.replication_quorum,
        initial_state: NodeState::Init as i32,
    };
    let reply = register(&config.monitor, &auth, req).await?;
    let unsaved = |what: &str| {
        format!(
            "registered as node {} but could not save {what}: drop node {} on the monitor before trying again",
            reply.node_id, reply.node_id
        )
    };
    save_credential(&pgdata, &reply.node_credential).with_context(|| unsaved("its credential"))?;
    config.replication_password = reply.replication_password.clone();
    config.replication_password_generation = reply.replication_password_generation;
    config.save().with_context(|| unsaved("keeper.toml"))?;
    let assigned = NodeState::from_wire(reply.assigned_state)
        .map_err(|e| anyhow::anyhow!("the monitor assigned an unknown state: {e}"))?;
    let state = KeeperState {
        node_id: reply.node_id,
        group_id: reply.group_id,
        name: reply.name.clone(),
        current: NodeState::Init,
        assigned,
        generation_seen: reply.generation,
        last_rejoin: None,
        following: None,
    };
    state.save(&pgdata).with_context(|| {
        format!(
            "registered as node {} but could not save {}: drop node {} on the monitor before trying again",
            reply.node_id,
            state_path(&pgdata).display(),
            reply.node_id
        )
    })?;
    tracing::info!(
        "registered as node {} {:?}, goal {assigned}",
        reply.node_id,
        reply.name
    );
    Ok((Created::New, config, state))
}

async fn register(
    uri: &str,
    auth: &ClientAuth,
    req: pb::RegisterRequest,
) -> anyhow::Result<pb::RegisterResponse> {
    let mut last = None;
    for attempt in 1..=REGISTER_ATTEMPTS {
        match pgpilot_proto::client::connect(uri, auth).await {
            Ok(mut client) => {
                return client
                    .register(req)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| match s.code() {
                        // The answer, not the request, may be what got
                        // lost: the monitor may have registered the node.
                        tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown => anyhow::anyhow!(
                            "registering this node failed on the way: {}; the monitor may have \
                             registered it anyway: check `pgpilot show state` and drop that node \
                             before trying again",
                            pgpilot_proto::client::explain_status(&s)
                        ),
                        _ => anyhow::anyhow!(
                            "the monitor refused to register this node: {}",
                            s.message()
                        ),
                    });
            }
            Err(e) => {
                tracing::warn!("attempt {attempt}/{REGISTER_ATTEMPTS}: {e}");
                last = Some(e);
            }
        }
        if attempt < REGISTER_ATTEMPTS {
            tokio::time::sleep(REGISTER_RETRY).await;
        }
    }
    Err(anyhow::anyhow!(
        "gave up after {REGISTER_ATTEMPTS} attempts: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// PGDATA must be absent, empty, or a PostgreSQL cluster.
fn check_pgdata(pgdata: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(pgdata) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("read {}", pgdata.display())),
        Ok(mut entries) => {
            if entries.next().is_none() || is_pgdata(pgdata) {
                Ok(())
            } else {
                bail!(
                    "{} is not empty and is not a PostgreSQL data directory: pass an empty or new \
                     directory, or the data directory of a stopped primary",
                    pgdata.display()
                )
            }
        }
    }
}

fn check_port_free(port: u16) -> anyhow::Result<()> {
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .with_context(|| {
            format!("port {port} is already in use on this machine: choose another --pgport")
        })
}

/// The HTTP endpoints' address can be bound: checked before registering,
/// as the PostgreSQL port is (the keeper binds it for good at start).
fn check_http_free(listen: &pgpilot_proto::HttpListen) -> anyhow::Result<()> {
    let Some((host, port)) = listen.addr() else {
        return Ok(());
    };
    std::net::TcpListener::bind((host.as_str(), port))
        .map(drop)
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {listen}: choose another --http-listen HOST:PORT, or \
                 --http-listen off"
            )
        })
}

/// An existing cluster may become the first node only as a cleanly or
/// crash-stopped primary: not running, not a standby.
async fn check_adoptable(
    bin: &pgproc::PgBin,
    runner: &Option<pgproc::OsUser>,
    pgdata: &Path,
    at_creation: bool,
) -> anyhow::Result<pgproc::ControlData> {
    // Later, a postmaster.pid is one our own PostgreSQL left behind when
    // the keeper was killed; starting PostgreSQL tells a live one apart.
    if at_creation && pgdata.join("postmaster.pid").exists() {
        bail!(
            "PostgreSQL seems to run in {} (postmaster.pid exists): stop it first; the keeper runs it from now on",
            pgdata.display()
        );
    }
    let c = controldata(bin, runner, pgdata)
        .await
        .with_context(|| format!("read the control file of {}", pgdata.display()))?;
    if c.state.contains("recovery") || pgdata.join("standby.signal").exists() {
        bail!(
            "{} holds a standby (cluster state {:?}): only a primary can be adopted; give a new \
             node an empty PGDATA and it is cloned from the primary",
            pgdata.display(),
            c.state
        );
    }
    Ok(c)
}

/// The InitOrAdopt step: initdb into an empty PGDATA, or accept the
/// existing cluster after the same checks as at creation.
pub async fn init_or_adopt(config: &KeeperConfig, pg: &LocalPg) -> anyhow::Result<()> {
    if pg.has_pgdata() {
        check_adoptable(&pg.bin, &pg.runner, &config.pgdata, false).await?;
        return Ok(());
    }
    let opts = InitdbOptions {
        superuser: config.username.clone(),
        // The socket directory is private (0700, PostgreSQL's OS user), so
        // local trust admits only that user and root.
        auth_local: "trust".into(),
        auth_host: config.auth.hba_method().into(),
        data_checksums: true,
        no_sync: false,
    };
    tracing::info!("initdb in {}", config.pgdata.display());
    pgproc::initdb(&pg.bin, &pg.runner, &config.pgdata, &opts)
        .await
        .with_context(|| format!("initdb {}", config.pgdata.display()))?;
    Ok(())
}
