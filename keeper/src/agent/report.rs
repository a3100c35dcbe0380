//! Observing the local PostgreSQL and reporting to the monitor. Both are
//! bounded: the report renews the lease, so neither a stuck PostgreSQL nor
//! a slow monitor may hold the loop past it.

use std::time::Duration;

use pgpilot_pgproc::controldata;
use pgpilot_proto::pb;

use super::Agent;
use crate::clock;
use crate::engine::{Mono, Observation, PgStatus};
use crate::pg::sql;

/// How long reading PostgreSQL's status may take (connect included). A
/// round is the wait, this read and the report; with the defaults (1 s
/// poll, 0.8 s report timeout, 3 s lease) it must stay well under 1.2 s
/// for the lease to be renewed in time. A slower read is reported as
/// "status unknown", which the monitor does not count as an LSN.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

impl Agent {
    /// Step 1 of a round: what PostgreSQL looks like now, to the engine.
    pub(super) async fn observe(&mut self) {
        let has_pgdata = self.pg.has_pgdata();
        if self.system_identifier.is_none() && has_pgdata {
            match controldata(&self.pg.bin, &self.pg.runner, &self.pg.pgdata).await {
                Ok(c) => self.system_identifier = Some(c.system_identifier),
                Err(e) => tracing::warn!("failed to read pg_controldata: {e:#}"),
            }
        }
        let running = self.pg.is_running();
        self.note_deaths();
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
            },
        );
    }

    async fn read_status(&self) -> anyhow::Result<PgStatus> {
        let mut c = self.pg.connect().await?;
        sql::status(&mut c).await
    }

    /// NodeActive with the engine's report. Returns when it was sent (the
    /// lease counts from then) and the reply; `None` when the monitor
    /// could not be reached, refused, or did not answer in time.
    pub(super) async fn report(&mut self) -> Option<(Mono, pb::NodeActiveResponse)> {
        let sent_at = clock::now();
        let timeout = self.engine.report_timeout();
        let mut request = tonic::Request::new(self.engine.request(sent_at));
        request.set_timeout(timeout);
        let result = tokio::time::timeout(timeout, self.client.node_active(request)).await;
        match result {
            Ok(Ok(reply)) => {
                if self.report_failures > 0 {
                    tracing::info!("the monitor answers again");
                }
                self.report_failures = 0;
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
        self.report_failures += 1;
        // Once, then every 30th attempt: a long outage must not flood the log.
        if self.report_failures == 1 || self.report_failures % 30 == 0 {
            tracing::warn!("{why} ({} failed report(s) in a row)", self.report_failures);
        }
    }
}
