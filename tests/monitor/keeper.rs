//! A keeper driven by hand: registration and NodeActive reports.

use pgpilot_proto::pb;
use pgpilot_proto::NodeState;

/// What one report says; tests change the fields they care about.
#[derive(Clone, Debug)]
pub struct Report {
    pub node_id: i64,
    pub state: NodeState,
    pub generation_seen: i64,
    pub pg_running: bool,
    pub tli: u32,
    pub lsn: u64,
    pub replication_state: String,
    pub upstream_silent_ms: Option<u64>,
    pub system_identifier: u64,
    pub transition_error: String,
    /// The node's own credential, as Register gave it ("" for a node
    /// that never registered).
    pub credential: String,
}

/// A credential to sign requests with, whatever the client's own.
pub fn signed<T>(msg: T, token: &str) -> tonic::Request<T> {
    pgpilot_proto::client::with_credential(msg, token).unwrap()
}

impl Report {
    /// The reports of the node `reg` registered.
    pub fn of(reg: &pb::RegisterResponse, state: NodeState) -> Report {
        Report {
            credential: reg.node_credential.clone(),
            ..Report::new(reg.node_id, state)
        }
    }

    /// Reports of node `node_id` with no credential (a node that never
    /// registered); see [`Report::of`].
    pub fn new(node_id: i64, state: NodeState) -> Report {
        Report {
            credential: String::new(),
            node_id,
            state,
            generation_seen: 1,
            pg_running: true,
            tli: 1,
            lsn: 0x300_0000,
            replication_state: String::new(),
            upstream_silent_ms: None,
            system_identifier: 0,
            transition_error: String::new(),
        }
    }

    pub fn request(&self) -> pb::NodeActiveRequest {
        pb::NodeActiveRequest {
            node_id: self.node_id,
            reported_state: self.state as i32,
            generation_seen: self.generation_seen,
            pg_running: self.pg_running,
            timeline: self.tli,
            lsn: self.lsn,
            replication_state: self.replication_state.clone(),
            wal_receiver: Some(pb::WalReceiver {
                streaming: self.upstream_silent_ms.is_some_and(|ms| ms < 1000),
                upstream_silent_ms: self.upstream_silent_ms,
            }),
            system_identifier: self.system_identifier,
            transition_error: self.transition_error.clone(),
            status_unknown: false,
            shutdown_lsn: None,
            in_recovery: None,
            ..Default::default()
        }
    }

    /// `msg` with this node's credential.
    pub fn sign<T>(&self, msg: T) -> tonic::Request<T> {
        if self.credential.is_empty() {
            return tonic::Request::new(msg);
        }
        signed(msg, &self.credential)
    }

    /// The report with this node's credential.
    pub fn signed(&self) -> tonic::Request<pb::NodeActiveRequest> {
        self.sign(self.request())
    }

    /// Sends the report; returns the assigned state and the whole reply.
    pub async fn send(
        &self,
        client: &mut pgpilot_proto::client::Client,
    ) -> (NodeState, pb::NodeActiveResponse) {
        let reply = client
            .node_active(self.signed())
            .await
            .unwrap_or_else(|e| panic!("report {self:?} refused: {e}"))
            .into_inner();
        (NodeState::from_wire(reply.assigned_state).unwrap(), reply)
    }
}

pub fn register_request(name: &str, port: u16) -> pb::RegisterRequest {
    pb::RegisterRequest {
        formation: "default".into(),
        name: name.into(),
        host: "127.0.0.1".into(),
        port: u32::from(port),
        dbname: "postgres".into(),
        system_identifier: 0,
        candidate_priority: 50,
        replication_quorum: true,
        initial_state: NodeState::Init as i32,
    }
}

/// Registers with the formation's join token (`join`).
pub async fn register(
    client: &mut pgpilot_proto::client::Client,
    join: &str,
    name: &str,
    port: u16,
) -> pb::RegisterResponse {
    client
        .register(signed(register_request(name, port), join))
        .await
        .unwrap_or_else(|e| panic!("register {name} refused: {e}"))
        .into_inner()
}

