//! Observing the local PostgreSQL and reporting to the monitor. Both are
//! bounded: the report renews the lease, so neither a stuck PostgreSQL nor
//! a slow monitor may hold the loop past it.

use std::sync::Arc;
use std::time::Instant;

use pgpilot_pgproc::controldata;
use pgpilot_proto::{pb, Lsn};

use super::Agent;
use crate::clock;
use crate::engine::{Engine, Mono, Observation, PgStatus, STATUS_TIMEOUT};
use crate::metrics::{Metrics, Outcome};
use crate::pg::{sql, Probe};

impl Agent {
    /// Step 1 of a round: what PostgreSQL looks like now, to the engine.
    pub(super) async fn observe(&mut self) {
        let has_pgdata = self.pg.has_pgdata();
        let running = self.pg.is_running();
        self.note_deaths();
        // pg_control says how PostgreSQL last stopped only while no
        // postmaster runs (a running primary's says "in production"), and
        // nothing else starts ours in between: this task is the only one
        // that starts it.
        let mut shutdown_lsn = None;
        if has_pgdata && (self.system_identifier.is_none() || !running) {
            match controldata(&self.pg.bin, &self.pg.runner, &self.pg.pgdata).await {
                Ok(c) => {
                    self.system_identifier = Some(c.system_identifier);
                    if !running && c.shut_down_cleanly() {
                        shutdown_lsn = parse_shutdown_lsn(&c.checkpoint_lsn);
                    }
                }
                Err(e) => tracing::warn!("failed to read pg_controldata: {e:#}"),
            }
        }
        let status = if running {
            match tokio::time::timeout(STATUS_TIMEOUT, self.read_status()).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::warn!("cannot read PostgreSQL's status: {e:#}");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        "cannot read PostgreSQL's status: no answer within {} ms",
                        STATUS_TIMEOUT.as_millis()
                    );
                    None
                }
            }
        } else {
            None
        };
        self.engine.observe(
            clock::now(),
            Observation {
                has_pgdata,
                running,
                status,
                system_identifier: self.system_identifier,
                rewind_interrupted: crate::files::rewind_marker(&self.config.pgdata).exists(),
                shutdown_lsn,
            },
        );
        // An observation moves the fencing deadline (the exemption
        // "every other node streams from me" is renewed or ends): hand it
        // to the watchdog now, not after the report that follows, which
        // may take the whole report timeout when the monitor is cut off
        // (packets dropped, no refusal). Armed only after the report, the
        // watchdog fenced a primary whose standby streamed from it all
        // along, the lease having run out during that report (fault
        // suite, scenario d).
        self.arm();
    }

    async fn read_status(&self) -> anyhow::Result<PgStatus> {
        let mut c = self.pg.connect().await?;
        sql::status(&mut c).await
    }

    /// NodeActive with the engine's report (see [`Link::report`]).
    pub(super) async fn report(&mut self) -> Option<(Mono, pb::NodeActiveResponse)> {
        self.link.report(&self.engine).await
    }
}

/// What PostgreSQL looks like, read through the [`Probe`] while a step
/// holds the node's PostgreSQL handle: running is what postmaster.pid
/// says, the status is read as in [`Agent::observe`] (bounded the same
/// way), the system identifier is the one already known (pg_control may
/// be half-written by the step: a copy or a rewind).
pub(super) async fn observe_beside(probe: &Probe, system_identifier: Option<u64>) -> Observation {
    let has_pgdata = probe.has_pgdata();
    let running = has_pgdata && probe.is_running();
    let status = if running {
        let read = async {
            let mut c = probe.connect().await?;
            sql::status(&mut c).await
        };
        match tokio::time::timeout(STATUS_TIMEOUT, read).await {
            Ok(Ok(s)) => Some(s),
            // Starting (crash recovery), or stopping: "unknown", which is
            // what the report must say then. Not worth a warning every
            // second of a long start.
            Ok(Err(e)) => {
                tracing::debug!("cannot read PostgreSQL's status: {e:#}");
                None
            }
            Err(_) => None,
        }
    } else {
        None
    };
    Observation {
        has_pgdata,
        running,
        status,
        system_identifier,
        // Not while a step runs: it may be the rewind itself.
        rewind_interrupted: false,
        // Not while a step runs either: pg_control may be half-written by
        // it (a copy, a rewind), and the monitor waits for a shutdown LSN
        // only after the stop step ended, when the loop observes again.
        shutdown_lsn: None,
    }
}

