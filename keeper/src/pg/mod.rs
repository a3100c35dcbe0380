//! The node's PostgreSQL, as the keeper drives it: a supervised process
//! (started by this keeper, or adopted from an earlier one), its settings
//! file, pg_hba.conf, and the SQL the keeper runs on it. Everything here is
//! I/O; the decisions are in [`crate::engine`] and [`crate::plan`].

mod adopt;
pub mod conf;
pub mod copy;
pub mod hba;
pub mod scram;
pub mod sql;
pub mod ssl;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpilot_pgproc::{
    self as pgproc, chown_dir, set_mode, Found, Lifetime, OsUser, PgBin, PostgresHandle,
    ShutdownMode, StartOptions,
};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions;

use crate::config::KeeperConfig;
use crate::files::{log_fifo, socket_dir, write_durably, PG_CONF_NAME};
use crate::plan::Role;

/// Crash recovery after a kill, or a standby that must first fetch WAL,
/// can take a while; a node that is not ready by then is reported down.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A fast shutdown writes a checkpoint; a node under heavy write load may
/// need this long before we escalate to an immediate shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reload may take to show in SHOW before it counts as failed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How often SHOW is read again until a reload shows. The postmaster
/// takes the SIGHUP within milliseconds, and promotion (standby without
/// upstream, then read-only primary) and allowing writes each wait for a
/// reload on the way to a switchover's end, while no node takes writes: a
/// coarse poll would be most of the write gap (it was 50 ms). A round is
/// a local connection and one SHOW per setting, cheap at this rate.
const RELOAD_POLL: Duration = Duration::from_millis(10);
/// Connecting over the local socket takes milliseconds; one that takes
/// longer is a PostgreSQL that is stuck (or not accepting connections yet)
/// and must not stall the heartbeat.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Every statement the keeper runs is bounded, so that a hung query (a
/// lock held by a client, a stuck backend) cannot stall the heartbeat, and
/// with it the lease, forever. The keeper's waits are loops of short
/// statements; the one long statement (the checkpoint after a promotion)
/// raises its own limit on its connection (see [`sql::promote`]), and the
/// checkpoint before a planned stop is cut off at this limit on purpose.
const STATEMENT_TIMEOUT: &str = "5s";
/// The keeper's DDL (roles, grants, slots) must not queue behind a
/// client's lock: it fails and is retried on the next round instead.
const LOCK_TIMEOUT: &str = "2s";

/// The node's PostgreSQL and the keeper's handle on it.
pub struct LocalPg {
    pub bin: PgBin,
    pub runner: Option<OsUser>,
    pub pgdata: PathBuf,
    pub port: u16,
    listen_addresses: String,
    superuser: String,
    tag: String,
    handle: Option<PostgresHandle>,
    /// pg_basebackup's --max-rate, in kB/s (`maximum_backup_rate`).
    max_rate_kb: u32,
    /// Exits of our postmaster that we did not ask for, not yet taken by
    /// the keeper's loop (they count against the restart budget).
    deaths: u32,
    /// `postgres_dies_with_keeper`: start PostgreSQL so that it dies with
    /// this process, and never keep one that would outlive it.
    dies_with_keeper: bool,
    /// The server's SSL files and how our clients check the others.
    pub ssl: ssl::Ssl,
    /// The configuration [`ssl::ensure`] installs the files from.
    config: KeeperConfig,
}

/// Reads the node's PostgreSQL while a step holds the [`LocalPg`] (a copy,
/// a start through crash recovery): the heartbeat beside it must still say
/// what PostgreSQL looks like.
#[derive(Clone, Debug)]
pub struct Probe {
    pgdata: PathBuf,
    options: PgConnectOptions,
}

impl Probe {
    pub fn has_pgdata(&self) -> bool {
        pgproc::is_pgdata(&self.pgdata)
    }

    /// A live postmaster runs in PGDATA, checked as
    /// [`pgproc::find_postmaster`] does (a stale pid file cannot pass). A
    /// postmaster still in crash recovery counts.
    pub fn is_running(&self) -> bool {
        matches!(pgproc::find_postmaster(&self.pgdata), Found::Running(_))
    }

    /// Like [`LocalPg::connect`], with the same bounds.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
            .await
            .context("connecting to the local PostgreSQL timed out")?
            .context("connect to the local PostgreSQL")
    }
}

