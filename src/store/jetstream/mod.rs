//! The clustered backend: the log in a replicated NATS JetStream stream, shared by every
//! phone-ledger node that connects to it.
//!
//! # What is where
//! - **Events stream** `<NS>_EVENTS` (file storage, `replicas` copies, delete and purge denied):
//!   one message per append (a [`wire::Commit`]: its events, index changes and claims) on the
//!   subject `<ns>.events.<aggregate id>`. The stream sequence is the global commit order.
//! - **Claims bucket** `<NS>_CLAIMS` (key-value): one key per unique claim (an E.164 number, a
//!   client token). A claim is reserved with a compare-and-set create *before* its append is
//!   published, released when the append is refused or the claimed key is deleted later, and a
//!   reservation that outlived its append (a crash between the two steps) is taken over once it
//!   is older than [`CLAIM_GRACE`] and the log has no commit holding it ([`claims`]).
//! - **Snapshots bucket** `<NS>_SNAPSHOTS` (key-value): a cache beside the log.
//! - **Chain stream** `<NS>_CHAIN`: checkpoints of the hash chain, extended by one node at a
//!   time ([`sealer`]).
//!
//! # How an append stays correct with many writers ([`writer`])
//! Each append is published with `Nats-Expected-Last-Subject-Sequence`: the sequence of the
//! aggregate's last commit as the writer knows it. JetStream stores it only if that is still the
//! aggregate's last commit, so two nodes deciding on the same aggregate at once cannot both
//! extend it: the stale one is refused (`WrongExpectedVersion`) and its actor re-reads and decides
//! again. Placement is not needed for correctness: any node can serve any aggregate. Each append
//! carries a `Nats-Msg-Id`, so resending it after a lost acknowledgement (a leader change) stores
//! it once. nats-server 2.9 applies that check to stored messages only, so what decides in the
//! end is a rule every node's view applies in sequence order ([`mirror`]): a commit is in force
//! only if it extends its aggregate's head (the next versions, decided after the head's last
//! event) and claims no key held by another; otherwise it is void everywhere. That rule also lets
//! a node publish an append right behind its own append in flight on the same aggregate.
//!
//! # Reads
//! Each node consumes the events stream into its own in-memory view ([`mirror`]): positions, the
//! hash chain (a deterministic function of the stream, so all nodes agree), heads, the derived
//! index. An aggregate's events are read from the stream itself, after its head is read from the
//! stream leader, so an actor always starts from the latest commit. Index and feed reads wait
//! until the view has consumed every append this node has had acknowledged (read-your-writes).

mod claims;
mod follower;
mod mirror;
mod sealer;
mod snapshots;
mod stored;
mod wire;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, kv, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use claims::CLAIM_GRACE;
pub use wire::valid_namespace;

use self::mirror::Mirror;
use self::wire::{Commit, Names, HEADER_STREAM, HEADER_VERSION};
use self::writer::{write_loop, Job};
use super::{
    AppendError, AppendRequest, Appended, ChainHead, EventEnvelope, EventStore, FeedEntry, IndexState, Snapshot, StoreError, StoreFuture,
    StreamHead, StreamTail,
};

/// Settings of the clustered backend (`[store.jetstream]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct JetStreamSettings {
    /// NATS servers to connect to (any of the cluster's; the client follows the cluster).
    pub servers: Vec<String>,
    /// Copies of the events stream and the buckets (1, 3 or 5).
    pub replicas: usize,
    /// Prefix of the stream and bucket names: deployments sharing a NATS cluster need their own.
    pub namespace: String,
    /// At most this many appends wait for their acknowledgement at once (`Busy` beyond).
    pub max_pending_appends: usize,
    /// How long one JetStream request (a publish acknowledgement, a read) may take.
    pub request_timeout_ms: u64,
    /// Threads of the runtime that talks to the cluster (publishes, acknowledgements, this
    /// node's view). Nodes sharing a machine do better with one each: a second only adds
    /// wake-ups between the two where there is no core to run it on.
    pub threads: usize,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        JetStreamSettings {
            servers: vec!["nats://127.0.0.1:4222".into()],
            replicas: 3,
            namespace: "PL".into(),
            max_pending_appends: 4096,
            request_timeout_ms: 1000,
            threads: 2,
        }
    }
}

