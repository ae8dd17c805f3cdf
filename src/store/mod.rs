//! The event log on sled: one stream per aggregate, a global feed, and derived indexes.
//!
//! Trees (keys big-endian so byte order is numeric order):
//! - `streams`: `stream id ‖ 0x00 ‖ version` → envelope JSON. A stream is gap-free from 1.
//! - `feed`: the global order across streams: one entry per group commit, `first position` →
//!   the `streams` keys of its events in position order (see [`feed`]).
//! - `heads`: `!chain` → last position ‖ last hash. (A stream's own head is its last key in
//!   `streams`, read where needed; logs of format 1 also kept a copy per stream here, which
//!   cost a write per append and is dropped when such a log is first opened for writing.)
//! - `index`: derived, rebuildable keys (views for Describe, client tokens, claimed numbers).
//! - `snapshots`: `stream id` → latest snapshot of its state (a cache: deleting it changes nothing).
//!
//! All writes go through one writer thread ([`writer`]) that commits whatever appends are waiting
//! in one transaction with a per-stream expected-version check, flushes once, and only then
//! answers every caller (group commit). Events are never updated or deleted.

mod envelope;
mod feed;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use envelope::{AppendMeta, EventEnvelope, PendingEvent, CURRENT_SCHEMA_VERSION, GENESIS_HASH};
pub use writer::{decode_counter, AppendError, AppendRequest, IndexOp};

use crate::config::Durability;

/// Marks a directory as a phone-ledger log, and its layout version.
const FORMAT_KEY: &[u8] = b"format";
/// sled's page cache when not configured (its own default is 1 GiB).
const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// Format 2: feed runs, stream heads read from `streams`.
const FORMAT: &[u8] = b"phone-ledger/2";
/// Logs with one feed entry per event and a stored head per stream: still read as they are;
/// the first open for writing drops the stored heads (they would go stale) and marks the log
/// with [`FORMAT`], which binaries of format 1 refuse.
const FORMAT_1: &[u8] = b"phone-ledger/1";
const SECRET_KEY: &[u8] = b"token-secret";
const INDEX_LAYOUT_KEY: &[u8] = b"index-layout";
pub(crate) const CHAIN_KEY: &[u8] = b"!chain";

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{0} is not a phone-ledger data directory")]
    NotALedger(PathBuf),
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record at {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("the event store is closed")]
    Closed,
}

pub(crate) struct Trees {
    pub db: sled::Db,
    pub streams: sled::Tree,
    pub feed: sled::Tree,
    pub heads: sled::Tree,
    pub index: sled::Tree,
    pub snapshots: sled::Tree,
}

/// An open log: the trees and the writer that owns all writes to them.
struct Open {
    trees: Arc<Trees>,
    /// `None` for a read-only store (offline audit tools).
    writer: Option<writer::WriterHandle>,
}

/// Handle to the log; cheap to clone.
///
/// Clones share one slot holding the open database; [`EventStore::close`] empties it, so the
/// sled file lock is released as soon as close returns, however many clones (in actors, in
/// HTTP workers still winding down) are left. Later calls fail with [`StoreError::Closed`].
#[derive(Clone)]
pub struct EventStore {
    open: Arc<RwLock<Option<Arc<Open>>>>,
    secret: Arc<[u8; 32]>,
    durability: Durability,
}

/// Opens sled, waiting briefly if the directory's lock is still held: a process that just closed
/// the same log releases it from sled's background threads a moment after `close` returns.
fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match sled::Config::new().path(dir).cache_capacity(cache_bytes).open() {
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// One entry of the global feed as stored, for verification.
#[derive(Debug)]
pub struct FeedEntry {
    pub position: u64,
    /// The `streams` key the feed entry points at.
    pub stream_key: Vec<u8>,
    pub envelope: Result<EventEnvelope, String>,
}

/// Key of one event in `streams`.
pub fn stream_key(stream_id: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream_id.len() + 9);
    k.extend_from_slice(stream_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The version in a `streams` key.
fn version_of_key(key: &[u8]) -> Result<u64, StoreError> {
    match key.len().checked_sub(9) {
        Some(at) if key[at] == 0 => decode_u64(&key[at + 1..], &String::from_utf8_lossy(key)),
        _ => Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            message: "not a stream key".into(),
        }),
    }
}

/// The current version of `stream` in the `streams` tree (0 if it has no event).
pub(crate) fn last_version(streams: &sled::Tree, stream: &str) -> Result<u64, StoreError> {
    match streams.scan_prefix(stream_prefix(stream)).next_back() {
        Some(entry) => version_of_key(&entry?.0),
        None => Ok(0),
    }
}

