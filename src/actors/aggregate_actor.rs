//! `AggregateActor<A>`: the one actor that owns an aggregate's stream (a phone number or a pool).
//!
//! On start it rebuilds its state by replaying its stream (off the async threads). Each command
//! is decided by the pure decider; the resulting events (or, for a refusal, the rejection event)
//! are appended with the actor's version as the expected version, and the actor evolves and
//! replies only once the append is durable. `AtomicResponse` keeps the mailbox closed while an
//! append is in flight, so commands for one aggregate are strictly serialized.

use std::time::{Duration, Instant};

use actix::prelude::*;
use uuid::Uuid;

use crate::domain::{event_to_parts, ActionName, Aggregate, Command, CommandMeta, Rejection};
use crate::projection::{load_state, Projected, SnapshotRecord};
use crate::store::{AppendError, AppendMeta, AppendRequest, EventStore, PendingEvent};

/// Why a command produced no answer from the domain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecuteError {
    /// The decider refused the command (the refusal is on the stream if the stream exists).
    #[error("{0}")]
    Rejected(Rejection),
    /// The log did not take the events.
    #[error("{0}")]
    Append(AppendError),
    /// The actor could not rebuild its state or is gone.
    #[error("{0}")]
    Unavailable(String),
}

/// Run a command against the aggregate.
pub struct Execute<A: Aggregate> {
    pub meta: CommandMeta,
    pub action: A::Action,
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<A, ExecuteError>;
}

/// Read the current state (typed).
pub struct GetState<A>(std::marker::PhantomData<A>);

impl<A> Default for GetState<A> {
    fn default() -> Self {
        GetState(std::marker::PhantomData)
    }
}

impl<A: Aggregate> Message for GetState<A> {
    type Result = Result<A, ExecuteError>;
}

/// The actor owning one stream.
pub struct AggregateActor<A: Projected> {
    id: String,
    store: EventStore,
    state: A,
    version: u64,
    /// Set when the stream could not be replayed: every command then fails loudly instead of
    /// deciding on a wrong state.
    broken: Option<String>,
    settings: ActorSettings,
    last_active: Instant,
}

/// How actors snapshot and passivate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorSettings {
    /// Snapshot the state every this many events (0: never).
    pub snapshot_every: u64,
    /// Stop after this long without a message (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for ActorSettings {
    fn default() -> Self {
        ActorSettings {
            snapshot_every: 100,
            idle_timeout: None,
        }
    }
}

/// Stop now (the registry evicts the least recently used actor beyond its capacity).
pub struct Passivate;

impl Message for Passivate {
    type Result = ();
}

impl<A: Projected> AggregateActor<A> {
    pub fn new(id: String, store: EventStore) -> Self {
        Self::with_settings(id, store, ActorSettings::default())
    }

    pub fn with_settings(id: String, store: EventStore, settings: ActorSettings) -> Self {
        AggregateActor {
            id,
            store,
            state: A::default(),
            version: 0,
            broken: None,
            settings,
            last_active: Instant::now(),
        }
    }

    /// The snapshot to store with an append that moves the stream from `from` to `to`, if it
    /// crosses a multiple of `snapshot_every`.
    fn snapshot_for(&self, state: &A, from: u64, to: u64) -> Option<Vec<u8>> {
        let every = self.settings.snapshot_every;
        if every == 0 || to / every == from / every {
            return None;
        }
        SnapshotRecord::of(state, to)
            .map_err(|e| tracing::warn!(error = %e, "cannot snapshot"))
            .ok()
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let id = self.id.clone();
        let read = async move { actix_rt::task::spawn_blocking(move || load_state::<A>(&store, &id)).await };
        ctx.wait(read.into_actor(self).map(|result, act, _ctx| {
            let replayed = match result {
                Ok(Ok((state, version, _replayed))) => Ok((state, version)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(crate::store::StoreError::Corrupt {
                    key: act.id.clone(),
                    message: e.to_string(),
                }),
            };
            match replayed {
                Ok((state, version)) => {
                    act.state = state;
                    act.version = version;
                    act.broken = None;
                }
                Err(e) => {
                    tracing::error!(stream = %act.id, error = %e, "cannot replay stream");
                    act.broken = Some(e.to_string());
                }
            }
        }));
    }
}

impl<A: Projected> Actor for AggregateActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Generous: the writer, not the mailbox, is where backpressure is applied.
        ctx.set_mailbox_capacity(4096);
        self.reload(ctx);
        if let Some(idle) = self.settings.idle_timeout {
            // Checked between messages only: an actor never stops with an append in flight.
            ctx.run_interval(idle / 2, move |act, ctx| {
                if act.last_active.elapsed() >= idle {
                    tracing::debug!(stream = %act.id, "passivating idle actor");
                    ctx.stop();
                }
            });
        }
    }
}

