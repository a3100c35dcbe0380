//! The engine's decisions, each driven through its public calls with
//! explicit time, the way both drivers use it.

use super::*;
use pgpilot_proto::Lsn;
use NodeState::*;

pub(super) fn s(secs: f64) -> Mono {
    Duration::from_secs_f64(secs)
}

pub(super) fn engine(current: NodeState) -> Engine {
    Engine::new(
        KeeperState {
            node_id: 1,
            group_id: 0,
            name: "node_1".into(),
            current,
            assigned: current,
            generation_seen: 5,
            last_rejoin: None,
            following: None,
        },
        Duration::from_secs(1),
    )
}

pub(super) fn reply(state: NodeState, generation: i64, others: &[i64]) -> pb::NodeActiveResponse {
    pb::NodeActiveResponse {
        assigned_state: state as i32,
        generation,
        lease_ms: 3000,
        clock_margin_ms: 1000,
        other_nodes: others
            .iter()
            .map(|id| pb::NodeInfo {
                node_id: *id,
                host: "10.0.0.2".into(),
                port: 5432,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub(super) fn running(status: PgStatus) -> Observation {
    Observation {
        has_pgdata: true,
        running: true,
        status: Some(status),
        system_identifier: Some(7),
        rewind_interrupted: false,
        shutdown_lsn: None,
    }
}

/// PostgreSQL runs, its status could not be read.
pub(super) fn status_unknown() -> Observation {
    Observation {
        status: None,
        ..running(PgStatus::default())
    }
}

pub(super) fn stopped() -> Observation {
    Observation {
        has_pgdata: true,
        ..Default::default()
    }
}

pub(super) fn primary_streamed_by(names: &[&str]) -> PgStatus {
    PgStatus {
        timeline: 1,
        lsn: Lsn(100),
        streaming_standbys: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

pub(super) fn standby(receiver: Option<(bool, Option<u64>)>) -> PgStatus {
    PgStatus {
        in_recovery: true,
        timeline: 1,
        lsn: Lsn(100),
        wal_receiver: receiver,
        ..Default::default()
    }
}

/// A primary of a two-node group whose last report (sent at 10 s) got a
/// reply naming node 2.
pub(super) fn primary_with_lease() -> Engine {
    let mut e = engine(Primary);
    e.observe(s(10.0), running(primary_streamed_by(&[])));
    let d = e.on_reply(s(10.0), s(10.1), reply(Primary, 5, &[2]));
    assert!(matches!(d, Decision::Steady(_)), "{d:?}");
    e
}

#[test]
fn fencing_deadline() {
    // (what, state, observed streaming standbys at 12 s, now, deadline, fence)
    type Case = (
        &'static str,
        NodeState,
        Option<&'static [&'static str]>,
        f64,
    );
    let cases: &[(Case, Option<f64>, bool)] = &[
        (("lease valid", Primary, None, 12.9), Some(13.0), false),
        (("lease ran out", Primary, None, 13.0), Some(13.0), true),
        (
            (
                "exemption observed",
                Primary,
                Some(&["pgpilot_node_2"]),
                14.2,
            ),
            // 2.25 s: lease * lease / (lease + margin), see `exemption`.
            Some(14.25),
            false,
        ),
        (
            (
                "exemption expired",
                Primary,
                Some(&["pgpilot_node_2"]),
                14.25,
            ),
            Some(14.25),
            true,
        ),
        (
            ("a standby not streaming", Primary, Some(&[]), 13.5),
            Some(13.0),
            true,
        ),
        (("single never fences", Single, None, 100.0), None, false),
        (
            ("standbys never fence", Secondary, None, 100.0),
            None,
            false,
        ),
    ];
    for ((what, state, streaming, now), deadline, fence) in cases {
        let mut e = engine(*state);
        e.observe(s(10.0), running(primary_streamed_by(&[])));
        e.on_reply(s(10.0), s(10.1), reply(*state, 5, &[2]));
        if let Some(names) = streaming {
            e.observe(s(12.0), running(primary_streamed_by(names)));
        }
        assert_eq!(e.fence_deadline(), deadline.map(s), "{what}");
        assert_eq!(e.must_fence(s(*now)), *fence, "{what}");
        assert_eq!(e.on_no_reply(s(*now)), *fence, "{what}");
    }
}

#[test]
fn a_writable_node_without_a_lease_has_a_past_deadline() {
    // A keeper restarted in `primary`: no report yet, the lease is over.
    let e = engine(Primary);
    assert_eq!(e.fence_deadline(), Some(Mono::ZERO));
    assert!(e.must_fence(s(1.0)));
    assert!(!e.should_start_pg(s(1.0)), "no lease, no writable start");
}

#[test]
fn the_exemption_does_not_outlive_a_busy_loop() {
    let mut e = primary_with_lease();
    e.observe(s(11.0), running(primary_streamed_by(&["pgpilot_node_2"])));
    // The loop is then stuck (no more observations): the watchdog's
    // deadline stays finite.
    assert_eq!(e.fence_deadline(), Some(s(13.25)));
    assert!(e.must_fence(s(13.25)));
    // Fenced: the node leaves the writable states.
    e.fenced();
    assert_eq!(e.state().current, DemoteTimeout);
    assert!(e.needs_save());
    assert_eq!(e.fence_deadline(), None);
}

#[test]
fn the_deadline_holds_while_postgres_starts() {
    // A primary whose PostgreSQL is down gets its lease, then starts it:
    // during the start the deadline is the lease's end.
    let mut e = engine(Primary);
    e.observe(s(10.0), stopped());
    assert!(!e.should_start_pg(s(10.0)));
    e.on_reply(s(10.0), s(10.1), reply(Primary, 5, &[2]));
    assert!(e.should_start_pg(s(10.1)));
    assert_eq!(e.fence_deadline(), Some(s(13.0)));
    // The start took 60 s of crash recovery: fencing is due.
    assert!(!e.pg_start_result(s(70.0), true));
    assert!(e.must_fence(s(70.0)));
}

#[test]
fn failed_starts_spend_the_budget() {
    let mut e = engine(Secondary);
    e.observe(s(0.0), stopped());
    for (i, t) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        assert!(e.should_start_pg(s(t)), "start {i}");
        assert!(e.request(s(t)).pg_running, "being restarted counts as up");
        let spent = e.pg_start_result(s(t), false);
        assert_eq!(spent, i == 2, "start {i}");
    }
    assert!(!e.request(s(3.0)).pg_running, "reported down");
    assert!(!e.should_start_pg(s(12.9)), "backoff");
    assert!(e.should_start_pg(s(13.0)), "retry after the backoff");
    // Out of the window, the budget is whole again.
    assert!(e.request(s(64.0)).pg_running);
}

#[test]
fn a_crash_loop_spends_the_budget() {
    let mut e = engine(Secondary);
    e.observe(s(0.0), stopped());
    let mut spent = false;
    for t in [1.0, 5.0, 9.0] {
        assert!(e.should_start_pg(s(t)));
        assert!(!e.pg_start_result(s(t), true), "the start itself works");
        assert!(e.request(s(t)).pg_running);
        spent = e.pg_died(s(t + 2.0));
    }
    assert!(spent, "the third death spends the budget");
    assert!(!e.request(s(11.0)).pg_running, "reported down");
    assert!(!e.should_start_pg(s(12.0)), "backoff after the last death");
    assert!(e.should_start_pg(s(21.0)));
}

#[test]
fn upstream_silence_after_a_fresh_engine_start() {
    // A new keeper process beside a standby whose primary is already dead:
    // the receiver only ever (re)connects.
    let mut e = engine(Secondary);
    e.observe(s(100.0), running(standby(None)));
    let silent = |e: &Engine, t| {
        e.request(s(t))
            .wal_receiver
            .and_then(|w| w.upstream_silent_ms)
    };
    assert_eq!(silent(&e, 100.0), Some(0));
    e.observe(s(101.0), running(standby(Some((false, None)))));
    assert_eq!(
        silent(&e, 104.0),
        Some(4000),
        "counted from the first observation, reconnecting is no contact"
    );
    // Contact once the receiver streams: from then on it counts.
    e.observe(s(105.0), running(standby(Some((true, Some(200))))));
    assert_eq!(silent(&e, 105.0), Some(200));
    e.observe(s(106.0), running(standby(Some((false, None)))));
    assert_eq!(
        silent(&e, 107.0),
        Some(2200),
        "a reconnect keeps the contact"
    );
}

#[test]
fn silence_the_keeper_looked_away_from_longer_than_the_receiver_lingers_does_not_count() {
    let mut e = engine(Secondary);
    let silent = |e: &Engine, t| {
        e.request(s(t))
            .wal_receiver
            .and_then(|w| w.upstream_silent_ms)
    };
    e.observe(s(100.0), running(standby(Some((true, Some(0))))));
    e.observe(s(101.0), running(standby(Some((false, None)))));
    assert_eq!(
        silent(&e, 101.0),
        Some(1000),
        "looked every second: all seen"
    );
    // The loop stalled 5 s: a contact in its first 3.8 s would have left
    // no trace (the receiver lingers 1.2 s): only the last 1.2 s count.
    e.observe(s(106.0), running(standby(Some((false, None)))));
    assert_eq!(silent(&e, 106.0), Some(2200));
}

#[test]
fn primaries_report_no_upstream_silence() {
    let mut e = engine(Primary);
    e.observe(s(1.0), running(primary_streamed_by(&[])));
    let req = e.request(s(5.0));
    assert_eq!(req.wal_receiver.unwrap().upstream_silent_ms, None);
}

#[test]
fn unknown_status_is_reported_as_unknown() {
    let mut e = engine(Secondary);
    e.observe(
        s(1.0),
        Observation {
            has_pgdata: true,
            running: true,
            status: None,
            system_identifier: Some(7),
            rewind_interrupted: false,
            shutdown_lsn: None,
        },
    );
    let req = e.request(s(1.0));
    assert!(req.status_unknown);
    assert!(req.pg_running);
    assert_eq!((req.lsn, req.timeline), (0, 0));
    e.observe(s(2.0), running(standby(None)));
    assert!(!e.request(s(2.0)).status_unknown);
    // Stopped (perhaps being restarted, and so reported running): its
    // position is unknown too.
    e.observe(s(3.0), stopped());
    assert!(
        e.request(s(3.0)).status_unknown,
        "stopped says nothing of the LSN"
    );
}

#[test]
fn a_stale_generation_is_ignored() {
    let mut e = engine(Secondary);
    let d = e.on_reply(s(1.0), s(1.1), reply(PreparePromotion, 4, &[2]));
    assert!(matches!(d, Decision::Ignore(_)), "{d:?}");
    assert_eq!(e.state().assigned, Secondary);
    assert!(!e.needs_save());
    let d = e.on_reply(s(2.0), s(2.1), reply(PreparePromotion, 6, &[2]));
    assert!(
        matches!(&d, Decision::Transition { from: Secondary, goal } if goal.state == PreparePromotion),
        "{d:?}"
    );
    assert_eq!(e.state().generation_seen, 6);
    assert!(e.needs_save());
    e.saved();
    e.transition_ok(PreparePromotion);
    assert_eq!(e.state().current, PreparePromotion);
    assert!(e.needs_save());
}

#[test]
fn the_lease_counts_from_when_the_report_was_sent() {
    let mut e = engine(Primary);
    e.on_reply(s(10.0), s(10.7), reply(Primary, 5, &[2]));
    assert_eq!(e.fence_deadline(), Some(s(13.0)));
    // A late reply to an older report does not move the lease back.
    e.on_reply(s(9.0), s(11.0), reply(Primary, 5, &[2]));
    assert_eq!(e.fence_deadline(), Some(s(13.0)));
}

#[test]
fn timing_contract_from_the_reply() {
    let mut e = engine(Secondary);
    assert_eq!(e.poll_interval(), Duration::from_secs(1), "config first");
    assert_eq!(e.report_timeout(), DEFAULT_REPORT_TIMEOUT);
    let mut r = reply(Secondary, 5, &[2]);
    r.poll_interval_ms = 500;
    r.report_timeout_ms = 400;
    e.on_reply(s(1.0), s(1.1), r);
    assert_eq!(e.poll_interval(), Duration::from_millis(500));
    assert_eq!(e.report_timeout(), Duration::from_millis(400));
    assert_eq!(e.next_wait(s(2.0)), Duration::from_millis(500));
    // A reply that says nothing keeps the contract.
    e.on_reply(s(2.0), s(2.1), reply(Secondary, 5, &[2]));
    assert_eq!(e.poll_interval(), Duration::from_millis(500));
}

#[test]
fn next_wait() {
    // (state, now, wait): the poll interval, or just past the deadline.
    let cases = [
        (Secondary, 12.5, 1000),
        (Primary, 11.0, 1000),
        (Primary, 12.5, 501),
        (Primary, 14.0, 10),
        (Single, 12.5, 1000),
    ];
    for (state, now, ms) in cases {
        let mut e = engine(state);
        e.on_reply(s(10.0), s(10.1), reply(state, 5, &[2]));
        assert_eq!(
            e.next_wait(s(now)),
            Duration::from_millis(ms),
            "{state} at {now}"
        );
    }
}

#[test]
fn steady_role_is_applied_once_per_start() {
    let mut e = primary_with_lease();
    let goal = plan::goal_from_reply(&reply(Primary, 5, &[2]), Primary);
    let role = e.role_to_apply(&goal).expect("not verified yet");
    e.role_applied(Some(role));
    assert_eq!(e.role_to_apply(&goal), None);
    e.pg_died(s(11.0));
    e.observe(s(11.0), stopped());
    assert_eq!(e.role_to_apply(&goal), None, "nothing to apply to");
    assert!(e.should_start_pg(s(11.0)));
    e.pg_start_result(s(11.5), true);
    assert!(
        e.role_to_apply(&goal).is_some(),
        "verified again after a start"
    );
}

#[test]
fn a_standby_told_to_follow_another_node_is_rewound_first() {
    use crate::plan::{Goal, Role, Step, Upstream};
    let up = |id| Upstream {
        node_id: id,
        host: "10.0.0.2".into(),
        port: 5432,
    };
    let goal = Goal {
        state: NodeState::Catchingup,
        ssn: String::new(),
        primary: Some(up(2)),
        fast_forward: None,
    };
    let mut e = engine(NodeState::Catchingup);
    e.observe(s(1.0), running(standby(Some((true, Some(0))))));
    // It streamed from node 1 (as the state file remembers, across
    // restarts): node 2 may lack WAL it has.
    e.role_applied(Some(Role::Standby {
        upstream: Some(up(1)),
    }));
    assert_eq!(e.state().following, Some(1));
    // While the monitor does not report node 2 up, no rewind (it would
    // fail and leave this standby stopped, unhealthy): only the settings.
    let mut r = reply(NodeState::Catchingup, 5, &[2]);
    r.other_nodes[0].is_primary = true;
    r.other_nodes[0].reported_state = NodeState::Primary as i32;
    e.on_reply(s(1.0), s(1.0), r.clone());
    assert!(matches!(
        &e.steady_steps(s(1.0), &goal)[..],
        [Step::Configure(_)]
    ));
    e.role_applied(Some(Role::Standby {
        upstream: Some(up(1)),
    }));
    r.other_nodes[0].healthy = true;
    e.on_reply(s(1.0), s(1.0), r);
    let steps = e.steady_steps(s(1.0), &goal);
    assert!(
        matches!(&steps[..], [Step::Stop, Step::Rewind(u), Step::Configure(_), Step::Start] if u.node_id == 2),
        "{steps:?}"
    );
    // Once it follows node 2, settings only.
    e.role_applied(Some(Role::Standby {
        upstream: Some(up(2)),
    }));
    e.role_applied(None);
    e.observe(s(2.0), running(standby(Some((true, Some(0))))));
    assert!(matches!(
        &e.steady_steps(s(2.0), &goal)[..],
        [Step::Configure(_)]
    ));
    let restarted = Engine::new(e.state().clone(), Duration::from_secs(1));
    assert_eq!(restarted.state().following, Some(2));
}

#[test]
fn the_exemption_needs_close_observations_under_an_expired_lease() {
    let others = primary_streamed_by(&["pgpilot_node_2"]);
    let mut e = primary_with_lease();
    e.observe(s(11.0), running(others.clone()));
    // Through a monitor outage, observed every 1.8 s: it carries on.
    e.observe(s(12.8), running(others.clone()));
    e.observe(s(14.6), running(others.clone()));
    e.observe(s(16.4), running(others.clone()));
    assert!(!e.must_fence(s(16.5)), "a monitor outage costs no writes");
    // Frozen for 3 s: the standby may have been promoted meanwhile, and
    // streaming from us once more on resume proves nothing.
    e.observe(s(19.4), running(others.clone()));
    assert!(e.must_fence(s(19.4)));
    // It does not come back until the monitor answers again.
    e.observe(s(20.0), running(others));
    assert!(e.must_fence(s(20.0)));
}

#[test]
fn the_exemption_counts_from_the_oldest_standby_reply() {
    let mut e = primary_with_lease();
    let mut st = primary_streamed_by(&["pgpilot_node_2"]);
    // The walsender still says streaming, but the standby last replied
    // 1.2 s ago: the exemption runs from then.
    st.oldest_reply_ms = Some(1200);
    e.observe(s(11.0), running(st));
    assert_eq!(
        e.fence_deadline(),
        Some(s(13.0).max(s(9.8) + Duration::from_secs(3)))
    );
}

#[test]
fn the_exemption_is_shorter_than_a_lease_by_the_clock_margin_and_renewed_before_it_lapses() {
    let mut e = primary_with_lease();
    // The monitor is gone; the standby keeps streaming and replied 0.5 s
    // ago at each look.
    let mut st = primary_streamed_by(&["pgpilot_node_2"]);
    st.oldest_reply_ms = Some(500);
    e.observe(s(12.0), running(st.clone()));
    // 11.5 + 3 * 3 / (3 + 1): a keeper clock at 0.75 of the monitor's
    // still stops within a lease of the reply in truth, before the
    // standby (silent a lease) can be a failover witness.
    assert_eq!(e.fence_deadline(), Some(s(13.75)));
    // The lease itself ended at 13.0 (reply at 10.0): the loop wakes
    // 250 ms before the exemption lapses to look again, and a report
    // sent then is cut short to leave the next look its time.
    assert_eq!(e.next_wait(s(13.0)), Duration::from_millis(500));
    assert_eq!(e.report_timeout_at(s(13.4)), Duration::from_millis(100));
    e.observe(s(13.5), running(st));
    assert_eq!(e.fence_deadline(), Some(s(15.25)));
}

#[test]
fn silence_the_keeper_could_not_see_is_not_silence() {
    let mut e = engine(Secondary);
    e.observe(s(10.0), running(standby(Some((true, Some(0))))));
    // Status reads fail for ten seconds: the receiver may stream all along.
    let unknown = status_unknown();
    e.observe(s(15.0), unknown.clone());
    e.observe(s(20.0), unknown);
    // They work again; the receiver just dropped.
    e.observe(s(20.5), running(standby(Some((false, None)))));
    assert_eq!(
        e.upstream_silent(s(20.5)),
        Some(Duration::from_millis(500)),
        "the 10 s without a status do not count"
    );
}

#[test]
fn status_reads_that_fail_now_and_then_do_not_hide_a_dead_primary() {
    let mut e = engine(Secondary);
    e.observe(s(10.0), running(standby(Some((true, Some(0))))));
    let unknown = status_unknown();
    // The primary is gone from 10 s; every other read fails.
    for i in 1..=8 {
        let t = 10.0 + i as f64;
        if i % 2 == 1 {
            e.observe(s(t), unknown.clone());
        } else {
            e.observe(s(t), running(standby(Some((false, None)))));
        }
    }
    // Four seconds of silence were seen, in pieces: they add up.
    assert_eq!(e.upstream_silent(s(18.0)), Some(Duration::from_secs(4)));
}

/// The contract of today's defaults: lease 1.2 s, clock margin 300 ms,
/// poll 400 ms, report timeout 400 ms.
fn default_contract(state: NodeState, others: &[i64]) -> pb::NodeActiveResponse {
    pb::NodeActiveResponse {
        lease_ms: 1200,
        clock_margin_ms: 300,
        poll_interval_ms: 400,
        report_timeout_ms: 400,
        ..reply(state, 5, others)
    }
}

#[test]
fn one_timed_out_report_is_retried_at_once_so_the_lease_survives_it() {
    // wait_primary: no standby streams, only the lease keeps it writable.
    let mut e = engine(WaitPrimary);
    e.on_reply(s(10.0), s(10.01), default_contract(WaitPrimary, &[2]));
    assert_eq!(e.next_wait(s(10.01)), Duration::from_millis(400));
    // The next report, sent at 10.41, times out at 10.81: waiting a poll
    // would send the one after at 11.21, past the lease (11.2).
    assert!(!e.on_no_reply(s(10.81)));
    assert_eq!(e.next_wait(s(10.81)), MIN_WAIT);
    assert_eq!(e.report_timeout_at(s(10.82)), Duration::from_millis(400));
    // It is answered: the lease runs from its sending, the poll is back.
    e.on_reply(s(10.82), s(10.9), default_contract(WaitPrimary, &[2]));
    assert_eq!(e.fence_deadline(), Some(s(12.02)));
    assert_eq!(e.next_wait(s(10.9)), Duration::from_millis(400));
    // A monitor that refuses at once is retried once, then every poll
    // (capped by the deadline, as always).
    assert!(!e.on_no_reply(s(11.3)));
    assert_eq!(e.next_wait(s(11.3)), MIN_WAIT);
    assert!(!e.on_no_reply(s(11.31)));
    assert_eq!(e.next_wait(s(11.31)), Duration::from_millis(400));
}

#[test]
fn an_idle_primary_keeps_its_exemption_through_reports_that_hang() {
    // The monitor is cut off (its packets dropped: every report hangs for
    // as long as it may), the standby streams and, the primary being
    // idle, its last reply is 620 ms old at every look (wal_sender_timeout
    // / 2 and a little). The loop as the agent runs it must never let the
    // deadline pass: look, report (hangs), no reply, wait, look again.
    let mut e = engine(Primary);
    e.on_reply(s(10.0), s(10.01), default_contract(Primary, &[2]));
    let mut st = primary_streamed_by(&["pgpilot_node_2"]);
    st.oldest_reply_ms = Some(620);
    let mut now = s(10.01);
    while now < s(20.0) {
        now += Duration::from_millis(5); // the status read
        e.observe(now, running(st.clone()));
        assert!(!e.must_fence(now), "fenced at {now:?} after a look");
        now += e.report_timeout_at(now);
        assert!(!e.on_no_reply(now), "fenced at {now:?} after a report");
        now += e.next_wait(now);
        assert!(!e.must_fence(now), "fenced at {now:?} before a look");
    }
}