impl LocalPg {
    pub fn new(config: &KeeperConfig, tag: &str) -> anyhow::Result<LocalPg> {
        Ok(LocalPg {
            bin: PgBin::discover()?,
            runner: pgproc::postgres_runner(Some(&config.pg_user))?,
            pgdata: config.pgdata.clone(),
            port: config.pgport,
            listen_addresses: config.listen_addresses.clone(),
            superuser: config.username.clone(),
            tag: tag.to_string(),
            handle: None,
            max_rate_kb: crate::config::parse_backup_rate(&config.maximum_backup_rate)?,
            deaths: 0,
            dies_with_keeper: config.postgres_dies_with_keeper,
            ssl: ssl::Ssl::for_config(config),
            config: config.clone(),
        })
    }

    /// What reads PostgreSQL's status without the handle, beside steps
    /// that hold it (see [`Probe`]).
    pub fn probe(&self) -> Probe {
        Probe {
            pgdata: self.pgdata.clone(),
            options: self.connect_options("postgres"),
        }
    }

    /// The postmaster's pid while we run one.
    pub fn pid(&self) -> Option<u32> {
        self.handle.as_ref().map(|h| h.pid())
    }

    pub fn has_pgdata(&self) -> bool {
        pgproc::is_pgdata(&self.pgdata)
    }

    /// Whether our postmaster runs. A postmaster that exited is reaped and
    /// its exit logged here.
    pub fn is_running(&mut self) -> bool {
        let Some(h) = self.handle.as_mut() else {
            return false;
        };
        match h.try_exit_status() {
            Ok(None) => true,
            Ok(Some(exit)) => {
                tracing::warn!(
                    "PostgreSQL exited ({exit}); last log lines:\n{}",
                    h.log_tail().join("\n")
                );
                self.handle = None;
                self.deaths += 1;
                false
            }
            Err(e) => {
                tracing::warn!("cannot tell whether PostgreSQL runs: {e:#}");
                true
            }
        }
    }

    /// How many times our postmaster exited on its own since the last call.
    pub fn take_deaths(&mut self) -> u32 {
        std::mem::take(&mut self.deaths)
    }

