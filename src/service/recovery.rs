//! Finishing pool changes that a crash interrupted (a member left `ASSOCIATING` or
//! `DISASSOCIATING` with a pool, or pointing at a deleted pool), and requests for a number into
//! a pool that stopped between making the number and its join (or its withdrawal): at start-up
//! before requests are served, and, when several nodes share the log, periodically (the
//! reconciler), for what has been left alone long enough that no node can still be carrying it
//! out.

use std::collections::HashMap;

use super::members::Identity;
use super::{Activation, LifecycleService, ServiceError};
use crate::actors::ExecuteError;
use crate::domain::phone_number::PhoneNumber;
use crate::domain::pool::{Pool, PoolAction, PoolState};
use crate::domain::pool_change::pools_to_ask;
use crate::domain::sender_id::SenderId;
use crate::domain::{CommandMeta, ResourceKind, Scope};

/// How the request ids of the service's own writes (finishing an interrupted change) begin: no
/// client's request is answered for them.
pub const RECOVERY_REQUEST_PREFIX: &str = "recovery-";

impl LifecycleService {
    /// Finishes pool changes that a crash interrupted, so no number stays `ASSOCIATING` or
    /// `DISASSOCIATING` and no number points at a deleted pool: the pool's stream decides, by
    /// the table of [`crate::domain::pool_change`].
    ///
    /// Only changes begun (or pools deleted) at least `left_alone_for` ago are touched: with one node
    /// that is zero at start-up (nothing is in flight before requests are served); with several,
    /// another node may be between the two steps of a change right now. Each pool is fenced
    /// before it is asked ([`PoolAction::Fence`]): a step of a given-up change that arrives
    /// later (a request slower than `left_alone_for`) is refused, so the pool never changes
    /// under the decision taken here.
    ///
    /// Then finishes the requests into a pool left alone as long between their steps
    /// ([`Self::finish_unfinished_requests`]). Answers how many changes and requests it settled.
    pub async fn recover_interrupted(&self, left_alone_for: std::time::Duration) -> Result<usize, ServiceError> {
        let mut stuck: Vec<Identity> = Vec::new();
        // Requests into a pool that may be unfinished: those the view shows so, and those
        // whose join is among the changes settled below (the view may not show the outcome
        // yet). One look at every number serves both.
        let mut requested: Vec<PhoneNumber> = Vec::new();
        self.for_each_view(ResourceKind::PhoneNumber, |n: PhoneNumber| {
            let changing = !pools_to_ask(&n).is_empty();
            if n.unfinished_request().is_some() || (changing && n.requested_into_pool.is_some()) {
                requested.push(n.clone());
            }
            if changing {
                stuck.push(Identity::Number(Box::new(n)));
            }
        })
        .await?;
        self.for_each_view(ResourceKind::SenderId, |s: SenderId| {
            if !pools_to_ask(&s).is_empty() {
                stuck.push(Identity::SenderId(Box::new(s)));
            }
        })
        .await?;
        let mut repaired = 0;
        let now_ms = crate::now_ms();
        let begun_before_ms = now_ms.saturating_sub(left_alone_for.as_millis() as u64);
        // Each pool read once per pass, from the log itself: with several nodes, this node's
        // actor of the pool may not have seen the step another node just took.
        let mut pools: HashMap<String, Option<Pool>> = HashMap::new();
        // Each of a member's pools on its own: a sender id stands with several.
        let changes = stuck
            .iter()
            .flat_map(|n| n.pools_to_ask().into_iter().map(move |pool_id| (n, pool_id)));
        for (n, pool_id) in changes {
            if !pools.contains_key(&pool_id) {
                let loaded = crate::rehydrate::load_state::<PoolState>(&*self.store, &pool_id).await?;
                pools.insert(pool_id.clone(), loaded.state.0);
            }
            // A pool that is gone (or another account's) does not hold the member.
            if n.finish_interrupted(&pool_id, holds(pools.get(&pool_id).and_then(Option::as_ref), n))
                .is_none()
            {
                continue;
            }
            // With several nodes, only what has been left alone long enough: a change begun
            // recently, or a pool deleted recently, may still be carried out by its request.
            // Not "the member has not moved lately": refusals, sends and inbound messages are
            // recorded on it all along, and a number its clients keep using would never be
            // settled.
            if !left_alone_for.is_zero() {
                // As this node's view has the member (`finish_change` reads it from the log).
                let since_ms = match n.is_changing(&pool_id) {
                    true => self.last_change_begun_ms(n.member_id(), &pool_id, None).await?,
                    false => self.deletion(&pool_id).await?.map(|(at_ms, _)| at_ms),
                };
                if since_ms.unwrap_or(0) > begun_before_ms {
                    continue;
                }
            }
            let meta = CommandMeta {
                request_id: format!("{RECOVERY_REQUEST_PREFIX}{}", uuid::Uuid::new_v4()),
                scope: n.scope(),
                at_ms: now_ms,
                operation: "Recovery".into(),
            };
            let (pool, finished) = self.finish_change(&meta, n.member_id(), &pool_id, begun_before_ms).await?;
            pools.insert(pool_id, pool);
            repaired += usize::from(finished.is_some());
        }
        // After every fence of this pass (each at or before `now_ms`): a join begun for a
        // request is never one of the changes given up.
        Ok(repaired + self.finish_unfinished_requests(&requested, left_alone_for, now_ms).await?)
    }

