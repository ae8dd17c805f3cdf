//! The sender-id aggregate: an alphanumeric origination identity leased per country. Rules as
//! AWS documents them:
//! - RequestSenderId: "Request a new sender ID that doesn't require registration." The sender id
//!   "can be 1-11 alphanumeric characters ... must contain at least one letter and cannot start
//!   or end with a hyphen" (checked at the edge, `ids::is_sender_id`). One sender id per string
//!   and country in an account: requesting one that is leased is refused as existing.
//! - ReleaseSenderId: "Releases an existing sender ID in your account." `DeletionProtectionEnabled`:
//!   "When set to true the sender ID can't be deleted." As with ReleasePhoneNumber, one that is a
//!   pool's member (or joining or leaving a pool) is refused, with `SENDER_ID_ASSOCIATED_TO_POOL`.
//! - UpdateSenderId: changes `DeletionProtectionEnabled`.
//! - Pool membership: the rules every origination identity shares (`super::membership`).
//! - Messages: a sender id sends SMS only (it has no number to call or send media from), of the
//!   message types it was leased for.
//!
//! Its stream id is derived from account, region, sender id and country, so two requests for the
//! same sender id race for one stream; a released sender id can be requested again, and starts
//! afresh (`incarnation` counts its leases).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::membership::{self, Member, MembershipAction, MembershipEvent, Standing};
use super::message::{check_send, OutboundMessage, Sender};
use super::pool::SharedSettings;
use super::tags::{self, edited, TagEdit};
use super::types::{ConflictReason, MessageType, NumberCapability, NumberStatus, Tag};
use super::{ActionName, Aggregate, Command, Rejection, Scope};

const KIND: ResourceKind = ResourceKind::SenderId;

/// A sender id sends text messages only.
pub const CAPABILITIES: [NumberCapability; 1] = [NumberCapability::Sms];

/// Everything known about one sender id (`SenderIdInformation` plus what the service keeps for
/// itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SenderId {
    /// Its stream id (`senderid-...`), the key it has as a pool's member.
    pub id: String,
    pub sender_id: String,
    pub sender_id_arn: String,
    pub iso_country_code: String,
    pub account: String,
    pub region: String,
    pub message_types: Vec<MessageType>,
    pub monthly_leasing_price: String,
    pub deletion_protection_enabled: bool,
    /// Sender ids requested here need no registration.
    pub registered: bool,
    /// `ACTIVE`, or `DELETED` once released.
    pub status: NumberStatus,
    /// The pools it is joining, in, or leaving ("A sender ID can be associated with multiple
    /// pools"), and where it stands with each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, Standing>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub created_timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// How many times it was leased (1 for the first).
    #[serde(default)]
    pub incarnation: u64,
}

impl SenderId {
    /// A transactional sender id `sender_id` leased in `iso`, in no pool (for tests and
    /// documentation examples).
    pub fn example(sender_id: &str, iso: &str, scope: &Scope) -> SenderId {
        SenderId {
            id: ResourceKind::sender_id_id(scope, sender_id, iso),
            sender_id: sender_id.into(),
            sender_id_arn: scope.arn(KIND, &format!("{sender_id}/{iso}")),
            iso_country_code: iso.into(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            message_types: vec![MessageType::Transactional],
            monthly_leasing_price: "0.00".into(),
            deletion_protection_enabled: false,
            registered: false,
            status: NumberStatus::Active,
            pools: Default::default(),
            tags: vec![],
            created_timestamp_ms: 1,
            client_token: None,
            incarnation: 0,
        }
    }

    /// Whether it is leased (not released).
    pub fn is_live(&self) -> bool {
        self.status != NumberStatus::Deleted
    }
}

impl Member for SenderId {
    const KIND: ResourceKind = KIND;
    const IN_POOL: ConflictReason = ConflictReason::SenderIdAssociatedToPool;
    const ONE_POOL: bool = false;

    fn member_id(&self) -> &str {
        &self.id
    }

    fn status(&self) -> NumberStatus {
        self.status
    }

    fn standings(&self) -> Vec<(&str, Standing)> {
        self.pools.iter().map(|(pool, standing)| (pool.as_str(), *standing)).collect()
    }

    fn set_standing(&mut self, pool_id: &str, standing: Option<Standing>) {
        match standing {
            Some(standing) => self.pools.insert(pool_id.to_string(), standing),
            None => self.pools.remove(pool_id),
        };
    }

