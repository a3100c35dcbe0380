//! Table tests of fast_forward: an election's winner by candidate
//! priority that is behind another voter fetches what it lacks first.

use pgpilot_proto::NodeState::*;

use super::builders::*;
use super::tests::{case, check, Want::*};

/// The old primary, told to go when the election began.
fn old() -> crate::fsm::NodeView {
    node(1, Primary).goal(Draining).bad()
}

#[test]
fn fast_forward_rules() {
    let cases = [
        case(
            "the winner by priority is behind: it fetches from the most advanced voter first",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0),
                node(3, ReportLsn).lsn_mb(100).prio(90),
            ],
            t0(),
            vec![Goal(3, FastForward)],
            "node 3 assigned fast_forward: elected by candidate priority (90) among 2 standbys \
             with LSN 0/6400000; it fetches the WAL up to LSN 0/6E00000 from node 2 first",
        ),
        case(
            "a priority-0 quorum voter ahead of a lower-priority candidate: still a fast_forward",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0),
                node(3, ReportLsn).lsn_mb(100).prio(10),
                node(4, ReportLsn).lsn_mb(90).prio(5),
            ],
            t0(),
            vec![Goal(3, FastForward)],
            "from node 2 first",
        ),
        case(
            "a non-quorum voter ahead holds nothing acknowledged: no fetch",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0).quorum(false),
                node(3, ReportLsn).lsn_mb(100).prio(90),
            ],
            t0(),
            vec![Goal(3, PreparePromotion)],
            "elected with LSN",
        ),
        case(
            "the most advanced voter is not healthy: the fetch comes from one that holds as much",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0).bad(),
                node(3, ReportLsn).lsn_mb(100).prio(90),
                node(4, ReportLsn).lsn_mb(110).prio(10),
            ],
            t0(),
            vec![Goal(3, FastForward)],
            "from node 4 first",
        ),
        case(
            "a winner that gave way after its fetch wins again only once it reported report_lsn",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0),
                node(3, FastForward).goal(ReportLsn).lsn_mb(100).prio(90),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "a winner on an older timeline cannot stream from a newer one: no fetch",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0).tli(2),
                node(3, ReportLsn).lsn_mb(120).prio(90),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "the fetch reached the source's LSN: promoted",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).lsn_mb(110).prio(0),
                node(3, FastForward).lsn_mb(110).prio(90),
            ],
            t0(),
            vec![Goal(3, PreparePromotion)],
            "its fast_forward reached LSN 0/6E00000",
        ),
        case(
            "the winner died during its fetch: a voter that holds everything takes its place",
            vec![
                old(),
                node(2, ReportLsn)
                    .lsn_mb(110)
                    .prio(10)
                    .silent_since(Some(at(3.2))),
                node(3, ReportLsn)
                    .goal(FastForward)
                    .lsn_mb(100)
                    .prio(90)
                    .bad(),
            ],
            at(3.2),
            vec![Goal(3, ReportLsn), Goal(2, PreparePromotion)],
            "node 2 holds all the voters hold (LSN 0/6E00000) and takes its place",
        ),
        case(
            "the source died during the fetch, nobody else holds everything: it waits, and says so",
            vec![
                old(),
                node(2, ReportLsn).lsn_mb(110).prio(0).bad().pg_down(),
                node(3, ReportLsn)
                    .goal(FastForward)
                    .lsn_mb(100)
                    .prio(90)
                    .silent_since(Some(at(20.0))),
            ],
            at(20.0),
            vec![WaitFor(3)],
            "no voter that holds the WAL it lacks is healthy",
        ),
    ];
    for c in &cases {
        check(c);
    }
}

/// A winner whose source died mid-fetch, with nobody else holding what it
/// lacks: `perform failover` refuses (the wait loses nothing) and names
/// the way out; with `--allow-data-loss` the winner is promoted with what
/// it has, and the event names the range.
#[test]
fn perform_failover_gives_up_a_fast_forward_only_when_told_to() {
    use crate::core::Core;
    use crate::error::MonitorError;
    use crate::fsm::{Action, FsmConfig};
    let core = Core::new(FsmConfig::whole_seconds());
    let now = at(20.0);
    let stuck = || {
        group(vec![
            old(),
            node(2, ReportLsn).lsn_mb(110).prio(0).bad(),
            node(3, ReportLsn)
                .goal(FastForward)
                .lsn_mb(100)
                .prio(90)
                .silent_since(Some(now)),
        ])
    };
    let mut g = stuck();
    match core.failover(&mut g, false, now) {
        Err(MonitorError::FailedPrecondition(m)) => {
            assert!(
                m.contains("node 3 was elected and fetches the WAL it lacks"),
                "{m}"
            );
            assert!(m.contains("--allow-data-loss"), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(g, stuck(), "a refusal changes nothing");
    let out = core.failover(&mut g, true, now).unwrap();
    assert_eq!(g.node(3).unwrap().assigned, PreparePromotion);
    let notes: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Note { description, .. } => Some(description.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("DATA LOSS") && n.contains("0/6400000..0/6E00000")),
        "{notes:?}"
    );
}

/// Not fast_forward, a wait beside it: more synchronous standbys asked
/// for than nodes with replication quorum (simulation, seed 654350: a
/// node that lost its quorum while it was the primary is a standby now).
#[test]
fn too_few_quorum_standbys_for_number_sync_standbys_is_a_named_wait() {
    let mut g = group(vec![
        node(1, Primary).changed_at(at(-30.0)),
        node(2, Secondary),
        node(3, Secondary).quorum(false),
    ]);
    g.number_sync_standbys = 2;
    let cfg = crate::fsm::FsmConfig::whole_seconds();
    let (id, why) = crate::fsm::current_wait(&g, t0(), &cfg).expect("a named wait");
    assert_eq!(id, 1);
    assert!(
        why.contains("only 1 standbys have replication quorum"),
        "{why}"
    );
    assert!(why.contains("set node replication-quorum"), "{why}");
}
