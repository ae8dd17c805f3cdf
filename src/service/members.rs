//! Pool members of either kind: a phone number or a sender id. The pool workflows
//! (`pools`, `recovery`) drive a member's membership steps through this one type, whichever
//! aggregate the member is; the rules themselves are shared (`domain::membership`).

use super::error::not_found;
use super::{Activation, LifecycleService, ServiceError};
use crate::actors::{Execute, Premise};
use crate::codec::decode_event;
use crate::domain::ids::is_sender_id;
use crate::domain::membership::{Member, MembershipAction, MembershipEvent, Standing};
use crate::domain::phone_number::PhoneNumber;
use crate::domain::phone_number::PhoneNumberState;
use crate::domain::pool::PoolMember;
use crate::domain::pool_change::{finish_interrupted, pools_to_ask};
use crate::domain::sender_id::SenderIdState;
use crate::domain::sender_id::{self, SenderId};
use crate::domain::types::MessageType;
use crate::domain::{Aggregate, CommandMeta, ResourceKind, Scope};
use crate::projection::owner_key;
use crate::store::EventEnvelope;

/// A pool's member (or one about to be), as it is after one of its steps.
#[derive(Debug, Clone)]
pub enum Identity {
    Number(Box<PhoneNumber>),
    SenderId(Box<SenderId>),
}

/// Calls `$body` with the member inside `$identity`, whichever kind it is.
macro_rules! with_member {
    ($identity:expr, $m:ident => $body:expr) => {
        match $identity {
            Identity::Number($m) => $body,
            Identity::SenderId($m) => $body,
        }
    };
}

impl Identity {
    /// Its stream id (the key it has among a pool's members).
    pub fn member_id(&self) -> &str {
        with_member!(self, m => m.member_id())
    }

    /// What an output calls it: a phone number's id, a sender id's string.
    pub fn origination_identity(&self) -> &str {
        match self {
            Identity::Number(n) => &n.phone_number_id,
            Identity::SenderId(s) => &s.sender_id,
        }
    }

    pub fn arn(&self) -> &str {
        match self {
            Identity::Number(n) => &n.phone_number_arn,
            Identity::SenderId(s) => &s.sender_id_arn,
        }
    }

    pub fn iso_country_code(&self) -> &str {
        with_member!(self, m => m.iso_country_code())
    }

    pub fn scope(&self) -> Scope {
        with_member!(self, m => Scope::new(&m.account, &m.region))
    }

    /// Where it stands with `pool_id`, if anywhere.
    pub fn standing(&self, pool_id: &str) -> Option<Standing> {
        with_member!(self, m => m.standing(pool_id))
    }

    /// Whether it is joining or leaving `pool_id` right now.
    pub fn is_changing(&self, pool_id: &str) -> bool {
        self.standing(pool_id).is_some_and(Standing::is_changing)
    }

    /// Whether it is settled in exactly `pool_id` (see [`Member::is_in_pool`]).
    pub fn is_in_pool(&self, pool_id: &str) -> bool {
        with_member!(self, m => m.is_in_pool(pool_id))
    }

    /// The pools whose streams decide how its interrupted changes end.
    pub fn pools_to_ask(&self) -> Vec<String> {
        with_member!(self, m => pools_to_ask(m.as_ref()).into_iter().map(String::from).collect())
    }

    /// The step that finishes its interrupted change of `pool_id` (see `domain::pool_change`).
    pub fn finish_interrupted(&self, pool_id: &str, pool_holds_it: bool) -> Option<MembershipAction> {
        with_member!(self, m => finish_interrupted(m.as_ref(), pool_id, pool_holds_it))
    }

    /// The pool's step that records it joining: its record, with the settings it must share
    /// with the pool (see [`PoolMember::shared_settings`]).
    pub fn joining(&self, pool_message_type: MessageType) -> PoolMember {
        PoolMember {
            shared_settings: with_member!(self, m => m.shared_settings()),
            ..self.pool_member(pool_message_type)
        }
    }

    /// The pool's record of it, as a member of a pool of `pool_message_type` (which its
    /// membership step checked it sends).
    pub fn pool_member(&self, pool_message_type: MessageType) -> PoolMember {
        match self {
            Identity::Number(n) => PoolMember {
                origination_identity: n.phone_number_id.clone(),
                origination_identity_arn: n.phone_number_arn.clone(),
                iso_country_code: n.iso_country_code.clone(),
                number_capabilities: n.number_capabilities.clone(),
                phone_number: n.phone_number.clone(),
                message_type: n.message_type,
                sender_id: None,
                shared_settings: None,
            },
            Identity::SenderId(s) => PoolMember {
                origination_identity: s.id.clone(),
                origination_identity_arn: s.sender_id_arn.clone(),
                iso_country_code: s.iso_country_code.clone(),
                number_capabilities: sender_id::CAPABILITIES.to_vec(),
                phone_number: String::new(),
                message_type: pool_message_type,
                sender_id: Some(s.sender_id.clone()),
                shared_settings: None,
            },
        }
    }
}

/// The pool a stored membership step of a member's stream is about (the caller has told it is
/// one by its type).
pub(super) fn step_pool(e: &EventEnvelope) -> Result<String, ServiceError> {
    Ok(decode_event::<MembershipEvent>(e)?.pool_id().to_string())
}

/// `action`, decided only on the aggregate as it stands at `version` (else
/// `ExecuteError::Stale`: it has moved on since the caller read it).
pub(super) fn decided_at<A: Aggregate>(meta: &CommandMeta, action: A::Action, version: u64) -> Execute<A> {
    let premise: Premise<A> = std::sync::Arc::new(move |_: &A, now: u64| now == version);
    Execute {
        meta: meta.clone(),
        action,
        counter_limits: vec![],
        premise: Some(premise),
        otherwise: None,
    }
}

