//! Table tests of failover, the lease gate, rejoin and the rules that must
//! not turn synchronous replication off during a failover.

use pgpilot_proto::NodeState::*;

use super::builders::*;
use super::tests::{case, check, Want::*};

/// now for the failover cases: the primary's keeper last reported at t0.
fn t() -> crate::fsm::Timestamp {
    at(3.2)
}

/// The dead primary: silent since t0, probes failing.
fn dead() -> crate::fsm::NodeView {
    node(1, Primary).bad()
}

/// A healthy secondary that reported at `t()`, its WAL receiver silent `up` s.
fn sec(id: i64, up: f64) -> crate::fsm::NodeView {
    node(id, Secondary).silent_since(Some(t())).upstream(up)
}

#[test]
fn failover_rules() {
    let cases = [
        case(
            "two witnesses: failover",
            vec![dead(), sec(2, 3.0)],
            t(),
            vec![Bump, Goal(2, PreparePromotion), Goal(1, Draining)],
            "node 2 assigned prepare_promotion: primary node 1 silent 3.2 s and probes failing, node 2 lost replication 3.0 s ago",
        ),
        case(
            "primary's keeper reports Postgres down: failover",
            vec![node(1, Primary).pg_down().silent_since(Some(t())), sec(2, 0.0)],
            t(),
            vec![Bump, Goal(2, PreparePromotion), Goal(1, Draining)],
            "primary node 1 reports Postgres down, primary node 1's keeper reports Postgres down",
        ),
        case("only the monitor lost the primary: no failover", vec![dead(), sec(2, 0.5)], t(), vec![], ""),
        case(
            "keeper silent but probes succeed: no failover",
            vec![node(1, Primary), sec(2, 3.0)],
            t(),
            vec![],
            "",
        ),
        case(
            "standby catchingup: no failover (primary just turns sync off)",
            vec![dead(), node(2, Catchingup).silent_since(Some(t())).upstream(3.0)],
            t(),
            vec![Goal(1, WaitPrimary)],
            "no quorum secondary left",
        ),
        case(
            "candidate priority 0: never, and the monitor says why",
            vec![dead(), sec(2, 3.0).prio(0)],
            t(),
            vec![WaitFor(1)],
            "every standby has candidate priority 0",
        ),
        case(
            "an election's loser that never followed the winner does not block the winner's failover",
            vec![
                dead(),
                sec(2, 3.0),
                node(3, ReportLsn).goal(Catchingup).upstream(30.0).bad().silent_since(Some(t())),
            ],
            t(),
            vec![Bump, Goal(2, ReportLsn), Goal(1, Draining)],
            "election: primary node 1",
        ),
        case(
            "... but one whose last word is old (its rejoin may stream already) still blocks",
            vec![dead(), sec(2, 3.0), node(3, ReportLsn).goal(Catchingup).upstream(30.0).bad()],
            t(),
            vec![WaitFor(3)],
            "quorum standby node 3 is not healthy",
        ),
        case("candidate too far behind: no", vec![dead(), sec(2, 3.0).lsn_mb(50)], t(), vec![], ""),
        case(
            "primary in wait_primary: no failover",
            vec![node(1, WaitPrimary).bad(), node(2, Catchingup).silent_since(Some(t())).upstream(3.0)],
            t(),
            vec![],
            "",
        ),
        case(
            "candidate itself silent: no failover, and the monitor says why",
            vec![dead(), node(2, Secondary).upstream(3.0)],
            t(),
            vec![WaitFor(2)],
            "standby node 2 is not healthy",
        ),
        case(
            "two quorum secondaries: an election, every standby reports its LSN",
            vec![dead(), sec(2, 3.0), sec(3, 3.0).prio(90)],
            t(),
            vec![Bump, Goal(2, ReportLsn), Goal(3, ReportLsn), Goal(1, Draining)],
            "node 3 lost replication",
        ),
        case(
            "a quorum standby that is not healthy may hold commits: no failover",
            vec![dead(), sec(2, 3.0), sec(3, 3.0).bad().silent_since(Some(at(1.0)))],
            t(),
            vec![WaitFor(3)],
            "quorum standby node 3 is not healthy",
        ),
        case(
            "a non-quorum standby votes too: it may still follow the old primary",
            vec![dead(), sec(2, 3.0).quorum(false), sec(3, 3.0).prio(90)],
            t(),
            vec![Bump, Goal(2, ReportLsn), Goal(3, ReportLsn), Goal(1, Draining)],
            "election",
        ),
        case(
            "an unhealthy non-quorum standby holds no commits: it does not block",
            vec![dead(), sec(2, 3.0).quorum(false).bad().silent_since(Some(at(1.0))), sec(3, 3.0)],
            t(),
            vec![Bump, Goal(3, ReportLsn), Goal(1, Draining)],
            "election",
        ),
        case(
            // Dead end 1: a keeper that cannot read its status reports an
            // LSN that means nothing.
            "a candidate whose status is unknown is not promoted",
            vec![dead(), sec(2, 3.0).unknown()],
            t(),
            vec![],
            "",
        ),
        case(
            // Dead end 13: demoted has no edge to report_lsn.
            "a quorum standby still rejoining (reported demoted) makes the election wait",
            vec![dead(), sec(2, 3.0), node(3, Demoted).goal(Catchingup)],
            t(),
            vec![WaitFor(3)],
            "still on its way into catchingup",
        ),
        case(
            "...unless its PostgreSQL is stopped: it acknowledges nothing and waits for a primary",
            vec![
                dead(),
                sec(2, 3.0),
                node(3, Demoted).goal(Catchingup).pg_down().silent_since(Some(t())),
            ],
            t(),
            vec![Bump, Goal(2, ReportLsn), Goal(1, Draining)],
            "election",
        ),
        case(
            "...but a silent keeper's word that it is stopped is stale: wait",
            vec![
                dead(),
                sec(2, 3.0),
                node(3, WaitStandby).goal(Catchingup).pg_down().silent_since(Some(at(-1.0))),
            ],
            t(),
            vec![WaitFor(3)],
            "still on its way into catchingup",
        ),
        case(
            "election: of equal priorities the most advanced voter is promoted",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).lsn_mb(110),
                node(3, ReportLsn).lsn_mb(100),
            ],
            t0(),
            vec![Goal(2, PreparePromotion)],
            "elected with LSN",
        ),
        case(
            "election: a quorum standby whose copy finished after it began votes too, and is waited for",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).lsn_mb(100).changed_at(at(-1.0)),
                node(3, Catchingup).changed_at(at(-2.0)),
            ],
            t0(),
            vec![Goal(3, ReportLsn)],
            "joined during the election",
        ),
        case(
            "election: a standby whose last word is older than the election joined nothing \
             (a dead machine the operator left out)",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).lsn_mb(100).changed_at(at(-1.0)),
                node(3, Catchingup).bad().silent_since(Some(at(-2.0))),
            ],
            t0(),
            vec![Goal(2, PreparePromotion)],
            "elected with LSN",
        ),
        case(
            "election: a voter whose status is unknown has no final LSN yet",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).lsn_mb(100),
                node(3, ReportLsn).lsn_mb(90).unknown(),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "election timeout: a winner that died gives way to a voter holding all it reported",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).goal(PreparePromotion).bad(),
                node(3, ReportLsn).lsn_mb(100).silent_since(Some(t())),
            ],
            t(),
            vec![Goal(2, ReportLsn), Goal(3, PreparePromotion)],
            "the election's winner is not healthy; node 3 holds all the voters hold",
        ),
        case(
            "election timeout: a winner whose keeper reports PostgreSQL down gives way, and the heir is chosen at once",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, PreparePromotion).goal(PreparePromotion).pg_down().silent_since(Some(t())),
                node(3, ReportLsn).lsn_mb(100).silent_since(Some(t())),
            ],
            t(),
            vec![Goal(2, ReportLsn), Goal(3, PreparePromotion)],
            "node 3 holds all the voters hold",
        ),
        case(
            "election timeout: a winner told to promote may have promoted: no heir, the monitor says why",
            vec![
                node(1, Primary).goal(DemoteTimeout).bad(),
                node(2, PreparePromotion).goal(StopReplication).bad().changed_at(at(0.0)),
                node(3, ReportLsn).lsn_mb(100).silent_since(Some(at(20.0))),
            ],
            at(20.0),
            vec![WaitFor(2)],
            "it may have promoted already",
        ),
        case(
            "election timeout: no voter holds all the dead winner reported: it waits, and says so",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).goal(PreparePromotion).lsn_mb(110).bad(),
                node(3, ReportLsn).lsn_mb(100).silent_since(Some(at(20.0))),
            ],
            at(20.0),
            vec![WaitFor(2)],
            "failover waits for node 2: it was chosen to be promoted and is not healthy",
        ),
        case(
            "election timeout: a healthy winner that does not take its goal gives way after promotion_timeout",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).goal(PreparePromotion).silent_since(Some(at(31.0))),
                node(3, ReportLsn).lsn_mb(100).silent_since(Some(at(31.0))),
            ],
            at(31.0),
            vec![Goal(2, ReportLsn), Goal(3, PreparePromotion)],
            "has not taken its goal within promotion_timeout (30.0 s)",
        ),
        case(
            "election timeout: not before promotion_timeout",
            vec![
                node(1, Primary).goal(Draining).bad(),
                node(2, ReportLsn).goal(PreparePromotion).silent_since(Some(at(29.0))),
                node(3, ReportLsn).lsn_mb(100).silent_since(Some(at(29.0))),
            ],
            at(29.0),
            vec![],
            "",
        ),
        case(
            "the most advanced quorum secondary has priority 0: an election, whose winner fetches \
             what it lacks from it",
            vec![
                node(1, Primary).bad().silent_since(None),
                sec(2, 3.0).lsn_mb(99),
                sec(3, 3.0).prio(0),
            ],
            t(),
            vec![Bump, Goal(2, ReportLsn), Goal(3, ReportLsn), Goal(1, Draining)],
            "election: primary node 1 never reported and probes failing",
        ),
        case(
            "a primary whose keeper reports PostgreSQL down, its only standby too far behind: named at once",
            vec![
                node(1, Primary).pg_down().silent_since(Some(t())),
                sec(2, 0.0).lsn_mb(50),
            ],
            t(),
            vec![WaitFor(1)],
            "no standby may be promoted",
        ),
        case(
            "a wait_primary that dies is not failed over (it acknowledged alone), and the monitor says so",
            vec![
                node(1, WaitPrimary).bad(),
                node(2, Catchingup).silent_since(Some(at(20.0))).upstream(15.0),
            ],
            at(20.0),
            vec![WaitFor(1)],
            "no automatic failover from node 1: it is not healthy, and as it reports wait_primary with goal wait_primary",
        ),
        case(
            "dead end 9: a primary that died mid-apply_settings is failed over (synchronous replication stays on)",
            vec![
                node(1, ApplySettings).bad(),
                sec(2, 3.0),
                sec(3, 3.0).prio(90),
            ],
            t(),
            vec![Bump, Goal(2, ReportLsn), Goal(3, ReportLsn), Goal(1, Draining)],
            "election: primary node 1 silent 3.2 s",
        ),
        case(
            "dead end 9: ... also when it had not started applying them",
            vec![node(1, Primary).goal(ApplySettings).bad(), sec(2, 3.0)],
            t(),
            vec![Bump, Goal(2, PreparePromotion), Goal(1, Draining)],
            "node 2 assigned prepare_promotion",
        ),
        case(
            "dead end 9: but not while a dropped quorum standby's commits may be missing",
            vec![
                node(1, ApplySettings).bad(),
                sec(2, 3.0),
                node(3, Secondary).dropped(Secondary, true),
            ],
            t(),
            vec![Goal(1, Primary), WaitFor(1)],
            "quorum standby node 3 was dropped before the primary re-applied",
        ),
        case(
            "a primary told to turn synchronous replication off is not failed over",
            vec![node(1, ApplySettings).goal(WaitPrimary).bad(), sec(2, 3.0)],
            t(),
            vec![],
            "",
        ),
        case(
            "self-fenced primary (demote_timeout, goal primary) is not failed over",
            vec![node(1, DemoteTimeout).goal(Primary).pg_down().silent_since(Some(t())), sec(2, 3.0)],
            t(),
            vec![],
            "",
        ),
    ];
    cases.iter().for_each(check);
}

