//! The embedded backend: the event log in one sled database in the data directory.
//!
//! Trees (keys big-endian so byte order is numeric order):
//! - `streams`: `stream id ‖ 0x00 ‖ version` → envelope JSON. A stream is gap-free from 1, and
//!   its head is its last key.
//! - `feed`: the global order across streams: one entry per group commit, `first position` →
//!   the `streams` keys of its events in position order (see [`feed`]).
//! - `heads`: `!chain` → last position ‖ last hash. (Logs of format 1 also kept a copy of each
//!   stream's head here, which cost a write per append and is dropped when such a log is first
//!   opened for writing.)
//! - `index`: the derived index of the port (views, client tokens, claims, counters).
//! - `snapshots`: `stream id` → latest [`Snapshot`] JSON.
//!
//! All writes go through one writer thread ([`writer`]) that commits whatever appends are waiting
//! in one transaction with a per-stream expected-version check, flushes once, and only then
//! answers every caller (group commit): the atomicity the port promises is that of one sled
//! transaction. Reads run on a few reader threads of the store ([`readers`]), never on the
//! caller's thread.

mod blobs;
mod durable;
mod feed;
#[cfg(test)]
mod format_tests;
mod readers;
pub mod testing;
mod writer;

use std::path::Path;
use std::sync::{Arc, RwLock};

use super::{AppendError, AppendRequest, Durability, SledSettings};
use super::{
    Appended, ChainHead, EventEnvelope, EventStore, FeedEntry, IndexState, Snapshot, StoreError, StoreFuture, StreamHead, StreamTail,
};

/// Marks a directory as a phone-ledger log, and its layout version.
const FORMAT_KEY: &[u8] = b"format";
/// Format 2: feed runs, stream heads read from `streams`.
const FORMAT: &[u8] = b"phone-ledger/2";
/// Logs with one feed entry per event and a stored head per stream: still read as they are;
/// the first open for writing drops the stored heads (they would go stale) and marks the log
/// with [`FORMAT`], which binaries of format 1 refuse.
const FORMAT_1: &[u8] = b"phone-ledger/1";
const INDEX_LAYOUT_KEY: &[u8] = b"index-layout";
pub(crate) const CHAIN_KEY: &[u8] = b"!chain";

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::backend(e)
    }
}

pub(crate) struct Trees {
    pub db: ::sled::Db,
    pub streams: ::sled::Tree,
    pub feed: ::sled::Tree,
    pub heads: ::sled::Tree,
    pub index: ::sled::Tree,
    pub snapshots: ::sled::Tree,
}

/// An open log: the trees, the writer that owns all writes to them and the reader threads.
struct Open {
    trees: Arc<Trees>,
    /// `None` for a read-only store (offline audit tools).
    writer: Option<writer::WriterHandle>,
    readers: readers::Readers,
}

/// The sled event store; cheap to clone.
///
/// Clones share one slot holding the open database. [`EventStore::close`] empties the slot,
/// stops the writer and the reader threads (each after finishing what was already handed to it),
/// and drops the last handle to the database: the directory lock is released when close returns,
/// however many clones (in actors, in HTTP workers winding down) remain.
#[derive(Clone)]
pub struct SledStore {
    open: Arc<RwLock<Option<Open>>>,
    durability: Durability,
}

/// Opens sled, waiting briefly if the directory's lock is still held: a process that just closed
/// the same log releases it from sled's background threads a moment after `close` returns.
///
/// A log whose every batch is flushed by the writer gets no flushes from sled's own background
/// thread: those would make the log's pointers to blob files durable before the writer has
/// synced the files ([`blobs`]). A relaxed log keeps them (they are all that makes it durable
/// between the writer's rare flushes).
fn open_sled(dir: &Path, cache_bytes: u64, durability: Durability) -> Result<::sled::Db, ::sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let background_flushes = match durability {
        Durability::Relaxed => Some(500),
        Durability::Flush | Durability::Fsync => None,
    };
    loop {
        match ::sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(background_flushes)
            .open()
        {
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// Key of one event in `streams`.
pub(crate) fn stream_key(stream_id: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream_id.len() + 9);
    k.extend_from_slice(stream_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The stream id and version in a `streams` key.
fn split_key(key: &[u8]) -> Result<(&[u8], u64), StoreError> {
    match key.len().checked_sub(9) {
        Some(at) if key[at] == 0 => Ok((&key[..at], decode_u64(&key[at + 1..], &String::from_utf8_lossy(key))?)),
        _ => Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            message: "not a stream key".into(),
        }),
    }
}

/// The version in a `streams` key.
fn version_of_key(key: &[u8]) -> Result<u64, StoreError> {
    split_key(key).map(|(_, v)| v)
}

/// The current version of `stream` in the `streams` tree (0 if it has no event).
pub(crate) fn last_version(streams: &::sled::Tree, stream: &str) -> Result<u64, StoreError> {
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

fn decode_envelope(key: &[u8], bytes: &[u8]) -> Result<EventEnvelope, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn decode_snapshot(stream: &str, bytes: &[u8]) -> Result<Snapshot, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("snapshot of {stream} is unreadable: {e}"))
}

