//! The service manager's notification protocol (`sd_notify(3)`), for
//! `Type=notify` units: `READY=1` once the service serves, `STOPPING=1`
//! when it begins to shut down, `STATUS=` lines for `systemctl status`,
//! and `WATCHDOG=1` keep-alives when the unit sets `WatchdogSec=`.
//!
//! Every function does nothing when `NOTIFY_SOCKET` is unset (not started
//! by systemd), and a failed send is logged, never an error: the service
//! runs the same with or without a service manager listening.
//!
//! PostgreSQL never sees `NOTIFY_SOCKET`: [`crate::PgCommand`] clears the
//! environment, so a postgres built `--with-systemd` cannot announce
//! itself ready on pgpilot's behalf.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // `false`: keep NOTIFY_SOCKET set, later calls need it too.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("failed to notify the service manager: {e}");
    }
}

/// `READY=1` with a status line: the service is serving.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1` with a status line: shutdown has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A `STATUS=` line alone.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The unit's watchdog interval (`WATCHDOG_USEC`, for this process per
/// `WATCHDOG_PID`), read once through the crate.
pub fn watchdog_interval() -> Option<Duration> {
    static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();
    *INTERVAL.get_or_init(|| {
        let mut usec = 0;
        (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Duration::from_micros(usec))
    })
}

/// `WATCHDOG=1`, at most once per quarter of the watchdog interval (so a
/// loop that spins fast sends no flood; systemd's advice is at least one
/// keep-alive per half interval). Call it from the loop whose hang should
/// get the service killed, never from a timer of its own: a timer would
/// go on pinging while the loop hangs.
pub fn watchdog_ping() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    /// When the last keep-alive went: a plain mutex, held only to read
    /// and replace an `Instant`.
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < interval / 4) {
        return;
    }
    *last = Some(Instant::now());
    drop(last);
    send(&[NotifyState::Watchdog]);
}
