//! Pool membership of an origination identity (a phone number or a sender id): the commands and
//! events of joining and leaving a pool, and the rules that decide them, shared by every
//! aggregate that can be a pool's member.
//!
//! A member changes pools in two steps so that a release racing an association can never leave a
//! released identity in a pool: the member first enters `ASSOCIATING` (or `DISASSOCIATING`) in
//! its own stream, which blocks a release; only then does the pool record the change, and the
//! member completes (or aborts) the step. Every command goes through the member's actor, so these
//! steps and a release are strictly ordered per member.
//!
//! The actions and events serialize exactly as the phone number's did before sender ids shared
//! them (`{"Type": "BeginAssociation", "Input": {...}}`): the aggregates embed them untagged.

use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::pool::SharedSettings;
use super::types::{ConflictReason, MessageType, NumberStatus, ValidationReason};
use super::Rejection;

/// Where a member stands with one pool: joining it, in it, or leaving it (out of it: no
/// standing at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Standing {
    /// Its first step of joining is taken (`ASSOCIATING`); the pool may or may not hold it yet.
    Associating,
    /// A settled member.
    Associated,
    /// Its first step of leaving is taken (`DISASSOCIATING`); the pool may or may not hold it.
    Disassociating,
}

impl Standing {
    /// Whether the member is half-way through joining or leaving.
    pub fn is_changing(self) -> bool {
        self != Standing::Associated
    }
}

/// What the membership rules need of an origination identity.
pub trait Member {
    /// The kind of aggregate the member is (named in its refusals).
    const KIND: ResourceKind;
    /// The reason given when the member is in, entering or leaving a pool.
    const IN_POOL: ConflictReason;
    /// Whether it belongs to one pool at most, and changes pools one step at a time. A phone
    /// number does (`PoolId` is one id: "If the origination identity is a phone number and is
    /// already associated with another pool, an error is returned"); a sender id does not ("A
    /// sender ID can be associated with multiple pools"), and joins or leaves each pool on its
    /// own.
    const ONE_POOL: bool;

    /// Its id (its stream id).
    fn member_id(&self) -> &str;
    /// `ACTIVE`, `DELETED`, or, for a member of one pool at most, `ASSOCIATING` /
    /// `DISASSOCIATING` while it changes pools.
    fn status(&self) -> NumberStatus;
    /// Every pool it is joining, in, or leaving, with where it stands with each, by pool id.
    fn standings(&self) -> Vec<(&str, Standing)>;
    /// Records where it now stands with `pool_id` (`None`: out of it), for [`evolve`].
    fn set_standing(&mut self, pool_id: &str, standing: Option<Standing>);
    fn iso_country_code(&self) -> &str;
    /// Why it cannot send a pool's messages of `message_type`, if it cannot.
    fn message_type_refused(&self, pool_id: &str, message_type: MessageType) -> Option<String>;
    /// Its settings that a pool's members share with the pool, if it has them (a phone number;
    /// a sender id has no opt-out list or two-way configuration of its own).
    fn shared_settings(&self) -> Option<SharedSettings>;

    /// Where it stands with `pool_id`, if anywhere.
    fn standing(&self, pool_id: &str) -> Option<Standing> {
        self.standings().into_iter().find(|(p, _)| *p == pool_id).map(|(_, s)| s)
    }

    /// Whether it is settled in exactly `pool_id`: in it, not joining or leaving it (as a join
    /// that succeeded leaves it).
    fn is_in_pool(&self, pool_id: &str) -> bool {
        self.standing(pool_id) == Some(Standing::Associated)
    }

    /// The pools that hold it as their member, by its own account: those it is in or leaving.
    fn pools(&self) -> Vec<&str> {
        self.standings()
            .into_iter()
            .filter(|(_, s)| *s != Standing::Associating)
            .map(|(p, _)| p)
            .collect()
    }
}