/// The key after every key that starts with `key` (for "after this one" scans).
fn just_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

impl SledStore {
    /// Opens (creating if needed) the log in `dir` and starts its writer thread.
    pub fn open(dir: &Path, settings: &SledSettings) -> Result<Self, StoreError> {
        let open_err = |e: Arc<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: dir.to_path_buf(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(Arc::new(e)))?;
        let db = open_sled(dir, settings.cache_capacity_bytes, settings.durability).map_err(|e| open_err(Arc::new(e)))?;
        Self::init(db, dir, settings, true)
    }

    /// Opens an existing log for reading only (offline tools): no writer is started and nothing
    /// is appended. Refuses directories that are missing, locked by a running server, or not a
    /// phone-ledger log.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |message: &str| StoreError::Open {
            path: dir.to_path_buf(),
            source: Arc::new(std::io::Error::other(message.to_string())),
        };
        if !dir.is_dir() {
            return Err(open_err("no such directory"));
        }
        if !dir.join("conf").is_file() || !dir.join("db").is_file() {
            return Err(StoreError::NotALedger(dir.to_path_buf()));
        }
        let settings = SledSettings::default();
        let db = open_sled(dir, settings.cache_capacity_bytes, settings.durability).map_err(|e| {
            if e.to_string().contains("lock") {
                open_err("locked by a running server (ask it with --server URL)")
            } else {
                StoreError::Open {
                    path: dir.to_path_buf(),
                    source: Arc::new(e),
                }
            }
        })?;
        Self::init(db, dir, &settings, false)
    }

    fn init(db: ::sled::Db, dir: &Path, settings: &SledSettings, writable: bool) -> Result<Self, StoreError> {
        match db.get(FORMAT_KEY)? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) if f.as_ref() == FORMAT_1 => {
                if writable {
                    let heads = db.open_tree("heads")?;
                    let mut stale = ::sled::Batch::default();
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
            None if writable => {
                db.insert(FORMAT_KEY, FORMAT)?;
            }
            None => return Err(StoreError::NotALedger(dir.to_path_buf())),
        }
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
        let writer = if writable {
            Some(writer::WriterHandle::start(
                trees.clone(),
                settings.durability,
                dir.join("db"),
                settings.max_batch,
            )?)
        } else {
            None
        };
        let readers = readers::Readers::start(trees.clone())?;
        Ok(SledStore {
            open: Arc::new(RwLock::new(Some(Open { trees, writer, readers }))),
            durability: settings.durability,
        })
    }

    /// Runs `read` on a reader thread with the open trees.
    /// Its answer waits until what it saw is durable ([`durable`]).
    fn read<T: Send + 'static>(&self, read: impl FnOnce(&Trees) -> Result<T, StoreError> + Send + 'static) -> StoreFuture<T> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        match open.as_ref() {
            Some(open) => {
                let done = open.readers.run(read);
                match open.writer.as_ref().map(writer::WriterHandle::gate) {
                    Some(gate) => Box::pin(async move {
                        let answer = done.await?;
                        gate.passed().await?;
                        Ok(answer)
                    }),
                    None => done,
                }
            }
            None => Box::pin(std::future::ready(Err(StoreError::Closed))),
        }
    }
}

// ---- reads, on the reader threads ----------------------------------------------------------------

fn stream_head(t: &Trees, stream_id: &str) -> Result<StreamHead, StoreError> {
    match t.streams.scan_prefix(stream_prefix(stream_id)).next_back() {
        Some(entry) => {
            let (key, value) = entry?;
            Ok(StreamHead {
                version: version_of_key(&key)?,
                last_event: event_id_of(&value),
            })
        }
        None => Ok(StreamHead::default()),
    }
}

