//! The node's own view of the log, built by consuming the events stream in stream-sequence order:
//! the global feed (positions and the hash chain), every aggregate's head and the sequences of its
//! commits, the derived index (index changes and claims carried by the commits) and which index
//! keys are claims.
//!
//! Every node computes the same view from the same log: positions number the events of the
//! commits in sequence order, and each event's hash chains it to the one before, so the chain
//! needs no writer to agree on it. The view lives in memory and is rebuilt at start-up.
//! Reads that must see a write wait until the view has consumed that write's sequence
//! ([`Mirror::wait_for`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::wire::Commit;
use crate::store::{ChainHead, EventEnvelope, IndexOp, StoreError};

/// Where one commit's events sit in the feed.
#[derive(Debug, Clone, Copy)]
pub struct CommitEntry {
    pub sequence: u64,
    pub first_position: u64,
    pub count: u64,
    /// The chain hash before the commit's first event.
    pub previous_hash: [u8; 32],
    /// The chain hash after its last event.
    pub hash_after: [u8; 32],
}

/// An aggregate's head and its commits' sequences, in order.
#[derive(Debug, Clone, Default)]
pub struct StreamEntry {
    pub version: u64,
    pub last_event: Option<Uuid>,
    /// (stream sequence, version of the commit's first event), of the commits in force.
    pub commits: Vec<(u64, u64)>,
    /// The sequence of the last message on the aggregate's subject, in force or void: what the
    /// next append must name as the subject's last sequence.
    pub last_sequence: u64,
    /// Whether a commit in force may have stored a snapshot of it (one did, or one does not say).
    pub may_have_snapshot: bool,
}

/// What became of the message at a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A commit in force: its events are in the feed.
    InForce,
    /// A commit that did not extend its aggregate's head when its turn came, or claimed a held
    /// key: void for every node, its events, claims and index changes ignored.
    Void,
    /// A commit that would have taken a counter out of its bounds (the index of that limit
    /// among the commit's): void as well.
    OverLimit(usize),
    /// A message that cannot be read as a commit.
    Damaged,
    /// Not applied yet.
    Unknown,
}

/// A commit the view could not apply as it is.
#[derive(Debug, Clone)]
pub struct Damage {
    pub sequence: u64,
    pub message: String,
}

#[derive(Default)]
struct View {
    applied: u64,
    commits: Vec<CommitEntry>,
    chain: ChainHead,
    streams: BTreeMap<String, StreamEntry>,
    index: BTreeMap<Vec<u8>, Vec<u8>>,
    claimed: HashSet<Vec<u8>>,
    layouts: BTreeSet<u64>,
    damage: Vec<Damage>,
    /// Void commits, and for each one void for a counter out of its bounds, which limit.
    void: BTreeMap<u64, Option<usize>>,
    /// Commits in force by their fallback's events.
    fell_back: HashSet<u64>,
    /// The counters the in-force rule reads (`IndexOp::Add`s), kept from the commits in force
    /// alone: a rebuild of `index` by one node must not change what the rule decides there.
    counters: BTreeMap<Vec<u8>, i64>,
    /// The index changes of the latest [`RECENT_COMMITS`] commits in force, oldest first: what
    /// a rebuilt index is brought up to date with.
    recent_changes: std::collections::VecDeque<IndexChanges>,
    /// The bytes of `recent_changes`.
    recent_changes_bytes: usize,
    /// The events (numbered and chained) of the latest [`RECENT_COMMITS`] commits in force, by
    /// sequence: an actor that another node's append has put behind catches up from here.
    recent: BTreeMap<u64, (Vec<EventEnvelope>, usize)>,
    /// The stored bytes of the commits in `recent`.
    recent_bytes: usize,
}

/// The index changes of one commit in force, from its first feed position.
struct IndexChanges {
    first_position: u64,
    claims: Vec<(Vec<u8>, Vec<u8>)>,
    ops: Vec<IndexOp>,
}

/// Keeps the index changes of a commit in force among the latest ones (as many commits, and
/// at most as many bytes, as the recent events).
fn remember_changes(view: &mut View, changes: IndexChanges) {
    view.recent_changes_bytes += changes.bytes();
    view.recent_changes.push_back(changes);
    while view.recent_changes.len() > RECENT_COMMITS || view.recent_changes_bytes > RECENT_BYTES {
        let Some(dropped) = view.recent_changes.pop_front() else { break };
        view.recent_changes_bytes -= dropped.bytes();
    }
}

impl IndexChanges {
    /// The bytes of its keys and values.
    fn bytes(&self) -> usize {
        let claims: usize = self.claims.iter().map(|(k, v)| k.len() + v.len()).sum();
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                IndexOp::Put(k, v) => k.len() + v.len(),
                IndexOp::Delete(k) | IndexOp::Add(k, _) => k.len() + 8,
            })
            .sum();
        claims + ops
    }
}

/// Applies a commit's claims and index changes to `index`.
fn apply_index_changes(index: &mut BTreeMap<Vec<u8>, Vec<u8>>, claims: &[(Vec<u8>, Vec<u8>)], ops: &[IndexOp]) {
    for (key, value) in claims {
        index.insert(key.clone(), value.clone());
    }
    for op in ops {
        match op {
            IndexOp::Put(k, v) => {
                index.insert(k.clone(), v.clone());
            }
            IndexOp::Delete(k) => {
                index.remove(k);
            }
            IndexOp::Add(k, by) => {
                let now = crate::store::decode_counter(index.get(k).map(|v| v.as_slice()));
                // Saturating: a forged `By` in a commit must not wrap (or panic) a counter.
                index.insert(k.clone(), now.saturating_add(*by).to_be_bytes().to_vec());
            }
        }
    }
}

/// At most this many stored bytes of them (large commits, or a publisher making many, must not
/// make the view hold gigabytes): the oldest go first.
const RECENT_BYTES: usize = 32 << 20;

/// How many of the latest commits in force the view keeps the events of: about two seconds of
/// the conflict load, the window in which other nodes' appends put an actor behind. A catch-up
/// that needs an older commit reads the log.
const RECENT_COMMITS: usize = 8192;

