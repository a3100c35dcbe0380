//! The monitor's TLS material, in `DIR.pgpilot/tls/`: a private CA made
//! by `create monitor` (or the operator's own CA and certificate), and the
//! server certificate keepers and the CLI verify.
//!
//! - `ca.pem`: the CA certificate, given to clients (`--ca-file`); its
//!   SHA-256 is the join token's third part.
//! - `ca.key`: the private CA's key (0600), kept to sign a new server
//!   certificate later; absent with operator-supplied certificates.
//! - `server.pem`: the server certificate followed by the CA, so that a
//!   new node that knows only the CA's digest finds it in the handshake.
//! - `server.key`: its key (0600).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::files::{state_dir, write_durably};

pub fn tls_dir(pgdata: &Path) -> PathBuf {
    state_dir(pgdata).join("tls")
}

pub fn ca_path(pgdata: &Path) -> PathBuf {
    tls_dir(pgdata).join("ca.pem")
}

fn ca_key_path(pgdata: &Path) -> PathBuf {
    tls_dir(pgdata).join("ca.key")
}

fn server_cert_path(pgdata: &Path) -> PathBuf {
    tls_dir(pgdata).join("server.pem")
}

fn server_key_path(pgdata: &Path) -> PathBuf {
    tls_dir(pgdata).join("server.key")
}

