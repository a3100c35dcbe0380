//! The restart budget: a PostgreSQL that keeps failing is reported down,
//! so that the monitor can fail over, instead of being restarted forever
//! while the node claims to be fine.

use std::collections::VecDeque;
use std::time::Duration;

use super::Mono;

/// PostgreSQL that fails (a failed start, or a death after a successful
/// one) this many times within [`RESTART_WINDOW`] is reported down (which
/// lets the monitor fail over) and restarted only every [`RESTART_BACKOFF`].
pub const RESTART_LIMIT: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
pub const RESTART_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub(super) struct Budget {
    /// When PostgreSQL failed, oldest first; only the window is kept.
    failures: VecDeque<Mono>,
}

impl Budget {
    fn in_window(&self, now: Mono) -> usize {
        self.failures
            .iter()
            .filter(|t| now.saturating_sub(**t) <= RESTART_WINDOW)
            .count()
    }

    /// The budget is spent: report PostgreSQL down while it does not run.
    pub(super) fn spent(&self, now: Mono) -> bool {
        self.in_window(now) >= RESTART_LIMIT
    }

    /// Whether a start may be tried now: always within the budget, then
    /// once every backoff after the last failure.
    pub(super) fn may_start(&self, now: Mono) -> bool {
        !self.spent(now)
            || self
                .failures
                .back()
                .is_none_or(|t| now >= *t + RESTART_BACKOFF)
    }

    /// Counts a failure; true when this one spent the budget.
    pub(super) fn failed(&mut self, now: Mono) -> bool {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > RESTART_WINDOW)
        {
            self.failures.pop_front();
        }
        let before = self.spent(now);
        self.failures.push_back(now);
        !before && self.spent(now)
    }
}
