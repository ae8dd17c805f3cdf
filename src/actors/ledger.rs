//! `Ledger`: the application service. Each API operation becomes one or more commands sent to
//! aggregate actors, in an order that keeps the cross-aggregate rules true at every moment:
//!
//! - joining a pool: number → `ASSOCIATING` (blocks release), pool adds it, number completes
//!   (or aborts if the pool refused);
//! - leaving a pool: number → `DISASSOCIATING`, pool removes it (refusing the last one), number
//!   completes (or aborts);
//! - creating a pool: number → `ASSOCIATING`, pool created holding it, number completes;
//! - deleting a pool: pool deleted (honouring deletion protection), then each member detached.
//!
//! Creations run concurrently: quotas hold through per-account reservations, client tokens
//! through a lock per token, and E.164 uniqueness through the store's unique claims. Reads for Describe come from the derived index, never from actor memory.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::de::DeserializeOwned;

use super::aggregate_actor::{ActorSettings, AggregateActor, Execute, ExecuteError, GetState};
use super::registry::Registry;
use crate::config::Quotas;
use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberChanges, PhoneNumberState};
use crate::domain::pool::{Pool, PoolAction, PoolMember, PoolState};
use crate::domain::types::{MessageType, NumberCapability, NumberStatus, NumberType, PoolStatus, QuotaReason, Tag, ValidationReason};
use crate::domain::{CommandMeta, Rejection, ResourceKind, Scope};
use crate::numbering::{NumberPicker, NumberPreference};
use crate::projection::{live_count_key, token_key, view_key, view_prefix, Projected};
use crate::store::{decode_counter, AppendError, EventStore, StoreError};

/// Why an operation failed, as the edge needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// A domain refusal: maps to the AWS error shape of the rejection.
    #[error("{0}")]
    Rejected(Rejection),
    /// The service is saturated: `ThrottlingException`.
    #[error("{0}")]
    Throttled(String),
    /// Anything else: `InternalServerException` (retryable).
    #[error("{0}")]
    Internal(String),
}

impl From<ExecuteError> for LedgerError {
    fn from(e: ExecuteError) -> Self {
        match e {
            ExecuteError::Rejected(r) => LedgerError::Rejected(r),
            ExecuteError::Append(AppendError::Busy) => LedgerError::Throttled("the event log is saturated; retry".into()),
            ExecuteError::Append(e) => LedgerError::Internal(e.to_string()),
            ExecuteError::Unavailable(e) => LedgerError::Internal(e),
        }
    }
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Internal(e.to_string())
    }
}

impl From<actix::MailboxError> for LedgerError {
    fn from(e: actix::MailboxError) -> Self {
        LedgerError::Internal(format!("actor unavailable: {e}"))
    }
}

/// What `RequestPhoneNumber` asks for (already validated against the model).
#[derive(Debug, Clone)]
pub struct NewNumber {
    pub iso_country_code: String,
    pub message_type: MessageType,
    pub number_capabilities: Vec<NumberCapability>,
    pub number_type: NumberType,
    pub opt_out_list_name: Option<String>,
    pub pool_id: Option<String>,
    pub registration_id: Option<String>,
    pub deletion_protection_enabled: bool,
    pub international_sending_enabled: bool,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
    pub preference: Option<NumberPreference>,
}

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

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Key of the last item when more may follow.
    pub last_key: Option<String>,
}

/// The application service shared by all HTTP workers.
pub struct Ledger {
    store: EventStore,
    numbers: Registry<PhoneNumberState>,
    pools: Registry<PoolState>,
    picker: NumberPicker,
    quotas: Quotas,
    token_locks: Vec<tokio::sync::Mutex<()>>,
    /// Creations in flight per scope and kind (see [`Ledger::reserve`]).
    pending: Mutex<HashMap<(Scope, ResourceKind), u64>>,
    /// Signalled whenever a reservation is released.
    settled: tokio::sync::Notify,
}

/// A unit of quota held by a creation in progress; released when dropped.
struct Reservation<'a> {
    ledger: &'a Ledger,
    key: (Scope, ResourceKind),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut pending = self.ledger.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.key);
            }
        }
        drop(pending);
        self.ledger.settled.notify_waiters();
    }
}

fn not_found(kind: ResourceKind, id: &str) -> LedgerError {
    LedgerError::Rejected(Rejection::not_found(kind, id))
}

