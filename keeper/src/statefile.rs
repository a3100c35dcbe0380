//! The keeper's state file, `PGDATA.pgpilot/keeper.state.json`.
//!
//! `current` is the last state the keeper *reached*: it is written only
//! after a transition succeeded, so a keeper killed halfway re-runs the
//! transition (every step is idempotent) instead of claiming a state its
//! PostgreSQL is not in.

use std::path::Path;

use anyhow::Context;
use pgpilot_proto::NodeState;
use serde::{Deserialize, Serialize};

use crate::files::{state_path, write_durably};

/// How the last rejoin got this node's data in line with the new primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinRecord {
    /// "pg_rewind" or "pg_basebackup".
    pub method: String,
    /// The generation of the group when it happened.
    pub generation: i64,
    /// What pg_rewind or the fallback discarded, as it said it.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperState {
    pub node_id: i64,
    pub group_id: i32,
    pub name: String,
    /// The last state reached (wire name, e.g. "secondary").
    #[serde(with = "state_name")]
    pub current: NodeState,
    /// The last goal the monitor assigned.
    #[serde(with = "state_name")]
    pub assigned: NodeState,
    /// Highest group generation seen: goals of older generations are ignored.
    pub generation_seen: i64,
    #[serde(default)]
    pub last_rejoin: Option<RejoinRecord>,
    /// The node this standby was last configured to stream from. When the
    /// monitor names another one (after a failover), the standby may hold
    /// WAL the new primary never had: it is rewound before it follows.
    #[serde(default)]
    pub following: Option<i64>,
}

impl KeeperState {
    /// The state file, or `None` before the node registered.
    pub fn load(pgdata: &Path) -> anyhow::Result<Option<KeeperState>> {
        let path = state_path(pgdata);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let state = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged: restore it, or drop the node from the monitor and re-create it",
                path.display()
            )
        })?;
        Ok(Some(state))
    }

    pub fn save(&self, pgdata: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("serialize the keeper state")?;
        write_durably(&state_path(pgdata), text.as_bytes(), 0o600)
    }
}

mod state_name {
    use pgpilot_proto::NodeState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &NodeState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<NodeState, D::Error> {
        let name = String::deserialize(de)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_damage() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("n");
        std::fs::create_dir_all(crate::files::state_dir(&pgdata)).unwrap();
        assert_eq!(KeeperState::load(&pgdata).unwrap(), None);
        let s = KeeperState {
            node_id: 3,
            group_id: 0,
            name: "node_3".into(),
            current: NodeState::WaitPrimary,
            assigned: NodeState::Primary,
            generation_seen: 2,
            last_rejoin: None,
            following: None,
        };
        s.save(&pgdata).unwrap();
        let text = std::fs::read_to_string(state_path(&pgdata)).unwrap();
        assert!(text.contains("\"wait_primary\""), "{text}");
        assert_eq!(KeeperState::load(&pgdata).unwrap(), Some(s));
        std::fs::write(state_path(&pgdata), "{").unwrap();
        let err = format!("{:#}", KeeperState::load(&pgdata).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
    }
}
