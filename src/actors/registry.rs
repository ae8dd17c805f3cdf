//! Finds or starts the actor of an aggregate. There is at most one live actor per stream in
//! the process: the map is consulted and filled under one lock, an actor pushed out of it stays
//! the one its stream goes to until it has stopped, and the log is read for an activation by one
//! caller at a time per stream.
//!
//! Passivation: actors stop themselves after an idle time, and the registry keeps at most
//! `max_live` of them, asking the least recently used to stop when a new one would exceed it.
//! A stopped actor comes back transparently: the next command starts a new one, which rebuilds
//! its state from its snapshot and the events after it.
//!
//! Why an actor asked to stop is still found: it stops only once its appends in flight are
//! answered. A second actor started meanwhile would read the log without them and answer from
//! that stale state; with one writer nothing would ever tell it so (a command that changes
//! nothing and a read never reach the log's version check). For the same reason activations of
//! one stream read the log one at a time: a read that started before another actor of the
//! stream appended, and ended after that actor stopped, would start an actor behind the log.
//!
//! Activating an existing stream takes one read of the log ([`crate::store::EventStore::read_tail`]):
//! the registry rebuilds the state to learn that the stream exists and hands it to the new actor,
//! which then has nothing to read itself (the cold path of a passivated number).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use actix::{Actor, Addr};
use lru::LruCache;

use super::aggregate_actor::{ActorSettings, AggregateActor, Passivate};
use crate::projection::Projected;
use crate::rehydrate::{load_state, LoadedState};
use crate::store::{Store, StoreError};

/// Activations of streams whose ids hash alike read the log one at a time.
const LOADING_STRIPES: usize = 1024;

/// How long an activation waits for its turn to read: a read that hangs (a log failing over)
/// must not queue every activation of its stripe behind it, read after read.
const LOADING_TURN: std::time::Duration = std::time::Duration::from_secs(5);

/// The live actors of one aggregate kind.
pub struct Registry<A: Projected> {
    store: Store,
    settings: ActorSettings,
    live: Mutex<Actors<A>>,
    loading: Vec<tokio::sync::Mutex<()>>,
}

struct Actors<A: Projected> {
    /// The actors in use, least recently used first out.
    recent: LruCache<String, Addr<AggregateActor<A>>>,
    /// Actors pushed out of `recent` that have not stopped yet (their appends in flight).
    stopping: HashMap<String, Addr<AggregateActor<A>>>,
}

impl<A: Projected> Actors<A> {
    fn find(&mut self, id: &str) -> Option<Addr<AggregateActor<A>>> {
        if let Some(addr) = self.recent.get(id).filter(|a| a.connected()) {
            return Some(addr.clone());
        }
        let stopping = self.stopping.get(id)?;
        if stopping.connected() {
            return Some(stopping.clone());
        }
        self.stopping.remove(id);
        None
    }
}