#[test]
fn promotion_and_lease_gate() {
    let old = || node(1, Primary).goal(DemoteTimeout).bad();
    let cand = || node(2, StopReplication).silent_since(Some(at(10.0)));
    let cases = [
        case(
            "prepare_promotion reached -> stop_replication, old primary demote_timeout",
            vec![node(1, Primary).goal(Draining).bad(), node(2, PreparePromotion).silent_since(Some(t()))],
            t(),
            vec![Goal(2, StopReplication), Goal(1, DemoteTimeout)],
            "promoting it read-only",
        ),
        case(
            "old primary already fenced itself while told to drain",
            vec![node(1, DemoteTimeout).goal(Draining), node(2, PreparePromotion)],
            t0(),
            vec![Goal(1, DemoteTimeout), Goal(2, StopReplication)],
            "already fenced itself",
        ),
        case(
            "prepare_promotion with the old primary gone",
            vec![node(2, PreparePromotion)],
            t0(),
            vec![Goal(2, StopReplication)],
            "",
        ),
        case(
            "lease gate: read-only while the old primary's lease runs",
            vec![old(), cand()],
            at(4.0),
            vec![],
            "",
        ),
        case(
            "lease gate: lease expired -> writable",
            vec![old(), cand()],
            at(4.1),
            vec![Goal(2, WaitPrimary), Goal(1, Demoted)],
            "node 2 assigned wait_primary: node 1 lease expired (silent 4.1 s, lease 3.0 s + margin 1.0 s)",
        ),
        case(
            "lease gate: old primary acknowledged -> writable before expiry",
            vec![node(1, DemoteTimeout), cand()],
            at(0.5),
            vec![Goal(2, WaitPrimary), Goal(1, Demoted)],
            "node 1 reported demote_timeout",
        ),
        case(
            "lease gate: another secondary re-validates on the new timeline",
            vec![node(1, DemoteTimeout), cand(), node(3, Secondary)],
            at(0.5),
            vec![Goal(2, WaitPrimary), Goal(1, Demoted), Goal(3, Catchingup)],
            "follow new primary node 2",
        ),
        case(
            "no rejoin while the new primary is not healthy",
            vec![node(1, Demoted).pg_down(), node(2, WaitPrimary).tli(2).bad()],
            at(3.5),
            vec![],
            "",
        ),
        case(
            "rejoin: demoted old primary follows the new one",
            vec![node(1, Demoted).pg_down(), node(2, WaitPrimary).tli(2)],
            t0(),
            vec![Goal(1, Catchingup)],
            "rejoining new primary node 2",
        ),
        case(
            "old primary rejoined and caught up -> secondary",
            vec![node(1, Catchingup).tli(2), node(2, WaitPrimary).tli(2)],
            t0(),
            vec![Goal(1, Secondary)],
            "",
        ),
    ];
    cases.iter().for_each(check);
}

