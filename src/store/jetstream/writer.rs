//! The append pipeline of the clustered backend: appends are taken in submission order, their
//! claims reserved, published in that order with the aggregate's expected last subject sequence
//! and a message id, and each is answered once acknowledged and applied by this node's view (in
//! force, or void and so refused as stale). A lost acknowledgement is resent with the same
//! message id, and recognised in the log if a new leader stored it without knowing it as a
//! duplicate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::wire::{self, Commit, IndexChange, HEADER_EVENTS, HEADER_LAST_EVENT, HEADER_STREAM, HEADER_VERSION};
use super::{backend, claims, header, mirror, other_error, KnownHead, Shared, StoredSnapshot};
use crate::store::{AppendError, AppendRequest, EventEnvelope, IndexOp, Snapshot, StoreError, CURRENT_SCHEMA_VERSION};

/// How long a resent append keeps being resent after its acknowledgement was lost: longer than
/// nats-server's longest wait before electing a new leader (a random 4–9 s election timeout,
/// fixed in its source), shorter than the stream's duplicate window.
const RESEND_FOR: Duration = Duration::from_secs(15);

/// An append handed to the pipeline, and where its answer goes.
pub(super) struct Job {
    pub(super) request: AppendRequest,
    pub(super) reply: oneshot::Sender<Result<Vec<EventEnvelope>, AppendError>>,
}

/// What this node has in flight on an aggregate: the head its last published append makes, and
/// its outcome once it is answered (`Some(in force)`; the sender is dropped then).
struct InFlight {
    version: u64,
    last_event: Option<Uuid>,
    settled: watch::Receiver<Option<bool>>,
    /// Set once an append of this chain (it, or one it follows) is refused: every later append of
    /// the chain was decided after it and will be void, so none of them can move the head.
    broken: Arc<AtomicBool>,
    /// The head an append refused before it was sent, right behind this one, would have made:
    /// what is decided after it is refused too. This append stays the aggregate's append in
    /// flight, so what is decided after it (not after the refused one) still follows it.
    refused: Option<(u64, Option<Uuid>)>,
}

impl InFlight {
    fn new((version, last_event): (u64, Option<Uuid>), settled: watch::Receiver<Option<bool>>, broken: Arc<AtomicBool>) -> Self {
        InFlight {
            version,
            last_event,
            settled,
            broken,
            refused: None,
        }
    }