impl<A: Projected> Handler<Passivate> for AggregateActor<A> {
    type Result = ();

    fn handle(&mut self, _msg: Passivate, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

fn pending<E: serde::Serialize>(events: &[E]) -> Result<Vec<PendingEvent>, ExecuteError> {
    events
        .iter()
        .map(|e| {
            let (event_type, payload) = event_to_parts(e).map_err(|e| ExecuteError::Unavailable(e.to_string()))?;
            Ok(PendingEvent {
                event_id: Uuid::new_v4(),
                event_type,
                payload,
            })
        })
        .collect()
}

impl<A: Projected> Handler<Execute<A>> for AggregateActor<A> {
    type Result = AtomicResponse<Self, Result<A, ExecuteError>>;

    fn handle(&mut self, msg: Execute<A>, _ctx: &mut Self::Context) -> Self::Result {
        let done = |r: Result<A, ExecuteError>| AtomicResponse::new(Box::pin(fut::ready(r)));
        self.last_active = Instant::now();
        if let Some(why) = &self.broken {
            return done(Err(ExecuteError::Unavailable(why.clone())));
        }
        let command = Command {
            meta: msg.meta,
            target: self.id.clone(),
            action: msg.action,
        };
        let (events, rejection) = match self.state.decide(&command) {
            Ok(events) if events.is_empty() => return done(Ok(self.state.clone())),
            Ok(events) => (events, None),
            // A stream that never existed gets no rejection event: junk ids do not grow the log.
            Err(rejection) if self.version == 0 => return done(Err(ExecuteError::Rejected(rejection))),
            Err(rejection) => (vec![A::rejected(&command.action, &rejection)], Some(rejection)),
        };
        let after = events.iter().fold(self.state.clone(), |s, e| s.evolve(e));
        let pending = match pending(&events) {
            Ok(p) => p,
            Err(e) => return done(Err(e)),
        };
        let command_input = match serde_json::to_value(&command.action) {
            Ok(v) => v,
            Err(e) => return done(Err(ExecuteError::Unavailable(e.to_string()))),
        };
        let request = AppendRequest {
            stream_id: self.id.clone(),
            expected_version: self.version,
            meta: AppendMeta {
                timestamp_ms: command.meta.at_ms,
                account: command.meta.scope.account.clone(),
                region: command.meta.scope.region.clone(),
                request_id: command.meta.request_id.clone(),
                command_id: Uuid::new_v4(),
                command: format!("{}/{}", command.meta.operation, command.action.name()),
                command_input,
            },
            events: pending,
            index_ops: A::index_ops(&self.state, &after),
            unique_claims: A::unique_claims(&self.state, &after),
            snapshot: self.snapshot_for(&after, self.version, self.version + events.len() as u64),
        };
        let store = self.store.clone();
        let append = async move { store.append(request).await };
        AtomicResponse::new(Box::pin(append.into_actor(self).map(move |result, act, ctx| match result {
            Ok(envelopes) => {
                act.version = envelopes.last().map_or(act.version, |e| e.version);
                act.state = after;
                match rejection {
                    Some(r) => Err(ExecuteError::Rejected(r)),
                    None => Ok(act.state.clone()),
                }
            }
            Err(e) => {
                if let AppendError::WrongExpectedVersion { .. } = e {
                    // Someone else wrote this stream: our state is stale. Re-read it before the
                    // next command.
                    tracing::warn!(stream = %act.id, error = %e, "stale actor state; reloading");
                    act.reload(ctx);
                }
                // A refused command whose refusal could not be recorded is still refused.
                match rejection {
                    Some(r) if !matches!(e, AppendError::Busy | AppendError::Closed) => Err(ExecuteError::Rejected(r)),
                    _ => Err(ExecuteError::Append(e)),
                }
            }
        })))
    }
}

impl<A: Projected> Handler<GetState<A>> for AggregateActor<A> {
    type Result = Result<A, ExecuteError>;

    fn handle(&mut self, _msg: GetState<A>, _ctx: &mut Self::Context) -> Self::Result {
        self.last_active = Instant::now();
        match &self.broken {
            Some(why) => Err(ExecuteError::Unavailable(why.clone())),
            None => Ok(self.state.clone()),
        }
    }
}
