//! The phone-number aggregate: its state, commands, events and the decider that holds the
//! ReleasePhoneNumber rules (and those of update and pool membership).
//!
//! Pool membership changes in two steps so that a release racing an association can never leave
//! a released number in a pool: the number first enters `ASSOCIATING` (or `DISASSOCIATING`) in
//! its own stream, which blocks a release; only then does the pool record the change, and the
//! number completes (or aborts) the step. Every command goes through the number's actor, so
//! these steps and a release are strictly ordered per number.

use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::types::{ConflictReason, MessageType, NumberCapability, NumberStatus, NumberType, Tag, ValidationReason};
use super::{ActionName, Aggregate, Command, Rejection};

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
    pub created_timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

impl PhoneNumber {
    /// Whether the number is entering or leaving a pool right now.
    pub fn is_changing_pools(&self) -> bool {
        matches!(self.status, NumberStatus::Associating | NumberStatus::Disassociating)
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhoneNumberState(pub Option<PhoneNumber>);

/// What can be asked of a phone number.
#[derive(Debug, Clone, PartialEq)]
pub enum PhoneNumberAction {
    /// Start the stream with a number chosen by the shell (id, E.164 number, price).
    Request(Box<PhoneNumber>),
    Update(PhoneNumberChanges),
    Release,
    /// First step of joining a pool; `pool_message_type` is the pool's, checked here.
    BeginAssociation { pool_id: String, pool_message_type: MessageType, iso_country_code: Option<String> },
    CompleteAssociation { pool_id: String },
    AbortAssociation { pool_id: String, reason: Rejection },
    BeginDisassociation { pool_id: String, iso_country_code: Option<String> },
    CompleteDisassociation { pool_id: String },
    AbortDisassociation { pool_id: String, reason: Rejection },
    /// The pool was deleted: leave it, whatever step the number was in.
    DetachFromDeletedPool { pool_id: String },
}

impl ActionName for PhoneNumberAction {
    fn name(&self) -> &'static str {
        match self {
            PhoneNumberAction::Request(_) => "Request",
            PhoneNumberAction::Update(_) => "Update",
            PhoneNumberAction::Release => "Release",
            PhoneNumberAction::BeginAssociation { .. } => "BeginAssociation",
            PhoneNumberAction::CompleteAssociation { .. } => "CompleteAssociation",
            PhoneNumberAction::AbortAssociation { .. } => "AbortAssociation",
            PhoneNumberAction::BeginDisassociation { .. } => "BeginDisassociation",
            PhoneNumberAction::CompleteDisassociation { .. } => "CompleteDisassociation",
            PhoneNumberAction::AbortDisassociation { .. } => "AbortDisassociation",
            PhoneNumberAction::DetachFromDeletedPool { .. } => "DetachFromDeletedPool",
        }
    }
}

/// What happened to a phone number. Past tense; never changed once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Payload", rename_all_fields = "PascalCase")]
pub enum PhoneNumberEvent {
    PhoneNumberRequested(Box<PhoneNumber>),
    PhoneNumberUpdated(PhoneNumberChanges),
    Released { phone_number: String },
    ReleaseRejected { reason: Rejection },
    UpdateRejected { reason: Rejection },
    PoolAssociationStarted { pool_id: String },
    AssociatedWithPool { pool_id: String },
    PoolAssociationAborted { pool_id: String, reason: Rejection },
    AssociationRejected { pool_id: String, reason: Rejection },
    PoolDisassociationStarted { pool_id: String },
    DisassociatedFromPool { pool_id: String },
    PoolDisassociationAborted { pool_id: String, reason: Rejection },
    DisassociationRejected { pool_id: String, reason: Rejection },
    DetachedFromDeletedPool { pool_id: String },
    /// A refused internal step of a pool change (kept so the audit trail has no blind spot).
    CommandRejected { command: String, reason: Rejection },
}

const KIND: ResourceKind = ResourceKind::PhoneNumber;

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
}

fn check_country(n: &PhoneNumber, iso: &Option<String>) -> Result<(), Rejection> {
    match iso {
        Some(iso) if *iso != n.iso_country_code => Err(Rejection::validation(
            ValidationReason::CountryCodeMismatch,
            "IsoCountryCode",
            format!("{} is a {} number, not {iso}", n.phone_number_id, n.iso_country_code),
        )),
        _ => Ok(()),
    }
}

