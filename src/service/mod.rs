//! `LifecycleService`: the application service of the phone-number lifecycle. Each API operation
//! becomes one or more commands sent to aggregate actors, in an order that keeps the
//! cross-aggregate rules true at every moment:
//!
//! - joining a pool: number → `ASSOCIATING` (blocks release), pool adds it, number completes
//!   (or aborts if the pool refused);
//! - leaving a pool: number → `DISASSOCIATING`, pool removes it (refusing the last one), number
//!   completes (or aborts);
//! - creating a pool: number → `ASSOCIATING`, pool created holding it, number completes;
//! - deleting a pool: pool deleted (honouring deletion protection), then each member detached.
//!
//! Creations run concurrently: quotas hold through per-account reservations ([`quota`]), client
//! tokens and E.164 uniqueness through the store's unique claims ([`tokens`]). Reads for Describe
//! come from the derived index, never from actor memory ([`reads`]); [`recovery`] finishes what a
//! crash interrupted.
//!
//! Every command that the log refuses because another writer moved the stream first is sent
//! again (a few times): it wrote nothing, and its actor has re-read the stream by then.

mod contention;
mod error;
mod inbound;
mod keywords;
mod members;
mod messages;
mod numbers;
mod opt_out_lists;
mod pools;
mod quota;
mod reads;
mod recovery;
mod sender_ids;
mod tagging;
mod tokens;

use std::collections::HashMap;
use std::sync::Mutex;

pub use contention::Contention;
pub use error::ServiceError;
pub use inbound::Received;
pub use keywords::{KeywordChange, KeywordsOf};
pub use members::Identity;
pub use numbers::NewNumber;
pub use opt_out_lists::NewOptOutList;
pub use pools::NewPool;
pub use reads::Page;
pub use recovery::RECOVERY_REQUEST_PREFIX;
pub use sender_ids::NewSenderId;
pub use tagging::TagChange;

use self::error::not_found;
use crate::actors::{ActorSettings, AggregateActor, Execute, ExecuteError, GetState, Inspect, Registry};
use crate::config::Quotas;
use crate::domain::opt_out_list::OptOutListState;
use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberState};
use crate::domain::pool::{Pool, PoolAction, PoolState};
use crate::domain::sender_id::SenderIdState;
use crate::domain::{CommandMeta, ResourceKind, Scope};
use crate::numbering::NumberPicker;
use crate::projection::{owner_key, view_key, Projected};
use crate::store::Store;

/// How long a command the log refused as stale (it wrote nothing) keeps being sent again. With
/// one node a command is stale only after a failed append; with several, every node's actor of a
/// hot aggregate races the others', and the steps that end a pool change must get through even
/// while the log's leader changes, so the bound is a time (long enough to ride out a failover),
/// with a growing random pause between tries to let the racers spread out.
const STALE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks an actor (`ask`) again while its answer is "stale" (nothing written or read from a state
/// the log has moved on from; the actor re-reads the log before its next message), for up to
/// [`STALE_RETRY_FOR`], then answers `ThrottlingException`. A read is retried like a command:
/// on a node that does not own a hot aggregate, another node's writes can make several reads
/// in a row stale. `contention` learns of each lost race (for routing).
async fn retry_stale<T, F, Fut>(id: &str, contention: Option<&Contention>, ask: F) -> Result<Result<T, ExecuteError>, ServiceError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, ExecuteError>, ServiceError>>,
{
    let started = std::time::Instant::now();
    let mut tries: u64 = 0;
    loop {
        match ask().await? {
            Err(e) if e.is_retryable() && started.elapsed() < STALE_RETRY_FOR => {
                if let Some(contention) = contention {
                    contention.note(id);
                }
                tries += 1;
                tracing::debug!(stream = id, tries, error = %e, "stale; asked again");
                if tries > 1 {
                    let pause = rand::random::<u64>() % (tries.min(20) * 500);
                    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
                }
            }
            Err(e) if e.is_retryable() => {
                return Err(ServiceError::Throttled(format!(
                    "{id} is being changed by too many requests at once; retry"
                )))
            }
            other => return Ok(other),
        }
    }
}

/// How a command finds its aggregate's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    /// A stream that exists; one that was never written is "not found" and starts no actor.
    Existing,
    /// A stream about to be created under a fresh random id: nothing to read.
    Fresh,
    /// A stream named by its caller (an opt-out list, a sender id), which may or may not exist
    /// yet.
    Named,
}

