//! `TagResource`, `UntagResource` and `ListTagsForResource`: the resource is found by its ARN
//! (a phone number, a pool, an opt-out list or a sender id of the caller) and its own decider applies the tag
//! rules, so each change is an event on that resource's stream.

use super::error::not_found;
use super::{Activation, LifecycleService, ServiceError};
use crate::domain::opt_out_list::OptOutListAction;
use crate::domain::phone_number::PhoneNumberAction;
use crate::domain::pool::PoolAction;
use crate::domain::sender_id::SenderIdAction;
use crate::domain::types::{Tag, ValidationReason};
use crate::domain::{CommandMeta, Rejection, ResourceKind, Scope};

/// A change of a resource's tags.
#[derive(Debug, Clone)]
pub enum TagChange {
    Put(Vec<Tag>),
    Remove(Vec<String>),
}

/// The kind an ARN names, or the refusal AWS gives an ARN it does not understand.
fn kind_of(arn: &str) -> Result<ResourceKind, ServiceError> {
    ResourceKind::of_arn(arn).ok_or_else(|| {
        ServiceError::Rejected(Rejection::validation(
            ValidationReason::InvalidArn,
            "ResourceArn",
            format!("{arn} is not the ARN of a phone number, pool, opt-out list or sender id"),
        ))
    })
}

impl LifecycleService {
    /// The stream of the caller's resource named by `arn`, with its kind.
    async fn tagged_resource(&self, scope: &Scope, arn: &str) -> Result<(ResourceKind, String), ServiceError> {
        let kind = kind_of(arn)?;
        let id = match kind {
            ResourceKind::OptOutList => Self::resolve(kind, scope, arn)?,
            _ => self.owned(kind, scope, arn).await?,
        };
        Ok((kind, id))
    }

    /// `TagResource` / `UntagResource`.
    pub async fn change_tags(&self, meta: &CommandMeta, arn: &str, change: TagChange) -> Result<(), ServiceError> {
        let (kind, id) = self.tagged_resource(&meta.scope, arn).await?;
        match kind {
            ResourceKind::PhoneNumber => {
                let action = match change {
                    TagChange::Put(tags) => PhoneNumberAction::Tag { tags },
                    TagChange::Remove(keys) => PhoneNumberAction::Untag { keys },
                };
                self.number(meta, &id, action).await.map(drop)
            }
            ResourceKind::Pool => {
                let action = match change {
                    TagChange::Put(tags) => PoolAction::Tag { tags },
                    TagChange::Remove(keys) => PoolAction::Untag { keys },
                };
                self.pool(meta, &id, action).await.map(drop)
            }
            ResourceKind::OptOutList => {
                let action = match change {
                    TagChange::Put(tags) => OptOutListAction::Tag { tags },
                    TagChange::Remove(keys) => OptOutListAction::Untag { keys },
                };
                let state = self
                    .execute(&self.lists, &id, Activation::Existing, meta, action)
                    .await
                    .map_err(|e| match e {
                        ServiceError::Rejected(Rejection::NotFound { .. }) => not_found(kind, arn),
                        other => other,
                    })?;
                state.live().map(drop).ok_or_else(|| not_found(kind, arn))
            }
            ResourceKind::SenderId => {
                let action = match change {
                    TagChange::Put(tags) => SenderIdAction::Tag { tags },
                    TagChange::Remove(keys) => SenderIdAction::Untag { keys },
                };
                self.on_sender_id(meta, arn, None, action).await.map(drop)
            }
        }
    }

    /// `ListTagsForResource`.
    pub async fn tags_of(&self, scope: &Scope, arn: &str) -> Result<Vec<Tag>, ServiceError> {
        let (kind, id) = self.tagged_resource(scope, arn).await?;
        match kind {
            ResourceKind::PhoneNumber => {
                let n = self.current_number(&id).await?;
                match n.status {
                    crate::domain::types::NumberStatus::Deleted => Err(not_found(kind, arn)),
                    _ => Ok(n.tags),
                }
            }
            ResourceKind::Pool => Ok(self.live_pool(scope, &id).await?.tags),
            ResourceKind::OptOutList => self.read_opt_out_list(scope, arn, |l| l.tags.clone()).await,
            ResourceKind::SenderId => {
                let s = self.current_sender_id(&id).await?;
                match s.is_live() {
                    true => Ok(s.tags),
                    false => Err(not_found(kind, arn)),
                }
            }
        }
    }
}
