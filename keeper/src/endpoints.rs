//! What the keeper's HTTP endpoints answer (the checks a load balancer
//! such as HAProxy routes by), as a pure function of a snapshot of the
//! keeper and an explicit `now`. The HTTP shell ([`crate::http`]) only
//! reads the snapshot the agent publishes and calls [`status`].
//!
//! | endpoint | 200 when |
//! |---|---|
//! | `/primary` | the node may take writes now: it reached a writable state, its goal is still one, PostgreSQL runs out of recovery, and its lease holds (the keeper's fencing deadline, [`Engine::fence_deadline`], is ahead; a `single` node never fences) |
//! | `/replica` | a streaming standby: PostgreSQL in recovery, its WAL receiver streaming, not in or going into maintenance; `?lag=` caps its replay lag |
//! | `/read-only` | `/primary` or `/replica` would say 200 |
//! | `/sync` | `/replica` would say 200, and the node is a synchronous standby: named in the group's synchronous_standby_names while the primary reports synchronous replication on |
//! | `/health` | PostgreSQL runs |
//!
//! Every other case is 503; a `lag` that is not a size is 400. The body is
//! a small JSON object ([`Body`]) with the reason for a 503.
//!
//! `/primary` reads the fencing deadline against `now` at request time,
//! not at the snapshot: it says 503 from the very moment the keeper would
//! fence, even while its loop is busy elsewhere.
//!
//! A standby's **lag** is the WAL the primary has that this node has not
//! replayed (what its readers do not see yet): the primary's position is
//! the newer of what the WAL receiver last heard from its upstream
//! (`latest_end_lsn`, sent with every message and keepalive) and the
//! primary's last report as the monitor's reply gave it.

use pgpilot_proto::{node_slot_name, Lsn, NodeState};
use serde::Serialize;

use crate::engine::{Engine, Mono};

/// What the endpoints know of the keeper: a snapshot taken by the agent
/// after every engine call that can change it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub node_id: i64,
    /// The state reached and the goal.
    pub current: NodeState,
    pub assigned: NodeState,
    /// [`Engine::fence_deadline`]: a writable node takes writes only
    /// before it; `None` for a node that never fences.
    pub fence_deadline: Option<Mono>,
    /// The postmaster runs (as the keeper last looked).
    pub pg_running: bool,
    /// PostgreSQL's status, when the last read of it succeeded.
    pub pg: Option<PgView>,
    /// On a standby: bytes of WAL the primary has that it has not
    /// replayed (see the module doc); `None` when unknown.
    pub lag_bytes: Option<u64>,
    /// Named in the group's synchronous_standby_names while the primary
    /// reports synchronous replication on.
    pub synchronous: bool,
}

/// The part of PostgreSQL's status the endpoints need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgView {
    pub in_recovery: bool,
    pub timeline: u32,
    /// A standby's WAL receiver streams from its upstream now.
    pub streaming: bool,
}

impl View {
    /// The snapshot of an engine, as the agent publishes it.
    pub fn of(engine: &Engine) -> View {
        let state = engine.state();
        let obs = engine.observation();
        let reply = engine.last_reply();
        let status = obs.status.as_ref();
        // The writer as the monitor's last reply named it.
        let writer = reply.and_then(|r| r.other_nodes.iter().find(|n| n.is_primary));
        let lag_bytes = status.filter(|s| s.in_recovery).and_then(|s| {
            let replayed = s.replay_lsn?;
            let reported = writer.map(|w| Lsn(w.lsn)).filter(|l| l.0 > 0);
            let ahead = s.upstream_wal_end.max(reported)?;
            Some(ahead.distance_from(replayed))
        });
        let me = node_slot_name(state.node_id);
        let sync_on = writer.is_some_and(|w| {
            matches!(
                NodeState::from_wire(w.reported_state),
                Ok(NodeState::Primary | NodeState::ApplySettings)
            )
        });
        let named = reply
            .is_some_and(|r| standby_names(&r.group_synchronous_standby_names).any(|n| n == me));
        View {
            node_id: state.node_id,
            current: state.current,
            assigned: state.assigned,
            fence_deadline: engine.fence_deadline(),
            pg_running: obs.running,
            pg: status.map(|s| PgView {
                in_recovery: s.in_recovery,
                timeline: s.timeline,
                streaming: s.wal_receiver.is_some_and(|(streaming, _)| streaming),
            }),
            lag_bytes,
            synchronous: sync_on && named,
        }
    }
}

/// The names listed in `ANY k (a, b)` (the only form pgpilot writes).
fn standby_names(ssn: &str) -> impl Iterator<Item = &str> {
    let list = ssn
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or("", |(inside, _)| inside);
    list.split(',').map(str::trim).filter(|n| !n.is_empty())
}

/// The endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Primary,
    Replica,
    ReadOnly,
    Sync,
    Health,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Primary,
        Endpoint::Replica,
        Endpoint::ReadOnly,
        Endpoint::Sync,
        Endpoint::Health,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Primary => "/primary",
            Endpoint::Replica => "/replica",
            Endpoint::ReadOnly => "/read-only",
            Endpoint::Sync => "/sync",
            Endpoint::Health => "/health",
        }
    }
}

/// What the query string asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `lag=`: the most replay lag, in bytes, a standby may have.
    pub max_lag: Option<u64>,
}

/// The query string of a request (`lag=16MB`); other keys are ignored, as
/// a load balancer may add its own.
pub fn parse_query(raw: Option<&str>) -> Result<Query, String> {
    let mut q = Query::default();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "lag" {
            q.max_lag = Some(parse_size(value)?);
        }
    }
    Ok(q)
}

