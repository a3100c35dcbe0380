//! The one table of transitions: every (from, to) edge the monitor may
//! assign, with the keeper action that reaches `to` from `from`.
//!
//! "from" is the state the keeper last reported, "to" the goal the monitor
//! assigned. The monitor's FSM tests prove that every edge it can produce is
//! in [`EDGES`] and that every edge in [`EDGES`] is produced by some reachable
//! situation, so a keeper is never handed a goal it does not know how to
//! reach (pg_auto_failover's "does not know how to reach state" bug class).

use crate::pb::NodeState::{self, *};

/// What the keeper does to Postgres to move along an edge. Every action is
/// idempotent: a keeper killed halfway runs it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeeperAction {
    /// Nothing to change in Postgres; the keeper only records the new state.
    Noop,
    /// initdb (or adopt an existing stopped primary PGDATA), start Postgres
    /// with replication off, create the replication user.
    InitPrimary,
    /// pg_basebackup from the primary through this node's slot, write the
    /// standby configuration and start streaming.
    InitStandby,
    /// Apply the monitor's synchronous_standby_names, verify it with SHOW,
    /// and wait until a quorum standby has confirmed the current flush LSN.
    EnableSyncRep,
    /// Set synchronous_standby_names to '' and release backends waiting on
    /// synchronous replication (their commits are already durable locally).
    DisableSyncRep,
    /// Stop Postgres (fast shutdown, which ships the last WAL to standbys)
    /// and keep it stopped.
    StopPostgres,
    /// Promote while read-only: default_transaction_read_only=on, wait for
    /// the WAL receiver to stop and replay to finish, then pg_ctl promote.
    PromoteReadOnly,
    /// Multi-standby failover: stop the WAL receiver (the old primary can
    /// no longer get acknowledgements through this node) and keep
    /// PostgreSQL running so the keeper reports the final LSN.
    StopStreaming,
    /// Turn default_transaction_read_only off: the node takes writes.
    AllowWrites,
    /// Promote a standby straight to writable, with synchronous
    /// replication off: its primary was dropped by the operator (single),
    /// or a planned switchover's old primary stopped cleanly and this
    /// node has all its WAL, so no other node can take writes and no lease
    /// needs to run out (wait_primary).
    PromoteWritable,
    /// Rewind (pg_rewind, falling back to pg_basebackup) an old primary to
    /// follow the new one, then start streaming.
    Rejoin,
    /// Start a stopped (fenced or demoted) primary again and apply the
    /// monitor's synchronous_standby_names: the monitor did not fail over,
    /// or the node is the only one left.
    RestartAsPrimary,
    /// An election's winner that lacks WAL another voter has: stream from
    /// that voter (it streams from nobody, so its WAL is final) until
    /// replay reaches its LSN, then stop streaming again, so the LSN
    /// reported is final.
    FastForward,
    /// Stop Postgres and leave the group; the keeper exits after reporting.
    Drop,
}

