//! The one place a gRPC client of the monitor is built, for the CLI, the
//! keeper and tests alike: TLS (the monitor's CA) and the caller's
//! credential are set here.

use std::time::Duration;

use crate::pb::monitor_client::MonitorClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How long connecting may take before the monitor counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound on any single request (the keeper sets a tighter one per
/// request: its heartbeat must not outlive its lease).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A monitor client that sends its credential with every request.
pub type Client = MonitorClient<InterceptedService<Channel, Bearer>>;

/// How a client proves who it is and checks the monitor.
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// PEM of the CA that signed the monitor's certificate: required for
    /// an `https://` monitor.
    pub ca_pem: Option<Vec<u8>>,
    /// The token sent as `authorization: Bearer TOKEN` (see
    /// [`crate::credential`]); none sends no credential.
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "..."))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Adds the credential to every request that carries none of its own (a
/// caller acting with several credentials, such as a test driving
/// keepers by hand, sets one per request). The header value is marked
/// sensitive, so it is never printed by the HTTP stack either.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            if !req
                .metadata()
                .contains_key(crate::credential::AUTHORIZATION)
            {
                req.metadata_mut()
                    .insert(crate::credential::AUTHORIZATION, v.clone());
            }
        }
        Ok(req)
    }
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{uri:?} is not a monitor URI: expected https://HOST:PORT (or http://HOST:PORT for a monitor created with --no-ssl)")]
    BadUri { uri: String },
    #[error("{uri} uses TLS and no CA certificate was given to verify it: pass --ca-file FILE (the monitor's DIR.pgpilot/tls/ca.pem), or --pgdata DIR of the monitor or of a node")]
    NoCa { uri: String },
    #[error("the CA certificate given for {uri} is not a PEM certificate: {why}")]
    BadCa { uri: String, why: String },
    #[error("the credential cannot be sent: it holds characters a header cannot carry")]
    BadToken,
    #[error("cannot reach the monitor at {uri}: {detail}")]
    Unreachable { uri: String, detail: String },
}

/// An endpoint for `uri` with bounded connect and request times, TLS
/// when the URI is `https://`.
pub fn endpoint(uri: &str, auth: &ClientAuth) -> Result<Endpoint, ConnectError> {
    let bad = || ConnectError::BadUri { uri: uri.into() };
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        return Err(bad());
    }
    let mut ep = Endpoint::from_shared(uri.to_string())
        .map_err(|_| bad())?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if uri.starts_with("https://") {
        let ca = auth
            .ca_pem
            .as_ref()
            .ok_or_else(|| ConnectError::NoCa { uri: uri.into() })?;
        check_pem(ca).map_err(|why| ConnectError::BadCa {
            uri: uri.into(),
            why,
        })?;
        // Only the monitor's own CA is trusted, never the system's roots:
        // a certificate some public CA issued for the same name is not
        // the monitor.
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .timeout(CONNECT_TIMEOUT);
        ep = ep.tls_config(tls).map_err(|e| ConnectError::BadCa {
            uri: uri.into(),
            why: error_chain(&e),
        })?;
    }
    Ok(ep)
}

fn bearer(auth: &ClientAuth) -> Result<Bearer, ConnectError> {
    auth.token
        .as_deref()
        .map(header_value)
        .transpose()
        .map(Bearer)
}

/// The `authorization` value for `token`, marked sensitive.
pub fn header_value(token: &str) -> Result<AsciiMetadataValue, ConnectError> {
    let mut v: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| ConnectError::BadToken)?;
    v.set_sensitive(true);
    Ok(v)
}

/// `msg` as a request carrying `token` as its credential, whatever the
/// client's own.
pub fn with_credential<T>(msg: T, token: &str) -> Result<tonic::Request<T>, ConnectError> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(crate::credential::AUTHORIZATION, header_value(token)?);
    Ok(req)
}

/// Connects now: an unreachable monitor is an error, never a hang.
pub async fn connect(uri: &str, auth: &ClientAuth) -> Result<Client, ConnectError> {
    let bearer = bearer(auth)?;
    let channel = endpoint(uri, auth)?
        .connect()
        .await
        .map_err(|e| ConnectError::Unreachable {
            uri: uri.into(),
            detail: explain(uri, &error_chain(&e)),
        })?;
    Ok(MonitorClient::with_interceptor(channel, bearer))
}

