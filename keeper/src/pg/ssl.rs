//! The node's SSL certificate for PostgreSQL, and how this node's libpq
//! clients (the WAL receiver, pg_basebackup, pg_rewind) check the others.
//!
//! The files live in `DIR.pgpilot/ssl/`, outside PGDATA: pg_basebackup
//! copies PGDATA whole, and a standby must not inherit its primary's key.
//! The directory and the files belong to PostgreSQL's OS user (the server
//! refuses a key file others can read; libpq in the WAL receiver reads
//! `root.crt`), mode 0700 and 0600, written crash-safely.
//!
//! By default the keeper generates a self-signed certificate for the
//! node's `hostname` once (ECDSA P-256, with rcgen: no OpenSSL), and peers
//! connect with `sslmode=require`: encrypted, and SCRAM still proves that
//! both sides know the password, but a certificate is not checked (nobody
//! could: there is no CA). With operator files (`[ssl]` in keeper.toml)
//! they are copied in on every start, and with a CA every peer is checked
//! with `sslmode=verify-full`: the peer's certificate must be signed by
//! that CA and name the host the monitor gave for it, as a DNS name or as
//! an IP address SAN (libpq checks IP SANs since PostgreSQL 14). verify-ca
//! would also accept any other node's certificate for any host, which is
//! the impersonation verify-full exists to stop, so it is not offered.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pgpilot_pgproc::{chown_dir, set_mode, OsUser};

use crate::config::KeeperConfig;
use crate::files::{state_dir, write_durably};

/// Where the node's SSL files are.
pub fn ssl_dir(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("ssl")
}

/// How this node's clients check the server they connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMode {
    /// Encrypted; the certificate is not checked (no CA is known).
    Require,
    /// The certificate must be signed by `root_cert` and name the host.
    VerifyFull { root_cert: PathBuf },
}

impl ClientMode {
    /// The libpq connection string keywords.
    pub fn conninfo_parts(&self) -> Vec<String> {
        match self {
            ClientMode::Require => vec!["sslmode=require".into()],
            ClientMode::VerifyFull { root_cert } => vec![
                "sslmode=verify-full".into(),
                format!(
                    "sslrootcert={}",
                    super::conf::quote(&root_cert.to_string_lossy())
                ),
            ],
        }
    }

    /// The same as environment variables, for pg_basebackup (which takes
    /// host and port as options).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            ClientMode::Require => vec![("PGSSLMODE", "require".into())],
            ClientMode::VerifyFull { root_cert } => vec![
                ("PGSSLMODE", "verify-full".into()),
                ("PGSSLROOTCERT", root_cert.to_string_lossy().into_owned()),
            ],
        }
    }
}

/// The node's SSL settings: the server's files and the clients' mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ssl {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: ClientMode,
}

impl Ssl {
    pub fn for_config(config: &KeeperConfig) -> Ssl {
        let dir = ssl_dir(&config.pgdata);
        Ssl {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client: match config.ssl.ca_file {
                Some(_) => ClientMode::VerifyFull {
                    root_cert: dir.join("root.crt"),
                },
                None => ClientMode::Require,
            },
        }
    }

    /// The server settings for postgresql.pgpilot.conf.
    pub fn server_settings(&self) -> Vec<(&'static str, String)> {
        let q = |p: &Path| super::conf::quote(&p.to_string_lossy());
        vec![
            ("ssl", "on".into()),
            ("ssl_cert_file", q(&self.cert)),
            ("ssl_key_file", q(&self.key)),
            // TLS 1.2 is the floor of every supported PostgreSQL client.
            ("ssl_min_protocol_version", "'TLSv1.2'".into()),
            // Every password set on this server (the replication role's
            // included) is stored as a SCRAM verifier, never as MD5.
            ("password_encryption", "'scram-sha-256'".into()),
        ]
    }
}