impl<A: Projected> Registry<A> {
    pub fn new(store: Store, settings: ActorSettings, max_live: usize) -> Self {
        let capacity = NonZeroUsize::new(max_live.max(1)).unwrap_or(NonZeroUsize::MIN);
        Registry {
            store,
            settings,
            live: Mutex::new(Actors {
                recent: LruCache::new(capacity),
                stopping: HashMap::new(),
            }),
            loading: (0..LOADING_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The actor of an existing stream, or `None` when no such stream was ever written (so that
    /// ids that never existed start no actor and write nothing).
    pub async fn existing(&self, id: &str) -> Result<Option<Addr<AggregateActor<A>>>, StoreError> {
        if let Some(addr) = self.lookup(id) {
            return Ok(Some(addr));
        }
        let _loading = self.loading(id).await;
        if let Some(addr) = self.lookup(id) {
            return Ok(Some(addr));
        }
        let loaded = load_state::<A>(&*self.store, id).await?;
        if loaded.version == 0 {
            return Ok(None);
        }
        // A fresh id's actor may have started while this one read (it reads nothing): that one
        // wins, and what was read here is dropped.
        Ok(Some(self.start_if_absent(id, || {
            AggregateActor::loaded(id.to_string(), self.store.clone(), self.settings, loaded)
        })))
    }

    /// The actor of a stream about to be created under a fresh id (a new random one), started
    /// without reading the log: there is nothing to read. Were the id somehow taken, the first
    /// append (which expects version 0) would be refused and the actor would read the stream.
    pub fn activate_new(&self, id: &str) -> Addr<AggregateActor<A>> {
        self.start_if_absent(id, || {
            AggregateActor::loaded(id.to_string(), self.store.clone(), self.settings, LoadedState::empty())
        })
    }

    /// The actor of a stream named by its caller, which may or may not exist: its state is read
    /// from the log either way.
    pub async fn activate(&self, id: &str) -> Result<Addr<AggregateActor<A>>, StoreError> {
        if let Some(addr) = self.lookup(id) {
            return Ok(addr);
        }
        let _loading = self.loading(id).await;
        if let Some(addr) = self.lookup(id) {
            return Ok(addr);
        }
        let loaded = load_state::<A>(&*self.store, id).await?;
        Ok(self.start_if_absent(id, || {
            AggregateActor::loaded(id.to_string(), self.store.clone(), self.settings, loaded)
        }))
    }

    /// The turn of `id`'s stripe to read the log for an activation; none after [`LOADING_TURN`]
    /// (the read then goes ahead beside the one that holds it up).
    async fn loading(&self, id: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % LOADING_STRIPES as u64) as usize;
        tokio::time::timeout(LOADING_TURN, self.loading[stripe].lock()).await.ok()
    }

    fn start_if_absent(&self, id: &str, actor: impl FnOnce() -> AggregateActor<A>) -> Addr<AggregateActor<A>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = live.find(id) {
            return addr;
        }
        let addr = actor().start();
        let kind = A::KIND.arn_segment();
        metrics::counter!(crate::telemetry::ACTIVATIONS, "kind" => kind).increment(1);
        if let Some((evicted_id, evicted)) = live.recent.push(id.to_string(), addr.clone()) {
            if evicted_id != id && evicted.connected() {
                // It stops once its appends in flight are answered, and is found until then.
                evicted.do_send(Passivate);
                live.stopping.retain(|_, a| a.connected());
                live.stopping.insert(evicted_id, evicted);
            }
        }
        // Those that stopped by themselves are counted until the next activation pushes them out.
        metrics::gauge!(crate::telemetry::LIVE_ACTORS, "kind" => kind).set(live.recent.len() as f64);
        addr
    }

    /// Forgets `addr` if it is still the registered actor of `id` (it stopped under a sender).
    pub fn forget(&self, id: &str, addr: &Addr<AggregateActor<A>>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.recent.peek(id) == Some(addr) {
            live.recent.pop(id);
        }
        if live.stopping.get(id) == Some(addr) {
            live.stopping.remove(id);
        }
    }

    fn lookup(&self, id: &str) -> Option<Addr<AggregateActor<A>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).find(id)
    }

    /// How many actors are live.
    pub fn len(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let connected = |(_, a): (&String, &Addr<AggregateActor<A>>)| a.connected();
        live.recent.iter().filter(|e| connected(*e)).count() + live.stopping.iter().filter(|e| connected(*e)).count()
    }

