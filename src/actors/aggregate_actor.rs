//! `AggregateActor<A>`: the one actor that owns an aggregate's stream (a phone number or a pool).
//!
//! It starts with its state rebuilt (latest snapshot + the events after it): either handed over by
//! the registry, which read it to learn that the stream exists, or read in `started`.
//! Commands are taken strictly in mailbox order and decided by the pure decider; the resulting
//! events (or, for a refusal, the rejection event) are handed to the writer at once, with the
//! actor's version as the expected version, and the reply waits until they are durable.
//!
//! Appends are pipelined: the next command is decided on the state that includes the events
//! still in flight, and its append expects the version they will have made. The writer commits
//! in order, often in the same group, so a hot number is not limited to one flush per command.
//! If an in-flight append fails, every append decided after it fails its expected-version check
//! too (nothing decided on a state that never became durable can commit), and the actor rebuilds
//! its state from the log. Reads and no-op decisions wait until what they saw is durable.

use std::time::{Duration, Instant};

use actix::prelude::*;
use uuid::Uuid;

use crate::codec::pending_events;
use crate::domain::{ActionName, Aggregate, Command, CommandMeta, Rejection};
use crate::projection::Projected;
use crate::rehydrate::{catch_up, caught_up_with, load_state, snapshot_of, LoadedState};
use crate::store::{AppendError, AppendMeta, AppendRequest, Fallback, Snapshot, Store, StoreError};

/// Why a command produced no answer from the domain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecuteError {
    /// The decider refused the command (the refusal is on the stream if the stream exists).
    #[error("{0}")]
    Rejected(Rejection),
    /// The log did not take the events.
    #[error("the event log did not take the events")]
    Append(#[source] AppendError),
    /// The state this command was decided on included an append that failed: nothing of this
    /// command was written, and the actor has rebuilt its state from the log.
    #[error("an earlier command of this stream failed to append; nothing was written")]
    Superseded,
    /// The actor could not rebuild its state from the log.
    #[error("cannot rebuild the state of the stream")]
    Replay(#[source] StoreError),
    /// What the command was based on (its [`Premise`]) no longer holds on the state it would be
    /// decided on: nothing was decided or written; the caller reads again and asks again.
    #[error("the state this command was based on has changed; nothing was written")]
    Stale,
    /// The answer wrote nothing, and the log of a store other processes write to could not be
    /// asked whether the stream is still at the state it was decided on.
    #[error("cannot confirm with the event log that the stream is unchanged")]
    Confirm(#[source] StoreError),
    /// The command or its events could not be serialized for the log.
    #[error("cannot encode the command for the log")]
    Encode(#[source] std::sync::Arc<serde_json::Error>),
}

impl ExecuteError {
    /// Whether the command can simply be sent again: it wrote nothing, and the actor has (or will
    /// have, before the next message) a state re-read from the log.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ExecuteError::Superseded | ExecuteError::Append(AppendError::WrongExpectedVersion { .. })
        )
    }
}

/// What a command read of its own aggregate before it was sent (a send: the opt-out list its
/// number names; a reconciler: the member at the version it decided on): checked on the state,
/// and its version, the command would be decided on, in mailbox order.
///
/// A premise about the aggregate's own state needs no bound in the log: if the append lands in
/// force, every append it was pipelined behind did too, so the state it was checked on is the
/// log's at that point. A bound would let a stale command be published and voided, taking the
/// appends pipelined behind it down with it.
pub type Premise<A> = std::sync::Arc<dyn Fn(&A, u64) -> bool + Send + Sync>;

/// Run a command against the aggregate.
pub struct Execute<A: Aggregate> {
    pub meta: CommandMeta,
    pub action: A::Action,
    /// Counters the append must leave at most at these values (see
    /// [`AppendRequest::counter_limits`]); a creation names its account's quota here.
    pub counter_limits: Vec<crate::store::CounterLimit>,
    /// Refuse with [`ExecuteError::Stale`] unless this holds on the state the command would be
    /// decided on.
    pub premise: Option<Premise<A>>,
    /// The command the log decides instead if the counter limit at this index is the first out
    /// of its bounds at the append's place in the log (a send decided again as to a destination
    /// that opted out meanwhile), when it leaves the aggregate in the same state: see
    /// [`crate::store::Fallback`].
    pub otherwise: Option<(usize, A::Action)>,
}

impl<A: Aggregate> Clone for Execute<A> {
    fn clone(&self) -> Self {
        Execute {
            meta: self.meta.clone(),
            action: self.action.clone(),
            counter_limits: self.counter_limits.clone(),
            premise: self.premise.clone(),
            otherwise: self.otherwise.clone(),
        }
    }
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<A, ExecuteError>;
}

/// Read the current state (typed): by default answered once it is durable.
pub struct GetState<A> {
    /// Answer at once with the state the next command would be decided on, appends in flight
    /// included: for a caller whose command re-checks what it read when it is decided (a
    /// [`Premise`]), so that a state that never becomes durable costs it only a retry.
    pub as_decided: bool,
    kind: std::marker::PhantomData<A>,
}

impl<A> GetState<A> {
    /// The state the next command would be decided on, without waiting for appends in flight.
    pub fn as_decided() -> Self {
        GetState {
            as_decided: true,
            kind: std::marker::PhantomData,
        }
    }
}

impl<A> Default for GetState<A> {
    fn default() -> Self {
        GetState {
            as_decided: false,
            kind: std::marker::PhantomData,
        }
    }
}

impl<A: Aggregate> Message for GetState<A> {
    type Result = Result<A, ExecuteError>;
}

/// Read something of the durable state, computed in the actor: for a caller that needs a little
/// of a large state (a page of an opt-out list's numbers), without a copy of all of it.
pub struct Inspect<A, R> {
    pub read: std::sync::Arc<dyn Fn(&A) -> R + Send + Sync>,
}

impl<A: Aggregate, R: Send + 'static> Message for Inspect<A, R> {
    type Result = Result<R, ExecuteError>;
}