    fn iso_country_code(&self) -> &str {
        &self.iso_country_code
    }

    fn message_type_refused(&self, pool_id: &str, message_type: MessageType) -> Option<String> {
        (!self.message_types.contains(&message_type))
            .then(|| format!("is not leased for {message_type} messages, which pool {pool_id} sends"))
    }

    fn shared_settings(&self) -> Option<SharedSettings> {
        None
    }
}

/// The state of one sender-id stream: nothing yet, or the sender id (a released one keeps
/// `Status: DELETED`, so its history stays inspectable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderIdState(pub Option<SenderId>);

impl SenderIdState {
    /// The sender id, if it is leased now.
    pub fn live(&self) -> Option<&SenderId> {
        self.0.as_ref().filter(|s| s.is_live())
    }

    /// The sender id if it is leased by the caller; otherwise the NotFound rejection.
    fn leased<'a>(&'a self, command: &Command<SenderIdAction>) -> Result<&'a SenderId, Rejection> {
        match self.live() {
            Some(s) if s.account == command.meta.scope.account && s.region == command.meta.scope.region => Ok(s),
            Some(s) => Err(Rejection::not_found(KIND, &s.sender_id)),
            None => Err(Rejection::not_found(KIND, &command.target)),
        }
    }
}

/// What can be asked of a sender id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Input", rename_all_fields = "PascalCase")]
pub enum SenderIdAction {
    /// `RequestSenderId`: lease it. `held`: how many sender ids the account leases, with `quota`
    /// the most it may (checked again by the log's counter limit).
    Request {
        sender_id: Box<SenderId>,
        held: u64,
        quota: u64,
    },
    /// `UpdateSenderId`.
    Update {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deletion_protection_enabled: Option<bool>,
    },
    /// `ReleaseSenderId`.
    Release,
    Tag {
        tags: Vec<Tag>,
    },
    Untag {
        keys: Vec<String>,
    },
    /// Send a message from it; `opted_out_on` as for a phone number.
    SendMessage {
        message: Box<OutboundMessage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opted_out_on: Option<String>,
    },
    /// A step of joining or leaving a pool.
    #[serde(untagged)]
    Membership(MembershipAction),
}

impl From<MembershipAction> for SenderIdAction {
    fn from(step: MembershipAction) -> Self {
        SenderIdAction::Membership(step)
    }
}

impl ActionName for SenderIdAction {
    fn name(&self) -> &'static str {
        match self {
            SenderIdAction::Request { .. } => "Request",
            SenderIdAction::Update { .. } => "Update",
            SenderIdAction::Release => "Release",
            SenderIdAction::Tag { .. } => "Tag",
            SenderIdAction::Untag { .. } => "Untag",
            SenderIdAction::SendMessage { .. } => "SendMessage",
            SenderIdAction::Membership(step) => step.name(),
        }
    }
}

