//! The phone-number aggregate: its state, commands, events and the decider that holds the
//! ReleasePhoneNumber rules (and those of creation, update, messages and keywords), one
//! `decide_*` method per command. Pool membership is decided by the rules every origination
//! identity shares (`super::membership`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::keywords::{self, Keyword, KeywordAction};
use super::membership::{self, Member, MembershipAction, MembershipEvent, Standing};
use super::message::{check_send, InboundMessage, OutboundMessage, Sender};
use super::pool::{Pool, SharedSettings};
use super::tags::{self, edited, TagEdit};
use super::types::{ConflictReason, MessageType, NumberCapability, NumberStatus, NumberType, Tag, ValidationReason};
use super::{changed, changed_optional, ActionName, Aggregate, Command, Rejection};

/// Everything known about one phone number (`PhoneNumberInformation` plus what the service keeps
/// for itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PhoneNumber {
    pub phone_number_id: String,
    pub phone_number_arn: String,
    pub account: String,
    pub region: String,
    pub phone_number: String,
    pub iso_country_code: String,
    pub message_type: MessageType,
    pub number_capabilities: Vec<NumberCapability>,
    pub number_type: NumberType,
    pub monthly_leasing_price: String,
    pub opt_out_list_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    pub self_managed_opt_outs_enabled: bool,
    pub two_way_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_role: Option<String>,
    pub deletion_protection_enabled: bool,
    pub international_sending_enabled: bool,
    pub status: NumberStatus,
    /// The pool the number belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<String>,
    /// The pool the number is entering or leaving while `status` is ASSOCIATING/DISASSOCIATING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pool_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Keywords of its own (HELP and STOP are every number's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keywords: BTreeMap<String, Keyword>,
    pub created_timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// The pool the `RequestPhoneNumber` that made the number named, until the number first
    /// joins a pool. While it is set and the number is in no pool, that request has not
    /// finished: its attempt stopped after making the number, before the join, or after a
    /// refused join, before withdrawing the number ([`PhoneNumber::unfinished_request`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_into_pool: Option<String>,
}

impl PhoneNumber {
    /// The pool of the `RequestPhoneNumber` that made this number, if that request has not
    /// finished: the number is live and in no pool (nor joining or leaving one), and has never
    /// joined one. Its retry, or the reconciler in its stead, joins the number or withdraws it.
    pub fn unfinished_request(&self) -> Option<&str> {
        let outside = self.status == NumberStatus::Active && self.pool_id.is_none() && self.pending_pool_id.is_none();
        self.requested_into_pool.as_deref().filter(|_| outside)
    }

    /// A plausible active US long code (for tests, benchmarks and documentation examples).
    pub fn example(id: &str, account: &str, region: &str) -> PhoneNumber {
        PhoneNumber {
            phone_number_id: id.into(),
            phone_number_arn: format!("arn:aws:sms-voice:{region}:{account}:phone-number/{id}"),
            account: account.into(),
            region: region.into(),
            phone_number: "+12065550100".into(),
            iso_country_code: "US".into(),
            message_type: MessageType::Transactional,
            number_capabilities: vec![NumberCapability::Sms],
            number_type: NumberType::LongCode,
            monthly_leasing_price: "1.00".into(),
            opt_out_list_name: "Default".into(),
            registration_id: None,
            self_managed_opt_outs_enabled: false,
            two_way_enabled: false,
            two_way_channel_arn: None,
            two_way_channel_role: None,
            deletion_protection_enabled: false,
            international_sending_enabled: false,
            status: NumberStatus::Active,
            pool_id: None,
            pending_pool_id: None,
            tags: vec![],
            keywords: BTreeMap::new(),
            created_timestamp_ms: 1,
            client_token: None,
            requested_into_pool: None,
        }
    }
}

impl PhoneNumber {
    /// The keyword an end user's message to this number is (see [`keywords::matching`]), with
    /// the keywords it has from its pool. A number that manages its own opt-outs handles opting
    /// out and in itself ("you're responsible for tracking and honoring opt-out requests"): for
    /// it, only automatic responses are keywords.
    pub fn inbound_keyword(&self, body: &str, pool_keywords: &BTreeMap<String, Keyword>) -> Option<Keyword> {
        keywords::matching(body, &self.keywords, pool_keywords)
            .filter(|k| !self.self_managed_opt_outs_enabled || k.keyword_action == KeywordAction::AutomaticResponse)
    }
}

impl Member for PhoneNumber {
    const KIND: ResourceKind = ResourceKind::PhoneNumber;
    const IN_POOL: ConflictReason = ConflictReason::PhoneNumberAssociatedToPool;
    const ONE_POOL: bool = true;

    fn member_id(&self) -> &str {
        &self.phone_number_id
    }

    fn status(&self) -> NumberStatus {
        self.status
    }

    /// Its one pool, from `PoolId`, `Status` and the pool it is joining or leaving.
    fn standings(&self) -> Vec<(&str, Standing)> {
        let standing = match (self.status, &self.pending_pool_id, &self.pool_id) {
            (NumberStatus::Associating, Some(pending), _) => (pending.as_str(), Standing::Associating),
            (NumberStatus::Disassociating, Some(pending), _) => (pending.as_str(), Standing::Disassociating),
            (_, _, Some(pool)) => (pool.as_str(), Standing::Associated),
            _ => return vec![],
        };
        vec![standing]
    }

    fn set_standing(&mut self, pool_id: &str, standing: Option<Standing>) {
        let pool = Some(pool_id.to_string());
        (self.status, self.pending_pool_id) = match standing {
            Some(Standing::Associating) => (NumberStatus::Associating, pool),
            Some(Standing::Disassociating) => (NumberStatus::Disassociating, pool),
            Some(Standing::Associated) | None => (NumberStatus::Active, None),
        };
        match standing {
            Some(Standing::Associated | Standing::Disassociating) => self.pool_id = Some(pool_id.to_string()),
            None => self.pool_id = None,
            // Not a member until the join completes.
            Some(Standing::Associating) => {}
        }
    }

    fn iso_country_code(&self) -> &str {
        &self.iso_country_code
    }

    fn message_type_refused(&self, pool_id: &str, message_type: MessageType) -> Option<String> {
        (self.message_type != message_type).then(|| format!("has message type {} but pool {pool_id} has {message_type}", self.message_type))
    }

    fn shared_settings(&self) -> Option<SharedSettings> {
        Some(SharedSettings {
            opt_out_list_name: self.opt_out_list_name.clone(),
            self_managed_opt_outs_enabled: self.self_managed_opt_outs_enabled,
            two_way_enabled: self.two_way_enabled,
            two_way_channel_arn: self.two_way_channel_arn.clone(),
        })
    }
}

/// The pool a number is requested into (`RequestPhoneNumber` with a `PoolId`): what the rules of
/// the number's creation need to know about it, read from the pool by the shell. The number does
/// not join the pool by its creation; the usual association steps follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolToJoin {
    pub pool_id: String,
    /// The pool's message type (it cannot change once the pool exists).
    pub message_type: MessageType,
    /// The settings its numbers share with it, as the shell read them (absent in commands
    /// recorded before they were compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SharedSettings>,
}

impl PoolToJoin {
    /// What the creation rules need of `pool`.
    pub fn of(pool: &Pool) -> Self {
        PoolToJoin {
            pool_id: pool.pool_id.clone(),
            message_type: pool.message_type,
            settings: Some(pool.shared_settings()),
        }
    }
}

/// The members `UpdatePhoneNumber` may change; `None` leaves a member as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PhoneNumberChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub international_sending_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_list_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_managed_opt_outs_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_enabled: Option<bool>,
}

/// The state of one phone-number stream: nothing yet, or the number (released ones keep
/// `Status: DELETED`, so their history stays inspectable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumberState(pub Option<PhoneNumber>);