/// A client that connects on first use and reconnects after failures: what
/// a long-running keeper wants.
pub fn connect_lazy(uri: &str, auth: &ClientAuth) -> Result<Client, ConnectError> {
    let bearer = bearer(auth)?;
    Ok(MonitorClient::with_interceptor(
        endpoint(uri, auth)?.connect_lazy(),
        bearer,
    ))
}

/// A status as the user should read it: its message, with a hint where
/// the message alone leaves them guessing (a TLS mismatch surfaces as a
/// transport error on the first request); the message alone otherwise.
pub fn explain_status(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    if let Some(source) = std::error::Error::source(status) {
        text = format!("{text}: {}", error_chain(source));
    }
    match hint(None, &text) {
        Some(h) => format!("{text}; {h}"),
        None => status.message().to_string(),
    }
}

/// `e` and its sources, joined: tonic's own message is only "transport
/// error", the reason is in the chain.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Adds what to do to a connection failure whose cause the user cannot
/// be expected to decode.
fn explain(uri: &str, detail: &str) -> String {
    match hint(Some(uri), detail) {
        Some(h) => format!("{detail}; {h}"),
        None => format!(
            "{detail}; check that it runs (`pgpilot run --pgdata MONITOR_DIR`) and that this host may reach it"
        ),
    }
}

/// What to do about a connection failure, where it can be told; `uri`
/// when known (its scheme tells which mismatch it is).
fn hint(uri: Option<&str>, detail: &str) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase();
    let https = uri.is_none_or(|u| u.starts_with("https://"));
    let http = uri.is_none_or(|u| u.starts_with("http://"));
    if d.contains("notvalidforname") || d.contains("not valid for name") {
        Some(
            "the monitor's certificate does not name the host in this URI: use a host name the \
             certificate holds (create monitor --hostname), or give that monitor's own CA",
        )
    } else if d.contains("unknownissuer")
        || d.contains("unknown issuer")
        || d.contains("badsignature")
        || d.contains("invalid peer certificate")
    {
        Some(
            "the monitor's certificate is not signed by the CA given: pass that monitor's CA \
             (--ca-file, or --pgdata of its directory or of one of its nodes)",
        )
    } else if https && (d.contains("corrupt message") || d.contains("invalidcontenttype")) {
        Some("the monitor does not speak TLS (created with --no-ssl?): its URI starts with http://")
    } else if http
        && (d.contains("h2 protocol error")
            || d.contains("frame")
            || d.contains("connection reset")
            || d.contains("broken pipe")
            || d.contains("connection closed")
            || d.contains("operation was canceled"))
    {
        Some("the monitor may require TLS: its URI starts with https:// (see `pgpilot show uri`)")
    } else {
        None
    }
}

/// Whether `pem` holds at least one certificate.
pub fn check_pem(pem: &[u8]) -> Result<(), String> {
    let certs = pem::parse_many(pem).map_err(|e| e.to_string())?;
    if certs.iter().any(|c| c.tag() == "CERTIFICATE") {
        Ok(())
    } else {
        Err("no CERTIFICATE block in it".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_needs_a_ca_and_uris_are_checked() {
        let none = ClientAuth::default();
        assert!(matches!(
            endpoint("https://127.0.0.1:1", &none),
            Err(ConnectError::NoCa { .. })
        ));
        assert!(matches!(
            endpoint("127.0.0.1:1", &none),
            Err(ConnectError::BadUri { .. })
        ));
        let bad_ca = ClientAuth {
            ca_pem: Some(b"not pem".to_vec()),
            token: None,
        };
        assert!(matches!(
            endpoint("https://127.0.0.1:1", &bad_ca),
            Err(ConnectError::BadCa { .. })
        ));
        assert!(endpoint("http://127.0.0.1:1", &none).is_ok());
    }

    #[test]
    fn the_token_is_never_printed() {
        let auth = ClientAuth {
            ca_pem: None,
            token: Some("PGO1.secretsecret".into()),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
