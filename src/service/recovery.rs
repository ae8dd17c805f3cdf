//! Finishing pool changes that a crash interrupted (a number left `ASSOCIATING` or
//! `DISASSOCIATING`, or pointing at a deleted pool), at start-up before requests are served.

use super::{LifecycleService, ServiceError};
use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction};
use crate::domain::types::{NumberStatus, ValidationReason};
use crate::domain::{CommandMeta, Rejection, ResourceKind, Scope};

impl LifecycleService {
    /// Finishes pool changes that a crash interrupted, so no number stays `ASSOCIATING` or
    /// `DISASSOCIATING` and no number points at a deleted pool. The pool's stream decides: a
    /// number the pool holds completes its join (or aborts its leave), any other completes its
    /// leave (or aborts its join). Runs at start-up, before requests are served.
    pub async fn recover_interrupted(&self) -> Result<usize, ServiceError> {
        let mut stuck: Vec<PhoneNumber> = Vec::new();
        self.for_each_view(ResourceKind::PhoneNumber, |n: PhoneNumber| {
            if n.is_changing_pools() || n.pool_id.is_some() {
                stuck.push(n);
            }
        })
        .await?;
        let mut repaired = 0;
        for n in stuck {
            let meta = CommandMeta {
                request_id: format!("recovery-{}", uuid::Uuid::new_v4()),
                scope: Scope::new(&n.account, &n.region),
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default(),
                operation: "Recovery".into(),
            };
            let pool_id = n.pending_pool_id.clone().or(n.pool_id.clone()).unwrap_or_default();
            let pool_holds_it = match self.live_pool(&meta.scope, &pool_id).await {
                Ok(p) => p.members.contains_key(&n.phone_number_id),
                Err(ServiceError::Rejected(_)) => false,
                Err(e) => return Err(e),
            };
            let interrupted = || Rejection::validation(ValidationReason::InvalidRequest, "PoolId", "interrupted by a restart");
            let action = match (n.status, pool_holds_it) {
                (NumberStatus::Associating, true) => PhoneNumberAction::CompleteAssociation { pool_id },
                (NumberStatus::Associating, false) => PhoneNumberAction::AbortAssociation {
                    pool_id,
                    reason: interrupted(),
                },
                (NumberStatus::Disassociating, true) => PhoneNumberAction::AbortDisassociation {
                    pool_id,
                    reason: interrupted(),
                },
                (NumberStatus::Disassociating, false) => PhoneNumberAction::CompleteDisassociation { pool_id },
                (_, false) => PhoneNumberAction::DetachFromDeletedPool { pool_id },
                (_, true) => continue,
            };
            tracing::warn!(phone_number_id = %n.phone_number_id, action = ?action, "finishing an interrupted pool change");
            self.number(&meta, &n.phone_number_id, action).await?;
            repaired += 1;
        }
        Ok(repaired)
    }
}
