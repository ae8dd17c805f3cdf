//! Pool workflows: `AssociateOriginationIdentity`, `DisassociateOriginationIdentity`,
//! `CreatePool`, `DeletePool`, each as ordered steps on the member's (a phone number's or a
//! sender id's) and the pool's streams with a compensating step when the second one is refused
//! (see the module doc of `service`).

use super::error::not_found;
use super::members::{step_pool, Identity};
use super::quota::{over_quota, quota_limit};
use super::tokens::lost_token_race;
use super::{Activation, LifecycleService, ServiceError};
use crate::codec::decode_event;
use crate::domain::membership::{MembershipAction, Standing};
use crate::domain::opt_out_list::DEFAULT_LIST;
use crate::domain::pool::{Pool, PoolAction, PoolChanges, PoolEvent, PoolState};
use crate::domain::tags::same_tags;
use crate::domain::types::{ConflictReason, MessageType, PoolStatus, Tag, ValidationReason};
use crate::domain::{CommandMeta, Rejection, ResourceKind, Scope};

/// What `CreatePool` asks for.
#[derive(Debug, Clone)]
pub struct NewPool {
    pub origination_identity: String,
    pub iso_country_code: Option<String>,
    pub message_type: MessageType,
    pub deletion_protection_enabled: bool,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

impl NewPool {
    /// Whether this request asks for the pool `pool` was created as: the same first member (by
    /// id, ARN or what they name), message type, deletion protection and tags.
    fn asked_for(&self, scope: &Scope, pool: &Pool) -> bool {
        let iso = self.iso_country_code.as_deref();
        let member = ResourceKind::PhoneNumber
            .resolve(scope, &self.origination_identity)
            .or_else(|| ResourceKind::resolve_sender_id(scope, &self.origination_identity, iso).map(|(id, _, _)| id))
            .unwrap_or_else(|| self.origination_identity.clone());
        pool.members.contains_key(&member)
            && self.message_type == pool.message_type
            && self.deletion_protection_enabled == pool.deletion_protection_enabled
            && same_tags(&self.tags, &pool.tags)
    }
}

impl LifecycleService {
    /// A member joins an existing pool: the three steps of the module doc.
    pub(super) async fn join_pool(
        &self,
        meta: &CommandMeta,
        member_id: &str,
        pool: &Pool,
        iso: Option<String>,
        client_token: Option<&str>,
    ) -> Result<(Identity, Pool), ServiceError> {
        let pool_id = pool.pool_id.clone();
        let begin = MembershipAction::BeginAssociation {
            pool_id: pool_id.clone(),
            pool_message_type: pool.message_type,
            pool_settings: Some(pool.shared_settings()),
            iso_country_code: iso,
            client_token: client_token.map(String::from),
        };
        // A retry (the same step, client token included) of a join that succeeded: the same
        // answer, and nothing written. Asked first, so a retry records no refusal.
        if client_token.is_some() {
            let now = self.member_now(member_id).await?;
            if now.is_in_pool(&pool_id) && self.done_with_token(member_id, &begin, Change::Join).await? {
                return Ok((now, pool.clone()));
            }
        }
        let member = match self.member_step(meta, member_id, begin.clone()).await {
            Ok(member) => member,
            // The retry's first attempt finished between the look above and this step.
            Err(ServiceError::Rejected(Rejection::Conflict {
                reason: ConflictReason::ResourceAlreadyAssociated,
                ..
            })) if client_token.is_some() && self.done_with_token(member_id, &begin, Change::Join).await? => {
                return Ok((self.member_now(member_id).await?, pool.clone()));
            }
            Err(e) => return Err(e),
        };
        let added = self
            .pool(meta, &pool_id, PoolAction::AddMember(member.joining(pool.message_type)))
            .await;
        self.settle(meta, &member, &pool_id, Change::Join, added).await
    }

    /// The member's last step of a pool change, once the pool has taken its step: completes the
    /// change if the pool took it, and undoes it (recording why) if the pool refused it or
    /// certainly did not take it. `member` is the member after its first step.
    ///
    /// When whether the pool took its step is unknown (its append failed in a way that may
    /// still store it), undoing the member's step could leave the pool holding a member that
    /// left it: the change is decided for good instead, as the reconciler decides one left
    /// alone ([`LifecycleService::finish_change`]: the pool is fenced against the late step,
    /// then asked). If the pool turns out to have taken it, the request succeeds after all; if
    /// that cannot be done now either, the member is left to the reconciler.
    async fn settle(
        &self,
        meta: &CommandMeta,
        member: &Identity,
        pool_id: &str,
        change: Change,
        pool_step: Result<Pool, ServiceError>,
    ) -> Result<(Identity, Pool), ServiceError> {
        let member_id = member.member_id();
        let pool_id = pool_id.to_string();
        match pool_step {
            Err(e) if e.outcome_unknown() => {
                // Fenced at the request's own start: its own late step is refused, a retry (which
                // begins later, on whichever node and clock) is not.
                let finished = self.finish_change(meta, member_id, &pool_id, meta.at_ms).await;
                match finished {
                    Ok((Some(pool), Some(member))) if member.is_in_pool(&pool_id) == (change == Change::Join) => {
                        tracing::info!(pool = %pool_id, member = %member_id, "the pool had taken its step: the change stands");
                        Ok((member, pool))
                    }
                    Ok(_) => Err(e),
                    Err(finishing) => {
                        tracing::warn!(
                            pool = %pool_id,
                            member = %member_id,
                            error = %crate::error_chain(&finishing),
                            "cannot finish the pool change now; the reconciler will"
                        );
                        Err(e)
                    }
                }
            }
            Ok(pool) => {
                let complete = match change {
                    Change::Join => MembershipAction::CompleteAssociation { pool_id },
                    Change::Leave => MembershipAction::CompleteDisassociation { pool_id },
                };
                Ok((self.member_step(meta, member_id, complete).await?, pool))
            }
            Err(e) => {
                let reason = abort_reason(&e);
                let undo = match change {
                    Change::Join => MembershipAction::AbortAssociation { pool_id, reason },
                    Change::Leave => MembershipAction::AbortDisassociation { pool_id, reason },
                };
                self.member_step(meta, member_id, undo).await?;
                Err(e)
            }
        }
    }

    /// `AssociateOriginationIdentity`.
    pub async fn associate(
        &self,
        meta: &CommandMeta,
        pool: &str,
        identity: &str,
        iso: Option<String>,
        client_token: Option<&str>,
    ) -> Result<(Identity, Pool), ServiceError> {
        let scope = &meta.scope;
        let pool_id = self.owned(ResourceKind::Pool, scope, pool).await?;
        let member_id = self.member_stream(scope, identity, iso.as_deref()).await?;
        let pool = self.viewed_pool(scope, &pool_id).await?;
        self.join_pool(meta, &member_id, &pool, iso, client_token).await
    }