/// What can be asked of a phone number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Input", rename_all_fields = "PascalCase")]
pub enum PhoneNumberAction {
    /// Start the stream with a number chosen by the shell (id, E.164 number, price).
    ///
    /// Recorded as the number's members with `IntoPool` beside them (absent when the request
    /// names no pool, so commands recorded before `IntoPool` existed read back unchanged).
    Request {
        #[serde(flatten)]
        number: Box<PhoneNumber>,
        /// The pool named by `RequestPhoneNumber`'s `PoolId`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        into_pool: Option<PoolToJoin>,
    },
    Update(PhoneNumberChanges),
    /// An update naming an opt-out list other than `Default`, with whether the shell found the
    /// list (the log's counter bound keeps that exact; a list found gone is refused, recorded).
    UpdateNamingList {
        changes: PhoneNumberChanges,
        list_exists: bool,
    },
    Release,
    /// Let go of the number a `RequestPhoneNumber` made when the join to the pool it named was
    /// refused after the number was made (the pool deleted, or its settings changed, in
    /// between): the request fails, so it must not leave a number leased. Only the service
    /// asks it, right after that refusal; deletion protection does not hold it back, since
    /// the number was never handed to the caller. `reason`: the refusal the request answers.
    WithdrawRequest {
        pool_id: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    /// `TagResource`: put these tags (an existing key takes the new value).
    Tag {
        tags: Vec<Tag>,
    },
    /// `UntagResource`: remove the tags with these keys.
    Untag {
        keys: Vec<String>,
    },
    /// Send a message from this number. `opted_out_on`: the opt-out list in force on which the
    /// shell found the destination, if it did (the log's counter bound keeps that exact).
    SendMessage {
        message: Box<OutboundMessage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opted_out_on: Option<String>,
    },
    /// `PutKeyword`, with the most keywords of its own the number may hold.
    PutKeyword {
        keyword: Keyword,
        quota: u64,
    },
    /// `DeleteKeyword`.
    DeleteKeyword {
        keyword: String,
    },
    /// An end user's message to this number, with the keywords it has from its pool (if any).
    ReceiveMessage {
        message: Box<InboundMessage>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pool_keywords: BTreeMap<String, Keyword>,
    },
    /// A step of joining or leaving a pool (recorded as the step itself).
    #[serde(untagged)]
    Membership(MembershipAction),
}

impl From<MembershipAction> for PhoneNumberAction {
    fn from(step: MembershipAction) -> Self {
        PhoneNumberAction::Membership(step)
    }
}

impl PhoneNumber {
    /// "When you request a SIMULATOR phone number, you must set MessageType as TRANSACTIONAL."
    pub fn simulator_is_transactional(number_type: NumberType, message_type: MessageType) -> Result<(), Rejection> {
        if number_type == NumberType::Simulator && message_type != MessageType::Transactional {
            return Err(Rejection::validation(
                ValidationReason::InvalidParameter,
                "MessageType",
                "a SIMULATOR phone number is requested with MessageType TRANSACTIONAL",
            ));
        }
        Ok(())
    }
}

impl PhoneNumberAction {
    /// The creation command of `number`, requested into `into_pool` if the request names one.
    pub fn request(number: PhoneNumber, into_pool: Option<PoolToJoin>) -> Self {
        PhoneNumberAction::Request {
            number: Box::new(number),
            into_pool,
        }
    }
}

impl ActionName for PhoneNumberAction {
    fn name(&self) -> &'static str {
        match self {
            PhoneNumberAction::Request { .. } => "Request",
            PhoneNumberAction::Update(_) | PhoneNumberAction::UpdateNamingList { .. } => "Update",
            PhoneNumberAction::Release => "Release",
            PhoneNumberAction::WithdrawRequest { .. } => "WithdrawRequest",
            PhoneNumberAction::Tag { .. } => "Tag",
            PhoneNumberAction::Untag { .. } => "Untag",
            PhoneNumberAction::SendMessage { .. } => "SendMessage",
            PhoneNumberAction::PutKeyword { .. } => "PutKeyword",
            PhoneNumberAction::DeleteKeyword { .. } => "DeleteKeyword",
            PhoneNumberAction::ReceiveMessage { .. } => "ReceiveMessage",
            PhoneNumberAction::Membership(step) => step.name(),
        }
    }
}

/// What happened to a phone number. Past tense; never changed once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Payload", rename_all_fields = "PascalCase")]
pub enum PhoneNumberEvent {
    PhoneNumberRequested(Box<PhoneNumber>),
    PhoneNumberUpdated(PhoneNumberChanges),
    Released {
        phone_number: String,
    },
    /// The number a `RequestPhoneNumber` made, let go because the join to the pool the request
    /// named was refused: the request failed, and leaves no number leased. Like `Released`,
    /// the number is gone for good (`reason`: the refusal the request answered).
    RequestWithdrawn {
        phone_number: String,
        pool_id: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    ReleaseRejected {
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    UpdateRejected {
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    /// A refused internal step of a pool change (kept so the audit trail has no blind spot).
    CommandRejected {
        command: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    /// The number's tags after a TagResource or UntagResource.
    TagsChanged {
        tags: Vec<Tag>,
    },
    /// A message accepted for sending from this number.
    MessageSent(Box<OutboundMessage>),
    /// A keyword of its own created or changed.
    KeywordPut(Keyword),
    KeywordDeleted {
        keyword: String,
    },
    /// A message refused, with why.
    MessageRejected {
        message_id: String,
        destination_phone_number: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    /// An end user's message arrived; `keyword` is the keyword it was, whose message was the
    /// automatic response and whose action (an opt-out, an opt-in) the service then carried out.
    MessageReceived {
        message: Box<InboundMessage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyword: Option<Keyword>,
    },
    /// A pool membership step (recorded as the step itself).
    #[serde(untagged)]
    Membership(MembershipEvent),
}

const KIND: ResourceKind = ResourceKind::PhoneNumber;

/// A `ConflictException` about this number.
fn conflict(reason: ConflictReason, id: &str, why: &str) -> Rejection {
    Rejection::conflict(reason, KIND, id, why)
}

/// One decision per command; [`Aggregate::decide`] dispatches to them.
impl PhoneNumberState {
    /// The number, if it is live and belongs to the caller; otherwise the NotFound rejection.
    fn live<'a>(&'a self, command: &Command<PhoneNumberAction>) -> Result<&'a PhoneNumber, Rejection> {
        match &self.0 {
            Some(n)
                if n.status != NumberStatus::Deleted
                    && n.account == command.meta.scope.account
                    && n.region == command.meta.scope.region =>
            {
                Ok(n)
            }
            Some(n) => Err(Rejection::not_found(KIND, &n.phone_number_id)),
            None => Err(Rejection::not_found(KIND, &command.target)),
        }
    }

    /// `Request`: starts the stream, unless the pool the number is requested into has another
    /// message type or other shared settings (refused as the pool's conflict, before the number
    /// exists). "When you request a SIMULATOR phone number, you must set MessageType as
    /// TRANSACTIONAL."
    fn decide_request(&self, number: &PhoneNumber, into_pool: Option<&PoolToJoin>) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        if let Some(n) = &self.0 {
            return Err(conflict(
                ConflictReason::ResourceAlreadyExists,
                &n.phone_number_id,
                "already exists",
            ));
        }
        PhoneNumber::simulator_is_transactional(number.number_type, number.message_type)?;
        if let Some(pool) = into_pool {
            let pool_conflict = |reason, why: &str| Rejection::conflict(reason, ResourceKind::Pool, &pool.pool_id, why);
            if pool.message_type != number.message_type {
                let why = format!("has message type {}, not {}", pool.message_type, number.message_type);
                return Err(pool_conflict(ConflictReason::MessageTypeMismatch, &why));
            }
            let mismatch = pool.settings.as_ref().zip(number.shared_settings());
            if let Some((reason, why)) = mismatch.and_then(|(pool, number)| pool.mismatch(&number)) {
                return Err(pool_conflict(reason, &format!("does not match the number asked for: it {why}")));
            }
        }
        // "Tag keys must be unique per resource": as TagResource would put them.
        let tags = tags::tagged(&[], &number.tags, &number.phone_number_arn)?;
        Ok(vec![PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber {
            tags,
            requested_into_pool: into_pool.map(|p| p.pool_id.clone()),
            ..number.clone()
        }))])
    }