#[test]
fn sync_off_rules_and_their_guards() {
    let cases = [
        case(
            "standby lost: catchingup and wait_primary",
            vec![
                node(1, Primary).silent_since(Some(t())),
                node(2, Secondary).bad(),
            ],
            t(),
            vec![Goal(2, Catchingup), Goal(1, WaitPrimary)],
            "node 2 assigned catchingup: it is unhealthy",
        ),
        case(
            "standby lost, another quorum secondary remains: sync stays on",
            vec![
                node(1, Primary).silent_since(Some(t())),
                node(2, Secondary).bad(),
                sec(3, 0.0),
            ],
            t(),
            vec![Goal(2, Catchingup)],
            "",
        ),
        case(
            "stall: primary reaches the monitor, no standby streams",
            vec![
                node(1, Primary).stall_since(at(-10.5)),
                node(2, Secondary).upstream(12.0),
            ],
            t0(),
            vec![Goal(1, WaitPrimary), Goal(2, Catchingup)],
            "no standby streamed from it for 10.5 s",
        ),
        case(
            // Dead end 8: its wait for a synchronous standby kept failing.
            "stall: a node stuck on its way into primary goes back to wait_primary",
            vec![
                node(1, WaitPrimary)
                    .goal(Primary)
                    .changed_at(at(-11.0))
                    .stall_since(at(-10.5)),
                node(2, Secondary).upstream(12.0),
            ],
            t0(),
            vec![Goal(1, WaitPrimary), Goal(2, Catchingup)],
            "no standby streamed from it",
        ),
        case(
            "...but not before its goal has been primary for the stall timeout",
            vec![
                node(1, WaitPrimary)
                    .goal(Primary)
                    .changed_at(at(-2.0))
                    .stall_since(at(-10.5)),
                node(2, Secondary).upstream(12.0),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "stall not long enough",
            vec![node(1, Primary).stall_since(at(-9.0)), node(2, Secondary)],
            t0(),
            vec![],
            "",
        ),
        case(
            "stall rule never fires during a failover",
            vec![
                node(1, Primary).stall_since(at(-11.0)),
                node(2, Secondary).goal(PreparePromotion),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "standby-lost rule never turns sync off during a failover",
            vec![
                node(1, Primary),
                node(2, Secondary).goal(PreparePromotion),
                node(3, Secondary).bad().pg_down(),
            ],
            t0(),
            vec![],
            "",
        ),
        case(
            "draining primary is not sent to wait_primary by a dying candidate",
            vec![
                node(1, Primary).goal(Draining).stall_since(at(-11.0)),
                node(2, Secondary).goal(PreparePromotion).pg_down().bad(),
            ],
            t0(),
            vec![],
            "",
        ),
    ];
    cases.iter().for_each(check);
}

#[test]
fn waits_are_named_once() {
    use crate::fsm::{apply, decide, Action, FsmConfig};
    let cfg = FsmConfig::whole_seconds();
    // Dead end 7: a quorum voter that never reports its LSN.
    let mut g = group(vec![
        node(1, Primary)
            .goal(Draining)
            .bad()
            .silent_since(Some(t0())),
        node(2, ReportLsn).lsn_mb(100),
        node(3, Secondary).goal(ReportLsn),
    ]);
    assert!(
        decide(&g, at(1.0), &cfg).is_empty(),
        "a short wait is not named"
    );
    let late = at(20.0);
    let actions = decide(&g, late, &cfg);
    assert!(
        matches!(&actions[..], [Action::Wait { node_id: 3, reason }] if reason.contains("election waits for node 3")),
        "{actions:?}"
    );
    apply(&mut g, &actions, late);
    assert!(
        decide(&g, at(30.0), &cfg).is_empty(),
        "the same wait is one event"
    );
    // The voter reports: the election goes on and the wait is over.
    g.nodes[2].reported = ReportLsn;
    g.nodes[2].last_report = Some(at(30.0));
    g.nodes[1].last_report = Some(at(30.0));
    let actions = decide(&g, at(30.0), &cfg);
    assert!(actions.contains(&Action::WaitOver), "{actions:?}");
}