    /// `DisassociateOriginationIdentity`. With a client token, a retry of a request that took
    /// the member out of the pool is answered as that request was, not refused because the
    /// member is no longer in the pool.
    pub async fn disassociate(
        &self,
        meta: &CommandMeta,
        pool: &str,
        identity: &str,
        iso: Option<String>,
        client_token: Option<&str>,
    ) -> Result<(Identity, Pool), ServiceError> {
        let scope = &meta.scope;
        let pool_id = self.owned(ResourceKind::Pool, scope, pool).await?;
        let member_id = self.member_stream(scope, identity, iso.as_deref()).await?;
        let viewed = self.viewed_pool(scope, &pool_id).await?;
        let begin = MembershipAction::BeginDisassociation {
            pool_id: pool_id.clone(),
            iso_country_code: iso,
            client_token: client_token.map(String::from),
        };
        let member = match self.member_step(meta, &member_id, begin.clone()).await {
            Ok(member) => member,
            Err(ServiceError::Rejected(Rejection::Conflict {
                reason: ConflictReason::PhoneNumberNotAssociatedToPool,
                ..
            })) if client_token.is_some() && self.done_with_token(&member_id, &begin, Change::Leave).await? => {
                return Ok((self.member_now(&member_id).await?, viewed));
            }
            Err(e) => return Err(e),
        };
        let removed = self
            .pool(
                meta,
                &pool_id,
                PoolAction::RemoveMember {
                    origination_identity: member_id.clone(),
                },
            )
            .await;
        self.settle(meta, &member, &pool_id, Change::Leave, removed).await
    }

    /// Whether the member's recent history holds `begin`, the first step of a pool change with
    /// a client token, exactly as this request asks it (token, pool and input: another input
    /// with the same token is another request), taken (not refused) and then carried through.
    /// Only the member's last [`RETRY_WINDOW`] events are looked at: a retry follows its request
    /// closely, and a first request with a token is not made to read a long history.
    async fn done_with_token(&self, member_id: &str, begin: &MembershipAction, change: Change) -> Result<bool, ServiceError> {
        /// Events of the member looked back at.
        const RETRY_WINDOW: u64 = 1_024;
        let (started, done, undone) = match change {
            Change::Join => ("PoolAssociationStarted", "AssociatedWithPool", "PoolAssociationAborted"),
            Change::Leave => ("PoolDisassociationStarted", "DisassociatedFromPool", "PoolDisassociationAborted"),
        };
        let recent = self.last_events(member_id, None, RETRY_WINDOW).await?;
        let began = recent.iter().rposition(|e| {
            e.event_type == started
                && serde_json::from_value::<MembershipAction>(e.command_input.clone()).is_ok_and(|a| a.same_request(begin))
        });
        // How the change ended: done, undone, or cut short by the pool's deletion (which, for a
        // leave, took the member out all the same). The end of this pool's change: a sender id
        // changes other pools meanwhile.
        let mut ended = None;
        if let Some(i) = began {
            for e in &recent[i + 1..] {
                if [done, undone, "DetachedFromDeletedPool"].contains(&e.event_type.as_str()) && step_pool(e)? == begin.pool_id() {
                    ended = Some(e);
                    break;
                }
            }
        }
        Ok(ended.is_some_and(|e| e.event_type == done || (change == Change::Leave && e.event_type != undone)))
    }

