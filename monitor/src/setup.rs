//! `pgpilot create monitor`: idempotent, resumable creation of a monitor.
//!
//! Steps, each safe to redo: write the configuration; initdb the private
//! PostgreSQL (unless `--database-url`); start it; create the database and
//! run the migrations; stop it; write the "created" marker. A re-run after
//! the marker exists changes nothing. A re-run after an interruption
//! continues; a partial initdb of our own (marked by `initdb.started`) is
//! cleared and redone, while a DIR holding anything else is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_pgproc::{self as pgproc, PgBin};

use crate::config::{MonitorConfig, Timings};
use crate::files::{
    initdb_marker, monitor_config_path, monitor_created_marker, state_dir, write_durably,
};
use crate::private_pg;
use crate::store::Store;

/// What `create monitor` was asked for.
#[derive(Clone, Debug)]
pub struct CreateMonitor {
    pub pgdata: PathBuf,
    pub listen: SocketAddr,
    pub hostname: Option<String>,
    pub database_url: Option<String>,
    pub pg_user: String,
    /// `--http-listen`; `None`: the default (see
    /// [`MonitorConfig::http_listen`]), written out.
    pub http_listen: Option<pgpilot_proto::HttpListen>,
    /// TLS on the gRPC API (`--no-ssl` turns it off).
    pub ssl: bool,
    /// `--ssl-ca-file --server-cert --server-key`: the operator's own
    /// certificates instead of a private CA.
    pub certs: Option<crate::tls::SuppliedCerts>,
    pub timings: Timings,
}

/// What `create monitor` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// The monitor was already complete; nothing was changed.
    AlreadyDone,
}

pub async fn create_monitor(req: &CreateMonitor) -> anyhow::Result<(Created, MonitorConfig)> {
    let pgdata = std::path::absolute(&req.pgdata)
        .with_context(|| format!("resolve {}", req.pgdata.display()))?;
    if monitor_created_marker(&pgdata).is_file() {
        let config = MonitorConfig::load(&monitor_config_path(&pgdata))?;
        // A monitor from before TLS and credentials gets what it lacks;
        // existing files are kept.
        make_credentials(&config, None)?;
        return Ok((Created::AlreadyDone, config));
    }
    req.timings.validate()?;
    let ours = initdb_marker(&pgdata).is_file();
    check_dir(&pgdata, ours, req.database_url.is_some())?;

    let config = MonitorConfig {
        listen: req.listen,
        hostname: match &req.hostname {
            Some(h) => h.clone(),
            None => default_hostname(req.listen)?,
        },
        pgdata: pgdata.clone(),
        database_url: req.database_url.clone(),
        pg_user: req.pg_user.clone(),
        http_listen: req.http_listen.clone(),
        ssl: req.ssl,
        timings: req.timings.clone(),
    };
    if !req.ssl && req.certs.is_some() {
        bail!("--no-ssl and certificate files contradict each other: pass one or the other");
    }
    // Before anything is written: a key that does not match its
    // certificate leaves nothing behind.
    if let Some(c) = &req.certs {
        crate::tls::check(c)?;
    }
    // Written out, default included, so that monitor.toml says where
    // /metrics is; a port without a default is refused here.
    let config = MonitorConfig {
        http_listen: Some(config.http_listen()?),
        ..config
    };
    let sdir = state_dir(&pgdata);
    std::fs::create_dir_all(&sdir).with_context(|| format!("create {}", sdir.display()))?;
    config.save(&monitor_config_path(&pgdata))?;
    make_credentials(&config, req.certs.as_ref())?;

    match &config.database_url {
        Some(url) => {
            std::fs::create_dir_all(&pgdata)
                .with_context(|| format!("create {}", pgdata.display()))?;
            let options = url.parse().context("parse --database-url")?;
            Store::open(options, Duration::from_secs(10))
                .await?
                .pool
                .close()
                .await;
        }
        None => create_private(&config).await?,
    }
    write_durably(&monitor_created_marker(&pgdata), b"", 0o600)?;
    Ok((Created::New, config))
}

/// The TLS material (unless `ssl = false`) and the tokens; what exists is
/// kept, so nodes holding the CA or a token are unaffected by a re-run.
fn make_credentials(
    config: &MonitorConfig,
    certs: Option<&crate::tls::SuppliedCerts>,
) -> anyhow::Result<()> {
    let fingerprint = if config.ssl {
        match certs {
            Some(c) => crate::tls::import(&config.pgdata, c)?,
            None => crate::tls::generate(
                &config.pgdata,
                &crate::tls::default_names(&config.hostname, config.listen),
            )?,
        }
        Some(crate::tls::ca_fingerprint(&config.pgdata)?)
    } else {
        None
    };
    crate::auth::ensure_tokens(&config.pgdata, fingerprint.as_deref())
}

async fn create_private(config: &MonitorConfig) -> anyhow::Result<()> {
    let pgdata = &config.pgdata;
    let bin = PgBin::discover()?;
    let runner = pgproc::postgres_runner(Some(&config.pg_user))?;
    if !pgproc::is_pgdata(pgdata) {
        // Our own interrupted initdb: clear what it left and redo it.
        if pgdata.exists() {
            std::fs::remove_dir_all(pgdata)
                .with_context(|| format!("remove the partial cluster in {}", pgdata.display()))?;
        }
        write_durably(&initdb_marker(pgdata), b"", 0o600)?;
        private_pg::initdb(&bin, &runner, pgdata).await?;
    }
    let pg = private_pg::start(&bin, config).await?;
    let result = async {
        private_pg::ensure_database(pgdata).await?;
        let options = private_pg::connect_options(pgdata, private_pg::DATABASE);
        Store::open(options, Duration::from_secs(10))
            .await?
            .pool
            .close()
            .await;
        anyhow::Ok(())
    }
    .await;
    pg.stop().await?;
    result?;
    std::fs::remove_file(initdb_marker(pgdata)).ok();
    Ok(())
}

/// Refuses a DIR that holds something other than an unfinished monitor of
/// ours, so an operator's mistake never destroys data.
fn check_dir(pgdata: &Path, ours: bool, external_db: bool) -> anyhow::Result<()> {
    let empty = match std::fs::read_dir(pgdata) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("read {}", pgdata.display())),
    };
    if empty || ours {
        return Ok(());
    }
    if pgproc::is_pgdata(pgdata) && !external_db && monitor_config_path(pgdata).is_file() {
        // initdb finished but a later step was interrupted: continue.
        return Ok(());
    }
    if pgproc::is_pgdata(pgdata) {
        bail!(
            "{} already holds a PostgreSQL cluster that is not a pgpilot monitor: \
             choose an empty or new directory for --pgdata",
            pgdata.display()
        );
    }
    bail!(
        "{} is not empty and is not a pgpilot monitor: choose an empty or new directory for --pgdata",
        pgdata.display()
    )
}

/// The name keepers use to reach us: the listen address when it is a
/// specific one, else this machine's host name.
fn default_hostname(listen: SocketAddr) -> anyhow::Result<String> {
    if !listen.ip().is_unspecified() {
        return Ok(listen.ip().to_string());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read this machine's host name; pass --hostname")?;
    let name = name.trim();
    if name.is_empty() {
        bail!("this machine has no host name: pass --hostname");
    }
    Ok(name.to_string())
}