/// `pgpilot show state --json` as (name, reported, assigned) triples.
pub fn show_state(monitor_uri: &str) -> Vec<(String, String, String)> {
    let out = crate::support::pgpilot_ok(&["show", "state", "--monitor", monitor_uri, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["reported_state"].as_str().unwrap().to_string(),
                n["assigned_state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every event description the monitor has, oldest first.
pub fn event_descriptions(monitor_uri: &str) -> Vec<String> {
    let out = crate::support::pgpilot_ok(&[
        "show",
        "events",
        "--monitor",
        monitor_uri,
        "--count",
        "1000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap().to_string())
        .collect()
}

pub fn triple(name: &str, reported: &str, assigned: &str) -> (String, String, String) {
    (name.into(), reported.into(), assigned.into())
}

/// Registers A and B and drives them to primary / secondary.
/// Returns the two keepers' reports in their steady state.
pub async fn bootstrap(
    c: &mut pgpilot_proto::client::Client,
    join: &str,
    a_port: u16,
    b_port: u16,
    sysid: u64,
) -> (Report, Report) {
    let a = register(c, join, "a", a_port).await;
    let mut ar = Report::of(&a, NodeState::Single);
    ar.system_identifier = sysid;
    ar.send(c).await;
    let b = register(c, join, "b", b_port).await;
    let mut br = Report::of(&b, NodeState::WaitStandby);
    ar.state = NodeState::WaitPrimary;
    ar.send(c).await;
    assert_eq!(br.send(c).await.0, NodeState::Catchingup);
    br.state = NodeState::Catchingup;
    br.upstream_silent_ms = Some(0);
    br.system_identifier = sysid;
    assert_eq!(br.send(c).await.0, NodeState::Secondary);
    br.state = NodeState::Secondary;
    br.send(c).await;
    assert_eq!(ar.send(c).await.0, NodeState::Primary);
    ar.state = NodeState::Primary;
    ar.replication_state = "quorum".into();
    ar.send(c).await;
    (ar, br)
}

/// A monitor with a primary "a" and a secondary "b" (real PostgreSQL
/// servers, keepers driven by hand), both probed: from here on only what a
/// test does changes the store.
pub struct Bootstrapped {
    pub monitor: crate::support::MonitorProc,
    /// The servers run as long as these are held: destructure them into
    /// named bindings (`a_pg: _a_pg`), never `..`, or they stop at once.
    pub a_pg: crate::support::NodePg,
    #[allow(dead_code)]
    pub b_pg: crate::support::NodePg,
    pub c: pgpilot_proto::client::Client,
    /// The formation's join token.
    pub join: String,
    pub sysid: u64,
    pub a: Report,
    pub b: Report,
}

pub async fn bootstrapped(dir: &crate::support::TestDir) -> Bootstrapped {
    let monitor = crate::support::MonitorProc::start(dir).await;
    let a_pg = crate::support::NodePg::create(dir, "a").await;
    let b_pg = crate::support::NodePg::create(dir, "b").await;
    let mut c = monitor.client().await;
    let sysid = a_pg.system_identifier().await;
    let join = monitor.join_token();
    let (a, b) = bootstrap(&mut c, &join, a_pg.port, b_pg.port, sysid).await;
    wait_probed(&c).await;
    Bootstrapped {
        monitor,
        a_pg,
        b_pg,
        c,
        join,
        sysid,
        a,
        b,
    }
}

/// Waits until the monitor's probes have judged every node: health going
/// from unknown to good is a change no request caused, so tests that count
/// writes or events start after it.
pub async fn wait_probed(c: &pgpilot_proto::client::Client) {
    crate::support::eventually(
        "every node probed good",
        std::time::Duration::from_secs(60),
        || {
            let mut c = c.clone();
            async move {
                let state = c
                    .show_state(pb::ShowStateRequest::default())
                    .await
                    .ok()?
                    .into_inner();
                state.nodes.iter().all(|n| n.health == "good").then_some(())
            }
        },
    )
    .await;
}

/// Every event as (node id, assigned state), oldest first.
pub fn event_goals(monitor_uri: &str) -> Vec<(i64, String)> {
    let out = crate::support::pgpilot_ok(&[
        "show",
        "events",
        "--monitor",
        monitor_uri,
        "--count",
        "10000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node_id"].as_i64().unwrap(),
                e["assigned_state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
