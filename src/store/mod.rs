//! The storage port: what the layers above need of an event log, and nothing of how a backend
//! keeps it. [`EventStore`] is the one trait; [`Store`] the handle everyone holds. The embedded
//! backend is [`sled::SledStore`] (the only code that names sled); the clustered one,
//! [`jetstream::JetStreamStore`], keeps the log in a replicated NATS JetStream stream shared by
//! several nodes (the only code that names NATS). Both pass the same contract suite
//! (`tests/store_contract.rs`).
//!
//! # The log
//! - A **stream** per aggregate: events numbered 1, 2, 3, ... without gaps (`version`).
//! - A **global feed**: every event also has a `position`, 1, 2, 3, ... without gaps, in commit
//!   order across all streams; each envelope's `hash` chains it to the event before it in the
//!   feed (tamper evidence, see [`EventEnvelope::seal`]).
//! - A **derived index**: keys the application computes from state changes (Describe views,
//!   client tokens, claimed E.164 numbers, live-resource counters); rebuildable from the feed.
//! - **Snapshots**: the state of a stream after some version, a cache beside the log.
//!
//! # What one append guarantees
//! An [`AppendRequest`] names one stream. Its effects are **atomic together**: either all of the
//! following become durable and visible, or none does, and the caller is told which:
//! 1. its events, at versions `expected_version + 1 ..` of the stream, and at consecutive feed
//!    positions chained after the feed's head;
//! 2. the check that the stream is still at `expected_version` and (when given) that its last
//!    event is `expected_last_event` — otherwise [`AppendError::WrongExpectedVersion`];
//! 3. its `unique_claims`: every key must be absent from the index (and not claimed earlier in
//!    the same commit), otherwise [`AppendError::UniqueViolation`] and nothing is written. This
//!    is how an E.164 number is held by one resource only and how a client token is bound to
//!    the one resource it created;
//! 4. its `index_ops` (puts, deletes, counter additions): applied after the claims;
//! 5. its `counter_limits`: each named counter must end within its bounds once the index
//!    changes are applied (after every append committed before it), otherwise
//!    [`AppendError::LimitReached`] and nothing is written. This is how a per-account quota
//!    holds however many nodes create resources at once, and how a resource in use by another
//!    is never deleted under it (the user adds to a counter the deletion requires to be 0, the
//!    deletion takes away one the user requires to be 1);
//! 6. its `snapshot`, if any.
//!
//! An append may name a [`Fallback`]: when the first of its counter limits that does not hold is
//! the one the fallback names (and every check before it holds), the log commits the fallback's
//! events in place of the append's, at the same versions with the same ids and without the
//! append's index changes, claims or snapshot, and answers with them. The decision is the log's,
//! at the append's place in it: a message to a destination that opted out while the send was on
//! its way is refused there, on the record, instead of the append being refused and everything
//! pipelined behind it on the same stream with it.
//!
//! Appends are **answered only once durable** (as the backend's durability setting defines it),
//! and the answer of an append can only be success if every effect above is in the log.
//! Appends submitted one after another by one caller ([`EventStore::submit`]) are committed in
//! that order; a refused append does not affect the others (each carries its own checks), but an
//! append that expects the version an earlier, refused one would have made is refused too.
//! Nothing else is atomic across appends: two streams are never changed in one append, which is
//! why cross-aggregate workflows are steps with compensations (see `service`).
//!
//! Reads see only committed appends. A read after a successful append (by anyone) sees it.

pub mod config;
mod envelope;
#[cfg(test)]
pub(crate) mod gated;
pub mod jetstream;
pub mod sled;

/// Damaging a stopped node's log on disk, for tests of tamper evidence and recovery (the
/// embedded backend's files; nothing in the service uses this).
pub mod testing {
    pub use super::sled::testing::{drop_index, forge_event, tamper_with_event, tamper_with_snapshot};
}

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use config::{Backend, Durability, SledSettings, StoreConfig};
pub use envelope::{AppendMeta, EventEnvelope, PendingEvent, CURRENT_SCHEMA_VERSION, GENESIS_HASH};
pub use jetstream::{JetStreamSettings, JetStreamStore};