    /// Finishes each `RequestPhoneNumber` into a pool, of those that made the numbers
    /// `requested`, that stopped after making its number and before the number joined the pool
    /// or was withdrawn ([`PhoneNumber::unfinished_request`], as the log has the number), and
    /// has taken no step for `left_alone_for` (with one node at start-up, zero: nothing is
    /// on its way): as its retry would, so that a failed request leaves no number leased outside
    /// the pool it named, even if its caller never sends the retry. Its writes are the
    /// reconciler's, each begun when it is taken and after `fenced_at_ms` (the latest fence this
    /// pass set). A number that cannot be finished now (the log failing, say) is left to the
    /// next pass, not the numbers after it. Answers how many it finished.
    async fn finish_unfinished_requests(
        &self,
        requested: &[PhoneNumber],
        left_alone_for: std::time::Duration,
        fenced_at_ms: u64,
    ) -> Result<usize, ServiceError> {
        let last_step_before_ms = match left_alone_for.is_zero() {
            true => u64::MAX,
            false => crate::now_ms().saturating_sub(left_alone_for.as_millis() as u64),
        };
        let mut finished = 0;
        for number in requested {
            // Begun now, not when the pass began: a pass can take long, and a join stamped
            // with an old time would look given up to another node's reconciler at once.
            let meta = CommandMeta {
                request_id: format!("{RECOVERY_REQUEST_PREFIX}{}", uuid::Uuid::new_v4()),
                scope: Scope::new(&number.account, &number.region),
                at_ms: crate::now_ms().max(fenced_at_ms.saturating_add(1)),
                operation: "Recovery".into(),
            };
            match self.finish_unfinished_request(&meta, number, last_step_before_ms).await {
                Ok(done) => finished += usize::from(done),
                Err(e) => tracing::warn!(
                    phone_number_id = %number.phone_number_id,
                    error = %crate::error_chain(&e),
                    "could not finish a request into a pool; left to the next pass"
                ),
            }
        }
        Ok(finished)
    }

    /// Finishes the change of `pool_id` that the member `member_id` is in for good, whatever
    /// became of the steps taken so far: fences the pool first, so that no step of a change of
    /// the member begun at or before `begun_before_ms` can reach it later (a pool never created
    /// is foreclosed: its late creation is refused), then completes or undoes the member's step
    /// by whether the pool holds it. Answers the pool as the fence left it and the member after
    /// its last step (`None`: nothing was done).
    ///
    /// The member is read from the log, and its last step is taken only at the version it was
    /// read at: a change the member began after the fence is not the one given up, and is left
    /// to its own request; if the member moves on between the read and the step (a refusal
    /// recorded, the change's own request settling it), it is read again.
    pub(super) async fn finish_change(
        &self,
        meta: &CommandMeta,
        member_id: &str,
        pool_id: &str,
        begun_before_ms: u64,
    ) -> Result<(Option<Pool>, Option<Identity>), ServiceError> {
        const READS: usize = 4;
        let fence = PoolAction::Fence {
            origination_identity: member_id.to_string(),
            begun_before_ms,
        };
        // Named: the pool's stream may not exist (a creation not written yet, or never).
        let pool = self.execute(&self.pools, pool_id, Activation::Named, meta, fence).await?.0;
        for _ in 0..READS {
            let (n, version, begun_ms) = self.member_in_log(member_id, pool_id).await?;
            // Its standing comes from a change begun after the fence (under way, or done since
            // the fence read the pool): that change's own request settles it, not this decision.
            if begun_ms.is_some_and(|begun| begun > begun_before_ms) {
                return Ok((pool, None));
            }
            let Some(action) = n.finish_interrupted(pool_id, holds(pool.as_ref(), &n)) else {
                return Ok((pool, None));
            };
            tracing::warn!(member = %member_id, action = ?action, "finishing an unfinished pool change");
            match self.member_step_at(meta, member_id, action, version).await {
                Ok(member) => return Ok((pool, Some(member))),
                Err(ServiceError::Execute {
                    source: ExecuteError::Stale,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        tracing::info!(member = %member_id, "the member keeps moving; its change is left to the next pass");
        Ok((pool, None))
    }
}

/// Whether `pool` holds `n`: a pool that is gone (or another account's) does not.
fn holds(pool: Option<&Pool>, n: &Identity) -> bool {
    let scope = n.scope();
    pool.is_some_and(|p| !p.deleted && p.account == scope.account && p.region == scope.region && p.members.contains_key(n.member_id()))
}
