//! Pool members of either kind: a phone number or a sender id. The pool workflows
//! (`pools`, `recovery`) drive a member's membership steps through this one type, whichever
//! aggregate the member is; the rules themselves are shared (`domain::membership`).

use super::error::not_found;
use super::{LifecycleService, ServiceError};
use crate::domain::ids::is_sender_id;
use crate::domain::membership::{Member, MembershipAction};
use crate::domain::phone_number::PhoneNumber;
use crate::domain::pool::PoolMember;
use crate::domain::pool_change::{finish_interrupted, pool_to_ask};
use crate::domain::sender_id::{self, SenderId};
use crate::domain::types::MessageType;
use crate::domain::{CommandMeta, ResourceKind, Scope};
use crate::projection::owner_key;

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

    /// Whether it is settled in exactly `pool_id` (see [`Member::is_in_pool`]).
    pub fn is_in_pool(&self, pool_id: &str) -> bool {
        with_member!(self, m => m.is_in_pool(pool_id))
    }

    /// The pool whose stream decides how an interrupted change of it ends.
    pub fn pool_to_ask(&self) -> Option<&str> {
        with_member!(self, m => pool_to_ask(m.as_ref()))
    }

    /// The step that finishes its interrupted change (see `domain::pool_change`).
    pub fn finish_interrupted(&self, pool_holds_it: bool) -> Option<MembershipAction> {
        with_member!(self, m => finish_interrupted(m.as_ref(), pool_holds_it))
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
            },
            Identity::SenderId(s) => PoolMember {
                origination_identity: s.id.clone(),
                origination_identity_arn: s.sender_id_arn.clone(),
                iso_country_code: s.iso_country_code.clone(),
                number_capabilities: sender_id::CAPABILITIES.to_vec(),
                phone_number: String::new(),
                message_type: pool_message_type,
                sender_id: Some(s.sender_id.clone()),
            },
        }
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
        member.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
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
