//! Finishing a pool change that a crash interrupted.
//!
//! A member (phone number or sender id) joins or leaves a pool in three steps (see
//! [`super::membership`]): the member enters `ASSOCIATING` / `DISASSOCIATING` with the pool, the
//! pool records the change, the member completes. A crash between the steps can leave a member
//! half-way, which would block its release forever, and a crash in the middle of `DeletePool`
//! can leave a member pointing at a deleted pool. The pool's stream is the judge of what
//! happened: if the pool holds the member, the change that puts it there stands; otherwise the
//! one that takes it out does.
//!
//! | member's standing with the pool | pool holds it | action                   |
//! |---------------------------------|---------------|--------------------------|
//! | `ASSOCIATING`                   | yes           | `CompleteAssociation`    |
//! | `ASSOCIATING`                   | no            | `AbortAssociation`       |
//! | `DISASSOCIATING`                | yes           | `AbortDisassociation`    |
//! | `DISASSOCIATING`                | no            | `CompleteDisassociation` |
//! | in the pool                     | no            | `DetachFromDeletedPool`  |
//! | in the pool                     | yes           | nothing                  |
//! | out of it                       | —             | nothing                  |
//!
//! The shell asks each pool named by [`pools_to_ask`] (a pool that is gone, or belongs to
//! another account, does not hold the member; a sender id may stand with several pools, each
//! settled on its own) and sends the action [`finish_interrupted`] returns to the member. Every
//! action is one the decider takes from any state (a no-op if there is nothing to finish), so
//! running the recovery twice is harmless.

use super::membership::{Member, MembershipAction, Standing};
use super::types::ValidationReason;
use super::Rejection;

/// The pools whose streams decide how `member`'s interrupted changes end: every pool it is
/// joining, in, or leaving; none for a member in no pool.
pub fn pools_to_ask<M: Member>(member: &M) -> Vec<&str> {
    member.standings().into_iter().map(|(pool, _)| pool).collect()
}

/// The command that finishes `member`'s interrupted change of `pool_id`, given whether that
/// pool holds the member; `None` when there is nothing to finish.
pub fn finish_interrupted<M: Member>(member: &M, pool_id: &str, pool_holds_it: bool) -> Option<MembershipAction> {
    let pool_id = pool_id.to_string();
    let action = match (member.standing(&pool_id)?, pool_holds_it) {
        (Standing::Associating, true) => MembershipAction::CompleteAssociation { pool_id },
        (Standing::Associating, false) => MembershipAction::AbortAssociation {
            pool_id,
            reason: interrupted_by_restart(),
        },
        (Standing::Disassociating, true) => MembershipAction::AbortDisassociation {
            pool_id,
            reason: interrupted_by_restart(),
        },
        (Standing::Disassociating, false) => MembershipAction::CompleteDisassociation { pool_id },
        (Standing::Associated, false) => MembershipAction::DetachFromDeletedPool { pool_id },
        (Standing::Associated, true) => return None,
    };
    Some(action)
}

/// Why an interrupted step was undone, as the number's abort event records it.
pub fn interrupted_by_restart() -> Rejection {
    Rejection::validation(ValidationReason::InvalidRequest, "PoolId", "interrupted by a restart")
}

