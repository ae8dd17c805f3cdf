//! Finds or starts the actor of an aggregate. There is at most one live actor per stream in
//! the process: the map is consulted and filled under one lock.

use std::collections::HashMap;
use std::sync::Mutex;

use actix::{Actor, Addr};

use super::aggregate_actor::AggregateActor;
use crate::projection::Projected;
use crate::store::{EventStore, StoreError};

/// The live actors of one aggregate kind.
pub struct Registry<A: Projected> {
    store: EventStore,
    live: Mutex<HashMap<String, Addr<AggregateActor<A>>>>,
}

impl<A: Projected> Registry<A> {
    pub fn new(store: EventStore) -> Self {
        Registry {
            store,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The actor of an existing stream, or `None` when no such stream was ever written (so that
    /// ids that never existed start no actor and write nothing).
    pub fn existing(&self, id: &str) -> Result<Option<Addr<AggregateActor<A>>>, StoreError> {
        if let Some(addr) = self.lookup(id) {
            return Ok(Some(addr));
        }
        if self.store.stream_version(id)? == 0 {
            return Ok(None);
        }
        Ok(Some(self.activate(id)))
    }

    /// The actor of a stream that is about to be created.
    pub fn activate(&self, id: &str) -> Addr<AggregateActor<A>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = live.get(id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = AggregateActor::<A>::new(id.to_string(), self.store.clone()).start();
        live.insert(id.to_string(), addr.clone());
        addr
    }

    fn lookup(&self, id: &str) -> Option<Addr<AggregateActor<A>>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id).filter(|a| a.connected()).cloned()
    }

    /// How many actors are live.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no actor is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