    /// Whether an append that may still move the aggregate's head is in flight.
    fn pending(&self) -> bool {
        self.settled.has_changed().is_ok() && !self.is_broken()
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Whether `request` was decided on the state this append in flight makes.
    fn continued_by(&self, request: &AppendRequest) -> bool {
        request.expected_version == self.version && request.expected_last_event.is_none_or(|id| Some(id) == self.last_event)
    }

    /// Whether `request` names this append's last event as the one it was decided after (an
    /// actor's append always names one): exact, where a version alone is not (another writer's
    /// commit may hold the same version).
    fn named_by(&self, request: &AppendRequest) -> bool {
        names(request, self.version, self.last_event)
    }

    /// Whether `request` names the head of an append refused right behind this one.
    fn refused_named_by(&self, request: &AppendRequest) -> bool {
        self.refused
            .is_some_and(|(version, last_event)| names(request, version, last_event))
    }
}

fn names(request: &AppendRequest, version: u64, last_event: Option<Uuid>) -> bool {
    request.expected_version == version && request.expected_last_event.is_some_and(|id| Some(id) == last_event)
}

/// Answers an append refused right behind `ahead`, an append still in flight on the same
/// aggregate, once `ahead` is answered. `refusal` is `None` for an append decided after a refused
/// one. That one, and a claim refused when `ahead` is not in force, are told as stale, with the
/// version the aggregate is at then (decided after `ahead`'s answer, its version check, which
/// comes before its claims, would have refused it); any other refusal stands. (A claim on a key that the append ahead
/// deletes from the index is refused too, where the embedded backend would take it: the service
/// never deletes a claimed key, and the model the backends are tested against never does.)
async fn answer_behind(
    shared: Arc<Shared>,
    mut ahead: watch::Receiver<Option<bool>>,
    request: (String, u64),
    refusal: Option<AppendError>,
    reply: Reply,
) {
    let _ = ahead.changed().await;
    let in_force = ahead.borrow().unwrap_or(false);
    let error = match refusal {
        None => stale(&shared, request),
        Some(AppendError::UniqueViolation(_)) if !in_force => stale(&shared, request),
        Some(other) => other,
    };
    let _ = reply.send(Err(error));
}

/// An append of `(stream, expected version)` refused as stale, with the version this node's
/// view holds.
fn stale(shared: &Shared, (stream_id, expected): (String, u64)) -> AppendError {
    let actual = shared.mirror.version_of(&stream_id).unwrap_or(0);
    AppendError::WrongExpectedVersion {
        stream_id,
        expected,
        actual,
    }
}

/// Takes appends in submission order and publishes them in that order (JetStream stores one
/// connection's publishes in the order sent), then answers each once acknowledged.
///
/// An append that continues this node's append in flight on the same aggregate (an actor
/// pipelining a hot number's commands) is published at once, right behind it, without the
/// per-subject check: its sequence is not known yet, and the check is not what keeps it
/// correct. Every node's view applies the log's rule (a commit that does not extend its
/// aggregate's head is void) in sequence order, so the follower is in force exactly when the
/// append it follows is, and lands right after it. Once an append of such a chain is refused,
/// the rest of the chain is doomed: an append that continues it is refused at once, and it no
/// longer holds up a fresh append to the aggregate (the actor's, decided on the state it
/// re-read), which is published without the per-subject check while the broken chain's appends
/// are still on their way, so that it lands after them. Nothing else in this loop waits on the
/// network in the usual case: the head an append expects is taken from what this node knows (its
/// own appends, its view of the log).
/// An append refused right behind the append in flight (a claim taken) is answered once that
/// one is, as it would have been decided after it; the one in flight stays the aggregate's, so
/// an append decided without the refused one still follows it.
/// An append decided on some other state of an aggregate with an append in flight (rare: a new
/// actor while an old one finishes) waits for it.
pub(super) async fn write_loop(shared: Arc<Shared>, mut jobs: mpsc::Receiver<Job>, done: oneshot::Sender<()>) {
    let mut in_flight: HashMap<String, InFlight> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut taken: u64 = 0;
    while let Some(job) = jobs.recv().await {
        taken += 1;
        if taken.is_multiple_of(1024) {
            in_flight.retain(|_, f| f.pending());
        }
        while tasks.try_join_next().is_some() {}
        let stream_id = job.request.stream_id.clone();
        let expected = job.request.expected_version;
        // The head the append makes (a prepared append numbers its events from the expected
        // version; a fallback has the same versions and ids).
        let head = (
            expected + job.request.events.len() as u64,
            job.request.events.last().map(|e| e.event_id),
        );
        let current = in_flight.get_mut(&stream_id);
        if let Some(f) = current {
            if f.is_broken() && f.named_by(&job.request) {
                // Decided after an append the log refused: the state it was decided on will
                // never exist. Refused at once, without reading the head from the stream leader
                // (which would hold up every append behind it in this loop).
                let _ = job.reply.send(Err(stale(&shared, (stream_id, expected))));
                continue;
            }
            if f.refused_named_by(&job.request) {
                // Decided after an append refused right behind the one in flight: refused too,
                // told once that one is answered.
                f.refused = Some(head);
                tasks.spawn(answer_behind(
                    shared.clone(),
                    f.settled.clone(),
                    (stream_id, expected),
                    None,
                    job.reply,
                ));
                continue;
            }
        }
        let current = in_flight.get(&stream_id);
        let pending = current.filter(|f| f.pending());
        let follows = match pending {
            None => None,
            Some(f) if f.continued_by(&job.request) => Some(f.last_event),
            Some(f) => {
                // Decided on another state than the one in flight will make (rare: a new actor
                // while an old one finishes): checked once that one is answered, still in order.
                let mut settled = f.settled.clone();
                let _ = settled.changed().await;
                None
            }
        };
        // Behind this node's chain on the aggregate that broke, while appends of it are still on
        // their way to the log: they will be stored, void, after the last message this node knows
        // of, so the server would refuse a fresh append naming that one, and the append, sent
        // again, would land behind its own followers (published right behind it meanwhile) and
        // take them down with it. Published without the per-subject check it lands after them, in
        // order, and the log's rule decides it.
        let checked = follows.is_none() && !current.is_some_and(|f| f.is_broken() && f.settled.has_changed().is_ok());
        // A follower belongs to the chain it follows (and is answered after the append ahead of
        // it); any other append starts a chain.
        let (broken, ahead) = match (&follows, pending) {
            (Some(_), Some(f)) => (f.broken.clone(), Some(f.settled.clone())),
            _ => (Arc::new(AtomicBool::new(false)), None),
        };
        let (settled, watch) = watch::channel(None);
        match start(&shared, job, follows, checked).await {
            Ok((prepared, ack, reply)) => {
                let shared = shared.clone();
                let chain = broken.clone();
                tasks.spawn(async move {
                    let answer = complete(&shared, prepared, ack).await;
                    if answer.is_err() {
                        chain.store(true, Ordering::SeqCst);
                    }
                    // Settled before answered: the caller's next append is then checked as usual.
                    settled.send_replace(Some(answer.is_ok()));
                    drop(settled);
                    let _ = reply.send(answer);
                });
                in_flight.insert(stream_id, InFlight::new(head, watch, broken));
            }
            Err((error, reply)) => match (ahead, in_flight.get_mut(&stream_id)) {
                // Refused right behind an append in flight (its claim is taken, say): whether the
                // refusal stands depends on that append, answered later. It stays the aggregate's
                // append in flight: an append decided after it, not after this one, follows it.
                (Some(ahead), Some(f)) => {
                    f.refused = Some(head);
                    tasks.spawn(answer_behind(shared.clone(), ahead, (stream_id, expected), Some(error), reply));
                }
                // Refused before it was sent: whatever is decided after it is doomed. It stands
                // in for the aggregate's append in flight, settled and broken, so an append
                // continuing it is refused at once.
                _ => {
                    let _ = reply.send(Err(error));
                    in_flight.insert(stream_id, InFlight::new(head, watch, Arc::new(AtomicBool::new(true))));
                }
            },
        }
    }
    while tasks.join_next().await.is_some() {}
    let _ = done.send(());
}

type Reply = oneshot::Sender<Result<Vec<EventEnvelope>, AppendError>>;

/// Prepares and publishes an append; gives back its refusal, unanswered, if it is refused
/// before being sent.
async fn start(
    shared: &Shared,
    job: Job,
    follows: Option<Option<Uuid>>,
    checked: bool,
) -> Result<(Prepared, jetstream::context::PublishAckFuture, Reply), (AppendError, Reply)> {
    match prepare(shared, job.request, follows, checked).await {
        Err(e) => Err((e, job.reply)),
        Ok(prepared) => match publish(shared, &prepared).await {
            Err(e) => {
                prepared.release_claims(shared).await;
                Err((AppendError::Storage(backend(e)), job.reply))
            }
            Ok(ack) => Ok((prepared, ack, job.reply)),
        },
    }
}

/// An append ready to publish: its message, and the claims reserved for it.
struct Prepared {
    stream_id: String,
    subject: String,
    message_id: String,
    /// The sequence of the aggregate's last message, checked by the server; `None` for an
    /// append right behind this node's append in flight on it.
    expected_sequence: Option<u64>,
    payload: Bytes,
    headers: HeaderMap,
    events: Vec<EventEnvelope>,
    /// The events in force instead if the commit falls back (see [`crate::store::Fallback`]).
    fallback_events: Option<Vec<EventEnvelope>>,
    /// The claimed keys reserved for it, with their reservations' revisions.
    reserved: Vec<(Vec<u8>, u64)>,
    /// Claimed keys this append deletes, with the stream that held each: their reservations
    /// are freed once it is stored.
    freed: Vec<(String, Option<String>)>,
    snapshot: Option<Snapshot>,
    expected_last_event: Option<Uuid>,
    /// The counters this append names limits for (for the refusal's message).
    limited: Vec<String>,
}

impl Prepared {
    /// Releases the reservations of an append the log refused, except of the keys the log holds
    /// (another commit claimed them first): a key's reservation stands for its claim in force,
    /// and with the bucket's entry gone, every later claim of the key would be published and
    /// voided again and again instead of refused up front.
    async fn release_claims(&self, shared: &Shared) {
        for (key, revision) in &self.reserved {
            if shared.mirror.index_get(key).is_none() {
                claims::release(shared, &wire::token(key), *revision).await;
            }
        }
    }