    /// Starts PostgreSQL unless it runs (one that runs although this
    /// keeper did not start it is adopted, see `take_over`).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        if !self.has_pgdata() {
            bail!(
                "{} holds no PostgreSQL cluster; nothing to start",
                self.pgdata.display()
            );
        }
        let marker = crate::files::rewind_marker(&self.pgdata);
        if marker.exists() {
            bail!(
                "{} was being rewound when pg_rewind was interrupted ({} exists): it is not started; \
                 the keeper replaces it with a new copy from the primary it follows",
                self.pgdata.display(),
                marker.display()
            );
        }
        if let Some(pm) = self.found_postmaster()? {
            if self.take_over(pm).await?.is_some() {
                return Ok(());
            }
        }
        let socket_dir = socket_dir(&self.pgdata);
        std::fs::create_dir_all(&socket_dir)
            .with_context(|| format!("create {}", socket_dir.display()))?;
        set_mode(&socket_dir, 0o700)?;
        chown_dir(&self.runner, &socket_dir, false)?;
        self.ensure_include()?;
        // Our settings file turns ssl on: the files must be there first.
        self.ensure_ssl()?;
        let opts = StartOptions {
            port: self.port,
            socket_dir,
            listen_addresses: self.listen_addresses.clone(),
            settings: vec![("unix_socket_permissions".into(), "0700".into())],
            tag: self.tag.clone(),
            ready_timeout: READY_TIMEOUT,
            lifetime: if self.dies_with_keeper {
                Lifetime::DiesWithUs
            } else {
                Lifetime::Outlives {
                    log_fifo: log_fifo(&self.pgdata),
                }
            },
        };
        let started = Instant::now();
        let handle = PostgresHandle::start(&self.bin, &self.runner, &self.pgdata, &opts)
            .await
            .with_context(|| format!("start PostgreSQL in {}", self.pgdata.display()))?;
        tracing::info!(
            pid = handle.pid(),
            "PostgreSQL started on port {} in {} ms",
            self.port,
            started.elapsed().as_millis()
        );
        self.handle = Some(handle);
        Ok(())
    }

    /// Stops PostgreSQL (fast shutdown, escalating if it hangs).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(h) = self.handle.take() {
            let status = h
                .stop(ShutdownMode::Fast, STOP_TIMEOUT)
                .await
                .context("stop PostgreSQL")?;
            tracing::info!("PostgreSQL stopped ({status})");
        }
        Ok(())
    }

    /// Kills PostgreSQL at once (immediate shutdown): fencing.
    pub async fn stop_immediately(&mut self) -> anyhow::Result<()> {
        if let Some(h) = self.handle.take() {
            h.stop(ShutdownMode::Immediate, Duration::from_secs(5))
                .await
                .context("stop PostgreSQL")?;
        }
        Ok(())
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(socket_dir(&self.pgdata))
            .port(self.port)
            .username(&self.superuser)
            .database(database)
            .application_name("pgpilot-keeper")
            .options([
                ("statement_timeout", STATEMENT_TIMEOUT),
                ("lock_timeout", LOCK_TIMEOUT),
            ])
            .disable_statement_logging()
    }

    /// A superuser connection over the private socket.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_options("postgres").connect())
            .await
            .context("connecting to the local PostgreSQL timed out")?
            .context("connect to the local PostgreSQL")
    }

    /// Writes a file inside PGDATA, crash-safely, owned by PostgreSQL's user.
    pub fn write_file(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        let path = self.pgdata.join(name);
        write_durably(&path, contents.as_bytes(), 0o600)?;
        chown_dir(&self.runner, &path, false)?;
        Ok(())
    }

    /// The node's SSL files in place (see [`ssl::ensure`]): before every
    /// start, settings change, copy and rewind (their clients read the CA).
    pub fn ensure_ssl(&self) -> anyhow::Result<()> {
        ssl::ensure(&self.config, &self.runner)
    }

    fn ensure_include(&self) -> anyhow::Result<()> {
        let path = self.pgdata.join("postgresql.conf");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        if let Some(new) = conf::with_include(&text) {
            self.write_file("postgresql.conf", &new)?;
        }
        Ok(())
    }

    /// Writes the settings file and standby.signal for `role`; when
    /// PostgreSQL runs, reloads and waits until SHOW agrees.
    pub async fn configure(
        &mut self,
        role: &Role,
        node_id: i64,
        password: &str,
    ) -> anyhow::Result<()> {
        self.ensure_include()?;
        self.ensure_ssl()?;
        let text = conf::render(role, node_id, password, &self.ssl);
        let path = self.pgdata.join(PG_CONF_NAME);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            self.write_file(PG_CONF_NAME, &text)?;
        }
        let signal = self.pgdata.join("standby.signal");
        match role {
            Role::Standby { .. } if !signal.exists() => self.write_file("standby.signal", "")?,
            // A running standby is only promoted by pg_promote, which
            // removes the file itself.
            Role::Primary { .. } if signal.exists() && !self.is_running() => {
                std::fs::remove_file(&signal)
                    .with_context(|| format!("remove {}", signal.display()))?
            }
            _ => {}
        }
        if self.is_running() {
            self.reload_and_verify(&conf::expected(role, node_id, password, &self.ssl))
                .await?;
        }
        Ok(())
    }

    /// Rewrites the keeper's block of pg_hba.conf; reloads if it changed.
    pub async fn write_hba(&mut self, lines: &[String]) -> anyhow::Result<()> {
        let path = self.pgdata.join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let new = hba::render(&old, lines);
        if new == old {
            return Ok(());
        }
        self.write_file("pg_hba.conf", &new)?;
        tracing::info!("pg_hba.conf updated: {} managed line(s)", lines.len());
        if self.is_running() {
            let mut c = self.connect().await?;
            sql::reload(&mut c).await?;
            if let Some(err) = sql::hba_errors(&mut c).await? {
                bail!("pg_hba.conf has errors after our update: {err}");
            }
        }
        Ok(())
    }

    /// pg_reload_conf(), then poll SHOW on fresh connections until every
    /// expected value is live: a new backend reads the configuration the
    /// postmaster loaded, so this proves the reload took.
    pub async fn reload_and_verify(&mut self, expected: &[(&str, String)]) -> anyhow::Result<()> {
        let mut c = self.connect().await?;
        sql::reload(&mut c).await?;
        if let Some(err) = sql::settings_errors(&mut c).await? {
            bail!("PostgreSQL refused its configuration: {err}");
        }
        drop(c);
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        loop {
            let mut c = self.connect().await?;
            let mut wrong = None;
            for (name, want) in expected {
                let live = sql::show(&mut c, name).await?;
                if &live != want {
                    wrong = Some(format!("{name} is {live:?}, expected {want:?}"));
                    break;
                }
            }
            match wrong {
                None => return Ok(()),
                Some(w) if Instant::now() > deadline => {
                    let source =
                        sql::setting_source(&mut c, w.split(' ').next().unwrap_or_default())
                            .await
                            .unwrap_or_default();
                    bail!(
                        "after a reload, {}{source}: a setting pgpilot owns is overridden; remove it \
                         from postgresql.auto.conf (ALTER SYSTEM RESET) or from the command line",
                        conf::redact(&w)
                    )
                }
                Some(_) => tokio::time::sleep(RELOAD_POLL).await,
            }
        }
    }
}
