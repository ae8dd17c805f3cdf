//! Finds or starts the actor of an aggregate. There is at most one live actor per stream in
//! the process: the map is consulted and filled under one lock.
//!
//! Passivation: actors stop themselves after an idle time, and the registry keeps at most
//! `max_live` of them, asking the least recently used to stop when a new one would exceed it.
//! A stopped actor comes back transparently: the next command starts a new one, which rebuilds
//! its state from its snapshot and the events after it.
//!
//! Activating an existing stream takes one read of the log ([`crate::store::EventStore::read_tail`]):
//! the registry rebuilds the state to learn that the stream exists and hands it to the new actor,
//! which then has nothing to read itself (the cold path of a passivated number).

use std::num::NonZeroUsize;
use std::sync::Mutex;

use actix::{Actor, Addr};
use lru::LruCache;

use super::aggregate_actor::{ActorSettings, AggregateActor, Passivate};
use crate::projection::Projected;
use crate::rehydrate::{load_state, LoadedState};
use crate::store::{Store, StoreError};

/// The live actors of one aggregate kind.
pub struct Registry<A: Projected> {
    store: Store,
    settings: ActorSettings,
    live: Mutex<LruCache<String, Addr<AggregateActor<A>>>>,
}

impl<A: Projected> Registry<A> {
    pub fn new(store: Store, settings: ActorSettings, max_live: usize) -> Self {
        let capacity = NonZeroUsize::new(max_live.max(1)).unwrap_or(NonZeroUsize::MIN);
        Registry {
            store,
            settings,
            live: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The actor of an existing stream, or `None` when no such stream was ever written (so that
    /// ids that never existed start no actor and write nothing).
    pub async fn existing(&self, id: &str) -> Result<Option<Addr<AggregateActor<A>>>, StoreError> {
        if let Some(addr) = self.lookup(id) {
            return Ok(Some(addr));
        }
        let loaded = load_state::<A>(&*self.store, id).await?;
        if loaded.version == 0 {
            return Ok(None);
        }
        // Another request may have started the actor while this one read: that one wins, and
        // what was read here is dropped (it may already be behind the live actor's state).
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
        let loaded = load_state::<A>(&*self.store, id).await?;
        Ok(self.start_if_absent(id, || {
            AggregateActor::loaded(id.to_string(), self.store.clone(), self.settings, loaded)
        }))
    }

    fn start_if_absent(&self, id: &str, actor: impl FnOnce() -> AggregateActor<A>) -> Addr<AggregateActor<A>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = live.get(id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = actor().start();
        let kind = A::KIND.arn_segment();
        metrics::counter!(crate::telemetry::ACTIVATIONS, "kind" => kind).increment(1);
        if let Some((evicted_id, evicted)) = live.push(id.to_string(), addr.clone()) {
            if evicted_id != id {
                // It finishes what is already in its mailbox, then stops.
                evicted.do_send(Passivate);
            }
        }
        // Those that stopped by themselves are counted until the next activation pushes them out.
        metrics::gauge!(crate::telemetry::LIVE_ACTORS, "kind" => kind).set(live.len() as f64);
        addr
    }

    /// Forgets `addr` if it is still the registered actor of `id` (it stopped under a sender).
    pub fn forget(&self, id: &str, addr: &Addr<AggregateActor<A>>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.peek(id) == Some(addr) {
            live.pop(id);
        }
    }

    fn lookup(&self, id: &str) -> Option<Addr<AggregateActor<A>>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id).filter(|a| a.connected()).cloned()
    }

    /// How many actors are live.
    pub fn len(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().filter(|(_, a)| a.connected()).count()
    }

    /// Whether no actor is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
