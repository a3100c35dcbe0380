//! The split-brain checker: one task per node, each with its own
//! connection (the node's private Unix socket, as its superuser, so that
//! no partition between nodes cuts the checker off), tries a tiny commit
//! (`INSERT INTO checks`) every [`EVERY`] and records every one the node
//! acknowledged, with when it was sent and when the acknowledgement came.
//!
//! A commit is tried with the node's own settings (synchronous_commit on,
//! no statement_timeout): a commit that waits for a synchronous standby
//! waits as an application's would, and the task sends nothing more to
//! that node until it ends. No timeout cancels the wait on the server: a
//! cancelled wait for synchronous replication *acknowledges* the local
//! commit (with a WARNING), which would be a checker-made acknowledgement
//! of a commit that was never replicated.
//!
//! **Same moment.** Commit `x` on node X was acknowledged during
//! `[x.sent, x.acked]`: it became durable and visible at some instant of
//! that interval. Two nodes "acknowledge a commit at the same moment" when
//! an acknowledged commit of one has an interval that overlaps an
//! acknowledged commit's interval on the other: both may have been
//! writable at one instant. [`split_brain`] also rejects interleaving
//! writers: in acknowledgement order, the nodes that acknowledged must
//! form at most `writers` runs (A...A then B...B after one failover; A
//! again after B would be two nodes writable in turn without a failover
//! between).
//!
//! **Decided before, delivered late.** A commit of the old primary that
//! the final primary holds reached it by replication, so it was decided
//! before the final primary was promoted (once promoted, it takes nothing
//! from the old one), even when its acknowledgement arrived later: a
//! backend frozen between its standby's confirmation and its answer sends
//! that answer on resume, as a delayed packet would, and no HA system can
//! take a sent answer back. Such a commit is not a second writer; a commit
//! the old primary decided afterwards cannot be on the final primary, so
//! it still counts here (and as lost).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;

use crate::support::KeeperProc;

/// How often each node is tried.
pub const EVERY: Duration = Duration::from_millis(100);
pub const TABLE: &str = "checks";

#[derive(Clone, Debug)]
pub struct CheckAck {
    pub node: String,
    pub id: i64,
    pub sent: Instant,
    pub acked: Instant,
}

