//! `PutKeyword`, `DeleteKeyword` and `DescribeKeywords` on a phone number or a pool (by id or
//! ARN): the identity's own decider keeps its keywords, so each change is an event on its stream.

use super::{LifecycleService, ServiceError};
use crate::domain::keywords::{self, Keyword};
use crate::domain::phone_number::PhoneNumberAction;
use crate::domain::pool::PoolAction;
use crate::domain::types::NumberStatus;
use crate::domain::{CommandMeta, ResourceKind, Scope};

/// An origination identity with its keywords: (id, ARN, keywords of its own).
pub type KeywordsOf = (String, String, Vec<Keyword>);

/// What to do with a keyword.
#[derive(Debug, Clone)]
pub enum KeywordChange {
    Put(Keyword),
    Delete(String),
}

fn is_pool(identity: &str) -> bool {
    identity.starts_with("pool-") || identity.contains(":pool/")
}

impl LifecycleService {
    /// `PutKeyword` / `DeleteKeyword`: the identity and the keyword as it is now (or was).
    pub async fn change_keyword(
        &self,
        meta: &CommandMeta,
        identity: &str,
        change: KeywordChange,
    ) -> Result<(String, String, Keyword), ServiceError> {
        let quota = self.quotas.keywords_per_origination;
        let key = match &change {
            KeywordChange::Put(k) => keywords::key_of(&k.keyword),
            KeywordChange::Delete(k) => keywords::key_of(k),
        };
        let (id, arn, before, after) = if is_pool(identity) {
            let id = self.owned(ResourceKind::Pool, &meta.scope, identity).await?;
            let before = self.live_pool(&meta.scope, &id).await?.keywords;
            let action = match change {
                KeywordChange::Put(keyword) => PoolAction::PutKeyword { keyword, quota },
                KeywordChange::Delete(keyword) => PoolAction::DeleteKeyword { keyword },
            };
            let p = self.pool(meta, &id, action).await?;
            (id, p.pool_arn, before, p.keywords)
        } else {
            let id = self.owned(ResourceKind::PhoneNumber, &meta.scope, identity).await?;
            let before = self.current_number(&id).await?.keywords;
            let action = match change {
                KeywordChange::Put(keyword) => PhoneNumberAction::PutKeyword { keyword, quota },
                KeywordChange::Delete(keyword) => PhoneNumberAction::DeleteKeyword { keyword },
            };
            let n = self.number(meta, &id, action).await?;
            (id, n.phone_number_arn, before, n.keywords)
        };
        // Put: the keyword as it is now; delete: as it was.
        let keyword = after.get(&key).or(before.get(&key)).cloned();
        let keyword = keyword.ok_or_else(|| ServiceError::Invariant(format!("keyword {key} of {id} is neither before nor after")))?;
        Ok((id, arn, keyword))
    }

    /// `DescribeKeywords`: every keyword of the identity, HELP and STOP included.
    pub async fn keywords_of(&self, scope: &Scope, identity: &str) -> Result<KeywordsOf, ServiceError> {
        if is_pool(identity) {
            let id = self.owned(ResourceKind::Pool, scope, identity).await?;
            let p = self.live_pool(scope, &id).await?;
            return Ok((id, p.pool_arn, keywords::all(&p.keywords)));
        }
        let id = self.owned(ResourceKind::PhoneNumber, scope, identity).await?;
        let n = self.current_number(&id).await?;
        if n.status == NumberStatus::Deleted {
            return Err(super::error::not_found(ResourceKind::PhoneNumber, identity));
        }
        Ok((id, n.phone_number_arn, keywords::all(&n.keywords)))
    }
}
