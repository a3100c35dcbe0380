//! What the other nodes and the monitor may reach: the keeper's block of
//! pg_hba.conf (by address, looked up from host names) and a replication
//! slot for every other node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use pgpilot_proto::{node_slot_name, Lsn, NodeState};

use super::Agent;
use crate::pg::{hba, sql};

/// When each other node's host name was last resolved, and to what.
pub(super) type Resolved = HashMap<String, (Instant, Vec<IpAddr>)>;

impl Agent {
    pub(super) async fn reconcile_access(&mut self) -> anyhow::Result<()> {
        if !self.pg.has_pgdata() {
            return Ok(());
        }
        self.reconcile_hba().await?;
        if self.pg.is_running() {
            self.reconcile_slots().await?;
        }
        Ok(())
    }

    pub(super) async fn reconcile_hba(&mut self) -> anyhow::Result<()> {
        let hosts: Vec<String> = match self.engine.last_reply() {
            Some(r) => r.other_nodes.iter().map(|n| n.host.clone()).collect(),
            None => Vec::new(),
        };
        let mut others = Vec::new();
        for host in hosts {
            // Looked up once a minute, bounded, and remembered: this runs
            // every round, and a DNS hiccup must neither stall the loop nor
            // flip pg_hba.conf between addresses and the bare host name.
            let known = self.resolved.get(&host).cloned();
            let ips = match known {
                Some((at, ips)) if at.elapsed() < RESOLVE_EVERY => ips,
                _ => {
                    let fresh = resolve_ips(&host).await;
                    if fresh.is_empty() {
                        known.map(|(_, ips)| ips).unwrap_or_default()
                    } else {
                        self.resolved
                            .insert(host.clone(), (Instant::now(), fresh.clone()));
                        fresh
                    }
                }
            };
            others.extend(hba::hba_address(&host, &ips));
        }
        let lines = hba::managed_lines(&others, &self.monitor_addrs, self.config.auth);
        self.pg.write_hba(&lines).await
    }

    /// A slot for every other node, on the primary and on standbys alike,
    /// so that whoever is promoted already keeps the WAL the others need.
    /// On a standby the slots do not advance by themselves: they are moved
    /// to what each node reported.
    async fn reconcile_slots(&mut self) -> anyhow::Result<()> {
        let Some(reply) = self.engine.last_reply() else {
            return Ok(());
        };
        let wanted: Vec<(String, Lsn)> = reply
            .other_nodes
            .iter()
            .filter(|n| NodeState::from_wire(n.assigned_state) != Ok(NodeState::Dropped))
            .map(|n| (node_slot_name(n.node_id), Lsn(n.lsn)))
            .collect();
        let mut c = self.pg.connect().await?;
        let in_recovery = sql::in_recovery(&mut c).await?;
        let existing = sql::pgpilot_slots(&mut c).await?;
        for (name, lsn) in &wanted {
            if !existing.iter().any(|(n, _)| n == name) {
                sql::create_slot(&mut c, name).await?;
                tracing::info!("created replication slot {name}");
            } else if in_recovery && lsn.0 > 0 {
                sql::advance_slot(&mut c, name, *lsn).await?;
            }
        }
        for (name, active) in existing {
            if !active && !wanted.iter().any(|(n, _)| *n == name) {
                sql::drop_slot(&mut c, &name).await?;
                tracing::info!("dropped replication slot {name}: no such node any more");
            }
        }
        Ok(())
    }
}

/// How long one host name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the other nodes' host names are looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// The addresses of a host name; empty when it does not resolve in time.
async fn resolve_ips(host: &str) -> Vec<std::net::IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    }
}

/// pg_hba.conf addresses for a host name.
async fn resolve(host: &str) -> Vec<String> {
    hba::hba_address(host, &resolve_ips(host).await)
}

pub(super) async fn monitor_addresses(uri: &str) -> Vec<String> {
    let host = uri
        .split("://")
        .nth(1)
        .unwrap_or(uri)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, _)) => h,
        None => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Vec::new();
    }
    resolve(host).await
}