impl JetStreamSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("store.jetstream.servers must name at least one NATS server".into());
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err("store.jetstream.replicas must be 1, 3 or 5".into());
        }
        if !valid_namespace(&self.namespace) {
            return Err("store.jetstream.namespace must be 1-32 letters, digits or _".into());
        }
        if self.max_pending_appends == 0 {
            return Err("store.jetstream.max_pending_appends must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("store.jetstream.threads must be at least 1".into());
        }
        Ok(())
    }
}

const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A snapshot as kept in the bucket, with the sequence of the commit it follows.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredSnapshot {
    #[serde(flatten)]
    snapshot: Snapshot,
    sequence: u64,
}

/// What the writer knows of an aggregate's last commit.
#[derive(Debug, Clone, Copy)]
struct KnownHead {
    version: u64,
    last_event: Option<Uuid>,
    sequence: u64,
}

/// Everything the store's tasks share.
struct Shared {
    /// The cluster's servers, as configured (the view's feed has a connection of its own).
    servers: Vec<String>,
    js: jetstream::Context,
    names: Names,
    events: stream::Stream,
    chain: stream::Stream,
    claims: kv::Store,
    snapshots: kv::Store,
    mirror: Mirror,
    /// Heads learned from reads and acknowledgements (bounded).
    heads: Mutex<lru::LruCache<String, KnownHead>>,
    /// The highest sequence acknowledged to this node: reads wait for the view to reach it.
    acknowledged: AtomicU64,
    /// The index layout appends are computed for (set by `index_state`).
    layout: AtomicU64,
    replicas: usize,
}

/// The clustered store; cheap to clone.
#[derive(Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The store's own runtime: every NATS operation runs here, whatever runtime the caller is on.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer_done: Mutex<Option<oneshot::Receiver<()>>>,
    closed: AtomicBool,
    stop_consumer: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(e)
}

fn other_error(message: String) -> StoreError {
    StoreError::backend(std::io::Error::other(message))
}

impl JetStreamStore {
    /// Connects to the cluster, creates the streams and buckets if they are missing, and builds
    /// this node's view of the log before returning.
    pub async fn connect(settings: &JetStreamSettings) -> Result<Self, StoreError> {
        settings.validate().map_err(other_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads)
            .thread_name("jetstream")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                path: "jetstream runtime".into(),
                source: Arc::new(e),
            })?;
        let handle = runtime.handle().clone();
        let (stop_consumer, stop_rx) = watch::channel(false);
        let settings = settings.clone();
        let setup = handle.spawn(async move { setup(&settings, stop_rx).await });
        let (shared, jobs, writer_done) = match setup.await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                runtime.shutdown_background();
                return Err(e);
            }
            Err(e) => {
                runtime.shutdown_background();
                return Err(backend(e));
            }
        };
        Ok(JetStreamStore {
            inner: Arc::new(Inner {
                shared,
                runtime: Mutex::new(Some(runtime)),
                handle,
                jobs: Mutex::new(Some(jobs)),
                writer_done: Mutex::new(Some(writer_done)),
                closed: AtomicBool::new(false),
                stop_consumer,
            }),
        })
    }

    /// The shared state, unless the store is closed.
    fn open(&self) -> Option<&Shared> {
        (!self.inner.closed.load(Ordering::SeqCst)).then_some(&*self.inner.shared)
    }

    /// The shared state if this node's view already holds every append acknowledged to it: a
    /// read of the view then needs no wait, and is answered in place instead of as a task on the
    /// store's runtime (a spawn and a cross-thread wake per read, on every request's path).
    fn caught_up_now(&self) -> Option<&Shared> {
        self.open().filter(|s| s.mirror.applied() >= s.acknowledged.load(Ordering::SeqCst))
    }

    /// Runs `work` on the store's runtime.
    fn run<T, F>(&self, work: impl FnOnce(Arc<Shared>) -> F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::Closed)));
        }
        let task = self.inner.handle.spawn(work(self.inner.shared.clone()));
        Box::pin(async move { task.await.map_err(|_| StoreError::Closed)? })
    }

    /// Seals the chain up to this node's view now (the sealer does it every second anyway);
    /// returns the position sealed, or `None` if there was nothing to seal or another node did.
    pub async fn seal_now(&self) -> Result<Option<u64>, StoreError> {
        let shared = self.inner.shared.clone();
        self.inner
            .handle
            .spawn(async move { sealer::seal_once(&shared, "seal_now").await })
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Commits this node's view could not apply (damaged or inconsistent messages).
    pub fn damage(&self) -> Vec<(u64, String)> {
        self.inner
            .shared
            .mirror
            .damage()
            .into_iter()
            .map(|d| (d.sequence, d.message))
            .collect()
    }
}

