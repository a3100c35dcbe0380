//! The replication password's rotation, as the monitor decides it: pure
//! functions of the formation's password generations (never the
//! passwords themselves: the shell carries those from the store to the
//! reply, so nothing here can log one).
//!
//! A rotation never locks a standby out, because a password is handed to
//! standbys only once the replication role accepts it:
//!
//! 1. `rotate replication-password` stores a new password as *pending*
//!    (generation current + 1) beside the current one; the current one
//!    stays what registrations and standbys get. A second rotation while
//!    one is pending is refused ([`begin_rotation`]).
//! 2. The writable node's keeper gets the pending password in its
//!    NodeActive reply ([`to_send`]), sets it on the role (ALTER ROLE, with
//!    the generation in the role's comment) and reports the role's
//!    generation.
//! 3. A report of the pending generation on the role makes it current
//!    ([`rotation_done`]). Every keeper that reports an older generation
//!    gets the current password in its reply (a standby that was down gets
//!    it when it is back) and rewrites its primary_conninfo with it.
//!
//! A failover in the middle: the pending password is sent to whichever
//! node is writable, so the new primary sets it too (if the old one did,
//! the role replicated and the keeper sees the generation in the comment:
//! nothing to do).

use crate::error::{MonitorError, Result};

/// The formation's password generations, without the secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generations {
    /// The current password's: what nodes use and registrations get.
    pub current: i64,
    /// A rotation's new password, not yet seen on the role (always
    /// `current + 1`).
    pub pending: Option<i64>,
}

/// Which passwords go into a reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToSend {
    pub current: bool,
    pub pending: bool,
}

/// Whether the operator's rotation may begin: refused while one is
/// pending. Superseding it instead would forget a password the role may
/// already hold (its primary set it, the report is still on its way):
/// standbys, handed the newer one, would be refused at their next
/// connection until the role changed again. The pending one is as fresh
/// as a new one; it completes once a writable node's keeper sets it.
/// Returns the new password's generation.
pub fn begin_rotation(g: Generations, formation: &str) -> Result<i64> {
    match g.pending {
        Some(p) => Err(MonitorError::FailedPrecondition(format!(
            "a rotation of the replication password of formation {formation:?} is still \
             pending (generation {p}): its writable node's keeper has not set it on the \
             replication role yet; it completes once a primary runs (see `pgpilot show \
             events`), then rotate again if you still need to"
        ))),
        None => Ok(g.current + 1),
    }
}

/// A node reported the role's password generation: the pending one's
/// generation when the role has it now (the rotation is done), else
/// `None`.
pub fn rotation_done(g: Generations, role_generation: Option<i64>) -> Option<i64> {
    match (g.pending, role_generation) {
        (Some(p), Some(r)) if r >= p => Some(p),
        _ => None,
    }
}

/// What a node that holds generation `held` is sent: the current
/// password when it holds an older one, and the pending one when it is
/// the group's writable node (assigned or reported a writable state),
/// whose keeper sets it on the role.
pub fn to_send(g: Generations, held: i64, writable: bool) -> ToSend {
    ToSend {
        current: held < g.current,
        pending: writable && g.pending.is_some_and(|p| held < p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEADY: Generations = Generations {
        current: 3,
        pending: None,
    };
    const ROTATING: Generations = Generations {
        current: 3,
        pending: Some(4),
    };

    #[test]
    fn a_rotation_is_refused_while_one_is_pending() {
        assert_eq!(begin_rotation(STEADY, "f").unwrap(), 4);
        let err = begin_rotation(ROTATING, "f").unwrap_err().to_string();
        assert!(err.contains("still pending (generation 4)"), "{err}");
    }

    #[test]
    fn done_once_the_role_has_the_pending_generation() {
        assert_eq!(rotation_done(ROTATING, None), None);
        assert_eq!(rotation_done(ROTATING, Some(3)), None);
        assert_eq!(rotation_done(ROTATING, Some(4)), Some(4));
        assert_eq!(rotation_done(STEADY, Some(4)), None);
    }

    #[test]
    fn only_the_writer_learns_the_pending_password() {
        assert_eq!(to_send(ROTATING, 3, false), ToSend::default());
        assert_eq!(
            to_send(ROTATING, 3, true),
            ToSend {
                current: false,
                pending: true
            }
        );
        // A writer that set it already is not sent it again.
        assert_eq!(to_send(ROTATING, 4, true), ToSend::default());
        // A node behind (down during an earlier rotation) gets the current.
        assert_eq!(
            to_send(STEADY, 1, false),
            ToSend {
                current: true,
                pending: false
            }
        );
        // A keeper older than rotation (0) gets it with every reply.
        assert!(to_send(STEADY, 0, false).current);
        assert_eq!(to_send(STEADY, 3, true), ToSend::default());
    }
}