/// One given/when/then test per row of the table: given the number's history, when the pool
/// does (or does not) hold it, then this action, which the decider turns into the event that
/// leaves the number settled.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::membership::MembershipEvent as M;
    use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberEvent as E, PhoneNumberState};
    use crate::domain::testing::{given, ACCOUNT, REGION};
    use crate::domain::types::NumberStatus;
    use crate::domain::Aggregate;

    const ID: &str = "phone-0123456789abcdef0123456789abcdef";
    const POOL: &str = "pool-0123456789abcdef0123456789abcdef";

    fn requested() -> E {
        E::PhoneNumberRequested(Box::new(PhoneNumber::example(ID, ACCOUNT, REGION)))
    }

    fn joining() -> Vec<E> {
        vec![requested(), E::Membership(M::PoolAssociationStarted { pool_id: POOL.into() })]
    }

    fn in_pool() -> Vec<E> {
        let mut events = joining();
        events.push(E::Membership(M::AssociatedWithPool { pool_id: POOL.into() }));
        events
    }

    fn leaving() -> Vec<E> {
        let mut events = in_pool();
        events.push(E::Membership(M::PoolDisassociationStarted { pool_id: POOL.into() }));
        events
    }

    /// Given `history`, when the pool does (or does not) hold the number: the recovery action.
    fn recovery(history: &[E], pool_holds_it: bool) -> Option<MembershipAction> {
        let number = PhoneNumberState::replay(history).0.expect("a number");
        finish_interrupted(&number, POOL, pool_holds_it)
    }

    /// Runs `action` on `history` expecting `then`, and checks the number is no longer changing
    /// pools, with `pool` as its pool.
    fn settles(history: &[E], action: MembershipAction, then: E, pool: Option<&str>) {
        let n = given::<PhoneNumberState>(ID, history)
            .when(PhoneNumberAction::from(action))
            .then(&[then])
            .0
            .expect("a number");
        assert_eq!((n.status, n.pool_id.as_deref()), (NumberStatus::Active, pool));
    }

    /// AssociateOriginationIdentity: "Associates the specified origination identity with a
    /// pool." The pool recorded the number before the crash: the association stands.
    #[test]
    fn a_join_the_pool_recorded_is_completed() {
        let action = recovery(&joining(), true);
        assert_eq!(action, Some(MembershipAction::CompleteAssociation { pool_id: POOL.into() }));
        settles(
            &joining(),
            action.expect("action"),
            E::Membership(M::AssociatedWithPool { pool_id: POOL.into() }),
            Some(POOL),
        );
    }

    /// ReleasePhoneNumber: "If the origination phone number ... is associated with a pool, an
    /// error is returned." A join the pool never recorded is undone, so the number is not left
    /// `ASSOCIATING` (unreleasable) for good.
    #[test]
    fn a_join_the_pool_never_recorded_is_aborted() {
        let action = recovery(&joining(), false);
        assert_eq!(
            action,
            Some(MembershipAction::AbortAssociation {
                pool_id: POOL.into(),
                reason: interrupted_by_restart(),
            })
        );
        settles(
            &joining(),
            action.expect("action"),
            E::Membership(M::PoolAssociationAborted {
                pool_id: POOL.into(),
                reason: interrupted_by_restart(),
            }),
            None,
        );
    }

    /// DisassociateOriginationIdentity: "Removes the specified origination identity from an
    /// existing pool." The pool still holds the number: the removal never happened, the number
    /// stays a member.
    #[test]
    fn a_leave_the_pool_never_recorded_is_aborted() {
        let action = recovery(&leaving(), true);
        assert_eq!(
            action,
            Some(MembershipAction::AbortDisassociation {
                pool_id: POOL.into(),
                reason: interrupted_by_restart(),
            })
        );
        settles(
            &leaving(),
            action.expect("action"),
            E::Membership(M::PoolDisassociationAborted {
                pool_id: POOL.into(),
                reason: interrupted_by_restart(),
            }),
            Some(POOL),
        );
    }

    /// DisassociateOriginationIdentity: "Removes the specified origination identity from an
    /// existing pool." The pool removed the number before the crash: the leave is completed.
    #[test]
    fn a_leave_the_pool_recorded_is_completed() {
        let action = recovery(&leaving(), false);
        assert_eq!(action, Some(MembershipAction::CompleteDisassociation { pool_id: POOL.into() }));
        settles(
            &leaving(),
            action.expect("action"),
            E::Membership(M::DisassociatedFromPool { pool_id: POOL.into() }),
            None,
        );
    }

    /// DeletePool: "Deleting a pool disassociates all origination identities from that pool."
    /// A member of a pool that no longer holds it (deleted before the crash let its members go)
    /// is detached.
    #[test]
    fn a_member_of_a_pool_that_let_it_go_is_detached() {
        let action = recovery(&in_pool(), false);
        assert_eq!(action, Some(MembershipAction::DetachFromDeletedPool { pool_id: POOL.into() }));
        settles(
            &in_pool(),
            action.expect("action"),
            E::Membership(M::DetachedFromDeletedPool { pool_id: POOL.into() }),
            None,
        );
    }

    /// PhoneNumberInformation.PoolId: "The unique identifier of the pool associated with the
    /// phone number." A member its pool holds has nothing to finish.
    #[test]
    fn a_member_its_pool_holds_is_left_alone() {
        assert_eq!(pools_to_ask(&PhoneNumberState::replay(&in_pool()).0.expect("a number")), vec![POOL]);
        assert_eq!(recovery(&in_pool(), true), None);
    }

    /// A number in no pool and not changing pools has no pool to ask and nothing to finish.
    #[test]
    fn a_number_in_no_pool_is_left_alone() {
        let number = PhoneNumberState::replay(&[requested()]).0.expect("a number");
        assert!(pools_to_ask(&number).is_empty());
        assert_eq!(finish_interrupted(&number, POOL, false), None);
        assert_eq!(finish_interrupted(&number, POOL, true), None);
    }

    /// Recovery may run again after a crash during recovery: once settled, nothing more is done.
    #[test]
    fn finishing_twice_does_nothing_more() {
        let mut done = joining();
        done.push(E::Membership(M::AssociatedWithPool { pool_id: POOL.into() }));
        assert_eq!(recovery(&done, true), None);
        given::<PhoneNumberState>(ID, &done)
            .when(PhoneNumberAction::from(MembershipAction::AbortAssociation {
                pool_id: POOL.into(),
                reason: interrupted_by_restart(),
            }))
            .then(&[]);
    }
}