fn read_stream(t: &Trees, stream_id: &str, from_version: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
    let start = stream_key(stream_id, from_version.max(1));
    let prefix = stream_prefix(stream_id);
    let mut out = Vec::new();
    for item in t.streams.range(start..).take(limit) {
        let (k, v) = item?;
        if !k.starts_with(&prefix) {
            break;
        }
        out.push(decode_envelope(&k, &v)?);
    }
    Ok(out)
}

fn read_tail(t: &Trees, stream_id: &str, limit: usize) -> Result<StreamTail, StoreError> {
    // A snapshot is a cache: one that cannot be read (undecodable, or sled cannot read it back,
    // as when the separate file sled keeps a big value in was lost) is replayed instead.
    let stored = t.snapshots.get(stream_id.as_bytes()).unwrap_or_else(|e| {
        tracing::warn!(stream = stream_id, error = %e, "cannot read the snapshot; replaying the stream");
        None
    });
    let snapshot = match stored {
        Some(bytes) => match decode_snapshot(stream_id, &bytes) {
            Ok(s) => Some(s),
            Err(problem) => {
                tracing::warn!(stream = stream_id, problem, "ignoring an unreadable snapshot");
                None
            }
        },
        None => None,
    };
    // One range read from the snapshot's own event (for the id of the stream's last event when
    // nothing follows it) on.
    let from = snapshot.as_ref().map_or(1, |s| s.version.max(1));
    let mut asked = if snapshot.is_some() { limit.saturating_add(1) } else { limit };
    let mut events = read_stream(t, stream_id, from, asked)?;
    let snapshot = match snapshot {
        Some(s) if events.first().is_some_and(|e| e.version == s.version) => Some(s),
        Some(s) => {
            tracing::warn!(stream = stream_id, version = s.version, "ignoring a snapshot beyond the stream");
            asked = limit;
            events = read_stream(t, stream_id, 1, asked)?;
            None
        }
        None => None,
    };
    // The read reached the stream's end unless it was cut short.
    let head = match events.last() {
        Some(last) if events.len() < asked => StreamHead {
            version: last.version,
            last_event: Some(last.event_id),
        },
        _ => stream_head(t, stream_id)?,
    };
    if snapshot.is_some() {
        events.remove(0);
    }
    Ok(StreamTail { snapshot, events, head })
}

fn stream_heads(t: &Trees, after: Option<String>, limit: usize) -> Result<Vec<(String, u64)>, StoreError> {
    // Every event's key is visited (one key per event); `after` skips whole streams.
    let start = after.map(|a| {
        let mut k = a.into_bytes();
        k.push(1);
        k
    });
    let mut out: Vec<(String, u64)> = Vec::new();
    let keys = match start {
        Some(s) => t.streams.range(s..),
        None => t.streams.iter(),
    };
    for key in keys.keys() {
        let key = key?;
        let (stream, version) = split_key(&key)?;
        let stream = String::from_utf8_lossy(stream);
        if let Some((_, v)) = out.last_mut().filter(|(last, _)| *last == stream) {
            *v = version;
        } else if out.len() == limit {
            break;
        } else {
            out.push((stream.into_owned(), version));
        }
    }
    Ok(out)
}

fn read_feed(t: &Trees, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut out = Vec::new();
    for item in feed::FeedIter::new(&t.feed, after)?.take(limit) {
        let (position, stream_key) = item?;
        let bytes = t.streams.get(&stream_key)?.ok_or_else(|| StoreError::Corrupt {
            key: format!("feed position {position}"),
            message: "points at a missing event".into(),
        })?;
        out.push(decode_envelope(&stream_key, &bytes)?);
    }
    Ok(out)
}

fn feed_entries(t: &Trees, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
    let mut out = Vec::new();
    for item in feed::FeedIter::new(&t.feed, after)?.take(limit) {
        let (position, key) = item?;
        let envelope = match t.streams.get(&key)? {
            Some(bytes) => serde_json::from_slice::<EventEnvelope>(&bytes).map_err(|e| format!("cannot decode the stored envelope: {e}")),
            None => Err("the feed points at a missing event".to_string()),
        };
        out.push(FeedEntry {
            position,
            filed_under: split_key(&key)
                .ok()
                .map(|(stream, version)| (String::from_utf8_lossy(stream).into_owned(), version)),
            envelope,
        });
    }
    Ok(out)
}