    /// Whether no actor is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actors::{Execute, ExecuteError, GetState};
    use crate::codec::pending_events;
    use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberChanges, PhoneNumberEvent, PhoneNumberState};
    use crate::domain::testing::meta;
    use crate::store::gated::GatedStore;
    use crate::store::{AppendMeta, AppendRequest, Durability, StoreConfig};

    async fn requested(store: &Store, id: &str) {
        let number = PhoneNumber::example(id, "111122223333", "us-east-1");
        let events = pending_events(&[PhoneNumberEvent::PhoneNumberRequested(Box::new(number))]).expect("events");
        let meta = AppendMeta::direct("111122223333", "us-east-1", "r", "Test/Request");
        store.append(AppendRequest::plain(id, 0, meta, events)).await.expect("requested");
    }

    fn protect(on: bool) -> Execute<PhoneNumberState> {
        Execute {
            meta: meta("111122223333"),
            action: PhoneNumberAction::Update(PhoneNumberChanges {
                deletion_protection_enabled: Some(on),
                ..Default::default()
            }),
            counter_limits: vec![],
            premise: None,
            otherwise: None,
        }
    }

    /// An actor pushed out of the registry while its append is still on its way to the log
    /// stays the one its stream's commands and reads go to until it has stopped: an actor
    /// started beside it would read the log without that append and answer from a stale state
    /// (with one writer, nothing would ever tell it so).
    #[actix_rt::test]
    async fn an_evicted_actor_with_an_append_in_flight_is_not_doubled() {
        let dir = tempfile::tempdir().expect("dir");
        let (gated, store) = GatedStore::embedded(dir.path());
        let (a, b) = ("phone-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "phone-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        requested(&store, a).await;
        requested(&store, b).await;
        let registry = Registry::<PhoneNumberState>::new(store.clone(), ActorSettings::default(), 1);
        let first = registry.existing(a).await.expect("read").expect("a");

        // Its append is held outside the log; then another activation pushes it out.
        gated.close();
        let in_flight = actix_rt::spawn(first.send(protect(true)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        registry.existing(b).await.expect("read").expect("b");
        let found = registry.existing(a).await.expect("read").expect("a");
        assert!(found == first, "a second actor was started beside the one with an append in flight");
        gated.open();
        in_flight.await.expect("task").expect("mailbox").expect("protected");

        // Once it has stopped, the next activation reads the log with the append in it.
        let state = loop {
            let addr = registry.existing(a).await.expect("read").expect("a");
            match addr.send(GetState::default()).await {
                Ok(state) => break state.expect("state"),
                Err(_) => registry.forget(a, &addr),
            }
        };
        let protected = state.0.as_ref().map(|n| n.deletion_protection_enabled);
        assert_eq!(protected, Some(true));
        store.close().await.expect("close");
    }

    /// An actor whose rebuild after a refused append fails to read the log does not answer
    /// "cannot replay" for ever: it stops, and the next command's activation reads the log again.
    #[actix_rt::test]
    async fn an_actor_whose_rebuild_failed_once_is_started_again() {
        let dir = tempfile::tempdir().expect("dir");
        let (gated, store) = GatedStore::embedded(dir.path());
        let a = "phone-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        requested(&store, a).await;
        let registry = Registry::<PhoneNumberState>::new(store.clone(), ActorSettings::default(), 8);
        let actor = registry.existing(a).await.expect("read").expect("a");
        // Another writer moves the stream on; the actor's next append is refused, and the read
        // that would rebuild its state fails.
        let other = pending_events(&[PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        })])
        .expect("events");
        let meta = AppendMeta::direct("111122223333", "us-east-1", "other", "Test/Update");
        store.append(AppendRequest::plain(a, 1, meta, other)).await.expect("other writer");
        gated.fail_reads(true);
        assert!(actor.send(protect(false)).await.expect("mailbox").is_err());
        gated.fail_reads(false);
        // The read works again: the stream's commands are served, on the log's state.
        let mut answers = Vec::new();
        for _ in 0..8 {
            let addr = registry.existing(a).await.expect("read").expect("a");
            match addr.send(GetState::default()).await {
                Ok(Ok(state)) => {
                    answers.push(Ok(state.0.map(|n| n.deletion_protection_enabled)));
                    break;
                }
                Ok(Err(e)) => answers.push(Err(e.to_string())),
                Err(_) => registry.forget(a, &addr),
            }
        }
        assert_eq!(answers.last(), Some(&Ok(Some(true))), "{answers:?}");
        store.close().await.expect("close");
    }

    /// `PutOptedOutNumber` of `number`, by account 111122223333.
    fn put_opted_out(number: &str) -> Execute<crate::domain::opt_out_list::OptOutListState> {
        Execute {
            meta: meta("111122223333"),
            action: crate::domain::opt_out_list::OptOutListAction::PutOptedOutNumber {
                number: number.into(),
                end_user_opted_out: false,
            },
            counter_limits: vec![],
            premise: None,
            otherwise: None,
        }
    }

    /// On a log other processes write to, an answer that writes nothing is checked against the
    /// log first: an actor that has not yet learnt of another node's append must not answer a
    /// no-op from the state before it (here "already opted out", for a number another node has
    /// just taken off the list), nor "not found" for a stream another node has just created.
    #[actix_rt::test]
    async fn an_answer_that_writes_nothing_is_checked_against_a_shared_log() {
        use crate::domain::opt_out_list::{OptOutList, OptOutListEvent, OptOutListState};
        let dir = tempfile::tempdir().expect("dir");
        let (gated, store) = GatedStore::embedded(dir.path());
        gated.written_by_others(true);
        let (account, number) = ("111122223333", "+12065550100");
        let other_writer = |version: u64, event: OptOutListEvent| {
            let store = store.clone();
            async move {
                let events = pending_events(&[event]).expect("events");
                let meta = AppendMeta::direct(account, "us-east-1", "other", "Test/Other");
                store
                    .append(AppendRequest::plain("list-a", version, meta, events))
                    .await
                    .expect("other writer");
            }
        };
        let put = || put_opted_out(number);
        let registry = Registry::<OptOutListState>::new(store.clone(), ActorSettings::default(), 8);

        // Not found, as this node knows it; another node creates the list meanwhile.
        let actor = registry.activate("list-a").await.expect("read");
        let list = OptOutList::new("a", "arn".into(), account, "us-east-1", 1, vec![], None);
        other_writer(0, OptOutListEvent::OptOutListCreated(Box::new(list))).await;
        let first = actor.send(put()).await.expect("mailbox");
        assert!(matches!(first, Err(ExecuteError::Superseded)), "{first:?}");
        actor.send(put()).await.expect("mailbox").expect("opted out");
        assert_eq!(store.stream_head("list-a").await.expect("head").version, 2);

        // Opted out, as this node knows it; another node deletes the entry meanwhile.
        other_writer(
            2,
            OptOutListEvent::OptedOutNumberDeleted {
                number: number.into(),
                at_ms: 2,
            },
        )
        .await;
        let stale = actor.send(put()).await.expect("mailbox");
        assert!(matches!(stale, Err(ExecuteError::Superseded)), "{stale:?}");
        let state = actor.send(put()).await.expect("mailbox").expect("opted out again");
        assert!(state.0.as_ref().is_some_and(|l| l.opted_out.contains_key(number)));
        assert_eq!(store.stream_head("list-a").await.expect("head").version, 4, "the put is in the log");

        // A no-op the log confirms is answered as one, with nothing written.
        actor.send(put()).await.expect("mailbox").expect("already there");
        assert_eq!(store.stream_head("list-a").await.expect("head").version, 4);
        // Reads fail: the answer cannot be confirmed, and says so.
        gated.fail_reads(true);
        let unconfirmed = actor.send(put()).await.expect("mailbox");
        assert!(matches!(unconfirmed, Err(ExecuteError::Confirm(_))), "{unconfirmed:?}");
        gated.fail_reads(false);
        store.close().await.expect("close");
    }

    /// A no-op whose check against a shared log finds the stream moved on by this actor's own
    /// append, decided after it and stored but not yet answered, is answered once that append is
    /// (not sent back as stale: a hot aggregate's no-ops would be retried for ever).
    #[actix_rt::test]
    async fn a_no_op_overtaken_by_its_own_actors_next_append_is_answered() {
        use crate::domain::opt_out_list::{OptOutList, OptOutListEvent, OptOutListState};
        let dir = tempfile::tempdir().expect("dir");
        let (gated, store) = GatedStore::embedded(dir.path());
        gated.written_by_others(true);
        let account = "111122223333";
        let list = OptOutList::new("a", "arn".into(), account, "us-east-1", 1, vec![], None);
        let events = pending_events(&[
            OptOutListEvent::OptOutListCreated(Box::new(list)),
            OptOutListEvent::NumberOptedOut {
                number: "+12065550100".into(),
                entry: crate::domain::opt_out_list::OptedOut {
                    opted_out_timestamp_ms: 1,
                    end_user_opted_out: false,
                },
            },
        ])
        .expect("events");
        let meta_of = AppendMeta::direct(account, "us-east-1", "r", "Test/Create");
        store
            .append(AppendRequest::plain("list-a", 0, meta_of, events))
            .await
            .expect("created");
        let put = put_opted_out;
        let registry = Registry::<OptOutListState>::new(store.clone(), ActorSettings::default(), 8);
        let actor = registry.activate("list-a").await.expect("read");

        // The no-op's look at the log's head waits; meanwhile the actor's next command is
        // stored, its answer held.
        gated.hold_heads(true);
        let no_op = actix_rt::spawn(actor.send(put("+12065550100")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        gated.hold_answers(true);
        let next = actix_rt::spawn(actor.send(put("+12065550101")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.stream_heads(None, 10).await.expect("heads"), [("list-a".to_string(), 3)]);
        gated.hold_heads(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        gated.hold_answers(false);
        next.await.expect("task").expect("mailbox").expect("opted out");
        let answer = no_op.await.expect("task").expect("mailbox");
        assert!(answer.is_ok(), "{answer:?}");
        store.close().await.expect("close");
    }

    /// An actor that had to replay a long stream (no usable snapshot) stores a snapshot with
    /// its next append, not only at the next multiple of `snapshot_every`.
    #[actix_rt::test]
    async fn an_actor_that_replayed_a_long_stream_stores_a_snapshot_with_its_next_append() {
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreConfig::embedded(Durability::Flush, 64).open(dir.path()).expect("store");
        let a = "phone-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        requested(&store, a).await;
        // 249 more events written without snapshots (by an older build, say).
        for version in 1..250u64 {
            let update = pending_events(&[PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                deletion_protection_enabled: Some(version % 2 == 0),
                ..Default::default()
            })])
            .expect("events");
            let meta = AppendMeta::direct("111122223333", "us-east-1", "r", "Test/Update");
            store.append(AppendRequest::plain(a, version, meta, update)).await.expect("update");
        }
        assert!(store.snapshot(a).await.expect("read").is_none());
        let registry = Registry::<PhoneNumberState>::new(store.clone(), ActorSettings::default(), 8);
        let actor = registry.existing(a).await.expect("read").expect("a");
        actor.send(protect(true)).await.expect("mailbox").expect("protected");
        let snapshot = store.snapshot(a).await.expect("read").expect("a snapshot with the next append");
        assert_eq!(snapshot.version, 251);
        store.close().await.expect("close");
    }
}
