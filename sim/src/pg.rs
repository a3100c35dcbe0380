//! A simulated PostgreSQL: a write-ahead log of unique record ids, a
//! timeline, recovery or not, the settings the keeper writes, and
//! synchronous commit that honours synchronous_standby_names.

use std::collections::HashSet;

use pgpilot_keeper::plan::Role;

/// A cluster's data directory.
#[derive(Clone, Debug)]
pub struct Data {
    /// Record ids in WAL order. Commits and timeline switches each have a
    /// globally unique id, so two histories share a prefix exactly when
    /// one continues the other.
    pub wal: Vec<u64>,
    pub ids: HashSet<u64>,
    /// How much of `wal` a standby has replayed: what it received (flushed)
    /// is replayed one step later. Promotion waits for replay to finish.
    pub replayed: usize,
    pub tli: u32,
    /// standby.signal is present (the node starts in recovery).
    pub standby_signal: bool,
    /// What the keeper's settings file says.
    pub config: Role,
}

impl Data {
    pub fn new(config: Role) -> Data {
        Data {
            wal: Vec::new(),
            ids: HashSet::new(),
            replayed: 0,
            tli: 1,
            standby_signal: false,
            config,
        }
    }

    pub fn append(&mut self, id: u64) {
        self.wal.push(id);
        self.ids.insert(id);
        self.replayed = self.wal.len();
    }

    /// Replaces the WAL (a copy or a rewind).
    pub fn set_wal(&mut self, wal: &[u64], tli: u32) {
        self.wal = wal.to_vec();
        self.ids = wal.iter().copied().collect();
        self.replayed = self.wal.len();
        self.tli = tli;
    }

    /// Whether `self` can stream from `other`: its WAL is a prefix.
    pub fn is_prefix_of(&self, other: &Data) -> bool {
        self.wal.len() <= other.wal.len() && self.wal[..] == other.wal[..self.wal.len()]
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimPg {
    pub data: Option<Data>,
    pub running: bool,
    /// In recovery (a standby) while running.
    pub in_recovery: bool,
    /// Our WAL receiver streams from this node right now.
    pub streaming_from: Option<usize>,
    /// Sim time (ms) the WAL receiver last heard from its upstream.
    pub last_contact: Option<u64>,
    /// Our walsenders: standby index -> sim time (ms) of its last reply. A
    /// standby that went silent (frozen, machine down, cut off) stays
    /// listed until wal_sender_timeout, as PostgreSQL's does.
    pub walsenders: std::collections::BTreeMap<usize, u64>,
}

/// wal_sender_timeout as pgpilot configures it.
pub const WAL_SENDER_TIMEOUT_MS: u64 = 5000;

impl SimPg {
    /// Accepts writes: a running primary with default_transaction_read_only off.
    pub fn accepts_writes(&self) -> bool {
        self.running
            && !self.in_recovery
            && matches!(
                self.data.as_ref().map(|d| &d.config),
                Some(Role::Primary {
                    read_only: false,
                    ..
                })
            )
    }

    /// synchronous_standby_names in force, when it accepts writes.
    pub fn ssn(&self) -> Option<&str> {
        match self.data.as_ref().map(|d| &d.config) {
            Some(Role::Primary { ssn, .. }) => Some(ssn),
            _ => None,
        }
    }

    pub fn start(&mut self) -> Result<(), String> {
        let Some(d) = &self.data else {
            return Err("no data directory".into());
        };
        if !self.running {
            self.running = true;
            self.in_recovery = d.standby_signal;
            self.streaming_from = None;
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        self.running = false;
        self.streaming_from = None;
        self.walsenders.clear();
    }

    pub fn lsn(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.wal.len() as u64)
    }
}

/// (k, node ids) of `ANY k (pgpilot_node_a, ...)`; `None` for "".
pub fn parse_ssn(ssn: &str) -> Option<(usize, Vec<usize>)> {
    let rest = ssn.trim().strip_prefix("ANY ")?;
    let (k, names) = rest.split_once(' ')?;
    let k: usize = k.parse().ok()?;
    let names = names.trim().trim_start_matches('(').trim_end_matches(')');
    let ids = names
        .split(',')
        .filter_map(|n| n.trim().strip_prefix("pgpilot_node_")?.parse().ok())
        .collect();
    Some((k, ids))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ssn() {
        assert_eq!(
            super::parse_ssn("ANY 1 (pgpilot_node_2, pgpilot_node_3)"),
            Some((1, vec![2, 3]))
        );
        assert_eq!(super::parse_ssn(""), None);
    }
}