/// The shutdown checkpoint's location, as pg_controldata prints it.
///
/// What the monitor may rely on (PostgreSQL's postmaster.c shutdown
/// sequence and walsender.c, `WalSndDone`): a fast shutdown of a primary
/// first ends every client backend; the checkpointer then writes the
/// shutdown checkpoint (the last WAL record), marks pg_control "shut down"
/// and exits; only then does the postmaster tell the walsenders to finish
/// (SIGUSR2). Each walsender streaming to a standby sends all remaining
/// WAL, the shutdown checkpoint included, and exits only once that standby
/// confirmed it flushed (or, without a flush position, wrote) everything
/// sent. The postmaster exits after its walsenders, and the keeper reads
/// pg_control only once the postmaster is gone. So when a keeper reports
/// a shutdown LSN, every standby that was streaming when the shutdown
/// began and stayed connected has flushed WAL past it: it holds every
/// commit the primary ever acknowledged and can be promoted without loss.
///
/// What it may not rely on: that any given standby got it. A walsender
/// whose standby stops replying is ended by wal_sender_timeout, one whose
/// connection breaks just ends, and the shutdown still completes cleanly;
/// a standby that was not connected gets nothing. The monitor must
/// therefore compare: promote the candidate only once it reports an LSN
/// at or past this one (a standby reports what its WAL receiver flushed).
/// The location is the *start* of the checkpoint record and every commit
/// lies before it, so a standby at exactly it lacks only the checkpoint
/// record itself, which holds no commit.
fn parse_shutdown_lsn(text: &str) -> Option<Lsn> {
    match text.parse() {
        Ok(lsn) => Some(lsn),
        Err(e) => {
            tracing::warn!(
                "pg_controldata printed a checkpoint location {text:?} we cannot read: {e}"
            );
            None
        }
    }
}

/// The keeper's side of the monitor: the gRPC client and how reports went.
pub(super) struct Link {
    client: pgpilot_proto::client::Client,
    failures: u32,
    /// When the last report was sent, answered or not: the heartbeat
    /// beside long steps counts its interval from there.
    pub(super) last_sent: Option<Mono>,
    metrics: Arc<Metrics>,
}

impl Link {
    pub(super) fn new(client: pgpilot_proto::client::Client, metrics: Arc<Metrics>) -> Link {
        Link {
            client,
            failures: 0,
            last_sent: None,
            metrics,
        }
    }

    /// NodeActive with the engine's report. Returns when it was sent (the
    /// lease counts from then) and the reply; `None` when the monitor
    /// could not be reached, refused, or did not answer in time.
    pub(super) async fn report(
        &mut self,
        engine: &Engine,
    ) -> Option<(Mono, pb::NodeActiveResponse)> {
        let sent_at = clock::now();
        self.last_sent = Some(sent_at);
        let timeout = engine.report_timeout_at(sent_at);
        let mut request = tonic::Request::new(engine.request(sent_at));
        request.set_timeout(timeout);
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.client.node_active(request)).await;
        let outcome = match &result {
            Ok(Ok(_)) => Outcome::Ok,
            Ok(Err(_)) => Outcome::Refused,
            Err(_) => Outcome::Timeout,
        };
        self.metrics.node_active(outcome, started.elapsed());
        match result {
            Ok(Ok(reply)) => {
                if self.failures > 0 {
                    tracing::info!("the monitor answers again");
                }
                self.failures = 0;
                Some((sent_at, reply.into_inner()))
            }
            Ok(Err(status)) => {
                self.report_failed(format!(
                    "the monitor refused the report: {}",
                    status.message()
                ));
                None
            }
            Err(_) => {
                self.report_failed(format!(
                    "the monitor did not answer within {} ms",
                    timeout.as_millis()
                ));
                None
            }
        }
    }

    fn report_failed(&mut self, why: String) {
        self.failures += 1;
        // Once, then every 30th attempt: a long outage must not flood the log.
        if self.failures == 1 || self.failures % 30 == 0 {
            tracing::warn!("{why} ({} failed report(s) in a row)", self.failures);
        }
    }
}