/// A size in bytes: a whole number with an optional unit, B, kB, MB, GB or
/// TB (powers of 1024, as PostgreSQL's memory units; case and an `i` as
/// in `MiB` do not matter).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad_size(text)),
    };
    let n: u64 = digits.parse().map_err(|_| bad_size(text))?;
    n.checked_mul(factor).ok_or_else(|| bad_size(text))
}

fn bad_size(text: &str) -> String {
    format!(
        "lag {text:?} is not a size: write bytes as a whole number, optionally with a unit \
         B, kB, MB, GB or TB (e.g. ?lag=16MB or ?lag=1048576)"
    )
}

/// The JSON body of every answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Body {
    pub node_id: i64,
    /// The state reached and the goal (`show state`'s names).
    pub state: &'static str,
    pub assigned_state: &'static str,
    /// What PostgreSQL is: "primary" (out of recovery, writable or not),
    /// "replica" (in recovery), "stopped", or "unknown" (it runs but the
    /// keeper could not read its status).
    pub role: &'static str,
    pub pg_running: bool,
    pub timeline: Option<u32>,
    pub lag_bytes: Option<u64>,
    pub synchronous: bool,
    /// Why the answer is not 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An answer: the status code and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub body: Body,
}

/// What `endpoint` answers about `view` at `now` for `query`.
pub fn status(view: &View, now: Mono, endpoint: Endpoint, query: &Query) -> Answer {
    let verdict = match endpoint {
        Endpoint::Primary => primary(view, now),
        Endpoint::Replica => replica(view, query),
        Endpoint::ReadOnly => match (primary(view, now), replica(view, query)) {
            (Ok(()), _) | (_, Ok(())) => Ok(()),
            // The reason that fits what PostgreSQL is.
            (Err(p), Err(r)) => Err(if view.pg.is_some_and(|s| s.in_recovery) {
                r
            } else {
                p
            }),
        },
        Endpoint::Sync => replica(view, query).and_then(|()| {
            if view.synchronous {
                Ok(())
            } else {
                Err("not a synchronous standby: not named in the primary's \
                     synchronous_standby_names, or synchronous replication is off"
                    .to_string())
            }
        }),
        Endpoint::Health => {
            if view.pg_running {
                Ok(())
            } else {
                Err("PostgreSQL is not running".to_string())
            }
        }
    };
    let (code, reason) = match verdict {
        Ok(()) => (200, None),
        Err(why) => (503, Some(why)),
    };
    Answer {
        code,
        body: body(view, reason),
    }
}

/// The body for a request that could not be understood (400).
pub fn bad_request(view: &View, why: String) -> Answer {
    Answer {
        code: 400,
        body: body(view, Some(why)),
    }
}

fn body(view: &View, reason: Option<String>) -> Body {
    let role = match (view.pg_running, view.pg) {
        (false, _) => "stopped",
        (true, None) => "unknown",
        (true, Some(s)) if s.in_recovery => "replica",
        (true, Some(_)) => "primary",
    };
    Body {
        node_id: view.node_id,
        state: view.current.name(),
        assigned_state: view.assigned.name(),
        role,
        pg_running: view.pg_running,
        timeline: view.pg.map(|s| s.timeline),
        lag_bytes: view.lag_bytes,
        synchronous: view.synchronous,
        reason,
    }
}

/// The node may take writes now.
fn primary(v: &View, now: Mono) -> Result<(), String> {
    if !v.pg_running {
        return Err("PostgreSQL is not running".into());
    }
    if !v.current.accepts_writes() {
        return Err(format!("state {} takes no writes", v.current));
    }
    if !v.assigned.accepts_writes() {
        return Err(format!(
            "the monitor assigned {}: this node is to stop taking writes",
            v.assigned
        ));
    }
    // A status the keeper could not read says nothing either way (a slow
    // read must not take a healthy primary out of the pool); the state
    // and the lease do.
    if v.pg.is_some_and(|s| s.in_recovery) {
        return Err("PostgreSQL is in recovery".into());
    }
    match v.fence_deadline {
        Some(d) if now >= d => Err(
            "the lease ran out: the keeper fences (stops PostgreSQL) now; another node may be \
             promoted"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The node is a streaming standby within the lag asked for.
fn replica(v: &View, q: &Query) -> Result<(), String> {
    if !v.pg_running {
        return Err("PostgreSQL is not running".into());
    }
    let Some(pg) = v.pg else {
        return Err("the keeper could not read PostgreSQL's status".into());
    };
    if !pg.in_recovery {
        return Err("not a standby: PostgreSQL is out of recovery".into());
    }
    let maintenance = |s: NodeState| {
        matches!(
            s,
            NodeState::WaitMaintenance | NodeState::PrepareMaintenance | NodeState::Maintenance
        )
    };
    if maintenance(v.current) || maintenance(v.assigned) || v.assigned == NodeState::Dropped {
        return Err(format!(
            "the node is handed to the operator or leaving (state {}, goal {})",
            v.current, v.assigned
        ));
    }
    if !pg.streaming {
        return Err("the WAL receiver is not streaming from an upstream".into());
    }
    match (q.max_lag, v.lag_bytes) {
        (None, _) => Ok(()),
        (Some(_), None) => Err("the replay lag is not known yet".into()),
        (Some(max), Some(lag)) if lag > max => Err(format!(
            "replay lag of {lag} bytes is over the {max} bytes asked for"
        )),
        (Some(_), Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_view;