/// A boxed future of a store operation. `'static`: it owns what it needs, so it can be awaited
/// anywhere (an actor, a spawned task) without borrowing the store.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The answer to a submitted append: resolves once the events are durable (or refused).
pub type Appended = Pin<Box<dyn Future<Output = Result<Vec<EventEnvelope>, AppendError>> + Send + 'static>>;

/// The handle to a store that every layer holds (cheap to clone).
pub type Store = Arc<dyn EventStore>;

/// Errors of reading or running the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened where it was asked to be.
    #[error("cannot open the event store at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<dyn Error + Send + Sync>,
    },
    /// The place exists but holds something else (or nothing, when only reading).
    #[error("{0} is not a phone-ledger data directory")]
    NotALedger(PathBuf),
    /// The backend failed (I/O, the engine itself).
    #[error("the storage backend failed")]
    Backend(#[source] Arc<dyn Error + Send + Sync>),
    /// A stored record that cannot be what it claims to be.
    #[error("corrupt record at {key}: {message}")]
    Corrupt { key: String, message: String },
    /// The store was closed (the server is stopping).
    #[error("the event store is closed")]
    Closed,
    /// The operation needs a writable store.
    #[error("the event store is open read-only")]
    ReadOnly,
    /// A read stopped on a bug (it panicked); only that read fails. A bug, not the storage
    /// failing: it is answered as an internal error, and the log stays open.
    #[error("a read of the event store failed on a bug: {0}")]
    ReadPanicked(String),
}

impl StoreError {
    /// Wraps a backend's own error.
    pub fn backend(e: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Arc::new(e))
    }
}

/// Why an append did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Another writer got there first (or the caller's view is stale): nothing was written.
    #[error("stream {stream_id} is at version {actual}, not the expected {expected}")]
    WrongExpectedVersion { stream_id: String, expected: u64, actual: u64 },
    /// A unique claim's key is taken: nothing was written.
    #[error("index key {0} is already taken")]
    UniqueViolation(String),
    /// A counter would go over its limit: nothing was written.
    #[error("counter {0} is at its limit")]
    LimitReached(String),
    /// Too many appends wait already: retry later.
    #[error("the append queue is full")]
    Busy,
    /// The store is closed or read-only.
    #[error("the event store is closed")]
    Closed,
    /// The backend failed; whether the append is durable is unknown to the caller, so it is
    /// reported as failed and the events may or may not appear (they never appear partially).
    #[error("the append could not be made durable")]
    Storage(#[source] StoreError),
}

/// A change to a derived index, committed atomically with the events that cause it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Adds to a counter (8-byte big-endian signed integer; absent = 0).
    Add(Vec<u8>, i64),
}

/// The value of a counter entry in an index this process computed itself (0 for none).
pub fn decode_counter(bytes: Option<&[u8]>) -> i64 {
    bytes.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, i64::from_be_bytes)
}

/// The value of the counter `key` as stored (0 for none). Stored bytes that are not a counter
/// are damage, not zero: read as 0, a quota or an opt-out would pass unchecked, and the next
/// change would write the wrong value over them for good.
pub fn stored_counter(key: &[u8], bytes: Option<&[u8]>) -> Result<i64, StoreError> {
    match bytes {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b).map(i64::from_be_bytes).map_err(|_| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            message: format!("a counter of {} bytes, not 8", b.len()),
        }),
    }
}

/// Bounds a counter must stay within once an append's index changes are applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterLimit {
    pub key: Vec<u8>,
    pub at_least: i64,
    pub at_most: i64,
}

impl CounterLimit {
    /// At most `max` (a quota).
    pub fn at_most(key: Vec<u8>, max: i64) -> Self {
        CounterLimit {
            key,
            at_least: i64::MIN,
            at_most: max,
        }
    }

    /// At least `min` (a resource that must still exist).
    pub fn at_least(key: Vec<u8>, min: i64) -> Self {
        CounterLimit {
            key,
            at_least: min,
            at_most: i64::MAX,
        }
    }
}

