//! Sender-id workflows: `RequestSenderId`, `ReleaseSenderId`, `UpdateSenderId` and what
//! `DescribeSenderIds` reads. A sender id is named by its string and country; its stream id is
//! derived from them (`ResourceKind::sender_id_id`), so two requests for one sender id race for
//! one stream and the log's version check lets one lease it. The quota holds by the log's counter
//! limit, as for every creation.

use super::error::not_found;
use super::quota::{over_quota, quota_limit};
use super::tokens::lost_token_race;
use super::{Activation, LifecycleService, ServiceError};
use crate::domain::sender_id::{SenderId, SenderIdAction, SenderIdState};
use crate::domain::tags::same_tags;
use crate::domain::types::{MessageType, NumberStatus, Tag};
use crate::domain::{CommandMeta, ResourceKind, Scope};
use crate::projection::live_count_key;
use crate::store::stored_counter;

const KIND: ResourceKind = ResourceKind::SenderId;

/// What `RequestSenderId` asks for.
#[derive(Debug, Clone)]
pub struct NewSenderId {
    pub sender_id: String,
    pub iso_country_code: String,
    /// Empty: both types.
    pub message_types: Vec<MessageType>,
    pub deletion_protection_enabled: bool,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

impl NewSenderId {
    /// Whether this request asks for the sender id `s` was leased as.
    fn asked_for(&self, s: &SenderId) -> bool {
        s.sender_id == self.sender_id
            && s.iso_country_code == self.iso_country_code
            && s.message_types == self.message_types()
            && s.deletion_protection_enabled == self.deletion_protection_enabled
            && same_tags(&s.tags, &self.tags)
    }

    /// The message types leased: those asked for, or both when none are.
    fn message_types(&self) -> Vec<MessageType> {
        let mut types = if self.message_types.is_empty() {
            MessageType::ALL.to_vec()
        } else {
            self.message_types.clone()
        };
        types.sort_by_key(|t| t.as_str());
        types.dedup();
        types
    }
}

impl LifecycleService {
    /// The stream id of a sender id the caller names (by string and country, or by ARN).
    pub(super) fn sender_id_stream(scope: &Scope, sender_id_or_arn: &str, iso_country_code: Option<&str>) -> Result<String, ServiceError> {
        ResourceKind::resolve_sender_id(scope, sender_id_or_arn, iso_country_code)
            .map(|(id, _, _)| id)
            .ok_or_else(|| not_found(KIND, sender_id_or_arn))
    }

