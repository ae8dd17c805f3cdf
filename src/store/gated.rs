//! A store that holds appends back until told to let them through, can fail reads of streams on
//! demand, can hold reads of a stream's head or the answers of appends already in the log, can
//! say that other processes write to it (as a shared log does), and records where each read of a stream started: for unit tests that need an append in
//! flight, not yet in the log, a failed read at a chosen moment, or to see what a question read
//! (every other call goes straight to the store it wraps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::{
    AppendError, AppendRequest, Appended, ChainHead, EventEnvelope, EventStore, FeedEntry, IndexState, Snapshot, Store, StoreError,
    StoreFuture, StreamHead, StreamTail,
};

pub struct GatedStore {
    inner: Store,
    open: watch::Sender<bool>,
    reads_fail: AtomicBool,
    others_write: AtomicBool,
    /// While false, `stream_head` answers wait; while `answers` is false, append answers do.
    heads: watch::Sender<bool>,
    answers: watch::Sender<bool>,
    reads: std::sync::Mutex<Vec<(String, u64)>>,
}

impl GatedStore {
    /// A store over `inner` whose gate is open.
    pub fn over(inner: Store) -> Arc<Self> {
        Arc::new(GatedStore {
            inner,
            open: watch::channel(true).0,
            reads_fail: AtomicBool::new(false),
            others_write: AtomicBool::new(false),
            heads: watch::channel(true).0,
            answers: watch::channel(true).0,
            reads: std::sync::Mutex::default(),
        })
    }

    /// A gated store over a new embedded (sled) log in `dir`, and the same as a [`Store`].
    #[cfg(test)]
    pub fn embedded(dir: &std::path::Path) -> (Arc<Self>, Store) {
        let sled = super::StoreConfig::embedded(super::Durability::Flush, 64).open(dir).expect("store");
        let gated = Self::over(sled);
        let store: Store = gated.clone();
        (gated, store)
    }

    /// From now on, reads of a stream (its head, events, tail or snapshot) fail, or work again.
    pub fn fail_reads(&self, fail: bool) {
        self.reads_fail.store(fail, Ordering::SeqCst);
    }

    fn failed<T: Send + 'static>(&self, read: StoreFuture<T>) -> StoreFuture<T> {
        if self.reads_fail.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::backend(std::io::Error::other(
                "a read failed, as the test asked",
            )))));
        }
        read
    }

    /// From now on, the store says that other processes append to it too (as a shared log
    /// does), or goes back to what the store it wraps says.
    pub fn written_by_others(&self, yes: bool) {
        self.others_write.store(yes, Ordering::SeqCst);
    }

    /// From now on, reads of a stream's head wait until this is called with `false` again.
    pub fn hold_heads(&self, hold: bool) {
        self.heads.send_replace(!hold);
    }

    /// From now on, appends go into the log at once but their answers wait until this is called
    /// with `false` again (an append stored, its writer not yet told).
    pub fn hold_answers(&self, hold: bool) {
        self.answers.send_replace(!hold);
    }

    /// The stream and first version of each `read_stream` since the last call, in order.
    pub fn take_reads(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Appends submitted from now on wait, outside the log, until [`GatedStore::open`].
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Lets the waiting appends go on into the log (each when its caller next polls it).
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl EventStore for GatedStore {
    fn submit(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        if !*self.answers.borrow() {
            let (answer, mut released) = (self.inner.submit(request)?, self.answers.subscribe());
            return Ok(Box::pin(async move {
                let _ = released.wait_for(|go| *go).await;
                answer.await
            }));
        }
        if *self.open.borrow() {
            return self.inner.submit(request);
        }
        let (inner, mut open) = (self.inner.clone(), self.open.subscribe());
        Ok(Box::pin(async move {
            let _ = open.wait_for(|open| *open).await;
            inner.submit(request)?.await
        }))
    }
    fn has_other_writers(&self) -> bool {
        self.others_write.load(Ordering::SeqCst) || self.inner.has_other_writers()
    }
    fn stream_head(&self, stream_id: &str) -> StoreFuture<StreamHead> {
        if *self.heads.borrow() {
            return self.failed(self.inner.stream_head(stream_id));
        }
        let (inner, id, mut released) = (self.inner.clone(), stream_id.to_string(), self.heads.subscribe());
        Box::pin(async move {
            let _ = released.wait_for(|go| *go).await;
            inner.stream_head(&id).await
        })
    }
    fn read_stream(&self, stream_id: &str, from_version: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>> {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        reads.push((stream_id.to_string(), from_version));
        drop(reads);
        self.failed(self.inner.read_stream(stream_id, from_version, limit))
    }
    fn read_tail(&self, stream_id: &str, limit: usize) -> StoreFuture<StreamTail> {
        self.failed(self.inner.read_tail(stream_id, limit))
    }
    fn stream_heads(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<(String, u64)>> {
        self.inner.stream_heads(after, limit)
    }
    fn read_feed(&self, after: u64, limit: usize) -> StoreFuture<Vec<EventEnvelope>> {
        self.inner.read_feed(after, limit)
    }
    fn feed_entries(&self, after: u64, limit: usize) -> StoreFuture<Vec<FeedEntry>> {
        self.inner.feed_entries(after, limit)
    }
    fn chain_head(&self) -> StoreFuture<ChainHead> {
        self.inner.chain_head()
    }
    fn watch_head(&self) -> Option<watch::Receiver<u64>> {
        self.inner.watch_head()
    }
    fn snapshot(&self, stream_id: &str) -> StoreFuture<Option<Snapshot>> {
        self.failed(self.inner.snapshot(stream_id))
    }
    fn snapshot_ids(&self, after: Option<&str>, limit: usize) -> StoreFuture<Vec<String>> {
        self.inner.snapshot_ids(after, limit)
    }
    fn clear_snapshots(&self) -> StoreFuture<()> {
        self.inner.clear_snapshots()
    }
    fn index_get(&self, key: &[u8]) -> StoreFuture<Option<Vec<u8>>> {
        self.inner.index_get(key)
    }
    fn index_scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> StoreFuture<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.index_scan(prefix, after, limit)
    }
    fn index_state(&self, layout_version: u64) -> StoreFuture<IndexState> {
        self.inner.index_state(layout_version)
    }
    fn replace_index(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, layout_version: u64, through: u64) -> StoreFuture<()> {
        self.inner.replace_index(entries, layout_version, through)
    }
    fn durability(&self) -> Option<String> {
        self.inner.durability()
    }
    fn close(&self) -> StoreFuture<()> {
        self.open();
        self.inner.close()
    }
}
