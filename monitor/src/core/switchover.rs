//! The operator's planned switchover (`perform switchover`, `perform
//! promotion`): the checks, then the goals; the rules in
//! `fsm::promotion` carry it out.

use pgpilot_proto::NodeState::*;

use super::{unknown_node, Core};
use crate::error::{MonitorError, Result};
use crate::fsm::{self, is_healthy, is_in, Action, FsmConfig, GroupView, NodeView, Timestamp};

impl Core {
    /// A planned switchover to `candidate`, or with `None` to the best
    /// eligible standby (highest candidate priority, then most advanced).
    /// Refused, changing nothing, unless the group is at rest with a
    /// primary that has synchronous replication on (then the candidate
    /// receives every commit before it promotes, and no write is lost).
    pub fn switchover(
        &self,
        g: &mut GroupView,
        candidate: Option<i64>,
        now: Timestamp,
    ) -> Result<Vec<Action>> {
        let (p, c) = switchover_pair(g, candidate, now, &self.cfg)?;
        let (p, c) = (p.clone(), c.clone());
        let why = format!(
            "switchover asked by the operator: node {} {:?} to take over from primary node {} {:?}",
            c.id, c.name, p.id, p.name
        );
        let mut out = vec![
            Action::Note {
                node_id: c.id,
                description: why.clone(),
            },
            Action::BumpGeneration {
                reason: why.clone(),
            },
            Action::SetSwitchover {
                candidate: Some(c.id),
            },
            Action::AssignGoal {
                node_id: p.id,
                goal: Draining,
                reason: format!(
                    "node {} assigned draining: switchover to node {}: it checkpoints, then stops \
                     cleanly; node {} promotes once it has received all its WAL",
                    p.id, c.id, c.id
                ),
            },
        ];
        fsm::apply(g, &out, now);
        self.settle(g, now, &mut out);
        Ok(out)
    }
}

/// The primary and the candidate of a switchover, or why there is none now.
fn switchover_pair<'a>(
    g: &'a GroupView,
    candidate: Option<i64>,
    now: Timestamp,
    cfg: &FsmConfig,
) -> Result<(&'a NodeView, &'a NodeView)> {
    let refuse = |why: String| Err(MonitorError::FailedPrecondition(why));
    if let Some(busy) = fsm::operation_under_way(g) {
        return refuse(format!(
            "{busy}; retry once it is done (`pgpilot show state`)"
        ));
    }
    let Some(p) = g.nodes.iter().find(|n| n.assigned.accepts_writes()) else {
        return refuse("the group has no primary: nothing to switch over from".into());
    };
    if !is_in(p, Primary) || !is_healthy(p, now, cfg) {
        return refuse(format!(
            "primary node {} is {}{}: a switchover needs a healthy primary in state primary \
             (synchronous replication on, so that the candidate holds every acknowledged commit); \
             wait until `pgpilot show state` shows it",
            p.id,
            p.reported,
            if is_healthy(p, now, cfg) {
                ""
            } else {
                " and not healthy"
            }
        ));
    }
    let c = match candidate {
        Some(id) => {
            let c = g.node(id).ok_or_else(|| unknown_node(id))?;
            if c.id == p.id {
                return refuse(format!("node {} is the primary already", c.id));
            }
            if let Some(why) = ineligible(p, c, now, cfg) {
                return refuse(format!("node {} cannot take over: {why}", c.id));
            }
            c
        }
        None => {
            let best = g
                .nodes
                .iter()
                .filter(|s| s.id != p.id && ineligible(p, s, now, cfg).is_none())
                .max_by_key(|s| (s.candidate_priority, s.lsn, std::cmp::Reverse(s.id)));
            match best {
                Some(c) => c,
                None => {
                    let why: Vec<String> = g
                        .nodes
                        .iter()
                        .filter(|s| s.id != p.id)
                        .filter_map(|s| {
                            ineligible(p, s, now, cfg).map(|w| format!("node {}: {w}", s.id))
                        })
                        .collect();
                    return refuse(format!(
                        "no standby can take over from primary node {}: {}",
                        p.id,
                        if why.is_empty() {
                            "it has no standby".into()
                        } else {
                            why.join("; ")
                        }
                    ));
                }
            }
        }
    };
    Ok((p, c))
}

/// Why standby `s` may not take over from `p` in a switchover, if not.
fn ineligible(p: &NodeView, s: &NodeView, now: Timestamp, cfg: &FsmConfig) -> Option<String> {
    if !is_in(s, Secondary) {
        return Some(format!(
            "it is {} (a candidate must be a caught-up secondary)",
            s.reported
        ));
    }
    if s.candidate_priority <= 0 {
        return Some(
            "its candidate priority is 0 (`pgpilot set node candidate-priority --name NAME 50`)"
                .into(),
        );
    }
    if !is_healthy(s, now, cfg) || s.status_unknown {
        return Some("it is not healthy".into());
    }
    let behind = p.lsn.distance_from(s.lsn);
    if behind > cfg.promote_wal_threshold {
        return Some(format!(
            "it is {behind} bytes behind the primary (promote_wal_threshold {})",
            cfg.promote_wal_threshold
        ));
    }
    None
}