    /// `CreatePool`: the new pool inherits its settings from its first origination identity.
    pub async fn create_pool(&self, meta: &CommandMeta, spec: NewPool) -> Result<Pool, ServiceError> {
        let scope = &meta.scope;
        let (_same_token, earlier) = self.client_token(scope, "CreatePool", spec.client_token.as_deref()).await?;
        if let Some(id) = earlier {
            return self.earlier_pool(scope, &spec, &id).await;
        }
        let member_id = self
            .member_stream(scope, &spec.origination_identity, spec.iso_country_code.as_deref())
            .await?;
        let _reserved = self.reserve(scope, ResourceKind::Pool, self.quotas.pools_per_account).await?;
        let pool_id = ResourceKind::Pool.new_id();
        // The new pool takes its first member's settings: nothing to compare.
        let begin = MembershipAction::BeginAssociation {
            pool_id: pool_id.clone(),
            pool_message_type: spec.message_type,
            pool_settings: None,
            iso_country_code: spec.iso_country_code.clone(),
            client_token: None,
        };
        let member = match self.member_step(meta, &member_id, begin).await {
            Ok(member) => member,
            Err(refused @ ServiceError::Rejected(Rejection::Conflict { .. })) => {
                return match self.pool_of_an_attempt_in_flight(scope, &spec, &member_id).await? {
                    Some(pool) => Ok(pool),
                    None => Err(refused),
                }
            }
            Err(e) => return Err(e),
        };
        // The pool takes its opt-out, two-way and keyword settings from a first member that is a
        // phone number; a sender id has none, and the pool starts with the account's defaults.
        let number = match &member {
            Identity::Number(n) => Some(n.as_ref()),
            Identity::SenderId(_) => None,
        };
        let pool = Pool {
            pool_arn: scope.arn(ResourceKind::Pool, &pool_id),
            pool_id: pool_id.clone(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            message_type: spec.message_type,
            opt_out_list_name: number.map_or_else(|| DEFAULT_LIST.to_string(), |n| n.opt_out_list_name.clone()),
            self_managed_opt_outs_enabled: number.is_some_and(|n| n.self_managed_opt_outs_enabled),
            shared_routes_enabled: false,
            two_way_enabled: number.is_some_and(|n| n.two_way_enabled),
            two_way_channel_arn: number.and_then(|n| n.two_way_channel_arn.clone()),
            two_way_channel_role: number.and_then(|n| n.two_way_channel_role.clone()),
            deletion_protection_enabled: spec.deletion_protection_enabled,
            status: PoolStatus::Active,
            deleted: false,
            members: [(member_id.clone(), member.pool_member(spec.message_type))].into_iter().collect(),
            tags: spec.tags.clone(),
            // "This includes keywords": the number's own (the built-in ones every pool has).
            keywords: number.map(|n| n.keywords.clone()).unwrap_or_default(),
            created_timestamp_ms: meta.at_ms,
            client_token: spec.client_token.clone(),
            fenced: Default::default(),
            foreclosed: false,
        };
        let quota = self.quotas.pools_per_account;
        let limit = quota_limit(scope, ResourceKind::Pool, quota);
        let created = self
            .execute_within(
                &self.pools,
                &pool_id,
                Activation::Fresh,
                meta,
                PoolAction::Create(Box::new(pool)),
                &[limit],
            )
            .await
            .map_err(|e| over_quota(e, scope, ResourceKind::Pool, quota))
            .and_then(|s| {
                s.0.ok_or_else(|| ServiceError::Invariant(format!("created pool {pool_id} has no state")))
            });
        match self.settle(meta, &member, &pool_id, Change::Join, created).await {
            Ok((_, pool)) => Ok(pool),
            Err(e) if !lost_token_race(&e) => Err(e),
            Err(_) => {
                // Another request created the pool with this token first: its answer is ours.
                let token = spec.client_token.as_deref().unwrap_or_default();
                let earlier = self.token_race_winner(scope, "CreatePool", ResourceKind::Pool, token).await?;
                self.earlier_pool(scope, &spec, &earlier).await
            }
        }
    }

    /// The pool an earlier request with the same client token created, if this request asks for
    /// the same pool.
    /// The pool of an earlier attempt of this `CreatePool` (same client token) still in flight
    /// when this one's first step was refused because its member is joining a pool: with several
    /// nodes a retry can reach a node other than the one carrying out the first attempt (the
    /// per-token lock is each node's own), and it is answered with that attempt's pool once the
    /// pool exists, as on one node. `None` (the refusal stands) without a token, or once the
    /// member is no longer joining a pool still to be created and no pool has the token, or
    /// after [`ATTEMPT_WAIT`].
    async fn pool_of_an_attempt_in_flight(&self, scope: &Scope, spec: &NewPool, member_id: &str) -> Result<Option<Pool>, ServiceError> {
        /// How long a retry waits for the attempt in flight: far beyond what a creation takes,
        /// well within the request's deadline.
        const ATTEMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
        let Some(token) = spec.client_token.as_deref() else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        loop {
            if let Some(earlier) = self.token_owner(scope, "CreatePool", token).await? {
                return self.earlier_pool(scope, spec, &earlier).await.map(Some);
            }
            // Joining a pool that does not exist yet: a creation in flight, perhaps the first
            // attempt's. Anything else (settled in a pool, joining an existing one) is another
            // request's doing, and the refusal stands at once.
            let member = self.member_now(member_id).await?;
            let mut creating = false;
            for pool in member
                .pools_to_ask()
                .iter()
                .filter(|p| member.standing(p) == Some(Standing::Associating))
            {
                creating |= self.store.stream_head(pool).await?.version == 0;
            }
            if !creating || started.elapsed() >= ATTEMPT_WAIT {
                // The attempt may have ended between the two reads.
                return match self.token_owner(scope, "CreatePool", token).await? {
                    Some(earlier) => self.earlier_pool(scope, spec, &earlier).await.map(Some),
                    None => Ok(None),
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn earlier_pool(&self, scope: &Scope, spec: &NewPool, earlier: &str) -> Result<Pool, ServiceError> {
        self.check_token_reuse::<PoolState>(earlier, |action| match action {
            PoolAction::Create(pool) => Some((pool.client_token == spec.client_token, spec.asked_for(scope, pool.as_ref()))),
            _ => None,
        })
        .await?;
        let state = self.pool_state(earlier).await?;
        state.0.ok_or_else(|| not_found(ResourceKind::Pool, earlier))
    }

    /// `DeletePool`: deletes, then lets every member go: those the deletion recorded, which
    /// include a member whose join reached the pool after any read of it the request could make.
    pub async fn delete_pool(&self, meta: &CommandMeta, pool: &str) -> Result<Pool, ServiceError> {
        let pool_id = self.owned(ResourceKind::Pool, &meta.scope, pool).await?;
        self.live_pool(&meta.scope, &pool_id).await?;
        let deleted = self.pool(meta, &pool_id, PoolAction::Delete).await?;
        for member in self.members_at_deletion(&pool_id).await? {
            let detach = MembershipAction::DetachFromDeletedPool { pool_id: pool_id.clone() };
            self.member_step(meta, &member, detach).await?;
        }
        Ok(deleted)
    }

    /// The members a deleted pool held when it was deleted, as its `PoolDeleted` event records
    /// them (its state forgets them). Read back from the stream's end: after the deletion only
    /// refusals of late commands follow it.
    async fn members_at_deletion(&self, pool_id: &str) -> Result<Vec<String>, ServiceError> {
        match self.deletion(pool_id).await? {
            Some((_, members)) => Ok(members),
            None => Err(ServiceError::Invariant(format!(
                "pool {pool_id} is deleted but its stream records no deletion"
            ))),
        }
    }

    /// When a pool was deleted and the members its `PoolDeleted` event records, read back from
    /// the stream's end (after the deletion only refusals of late commands follow it); `None`
    /// if its stream records no deletion.
    pub(super) async fn deletion(&self, pool_id: &str) -> Result<Option<(u64, Vec<String>)>, ServiceError> {
        const PAGE: u64 = 32;
        let mut until = None;
        loop {
            let page = self.last_events(pool_id, until, PAGE).await?;
            let Some(first) = page.first() else { return Ok(None) };
            until = Some(first.version - 1);
            for e in page.iter().rev().filter(|e| e.event_type == "PoolDeleted") {
                if let PoolEvent::PoolDeleted { members } = decode_event(e)? {
                    return Ok(Some((e.timestamp_ms, members)));
                }
            }
        }
    }

    /// `UpdatePool`: an opt-out list it names must exist, now and when the change commits.
    pub async fn update_pool(&self, meta: &CommandMeta, pool: &str, changes: PoolChanges) -> Result<Pool, ServiceError> {
        let pool_id = self.owned(ResourceKind::Pool, &meta.scope, pool).await?;
        let Some(list) = changes.opt_out_list_name.clone().filter(|l| l != DEFAULT_LIST) else {
            return self.pool(meta, &pool_id, PoolAction::Update(changes)).await;
        };
        // As for a number: a list found gone is the pool's refusal, recorded on its stream.
        let state = self
            .update_naming_list(meta, &list, |list_exists, limits| {
                let update = PoolAction::UpdateNamingList {
                    changes: changes.clone(),
                    list_exists,
                };
                let pool_id = &pool_id;
                async move {
                    self.execute_within(&self.pools, pool_id, Activation::Existing, meta, update, &limits)
                        .await
                }
            })
            .await?;
        state.0.ok_or_else(|| not_found(ResourceKind::Pool, &pool_id))
    }

    /// A live pool of the caller (for `ListPoolOriginationIdentities`).
    pub async fn pool_of(&self, scope: &Scope, pool: &str) -> Result<Pool, ServiceError> {
        let pool_id = self.owned(ResourceKind::Pool, scope, pool).await?;
        self.live_pool(scope, &pool_id).await
    }
}

/// Which pool change a number is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Join,
    Leave,
}

/// Why a pool step was undone, as the number's abort event records it.
fn abort_reason(e: &ServiceError) -> Rejection {
    match e {
        ServiceError::Rejected(r) => r.clone(),
        other => Rejection::validation(ValidationReason::InvalidRequest, "PoolId", crate::error_chain(other)),
    }
}

/// A pool step whose outcome is unknown (its append may still be stored) is decided for good
/// when it fails, as the reconciler decides a change left alone: the pool is fenced (a pool
/// never created is foreclosed) and asked, and the member's last step follows its answer.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::ExecuteError;
    use crate::domain::types::{ConflictReason, NumberCapability, NumberStatus, NumberType};
    use crate::now_ms;
    use crate::service::numbers::NewNumber;
    use crate::store::{AppendError, StoreError};

    /// A request that begins now, after any fence set so far (a fence refuses the steps of
    /// requests begun at or before its millisecond).
    fn begun_now() -> CommandMeta {
        std::thread::sleep(std::time::Duration::from_millis(2));
        meta(now_ms())
    }

    fn meta(at_ms: u64) -> CommandMeta {
        CommandMeta {
            request_id: format!("request-{at_ms}"),
            scope: Scope::new("111122223333", "us-east-1"),
            at_ms,
            operation: "Test".into(),
        }
    }

    /// What a failed publish that may still be stored looks like to the service.
    fn outcome_unknown(stream: &str) -> ServiceError {
        ServiceError::Execute {
            stream: stream.into(),
            source: ExecuteError::Append(AppendError::Storage(StoreError::Corrupt {
                key: stream.into(),
                message: "no acknowledgement".into(),
            })),
        }
    }

    async fn number(service: &LifecycleService) -> String {
        let spec = NewNumber {
            iso_country_code: "US".into(),
            message_type: MessageType::Transactional,
            number_capabilities: vec![NumberCapability::Sms],
            number_type: NumberType::LongCode,
            opt_out_list_name: None,
            pool_id: None,
            registration_id: None,
            deletion_protection_enabled: false,
            international_sending_enabled: false,
            tags: vec![],
            client_token: None,
            preference: None,
        };
        let now = now_ms();
        service
            .request_phone_number(&meta(now), spec)
            .await
            .expect("number")
            .phone_number_id
    }

    async fn begin_join(service: &LifecycleService, meta: &CommandMeta, member: &str, pool_id: &str) -> Identity {
        let begin = MembershipAction::BeginAssociation {
            pool_id: pool_id.into(),
            pool_message_type: MessageType::Transactional,
            pool_settings: None,
            iso_country_code: None,
            client_token: None,
        };
        service.member_step(meta, member, begin).await.expect("begin")
    }

    /// The rest of a join whose member's first step is taken: the pool's step, then the member's.
    async fn finish_join(
        service: &LifecycleService,
        meta: &CommandMeta,
        member: &Identity,
        pool_id: &str,
    ) -> Result<Identity, ServiceError> {
        let step = PoolAction::AddMember(member.pool_member(MessageType::Transactional));
        let added = service.pool(meta, pool_id, step).await;
        Ok(service.settle(meta, member, pool_id, Change::Join, added).await?.0)
    }

    async fn events_of(service: &LifecycleService, stream: &str) -> Vec<String> {
        let events = service.store.read_stream(stream, 1, usize::MAX).await.expect("read");
        events.into_iter().map(|e| e.event_type).collect()
    }

    /// A service on a fresh embedded log in `dir`, with a pool whose first member is a number.
    async fn service_with_pool(dir: &std::path::Path) -> (std::sync::Arc<LifecycleService>, Pool) {
        let config = crate::config::Config::defaults_with_data_dir(dir).expect("config");
        let service = crate::server::service(&config, config.store.open(dir).expect("store"));
        let pool = new_pool(&service).await;
        (service, pool)
    }

    /// A new pool whose first member is a new number.
    async fn new_pool(service: &LifecycleService) -> Pool {
        let spec = NewPool {
            origination_identity: number(service).await,
            iso_country_code: None,
            message_type: MessageType::Transactional,
            deletion_protection_enabled: false,
            tags: vec![],
            client_token: None,
        };
        service.create_pool(&begun_now(), spec).await.expect("pool")
    }

    /// Whether `result` is the conflict refusal `reason`.
    fn refused<T>(result: &Result<T, ServiceError>, reason: ConflictReason) -> bool {
        matches!(result, Err(ServiceError::Rejected(Rejection::Conflict { reason: r, .. })) if *r == reason)
    }

    /// The number `id`, settled outside any pool.
    async fn assert_outside_pools(service: &LifecycleService, id: &str) {
        let n = LifecycleService::state(&service.numbers, id)
            .await
            .expect("state")
            .0
            .expect("number");
        assert_eq!(
            (n.status, n.pool_id, n.pending_pool_id),
            (crate::domain::types::NumberStatus::Active, None, None)
        );
    }

    #[actix_rt::test]
    async fn a_pool_step_of_unknown_outcome_is_decided_for_good() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let joiner = number(&service).await;

        // The pool took the step, though its writer was told otherwise: the join stands.
        let request = begun_now();
        let member = begin_join(&service, &request, &joiner, &pool.pool_id).await;
        let add = PoolAction::AddMember(member.pool_member(MessageType::Transactional));
        service.pool(&request, &pool.pool_id, add.clone()).await.expect("the pool takes it");
        let (joined, in_pool) = service
            .settle(&request, &member, &pool.pool_id, Change::Join, Err(outcome_unknown(&pool.pool_id)))
            .await
            .expect("the join stands");
        assert!(joined.is_in_pool(&pool.pool_id) && in_pool.members.contains_key(&joiner));
        assert!(events_of(&service, &pool.pool_id).await.contains(&"ChangesFenced".to_string()));

        // A leave the pool took stands too.
        let leave = MembershipAction::BeginDisassociation {
            pool_id: pool.pool_id.clone(),
            iso_country_code: None,
            client_token: None,
        };
        let request = begun_now();
        let member = service.member_step(&request, &joiner, leave).await.expect("begin leaving");
        let remove = PoolAction::RemoveMember {
            origination_identity: joiner.clone(),
        };
        service.pool(&request, &pool.pool_id, remove).await.expect("the pool lets it go");
        service
            .settle(&request, &member, &pool.pool_id, Change::Leave, Err(outcome_unknown(&pool.pool_id)))
            .await
            .expect("the leave stands");

        // The pool did not take it (yet): the join is undone, and the step, arriving late, is
        // refused by the fence.
        let request = begun_now();
        let member = begin_join(&service, &request, &joiner, &pool.pool_id).await;
        let failed = service
            .settle(&request, &member, &pool.pool_id, Change::Join, Err(outcome_unknown(&pool.pool_id)))
            .await;
        assert!(matches!(failed, Err(ref e) if e.outcome_unknown()), "{failed:?}");
        let late = service.pool(&request, &pool.pool_id, add).await;
        assert!(refused(&late, ConflictReason::ResourceModificationNotAllowed), "{late:?}");
        assert_outside_pools(&service, &joiner).await;

        // A pool whose creation failed so is foreclosed: its creation, arriving late, is refused.
        let request = begun_now();
        let fresh = ResourceKind::Pool.new_id();
        let member = begin_join(&service, &request, &joiner, &fresh).await;
        let failed = service
            .settle(&request, &member, &fresh, Change::Join, Err(outcome_unknown(&fresh)))
            .await;
        assert!(failed.is_err());
        assert_eq!(events_of(&service, &fresh).await, ["CreationForeclosed"]);
        let create = PoolAction::Create(Box::new(Pool {
            pool_id: fresh.clone(),
            members: [(joiner.clone(), member.pool_member(MessageType::Transactional))]
                .into_iter()
                .collect(),
            ..pool.clone()
        }));
        let late = service.execute(&service.pools, &fresh, Activation::Fresh, &request, create).await;
        assert!(refused(&late, ConflictReason::ResourceNotActive), "{late:?}");
        assert_outside_pools(&service, &joiner).await;
    }

    /// A change given up at time T is finished only if the member is still in a change begun at
    /// or before T: a change the member began afterwards (the request was told to try again,
    /// and did) is left to its own request, not undone under it.
    #[actix_rt::test]
    async fn finishing_a_given_up_change_leaves_a_later_one_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let joiner = number(&service).await;
        // The first request began, then gave up by itself (its pool step was refused).
        let gave_up = begun_now();
        begin_join(&service, &gave_up, &joiner, &pool.pool_id).await;
        let abort = MembershipAction::AbortAssociation {
            pool_id: pool.pool_id.clone(),
            reason: abort_reason(&outcome_unknown(&pool.pool_id)),
        };
        service.member_step(&gave_up, &joiner, abort).await.expect("aborted");
        // Its retry begins after the reconciler's decision to give up what began by then.
        let retry = begun_now();
        begin_join(&service, &retry, &joiner, &pool.pool_id).await;
        let (_, finished) = service
            .finish_change(&begun_now(), &joiner, &pool.pool_id, gave_up.at_ms)
            .await
            .expect("finish");
        assert!(finished.is_none(), "the retry's change was finished under it: {finished:?}");
        let member = LifecycleService::state(&service.numbers, &joiner)
            .await
            .expect("state")
            .0
            .expect("number");
        assert_eq!(
            (member.status, member.pending_pool_id.as_deref()),
            (crate::domain::types::NumberStatus::Associating, Some(pool.pool_id.as_str()))
        );
        // The retry goes on: its pool step is not fenced, and it completes.
        let member = Identity::Number(Box::new(member));
        let joined = finish_join(&service, &retry, &member, &pool.pool_id)
            .await
            .expect("the retry joins");
        assert!(joined.is_in_pool(&pool.pool_id));
    }

    /// An `UpdatePool` that turns on the pool's self-managed opt-outs (which a number must then
    /// share to join it).
    async fn turn_on_self_managed_opt_outs(service: &LifecycleService, pool: &Pool) {
        let changes = PoolChanges {
            self_managed_opt_outs_enabled: Some(true),
            ..Default::default()
        };
        service.update_pool(&begun_now(), &pool.pool_id, changes).await.expect("UpdatePool");
    }

    /// A join decided on the pool's settings as a lagging view had them (before an `UpdatePool`
    /// that view has not seen) is refused by the pool itself, which compares the number's
    /// settings with its own as it records the member; the number's first step is undone.
    #[actix_rt::test]
    async fn the_pool_refuses_a_number_that_no_longer_matches_it() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, seen_before) = service_with_pool(dir.path()).await;
        let joiner = number(&service).await;
        turn_on_self_managed_opt_outs(&service, &seen_before).await;
        let joined = service.join_pool(&begun_now(), &joiner, &seen_before, None, None).await;
        assert!(refused(&joined, ConflictReason::SelfManagedOptOutsMismatch), "{joined:?}");
        let pool_events = events_of(&service, &seen_before.pool_id).await;
        assert_eq!(pool_events.last().map(String::as_str), Some("AssociationRejected"));
        assert_outside_pools(&service, &joiner).await;
    }

