//! The live audit feed (`/audit/events?Follow=true`): followers served from one shared tail.
//!
//! One task reads each batch of newly committed events once, and only while someone follows,
//! and hands it to every follower through a bounded broadcast channel. So a thousand followers
//! at the head cost one read per commit, not a thousand. A follower that starts behind (from
//! position 0, say) first catches up with paged reads of the log, off the HTTP workers, then
//! joins the tail; a gap between what it read and what the tail holds is read from the log too.
//! Catching-up followers take turns, a page each, so that however many catch up at once they
//! hold at most one of the log's reader threads and one core.
//! A follower that falls more than `lag_limit` batches behind the tail (a client that does not
//! read) is told so in an `event: dropped` message naming the position to resume after, and
//! its stream ends; the tail never waits for anyone, so no follower slows the writers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{broadcast, watch, Notify};

use super::query::{self, FeedFilter};
use super::AuditError;
use crate::store::{EventEnvelope, Store};

/// Events newly committed: every position in `(after, up_to]`, each with its server-sent-event
/// text, rendered once for every follower.
#[derive(Debug)]
pub struct TailBatch {
    pub after: u64,
    pub up_to: u64,
    pub events: Vec<(EventEnvelope, bytes::Bytes)>,
}

/// The shared tail of the feed.
#[derive(Clone)]
pub struct SharedTail {
    batches: broadcast::Sender<Arc<TailBatch>>,
    lag_limit: usize,
    /// Followers catching up read the log one page at a time, one follower at a time: the log's
    /// reader threads and the cores stay free for the requests.
    catching_up: Arc<tokio::sync::Semaphore>,
    /// Told when a follower joins the tail, so that the reader watches the head again.
    joined: Arc<Notify>,
}

/// Events read per page, catching up or following.
const PAGE: usize = 256;

/// How often an idle follower is sent a keep-alive comment. A follower that left is noticed
/// when a write to it fails, and its place is given back then.
pub const KEEP_ALIVE: Duration = Duration::from_secs(4);

