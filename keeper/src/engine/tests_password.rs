//! The rotation of the replication password, as the engine decides it
//! (see the `password` module): which password to store, when to set one
//! on the role, and that a standby streaming with the old one is
//! configured again.

use super::tests::{engine, primary_streamed_by, reply, running, s, standby};
use super::*;
use crate::plan::Upstream;
use NodeState::*;

fn pw(generation: i64) -> Option<pb::ReplicationPassword> {
    Some(pb::ReplicationPassword {
        generation,
        password: format!("secret-{generation}"),
    })
}

fn up() -> Upstream {
    Upstream {
        node_id: 2,
        host: "10.0.0.2".into(),
        port: 5432,
    }
}

/// A writable primary that holds generation 1, its role at `role`,
/// writes allowed.
fn writable_primary(role: Option<i64>, r: pb::NodeActiveResponse) -> Engine {
    let mut e = engine(Primary);
    e.password_stored(1);
    let status = PgStatus {
        role_password_generation: role,
        ..primary_streamed_by(&[])
    };
    e.observe(s(10.0), running(status));
    e.on_reply(s(10.0), s(10.1), r);
    e.role_applied(Some(Role::Primary {
        ssn: String::new(),
        read_only: false,
    }));
    e
}

#[test]
fn the_primary_sets_the_pending_password_then_holds_it() {
    let mut r = reply(Primary, 5, &[2]);
    r.pending_replication_password = pw(2);
    let mut e = writable_primary(Some(1), r.clone());
    assert_eq!(e.password_to_store(), None, "not before the role has it");
    assert_eq!(
        e.steady_steps(s(10.2), &plan::goal_from_reply(&r, Primary)),
        vec![Step::SetReplicationPassword { generation: 2 }]
    );
    e.role_password_set(2);
    assert_eq!(e.password_to_store(), Some(2));
    e.password_stored(2);
    assert_eq!(e.request(s(10.3)).replication_password_generation, 2);
    assert_eq!(e.request(s(10.3)).role_password_generation, Some(2));
    assert_eq!(e.password_step(), None, "idempotent: the role has it");
}

#[test]
fn a_new_primary_whose_role_missed_the_rotation_sets_it_again() {
    // It holds generation 2 (current since the old primary set it), but
    // the ALTER ROLE never reached it (asynchronous standby): its role's
    // comment still says 1.
    let mut e = writable_primary(Some(1), reply(Primary, 6, &[2]));
    e.password_stored(2);
    assert_eq!(
        e.password_step(),
        Some(Step::SetReplicationPassword { generation: 2 })
    );
    // Its role has it (replicated): nothing to do.
    let mut e = writable_primary(Some(2), reply(Primary, 6, &[2]));
    e.password_stored(2);
    assert_eq!(e.password_step(), None);
}

#[test]
fn no_password_is_set_on_a_read_only_or_recovering_node() {
    let mut r = reply(Primary, 5, &[2]);
    r.pending_replication_password = pw(2);
    let mut e = writable_primary(Some(1), r.clone());
    e.role_applied(Some(Role::Primary {
        ssn: String::new(),
        read_only: true,
    }));
    assert_eq!(e.password_step(), None, "behind the lease gate");
    let mut e = engine(Secondary);
    e.observe(s(10.0), running(standby(Some((true, Some(0))))));
    e.on_reply(s(10.0), s(10.1), r);
    assert_eq!(e.password_step(), None);
    assert_eq!(e.password_to_store(), None, "a standby waits for current");
}

#[test]
fn a_standby_stores_the_current_password_and_is_configured_again() {
    let mut e = engine(Secondary);
    e.password_stored(1);
    e.observe(s(10.0), running(standby(Some((true, Some(0))))));
    let mut r = reply(Secondary, 5, &[2]);
    r.other_nodes[0].is_primary = true;
    e.on_reply(s(10.0), s(10.1), r.clone());
    let role = Role::Standby {
        upstream: Some(up()),
    };
    e.role_applied(Some(role.clone()));
    e.state.following = Some(2);
    let goal = plan::goal_from_reply(&r, Secondary);
    assert_eq!(e.role_to_apply(&goal), None);
    // The rotation completed: the monitor sends the current password.
    r.replication_password = pw(2);
    e.on_reply(s(10.4), s(10.5), r);
    assert_eq!(e.password_to_store(), Some(2));
    e.password_stored(2);
    assert_eq!(e.password_to_store(), None);
    // primary_conninfo is rewritten (a reload; no rewind).
    assert_eq!(e.steady_steps(s(10.6), &goal), vec![Step::Configure(role)]);
}