    /// A sender id changes two pools at once (AWS: "A sender ID can be associated with multiple
    /// pools"): the reconciler settles the change of one that was left alone long enough (its
    /// pool never recorded the join: undone, and that pool fenced) and leaves the recent change
    /// of the other to its request, which then completes. Each pool's change is timed from its
    /// own first step, not the member's latest.
    #[actix_rt::test]
    async fn the_reconciler_settles_each_pool_of_a_sender_id_on_its_own() {
        use crate::domain::membership::Standing;
        let dir = tempfile::tempdir().expect("dir");
        let (service, stale_pool) = service_with_pool(dir.path()).await;
        let recent_pool = new_pool(&service).await;
        let leased = crate::service::sender_ids::NewSenderId {
            sender_id: "Both".into(),
            iso_country_code: "GB".into(),
            message_types: vec![],
            deletion_protection_enabled: false,
            tags: vec![],
            client_token: None,
        };
        let sender = service.request_sender_id(&begun_now(), leased).await.expect("sender id").id;

        // A join left alone (its request is gone), then, a while later, a join under way.
        begin_join(&service, &begun_now(), &sender, &stale_pool.pool_id).await;
        const LEFT_ALONE_FOR: std::time::Duration = std::time::Duration::from_millis(500);
        std::thread::sleep(2 * LEFT_ALONE_FOR);
        let under_way = begun_now();
        let member = begin_join(&service, &under_way, &sender, &recent_pool.pool_id).await;

        let repaired = service.recover_interrupted(LEFT_ALONE_FOR).await.expect("recover");
        assert_eq!(repaired, 1);
        let now = service.member_now(&sender).await.expect("sender id");
        assert_eq!(
            (now.standing(&stale_pool.pool_id), now.standing(&recent_pool.pool_id)),
            (None, Some(Standing::Associating))
        );
        let fenced = |events: Vec<String>| events.contains(&"ChangesFenced".to_string());
        assert!(fenced(events_of(&service, &stale_pool.pool_id).await));
        assert!(!fenced(events_of(&service, &recent_pool.pool_id).await));
        let joined = finish_join(&service, &under_way, &member, &recent_pool.pool_id)
            .await
            .expect("the join under way completes");
        assert!(joined.is_in_pool(&recent_pool.pool_id) && joined.standing(&stale_pool.pool_id).is_none());
    }

