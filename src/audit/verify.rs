//! Tamper evidence: recompute the hash chain over the global feed, check every stream is gap-free
//! and every position unique and increasing, and report the first broken link.
//!
//! Works on the live store (where it also checks that the feed, the streams and the heads agree)
//! and on a JSON-lines export (an auditor's copy). An export that does not start at position 1
//! is checked from its first event on: that event's own hash is the anchor.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::codec::{decode_event, kind_of_stream};
use crate::domain::opt_out_list::{OptOutListEvent, OptOutListState};
use crate::domain::phone_number::{PhoneNumberEvent, PhoneNumberState};
use crate::domain::pool::{PoolEvent, PoolState};
use crate::domain::sender_id::{SenderIdEvent, SenderIdState};
use crate::domain::{Aggregate, ResourceKind};
use crate::progress::Progress;
use crate::store::{EventEnvelope, EventStore, Snapshot, StoreError, GENESIS_HASH};

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BrokenLink {
    /// Feed position (or export line) where the chain breaks.
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyReport {
    pub ok: bool,
    pub events: u64,
    pub streams: u64,
    pub head_position: u64,
    pub head_hash: String,
    /// Position whose hash was trusted as the start of the chain (1 = genesis).
    pub anchored_at: u64,
    /// Snapshots compared with a full replay (live log only).
    #[serde(default)]
    pub snapshots_checked: u64,
    /// How far the chain is sealed: a live log's only (an export is sealed by its own hashes,
    /// and its check says nothing of the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_up_to: Option<u64>,
    /// Checkpoints of the sealer compared with the chain (live clustered log only).
    #[serde(default)]
    pub checkpoints_checked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_break: Option<BrokenLink>,
}

/// Incremental checker over envelopes in feed order.
#[derive(Default)]
pub struct ChainVerifier {
    last_position: Option<u64>,
    hash: Option<[u8; 32]>,
    versions: HashMap<String, u64>,
    events: u64,
    anchored_at: u64,
    first_break: Option<BrokenLink>,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a break was found (later input is not looked at).
    pub fn broken(&self) -> bool {
        self.first_break.is_some()
    }

    /// Records a problem not tied to a decodable envelope.
    pub fn fail(&mut self, position: u64, problem: impl Into<String>) {
        if self.first_break.is_none() {
            self.first_break = Some(BrokenLink {
                position,
                stream_id: None,
                version: None,
                problem: problem.into(),
            });
        }
    }

    fn fail_at(&mut self, e: &EventEnvelope, problem: String) {
        if self.first_break.is_none() {
            self.first_break = Some(BrokenLink {
                position: e.position,
                stream_id: Some(e.stream_id.clone()),
                version: Some(e.version),
                problem,
            });
        }
    }

    /// Checks the next envelope of the feed.
    pub fn push(&mut self, e: &EventEnvelope) {
        if self.broken() {
            return;
        }
        let first = self.last_position.is_none();
        match self.last_position {
            None if e.position == 1 => {
                self.hash = Some(GENESIS_HASH);
                self.anchored_at = 1;
            }
            None => self.anchored_at = e.position,
            Some(last) if Some(e.position) == last.checked_add(1) => {}
            Some(last) => {
                return self.fail_at(
                    e,
                    format!(
                        "position {} follows {last}: positions must be unique and increase by one",
                        e.position
                    ),
                )
            }
        }
        self.last_position = Some(e.position);
        let stored = match hex::decode(&e.hash).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(h) => h,
            None => return self.fail_at(e, "the hash is not 64 hex digits".into()),
        };
        if let Some(previous) = self.hash {
            match e.chain_hash(&previous) {
                Ok(h) if h == stored => {}
                Ok(_) => {
                    return self.fail_at(
                        e,
                        "hash mismatch: the event or its predecessor was altered, removed or reordered".into(),
                    )
                }
                Err(err) => return self.fail_at(e, format!("cannot canonicalize: {err}")),
            }
        }
        self.hash = Some(stored);
        let expected = match self.versions.get(&e.stream_id) {
            Some(v) => Some(v + 1),
            // A stream first seen in an export that starts mid-log may start mid-stream.
            None if first || self.anchored_at > 1 => None,
            None => Some(1),
        };
        if let Some(expected) = expected.filter(|x| *x != e.version) {
            return self.fail_at(
                e,
                format!(
                    "version {} of {} where {expected} was expected: the stream has a gap or a duplicate",
                    e.version, e.stream_id
                ),
            );
        }
        self.versions.insert(e.stream_id.clone(), e.version);
        let decoded = match kind_of_stream(&e.stream_id) {
            Some(ResourceKind::PhoneNumber) => decode_event::<PhoneNumberEvent>(e).map(|_| ()),
            Some(ResourceKind::Pool) => decode_event::<PoolEvent>(e).map(|_| ()),
            Some(ResourceKind::OptOutList) => decode_event::<OptOutListEvent>(e).map(|_| ()),
            Some(ResourceKind::SenderId) => decode_event::<SenderIdEvent>(e).map(|_| ()),
            None => return self.fail_at(e, "unknown stream kind".into()),
        };
        if let Err(err) = decoded {
            return self.fail_at(e, err.to_string());
        }
        self.events += 1;
    }

    /// Stream versions seen so far.
    pub fn versions(&self) -> &HashMap<String, u64> {
        &self.versions
    }

    pub fn finish(self) -> VerifyReport {
        VerifyReport {
            ok: self.first_break.is_none(),
            events: self.events,
            streams: self.versions.len() as u64,
            head_position: self.last_position.unwrap_or(0),
            head_hash: hex::encode(self.hash.unwrap_or(GENESIS_HASH)),
            anchored_at: self.anchored_at,
            snapshots_checked: 0,
            sealed_up_to: None,
            checkpoints_checked: 0,
            first_break: self.first_break,
        }
    }
}

