//! How a new node learns the monitor's CA from nothing but the join
//! token's fingerprint (as kubeadm's discovery hash does): one TLS
//! handshake that sends no data, whose certificate chain must hold a
//! certificate with exactly that SHA-256. Only then is that certificate
//! trusted, and every later connection verifies the monitor against it.
//!
//! The handshake itself checks nothing: what it yields is only trusted by
//! its digest, which an attacker cannot forge. It carries no credential.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use crate::credential::sha256_hex;

/// Bounds the whole fetch: connecting and the handshake.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{uri:?} is not an https://HOST:PORT monitor URI")]
    BadUri { uri: String },
    #[error("cannot fetch the monitor's certificates from {uri}: {detail}")]
    Unreachable { uri: String, detail: String },
    #[error(
        "the server at {uri} did not present the CA of the join token (sha256 {want}): it is \
         not that monitor, or the monitor's CA was replaced; ask its operator for a current \
         token (`pgpilot show join-token --pgdata MONITOR_DIR`) or pass --ca-file"
    )]
    NoMatch { uri: String, want: String },
}

/// The PEM of the certificate with SHA-256 `ca_sha256` that the monitor at
/// `uri` presents in its chain.
pub async fn fetch_ca(uri: &str, ca_sha256: &str) -> Result<Vec<u8>, DiscoverError> {
    let bad = || DiscoverError::BadUri { uri: uri.into() };
    let authority = uri.strip_prefix("https://").ok_or_else(bad)?;
    let authority = authority.split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let unreachable = |detail: String| DiscoverError::Unreachable {
        uri: uri.into(),
        detail,
    };
    let config = unverified_client_config();
    let name = ServerName::try_from(host.clone()).map_err(|_| bad())?;
    let chain = tokio::time::timeout(FETCH_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        Ok::<_, String>(
            conn.peer_certificates()
                .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    })
    .await
    .map_err(|_| unreachable(format!("no TLS handshake within {FETCH_TIMEOUT:?}")))?
    .map_err(unreachable)?;
    let want = ca_sha256.to_ascii_lowercase();
    chain
        .into_iter()
        .find(|der| sha256_hex(der) == want)
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der)).into_bytes())
        .ok_or(DiscoverError::NoMatch {
            uri: uri.into(),
            want,
        })
}

/// A TLS client configuration that accepts any server certificate, for
/// the two places that must talk TLS before they can know the peer's CA:
/// this fetch (its result is trusted only by its digest, see the module
/// comment) and the monitor's health probe of a node (it sends no secret
/// and learns only whether PostgreSQL answers). Handshake signatures are
/// still checked, so the peer holds the key of the certificate it
/// presented. Built once.
pub fn unverified_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyChain(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any chain; see [`unverified_client_config`].
#[derive(Debug)]
struct AnyChain(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
