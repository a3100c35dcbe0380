//! Wiring of a running monitor: gRPC server, prober, ordered shutdown.

use anyhow::Context;
use pgpilot_proto::pb::monitor_server::MonitorServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::Control;
use crate::health::run_prober;
use crate::rpc::MonitorService;

/// How long in-flight RPCs get to finish once shutdown starts.
const RPC_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the API on `listener` and runs the prober until `cancel` fires;
/// then stops accepting RPCs, lets in-flight ones finish (bounded), and
/// stops the prober. The caller stops the database afterwards.
pub async fn serve(
    control: Control,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let prober_cancel = cancel.child_token();
    tracker.spawn(run_prober(control.clone(), prober_cancel.clone()));

    let addr = listener.local_addr().context("read the listen address")?;
    tracing::info!(%addr, uri = %control.monitor_uri, "monitor serving gRPC");
    let server = tonic::transport::Server::builder()
        .add_service(MonitorServer::new(MonitorService::new(control)))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
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
