//! `pgpilot rotate replication-password` on real nodes (issue #11): the
//! old password stops working, the new one works, the standby keeps
//! streaming and reconnects with it after a restart, a failover and the
//! old primary's rewind work afterwards, a second rotation is done by
//! the new primary, and no password is in ps, a log or an event.

use std::time::Duration;

use sqlx::postgres::PgSslMode;

use super::ssl::{replication_password, tcp, wait_ssl_walsenders, PsWatch};
use crate::support::*;

const STEP: Duration = Duration::from_secs(60);

fn generation(k: &KeeperProc) -> i64 {
    let text = std::fs::read_to_string(pgpilot_keeper::files::config_path(&k.pgdata)).unwrap();
    let config: pgpilot_keeper::config::KeeperConfig = toml::from_str(&text).unwrap();
    config.replication_password_generation
}

/// Rotates and waits until every keeper holds the new generation.
async fn rotate(monitor: &MonitorProc, nodes: &[&KeeperProc], want: i64) {
    let out = pgpilot_ok(&[
        "rotate",
        "replication-password",
        "--monitor",
        &monitor.uri,
        "--formation",
        "default",
    ]);
    assert!(out.contains(&format!("generation {want} ")), "{out}");
    for k in nodes {
        eventually(
            &format!("{} to hold generation {want}", k.name),
            STEP,
            || async { (generation(k) == want).then_some(()) },
        )
        .await;
    }
    let settings = pgpilot_ok(&["show", "settings", "--monitor", &monitor.uri]);
    assert!(
        settings.contains("replication_password_generation")
            && settings.contains(&want.to_string()),
        "{settings}"
    );
}

