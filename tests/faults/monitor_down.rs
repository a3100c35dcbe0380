//! Scenario f: the monitor down for 30 s (its process SIGKILLed; its
//! PostgreSQL goes with it), while the standby streams: no role change,
//! writes go on, and once the monitor is back the states are the same.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

const DOWN: Duration = Duration::from_secs(30);
/// The longest the writer may go without a commit while the monitor is
/// away: nothing should wait on it at all (the writer commits every 50
/// ms); this leaves room for a loaded machine.
const GAP_AT_MOST: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn f_monitor_killed_for_30_s_changes_nothing() {
    repeat("f_monitor_killed", |round| async move {
        let mut c = Cluster::start(&format!("f-f{round}")).await;
        let a_port = c.a.port;
        let pm = (c.a.postmaster_pid(), c.b.postmaster_pid());
        let before = node_states(&mut c.monitor.client().await).await;
        let promoted_before = promotions(&c.monitor).await;
        let killed = Instant::now();
        let _ = c.monitor.child.kill();
        let _ = c.monitor.child.wait();
        tokio::time::sleep(DOWN).await;
        assert_eq!((c.a.postmaster_pid(), c.b.postmaster_pid()), pm);
        let back = Instant::now();
        c.monitor.restart().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(node_states(&mut c.monitor.client().await).await, before);
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        let out = c.finish("a", 1).await;
        let during = out.acks_on(a_port, killed, back);
        let gap = out.longest_gap(killed);
        eprintln!(
            "scenario f: {during} commits on a while the monitor was down {} s; longest write \
             gap {} ms; {} failed writer attempts",
            DOWN.as_secs(),
            gap.as_millis(),
            out.failures_since(killed)
        );
        assert_eq!(out.failures_since(killed), 0, "no write failed");
        assert!(gap <= GAP_AT_MOST, "writes paused {gap:?}");
    })
    .await;
}

/// The postmaster of the monitor's private PostgreSQL.
fn monitor_postmaster(monitor: &MonitorProc) -> i32 {
    let text = std::fs::read_to_string(monitor.pgdata.join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// f, the monitor's PostgreSQL instead: stopped (fast shutdown; the
/// monitor supervises it and starts it again at once, so it cannot stay
/// stopped for 30 s), then unavailable for 30 s (its postmaster and
/// every backend SIGSTOPped, the monitor process running: every query
/// of the monitor hangs). No role change, writes go on, and once it
/// answers again the states are the same.
#[tokio::test(flavor = "multi_thread")]
async fn f_monitor_postgres_stopped_then_unavailable_for_30_s_changes_nothing() {
    repeat("f_monitor_postgres_down", |round| async move {
        let c = Cluster::start(&format!("f-f2{round}")).await;
        let a_port = c.a.port;
        let pm = (c.a.postmaster_pid(), c.b.postmaster_pid());
        let before = node_states(&mut c.monitor.client().await).await;
        let promoted_before = promotions(&c.monitor).await;
        let fault = Instant::now();
        let old = monitor_postmaster(&c.monitor);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let new = eventually("the monitor restarts its PostgreSQL", STEP, || async {
            let pid = std::fs::read_to_string(c.monitor.pgdata.join("postmaster.pid")).ok()?;
            let ready = pid.lines().last().is_some_and(|l| l.trim() == "ready");
            let pid: i32 = pid.lines().next()?.trim().parse().ok()?;
            (pid != old && ready && !dead(pid)).then_some(pid)
        })
        .await;
        let restarted = fault.elapsed();
        let mut frozen = Frozen::default();
        frozen.stop(new);
        let mut pids = vec![new];
        for _ in 0..10 {
            let more: Vec<i32> = children_of(new)
                .into_iter()
                .filter(|p| !pids.contains(p))
                .collect();
            if more.is_empty() {
                break;
            }
            for p in more {
                frozen.stop(p);
                pids.push(p);
            }
        }
        tokio::time::sleep(DOWN).await;
        assert_eq!((c.a.postmaster_pid(), c.b.postmaster_pid()), pm);
        let back = Instant::now();
        for p in pids.iter().rev() {
            frozen.resume(*p);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(node_states(&mut c.monitor.client().await).await, before);
        assert_eq!(promotions(&c.monitor).await, promoted_before, "no failover");
        let out = c.finish("a", 1).await;
        let during = out.acks_on(a_port, fault, back);
        let gap = out.longest_gap(fault);
        eprintln!(
            "scenario f (monitor's PostgreSQL): restarted by the monitor {} ms after the stop, \
             then frozen {} s; {during} commits on a meanwhile; longest write gap {} ms; {} \
             failed writer attempts",
            restarted.as_millis(),
            DOWN.as_secs(),
            gap.as_millis(),
            out.failures_since(fault)
        );
        assert_eq!(out.failures_since(fault), 0, "no write failed");
        assert!(gap <= GAP_AT_MOST, "writes paused {gap:?}");
    })
    .await;
}