    /// A key of this append that the log holds: why a commit at the expected version was void.
    fn taken_key(&self, shared: &Shared) -> Option<String> {
        self.reserved
            .iter()
            .find(|(key, _)| shared.mirror.index_get(key).is_some())
            .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
    }
}

/// `follows`: the append continues this node's append in flight on the aggregate, whose last
/// event is given. `checked`: whether any other append is published with the per-subject check.
async fn prepare(shared: &Shared, request: AppendRequest, follows: Option<Option<Uuid>>, checked: bool) -> Result<Prepared, AppendError> {
    let stream_id = request.stream_id.clone();
    let expected = request.expected_version;
    let wrong = |actual: u64| AppendError::WrongExpectedVersion {
        stream_id: stream_id.clone(),
        expected,
        actual,
    };
    // The sequence of the commit at the expected version: from what this node knows, else from
    // the stream leader. A version is written once, so a known (version, sequence) pair is a fact.
    let (expected_sequence, after) = if let Some(after) = follows {
        (None, after)
    } else if expected == 0 {
        // A creation: JetStream checks that the subject is empty; a stream this node already
        // knows of is refused at once.
        let known = shared.known(&stream_id).map_or(0, |k| k.version);
        let seen = shared.mirror.version_of(&stream_id).unwrap_or(0);
        if known.max(seen) > 0 {
            return Err(wrong(known.max(seen)));
        }
        (Some(0), None)
    } else {
        let viewed = shared.viewed_head(&stream_id);
        let head = match shared.known(&stream_id).filter(|k| k.version == expected) {
            Some(k) => k,
            None => match viewed {
                // What this node's view holds is a fact too (a version is written once), though
                // perhaps not the latest: a newer message makes the server refuse the expected
                // sequence, and `complete` then reads the head from the leader. Either way no
                // round trip holds up this loop.
                Some(k) if k.version >= expected => k,
                _ => shared.head(&stream_id).await.map_err(AppendError::Storage)?.0,
            },
        };
        if head.version != expected {
            return Err(wrong(head.version));
        }
        if request.expected_last_event.is_some() && request.expected_last_event != head.last_event {
            return Err(wrong(head.version));
        }
        // Void messages may follow the head's commit on the subject (they change no version):
        // the server checks the subject's last message, the latest of which the view may know.
        let sequence = match viewed {
            Some(v) if v.version == head.version && v.last_event == head.last_event => head.sequence.max(v.sequence),
            _ => head.sequence,
        };
        (checked.then_some(sequence), head.last_event)
    };
    let (account, region) = (request.meta.account.clone(), request.meta.region.clone());
    let fallback = request.fallback.filter(|f| f.fits(&request.events));
    let envelopes = |pending: Vec<crate::store::PendingEvent>, command_input: &serde_json::Value| -> Vec<EventEnvelope> {
        pending
            .into_iter()
            .enumerate()
            .map(|(i, p)| EventEnvelope {
                event_id: p.event_id,
                stream_id: stream_id.clone(),
                version: expected + 1 + i as u64,
                position: 0,
                event_type: p.event_type,
                schema_version: CURRENT_SCHEMA_VERSION,
                timestamp_ms: request.meta.timestamp_ms,
                account: account.clone(),
                region: region.clone(),
                request_id: request.meta.request_id.clone(),
                command_id: request.meta.command_id,
                command: request.meta.command.clone(),
                command_input: command_input.clone(),
                payload: p.payload,
                hash: String::new(),
            })
            .collect()
    };
    let events = envelopes(request.events, &request.meta.command_input);
    let fallback = fallback.map(|f| wire::StoredFallback {
        limit: f.limit,
        events: envelopes(f.events, &f.command_input),
    });
    let Some(last) = events.last() else {
        return Err(AppendError::Storage(other_error("an append without events".into())));
    };
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_STREAM, stream_id.as_str());
    headers.insert(HEADER_VERSION, last.version.to_string().as_str());
    headers.insert(HEADER_LAST_EVENT, last.event_id.to_string().as_str());
    headers.insert(HEADER_EVENTS, events.len().to_string().as_str());
    let commit = Commit {
        events,
        index_ops: Vec::new(),
        index: request.index_ops.iter().map(IndexChange::from).collect(),
        claims: request
            .unique_claims
            .iter()
            .map(|(k, v)| (hex::encode(k), hex::encode(v)))
            .collect(),
        index_layout: shared.layout.load(Ordering::SeqCst),
        after,
        limits: request
            .counter_limits
            .iter()
            .map(|l| (hex::encode(&l.key), l.at_least, l.at_most))
            .collect(),
        fallback,
        snapshotted: Some(request.snapshot.is_some()),
    };
    let payload = serde_json::to_vec(&commit).map_err(|e| AppendError::Storage(backend(e)))?;
    // The events go back out of the commit once it is written: no copy of them is made.
    let (events, fallback_events) = (commit.events, commit.fallback.map(|f| f.events));
    let freed = request
        .index_ops
        .iter()
        .filter_map(|op| match op {
            IndexOp::Delete(k) if shared.mirror.is_claimed(k) => Some((
                wire::token(k),
                shared
                    .mirror
                    .index_get(k)
                    .map(|holder| String::from_utf8_lossy(&holder).into_owned()),
            )),
            _ => None,
        })
        .collect();
    let mut prepared = Prepared {
        subject: shared.subject(&stream_id),
        stream_id: stream_id.clone(),
        message_id: Uuid::new_v4().to_string(),
        expected_sequence,
        payload: payload.into(),
        headers,
        events,
        fallback_events,
        reserved: Vec::new(),
        freed,
        snapshot: request.snapshot,
        expected_last_event: request.expected_last_event,
        limited: request
            .counter_limits
            .iter()
            .map(|l| String::from_utf8_lossy(&l.key).into_owned())
            .collect(),
    };
    let mut keys: Vec<&Vec<u8>> = request.unique_claims.iter().map(|(k, _)| k).collect();
    keys.sort();
    // A key claimed twice by one append is refused, as the embedded backend refuses it (and
    // the in-force rule voids such a commit).
    let mut refusal = keys
        .windows(2)
        .find(|w| w[0] == w[1])
        .map(|w| AppendError::UniqueViolation(String::from_utf8_lossy(w[0]).into_owned()));
    if refusal.is_none() {
        for key in keys {
            match claims::reserve(shared, key, &prepared.stream_id).await {
                Ok(revision) => prepared.reserved.push((key.clone(), revision)),
                Err(e) => {
                    prepared.release_claims(shared).await;
                    refusal = Some(e);
                    break;
                }
            }
        }
    }
    if let Some(e) = refusal {
        // The append is refused either way; a stale one is told so first, as the embedded
        // backend does (its version check comes before its claims). Right behind an append in
        // flight, the head is not known yet: the write loop tells once it is.
        if follows.is_some() {
            return Err(e);
        }
        if let Ok((head, _)) = shared.head(&prepared.stream_id).await {
            if head.version != expected {
                return Err(wrong(head.version));
            }
        }
        return Err(e);
    }
    Ok(prepared)
}