/// Whether `password` logs `k` in as the replication role (over SSL).
async fn accepted(k: &KeeperProc, password: &str) -> Result<(), String> {
    tcp(k, "pgpilot_replicator", password, PgSslMode::Require)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn rows_on(k: &KeeperProc, want: &str) {
    eventually(&format!("{want} rows on {}", k.name), STEP, || async {
        (k.query("SELECT count(*)::text FROM t")
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some(want))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_streaming_and_survives_failover_and_rejoin() {
    let dir = TestDir::new("k-rotate");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, mut b) = primary_and_secondary(&dir, &monitor).await;
    let old = replication_password(&a);
    assert_eq!((generation(&a), generation(&b)), (1, 1));
    let ps = PsWatch::start(vec![old.clone()]);
    let mut secrets = vec![old.clone()];
    wait_ssl_walsenders(&a, "1/1").await;
    a.query("CREATE TABLE t (i int)").await.unwrap();
    a.query("INSERT INTO t VALUES (1)").await.unwrap();

    rotate(&monitor, &[&a, &b], 2).await;
    let new = replication_password(&a);
    ps.add(new.clone());
    secrets.push(new.clone());
    assert_ne!(new, old);
    assert!(replication_password(&b) == new, "b holds another password");

    // (a) The role takes the new password only; its comment says which.
    let err = accepted(&a, &old).await.unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    accepted(&a, &new).await.unwrap();
    assert_eq!(
        a.query(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles \
             WHERE rolname = 'pgpilot_replicator'"
        )
        .await
        .unwrap()
        .as_deref(),
        Some("pgpilot replication password generation 2")
    );

    // (b) B streams with the new password (its WAL receiver reconnected
    // when primary_conninfo changed), and again after a restart.
    let conninfo = b.query("SHOW primary_conninfo").await.unwrap().unwrap();
    assert!(
        conninfo.contains(&new) && !conninfo.contains(&old),
        "b's primary_conninfo does not hold the new password"
    );
    wait_ssl_walsenders(&a, "1/1").await;
    a.query("INSERT INTO t VALUES (2)").await.unwrap();
    rows_on(&b, "2").await;
    b.stop();
    b.run();
    wait_state(&monitor, "b", "secondary", STEP).await;
    wait_ssl_walsenders(&a, "1/1").await;
    a.query("INSERT INTO t VALUES (3)").await.unwrap();
    rows_on(&b, "3").await;

    // (c) A failover after the rotation, and the old primary's rewind
    // from the new one (as the replication role, with the new password).
    a.kill9();
    wait_state(&monitor, "b", "wait_primary", STEP).await;
    b.query("INSERT INTO t VALUES (4)").await.unwrap();
    a.run();
    wait_state(&monitor, "a", "secondary", STEP).await;
    wait_state(&monitor, "b", "primary", STEP).await;
    assert_eq!(a.state()["last_rejoin"]["method"], "pg_rewind");
    wait_ssl_walsenders(&b, "1/1").await;
    rows_on(&a, "4").await;

    // A second rotation, done by the new primary.
    rotate(&monitor, &[&a, &b], 3).await;
    let third = replication_password(&b);
    ps.add(third.clone());
    secrets.push(third.clone());
    assert!(
        accepted(&b, &new).await.is_err(),
        "generation 2 still works"
    );
    accepted(&b, &third).await.unwrap();
    wait_ssl_walsenders(&b, "1/1").await;
    b.query("INSERT INTO t VALUES (5)").await.unwrap();
    rows_on(&a, "5").await;

    // (d) No password anywhere: ps (sampled all along), the logs of
    // every process (PostgreSQL's included), the events, `show`.
    let (samples, leaked) = ps.finish();
    assert!(samples > 20, "{samples} ps samples");
    assert!(
        leaked.is_empty(),
        "a password is in ps ({} lines)",
        leaked.len()
    );
    let events = monitor.events().await.join("\n");
    assert!(events.contains("generation 3"), "no rotation event");
    let shown = [
        pgpilot_ok(&["show", "settings", "--monitor", &monitor.uri]),
        pgpilot_ok(&["show", "state", "--monitor", &monitor.uri]),
        events,
    ]
    .join("\n");
    for (i, secret) in secrets.iter().enumerate() {
        for (what, log) in [
            ("a", a.log()),
            ("b", b.log()),
            ("monitor", monitor.logged()),
            ("show and events", shown.clone()),
        ] {
            assert!(!log.contains(secret.as_str()), "password {i} is in {what}");
        }
    }
}

/// A rotation while the primary is down: the node promoted in its place
/// sets the pending password (it goes to whichever node is writable), and
/// the old primary, down all along, gets it with its first reply when it
/// is back and rewinds with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_pending_at_a_failover_is_done_by_the_new_primary() {
    let dir = TestDir::new("k-rotate-fo");
    let monitor = MonitorProc::start(&dir).await;
    let (mut a, b) = primary_and_secondary(&dir, &monitor).await;
    let old = replication_password(&a);
    a.query("CREATE TABLE t (i int)").await.unwrap();
    a.query("INSERT INTO t VALUES (1)").await.unwrap();
    rows_on(&b, "1").await;

    a.kill9();
    let out = pgpilot_ok(&["rotate", "replication-password", "--monitor", &monitor.uri]);
    assert!(out.contains("generation 2 "), "{out}");
    // Nobody can set it yet: a is down and b not promoted (that takes
    // the lease and more).
    let settings = pgpilot_ok(&["show", "settings", "--monitor", &monitor.uri]);
    assert!(settings.contains("1 (2 pending)"), "{settings}");
    wait_state(&monitor, "b", "wait_primary", STEP).await;
    eventually("b to hold generation 2", STEP, || async {
        (generation(&b) == 2).then_some(())
    })
    .await;
    let new = replication_password(&b);
    assert_ne!(new, old);
    assert!(accepted(&b, &old).await.is_err(), "the old password works");
    accepted(&b, &new).await.unwrap();
    assert_eq!(generation(&a), 1, "a was down");

    b.query("INSERT INTO t VALUES (2)").await.unwrap();
    a.run();
    wait_state(&monitor, "a", "secondary", STEP).await;
    assert_eq!(generation(&a), 2);
    assert_eq!(replication_password(&a), new);
    wait_ssl_walsenders(&b, "1/1").await;
    rows_on(&a, "2").await;
    for secret in [&old, &new] {
        for log in [a.log(), b.log(), monitor.logged()] {
            assert!(!log.contains(secret.as_str()), "a password is in a log");
        }
    }
}
