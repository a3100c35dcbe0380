//! The control plane's security (issue 11) on a real monitor process:
//! who may register, report, watch, drop and operate; TLS refusals that
//! say what is wrong; the join token's rotation; hostile input; and no
//! secret in what the monitor logs or shows.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use pgpilot_proto::client::{connect, Client, ClientAuth};
use pgpilot_proto::credential::Credential;
use pgpilot_proto::{pb, NodeState};
use tonic::Code;

use crate::keeper::{register, register_request, signed, Report};
use crate::support::http::scrape;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// A client that verifies the monitor but presents no credential of its
/// own (each request says what it presents).
async fn anonymous(m: &MonitorProc) -> Client {
    let auth = ClientAuth {
        ca_pem: m.auth().ca_pem,
        token: None,
    };
    connect(&m.uri, &auth).await.unwrap()
}

fn read_token(m: &MonitorProc) -> String {
    pgpilot_monitor::auth::read_token(&pgpilot_monitor::auth::read_token_path(&m.pgdata))
        .unwrap()
        .token()
}

fn operator_token(m: &MonitorProc) -> String {
    m.auth().token.unwrap()
}

/// A well-formed credential nobody was given.
fn forged(prefix: &str) -> String {
    format!("{prefix}.{}", Credential::new_secret())
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("refused");
    (e.code(), e.message().to_string())
}