/// How many snapshot ids a check lists at a time (each snapshot is then read on its own): a
/// listing may cost a walk of every key (a clustered log's bucket), so pages are long.
const SNAPSHOT_IDS_PAGE: usize = 4_096;

/// Verifies the whole live log, including that feed, streams and heads agree.
pub async fn verify_store(store: &dyn EventStore) -> Result<VerifyReport, AuditError> {
    verify_store_showing(store, &Progress::none()).await
}

/// [`verify_store`], showing how far it got on `progress`.
///
/// A live log takes appends while it is checked, so the check is of the log as it was when it
/// began: the chain up to the head read first, each stream up to its last event within it.
/// Events appended since are neither checked nor taken for damage.
pub async fn verify_store_showing(store: &dyn EventStore, progress: &Progress) -> Result<VerifyReport, AuditError> {
    let mut v = ChainVerifier::new();
    let chain = store.chain_head().await?;
    let (head_position, head_hash) = (chain.position, chain.hash);
    let (checkpoints, later): (Vec<_>, Vec<_>) = store.checkpoints().await?.into_iter().partition(|cp| cp.position <= head_position);
    let mut next_checkpoint = checkpoints.iter().peekable();
    let mut checkpoints_checked = 0;
    let mut after = 0;
    'scan: while after < head_position {
        let entries = store.feed_entries(after, 4096).await?;
        if entries.is_empty() {
            break;
        }
        progress.set(entries.last().map_or(after, |e| e.position));
        for entry in entries {
            // What lies beyond the head is for the next check (the head comparison below names
            // a head with no feed entry under it).
            if entry.position > head_position {
                break 'scan;
            }
            after = entry.position;
            match &entry.envelope {
                Ok(e) if e.position != entry.position => {
                    v.fail_at(e, format!("stored under feed position {} but says {}", entry.position, e.position))
                }
                Ok(e)
                    if entry
                        .filed_under
                        .as_ref()
                        .is_some_and(|(s, v)| *s != e.stream_id || *v != e.version) =>
                {
                    v.fail_at(e, "stored under another stream and version".into())
                }
                Ok(e) => {
                    v.push(e);
                    // The chain must pass through every checkpoint the sealer fixed.
                    while let Some(cp) = next_checkpoint.next_if(|cp| cp.position == e.position) {
                        checkpoints_checked += 1;
                        if e.hash != hex::encode(cp.hash) {
                            v.fail_at(
                                e,
                                format!("the chain differs from the checkpoint sealed at position {}", cp.position),
                            );
                        }
                    }
                    if next_checkpoint.peek().is_some_and(|cp| cp.position < e.position) {
                        v.fail_at(e, "the checkpoints are not in position order".into());
                    }
                }
                Err(problem) => v.fail(entry.position, problem.clone()),
            }
            if v.broken() {
                break 'scan;
            }
        }
    }
    let mut after_stream: Option<String> = None;
    'heads: while !v.broken() {
        let heads = store.stream_heads(after_stream.as_deref(), 4096).await?;
        let Some((last, _)) = heads.last() else { break };
        after_stream = Some(last.clone());
        for (stream, head) in heads {
            let seen = v.versions().get(&stream).copied().unwrap_or(0);
            if seen != head && !(head > seen && appended_since(store, &stream, seen + 1, head_position).await?) {
                v.fail(
                    0,
                    format!("stream {stream} has head version {head} but the feed holds {seen} events of it"),
                );
                break 'heads;
            }
        }
    }
    // Checkpoints sealed since the check began lie beyond its head, but never beyond the log's
    // (with several nodes, another node's view may be ahead of this one's for a moment).
    let beyond = match later.iter().map(|cp| cp.position).max() {
        Some(last) => !caught_up_to(store, last).await?,
        None => false,
    };
    if let Some(cp) = next_checkpoint.next().or(later.iter().rev().find(|_| beyond)) {
        v.fail(
            cp.position,
            format!("a checkpoint at position {} lies beyond the feed", cp.position),
        );
    }
    let sealed_up_to = store.sealed_up_to().await?.min(head_position);
    let mut report = v.finish();
    report.sealed_up_to = Some(sealed_up_to);
    report.checkpoints_checked = checkpoints_checked;
    let mut after_snapshot: Option<String> = None;
    'snapshots: while report.ok {
        let ids = store.snapshot_ids(after_snapshot.as_deref(), SNAPSHOT_IDS_PAGE).await?;
        let Some(last) = ids.last() else { break };
        after_snapshot = Some(last.clone());
        for stream in ids {
            // One at a time: a snapshot can be as large as its stream's state.
            let checked = match store.snapshot(&stream).await {
                Ok(Some(snapshot)) => check_snapshot(store, &stream, &snapshot).await,
                Ok(None) => continue,
                Err(e @ StoreError::Corrupt { .. }) => Err(e.to_string()),
                Err(e) => return Err(e.into()),
            };
            report.snapshots_checked += 1;
            if let Err(problem) = checked {
                report.ok = false;
                report.first_break = Some(BrokenLink {
                    position: 0,
                    stream_id: Some(stream),
                    version: None,
                    problem,
                });
                break 'snapshots;
            }
        }
    }
    if report.ok && (report.head_position != head_position || report.head_hash != hex::encode(head_hash)) {
        report.ok = false;
        report.first_break = Some(BrokenLink {
            position: head_position,
            stream_id: None,
            version: None,
            problem: format!(
                "the recorded chain head ({head_position}) does not match the feed ({})",
                report.head_position
            ),
        });
    }
    Ok(report)
}