/// Puts the node's certificate and key in place for PostgreSQL: the
/// operator's files (copied whenever they changed), or a self-signed
/// certificate generated once. Idempotent; run before every start.
///
/// On success the files exist, owned by PostgreSQL's OS user, the key
/// 0600. On error nothing that was in place is removed.
pub fn ensure(config: &KeeperConfig, runner: &Option<OsUser>) -> anyhow::Result<()> {
    let dir = ssl_dir(&config.pgdata);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    set_mode(&dir, 0o700)?;
    chown_dir(runner, &dir, false)?;
    let ssl = Ssl::for_config(config);
    match (&config.ssl.cert_file, &config.ssl.key_file) {
        (Some(cert), Some(key)) => {
            install(runner, cert, &ssl.cert, 0o644)?;
            install(runner, key, &ssl.key, 0o600)?;
            if let (Some(ca), ClientMode::VerifyFull { root_cert }) =
                (&config.ssl.ca_file, &ssl.client)
            {
                install(runner, ca, root_cert, 0o644)?;
            }
        }
        _ if ssl.cert.is_file() && ssl.key.is_file() => {
            // Generated earlier: kept (ownership re-applied, in case a
            // crash came between the rename and the chown).
            chown_dir(runner, &ssl.cert, false)?;
            chown_dir(runner, &ssl.key, false)?;
        }
        _ => {
            let (cert, key) = self_signed(&config.hostname)?;
            // The key first: a certificate without its key is regenerated
            // (both) on the next run, never used.
            write_owned(runner, &ssl.key, key.as_bytes(), 0o600)?;
            write_owned(runner, &ssl.cert, cert.as_bytes(), 0o644)?;
            tracing::info!(
                "generated a self-signed SSL certificate for {} in {}",
                config.hostname,
                dir.display()
            );
        }
    }
    Ok(())
}

/// A self-signed certificate for `host` (PEM certificate, PEM key).
pub fn self_signed(host: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generate an SSL key")?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .with_context(|| format!("make certificate parameters for {host:?}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let cert = params
        .self_signed(&key)
        .context("sign the SSL certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn install(runner: &Option<OsUser>, from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let data = std::fs::read(from).with_context(|| {
        format!(
            "read the SSL file {} named in keeper.toml ([ssl])",
            from.display()
        )
    })?;
    if std::fs::read(to).ok().as_deref() != Some(data.as_slice()) {
        write_owned(runner, to, &data, mode)?;
        tracing::info!("installed {} as {}", from.display(), to.display());
    } else {
        chown_dir(runner, to, false)?;
    }
    Ok(())
}

fn write_owned(runner: &Option<OsUser>, path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    write_durably(path, data, mode)?;
    Ok(chown_dir(runner, path, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("node");
        std::fs::create_dir_all(state_dir(&pgdata)).unwrap();
        let config = crate::config::sample(&pgdata);
        ensure(&config, &None).unwrap();
        let ssl = Ssl::for_config(&config);
        assert_eq!(ssl.client, ClientMode::Require);
        let cert = std::fs::read_to_string(&ssl.cert).unwrap();
        let key = std::fs::read_to_string(&ssl.key).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.contains("PRIVATE KEY-----"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ssl.key), 0o600);
        assert_eq!(mode(&ssl_dir(&pgdata)), 0o700);
        ensure(&config, &None).unwrap();
        assert_eq!(std::fs::read_to_string(&ssl.cert).unwrap(), cert, "kept");
        assert!(!ssl.cert.starts_with(&pgdata), "outside PGDATA");
    }

    #[test]
    fn operator_files_are_copied_and_a_ca_means_verify_full() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("node");
        std::fs::create_dir_all(state_dir(&pgdata)).unwrap();
        let (cert, key) = self_signed("db1.example").unwrap();
        let files = dir.path().join("mine");
        std::fs::create_dir_all(&files).unwrap();
        for (n, t) in [("c.pem", &cert), ("k.pem", &key), ("ca.pem", &cert)] {
            std::fs::write(files.join(n), t).unwrap();
        }
        let mut config = crate::config::sample(&pgdata);
        config.ssl.cert_file = Some(files.join("c.pem"));
        config.ssl.key_file = Some(files.join("k.pem"));
        config.ssl.ca_file = Some(files.join("ca.pem"));
        config.validate().unwrap();
        ensure(&config, &None).unwrap();
        let ssl = Ssl::for_config(&config);
        assert_eq!(std::fs::read_to_string(&ssl.key).unwrap(), key);
        let root = ssl_dir(&pgdata).join("root.crt");
        assert_eq!(std::fs::read_to_string(&root).unwrap(), cert);
        let parts = ssl.client.conninfo_parts().join(" ");
        assert!(
            parts.starts_with("sslmode=verify-full sslrootcert='"),
            "{parts}"
        );
        assert_eq!(ssl.client.env()[0], ("PGSSLMODE", "verify-full".into()));

        config.ssl.key_file = None;
        let err = format!("{:#}", config.validate().unwrap_err());
        assert!(err.contains("go together"), "{err}");
        config.ssl = Default::default();
        config.ssl.ca_file = Some(files.join("ca.pem"));
        let err = format!("{:#}", config.validate().unwrap_err());
        assert!(err.contains("--ssl-cert-file"), "{err}");
    }
}