impl Ledger {
    pub fn new(store: EventStore, picker: NumberPicker, quotas: Quotas, actors: ActorSettings, max_live_actors: usize) -> Self {
        Ledger {
            numbers: Registry::new(store.clone(), actors, max_live_actors),
            pools: Registry::new(store.clone(), actors, max_live_actors),
            store,
            picker,
            quotas,
            token_locks: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
            settled: tokio::sync::Notify::new(),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// For a request with a client token: the lock that serializes requests carrying that token
    /// (held by the caller until it is done), and the resource an earlier request created with it.
    async fn client_token(
        &self,
        scope: &Scope,
        operation: &str,
        token: Option<&str>,
    ) -> Result<(Option<tokio::sync::MutexGuard<'_, ()>>, Option<String>), LedgerError> {
        let Some(token) = token else { return Ok((None, None)) };
        let guard = self.token_lock(scope, operation, token).lock().await;
        let earlier = self
            .store
            .index_get(&token_key(scope, operation, token))?
            .map(|id| String::from_utf8_lossy(&id).into_owned());
        Ok((Some(guard), earlier))
    }

    /// The lock serializing requests that carry the same client token (striped: a fixed set
    /// of locks, so tokens never accumulate in memory; different tokens rarely share one).
    fn token_lock(&self, scope: &Scope, operation: &str, token: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (scope, operation, token).hash(&mut h);
        &self.token_locks[(h.finish() as usize) % self.token_locks.len()]
    }

    /// Holds one unit of the scope's quota for a creation in progress: live resources (from the
    /// index) plus creations in flight never exceed the quota, without serializing creations.
    ///
    /// A creation that just committed is briefly counted twice (in the index and as in flight)
    /// until its reservation is dropped, so at the limit the answer waits for the creations in
    /// flight to settle and then counts exactly: no spurious refusal, no excess.
    async fn reserve(&self, scope: &Scope, kind: ResourceKind, quota: u64) -> Result<Reservation<'_>, LedgerError> {
        let key = (scope.clone(), kind);
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let in_flight = pending.get(&key).copied().unwrap_or(0);
                if self.count_live(scope, kind)? + in_flight < quota {
                    *pending.entry(key.clone()).or_insert(0) += 1;
                    return Ok(Reservation { ledger: self, key });
                }
                if in_flight == 0 {
                    let (reason, what) = match kind {
                        ResourceKind::PhoneNumber => (QuotaReason::PhoneNumbersPerAccount, "phone numbers"),
                        ResourceKind::Pool => (QuotaReason::PoolsPerAccount, "pools"),
                    };
                    return Err(LedgerError::Rejected(Rejection::QuotaExceeded {
                        reason,
                        message: format!("account {} already holds {quota} {what} in {}", scope.account, scope.region),
                    }));
                }
            }
            settled.await;
        }
    }

    fn resolve(kind: ResourceKind, scope: &Scope, id_or_arn: &str) -> Result<String, LedgerError> {
        kind.resolve(scope, id_or_arn).ok_or_else(|| not_found(kind, id_or_arn))
    }

    /// Sends a message to the actor of `id`. An actor that was passivating when the message
    /// arrived refuses it unprocessed (`Closed`); the message then goes to a fresh actor.
    /// `create`: start the actor even if the stream does not exist yet.
    async fn ask<A, M>(registry: &Registry<A>, id: &str, create: bool, message: impl Fn() -> M) -> Result<M::Result, LedgerError>
    where
        A: Projected,
        M: actix::Message + Send + 'static,
        M::Result: Send,
        AggregateActor<A>: actix::Handler<M>,
        <AggregateActor<A> as actix::Actor>::Context: actix::dev::ToEnvelope<AggregateActor<A>, M>,
    {
        for _ in 0..8 {
            let addr = match create {
                true => registry.activate(id),
                false => registry.existing(id)?.ok_or_else(|| not_found(A::KIND, id))?,
            };
            match addr.send(message()).await {
                Ok(result) => return Ok(result),
                Err(actix::MailboxError::Closed) => registry.forget(id, &addr),
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Internal(format!("the actor of {id} keeps stopping")))
    }

    async fn execute<A: Projected>(
        registry: &Registry<A>,
        id: &str,
        create: bool,
        meta: &CommandMeta,
        action: A::Action,
    ) -> Result<Result<A, ExecuteError>, LedgerError> {
        Self::ask(registry, id, create, || Execute::<A> {
            meta: meta.clone(),
            action: action.clone(),
        })
        .await
    }

    async fn number(&self, meta: &CommandMeta, id: &str, action: PhoneNumberAction) -> Result<PhoneNumber, LedgerError> {
        let state = Self::execute(&self.numbers, id, false, meta, action).await??;
        state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
    }

    async fn pool(&self, meta: &CommandMeta, id: &str, action: PoolAction) -> Result<Pool, LedgerError> {
        let state = Self::execute(&self.pools, id, false, meta, action).await??;
        state.0.ok_or_else(|| not_found(ResourceKind::Pool, id))
    }

    async fn pool_state(&self, id: &str) -> Result<PoolState, LedgerError> {
        Ok(Self::ask(&self.pools, id, false, GetState::<PoolState>::default).await??)
    }

    /// A live pool of the caller, read from its actor.
    async fn live_pool(&self, scope: &Scope, id: &str) -> Result<Pool, LedgerError> {
        let state = self.pool_state(id).await?;
        match state.0 {
            Some(p) if !p.deleted && p.account == scope.account && p.region == scope.region => Ok(p),
            _ => Err(not_found(ResourceKind::Pool, id)),
        }
    }

    async fn current_number(&self, id: &str) -> Result<PhoneNumber, LedgerError> {
        let state = Self::ask(&self.numbers, id, false, GetState::<PhoneNumberState>::default).await??;
        state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
    }

    fn count_live(&self, scope: &Scope, kind: ResourceKind) -> Result<u64, LedgerError> {
        let stored = self.store.index_get(&live_count_key(scope, kind))?;
        Ok(decode_counter(stored.as_deref()).max(0) as u64)
    }

    // ---- phone numbers -------------------------------------------------------------------

    /// `RequestPhoneNumber`.
    pub async fn request_phone_number(&self, meta: &CommandMeta, spec: NewNumber) -> Result<PhoneNumber, LedgerError> {
        let scope = &meta.scope;
        let (_same_token, earlier) = self.client_token(scope, "RequestPhoneNumber", spec.client_token.as_deref()).await?;
        if let Some(id) = earlier {
            return self.current_number(&id).await;
        }
        let _reserved = self
            .reserve(scope, ResourceKind::PhoneNumber, self.quotas.phone_numbers_per_account)
            .await?;
        let pool = match &spec.pool_id {
            Some(p) => {
                let pool_id = Self::resolve(ResourceKind::Pool, scope, p)?;
                let pool = self.live_pool(scope, &pool_id).await?;
                if pool.message_type != spec.message_type {
                    return Err(LedgerError::Rejected(Rejection::conflict(
                        crate::domain::types::ConflictReason::MessageTypeMismatch,
                        ResourceKind::Pool,
                        &pool_id,
                        &format!("has message type {}, not {}", pool.message_type, spec.message_type),
                    )));
                }
                Some(pool)
            }
            None => None,
        };
        let supply = self.picker.supply(&spec.iso_country_code, spec.number_type).ok_or_else(|| {
            LedgerError::Rejected(Rejection::validation(
                ValidationReason::InvalidParameter,
                "NumberType",
                format!("{} numbers are not available in {}", spec.number_type, spec.iso_country_code),
            ))
        })?;
        let price = supply.price.clone();
        let opt_out_list_name = spec
            .opt_out_list_name
            .as_deref()
            .map(opt_out_list_name)
            .unwrap_or("Default")
            .to_string();
        // A candidate can collide with a number some account already holds (the store's
        // unique claim says so); try a few fresh candidates before giving up.
        for _ in 0..8 {
            let candidate = {
                let mut rng = rand::thread_rng();
                self.picker
                    .candidate(&spec.iso_country_code, spec.number_type, spec.preference.as_ref(), &mut rng)
            };
            let Some(e164) = candidate else { break };
            let id = ResourceKind::PhoneNumber.new_id();
            let number = PhoneNumber {
                phone_number_arn: scope.arn(ResourceKind::PhoneNumber, &id),
                phone_number_id: id.clone(),
                account: scope.account.clone(),
                region: scope.region.clone(),
                phone_number: e164,
                iso_country_code: spec.iso_country_code.clone(),
                message_type: spec.message_type,
                number_capabilities: spec.number_capabilities.clone(),
                number_type: spec.number_type,
                monthly_leasing_price: price.clone(),
                opt_out_list_name: opt_out_list_name.clone(),
                registration_id: spec.registration_id.clone(),
                self_managed_opt_outs_enabled: false,
                two_way_enabled: false,
                two_way_channel_arn: None,
                two_way_channel_role: None,
                deletion_protection_enabled: spec.deletion_protection_enabled,
                international_sending_enabled: spec.international_sending_enabled,
                status: NumberStatus::Active,
                pool_id: None,
                pending_pool_id: None,
                tags: spec.tags.clone(),
                created_timestamp_ms: meta.at_ms,
                client_token: spec.client_token.clone(),
            };
            let request = PhoneNumberAction::request(number, pool.as_ref().map(crate::domain::phone_number::PoolToJoin::of));
            match Self::execute(&self.numbers, &id, true, meta, request).await? {
                Ok(state) => {
                    let number = state
                        .0
                        .ok_or_else(|| LedgerError::Internal("requested number has no state".into()))?;
                    return match pool {
                        Some(pool) => Ok(self.join_pool(meta, &number.phone_number_id, &pool, None).await?.0),
                        None => Ok(number),
                    };
                }
                Err(ExecuteError::Append(AppendError::UniqueViolation(_))) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Rejected(Rejection::validation(
            ValidationReason::InvalidParameter,
            "NumberPreference",
            format!(
                "no available {} {} number matches the request",
                spec.iso_country_code, spec.number_type
            ),
        )))
    }

    /// `UpdatePhoneNumber`.
    pub async fn update_phone_number(
        &self,
        meta: &CommandMeta,
        id_or_arn: &str,
        changes: PhoneNumberChanges,
    ) -> Result<PhoneNumber, LedgerError> {
        let id = Self::resolve(ResourceKind::PhoneNumber, &meta.scope, id_or_arn)?;
        self.number(meta, &id, PhoneNumberAction::Update(changes)).await
    }

    /// `ReleasePhoneNumber`.
    pub async fn release_phone_number(&self, meta: &CommandMeta, id_or_arn: &str) -> Result<PhoneNumber, LedgerError> {
        let id = Self::resolve(ResourceKind::PhoneNumber, &meta.scope, id_or_arn)?;
        self.number(meta, &id, PhoneNumberAction::Release).await
    }

    // ---- pools -----------------------------------------------------------------------------

    /// Number joins an existing pool: the three steps of the module doc.
    async fn join_pool(
        &self,
        meta: &CommandMeta,
        number_id: &str,
        pool: &Pool,
        iso: Option<String>,
    ) -> Result<(PhoneNumber, Pool), LedgerError> {
        let pool_id = pool.pool_id.clone();
        let number = self
            .number(
                meta,
                number_id,
                PhoneNumberAction::BeginAssociation {
                    pool_id: pool_id.clone(),
                    pool_message_type: pool.message_type,
                    iso_country_code: iso,
                    client_token: None,
                },
            )
            .await?;
        match self.pool(meta, &pool_id, PoolAction::AddMember(member_of(&number))).await {
            Ok(pool) => {
                let number = self
                    .number(meta, number_id, PhoneNumberAction::CompleteAssociation { pool_id })
                    .await?;
                Ok((number, pool))
            }
            Err(e) => {
                let reason = abort_reason(&e);
                self.number(meta, number_id, PhoneNumberAction::AbortAssociation { pool_id, reason })
                    .await?;
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
    ) -> Result<(PhoneNumber, Pool), LedgerError> {
        let scope = &meta.scope;
        let pool_id = Self::resolve(ResourceKind::Pool, scope, pool)?;
        let number_id = Self::resolve(ResourceKind::PhoneNumber, scope, identity)?;
        let pool = self.live_pool(scope, &pool_id).await?;
        if client_token.is_some() {
            // A retried request whose first attempt succeeded gets the same answer.
            if let Ok(n) = self.current_number(&number_id).await {
                if n.pool_id.as_deref() == Some(pool_id.as_str()) && n.account == scope.account && pool.members.contains_key(&number_id) {
                    return Ok((n, pool));
                }
            }
        }
        self.join_pool(meta, &number_id, &pool, iso).await
    }

    /// `DisassociateOriginationIdentity`.
    pub async fn disassociate(
        &self,
        meta: &CommandMeta,
        pool: &str,
        identity: &str,
        iso: Option<String>,
    ) -> Result<(PhoneNumber, Pool), LedgerError> {
        let scope = &meta.scope;
        let pool_id = Self::resolve(ResourceKind::Pool, scope, pool)?;
        let number_id = Self::resolve(ResourceKind::PhoneNumber, scope, identity)?;
        self.live_pool(scope, &pool_id).await?;
        self.number(
            meta,
            &number_id,
            PhoneNumberAction::BeginDisassociation {
                pool_id: pool_id.clone(),
                iso_country_code: iso,
            },
        )
        .await?;
        match self
            .pool(
                meta,
                &pool_id,
                PoolAction::RemoveMember {
                    origination_identity: number_id.clone(),
                },
            )
            .await
        {
            Ok(pool) => {
                let number = self
                    .number(meta, &number_id, PhoneNumberAction::CompleteDisassociation { pool_id })
                    .await?;
                Ok((number, pool))
            }
            Err(e) => {
                let reason = abort_reason(&e);
                self.number(meta, &number_id, PhoneNumberAction::AbortDisassociation { pool_id, reason })
                    .await?;
                Err(e)
            }
        }
    }

    /// `CreatePool`: the new pool inherits its settings from its first origination identity.
    pub async fn create_pool(&self, meta: &CommandMeta, spec: NewPool) -> Result<Pool, LedgerError> {
        let scope = &meta.scope;
        let (_same_token, earlier) = self.client_token(scope, "CreatePool", spec.client_token.as_deref()).await?;
        if let Some(id) = earlier {
            let state = self.pool_state(&id).await?;
            return state.0.ok_or_else(|| not_found(ResourceKind::Pool, &id));
        }
        let number_id = Self::resolve(ResourceKind::PhoneNumber, scope, &spec.origination_identity)?;
        let _reserved = self.reserve(scope, ResourceKind::Pool, self.quotas.pools_per_account).await?;
        let pool_id = ResourceKind::Pool.new_id();
        let number = self
            .number(
                meta,
                &number_id,
                PhoneNumberAction::BeginAssociation {
                    pool_id: pool_id.clone(),
                    pool_message_type: spec.message_type,
                    iso_country_code: spec.iso_country_code.clone(),
                    client_token: None,
                },
            )
            .await?;
        let pool = Pool {
            pool_arn: scope.arn(ResourceKind::Pool, &pool_id),
            pool_id: pool_id.clone(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            message_type: spec.message_type,
            opt_out_list_name: number.opt_out_list_name.clone(),
            self_managed_opt_outs_enabled: number.self_managed_opt_outs_enabled,
            shared_routes_enabled: false,
            two_way_enabled: number.two_way_enabled,
            two_way_channel_arn: number.two_way_channel_arn.clone(),
            two_way_channel_role: number.two_way_channel_role.clone(),
            deletion_protection_enabled: spec.deletion_protection_enabled,
            status: PoolStatus::Active,
            deleted: false,
            members: [(number_id.clone(), member_of(&number))].into_iter().collect(),
            tags: spec.tags,
            created_timestamp_ms: meta.at_ms,
            client_token: spec.client_token,
        };
        let created = Self::execute(&self.pools, &pool_id, true, meta, PoolAction::Create(Box::new(pool)))
            .await
            .and_then(|r| r.map_err(LedgerError::from));
        match created.and_then(|s| s.0.ok_or_else(|| LedgerError::Internal("created pool has no state".into()))) {
            Ok(pool) => {
                self.number(meta, &number_id, PhoneNumberAction::CompleteAssociation { pool_id })
                    .await?;
                Ok(pool)
            }
            Err(e) => {
                let reason = abort_reason(&e);
                self.number(meta, &number_id, PhoneNumberAction::AbortAssociation { pool_id, reason })
                    .await?;
                Err(e)
            }
        }
    }

    /// `DeletePool`: deletes, then lets every member go.
    pub async fn delete_pool(&self, meta: &CommandMeta, pool: &str) -> Result<Pool, LedgerError> {
        let pool_id = Self::resolve(ResourceKind::Pool, &meta.scope, pool)?;
        let before = self.live_pool(&meta.scope, &pool_id).await?;
        let deleted = self.pool(meta, &pool_id, PoolAction::Delete).await?;
        for member in before.members.keys() {
            self.number(meta, member, PhoneNumberAction::DetachFromDeletedPool { pool_id: pool_id.clone() })
                .await?;
        }
        Ok(deleted)
    }

    /// A live pool of the caller (for `ListPoolOriginationIdentities`).
    pub async fn pool_of(&self, scope: &Scope, pool: &str) -> Result<Pool, LedgerError> {
        let pool_id = Self::resolve(ResourceKind::Pool, scope, pool)?;
        self.live_pool(scope, &pool_id).await
    }

    // ---- reads -----------------------------------------------------------------------------

    /// The live view of one resource of the caller, by id or ARN.
    pub fn view<T: DeserializeOwned>(&self, scope: &Scope, kind: ResourceKind, id_or_arn: &str) -> Result<T, LedgerError> {
        let id = Self::resolve(kind, scope, id_or_arn)?;
        let bytes = self
            .store
            .index_get(&view_key(scope, kind, &id))?
            .ok_or_else(|| not_found(kind, id_or_arn))?;
        serde_json::from_slice(&bytes).map_err(|e| LedgerError::Internal(format!("corrupt view of {id}: {e}")))
    }

    /// Live views of the caller after `after` (an id), keeping those `keep` accepts, up to `limit`.
    pub fn scan_views<T: DeserializeOwned>(
        &self,
        scope: &Scope,
        kind: ResourceKind,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, LedgerError> {
        let prefix = view_prefix(scope, kind);
        let after_key = after.map(|id| view_key(scope, kind, id));
        let mut items = Vec::new();
        let mut last_key = None;
        for item in self.store.index_scan(&prefix, after_key.as_deref()) {
            let (k, v) = item?;
            if items.len() == limit {
                return Ok(Page { items, last_key });
            }
            let view: T = serde_json::from_slice(&v).map_err(|e| LedgerError::Internal(format!("corrupt view: {e}")))?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if keep(&view) {
                items.push(view);
                last_key = Some(id);
            }
        }
        Ok(Page { items, last_key: None })
    }

    /// Finishes pool changes that a crash interrupted, so no number stays `ASSOCIATING` or
    /// `DISASSOCIATING` and no number points at a deleted pool. The pool's stream decides: a
    /// number the pool holds completes its join (or aborts its leave), any other completes its
    /// leave (or aborts its join). Runs at start-up, before requests are served.
    pub async fn recover_interrupted(&self) -> Result<usize, LedgerError> {
        let mut stuck: Vec<PhoneNumber> = Vec::new();
        for item in self.store.index_scan(b"v/", None) {
            let (key, value) = item?;
            if !key.windows(b"/phone-number/".len()).any(|w| w == b"/phone-number/") {
                continue;
            }
            let n: PhoneNumber = serde_json::from_slice(&value).map_err(|e| LedgerError::Internal(format!("corrupt view: {e}")))?;
            if n.is_changing_pools() || n.pool_id.is_some() {
                stuck.push(n);
            }
        }
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
                Err(LedgerError::Rejected(_)) => false,
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

    /// How many actors are live (phone numbers, pools).
    pub fn live_actors(&self) -> (usize, usize) {
        (self.numbers.len(), self.pools.len())
    }
}

/// Why a pool step was undone, as the number's abort event records it.
fn abort_reason(e: &LedgerError) -> Rejection {
    match e {
        LedgerError::Rejected(r) => r.clone(),
        other => Rejection::validation(ValidationReason::InvalidRequest, "PoolId", other.to_string()),
    }
}

/// The pool's record of a number.
fn member_of(n: &PhoneNumber) -> PoolMember {
    PoolMember {
        origination_identity: n.phone_number_id.clone(),
        origination_identity_arn: n.phone_number_arn.clone(),
        iso_country_code: n.iso_country_code.clone(),
        number_capabilities: n.number_capabilities.clone(),
        phone_number: n.phone_number.clone(),
        message_type: n.message_type,
    }
}

/// `OptOutListNameOrArn` → the list's name.
fn opt_out_list_name(name_or_arn: &str) -> &str {
    match name_or_arn.strip_prefix("arn:") {
        Some(_) => name_or_arn.rsplit('/').next().unwrap_or(name_or_arn),
        None => name_or_arn,
    }
}