    /// `Update`: the given members change; two-way messaging needs a channel. Refused for a
    /// number in (or entering, or leaving) a pool, whose configuration is the pool's.
    fn decide_update(
        &self,
        command: &Command<PhoneNumberAction>,
        changes: &PhoneNumberChanges,
    ) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        let n = self.live(command)?;
        membership::refuse_in_pool(n)?;
        let two_way = changes.two_way_enabled.unwrap_or(n.two_way_enabled);
        let channel = changes.two_way_channel_arn.as_ref().or(n.two_way_channel_arn.as_ref());
        if two_way && channel.is_none() {
            return Err(Rejection::validation(
                ValidationReason::TwoWayChannelNotPresent,
                "TwoWayChannelArn",
                "TwoWayEnabled requires a TwoWayChannelArn",
            ));
        }
        Ok(vec![PhoneNumberEvent::PhoneNumberUpdated(changes.clone())])
    }

    /// `Release`: refused under deletion protection and for a number in (or entering, or
    /// leaving) a pool.
    fn decide_release(&self, command: &Command<PhoneNumberAction>) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        let n = self.live(command)?;
        if n.deletion_protection_enabled {
            return Err(conflict(
                ConflictReason::DeletionProtectionEnabled,
                &n.phone_number_id,
                "has deletion protection enabled",
            ));
        }
        membership::refuse_in_pool(n)?;
        Ok(vec![PhoneNumberEvent::Released {
            phone_number: n.phone_number.clone(),
        }])
    }

    /// `WithdrawRequest`: the number leaves the lease its request could not complete, unless
    /// it is in (or entering, or leaving) a pool after all. Already gone, nothing more to do:
    /// a retry of the request may withdraw it a second time.
    fn decide_withdrawal(
        &self,
        command: &Command<PhoneNumberAction>,
        pool_id: &str,
        reason: &Rejection,
    ) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        if let Some(n) = &self.0 {
            let scope = &command.meta.scope;
            if n.status == NumberStatus::Deleted && n.account == scope.account && n.region == scope.region {
                return Ok(vec![]);
            }
        }
        let n = self.live(command)?;
        membership::refuse_in_pool(n)?;
        Ok(vec![PhoneNumberEvent::RequestWithdrawn {
            phone_number: n.phone_number.clone(),
            pool_id: pool_id.to_string(),
            reason: reason.clone(),
        }])
    }
}

impl PhoneNumberState {
    /// `SendMessage`: from a live number with the channel's capability and the message's type;
    /// never to a destination on the opt-out list in force, unless the number manages opt-outs
    /// itself (`SelfManagedOptOutsEnabled`: "you're responsible for tracking and honoring
    /// opt-out requests"). An accepted dry run records nothing.
    fn decide_send(
        &self,
        command: &Command<PhoneNumberAction>,
        message: &OutboundMessage,
        opted_out_on: Option<&str>,
    ) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        let n = self.live(command)?;
        let sender = Sender {
            kind: KIND,
            id: &n.phone_number_id,
            capabilities: &n.number_capabilities,
            message_types: std::slice::from_ref(&n.message_type),
            self_managed_opt_outs: n.self_managed_opt_outs_enabled,
        };
        Ok(check_send(&sender, message, opted_out_on)?
            .then(|| PhoneNumberEvent::MessageSent(Box::new(message.clone())))
            .into_iter()
            .collect())
    }
}

impl Aggregate for PhoneNumberState {
    type Action = PhoneNumberAction;
    type Event = PhoneNumberEvent;
    const KIND: ResourceKind = KIND;

    fn decide(&self, command: &Command<PhoneNumberAction>) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        use PhoneNumberAction as A;
        match &command.action {
            A::Request { number, into_pool } => self.decide_request(number, into_pool.as_ref()),
            A::Update(changes) => self.decide_update(command, changes),
            A::UpdateNamingList { changes, list_exists } => {
                self.live(command)?;
                match (list_exists, &changes.opt_out_list_name) {
                    (false, Some(list)) => Err(Rejection::not_found(ResourceKind::OptOutList, list)),
                    _ => self.decide_update(command, changes),
                }
            }
            A::Release => self.decide_release(command),
            A::WithdrawRequest { pool_id, reason } => self.decide_withdrawal(command, pool_id, reason),
            A::Tag { tags } => {
                let n = self.live(command)?;
                edited(&n.tags, TagEdit::Put(tags), &n.phone_number_arn, |tags| {
                    PhoneNumberEvent::TagsChanged { tags }
                })
            }
            A::Untag { keys } => {
                let n = self.live(command)?;
                edited(&n.tags, TagEdit::Remove(keys), &n.phone_number_arn, |tags| {
                    PhoneNumberEvent::TagsChanged { tags }
                })
            }
            A::SendMessage { message, opted_out_on } => self.decide_send(command, message, opted_out_on.as_deref()),
            A::PutKeyword { keyword, quota } => {
                let n = self.live(command)?;
                Ok(keywords::put(&n.keywords, keyword, *quota, false)?
                    .map(PhoneNumberEvent::KeywordPut)
                    .into_iter()
                    .collect())
            }
            A::DeleteKeyword { keyword } => {
                let n = self.live(command)?;
                let gone = keywords::delete(&n.keywords, keyword)?;
                Ok(vec![PhoneNumberEvent::KeywordDeleted { keyword: gone.keyword }])
            }
            A::ReceiveMessage { message, pool_keywords } => {
                let n = self.live(command)?;
                Ok(vec![PhoneNumberEvent::MessageReceived {
                    message: message.clone(),
                    keyword: n.inbound_keyword(&message.message_body, pool_keywords),
                }])
            }
            A::Membership(step) => Ok(membership::decide(self.0.as_ref(), || self.live(command), step)?
                .into_iter()
                .map(PhoneNumberEvent::Membership)
                .collect()),
        }
    }

    fn evolve(self, event: &PhoneNumberEvent) -> Self {
        use PhoneNumberEvent as E;
        let Some(mut n) = self.0 else {
            return match event {
                E::PhoneNumberRequested(number) => PhoneNumberState(Some((**number).clone())),
                _ => PhoneNumberState(None),
            };
        };
        match event {
            E::PhoneNumberRequested(number) => n = (**number).clone(),
            E::PhoneNumberUpdated(c) => {
                changed(&mut n.deletion_protection_enabled, &c.deletion_protection_enabled);
                changed(&mut n.international_sending_enabled, &c.international_sending_enabled);
                changed(&mut n.opt_out_list_name, &c.opt_out_list_name);
                changed(&mut n.self_managed_opt_outs_enabled, &c.self_managed_opt_outs_enabled);
                changed_optional(&mut n.two_way_channel_arn, &c.two_way_channel_arn);
                changed_optional(&mut n.two_way_channel_role, &c.two_way_channel_role);
                changed(&mut n.two_way_enabled, &c.two_way_enabled);
            }
            E::Released { .. } | E::RequestWithdrawn { .. } => n.status = NumberStatus::Deleted,
            E::Membership(step) => {
                membership::evolve(&mut n, step);
                // In a pool: whatever became of the request that made it, that request is over
                // (a number put into another pool is left there).
                if matches!(step, MembershipEvent::AssociatedWithPool { .. }) {
                    n.requested_into_pool = None;
                }
            }
            E::TagsChanged { tags } => n.tags = tags.clone(),
            E::MessageSent(_) | E::MessageRejected { .. } | E::MessageReceived { .. } => {}
            E::KeywordPut(k) => {
                n.keywords.insert(keywords::key_of(&k.keyword), k.clone());
            }
            E::KeywordDeleted { keyword } => {
                n.keywords.remove(&keywords::key_of(keyword));
            }
            E::ReleaseRejected { .. } | E::UpdateRejected { .. } | E::CommandRejected { .. } => {}
        }
        PhoneNumberState(Some(n))
    }

    fn rejection_in(event: &PhoneNumberEvent) -> Option<&Rejection> {
        use PhoneNumberEvent as E;
        match event {
            E::ReleaseRejected { reason }
            | E::UpdateRejected { reason }
            | E::MessageRejected { reason, .. }
            | E::CommandRejected { reason, .. } => Some(reason),
            E::Membership(step) => step.rejection(),
            _ => None,
        }
    }

    fn rejected(action: &PhoneNumberAction, rejection: &Rejection) -> PhoneNumberEvent {
        use PhoneNumberAction as A;
        use PhoneNumberEvent as E;
        let reason = rejection.clone();
        match action {
            A::Release => E::ReleaseRejected { reason },
            A::Update(_) | A::UpdateNamingList { .. } => E::UpdateRejected { reason },
            A::Membership(step) => match step.rejected(&reason) {
                Some(event) => E::Membership(event),
                None => E::CommandRejected {
                    command: step.name().to_string(),
                    reason,
                },
            },
            A::SendMessage { message, .. } => E::MessageRejected {
                message_id: message.message_id.clone(),
                destination_phone_number: message.destination_phone_number.clone(),
                reason,
            },
            other => E::CommandRejected {
                command: other.name().to_string(),
                reason,
            },
        }
    }
}