/// What happened to a sender id. Past tense; never changed once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Payload", rename_all_fields = "PascalCase")]
pub enum SenderIdEvent {
    SenderIdRequested(Box<SenderId>),
    SenderIdUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deletion_protection_enabled: Option<bool>,
    },
    Released {
        sender_id: String,
    },
    ReleaseRejected {
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    MessageSent(Box<OutboundMessage>),
    MessageRejected {
        message_id: String,
        destination_phone_number: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    TagsChanged {
        tags: Vec<Tag>,
    },
    /// Any other refused command, with why.
    CommandRejected {
        command: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    /// A pool membership step.
    #[serde(untagged)]
    Membership(MembershipEvent),
}

impl Aggregate for SenderIdState {
    type Action = SenderIdAction;
    type Event = SenderIdEvent;
    const KIND: ResourceKind = KIND;

    fn decide(&self, command: &Command<SenderIdAction>) -> Result<Vec<SenderIdEvent>, Rejection> {
        use SenderIdAction as A;
        use SenderIdEvent as E;
        match &command.action {
            A::Request { sender_id, held, quota } => {
                if let Some(s) = self.live() {
                    let id = format!("{}/{}", s.sender_id, s.iso_country_code);
                    return Err(Rejection::conflict(
                        ConflictReason::ResourceAlreadyExists,
                        KIND,
                        &id,
                        "is already leased",
                    ));
                }
                if held >= quota {
                    return Err(Rejection::QuotaExceeded {
                        reason: super::types::QuotaReason::SenderIdsPerAccount,
                        message: format!(
                            "account {} already leases {quota} sender ids in {}",
                            sender_id.account, sender_id.region
                        ),
                    });
                }
                // "Tag keys must be unique per resource": as TagResource would put them.
                let tags = tags::tagged(&[], &sender_id.tags, &sender_id.sender_id_arn)?;
                Ok(vec![E::SenderIdRequested(Box::new(SenderId {
                    tags,
                    ..(**sender_id).clone()
                }))])
            }
            A::Update {
                deletion_protection_enabled,
            } => {
                self.leased(command)?;
                Ok(vec![E::SenderIdUpdated {
                    deletion_protection_enabled: *deletion_protection_enabled,
                }])
            }
            A::Release => {
                let s = self.leased(command)?;
                if s.deletion_protection_enabled {
                    return Err(Rejection::conflict(
                        ConflictReason::DeletionProtectionEnabled,
                        KIND,
                        &s.sender_id,
                        "has deletion protection enabled",
                    ));
                }
                membership::refuse_in_pool(s)?;
                Ok(vec![E::Released {
                    sender_id: s.sender_id.clone(),
                }])
            }
            A::Tag { tags } => {
                let s = self.leased(command)?;
                edited(&s.tags, TagEdit::Put(tags), &s.sender_id_arn, |tags| E::TagsChanged { tags })
            }
            A::Untag { keys } => {
                let s = self.leased(command)?;
                edited(&s.tags, TagEdit::Remove(keys), &s.sender_id_arn, |tags| E::TagsChanged { tags })
            }
            A::SendMessage { message, opted_out_on } => {
                let s = self.leased(command)?;
                let sender = Sender {
                    kind: KIND,
                    id: &s.sender_id,
                    capabilities: &CAPABILITIES,
                    message_types: &s.message_types,
                    self_managed_opt_outs: false,
                };
                Ok(check_send(&sender, message, opted_out_on.as_deref())?
                    .then(|| E::MessageSent(message.clone()))
                    .into_iter()
                    .collect())
            }
            A::Membership(step) => Ok(membership::decide(self.live(), || self.leased(command), step)?
                .into_iter()
                .map(E::Membership)
                .collect()),
        }
    }

    fn evolve(self, event: &SenderIdEvent) -> Self {
        use SenderIdEvent as E;
        if let E::SenderIdRequested(s) = event {
            let mut s = (**s).clone();
            s.incarnation = self.0.map_or(0, |before| before.incarnation) + 1;
            return SenderIdState(Some(s));
        }
        let Some(mut s) = self.0 else { return SenderIdState(None) };
        match event {
            E::SenderIdRequested(_) => {}
            E::SenderIdUpdated {
                deletion_protection_enabled,
            } => super::changed(&mut s.deletion_protection_enabled, deletion_protection_enabled),
            E::Released { .. } => s.status = NumberStatus::Deleted,
            E::TagsChanged { tags } => s.tags = tags.clone(),
            E::Membership(step) => membership::evolve(&mut s, step),
            E::ReleaseRejected { .. } | E::MessageSent(_) | E::MessageRejected { .. } | E::CommandRejected { .. } => {}
        }
        SenderIdState(Some(s))
    }

    fn rejected(action: &SenderIdAction, rejection: &Rejection) -> SenderIdEvent {
        use SenderIdAction as A;
        use SenderIdEvent as E;
        let reason = rejection.clone();
        match action {
            A::Release => E::ReleaseRejected { reason },
            A::SendMessage { message, .. } => E::MessageRejected {
                message_id: message.message_id.clone(),
                destination_phone_number: message.destination_phone_number.clone(),
                reason,
            },
            A::Membership(step) => match step.rejected(&reason) {
                Some(event) => E::Membership(event),
                None => E::CommandRejected {
                    command: step.name().to_string(),
                    reason,
                },
            },
            other => E::CommandRejected {
                command: other.name().to_string(),
                reason,
            },
        }
    }

    fn rejection_in(event: &SenderIdEvent) -> Option<&Rejection> {
        use SenderIdEvent as E;
        match event {
            E::ReleaseRejected { reason } | E::MessageRejected { reason, .. } | E::CommandRejected { reason, .. } => Some(reason),
            E::Membership(step) => step.rejection(),
            _ => None,
        }
    }
}

/// Given/when/then tests of the sender-id rules, citing the AWS API reference.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::message::Channel;
    use crate::domain::testing::{given, ACCOUNT, REGION};
    use crate::domain::types::ResourceType;
    use MembershipEvent as M;
    use SenderIdAction as A;
    use SenderIdEvent as E;

    const POOL: &str = "pool-0123456789abcdef0123456789abcdef";

    fn id() -> String {
        ResourceKind::sender_id_id(&Scope::new(ACCOUNT, REGION), "MyBrand", "GB")
    }

    fn sender(types: &[MessageType]) -> SenderId {
        SenderId {
            message_types: types.to_vec(),
            ..SenderId::example("MyBrand", "GB", &Scope::new(ACCOUNT, REGION))
        }
    }

    fn requested() -> E {
        E::SenderIdRequested(Box::new(sender(&[MessageType::Transactional])))
    }

    fn request() -> A {
        A::Request {
            sender_id: Box::new(sender(&[MessageType::Transactional])),
            held: 0,
            quota: 5,
        }
    }

    fn in_pool() -> Vec<E> {
        vec![
            requested(),
            E::Membership(M::PoolAssociationStarted { pool_id: POOL.into() }),
            E::Membership(M::AssociatedWithPool { pool_id: POOL.into() }),
        ]
    }

    fn released() -> E {
        E::Released {
            sender_id: "MyBrand".into(),
        }
    }

    fn is_conflict(reason: ConflictReason) -> impl Fn(&Rejection) -> bool {
        move |r| matches!(r, Rejection::Conflict { reason: got, resource_type: ResourceType::SenderId, .. } if *got == reason)
    }

    /// RequestSenderId: "Request a new sender ID that doesn't require registration."
    #[test]
    fn a_request_leases_it_and_a_second_is_refused() {
        let s = given::<SenderIdState>(&id(), &[]).when(request()).then(&[requested()]);
        assert_eq!(s.live().map(|s| s.incarnation), Some(1));
        given::<SenderIdState>(&id(), &[requested()])
            .when(request())
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyExists));
    }

    /// ServiceQuotaExceededException: "The request would cause a service quota to be exceeded."
    #[test]
    fn a_request_over_the_quota_is_refused() {
        let r = given::<SenderIdState>(&id(), &[])
            .when(A::Request {
                sender_id: Box::new(sender(&[MessageType::Transactional])),
                held: 5,
                quota: 5,
            })
            .then_reject(|r| matches!(r, Rejection::QuotaExceeded { .. }));
        assert!(r.to_string().contains("5 sender ids"), "{r}");
    }

    /// ReleaseSenderId: "Releases an existing sender ID in your account." Released, it can be
    /// requested again, as a new lease.
    #[test]
    fn release_releases_and_a_new_request_starts_afresh() {
        let s = given::<SenderIdState>(&id(), &[requested()]).when(A::Release).then(&[released()]);
        assert!(s.live().is_none());
        given::<SenderIdState>(&id(), &[requested(), released()])
            .when(A::Release)
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::NotFound {
                        resource_type: ResourceType::SenderId,
                        ..
                    }
                )
            });
        let again = given::<SenderIdState>(&id(), &[requested(), released()])
            .when(request())
            .then(&[requested()]);
        assert_eq!(again.live().map(|s| s.incarnation), Some(2));
    }

    /// DeletionProtectionEnabled: "When set to true the sender ID can't be deleted." UpdateSenderId
    /// turns it off again.
    #[test]
    fn deletion_protection_refuses_release_until_updated() {
        let protect = |on| E::SenderIdUpdated {
            deletion_protection_enabled: Some(on),
        };
        given::<SenderIdState>(&id(), &[requested()])
            .when(A::Update {
                deletion_protection_enabled: Some(true),
            })
            .then(&[protect(true)]);
        given::<SenderIdState>(&id(), &[requested(), protect(true)])
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::DeletionProtectionEnabled));
        given::<SenderIdState>(&id(), &[requested(), protect(true), protect(false)])
            .when(A::Release)
            .then(&[released()]);
    }

    /// ConflictExceptionReason `SENDER_ID_ASSOCIATED_TO_POOL`: a sender id in a pool (or joining
    /// one) is not released.
    #[test]
    fn a_sender_id_in_a_pool_is_not_released() {
        given::<SenderIdState>(&id(), &in_pool())
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::SenderIdAssociatedToPool));
        given::<SenderIdState>(&id(), &in_pool()[..2])
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::SenderIdAssociatedToPool));
        let mut left = in_pool();
        left.push(E::Membership(M::PoolDisassociationStarted { pool_id: POOL.into() }));
        left.push(E::Membership(M::DisassociatedFromPool { pool_id: POOL.into() }));
        given::<SenderIdState>(&id(), &left).when(A::Release).then(&[released()]);
    }

    const OTHER_POOL: &str = "pool-fedcba9876543210fedcba9876543210";

    fn step(action: MembershipAction) -> A {
        A::Membership(action)
    }

    fn begin_join(pool: &str) -> A {
        step(MembershipAction::BeginAssociation {
            pool_id: pool.into(),
            pool_message_type: MessageType::Transactional,
            pool_settings: None,
            iso_country_code: None,
            client_token: None,
        })
    }

    fn begin_leave(pool: &str) -> A {
        step(MembershipAction::BeginDisassociation {
            pool_id: pool.into(),
            iso_country_code: None,
            client_token: None,
        })
    }

    /// AssociateOriginationIdentity: "A sender ID can be associated with multiple pools." A
    /// sender id in one pool joins a second, and a join of one pool does not wait for the other
    /// (each pool's change is its own); it is still one pool's member once.
    #[test]
    fn a_sender_id_joins_a_second_pool_while_in_the_first() {
        let s = given::<SenderIdState>(&id(), &in_pool())
            .when(begin_join(OTHER_POOL))
            .then(&[E::Membership(M::PoolAssociationStarted {
                pool_id: OTHER_POOL.into(),
            })]);
        let s = s.0.expect("a sender id");
        assert_eq!(s.standing(POOL), Some(Standing::Associated));
        assert_eq!(s.standing(OTHER_POOL), Some(Standing::Associating));
        // Its first pool is left while it joins the second.
        let mut joining_other = in_pool();
        joining_other.push(E::Membership(M::PoolAssociationStarted {
            pool_id: OTHER_POOL.into(),
        }));
        given::<SenderIdState>(&id(), &joining_other)
            .when(begin_leave(POOL))
            .then(&[E::Membership(M::PoolDisassociationStarted { pool_id: POOL.into() })]);
        // The same pool twice: already its member.
        given::<SenderIdState>(&id(), &in_pool())
            .when(begin_join(POOL))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyAssociated));
        // The pool it is joining, again: that change is not finished.
        given::<SenderIdState>(&id(), &joining_other)
            .when(begin_join(OTHER_POOL))
            .then_reject(is_conflict(ConflictReason::SenderIdAssociatedToPool));
    }

    /// A sender id has no opt-out list or two-way configuration of its own ("The configuration
    /// of every phone number that you add to a pool has to match ..."): it joins a pool
    /// whatever the pool's are.
    #[test]
    fn a_sender_id_joins_a_pool_whatever_its_settings() {
        let settings = crate::domain::pool::SharedSettings {
            opt_out_list_name: "Other".into(),
            self_managed_opt_outs_enabled: true,
            two_way_enabled: true,
            two_way_channel_arn: Some("arn:aws:sns:us-east-1:111122223333:inbound".into()),
        };
        let mut join = begin_join(POOL);
        if let A::Membership(MembershipAction::BeginAssociation { pool_settings, .. }) = &mut join {
            *pool_settings = Some(settings);
        }
        given::<SenderIdState>(&id(), &[requested()])
            .when(join)
            .then(&[E::Membership(M::PoolAssociationStarted { pool_id: POOL.into() })]);
    }

    /// DisassociateOriginationIdentity: "Removes the specified origination identity from an
    /// existing pool." Only that pool: the sender id stays in its other one, and is released only
    /// once it is in none.
    #[test]
    fn leaving_one_pool_keeps_it_in_the_other() {
        let mut both = in_pool();
        both.extend([
            E::Membership(M::PoolAssociationStarted {
                pool_id: OTHER_POOL.into(),
            }),
            E::Membership(M::AssociatedWithPool {
                pool_id: OTHER_POOL.into(),
            }),
        ]);
        let mut left_one = both.clone();
        left_one.extend([
            E::Membership(M::PoolDisassociationStarted { pool_id: POOL.into() }),
            E::Membership(M::DisassociatedFromPool { pool_id: POOL.into() }),
        ]);
        let s = SenderIdState::replay(&left_one).0.expect("a sender id");
        assert_eq!(s.standings(), vec![(OTHER_POOL, Standing::Associated)]);
        let refused = given::<SenderIdState>(&id(), &left_one)
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::SenderIdAssociatedToPool));
        assert!(refused.to_string().contains(OTHER_POOL), "{refused}");
        given::<SenderIdState>(&id(), &left_one)
            .when(begin_leave(POOL))
            .then_reject(is_conflict(ConflictReason::PhoneNumberNotAssociatedToPool));
        // The deletion of one pool lets it go from that pool only.
        let detached = given::<SenderIdState>(&id(), &both)
            .when(step(MembershipAction::DetachFromDeletedPool {
                pool_id: OTHER_POOL.into(),
            }))
            .then(&[E::Membership(M::DetachedFromDeletedPool {
                pool_id: OTHER_POOL.into(),
            })]);
        assert_eq!(detached.0.expect("a sender id").standings(), vec![(POOL, Standing::Associated)]);
        // Finishing or undoing a step of one pool does not touch the other.
        let mut leaving_both = both;
        leaving_both.push(E::Membership(M::PoolDisassociationStarted { pool_id: POOL.into() }));
        given::<SenderIdState>(&id(), &leaving_both)
            .when(step(MembershipAction::AbortDisassociation {
                pool_id: OTHER_POOL.into(),
                reason: crate::domain::pool_change::interrupted_by_restart(),
            }))
            .then(&[]);
    }

    /// AssociateOriginationIdentity: a sender id joins a pool of a message type it is leased for;
    /// `MESSAGE_TYPE_MISMATCH` otherwise.
    #[test]
    fn a_sender_id_joins_only_pools_of_its_message_types() {
        let join = |t| {
            A::Membership(MembershipAction::BeginAssociation {
                pool_id: POOL.into(),
                pool_message_type: t,
                pool_settings: None,
                iso_country_code: Some("GB".into()),
                client_token: None,
            })
        };
        given::<SenderIdState>(&id(), &[requested()])
            .when(join(MessageType::Transactional))
            .then(&[E::Membership(M::PoolAssociationStarted { pool_id: POOL.into() })]);
        given::<SenderIdState>(&id(), &[requested()])
            .when(join(MessageType::Promotional))
            .then_reject(is_conflict(ConflictReason::MessageTypeMismatch));
    }

    /// SendTextMessage from a sender id; SendVoiceMessage: a sender id has no voice capability
    /// (`NUMBER_CAPABILITIES_MISMATCH`), and a released one sends nothing.
    #[test]
    fn a_sender_id_sends_text_only_and_only_while_leased() {
        let message = |channel| OutboundMessage {
            message_id: "m-1".into(),
            channel,
            destination_phone_number: "+447700900123".into(),
            origination_identity: "MyBrand".into(),
            pool_id: None,
            message_type: None,
            message_body: Some("hi".into()),
            media_urls: vec![],
            voice_id: None,
            configuration_set_name: None,
            context: Default::default(),
            dry_run: false,
        };
        let send = |channel| A::SendMessage {
            message: Box::new(message(channel)),
            opted_out_on: None,
        };
        given::<SenderIdState>(&id(), &[requested()])
            .when(send(Channel::Text))
            .then(&[E::MessageSent(Box::new(message(Channel::Text)))]);
        given::<SenderIdState>(&id(), &[requested()])
            .when(send(Channel::Voice))
            .then_reject(is_conflict(ConflictReason::NumberCapabilitiesMismatch));
        given::<SenderIdState>(&id(), &[requested(), released()])
            .when(send(Channel::Text))
            .then_reject(|r| matches!(r, Rejection::NotFound { .. }));
    }

    /// The actions and events of pool membership are recorded exactly as a phone number's.
    #[test]
    fn membership_steps_serialize_as_the_step_itself() {
        let event = E::Membership(M::AssociatedWithPool { pool_id: POOL.into() });
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json, serde_json::json!({"Type": "AssociatedWithPool", "Payload": {"PoolId": POOL}}));
        assert_eq!(serde_json::from_value::<E>(json).expect("deserializes"), event);
    }
}