    /// `RequestSenderId`.
    pub async fn request_sender_id(&self, meta: &CommandMeta, spec: NewSenderId) -> Result<SenderId, ServiceError> {
        let scope = &meta.scope;
        let (_same_token, earlier) = self.client_token(scope, "RequestSenderId", spec.client_token.as_deref()).await?;
        if let Some(id) = earlier {
            return self.earlier_sender_id(scope, &spec, &id).await;
        }
        let id = Self::sender_id_stream(scope, &spec.sender_id, Some(&spec.iso_country_code))?;
        let quota = self.quotas.sender_ids_per_account;
        let count = live_count_key(scope, KIND);
        let held = stored_counter(&count, self.store.index_get(&count).await?.as_deref())?.max(0) as u64;
        let sender_id = SenderId {
            id: id.clone(),
            sender_id: spec.sender_id.clone(),
            sender_id_arn: scope.arn(KIND, &format!("{}/{}", spec.sender_id, spec.iso_country_code)),
            iso_country_code: spec.iso_country_code.clone(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            message_types: spec.message_types(),
            // Sender ids that need no registration are not charged for.
            monthly_leasing_price: "0.00".into(),
            deletion_protection_enabled: spec.deletion_protection_enabled,
            registered: false,
            status: NumberStatus::Active,
            pools: Default::default(),
            tags: spec.tags.clone(),
            created_timestamp_ms: meta.at_ms,
            client_token: spec.client_token.clone(),
            incarnation: 0,
        };
        let action = SenderIdAction::Request {
            sender_id: Box::new(sender_id),
            held,
            quota,
        };
        let limit = quota_limit(scope, KIND, quota);
        let leased = self
            .execute_within(&self.sender_ids, &id, Activation::Named, meta, action, &[limit])
            .await;
        match leased.map_err(|e| over_quota(e, scope, KIND, quota)) {
            Ok(state) => state
                .live()
                .cloned()
                .ok_or_else(|| ServiceError::Invariant(format!("leased sender id {id} has no state"))),
            Err(e) if lost_token_race(&e) => {
                let token = spec.client_token.as_deref().unwrap_or_default();
                let earlier = self
                    .token_race_winner(scope, "RequestSenderId", ResourceKind::SenderId, token)
                    .await?;
                self.earlier_sender_id(scope, &spec, &earlier).await
            }
            Err(e) => Err(e),
        }
    }

    /// The sender id an earlier request with the same client token leased, if this request asks
    /// for the same one.
    async fn earlier_sender_id(&self, scope: &Scope, spec: &NewSenderId, earlier: &str) -> Result<SenderId, ServiceError> {
        self.check_token_reuse::<SenderIdState>(earlier, |action| match action {
            SenderIdAction::Request { sender_id, .. } => Some((sender_id.client_token == spec.client_token, spec.asked_for(sender_id))),
            _ => None,
        })
        .await?;
        let state: SenderIdState = Self::state(&self.sender_ids, earlier).await?;
        state
            .live()
            .filter(|s| s.account == scope.account && s.region == scope.region)
            .cloned()
            .ok_or_else(|| not_found(KIND, &spec.sender_id))
    }

    /// Runs `action` on the caller's sender id; the sender id after it (a released one too).
    pub(super) async fn on_sender_id(
        &self,
        meta: &CommandMeta,
        sender_id_or_arn: &str,
        iso_country_code: Option<&str>,
        action: SenderIdAction,
    ) -> Result<SenderId, ServiceError> {
        let id = Self::sender_id_stream(&meta.scope, sender_id_or_arn, iso_country_code)?;
        self.sender_id(meta, &id, action).await.map_err(|e| match e {
            // Refusals name the sender id as the caller did, not its stream.
            ServiceError::Rejected(crate::domain::Rejection::NotFound { .. }) => not_found(KIND, sender_id_or_arn),
            other => other,
        })
    }

    /// `ReleaseSenderId`: the sender id as it was released.
    pub async fn release_sender_id(&self, meta: &CommandMeta, sender_id_or_arn: &str, iso: &str) -> Result<SenderId, ServiceError> {
        self.on_sender_id(meta, sender_id_or_arn, Some(iso), SenderIdAction::Release).await
    }

    /// `UpdateSenderId`.
    pub async fn update_sender_id(
        &self,
        meta: &CommandMeta,
        sender_id_or_arn: &str,
        iso: &str,
        deletion_protection_enabled: Option<bool>,
    ) -> Result<SenderId, ServiceError> {
        let action = SenderIdAction::Update {
            deletion_protection_enabled,
        };
        self.on_sender_id(meta, sender_id_or_arn, Some(iso), action).await
    }

    /// Runs `action` on the sender id whose stream is `id`.
    pub(super) async fn sender_id(&self, meta: &CommandMeta, id: &str, action: SenderIdAction) -> Result<SenderId, ServiceError> {
        let state = self.execute(&self.sender_ids, id, Activation::Existing, meta, action).await?;
        state.0.ok_or_else(|| not_found(KIND, id))
    }

    /// The sender id whose stream is `id`, as it is now (released or not).
    pub(super) async fn current_sender_id(&self, id: &str) -> Result<SenderId, ServiceError> {
        let state: SenderIdState = Self::state(&self.sender_ids, id).await?;
        state.0.ok_or_else(|| not_found(KIND, id))
    }
}