/// Given/when/then tests of every rule, citing the AWS API reference they pin down.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::membership::{MembershipAction, MembershipEvent};
    use crate::domain::testing::{given, ACCOUNT, REGION};
    use crate::domain::types::ResourceType;
    use PhoneNumberAction as A;
    use PhoneNumberEvent as E;

    const ID: &str = "phone-0123456789abcdef0123456789abcdef";
    const POOL: &str = "pool-0123456789abcdef0123456789abcdef";

    fn number() -> PhoneNumber {
        PhoneNumber::example(ID, ACCOUNT, REGION)
    }

    fn requested() -> E {
        E::PhoneNumberRequested(Box::new(number()))
    }

    /// The creation of `number()` by a request into the pool `POOL`.
    fn requested_into_pool() -> E {
        E::PhoneNumberRequested(Box::new(PhoneNumber {
            requested_into_pool: Some(POOL.into()),
            ..number()
        }))
    }

    fn protect(on: bool) -> E {
        E::PhoneNumberUpdated(PhoneNumberChanges {
            deletion_protection_enabled: Some(on),
            ..Default::default()
        })
    }

    fn in_pool() -> Vec<E> {
        vec![
            requested(),
            E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
            E::Membership(MembershipEvent::AssociatedWithPool { pool_id: POOL.into() }),
        ]
    }

    fn is_conflict(reason: ConflictReason) -> impl Fn(&Rejection) -> bool {
        move |r| matches!(r, Rejection::Conflict { reason: got, resource_type: ResourceType::PhoneNumber, resource_id, .. } if *got == reason && resource_id == ID)
    }

    fn is_not_found(r: &Rejection) -> bool {
        matches!(r, Rejection::NotFound { resource_type: ResourceType::PhoneNumber, resource_id, .. } if resource_id == ID)
    }

    #[test]
    fn request_starts_the_stream() {
        let s = given::<PhoneNumberState>(ID, &[])
            .when(A::request(number(), None))
            .then(&[requested()]);
        assert_eq!(s.0.map(|n| n.status), Some(NumberStatus::Active));
    }

    /// RequestPhoneNumber: "When you request a SIMULATOR phone number, you must set
    /// MessageType as TRANSACTIONAL."
    #[test]
    fn a_simulator_number_is_transactional_only() {
        let simulator = |message_type| PhoneNumber {
            number_type: NumberType::Simulator,
            message_type,
            ..number()
        };
        given::<PhoneNumberState>(ID, &[])
            .when(A::request(simulator(MessageType::Promotional), None))
            .then_reject(|r| matches!(r, Rejection::Validation { .. }));
        let made = simulator(MessageType::Transactional);
        given::<PhoneNumberState>(ID, &[])
            .when(A::request(made.clone(), None))
            .then(&[E::PhoneNumberRequested(Box::new(made))]);
    }

    /// "Tag keys must be unique per resource": tags given at creation are put as TagResource
    /// puts them (a later duplicate wins), at most 50.
    #[test]
    fn tags_given_at_creation_have_unique_keys() {
        let tag = |k: &str, v: &str| Tag {
            key: k.into(),
            value: v.into(),
        };
        let asked = PhoneNumber {
            tags: vec![tag("env", "dev"), tag("team", "a"), tag("env", "prod")],
            ..number()
        };
        let made = PhoneNumber {
            tags: vec![tag("env", "prod"), tag("team", "a")],
            ..number()
        };
        given::<PhoneNumberState>(ID, &[])
            .when(A::request(asked, None))
            .then(&[E::PhoneNumberRequested(Box::new(made))]);
        let crowded = PhoneNumber {
            tags: (0..51).map(|i| tag(&format!("k{i}"), "v")).collect(),
            ..number()
        };
        given::<PhoneNumberState>(ID, &[])
            .when(A::request(crowded, None))
            .then_reject(|r| matches!(r, Rejection::QuotaExceeded { .. }));
    }

    #[test]
    fn request_on_an_existing_stream_is_refused() {
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::request(number(), None))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyExists));
    }

    /// ReleasePhoneNumber: "Releases an existing origination phone number in your account."
    #[test]
    fn release_of_an_active_number_releases_it() {
        let s = given::<PhoneNumberState>(ID, &[requested()]).when(A::Release).then(&[E::Released {
            phone_number: "+12065550100".into(),
        }]);
        assert_eq!(s.0.map(|n| n.status), Some(NumberStatus::Deleted));
    }

    /// ResourceNotFoundException: "A requested resource couldn't be found."
    #[test]
    fn release_of_an_unknown_number_is_not_found() {
        given::<PhoneNumberState>(ID, &[]).when(A::Release).then_reject(is_not_found);
    }

    #[test]
    fn release_of_a_released_number_is_not_found() {
        given::<PhoneNumberState>(
            ID,
            &[
                requested(),
                E::Released {
                    phone_number: "+12065550100".into(),
                },
            ],
        )
        .when(A::Release)
        .then_reject(is_not_found);
    }

    #[test]
    fn release_of_another_accounts_number_is_not_found() {
        given::<PhoneNumberState>(ID, &[requested()])
            .by_account("444455556666")
            .when(A::Release)
            .then_reject(is_not_found);
    }

    /// "If the origination phone number has deletion protection enabled ... an error is returned."
    #[test]
    fn release_with_deletion_protection_is_a_conflict() {
        given::<PhoneNumberState>(ID, &[requested(), protect(true)])
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::DeletionProtectionEnabled));
    }

    #[test]
    fn release_after_protection_is_lifted_succeeds() {
        given::<PhoneNumberState>(ID, &[requested(), protect(true), protect(false)])
            .when(A::Release)
            .then(&[E::Released {
                phone_number: "+12065550100".into(),
            }]);
    }

    /// "... or is associated with a pool, an error is returned."
    #[test]
    fn release_of_a_pool_member_is_a_conflict() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
    }

    #[test]
    fn release_while_joining_or_leaving_a_pool_is_a_conflict() {
        given::<PhoneNumberState>(
            ID,
            &[
                requested(),
                E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
            ],
        )
        .when(A::Release)
        .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
        let mut leaving = in_pool();
        leaving.push(E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }));
        given::<PhoneNumberState>(ID, &leaving)
            .when(A::Release)
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
    }

    #[test]
    fn release_after_leaving_the_pool_succeeds() {
        let mut left = in_pool();
        left.extend([
            E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }),
            E::Membership(MembershipEvent::DisassociatedFromPool { pool_id: POOL.into() }),
        ]);
        given::<PhoneNumberState>(ID, &left).when(A::Release).then(&[E::Released {
            phone_number: "+12065550100".into(),
        }]);
    }

    /// The refusal a request into a pool answered when its join was refused after the number
    /// was made (the pool deleted in between).
    fn join_refused() -> Rejection {
        Rejection::not_found(ResourceKind::Pool, POOL)
    }

    fn withdraw() -> A {
        A::WithdrawRequest {
            pool_id: POOL.into(),
            reason: join_refused(),
        }
    }

    fn withdrawn() -> E {
        E::RequestWithdrawn {
            phone_number: "+12065550100".into(),
            pool_id: POOL.into(),
            reason: join_refused(),
        }
    }

    /// A request into a pool whose join was refused after the number was made fails, and
    /// leaves no number leased: the number is withdrawn, deletion protection or not (it was
    /// never handed to the caller), and is gone for good.
    #[test]
    fn a_request_whose_join_was_refused_is_withdrawn_even_under_protection() {
        let mut refused = vec![
            requested(),
            protect(true),
            E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
            E::Membership(MembershipEvent::PoolAssociationAborted {
                pool_id: POOL.into(),
                reason: join_refused(),
            }),
        ];
        let s = given::<PhoneNumberState>(ID, &refused).when(withdraw()).then(&[withdrawn()]);
        assert_eq!(s.0.map(|n| n.status), Some(NumberStatus::Deleted));
        // A retry withdrawing it again changes nothing; nor is it found afterwards.
        refused.push(withdrawn());
        given::<PhoneNumberState>(ID, &refused).when(withdraw()).then(&[]);
        given::<PhoneNumberState>(ID, &refused).when(A::Release).then_reject(is_not_found);
    }

    /// A number in (or joining) a pool after all (another attempt of the same request joined
    /// it) is not withdrawn; nor is another account's.
    #[test]
    fn a_number_in_or_joining_a_pool_is_not_withdrawn() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(withdraw())
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
        given::<PhoneNumberState>(ID, &in_pool()[..2])
            .when(withdraw())
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
        given::<PhoneNumberState>(ID, &[requested()])
            .by_account("444455556666")
            .when(withdraw())
            .then_reject(is_not_found);
        given::<PhoneNumberState>(ID, &[]).when(withdraw()).then_reject(is_not_found);
    }

    /// A number requested into a pool records the pool its request named, and the request is
    /// unfinished while the number is live, in no pool and has never joined one: before its
    /// join, after a refused one; not while joining, once in a pool (or after leaving it: the
    /// request is over), nor once withdrawn. A number requested into no pool has none.
    #[test]
    fn a_request_into_a_pool_is_unfinished_until_the_number_joins_or_is_withdrawn() {
        let mut history = vec![requested_into_pool()];
        let unfinished = |events: &[E]| -> Option<String> {
            let state = PhoneNumberState::replay(events).0.expect("number");
            state.unfinished_request().map(str::to_string)
        };
        let pending = Some(POOL.to_string());
        assert_eq!(unfinished(&history), pending, "before its join");
        let start = E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() });
        let refusal = E::Membership(MembershipEvent::PoolAssociationAborted {
            pool_id: POOL.into(),
            reason: join_refused(),
        });
        history.push(start.clone());
        assert_eq!(unfinished(&history), None, "while joining");
        history.push(refusal);
        assert_eq!(unfinished(&history), pending, "after a refused join");
        let mut withdrawn_after = history.clone();
        withdrawn_after.push(withdrawn());
        assert_eq!(unfinished(&withdrawn_after), None, "withdrawn");
        history.extend([start, E::Membership(MembershipEvent::AssociatedWithPool { pool_id: POOL.into() })]);
        assert_eq!(unfinished(&history), None, "in the pool");
        history.extend([
            E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }),
            E::Membership(MembershipEvent::DisassociatedFromPool { pool_id: POOL.into() }),
        ]);
        assert_eq!(unfinished(&history), None, "after leaving the pool");
        assert_eq!(unfinished(&[requested()]), None, "requested into no pool");
    }

    #[test]
    fn refusals_are_recorded_as_rejection_events_that_change_nothing() {
        let r = Rejection::conflict(ConflictReason::DeletionProtectionEnabled, ResourceKind::PhoneNumber, ID, "x");
        assert_eq!(
            PhoneNumberState::rejected(&A::Release, &r),
            E::ReleaseRejected { reason: r.clone() }
        );
        assert!(matches!(
            PhoneNumberState::rejected(&A::Update(Default::default()), &r),
            E::UpdateRejected { .. }
        ));
        let before = PhoneNumberState::replay(&[requested()]);
        assert_eq!(before.clone().evolve(&E::ReleaseRejected { reason: r }), before);
    }

    #[test]
    fn update_changes_only_given_members() {
        let change = PhoneNumberChanges {
            opt_out_list_name: Some("Marketing".into()),
            self_managed_opt_outs_enabled: Some(true),
            ..Default::default()
        };
        let s = given::<PhoneNumberState>(ID, &[requested()])
            .when(A::Update(change.clone()))
            .then(&[E::PhoneNumberUpdated(change)]);
        let n = s.0.expect("state");
        assert_eq!(n.opt_out_list_name, "Marketing");
        assert!(n.self_managed_opt_outs_enabled);
        assert!(!n.deletion_protection_enabled);
    }

    #[test]
    fn two_way_needs_a_channel() {
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::Update(PhoneNumberChanges {
                two_way_enabled: Some(true),
                ..Default::default()
            }))
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::Validation {
                        reason: ValidationReason::TwoWayChannelNotPresent,
                        ..
                    }
                )
            });
        let with_channel = PhoneNumberChanges {
            two_way_enabled: Some(true),
            two_way_channel_arn: Some("arn:aws:sns:us-east-1:111122223333:inbound".into()),
            ..Default::default()
        };
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::Update(with_channel.clone()))
            .then(&[E::PhoneNumberUpdated(with_channel)]);
    }

    /// UpdatePhoneNumber: "If the origination phone number is associated with a pool, an error
    /// is returned." So while it joins or leaves one too; after it left, it takes updates again.
    #[test]
    fn update_of_a_pool_member_is_a_conflict() {
        let joining = [
            requested(),
            E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
        ];
        let mut leaving = in_pool();
        leaving.push(E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }));
        for history in [&in_pool()[..], &joining, &leaving] {
            given::<PhoneNumberState>(ID, history)
                .when(A::Update(PhoneNumberChanges {
                    deletion_protection_enabled: Some(true),
                    ..Default::default()
                }))
                .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
        }
        leaving.push(E::Membership(MembershipEvent::DisassociatedFromPool { pool_id: POOL.into() }));
        given::<PhoneNumberState>(ID, &leaving)
            .when(A::Update(Default::default()))
            .then(&[E::PhoneNumberUpdated(Default::default())]);
    }

    #[test]
    fn update_of_a_released_number_is_not_found() {
        given::<PhoneNumberState>(
            ID,
            &[
                requested(),
                E::Released {
                    phone_number: "+12065550100".into(),
                },
            ],
        )
        .when(A::Update(Default::default()))
        .then_reject(is_not_found);
    }

    fn begin(pool_type: MessageType) -> A {
        A::Membership(MembershipAction::BeginAssociation {
            pool_id: POOL.into(),
            pool_message_type: pool_type,
            pool_settings: None,
            iso_country_code: None,
            client_token: None,
        })
    }

    #[test]
    fn association_goes_through_associating() {
        let s = given::<PhoneNumberState>(ID, &[requested()])
            .when(begin(MessageType::Transactional))
            .then(&[E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() })]);
        assert_eq!(s.0.as_ref().map(|n| n.status), Some(NumberStatus::Associating));
        let events = [
            requested(),
            E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
        ];
        let s = given::<PhoneNumberState>(ID, &events)
            .when(A::Membership(MembershipAction::CompleteAssociation { pool_id: POOL.into() }))
            .then(&[E::Membership(MembershipEvent::AssociatedWithPool { pool_id: POOL.into() })]);
        let n = s.0.expect("state");
        assert_eq!((n.status, n.pool_id.as_deref()), (NumberStatus::Active, Some(POOL)));
    }

    /// AssociateOriginationIdentity: the identity's message type must match the pool's.
    #[test]
    fn association_with_another_message_type_is_a_conflict() {
        given::<PhoneNumberState>(ID, &[requested()])
            .when(begin(MessageType::Promotional))
            .then_reject(is_conflict(ConflictReason::MessageTypeMismatch));
    }

    #[test]
    fn a_number_belongs_to_at_most_one_pool() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(begin(MessageType::Transactional))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyAssociated));
        let other = A::Membership(MembershipAction::BeginAssociation {
            pool_id: "pool-ffffffffffffffffffffffffffffffff".into(),
            pool_message_type: MessageType::Transactional,
            pool_settings: None,
            iso_country_code: None,
            client_token: None,
        });
        given::<PhoneNumberState>(ID, &in_pool())
            .when(other)
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
    }

    #[test]
    fn association_with_a_wrong_country_is_a_validation_error() {
        let a = A::Membership(MembershipAction::BeginAssociation {
            pool_id: POOL.into(),
            pool_message_type: MessageType::Transactional,
            pool_settings: None,
            iso_country_code: Some("GB".into()),
            client_token: None,
        });
        given::<PhoneNumberState>(ID, &[requested()]).when(a).then_reject(|r| {
            matches!(
                r,
                Rejection::Validation {
                    reason: ValidationReason::CountryCodeMismatch,
                    ..
                }
            )
        });
    }

    /// DisassociateOriginationIdentity's `IsoCountryCode` must be the number's too.
    #[test]
    fn leaving_with_a_wrong_country_is_a_validation_error() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(A::Membership(MembershipAction::BeginDisassociation {
                pool_id: POOL.into(),
                iso_country_code: Some("GB".into()),
                client_token: None,
            }))
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::Validation {
                        reason: ValidationReason::CountryCodeMismatch,
                        ..
                    }
                )
            });
    }

    /// A leave whose pool was deleted between its steps: the deletion already let the number
    /// go, so its last step has nothing left to do (and is not refused).
    #[test]
    fn completing_a_leave_the_pools_deletion_finished_changes_nothing() {
        let mut history = in_pool();
        history.extend([
            E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }),
            E::Membership(MembershipEvent::DetachedFromDeletedPool { pool_id: POOL.into() }),
        ]);
        let n = given::<PhoneNumberState>(ID, &history)
            .when(A::Membership(MembershipAction::CompleteDisassociation { pool_id: POOL.into() }))
            .then(&[])
            .0
            .expect("state");
        assert_eq!((n.status, n.pool_id), (NumberStatus::Active, None));
    }

    #[test]
    fn aborted_association_returns_to_active_without_pool() {
        let r = Rejection::not_found(ResourceKind::Pool, POOL);
        let events = [
            requested(),
            E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
        ];
        let s = given::<PhoneNumberState>(ID, &events)
            .when(A::Membership(MembershipAction::AbortAssociation {
                pool_id: POOL.into(),
                reason: r.clone(),
            }))
            .then(&[E::Membership(MembershipEvent::PoolAssociationAborted {
                pool_id: POOL.into(),
                reason: r.clone(),
            })]);
        let n = s.0.expect("state");
        assert_eq!((n.status, n.pool_id), (NumberStatus::Active, None));
        // Aborting twice is harmless.
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::Membership(MembershipAction::AbortAssociation {
                pool_id: POOL.into(),
                reason: r,
            }))
            .then(&[]);
    }

    #[test]
    fn disassociation_requires_membership() {
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::Membership(MembershipAction::BeginDisassociation {
                pool_id: POOL.into(),
                iso_country_code: None,
                client_token: None,
            }))
            .then_reject(is_conflict(ConflictReason::PhoneNumberNotAssociatedToPool));
        let s = given::<PhoneNumberState>(ID, &in_pool())
            .when(A::Membership(MembershipAction::BeginDisassociation {
                pool_id: POOL.into(),
                iso_country_code: None,
                client_token: None,
            }))
            .then(&[E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() })]);
        assert_eq!(s.0.map(|n| n.status), Some(NumberStatus::Disassociating));
    }

    #[test]
    fn a_number_changing_pools_accepts_no_other_pool_change() {
        let events = [
            requested(),
            E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
        ];
        given::<PhoneNumberState>(ID, &events)
            .when(begin(MessageType::Transactional))
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
    }

    #[test]
    fn disassociation_completes_or_aborts() {
        let mut leaving = in_pool();
        leaving.push(E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }));
        let s = given::<PhoneNumberState>(ID, &leaving)
            .when(A::Membership(MembershipAction::CompleteDisassociation { pool_id: POOL.into() }))
            .then(&[E::Membership(MembershipEvent::DisassociatedFromPool { pool_id: POOL.into() })]);
        assert_eq!(s.0.and_then(|n| n.pool_id), None);
        let r = Rejection::conflict(ConflictReason::LastPhoneNumber, ResourceKind::Pool, POOL, "x");
        let s = given::<PhoneNumberState>(ID, &leaving)
            .when(A::Membership(MembershipAction::AbortDisassociation {
                pool_id: POOL.into(),
                reason: r.clone(),
            }))
            .then(&[E::Membership(MembershipEvent::PoolDisassociationAborted {
                pool_id: POOL.into(),
                reason: r,
            })]);
        let n = s.0.expect("state");
        assert_eq!((n.status, n.pool_id.as_deref()), (NumberStatus::Active, Some(POOL)));
    }

    #[test]
    fn a_deleted_pool_lets_its_members_go_in_any_step() {
        let s = given::<PhoneNumberState>(ID, &in_pool())
            .when(A::Membership(MembershipAction::DetachFromDeletedPool { pool_id: POOL.into() }))
            .then(&[E::Membership(MembershipEvent::DetachedFromDeletedPool { pool_id: POOL.into() })]);
        assert_eq!(s.0.and_then(|n| n.pool_id), None);
        let mut leaving = in_pool();
        leaving.push(E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }));
        given::<PhoneNumberState>(ID, &leaving)
            .when(A::Membership(MembershipAction::DetachFromDeletedPool { pool_id: POOL.into() }))
            .then(&[E::Membership(MembershipEvent::DetachedFromDeletedPool { pool_id: POOL.into() })]);
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::Membership(MembershipAction::DetachFromDeletedPool { pool_id: POOL.into() }))
            .then(&[]);
    }

    /// DeletePool: "When a pool is deleted, all of its origination identities are
    /// disassociated." A number whose join reached the pool just before the deletion, and whose
    /// last step had not been taken yet, is let go too; that last step is then refused, so the
    /// number never ends up in the deleted pool.
    #[test]
    fn a_deleted_pool_lets_go_of_a_number_still_joining_it() {
        let mut joining = vec![requested()];
        joining.push(E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }));
        let detached = E::Membership(MembershipEvent::DetachedFromDeletedPool { pool_id: POOL.into() });
        let s = given::<PhoneNumberState>(ID, &joining)
            .when(A::Membership(MembershipAction::DetachFromDeletedPool { pool_id: POOL.into() }))
            .then(std::slice::from_ref(&detached));
        let n = s.0.expect("state");
        assert_eq!((n.status, n.pool_id, n.pending_pool_id), (NumberStatus::Active, None, None));
        joining.push(detached);
        given::<PhoneNumberState>(ID, &joining)
            .when(A::Membership(MembershipAction::CompleteAssociation { pool_id: POOL.into() }))
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::Conflict {
                        reason: ConflictReason::ResourceNotActive,
                        ..
                    }
                )
            });
    }

    #[test]
    fn events_round_trip_through_their_stored_parts() {
        let r = Rejection::conflict(ConflictReason::LastPhoneNumber, ResourceKind::Pool, POOL, "x");
        for e in [
            requested(),
            protect(true),
            E::Released { phone_number: "+1".into() },
            E::ReleaseRejected { reason: r },
        ] {
            let (t, p) = crate::domain::event_to_parts(&e).expect("split");
            let back: E = crate::domain::event_from_parts(&t, &p).expect("join");
            assert_eq!(back, e);
        }
        let (t, _) = crate::domain::event_to_parts(&E::ReleaseRejected {
            reason: Rejection::not_found(ResourceKind::PhoneNumber, ID),
        })
        .expect("split");
        assert_eq!(t, "ReleaseRejected");
    }

    // ---- RequestPhoneNumber with a PoolId ------------------------------------------------

    fn into_pool(message_type: MessageType) -> Option<PoolToJoin> {
        Some(PoolToJoin {
            pool_id: POOL.into(),
            message_type,
            settings: None,
        })
    }

    /// RequestPhoneNumber.PoolId: "The pool to associated with the phone number." and
    /// AssociateOriginationIdentity: "If the origination identity configuration doesn't match
    /// the pool's configuration, an error is returned." The refusal names the pool (ResourceType
    /// `pool`, ResourceId its id), and nothing is created.
    #[test]
    fn a_number_requested_into_a_pool_of_another_message_type_is_the_pools_conflict() {
        let refused = given::<PhoneNumberState>(ID, &[])
            .when(A::request(number(), into_pool(MessageType::Promotional)))
            .then_reject(|r| {
                matches!(r, Rejection::Conflict { reason: ConflictReason::MessageTypeMismatch, resource_type: ResourceType::Pool, resource_id, .. } if resource_id == POOL)
            });
        assert_eq!(
            refused,
            Rejection::conflict(
                ConflictReason::MessageTypeMismatch,
                ResourceKind::Pool,
                POOL,
                "has message type PROMOTIONAL, not TRANSACTIONAL"
            )
        );
    }

    /// The settings of a pool created from `number()`, with `edit` applied.
    fn pool_settings(edit: impl FnOnce(&mut SharedSettings)) -> SharedSettings {
        let mut settings = number().shared_settings().expect("a number has them");
        edit(&mut settings);
        settings
    }

    /// Each shared setting that differs, with the reason AWS names for it.
    fn mismatches() -> Vec<(SharedSettings, ConflictReason)> {
        vec![
            (
                pool_settings(|s| s.opt_out_list_name = "Other".into()),
                ConflictReason::OptOutListMismatch,
            ),
            (
                pool_settings(|s| s.self_managed_opt_outs_enabled = true),
                ConflictReason::SelfManagedOptOutsMismatch,
            ),
            (
                pool_settings(|s| {
                    s.two_way_enabled = true;
                    s.two_way_channel_arn = Some("arn:aws:sns:us-east-1:111122223333:inbound".into());
                }),
                ConflictReason::TwoWayConfigMismatch,
            ),
        ]
    }

    /// The phone-pool guide: "The configuration of every phone number that you add to a pool has
    /// to match the configuration of the first phone number that you specified when you created
    /// the pool. For example, if you create a pool that contains a phone number that has two-way
    /// messaging enabled, the other numbers that you add to the pool must also have two-way
    /// messaging enabled." AssociateOriginationIdentity: "If the origination identity
    /// configuration doesn't match the pool's configuration, an error is returned."
    #[test]
    fn a_number_joins_only_a_pool_of_its_settings() {
        let join = |settings: SharedSettings| {
            A::Membership(MembershipAction::BeginAssociation {
                pool_id: POOL.into(),
                pool_message_type: MessageType::Transactional,
                pool_settings: Some(settings),
                iso_country_code: None,
                client_token: None,
            })
        };
        given::<PhoneNumberState>(ID, &[requested()])
            .when(join(pool_settings(|_| {})))
            .then(&[E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() })]);
        for (settings, reason) in mismatches() {
            let refused = given::<PhoneNumberState>(ID, &[requested()])
                .when(join(settings))
                .then_reject(is_conflict(reason));
            assert!(refused.to_string().contains(POOL), "{refused}");
        }
        // Two-way on both, but another channel.
        let channel = |arn: &str| {
            pool_settings(|s| {
                s.two_way_enabled = true;
                s.two_way_channel_arn = Some(arn.into());
            })
        };
        let two_way = PhoneNumber {
            two_way_enabled: true,
            two_way_channel_arn: Some("arn:aws:sns:us-east-1:111122223333:a".into()),
            ..number()
        };
        let two_way_requested = E::PhoneNumberRequested(Box::new(two_way));
        given::<PhoneNumberState>(ID, std::slice::from_ref(&two_way_requested))
            .when(join(channel("arn:aws:sns:us-east-1:111122223333:b")))
            .then_reject(is_conflict(ConflictReason::TwoWayConfigMismatch));
        given::<PhoneNumberState>(ID, &[two_way_requested])
            .when(join(channel("arn:aws:sns:us-east-1:111122223333:a")))
            .then(&[E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() })]);
    }

    /// RequestPhoneNumber into a pool whose settings the number asked for does not share: the
    /// pool's conflict, before the number exists (as for another message type).
    #[test]
    fn a_number_requested_into_a_pool_of_other_settings_is_the_pools_conflict() {
        for (settings, reason) in mismatches() {
            let pool = PoolToJoin {
                settings: Some(settings),
                ..into_pool(MessageType::Transactional).expect("a pool")
            };
            given::<PhoneNumberState>(ID, &[])
                .when(A::request(number(), Some(pool)))
                .then_reject(|r| matches!(r, Rejection::Conflict { reason: got, resource_type: ResourceType::Pool, .. } if *got == reason));
        }
    }

    /// RequestPhoneNumber.PoolId: "The pool to associated with the phone number." A pool of the
    /// number's message type lets the number be created; it joins the pool by the association
    /// steps that follow, not by its creation. The number records the pool its request named.
    #[test]
    fn a_number_requested_into_a_pool_of_its_message_type_is_created_outside_the_pool() {
        let n = given::<PhoneNumberState>(ID, &[])
            .when(A::request(number(), into_pool(MessageType::Transactional)))
            .then(&[requested_into_pool()])
            .0
            .expect("state");
        assert_eq!((n.status, n.pool_id), (NumberStatus::Active, None));
        assert_eq!(n.requested_into_pool.as_deref(), Some(POOL));
    }

    /// An existing stream is refused as before, whatever the pool.
    #[test]
    fn a_request_on_an_existing_stream_is_refused_before_looking_at_the_pool() {
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::request(number(), into_pool(MessageType::Promotional)))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyExists));
    }

    // ---- AssociateOriginationIdentity retried with a ClientToken -----------------------

    fn begin_with_token(pool_id: &str, iso: Option<&str>) -> A {
        A::Membership(MembershipAction::BeginAssociation {
            pool_id: pool_id.into(),
            pool_message_type: MessageType::Transactional,
            pool_settings: None,
            iso_country_code: iso.map(String::from),
            client_token: Some("token-1".into()),
        })
    }

    /// ClientToken: "Unique, case-sensitive identifier that you provide to ensure the idempotency
    /// of the request." A token alone does not make a request a retry (a new token is a new
    /// request): a number already in the pool is `RESOURCE_ALREADY_ASSOCIATED` whatever token
    /// comes with it. The shell answers a true retry (the same step with the same token, which
    /// succeeded) from the number's history without asking the decider.
    #[test]
    fn an_association_with_a_client_token_of_a_number_in_the_pool_is_already_associated() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(begin_with_token(POOL, None))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyAssociated));
    }

    /// Nor does a token excuse other input: naming another country is refused as ever.
    #[test]
    fn an_association_with_a_client_token_is_checked_as_any() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(begin_with_token(POOL, Some("GB")))
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::Validation {
                        reason: ValidationReason::CountryCodeMismatch,
                        ..
                    }
                )
            });
    }

    /// ClientToken: "If you don't specify a client token, a randomly generated token is used for
    /// the request": without one, a repeat is a new request, and the number is already there.
    #[test]
    fn a_repeated_association_without_a_client_token_is_already_associated() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(begin(MessageType::Transactional))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyAssociated));
    }

    /// AssociateOriginationIdentity: "If the origination identity is a phone number and is
    /// already associated with another pool, an error is returned." A client token does not
    /// change that.
    #[test]
    fn a_client_token_does_not_excuse_membership_of_another_pool() {
        given::<PhoneNumberState>(ID, &in_pool())
            .when(begin_with_token("pool-ffffffffffffffffffffffffffffffff", None))
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
    }

    /// ConflictException: "... if you're trying to perform more than one operation on the same
    /// resource at the same time". A number still joining, or leaving, that pool has not
    /// succeeded in joining it: a retry is refused, not answered as done.
    #[test]
    fn a_retry_while_the_number_is_joining_or_leaving_the_pool_is_a_conflict() {
        given::<PhoneNumberState>(
            ID,
            &[
                requested(),
                E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() }),
            ],
        )
        .when(begin_with_token(POOL, None))
        .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
        let mut leaving = in_pool();
        leaving.push(E::Membership(MembershipEvent::PoolDisassociationStarted { pool_id: POOL.into() }));
        given::<PhoneNumberState>(ID, &leaving)
            .when(begin_with_token(POOL, None))
            .then_reject(is_conflict(ConflictReason::PhoneNumberAssociatedToPool));
    }

    /// A first attempt with a client token starts the join like any other.
    #[test]
    fn a_first_association_with_a_client_token_starts_the_join() {
        given::<PhoneNumberState>(ID, &[requested()])
            .when(begin_with_token(POOL, None))
            .then(&[E::Membership(MembershipEvent::PoolAssociationStarted { pool_id: POOL.into() })]);
    }

    // ---- commands recorded by older versions ----------------------------------------------

    /// Every phone-number command of the schema-v1 log (recorded before `IntoPool` and
    /// `ClientToken` existed) reads back as today's action, and today's actions without them
    /// are recorded exactly as those were.
    #[test]
    fn commands_recorded_by_older_versions_read_back_unchanged() {
        const LOG: &str = include_str!("../../tests/fixtures/schema-v1.jsonl");
        let mut seen = Vec::new();
        for line in LOG.lines() {
            let envelope: serde_json::Value = serde_json::from_str(line).expect("envelope");
            if !envelope["StreamId"].as_str().is_some_and(|s| s.starts_with("phone-")) {
                continue;
            }
            let input = &envelope["CommandInput"];
            let action: A = serde_json::from_value(input.clone()).expect("a recorded command");
            match &action {
                A::Request { number, into_pool } => {
                    assert_eq!(*into_pool, None);
                    assert_eq!(serde_json::to_value(number).expect("number"), input["Input"]);
                }
                A::Membership(MembershipAction::BeginAssociation { client_token, .. }) => assert_eq!(*client_token, None),
                _ => {}
            }
            assert_eq!(&serde_json::to_value(&action).expect("serialize"), input);
            seen.push(action.name());
        }
        for name in [
            "Request",
            "Update",
            "Release",
            "BeginAssociation",
            "CompleteAssociation",
            "BeginDisassociation",
        ] {
            assert!(seen.contains(&name), "the fixture has a {name}");
        }
    }

    #[test]
    fn new_command_members_round_trip() {
        for action in [
            A::request(number(), into_pool(MessageType::Promotional)),
            begin_with_token(POOL, Some("US")),
        ] {
            let json = serde_json::to_value(&action).expect("serialize");
            let back: A = serde_json::from_value(json.clone()).expect("deserialize");
            assert_eq!(back, action, "{json}");
        }
        let json = serde_json::to_value(A::request(number(), into_pool(MessageType::Promotional))).expect("serialize");
        assert_eq!(json["Input"]["IntoPool"]["MessageType"], "PROMOTIONAL");
        assert_eq!(json["Input"]["PhoneNumberId"], ID);
    }

    fn message(channel: crate::domain::message::Channel, dry_run: bool) -> OutboundMessage {
        OutboundMessage {
            dry_run,
            ..OutboundMessage::example(ID, channel)
        }
    }

    fn send(m: OutboundMessage, opted_out_on: Option<&str>) -> A {
        A::SendMessage {
            message: Box::new(m),
            opted_out_on: opted_out_on.map(String::from),
        }
    }

    /// SendTextMessage from a live number with SMS: accepted, as an event on the number.
    #[test]
    fn a_message_is_sent_from_a_live_number() {
        use crate::domain::message::Channel;
        let m = message(Channel::Text, false);
        given::<PhoneNumberState>(ID, &[requested()])
            .when(send(m.clone(), None))
            .then(&[E::MessageSent(Box::new(m))]);
        // A dry run "is checked and validated, but isn't sent": nothing recorded.
        given::<PhoneNumberState>(ID, &[requested()])
            .when(send(message(Channel::Text, true), None))
            .then(&[]);
    }

    /// No message is accepted from a number after its Released.
    #[test]
    fn no_message_from_a_released_number() {
        use crate::domain::message::Channel;
        let released = E::Released {
            phone_number: number().phone_number,
        };
        given::<PhoneNumberState>(ID, &[requested(), released])
            .when(send(message(Channel::Text, false), None))
            .then_reject(|r| matches!(r, Rejection::NotFound { .. }));
    }

    /// A voice message needs VOICE, a media message MMS; a PROMOTIONAL message does not leave a
    /// TRANSACTIONAL number.
    #[test]
    fn capabilities_and_message_type_must_fit() {
        use crate::domain::message::Channel;
        given::<PhoneNumberState>(ID, &[requested()])
            .when(send(message(Channel::Voice, false), None))
            .then_reject(is_conflict(ConflictReason::NumberCapabilitiesMismatch));
        given::<PhoneNumberState>(ID, &[requested()])
            .when(send(message(Channel::Media, false), None))
            .then_reject(is_conflict(ConflictReason::NumberCapabilitiesMismatch));
        let mut promotional = message(Channel::Text, false);
        promotional.message_type = Some(MessageType::Promotional);
        given::<PhoneNumberState>(ID, &[requested()])
            .when(send(promotional, None))
            .then_reject(is_conflict(ConflictReason::MessageTypeMismatch));
    }

    /// A destination on the opt-out list in force is refused (DESTINATION_PHONE_NUMBER_OPTED_OUT)
    /// and the refusal is recorded, unless the number manages opt-outs itself.
    #[test]
    fn an_opted_out_destination_is_refused_unless_opt_outs_are_self_managed() {
        use crate::domain::message::Channel;
        let refusal = given::<PhoneNumberState>(ID, &[requested()])
            .when(send(message(Channel::Text, false), Some("Default")))
            .then_reject(|r| {
                matches!(r, Rejection::Conflict { reason: ConflictReason::DestinationPhoneNumberOptedOut, resource_type: ResourceType::OptedOutNumber, resource_id, .. } if resource_id == "+12065550199")
            });
        assert!(matches!(
            PhoneNumberState::rejected(&send(message(Channel::Text, false), Some("Default")), &refusal),
            E::MessageRejected { .. }
        ));
        let self_managed = E::PhoneNumberUpdated(PhoneNumberChanges {
            self_managed_opt_outs_enabled: Some(true),
            ..Default::default()
        });
        let m = message(Channel::Text, false);
        given::<PhoneNumberState>(ID, &[requested(), self_managed])
            .when(send(m.clone(), Some("Default")))
            .then(&[E::MessageSent(Box::new(m))]);
    }

    /// A released number is not found whatever list its update names: the number is looked
    /// for first.
    #[test]
    fn an_update_of_a_released_number_naming_a_missing_list_is_not_found() {
        let released = [
            requested(),
            E::Released {
                phone_number: "+12065550100".into(),
            },
        ];
        given::<PhoneNumberState>(ID, &released)
            .when(A::UpdateNamingList {
                changes: PhoneNumberChanges {
                    opt_out_list_name: Some("gone".into()),
                    ..Default::default()
                },
                list_exists: false,
            })
            .then_reject(is_not_found);
    }

    /// UpdatePhoneNumber naming an opt-out list that does not exist: refused, and recorded.
    #[test]
    fn an_update_naming_a_missing_list_is_refused() {
        let changes = PhoneNumberChanges {
            opt_out_list_name: Some("gone".into()),
            ..Default::default()
        };
        let refusal = given::<PhoneNumberState>(ID, &[requested()])
            .when(A::UpdateNamingList {
                changes: changes.clone(),
                list_exists: false,
            })
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::NotFound {
                        resource_type: ResourceType::OptOutList,
                        ..
                    }
                )
            });
        assert!(matches!(
            PhoneNumberState::rejected(
                &A::UpdateNamingList {
                    changes: changes.clone(),
                    list_exists: false
                },
                &refusal
            ),
            E::UpdateRejected { .. }
        ));
        given::<PhoneNumberState>(ID, &[requested()])
            .when(A::UpdateNamingList {
                changes: changes.clone(),
                list_exists: true,
            })
            .then(&[E::PhoneNumberUpdated(changes)]);
    }

    /// Keywords: an end user's message that is a keyword is recorded with it (its message is the
    /// automatic response); a number's own keywords come before its pool's; a number that
    /// manages its own opt-outs ("you're responsible for tracking and honoring opt-out requests")
    /// gets STOP as a plain message.
    #[test]
    fn an_end_users_message_is_recorded_with_its_keyword() {
        use crate::domain::message::InboundMessage;
        let message = |body: &str| InboundMessage {
            message_id: "in-1".into(),
            origination_number: "+12065550199".into(),
            destination_phone_number: "+12065550100".into(),
            message_body: body.into(),
        };
        let receive = |body: &str, pool_keywords: BTreeMap<String, Keyword>| A::ReceiveMessage {
            message: Box::new(message(body)),
            pool_keywords,
        };
        let stop = keywords::defaults()[1].clone();
        given::<PhoneNumberState>(ID, &[requested()])
            .when(receive("stop", BTreeMap::new()))
            .then(&[E::MessageReceived {
                message: Box::new(message("stop")),
                keyword: Some(stop),
            }]);
        let hours = Keyword {
            keyword: "HOURS".into(),
            keyword_message: "9 to 5".into(),
            keyword_action: KeywordAction::AutomaticResponse,
        };
        let from_pool: BTreeMap<String, Keyword> = [("HOURS".to_string(), hours.clone())].into_iter().collect();
        given::<PhoneNumberState>(ID, &[requested()])
            .when(receive("Hours", from_pool))
            .then(&[E::MessageReceived {
                message: Box::new(message("Hours")),
                keyword: Some(hours),
            }]);
        let self_managed = E::PhoneNumberUpdated(PhoneNumberChanges {
            self_managed_opt_outs_enabled: Some(true),
            ..Default::default()
        });
        given::<PhoneNumberState>(ID, &[requested(), self_managed])
            .when(receive("STOP", BTreeMap::new()))
            .then(&[E::MessageReceived {
                message: Box::new(message("STOP")),
                keyword: None,
            }]);
        given::<PhoneNumberState>(ID, &[])
            .when(receive("STOP", BTreeMap::new()))
            .then_reject(is_not_found);
    }
}