/// How many actors of each kind a node has live (`GET /health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveActors {
    pub phone_numbers: usize,
    pub pools: usize,
    pub opt_out_lists: usize,
    pub sender_ids: usize,
}

/// The application service shared by all HTTP workers.
pub struct LifecycleService {
    store: Store,
    numbers: Registry<PhoneNumberState>,
    pools: Registry<PoolState>,
    lists: Registry<OptOutListState>,
    sender_ids: Registry<SenderIdState>,
    /// Scopes whose `Default` opt-out list this process has seen exist.
    defaults: Mutex<std::collections::HashSet<Scope>>,
    picker: NumberPicker,
    quotas: Quotas,
    /// Serializes requests that carry the same client token within this process (striped), so
    /// a retry normally finds its first attempt's result instead of racing it; the store's unique
    /// claim on the token is what guarantees one resource per token.
    token_locks: Vec<tokio::sync::Mutex<()>>,
    /// Creations in flight per scope and kind (see [`quota`]). A std mutex: held for a few
    /// instructions, never across an await.
    pending: Mutex<HashMap<(Scope, ResourceKind), u64>>,
    /// Signalled whenever a reservation is released.
    settled: tokio::sync::Notify,
    /// How many reservations were ever released (see [`quota`]).
    released: std::sync::atomic::AtomicU64,
    /// The aggregates this node recently lost a race for (a routing hint).
    contention: Contention,
}