fn message_of(p: &Prepared) -> jetstream::message::PublishMessage {
    let mut message = jetstream::message::PublishMessage::build()
        .payload(p.payload.clone())
        .headers(p.headers.clone())
        .message_id(&p.message_id);
    if let Some(sequence) = p.expected_sequence {
        message = message.expected_last_subject_sequence(sequence);
    }
    message
}

async fn publish(shared: &Shared, p: &Prepared) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
    shared.js.send_publish(p.subject.clone(), message_of(p)).await
}

/// Waits for the acknowledgement (resending the same message id while the cluster elects a new
/// leader), then finishes the append: frees the claims it deleted, stores its snapshot, and
/// answers with its events placed in the feed once this node's view has them and holds the
/// commit in force.
async fn complete(shared: &Shared, mut p: Prepared, ack: jetstream::context::PublishAckFuture) -> Result<Vec<EventEnvelope>, AppendError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let expected = p.events[0].version - 1;
    let started = std::time::Instant::now();
    let mut outcome = ack.await;
    let mut moved = 0;
    let mut resent = false;
    let sequence = loop {
        match outcome {
            Ok(ack) => break ack.sequence,
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // Another message reached the subject: perhaps this very commit, sent before an
                // acknowledgement was lost and not recognised as a duplicate by a new leader.
                let head = shared.head(&p.stream_id).await.map_err(AppendError::Storage)?.0;
                if resent {
                    if let Some(sequence) = landed(shared, &p).await.map_err(AppendError::Storage)? {
                        break sequence;
                    }
                }
                // If it was a void one, the aggregate is still where this append expects it:
                // send again after the new last message.
                let same = head.version == expected && (p.expected_last_event.is_none() || p.expected_last_event == head.last_event);
                if !same || moved >= 8 {
                    p.release_claims(shared).await;
                    return Err(AppendError::WrongExpectedVersion {
                        stream_id: p.stream_id.clone(),
                        expected,
                        actual: head.version,
                    });
                }
                moved += 1;
                p.expected_sequence = Some(head.sequence);
                outcome = match publish(shared, &p).await {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
            }
            Err(e) if started.elapsed() < RESEND_FOR => {
                tracing::warn!(stream = %p.stream_id, error = %e, "append not acknowledged; sending it again");
                resent = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                outcome = match publish(shared, &p).await {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
            }
            Err(e) => {
                // Not acknowledged in time: unless the log shows it, whether it is stored is
                // unknown, so its reservations stay (they are taken over later if the log never
                // shows them used).
                if shared.head(&p.stream_id).await.is_ok() {
                    if let Ok(Some(sequence)) = landed(shared, &p).await {
                        break sequence;
                    }
                }
                return Err(AppendError::Storage(backend(e)));
            }
        }
    };
    shared.acknowledged.fetch_max(sequence, Ordering::SeqCst);
    shared.mirror.wait_for(sequence).await.map_err(AppendError::Storage)?;
    match shared.mirror.outcome(sequence) {
        mirror::Outcome::InForce => {}
        mirror::Outcome::Void => {
            // A resent append with no per-subject check can be stored twice (a new leader that
            // did not know the first copy): the second is void, the first is the answer.
            if resent {
                if let Some(first) = landed(shared, &p).await.map_err(AppendError::Storage)? {
                    return finish(shared, p, first).await;
                }
            }
            p.release_claims(shared).await;
            let actual = shared.mirror.version_of(&p.stream_id).unwrap_or(0);
            // Void though at the version it expected: a key it claims is held by a commit
            // before it (two reservations of the key both went through). Taken, as the
            // embedded backend says, so the caller moves on rather than tries again.
            if actual == expected {
                if let Some(key) = p.taken_key(shared) {
                    return Err(AppendError::UniqueViolation(key));
                }
            }
            return Err(AppendError::WrongExpectedVersion {
                stream_id: p.stream_id.clone(),
                expected,
                actual,
            });
        }
        mirror::Outcome::OverLimit(which) => {
            p.release_claims(shared).await;
            return Err(AppendError::LimitReached(p.limited.get(which).cloned().unwrap_or_default()));
        }
        other => {
            return Err(AppendError::Storage(other_error(format!(
                "the commit stored at sequence {sequence} is {other:?} in this node's view"
            ))))
        }
    }
    finish(shared, p, sequence).await
}

