//! `AggregateActor<A>`: the one actor that owns an aggregate's stream (a phone number or a pool).
//!
//! On start it rebuilds its state by replaying its stream (off the async threads). Each command
//! is decided by the pure decider; the resulting events (or, for a refusal, the rejection event)
//! are appended with the actor's version as the expected version, and the actor evolves and
//! replies only once the append is durable. `AtomicResponse` keeps the mailbox closed while an
//! append is in flight, so commands for one aggregate are strictly serialized.

use actix::prelude::*;
use uuid::Uuid;

use crate::domain::{event_to_parts, ActionName, Aggregate, Command, CommandMeta, Rejection};
use crate::projection::{replay, Projected};
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
}

impl<A: Projected> AggregateActor<A> {
    pub fn new(id: String, store: EventStore) -> Self {
        AggregateActor {
            id,
            store,
            state: A::default(),
            version: 0,
            broken: None,
        }
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let id = self.id.clone();
        let read = async move { actix_rt::task::spawn_blocking(move || store.read_stream(&id, 1)).await };
        ctx.wait(read.into_actor(self).map(|result, act, _ctx| {
            let replayed = match result {
                Ok(Ok(envelopes)) => replay::<A>(&envelopes).map(|s| (s, envelopes.last().map_or(0, |e| e.version))),
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
        match &self.broken {
            Some(why) => Err(ExecuteError::Unavailable(why.clone())),
            None => Ok(self.state.clone()),
        }
    }
}