/// Operator-supplied certificates (`create monitor --ssl-ca-file
/// --server-cert --server-key`).
#[derive(Clone, Debug)]
pub struct SuppliedCerts {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Makes a private CA and a server certificate naming `names` (host names
/// and IP addresses), unless a complete set is already there (a re-run of
/// an interrupted `create monitor` keeps the CA nodes may already hold).
pub fn generate(pgdata: &Path, names: &[String]) -> anyhow::Result<()> {
    if server_key_path(pgdata).is_file() && ca_path(pgdata).is_file() {
        return Ok(());
    }
    make_dir(pgdata)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.distinguished_name
        .push(DnType::CommonName, "pgpilot monitor CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().context("generate the CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("sign the CA certificate")?;

    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("server certificate names {names:?}"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, "pgpilot monitor");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server_key = KeyPair::generate().context("generate the server key")?;
    let issuer = Issuer::new(ca, &ca_key);
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("sign the server certificate")?;

    // Keys first: a certificate without its key would pass the check above.
    write_durably(
        &ca_key_path(pgdata),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_durably(&ca_path(pgdata), ca_cert.pem().as_bytes(), 0o644)?;
    write_durably(
        &server_cert_path(pgdata),
        format!("{}{}", server_cert.pem(), ca_cert.pem()).as_bytes(),
        0o644,
    )?;
    write_durably(
        &server_key_path(pgdata),
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// Copies operator-supplied certificates into place, checked: each file
/// must hold what its flag says. The CA is appended to the server chain
/// when the chain lacks it.
pub fn import(pgdata: &Path, supplied: &SuppliedCerts) -> anyhow::Result<()> {
    let Checked {
        ca,
        cert,
        key,
        ca_blocks,
        cert_blocks,
    } = read_checked(supplied)?;
    make_dir(pgdata)?;
    let ca_der = ca_blocks[0].contents();
    let mut chain = cert.clone();
    if !cert_blocks.iter().any(|b| b.contents() == ca_der) {
        if !chain.ends_with(b"\n") {
            chain.push(b'\n');
        }
        chain.extend_from_slice(pem::encode(&ca_blocks[0]).as_bytes());
    }
    write_durably(&server_key_path(pgdata), &key, 0o600)?;
    write_durably(&ca_path(pgdata), &ca, 0o644)?;
    write_durably(&server_cert_path(pgdata), &chain, 0o644)?;
    Ok(())
}

/// The supplied files, read and checked.
struct Checked {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    ca_blocks: Vec<pem::Pem>,
    cert_blocks: Vec<pem::Pem>,
}

/// Checks operator-supplied certificates without installing them: `create
/// monitor` calls it before it writes anything, so a wrong file leaves
/// nothing behind to clean up.
pub fn check(supplied: &SuppliedCerts) -> anyhow::Result<()> {
    read_checked(supplied).map(drop)
}

fn read_checked(supplied: &SuppliedCerts) -> anyhow::Result<Checked> {
    let read = |p: &Path, flag: &str| {
        std::fs::read(p).with_context(|| format!("read {flag} {}", p.display()))
    };
    let ca = read(&supplied.ca_file, "--ssl-ca-file")?;
    let cert = read(&supplied.cert_file, "--server-cert")?;
    let key = read(&supplied.key_file, "--server-key")?;
    let ca_blocks = blocks(&ca, "--ssl-ca-file")?;
    let cert_blocks = blocks(&cert, "--server-cert")?;
    let key_blocks = pem::parse_many(&key).unwrap_or_default();
    if !ca_blocks.iter().any(|b| b.tag() == "CERTIFICATE") {
        bail!(
            "--ssl-ca-file {} holds no CERTIFICATE",
            supplied.ca_file.display()
        );
    }
    key_matches(&cert_blocks, &key_blocks, supplied)?;
    Ok(Checked {
        ca,
        cert,
        key,
        ca_blocks,
        cert_blocks,
    })
}

/// The key is the private half of the certificate's public key. Checked
/// here, at `create monitor`: otherwise the mismatch shows only when the
/// monitor starts, as a TLS error that names neither file.
fn key_matches(
    cert_blocks: &[pem::Pem],
    key_blocks: &[pem::Pem],
    supplied: &SuppliedCerts,
) -> anyhow::Result<()> {
    use tokio_rustls::rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };
    use tokio_rustls::rustls::sign::CertifiedKey;
    use tokio_rustls::rustls::{Error, InconsistentKeys};
    let (cert, key) = (supplied.cert_file.display(), supplied.key_file.display());
    let Some(leaf) = cert_blocks.iter().find(|b| b.tag() == "CERTIFICATE") else {
        bail!("--server-cert {cert} holds no CERTIFICATE");
    };
    let Some(k) = key_blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
        bail!("--server-key {key} holds no PEM PRIVATE KEY");
    };
    let der = k.contents().to_vec();
    let der: PrivateKeyDer<'static> = match k.tag() {
        "RSA PRIVATE KEY" => PrivatePkcs1KeyDer::from(der).into(),
        "EC PRIVATE KEY" => PrivateSec1KeyDer::from(der).into(),
        _ => PrivatePkcs8KeyDer::from(der).into(),
    };
    let signing =
        tokio_rustls::rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| {
            anyhow::anyhow!(
                "--server-key {key} is not a private key the monitor can use ({e}): give an \
                 RSA, ECDSA (P-256, P-384) or Ed25519 key in PEM"
            )
        })?;
    let pair = CertifiedKey::new(
        vec![CertificateDer::from(leaf.contents().to_vec())],
        signing,
    );
    match pair.keys_match() {
        Ok(()) => Ok(()),
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => bail!(
            "--server-key {key} does not match --server-cert {cert}: the key is not the private \
             key of the certificate (its first CERTIFICATE); pass the key the certificate was \
             issued for (compare `openssl x509 -noout -pubkey -in {cert}` with \
             `openssl pkey -pubout -in {key}`)"
        ),
        // The provider cannot say which public key the private one has:
        // nothing to compare, the TLS handshake is the check.
        Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => bail!("--server-cert {cert}: its first CERTIFICATE cannot be read ({e})"),
    }
}

fn blocks(data: &[u8], flag: &str) -> anyhow::Result<Vec<pem::Pem>> {
    pem::parse_many(data).with_context(|| format!("{flag} is not PEM"))
}

fn make_dir(pgdata: &Path) -> anyhow::Result<()> {
    let dir = tls_dir(pgdata);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    pgpilot_pgproc::set_mode(&dir, 0o700)
}

/// The server's certificate chain and key, for tonic.
pub fn server_identity(pgdata: &Path) -> anyhow::Result<tonic::transport::Identity> {
    let cert = std::fs::read(server_cert_path(pgdata)).with_context(|| {
        format!(
            "read the monitor's certificate {}: re-run `pgpilot create monitor`, or set ssl = false in monitor.toml to run without TLS",
            server_cert_path(pgdata).display()
        )
    })?;
    let key = std::fs::read(server_key_path(pgdata))
        .with_context(|| format!("read {}", server_key_path(pgdata).display()))?;
    Ok(tonic::transport::Identity::from_pem(cert, key))
}

/// The CA certificate (PEM) clients verify the monitor with.
pub fn ca_pem(pgdata: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(ca_path(pgdata))
        .with_context(|| format!("read the monitor's CA {}", ca_path(pgdata).display()))
}

/// SHA-256 of the CA certificate's DER: the join token's third part.
pub fn ca_fingerprint(pgdata: &Path) -> anyhow::Result<String> {
    fingerprint_of(&ca_pem(pgdata)?)
}

/// SHA-256 of the first certificate in `pem_data`.
pub fn fingerprint_of(pem_data: &[u8]) -> anyhow::Result<String> {
    let first = pem::parse_many(pem_data)
        .context("the CA file is not PEM")?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .context("the CA file holds no CERTIFICATE")?;
    Ok(pgpilot_proto::credential::sha256_hex(first.contents()))
}

/// The names a generated server certificate holds: the configured
/// hostname, the listen address when it is a specific one, and loopback,
/// so `--pgdata MONITOR_DIR` on this machine verifies too.
pub fn default_names(hostname: &str, listen: std::net::SocketAddr) -> Vec<String> {
    let mut names = vec![hostname.trim_matches(['[', ']']).to_string()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    for n in ["localhost", "127.0.0.1", "::1"] {
        names.push(n.to_string());
    }
    names.dedup();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_chain_holds_the_ca_and_matches_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("m");
        generate(
            &pgdata,
            &default_names("db1", "127.0.0.1:5430".parse().unwrap()),
        )
        .unwrap();
        let ca = ca_pem(&pgdata).unwrap();
        let fp = ca_fingerprint(&pgdata).unwrap();
        let chain = std::fs::read(server_cert_path(&pgdata)).unwrap();
        let certs = pem::parse_many(&chain).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(
            pgpilot_proto::credential::sha256_hex(certs[1].contents()),
            fp
        );
        assert_eq!(fingerprint_of(&ca).unwrap(), fp);
        // A second run keeps the same CA.
        generate(&pgdata, &["other".into()]).unwrap();
        assert_eq!(ca_fingerprint(&pgdata).unwrap(), fp);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server_key_path(&pgdata))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn supplied_files_are_checked_and_the_chain_completed() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made");
        generate(&made, &["db1".into()]).unwrap();
        let chain = std::fs::read_to_string(server_cert_path(&made)).unwrap();
        let leaf_only = chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        let leaf = dir.path().join("leaf.pem");
        std::fs::write(&leaf, leaf_only).unwrap();
        let supplied = SuppliedCerts {
            ca_file: ca_path(&made),
            cert_file: leaf.clone(),
            key_file: server_key_path(&made),
        };
        let pgdata = dir.path().join("m");
        import(&pgdata, &supplied).unwrap();
        assert_eq!(
            std::fs::read_to_string(server_cert_path(&pgdata))
                .unwrap()
                .matches("BEGIN CERTIFICATE")
                .count(),
            2
        );
        let wrong = SuppliedCerts {
            key_file: leaf,
            ..supplied
        };
        let e = import(&dir.path().join("m2"), &wrong).unwrap_err();
        assert!(format!("{e:#}").contains("--server-key"), "{e:#}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        generate(&one, &["db1".into()]).unwrap();
        generate(&two, &["db1".into()]).unwrap();
        let mixed = SuppliedCerts {
            ca_file: ca_path(&one),
            cert_file: server_cert_path(&one),
            key_file: server_key_path(&two),
        };
        let pgdata = dir.path().join("m");
        let e = format!("{:#}", import(&pgdata, &mixed).unwrap_err());
        assert!(e.contains("does not match"), "{e}");
        assert!(e.contains(&mixed.cert_file.display().to_string()), "{e}");
        assert!(e.contains(&mixed.key_file.display().to_string()), "{e}");
        assert!(e.contains("openssl"), "the fix: {e}");
        assert!(!server_key_path(&pgdata).exists(), "nothing installed");
        // Its own key passes.
        let own = SuppliedCerts {
            key_file: server_key_path(&one),
            ..mixed
        };
        import(&pgdata, &own).unwrap();
    }
}
