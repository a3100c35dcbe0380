//! A PostgreSQL this keeper process did not start: an earlier keeper of
//! the node started it, then died (SIGKILL, a panic, the OOM killer) or
//! exited alone to be upgraded, and PostgreSQL kept running. The new
//! keeper adopts it instead of restarting it (DESIGN.md §7, "Keeper
//! restarts"), and what is left to decide is when it must fence.
//!
//! A keeper process knows no lease at start: the lease counts from the
//! last report its *own* process sent, and a fresh engine has sent none.
//! For a PostgreSQL it has to start, that is simple: a writable node
//! starts nothing before its first reply (the monitor may have promoted
//! another node meanwhile). An adopted writable PostgreSQL is already
//! taking writes, and "no lease, so the deadline is past" would fence it
//! at once: every keeper restart would cost an immediate shutdown, a
//! crash recovery and the writes in between.
//!
//! So an adopting keeper gets one round to prove a lease: the fencing
//! deadline is [`Engine::adoption_window`] after the adoption (reading
//! PostgreSQL's status, then one report), and the first reply replaces it
//! with the lease as usual. When the monitor answers, which is the normal
//! restart, nothing is fenced and no write fails. When it does not, the
//! node fences at the end of that round, the watchdog included.
//!
//! What this does not cover, on purpose: the time no keeper ran. The old
//! keeper's lease may have ended while it was gone (and with it the
//! monitor's lease gate may have opened); nothing fenced the primary then,
//! and the new keeper cannot know the old lease (it was never persisted:
//! its instants are this boot's, and a state file written every second
//! would cost an fsync a second). What protects the group in that gap is
//! synchronous replication: the monitor fails over only from `primary`,
//! whose commits need a synchronous standby, and the standby it promotes
//! stopped streaming from the old primary first, so the old primary cannot
//! acknowledge a commit any more. The window adds at most one round to
//! that gap. Those who prefer fencing to availability set
//! `postgres_dies_with_keeper`, and there is then nothing to adopt.
//!
//! The window is not a lease: it starts no PostgreSQL (`should_start_pg`
//! wants a lease) and no fencing exemption (which starts only under a
//! valid lease), so a keeper that adopted a primary and cannot reach the
//! monitor fences even if every standby streams from it.

use std::time::Duration;

use super::{Engine, Mono, STATUS_TIMEOUT};

impl Engine {
    /// Before the first round: the driver found this node's PostgreSQL
    /// running, started by an earlier keeper process, and supervises it
    /// from now on (it is not restarted). Its settings are verified again
    /// in the next steady round. Call it before arming the watchdog with
    /// [`Engine::fence_deadline`].
    pub fn pg_adopted(&mut self, now: Mono) {
        self.obs.running = true;
        self.obs.shutdown_lsn = None;
        self.applied_role = None;
        self.adopted_at = Some(now);
    }

    /// How long an adopting keeper may take to prove a lease: a lease
    /// (the one it assumes before the monitor named one). That holds its
    /// status read and two reports, the first of which also connects to
    /// the monitor (a TLS handshake on a loaded machine): a keeper
    /// restarted beside a healthy primary must not fence it because one
    /// report was slow. It only adds to the gap no keeper ran, which
    /// synchronous replication covers (see the module doc).
    pub fn adoption_window(&self) -> Duration {
        self.lease.max(STATUS_TIMEOUT + self.report_timeout())
    }

    /// When the lease ends: one lease after the last report that got a
    /// reply was sent. Before any reply, at once (a lease never held has
    /// ended), or after the adoption window for an adopted PostgreSQL.
    pub(super) fn lease_end(&self) -> Mono {
        match (self.lease_start, self.adopted_at) {
            (Some(t), _) => t + self.lease,
            (None, Some(t)) => t + self.adoption_window(),
            (None, None) => Mono::ZERO,
        }
    }
}