/// The first of `request`'s counter limits its index changes would break, given how a counter
/// stands before them (`read`): the one check both backends make, each where its appends are
/// ordered (sled's transaction, the clustered log's in-force rule).
pub fn broken_limit<'r, E>(
    request_ops: &[IndexOp],
    limits: &'r [CounterLimit],
    mut read: impl FnMut(&[u8]) -> Result<i64, E>,
) -> Result<Option<&'r [u8]>, E> {
    for limit in limits {
        let added: i64 = request_ops
            .iter()
            .map(|op| match op {
                IndexOp::Add(k, by) if *k == limit.key => *by,
                _ => 0,
            })
            .fold(0, i64::saturating_add);
        let after = read(&limit.key)?.saturating_add(added);
        if after < limit.at_least || after > limit.at_most {
            return Ok(Some(&limit.key));
        }
    }
    Ok(None)
}

/// Events for one stream, to be appended if the stream is still at `expected_version`.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: String,
    /// 0 for a stream that must not exist yet.
    pub expected_version: u64,
    pub meta: AppendMeta,
    pub events: Vec<PendingEvent>,
    /// The id of the stream's last event as the caller knows it: with the version, this makes
    /// the check exact even if another writer brought the stream to the same version.
    pub expected_last_event: Option<Uuid>,
    pub index_ops: Vec<IndexOp>,
    /// Index keys that must not exist yet, with the value to put under them (unique constraints,
    /// e.g. an E.164 number held by one resource only).
    pub unique_claims: Vec<(Vec<u8>, Vec<u8>)>,
    /// Counters (index keys changed by `IndexOp::Add`, by this append or others) and the bounds
    /// each must be within once this append's changes are applied, e.g. an account's live
    /// numbers and its quota.
    pub counter_limits: Vec<CounterLimit>,
    /// A snapshot of the stream's state after these events, stored with them.
    pub snapshot: Option<Snapshot>,
    /// What to commit instead when the counter limit it names is the first that does not hold.
    pub fallback: Option<Fallback>,
}

/// The events an append commits instead of its own when one counter limit does not hold (see
/// the module doc): as many as the append's, with the same ids.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// The index of the limit among the append's `counter_limits`.
    pub limit: usize,
    pub events: Vec<PendingEvent>,
    /// The command input its events record (the command the log decided in the end).
    pub command_input: serde_json::Value,
}

impl Fallback {
    /// Whether these events can stand in for `events`: as many, with the same ids (what follows
    /// the append on its stream follows either).
    pub fn fits(&self, events: &[PendingEvent]) -> bool {
        self.events.len() == events.len() && self.events.iter().zip(events).all(|(a, b)| a.event_id == b.event_id)
    }

    /// The fallback of `request` to commit when `broken` (the first of its counter limits out of
    /// its bounds) is the one the fallback names, if it fits the request's events.
    pub fn taken_for<'a>(request: &'a AppendRequest, broken: &[u8]) -> Option<&'a Fallback> {
        let fallback = request.fallback.as_ref().filter(|f| f.fits(&request.events))?;
        let named = request.counter_limits.get(fallback.limit)?;
        (named.key == broken).then_some(fallback)
    }
}

impl AppendRequest {
    /// An append of `events` that maintains no index, claims nothing and stores no snapshot (for
    /// tools, tests and benchmarks that write a stream directly).
    pub fn plain(stream_id: &str, expected_version: u64, meta: AppendMeta, events: Vec<PendingEvent>) -> Self {
        AppendRequest {
            stream_id: stream_id.to_string(),
            expected_version,
            meta,
            events,
            expected_last_event: None,
            index_ops: vec![],
            unique_claims: vec![],
            counter_limits: vec![],
            snapshot: None,
            fallback: None,
        }
    }
}

/// Where a stream is: its version (0 if it has no event) and the id of its last event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamHead {
    pub version: u64,
    pub last_event: Option<Uuid>,
}

/// The head of the global feed: its last position and that event's chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub position: u64,
    pub hash: [u8; 32],
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            position: 0,
            hash: GENESIS_HASH,
        }
    }
}

/// A checkpoint of the hash chain, published by the log's sealer: the chain hash at a feed
/// position, fixed in the log so that a later rewrite of the events before it is evident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    pub hash: [u8; 32],
    pub sealed_at_ms: u64,
}

/// Layout version of snapshot states; a snapshot of another version is ignored (full replay).
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// A stream's state right after `version`, as its aggregate serializes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Snapshot {
    pub version: u64,
    pub schema_version: u32,
    pub state: serde_json::Value,
}

