//! Client tokens (`ClientToken` on RequestPhoneNumber and CreatePool): a retried request gets the
//! resource its first attempt created, and a request that reuses a token with other parameters
//! is refused (`ConflictException`, as AWS services refuse a token that was already used with
//! different request parameters), whether it comes after the first or races it. The binding of a token to its resource is a unique claim in
//! the store, committed with the resource's first event, so two racing requests can never both
//! create one; a lock per token within this process lets a retry simply wait for its first attempt.

use super::{LifecycleService, ServiceError};
use crate::domain::types::ConflictReason;
use crate::domain::{Aggregate, Rejection, Scope};
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

    /// The resource created with a token, if any.
    pub(super) async fn token_owner(&self, scope: &Scope, operation: &str, token: &str) -> Result<Option<String>, ServiceError> {
        let owner = self.store.index_get(&token_key(scope, operation, token)).await?;
        Ok(owner.map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// Refuses a request that reuses the client token of the creation of `earlier` unless
    /// `same_request` says it asks for what that creation asked (read from its first event, the
    /// command as recorded).
    pub(super) async fn check_token_reuse<A: Aggregate>(
        &self,
        earlier: &str,
        same_request: impl FnOnce(&A::Action) -> bool,
    ) -> Result<(), ServiceError> {
        let first = self.store.read_stream(earlier, 1, 1).await?;
        let Some(recorded) = first.into_iter().next() else {
            return Err(ServiceError::Invariant(format!(
                "client token bound to {earlier}, which has no events"
            )));
        };
        let action: A::Action = serde_json::from_value(recorded.command_input)
            .map_err(|e| ServiceError::Invariant(format!("the creation of {earlier} cannot be read back: {e}")))?;
        if same_request(&action) {
            return Ok(());
        }
        Err(ServiceError::Rejected(Rejection::conflict(
            ConflictReason::ResourceAlreadyExists,
            A::KIND,
            earlier,
            "was created with this client token and different request parameters; use a new client token, or send the earlier request unchanged",
        )))
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
