//! Finishing pool changes that a crash interrupted (a number left `ASSOCIATING` or
//! `DISASSOCIATING`, or pointing at a deleted pool): at start-up before requests are served,
//! and, when several nodes share the log, periodically (the reconciler), for changes left alone
//! long enough that no node can still be carrying them out.

use std::collections::HashMap;

use super::{LifecycleService, ServiceError};
use crate::domain::phone_number::PhoneNumber;
use crate::domain::pool::{Pool, PoolState};
use crate::domain::pool_change::{finish_interrupted, pool_to_ask};
use crate::domain::{CommandMeta, ResourceKind, Scope};

impl LifecycleService {
    /// Finishes pool changes that a crash interrupted, so no number stays `ASSOCIATING` or
    /// `DISASSOCIATING` and no number points at a deleted pool: the pool's stream decides, by
    /// the table of [`crate::domain::pool_change`].
    ///
    /// Only changes whose number has not moved for `left_alone_for` are touched: with one node
    /// that is zero at start-up (nothing is in flight before requests are served); with several,
    /// another node may be between the two steps of a change right now, and finishing it under
    /// it would race its own last step.
    pub async fn recover_interrupted(&self, left_alone_for: std::time::Duration) -> Result<usize, ServiceError> {
        let mut stuck: Vec<PhoneNumber> = Vec::new();
        self.for_each_view(ResourceKind::PhoneNumber, |n: PhoneNumber| {
            if pool_to_ask(&n).is_some() {
                stuck.push(n);
            }
        })
        .await?;
        let mut repaired = 0;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        // Each pool read once per pass, from the log itself: with several nodes, this node's
        // actor of the pool may not have seen the step another node just took.
        let mut pools: HashMap<String, Option<Pool>> = HashMap::new();
        for n in stuck {
            let Some(pool_id) = pool_to_ask(&n) else { continue };
            if !pools.contains_key(pool_id) {
                let loaded = crate::rehydrate::load_state::<PoolState>(&*self.store, pool_id).await?;
                pools.insert(pool_id.to_string(), loaded.state.0);
            }
            let scope = Scope::new(&n.account, &n.region);
            // A pool that is gone (or another account's) does not hold the number.
            let pool_holds_it = pools.get(pool_id).and_then(Option::as_ref).is_some_and(|p| {
                !p.deleted && p.account == scope.account && p.region == scope.region && p.members.contains_key(&n.phone_number_id)
            });
            let Some(action) = finish_interrupted(&n, pool_holds_it) else {
                continue;
            };
            // With several nodes, only what has been left alone long enough: a live change (or
            // a pool step newer than the pool read above) has moved the number recently.
            if !left_alone_for.is_zero() {
                let head = self.store.stream_head(&n.phone_number_id).await?;
                let last = self.store.read_stream(&n.phone_number_id, head.version, 1).await?;
                let moved_ms = last.first().map_or(0, |e| e.timestamp_ms);
                if now_ms.saturating_sub(moved_ms) < left_alone_for.as_millis() as u64 {
                    continue;
                }
            }
            let meta = CommandMeta {
                request_id: format!("recovery-{}", uuid::Uuid::new_v4()),
                scope,
                at_ms: now_ms,
                operation: "Recovery".into(),
            };
            tracing::warn!(phone_number_id = %n.phone_number_id, action = ?action, "finishing an interrupted pool change");
            self.number(&meta, &n.phone_number_id, action).await?;
            repaired += 1;
        }
        Ok(repaired)
    }
}
