//! Leadership conflicts: a node found accepting writes the monitor did not
//! assign it, or two nodes reporting writable states at once (a data
//! directory restored by hand, a standby promoted or a PostgreSQL started
//! outside pgpilot).
//!
//! No rule acts on a conflict: the keeper of a standby whose PostgreSQL is
//! out of recovery fences it by itself (the keeper engine's steady steps),
//! and a writable node's lease still bounds how long it can write alone.
//! The monitor records it, once, as an ERROR event naming both nodes and
//! counts it ([`super::Action::Conflict`], made by `core::report`).

use super::{lease_expired, FsmConfig, GroupView, NodeView, Timestamp};

/// Why a node is in a leadership conflict, and with which node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The node in conflict: the one whose report shows it.
    pub node_id: i64,
    /// The node the monitor holds writable (or the other writer), if any.
    pub other: Option<i64>,
    pub description: String,
}

/// The node's PostgreSQL said, in a report this monitor heard within its
/// lease, that it runs out of recovery.
fn writes_now(n: &NodeView, now: Timestamp, cfg: &FsmConfig) -> bool {
    n.heard && n.in_recovery == Some(false) && !lease_expired(n, now, cfg)
}

fn label(n: &NodeView) -> String {
    format!("node {} {:?}", n.id, n.name)
}

/// The leadership conflict node `id` is in, if any:
///
/// - its state and goal are a standby's
///   ([`NodeState::requires_recovery`](pgpilot_proto::NodeState::requires_recovery)) but its
///   PostgreSQL runs out of recovery;
/// - or it reports a writable state, its goal is one, and its PostgreSQL
///   is out of recovery, while another node does the same (both within
///   their lease: a writer whose lease ran out has fenced itself, however
///   its last report reads).
pub fn conflict_of(g: &GroupView, id: i64, now: Timestamp, cfg: &FsmConfig) -> Option<Conflict> {
    let n = g.node(id)?;
    if !writes_now(n, now, cfg) {
        return None;
    }
    let others = || g.nodes.iter().filter(move |o| o.id != id);
    if n.reported.requires_recovery() && n.assigned.requires_recovery() {
        let writer = others()
            .find(|o| o.assigned.accepts_writes())
            .or_else(|| others().find(|o| o.reported.accepts_writes()));
        let holder = match writer {
            Some(w) => format!(
                "{} is the node the monitor made writable ({} with goal {})",
                label(w),
                w.reported,
                w.assigned
            ),
            None => "no node is writable by the monitor's assignment".to_string(),
        };
        return Some(Conflict {
            node_id: id,
            other: writer.map(|w| w.id),
            description: format!(
                "ERROR leadership conflict: {} accepts writes (PostgreSQL is out of recovery) \
                 but it is {} with goal {}; {holder}; its keeper fences it; check for a \
                 PostgreSQL promoted or started outside pgpilot",
                label(n),
                n.reported,
                n.assigned
            ),
        });
    }
    // Writable by report and by goal: an old primary the monitor is
    // demoting (goal draining, demoted, ...) may still run until its
    // keeper hears of it or its lease runs out, which is the failover
    // design, not a conflict (the simulation found it in 2% of its runs:
    // a frozen old primary waking up beside the new one).
    let writer = |o: &NodeView| o.reported.accepts_writes() && o.assigned.accepts_writes();
    if !writer(n) {
        return None;
    }
    let other = others().find(|o| writer(o) && writes_now(o, now, cfg))?;
    Some(Conflict {
        node_id: id,
        other: Some(other.id),
        description: format!(
            "ERROR leadership conflict: {} ({} with goal {}) and {} ({} with goal {}) both \
             accept writes; check for a data directory restored by hand or a PostgreSQL \
             started outside pgpilot",
            label(n),
            n.reported,
            n.assigned,
            label(other),
            other.reported,
            other.assigned
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::builders::*;
    use pgpilot_proto::NodeState::*;

    fn writing(mut n: NodeView) -> NodeView {
        n.in_recovery = Some(false);
        n
    }

    fn standby(mut n: NodeView) -> NodeView {
        n.in_recovery = Some(true);
        n
    }

    #[test]
    fn a_standby_out_of_recovery_names_the_primary() {
        let g = group(vec![writing(node(1, Primary)), writing(node(2, Secondary))]);
        let c = conflict_of(&g, 2, t0(), &FsmConfig::whole_seconds()).unwrap();
        assert_eq!((c.node_id, c.other), (2, Some(1)));
        assert!(c.description.starts_with("ERROR leadership conflict"));
        assert!(
            c.description.contains("node 2 \"node_2\""),
            "{}",
            c.description
        );
        assert!(
            c.description.contains("node 1 \"node_1\""),
            "{}",
            c.description
        );
        // The primary itself is in no conflict: it is the one assigned.
        assert_eq!(conflict_of(&g, 1, t0(), &FsmConfig::whole_seconds()), None);
    }

    #[test]
    fn a_standby_in_recovery_or_unknown_is_none() {
        let cfg = FsmConfig::whole_seconds();
        for s in [standby(node(2, Secondary)), node(2, Secondary)] {
            let g = group(vec![writing(node(1, Primary)), s]);
            assert_eq!(conflict_of(&g, 2, t0(), &cfg), None);
        }
    }

    #[test]
    fn a_promotion_under_way_is_none() {
        let cfg = FsmConfig::whole_seconds();
        // Promoted read-only, or toward a writable goal: the monitor's
        // own doing.
        for (reported, assigned) in [
            (PreparePromotion, StopReplication),
            (StopReplication, StopReplication),
            (Secondary, WaitPrimary),
            (ReportLsn, PreparePromotion),
        ] {
            let mut n = writing(node(2, reported));
            n.assigned = assigned;
            let g = group(vec![writing(node(1, Primary)), n]);
            assert_eq!(
                conflict_of(&g, 2, t0(), &cfg),
                None,
                "{reported} {assigned}"
            );
        }
    }

    #[test]
    fn two_writers_within_their_lease() {
        let cfg = FsmConfig::whole_seconds();
        let g = group(vec![writing(node(1, Primary)), writing(node(2, Single))]);
        let c = conflict_of(&g, 2, t0(), &cfg).unwrap();
        assert_eq!(c.other, Some(1));
        assert!(c.description.contains("both accept writes"));
        assert_eq!(conflict_of(&g, 1, t0(), &cfg).unwrap().other, Some(2));
        // The old writer's lease ran out: it fenced itself, whatever its
        // last report said.
        let later = at(10.0);
        let mut fresh = g.clone();
        fresh.nodes[1].last_report = Some(later);
        assert_eq!(conflict_of(&fresh, 2, later, &cfg), None);
        // An old primary being demoted, not fenced yet: the monitor's
        // own failover, no conflict.
        let mut old = writing(node(1, Primary));
        old.assigned = Demoted;
        let g = group(vec![old, writing(node(2, WaitPrimary))]);
        assert_eq!(conflict_of(&g, 1, t0(), &cfg), None);
        assert_eq!(conflict_of(&g, 2, t0(), &cfg), None);
    }

    #[test]
    fn a_lone_rogue_names_nobody() {
        let mut p = node(1, Primary);
        p.assigned = Demoted;
        p.reported = Demoted;
        let g = group(vec![p, writing(node(2, Secondary))]);
        let c = conflict_of(&g, 2, t0(), &FsmConfig::whole_seconds()).unwrap();
        assert_eq!(c.other, None);
        assert!(c.description.contains("no node is writable"));
    }
}