/// The id of a stored envelope's event. `EventId` is the envelope's first field, so it is read
/// off the front of the JSON; anything else falls back to decoding the whole envelope.
pub(crate) fn event_id_of(stored: &[u8]) -> Option<uuid::Uuid> {
    const FRONT: &[u8] = br#"{"EventId":""#;
    stored
        .strip_prefix(FRONT)
        .and_then(|rest| rest.get(..36))
        .and_then(|id| uuid::Uuid::try_parse_ascii(id).ok())
        .or_else(|| serde_json::from_slice::<EventEnvelope>(stored).ok().map(|e| e.event_id))
}

fn stream_prefix(stream_id: &str) -> Vec<u8> {
    let mut k = stream_id.as_bytes().to_vec();
    k.push(0);
    k
}

pub(crate) fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| StoreError::Corrupt {
        key: what.into(),
        message: "expected 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn decode_envelope(key: &[u8], bytes: &[u8]) -> Result<EventEnvelope, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

impl EventStore {
    /// Opens (creating if needed) the log in `dir` and starts its writer thread.
    pub fn open(dir: &Path, durability: Durability, max_batch: usize) -> Result<Self, StoreError> {
        Self::open_tuned(dir, durability, max_batch, DEFAULT_CACHE_BYTES)
    }

    /// [`EventStore::open`] with sled's page cache set to `cache_bytes`.
    pub fn open_tuned(dir: &Path, durability: Durability, max_batch: usize, cache_bytes: u64) -> Result<Self, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        let db = open_sled(dir, cache_bytes).map_err(|e| open_err(&e))?;
        Self::init(db, dir, durability, max_batch, true)
    }

    /// Opens an existing log for reading only (offline tools): no writer is started and nothing
    /// is appended. Refuses directories that are missing, locked by a running server, or not a
    /// phone-ledger log.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::Open {
                path: dir.to_path_buf(),
                message: "no such directory".into(),
            });
        }
        if !dir.join("conf").is_file() || !dir.join("db").is_file() {
            return Err(StoreError::NotALedger(dir.to_path_buf()));
        }
        let db = open_sled(dir, DEFAULT_CACHE_BYTES).map_err(|e| {
            let message = e.to_string();
            let message = if message.contains("lock") {
                "locked by a running server (ask it with --server URL)".to_string()
            } else {
                message
            };
            StoreError::Open {
                path: dir.to_path_buf(),
                message,
            }
        })?;
        Self::init(db, dir, Durability::Flush, 1, false)
    }

    fn init(db: sled::Db, dir: &Path, durability: Durability, max_batch: usize, writable: bool) -> Result<Self, StoreError> {
        let create = writable;
        match db.get(FORMAT_KEY)? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) if f.as_ref() == FORMAT_1 => {
                if create {
                    let heads = db.open_tree("heads")?;
                    let mut stale = sled::Batch::default();
                    for key in heads.iter().keys() {
                        let key = key?;
                        if key.as_ref() != CHAIN_KEY {
                            stale.remove(key);
                        }
                    }
                    heads.apply_batch(stale)?;
                    db.insert(FORMAT_KEY, FORMAT)?;
                }
            }
            Some(_) => return Err(StoreError::NotALedger(dir.to_path_buf())),
            None if create => {
                db.insert(FORMAT_KEY, FORMAT)?;
            }
            None => return Err(StoreError::NotALedger(dir.to_path_buf())),
        }
        let secret: [u8; 32] = match db.get(SECRET_KEY)? {
            Some(s) if s.len() == 32 => {
                let mut a = [0u8; 32];
                a.copy_from_slice(&s);
                a
            }
            _ if !writable => [0; 32],
            _ => {
                let s: [u8; 32] = rand::random();
                db.insert(SECRET_KEY, &s[..])?;
                s
            }
        };
        if writable {
            db.flush()?;
        }
        let trees = Arc::new(Trees {
            streams: db.open_tree("streams")?,
            feed: db.open_tree("feed")?,
            heads: db.open_tree("heads")?,
            index: db.open_tree("index")?,
            snapshots: db.open_tree("snapshots")?,
            db,
        });
        let data_file = dir.join("db");
        let writer = if writable {
            Some(writer::WriterHandle::start(trees.clone(), durability, data_file, max_batch)?)
        } else {
            None
        };
        Ok(EventStore {
            open: Arc::new(RwLock::new(Some(Arc::new(Open { trees, writer })))),
            secret: Arc::new(secret),
            durability,
        })
    }

    fn get(&self) -> Result<Arc<Open>, StoreError> {
        let slot = self.open.read().unwrap_or_else(|p| p.into_inner());
        slot.clone().ok_or(StoreError::Closed)
    }

    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        Ok(self.get()?.trees.clone())
    }

    /// Appends events to one stream if its version is still `expected_version`, durably. Resolves
    /// only after the events are flushed; never blocks the calling thread.
    pub async fn append(&self, request: AppendRequest) -> Result<Vec<EventEnvelope>, AppendError> {
        self.submit(request)?.await
    }

    /// Hands an append to the writer now (so appends keep the order of the calls) and returns
    /// the future of its answer, which resolves once the events are durable.
    pub fn submit(
        &self,
        request: AppendRequest,
    ) -> Result<impl std::future::Future<Output = Result<Vec<EventEnvelope>, AppendError>> + use<>, AppendError> {
        let open = self.get().map_err(|_| AppendError::Closed)?;
        match &open.writer {
            Some(writer) => writer.submit(request),
            None => Err(AppendError::Closed),
        }
    }

    /// Stops the writer after it has committed everything already queued, flushes, and lets go
    /// of the database.
    pub fn close(&self) {
        let taken = self.open.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(open) = taken else { return };
        if let Some(writer) = &open.writer {
            writer.shutdown();
        }
        if let Err(e) = open.trees.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        // Readers that cloned the slot a moment ago finish their single read and drop it.
        let mut open = open;
        for _ in 0..1000 {
            match Arc::try_unwrap(open) {
                Ok(_) => return,
                Err(still_shared) => {
                    open = still_shared;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        tracing::warn!("event store still in use after close");
    }

    /// Watches the last durable feed position (`None` for a read-only store).
    pub fn watch_head(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.get().ok()?.writer.as_ref().map(|w| w.watch_head())
    }

    /// Whether appends reach the device (`fsync`) or only the OS (`flush`); `None` when read-only.
    pub fn durability(&self) -> Option<Durability> {
        self.get().ok()?.writer.as_ref().map(|_| self.durability)
    }

    /// Current version of a stream (0 when it does not exist).
    pub fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        Ok(self.stream_head(stream_id)?.0)
    }

    /// Current version of a stream and the id of its last event.
    pub fn stream_head(&self, stream_id: &str) -> Result<(u64, Option<uuid::Uuid>), StoreError> {
        match self.trees()?.streams.scan_prefix(stream_prefix(stream_id)).next_back() {
            Some(entry) => {
                let (key, value) = entry?;
                Ok((version_of_key(&key)?, event_id_of(&value)))
            }
            None => Ok((0, None)),
        }
    }

    /// Events of a stream with version ≥ `from_version`, in order.
    pub fn read_stream(&self, stream_id: &str, from_version: u64) -> Result<Vec<EventEnvelope>, StoreError> {
        let start = stream_key(stream_id, from_version.max(1));
        let prefix = stream_prefix(stream_id);
        let mut out = Vec::new();
        for item in self.trees()?.streams.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode_envelope(&k, &v)?);
        }
        Ok(out)
    }

    /// Up to `limit` events of the global feed with position > `after`, in position order.
    pub fn read_feed(&self, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for item in feed::FeedIter::new(&trees.feed, after)?.take(limit) {
            let (position, stream_key) = item?;
            let bytes = trees.streams.get(&stream_key)?.ok_or_else(|| StoreError::Corrupt {
                key: format!("feed position {position}"),
                message: "points at a missing event".into(),
            })?;
            out.push(decode_envelope(&stream_key, &bytes)?);
        }
        Ok(out)
    }

    /// Raw feed entries after `after`, for verification: a damaged envelope is reported with its
    /// position instead of failing the whole read.
    pub fn feed_entries(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for item in feed::FeedIter::new(&trees.feed, after)?.take(limit) {
            let (position, key) = item?;
            let envelope = match trees.streams.get(&key)? {
                Some(bytes) => {
                    serde_json::from_slice::<EventEnvelope>(&bytes).map_err(|e| format!("cannot decode the stored envelope: {e}"))
                }
                None => Err("the feed points at a missing event".to_string()),
            };
            out.push(FeedEntry {
                position,
                stream_key: key,
                envelope,
            });
        }
        Ok(out)
    }

    /// Every stream with its version, in stream id order (a scan of all events' keys).
    pub fn stream_heads(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out: Vec<(String, u64)> = Vec::new();
        for key in self.trees()?.streams.iter().keys() {
            let key = key?;
            let version = version_of_key(&key)?;
            let stream = String::from_utf8_lossy(&key[..key.len() - 9]);
            match out.last_mut() {
                Some((last, v)) if *last == stream => *v = version,
                _ => out.push((stream.into_owned(), version)),
            }
        }
        Ok(out)
    }

    /// Last committed position and hash.
    pub fn head(&self) -> Result<(u64, [u8; 32]), StoreError> {
        writer::read_chain_head(&self.trees()?.heads)
    }

    /// The latest snapshot of a stream, as stored (a cache beside the log).
    pub fn snapshot(&self, stream_id: &str) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.trees()?.snapshots.get(stream_id.as_bytes())?)
    }

    /// Deletes every snapshot. They are a cache: no answer changes, activations replay more.
    pub fn clear_snapshots(&self) -> Result<(), StoreError> {
        Ok(self.trees()?.snapshots.clear()?)
    }

    /// Every snapshot: (stream id, stored bytes).
    pub fn snapshots(&self) -> Result<Vec<(String, sled::IVec)>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees()?.snapshots.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        Ok(out)
    }

    /// A derived index entry.
    pub fn index_get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.trees()?.index.get(key)?)
    }

    /// Index entries under `prefix` with key > `after` (or from the start), up to `limit`.
    pub fn index_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>>> {
        let trees = match self.trees() {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let start: Vec<u8> = match after {
            Some(a) => {
                let mut k = a.to_vec();
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let prefix = prefix.to_vec();
        Box::new(
            trees
                .index
                .range(start..)
                .take_while(move |r| r.as_ref().map(|(k, _)| k.starts_with(&prefix)).unwrap_or(true))
                .map(|r| r.map_err(StoreError::from)),
        )
    }

    /// Whether the index is empty while the log is not (it was dropped and must be rebuilt).
    /// Whether the index must be rebuilt: it was dropped while the log was not, or it was built
    /// with another layout than `layout_version`.
    pub fn index_needs_rebuild(&self, layout_version: u64) -> Result<bool, StoreError> {
        let trees = self.trees()?;
        if trees.feed.is_empty() {
            return Ok(false);
        }
        let built_with = match trees.db.get(INDEX_LAYOUT_KEY)? {
            Some(v) => decode_u64(&v, "index layout")?,
            None => 1,
        };
        Ok(trees.index.is_empty() || built_with != layout_version)
    }

    /// Replaces the whole index (rebuild from the log) and records its layout version. Runs
    /// before the server takes requests.
    pub fn replace_index(&self, entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>, layout_version: u64) -> Result<(), StoreError> {
        let trees = self.trees()?;
        trees.index.clear()?;
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k, v);
        }
        trees.index.apply_batch(batch)?;
        trees.db.insert(INDEX_LAYOUT_KEY, &layout_version.to_be_bytes())?;
        trees.db.flush()?;
        Ok(())
    }

    /// Records the index layout of a new log (nothing to rebuild).
    pub fn set_index_layout(&self, layout_version: u64) -> Result<(), StoreError> {
        let trees = self.trees()?;
        if trees.feed.is_empty() {
            trees.db.insert(INDEX_LAYOUT_KEY, &layout_version.to_be_bytes())?;
        }
        Ok(())
    }

    /// A secret of this data directory, for signing pagination tokens.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Number of events in the log (positions run from 1 without gaps, so it is the last one).
    pub fn len(&self) -> usize {
        self.head().map(|(position, _)| position as usize).unwrap_or(0)
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw access for tools that inspect or (in tests) damage the log.
    pub fn raw_db(&self) -> Result<sled::Db, StoreError> {
        Ok(self.trees()?.db.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_key_gives_back_its_version() {
        assert_eq!(version_of_key(&stream_key("phone-1", 42)).expect("version"), 42);
        assert_eq!(version_of_key(&stream_key("", 7)).expect("version"), 7);
        assert!(version_of_key(b"short").is_err());
        assert!(version_of_key(b"phone-1-no-separator").is_err());
    }

    #[test]
    fn the_event_id_is_read_off_the_front_of_a_stored_envelope() {
        let id = uuid::Uuid::new_v4();
        let stored = format!(r#"{{"EventId":"{id}","StreamId":"phone-1"}}"#);
        assert_eq!(event_id_of(stored.as_bytes()), Some(id));
        assert_eq!(event_id_of(b"not json"), None);
        assert_eq!(event_id_of(br#"{"EventId":"not-a-uuid-at-all-but-36-characters!!"}"#), None);
    }
}