impl LifecycleService {
    /// The stream of the caller's phone number or sender id that an `OriginationIdentity` names
    /// (a phone number by id or ARN; a sender id by ARN, or by its string with `iso`).
    pub(super) async fn member_stream(&self, scope: &Scope, identity: &str, iso: Option<&str>) -> Result<String, ServiceError> {
        let sender = ResourceKind::of_arn(identity) == Some(ResourceKind::SenderId) || is_sender_id(identity);
        if !sender {
            return self.owned(ResourceKind::PhoneNumber, scope, identity).await;
        }
        let id = Self::sender_id_stream(scope, identity, iso)?;
        match self.store.index_get_latest(&owner_key(scope, ResourceKind::SenderId, &id)).await? {
            Some(_) => Ok(id),
            None => Err(not_found(ResourceKind::SenderId, identity)),
        }
    }

    /// The member whose stream is `id`, as it is now.
    pub(super) async fn member_now(&self, id: &str) -> Result<Identity, ServiceError> {
        let member = if ResourceKind::SenderId.is_id(id) {
            Self::state(&self.sender_ids, id)
                .await?
                .live()
                .cloned()
                .map(|s| Identity::SenderId(Box::new(s)))
        } else {
            Self::state(&self.numbers, id).await?.0.map(|n| Identity::Number(Box::new(n)))
        };
        member.ok_or_else(|| not_found(ResourceKind::of_member(id), id))
    }

    /// The member whose stream is `id` as the log has it, the version it is at, and, if it
    /// stands with `pool_id` at all, when the request that began its latest change of that pool
    /// began (its first step's time, the time a fence compares): a change still under way, or
    /// one done (a member in the pool by a join begun after a fence is not the fence's to
    /// settle, though the pool as the fence left it did not hold it yet).
    pub(super) async fn member_in_log(&self, id: &str, pool_id: &str) -> Result<(Identity, u64, Option<u64>), ServiceError> {
        let store = &*self.store;
        let (member, version) = if ResourceKind::SenderId.is_id(id) {
            let loaded = crate::rehydrate::load_state::<SenderIdState>(store, id).await?;
            (loaded.state.0.map(|s| Identity::SenderId(Box::new(s))), loaded.version)
        } else {
            let loaded = crate::rehydrate::load_state::<PhoneNumberState>(store, id).await?;
            (loaded.state.0.map(|n| Identity::Number(Box::new(n))), loaded.version)
        };
        let member = member.ok_or_else(|| not_found(ResourceKind::of_member(id), id))?;
        let begun_ms = match member.standing(pool_id) {
            Some(_) => self.last_change_begun_ms(id, pool_id, Some(version)).await?,
            None => None,
        };
        Ok((member, version, begun_ms))
    }

    /// When the last change of `pool_id` of the member whose stream is `id` began (its first
    /// step's time), looking back from version `until` (its head when `None`): `None` if it
    /// never began one.
    pub(super) async fn last_change_begun_ms(&self, id: &str, pool_id: &str, mut until: Option<u64>) -> Result<Option<u64>, ServiceError> {
        // The first step is usually the last event or close to it, but refusals, sends and
        // inbound messages are recorded after it meanwhile, as many as clients make: looked for
        // a few events at a time, then more and more, not a long page at every look (each
        // event of a clustered log is a read of its own).
        let mut page_size = 8;
        while until != Some(0) {
            let page = self.last_events(id, until, page_size).await?;
            // A sender id changes several pools at once: the first step of this pool's change.
            let begun = page
                .iter()
                .rev()
                .filter(|e| matches!(e.event_type.as_str(), "PoolAssociationStarted" | "PoolDisassociationStarted"));
            for e in begun {
                if step_pool(e)? == pool_id {
                    return Ok(Some(e.timestamp_ms));
                }
            }
            until = Some(page.first().map_or(0, |e| e.version.saturating_sub(1)));
            page_size = (page_size * 8).min(512);
        }
        Ok(None)
    }

    /// Runs a membership step on the member whose stream is `id`, only if the member is still at
    /// `version` when the step is decided (else `ExecuteError::Stale`: it has moved on).
    pub(super) async fn member_step_at(
        &self,
        meta: &CommandMeta,
        id: &str,
        step: MembershipAction,
        version: u64,
    ) -> Result<Identity, ServiceError> {
        if ResourceKind::SenderId.is_id(id) {
            let command = decided_at::<SenderIdState>(meta, step.into(), version);
            let state = self.execute_command(&self.sender_ids, id, Activation::Existing, command).await?;
            let sender_id = state.0.ok_or_else(|| not_found(ResourceKind::SenderId, id))?;
            Ok(Identity::SenderId(Box::new(sender_id)))
        } else {
            let command = decided_at::<PhoneNumberState>(meta, step.into(), version);
            let state = self.execute_command(&self.numbers, id, Activation::Existing, command).await?;
            let number = state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))?;
            Ok(Identity::Number(Box::new(number)))
        }
    }

    /// Runs a membership step on the member whose stream is `id`.
    pub(super) async fn member_step(&self, meta: &CommandMeta, id: &str, step: MembershipAction) -> Result<Identity, ServiceError> {
        if ResourceKind::SenderId.is_id(id) {
            Ok(Identity::SenderId(Box::new(self.sender_id(meta, id, step.into()).await?)))
        } else {
            Ok(Identity::Number(Box::new(self.number(meta, id, step.into()).await?)))
        }
    }
}
