//! Names and properties of node states (DESIGN.md section 4).
//!
//! The enum itself is generated from the proto file ([`crate::pb::NodeState`]);
//! this module gives it the lowercase names used in output, the store and
//! events, and the properties the monitor and the CLI derive from a state.

use std::fmt;
use std::str::FromStr;

use crate::pb::NodeState;

/// Every state, in the order of DESIGN.md section 4 (unspecified excluded).
pub const ALL_STATES: [NodeState; 20] = [
    NodeState::Init,
    NodeState::Single,
    NodeState::WaitPrimary,
    NodeState::Primary,
    NodeState::ApplySettings,
    NodeState::Draining,
    NodeState::DemoteTimeout,
    NodeState::Demoted,
    NodeState::WaitStandby,
    NodeState::Catchingup,
    NodeState::Secondary,
    NodeState::PreparePromotion,
    NodeState::StopReplication,
    NodeState::ReportLsn,
    NodeState::FastForward,
    NodeState::JoinSecondary,
    NodeState::WaitMaintenance,
    NodeState::PrepareMaintenance,
    NodeState::Maintenance,
    NodeState::Dropped,
];

/// What a client connecting to a node in this state can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    ReadWrite,
    ReadOnly,
    None,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::ReadWrite => "read-write",
            Connection::ReadOnly => "read-only",
            Connection::None => "none",
        })
    }
}

impl NodeState {
    /// The lowercase name used in output, the store and events.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Unspecified => "unspecified",
            NodeState::Init => "init",
            NodeState::Single => "single",
            NodeState::WaitPrimary => "wait_primary",
            NodeState::Primary => "primary",
            NodeState::ApplySettings => "apply_settings",
            NodeState::Draining => "draining",
            NodeState::DemoteTimeout => "demote_timeout",
            NodeState::Demoted => "demoted",
            NodeState::WaitStandby => "wait_standby",
            NodeState::Catchingup => "catchingup",
            NodeState::Secondary => "secondary",
            NodeState::PreparePromotion => "prepare_promotion",
            NodeState::StopReplication => "stop_replication",
            NodeState::ReportLsn => "report_lsn",
            NodeState::FastForward => "fast_forward",
            NodeState::JoinSecondary => "join_secondary",
            NodeState::WaitMaintenance => "wait_maintenance",
            NodeState::PrepareMaintenance => "prepare_maintenance",
            NodeState::Maintenance => "maintenance",
            NodeState::Dropped => "dropped",
        }
    }

    /// Whether Postgres in this state accepts writes (DESIGN.md section 4).
    pub fn accepts_writes(self) -> bool {
        matches!(
            self,
            NodeState::Single
                | NodeState::WaitPrimary
                | NodeState::Primary
                | NodeState::ApplySettings
        )
    }

    /// Whether PostgreSQL in this state must run in recovery: a standby's
    /// state under which no step ever promotes it (prepare_promotion and
    /// stop_replication are not, a promotion runs under them; stopped
    /// states are not either). Out of recovery in one of these, a node
    /// takes writes nobody assigned it: a leadership conflict, which the
    /// monitor records and the keeper fences.
    pub fn requires_recovery(self) -> bool {
        matches!(
            self,
            NodeState::Catchingup
                | NodeState::Secondary
                | NodeState::ReportLsn
                | NodeState::FastForward
                | NodeState::WaitMaintenance
        )
    }

    /// What clients get from a node that reports this state.
    pub fn connection(self) -> Connection {
        match self {
            s if s.accepts_writes() => Connection::ReadWrite,
            NodeState::Catchingup
            | NodeState::Secondary
            | NodeState::PreparePromotion
            | NodeState::StopReplication
            | NodeState::ReportLsn
            | NodeState::FastForward
            | NodeState::WaitMaintenance => Connection::ReadOnly,
            _ => Connection::None,
        }
    }

    /// Whether Postgres runs in this state: the keeper restarts it if it
    /// dies, and the monitor's model of the keeper relies on the same list.
    /// Exactly the states in which clients can connect.
    pub fn wants_running(self) -> bool {
        self.connection() != Connection::None
    }

    /// Decodes a wire value; unknown numbers are an error, not a default.
    pub fn from_wire(value: i32) -> Result<Self, UnknownState> {
        match NodeState::try_from(value) {
            Ok(NodeState::Unspecified) | Err(_) => Err(UnknownState(value.to_string())),
            Ok(s) => Ok(s),
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A state name or number that is not one of [`ALL_STATES`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown node state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for NodeState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES
            .iter()
            .copied()
            .find(|state| state.name() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// For typed store rows: a state stored by its wire name.
impl TryFrom<String> for NodeState {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ALL_STATES {
            assert_eq!(s.name().parse::<NodeState>().unwrap(), s);
            assert_eq!(NodeState::from_wire(s as i32).unwrap(), s);
        }
        assert!("unspecified".parse::<NodeState>().is_err());
        assert!(NodeState::from_wire(0).is_err());
        assert!(NodeState::from_wire(99).is_err());
    }

    #[test]
    fn connection_kinds() {
        assert_eq!(NodeState::Primary.connection(), Connection::ReadWrite);
        assert_eq!(
            NodeState::StopReplication.connection(),
            Connection::ReadOnly
        );
        assert_eq!(NodeState::Demoted.connection(), Connection::None);
    }
}