/// The actor owning one stream.
pub struct AggregateActor<A: Projected> {
    id: String,
    store: Store,
    state: A,
    version: u64,
    /// Set when the stream could not be replayed: every command still in the mailbox then fails
    /// loudly instead of deciding on a wrong state, and the actor stops.
    broken: Option<StoreError>,
    /// Whether the state was handed over already rebuilt (nothing to read in `started`).
    loaded: bool,
    settings: ActorSettings,
    last_active: Instant,
    /// Id of the last event of the (speculative) state: each append expects it at the head.
    last_event: Option<Uuid>,
    /// Appends handed to the writer and not yet answered.
    in_flight: usize,
    /// (generation, durable version): the generation changes whenever the state is rebuilt after
    /// a failed append, which invalidates everything decided on the speculative state.
    durable: tokio::sync::watch::Sender<(u64, u64)>,
    generation: u64,
    /// Passivation was asked while appends were in flight: stop when they are answered.
    stop_when_idle: bool,
    /// The state was rebuilt by replaying at least `snapshot_every` events (no usable snapshot,
    /// one written by an older build, say): the next append stores a snapshot, whether or not
    /// it crosses a multiple, so the next activation need not replay them all again.
    snapshot_due: bool,
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
    pub fn new(id: String, store: Store) -> Self {
        Self::with_settings(id, store, ActorSettings::default())
    }

    /// An actor that reads its state from the log when it starts.
    pub fn with_settings(id: String, store: Store, settings: ActorSettings) -> Self {
        AggregateActor {
            id,
            store,
            state: A::default(),
            version: 0,
            broken: None,
            loaded: false,
            settings,
            last_active: Instant::now(),
            last_event: None,
            in_flight: 0,
            durable: tokio::sync::watch::channel((0, 0)).0,
            generation: 0,
            stop_when_idle: false,
            snapshot_due: false,
        }
    }

