//! The single writer thread: group commit.
//!
//! Callers queue `AppendRequest`s on a bounded channel. The writer takes whatever is waiting (up
//! to `max_batch`), commits all of it in **one** sled transaction across the trees (sled forces
//! log writes per transaction, so one transaction per event tops out near 10k/s on a 2-core
//! machine with a virtio disk, where 64 per transaction reach about 44k), flushes once,
//! `fdatasync`s the data file when durability is `fsync`, and only then answers every caller.
//! Each request keeps its own expected-version check: a stale one fails alone, without touching
//! the others of its batch.
//!
//! Every sled insert costs about as much as the rest of an event's write (a copy-on-write of its
//! node, a log record), so the writer makes few: per event, the event; per append, its index
//! changes; per batch, one feed run for all its positions and the chain head. The check of a
//! stream's version reads the log itself (event N exists, N+1 does not) rather than a stored
//! head that would need rewriting on every append.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::oneshot;

use super::{decode_u64, event_id_of, feed, last_version, stream_key, Trees, CHAIN_KEY};
use crate::store::{
    broken_limit, stored_counter, AppendError, AppendRequest, ChainHead, Durability, EventEnvelope, Fallback, IndexOp, PendingEvent,
    StoreError, StreamHead, CURRENT_SCHEMA_VERSION,
};

/// How many appends may wait for the writer before callers are told to back off.
const QUEUE_CAPACITY: usize = 16_384;

type Reply = oneshot::Sender<Result<Vec<EventEnvelope>, AppendError>>;

enum Msg {
    Append(Box<AppendRequest>, Reply),
    Shutdown,
    /// Tests: from now on, each flush waits for a message on this channel (`false`: it fails).
    #[cfg(test)]
    HoldFlushes(std::sync::mpsc::Receiver<bool>),
}

pub(crate) struct WriterHandle {
    tx: SyncSender<Msg>,
    /// Appends submitted and not yet taken by the writer (the queue depth metric).
    queued: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The last durable position, for followers of the feed.
    head: tokio::sync::watch::Receiver<u64>,
    /// Where reads wait until what they saw is durable.
    gate: super::durable::Gate,
    /// Tests: the highest blob file the writer synced.
    #[cfg(test)]
    blobs_synced: Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) fn read_chain_head(heads: &sled::Tree) -> Result<ChainHead, StoreError> {
    match heads.get(CHAIN_KEY)? {
        Some(v) if v.len() == 40 => {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&v[8..40]);
            Ok(ChainHead {
                position: decode_u64(&v[..8], "!chain")?,
                hash,
            })
        }
        Some(_) => Err(StoreError::Corrupt {
            key: "!chain".into(),
            message: "expected 40 bytes".into(),
        }),
        None => Ok(ChainHead::default()),
    }
}

impl WriterHandle {
    pub(crate) fn start(trees: Arc<Trees>, durability: Durability, data_file: PathBuf, max_batch: usize) -> Result<Self, StoreError> {
        let head = read_chain_head(&trees.heads)?;
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let (head_tx, head_rx) = tokio::sync::watch::channel(head.position);
        let data_file_for_errors = data_file.clone();
        let blobs = super::blobs::BlobFiles::new(data_file.parent().map(std::path::Path::to_path_buf).unwrap_or_default());
        #[cfg(test)]
        let blobs_synced = blobs.synced_through();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let (batches, gate) = super::durable::batches();
        let thread = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || {
                Writer {
                    trees,
                    durability,
                    data_file,
                    max_batch,
                    position: head.position,
                    hash: head.hash,
                    head: head_tx,
                    queued: writer_queued,
                    batches,
                    #[cfg(test)]
                    held: None,
                    blobs,
                }
                .run(rx)
            })
            .map_err(|e| StoreError::Open {
                path: data_file_for_errors,
                source: std::sync::Arc::new(e),
            })?;
        Ok(WriterHandle {
            tx,
            queued,
            thread: Mutex::new(Some(thread)),
            head: head_rx,
            gate,
            #[cfg(test)]
            blobs_synced,
        })
    }

    pub(crate) fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.clone()
    }

    /// The gate a read waits at before it answers (see [`super::durable`]).
    pub(crate) fn gate(&self) -> super::durable::Gate {
        self.gate.clone()
    }

    pub(crate) fn submit(
        &self,
        request: AppendRequest,
    ) -> Result<impl std::future::Future<Output = Result<Vec<EventEnvelope>, AppendError>> + use<>, AppendError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Msg::Append(Box::new(request), reply)) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                Ok(async move { answer.await.unwrap_or(Err(AppendError::Closed)) })
            }
            Err(TrySendError::Full(_)) => Err(AppendError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Closed),
        }
    }

    /// Tests: the highest blob file the writer synced.
    #[cfg(test)]
    pub(crate) fn blobs_synced(&self) -> u64 {
        self.blobs_synced.load(Ordering::SeqCst)
    }

    /// Tests: holds every later flush until the returned sender sends whether it works (one
    /// message per flush).
    #[cfg(test)]
    pub(crate) fn hold_flushes(&self) -> SyncSender<bool> {
        let (release, held) = sync_channel(16);
        let _ = self.tx.send(Msg::HoldFlushes(held));
        release
    }

    pub(crate) fn shutdown(&self) {
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread {
            // Queued appends before this message are still committed and answered.
            let _ = self.tx.send(Msg::Shutdown);
            if thread.join().is_err() {
                tracing::error!("event writer thread panicked");
            }
        }
    }
}

