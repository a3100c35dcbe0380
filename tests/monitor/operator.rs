//! The operator commands (issue 9) through the gRPC API and the CLI:
//! refusals change nothing, accepted settings change what the reads say,
//! and the CLI follows a change on the Watch stream until it is done.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgpilot_proto::pb;
use pgpilot_proto::NodeState;
use tonic::Code;

use crate::bad_input::{assert_refused, snapshot};
use crate::keeper::{bootstrapped, register, wait_probed, Bootstrapped, Report};
use crate::support::{pgpilot, pgpilot_ok, MonitorProc, NodePg, TestDir};

/// What `snapshot` sees, plus every setting (number_sync_standbys is in
/// no node's row).
async fn full_snapshot(
    uri: &str,
    c: &mut pgpilot_proto::client::Client,
) -> ((serde_json::Value, Vec<String>), Vec<pb::Setting>) {
    let settings = c
        .show_settings(pb::ShowSettingsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .settings;
    (snapshot(uri), settings)
}

fn priority(
    formation: &str,
    name: &str,
    candidate_priority: i32,
) -> pb::SetCandidatePriorityRequest {
    pb::SetCandidatePriorityRequest {
        formation: formation.into(),
        name: name.into(),
        candidate_priority,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_operator_commands_change_nothing() {
    let dir = TestDir::new("opbad");
    let Bootstrapped {
        monitor,
        a_pg: _a_pg,
        b_pg: _b_pg,
        mut c,
        ..
    } = bootstrapped(&dir).await;
    let uri = monitor.uri.as_str();
    let before = full_snapshot(uri, &mut c).await;

    // Unknown node names: NotFound, naming the formation's nodes.
    for result in [
        c.set_candidate_priority(priority("default", "nope", 10))
            .await
            .map(drop),
        c.set_replication_quorum(pb::SetReplicationQuorumRequest {
            formation: "default".into(),
            name: "nope".into(),
            replication_quorum: false,
        })
        .await
        .map(drop),
        c.perform_promotion(pb::PerformPromotionRequest {
            formation: "default".into(),
            name: "nope".into(),
        })
        .await
        .map(drop),
        c.perform_switchover(pb::PerformSwitchoverRequest {
            formation: "default".into(),
            candidate: "nope".into(),
        })
        .await
        .map(drop),
    ] {
        assert_refused(
            result,
            Code::NotFound,
            "no node named \"nope\"; its nodes are a, b",
        );
    }
    // Values out of range.
    for p in [101, -1] {
        assert_refused(
            c.set_candidate_priority(priority("default", "b", p)).await,
            Code::InvalidArgument,
            &format!("candidate priority {p} is out of range: use 0..=100"),
        );
    }
    // One quorum standby: two synchronous standbys cannot be had.
    assert_refused(
        c.set_number_sync_standbys(pb::SetNumberSyncStandbysRequest {
            formation: "default".into(),
            number_sync_standbys: 2,
        })
        .await,
        Code::FailedPrecondition,
        "number_sync_standbys 2 is more than the 1 quorum standbys",
    );
    assert_refused(
        c.set_number_sync_standbys(pb::SetNumberSyncStandbysRequest {
            formation: "default".into(),
            number_sync_standbys: -1,
        })
        .await,
        Code::InvalidArgument,
        "number_sync_standbys -1 is out of range",
    );
    // Empty fields, unknown formation.
    assert_refused(
        c.set_candidate_priority(priority("default", "", 10)).await,
        Code::InvalidArgument,
        "node name is empty: pass --name",
    );
    assert_refused(
        c.set_candidate_priority(priority("", "b", 10)).await,
        Code::InvalidArgument,
        "formation is empty",
    );
    assert_refused(
        c.set_candidate_priority(priority("other", "b", 10)).await,
        Code::NotFound,
        "formation \"other\" does not exist",
    );
    // Promoting the primary.
    assert_refused(
        c.perform_promotion(pb::PerformPromotionRequest {
            formation: "default".into(),
            name: "a".into(),
        })
        .await,
        Code::FailedPrecondition,
        "is the primary of formation \"default\" already",
    );
    // The CLI: a refusal is the monitor's message and a failure exit.
    let out = pgpilot(&[
        "set",
        "node",
        "candidate-priority",
        "--monitor",
        uri,
        "--name",
        "b",
        "101",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the monitor refused") && err.contains("101"),
        "{err}"
    );

    assert_eq!(
        full_snapshot(uri, &mut c).await,
        before,
        "a refused request changed the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_needs_a_primary_and_a_standby() {
    let dir = TestDir::new("opsingle");
    let monitor = MonitorProc::start(&dir).await;
    let mut c = monitor.client().await;
    let uri = monitor.uri.clone();
    let switchover = pb::PerformSwitchoverRequest {
        formation: "default".into(),
        candidate: String::new(),
    };
    // No nodes at all.
    assert_refused(
        c.perform_switchover(switchover.clone()).await,
        Code::FailedPrecondition,
        "has no nodes yet",
    );
    // A single node.
    let a_pg = NodePg::create(&dir, "a").await;
    let a = register(&mut c, &monitor.join_token(), "a", a_pg.port).await;
    let mut ar = Report::of(&a, NodeState::Single);
    ar.system_identifier = a_pg.system_identifier().await;
    ar.send(&mut c).await;
    wait_probed(&c).await;
    let before = full_snapshot(&uri, &mut c).await;
    assert_refused(
        c.perform_switchover(switchover).await,
        Code::FailedPrecondition,
        "is single: a switchover needs a healthy primary in state primary",
    );
    assert_refused(
        c.perform_promotion(pb::PerformPromotionRequest {
            formation: "default".into(),
            name: "a".into(),
        })
        .await,
        Code::FailedPrecondition,
        "already",
    );
    let out = pgpilot(&["perform", "switchover", "--monitor", &uri, "--wait", "5"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the monitor refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(full_snapshot(&uri, &mut c).await, before);
}

/// One round of fake keepers that reach every goal at once: each reports
/// the goal it was last given. Returns whether every node already
/// reported its goal.
async fn keepers_round(c: &mut pgpilot_proto::client::Client, reports: &mut [&mut Report]) -> bool {
    let mut converged = true;
    for r in reports.iter_mut() {
        let (goal, _) = r.send(c).await;
        if goal != r.state {
            r.state = goal;
            converged = false;
        }
    }
    converged
}

/// `pgpilot ARGS` in the background while the fake keepers follow their
/// goals; returns its exit success and stdout.
async fn run_while_keepers_follow(
    args: &[&str],
    c: &mut pgpilot_proto::client::Client,
    reports: &mut [&mut Report],
) -> (bool, String) {
    let mut child = crate::support::pgpilot_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pgpilot {args:?} hangs"
        );
        keepers_round(c, reports).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.success(), out)
}

fn get(uri: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--monitor", uri, "--json"]);
    serde_json::from_str(&pgpilot_ok(&all)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_settings_change_the_reads() {
    let dir = TestDir::new("opset");
    let Bootstrapped {
        monitor,
        a_pg: _a_pg,
        b_pg: _b_pg,
        mut c,
        mut a,
        mut b,
        ..
    } = bootstrapped(&dir).await;
    let uri = monitor.uri.clone();
    let uri = uri.as_str();

    // candidate priority: the CLI's --json answer parses, `get` follows.
    assert_eq!(
        get(uri, &["node", "candidate-priority", "--name", "b"])["candidate_priority"],
        50
    );
    let out = pgpilot_ok(&[
        "set",
        "node",
        "candidate-priority",
        "--monitor",
        uri,
        "--name",
        "b",
        "70",
        "--json",
        "--wait",
        "0",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "accepted", "{v}");
    let v = get(uri, &["node", "candidate-priority", "--name", "b"]);
    assert_eq!(v["candidate_priority"], 70, "{v}");
    assert_eq!(v["name"], "b");
    while !keepers_round(&mut c, &mut [&mut a, &mut b]).await {}

    // replication quorum: b leaves synchronous_standby_names. The CLI
    // follows the change until every node reached its goal, one JSON
    // object a line, the last one the result.
    let slot = pgpilot_proto::node_slot_name(b.node_id);
    let names = |uri: &str| {
        let out = pgpilot_ok(&["show", "standby-names", "--monitor", uri, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["synchronous_standby_names"].as_str().unwrap().to_string()
    };
    assert!(names(uri).contains(&slot), "{}", names(uri));
    assert_eq!(
        get(uri, &["node", "replication-quorum", "--name", "b"])["replication_quorum"],
        true
    );
    let (ok, out) = run_while_keepers_follow(
        &[
            "set",
            "node",
            "replication-quorum",
            "--monitor",
            uri,
            "--name",
            "b",
            "false",
            "--json",
            "--wait",
            "30",
        ],
        &mut c,
        &mut [&mut a, &mut b],
    )
    .await;
    assert!(ok, "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "result", "{out}");
    assert_eq!(last["status"], "done", "{out}");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["type"] == "event"),
        "{out}"
    );
    assert!(!names(uri).contains(&slot), "{}", names(uri));
    assert_eq!(
        get(uri, &["node", "replication-quorum", "--name", "b"])["replication_quorum"],
        false
    );
    assert_eq!(
        get(uri, &["formation", "number-sync-standbys"])["number_sync_standbys"],
        0
    );

    // Nobody follows the goals now: the CLI gives up after --wait and
    // says where it stopped.
    let out = pgpilot(&[
        "set",
        "node",
        "replication-quorum",
        "--monitor",
        uri,
        "--name",
        "b",
        "true",
        "--wait",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("timed out after 2 s") && err.contains("where it stopped: a (node"),
        "{err}"
    );
}
