//! Bad input gets a clear error and leaves the store unchanged.

use pgpilot_proto::pb;
use pgpilot_proto::NodeState;
use tonic::Code;

use crate::keeper::{
    bootstrapped, event_descriptions, register_request, signed, Bootstrapped, Report,
};
use crate::support::{path_str, pgpilot, MonitorProc, TestDir};

/// Everything an operator can see: every node's full JSON and every event.
pub fn snapshot(uri: &str) -> (serde_json::Value, Vec<String>) {
    let out = crate::support::pgpilot_ok(&["show", "state", "--monitor", uri, "--json"]);
    let mut nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Heartbeat fields move with time, not with the refused request.
    for n in nodes.as_array_mut().unwrap() {
        n.as_object_mut().unwrap().remove("last_report");
        n.as_object_mut().unwrap().remove("health");
        n.as_object_mut().unwrap().remove("connection");
    }
    (nodes, event_descriptions(uri))
}

pub fn assert_refused(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    needle: &str,
) {
    let status = result.expect_err("the monitor accepted bad input");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "error {:?} does not mention {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_change_nothing() {
    let dir = TestDir::new("badinput");
    // Only the refused requests below may change anything from here.
    let Bootstrapped {
        monitor,
        a_pg,
        mut c,
        sysid,
        join,
        a: a_report,
        b: b_report,
        b_pg: _b_pg_held,
        ..
    } = bootstrapped(&dir).await;
    let uri = monitor.uri.as_str();
    let before = snapshot(uri);

    // Unknown node id: no credential can exist for it.
    let mut r = Report::new(999, NodeState::Secondary);
    r.credential = pgpilot_proto::credential::Credential::Node {
        node_id: 999,
        secret: pgpilot_proto::credential::Credential::new_secret(),
    }
    .token();
    assert_refused(
        c.node_active(r.signed()).await,
        Code::Unauthenticated,
        "not registered",
    );
    // Node a's credential reporting for node 999.
    assert_refused(
        c.node_active(a_report.sign(r.request())).await,
        Code::PermissionDenied,
        "cannot act for node 999",
    );
    // A state the node cannot be in: a secondary claiming to be primary.
    r = b_report.clone();
    r.state = NodeState::Primary;
    assert_refused(
        c.node_active(r.signed()).await,
        Code::FailedPrecondition,
        "reported primary",
    );
    // A state number that does not exist.
    let mut req = b_report.request();
    req.reported_state = 99;
    assert_refused(
        c.node_active(b_report.sign(req)).await,
        Code::InvalidArgument,
        "unknown node state",
    );
    // A generation from the future.
    r = b_report.clone();
    r.generation_seen = 7;
    assert_refused(
        c.node_active(r.signed()).await,
        Code::FailedPrecondition,
        "generation 7",
    );
    // A PGDATA of another cluster.
    r = a_report.clone();
    r.system_identifier = sysid ^ 1;
    assert_refused(
        c.node_active(r.signed()).await,
        Code::FailedPrecondition,
        "system identifier",
    );
    // Duplicate name.
    let mut reg = register_request("a", 1);
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::AlreadyExists,
        "already has a node named \"a\"",
    );
    // Duplicate host:port.
    reg = register_request("c", a_pg.port);
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::AlreadyExists,
        "already registered as node",
    );
    // A different database cluster joining the group.
    reg = register_request("c", 2);
    reg.system_identifier = sysid ^ 1;
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::FailedPrecondition,
        "different database cluster",
    );
    // Unknown formation.
    reg = register_request("c", 2);
    reg.formation = "nope".into();
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::NotFound,
        "formation \"nope\" does not exist",
    );
    // Nonsense fields.
    reg = register_request("c", 2);
    reg.candidate_priority = 101;
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::InvalidArgument,
        "candidate priority 101",
    );
    reg = register_request("c", 0);
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::InvalidArgument,
        "port 0",
    );
    reg = register_request("c", 2);
    reg.initial_state = NodeState::Primary as i32;
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::InvalidArgument,
        "initial state",
    );
    reg = register_request("c", 2);
    reg.dbname = "other".into();
    assert_refused(
        c.register(signed(reg.clone(), &join)).await,
        Code::FailedPrecondition,
        "serves database \"postgres\"",
    );
    // Reads of an unknown formation.
    assert_refused(
        c.show_state(pb::ShowStateRequest {
            formation: "nope".into(),
        })
        .await,
        Code::NotFound,
        "does not exist",
    );

    assert_eq!(snapshot(uri), before, "a refused request changed the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_monitor_refuses_foreign_dirs_and_is_idempotent() {
    let dir = TestDir::new("createmon");
    // A directory with someone else's file.
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("important.txt"), "keep me").unwrap();
    let out = pgpilot(&[
        "create",
        "monitor",
        "--pgdata",
        path_str(&foreign),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not empty and is not a pgpilot monitor"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("important.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);

    // A running monitor's DIR: a second create says so and changes nothing.
    let monitor = MonitorProc::start(&dir).await;
    let config = std::fs::read(
        monitor
            .pgdata
            .with_file_name("monitor.pgpilot")
            .join("monitor.toml"),
    )
    .unwrap();
    let out = crate::support::pgpilot_ok(&[
        "create",
        "monitor",
        "--pgdata",
        path_str(&monitor.pgdata),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(out.contains("already exists; nothing changed"), "{out}");
    let after = std::fs::read(
        monitor
            .pgdata
            .with_file_name("monitor.pgpilot")
            .join("monitor.toml"),
    )
    .unwrap();
    assert_eq!(config, after);

    // The show commands find the monitor through its --pgdata too.
    let out = crate::support::pgpilot_ok(&[
        "show",
        "uri",
        "--pgdata",
        path_str(&monitor.pgdata),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["type"], "monitor");
    assert_eq!(v[0]["uri"], monitor.uri.as_str());

    // No target at all: a clear error.
    let out = pgpilot(&["show", "state"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--monitor"));

    // SIGTERM: a clean exit, and the private PostgreSQL is stopped too.
    let mut monitor = monitor;
    let status = monitor.stop();
    assert!(
        status.success(),
        "monitor exited with {status}: {}",
        monitor.stderr()
    );
    assert!(
        !monitor.pgdata.join("postmaster.pid").exists(),
        "the monitor's PostgreSQL is still running"
    );
    // And it starts again from its directory alone.
    let port = monitor.port;
    let mut again = std::process::Command::new(crate::support::pgpilot_bin())
        .args(["run", "--pgdata", path_str(&monitor.pgdata)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let uri = format!("https://127.0.0.1:{port}");
    let auth = monitor.auth();
    let state = crate::support::eventually(
        "restarted monitor answers",
        std::time::Duration::from_secs(60),
        || {
            let (uri, auth) = (uri.clone(), auth.clone());
            async move { pgpilot_proto::client::connect(&uri, &auth).await.ok() }
        },
    )
    .await;
    drop(state);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(again.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(crate::support::wait_child(&mut again, std::time::Duration::from_secs(60)).success());
}
