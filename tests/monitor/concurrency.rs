//! Many simultaneous reports for one group, racing a failover, never
//! produce two nodes with a writable goal: checked over the whole committed
//! history (the event log), not only at the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgpilot_proto::NodeState;

use crate::keeper::{bootstrap, event_goals};
use crate::support::{MonitorProc, NodePg, TestDir};

/// A tiny deterministic generator; the seed is printed on failure.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_never_make_two_writable_nodes() {
    let dir = TestDir::new("concurrency");
    let monitor = MonitorProc::start(&dir).await;
    let mut a_pg = NodePg::create(&dir, "a").await;
    let b_pg = NodePg::create(&dir, "b").await;
    let mut c = monitor.client().await;
    let sysid = a_pg.system_identifier().await;
    let (a_report, b_report) =
        bootstrap(&mut c, &monitor.join_token(), a_pg.port, b_pg.port, sysid).await;

    // A's Postgres dies; its keeper keeps racing reports that flip between
    // "running" and "down", while B's keeper races reports of lost
    // replication. Every keeper follows the goals it is given.
    a_pg.crash().await;
    let reports = Arc::new(Mutex::new(vec![a_report, b_report]));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let mut c = c.clone();
        let reports = reports.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(0x5eed + task);
            while started.elapsed() < Duration::from_secs(8) {
                let i = (rng.next() % 2) as usize;
                let mut r = reports.lock().unwrap()[i].clone();
                if i == 0 {
                    r.pg_running = rng.chance(30);
                } else {
                    r.upstream_silent_ms = Some(if rng.chance(70) { 5_000 } else { 0 });
                }
                match c.node_active(r.signed()).await {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        let goal = NodeState::from_wire(reply.assigned_state).unwrap();
                        let mut all = reports.lock().unwrap();
                        // The keeper "executes" its goal and reports it next time.
                        all[i].state = goal;
                        all[i].generation_seen = all[i].generation_seen.max(reply.generation);
                    }
                    // Racing tasks report states that another task already
                    // moved past: refusing those is correct.
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}")
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut goals: HashMap<i64, String> = HashMap::new();
    let history = event_goals(&monitor.uri);
    assert!(
        history.len() > 10,
        "too few events to mean anything: {history:?}"
    );
    for (step, (node, goal)) in history.iter().enumerate() {
        goals.insert(*node, goal.clone());
        let writable: Vec<_> = goals
            .iter()
            .filter(|(_, g)| g.parse::<NodeState>().is_ok_and(|s| s.accepts_writes()))
            .collect();
        assert!(
            writable.len() <= 1,
            "two writable goals after event {step}: {writable:?}\n{history:#?}"
        );
    }
    // The race ended in a failover: B took over.
    assert!(
        history.iter().any(|(_, g)| g == "prepare_promotion"),
        "{history:#?}"
    );
}
