//! Operator reads: state, events, URIs, settings. No writes.

use pgpilot_proto::{pb, NodeState};

use super::Control;
use crate::error::{MonitorError, Result};
use crate::fsm;
use crate::store::{host_port, u64_to_db};

/// Default number of events `show events` returns.
pub const DEFAULT_EVENT_COUNT: u32 = 10;
/// Upper bound on one `show events` answer.
const MAX_EVENT_COUNT: u32 = 10_000;

impl Control {
    pub(super) async fn check_formation(&self, formation: &str) -> Result<Option<String>> {
        if formation.is_empty() {
            return Ok(None);
        }
        if !self.store.formation_exists(formation).await? {
            return Err(MonitorError::NotFound(format!(
                "formation {formation:?} does not exist on this monitor"
            )));
        }
        Ok(Some(formation.to_string()))
    }

    /// The `/metrics` exposition: every group as the state machine would
    /// see it now (stored rows with the live reports overlaid), read
    /// without the groups' locks (a scrape may be a report behind; it
    /// never writes).
    pub async fn metrics_text(&self, now: fsm::Timestamp) -> Result<String> {
        let mut groups = Vec::new();
        for (formation, group_id) in self.store.groups().await? {
            if let Some(view) = self.read_view(&formation, group_id).await? {
                groups.push(view);
            }
        }
        Ok(self.metrics.encode(&groups, now, &self.core.cfg))
    }

    pub async fn show_state(&self, formation: &str) -> Result<pb::ShowStateResponse> {
        let formation = self.check_formation(formation).await?;
        let mut nodes = Vec::new();
        for mut row in self.store.nodes(formation.as_deref()).await? {
            // The freshest LSN and report time are in memory.
            let view = self.live.overlay(row.to_view()?);
            row.reported_lsn = u64_to_db(view.lsn.0);
            if self.live.get(row.node_id).is_some() {
                row.last_report = view.last_report;
            }
            nodes.push(row.to_status());
        }
        Ok(pb::ShowStateResponse { nodes })
    }

    pub async fn show_events(&self, formation: &str, count: u32) -> Result<pb::ShowEventsResponse> {
        let formation = self.check_formation(formation).await?;
        let count = if count == 0 {
            DEFAULT_EVENT_COUNT
        } else {
            count.min(MAX_EVENT_COUNT)
        };
        let events = self
            .store
            .events(formation.as_deref(), count)
            .await?
            .iter()
            .map(|e| e.to_pb())
            .collect();
        Ok(pb::ShowEventsResponse { events })
    }

    pub async fn show_uri(&self, formation: &str) -> Result<pb::ShowUriResponse> {
        let only = self.check_formation(formation).await?;
        let mut entries = Vec::new();
        if only.is_none() {
            // Said on every `show uri`: without TLS, credentials cross the
            // network in clear text.
            let name = if self.monitor_uri.starts_with("http://") {
                "monitor (no TLS: created with --no-ssl)"
            } else {
                "monitor"
            };
            entries.push(pb::UriEntry {
                r#type: "monitor".into(),
                name: name.into(),
                uri: self.monitor_uri.to_string(),
            });
        }
        let nodes = self.store.nodes(only.as_deref()).await?;
        for (name, dbname, _) in self.store.formations().await? {
            if only.as_ref().is_some_and(|o| *o != name) {
                continue;
            }
            let hosts: Vec<String> = nodes
                .iter()
                .filter(|n| n.formation == name && n.assigned_state != NodeState::Dropped)
                .map(|n| host_port(&n.host, n.port))
                .collect();
            if hosts.is_empty() && only.is_none() {
                continue;
            }
            entries.push(pb::UriEntry {
                r#type: "formation".into(),
                name: name.clone(),
                uri: format!(
                    // Every node runs with ssl=on (self-signed unless the
                    // operator gave certificates): require it; verify-full
                    // needs the CA, which applications add themselves.
                    "postgres://{}/{}?target_session_attrs=read-write&sslmode=require",
                    hosts.join(","),
                    dbname
                ),
            });
        }
        Ok(pb::ShowUriResponse { entries })
    }

    pub async fn show_settings(&self, formation: &str) -> Result<pb::ShowSettingsResponse> {
        let only = self.check_formation(formation).await?;
        let mut settings = Vec::new();
        for (name, _, nss) in self.store.formations().await? {
            if only.as_ref().is_some_and(|o| *o != name) {
                continue;
            }
            settings.push(setting(
                "formation",
                &name,
                "number_sync_standbys",
                nss.to_string(),
            ));
            // The generation, never the password: "3", or "3 (4 pending)"
            // while a rotation waits for the writable node's keeper.
            let g = self.store.passwords(&name).await?.generations();
            settings.push(setting(
                "formation",
                &name,
                "replication_password_generation",
                match g.pending {
                    Some(p) => format!("{} ({p} pending)", g.current),
                    None => g.current.to_string(),
                },
            ));
            for (f, group_id) in self.store.groups().await? {
                if f != name {
                    continue;
                }
                let Some(view) = self.read_view(&f, group_id).await? else {
                    continue;
                };
                if let Some(primary) = view.nodes.iter().find(|n| n.assigned.accepts_writes()) {
                    settings.push(setting(
                        "primary",
                        &primary.name,
                        "synchronous_standby_names",
                        format!("'{}'", fsm::synchronous_standby_names(&view)),
                    ));
                }
                for n in &view.nodes {
                    settings.push(setting(
                        "node",
                        &n.name,
                        "candidate_priority",
                        n.candidate_priority.to_string(),
                    ));
                    settings.push(setting(
                        "node",
                        &n.name,
                        "replication_quorum",
                        n.replication_quorum.to_string(),
                    ));
                }
            }
        }
        Ok(pb::ShowSettingsResponse { settings })
    }
}

fn setting(context: &str, name: &str, setting: &str, value: String) -> pb::Setting {
    pb::Setting {
        context: context.into(),
        name: name.into(),
        setting: setting.into(),
        value,
    }
}
