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
    /// pg_control says "shut down": the last stop was a primary's clean
    /// (fast) shutdown. A start, a copy or a rewind ends it; a crash leaves
    /// it as it was while running ("in production").
    pub shut_down: bool,
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
            shut_down: false,
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
        // pg_rewind leaves pg_control "in archive recovery".
        self.shut_down = false;
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
    /// The WAL receiver's connection to this upstream went silent without
    /// being closed (the link cut, the upstream frozen or its machine
    /// down): the receiver lingers, 'streaming' in pg_stat_wal_receiver
    /// with an ever older last message, until wal_receiver_timeout, as
    /// PostgreSQL's does. Its keeper therefore sees even a short contact
    /// that ended between two of its looks (seed 441910: a contact it
    /// missed made it a failover witness against a primary whose
    /// exemption that contact had renewed).
    pub receiver_hung_on: Option<usize>,
    /// Our walsenders: standby index -> sim time (ms) of its last reply. A
    /// standby that went silent (frozen, machine down, cut off) stays
    /// listed until wal_sender_timeout, as PostgreSQL's does.
    pub walsenders: std::collections::BTreeMap<usize, u64>,
}

/// wal_sender_timeout as pgpilot configures it.
pub const WAL_SENDER_TIMEOUT_MS: u64 = 5000;

/// wal_receiver_timeout as pgpilot configures it.
pub const WAL_RECEIVER_TIMEOUT_MS: u64 = pgpilot_keeper::engine::WAL_RECEIVER_TIMEOUT_MS;

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
        let Some(d) = self.data.as_mut() else {
            return Err("no data directory".into());
        };
        if !self.running {
            self.running = true;
            self.in_recovery = d.standby_signal;
            self.streaming_from = None;
            self.receiver_hung_on = None;
            d.shut_down = false;
        }
        Ok(())
    }

    /// A crash, a kill, an immediate shutdown (fencing), or the machine
    /// going down: pg_control keeps what it said while running.
    pub fn kill(&mut self) {
        self.running = false;
        self.streaming_from = None;
        self.receiver_hung_on = None;
        self.walsenders.clear();
    }

    /// A fast shutdown. The caller has shipped the last WAL to the
    /// standbys streaming from it ([`crate::World::ship_final_wal`]); a
    /// primary's pg_control then says "shut down", a standby's "shut down
    /// in recovery".
    pub fn shut_down(&mut self) {
        if self.running {
            let primary = !self.in_recovery;
            if let Some(d) = self.data.as_mut() {
                d.shut_down = primary;
            }
        }
        self.kill();
    }

    /// What the keeper reads in pg_control while PostgreSQL is stopped:
    /// after a primary's clean shutdown, its last WAL position (the sim
    /// has no checkpoint record: every record is a commit or a timeline
    /// switch, so the end of its WAL is where a standby holds everything).
    pub fn shutdown_lsn(&self) -> Option<u64> {
        let d = self.data.as_ref()?;
        (!self.running && d.shut_down).then_some(d.wal.len() as u64)
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
    use super::{Data, SimPg};
    use pgpilot_keeper::plan::Role;

    fn running(standby: bool) -> SimPg {
        let mut d = Data::new(Role::Standby { upstream: None });
        d.append(1);
        d.append(2);
        d.standby_signal = standby;
        let mut pg = SimPg {
            data: Some(d),
            ..SimPg::default()
        };
        pg.start().unwrap();
        pg
    }

    #[test]
    fn only_a_clean_primary_stop_has_a_shutdown_lsn() {
        let mut pg = running(false);
        assert_eq!(pg.shutdown_lsn(), None, "running");
        pg.shut_down();
        assert_eq!(pg.shutdown_lsn(), Some(2));
        // A second stop of a stopped one changes nothing.
        pg.shut_down();
        assert_eq!(pg.shutdown_lsn(), Some(2));
        pg.start().unwrap();
        assert_eq!(pg.shutdown_lsn(), None, "started again");
        pg.kill();
        assert_eq!(pg.shutdown_lsn(), None, "crashed");
        let mut standby = running(true);
        standby.shut_down();
        assert_eq!(standby.shutdown_lsn(), None, "shut down in recovery");
    }

    #[test]
    fn parses_ssn() {
        assert_eq!(
            super::parse_ssn("ANY 1 (pgpilot_node_2, pgpilot_node_3)"),
            Some((1, vec![2, 3]))
        );
        assert_eq!(super::parse_ssn(""), None);
    }
}