/// (from, to, action) for every edge the monitor may assign.
pub const EDGES: &[(NodeState, NodeState, KeeperAction)] = &[
    // Registration and bootstrap.
    (Init, Single, KeeperAction::InitPrimary),
    (Init, WaitStandby, KeeperAction::Noop),
    (WaitStandby, Catchingup, KeeperAction::InitStandby),
    (Single, WaitPrimary, KeeperAction::Noop),
    // Primary side steady state.
    (WaitPrimary, Primary, KeeperAction::EnableSyncRep),
    (Primary, WaitPrimary, KeeperAction::DisableSyncRep),
    (Primary, ApplySettings, KeeperAction::Noop),
    (ApplySettings, Primary, KeeperAction::EnableSyncRep),
    (ApplySettings, WaitPrimary, KeeperAction::DisableSyncRep),
    // Standby side steady state.
    (Catchingup, Secondary, KeeperAction::Noop),
    // A copy that finished after its primary left the group (the keeper
    // was frozen while the monitor sent it back to wait): PostgreSQL
    // stops until there is a primary again. The copy is kept and started
    // against the next primary (`InitStandby` copies only into an empty
    // PGDATA); if it went past the fork point it cannot stream, and the
    // keeper rewinds it like any stuck catching-up standby.
    (Catchingup, WaitStandby, KeeperAction::StopPostgres),
    (Secondary, Catchingup, KeeperAction::Noop),
    // Maintenance of a standby: it leaves the synchronous set (it keeps
    // streaming meanwhile, and votes if an election comes), then its
    // keeper leaves PostgreSQL alone; at the end it starts (or copies, if
    // the operator emptied PGDATA) and follows the primary.
    (Secondary, WaitMaintenance, KeeperAction::Noop),
    (Catchingup, WaitMaintenance, KeeperAction::Noop),
    (WaitMaintenance, Maintenance, KeeperAction::Noop),
    (Secondary, Maintenance, KeeperAction::Noop),
    (Catchingup, Maintenance, KeeperAction::Noop),
    (WaitMaintenance, ReportLsn, KeeperAction::StopStreaming),
    (Maintenance, Catchingup, KeeperAction::InitStandby),
    // The old primary of a switchover the operator asked for to put it
    // into maintenance: stopped cleanly, it stays so.
    (Demoted, Maintenance, KeeperAction::Noop),
    // Failover, candidate side.
    (Secondary, PreparePromotion, KeeperAction::Noop),
    (
        PreparePromotion,
        StopReplication,
        KeeperAction::PromoteReadOnly,
    ),
    (StopReplication, WaitPrimary, KeeperAction::AllowWrites),
    // A planned switchover: the candidate streams as a secondary until the
    // old primary stopped cleanly and it has all its WAL, then promotes
    // straight to writable (nothing to wait for: the old primary reported
    // its stop). If the old primary died first, it promotes read-only
    // behind the lease gate, as in a failover.
    (Secondary, WaitPrimary, KeeperAction::PromoteWritable),
    (Secondary, StopReplication, KeeperAction::PromoteReadOnly),
    // Failover with several standbys: an election. Every standby stops
    // streaming and reports its final LSN; the most advanced is promoted,
    // the others follow it once it takes writes.
    (Secondary, ReportLsn, KeeperAction::StopStreaming),
    (Catchingup, ReportLsn, KeeperAction::StopStreaming),
    (ReportLsn, PreparePromotion, KeeperAction::Noop),
    // A winner by candidate priority that is behind another voter fetches
    // what it lacks from that voter first (pg_auto_failover's
    // fast_forward), then is promoted like any winner.
    (ReportLsn, FastForward, KeeperAction::FastForward),
    (FastForward, PreparePromotion, KeeperAction::Noop),
    // One that cannot finish its fetch gives way (its source died, or a
    // voter joined with more), or is sent to follow the new primary
    // before it is back, as a winner in prepare_promotion is.
    (FastForward, ReportLsn, KeeperAction::StopStreaming),
    (FastForward, Catchingup, KeeperAction::Rejoin),
    // A winner that cannot finish its promotion gives way and votes again
    // (it stops streaming if it still did, in a two-step promotion).
    (PreparePromotion, ReportLsn, KeeperAction::StopStreaming),
    // Such a winner may be sent to follow the new primary before it is
    // back: rewound like every loser.
    (PreparePromotion, Catchingup, KeeperAction::Rejoin),
    // An election's loser follows the winner. It may hold WAL the winner
    // lacks (an asynchronous standby ahead of it, or the old primary's
    // last records): rewound first, or it could never stream again (a
    // no-op rewind when it is behind).
    (ReportLsn, Catchingup, KeeperAction::Rejoin),
    // Failover, old primary side.
    (Primary, Draining, KeeperAction::StopPostgres),
    (Primary, DemoteTimeout, KeeperAction::StopPostgres),
    (Primary, Demoted, KeeperAction::StopPostgres),
    // A primary that died while applying new settings (synchronous
    // replication stays on throughout).
    (ApplySettings, Draining, KeeperAction::StopPostgres),
    (ApplySettings, DemoteTimeout, KeeperAction::StopPostgres),
    (ApplySettings, Demoted, KeeperAction::StopPostgres),
    (Draining, DemoteTimeout, KeeperAction::StopPostgres),
    (Draining, Demoted, KeeperAction::StopPostgres),
    (DemoteTimeout, Demoted, KeeperAction::StopPostgres),
    // The operator's `perform failover` from a writer without synchronous
    // replication (it may come back: it stops).
    (WaitPrimary, DemoteTimeout, KeeperAction::StopPostgres),
    (WaitPrimary, Demoted, KeeperAction::StopPostgres),
    (DemoteTimeout, Primary, KeeperAction::RestartAsPrimary),
    // A planned switchover given up (its candidate could not promote)
    // after the old primary stopped cleanly: it takes writes again, with
    // synchronous replication off until a standby is back.
    (Draining, WaitPrimary, KeeperAction::RestartAsPrimary),
    // Rejoin.
    (Demoted, Catchingup, KeeperAction::Rejoin),
    // A keeper that fenced itself (lease expired, reports demote_timeout
    // while its goal is unchanged) comes back to its goal.
    (DemoteTimeout, WaitPrimary, KeeperAction::RestartAsPrimary),
    (DemoteTimeout, ApplySettings, KeeperAction::RestartAsPrimary),
    // The only node left in the group (the others were dropped): only the
    // writer or a caught-up secondary; a node that may lack acknowledged
    // commits is never made writable by the monitor on its own.
    (WaitPrimary, Single, KeeperAction::Noop),
    (Primary, Single, KeeperAction::DisableSyncRep),
    (DemoteTimeout, Single, KeeperAction::RestartAsPrimary),
    (Secondary, Single, KeeperAction::PromoteWritable),
    // Operator drop: the store assigns dropped from whatever state the
    // node is in.
    (Init, Dropped, KeeperAction::Drop),
    (Single, Dropped, KeeperAction::Drop),
    (WaitPrimary, Dropped, KeeperAction::Drop),
    (Primary, Dropped, KeeperAction::Drop),
    (ApplySettings, Dropped, KeeperAction::Drop),
    (Draining, Dropped, KeeperAction::Drop),
    (DemoteTimeout, Dropped, KeeperAction::Drop),
    (Demoted, Dropped, KeeperAction::Drop),
    (WaitStandby, Dropped, KeeperAction::Drop),
    (Catchingup, Dropped, KeeperAction::Drop),
    (Secondary, Dropped, KeeperAction::Drop),
    (StopReplication, Dropped, KeeperAction::Drop),
    (PreparePromotion, Dropped, KeeperAction::Drop),
    (ReportLsn, Dropped, KeeperAction::Drop),
    (FastForward, Dropped, KeeperAction::Drop),
    (WaitMaintenance, Dropped, KeeperAction::Drop),
    (Maintenance, Dropped, KeeperAction::Drop),
];

/// The keeper action for an edge, or `None` when the monitor never assigns it.
pub fn action_for(from: NodeState, to: NodeState) -> Option<KeeperAction> {
    EDGES
        .iter()
        .find(|(f, t, _)| *f == from && *t == to)
        .map(|(_, _, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_duplicate_edges_and_no_self_loops() {
        for (i, (f, t, _)) in EDGES.iter().enumerate() {
            assert_ne!(f, t, "self loop {f}");
            assert!(
                !EDGES[i + 1..].iter().any(|(f2, t2, _)| f2 == f && t2 == t),
                "duplicate edge {f} -> {t}"
            );
        }
    }
}