struct Writer {
    trees: Arc<Trees>,
    durability: Durability,
    data_file: PathBuf,
    max_batch: usize,
    position: u64,
    hash: [u8; 32],
    head: tokio::sync::watch::Sender<u64>,
    queued: Arc<AtomicUsize>,
    /// Numbers each batch before it commits, and tells readers once it is durable. Once a batch
    /// could not be made durable, it keeps why ([`Batches::failure`]): every later append is
    /// refused with it until the log is opened again (the server's probe does that once the
    /// storage works), so no append is acknowledged on top of a state whose durability is
    /// unknown, with numbering that may have been read back wrong.
    ///
    /// [`Batches::failure`]: super::durable::Batches::failure
    batches: super::durable::Batches,
    /// Tests: each flush waits for a message here.
    #[cfg(test)]
    held: Option<std::sync::mpsc::Receiver<bool>>,
    /// sled's files of big log items, which its flush does not sync.
    blobs: super::blobs::BlobFiles,
}

type Outcomes = Vec<Result<Vec<EventEnvelope>, AppendError>>;

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        // Opened once: fdatasync on it makes sled's flushed pages reach the device.
        let data_file = match (self.durability, File::open(&self.data_file)) {
            (Durability::Fsync, Ok(f)) => Some(f),
            (Durability::Fsync, Err(e)) => {
                tracing::warn!(path = %self.data_file.display(), error = %e, "cannot open data file for fdatasync; durability falls back to flush");
                None
            }
            _ => None,
        };
        let mut stop = false;
        while !stop {
            let mut batch: Vec<(Box<AppendRequest>, Reply)> = match rx.recv() {
                Ok(Msg::Append(r, reply)) => vec![(r, reply)],
                Ok(Msg::Shutdown) | Err(_) => break,
                #[cfg(test)]
                Ok(Msg::HoldFlushes(held)) => {
                    self.held = Some(held);
                    continue;
                }
            };
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(Msg::Append(r, reply)) => batch.push((r, reply)),
                    Ok(Msg::Shutdown) => {
                        stop = true;
                        break;
                    }
                    #[cfg(test)]
                    Ok(Msg::HoldFlushes(held)) => self.held = Some(held),
                    Err(_) => break,
                }
            }
            let waiting = self.queued.fetch_sub(batch.len(), Ordering::Relaxed).saturating_sub(batch.len());
            metrics::gauge!(crate::telemetry::WRITER_QUEUE).set(waiting as f64);
            metrics::histogram!(crate::telemetry::COMMIT_BATCH).record(batch.len() as f64);
            // Numbered before it commits: a read that sees any of it waits for its flush.
            let number = self.batches.begin();
            let outcomes = if let Some(e) = self.batches.failure() {
                batch.iter().map(|_| Err(AppendError::Storage(e.clone()))).collect()
            } else {
                self.commit_durably(&batch, data_file.as_ref())
            };
            // Durable, or nothing of it was written (ignored once a flush failed).
            self.batches.durable(number);
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                // A caller that went away no longer needs its answer.
                let _ = reply.send(outcome);
            }
        }
        if let Err(e) = self.make_durable(data_file.as_ref(), true) {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    /// Commits `batch` and makes it durable: each append's outcome.
    fn commit_durably(&mut self, batch: &[(Box<AppendRequest>, Reply)], data_file: Option<&File>) -> Outcomes {
        match self.commit(batch) {
            Ok((outcomes, position, hash)) => match self.timed_make_durable(data_file) {
                Ok(()) => {
                    self.position = position;
                    self.hash = hash;
                    self.head.send_replace(position);
                    outcomes
                }
                Err(e) => {
                    // The transaction is applied in memory but its durability is unknown: nobody
                    // may be told it succeeded, and nothing more is taken until the log is opened
                    // again and read back from the disk.
                    tracing::error!(error = %e, "flush failed; refusing appends until the log is opened again");
                    let e = StoreError::backend(e);
                    self.batches.failed(e.clone());
                    batch.iter().map(|_| Err(AppendError::Storage(e.clone()))).collect()
                }
            },
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "commit failed");
                // sled's own failure (a write of its log buffer that failed, say) stays with it:
                // nothing is taken any more, as after a failed flush, and the probe sees it.
                if matches!(e, StoreError::Backend(_)) {
                    self.batches.failed(e.clone());
                }
                batch.iter().map(|_| Err(AppendError::Storage(e.clone()))).collect()
            }
        }
    }

    /// [`make_durable`](Self::make_durable) for a batch, timed (the flush latency metric).
    fn timed_make_durable(&mut self, data_file: Option<&File>) -> Result<(), std::io::Error> {
        let started = std::time::Instant::now();
        let done = self.make_durable(data_file, false);
        let durability = match self.durability {
            Durability::Fsync => "fsync",
            Durability::Flush => "flush",
            Durability::Relaxed => "relaxed",
        };
        metrics::histogram!(crate::telemetry::FLUSH_DURATION, "durability" => durability).record(started.elapsed().as_secs_f64());
        done
    }

    /// Makes a committed batch as durable as configured (`last`: the writer is stopping, so even
    /// a relaxed log is flushed), sled's blob files with it ([`super::blobs`]): those the batch
    /// wrote before the flush makes the log's pointers to them durable, those other threads
    /// wrote meanwhile after.
    fn make_durable(&mut self, data_file: Option<&File>, last: bool) -> Result<(), std::io::Error> {
        #[cfg(test)]
        if let (Some(held), false) = (&self.held, last) {
            if held.recv() == Ok(false) {
                return Err(std::io::Error::other("a flush failed (test)"));
            }
        }
        if self.durability == Durability::Relaxed && !last {
            return Ok(());
        }
        self.blobs.sync_new()?;
        self.trees.db.flush().map_err(std::io::Error::other)?;
        if let Some(f) = data_file {
            f.sync_data()?;
        }
        self.blobs.sync_new()?;
        Ok(())
    }

    fn commit(&self, batch: &[(Box<AppendRequest>, Reply)]) -> Result<(Outcomes, u64, [u8; 32]), StoreError> {
        let t = &self.trees;
        let result = (&t.streams, &t.feed, &t.heads, &t.index, &t.snapshots).transaction(|(streams, feed, heads, index, snapshots)| {
            let mut position = self.position;
            let mut hash = self.hash;
            let mut versions: HashMap<&str, StreamHead> = HashMap::new();
            let mut claimed: HashSet<&[u8]> = HashSet::new();
            let mut outcomes = Vec::with_capacity(batch.len());
            // The `streams` keys of this batch's positions: one feed run for all of them.
            let mut run: Vec<Vec<u8>> = Vec::with_capacity(batch.len());
            for (req, _) in batch {
                // Where the stream is: known from earlier in this batch, or checked against the
                // log with two point reads (streams are gap-free, so it is at `expected_version`
                // exactly when that event exists and the next one does not).
                let head = match versions.get(req.stream_id.as_str()) {
                    Some(h) => Some(*h),
                    None => head_if_at(streams, &req.stream_id, req.expected_version)?,
                };
                let Some(head) = head else {
                    // Not where the caller thinks. Where it is takes a range read, which sled
                    // does not allow inside a transaction: it is filled in after the commit.
                    outcomes.push(Err(AppendError::WrongExpectedVersion {
                        stream_id: req.stream_id.clone(),
                        expected: req.expected_version,
                        actual: 0,
                    }));
                    continue;
                };
                let current = head.version;
                let same_head =
                    req.expected_last_event.is_none() || head.last_event.is_none() || req.expected_last_event == head.last_event;
                if current != req.expected_version || !same_head {
                    outcomes.push(Err(AppendError::WrongExpectedVersion {
                        stream_id: req.stream_id.clone(),
                        expected: req.expected_version,
                        actual: current,
                    }));
                    continue;
                }
                if let Some(taken) = first_taken(index, &claimed, &req.unique_claims)? {
                    outcomes.push(Err(AppendError::UniqueViolation(String::from_utf8_lossy(taken).into_owned())));
                    continue;
                }
                // A counter this append reads or changes that is damaged on disk fails this
                // append alone (before it writes anything), not its whole batch.
                if let Some(damaged) = damaged_counter(index, req)? {
                    outcomes.push(Err(AppendError::Storage(damaged)));
                    continue;
                }
                // Reads see this transaction's own writes, so earlier appends of the batch count.
                let over = broken_limit(&req.index_ops, &req.counter_limits, |k| {
                    stored_counter(k, index.get(k)?.as_deref()).map_err(ConflictableTransactionError::Abort)
                })?;
                // Over a limit: the fallback's events if it names that limit, else refused.
                let fallback = match over {
                    None => None,
                    Some(key) => match Fallback::taken_for(req, key) {
                        Some(events) => Some(events),
                        None => {
                            outcomes.push(Err(AppendError::LimitReached(String::from_utf8_lossy(key).into_owned())));
                            continue;
                        }
                    },
                };
                let (events, input) = fallback.map_or((&req.events, &req.meta.command_input), |f| (&f.events, &f.command_input));
                let mut envelopes = Vec::with_capacity(events.len());
                let mut version = current;
                for event in events {
                    version += 1;
                    position += 1;
                    let (envelope, bytes) = seal(req, event, input, version, position, &mut hash).map_err(abort)?;
                    let key = stream_key(&req.stream_id, version);
                    streams.insert(key.as_slice(), bytes)?;
                    run.push(key);
                    envelopes.push(envelope);
                }
                let head = StreamHead {
                    version,
                    last_event: envelopes.last().map(|e| e.event_id).or(head.last_event),
                };
                versions.insert(req.stream_id.as_str(), head);
                if fallback.is_some() {
                    // In place of the append: none of its index changes, claims or snapshot.
                    outcomes.push(Ok(envelopes));
                    continue;
                }
                for op in &req.index_ops {
                    match op {
                        IndexOp::Put(k, v) => {
                            index.insert(k.as_slice(), v.as_slice())?;
                        }
                        IndexOp::Delete(k) => {
                            index.remove(k.as_slice())?;
                        }
                        IndexOp::Add(k, delta) => {
                            let current =
                                stored_counter(k, index.get(k.as_slice())?.as_deref()).map_err(ConflictableTransactionError::Abort)?;
                            // Saturating: a counter at its bounds must not wrap (or panic) into room under a limit.
                            index.insert(k.as_slice(), &current.saturating_add(*delta).to_be_bytes())?;
                        }
                    }
                }
                for (k, v) in &req.unique_claims {
                    index.insert(k.as_slice(), v.as_slice())?;
                    claimed.insert(k.as_slice());
                }
                if let Some(snapshot) = &req.snapshot {
                    let bytes = serde_json::to_vec(snapshot).map_err(abort)?;
                    snapshots.insert(req.stream_id.as_bytes(), bytes)?;
                }
                outcomes.push(Ok(envelopes));
            }
            if !run.is_empty() {
                let first = position + 1 - run.len() as u64;
                feed.insert(&first.to_be_bytes(), feed::encode_run(&run))?;
            }
            let mut chain = Vec::with_capacity(40);
            chain.extend_from_slice(&position.to_be_bytes());
            chain.extend_from_slice(&hash);
            heads.insert(CHAIN_KEY, chain)?;
            Ok((outcomes, position, hash))
        });
        let (mut outcomes, position, hash) = result.map_err(|e: TransactionError<StoreError>| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::backend(e),
        })?;
        // The batch is committed: a failed read here only leaves a refusal's message vaguer.
        // A refusal decided by the point reads (`actual` still 0) saw the stream as it was before
        // this batch, since no earlier append of the batch wrote to it: where it was then is
        // where it is now less what this batch wrote to it.
        let mut written: HashMap<&str, u64> = HashMap::new();
        for ((req, _), outcome) in batch.iter().zip(&outcomes) {
            if let Ok(envelopes) = outcome {
                *written.entry(req.stream_id.as_str()).or_default() += envelopes.len() as u64;
            }
        }
        for outcome in &mut outcomes {
            if let Err(AppendError::WrongExpectedVersion {
                stream_id,
                actual: actual @ 0,
                ..
            }) = outcome
            {
                match last_version(&t.streams, stream_id) {
                    Ok(version) => *actual = version - written.get(stream_id.as_str()).copied().unwrap_or(0),
                    Err(e) => tracing::warn!(stream = %stream_id, error = %crate::error_chain(&e), "cannot read the version of a stream"),
                }
            }
        }
        Ok((outcomes, position, hash))
    }
}

