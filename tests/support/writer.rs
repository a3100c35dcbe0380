//! An application client for switchover tests and benchmarks: it commits
//! one row at a time through the formation's multi-host URI (`pgpilot
//! show uri`), the way libpq does with `target_session_attrs=read-write`:
//! try each host in turn, keep the first that takes writes, and on any
//! error drop the connection and start over at once. Every commit the
//! server acknowledged is recorded with the time and the host.
//!
//! sqlx has no multi-host URIs, so the host loop is here; the read-write
//! check is libpq's (`SHOW transaction_read_only` is `off`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sqlx::ConnectOptions;

use super::{pgpilot_ok, KeeperProc, MonitorProc};

/// The application's role and table, created by [`prepare`].
const USER: &str = "app";
const PASSWORD: &str = "app";
pub const TABLE: &str = "client_writes";
/// A connection attempt or a commit that takes longer counts as failed
/// (a commit waiting forever for a synchronous standby would otherwise
/// stop the client for good). The tests' default, an application's usual
/// `connect_timeout=5`; [`Writer::start_with`] takes another.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after every host refused, so that a loop over hosts that are
/// all down does not take a CPU from the nodes it waits for.
const ROUND_PAUSE: Duration = Duration::from_millis(5);

/// One acknowledged commit.
#[derive(Clone, Debug)]
pub struct Ack {
    pub id: i64,
    pub at: Instant,
    pub wall: SystemTime,
    /// The port of the node that acknowledged it.
    pub port: u16,
}

/// One failed attempt (connection refused, read-only, commit error).
#[derive(Clone, Debug)]
pub struct Failure {
    pub at: Instant,
    pub wall: SystemTime,
    pub port: Option<u16>,
    pub error: String,
}

#[derive(Default)]
struct Log {
    acks: Vec<Ack>,
    failures: Vec<Failure>,
}