/// What rebuilding a stream's state needs, read at once: its latest snapshot (if the backend has
/// a readable one) and the events after it, plus the stream's head.
#[derive(Debug, Clone, Default)]
pub struct StreamTail {
    pub snapshot: Option<Snapshot>,
    /// The first events after the snapshot's version (from version 1 without a snapshot), in
    /// order, as many as were asked for.
    pub events: Vec<EventEnvelope>,
    pub head: StreamHead,
}

/// One entry of the global feed as stored, for verification: a damaged envelope is reported with
/// its position instead of failing the whole read.
#[derive(Debug)]
pub struct FeedEntry {
    pub position: u64,
    /// The stream and version the backend filed the event under (`None` when it cannot tell).
    pub filed_under: Option<(String, u64)>,
    pub envelope: Result<EventEnvelope, String>,
}

/// Whether the derived index is usable as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    /// Built with this layout, in step with the log.
    Current,
    /// Missing or built with another layout while the log has events: rebuild it.
    NeedsRebuild,
}

/// The storage port. Every method that touches storage returns a future; a backend runs its
/// blocking work off the caller's thread (the HTTP workers never wait on a disk).
pub trait EventStore: Send + Sync + 'static {
    // ---- appends ------------------------------------------------------------------------------

    /// Hands an append to the store **now** (so appends keep the order of the calls) and returns
    /// the future of its answer, which resolves once the events are durable. Refuses at once when
    /// the store is closed, read-only, or its queue is full ([`AppendError::Busy`]).
    fn submit(&self, request: AppendRequest) -> Result<Appended, AppendError>;

    /// Appends and waits for the answer.
    fn append(&self, request: AppendRequest) -> Appended {
        match self.submit(request) {
            Ok(answer) => answer,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    // ---- streams ------------------------------------------------------------------------------

    /// The version of a stream as this process last saw it, without any I/O: a hint that an
    /// actor's state is stale because another writer (another node) has moved the stream, so it
    /// can re-read before deciding instead of having its append refused. `None` when the backend
    /// has nothing cheaper than a read (the default; a log with one writer never needs it).
    fn version_hint(&self, _stream_id: &str) -> Option<u64> {
        None
    }

    /// Whether other processes append to this log too (several nodes on one log). An actor's
    /// state, however current in this process, can then be behind the log without anything here
    /// saying so yet, so an answer that writes nothing (a no-op, or "not found") is given only
    /// once [`EventStore::stream_head`] confirms the stream is still where it was decided: a
    /// no-op answered from a stale state would acknowledge a write the log does not hold.
    /// `false` for a log with one writer (the default), whose actors are never behind it.
    fn has_other_writers(&self) -> bool {
        false
    }

    /// How far into the log this node's own acknowledged appends reach (a shared log's
    /// sequence): what a node that relays one of this node's answers makes its own reads wait
    /// for. `None` for a log with one writer (the default), whose reads always see every append.
    fn acknowledged_through(&self) -> Option<u64> {
        None
    }

    /// Makes this node's reads wait until its view of the log holds it up to `through` too: an
    /// append another node acknowledged for a request this node relayed (read-your-writes for a
    /// client that keeps talking to this node). Nothing to do for a log with one writer.
    fn read_after(&self, _through: u64) {}

    /// The events of a stream from `from_version` on, as far as this process has seen them, if
    /// it holds them at hand (a shared log's view keeps the latest commits it applied): what an
    /// actor that [`EventStore::version_hint`] found behind needs, without a read of the log.
    /// `None` when they are not all at hand (the default); then the log is read.
    fn recent_events(&self, _stream_id: &str, _from_version: u64) -> Option<Vec<EventEnvelope>> {
        None
    }

    /// A stream's version and last event id (version 0 when it has no event).
    fn stream_head(&self, stream_id: &str) -> StoreFuture<StreamHead>;

    /// Up to `limit` events of a stream with version ≥ `from_version`, in order.
    fn read_stream(&self, stream_id: &str, from_version: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>>;

    /// The latest snapshot of a stream and up to `limit` events after it, with the stream's
    /// head, in one read (the path every actor activation takes; the rest of a long tail is
    /// read a page at a time with [`EventStore::read_stream`], so memory does not grow with it).
    fn read_tail(&self, stream_id: &str, limit: usize) -> StoreFuture<StreamTail>;

    /// Streams with their versions, in stream id order, after `after` (exclusive), up to `limit`.
    fn stream_heads(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<(String, u64)>>;

    // ---- the global feed ----------------------------------------------------------------------

    /// Up to `limit` events with position > `after`, in position order.
    fn read_feed(&self, after: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>>;

    /// [`EventStore::read_feed`] as stored, for verification.
    fn feed_entries(&self, after: u64, limit: usize) -> StoreFuture<Vec<FeedEntry>>;

    /// The head of the feed and its chain hash.
    fn chain_head(&self) -> StoreFuture<ChainHead>;

    /// How far the chain is sealed: every event up to this position is covered by the chain as
    /// the log's sealer fixed it. A backend whose one writer chains every event as it appends it
    /// seals everything it has (the default).
    fn sealed_up_to(&self) -> StoreFuture<u64> {
        let head = self.chain_head();
        Box::pin(async move { Ok(head.await?.position) })
    }

    /// The checkpoints the sealer published, in position order (none for a backend whose one
    /// writer stores each event's hash with it).
    fn checkpoints(&self) -> StoreFuture<Vec<Checkpoint>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Watches the last durable feed position, for followers (`None` when the store takes no
    /// appends and so the feed never moves).
    fn watch_head(&self) -> Option<tokio::sync::watch::Receiver<u64>>;

    // ---- snapshots ----------------------------------------------------------------------------

    /// The latest snapshot of a stream.
    fn snapshot(&self, stream_id: &str) -> StoreFuture<Option<Snapshot>>;

    /// The ids of the streams that have a snapshot entry, in id order after `after`, up to
    /// `limit`. Only ids, so that a page can be long: each snapshot is read on its own
    /// ([`EventStore::snapshot`]), and an entry may read as none (a deletion).
    fn snapshot_ids(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<String>>;

    /// Deletes every snapshot. They are a cache: no answer changes, activations replay more.
    fn clear_snapshots(&self) -> StoreFuture<()>;

    // ---- the derived index --------------------------------------------------------------------

    /// One index entry.
    fn index_get(&self, key: &[u8]) -> StoreFuture<Option<Vec<u8>>>;

    /// One index entry, found if anyone wrote it before the call (for entries that, once
    /// written, stay): an entry this node's index has is returned at once; one it lacks is looked
    /// up again once the index has caught up with the log's end. A backend with one writer has
    /// every append in its index already (the default).
    fn index_get_latest(&self, key: &[u8]) -> StoreFuture<Option<Vec<u8>>> {
        self.index_get(key)
    }

    /// Index entries under `prefix` with key > `after` (or from the start), up to `limit`.
    #[allow(clippy::type_complexity)]
    fn index_scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> StoreFuture<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Whether the index must be rebuilt before the store serves requests.
    fn index_state(&self, layout_version: u64) -> StoreFuture<IndexState>;

    /// Replaces the whole index (a rebuild from the log) and records its layout version. Runs
    /// before requests are served. `through` is the feed position the entries were computed
    /// through: a backend whose index other writers keep moving meanwhile (a shared log) applies
    /// the index changes of the commits after it on top, so none is lost to the rebuild.
    fn replace_index(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, layout_version: u64, through: u64) -> StoreFuture<()>;

    // ---- lifecycle ----------------------------------------------------------------------------

    /// How durable an acknowledged append is (`fsync`, `flush`, `relaxed` for the embedded
    /// backend; `None` when the store takes no appends).
    fn durability(&self) -> Option<String>;

    /// Whether the storage still works: an error once it has failed (the embedded engine stops
    /// for good after a failed write, a full disk say, until the log is opened again). The
    /// server asks every second, and on an error reopens the log once the storage works again.
    /// A backend that recovers by itself (reconnecting to its cluster) always answers `Ok`.
    fn probe(&self) -> StoreFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Commits and answers everything already submitted, makes it durable, and lets go of the
    /// storage (a directory lock, connections). Later calls fail with [`StoreError::Closed`].
    fn close(&self) -> StoreFuture<()>;
}
