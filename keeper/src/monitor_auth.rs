//! How the keeper proves who it is to the monitor and checks the monitor:
//! the monitor's CA (`DIR.pgpilot/monitor-ca.pem`) and the node's own
//! credential (`DIR.pgpilot/node-credential`, 0600), both kept beside
//! PGDATA by `create postgres`.
//!
//! A new node needs only the monitor's URI and the formation's join
//! token: with TLS on, the token carries the CA's SHA-256, and the CA is
//! fetched from the monitor's handshake and checked against it
//! ([`pgpilot_proto::discover`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use pgpilot_proto::client::ClientAuth;
use pgpilot_proto::credential::{Credential, JoinToken};

use crate::config::KeeperConfig;
use crate::files::{state_dir, write_durably};

pub fn ca_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("monitor-ca.pem")
}

pub fn credential_path(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("node-credential")
}

/// What `create postgres` registers with.
#[derive(Clone, Debug)]
pub struct Join {
    pub token: JoinToken,
    /// `--ca-file`: the monitor's CA, instead of fetching it by the
    /// token's fingerprint.
    pub ca_file: Option<PathBuf>,
}

/// Puts the monitor's CA in place for an `https://` monitor (from
/// `--ca-file`, else fetched and checked by the join token's digest) and
/// returns how to register: the CA and the join token.
pub async fn prepare_join(config: &KeeperConfig, join: &Join) -> anyhow::Result<ClientAuth> {
    let token = Some(join.token.credential().token());
    if !config.monitor.starts_with("https://") {
        return Ok(ClientAuth {
            ca_pem: None,
            token,
        });
    }
    let pem = match (&join.ca_file, &join.token.ca_sha256) {
        (Some(file), _) => {
            let pem = std::fs::read(file)
                .with_context(|| format!("read --ca-file {}", file.display()))?;
            pgpilot_proto::client::check_pem(&pem).map_err(|why| {
                anyhow::anyhow!(
                    "--ca-file {} is not a PEM certificate: {why}",
                    file.display()
                )
            })?;
            pem
        }
        (None, Some(fp)) => pgpilot_proto::discover::fetch_ca(&config.monitor, fp).await?,
        (None, None) => bail!(
            "the monitor {} uses TLS, and this join token carries no CA fingerprint (the monitor \
             was created without TLS, or the token was cut short): pass the monitor's CA with \
             --ca-file, or the full token from `pgpilot show join-token`",
            config.monitor
        ),
    };
    write_durably(&ca_path(&config.pgdata), &pem, 0o644)?;
    Ok(ClientAuth {
        ca_pem: Some(pem),
        token,
    })
}

/// Keeps the credential Register gave this node.
pub fn save_credential(pgdata: &Path, token: &str) -> anyhow::Result<()> {
    match Credential::parse(token) {
        Ok(Credential::Node { .. }) => {}
        _ => bail!("the monitor answered with no valid node credential: is it an older pgpilot?"),
    }
    write_durably(
        &credential_path(pgdata),
        format!("{token}\n").as_bytes(),
        0o600,
    )
}

/// How a registered node's keeper talks to the monitor.
pub fn client_auth(config: &KeeperConfig) -> anyhow::Result<ClientAuth> {
    let pgdata = &config.pgdata;
    let path = credential_path(pgdata);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} is missing: this node has no credential for the monitor (created by an older \
             pgpilot, or the file was removed); drop the node and create it again",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    Credential::parse(&token)
        .with_context(|| format!("{} holds no valid credential", path.display()))?;
    let ca_pem = if config.monitor.starts_with("https://") {
        let ca = ca_path(pgdata);
        Some(std::fs::read(&ca).with_context(|| {
            format!(
                "read the monitor's CA {}: it is written by `create postgres`; copy the monitor's \
                 DIR.pgpilot/tls/ca.pem there",
                ca.display()
            )
        })?)
    } else {
        None
    };
    Ok(ClientAuth {
        ca_pem,
        token: Some(token),
    })
}