impl Aggregate for PhoneNumberState {
    type Action = PhoneNumberAction;
    type Event = PhoneNumberEvent;
    const KIND: ResourceKind = KIND;

    fn decide(&self, command: &Command<PhoneNumberAction>) -> Result<Vec<PhoneNumberEvent>, Rejection> {
        use PhoneNumberAction as A;
        use PhoneNumberEvent as E;
        let conflict = |reason, id: &str, why: &str| Err(Rejection::conflict(reason, KIND, id, why));
        match &command.action {
            A::Request(number) => match &self.0 {
                None => Ok(vec![E::PhoneNumberRequested(number.clone())]),
                Some(n) => conflict(ConflictReason::ResourceAlreadyExists, &n.phone_number_id, "already exists"),
            },
            A::Update(changes) => {
                let n = self.live(command)?;
                let two_way = changes.two_way_enabled.unwrap_or(n.two_way_enabled);
                let channel = changes.two_way_channel_arn.as_ref().or(n.two_way_channel_arn.as_ref());
                if two_way && channel.is_none() {
                    return Err(Rejection::validation(
                        ValidationReason::TwoWayChannelNotPresent,
                        "TwoWayChannelArn",
                        "TwoWayEnabled requires a TwoWayChannelArn",
                    ));
                }
                Ok(vec![E::PhoneNumberUpdated(changes.clone())])
            }
            A::Release => {
                let n = self.live(command)?;
                if n.deletion_protection_enabled {
                    return conflict(ConflictReason::DeletionProtectionEnabled, &n.phone_number_id, "has deletion protection enabled");
                }
                if let Some(pool) = n.pool_id.as_ref().or(n.pending_pool_id.as_ref()) {
                    return conflict(
                        ConflictReason::PhoneNumberAssociatedToPool,
                        &n.phone_number_id,
                        &format!("is associated with pool {pool}"),
                    );
                }
                Ok(vec![E::Released { phone_number: n.phone_number.clone() }])
            }
            A::BeginAssociation { pool_id, pool_message_type, iso_country_code } => {
                let n = self.live(command)?;
                check_country(n, iso_country_code)?;
                if n.is_changing_pools() {
                    let pending = n.pending_pool_id.as_deref().unwrap_or_default();
                    return conflict(ConflictReason::PhoneNumberAssociatedToPool, &n.phone_number_id, &format!("is changing pools ({pending})"));
                }
                match &n.pool_id {
                    Some(p) if p == pool_id => {
                        return conflict(ConflictReason::ResourceAlreadyAssociated, &n.phone_number_id, &format!("is already associated with pool {p}"));
                    }
                    Some(p) => {
                        return conflict(ConflictReason::PhoneNumberAssociatedToPool, &n.phone_number_id, &format!("is associated with pool {p}"));
                    }
                    None => {}
                }
                if n.message_type != *pool_message_type {
                    return conflict(
                        ConflictReason::MessageTypeMismatch,
                        &n.phone_number_id,
                        &format!("has message type {} but pool {pool_id} has {pool_message_type}", n.message_type),
                    );
                }
                Ok(vec![E::PoolAssociationStarted { pool_id: pool_id.clone() }])
            }
            A::CompleteAssociation { pool_id } => {
                let n = self.live(command)?;
                if n.status == NumberStatus::Associating && n.pending_pool_id.as_ref() == Some(pool_id) {
                    Ok(vec![E::AssociatedWithPool { pool_id: pool_id.clone() }])
                } else {
                    conflict(ConflictReason::ResourceNotActive, &n.phone_number_id, &format!("is not joining pool {pool_id}"))
                }
            }
            A::AbortAssociation { pool_id, reason } => match &self.0 {
                Some(n) if n.status == NumberStatus::Associating && n.pending_pool_id.as_ref() == Some(pool_id) => {
                    Ok(vec![E::PoolAssociationAborted { pool_id: pool_id.clone(), reason: reason.clone() }])
                }
                // Nothing to undo: aborting is idempotent.
                _ => Ok(vec![]),
            },
            A::BeginDisassociation { pool_id, iso_country_code } => {
                let n = self.live(command)?;
                check_country(n, iso_country_code)?;
                if n.is_changing_pools() {
                    let pending = n.pending_pool_id.as_deref().unwrap_or_default();
                    return conflict(ConflictReason::PhoneNumberAssociatedToPool, &n.phone_number_id, &format!("is changing pools ({pending})"));
                }
                if n.pool_id.as_ref() != Some(pool_id) {
                    return conflict(
                        ConflictReason::PhoneNumberNotAssociatedToPool,
                        &n.phone_number_id,
                        &format!("is not associated with pool {pool_id}"),
                    );
                }
                Ok(vec![E::PoolDisassociationStarted { pool_id: pool_id.clone() }])
            }
            A::CompleteDisassociation { pool_id } => {
                let n = self.live(command)?;
                if n.status == NumberStatus::Disassociating && n.pending_pool_id.as_ref() == Some(pool_id) {
                    Ok(vec![E::DisassociatedFromPool { pool_id: pool_id.clone() }])
                } else if n.pool_id.is_none() {
                    // The pool was deleted meanwhile and already let the number go.
                    Ok(vec![])
                } else {
                    conflict(ConflictReason::ResourceNotActive, &n.phone_number_id, &format!("is not leaving pool {pool_id}"))
                }
            }
            A::AbortDisassociation { pool_id, reason } => match &self.0 {
                Some(n) if n.status == NumberStatus::Disassociating && n.pending_pool_id.as_ref() == Some(pool_id) => {
                    Ok(vec![E::PoolDisassociationAborted { pool_id: pool_id.clone(), reason: reason.clone() }])
                }
                _ => Ok(vec![]),
            },
            A::DetachFromDeletedPool { pool_id } => match &self.0 {
                Some(n) if n.pool_id.as_ref() == Some(pool_id) => {
                    Ok(vec![E::DetachedFromDeletedPool { pool_id: pool_id.clone() }])
                }
                _ => Ok(vec![]),
            },
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
                if let Some(v) = c.deletion_protection_enabled {
                    n.deletion_protection_enabled = v;
                }
                if let Some(v) = c.international_sending_enabled {
                    n.international_sending_enabled = v;
                }
                if let Some(v) = &c.opt_out_list_name {
                    n.opt_out_list_name = v.clone();
                }
                if let Some(v) = c.self_managed_opt_outs_enabled {
                    n.self_managed_opt_outs_enabled = v;
                }
                if let Some(v) = &c.two_way_channel_arn {
                    n.two_way_channel_arn = Some(v.clone());
                }
                if let Some(v) = &c.two_way_channel_role {
                    n.two_way_channel_role = Some(v.clone());
                }
                if let Some(v) = c.two_way_enabled {
                    n.two_way_enabled = v;
                }
            }
            E::Released { .. } => n.status = NumberStatus::Deleted,
            E::PoolAssociationStarted { pool_id } => {
                n.status = NumberStatus::Associating;
                n.pending_pool_id = Some(pool_id.clone());
            }
            E::AssociatedWithPool { pool_id } => {
                n.status = NumberStatus::Active;
                n.pool_id = Some(pool_id.clone());
                n.pending_pool_id = None;
            }
            E::PoolDisassociationStarted { pool_id } => {
                n.status = NumberStatus::Disassociating;
                n.pending_pool_id = Some(pool_id.clone());
            }
            E::PoolAssociationAborted { .. } | E::PoolDisassociationAborted { .. } => {
                n.status = NumberStatus::Active;
                n.pending_pool_id = None;
            }
            E::DisassociatedFromPool { .. } | E::DetachedFromDeletedPool { .. } => {
                n.status = NumberStatus::Active;
                n.pool_id = None;
                n.pending_pool_id = None;
            }
            E::ReleaseRejected { .. }
            | E::UpdateRejected { .. }
            | E::AssociationRejected { .. }
            | E::DisassociationRejected { .. }
            | E::CommandRejected { .. } => {}
        }
        PhoneNumberState(Some(n))
    }

    fn rejected(action: &PhoneNumberAction, rejection: &Rejection) -> PhoneNumberEvent {
        use PhoneNumberAction as A;
        use PhoneNumberEvent as E;
        let reason = rejection.clone();
        match action {
            A::Release => E::ReleaseRejected { reason },
            A::Update(_) => E::UpdateRejected { reason },
            A::BeginAssociation { pool_id, .. } => E::AssociationRejected { pool_id: pool_id.clone(), reason },
            A::BeginDisassociation { pool_id, .. } => E::DisassociationRejected { pool_id: pool_id.clone(), reason },
            other => E::CommandRejected { command: other.name().to_string(), reason },
        }
    }
}
