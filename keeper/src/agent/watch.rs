//! The Watch stream: wakes the loop as soon as the monitor commits an event
//! of this node's group, so that a goal change costs no poll interval.

use std::sync::Arc;
use std::time::Duration;

use pgpilot_proto::pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes the agent whenever an event of its group is committed; reconnects
/// after errors. Polling still runs, so a lost stream only costs latency.
pub(super) async fn watch_group(
    uri: String,
    auth: pgpilot_proto::client::ClientAuth,
    formation: String,
    group_id: i32,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        let stream = async {
            let mut client = pgpilot_proto::client::connect(&uri, &auth).await?;
            let mut stream = client
                .watch(pb::WatchRequest {
                    formation: formation.clone(),
                    group_id: Some(group_id),
                })
                .await?
                .into_inner();
            while let Some(_event) = stream.message().await? {
                wake.notify_one();
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = stream => if let Err(e) = r {
                tracing::debug!("watch stream ended: {e:#}");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
