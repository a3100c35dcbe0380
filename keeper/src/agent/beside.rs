//! The heartbeat beside a step ("Never stuck", dead end 6). A step may run
//! for hours (pg_basebackup of a big database, pg_rewind, crash recovery
//! in a start); the keeper reports meanwhile as it always does, so the
//! monitor keeps hearing it: a silent quorum standby blocks automatic
//! failover, and a writable node that cannot renew its lease is fenced.
//!
//! A step and the heartbeat are two futures in one `select!` of the
//! agent's task, over disjoint parts of the agent: the step holds the
//! PostgreSQL handle and the configuration ([`step_io`]), the heartbeat
//! the engine, the monitor link, the [`Probe`] and the watchdog's arm
//! ([`Beat`]). No lock is shared, and the engine is touched only between
//! two awaits, by one of them. What a reply asks is the engine's to say
//! ([`Engine::on_reply_beside`]); it never starts other steps.
//!
//! A step is cut short by dropping its future, which is safe at any await:
//! pg_basebackup and pg_rewind run with kill-on-drop (a killed copy leaves
//! `clone.partial`, redone on the next attempt; a killed rewind falls back
//! to a copy), a PostgreSQL being started is stopped by its handle's drop,
//! SQL connections just close. Every step is idempotent and the state is
//! persisted only once all steps succeeded, so a cut-short transition is
//! simply run again.

use std::path::Path;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::report::{observe_beside, Link};
use super::{watchdog, Agent, Published};
use crate::clock;
use crate::engine::{Beside, Engine};
use crate::pg::Probe;

/// Why the steps under way were dropped.
#[derive(Debug)]
pub(super) enum Cut {
    /// SIGTERM (or Ctrl-C): the loop returns, PostgreSQL is stopped.
    Cancelled,
    /// The engine said the steps follow a node that is no longer the
    /// primary ([`Beside::Abandon`]).
    Abandoned(String),
    /// The engine said fence: the lease ran out, or the goal of a
    /// writable node moved on ([`Beside::Fence`]).
    Fence(String),
    /// Not a cut: the monitor confirmed an announced start
    /// ([`crate::plan::Step::Announce`]), the steps go on.
    Confirmed,
}

/// The heartbeat's share of the agent while a step runs.
pub(super) struct Beat<'a> {
    pub(super) engine: &'a mut Engine,
    pub(super) link: &'a mut Link,
    pub(super) probe: &'a Probe,
    pub(super) fence: &'a watchdog::Arm,
    pub(super) published: &'a Published,
    pub(super) wake: &'a Notify,
    pub(super) pgdata: &'a Path,
    pub(super) system_identifier: Option<u64>,
    pub(super) noted: &'a mut String,
}

impl Beat<'_> {
    /// Reports every poll interval (counted from the last report, also the
    /// one before the step) until the engine says the step must be cut
    /// short. Runs until dropped otherwise.
    pub(super) async fn run(self) -> Cut {
        loop {
            let wait = self.engine.beat_wait(clock::now(), self.link.last_sent);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A goal change cannot be taken now, but a writable node
                // learns sooner that it must fence.
                _ = self.wake.notified() => {}
            }
            // A step may take hours (a copy): the heartbeat beside it is
            // the loop's task too, so it keeps systemd's watchdog fed.
            pgpilot_pgproc::systemd::watchdog_ping();
            let obs = observe_beside(self.probe, self.system_identifier).await;
            self.engine.observe(clock::now(), obs);
            let verdict = match self.link.report(self.engine).await {
                Some((sent_at, reply)) => self.engine.on_reply_beside(sent_at, clock::now(), reply),
                None if self.engine.on_no_reply(clock::now()) => Beside::Fence(format!(
                    "fencing: lease of {} ms expired without a word from the monitor while a step \
                     ran; stopping PostgreSQL so that no write is acknowledged while another node \
                     may be promoted",
                    self.engine.lease().as_millis()
                )),
                None => Beside::Continue,
            };
            // The watchdog keeps the engine's deadline whatever the step
            // does meanwhile.
            self.fence.set(self.engine.fence_deadline());
            self.published.publish(self.engine);
            // Nothing beside the steps changes the state; if the engine
            // ever says otherwise, it is written before the next report.
            if self.engine.needs_save() {
                match self.engine.state().save(self.pgdata) {
                    Ok(()) => self.engine.saved(),
                    Err(e) => tracing::error!("failed to {e:#}"),
                }
            }
            match verdict {
                Beside::Continue => {}
                Beside::Deferred(why) | Beside::Ignore(why) => {
                    if *self.noted != why {
                        tracing::info!("{why}");
                        *self.noted = why;
                    }
                }
                Beside::Abandon(why) => return Cut::Abandoned(why),
                Beside::Fence(why) => return Cut::Fence(why),
            }
            if self.engine.announce_confirmed() {
                return Cut::Confirmed;
            }
        }
    }
}

impl Agent {
    /// Takes the consequences of steps cut short. Returns whether to run
    /// the next round at once.
    pub(super) async fn cut_short(&mut self, cut: Cut) -> anyhow::Result<bool> {
        match cut {
            Cut::Cancelled => {
                tracing::info!(
                    "stopping: the steps under way were interrupted and run again next time"
                );
                self.engine.steps_ended();
                Ok(false)
            }
            Cut::Abandoned(why) => {
                tracing::warn!("{why}");
                self.engine.transition_failed(why);
                Ok(true)
            }
            // Handled where the announcement runs; never a cut.
            Cut::Confirmed => Ok(true),
            Cut::Fence(why) => {
                tracing::error!("{why}");
                self.engine.steps_ended();
                if self.engine.state().current.accepts_writes() {
                    self.fence_now().await?;
                }
                Ok(false)
            }
        }
    }
}

/// Runs `work` (one step's I/O) beside the heartbeat; `None` when it was
/// cut short (see [`Cut`]).
pub(super) async fn beside<T>(
    work: impl std::future::Future<Output = T>,
    beat: Beat<'_>,
    cancel: &CancellationToken,
) -> Result<T, Cut> {
    // Biased: a step that finished keeps its result even if the heartbeat
    // or a signal is ready in the same poll.
    tokio::select! {
        biased;
        r = work => Ok(r),
        _ = cancel.cancelled() => Err(Cut::Cancelled),
        cut = beat.run() => Err(cut),
    }
}