async fn setup(
    settings: &JetStreamSettings,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<Shared>, mpsc::Sender<Job>, oneshot::Receiver<()>), StoreError> {
    let stop_seal = stop.clone();
    let open_failed = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: settings.servers.join(",").into(),
        source: Arc::from(e),
    };
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .connect(settings.servers.clone())
        .await
        .map_err(|e| open_failed(Box::new(e)))?;
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let js = jetstream::ContextBuilder::new()
        .timeout(timeout)
        .max_ack_inflight(settings.max_pending_appends)
        .backpressure_on_inflight(true)
        .build(client);
    let names = Names::new(&settings.namespace);
    let replicas = settings.replicas;
    // The events and the checkpoints: file storage, replicated, nothing ever deleted.
    let log_stream = |name: &str, subject: String| stream::Config {
        name: name.to_string(),
        subjects: vec![subject],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let events = ensure_stream(&js, log_stream(&names.events, format!("{}.>", names.events_subject))).await?;
    let chain = ensure_stream(&js, log_stream(&names.chain, names.chain_subject.clone())).await?;
    let claims = ensure_bucket(&js, &names.claims, replicas).await?;
    let snapshots = ensure_bucket(&js, &names.snapshots, replicas).await?;
    let shared = Arc::new(Shared {
        servers: settings.servers.clone(),
        js,
        names,
        events,
        chain,
        claims,
        snapshots,
        mirror: Mirror::default(),
        heads: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(65_536).expect("non-zero"))),
        acknowledged: AtomicU64::new(0),
        layout: AtomicU64::new(0),
        replicas,
    });
    // The view, caught up with the stream as it is now before any request is served.
    let last = retrying(|| async { shared.events.get_info().await.map_err(backend) })
        .await?
        .state
        .last_sequence;
    tokio::spawn(follower::follow(shared.clone(), stop));
    shared.mirror.mark_applied(0);
    shared.mirror.wait_for(last).await?;
    let (jobs, rx) = mpsc::channel(settings.max_pending_appends);
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(write_loop(shared.clone(), rx, done_tx));
    tokio::spawn(sealer::seal_loop(shared.clone(), format!("{}", uuid::Uuid::new_v4()), stop_seal));
    Ok((shared, jobs, done))
}

