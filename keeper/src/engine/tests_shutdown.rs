//! The shutdown LSN in the report: what a planned switchover waits for
//! (the candidate must have received WAL up to it before it promotes).

use super::tests::{engine, running, s, standby, stopped};
use super::*;
use pgpilot_proto::Lsn;
use NodeState::*;

fn shut_down_at(lsn: u64) -> Observation {
    Observation {
        shutdown_lsn: Some(Lsn(lsn)),
        ..stopped()
    }
}

#[test]
fn a_clean_stop_reports_its_shutdown_checkpoint() {
    let mut e = engine(Draining);
    e.observe(s(1.0), shut_down_at(0x3000028));
    let req = e.request(s(1.0));
    assert_eq!(req.shutdown_lsn, Some(0x3000028));
    // Stopped: no status, so the LSN field itself stays unknown.
    assert!(req.status_unknown);
    assert_eq!(req.lsn, 0);
}

#[test]
fn no_shutdown_lsn_after_a_crash_or_while_running() {
    let mut e = engine(Draining);
    // A crash, an immediate shutdown or a standby's clean stop: the agent
    // finds no "shut down" in pg_control.
    e.observe(s(1.0), stopped());
    assert_eq!(e.request(s(1.0)).shutdown_lsn, None);
    e.observe(s(2.0), running(standby(None)));
    assert_eq!(e.request(s(2.0)).shutdown_lsn, None);
    // An observation that claims both is read as running.
    e.observe(
        s(3.0),
        Observation {
            shutdown_lsn: Some(Lsn(9)),
            ..running(standby(None))
        },
    );
    assert_eq!(e.request(s(3.0)).shutdown_lsn, None);
}

#[test]
fn a_start_ends_the_shutdown_lsn() {
    // The engine started PostgreSQL after the observation: the report
    // before the next observation must not claim it is still shut down.
    let mut e = engine(Demoted);
    e.observe(s(1.0), shut_down_at(0x3000028));
    assert_eq!(e.request(s(1.0)).shutdown_lsn, Some(0x3000028));
    e.pg_start_result(s(1.5), true);
    assert_eq!(e.request(s(1.5)).shutdown_lsn, None);
    // It died again: nothing is known of how, so still none.
    e.pg_died(s(2.0));
    assert_eq!(e.request(s(2.0)).shutdown_lsn, None);
}