pub struct Checker {
    log: Arc<Mutex<Vec<CheckAck>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Creates the checker's table (on the primary, before any standby).
pub async fn prepare(primary: &KeeperProc) {
    primary
        .query(&format!(
            "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, node text NOT NULL)"
        ))
        .await
        .unwrap();
}

impl Checker {
    /// Tries each node every `every` ([`EVERY`] in the scenarios): a
    /// benchmark takes the time of a node's first commit from it, which is
    /// late by up to that much.
    pub fn start_every(nodes: &[&KeeperProc], every: Duration) -> Checker {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicI64::new(1));
        let tasks = nodes
            .iter()
            .map(|k| {
                let opts = sqlx::postgres::PgConnectOptions::new()
                    .socket(pgpilot_keeper::files::socket_dir(&k.pgdata))
                    .port(k.port)
                    .username("postgres")
                    .database("postgres")
                    .disable_statement_logging();
                let node = k.name.clone();
                let (log, stop, next) = (log.clone(), stop.clone(), next.clone());
                tokio::spawn(async move {
                    let mut conn: Option<sqlx::PgConnection> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        if conn.is_none() {
                            let c = tokio::time::timeout(Duration::from_secs(2), opts.connect());
                            conn = c.await.ok().and_then(Result::ok);
                        }
                        if let Some(c) = conn.as_mut() {
                            let id = next.fetch_add(1, Ordering::Relaxed);
                            let sql = format!("INSERT INTO {TABLE} VALUES ({id}, '{node}')");
                            let sent = Instant::now();
                            match sqlx::query(&sql).execute(&mut *c).await {
                                Ok(_) => log.lock().unwrap().push(CheckAck {
                                    node: node.clone(),
                                    id,
                                    sent,
                                    acked: Instant::now(),
                                }),
                                // A read-only standby refuses and the
                                // connection stays usable; anything else
                                // reconnects.
                                Err(e) if e.to_string().contains("read-only") => {}
                                Err(_) => conn = None,
                            }
                        }
                        tokio::time::sleep_until((started + every).into()).await;
                    }
                })
            })
            .collect();
        Checker { log, stop, tasks }
    }

    pub fn acks(&self) -> Vec<CheckAck> {
        self.log.lock().unwrap().clone()
    }

    /// Stops the tasks; a commit still waiting is abandoned (it was not
    /// acknowledged).
    pub async fn stop(mut self) -> Vec<CheckAck> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.iter_mut() {
            // A task stuck in a commit is aborted by Drop.
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        self.acks()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What [`split_brain`] found wrong, if anything.
pub fn split_brain(
    acks: &[CheckAck],
    writers: usize,
    final_primary: &str,
    on_final: &std::collections::BTreeSet<i64>,
) -> Result<(), String> {
    // Commits of an earlier writer the final primary holds: decided before
    // its promotion (see the module comment), so they precede every commit
    // of the final primary, whenever their answers came.
    let decided_before = |a: &CheckAck| a.node != final_primary && on_final.contains(&a.id);
    let precedes = |x: &CheckAck, y: &CheckAck| decided_before(x) && y.node == final_primary;
    for x in acks {
        for y in acks {
            if x.node < y.node
                && x.sent <= y.acked
                && y.sent <= x.acked
                && !precedes(x, y)
                && !precedes(y, x)
            {
                return Err(format!(
                    "two nodes acknowledged at the same moment: {} (id {}) and {} (id {})",
                    x.node, x.id, y.node, y.id
                ));
            }
        }
    }
    // In order of when each commit was known to be decided: a held commit
    // of an earlier writer no later than the final primary's first.
    let first_final = acks
        .iter()
        .filter(|a| a.node == final_primary)
        .map(|a| a.acked)
        .min();
    let decided = |a: &CheckAck| match first_final {
        Some(f) if decided_before(a) => a.acked.min(f),
        _ => a.acked,
    };
    let mut ordered: Vec<&CheckAck> = acks.iter().collect();
    // A held commit of an earlier writer answered after the final
    // primary's first commit is decided at that same instant: it goes
    // first (a stable sort on the time alone left such ties in the order
    // the answers came, and reported a, b, a, b for a, b).
    ordered.sort_by_key(|a| (decided(a), !decided_before(a)));
    let mut runs: Vec<&str> = Vec::new();
    for a in ordered {
        if runs.last() != Some(&a.node.as_str()) {
            runs.push(&a.node);
        }
    }
    if runs.len() > writers {
        return Err(format!(
            "writers interleaved: acknowledgements came from {runs:?} in turn, at most \
             {writers} writer(s) expected"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(base: Instant, node: &str, id: i64, sent_ms: u64, acked_ms: u64) -> CheckAck {
        CheckAck {
            node: node.into(),
            id,
            sent: base + Duration::from_millis(sent_ms),
            acked: base + Duration::from_millis(acked_ms),
        }
    }

    #[test]
    fn a_late_answer_for_a_replicated_commit_is_no_second_writer() {
        let base = Instant::now();
        // a's commit sent before a freeze, answered on resume at 5 s; b
        // promoted meanwhile and acknowledged at 3 s.
        let acks = [ack(base, "a", 1, 0, 5000), ack(base, "b", 2, 3000, 3010)];
        let on_b = [1, 2].into_iter().collect();
        assert!(split_brain(&acks, 2, "b", &on_b).is_ok());
        // Not on b: a decided it after b's promotion.
        let only_b = [2].into_iter().collect();
        let e = split_brain(&acks, 2, "b", &only_b).unwrap_err();
        assert!(e.contains("same moment"), "{e}");
        // Two earlier writers at once, both held by the final primary c:
        // still two writers at the same moment.
        let three = [
            ack(base, "a", 1, 0, 5000),
            ack(base, "b", 2, 3000, 3010),
            ack(base, "c", 3, 6000, 6010),
        ];
        let on_c = [1, 2, 3].into_iter().collect();
        assert!(split_brain(&three, 3, "c", &on_c).is_err());
        // a's late answer counts before b's commits: two writers in turn.
        let runs = [
            ack(base, "a", 1, 0, 5000),
            ack(base, "b", 2, 3000, 3010),
            ack(base, "b", 4, 3100, 3110),
        ];
        assert!(
            split_brain(&runs, 1, "b", &on_b).is_err(),
            "two writers, one allowed"
        );
        assert!(split_brain(&runs, 2, "b", &on_b).is_ok());
        // A second late answer from a, after b's first commit, is decided
        // at b's first commit at the latest: still two writers in turn,
        // whatever order the answers came in.
        let late = [
            ack(base, "a", 1, 0, 1000),
            ack(base, "b", 2, 3000, 3010),
            ack(base, "a", 3, 2900, 5000),
        ];
        let on_b3 = [1, 2, 3].into_iter().collect();
        assert!(split_brain(&late, 2, "b", &on_b3).is_ok());
        // With a the final primary (holding only its own commit), b's
        // commit is the one decided elsewhere: a second writer.
        let on_a = [1].into_iter().collect();
        assert!(split_brain(&acks, 2, "a", &on_a).is_err());
    }
}