/// Finishes an append the log holds in force at `sequence`: frees the claims it deleted, stores
/// its snapshot, and places its events in the feed.
async fn finish(shared: &Shared, mut p: Prepared, sequence: u64) -> Result<Vec<EventEnvelope>, AppendError> {
    // A fallback has the same versions and ids: the same head either way.
    let last = p.events.last().map(|e| (e.version, e.event_id)).unwrap_or_default();
    shared.remember(
        &p.stream_id,
        KnownHead {
            version: last.0,
            last_event: Some(last.1),
            sequence,
        },
    );
    if shared.mirror.fell_back(sequence) {
        // In force by its fallback's events: none of the append's claims, frees or snapshot.
        let events = p.fallback_events.take().unwrap_or_default();
        p.release_claims(shared).await;
        return shared.mirror.place(sequence, events).map_err(AppendError::Storage);
    }
    for (key, holder) in &p.freed {
        claims::free(shared, key, holder.as_deref()).await;
    }
    if let Some(snapshot) = p.snapshot.clone() {
        let stored = StoredSnapshot { snapshot, sequence };
        // A snapshot is a cache: failing to keep one loses nothing.
        if let Err(e) = super::snapshots::keep(&shared.js, &shared.snapshots, &shared.names.snapshots, &p.stream_id, &stored).await {
            tracing::warn!(stream = %p.stream_id, error = %crate::error_chain(&e), "cannot store a snapshot");
        }
    }
    match shared.mirror.recent_commit(sequence) {
        Some(placed) => Ok(placed),
        None => shared.mirror.place(sequence, p.events).map_err(AppendError::Storage),
    }
}

/// The sequence of this append's commit if the log holds it in force (an earlier send of it was
/// stored though its acknowledgement was lost). The caller has just read the stream's head, so
/// this node's view holds every commit of it.
async fn landed(shared: &Shared, p: &Prepared) -> Result<Option<u64>, StoreError> {
    let (Some(first), Some(last)) = (p.events.first(), p.events.last()) else {
        return Ok(None);
    };
    let Some(sequence) = shared.mirror.commit_starting_at(&p.stream_id, first.version) else {
        return Ok(None);
    };
    let message = shared.fetch(vec![sequence]).await?;
    let ours = message
        .first()
        .and_then(|m| header(Some(&m.headers), HEADER_LAST_EVENT))
        .is_some_and(|id| id == last.event_id.to_string());
    Ok(ours.then_some(sequence))
}