/// The view, and what tells waiters how far it is.
pub struct Mirror {
    view: RwLock<View>,
    /// Who waits for which sequence to be applied. Each is woken once, when the view reaches
    /// its sequence: every append and read of the node waits here, and the view applies every
    /// commit of the cluster, so waking all waiters on each commit (a watch channel) cost more
    /// than the waiting itself.
    waiters: Mutex<BTreeMap<u64, Vec<oneshot::Sender<()>>>>,
    position: watch::Sender<u64>,
    /// The highest sequence a reader has waited for: the consumer is known to be behind it.
    wanted: std::sync::atomic::AtomicU64,
}

/// How long a read waits for the view to move before it fails: a view that keeps applying is
/// waited for however far behind it is (a node starting on a long log replays it all first).
pub const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            view: RwLock::new(View::default()),
            waiters: Mutex::default(),
            position: watch::channel(0).0,
            wanted: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Mirror {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The last stream sequence applied.
    pub fn applied(&self) -> u64 {
        self.read().applied
    }

    /// The highest sequence a reader has waited for.
    pub fn wanted(&self) -> u64 {
        self.wanted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Follows the feed's head position.
    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Waits until the view has applied `sequence`.
    pub async fn wait_for(&self, sequence: u64) -> Result<(), StoreError> {
        self.wait_moving(sequence, CATCH_UP_DEADLINE).await
    }

    /// [`wait_for`](Self::wait_for), giving up once the view has not moved for `stall`.
    async fn wait_moving(&self, sequence: u64, stall: Duration) -> Result<(), StoreError> {
        if sequence == 0 || self.applied() >= sequence {
            return Ok(());
        }
        self.wanted.fetch_max(sequence, std::sync::atomic::Ordering::SeqCst);
        let woken = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            // Checked again under the lock: `wake_up_to` runs after `applied` moves, and takes
            // this lock, so a waiter is either seen here as done or found there.
            if self.applied() >= sequence {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            waiters.entry(sequence).or_default().push(tx);
            rx
        };
        let mut woken = woken;
        let mut seen = self.applied();
        let reached = loop {
            match tokio::time::timeout(stall, &mut woken).await {
                Ok(woke) => break Ok(woke.is_ok()),
                // Still moving: further to go, not stalled.
                Err(_) if self.applied() > seen => seen = self.applied(),
                Err(stalled) => break Err(stalled),
            }
        };
        if reached.is_err() {
            // Given up: its place goes with it (and those of the others that gave up on it),
            // so a view that stays stalled does not collect a waiter per request.
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(waiting) = waiters.get_mut(&sequence) {
                waiting.retain(|tx| !tx.is_closed());
                if waiting.is_empty() {
                    waiters.remove(&sequence);
                }
            }
        }
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "this node's view of the log stopped at sequence {seen} for {} s, short of {sequence}",
                    stall.as_secs_f64()
                ),
            ))),
        }
    }

    /// Applies the commit stored at `sequence` (called in sequence order by the one consumer).
    /// A commit that cannot be decoded still takes the positions its header announces (so the
    /// numbering of later events does not depend on the damage) and is remembered as damage.
    #[cfg(test)]
    pub fn apply(&self, sequence: u64, announced_events: Option<u64>, payload: &[u8]) {
        self.apply_filed(sequence, announced_events, payload, None)
    }

    /// [`Mirror::apply`] of a commit stored under the subject of aggregate `filed_under`
    /// (`None`: not known, in tests): a commit whose events are another aggregate's is void,
    /// or one message could take over an aggregate whose appends then expect a sequence on
    /// another subject, and are refused for ever.
    pub fn apply_filed(&self, sequence: u64, announced_events: Option<u64>, payload: &[u8], filed_under: Option<&str>) {
        let (applied, chain) = {
            let view = self.read();
            (view.applied, view.chain)
        };
        if sequence <= applied {
            return;
        }
        // Decoded, numbered and chained before the view is locked for writing: every reader of
        // the view (the actors' heads, the writer's checks, the reads waiting for their writes)
        // would otherwise wait out that work for every commit of the cluster. Only this consumer
        // moves the chain, so the head read above is the one the commit follows if it is in force
        // (checked again under the lock; a void commit's chaining is thrown away).
        let commit = Commit::decode(sequence, payload).map(|mut c| {
            let chained = chain_events(&mut c.events, chain, sequence).ok().map(|to| (chain, to));
            (c, chained)
        });
        let mut view = self.write();
        if sequence <= view.applied {
            return;
        }
        let first_position = view.chain.position + 1;
        let previous_hash = view.chain.hash;
        match commit.and_then(|(c, chained)| apply_commit(&mut view, sequence, c, chained, filed_under, payload.len())) {
            Ok(Applied::InForce(count)) => {
                let hash_after = view.chain.hash;
                view.commits.push(CommitEntry {
                    sequence,
                    first_position,
                    count,
                    previous_hash,
                    hash_after,
                })
            }
            Ok(Applied::Void { over_limit }) => {
                view.void.insert(sequence, over_limit);
            }
            Err(e) => {
                // The header is as damaged (or forged) as the rest may be: every event takes at
                // least a byte of the payload, so a count beyond that is not believed.
                let count = announced_events.unwrap_or(1).clamp(1, payload.len().max(1) as u64);
                let hash: [u8; 32] = Sha256::new().chain_update(previous_hash).chain_update(payload).finalize().into();
                view.chain = ChainHead {
                    position: first_position.saturating_add(count - 1),
                    hash,
                };
                view.commits.push(CommitEntry {
                    sequence,
                    first_position,
                    count,
                    previous_hash,
                    hash_after: hash,
                });
                // Still the last message on its subject: the next append there must name it.
                if let Some(filed) = filed_under.filter(|f| !f.is_empty()) {
                    view.streams.entry(filed.to_string()).or_default().last_sequence = sequence;
                }
                tracing::error!(sequence, error = %e, "a commit in the log cannot be applied");
                view.damage.push(Damage {
                    sequence,
                    message: e.to_string(),
                });
            }
        }
        view.applied = sequence;
        let position = view.chain.position;
        drop(view);
        // Only a reader of the feed's head (an audit tail) needs waking, and there is seldom one:
        // notifying a watch channel costs locks even when nobody listens, on every commit of the
        // cluster. The value is kept current either way (a receiver that subscribes reads it;
        // one counted before the change is notified of it).
        self.position.send_if_modified(|p| {
            *p = position;
            self.position.receiver_count() > 0
        });
        self.wake_up_to(sequence);
    }

    /// Wakes whoever waits for a sequence up to `sequence` (just applied).
    fn wake_up_to(&self, sequence: u64) {
        let ready = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if waiters.first_key_value().is_none_or(|(first, _)| *first > sequence) {
                return;
            }
            let later = waiters.split_off(&(sequence + 1));
            std::mem::replace(&mut *waiters, later)
        };
        for waiter in ready.into_values().flatten() {
            let _ = waiter.send(());
        }
    }

    /// Marks the view as having seen everything up to `sequence` without a commit there (the
    /// stream is empty, or the view has caught up with it).
    pub fn mark_applied(&self, sequence: u64) {
        let mut view = self.write();
        if sequence > view.applied {
            view.applied = sequence;
            drop(view);
            self.wake_up_to(sequence);
        }
    }

    /// What became of the message at `sequence`.
    pub fn outcome(&self, sequence: u64) -> Outcome {
        let view = self.read();
        if sequence > view.applied {
            Outcome::Unknown
        } else if let Some(&over_limit) = view.void.get(&sequence) {
            over_limit.map_or(Outcome::Void, Outcome::OverLimit)
        } else if view.damage.binary_search_by_key(&sequence, |d| d.sequence).is_ok() {
            // It takes feed positions (so later numbering does not depend on it), but no event
            // of it is in force.
            Outcome::Damaged
        } else if view.commits.binary_search_by_key(&sequence, |c| c.sequence).is_ok() {
            Outcome::InForce
        } else {
            Outcome::Damaged
        }
    }

    /// Whether a snapshot of `stream_id` may be stored: false only when this view holds commits
    /// of it and each says it stored none. (A snapshot is a cache: a view behind the log that
    /// misses one costs a longer replay, never a wrong state.)
    pub fn may_have_snapshot(&self, stream_id: &str) -> bool {
        self.read()
            .streams
            .get(stream_id)
            .is_none_or(|s| s.commits.is_empty() || s.may_have_snapshot)
    }

    /// Whether the commit at `sequence` is in force by its fallback's events.
    pub fn fell_back(&self, sequence: u64) -> bool {
        self.read().fell_back.contains(&sequence)
    }

    /// Fills in the positions and hashes of the events of the commit at `sequence`.
    pub fn place(&self, sequence: u64, mut events: Vec<EventEnvelope>) -> Result<Vec<EventEnvelope>, StoreError> {
        let entry = self.commit(sequence).ok_or_else(|| StoreError::Corrupt {
            key: format!("stream sequence {sequence}"),
            message: "not a commit of this log".into(),
        })?;
        let before = ChainHead {
            position: entry.first_position.saturating_sub(1),
            hash: entry.previous_hash,
        };
        chain_events(&mut events, before, sequence)?;
        Ok(events)
    }

    /// The events of the commit in force at `sequence`, numbered and chained, while the view
    /// keeps them among its recent ones (a node's own append, answered just after the view applied
    /// it, need not be numbered and chained a second time).
    pub fn recent_commit(&self, sequence: u64) -> Option<Vec<EventEnvelope>> {
        self.read().recent.get(&sequence).map(|(events, _)| events.clone())
    }

    /// Whether the commit at `sequence` could not be applied (see [`Outcome::Damaged`]).
    pub fn is_damaged(&self, sequence: u64) -> bool {
        self.read().damage.binary_search_by_key(&sequence, |d| d.sequence).is_ok()
    }

    /// The commit stored at `sequence`.
    pub fn commit(&self, sequence: u64) -> Option<CommitEntry> {
        let view = self.read();
        let i = view.commits.binary_search_by_key(&sequence, |c| c.sequence).ok()?;
        Some(view.commits[i])
    }

    /// The commits holding the events after position `after`, enough for `limit` events.
    pub fn commits_after(&self, after: u64, limit: usize) -> Vec<CommitEntry> {
        let view = self.read();
        let start = view.commits.partition_point(|c| c.first_position + c.count - 1 <= after);
        let mut out = Vec::new();
        let mut events = 0u64;
        for c in &view.commits[start..] {
            if events >= limit as u64 {
                break;
            }
            events += c.first_position + c.count - 1 - after.max(c.first_position - 1);
            out.push(*c);
        }
        out
    }

    /// The chain hash after the event at `position`, if a commit ends there.
    pub fn hash_at(&self, position: u64) -> Option<[u8; 32]> {
        let view = self.read();
        let i = view.commits.partition_point(|c| c.first_position + c.count - 1 < position);
        view.commits
            .get(i)
            .filter(|c| c.first_position + c.count - 1 == position)
            .map(|c| c.hash_after)
    }

    pub fn chain_head(&self) -> ChainHead {
        self.read().chain
    }

    /// The sequences of a stream's commits in force holding its versions `from..until` (the one
    /// that starts at or before `from`, and every later one that starts before `until`), without
    /// a copy of the rest.
    pub fn commits_from(&self, stream_id: &str, from: u64, until: u64) -> Vec<u64> {
        let view = self.read();
        let Some(entry) = view.streams.get(stream_id) else {
            return Vec::new();
        };
        let start = entry.commits.partition_point(|(_, first)| *first <= from).saturating_sub(1);
        entry.commits[start..]
            .iter()
            .take_while(|(_, first)| *first < until)
            .map(|(sequence, _)| *sequence)
            .collect()
    }

    /// The events of `stream_id` from `from` on, up to this view's head of it, if the view
    /// still holds every commit they are in (see [`View::recent`]).
    pub fn recent_events(&self, stream_id: &str, from: u64) -> Option<Vec<EventEnvelope>> {
        let view = self.read();
        let entry = view.streams.get(stream_id)?;
        let start = entry.commits.partition_point(|(_, first)| *first <= from).saturating_sub(1);
        let mut events = Vec::new();
        for (sequence, _) in &entry.commits[start..] {
            events.extend(view.recent.get(sequence)?.0.iter().filter(|e| e.version >= from).cloned());
        }
        Some(events)
    }

    /// The sequence of the stream's commit in force whose first event has `version`.
    pub fn commit_starting_at(&self, stream_id: &str, version: u64) -> Option<u64> {
        let view = self.read();
        let commits = &view.streams.get(stream_id)?.commits;
        let i = commits.binary_search_by_key(&version, |(_, first)| *first).ok()?;
        Some(commits[i].0)
    }

    /// A stream's head in the view without a copy of its commits: version, last event, the
    /// sequence of its subject's last message (in force or void) and of its last commit in force.
    pub fn head_of(&self, stream_id: &str) -> (u64, Option<Uuid>, u64, Option<u64>) {
        let view = self.read();
        view.streams.get(stream_id).map_or((0, None, 0, None), |s| {
            (s.version, s.last_event, s.last_sequence, s.commits.last().map(|(seq, _)| *seq))
        })
    }

    /// A stream's version in the view (no copy of its commits).
    pub fn version_of(&self, stream_id: &str) -> Option<u64> {
        self.read().streams.get(stream_id).map(|s| s.version)
    }

    pub fn stream_heads(&self, after: Option<&str>, limit: usize) -> Vec<(String, u64)> {
        let view = self.read();
        let range = match after {
            Some(a) => view
                .streams
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => view.streams.range::<str, _>(..),
        };
        range.take(limit).map(|(id, s)| (id.clone(), s.version)).collect()
    }

    pub fn index_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.read().index.get(key).cloned()
    }

    #[allow(clippy::type_complexity)]
    pub fn index_scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let view = self.read();
        let from = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_vec()),
            _ => std::ops::Bound::Included(prefix.to_vec()),
        };
        view.index
            .range((from, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Whether `key` is held by a claim (so deleting it must free the claim too).
    pub fn is_claimed(&self, key: &[u8]) -> bool {
        self.read().claimed.contains(key)
    }

    /// The index layouts the commits applied so far were computed for.
    pub fn layouts(&self) -> BTreeSet<u64> {
        self.read().layouts.clone()
    }

    /// Replaces the index with a rebuild by the application, computed from the feed through
    /// position `through`, and applies on top the index changes of the commits in force after
    /// it (other nodes go on appending while a node rebuilds). The counters the in-force rule
    /// reads are not touched: they come from the commits alone, the same on every node.
    pub fn replace_index(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, through: u64) -> Result<(), StoreError> {
        let mut view = self.write();
        let View {
            index,
            recent_changes,
            chain,
            ..
        } = &mut *view;
        let missing = chain.position > through && recent_changes.front().is_none_or(|c| c.first_position > through + 1);
        if missing {
            return Err(StoreError::backend(std::io::Error::other(format!(
                "the index was rebuilt through position {through}, but the commits since (to {}) are no longer at hand; rebuild again",
                chain.position
            ))));
        }
        *index = entries.into_iter().collect();
        for change in recent_changes.iter().filter(|c| c.first_position > through) {
            apply_index_changes(index, &change.claims, &change.ops);
        }
        Ok(())
    }

    pub fn damage(&self) -> Vec<Damage> {
        self.read().damage.clone()
    }
}

/// What applying a commit did.
enum Applied {
    /// In force, with this many events.
    InForce(u64),
    Void {
        over_limit: Option<usize>,
    },
}

/// Applies a decoded commit.
///
/// A commit is in force only if its events extend its aggregate's head as the commits before it
/// in sequence order left it (the next versions, decided after the head's last event), claims
/// no key another commit holds and takes no counter over the limit it names (a quota that holds
/// however many nodes create at once). JetStream's per-subject check refuses most stale appends, but
/// nats-server 2.9 checks it against the stored messages only, so two appends in flight at once
/// can both pass it; this rule, applied by every node in the same order, keeps the first and
/// voids the other, and its writer is told it lost.
/// `chained`: the chain head the commit's events were numbered and chained from, and the one
/// they make.
fn apply_commit(
    view: &mut View,
    sequence: u64,
    mut commit: Commit,
    chained: Option<(ChainHead, ChainHead)>,
    filed_under: Option<&str>,
    size: usize,
) -> Result<Applied, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: format!("stream sequence {sequence}"),
        message,
    };
    let stream_id = commit.events[0].stream_id.clone();
    let (head, head_event) = view.streams.get(&stream_id).map_or((0, None), |s| (s.version, s.last_event));
    let extends = filed_under.is_none_or(|filed| filed == stream_id)
        && commit
            .events
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_id == stream_id && e.version == head + 1 + i as u64)
        && commit.after.is_none_or(|after| Some(after) == head_event);
    let claims = commit.claimed().map_err(|e| corrupt(e.to_string()))?;
    // A claim on a key another commit holds is refused too: the reservations make this rare
    // (an append resent for longer than a reservation is presumed alive), the rule makes it exact.
    let taken = claims.iter().any(|(key, _)| view.claimed.contains(key))
        || claims
            .iter()
            .enumerate()
            .any(|(i, (key, _))| claims[..i].iter().any(|(k, _)| k == key));
    let ops = commit.take_index_changes().map_err(|e| corrupt(e.to_string()))?;
    let limits = commit.counter_limits().map_err(|e| corrupt(e.to_string()))?;
    let over_limit = crate::store::broken_limit(&ops, &limits, |k| {
        Ok::<_, std::convert::Infallible>(view.counters.get(k).copied().unwrap_or(0))
    })
    .unwrap_or_else(|never| match never {})
    .and_then(|key| limits.iter().position(|l| l.key == key));
    // Over the limit its fallback names: in force by the fallback's events, without the
    // commit's index changes and claims.
    let fall_back = extends && !taken && over_limit.is_some() && commit.fallback.as_ref().map(|f| f.limit) == over_limit;
    if fall_back {
        let fits = commit.fallback.as_ref().is_some_and(|f| {
            f.events.len() == commit.events.len()
                && f.events
                    .iter()
                    .zip(&commit.events)
                    .all(|(a, b)| a.event_id == b.event_id && a.version == b.version && a.stream_id == b.stream_id)
        });
        if !fits {
            return Err(corrupt("a fallback whose events do not stand in for the commit's".into()));
        }
        view.fell_back.insert(sequence);
        let events = commit.into_events(true);
        let first_position = view.chain.position.saturating_add(1);
        let count = chain_in(view, (sequence, size), &stream_id, head, events, None)?;
        // No index changes, but in the run of commits a rebuilt index is brought up to date by.
        remember_changes(
            view,
            IndexChanges {
                first_position,
                claims: vec![],
                ops: vec![],
            },
        );
        return Ok(Applied::InForce(count));
    }
    if !extends || taken || over_limit.is_some() {
        tracing::debug!(sequence, stream = %stream_id, head, taken, over_limit, "a commit that does not extend its aggregate's head, claims a held key or goes over a limit is void");
        // The last message on the subject it was stored under, which the next append there
        // must name (the server's per-subject check counts every message).
        match filed_under {
            None => view.streams.entry(stream_id).or_default().last_sequence = sequence,
            Some("") => {}
            Some(filed) => view.streams.entry(filed.to_string()).or_default().last_sequence = sequence,
        }
        return Ok(Applied::Void {
            over_limit: over_limit.filter(|_| extends && !taken),
        });
    }
    let first_position = view.chain.position.saturating_add(1);
    let count = chain_in(
        view,
        (sequence, size),
        &stream_id,
        head,
        std::mem::take(&mut commit.events),
        chained,
    )?;
    if commit.snapshotted != Some(false) {
        view.streams.entry(stream_id).or_default().may_have_snapshot = true;
    }
    for (key, _) in &claims {
        view.claimed.insert(key.clone());
    }
    for op in &ops {
        match op {
            IndexOp::Put(..) => {}
            IndexOp::Delete(k) => {
                view.claimed.remove(k);
                view.counters.remove(k);
            }
            IndexOp::Add(k, by) => {
                let counter = view.counters.entry(k.clone()).or_default();
                *counter = counter.saturating_add(*by);
            }
        }
    }
    apply_index_changes(&mut view.index, &claims, &ops);
    remember_changes(
        view,
        IndexChanges {
            first_position,
            claims,
            ops,
        },
    );
    view.layouts.insert(commit.index_layout);
    Ok(Applied::InForce(count))
}