/// The client task; stopped by [`Writer::stop`] or on drop.
pub struct Writer {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    /// Bounds every connection attempt and commit (see [`ATTEMPT_TIMEOUT`]).
    attempt_timeout: Duration,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Creates the application role and table on the primary (as the
/// superuser, over the node's socket); they reach the standbys by WAL.
pub async fn prepare(primary: &KeeperProc) {
    for sql in [
        format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"),
        format!("CREATE TABLE {TABLE} (id bigint PRIMARY KEY)"),
        format!("GRANT SELECT, INSERT ON {TABLE} TO {USER}"),
    ] {
        primary.query(&sql).await.unwrap();
    }
}

/// The formation's application URI, as `pgpilot show uri` prints it.
pub fn formation_uri(monitor: &MonitorProc) -> String {
    let out = pgpilot_ok(&[
        "show",
        "uri",
        "--monitor",
        &monitor.uri,
        "--formation",
        "default",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let uri = v
        .as_array()
        .and_then(|a| a.iter().find(|e| e["type"] == "formation"))
        .and_then(|e| e["uri"].as_str())
        .unwrap_or_else(|| panic!("no formation URI in {out}"));
    assert!(uri.contains("target_session_attrs=read-write"), "{uri}");
    uri.to_string()
}

/// (hosts with ports, dbname) of `postgres://h1:p1,h2:p2/db?...`.
fn parse_uri(uri: &str) -> (Vec<(String, u16)>, String) {
    let rest = uri.strip_prefix("postgres://").expect("a postgres:// URI");
    let (hosts, rest) = rest.split_once('/').expect("a database in the URI");
    let db = rest.split('?').next().unwrap().to_string();
    let hosts = hosts
        .split(',')
        .map(|h| {
            let (host, port) = h.rsplit_once(':').expect("host:port");
            (
                host.trim_matches(['[', ']']).to_string(),
                port.parse().unwrap(),
            )
        })
        .collect();
    (hosts, db)
}

/// A connection to the first host of `hosts` that takes writes.
async fn connect_rw(
    hosts: &[(String, u16)],
    db: &str,
    log: &Mutex<Log>,
    attempt_timeout: Duration,
) -> Option<(sqlx::PgConnection, u16)> {
    for (host, port) in hosts {
        let attempt = async {
            let mut c = sqlx::postgres::PgConnectOptions::new()
                .host(host)
                .port(*port)
                .username(USER)
                .password(PASSWORD)
                .database(db)
                .connect()
                .await?;
            let ro: String = sqlx::query_scalar("SHOW transaction_read_only")
                .fetch_one(&mut c)
                .await?;
            Ok::<_, sqlx::Error>((c, ro))
        };
        let error = match tokio::time::timeout(attempt_timeout, attempt).await {
            Ok(Ok((c, ro))) if ro == "off" => return Some((c, *port)),
            Ok(Ok(_)) => "read-only".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connection attempt timed out".to_string(),
        };
        failed(log, Some(*port), error);
    }
    None
}

fn failed(log: &Mutex<Log>, port: Option<u16>, error: String) {
    log.lock().unwrap().failures.push(Failure {
        at: Instant::now(),
        wall: SystemTime::now(),
        port,
        error,
    });
}

impl Writer {
    /// Starts committing one row every `interval` through `uri`; after a
    /// failure it reconnects and commits at once.
    pub fn start(uri: &str, interval: Duration) -> Writer {
        Writer::start_with(uri, interval, ATTEMPT_TIMEOUT)
    }

    /// [`Writer::start`], with each connection attempt (per host) and
    /// each commit given up after `attempt_timeout`: an application's
    /// connect and statement timeouts, which bound how long it stays on a
    /// node that stopped answering.
    pub fn start_with(uri: &str, interval: Duration, attempt_timeout: Duration) -> Writer {
        let (hosts, db) = parse_uri(uri);
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (log, stop) = (log.clone(), stop.clone());
            async move {
                let mut conn: Option<(sqlx::PgConnection, u16)> = None;
                let mut next_id = 1i64;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = connect_rw(&hosts, &db, &log, attempt_timeout).await;
                        if conn.is_none() {
                            tokio::time::sleep(ROUND_PAUSE).await;
                        }
                        continue;
                    }
                    let (c, port) = conn.as_mut().unwrap();
                    let (id, port) = (next_id, *port);
                    next_id += 1;
                    let started = Instant::now();
                    let sql = format!("INSERT INTO {TABLE} VALUES ({id})");
                    let done = tokio::time::timeout(attempt_timeout, sqlx::query(&sql).execute(c));
                    match done.await {
                        Ok(Ok(_)) => {
                            log.lock().unwrap().acks.push(Ack {
                                id,
                                at: Instant::now(),
                                wall: SystemTime::now(),
                                port,
                            });
                            tokio::time::sleep_until((started + interval).into()).await;
                        }
                        Ok(Err(e)) => {
                            failed(&log, Some(port), e.to_string());
                            conn = None;
                        }
                        Err(_) => {
                            failed(&log, Some(port), "commit timed out".into());
                            conn = None;
                        }
                    }
                }
            }
        });
        Writer {
            log,
            stop,
            attempt_timeout,
            task: Some(task),
        }
    }

    /// The commits acknowledged so far, in order.
    pub fn acks(&self) -> Vec<Ack> {
        self.log.lock().unwrap().acks.clone()
    }

    /// The failed attempts so far, in order.
    pub fn failures(&self) -> Vec<Failure> {
        self.log.lock().unwrap().failures.clone()
    }

    /// Waits until `n` more commits than `after` were acknowledged by the
    /// node on `port`, or panics after `timeout`.
    pub async fn wait_acks_on(&self, port: u16, after: usize, n: usize, timeout: Duration) {
        let what = format!("{n} commits acknowledged by the node on port {port}");
        super::eventually(&what, timeout, || async {
            let log = self.log.lock().unwrap();
            let on = log.acks[after.min(log.acks.len())..]
                .iter()
                .filter(|a| a.port == port)
                .count();
            (on >= n).then_some(())
        })
        .await;
    }

    /// Stops the client (bounded: an attempt in flight ends within its
    /// attempt timeout) and returns every acknowledged commit.
    pub async fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(3 * self.attempt_timeout, task)
                .await
                .expect("the client stops")
                .unwrap();
        }
        self.acks()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The acknowledged ids missing on `node`.
pub async fn missing(node: &KeeperProc, acks: &[Ack]) -> Vec<i64> {
    let mut c = node.connect().await.unwrap();
    let held: BTreeSet<i64> = sqlx::query_scalar(&format!("SELECT id FROM {TABLE}"))
        .fetch_all(&mut c)
        .await
        .unwrap()
        .into_iter()
        .collect();
    acks.iter()
        .map(|a| a.id)
        .filter(|id| !held.contains(id))
        .collect()
}
