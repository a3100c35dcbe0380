//! The keeper's one clock, for the engine's `now` and the fencing watchdog.
//!
//! CLOCK_BOOTTIME, not `Instant` (CLOCK_MONOTONIC): BOOTTIME keeps counting
//! while the machine is suspended. A primary whose VM was paused for a
//! minute must see its lease as expired on resume (the monitor has been
//! counting all along and may have promoted another node); with
//! CLOCK_MONOTONIC the pause would not count and the old primary would
//! keep acknowledging writes as if its lease were still valid.

use nix::time::{clock_gettime, ClockId};

use crate::engine::Mono;

/// Now, as time since boot.
pub fn now() -> Mono {
    // clock_gettime(CLOCK_BOOTTIME) cannot fail on Linux >= 2.6.39 with a
    // valid timespec; should it ever, fall back to the monotonic clock's
    // idea of time rather than panic inside the fencing path.
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => Mono::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
        Err(_) => match clock_gettime(ClockId::CLOCK_MONOTONIC) {
            Ok(ts) => Mono::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
            Err(e) => panic!("no monotonic clock: {e}"),
        },
    }
}