fn abort(e: impl std::error::Error + Send + Sync + 'static) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::backend(e))
}

/// The head of `stream` if it is at version `expected` (with the id of its last event), `None`
/// if it is anywhere else.
fn head_if_at(
    streams: &TransactionalTree,
    stream: &str,
    expected: u64,
) -> Result<Option<StreamHead>, ConflictableTransactionError<StoreError>> {
    // This read also fills the transaction's cache for the insert of that very key.
    if streams.get(stream_key(stream, expected.saturating_add(1)))?.is_some() {
        return Ok(None);
    }
    if expected == 0 {
        return Ok(Some(StreamHead::default()));
    }
    Ok(streams.get(stream_key(stream, expected))?.map(|last| StreamHead {
        version: expected,
        last_event: event_id_of(&last),
    }))
}

/// The first counter `req` limits or changes whose stored bytes are not a counter, as its error.
fn damaged_counter(index: &TransactionalTree, req: &AppendRequest) -> Result<Option<StoreError>, ConflictableTransactionError<StoreError>> {
    let added = req.index_ops.iter().filter_map(|op| match op {
        IndexOp::Add(k, _) => Some(k.as_slice()),
        _ => None,
    });
    for key in added.chain(req.counter_limits.iter().map(|l| l.key.as_slice())) {
        if let Err(e) = stored_counter(key, index.get(key)?.as_deref()) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

fn first_taken<'a>(
    index: &TransactionalTree,
    claimed: &HashSet<&[u8]>,
    claims: &'a [(Vec<u8>, Vec<u8>)],
) -> Result<Option<&'a [u8]>, ConflictableTransactionError<StoreError>> {
    // A key claimed twice by the one append is taken by its own first claim (as the JetStream
    // view rules a commit claiming a key twice void).
    let mut own: HashSet<&[u8]> = HashSet::new();
    for (k, _) in claims {
        if claimed.contains(k.as_slice()) || !own.insert(k.as_slice()) || index.get(k.as_slice())?.is_some() {
            return Ok(Some(k.as_slice()));
        }
    }
    Ok(None)
}

/// Numbers, chains and wraps one event; returns it with its stored bytes.
fn seal(
    req: &AppendRequest,
    event: &PendingEvent,
    command_input: &serde_json::Value,
    version: u64,
    position: u64,
    hash: &mut [u8; 32],
) -> Result<(EventEnvelope, Vec<u8>), serde_json::Error> {
    let mut envelope = EventEnvelope {
        event_id: event.event_id,
        stream_id: req.stream_id.clone(),
        version,
        position,
        event_type: event.event_type.clone(),
        schema_version: CURRENT_SCHEMA_VERSION,
        timestamp_ms: req.meta.timestamp_ms,
        account: req.meta.account.clone(),
        region: req.meta.region.clone(),
        request_id: req.meta.request_id.clone(),
        command_id: req.meta.command_id,
        command: req.meta.command.clone(),
        command_input: command_input.clone(),
        payload: event.payload.clone(),
        hash: String::new(),
    };
    let (sealed, bytes) = envelope.seal(hash)?;
    *hash = sealed;
    Ok((envelope, bytes))
}