fn snapshot_ids(t: &Trees, after: Option<String>, limit: usize) -> Result<Vec<String>, StoreError> {
    let entries = match after {
        Some(a) => t.snapshots.range(just_after(a.as_bytes())..),
        None => t.snapshots.iter(),
    };
    let mut out = Vec::new();
    for item in entries.keys().take(limit) {
        out.push(String::from_utf8_lossy(&item?).into_owned());
    }
    Ok(out)
}

#[allow(clippy::type_complexity)]
fn index_scan(t: &Trees, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let start = match after {
        Some(a) => just_after(a),
        None => prefix.to_vec(),
    };
    let mut out = Vec::new();
    for item in t.index.range(start..) {
        let (k, v) = item?;
        if !k.starts_with(prefix) || out.len() == limit {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

fn index_state(t: &Trees, layout_version: u64, writable: bool) -> Result<IndexState, StoreError> {
    if t.feed.is_empty() {
        // A new log: nothing to rebuild; record the layout its index is built with.
        if writable {
            t.db.insert(INDEX_LAYOUT_KEY, &layout_version.to_be_bytes())?;
        }
        return Ok(IndexState::Current);
    }
    let built_with = match t.db.get(INDEX_LAYOUT_KEY)? {
        Some(v) => decode_u64(&v, "index layout")?,
        None => 1,
    };
    Ok(if t.index.is_empty() || built_with != layout_version {
        IndexState::NeedsRebuild
    } else {
        IndexState::Current
    })
}

fn replace_index(t: &Trees, entries: Vec<(Vec<u8>, Vec<u8>)>, layout_version: u64) -> Result<(), StoreError> {
    t.index.clear()?;
    let mut batch = ::sled::Batch::default();
    for (k, v) in entries {
        batch.insert(k, v);
    }
    t.index.apply_batch(batch)?;
    t.db.insert(INDEX_LAYOUT_KEY, &layout_version.to_be_bytes())?;
    t.db.flush()?;
    Ok(())
}

impl EventStore for SledStore {
    fn submit(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        match open.as_ref().and_then(|o| o.writer.as_ref()) {
            Some(writer) => writer.submit(request).map(|answer| Box::pin(answer) as Appended),
            None => Err(AppendError::Closed),
        }
    }

    fn stream_head(&self, stream_id: &str) -> StoreFuture<StreamHead> {
        let id = stream_id.to_string();
        self.read(move |t| stream_head(t, &id))
    }

    fn read_stream(&self, stream_id: &str, from_version: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>> {
        let id = stream_id.to_string();
        self.read(move |t| read_stream(t, &id, from_version, limit))
    }

    fn read_tail(&self, stream_id: &str, limit: usize) -> StoreFuture<StreamTail> {
        let id = stream_id.to_string();
        self.read(move |t| read_tail(t, &id, limit))
    }

    fn stream_heads(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<(String, u64)>> {
        let after = after.map(str::to_string);
        self.read(move |t| stream_heads(t, after, limit))
    }

    fn read_feed(&self, after: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>> {
        self.read(move |t| read_feed(t, after, limit))
    }

    fn feed_entries(&self, after: u64, limit: usize) -> StoreFuture<Vec<FeedEntry>> {
        self.read(move |t| feed_entries(t, after, limit))
    }

    fn chain_head(&self) -> StoreFuture<ChainHead> {
        self.read(|t| writer::read_chain_head(&t.heads))
    }

    fn watch_head(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        open.as_ref()?.writer.as_ref().map(|w| w.watch_head())
    }

    fn snapshot(&self, stream_id: &str) -> StoreFuture<Option<Snapshot>> {
        let id = stream_id.to_string();
        self.read(move |t| match t.snapshots.get(id.as_bytes())? {
            Some(bytes) => decode_snapshot(&id, &bytes).map(Some).map_err(|message| StoreError::Corrupt {
                key: format!("snapshot {id}"),
                message,
            }),
            None => Ok(None),
        })
    }

    fn snapshot_ids(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<String>> {
        let after = after.map(str::to_string);
        self.read(move |t| snapshot_ids(t, after, limit))
    }

    fn clear_snapshots(&self) -> StoreFuture<()> {
        self.read(|t| Ok(t.snapshots.clear()?))
    }

    fn index_get(&self, key: &[u8]) -> StoreFuture<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.read(move |t| Ok(t.index.get(&key)?.map(|v| v.to_vec())))
    }

    fn index_scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> StoreFuture<Vec<(Vec<u8>, Vec<u8>)>> {
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.read(move |t| index_scan(t, &prefix, after.as_deref(), limit))
    }

    fn index_state(&self, layout_version: u64) -> StoreFuture<IndexState> {
        let writable = self.durability().is_some();
        self.read(move |t| index_state(t, layout_version, writable))
    }

    /// (`through` needs no use: the one writer is this process's, and a rebuild runs before it
    /// takes any append.)
    fn replace_index(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, layout_version: u64, _through: u64) -> StoreFuture<()> {
        if self.durability().is_none() {
            return Box::pin(std::future::ready(Err(StoreError::ReadOnly)));
        }
        self.read(move |t| replace_index(t, entries, layout_version))
    }

    fn durability(&self) -> Option<String> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        open.as_ref()?.writer.as_ref().map(|_| self.durability.as_str().to_string())
    }

    fn probe(&self) -> StoreFuture<()> {
        // The writer knows when a batch could not be made durable (sled's flush, a blob file's
        // sync, the data file's fdatasync: sled itself records only the first): from then on
        // nothing is, until the log is opened again. The probe does not flush itself: a flush
        // beside the writer's could make the log's pointers to blob files durable before the
        // writer has synced the files.
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        let failure = match open.as_ref() {
            Some(open) => open.writer.as_ref().and_then(|w| w.gate().failure()),
            None => Some(StoreError::Closed),
        };
        Box::pin(std::future::ready(failure.map_or(Ok(()), Err)))
    }

    fn close(&self) -> StoreFuture<()> {
        let slot = self.open.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // Later calls find the slot empty and are refused.
                let taken = slot.write().unwrap_or_else(|p| p.into_inner()).take();
                let Some(Open { trees, writer, readers }) = taken else {
                    return Ok(());
                };
                if let Some(writer) = &writer {
                    writer.shutdown();
                }
                readers.shutdown();
                trees.db.flush()?;
                // The writer and reader threads have ended and dropped their handles: this is
                // the last one, and dropping it lets go of the directory.
                drop(trees);
                Ok(())
            })
            .await
            .map_err(StoreError::backend)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The append that starts `stream` (a requested number's first event), by a test.
    fn requested(stream: &str) -> AppendRequest {
        let event = crate::domain::phone_number::PhoneNumberEvent::PhoneNumberRequested(Box::new(
            crate::domain::phone_number::PhoneNumber::example(stream, "111122223333", "us-east-1"),
        ));
        let meta = crate::store::AppendMeta::direct("111122223333", "us-east-1", "sled-test", "Test/Append");
        AppendRequest::plain(stream, 0, meta, crate::codec::pending_events(&[event]).expect("events"))
    }

    /// Holds `store`'s later flushes: each waits for a message saying whether it works.
    fn hold_flushes(store: &SledStore) -> std::sync::mpsc::SyncSender<bool> {
        let open = store.open.read().expect("lock");
        open.as_ref().and_then(|o| o.writer.as_ref()).expect("a writer").hold_flushes()
    }

    /// A read that sees an append committed but not yet flushed answers only once it is
    /// durable: a crash in between would lose what it had answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_answers_only_what_is_durable() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path(), &SledSettings::default()).expect("open");
        let release = hold_flushes(&store);
        let appended = tokio::spawn(store.submit(requested("phone-1")).expect("queued"));
        // Committed (visible to sled's readers) and held before its flush.
        let trees = store.open.read().expect("lock").as_ref().expect("open").trees.clone();
        let committed = async {
            while trees.streams.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), committed)
            .await
            .expect("committed");
        let read = tokio::spawn(store.read_stream("phone-1", 1, 10));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!read.is_finished() && !appended.is_finished(), "nothing answered before the flush");
        release.send(true).expect("release");
        let events = read.await.expect("read task").expect("read");
        assert_eq!(events.len(), 1);
        assert!(appended.await.expect("append task").is_ok());
        // No flush under way: a read answers at once.
        assert_eq!(store.read_stream("phone-1", 1, 10).await.expect("read").len(), 1);
    }

    /// sled keeps a value too big for its log (a snapshot of a big opt-out list, over a
    /// quarter of a log segment) in a file of its own under `blobs/`. Such a file lost, sled
    /// reads the log without the value: a snapshot's stream is then replayed. (What would
    /// lose more, an event in a blob, is why the writer syncs blob files with each flush.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_sled_cannot_read_back_is_replayed() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let store = SledStore::open(dir.path(), &SledSettings::default()).expect("open");
            let big = Snapshot {
                version: 1,
                schema_version: crate::store::SNAPSHOT_SCHEMA_VERSION,
                state: serde_json::json!({ "Padding": "x".repeat(400 * 1024) }),
            };
            let request = AppendRequest {
                snapshot: Some(big),
                ..requested("phone-1")
            };
            store.append(request).await.expect("append");
            // The append was answered once the blob file holding its snapshot was synced.
            let blob_files = || -> Vec<u64> {
                std::fs::read_dir(dir.path().join("blobs"))
                    .expect("blobs")
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            };
            let newest = blob_files().into_iter().max().expect("the snapshot went to a blob file");
            let synced = store
                .open
                .read()
                .expect("lock")
                .as_ref()
                .and_then(|o| o.writer.as_ref())
                .expect("writer")
                .blobs_synced();
            assert!(synced >= newest, "blob {newest} was not synced (synced through {synced})");
            store.close().await.expect("close");
        }
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs")).expect("blobs").collect();
        for blob in blobs {
            std::fs::remove_file(blob.expect("entry").path()).expect("remove");
        }
        let store = SledStore::open(dir.path(), &SledSettings::default()).expect("open again");
        let tail = store.read_tail("phone-1", 100).await.expect("the stream reads");
        assert!(tail.snapshot.is_none(), "no snapshot: replayed");
        assert_eq!((tail.events.len(), tail.head.version), (1, 1));
        store.close().await.expect("close");
    }

    /// A counter whose stored bytes are not a counter (a damaged disk) fails the append that
    /// reads or changes it, with the damage named, and only that one: read as 0 it would let a
    /// quota or an opt-out pass, and the append would write a wrong value over it for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_counter_fails_only_the_append_that_uses_it() {
        let dir = tempfile::tempdir().expect("dir");
        let append = |stream: &str, counter: Option<&[u8]>| AppendRequest {
            index_ops: counter.map(|k| crate::store::IndexOp::Add(k.to_vec(), 1)).into_iter().collect(),
            counter_limits: counter
                .map(|k| crate::store::CounterLimit::at_most(k.to_vec(), 10))
                .into_iter()
                .collect(),
            ..requested(stream)
        };
        {
            let store = SledStore::open(dir.path(), &SledSettings::default()).expect("open");
            store.append(append("phone-1", Some(b"c/quota"))).await.expect("append");
            store.close().await.expect("close");
        }
        {
            let db = open_sled(dir.path(), 1 << 20, Durability::Flush).expect("sled");
            db.open_tree("index")
                .expect("index")
                .insert(b"c/quota", &[0u8, 1, 2][..])
                .expect("damage");
            db.flush().expect("flush");
        }
        let store = SledStore::open(dir.path(), &SledSettings::default()).expect("open again");
        let using = store.submit(append("phone-2", Some(b"c/quota"))).expect("queued");
        let other = store.submit(append("phone-3", None)).expect("queued");
        match using.await {
            Err(AppendError::Storage(StoreError::Corrupt { key, message })) => {
                assert_eq!((key.as_str(), message.as_str()), ("c/quota", "a counter of 3 bytes, not 8"))
            }
            other => panic!("{:?}", other.map(|e| e.len())),
        }
        other.await.expect("an append that uses no counter is taken");
        assert_eq!(
            store.index_get(b"c/quota").await.expect("read"),
            Some(vec![0, 1, 2]),
            "left as found"
        );
        store.close().await.expect("close");
    }

    /// A flush that fails: the appends of its batch are refused, reads that may have seen them
    /// fail too, and the probe says so (the server then opens the log again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_flush_reads_fail_and_the_probe_tells() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path(), &SledSettings::default()).expect("open");
        let release = hold_flushes(&store);
        assert!(store.probe().await.is_ok());
        let appended = store.submit(requested("phone-1")).expect("queued");
        release.send(false).expect("fail the flush");
        assert!(matches!(appended.await, Err(AppendError::Storage(_))));
        assert!(
            store.read_stream("phone-1", 1, 10).await.is_err(),
            "what the failed flush held is not read"
        );
        assert!(store.probe().await.is_err(), "the probe tells");
        store.close().await.expect("close");
    }

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