    /// An actor whose state was already rebuilt from the log (by its registry).
    pub fn loaded(id: String, store: Store, settings: ActorSettings, loaded: LoadedState<A>) -> Self {
        let mut actor = Self::with_settings(id, store, settings);
        actor.adopt(loaded);
        actor.loaded = true;
        actor
    }

    fn adopt(&mut self, loaded: LoadedState<A>) {
        let every = snapshot_interval(self.settings.snapshot_every, &loaded.state);
        self.snapshot_due = every > 0 && loaded.replayed as u64 >= every;
        self.state = loaded.state;
        self.version = loaded.version;
        self.last_event = loaded.last_event;
        self.broken = None;
        self.durable.send_replace((self.generation, loaded.version));
    }

    /// A reply of `value` once the state it was read from (the current version) is durable, or
    /// an error if that state is abandoned first.
    fn when_durable<T: Send + 'static>(&self, value: T) -> ResponseActFuture<Self, Result<T, ExecuteError>> {
        self.durable_at(self.generation, self.version, Ok(value))
    }

    /// `answer` once this actor's appends of `generation` are durable up to version `at`, or
    /// "superseded" if that generation is abandoned first (an append of it failed).
    fn durable_at<T: Send + 'static>(
        &self,
        generation: u64,
        at: u64,
        answer: Result<T, ExecuteError>,
    ) -> ResponseActFuture<Self, Result<T, ExecuteError>> {
        let durable = *self.durable.borrow();
        if durable.0 == generation && durable.1 >= at {
            return Box::pin(fut::ready(answer));
        }
        let mut rx = self.durable.subscribe();
        let wait = async move {
            let reached = rx.wait_for(|(g, v)| *g != generation || *v >= at).await.map(|r| r.0 == generation);
            match reached {
                Ok(true) => answer,
                _ => Err(ExecuteError::Superseded),
            }
        };
        Box::pin(wait.into_actor(self))
    }

    /// The reply to a command that writes nothing (`answer`: a no-op's state, or the refusal of
    /// a stream that does not exist), once the state it was decided on is durable. On a log other
    /// processes write to, also once the log says the stream is still at that state: another
    /// node may have moved it on without this process knowing yet, and a no-op decided on the
    /// old state would acknowledge a change the log does not hold (an opt-out "already there"
    /// that another node had just removed). If it moved, the actor catches up and the caller is
    /// told to ask again, as when an append is refused.
    fn unwritten<T: Send + 'static>(&self, answer: Result<T, ExecuteError>) -> ResponseActFuture<Self, Result<T, ExecuteError>> {
        let durable = self.when_durable(());
        if !self.store.has_other_writers() {
            return Box::pin(durable.map(move |reached, _, _| reached.and(answer)));
        }
        let (generation, seen, last_event) = (self.generation, self.version, self.last_event);
        Box::pin(durable.then(move |reached, act: &mut Self, _| {
            let (store, id) = (act.store.clone(), act.id.clone());
            let head = async move {
                reached?;
                store.stream_head(&id).await.map_err(ExecuteError::Confirm)
            };
            head.into_actor(act)
                .then(move |head, act, ctx| -> ResponseActFuture<Self, Result<T, ExecuteError>> {
                    let head = match head {
                        Ok(head) => head,
                        Err(e) => return Box::pin(fut::ready(Err(e))),
                    };
                    if head.version == seen && head.last_event == last_event {
                        return Box::pin(fut::ready(answer));
                    }
                    // Beyond it perhaps only by this actor's own appends, decided after this answer
                    // (so the answer held until the first of them), stored but not yet answered here:
                    // they are, if they become durable in the generation that decided them.
                    if head.version > seen && act.generation == generation && act.version >= head.version {
                        return act.durable_at(generation, head.version, answer);
                    }
                    // Another writer moved it: catch up, unless this actor has already moved on from
                    // that state itself (its next append is then refused, and it rebuilds).
                    if act.generation == generation && act.version == seen && act.in_flight == 0 {
                        act.catch_up(ctx);
                    }
                    Box::pin(fut::ready(Err(ExecuteError::Superseded)))
                })
        }))
    }

    fn append_done(&mut self, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        if self.stop_when_idle && self.in_flight == 0 {
            ctx.stop();
        }
    }

    /// The snapshot to store with an append that moves the stream from `from` to `to`, if it
    /// crosses a multiple of the state's [`snapshot_interval`] or one is due (`snapshot_due`).
    fn snapshot_for(&mut self, state: &A, from: u64, to: u64) -> Option<Snapshot> {
        let every = snapshot_interval(self.settings.snapshot_every, state);
        if every == 0 || (to / every == from / every && !self.snapshot_due) {
            return None;
        }
        self.snapshot_due = false;
        snapshot_of(state, to)
            .map_err(|e| tracing::warn!(error = %e, "cannot snapshot"))
            .ok()
    }

    /// The fallback of an append of `pending` (deciding `command`, leading to `after`): what
    /// `action` decides on the same state, recorded with `pending`'s ids, with its refusal if
    /// it is one. None unless it can stand in for the command's events (as many, another type,
    /// so the answer tells which the log took) and leaves the aggregate in the same state (so
    /// what is pipelined behind it was decided right either way).
    fn fallback(
        &self,
        command: &Command<A::Action>,
        action: A::Action,
        limit: usize,
        pending: &[crate::store::PendingEvent],
        after: &A,
    ) -> Option<(Fallback, Option<Rejection>)> {
        let instead = Command {
            meta: command.meta.clone(),
            target: command.target.clone(),
            action,
        };
        let (events, rejection) = match self.state.decide(&instead) {
            Ok(events) => (events, None),
            Err(rejection) => (vec![A::rejected(&instead.action, &rejection)], Some(rejection)),
        };
        let same_state = || {
            let fallen = events.iter().fold(self.state.clone(), |s, e| s.evolve(e));
            matches!((serde_json::to_value(&fallen), serde_json::to_value(after)), (Ok(a), Ok(b)) if a == b)
        };
        let mut fallback = pending_events(&events).ok()?;
        let stands_in =
            fallback.len() == pending.len() && fallback.iter().zip(pending).all(|(f, p)| f.event_type != p.event_type) && same_state();
        if !stands_in {
            return None;
        }
        for (f, p) in fallback.iter_mut().zip(pending) {
            f.event_id = p.event_id;
        }
        let command_input = serde_json::to_value(&instead.action).ok()?;
        Some((
            Fallback {
                limit,
                events: fallback,
                command_input,
            },
            rejection,
        ))
    }

    /// Replaces the state by `durable` (the log's state at its version, with its last event)
    /// brought up to the stream's head, before the next message is handled.
    fn catch_up_from(&mut self, (state, version, last_event): (A, u64, Option<Uuid>), ctx: &mut Context<Self>) {
        // What another writer appended is usually at hand (a shared log's view keeps its latest
        // commits): then no read of the log, and the mailbox does not wait. Only once this
        // process has seen the stream move on: a refused append is often answered before the
        // commit that won arrives, and then the log is read.
        let moved_on = self.store.version_hint(&self.id).is_some_and(|v| v > version);
        if let Some(events) = self.store.recent_events(&self.id, version + 1).filter(|_| moved_on) {
            match caught_up_with(&self.id, state.clone(), version, last_event, &events) {
                Ok(caught_up) => return self.adopt(caught_up),
                Err(e) => {
                    tracing::warn!(stream = %self.id, error = %crate::error_chain(&e), "cannot catch up from the recent events; reading the log")
                }
            }
        }
        let store = self.store.clone();
        let id = self.id.clone();
        let read = async move { catch_up::<A>(&*store, &id, state, version, last_event).await };
        ctx.wait(read.into_actor(self).map(|result, act, ctx| match result {
            Ok(caught_up) => act.adopt(caught_up),
            Err(e) => {
                tracing::warn!(stream = %act.id, error = %crate::error_chain(&e), "cannot catch up with the log; rebuilding the state");
                act.reload(ctx);
            }
        }));
    }

    /// Brings the durable state up to what another writer of a shared log has appended since,
    /// before the next message is handled: only the new events are read (a hot pool written by
    /// every node would otherwise be re-read from its snapshot at each of their writes). Only
    /// called with nothing in flight, so the state is the log's at `version`; anything unexpected
    /// falls back to a full rebuild. The message that found the actor behind is answered
    /// "superseded" and sent again by its caller: that answer is also how the service learns it
    /// lost a race for the aggregate (routing `contended` moves such aggregates to their owner).
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let durable = (self.state.clone(), self.version, self.last_event);
        self.catch_up_from(durable, ctx);
    }

    /// Rebuilds the state from the log before the next message is handled.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let id = self.id.clone();
        let read = async move { load_state::<A>(&*store, &id).await };
        ctx.wait(read.into_actor(self).map(|result, act, ctx| match result {
            Ok(loaded) => act.adopt(loaded),
            Err(e) => {
                tracing::error!(stream = %act.id, error = %crate::error_chain(&e), "cannot replay stream");
                // What is already in the mailbox is refused; replies waiting for a state that was
                // abandoned are told so at once, not left to their deadline; and the actor stops,
                // so the next command's activation reads the log again (a read that failed once,
                // a leader change say, is not a stream that can never be replayed).
                act.broken = Some(e);
                act.durable.send_replace((act.generation, act.version));
                // Not before its appends in flight are answered: a caller told the mailbox closed
                // sends its command again, and one of those may still be stored.
                if act.in_flight == 0 {
                    ctx.stop();
                } else {
                    act.stop_when_idle = true;
                }
            }
        }));
    }
}