/// Numbers and chains `events` (of the commit at `sequence`) after `from`; returns the head they
/// make.
fn chain_events(events: &mut [EventEnvelope], from: ChainHead, sequence: u64) -> Result<ChainHead, StoreError> {
    let mut previous = from.hash;
    let mut position = from.position;
    for e in events {
        position += 1;
        e.position = position;
        e.hash.clear();
        previous = e.chain_hash(&previous).map_err(|err| StoreError::Corrupt {
            key: format!("stream sequence {sequence}"),
            message: err.to_string(),
        })?;
        e.hash = hex::encode(previous);
    }
    Ok(ChainHead { position, hash: previous })
}

/// Numbers and chains the events of the commit in force at `sequence` after the feed's head,
/// makes them its aggregate's head (at version `head` before them) and keeps them among the
/// recent ones; how many there were. `size`: the commit's bytes as stored. `chained`: the head
/// they were already chained from and the one they make (used if the feed's head is still that
/// one).
fn chain_in(
    view: &mut View,
    (sequence, size): (u64, usize),
    stream_id: &str,
    head: u64,
    mut events: Vec<EventEnvelope>,
    chained: Option<(ChainHead, ChainHead)>,
) -> Result<u64, StoreError> {
    let count = events.len() as u64;
    let last = events.last().map(|e| e.event_id);
    let after = match chained {
        Some((from, to)) if from == view.chain => to,
        _ => chain_events(&mut events, view.chain, sequence)?,
    };
    view.recent.insert(sequence, (events, size));
    view.recent_bytes += size;
    while view.recent.len() > RECENT_COMMITS || view.recent_bytes > RECENT_BYTES {
        let Some((_, (_, dropped))) = view.recent.pop_first() else { break };
        view.recent_bytes -= dropped;
    }
    view.chain = after;
    let entry = view.streams.entry(stream_id.to_string()).or_default();
    entry.commits.push((sequence, head + 1));
    entry.version = head + count;
    entry.last_event = last;
    entry.last_sequence = sequence;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::wire::IndexChange;
    use super::*;
    use crate::store::{AppendMeta, EventEnvelope, CURRENT_SCHEMA_VERSION};

    /// A commit of one event at `version` of `stream`, decided after `after`, claiming `claims`.
    fn commit(stream: &str, version: u64, after: Option<Uuid>, claims: &[&str]) -> (Vec<u8>, Uuid) {
        let meta = AppendMeta::direct("111122223333", "us-east-1", "request-1", "test");
        let id = Uuid::new_v4();
        let event = EventEnvelope {
            event_id: id,
            stream_id: stream.into(),
            version,
            position: 0,
            event_type: "Tested".into(),
            schema_version: CURRENT_SCHEMA_VERSION,
            timestamp_ms: meta.timestamp_ms,
            account: meta.account,
            region: meta.region,
            request_id: meta.request_id,
            command_id: meta.command_id,
            command: meta.command,
            command_input: meta.command_input,
            payload: serde_json::json!({}),
            hash: String::new(),
        };
        let commit = Commit {
            events: vec![event],
            index_ops: vec![],
            index: vec![],
            claims: claims.iter().map(|k| (hex::encode(k), hex::encode(stream))).collect(),
            index_layout: 0,
            after,
            limits: vec![],
            fallback: None,
            snapshotted: Some(false),
        };
        (serde_json::to_vec(&commit).expect("encode"), id)
    }

    /// A reader waits for a view far behind as long as it keeps moving, and gives up only on
    /// one that stopped for as long as it is given ([`CATCH_UP_DEADLINE`] outside this test).
    #[tokio::test]
    async fn a_wait_for_the_view_fails_only_when_it_stops_moving() {
        const STALL: Duration = Duration::from_millis(300);
        let m = std::sync::Arc::new(Mirror::default());
        let waiting = tokio::spawn({
            let m = m.clone();
            async move { m.wait_moving(1_000, STALL).await }
        });
        for sequence in 1..=4 {
            tokio::time::sleep(STALL - Duration::from_millis(100)).await;
            m.mark_applied(sequence * 100);
        }
        assert!(
            !waiting.is_finished(),
            "moving for longer than the stall allowed, and still waited for"
        );
        m.mark_applied(1_000);
        assert!(waiting.await.expect("task").is_ok());
        let stalled = m.wait_moving(2_000, STALL).await;
        match stalled {
            Err(e) => assert!(crate::error_chain(&e).contains("stopped at sequence 1000"), "{e}"),
            Ok(()) => panic!("a stalled view is not waited for forever"),
        }
    }

    /// A view knows a stream has no snapshot only when each of its commits says so: a commit that
    /// stored one, or one written before commits said (none), may have.
    #[test]
    fn a_snapshot_read_is_skipped_only_for_streams_whose_commits_say_none_was_stored() {
        let m = Mirror::default();
        let with = |stream: &str, version: u64, after: Option<Uuid>, snapshotted: Option<bool>| {
            let (bytes, id) = commit(stream, version, after, &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.snapshotted = snapshotted;
            (serde_json::to_vec(&c).expect("encode"), id)
        };
        assert!(m.may_have_snapshot("phone-a"), "a stream this view has not seen");
        let (a1, a1_id) = with("phone-a", 1, None, Some(false));
        m.apply(1, Some(1), &a1);
        assert!(!m.may_have_snapshot("phone-a"));
        let (a2, _) = with("phone-a", 2, Some(a1_id), Some(true));
        m.apply(2, Some(1), &a2);
        assert!(m.may_have_snapshot("phone-a"));
        let (b1, _) = with("phone-b", 1, None, None);
        m.apply(3, Some(1), &b1);
        assert!(m.may_have_snapshot("phone-b"), "written before commits said");
    }

    /// A commit whose fallback names the limit it goes over is in force by the fallback's
    /// events (same versions and ids, none of its index changes), so what follows it lands; one
    /// over a limit its fallback does not name is void; a fallback that cannot stand in for the
    /// commit's events is damage, not a silent choice.
    #[test]
    fn a_commit_over_the_limit_its_fallback_names_is_in_force_by_the_fallback() {
        let m = Mirror::default();
        let (first, a1) = commit("phone-a", 1, None, &[]);
        m.apply(1, Some(1), &first);
        let opted_out = b"x/opted-out".to_vec();
        m.apply(2, Some(1), &{
            let (bytes, _) = commit("list-a", 1, None, &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.index = vec![IndexChange::from(&IndexOp::Add(opted_out.clone(), 1))];
            serde_json::to_vec(&c).expect("encode")
        });
        let bounded = |after: Uuid, limit: usize, tamper: bool| {
            let (bytes, id) = commit("phone-a", 2, Some(after), &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.index = vec![IndexChange::from(&IndexOp::Add(b"c/sent".to_vec(), 1))];
            c.limits = vec![(hex::encode(&opted_out), i64::MIN, 0)];
            let mut refused = c.events.clone();
            refused[0].event_type = "Refused".into();
            if tamper {
                refused[0].version = 7;
            }
            c.fallback = Some(super::super::wire::StoredFallback { limit, events: refused });
            (serde_json::to_vec(&c).expect("encode"), id)
        };
        let (over_unnamed, _) = bounded(a1, 1, false);
        m.apply(3, Some(1), &over_unnamed);
        assert_eq!(m.outcome(3), Outcome::OverLimit(0), "a fallback for another limit is not taken");
        let (tampered, _) = bounded(a1, 0, true);
        m.apply(4, Some(1), &tampered);
        assert!(m.damage().iter().any(|d| d.sequence == 4), "{:?}", m.damage());
        let m = Mirror::default();
        m.apply(1, Some(1), &first);
        m.apply(2, Some(1), &{
            let (bytes, _) = commit("list-a", 1, None, &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.index = vec![IndexChange::from(&IndexOp::Add(opted_out.clone(), 1))];
            serde_json::to_vec(&c).expect("encode")
        });
        let (fell, id) = bounded(a1, 0, false);
        m.apply(3, Some(1), &fell);
        assert_eq!(m.outcome(3), Outcome::InForce);
        assert!(m.fell_back(3));
        assert_eq!(m.index_get(b"c/sent"), None, "none of the commit's index changes");
        assert_eq!(m.head_of("phone-a").1, Some(id), "the same head either way");
        let (follower, _) = commit("phone-a", 3, Some(id), &[]);
        m.apply(4, Some(1), &follower);
        assert_eq!(m.outcome(4), Outcome::InForce, "what was pipelined behind it lands");
        assert_eq!(m.version_of("phone-a"), Some(3));
    }

    #[test]
    fn a_commit_is_in_force_only_if_it_extends_the_head_it_was_decided_after() {
        let m = Mirror::default();
        let (first, a1) = commit("phone-a", 1, None, &[]);
        m.apply(1, Some(1), &first);
        // Two writers decided version 2 after a1; the first stored wins.
        let (winner, w) = commit("phone-a", 2, Some(a1), &[]);
        let (loser, l) = commit("phone-a", 2, Some(a1), &[]);
        m.apply(2, Some(1), &winner);
        m.apply(3, Some(1), &loser);
        assert_eq!(m.outcome(2), Outcome::InForce);
        assert_eq!(m.outcome(3), Outcome::Void);
        // The loser's pipelined follower has the next version number but was decided after the
        // void commit: void too. The winner's follower is in force.
        let (after_loser, _) = commit("phone-a", 3, Some(l), &[]);
        let (after_winner, _) = commit("phone-a", 3, Some(w), &[]);
        m.apply(4, Some(1), &after_loser);
        m.apply(5, Some(1), &after_winner);
        assert_eq!(m.outcome(4), Outcome::Void);
        assert_eq!(m.outcome(5), Outcome::InForce);
        assert_eq!(m.version_of("phone-a"), Some(3));
        assert_eq!(m.chain_head().position, 3, "void commits take no feed positions");
    }

    #[test]
    fn a_commit_claiming_a_held_key_is_void() {
        let m = Mirror::default();
        let (first, _) = commit("phone-a", 1, None, &["e164/+15550100"]);
        let (second, _) = commit("phone-b", 1, None, &["e164/+15550100"]);
        let (other, _) = commit("phone-c", 1, None, &["e164/+15550101"]);
        m.apply(1, Some(1), &first);
        m.apply(2, Some(1), &second);
        m.apply(3, Some(1), &other);
        assert_eq!(m.outcome(1), Outcome::InForce);
        assert_eq!(m.outcome(2), Outcome::Void);
        assert_eq!(m.outcome(3), Outcome::InForce);
        assert_eq!(m.index_get(b"e164/+15550100"), Some(b"phone-a".to_vec()));
    }

    #[test]
    fn a_commit_that_takes_a_counter_over_its_limit_is_void() {
        let m = Mirror::default();
        let counted = |stream: &str, limit: Option<i64>| {
            let (bytes, _) = commit(stream, 1, None, &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.index = vec![IndexChange::from(&IndexOp::Add(b"c/quota".to_vec(), 1))];
            c.limits = limit.map(|l| (hex::encode(b"c/quota"), i64::MIN, l)).into_iter().collect();
            serde_json::to_vec(&c).expect("encode")
        };
        m.apply(1, Some(1), &counted("pool-a", Some(2)));
        m.apply(2, Some(1), &counted("pool-b", Some(2)));
        m.apply(3, Some(1), &counted("pool-c", Some(2)));
        // A stale commit over the limit is told it is stale (its writer decides again).
        let (stale, _) = commit("pool-a", 1, None, &[]);
        m.apply(4, Some(1), &stale);
        m.apply(5, Some(1), &counted("pool-d", None));
        assert_eq!(
            (1..=5).map(|s| m.outcome(s)).collect::<Vec<_>>(),
            [
                Outcome::InForce,
                Outcome::InForce,
                Outcome::OverLimit(0),
                Outcome::Void,
                Outcome::InForce
            ]
        );
        assert_eq!(m.version_of("pool-c"), Some(0), "no event of the refused commit");
        assert_eq!(crate::store::decode_counter(m.index_get(b"c/quota").as_deref()), 3);
    }

    /// A commit whose events are another aggregate's than the subject it was stored under is
    /// void: it does not take that aggregate over (whose appends would then expect a sequence
    /// on another subject, and be refused for ever).
    #[test]
    fn a_commit_filed_under_another_aggregates_subject_is_void() {
        let m = Mirror::default();
        let (forged, _) = commit("pool-b", 1, None, &[]);
        m.apply_filed(1, Some(1), &forged, Some("pool-a"));
        assert_eq!(m.outcome(1), Outcome::Void);
        assert_eq!(m.version_of("pool-b"), None);
        let (honest, _) = commit("pool-b", 1, None, &[]);
        m.apply_filed(2, Some(1), &honest, Some("pool-b"));
        assert_eq!((m.outcome(2), m.version_of("pool-b")), (Outcome::InForce, Some(1)));
    }

    /// A commit claiming one key twice is void, as the embedded backend refuses such an append.
    #[test]
    fn a_commit_claiming_a_key_twice_is_void() {
        let m = Mirror::default();
        let (twice, _) = commit("phone-a", 1, None, &["e164/+15550100", "e164/+15550100"]);
        m.apply(1, Some(1), &twice);
        assert_eq!(m.outcome(1), Outcome::Void);
        assert!(!m.is_claimed(b"e164/+15550100"));
    }

    /// A node rebuilding its index while the others append: the rebuild, computed through an
    /// earlier position, is brought up to date with the commits since, and whatever the rebuild
    /// holds, the counters the in-force rule reads are the commits' own, as on every other node.
    #[test]
    fn a_rebuilt_index_keeps_the_commits_applied_meanwhile_and_the_rule_its_counters() {
        let m = Mirror::default();
        let counted = |stream: &str, limit: Option<i64>| {
            let (bytes, _) = commit(stream, 1, None, &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.index = vec![
                IndexChange::from(&IndexOp::Add(b"c/quota".to_vec(), 1)),
                IndexChange::from(&IndexOp::Put(format!("owner/{stream}").into_bytes(), vec![])),
            ];
            c.limits = limit.map(|l| (hex::encode(b"c/quota"), i64::MIN, l)).into_iter().collect();
            serde_json::to_vec(&c).expect("encode")
        };
        m.apply(1, Some(1), &counted("pool-a", Some(3)));
        // The rebuild read the feed through position 1; two more commits came meanwhile.
        m.apply(2, Some(1), &counted("pool-b", Some(3)));
        m.apply(3, Some(1), &counted("pool-c", Some(3)));
        // A rebuild whose layout counts differently (here: not at all).
        let rebuilt = vec![(b"owner/pool-a".to_vec(), vec![])];
        m.replace_index(rebuilt, 1).expect("replaced");
        assert_eq!(m.index_get(b"owner/pool-b"), Some(vec![]), "a commit applied during the rebuild");
        assert_eq!(m.index_get(b"owner/pool-c"), Some(vec![]));
        assert_eq!(
            crate::store::decode_counter(m.index_get(b"c/quota").as_deref()),
            2,
            "the rebuild's count and after"
        );
        // The rule still counts three: a fourth creation is over the quota, as on a node that did
        // not rebuild.
        m.apply(4, Some(1), &counted("pool-d", Some(3)));
        assert_eq!(m.outcome(4), Outcome::OverLimit(0));
        // A rebuild through a position whose later commits are no longer at hand is refused.
        let far = Mirror::default();
        for s in 1..=(RECENT_COMMITS as u64 + 2) {
            far.apply(s, Some(1), &counted(&format!("pool-{s}"), None));
        }
        assert!(far.replace_index(vec![], 1).is_err());
        assert!(far.replace_index(vec![], RECENT_COMMITS as u64).is_ok());
    }

    /// A commit that cannot be decoded still takes the feed positions its header announces (so
    /// that the positions after it stay those the writer numbered), but no more than its payload
    /// could hold: a forged count must not push the feed off by 10^12 or wrap it.
    #[test]
    fn an_undecodable_commit_takes_no_more_positions_than_its_payload_could_hold() {
        let m = Mirror::default();
        let (first, _) = commit("phone-a", 1, None, &[]);
        m.apply(1, Some(1), &first);
        m.apply(2, Some(3), b"not a commit");
        assert_eq!(m.chain_head().position, 4, "the announced count, when it fits");
        m.apply(3, Some(u64::MAX), b"forged");
        assert_eq!(m.chain_head().position, 4 + 6, "one position per payload byte at most");
        let (next, _) = commit("phone-b", 1, None, &[]);
        m.apply(4, Some(1), &next);
        assert_eq!(m.chain_head().position, 11);
        assert_eq!(m.damage().len(), 2);
        // Damaged, not in force: its writer (if it ever had one) is not told it succeeded, and a
        // feed read finds no event of it.
        assert_eq!(
            (1..=4).map(|s| m.outcome(s)).collect::<Vec<_>>(),
            [Outcome::InForce, Outcome::Damaged, Outcome::Damaged, Outcome::InForce]
        );
        assert!(m.is_damaged(2) && !m.is_damaged(4));
    }

    /// A reader waiting for a sequence is woken once the view has applied it, whichever way the
    /// view gets there (a commit, or a gap marked applied), and not before.
    #[tokio::test]
    async fn a_waiter_is_woken_when_its_sequence_is_applied_and_not_before() {
        let mirror = std::sync::Arc::new(Mirror::default());
        let waiting = |sequence: u64| {
            let mirror = mirror.clone();
            tokio::spawn(async move { mirror.wait_for(sequence).await })
        };
        let woken = |task: tokio::task::JoinHandle<Result<(), StoreError>>| async move {
            let joined = tokio::time::timeout(Duration::from_secs(5), task).await.expect("woken within 5 s");
            joined.expect("joined").expect("applied");
        };
        let (first, second, third) = (waiting(1), waiting(3), waiting(3));
        tokio::task::yield_now().await;
        let (payload, _) = commit("phone-a", 1, None, &[]);
        mirror.apply(1, Some(1), &payload);
        woken(first).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished() && !third.is_finished(), "woken before sequence 3 was applied");
        mirror.mark_applied(3);
        woken(second).await;
        woken(third).await;
        // A sequence already applied needs no wait at all.
        mirror.wait_for(2).await.expect("applied before");
    }

    /// The recent commits are held by bytes too: a few large commits push the oldest out long
    /// before their number would.
    #[test]
    fn the_recent_commits_are_bounded_by_their_bytes() {
        let m = Mirror::default();
        let big = |stream: &str| {
            let (bytes, _) = commit(stream, 1, None, &[]);
            let mut c: Commit = serde_json::from_slice(&bytes).expect("decode");
            c.events[0].payload = serde_json::json!({"Filler": "x".repeat(RECENT_BYTES / 3)});
            serde_json::to_vec(&c).expect("encode")
        };
        for (sequence, stream) in ["pool-a", "pool-b", "pool-c", "pool-d"].into_iter().enumerate() {
            m.apply(sequence as u64 + 1, Some(1), &big(stream));
        }
        assert!(m.recent_events("pool-d", 1).is_some(), "the latest is kept");
        assert_eq!(m.recent_events("pool-a", 1), None, "the oldest has left");
        assert!(m.read().recent_bytes <= RECENT_BYTES);
    }

    /// An actor put behind by another node's appends catches up from the view's recent commits:
    /// the same events, numbered and chained, as a read of the log gives; from any version; and
    /// none once a commit they need has left the window (the log is read then).
    #[test]
    fn recent_events_are_the_events_the_log_gives_until_they_leave_the_window() {
        let m = Mirror::default();
        let mut after = None;
        let mut stored = Vec::new();
        for version in 1..=3 {
            let (payload, id) = commit("pool-a", version, after, &[]);
            // Another stream's commit in between: positions and the chain run across streams.
            let (other, _) = commit(&format!("phone-{version}"), 1, None, &[]);
            let sequence = 2 * version;
            m.apply(sequence - 1, Some(1), &other);
            m.apply(sequence, Some(1), &payload);
            let events = Commit::decode(sequence, &payload).expect("decode").events;
            stored.extend(m.place(sequence, events).expect("placed"));
            after = Some(id);
        }
        assert_eq!(m.recent_events("pool-a", 1), Some(stored.clone()));
        assert_eq!(m.recent_events("pool-a", 3), Some(stored[2..].to_vec()));
        assert_eq!(m.recent_events("pool-a", 4), Some(vec![]), "nothing new");
        assert_eq!(m.recent_events("pool-b", 1), None, "a stream the view has not seen");
        // Commits of other streams push the first ones out of the window.
        for i in 0..RECENT_COMMITS as u64 {
            let (payload, _) = commit(&format!("phone-x{i}"), 1, None, &[]);
            m.apply(7 + i, Some(1), &payload);
        }
        assert_eq!(m.recent_events("pool-a", 1), None, "its first commits have left the window");
    }

    /// The feed's head position: nobody is notified while nobody follows it, yet whoever starts
    /// following reads the current one, and is then told of each change.
    #[tokio::test]
    async fn a_follower_of_the_head_reads_it_current_and_is_told_of_changes() {
        let mirror = Mirror::default();
        let (payload, first) = commit("phone-a", 1, None, &[]);
        mirror.apply(1, Some(1), &payload);
        let mut head = mirror.watch_position();
        assert_eq!(*head.borrow_and_update(), 1, "applied while nobody followed");
        let (payload, _) = commit("phone-a", 2, Some(first), &[]);
        mirror.apply(2, Some(1), &payload);
        tokio::time::timeout(Duration::from_secs(5), head.changed())
            .await
            .expect("told within 5 s")
            .expect("sender alive");
        assert_eq!(*head.borrow_and_update(), 2);
    }
}
