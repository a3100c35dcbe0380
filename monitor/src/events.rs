//! Committed events, pushed to Watch streams.

use pgpilot_proto::pb;
use tokio::sync::broadcast;

/// How many events a slow Watch subscriber may fall behind before it skips
/// some. Keepers poll every interval anyway, so a skipped wake-up costs at
/// most one poll interval; the bound keeps a stuck client from holding
/// memory.
const BUS_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<pb::Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Publishes events of a committed transaction, in order.
    pub fn publish(&self, events: Vec<pb::Event>) {
        for e in events {
            // No subscriber is not an error.
            let _ = self.tx.send(e);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<pb::Event> {
        self.tx.subscribe()
    }
}