/// Entries of a state (see [`Aggregate::entries`]) per event between its snapshots: a state of
/// many entries is snapshotted every `entries / ENTRIES_PER_EVENT` events rather than every
/// `snapshot_every`, so its snapshot, which costs in proportion to its entries, costs each write
/// the same whatever its size. Measured (`cargo bench --bench ledger -- actor/opt_out`): a
/// snapshot of an opt-out list of 50,000 numbers costs about 73 ms (1.5 µs an entry), so every
/// 100 events it made a write 0.85 ms instead of 0.12; every 5,000 it adds about 15 µs. An
/// activation then replays at most a tenth of the state's size in events (5,000 events: about
/// 18 ms at the 3.5 µs an event `replay/10k` measures).
const ENTRIES_PER_EVENT: u64 = 10;

/// How many events apart `state` is snapshotted (0: never), `snapshot_every` at least.
pub fn snapshot_interval<A: Aggregate>(snapshot_every: u64, state: &A) -> u64 {
    match snapshot_every {
        0 => 0,
        every => every.max(state.entries() / ENTRIES_PER_EVENT),
    }
}

impl<A: Projected> Actor for AggregateActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Generous: the writer, not the mailbox, is where backpressure is applied.
        ctx.set_mailbox_capacity(4096);
        if !self.loaded {
            self.reload(ctx);
        }
        if let Some(idle) = self.settings.idle_timeout {
            // Checked between messages only: an actor never stops with an append in flight.
            ctx.run_interval(idle / 2, move |act, ctx| {
                if act.in_flight == 0 && act.last_active.elapsed() >= idle {
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
        if self.in_flight == 0 {
            ctx.stop();
        } else {
            self.stop_when_idle = true;
        }
    }
}

impl<A: Projected> Handler<Execute<A>> for AggregateActor<A> {
    type Result = ResponseActFuture<Self, Result<A, ExecuteError>>;

    fn handle(&mut self, msg: Execute<A>, ctx: &mut Self::Context) -> Self::Result {
        let done = |r: Result<A, ExecuteError>| -> Self::Result { Box::pin(fut::ready(r)) };
        self.last_active = Instant::now();
        if let Some(why) = &self.broken {
            return done(Err(ExecuteError::Replay(why.clone())));
        }
        // Another writer of a shared log (another node) has moved the stream on: re-read it
        // before deciding (the mailbox waits for the read) rather than have the append refused;
        // the caller sends the command again.
        if self.in_flight == 0 && self.store.version_hint(&self.id).is_some_and(|v| v > self.version) {
            self.catch_up(ctx);
            return done(Err(ExecuteError::Superseded));
        }
        if msg.premise.is_some_and(|holds| !holds(&self.state, self.version)) {
            return done(Err(ExecuteError::Stale));
        }
        let counter_limits = msg.counter_limits;
        let otherwise = msg.otherwise;
        let command = Command {
            meta: msg.meta,
            target: self.id.clone(),
            action: msg.action,
        };
        let (events, rejection) = match self.state.decide(&command) {
            Ok(events) if events.is_empty() => return self.unwritten(Ok(self.state.clone())),
            Ok(events) => (events, None),
            // A stream that never existed gets no rejection event: junk ids do not grow the log.
            Err(rejection) if self.version == 0 => return self.unwritten(Err(ExecuteError::Rejected(rejection))),
            Err(rejection) => (vec![A::rejected(&command.action, &rejection)], Some(rejection)),
        };
        let after = events.iter().fold(self.state.clone(), |s, e| s.evolve(e));
        let encoded = pending_events(&events).and_then(|p| Ok((p, serde_json::to_value(&command.action)?)));
        let (pending, command_input) = match encoded {
            Ok(x) => x,
            Err(e) => return done(Err(ExecuteError::Encode(std::sync::Arc::new(e)))),
        };
        let to = self.version + events.len() as u64;
        // A refusal is recorded whatever the counters say, so it needs no fallback.
        let fallback = match (otherwise, &rejection) {
            (Some((limit, action)), None) => self.fallback(&command, action, limit, &pending, &after),
            _ => None,
        };
        let (fallback, fallback_rejection, fallback_type) = match fallback {
            Some((f, r)) => {
                let event_type = f.events.first().map(|e| e.event_type.clone());
                (Some(f), r, event_type)
            }
            None => (None, None, None),
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
            expected_last_event: self.last_event,
            events: pending,
            index_ops: A::index_ops(&self.state, &after),
            unique_claims: A::unique_claims(&self.state, &after),
            // A refusal is recorded whatever the counters say: the limits guard what a command
            // would do, and a refusal does nothing.
            counter_limits: if rejection.is_none() { counter_limits } else { Vec::new() },
            snapshot: self.snapshot_for(&after, self.version, to),
            fallback,
        };
        let request_last_event = request.events.last().map(|e| e.event_id);
        // Handed to the writer now, in mailbox order; only the answer is awaited.
        let answer = match self.store.submit(request) {
            Ok(answer) => answer,
            Err(e) => return done(Err(ExecuteError::Append(e))),
        };
        // With nothing in flight, the state this append was decided on is the log's: kept until
        // the append is answered, so a refusal (another node was first) costs a catch-up from
        // it rather than a rebuild from the snapshot. (Not a copy: the state is replaced.)
        let decided_on = std::mem::replace(&mut self.state, after.clone());
        let durable_before = (self.in_flight == 0).then_some((decided_on, self.version, self.last_event));
        self.last_event = request_last_event;
        self.version = to;
        self.in_flight += 1;
        let generation = self.generation;
        Box::pin(answer.into_actor(self).map(move |result, act, ctx| {
            act.append_done(ctx);
            match result {
                Ok(events) => {
                    if act.generation == generation {
                        act.durable.send_if_modified(|d| {
                            let newer = d.0 == generation && d.1 < to;
                            if newer {
                                d.1 = to;
                            }
                            newer
                        });
                    }
                    // The log took the fallback: its decision is the answer (the same state).
                    let fell_back = fallback_type.is_some() && events.first().map(|e| &e.event_type) == fallback_type.as_ref();
                    match (rejection, fell_back) {
                        (_, true) => fallback_rejection.map_or(Ok(after), |r| Err(ExecuteError::Rejected(r))),
                        (Some(r), false) => Err(ExecuteError::Rejected(r)),
                        (None, false) => Ok(after),
                    }
                }
                Err(e) => {
                    if act.generation == generation {
                        // The speculative state includes events that are not in the log: rebuild
                        // it. Appends decided after this one fail their version check.
                        // Another writer of the same log (another node) got there first: expected
                        // with several nodes, so not worth a warning; anything else is.
                        // A counter bound refused it: an outcome the caller handles, not a fault.
                        if matches!(e, AppendError::WrongExpectedVersion { .. } | AppendError::LimitReached(_)) {
                            tracing::debug!(stream = %act.id, error = %e, "stale; rebuilding state from the log");
                        } else {
                            tracing::warn!(stream = %act.id, error = %crate::error_chain(&e), "append failed; rebuilding state from the log");
                        }
                        act.generation += 1;
                        match durable_before {
                            Some(durable) => act.catch_up_from(durable, ctx),
                            None => act.reload(ctx),
                        }
                    }
                    Err(ExecuteError::Append(e))
                }
            }
        }))
    }
}

impl<A: Projected> AggregateActor<A> {
    /// The answer to a read: `read` of the state, once that state is durable (at once with
    /// `as_decided`).
    fn answer_read<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        as_decided: bool,
        read: impl FnOnce(&A) -> T,
    ) -> ResponseActFuture<Self, Result<T, ExecuteError>> {
        self.last_active = Instant::now();
        // As for a command: a state another node has moved on from is re-read first.
        if self.broken.is_none() && self.in_flight == 0 && self.store.version_hint(&self.id).is_some_and(|v| v > self.version) {
            self.catch_up(ctx);
            return Box::pin(fut::ready(Err(ExecuteError::Superseded)));
        }
        match &self.broken {
            Some(why) => Box::pin(fut::ready(Err(ExecuteError::Replay(why.clone())))),
            None if as_decided => Box::pin(fut::ready(Ok(read(&self.state)))),
            None => self.when_durable(read(&self.state)),
        }
    }
}

impl<A: Projected> Handler<GetState<A>> for AggregateActor<A> {
    type Result = ResponseActFuture<Self, Result<A, ExecuteError>>;

    fn handle(&mut self, msg: GetState<A>, ctx: &mut Self::Context) -> Self::Result {
        self.answer_read(ctx, msg.as_decided, A::clone)
    }
}

impl<A: Projected, R: Send + 'static> Handler<Inspect<A, R>> for AggregateActor<A> {
    type Result = ResponseActFuture<Self, Result<R, ExecuteError>>;

    fn handle(&mut self, msg: Inspect<A, R>, ctx: &mut Self::Context) -> Self::Result {
        self.answer_read(ctx, false, |state| (msg.read)(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::opt_out_list::OptOutListState;
    use crate::domain::phone_number::PhoneNumberState;

    fn list_of(numbers: u64) -> OptOutListState {
        OptOutListState(Some(crate::domain::testing::opt_out_list_of(numbers)))
    }

    /// A state of a few entries is snapshotted every `snapshot_every` events; one of many, every
    /// tenth of their number; none when snapshots are off.
    #[test]
    fn a_state_of_many_entries_is_snapshotted_less_often() {
        assert_eq!(snapshot_interval(100, &PhoneNumberState::default()), 100);
        assert_eq!(snapshot_interval(100, &list_of(500)), 100);
        assert_eq!(snapshot_interval(100, &list_of(5_000)), 500);
        assert_eq!(snapshot_interval(0, &list_of(5_000)), 0);
    }
}
