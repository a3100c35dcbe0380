//! The one place a gRPC client of the monitor is built, for the CLI, the
//! keeper and tests alike, so TLS and authentication can be added in one
//! place later.

use std::time::Duration;

use crate::pb::monitor_client::MonitorClient;
use tonic::transport::{Channel, Endpoint};

/// How long connecting may take before the monitor counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound on any single request (the keeper sets a tighter one per
/// request: its heartbeat must not outlive its lease).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{uri:?} is not a monitor URI: expected http://HOST:PORT")]
    BadUri { uri: String },
    #[error("cannot reach the monitor at {uri}: {source}; check that it runs (`pgpilot run --pgdata MONITOR_DIR`) and that this host may reach it")]
    Unreachable {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// An endpoint for `uri` with bounded connect and request times.
pub fn endpoint(uri: &str) -> Result<Endpoint, ConnectError> {
    Ok(Endpoint::from_shared(uri.to_string())
        .map_err(|_| ConnectError::BadUri { uri: uri.into() })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT))
}

/// Connects now: an unreachable monitor is an error, never a hang.
pub async fn connect(uri: &str) -> Result<MonitorClient<Channel>, ConnectError> {
    let channel = endpoint(uri)?
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            uri: uri.into(),
            source,
        })?;
    Ok(MonitorClient::new(channel))
}

/// A client that connects on first use and reconnects after failures: what
/// a long-running keeper wants.
pub fn connect_lazy(uri: &str) -> Result<MonitorClient<Channel>, ConnectError> {
    Ok(MonitorClient::new(endpoint(uri)?.connect_lazy()))
}