async fn node_names(c: &mut Client) -> Vec<String> {
    c.show_state(pb::ShowStateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| n.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_needs_the_join_token_and_a_refusal_learns_no_password() {
    let dir = TestDir::new("sec-join");
    let m = MonitorProc::start(&dir).await;
    let mut c = anonymous(&m).await;
    let mut refusals = Vec::new();
    let attempts = [
        (None, Code::Unauthenticated),
        (Some(forged("PGJ1")), Code::Unauthenticated),
        (Some("PGJ1.not-a-secret".to_string()), Code::Unauthenticated),
        (Some(read_token(&m)), Code::PermissionDenied),
        (Some(operator_token(&m)), Code::PermissionDenied),
    ];
    for (token, want) in attempts {
        let req = match &token {
            None => tonic::Request::new(register_request("rogue", free_port())),
            Some(t) => signed(register_request("rogue", free_port()), t),
        };
        let (got, message) = code(c.register(req).await);
        assert_eq!(got, want, "{token:?}: {message}");
        refusals.push(message);
    }
    assert!(
        refusals[0].contains("the join token"),
        "the refusal names what is needed: {}",
        refusals[0]
    );
    let mut operator = m.client().await;
    assert!(
        node_names(&mut operator).await.is_empty(),
        "nothing registered"
    );

    // With the token: a password and a credential of its own.
    let reg = register(&mut c, &m.join_token(), "a", free_port()).await;
    assert!(!reg.replication_password.is_empty());
    assert!(reg
        .node_credential
        .starts_with(&format!("PGN1.{}.", reg.node_id)));
    for r in &refusals {
        assert!(!r.contains(&reg.replication_password), "{r}");
    }
    assert_eq!(node_names(&mut operator).await, ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_credential_reports_watches_and_drops_for_its_own_node_only() {
    let dir = TestDir::new("sec-bound");
    let m = MonitorProc::start(&dir).await;
    let mut c = anonymous(&m).await;
    let join = m.join_token();
    let a = register(&mut c, &join, "a", free_port()).await;
    let b = register(&mut c, &join, "b", free_port()).await;
    let a_report = Report::of(&a, NodeState::Init);
    let b_report = Report::of(&b, NodeState::Init);
    a_report.send(&mut c).await;

    // Reporting for b with a's credential.
    let (got, message) = code(c.node_active(a_report.sign(b_report.request())).await);
    assert_eq!(got, Code::PermissionDenied, "{message}");
    assert!(
        message.contains(&format!(
            "node {} cannot act for node {}",
            a.node_id, b.node_id
        )),
        "{message}"
    );
    // A credential for b's id that the monitor never gave.
    let fake = format!("PGN1.{}.{}", b.node_id, Credential::new_secret());
    let (got, message) = code(c.node_active(signed(b_report.request(), &fake)).await);
    assert_eq!(got, Code::Unauthenticated, "{message}");
    // The join token is not a node credential.
    let (got, _) = code(c.node_active(signed(b_report.request(), &join)).await);
    assert_eq!(got, Code::PermissionDenied);

    // Watching: its own group, not every formation's events.
    let own = pb::WatchRequest {
        formation: "default".into(),
        group_id: Some(a.group_id),
    };
    c.watch(a_report.sign(own.clone())).await.unwrap();
    let everything = pb::WatchRequest {
        formation: String::new(),
        group_id: None,
    };
    let (got, message) = code(c.watch(a_report.sign(everything)).await);
    assert_eq!(got, Code::PermissionDenied, "{message}");
    let other_group = pb::WatchRequest {
        formation: "default".into(),
        group_id: Some(a.group_id + 1),
    };
    let (got, _) = code(c.watch(a_report.sign(other_group)).await);
    assert_eq!(got, Code::PermissionDenied);

    // Dropping b, and operating, with a's credential.
    let drop_b = pb::DropNodeRequest {
        node_id: b.node_id,
        force: true,
    };
    let (got, message) = code(c.drop_node(a_report.sign(drop_b)).await);
    assert_eq!(got, Code::PermissionDenied, "{message}");
    let switchover = pb::PerformSwitchoverRequest {
        formation: "default".into(),
        candidate: "a".into(),
    };
    let (got, message) = code(c.perform_switchover(a_report.sign(switchover)).await);
    assert_eq!(got, Code::PermissionDenied, "{message}");
    assert!(message.contains("the operator credential"), "{message}");
    // The read credential reads and nothing more.
    let reader = read_token(&m);
    c.show_state(signed(pb::ShowStateRequest::default(), &reader))
        .await
        .unwrap();
    let drop_b = pb::DropNodeRequest {
        node_id: b.node_id,
        force: true,
    };
    let (got, _) = code(c.drop_node(signed(drop_b, &reader)).await);
    assert_eq!(got, Code::PermissionDenied);

    let mut operator = m.client().await;
    assert_eq!(node_names(&mut operator).await, ["a", "b"]);
    b_report.send(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_nodes_credential_is_refused() {
    let dir = TestDir::new("sec-drop");
    // a primary, b its secondary: b may be dropped.
    let crate::keeper::Bootstrapped {
        monitor: m,
        a_pg: _a_pg,
        b_pg: _b_pg,
        a: a_report,
        b: b_report,
        ..
    } = crate::keeper::bootstrapped(&dir).await;
    let mut c = anonymous(&m).await;
    // A stream b opened before it was dropped.
    let own = pb::WatchRequest {
        formation: "default".into(),
        group_id: Some(0),
    };
    let mut open_stream = c.watch(b_report.sign(own)).await.unwrap().into_inner();
    let mut operator = m.client().await;
    operator
        .drop_node(pb::DropNodeRequest {
            node_id: b_report.node_id,
            force: true,
        })
        .await
        .unwrap();
    assert_eq!(node_names(&mut operator).await, ["a"]);
    // It ends with the drop, refused.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match open_stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the dropped node's stream ends");
    let e = ended.expect_err("ended by a refusal");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let (got, message) = code(c.node_active(b_report.signed()).await);
    assert_eq!(got, Code::Unauthenticated, "{message}");
    assert!(message.contains("not registered"), "{message}");
    let own = pb::WatchRequest {
        formation: "default".into(),
        group_id: Some(0),
    };
    let (got, _) = code(c.watch(b_report.sign(own)).await);
    assert_eq!(got, Code::Unauthenticated);
    // A monitor restart loads the credentials from its store: still
    // refused, and a's still accepted.
    let mut m = m;
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    m.restart().await;
    let mut c = anonymous(&m).await;
    let (got, _) = code(c.node_active(b_report.signed()).await);
    assert_eq!(got, Code::Unauthenticated);
    a_report.send(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_and_a_foreign_ca_are_refused_with_a_clear_error() {
    let dir = TestDir::new("sec-tls");
    let m = MonitorProc::start(&dir).await;
    let plain = m.uri.replace("https://", "http://");

    // The CLI speaking plain HTTP/2 to the TLS port: an answer, not a hang.
    let started = Instant::now();
    let out = pgpilot_command(&["show", "state", "--monitor", &plain])
        .env("PGPILOT_TOKEN", operator_token(&m))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("may require TLS"), "{err}");
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());

    // A raw plain-text client: the server closes the connection.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let started = Instant::now();
    loop {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the server kept a plain-text client"
        );
    }

    // Another monitor's CA.
    let other = dir.join("other");
    pgpilot_monitor::tls::generate(&other, &["127.0.0.1".to_string()]).unwrap();
    let other_ca = pgpilot_monitor::tls::ca_path(&other);
    let out = pgpilot(&[
        "show",
        "state",
        "--monitor",
        &m.uri,
        "--ca-file",
        path_str(&other_ca),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not signed by the CA given"), "{err}");

    // The operator's CA and token work (the same command, for contrast).
    pgpilot_ok(&["show", "state", "--monitor", &m.uri]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bring_your_own_certificates_and_a_name_they_do_not_hold() {
    let dir = TestDir::new("sec-byo");
    // The operator's CA and a server certificate for db.example and the
    // address the test reaches it on; not for "localhost".
    let theirs = dir.join("theirs");
    pgpilot_monitor::tls::generate(&theirs, &["db.example".into(), "127.0.0.1".into()]).unwrap();
    let tls = pgpilot_monitor::tls::tls_dir(&theirs);
    let m = MonitorProc::start_with(
        &dir,
        &[
            "--ssl-ca-file",
            path_str(&tls.join("ca.pem")),
            "--server-cert",
            path_str(&tls.join("server.pem")),
            "--server-key",
            path_str(&tls.join("server.key")),
        ],
    )
    .await;
    // The join token carries their CA's fingerprint.
    let fingerprint = pgpilot_monitor::tls::ca_fingerprint(&theirs).unwrap();
    assert!(m.join_token().ends_with(&fingerprint), "{}", m.join_token());
    pgpilot_ok(&["show", "state", "--monitor", &m.uri]);
    // The monitor made no CA key of its own: it signs nothing.
    assert!(!pgpilot_monitor::tls::tls_dir(&m.pgdata)
        .join("ca.key")
        .exists());

    let by_name = format!("https://localhost:{}", m.port);
    let out = pgpilot_command(&["show", "state", "--monitor", &by_name])
        .env("PGPILOT_CA_FILE", tls.join("ca.pem"))
        .env("PGPILOT_TOKEN", operator_token(&m))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("certificate does not name the host"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_join_token_keeps_nodes_and_refuses_the_old_token() {
    let dir = TestDir::new("sec-rotate");
    let m = MonitorProc::start(&dir).await;
    let mut c = anonymous(&m).await;
    let old = m.join_token();
    let a = register(&mut c, &old, "a", free_port()).await;

    // Only the operator rotates.
    let (got, _) = code(
        c.rotate_join_token(signed(pb::RotateJoinTokenRequest {}, &read_token(&m)))
            .await,
    );
    assert_eq!(got, Code::PermissionDenied);
    let printed = pgpilot_ok(&["rotate", "join-token", "--monitor", &m.uri]);
    let new = printed.trim().to_string();
    assert_ne!(new, old);
    assert!(new.starts_with("PGJ1."), "{printed}");
    assert_eq!(
        m.join_token(),
        new,
        "the monitor's file holds the new token"
    );
    let shown = pgpilot_ok(&["show", "join-token", "--pgdata", path_str(&m.pgdata)]);
    assert_eq!(shown.trim(), new);

    let (got, message) = code(
        c.register(signed(register_request("b", free_port()), &old))
            .await,
    );
    assert_eq!(got, Code::Unauthenticated, "{message}");
    register(&mut c, &new, "b", free_port()).await;
    // a registered with the old token and keeps reporting.
    Report::of(&a, NodeState::Init).send(&mut c).await;

    // The new token survives a monitor restart; the old one stays refused.
    let mut m = m;
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    m.restart().await;
    let mut c = anonymous(&m).await;
    let (got, _) = code(
        c.register(signed(register_request("c", free_port()), &old))
            .await,
    );
    assert_eq!(got, Code::Unauthenticated);
    register(&mut c, &new, "c", free_port()).await;

    // On the monitor's machine --pgdata uses its own operator token, even
    // with a read token in the environment for remote monitors.
    let out = pgpilot_command(&["rotate", "join-token", "--pgdata", path_str(&m.pgdata)])
        .env("PGPILOT_TOKEN", read_token(&m))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(m.join_token(), new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_leaves_the_monitor_serving() {
    let dir = TestDir::new("sec-hostile");
    let m = MonitorProc::start(&dir).await;
    let mut c = anonymous(&m).await;
    let join = m.join_token();
    let a = register(&mut c, &join, "a", free_port()).await;
    let a_report = Report::of(&a, NodeState::Init);

    // Oversized: a 1 MiB name.
    let mut big = register_request("x", free_port());
    big.name = "x".repeat(1 << 20);
    let (got, message) = code(c.register(signed(big, &join)).await);
    assert!(
        matches!(got, Code::OutOfRange | Code::ResourceExhausted),
        "{got:?}: {message}"
    );
    // Unknown node ids, under a's credential and the operator's.
    let (got, _) = code(
        c.node_active(a_report.sign(Report::new(987_654, NodeState::Single).request()))
            .await,
    );
    assert_eq!(got, Code::PermissionDenied);
    let mut operator = m.client().await;
    assert!(operator
        .drop_node(pb::DropNodeRequest {
            node_id: 987_654,
            force: true,
        })
        .await
        .is_err());
    // Out of order: a primary's report before anything was assigned, and
    // a generation from the future. Answered (or refused), not fatal.
    let mut early = Report::of(&a, NodeState::Primary);
    early.generation_seen = 1_000_000;
    let _ = c.node_active(early.signed()).await;
    // A header that is not `Bearer TOKEN`.
    let mut req = tonic::Request::new(pb::ShowStateRequest::default());
    req.metadata_mut()
        .insert("authorization", "Basic YWRtaW46YWRtaW4=".parse().unwrap());
    let (got, _) = code(c.show_state(req).await);
    assert_eq!(got, Code::Unauthenticated);
    // Garbage bytes instead of a TLS handshake.
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap();
        let _ = raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5]);
        let _ = raw.write_all(&[0xa5; 4096]);
    }

    // A flood of failed authentications, 20 connections at once.
    let before = scrape(m.http_port)
        .await
        .sum("pgpilot_auth_refusals_total", &[]);
    let mut flood = Vec::new();
    for _ in 0..20 {
        let mut c = anonymous(&m).await;
        flood.push(tokio::spawn(async move {
            for _ in 0..50 {
                let req = signed(pb::ShowStateRequest::default(), &forged("PGO1"));
                assert_eq!(
                    c.show_state(req).await.unwrap_err().code(),
                    Code::Unauthenticated
                );
            }
        }));
    }
    for f in flood {
        f.await.unwrap();
    }
    let after = scrape(m.http_port)
        .await
        .sum("pgpilot_auth_refusals_total", &[]);
    assert!(after - before >= 1000.0, "{before} -> {after}");
    // Logged once per source and reason, not once per request.
    let logged = m.logged();
    let lines = logged
        .lines()
        .filter(|l| l.contains("refused ShowState from 127.0.0.1"))
        .count();
    // (Two reasons were given from there: the Basic header and the flood.)
    assert_eq!(lines, 2, "{logged}");

    // More connections from one address than it may hold, none finishing
    // its handshake: those past its share are closed at once, the rest
    // after the handshake timeout, and the monitor serves again.
    let share = pgpilot_monitor::conn_limit::MAX_PER_SOURCE;
    let idle: Vec<_> = (0..share + 20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap())
        .collect();
    // Closed at once, well before the 5 s handshake timeout would close it.
    let mut last = idle.last().unwrap().try_clone().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    match last.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection past the share was kept: {other:?}"),
    }
    let started = Instant::now();
    eventually("the monitor serving again", DEADLINE, || async {
        let mut c = connect(&m.uri, &m.auth()).await.ok()?;
        c.show_state(pb::ShowStateRequest::default()).await.ok()
    })
    .await;
    println!(
        "served again {:?} after {} idle connections",
        started.elapsed(),
        idle.len()
    );
    drop(idle);

    // Still serving, with its state intact.
    let mut operator = m.client().await;
    assert_eq!(node_names(&mut operator).await, ["a"]);
    a_report.send(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_monitors_logs_events_or_show_output() {
    let dir = TestDir::new("sec-secrets");
    let m = MonitorProc::start(&dir).await;
    let mut c = anonymous(&m).await;
    let join = m.join_token();
    let a = register(&mut c, &join, "a", free_port()).await;
    let b = register(&mut c, &join, "b", free_port()).await;
    Report::of(&a, NodeState::Init).send(&mut c).await;
    // Refusals of credentials that look real: the log names the reason,
    // never the token presented.
    let wrong = format!("PGN1.{}.{}", a.node_id, Credential::new_secret());
    let _ = c
        .node_active(signed(
            Report::new(a.node_id, NodeState::Init).request(),
            &wrong,
        ))
        .await;
    let _ = c
        .register(signed(register_request("x", free_port()), &forged("PGJ1")))
        .await;
    let rotated = pgpilot_ok(&["rotate", "join-token", "--monitor", &m.uri]);

    let secret_of = |token: &str| token.trim().split('.').nth(1).unwrap().to_string();
    let mut secrets = vec![
        ("join token", secret_of(&join)),
        ("rotated join token", secret_of(&rotated)),
        ("operator token", secret_of(&operator_token(&m))),
        ("read token", secret_of(&read_token(&m))),
        ("replication password", a.replication_password.clone()),
        (
            "wrong credential",
            wrong.rsplit('.').next().unwrap().to_string(),
        ),
    ];
    for reg in [&a, &b] {
        let credential = reg.node_credential.rsplit('.').next().unwrap().to_string();
        secrets.push(("node credential", credential));
    }
    let mut seen = m.logged();
    for args in [
        &["show", "state", "--monitor", &m.uri][..],
        &["show", "events", "--monitor", &m.uri],
        &["show", "uri", "--monitor", &m.uri],
        &["show", "settings", "--monitor", &m.uri],
        &["show", "state", "--pgdata", path_str(&m.pgdata), "--json"],
    ] {
        seen.push_str(&pgpilot_ok(args));
    }
    seen.push_str(&m.events().await.join("\n"));
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what}: {secret:?}");
        assert!(
            !seen.contains(secret.as_str()),
            "the {what} was shown or logged"
        );
    }
}

/// One NodeActive of `reg` in `state`, holding password generation
/// `held`, its role at `role`.
async fn report_passwords(
    c: &mut Client,
    reg: &pb::RegisterResponse,
    state: NodeState,
    held: i64,
    role: Option<i64>,
) -> pb::NodeActiveResponse {
    let mut req = Report::of(reg, state).request();
    req.replication_password_generation = held;
    req.role_password_generation = role;
    c.node_active(signed(req, &reg.node_credential))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_replication_password_goes_to_the_writer_then_to_everyone() {
    let dir = TestDir::new("sec-pwrot");
    let m = MonitorProc::start(&dir).await;
    let mut c = anonymous(&m).await;
    let a = register(&mut c, &m.join_token(), "a", free_port()).await;
    let b = register(&mut c, &m.join_token(), "b", free_port()).await;
    assert_eq!(a.replication_password_generation, 1);
    assert_eq!(a.replication_password, b.replication_password);
    Report::of(&a, NodeState::Init).send(&mut c).await;
    let request = || pb::RotateReplicationPasswordRequest {
        formation: "default".into(),
    };

    // Only the operator rotates.
    for token in [read_token(&m), b.node_credential.clone()] {
        let (got, _) = code(
            c.rotate_replication_password(signed(request(), &token))
                .await,
        );
        assert_eq!(got, Code::PermissionDenied);
    }
    let out = pgpilot_ok(&["rotate", "replication-password", "--monitor", &m.uri]);
    assert!(out.contains("generation 2 "), "{out}");
    // A second one is refused while the first is pending.
    let out = pgpilot(&["rotate", "replication-password", "--monitor", &m.uri]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("still pending"),
        "{err}"
    );

    // The standby learns nothing yet; the writer (a, single) the pending
    // one, until its role has it.
    let r = report_passwords(&mut c, &b, NodeState::Init, 1, None).await;
    assert_eq!(
        (r.replication_password, r.pending_replication_password),
        (None, None)
    );
    let r = report_passwords(&mut c, &a, NodeState::Single, 1, Some(1)).await;
    let pending = r
        .pending_replication_password
        .expect("the writer's pending password");
    assert_eq!(pending.generation, 2);
    assert_ne!(pending.password, a.replication_password);
    assert!(
        !format!("{pending:?}").contains(&pending.password),
        "Debug shows it"
    );
    // New registrations still get the current one meanwhile.
    let c1 = register(&mut c, &m.join_token(), "c", free_port()).await;
    assert_eq!(c1.replication_password_generation, 1);

    // The writer's role has it: current now, for everyone behind.
    let r = report_passwords(&mut c, &a, NodeState::Single, 2, Some(2)).await;
    assert_eq!(
        (r.replication_password, r.pending_replication_password),
        (None, None)
    );
    let r = report_passwords(&mut c, &b, NodeState::Init, 1, None).await;
    let current = r.replication_password.expect("the standby's new password");
    assert_eq!(
        (current.generation, &current.password),
        (2, &pending.password)
    );
    let d = register(&mut c, &m.join_token(), "d", free_port()).await;
    assert_eq!(d.replication_password_generation, 2);
    assert_eq!(d.replication_password, pending.password);
    let settings = pgpilot_ok(&["show", "settings", "--monitor", &m.uri]);
    assert!(!settings.contains(&pending.password));
    let events = m.events().await.join("\n");
    assert!(events.contains("generation 2"), "{events}");
    assert!(!events.contains(&pending.password));
    assert!(!m.logged().contains(&pending.password));
}

#[test]
fn create_monitor_refuses_a_key_that_does_not_match_its_certificate() {
    let dir = TestDir::new("sec-keymismatch");
    let (one, two) = (dir.join("one"), dir.join("two"));
    pgpilot_monitor::tls::generate(&one, &["127.0.0.1".into()]).unwrap();
    pgpilot_monitor::tls::generate(&two, &["127.0.0.1".into()]).unwrap();
    let (tls1, tls2) = (
        pgpilot_monitor::tls::tls_dir(&one),
        pgpilot_monitor::tls::tls_dir(&two),
    );
    let pgdata = dir.join("m");
    let (cert, key) = (tls1.join("server.pem"), tls2.join("server.key"));
    let out = pgpilot(&[
        "create",
        "monitor",
        "--pgdata",
        path_str(&pgdata),
        "--ssl-ca-file",
        path_str(&tls1.join("ca.pem")),
        "--server-cert",
        path_str(&cert),
        "--server-key",
        path_str(&key),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains(path_str(&cert)) && err.contains(path_str(&key)),
        "{err}"
    );
    assert!(
        !pgpilot_monitor::files::state_dir(&pgdata).exists() && !pgdata.exists(),
        "create monitor left files behind"
    );
}
