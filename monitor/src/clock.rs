//! The monitor's clock.
//!
//! Silence, leases and stall clocks compare timestamps the monitor took
//! itself. They are wall-clock values (they are stored and shown), but
//! they advance with the monotonic clock: the wall clock is read once, at
//! the first call, and the monotonic time elapsed since is added to it. A
//! step of the system clock (NTP, an operator) therefore can neither open
//! the lease gate early (a jump forward would make every lease look
//! expired) nor stall failover (a jump back would make a dead primary look
//! as if it just reported). Across a monitor restart the stored times are
//! compared with the new process's clock only through `crate::live`,
//! which never lets a node look as if it reported before the start.

use std::sync::OnceLock;
use std::time::Instant;

use crate::fsm::Timestamp;

static ORIGIN: OnceLock<(Timestamp, Instant)> = OnceLock::new();

/// Now, on the monitor's monotonic timeline.
pub fn now() -> Timestamp {
    let (wall, mono) = *ORIGIN.get_or_init(|| (chrono::Utc::now(), Instant::now()));
    let elapsed = chrono::Duration::from_std(mono.elapsed()).unwrap_or(chrono::Duration::MAX);
    wall + elapsed
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_goes_back() {
        let a = super::now();
        let b = super::now();
        assert!(b >= a);
    }
}
