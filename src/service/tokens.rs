//! Client tokens (`ClientToken` on RequestPhoneNumber and CreatePool): a retried request gets the
//! resource its first attempt created, and a request that reuses a token with other parameters
//! is refused (`ConflictException`, as AWS services refuse a token that was already used with
//! different request parameters), whether it comes after the first or races it. The binding of a token to its resource is a unique claim in
//! the store, committed with the resource's first event, so two racing requests can never both
//! create one; a lock per token within this process lets a retry simply wait for its first attempt.

use super::{LifecycleService, ServiceError};
use crate::codec::decode_event;
use crate::domain::types::ConflictReason;
use crate::domain::{Aggregate, Rejection, ResourceKind, Scope};
use crate::projection::token_key;
use crate::store::AppendError;

use crate::actors::ExecuteError;

impl LifecycleService {
    /// For a request with a client token: the lock that serializes requests carrying that token
    /// (held by the caller until it is done), and the resource an earlier request created with it.
    pub(super) async fn client_token(
        &self,
        scope: &Scope,
        operation: &str,
        token: Option<&str>,
    ) -> Result<(Option<tokio::sync::MutexGuard<'_, ()>>, Option<String>), ServiceError> {
        let Some(token) = token else { return Ok((None, None)) };
        let guard = self.token_lock(scope, operation, token).lock().await;
        Ok((Some(guard), self.token_owner(scope, operation, token).await?))
    }

    /// The resource created with a token, if any: looked up again once this node has caught up
    /// with the log when its index lacks it, so that a retry arriving at a node whose view lags
    /// finds the creation another node just made (a token's claim, once written, stays).
    pub(super) async fn token_owner(&self, scope: &Scope, operation: &str, token: &str) -> Result<Option<String>, ServiceError> {
        let owner = self.store.index_get_latest(&token_key(scope, operation, token)).await?;
        Ok(owner.map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// The resource of the request that won a client token's race against this one (the
    /// creation that made the winning claim). With several nodes, the winner's claim is reserved
    /// before its append is published, and that append may still be on its way (resent through
    /// a leader election for up to 15 s): its resource is waited for, not taken for missing. A
    /// creation that never lands leaves the request refused as one racing another
    /// (`ConflictException`), to be sent again.
    pub(super) async fn token_race_winner(
        &self,
        scope: &Scope,
        operation: &str,
        kind: ResourceKind,
        token: &str,
    ) -> Result<String, ServiceError> {
        /// Beyond the longest an append is resent.
        const WINNER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            if let Some(winner) = self.token_owner(scope, operation, token).await? {
                return Ok(winner);
            }
            if started.elapsed() >= WINNER_WAIT {
                return Err(ServiceError::Rejected(Rejection::conflict(
                    ConflictReason::ResourceModificationNotAllowed,
                    kind,
                    token,
                    "is the client token of another request still in progress; send this request again",
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
    }

    /// Refuses a request that reuses the client token of a creation of `earlier` unless it asks
    /// for what that creation asked. `creation` reads a command as the log recorded it: for a
    /// creation, whether it carried this request's token and whether this request asks for the
    /// same; `None` for any other command.
    ///
    /// A named resource (an opt-out list, a sender id) can be created again in the same stream,
    /// each time with a token of its own: the creation compared is the one that carried the
    /// token, and if the resource was created again after it, the token's resource is gone and
    /// the request is refused too (not answered with the newer resource).
    pub(super) async fn check_token_reuse<A: Aggregate>(
        &self,
        earlier: &str,
        creation: impl Fn(&A::Action) -> Option<(bool, bool)>,
    ) -> Result<(), ServiceError> {
        const CHUNK: usize = 256;
        let recreatable = matches!(A::KIND, ResourceKind::OptOutList | ResourceKind::SenderId);
        // (the creation's command, whether this request asks the same), once found.
        let mut found: Option<(uuid::Uuid, bool)> = None;
        let mut from = 1;
        'scan: loop {
            let chunk = self.store.read_stream(earlier, from, CHUNK).await?;
            for e in &chunk {
                from = e.version.saturating_add(1);
                if A::rejection_in(&decode_event::<A::Event>(e)?).is_some() {
                    continue;
                }
                let Ok(action) = serde_json::from_value::<A::Action>(e.command_input.clone()) else {
                    continue;
                };
                match (creation(&action), found) {
                    (Some((true, same)), None) => {
                        found = Some((e.command_id, same));
                        if !recreatable {
                            break 'scan;
                        }
                    }
                    (Some(_), Some((command, _))) if e.command_id != command => {
                        return Err(ServiceError::Rejected(Rejection::conflict(
                            ConflictReason::ResourceAlreadyExists,
                            A::KIND,
                            earlier,
                            "was created with this client token, then deleted and created again; use a new client token",
                        )));
                    }
                    _ => {}
                }
            }
            if chunk.len() < CHUNK {
                break;
            }
        }
        match found {
            Some((_, true)) => Ok(()),
            Some((_, false)) => Err(ServiceError::Rejected(Rejection::conflict(
                ConflictReason::ResourceAlreadyExists,
                A::KIND,
                earlier,
                "was created with this client token and different request parameters; use a new client token, or send the earlier request unchanged",
            ))),
            None => Err(ServiceError::Invariant(format!(
                "client token bound to {earlier}, whose recorded creations carry no such token"
            ))),
        }
    }

    /// The lock serializing requests that carry the same client token (striped: a fixed set
    /// of locks, so tokens never accumulate in memory; different tokens rarely share one).
    fn token_lock(&self, scope: &Scope, operation: &str, token: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (scope, operation, token).hash(&mut h);
        &self.token_locks[(h.finish() as usize) % self.token_locks.len()]
    }
}

/// Whether a failed creation lost the race for its client token (another request, possibly on
/// another node, created a resource with it first).
pub(super) fn lost_token_race(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Execute { source: ExecuteError::Append(AppendError::UniqueViolation(key)), .. } if key.starts_with("t/")
    )
}
