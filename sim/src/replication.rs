//! The data path: streaming replication, synchronous acknowledgement
//! and the clients that write.

use pgpilot_keeper::plan::Role;
use rand::Rng;

use super::{pg, World};

impl World {
    /// Standbys stream from their upstream when they can: a standby whose
    /// WAL is a prefix of the upstream's receives all of it at once.
    pub(super) fn replicate(&mut self) {
        // Replay runs one step behind what was received.
        for n in &mut self.nodes {
            if n.pg.running && !n.frozen() && n.replay_stalled_until.is_none() {
                if let Some(d) = n.pg.data.as_mut() {
                    d.replayed = d.wal.len();
                }
            }
        }
        for j in 0..self.nodes.len() {
            let n = &self.nodes[j];
            let upstream = match n.pg.data.as_ref().map(|d| &d.config) {
                Some(Role::Standby { upstream: Some(u) }) => Some((u.node_id - 1) as usize),
                _ => None,
            };
            let mut from = None;
            if let Some(u) = upstream {
                let src = &self.nodes[u];
                let ok = n.pg.running
                    && n.pg.in_recovery
                    && !n.frozen()
                    && src.pg.running
                    && !src.frozen()
                    && u != j
                    && self.link(j + 1, u + 1)
                    // A receiver that is not connected needs the upstream's
                    // address.
                    && (n.dns_fails_until.is_none() || n.pg.streaming_from == Some(u));
                if ok {
                    let (mine, theirs) = (n.pg.data.as_ref(), src.pg.data.as_ref());
                    if let (Some(mine), Some(theirs)) = (mine, theirs) {
                        if mine.is_prefix_of(theirs) {
                            from = Some((u, theirs.wal.clone(), theirs.tli));
                        }
                    }
                }
            }
            let now = self.now;
            // The upstreams' walsenders: the one it streams from saw its
            // reply; the others end when it left them cleanly, and linger
            // until wal_sender_timeout when it went silent.
            let silent = self.nodes[j].frozen() || self.nodes[j].down_until.is_some();
            for u in 0..self.nodes.len() {
                let streams = from.as_ref().is_some_and(|(f, _, _)| *f == u);
                let cut = !self.link(j + 1, u + 1);
                let w = &mut self.nodes[u].pg.walsenders;
                if streams {
                    w.insert(j, now);
                } else if !(silent || cut) {
                    w.remove(&j);
                }
                w.retain(|_, t| now.saturating_sub(*t) <= super::pg::WAL_SENDER_TIMEOUT_MS);
            }
            let n = &mut self.nodes[j];
            match from {
                Some((u, wal, tli)) => {
                    let d = n.pg.data.as_mut().expect("checked");
                    if d.wal.len() < wal.len() {
                        for id in &wal[d.wal.len()..] {
                            d.ids.insert(*id);
                        }
                        d.wal = wal;
                    }
                    d.tli = d.tli.max(tli);
                    n.pg.streaming_from = Some(u);
                    n.pg.receiver_hung_on = None;
                    n.pg.last_contact = Some(now);
                }
                None => {
                    if !n.frozen() {
                        if let Some(u) = n.pg.streaming_from.take() {
                            let src = &self.nodes[u];
                            // Silence, not a closed connection.
                            let silent = !self.link(j + 1, u + 1)
                                || src.frozen()
                                || src.down_until.is_some();
                            if silent && upstream == Some(u) {
                                self.nodes[j].pg.receiver_hung_on = Some(u);
                            }
                        }
                        let n = &mut self.nodes[j].pg;
                        let timed_out = n
                            .last_contact
                            .is_none_or(|c| now.saturating_sub(c) > pg::WAL_RECEIVER_TIMEOUT_MS);
                        if upstream != n.receiver_hung_on || timed_out {
                            n.receiver_hung_on = None;
                        }
                    }
                }
            }
        }
    }

    /// A fast shutdown of node `i` (a primary) sends what is left of its
    /// WAL to every standby streaming from it and waits for them to flush
    /// it, as PostgreSQL's walsenders do before the postmaster exits (see
    /// the keeper's `parse_shutdown_lsn`). A standby that is frozen, cut
    /// off, or not streaming gets nothing: its walsender would time out,
    /// and the shutdown still ends cleanly.
    ///
    /// [`World::replicate`] runs before the keepers each step, so this
    /// only matters for WAL written since (none today: clients write after
    /// the keepers); it makes the clean stop not depend on that order.
    pub(super) fn ship_final_wal(&mut self, i: usize) {
        let src = &self.nodes[i];
        if !src.pg.running || src.pg.in_recovery || src.frozen() {
            return;
        }
        let Some(theirs) = src.pg.data.clone() else {
            return;
        };
        for j in 0..self.nodes.len() {
            let ok = {
                let n = &self.nodes[j];
                j != i
                    && n.pg.running
                    && n.pg.streaming_from == Some(i)
                    && !n.frozen()
                    && self.link(j + 1, i + 1)
            };
            let n = &mut self.nodes[j];
            let Some(mine) = n.pg.data.as_mut().filter(|d| ok && d.is_prefix_of(&theirs)) else {
                continue;
            };
            for id in &theirs.wal[mine.wal.len()..] {
                mine.ids.insert(*id);
            }
            mine.wal = theirs.wal.clone();
            mine.tli = mine.tli.max(theirs.tli);
            n.pg.last_contact = Some(self.now);
        }
    }

    /// A commit is acknowledged once enough of the standbys named in
    /// synchronous_standby_names have flushed it (PostgreSQL's ANY k).
    pub(super) fn acknowledge(&mut self) {
        let mut still = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (i, id) in pending {
            let n = &self.nodes[i];
            if !n.pg.running || n.down_until.is_some() {
                continue; // the client got an error: not acknowledged
            }
            if n.frozen() {
                still.push((i, id));
                continue;
            }
            let ok = match n.pg.ssn().and_then(pg::parse_ssn) {
                None => true,
                Some((k, ids)) => {
                    let have = ids
                        .iter()
                        .filter(|j| {
                            let s = &self.nodes[**j - 1];
                            s.pg.streaming_from == Some(i)
                                && s.pg.data.as_ref().is_some_and(|d| d.ids.contains(&id))
                        })
                        .count();
                    have >= k
                }
            };
            if ok {
                // A writer the operator failed over from with
                // --allow-data-loss may still acknowledge until it stops
                // (a frozen wait_primary resuming): its loss was accepted.
                if !self.forgiven.contains(&i) {
                    self.acked.push(id);
                }
                self.ack_log.push((id, i, self.now));
            } else {
                still.push((i, id));
            }
        }
        self.pending = still;
    }

    /// Clients write to every node that accepts writes.
    pub(super) fn clients(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.pg.accepts_writes()
                && !n.frozen()
                && n.down_until.is_none()
                && self.rng.random_bool(0.5)
            {
                let id = self.new_record();
                let n = &mut self.nodes[i];
                n.pg.data.as_mut().expect("writable").append(id);
                self.pending.push((i, id));
            }
        }
    }
}