/// The steps of a pool change, as commands to the member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Input", rename_all_fields = "PascalCase")]
pub enum MembershipAction {
    /// First step of joining a pool; `pool_message_type` and `pool_settings` are the pool's,
    /// checked here.
    BeginAssociation {
        pool_id: String,
        pool_message_type: MessageType,
        /// The settings of the existing pool joined, as the shell read them (`None` for the
        /// first member of a pool being created, whose settings the pool takes, and in commands
        /// recorded before they were compared).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool_settings: Option<SharedSettings>,
        iso_country_code: Option<String>,
        /// The `ClientToken` of the request that joins (`AssociateOriginationIdentity`, or
        /// `RequestPhoneNumber` into a pool), if the caller gave one: recorded with the step, so
        /// that a retry of a request that already succeeded (the same step again) can be told
        /// from another request (see the service). Absent in commands recorded before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_token: Option<String>,
    },
    CompleteAssociation {
        pool_id: String,
    },
    AbortAssociation {
        pool_id: String,
        reason: Rejection,
    },
    BeginDisassociation {
        pool_id: String,
        iso_country_code: Option<String>,
        /// `DisassociateOriginationIdentity`'s `ClientToken`, if the caller gave one: recorded
        /// with the step, so that a retry of a request that already succeeded can be told from
        /// a first request (see the service). Absent in commands recorded before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_token: Option<String>,
    },
    CompleteDisassociation {
        pool_id: String,
    },
    AbortDisassociation {
        pool_id: String,
        reason: Rejection,
    },
    /// The pool was deleted: leave it, whatever step the member was in.
    DetachFromDeletedPool {
        pool_id: String,
    },
}