/// Whether `version` of `stream`, beyond what the feed held up to `head_position`, is an event
/// appended since: one the feed holds at its own position, past that head, the very same.
async fn appended_since(store: &dyn EventStore, stream: &str, version: u64, head_position: u64) -> Result<bool, AuditError> {
    let Some(e) = store.read_stream(stream, version, 1).await?.into_iter().next() else {
        return Ok(false);
    };
    if e.version != version || e.position <= head_position {
        return Ok(false);
    }
    let in_feed = store.feed_entries(e.position - 1, 1).await?.into_iter().next();
    Ok(in_feed.is_some_and(|entry| {
        entry.position == e.position
            && entry
                .envelope
                .as_ref()
                .is_ok_and(|f| f.stream_id == stream && f.version == version && f.hash == e.hash)
    }))
}

/// Whether the log's head reaches `position`, waiting a little for a node's view to get there.
async fn caught_up_to(store: &dyn EventStore, position: u64) -> Result<bool, AuditError> {
    for _ in 0..20 {
        if store.chain_head().await?.position >= position {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// Whether the replay of `stream` up to the snapshot's version is the snapshot's state: folded a
/// chunk at a time, so a snapshot of a long stream is checked in a chunk's memory. A snapshot
/// today's code would not use (another layout, or a state an older build wrote that reads back
/// otherwise: see [`crate::rehydrate::usable`]) is a stale cache, replayed instead, and passes:
/// what must equal a replay is every snapshot an actor would start from.
async fn snapshot_matches<A: Aggregate>(store: &dyn EventStore, stream: &str, record: &Snapshot) -> Result<bool, String> {
    if crate::rehydrate::usable::<A>(record).is_none() {
        tracing::info!(
            stream,
            version = record.version,
            "a snapshot today's code does not use (replayed instead)"
        );
        return Ok(true);
    }
    let (mut state, mut reached) = (A::default(), 0);
    super::query::for_each_event(store, stream, 1, |e| {
        if e.version > record.version {
            return Ok(false);
        }
        state = std::mem::take(&mut state).evolve(&decode_event::<A::Event>(&e)?);
        reached = e.version;
        Ok(true)
    })
    .await
    .map_err(|e| crate::error_chain(&e))?;
    if reached < record.version {
        return Err(format!("snapshot of {stream} is at version {}, beyond the stream", record.version));
    }
    Ok(serde_json::to_value(&state).map_err(|e| e.to_string())? == record.state)
}

/// A snapshot is a cache of a replay: it must equal the replay of its stream up to its version.
async fn check_snapshot(store: &dyn EventStore, stream: &str, record: &Snapshot) -> Result<(), String> {
    let same = match kind_of_stream(stream) {
        Some(ResourceKind::PhoneNumber) => snapshot_matches::<PhoneNumberState>(store, stream, record).await?,
        Some(ResourceKind::Pool) => snapshot_matches::<PoolState>(store, stream, record).await?,
        Some(ResourceKind::OptOutList) => snapshot_matches::<OptOutListState>(store, stream, record).await?,
        Some(ResourceKind::SenderId) => snapshot_matches::<SenderIdState>(store, stream, record).await?,
        None => return Err(format!("snapshot of unknown stream {stream}")),
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "snapshot of {stream} at version {} differs from a full replay",
            record.version
        ))
    }
}

/// A point of the chain recorded earlier (by `audit digest`): the hash of the event at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPoint {
    pub position: u64,
    pub hash: String,
}

