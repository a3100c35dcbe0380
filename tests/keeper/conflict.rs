//! A leadership conflict on real processes: a standby promoted by hand
//! (`SELECT pg_promote()` on it, outside pgpilot) while the primary keeps
//! taking writes. The monitor records one ERROR event naming both nodes
//! and counts it in `pgpilot_leadership_conflicts_total`; the standby's
//! keeper fences the rogue PostgreSQL (stops it, rewinds it from the
//! primary, restarts it as a standby) within a bound; the primary's
//! writer, with another synchronous standby, never fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;

use crate::support::http::scrape;
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);
/// How long the rogue may accept writes after its promotion: the keeper
/// looks every poll interval (1 s), and a fast shutdown ends every
/// session at once. Measured: see the test's output.
const FENCE_BOUND: Duration = Duration::from_secs(10);
const CONFLICT_METRIC: &str = "pgpilot_leadership_conflicts_total";

fn connect_options(k: &KeeperProc) -> sqlx::postgres::PgConnectOptions {
    sqlx::postgres::PgConnectOptions::new()
        .socket(pgpilot_keeper::files::socket_dir(&k.pgdata))
        .port(k.port)
        .username("postgres")
        .database("postgres")
}

/// Commits one row at a time on one node until stopped; counts commits
/// and keeps every failure.
struct NodeWriter {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    /// The longest time between two commits.
    max_gap: Arc<Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeWriter {
    fn start(k: &KeeperProc) -> NodeWriter {
        let opts = connect_options(k);
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let max_gap = Arc::new(Mutex::new(Duration::ZERO));
        let (s, c, f, g) = (
            stop.clone(),
            commits.clone(),
            failures.clone(),
            max_gap.clone(),
        );
        let task = tokio::spawn(async move {
            let mut conn = None;
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match opts.connect().await {
                        Ok(x) => conn = Some(x),
                        Err(e) => f.lock().unwrap().push(format!("connect: {e}")),
                    }
                }
                if let Some(x) = conn.as_mut() {
                    let i = c.load(Ordering::Relaxed) as i64;
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        sqlx::query("INSERT INTO primary_writes VALUES ($1)")
                            .bind(i)
                            .execute(&mut *x),
                    )
                    .await;
                    match r {
                        Ok(Ok(_)) => {
                            c.fetch_add(1, Ordering::Relaxed);
                            let mut gap = g.lock().unwrap();
                            *gap = (*gap).max(last.elapsed());
                            last = Instant::now();
                        }
                        Ok(Err(e)) => {
                            f.lock().unwrap().push(format!("insert: {e}"));
                            conn = None;
                        }
                        Err(_) => {
                            f.lock().unwrap().push("insert timed out".into());
                            conn = None;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        NodeWriter {
            stop,
            commits,
            failures,
            max_gap,
            task,
        }
    }

    /// Commits, failures and the longest gap between two commits.
    async fn stop(self) -> (u64, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        let gap = *self.max_gap.lock().unwrap();
        (self.commits.load(Ordering::Relaxed), failures, gap)
    }
}

/// One write to `k` on a fresh connection; `Ok` if it committed. The
/// session asks for read-write transactions, which any client can: a
/// standby's `default_transaction_read_only = on` is no fence once
/// PostgreSQL is out of recovery.
async fn try_write(k: &KeeperProc, i: i64) -> Result<(), String> {
    let attempt = async {
        let mut c = connect_options(k)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO rogue_writes VALUES ($1)")
            .bind(i)
            .execute(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

async fn conflicts_counted(monitor: &MonitorProc) -> f64 {
    scrape(monitor.http_port)
        .await
        .get(CONFLICT_METRIC, &[])
        .unwrap_or_else(|| panic!("{CONFLICT_METRIC} is not exported"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_promoted_by_hand_is_an_error_event_a_metric_and_fenced() {
    let dir = TestDir::new("k-conflict");
    let monitor = MonitorProc::start(&dir).await;
    // Two standbys, either one enough for a synchronous commit: while the
    // rogue is out of the stream, commits on a go on through c (with one
    // standby they would wait for the rogue's return, as synchronous
    // replication must).
    let (a, b, _c) = primary_and_two_secondaries(&dir, &monitor).await;
    a.query("CREATE TABLE primary_writes (i bigint)")
        .await
        .unwrap();
    a.query("CREATE TABLE rogue_writes (i bigint)")
        .await
        .unwrap();
    eventually("the tables on b", STEP, || async {
        b.query("SELECT to_regclass('rogue_writes')::text")
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
    assert_eq!(conflicts_counted(&monitor).await, 0.0);
    let writer = NodeWriter::start(&a);

    // Outside pgpilot: promote the standby by hand.
    let promoted = Instant::now();
    // Without waiting for the promotion to end: its keeper may fence it
    // before pg_promote would return, ending this connection.
    b.query("SELECT pg_promote(false)::text").await.unwrap();
    // The rogue takes writes (the test would prove nothing otherwise),
    // until its keeper fences it.
    let mut accepted = 0;
    let mut refused_after = None;
    let mut i = 0;
    while promoted.elapsed() < FENCE_BOUND + Duration::from_secs(20) {
        i += 1;
        match try_write(&b, i).await {
            Ok(()) => {
                accepted += 1;
                refused_after = None;
            }
            Err(e) => {
                if refused_after.is_none() {
                    refused_after = Some((promoted.elapsed(), e));
                }
                // Refused for 2 s in a row: fenced.
                if refused_after
                    .as_ref()
                    .is_some_and(|(t, _)| promoted.elapsed() > *t + Duration::from_secs(2))
                {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (fenced_after, why) = refused_after.expect("the rogue was never fenced");
    eprintln!(
        "rogue b accepted {accepted} writes; refused them {} ms after its promotion ({why})",
        fenced_after.as_millis()
    );
    assert!(accepted > 0, "the hand promotion did not make b writable");
    assert!(
        fenced_after < FENCE_BOUND,
        "b took writes for {fenced_after:?} (bound {FENCE_BOUND:?})"
    );

    // The monitor: one ERROR event naming both nodes, counted once.
    let event = eventually("the conflict event", STEP, || async {
        monitor
            .events()
            .await
            .into_iter()
            .find(|e| e.starts_with("ERROR leadership conflict"))
    })
    .await;
    eprintln!("event: {event}");
    assert!(
        event.contains("node 2 \"b\"") && event.contains("node 1 \"a\""),
        "{event}"
    );
    assert!(
        std::fs::read_to_string(dir.join("monitor.err"))
            .unwrap()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("leadership conflict")),
        "no ERROR line in the monitor's log"
    );
    eventually("the conflict counted", STEP, || async {
        (conflicts_counted(&monitor).await == 1.0).then_some(())
    })
    .await;
    assert!(b.log().contains("leadership conflict"), "{}", b.log());

    // b comes back as a standby of a: in recovery, streaming a's rows.
    wait_state(&monitor, "b", "secondary", STEP).await;
    eventually("b in recovery again", STEP, || async {
        (b.query("SELECT pg_is_in_recovery()::text")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("true"))
        .then_some(())
    })
    .await;
    let back = promoted.elapsed();
    a.query("INSERT INTO rogue_writes VALUES (-1)")
        .await
        .unwrap();
    eventually("a's row on b", STEP, || async {
        (b.query("SELECT count(*)::text FROM rogue_writes WHERE i = -1")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("1"))
        .then_some(())
    })
    .await;
    eprintln!(
        "b a standby again {} ms after its promotion",
        back.as_millis()
    );

    // The primary's writer never noticed; nothing was counted twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (commits, failures, gap) = writer.stop().await;
    eprintln!(
        "writer on a: {commits} commits, {} failures, longest gap between commits {} ms",
        failures.len(),
        gap.as_millis()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        gap < Duration::from_secs(2),
        "a's commits stopped for {gap:?}"
    );
    assert!(commits > 100, "{commits}");
    assert_eq!(conflicts_counted(&monitor).await, 1.0);
    assert_eq!(monitor.count_events("ERROR leadership conflict").await, 1);
    let events = monitor.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("no leadership conflict any more")),
        "{events:?}"
    );
    // No failover: a stayed the primary throughout.
    wait_state(&monitor, "a", "primary", STEP).await;
}