impl LifecycleService {
    pub fn new(store: Store, picker: NumberPicker, quotas: Quotas, actors: ActorSettings, max_live_actors: usize) -> Self {
        LifecycleService {
            numbers: Registry::new(store.clone(), actors, max_live_actors),
            pools: Registry::new(store.clone(), actors, max_live_actors),
            lists: Registry::new(store.clone(), actors, max_live_actors),
            sender_ids: Registry::new(store.clone(), actors, max_live_actors),
            defaults: Mutex::new(std::collections::HashSet::new()),
            store,
            picker,
            quotas,
            token_locks: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
            settled: tokio::sync::Notify::new(),
            released: std::sync::atomic::AtomicU64::new(0),
            contention: Contention::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The aggregates this node recently lost a race for.
    pub fn contention(&self) -> &Contention {
        &self.contention
    }

    /// How many actors of each kind are live.
    pub fn live_actors(&self) -> LiveActors {
        LiveActors {
            phone_numbers: self.numbers.len(),
            pools: self.pools.len(),
            opt_out_lists: self.lists.len(),
            sender_ids: self.sender_ids.len(),
        }
    }

    fn resolve(kind: ResourceKind, scope: &Scope, id_or_arn: &str) -> Result<String, ServiceError> {
        kind.resolve(scope, id_or_arn).ok_or_else(|| not_found(kind, id_or_arn))
    }

    /// The id of a resource the caller's scope created (live or not), for a command on it. A
    /// resource of another account or region is not found exactly as an id that never existed
    /// is (one index read either way), before its actor is asked: a refusal it cannot see writes
    /// nothing to its stream.
    async fn owned(&self, kind: ResourceKind, scope: &Scope, id_or_arn: &str) -> Result<String, ServiceError> {
        let id = Self::resolve(kind, scope, id_or_arn)?;
        match self.store.index_get_latest(&owner_key(scope, kind, &id)).await? {
            Some(_) => Ok(id),
            None => Err(not_found(kind, id_or_arn)),
        }
    }

    /// Sends a message to the actor of `id`. An actor that was passivating when the message
    /// arrived refuses it unprocessed (`Closed`); the message then goes to a fresh actor.
    /// `create`: `id` is a fresh id for a stream about to be created.
    async fn ask<A, M>(registry: &Registry<A>, id: &str, activation: Activation, message: impl Fn() -> M) -> Result<M::Result, ServiceError>
    where
        A: Projected,
        M: actix::Message + Send + 'static,
        M::Result: Send,
        AggregateActor<A>: actix::Handler<M>,
        <AggregateActor<A> as actix::Actor>::Context: actix::dev::ToEnvelope<AggregateActor<A>, M>,
    {
        for _ in 0..8 {
            let addr = match activation {
                Activation::Fresh => registry.activate_new(id),
                Activation::Existing => registry.existing(id).await?.ok_or_else(|| not_found(A::KIND, id))?,
                Activation::Named => registry.activate(id).await?,
            };
            match addr.send(message()).await {
                Ok(result) => return Ok(result),
                Err(actix::MailboxError::Closed) => registry.forget(id, &addr),
                Err(source) => {
                    return Err(ServiceError::Mailbox {
                        stream: id.to_string(),
                        source,
                    })
                }
            }
        }
        Err(ServiceError::Invariant(format!("the actor of {id} keeps stopping")))
    }

    /// Runs a command on the aggregate `id`, sending it again if the log refused it as stale.
    async fn execute<A: Projected>(
        &self,
        registry: &Registry<A>,
        id: &str,
        activation: Activation,
        meta: &CommandMeta,
        action: A::Action,
    ) -> Result<A, ServiceError> {
        self.execute_within(registry, id, activation, meta, action, &[]).await
    }

    /// [`execute`](Self::execute), with counters the append must leave within limits (quotas).
    async fn execute_within<A: Projected>(
        &self,
        registry: &Registry<A>,
        id: &str,
        activation: Activation,
        meta: &CommandMeta,
        action: A::Action,
        counter_limits: &[crate::store::CounterLimit],
    ) -> Result<A, ServiceError> {
        let command = Execute::<A> {
            meta: meta.clone(),
            action,
            counter_limits: counter_limits.to_vec(),
            premise: None,
            otherwise: None,
        };
        self.execute_command(registry, id, activation, command).await
    }

    /// Runs `command` on the aggregate `id`, sent again while the actor answers that it was
    /// decided on a state another writer moved on from.
    async fn execute_command<A: Projected>(
        &self,
        registry: &Registry<A>,
        id: &str,
        activation: Activation,
        command: Execute<A>,
    ) -> Result<A, ServiceError> {
        let outcome = retry_stale(id, Some(&self.contention), || {
            Self::ask(registry, id, activation, || command.clone())
        })
        .await?;
        outcome.map_err(|e| ServiceError::execute(id, e))
    }

    async fn number(&self, meta: &CommandMeta, id: &str, action: PhoneNumberAction) -> Result<PhoneNumber, ServiceError> {
        let state = self.execute(&self.numbers, id, Activation::Existing, meta, action).await?;
        state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
    }

    /// The last `n` events of a stream up to version `until` (its head when `None`), oldest
    /// first: for looking back at what a stream did last without reading all of it.
    async fn last_events(&self, id: &str, until: Option<u64>, n: u64) -> Result<Vec<crate::store::EventEnvelope>, ServiceError> {
        let until = match until {
            Some(version) => version,
            None => self.store.stream_head(id).await?.version,
        };
        if until == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let from = until.saturating_sub(n - 1).max(1);
        Ok(self.store.read_stream(id, from, (until - from + 1) as usize).await?)
    }

    async fn pool(&self, meta: &CommandMeta, id: &str, action: PoolAction) -> Result<Pool, ServiceError> {
        let state = self.execute(&self.pools, id, Activation::Existing, meta, action).await?;
        state.0.ok_or_else(|| not_found(ResourceKind::Pool, id))
    }

    /// The durable state of an aggregate, from its actor. A state abandoned before it was
    /// durable (its append failed) is asked for again: the actor has rebuilt it from the log.
    async fn state<A: Projected>(registry: &Registry<A>, id: &str) -> Result<A, ServiceError> {
        Self::read_state(registry, id, GetState::<A>::default).await
    }

    /// The state the next command on `id` would be decided on, appends in flight included (see
    /// [`GetState::as_decided`]).
    async fn state_as_decided<A: Projected>(registry: &Registry<A>, id: &str) -> Result<A, ServiceError> {
        Self::read_state(registry, id, GetState::<A>::as_decided).await
    }

    /// `read` of the durable state of an aggregate, computed by its actor (see [`Inspect`]).
    async fn inspect<A: Projected, R: Send + 'static>(
        registry: &Registry<A>,
        id: &str,
        read: std::sync::Arc<dyn Fn(&A) -> R + Send + Sync>,
    ) -> Result<R, ServiceError> {
        let message = || Inspect { read: read.clone() };
        let outcome = retry_stale(id, None, || Self::ask(registry, id, Activation::Existing, message)).await?;
        outcome.map_err(|e| ServiceError::execute(id, e))
    }

    async fn read_state<A: Projected>(registry: &Registry<A>, id: &str, get: fn() -> GetState<A>) -> Result<A, ServiceError> {
        let outcome = retry_stale(id, None, || Self::ask(registry, id, Activation::Existing, get)).await?;
        outcome.map_err(|e| ServiceError::execute(id, e))
    }

    async fn pool_state(&self, id: &str) -> Result<PoolState, ServiceError> {
        Self::state(&self.pools, id).await
    }

    /// A live pool of the caller, read from its actor.
    async fn live_pool(&self, scope: &Scope, id: &str) -> Result<Pool, ServiceError> {
        let state = self.pool_state(id).await?;
        match state.0 {
            Some(p) if !p.deleted && p.account == scope.account && p.region == scope.region => Ok(p),
            _ => Err(not_found(ResourceKind::Pool, id)),
        }
    }

    /// A live pool of the caller as this node's view of the log shows it, without asking its
    /// actor: for a pool change, which reads the pool only to learn that it exists and what it
    /// sends (fixed at its creation). The pool's own step, decided in its actor, is the judge of
    /// everything else (a pool deleted since is refused there, and the member's step undone); a
    /// pool the view does not hold yet is looked for again once the view has caught up with the
    /// log, so a pool just created elsewhere is found. Going through the actor instead would
    /// queue every pool change of every node behind the pool's appends, and its reads would be
    /// superseded whenever another node wrote the pool first.
    async fn viewed_pool(&self, scope: &Scope, id: &str) -> Result<Pool, ServiceError> {
        let key = view_key(scope, ResourceKind::Pool, id);
        let bytes = self.store.index_get_latest(&key).await?;
        let pool = bytes.map(|b| reads::decode_view::<Pool>(&key, &b)).transpose()?;
        match pool {
            Some(p) if !p.deleted && p.account == scope.account && p.region == scope.region => Ok(p),
            _ => Err(not_found(ResourceKind::Pool, id)),
        }
    }

    async fn current_number(&self, id: &str) -> Result<PhoneNumber, ServiceError> {
        let state: PhoneNumberState = Self::state(&self.numbers, id).await?;
        state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
    }

    /// The number as its next command will see it (appends in flight included): for a command
    /// that re-checks what it read when it is decided.
    async fn number_as_decided(&self, id: &str) -> Result<PhoneNumber, ServiceError> {
        let state: PhoneNumberState = Self::state_as_decided(&self.numbers, id).await?;
        state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
    }
}
