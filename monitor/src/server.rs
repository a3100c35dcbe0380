//! Wiring of a running monitor: gRPC server, `/metrics`, prober, ordered
//! shutdown.

use crate::auth::AuthLayer;
use crate::conn_limit::{incoming, MAX_CONNECTIONS};
use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pgpilot_proto::pb::monitor_server::MonitorServer;
use pgpilot_proto::HttpListen;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::Control;
use crate::health::run_prober;
use crate::rpc::MonitorService;

/// How long a client may take to finish its TLS handshake: a connection
/// that never does holds one of the bounded connections only this long.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The largest request the monitor decodes. Its requests are a few
/// hundred bytes; anything near this is hostile or broken.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Requests in flight on one connection: a keeper needs one or two.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// How long in-flight RPCs get to finish once shutdown starts.
const RPC_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the `/metrics` listener, or `None` when `http_listen` is off.
/// Done before serving, so that a taken port is refused at start with the
/// setting to change.
pub async fn bind_http(listen: &HttpListen) -> anyhow::Result<Option<TcpListener>> {
    let Some((host, port)) = listen.addr() else {
        return Ok(None);
    };
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| {
            format!(
                "listen for HTTP on {listen} (http_listen in monitor.toml, --http-listen of create \
                 monitor): choose a free address, or set http_listen = \"off\""
            )
        })?;
    Ok(Some(listener))
}

/// Serves `/metrics` until `cancel` fires.
async fn serve_http(control: Control, listener: TcpListener, cancel: CancellationToken) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(%addr, "monitor serving HTTP (/metrics)");
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(control);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!("failed to serve HTTP: {e:#}");
    }
}

async fn scrape(State(control): State<Control>) -> Response {
    match control.metrics_text(crate::clock::now()).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!("failed to read the store for /metrics: {e:#}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the monitor's store: {e:#}\n"),
            )
                .into_response()
        }
    }
}

/// Serves the API on `listener` (and `/metrics` on `http`) and runs the
/// prober until `cancel` fires; then stops accepting RPCs, lets in-flight
/// ones finish (bounded), and stops the prober and `/metrics`. The caller
/// stops the database afterwards.
pub async fn serve(
    control: Control,
    listener: TcpListener,
    tls: Option<tonic::transport::Identity>,
    http: Option<TcpListener>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let prober_cancel = cancel.child_token();
    tracker.spawn(run_prober(control.clone(), prober_cancel.clone()));
    if let Some(http) = http {
        tracker.spawn(serve_http(control.clone(), http, prober_cancel.clone()));
    }

    let addr = listener.local_addr().context("read the listen address")?;
    tracing::info!(%addr, uri = %control.monitor_uri, "monitor serving gRPC");
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        // Dead peers are noticed and their connection (and permit) freed.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)));
    if let Some(identity) = tls {
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(TLS_HANDSHAKE_TIMEOUT),
            )
            .context("load the monitor's TLS certificate and key (DIR.pgpilot/tls/)")?;
    }
    let gate = Arc::new(crate::conn_limit::Gate::default());
    let auth = AuthLayer::new(control.keys.clone(), control.metrics.clone(), gate.clone());
    let service = MonitorServer::new(MonitorService::new(control))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let server = builder
        .layer(auth)
        .add_service(service)
        .serve_with_incoming_shutdown(
            incoming(listener, MAX_CONNECTIONS, gate),
            cancel.clone().cancelled_owned(),
        );
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        _ = async { cancel.cancelled().await; tokio::time::sleep(RPC_DRAIN_TIMEOUT).await } => {
            tracing::warn!("in-flight RPCs did not finish within {RPC_DRAIN_TIMEOUT:?}; stopping anyway");
            Ok(())
        }
    };
    prober_cancel.cancel();
    tracker.close();
    tracker.wait().await;
    served.context("serve gRPC")
}