impl std::str::FromStr for ChainPoint {
    type Err = String;

    /// `POSITION:HASH`, as `audit digest` shows them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (position, hash) = s.split_once(':').ok_or("expected POSITION:HASH")?;
        let position = position.trim().parse().map_err(|_| format!("{position:?} is not a position"))?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not a hash (64 hex digits)"));
        }
        Ok(ChainPoint { position, hash })
    }
}

/// Verifies a JSON-lines export (one envelope per line, as `audit export` writes them), and,
/// given a digest recorded earlier, that the export reaches it with the same hash there.
///
/// The chain proves the lines agree with each other, not that they are all there: a copy cut
/// short, or holding nothing, is whole by its own hashes. Only a digest recorded apart from the
/// file shows that it goes as far as the log did. A line must also be exactly what the export
/// wrote: a member added to a line would not be hashed, so it is refused rather than ignored.
pub fn verify_export(reader: impl BufRead, digest: Option<&ChainPoint>) -> Result<VerifyReport, AuditError> {
    let mut v = ChainVerifier::new();
    let mut digest_met = false;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| AuditError::Input(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<EventEnvelope>(&line) {
            Ok(e) if serde_json::to_string(&e).ok().as_deref() != Some(line.as_str()) => v.fail(
                e.position,
                format!(
                    "line {} is not as `audit export` writes it: a member was added or the line re-formatted",
                    i + 1
                ),
            ),
            Ok(e) => {
                v.push(&e);
                if let Some(d) = digest.filter(|d| d.position == e.position) {
                    digest_met = true;
                    if e.hash != d.hash {
                        v.fail(e.position, format!("the hash at position {} is not the digest's", d.position));
                    }
                }
            }
            Err(e) => v.fail(i as u64 + 1, format!("line {} is not an event envelope: {e}", i + 1)),
        }
        if v.broken() {
            break;
        }
    }
    let mut report = v.finish();
    let problem = match digest {
        _ if !report.ok => None,
        _ if report.events == 0 => Some("the file holds no events".to_string()),
        Some(d) if !digest_met && d.position > report.head_position => Some(format!(
            "the export ends at position {}, before the digest's position {}: it is cut short",
            report.head_position, d.position
        )),
        Some(d) if !digest_met => Some(format!(
            "the export starts after the digest's position {} (at {})",
            d.position, report.anchored_at
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        report.ok = false;
        report.first_break = Some(BrokenLink {
            position: report.head_position,
            stream_id: None,
            version: None,
            problem,
        });
    }
    Ok(report)
}

/// A live log is verified as it stood when the check began, however many appends land while it
/// runs.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::codec::pending_events;
    use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges};
    use crate::store::{AppendMeta, AppendRequest, Durability, Store};

    const ACCOUNT: &str = "111122223333";

    fn stream(i: u64) -> String {
        format!("phone-{i:032x}")
    }

    async fn append(store: &Store, id: &str, version: u64) {
        let event = match version {
            0 => PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(id, ACCOUNT, "us-east-1"))),
            v => PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                deletion_protection_enabled: Some(v % 2 == 0),
                ..Default::default()
            }),
        };
        let meta = AppendMeta::direct(ACCOUNT, "us-east-1", "verify-test", "Test/Append");
        let request = AppendRequest::plain(id, version, meta, pending_events(&[event]).expect("events"));
        store.submit(request).expect("queued").await.expect("appended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_landing_during_a_check_are_not_taken_for_damage() {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = crate::config::Config::defaults_with_data_dir(dir.path()).expect("config");
        config.store.sled.durability = Durability::Relaxed;
        let store = config.store.open(dir.path()).expect("open");
        const STREAMS: u64 = 40;
        for i in 0..STREAMS {
            for version in 0..50 {
                append(&store, &stream(i), version).await;
            }
        }
        // A writer appends to old streams and starts new ones while the checks run.
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = tokio::spawn({
            let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
            async move {
                let mut versions = vec![50; STREAMS as usize];
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let n = (i % (STREAMS + 1)) as usize;
                    if n == STREAMS as usize {
                        append(&store, &stream(1_000 + i), 0).await;
                    } else {
                        append(&store, &stream(n as u64), versions[n]).await;
                        versions[n] += 1;
                    }
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                    // Paced, so that the log the checks read stays small.
                    tokio::time::sleep(std::time::Duration::from_micros(500)).await;
                }
            }
        });
        // At least 10 checks, and as many as it takes for 200 appends to land among them.
        let mut round = 0;
        while round < 10 || written.load(Ordering::SeqCst) < 200 {
            let before = store.chain_head().await.expect("head").position;
            let report = verify_store(&*store).await.expect("verify");
            assert!(report.ok, "round {round}: {:?}", report.first_break);
            assert!(report.head_position >= before, "round {round}: checked to {}", report.head_position);
            round += 1;
            assert!(round < 10_000, "the writer appended too little");
        }
        stop.store(true, Ordering::SeqCst);
        writer.await.expect("writer");
        let last = verify_store(&*store).await.expect("verify");
        assert!(last.ok && last.head_position == store.chain_head().await.expect("head").position);
        store.close().await.expect("close");
    }
}
