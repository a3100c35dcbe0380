//! The monitor's private PostgreSQL: created in `--pgdata DIR`, reachable
//! only through a Unix socket in a directory owned by its OS user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pgpilot_pgproc::{
    self as pgproc, set_mode, OsUser, PgBin, PostgresHandle, ShutdownMode, StartOptions,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::config::MonitorConfig;
use crate::files::state_dir;

/// The superuser initdb creates in the private cluster.
pub const SUPERUSER: &str = "pgpilot";
/// The database that holds the monitor schema.
pub const DATABASE: &str = "pgpilot";
/// The private cluster listens on no TCP port; this number only names the
/// socket file inside its private socket directory.
const SOCKET_PORT: u16 = 5432;
/// How long the private PostgreSQL gets to come up (crash recovery after an
/// unclean stop can take a while on a busy monitor).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private PostgreSQL.
pub struct PrivatePg {
    pub handle: PostgresHandle,
    pub runner: Option<OsUser>,
}

pub fn socket_dir(pgdata: &Path) -> PathBuf {
    pgproc::socket_dir_for(&state_dir(pgdata).join("run"))
}

/// Connection options for the monitor database over the private socket.
pub fn connect_options(pgdata: &Path, database: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .socket(socket_dir(pgdata))
        .port(SOCKET_PORT)
        .username(SUPERUSER)
        .database(database)
        .application_name("pgpilot-monitor")
        .disable_statement_logging()
}

/// Runs initdb into `pgdata` (which must be empty or absent).
pub async fn initdb(bin: &PgBin, runner: &Option<OsUser>, pgdata: &Path) -> anyhow::Result<()> {
    let opts = pgproc::InitdbOptions {
        superuser: SUPERUSER.into(),
        // The socket directory is private to the OS user (mode 0700), so
        // trust on the socket admits only that user and root.
        auth_local: "trust".into(),
        auth_host: "reject".into(),
        data_checksums: true,
        no_sync: false,
    };
    pgproc::initdb(bin, runner, pgdata, &opts)
        .await
        .with_context(|| format!("initdb the monitor's PostgreSQL in {}", pgdata.display()))?;
    Ok(())
}

/// Starts the private PostgreSQL of `config`.
pub async fn start(bin: &PgBin, config: &MonitorConfig) -> anyhow::Result<PrivatePg> {
    let runner = pgproc::postgres_runner(Some(&config.pg_user))?;
    let socket_dir = socket_dir(&config.pgdata);
    std::fs::create_dir_all(&socket_dir)
        .with_context(|| format!("create {}", socket_dir.display()))?;
    set_mode(&socket_dir, 0o700)?;
    pgproc::chown_dir(&runner, &socket_dir, false)?;
    let opts = StartOptions {
        port: SOCKET_PORT,
        socket_dir,
        listen_addresses: String::new(),
        settings: vec![
            ("unix_socket_permissions".into(), "0700".into()),
            ("cluster_name".into(), "pgpilot monitor".into()),
        ],
        tag: "monitor".into(),
        ready_timeout: READY_TIMEOUT,
        // The monitor restarts its own PostgreSQL: nothing would adopt one
        // it left behind.
        lifetime: pgproc::Lifetime::DiesWithUs,
    };
    let handle = PostgresHandle::start(bin, &runner, &config.pgdata, &opts)
        .await
        .with_context(|| {
            format!(
                "start the monitor's PostgreSQL in {}",
                config.pgdata.display()
            )
        })?;
    Ok(PrivatePg { handle, runner })
}

impl PrivatePg {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.handle
            .stop(ShutdownMode::Fast, Duration::from_secs(30))
            .await
            .context("stop the monitor's PostgreSQL")?;
        Ok(())
    }
}

/// Creates the monitor database if it is missing (idempotent).
pub async fn ensure_database(pgdata: &Path) -> anyhow::Result<()> {
    let mut conn = connect_options(pgdata, "postgres")
        .connect()
        .await
        .context("connect to the monitor's PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut conn)
            .await
            .context("create the monitor database")?;
    }
    conn.close().await.ok();
    Ok(())
}
