//! Per-account quotas under concurrent creations: live resources (a counter in the derived
//! index) plus creations in flight (reservations held in memory) never exceed the quota, and
//! creations are not serialized to ensure it.
//!
//! The reservations see this process's creations only. Other nodes of a shared log create too,
//! so each creation's append also names the quota as the counter's limit ([`quota_limit`]): the
//! log refuses, in its own commit order, the creation that would go over it, and that refusal
//! is the same `ServiceQuotaExceededException` ([`over_quota`]).

use std::sync::atomic::Ordering;

use super::{LifecycleService, ServiceError};
use crate::actors::ExecuteError;
use crate::domain::types::QuotaReason;
use crate::domain::{Rejection, ResourceKind, Scope};
use crate::projection::live_count_key;
use crate::store::{stored_counter, AppendError, CounterLimit};

/// A unit of quota held by a creation in progress; released when dropped.
pub(super) struct Reservation<'a> {
    service: &'a LifecycleService,
    key: (Scope, ResourceKind),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut pending = self.service.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.key);
            }
        }
        // Under the lock: a reservation being counted sees either this release or the creation
        // still in flight (see `reserve`).
        self.service.released.fetch_add(1, Ordering::SeqCst);
        drop(pending);
        self.service.settled.notify_waiters();
    }
}

impl LifecycleService {
    /// `DescribeAccountLimits`: (name, used, max) per quota of the scope.
    pub async fn account_limits(&self, scope: &Scope) -> Result<Vec<(&'static str, u64, u64)>, ServiceError> {
        let mut limits = Vec::new();
        for (name, kind, max) in [
            ("PHONE_NUMBERS", ResourceKind::PhoneNumber, self.quotas.phone_numbers_per_account),
            ("POOLS", ResourceKind::Pool, self.quotas.pools_per_account),
            ("OPT_OUT_LISTS", ResourceKind::OptOutList, self.quotas.opt_out_lists_per_account),
            ("SENDER_IDS", ResourceKind::SenderId, self.quotas.sender_ids_per_account),
        ] {
            limits.push((name, self.count_live(scope, kind).await?, max));
        }
        Ok(limits)
    }

    /// How many resources of `kind` the scope holds (from the index's counter).
    async fn count_live(&self, scope: &Scope, kind: ResourceKind) -> Result<u64, ServiceError> {
        let key = live_count_key(scope, kind);
        let stored = self.store.index_get(&key).await?;
        Ok(stored_counter(&key, stored.as_deref())?.max(0) as u64)
    }

    /// Holds one unit of the scope's quota for a creation in progress.
    ///
    /// A creation is counted in flight from its reservation until the reservation is dropped,
    /// which happens after its events (and the counter) are committed. So counting the index
    /// first and the reservations after is exact as long as no reservation was released in
    /// between (then a creation could have left the reservations after the index was read): the
    /// count is taken again in that case. A creation that just committed is briefly counted twice,
    /// so at the limit the answer waits for the creations in flight to settle and then counts
    /// exactly: no spurious refusal, no excess.
    pub(super) async fn reserve(&self, scope: &Scope, kind: ResourceKind, quota: u64) -> Result<Reservation<'_>, ServiceError> {
        let key = (scope.clone(), kind);
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let released = self.released.load(Ordering::SeqCst);
            let live = self.count_live(scope, kind).await?;
            {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if self.released.load(Ordering::SeqCst) != released {
                    continue;
                }
                let in_flight = pending.get(&key).copied().unwrap_or(0);
                if live + in_flight < quota {
                    *pending.entry(key.clone()).or_insert(0) += 1;
                    return Ok(Reservation { service: self, key });
                }
                if in_flight == 0 {
                    return Err(quota_exceeded(scope, kind, quota));
                }
            }
            settled.await;
        }
    }
}

/// The refusal of a creation over the scope's quota of `kind`.
fn quota_exceeded(scope: &Scope, kind: ResourceKind, quota: u64) -> ServiceError {
    let (reason, what) = match kind {
        ResourceKind::PhoneNumber => (QuotaReason::PhoneNumbersPerAccount, "phone numbers"),
        ResourceKind::Pool => (QuotaReason::PoolsPerAccount, "pools"),
        ResourceKind::OptOutList => (QuotaReason::OptOutListsPerAccount, "opt-out lists"),
        ResourceKind::SenderId => (QuotaReason::SenderIdsPerAccount, "sender ids"),
    };
    ServiceError::Rejected(Rejection::QuotaExceeded {
        reason,
        message: format!("account {} already holds {quota} {what} in {}", scope.account, scope.region),
    })
}

/// The counter limit a creation of `kind` in `scope` appends under.
pub(super) fn quota_limit(scope: &Scope, kind: ResourceKind, quota: u64) -> CounterLimit {
    CounterLimit::at_most(live_count_key(scope, kind), i64::try_from(quota).unwrap_or(i64::MAX))
}

/// A creation the log refused for its counter limit is over the quota.
pub(super) fn over_quota(e: ServiceError, scope: &Scope, kind: ResourceKind, quota: u64) -> ServiceError {
    match e {
        ServiceError::Execute {
            source: ExecuteError::Append(AppendError::LimitReached(key)),
            ..
        } if key.starts_with("c/") => quota_exceeded(scope, kind, quota),
        other => other,
    }
}