impl MembershipAction {
    pub fn name(&self) -> &'static str {
        match self {
            MembershipAction::BeginAssociation { .. } => "BeginAssociation",
            MembershipAction::CompleteAssociation { .. } => "CompleteAssociation",
            MembershipAction::AbortAssociation { .. } => "AbortAssociation",
            MembershipAction::BeginDisassociation { .. } => "BeginDisassociation",
            MembershipAction::CompleteDisassociation { .. } => "CompleteDisassociation",
            MembershipAction::AbortDisassociation { .. } => "AbortDisassociation",
            MembershipAction::DetachFromDeletedPool { .. } => "DetachFromDeletedPool",
        }
    }

    /// The pool the step is about.
    pub fn pool_id(&self) -> &str {
        use MembershipAction as A;
        match self {
            A::BeginAssociation { pool_id, .. }
            | A::CompleteAssociation { pool_id }
            | A::AbortAssociation { pool_id, .. }
            | A::BeginDisassociation { pool_id, .. }
            | A::CompleteDisassociation { pool_id }
            | A::AbortDisassociation { pool_id, .. }
            | A::DetachFromDeletedPool { pool_id } => pool_id,
        }
    }

    /// Whether this step and `other` are the same request's: equal but for the pool settings
    /// each read (a pool's settings may change between a request and its retry, and a step
    /// recorded before they were compared has none).
    pub fn same_request(&self, other: &MembershipAction) -> bool {
        let without_settings = |a: &MembershipAction| {
            let mut a = a.clone();
            if let MembershipAction::BeginAssociation { pool_settings, .. } = &mut a {
                *pool_settings = None;
            }
            a
        };
        without_settings(self) == without_settings(other)
    }

    /// The event that records this step's refusal, for the steps a caller asked for (the
    /// internal ones are recorded as the aggregate's `CommandRejected`).
    pub fn rejected(&self, reason: &Rejection) -> Option<MembershipEvent> {
        match self {
            MembershipAction::BeginAssociation { pool_id, .. } => Some(MembershipEvent::AssociationRejected {
                pool_id: pool_id.clone(),
                reason: reason.clone(),
            }),
            MembershipAction::BeginDisassociation { pool_id, .. } => Some(MembershipEvent::DisassociationRejected {
                pool_id: pool_id.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        }
    }
}

/// What happened to a member's pool membership. Past tense; never changed once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Payload", rename_all_fields = "PascalCase")]
pub enum MembershipEvent {
    PoolAssociationStarted {
        pool_id: String,
    },
    AssociatedWithPool {
        pool_id: String,
    },
    PoolAssociationAborted {
        pool_id: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    AssociationRejected {
        pool_id: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    PoolDisassociationStarted {
        pool_id: String,
    },
    DisassociatedFromPool {
        pool_id: String,
    },
    PoolDisassociationAborted {
        pool_id: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    DisassociationRejected {
        pool_id: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    DetachedFromDeletedPool {
        pool_id: String,
    },
}

impl MembershipEvent {
    /// The pool the step is about.
    pub fn pool_id(&self) -> &str {
        use MembershipEvent as E;
        match self {
            E::PoolAssociationStarted { pool_id }
            | E::AssociatedWithPool { pool_id }
            | E::PoolAssociationAborted { pool_id, .. }
            | E::AssociationRejected { pool_id, .. }
            | E::PoolDisassociationStarted { pool_id }
            | E::DisassociatedFromPool { pool_id }
            | E::PoolDisassociationAborted { pool_id, .. }
            | E::DisassociationRejected { pool_id, .. }
            | E::DetachedFromDeletedPool { pool_id } => pool_id,
        }
    }

    /// The refusal a rejection event records.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            MembershipEvent::AssociationRejected { reason, .. } | MembershipEvent::DisassociationRejected { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

fn conflict<M: Member>(m: &M, reason: ConflictReason, why: &str) -> Rejection {
    Rejection::conflict(reason, M::KIND, m.member_id(), why)
}

/// Decides one step. `member` is the member as it is, live or not; `live` is the member if it is
/// live and the caller's, else the NotFound refusal: the steps a caller starts need a live
/// member, the ones that undo or finish a change are taken from any state.
pub fn decide<'a, M: Member>(
    member: Option<&'a M>,
    live: impl FnOnce() -> Result<&'a M, Rejection>,
    action: &MembershipAction,
) -> Result<Vec<MembershipEvent>, Rejection> {
    use MembershipAction as A;
    use MembershipEvent as E;
    use Standing::{Associated, Associating, Disassociating};
    let pool = |pool_id: &String| pool_id.clone();
    // Where the member, live or not, stands with the pool a step names.
    let standing = |pool_id: &str| member.and_then(|m| m.standing(pool_id));
    let step = match action {
        A::BeginAssociation {
            pool_id,
            pool_message_type,
            pool_settings,
            iso_country_code,
            ..
        } => begin_association(live()?, pool_id, (*pool_message_type, pool_settings.as_ref()), iso_country_code)?,
        A::CompleteAssociation { pool_id } => {
            let m = live()?;
            if m.standing(pool_id) != Some(Associating) {
                return Err(conflict(
                    m,
                    ConflictReason::ResourceNotActive,
                    &format!("is not joining pool {pool_id}"),
                ));
            }
            Some(E::AssociatedWithPool { pool_id: pool(pool_id) })
        }
        A::BeginDisassociation {
            pool_id, iso_country_code, ..
        } => {
            let m = live()?;
            check_country(m, iso_country_code)?;
            refuse_if_changing(m, pool_id)?;
            if m.standing(pool_id) != Some(Associated) {
                return Err(conflict(
                    m,
                    ConflictReason::PhoneNumberNotAssociatedToPool,
                    &format!("is not associated with pool {pool_id}"),
                ));
            }
            Some(E::PoolDisassociationStarted { pool_id: pool(pool_id) })
        }
        A::CompleteDisassociation { pool_id } => {
            let m = live()?;
            match m.standing(pool_id) {
                Some(Disassociating) => Some(E::DisassociatedFromPool { pool_id: pool(pool_id) }),
                // The member is out of the pool: the pool was deleted meanwhile and let it go, or
                // the reconciler finished this leave and the member is already joining the pool
                // again. The leave happened; nothing is left to do.
                None | Some(Associating) => None,
                Some(Associated) => {
                    return Err(conflict(
                        m,
                        ConflictReason::ResourceNotActive,
                        &format!("is not leaving pool {pool_id}"),
                    ))
                }
            }
        }
        // Undoing a step that is not there is nothing to do: aborting is idempotent.
        A::AbortAssociation { pool_id, reason } => (standing(pool_id) == Some(Associating)).then(|| E::PoolAssociationAborted {
            pool_id: pool(pool_id),
            reason: reason.clone(),
        }),
        A::AbortDisassociation { pool_id, reason } => (standing(pool_id) == Some(Disassociating)).then(|| E::PoolDisassociationAborted {
            pool_id: pool(pool_id),
            reason: reason.clone(),
        }),
        // A member of the deleted pool leaves it, whatever step it was in; one still joining it
        // too (its join reached the pool before the deletion, its last step has not been taken
        // yet: that step is then refused, and the member is not left in a deleted pool).
        A::DetachFromDeletedPool { pool_id } => standing(pool_id)
            .is_some()
            .then(|| E::DetachedFromDeletedPool { pool_id: pool(pool_id) }),
    };
    Ok(step.into_iter().collect())
}

/// `BeginAssociation`: the member enters `ASSOCIATING` with the pool. A member already in that
/// pool is `RESOURCE_ALREADY_ASSOCIATED`, client token or not: whether a request retries the one
/// that put it there (same token, same request) is for the shell to tell from the member's
/// history, and such a retry never reaches the decider. A member of one pool at most (a phone
/// number) in another pool is refused with [`Member::IN_POOL`]; one whose settings differ from
/// the pool's, with the setting's mismatch.
fn begin_association<M: Member>(
    m: &M,
    pool_id: &str,
    (pool_message_type, pool_settings): (MessageType, Option<&SharedSettings>),
    iso_country_code: &Option<String>,
) -> Result<Option<MembershipEvent>, Rejection> {
    check_country(m, iso_country_code)?;
    refuse_if_changing(m, pool_id)?;
    if m.is_in_pool(pool_id) {
        return Err(conflict(
            m,
            ConflictReason::ResourceAlreadyAssociated,
            &format!("is already associated with pool {pool_id}"),
        ));
    }
    if let Some(other) = m.pools().first().filter(|_| M::ONE_POOL) {
        return Err(conflict(m, M::IN_POOL, &format!("is associated with pool {other}")));
    }
    if let Some(why) = m.message_type_refused(pool_id, pool_message_type) {
        return Err(conflict(m, ConflictReason::MessageTypeMismatch, &why));
    }
    if let (Some(pool), Some(own)) = (pool_settings, m.shared_settings()) {
        if let Some((reason, why)) = pool.mismatch(&own) {
            return Err(conflict(m, reason, &format!("{why} ({pool_id})")));
        }
    }
    Ok(Some(MembershipEvent::PoolAssociationStarted {
        pool_id: pool_id.to_string(),
    }))
}

/// Refuses a step while the member is half-way through joining or leaving `pool_id`, or, for a
/// member of one pool at most, any pool: each change finishes before the next begins.
fn refuse_if_changing<M: Member>(m: &M, pool_id: &str) -> Result<(), Rejection> {
    let changing = m
        .standings()
        .into_iter()
        .find(|(p, s)| s.is_changing() && (M::ONE_POOL || *p == pool_id));
    match changing {
        Some((pending, _)) => Err(conflict(m, M::IN_POOL, &format!("is changing pools ({pending})"))),
        None => Ok(()),
    }
}

/// An `IsoCountryCode` given with a pool change must be the member's own.
pub fn check_country<M: Member>(m: &M, iso: &Option<String>) -> Result<(), Rejection> {
    match iso {
        Some(iso) if iso != m.iso_country_code() => Err(Rejection::validation(
            ValidationReason::CountryCodeMismatch,
            "IsoCountryCode",
            format!("{} is a {} origination identity, not {iso}", m.member_id(), m.iso_country_code()),
        )),
        _ => Ok(()),
    }
}

/// Refuses a change the member cannot take while it is in, entering or leaving any pool (its
/// release; a phone number's update).
pub fn refuse_in_pool<M: Member>(m: &M) -> Result<(), Rejection> {
    let pools: Vec<&str> = m.standings().into_iter().map(|(p, _)| p).collect();
    match pools.as_slice() {
        [] => Ok(()),
        [pool] => Err(conflict(m, M::IN_POOL, &format!("is associated with pool {pool}"))),
        several => Err(conflict(m, M::IN_POOL, &format!("is associated with pools {}", several.join(", ")))),
    }
}

/// Applies a membership event to the member: where it stands with the event's pool afterwards.
pub fn evolve<M: Member>(m: &mut M, event: &MembershipEvent) {
    use MembershipEvent as E;
    let (pool_id, standing) = match event {
        E::PoolAssociationStarted { pool_id } => (pool_id, Some(Standing::Associating)),
        E::AssociatedWithPool { pool_id } | E::PoolDisassociationAborted { pool_id, .. } => (pool_id, Some(Standing::Associated)),
        E::PoolDisassociationStarted { pool_id } => (pool_id, Some(Standing::Disassociating)),
        E::PoolAssociationAborted { pool_id, .. } | E::DisassociatedFromPool { pool_id } | E::DetachedFromDeletedPool { pool_id } => {
            (pool_id, None)
        }
        E::AssociationRejected { .. } | E::DisassociationRejected { .. } => return,
    };
    m.set_standing(pool_id, standing);
}