impl SharedTail {
    /// Starts the reader of the tail of `store`'s feed (`None` for a store that takes no
    /// appends: its feed never moves). It ends when `stopping` turns true or the store's writer
    /// goes. A follower more than `lag_limit` batches behind is dropped.
    pub fn start(store: Store, mut stopping: watch::Receiver<bool>, lag_limit: usize) -> Option<SharedTail> {
        // A store that takes no appends has no head to watch: no tail.
        store.watch_head()?;
        let mut head: Option<watch::Receiver<u64>> = None;
        let lag_limit = lag_limit.max(1);
        let (batches, _) = broadcast::channel(lag_limit);
        let tail = SharedTail {
            batches,
            lag_limit,
            catching_up: Arc::new(tokio::sync::Semaphore::new(1)),
            joined: Arc::new(Notify::new()),
        };
        let sender = tail.batches.clone();
        let joined = tail.joined.clone();
        tokio::spawn(async move {
            let mut covered = 0;
            loop {
                if sender.receiver_count() == 0 {
                    // No one follows: nothing to read, and no watch of the head held either (the
                    // log would wake this task on every commit for nothing). A follower joining
                    // later reads the gap from the log itself.
                    head = None;
                    tokio::select! {
                        _ = joined.notified() => {}
                        _ = stopping.changed() => return,
                    }
                    if *stopping.borrow() {
                        return;
                    }
                    continue;
                }
                let watching = match head.as_mut() {
                    Some(watching) => watching,
                    None => {
                        let Some(mut watching) = store.watch_head() else { return };
                        covered = *watching.borrow_and_update();
                        head.insert(watching)
                    }
                };
                tokio::select! {
                    changed = watching.changed() => if changed.is_err() { return },
                    _ = stopping.changed() => return,
                }
                if *stopping.borrow() {
                    return;
                }
                if sender.receiver_count() == 0 {
                    continue;
                }
                let target = *watching.borrow_and_update();
                while covered < target {
                    let filter = FeedFilter {
                        after: covered,
                        limit: query::MAX_LIMIT,
                        ..Default::default()
                    };
                    let page = match query::feed(&*store, &filter).await {
                        Ok(page) => page,
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "the feed's tail cannot be read; followers will read the log");
                            break;
                        }
                    };
                    if page.scanned_to <= covered {
                        break;
                    }
                    let batch = TailBatch {
                        after: covered,
                        up_to: page.scanned_to,
                        events: page
                            .events
                            .into_iter()
                            .map(|e| {
                                let text = sse_event(&e);
                                (e, text)
                            })
                            .collect(),
                    };
                    covered = batch.up_to;
                    // No receiver left: fine, the next change checks again.
                    let _ = sender.send(Arc::new(batch));
                }
            }
        });
        Some(tail)
    }

    /// The live feed from `filter.after` on, as server-sent-event chunks (`id:` is an event's
    /// position), until `stopping` or until the follower falls too far behind. `place` is held
    /// for as long as the stream lives.
    pub fn follow<P: Send + 'static>(
        &self,
        store: Store,
        filter: FeedFilter,
        stopping: watch::Receiver<bool>,
        place: P,
    ) -> impl Stream<Item = Result<bytes::Bytes, AuditError>> + use<P> {
        struct Follower<P> {
            store: Store,
            filter: FeedFilter,
            tail: SharedTail,
            /// Set once caught up: the tail's batches from then on.
            live: Option<broadcast::Receiver<Arc<TailBatch>>>,
            stopping: watch::Receiver<bool>,
            ended: bool,
            _place: P,
        }
        let start = Follower {
            store,
            filter,
            tail: self.clone(),
            live: None,
            stopping,
            ended: false,
            _place: place,
        };
        futures_util::stream::unfold(start, |mut f| async move {
            loop {
                if f.ended || *f.stopping.borrow() {
                    return None;
                }
                let Some(live) = f.live.as_mut() else {
                    // Catching up from the log, a page at a time, read and rendered off the HTTP
                    // workers, one catching-up follower at a time.
                    let Ok(_turn) = f.tail.catching_up.clone().acquire_owned().await else {
                        return None;
                    };
                    let mut page_filter = f.filter.clone();
                    page_filter.limit = PAGE;
                    let store = f.store.clone();
                    let read = super::http::off_workers(async move {
                        let page = query::feed(&*store, &page_filter).await?;
                        let text = (!page.events.is_empty()).then(|| sse_events(&page.events));
                        Ok((page.scanned_to, page.next_after, text))
                    });
                    let (scanned_to, next_after, text) = match read.await {
                        Ok(p) => p,
                        Err(e) => return Some((Err(e), Follower { ended: true, ..f })),
                    };
                    f.filter.after = f.filter.after.max(scanned_to);
                    if next_after.is_none() {
                        f.live = Some(f.tail.batches.subscribe());
                        f.tail.joined.notify_one();
                    }
                    if let Some(text) = text {
                        return Some((Ok(text), f));
                    }
                    continue;
                };
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(batch) if batch.up_to <= f.filter.after => {}
                        // The tail started after what was read: read the gap from the log.
                        Ok(batch) if batch.after > f.filter.after => f.live = None,
                        Ok(batch) => {
                            let mut chunk = bytes::BytesMut::new();
                            for (_, text) in batch.events.iter().filter(|(e, _)| f.filter.matches(e)) {
                                chunk.extend_from_slice(text);
                            }
                            f.filter.after = batch.up_to;
                            if !chunk.is_empty() {
                                return Some((Ok(chunk.freeze()), f));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let message = serde_json::json!({
                                "Message": format!(
                                    "this follower fell more than {} batches of events behind the feed ({missed} missed) and is dropped; reconnect with After={} to resume",
                                    f.tail.lag_limit, f.filter.after
                                ),
                                "ResumeAfter": f.filter.after,
                            });
                            tracing::info!(resume_after = f.filter.after, missed, "dropped a follower that fell behind");
                            let chunk = format!("event: dropped\ndata: {message}\n\n");
                            return Some((Ok(bytes::Bytes::from(chunk)), Follower { ended: true, ..f }));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = f.stopping.changed() => return None,
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        return Some((Ok(bytes::Bytes::from_static(b": keep-alive\n\n")), f));
                    }
                }
            }
        })
    }
}

fn sse_event(e: &EventEnvelope) -> bytes::Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    bytes::Bytes::from(format!("id: {}\ndata: {data}\n\n", e.position))
}

fn sse_events(events: &[EventEnvelope]) -> bytes::Bytes {
    let mut chunk = bytes::BytesMut::new();
    for e in events {
        chunk.extend_from_slice(&sse_event(e));
    }
    chunk.freeze()
}
