//! The health prober: every probe interval, a connection handshake to each
//! node's Postgres (with timeout and retries), then a tick of every group
//! so that rules driven by time alone (silence, lease expiry, stall) fire
//! even when no keeper reports.

pub mod probe;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Timings;
use crate::control::{Control, ProbeResult};
use crate::fsm::Health;
use crate::metrics::Metrics;
use probe::{timed_probe, ProbeOutcome};

/// Runs until `cancel` fires.
pub async fn run_prober(control: Control, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(control.timings.probe_interval);
    // A round that overruns (black-holed hosts) delays the next one rather
    // than firing a burst of rounds to catch up.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = probe_round(&control, &cancel).await {
            tracing::warn!("failed to run a probe round: {e:#}");
        }
        // The prober is the monitor's loop: a round that hangs stops the
        // keep-alives, and systemd (WatchdogSec=) restarts the monitor.
        pgpilot_pgproc::systemd::watchdog_ping();
    }
}

async fn probe_round(control: &Control, cancel: &CancellationToken) -> anyhow::Result<()> {
    let nodes = control.store.nodes(None).await?;
    let mut probes = JoinSet::new();
    for node in nodes {
        let timings = (*control.timings).clone();
        let metrics = control.metrics.clone();
        probes.spawn(async move {
            let port = u16::try_from(node.port).unwrap_or(0);
            probe_node(node.node_id, &node.host, port, &timings, &metrics).await
        });
    }
    while let Some(joined) = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        joined = probes.join_next() => joined,
    } {
        let result = joined?;
        if let Err(e) = control.record_probe(result, crate::clock::now()).await {
            tracing::warn!("failed to record a probe result: {e:#}");
        }
    }
    for (formation, group_id) in control.store.groups().await? {
        if let Err(e) = control
            .tick(&formation, group_id, crate::clock::now())
            .await
        {
            tracing::warn!(%formation, group_id, "failed to run the group state machine: {e:#}");
        }
    }
    Ok(())
}

/// One round for one node: good at the first handshake that succeeds, bad
/// when every attempt failed. Every attempt's latency goes to `metrics`.
pub async fn probe_node(
    node_id: i64,
    host: &str,
    port: u16,
    timings: &Timings,
    metrics: &Metrics,
) -> ProbeResult {
    let attempts = timings.probe_retries + 1;
    let mut last = String::new();
    for attempt in 1..=attempts {
        let (outcome, took) = timed_probe(host, port, timings.probe_timeout).await;
        metrics.probe(outcome.label(), took);
        match outcome {
            ProbeOutcome::Accepting => {
                return ProbeResult {
                    node_id,
                    health: Health::Good,
                    detail: format!("connection handshake with {host}:{port} succeeded"),
                }
            }
            ProbeOutcome::Rejecting(why) | ProbeOutcome::NoResponse(why) => last = why,
        }
        if attempt < attempts {
            tokio::time::sleep(timings.probe_retry_delay).await;
        }
    }
    ProbeResult {
        node_id,
        health: Health::Bad,
        detail: format!(
            "{attempts} connection attempts to {host}:{port} failed, the last with: {last}"
        ),
    }
}

/// How long one round can take for one node at most.
pub fn worst_round(timings: &Timings) -> Duration {
    let attempts = timings.probe_retries + 1;
    timings.probe_timeout * attempts + timings.probe_retry_delay * (attempts - 1)
}