/// Creates a stream, or checks that the one there is the same.
///
/// A cluster that has just started (or lost a server) answers neither until it has elected the
/// stream's leader, which takes seconds: both are tried again for up to [`SETUP_WAITS_FOR`].
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream, StoreError> {
    let name = config.name.clone();
    let started = std::time::Instant::now();
    loop {
        let attempt = match js.get_stream(&name).await {
            Ok(s) => Ok(s),
            Err(_) => match js.create_stream(config.clone()).await {
                Ok(s) => Ok(s),
                // Another node created it in the meantime.
                Err(create) => js.get_stream(&name).await.map_err(|_| backend(create)),
            },
        };
        match attempt {
            Err(e) if started.elapsed() < SETUP_WAITS_FOR => {
                tracing::info!(stream = %name, error = %crate::error_chain(&e), "the stream is not available yet; waiting");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// How long start-up waits for the cluster to offer the streams.
const SETUP_WAITS_FOR: Duration = Duration::from_secs(60);

/// A key-value bucket, with its stream created by hand: `Context::create_key_value` cannot read
/// the account information nats-server 2.9 answers with.
async fn ensure_bucket(js: &jetstream::Context, bucket: &str, replicas: usize) -> Result<kv::Store, StoreError> {
    ensure_stream(
        js,
        stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        },
    )
    .await?;
    retrying(|| async { js.get_key_value(bucket).await.map_err(backend) }).await
}

/// How long a read keeps being tried while the cluster cannot answer it: longer than
/// nats-server's longest wait before electing a new leader (a random 4–9 s election timeout);
/// the reads are idempotent.
const READ_RETRY_FOR: Duration = Duration::from_secs(15);

/// Runs a read, again every 100 ms while it fails, for up to [`READ_RETRY_FOR`].
async fn retrying<T, F, Fut>(mut read: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = std::time::Instant::now();
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < READ_RETRY_FOR => {
                tracing::debug!(error = %e, "a read of the log failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How far beyond this node's view a peer's answer may say its appends reach and be believed
/// (a view is behind by milliseconds' worth of commits, never this many).
const MAX_READ_AFTER_AHEAD: u64 = 1_000_000;

/// A header's value; its last one if it was given more than once. (The two ways a node reads a
/// commit keep different ones otherwise: the consumer's parser keeps every value, a direct read
/// only the last. Every node must read the same bytes the same way.)
fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get_last(name)).map(|v| v.as_str())
}

impl Shared {
    fn subject(&self, stream_id: &str) -> String {
        self.names.subject_of(stream_id)
    }

    fn remember(&self, stream_id: &str, head: KnownHead) {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        match heads.get(stream_id) {
            Some(known) if known.version >= head.version => {}
            _ => {
                heads.put(stream_id.to_string(), head);
            }
        }
    }

    fn known(&self, stream_id: &str) -> Option<KnownHead> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).get(stream_id).copied()
    }

    /// An aggregate's head as this node's view has it (no round trip; perhaps behind the log):
    /// `None` for an aggregate the view holds no commit of.
    fn viewed_head(&self, stream_id: &str) -> Option<KnownHead> {
        let (version, last_event, sequence, _) = self.mirror.head_of(stream_id);
        (version > 0).then_some(KnownHead {
            version,
            last_event,
            sequence,
        })
    }

    /// An aggregate's last commit, read from the stream leader.
    async fn last_commit(&self, stream_id: &str) -> Result<Option<StreamMessage>, StoreError> {
        let subject = self.subject(stream_id);
        retrying(|| stored::get(&self.js, &self.names.events, stored::Which::LastOn(&subject))).await
    }

    /// An aggregate's head as the log has it now: the sequence of the last message on its
    /// subject is read from the stream leader, and the view, once it has applied that message,
    /// says which commits are in force. Also returns that last message when it is the head's
    /// commit (so a reader need not fetch it again).
    async fn head(&self, stream_id: &str) -> Result<(KnownHead, Option<StreamMessage>), StoreError> {
        let Some(message) = self.last_commit(stream_id).await? else {
            return Ok((
                KnownHead {
                    version: 0,
                    last_event: None,
                    sequence: 0,
                },
                None,
            ));
        };
        self.mirror.wait_for(message.sequence).await?;
        let (version, last_event, last_sequence, last_in_force) = self.mirror.head_of(stream_id);
        let head = KnownHead {
            version,
            last_event,
            sequence: last_sequence.max(message.sequence),
        };
        self.remember(stream_id, head);
        let in_force = last_in_force == Some(message.sequence);
        Ok((head, in_force.then_some(message)))
    }

    /// The commits holding the `limit` events after feed position `after`, and their messages,
    /// once this node's view holds its own acknowledged appends.
    async fn feed_page(&self, after: u64, limit: usize) -> Result<(Vec<mirror::CommitEntry>, Vec<StreamMessage>), StoreError> {
        self.caught_up().await?;
        let commits = self.mirror.commits_after(after, limit);
        let messages = self.fetch(commits.iter().map(|c| c.sequence).collect()).await?;
        Ok((commits, messages))
    }

    /// Reads the commits at `sequences`, a few at a time, in order.
    async fn fetch(&self, sequences: Vec<u64>) -> Result<Vec<StreamMessage>, StoreError> {
        let reads = futures_util::stream::iter(sequences.into_iter().map(|s| {
            retrying(move || async move {
                stored::get(&self.js, &self.names.events, stored::Which::Sequence(s))
                    .await
                    .map_err(|e| other_error(format!("reading stream sequence {s}: {}", crate::error_chain(&e))))?
                    .ok_or_else(|| other_error(format!("the events stream has no message at sequence {s}")))
            })
        }));
        reads.buffered(32).collect::<Vec<_>>().await.into_iter().collect()
    }

    /// The events of a stored commit, with their feed positions and hashes: none for one the
    /// view found damaged (its positions hold no event in force, on every node alike; it is
    /// reported by `feed_entries`, for verification).
    fn placed(&self, message: &StreamMessage) -> Result<Vec<EventEnvelope>, StoreError> {
        if self.mirror.is_damaged(message.sequence) {
            return Ok(Vec::new());
        }
        let commit = Commit::decode(message.sequence, &message.payload)?;
        let events = commit.into_events(self.mirror.fell_back(message.sequence));
        self.mirror.place(message.sequence, events)
    }

    /// Waits until this node's view holds every append acknowledged to it.
    async fn caught_up(&self) -> Result<(), StoreError> {
        self.mirror.wait_for(self.acknowledged.load(Ordering::SeqCst)).await
    }

    /// Events of `stream_id` with version ≥ `from` (at most `limit`), and the stream's head.
    async fn stream_events(&self, stream_id: &str, from: u64, limit: usize) -> Result<(Vec<EventEnvelope>, KnownHead), StoreError> {
        // Versions start at 1: a read from 0 is a read from 1.
        let from = from.max(1);
        let (head, last) = self.head(stream_id).await?;
        if head.version < from || limit == 0 {
            return Ok((vec![], head));
        }
        // The commits holding versions `from..from + limit`, up to the head: a short read of a
        // long stream fetches a few commits, not all of them.
        let mut wanted = self.mirror.commits_from(stream_id, from, from.saturating_add(limit as u64));
        wanted.retain(|s| *s <= head.sequence);
        // The head's commit was read with the head: only the others are fetched.
        let reuse_last = last.as_ref().is_some_and(|m| wanted.last() == Some(&m.sequence));
        if reuse_last {
            wanted.pop();
        }
        let mut messages = self.fetch(wanted).await?;
        if reuse_last {
            messages.extend(last);
        }
        let mut events = Vec::new();
        for m in &messages {
            events.extend(self.placed(m)?.into_iter().filter(|e| e.version >= from));
            if events.len() >= limit {
                break;
            }
        }
        events.truncate(limit);
        Ok((events, head))
    }

    /// The first `limit` stream ids after `after` (in id order) that have an entry in the
    /// snapshots bucket.
    ///
    /// Listed from the subjects the bucket's stream holds (the server's stream info, a page at a
    /// time), never from its messages: an entry with a malformed header block, delivered to this
    /// node by the client library, would take the connection down with it. The server lists keys
    /// in their tokens' order, not the ids', so the whole list is walked, holding `limit` ids.
    async fn snapshot_ids(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let bucket = format!("KV_{}", self.names.snapshots);
        let stream = self.js.get_stream(&bucket).await.map_err(backend)?;
        let prefix = format!("$KV.{}.", self.names.snapshots);
        let mut subjects = stream.info_with_subjects(format!("{prefix}>")).await.map_err(backend)?;
        let mut first = std::collections::BTreeSet::new();
        while let Some(listed) = subjects.next().await {
            let (subject, _) = listed.map_err(backend)?;
            // A snapshot in parts: its parts' keys are listed too, but name no stream.
            let id = subject
                .strip_prefix(&prefix)
                .filter(|key| !snapshots::is_part(key))
                .and_then(wire::untoken)
                .and_then(|id| String::from_utf8(id).ok());
            let Some(id) = id.filter(|id| after.is_none_or(|a| id.as_str() > a)) else {
                continue;
            };
            first.insert(id);
            if first.len() > limit {
                first.pop_last();
            }
        }
        Ok(first.into_iter().collect())
    }

    async fn read_snapshot(&self, stream_id: &str) -> Result<Option<StoredSnapshot>, StoreError> {
        snapshots::read(&self.js, &self.names.snapshots, stream_id).await
    }
}

// ---- the port ------------------------------------------------------------------------------------

impl EventStore for JetStreamStore {
    fn submit(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(AppendError::Closed);
        }
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(jobs) = jobs.as_ref() else {
            return Err(AppendError::Closed);
        };
        let (reply, answer) = oneshot::channel();
        jobs.try_send(Job { request, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AppendError::Busy,
            mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
        })?;
        Ok(Box::pin(async move { answer.await.unwrap_or(Err(AppendError::Closed)) }))
    }

    fn has_other_writers(&self) -> bool {
        true
    }

    fn version_hint(&self, stream_id: &str) -> Option<u64> {
        self.inner.shared.mirror.version_of(stream_id)
    }

    fn recent_events(&self, stream_id: &str, from_version: u64) -> Option<Vec<EventEnvelope>> {
        self.open()?.mirror.recent_events(stream_id, from_version)
    }

    fn stream_head(&self, stream_id: &str) -> StoreFuture<StreamHead> {
        let id = stream_id.to_string();
        self.run(move |s| async move {
            let (head, _) = s.head(&id).await?;
            Ok(StreamHead {
                version: head.version,
                last_event: head.last_event,
            })
        })
    }

    fn read_stream(&self, stream_id: &str, from_version: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>> {
        let id = stream_id.to_string();
        self.run(move |s| async move { Ok(s.stream_events(&id, from_version, limit).await?.0) })
    }

    fn read_tail(&self, stream_id: &str, limit: usize) -> StoreFuture<StreamTail> {
        let id = stream_id.to_string();
        self.run(move |s| async move {
            // Most aggregates never reach a snapshot: their commits say so, and the read is saved.
            let snapshot = match s.mirror.may_have_snapshot(&id) {
                true => s.read_snapshot(&id).await,
                false => Ok(None),
            };
            let stored = match snapshot {
                Ok(stored) => stored.filter(|st| st.snapshot.schema_version == super::SNAPSHOT_SCHEMA_VERSION),
                Err(e) => {
                    tracing::warn!(stream = %id, error = %e, "ignoring an unreadable snapshot");
                    None
                }
            };
            let from = stored.as_ref().map_or(1, |st| st.snapshot.version.saturating_add(1));
            let (events, head) = s.stream_events(&id, from, limit).await?;
            // A snapshot ahead of the log is not of this log: replay everything instead.
            let (snapshot, events) = match stored {
                Some(st) if st.snapshot.version <= head.version => (Some(st.snapshot), events),
                Some(_) => (None, s.stream_events(&id, 1, limit).await?.0),
                None => (None, events),
            };
            Ok(StreamTail {
                snapshot,
                events,
                head: StreamHead {
                    version: head.version,
                    last_event: head.last_event,
                },
            })
        })
    }

    fn stream_heads(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<(String, u64)>> {
        let after = after.map(str::to_string);
        self.run(move |s| async move {
            s.caught_up().await?;
            Ok(s.mirror.stream_heads(after.as_deref(), limit))
        })
    }

    fn read_feed(&self, after: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>> {
        self.run(move |s| async move {
            let (_, messages) = s.feed_page(after, limit).await?;
            let mut events = Vec::new();
            for m in &messages {
                events.extend(s.placed(m)?.into_iter().filter(|e| e.position > after));
            }
            events.truncate(limit);
            Ok(events)
        })
    }

    fn feed_entries(&self, after: u64, limit: usize) -> StoreFuture<Vec<FeedEntry>> {
        self.run(move |s| async move {
            let (commits, messages) = s.feed_page(after, limit).await?;
            let mut entries = Vec::new();
            for (c, m) in commits.iter().zip(&messages) {
                let filed = header(Some(&m.headers), HEADER_STREAM).map(str::to_string);
                let version_after: Option<u64> = header(Some(&m.headers), HEADER_VERSION).and_then(|v| v.parse().ok());
                let placed = s.placed(m);
                for i in 0..c.count {
                    if entries.len() >= limit {
                        break;
                    }
                    let position = c.first_position.saturating_add(i);
                    if position <= after {
                        continue;
                    }
                    let filed_under = match (&filed, version_after) {
                        (Some(stream), Some(v)) => Some((stream.clone(), v.saturating_add(1 + i).saturating_sub(c.count))),
                        _ => None,
                    };
                    let envelope = match &placed {
                        Ok(events) => events.get(i as usize).cloned().ok_or_else(|| "missing event".to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    entries.push(FeedEntry {
                        position,
                        filed_under,
                        envelope,
                    });
                }
            }
            entries.truncate(limit);
            Ok(entries)
        })
    }

    fn chain_head(&self) -> StoreFuture<ChainHead> {
        self.run(move |s| async move {
            s.caught_up().await?;
            Ok(s.mirror.chain_head())
        })
    }

    fn sealed_up_to(&self) -> StoreFuture<u64> {
        self.run(move |s| async move { sealer::sealed_up_to(&s).await })
    }

    fn checkpoints(&self) -> StoreFuture<Vec<super::Checkpoint>> {
        self.run(move |s| async move { sealer::checkpoints(&s).await })
    }

    fn watch_head(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.shared.mirror.watch_position())
    }

    fn snapshot(&self, stream_id: &str) -> StoreFuture<Option<Snapshot>> {
        let id = stream_id.to_string();
        self.run(move |s| async move { Ok(s.read_snapshot(&id).await?.map(|st| st.snapshot)) })
    }

    fn snapshot_ids(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<String>> {
        let after = after.map(str::to_string);
        self.run(move |s| async move { s.snapshot_ids(after.as_deref(), limit).await })
    }

    fn clear_snapshots(&self) -> StoreFuture<()> {
        self.run(move |s| async move {
            let stream = s.js.get_stream(format!("KV_{}", s.names.snapshots)).await.map_err(backend)?;
            stream.purge().await.map_err(backend)?;
            Ok(())
        })
    }

    fn index_get(&self, key: &[u8]) -> StoreFuture<Option<Vec<u8>>> {
        if let Some(shared) = self.caught_up_now() {
            return Box::pin(std::future::ready(Ok(shared.mirror.index_get(key))));
        }
        let key = key.to_vec();
        self.run(move |s| async move {
            s.caught_up().await?;
            Ok(s.mirror.index_get(&key))
        })
    }

    fn index_get_latest(&self, key: &[u8]) -> StoreFuture<Option<Vec<u8>>> {
        if let Some(value) = self.open().and_then(|s| s.mirror.index_get(key)) {
            return Box::pin(std::future::ready(Ok(Some(value))));
        }
        let key = key.to_vec();
        self.run(move |s| async move {
            if let Some(value) = s.mirror.index_get(&key) {
                return Ok(Some(value));
            }
            let last = retrying(|| async { s.events.get_info().await.map_err(backend) })
                .await?
                .state
                .last_sequence;
            s.mirror.wait_for(last).await?;
            Ok(s.mirror.index_get(&key))
        })
    }

    fn index_scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> StoreFuture<Vec<(Vec<u8>, Vec<u8>)>> {
        if let Some(shared) = self.caught_up_now() {
            return Box::pin(std::future::ready(Ok(shared.mirror.index_scan(prefix, after, limit))));
        }
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.run(move |s| async move {
            s.caught_up().await?;
            Ok(s.mirror.index_scan(&prefix, after.as_deref(), limit))
        })
    }

    fn index_state(&self, layout_version: u64) -> StoreFuture<IndexState> {
        self.run(move |s| async move {
            s.layout.store(layout_version, Ordering::SeqCst);
            let layouts = s.mirror.layouts();
            Ok(if layouts.iter().all(|l| *l == layout_version) {
                IndexState::Current
            } else {
                IndexState::NeedsRebuild
            })
        })
    }

    fn replace_index(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, layout_version: u64, through: u64) -> StoreFuture<()> {
        self.run(move |s| async move {
            s.caught_up().await?;
            s.layout.store(layout_version, Ordering::SeqCst);
            s.mirror.replace_index(entries, through)
        })
    }

    fn acknowledged_through(&self) -> Option<u64> {
        self.open().map(|s| s.acknowledged.load(Ordering::SeqCst))
    }

    fn read_after(&self, through: u64) {
        if let Some(s) = self.open() {
            // A number far beyond anything this view has applied is not a sequence of this log
            // (a misconfigured peer): believed, it would hold up every read of this node.
            if through <= s.mirror.applied().saturating_add(MAX_READ_AFTER_AHEAD) {
                s.acknowledged.fetch_max(through, Ordering::SeqCst);
            } else {
                tracing::warn!(
                    through,
                    applied = s.mirror.applied(),
                    "ignoring a peer's log position far beyond this node's view"
                );
            }
        }
    }

    fn durability(&self) -> Option<String> {
        Some(format!(
            "replicated: acknowledged once stored by a majority of {} JetStream servers",
            self.inner.shared.replicas
        ))
    }

    fn close(&self) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if inner.closed.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            // Dropping the sender ends the writer once it has answered everything queued.
            drop(inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
            let done = inner.writer_done.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(done) = done {
                let _ = done.await;
            }
            inner.stop_consumer.send_replace(true);
            let client = inner.shared.js.client();
            let _ = inner.handle.spawn(async move { client.flush().await }).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header given twice is read as its last value however the commit was read: the
    /// consumer's parser keeps every value, a direct read of the stream only the last, and two
    /// nodes reading one commit two ways must number its events alike.
    #[test]
    fn a_repeated_header_is_read_as_its_last_value() {
        let mut headers = HeaderMap::new();
        headers.append("Pl-Events", "1");
        headers.append("Pl-Events", "5");
        assert_eq!(header(Some(&headers), "Pl-Events"), Some("5"));
        let mut direct = HeaderMap::new();
        direct.insert("Pl-Events", "1");
        direct.insert("Pl-Events", "5");
        assert_eq!(header(Some(&direct), "Pl-Events"), header(Some(&headers), "Pl-Events"));
    }
}
