//! One health probe: a real PostgreSQL connection handshake.
//!
//! Like `pg_isready` (libpq's PQping), the probe sends a StartupMessage and
//! reads the server's first answer. An authentication request or an
//! authentication error both prove that the postmaster accepts connections
//! and forks backends; "the database system is starting up / shutting down"
//! (SQLSTATE 57P03) and every connection failure do not. No credentials are
//! needed, so the probe works before any monitor role exists on the node.
//!
//! The probe asks for SSL first (SSLRequest), as libpq's sslmode=require
//! does: the keepers' pg_hba.conf admits the probe user over SSL only,
//! and refuses it in plain text. The server's certificate is not checked:
//! the probe sends no secret and learns only whether the server answers,
//! and the monitor knows no node's CA. A server that declines SSL (a node
//! from before SSL was on) is probed in plain text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// What one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The server answered the startup packet as a running server does.
    Accepting,
    /// The server answered but does not accept connections (57P03).
    Rejecting(String),
    /// No answer: refused, unreachable, timed out, or garbage.
    NoResponse(String),
}

impl ProbeOutcome {
    /// The `outcome` label of `pgpilot_probe_duration_seconds`.
    pub fn label(&self) -> &'static str {
        match self {
            ProbeOutcome::Accepting => "accepting",
            ProbeOutcome::Rejecting(_) => "rejecting",
            ProbeOutcome::NoResponse(_) => "no_response",
        }
    }
}

/// Probes `host:port` once, giving up after `timeout`.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    match tokio::time::timeout(timeout, handshake(host, port)).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::NoResponse(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// [`probe`], and how long the attempt took (the probe latency metric).
pub async fn timed_probe(host: &str, port: u16, timeout: Duration) -> (ProbeOutcome, Duration) {
    let started = Instant::now();
    let outcome = probe(host, port, timeout).await;
    (outcome, started.elapsed())
}

async fn handshake(host: &str, port: u16) -> ProbeOutcome {
    let mut stream = match TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return ProbeOutcome::NoResponse(e.to_string()),
    };
    if let Err(e) = stream.write_all(&SSL_REQUEST).await {
        return ProbeOutcome::NoResponse(format!("send SSL request: {e}"));
    }
    let mut answer = [0u8; 1];
    if let Err(e) = stream.read_exact(&mut answer).await {
        return ProbeOutcome::NoResponse(format!("read the answer to the SSL request: {e}"));
    }
    match answer[0] {
        b'S' => {
            let name = match rustls::pki_types::ServerName::try_from(host.to_string()) {
                Ok(n) => n,
                Err(e) => return ProbeOutcome::NoResponse(format!("host {host:?}: {e}")),
            };
            let connector = tokio_rustls::TlsConnector::from(tls_config());
            let mut tls = match connector.connect(name, stream).await {
                Ok(t) => t,
                Err(e) => return ProbeOutcome::NoResponse(format!("SSL handshake: {e}")),
            };
            let outcome = startup(&mut tls).await;
            // close_notify, then hang up: PostgreSQL takes it as a client
            // that gave up at the password prompt and logs nothing (an EOF
            // without it is an SSL error it would log every probe).
            let _ = tls.shutdown().await;
            outcome
        }
        b'N' => startup(&mut stream).await,
        other => ProbeOutcome::NoResponse(format!(
            "unexpected answer byte {other:#04x} to the SSL request: not PostgreSQL?"
        )),
    }
}

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Sends the startup packet and reads the server's first answer.
async fn startup<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> ProbeOutcome {
    if let Err(e) = stream.write_all(&startup_message()).await {
        return ProbeOutcome::NoResponse(format!("send startup packet: {e}"));
    }
    let mut tag = [0u8; 1];
    if let Err(e) = stream.read_exact(&mut tag).await {
        return ProbeOutcome::NoResponse(format!("read the server's answer: {e}"));
    }
    // Then just hang up. Mid-authentication, PostgreSQL treats EOF as a
    // client that gave up on a password prompt and logs nothing, while a
    // Terminate message there logs "expected SASL response" every probe.
    // (The node's keeper gives the probe user a SCRAM line in pg_hba.conf
    // for this.)
    match tag[0] {
        b'R' => ProbeOutcome::Accepting,
        b'E' => match read_error(stream).await {
            Some((code, message)) if code == "57P03" => ProbeOutcome::Rejecting(message),
            Some(_) => ProbeOutcome::Accepting,
            None => ProbeOutcome::NoResponse("malformed error response".into()),
        },
        other => ProbeOutcome::NoResponse(format!(
            "unexpected answer byte {other:#04x}: not PostgreSQL?"
        )),
    }
}

/// The probe's TLS client: certificates not checked (see the module's
/// comment).
fn tls_config() -> Arc<rustls::ClientConfig> {
    pgpilot_proto::discover::unverified_client_config()
}

/// Protocol 3.0 StartupMessage for user `pgpilot_monitor`, database `postgres`.
fn startup_message() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes()); // 3.0
    for (k, v) in [
        ("user", "pgpilot_monitor"),
        ("database", "postgres"),
        ("application_name", "pgpilot_probe"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// Reads an ErrorResponse body: (SQLSTATE, message).
async fn read_error<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(String, String)> {
    let len = stream.read_u32().await.ok()? as usize;
    // Error responses are small; refuse anything absurd instead of
    // allocating what a garbage peer claims.
    if !(4..=64 * 1024).contains(&len) {
        return None;
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.ok()?;
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    (!code.is_empty()).then_some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timed_probe_says_how_long_it_waited() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (outcome, took) = timed_probe("127.0.0.1", port, Duration::from_millis(100)).await;
        assert_eq!(outcome.label(), "no_response");
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn closed_port_is_no_response() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let outcome = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert!(
            matches!(outcome, ProbeOutcome::NoResponse(_)),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let outcome = probe("127.0.0.1", port, Duration::from_millis(200)).await;
        assert_eq!(
            outcome,
            ProbeOutcome::NoResponse("no answer within 200 ms".into())
        );
    }
}