    /// A number made by a `RequestPhoneNumber` into `pool` with client token `token` whose
    /// attempt then stopped, before its join.
    async fn made_into(service: &LifecycleService, pool: &Pool, e164: &str, token: &str) -> String {
        use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PoolToJoin};
        let scope = Scope::new("111122223333", "us-east-1");
        let id = ResourceKind::PhoneNumber.new_id();
        let mut made = PhoneNumber::example(&id, &scope.account, &scope.region);
        made.phone_number = e164.into();
        made.client_token = Some(token.into());
        let request = PhoneNumberAction::request(made, Some(PoolToJoin::of(pool)));
        service
            .execute(&service.numbers, &id, Activation::Fresh, &begun_now(), request)
            .await
            .expect("made");
        id
    }

    /// `RequestPhoneNumber` into `pool` with client token `token` (what `made_into` made).
    fn request_into(pool: &Pool, token: &str) -> NewNumber {
        NewNumber {
            iso_country_code: "US".into(),
            message_type: MessageType::Transactional,
            number_capabilities: vec![NumberCapability::Sms],
            number_type: NumberType::LongCode,
            opt_out_list_name: None,
            pool_id: Some(pool.pool_id.clone()),
            registration_id: None,
            deletion_protection_enabled: false,
            international_sending_enabled: false,
            tags: vec![],
            client_token: Some(token.into()),
            preference: None,
        }
    }

    /// RequestPhoneNumber into a pool, with a client token, retried after the first attempt
    /// made the number: the retry joins it when its join never began or was undone; it does
    /// not start a second join beside one under way, but waits for its outcome; and once the
    /// number has joined, a retry does not put it back after it left.
    #[actix_rt::test]
    async fn a_retried_request_into_a_pool_joins_the_number_once() {
        use crate::domain::phone_number::PhoneNumber;
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let made = |e164: &'static str, token: &'static str| made_into(&service, &pool, e164, token);
        let retry = |token: &str| request_into(&pool, token);
        let in_pool = |n: &PhoneNumber| (n.pool_id.clone(), n.pending_pool_id.clone(), n.status);
        let joined_state = (Some(pool.pool_id.clone()), None, NumberStatus::Active);

        // 1. Its join never began: the retry joins it. Once it has left, a retry does not put
        //    it back.
        let stopped = made("+12065550999", "stopped").await;
        let joined = service.request_phone_number(&begun_now(), retry("stopped")).await.expect("retried");
        assert_eq!(joined.phone_number_id, stopped);
        assert_eq!(in_pool(&joined), joined_state);
        service
            .disassociate(&begun_now(), &pool.pool_id, &stopped, None, None)
            .await
            .expect("left");
        let again = service
            .request_phone_number(&begun_now(), retry("stopped"))
            .await
            .expect("retried again");
        assert_eq!(again.pool_id, None, "put back into the pool it left");

        // 2. Its join was undone after a failure (its outcome unknown to the caller): a retry
        //    joins.
        let undone = made("+12065550998", "undone").await;
        let first = begun_now();
        begin_join(&service, &first, &undone, &pool.pool_id).await;
        let undo = MembershipAction::AbortAssociation {
            pool_id: pool.pool_id.clone(),
            reason: abort_reason(&outcome_unknown(&pool.pool_id)),
        };
        service.member_step(&first, &undone, undo).await.expect("undone");
        let joined = service.request_phone_number(&begun_now(), retry("undone")).await.expect("retried");
        assert_eq!(
            (joined.phone_number_id.as_str(), in_pool(&joined)),
            (undone.as_str(), joined_state.clone())
        );

        // 3. Its join is under way: the retry starts no join of its own, and answers once that
        //    join is done, with the number in the pool.
        let slow = made("+12065550997", "slow").await;
        let first = begun_now();
        let member = begin_join(&service, &first, &slow, &pool.pool_id).await;
        let waiting = {
            let (service, spec) = (service.clone(), retry("slow"));
            actix_rt::spawn(async move { service.request_phone_number(&begun_now(), spec).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the retry answered while the join was under way");
        let joined = finish_join(&service, &first, &member, &pool.pool_id)
            .await
            .expect("the first attempt joins");
        assert!(joined.is_in_pool(&pool.pool_id));
        let answered = waiting.await.expect("the retry's task").expect("retried");
        assert_eq!(in_pool(&answered), joined_state);
        let starts = events_of(&service, &slow).await;
        assert_eq!(starts.iter().filter(|e| *e == "PoolAssociationStarted").count(), 1, "{starts:?}");
    }

    /// Whether `answer` is the refusal of a pool that does not exist.
    fn pool_gone<T>(answer: &Result<T, ServiceError>) -> bool {
        matches!(answer, Err(ServiceError::Rejected(Rejection::NotFound { resource_type, .. })) if *resource_type == crate::domain::types::ResourceType::Pool)
    }

    async fn status_of(service: &LifecycleService, id: String) -> NumberStatus {
        service.current_number(&id).await.expect("number").status
    }

    /// A request into a pool whose join is refused after it made the number (the pool's
    /// settings changed, or the pool was deleted, in between) fails and leaves no number
    /// leased: the number is withdrawn, deletion protection or not (it was never the caller's),
    /// and a retry of the request (the same client token) answers the same refusal, writing
    /// nothing more.
    #[actix_rt::test]
    async fn a_request_whose_join_is_refused_leaves_no_number_leased() {
        use crate::domain::phone_number::PhoneNumberChanges;
        let dir = tempfile::tempdir().expect("dir");
        let (service, seen_before) = service_with_pool(dir.path()).await;
        let status = |id: String| status_of(&service, id);

        // 1. The pool refuses the join itself: its settings changed after the request read them.
        let made = made_into(&service, &seen_before, "+12065550996", "changed").await;
        let protect = PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        };
        service.update_phone_number(&begun_now(), &made, protect).await.expect("protected");
        turn_on_self_managed_opt_outs(&service, &seen_before).await;
        let answered = service.join_requested(&begun_now(), &made, &seen_before, Some("changed")).await;
        assert!(refused(&answered, ConflictReason::SelfManagedOptOutsMismatch), "{answered:?}");
        assert_eq!(status(made.clone()).await, NumberStatus::Deleted);
        let written = events_of(&service, &made).await;
        assert_eq!(written.last().map(String::as_str), Some("RequestWithdrawn"), "{written:?}");
        let again = service
            .request_phone_number(&begun_now(), request_into(&seen_before, "changed"))
            .await;
        assert!(refused(&again, ConflictReason::SelfManagedOptOutsMismatch), "{again:?}");
        assert_eq!(events_of(&service, &made).await, written, "the retry wrote nothing");

        // 2. The first attempt stopped before its join, the number was used meanwhile (a long
        //    history before the withdrawal), and the pool was deleted before the retry: the
        //    retry withdraws the number and answers that the pool is gone, and so does the next.
        let pool = new_pool(&service).await;
        let made = made_into(&service, &pool, "+12065550995", "gone").await;
        for round in 0..20 {
            let toggle = PhoneNumberChanges {
                international_sending_enabled: Some(round % 2 == 0),
                ..Default::default()
            };
            service.update_phone_number(&begun_now(), &made, toggle).await.expect("updated");
        }
        service.delete_pool(&begun_now(), &pool.pool_id).await.expect("DeletePool");
        let answered = service.request_phone_number(&begun_now(), request_into(&pool, "gone")).await;
        assert!(pool_gone(&answered), "{answered:?}");
        assert_eq!(status(made.clone()).await, NumberStatus::Deleted);
        let again = service.request_phone_number(&begun_now(), request_into(&pool, "gone")).await;
        assert!(pool_gone(&again), "{again:?}");
    }

    /// A retry of a request into a pool that finds the first attempt's join under way answers
    /// that join's outcome once it is known, never the number while it is joining: here the
    /// pool is deleted before the join's step, so the join is refused, the number withdrawn,
    /// and the retry answers the refusal.
    #[actix_rt::test]
    async fn a_retry_answers_the_outcome_of_the_join_under_way() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let made = made_into(&service, &pool, "+12065550994", "under-way").await;
        let first = begun_now();
        let member = begin_join(&service, &first, &made, &pool.pool_id).await;
        let retry = {
            let (service, spec) = (service.clone(), request_into(&pool, "under-way"));
            actix_rt::spawn(async move { service.request_phone_number(&begun_now(), spec).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!retry.is_finished(), "the retry answered while the join was under way");
        service.delete_pool(&begun_now(), &pool.pool_id).await.expect("DeletePool");
        let refused = finish_join(&service, &first, &member, &pool.pool_id).await;
        assert!(pool_gone(&refused), "{refused:?}");
        let answered = retry.await.expect("the retry's task");
        assert!(pool_gone(&answered), "{answered:?}");
        assert_eq!(status_of(&service, made).await, NumberStatus::Deleted);
    }

    /// A join refused only because another attempt's join was under way is withdrawn with the
    /// refusal that other join met (its undoing's, or the pool's deletion), not with its own,
    /// which only says that the other join was under way: every attempt answers the pool's
    /// refusal.
    #[actix_rt::test]
    async fn a_withdrawal_records_the_pools_refusal_not_a_join_under_way() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let pools_refusal = Rejection::not_found(ResourceKind::Pool, &pool.pool_id);
        let endings = [
            MembershipAction::AbortAssociation {
                pool_id: pool.pool_id.clone(),
                reason: pools_refusal.clone(),
            },
            MembershipAction::DetachFromDeletedPool {
                pool_id: pool.pool_id.clone(),
            },
        ];
        for (i, ending) in endings.into_iter().enumerate() {
            let token = format!("beside-{i}");
            let made = made_into(&service, &pool, &format!("+1206555099{i}"), &token).await;
            let first = begun_now();
            begin_join(&service, &first, &made, &pool.pool_id).await;
            let beside = MembershipAction::BeginAssociation {
                pool_id: pool.pool_id.clone(),
                pool_message_type: MessageType::Transactional,
                pool_settings: None,
                iso_country_code: None,
                client_token: Some(token),
            };
            let Err(ServiceError::Rejected(under_way)) = service.member_step(&begun_now(), &made, beside).await else {
                panic!("a second join beside the first");
            };
            service.member_step(&first, &made, ending).await.expect("the first join ended");
            let answered = service.refused_join(&begun_now(), &made, &pool.pool_id, under_way).await;
            assert!(pool_gone(&answered), "ending {i}: {answered:?}");
            let events = service.store.read_stream(&made, 1, usize::MAX).await.expect("read");
            let withdrawn = events.iter().rev().find_map(|e| match crate::codec::decode_event(e) {
                Ok(crate::domain::phone_number::PhoneNumberEvent::RequestWithdrawn { reason, .. }) => Some(reason),
                _ => None,
            });
            assert_eq!(withdrawn.as_ref(), Some(&pools_refusal), "ending {i}");
        }
    }

    /// The refusal the number `id`'s withdrawal recorded, if it was withdrawn.
    async fn withdrawn_with(service: &LifecycleService, id: &str) -> Option<Rejection> {
        let events = service.store.read_stream(id, 1, usize::MAX).await.expect("read");
        events.iter().rev().find_map(|e| match crate::codec::decode_event(e) {
            Ok(crate::domain::phone_number::PhoneNumberEvent::RequestWithdrawn { reason, .. }) => Some(reason),
            _ => None,
        })
    }

    /// Requests into a pool whose attempts stopped between their steps (and whose callers never
    /// retried) are finished by the recovery at start-up as their retries would: a number whose
    /// join never began, or was under way, joins the pool; one the pool refused (its settings
    /// changed), or whose pool was deleted, is withdrawn with that refusal. A retry afterwards
    /// answers that outcome and writes nothing. Numbers no request left unfinished are not
    /// touched: one requested into no pool, one that joined its pool and left it; nor is one
    /// whose caller took it up (found it after the failure, and protected it).
    #[actix_rt::test]
    async fn recovery_finishes_requests_into_a_pool_that_stopped_between_their_steps() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let in_pool = |id: String| {
            let service = service.clone();
            async move { service.current_number(&id).await.expect("number").pool_id }
        };
        let never_joined = made_into(&service, &pool, "+12065550989", "never-joined").await;
        let joining = made_into(&service, &pool, "+12065550988", "joining").await;
        begin_join(&service, &begun_now(), &joining, &pool.pool_id).await;
        let refusing = new_pool(&service).await;
        let refused_number = made_into(&service, &refusing, "+12065550987", "refused").await;
        turn_on_self_managed_opt_outs(&service, &refusing).await;
        let answered = service
            .join_pool(&begun_now(), &refused_number, &refusing, None, Some("refused"))
            .await;
        assert!(refused(&answered, ConflictReason::SelfManagedOptOutsMismatch), "{answered:?}");
        let gone = new_pool(&service).await;
        let orphan = made_into(&service, &gone, "+12065550986", "orphan").await;
        service.delete_pool(&begun_now(), &gone.pool_id).await.expect("DeletePool");
        let plain = number(&service).await;
        let left = made_into(&service, &pool, "+12065550985", "left").await;
        service
            .request_phone_number(&begun_now(), request_into(&pool, "left"))
            .await
            .expect("joined");
        service
            .disassociate(&begun_now(), &pool.pool_id, &left, None, None)
            .await
            .expect("left");
        let taken_up = made_into(&service, &pool, "+12065550983", "taken-up").await;
        let protect = crate::domain::phone_number::PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        };
        service
            .update_phone_number(&begun_now(), &taken_up, protect)
            .await
            .expect("protected");
        let untouched = [
            events_of(&service, &plain).await,
            events_of(&service, &left).await,
            events_of(&service, &taken_up).await,
        ];

        let repaired = service.recover_interrupted(std::time::Duration::ZERO).await.expect("recover");
        // The join under way is a pool change first (undone: the pool never recorded it).
        assert_eq!(repaired, 5);
        assert_eq!(in_pool(never_joined.clone()).await, Some(pool.pool_id.clone()));
        assert_eq!(in_pool(joining.clone()).await, Some(pool.pool_id.clone()));
        assert_eq!(status_of(&service, refused_number.clone()).await, NumberStatus::Deleted);
        let withdrawn = withdrawn_with(&service, &refused_number).await;
        assert!(
            matches!(
                &withdrawn,
                Some(Rejection::Conflict {
                    reason: ConflictReason::SelfManagedOptOutsMismatch,
                    ..
                })
            ),
            "{withdrawn:?}"
        );
        assert_eq!(status_of(&service, orphan.clone()).await, NumberStatus::Deleted);
        assert_eq!(
            withdrawn_with(&service, &orphan).await,
            Some(Rejection::not_found(ResourceKind::Pool, &gone.pool_id))
        );
        let now = [
            events_of(&service, &plain).await,
            events_of(&service, &left).await,
            events_of(&service, &taken_up).await,
        ];
        assert_eq!(untouched, now);

        // The retries answer what recovery did, and write nothing.
        let finished = [&never_joined, &joining, &refused_number, &orphan];
        let mut written = Vec::new();
        for id in finished {
            written.push(events_of(&service, id).await);
        }
        let retry = |pool: &Pool, token: &str| {
            let (service, spec) = (service.clone(), request_into(pool, token));
            async move { service.request_phone_number(&begun_now(), spec).await }
        };
        let joined = retry(&pool, "never-joined").await.expect("retry");
        assert_eq!(
            (joined.phone_number_id, joined.pool_id),
            (never_joined.clone(), Some(pool.pool_id.clone()))
        );
        let joined = retry(&pool, "joining").await.expect("retry");
        assert_eq!(joined.phone_number_id, joining);
        let again = retry(&refusing, "refused").await;
        assert!(refused(&again, ConflictReason::SelfManagedOptOutsMismatch), "{again:?}");
        let again = retry(&gone, "orphan").await;
        assert!(pool_gone(&again), "{again:?}");
        for (id, before) in finished.into_iter().zip(written) {
            assert_eq!(events_of(&service, id).await, before, "{id}");
        }
        let repaired = service.recover_interrupted(std::time::Duration::ZERO).await.expect("recover");
        assert_eq!(repaired, 0);
    }

    /// With several nodes, the reconciler leaves a request into a pool alone while it may still
    /// be on its way (its last step more recent than `left_alone_for`), and finishes it after.
    #[actix_rt::test]
    async fn the_reconciler_leaves_a_recent_request_into_a_pool_to_itself() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        // Long enough that a busy machine does not let it pass before the first look.
        const LEFT_ALONE_FOR: std::time::Duration = std::time::Duration::from_secs(3);
        let made = made_into(&service, &pool, "+12065550984", "recent").await;
        assert_eq!(service.recover_interrupted(LEFT_ALONE_FOR).await.expect("recover"), 0);
        assert_eq!(events_of(&service, &made).await, ["PhoneNumberRequested"]);
        tokio::time::sleep(2 * LEFT_ALONE_FOR).await;
        assert_eq!(service.recover_interrupted(LEFT_ALONE_FOR).await.expect("recover"), 1);
        let n = service.current_number(&made).await.expect("number");
        assert_eq!(n.pool_id, Some(pool.pool_id.clone()));
    }

    /// A member whose standing with a pool comes from a change begun after the reconciler's
    /// fence is that change's to settle, even if the pool as the fence left it does not hold the
    /// member (the pool's step came after the fence read it): the reconciler does not take it
    /// for a member of a deleted pool and detach it. Standing from a change begun before the
    /// fence is settled as before. (Found by the stream-leader fault test: a sender id detached
    /// from a live pool that held it.)
    #[actix_rt::test]
    async fn the_reconciler_leaves_a_standing_from_a_change_begun_after_its_fence() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, pool) = service_with_pool(dir.path()).await;
        let joiner = number(&service).await;
        let fenced_at = now_ms();
        let join = begun_now();
        begin_join(&service, &join, &joiner, &pool.pool_id).await;
        let complete = MembershipAction::CompleteAssociation {
            pool_id: pool.pool_id.clone(),
        };
        service.member_step(&join, &joiner, complete).await.expect("the member's last step");
        let (_, settled) = service
            .finish_change(&begun_now(), &joiner, &pool.pool_id, fenced_at)
            .await
            .expect("finish");
        assert!(settled.is_none(), "{settled:?}");
        let now = service.member_now(&joiner).await.expect("member");
        assert_eq!(now.standing(&pool.pool_id), Some(crate::domain::membership::Standing::Associated));
        // A fence after that join settles it: the pool does not hold the member.
        let fenced_later = begun_now().at_ms;
        let (_, settled) = service
            .finish_change(&begun_now(), &joiner, &pool.pool_id, fenced_later)
            .await
            .expect("finish");
        let settled = settled.expect("settled");
        assert_eq!(settled.standing(&pool.pool_id), None);
    }
}
