//! Derived indexes, computed from each state change and committed atomically with its events.
//!
//! Keys of the `index` tree (all derivable from the log, so [`rebuild_index`] can recreate them):
//! - `v/{account}/{region}/{phone-number|pool}/{id}` → JSON of the live resource (Describe views;
//!   removed when the resource is released or deleted);
//! - `t/{account}/{region}/{operation}/{client token}` → resource id (idempotent creation);
//! - `n/{E.164 number}` → phone number id, a unique claim: a number is never handed out twice;
//! - `c/{account}/{region}/{phone-number|pool}` → how many are live (quotas read it).

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;

use crate::domain::phone_number::PhoneNumberState;
use crate::domain::pool::PoolState;
use crate::domain::types::NumberStatus;
use crate::domain::{event_from_parts, Aggregate, Command, CommandMeta, ResourceKind, Scope};
use crate::store::{decode_counter, EventEnvelope, EventStore, IndexOp, PendingEvent, StoreError};

/// Key of a live resource's view.
pub fn view_key(scope: &Scope, kind: ResourceKind, id: &str) -> Vec<u8> {
    let mut k = view_prefix(scope, kind);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of all views of one kind in one scope.
pub fn view_prefix(scope: &Scope, kind: ResourceKind) -> Vec<u8> {
    format!("v/{}/{}/{}/", scope.account, scope.region, kind.arn_segment()).into_bytes()
}

/// Layout version of the index; a log whose index was built with another one is re-indexed on
/// start. 2: live-resource counters.
pub const INDEX_LAYOUT_VERSION: u64 = 2;

/// Key of the counter of live resources of one kind in one scope (quotas read it).
pub fn live_count_key(scope: &Scope, kind: ResourceKind) -> Vec<u8> {
    format!("c/{}/{}/{}", scope.account, scope.region, kind.arn_segment()).into_bytes()
}

/// +1 when a resource comes to life, -1 when it goes.
fn live_count_op(scope: &Scope, kind: ResourceKind, was_live: bool, is_live: bool) -> Option<IndexOp> {
    match (was_live, is_live) {
        (false, true) => Some(IndexOp::Add(live_count_key(scope, kind), 1)),
        (true, false) => Some(IndexOp::Add(live_count_key(scope, kind), -1)),
        _ => None,
    }
}

/// Key of an idempotency token.
pub fn token_key(scope: &Scope, operation: &str, token: &str) -> Vec<u8> {
    format!("t/{}/{}/{}/{}", scope.account, scope.region, operation, token).into_bytes()
}

/// Key of the claim on an E.164 number.
pub fn number_claim_key(e164: &str) -> Vec<u8> {
    format!("n/{e164}").into_bytes()
}

/// An aggregate whose state changes feed the index.
pub trait Projected: Aggregate {
    /// Index changes for a transition from `before` to `after`.
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp>;
    /// Keys that must be free for the transition to happen, with their values.
    fn unique_claims(_before: &Self, _after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
}

fn view_ops<T: serde::Serialize>(key: Vec<u8>, live: bool, value: &T) -> Vec<IndexOp> {
    if !live {
        return vec![IndexOp::Delete(key)];
    }
    match serde_json::to_vec(value) {
        Ok(bytes) => vec![IndexOp::Put(key, bytes)],
        Err(e) => {
            // Serializing our own plain structs cannot fail; if it ever did, a stale view is
            // better than a lost event, and a rebuild repairs it.
            tracing::error!(error = %e, "cannot serialize view");
            vec![]
        }
    }
}

impl Projected for PhoneNumberState {
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp> {
        let Some(n) = after.0.as_ref().filter(|_| before != after) else {
            return vec![];
        };
        let scope = Scope::new(&n.account, &n.region);
        let live = n.status != NumberStatus::Deleted;
        let was_live = before.0.as_ref().is_some_and(|b| b.status != NumberStatus::Deleted);
        let mut ops: Vec<IndexOp> = live_count_op(&scope, Self::KIND, was_live, live).into_iter().collect();
        ops.extend(view_ops(view_key(&scope, Self::KIND, &n.phone_number_id), live, n));
        if before.0.is_none() {
            if let Some(token) = &n.client_token {
                ops.push(IndexOp::Put(
                    token_key(&scope, "RequestPhoneNumber", token),
                    n.phone_number_id.clone().into_bytes(),
                ));
            }
        }
        ops
    }

    fn unique_claims(before: &Self, after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match (&before.0, &after.0) {
            (None, Some(n)) => vec![(number_claim_key(&n.phone_number), n.phone_number_id.clone().into_bytes())],
            _ => vec![],
        }
    }
}

impl Projected for PoolState {
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp> {
        let Some(p) = after.0.as_ref().filter(|_| before != after) else {
            return vec![];
        };
        let scope = Scope::new(&p.account, &p.region);
        let was_live = before.0.as_ref().is_some_and(|b| !b.deleted);
        let mut ops: Vec<IndexOp> = live_count_op(&scope, Self::KIND, was_live, !p.deleted).into_iter().collect();
        ops.extend(view_ops(view_key(&scope, Self::KIND, &p.pool_id), !p.deleted, p));
        if before.0.is_none() {
            if let Some(token) = &p.client_token {
                ops.push(IndexOp::Put(token_key(&scope, "CreatePool", token), p.pool_id.clone().into_bytes()));
            }
        }
        ops
    }
}

/// Domain events as the writer takes them: type name and payload apart, each with a fresh id.
pub fn pending_events<E: serde::Serialize>(events: &[E]) -> Result<Vec<PendingEvent>, serde_json::Error> {
    events
        .iter()
        .map(|e| {
            let (event_type, payload) = crate::domain::event_to_parts(e)?;
            Ok(PendingEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type,
                payload,
            })
        })
        .collect()
}

/// Decodes a stored event (of any schema version) into today's event type.
pub fn decode_event<E: DeserializeOwned>(envelope: &EventEnvelope) -> Result<E, StoreError> {
    let payload =
        crate::upcast::upcast(&envelope.event_type, envelope.schema_version, &envelope.payload).map_err(|e| StoreError::Corrupt {
            key: format!("{}@{}", envelope.stream_id, envelope.version),
            message: e.to_string(),
        })?;
    event_from_parts(&envelope.event_type, &payload).map_err(|e| StoreError::Corrupt {
        key: format!("{}@{}", envelope.stream_id, envelope.version),
        message: format!("cannot decode {}: {e}", envelope.event_type),
    })
}

/// Layout version of stored snapshots; a snapshot of another version is ignored (full replay).
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// A stored snapshot: the state right after `version`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapshotRecord {
    pub version: u64,
    pub schema_version: u32,
    pub state: serde_json::Value,
}

impl SnapshotRecord {
    pub fn of<A: Aggregate>(state: &A, version: u64) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&SnapshotRecord {
            version,
            schema_version: SNAPSHOT_SCHEMA_VERSION,
            state: serde_json::to_value(state)?,
        })
    }
}

/// A stream's current state and version: its latest usable snapshot plus the events after it.
/// A snapshot that cannot be read (other layout, newer than the log) is skipped, never trusted:
/// snapshots are a cache. Returns how many events were replayed.
pub fn load_state<A: Aggregate>(store: &EventStore, stream_id: &str) -> Result<LoadedState<A>, StoreError> {
    let (head, last_event) = store.stream_head(stream_id)?;
    let mut state = A::default();
    let mut version = 0;
    if let Some(bytes) = store.snapshot(stream_id)? {
        let usable = serde_json::from_slice::<SnapshotRecord>(&bytes)
            .ok()
            .filter(|s| s.schema_version == SNAPSHOT_SCHEMA_VERSION && s.version <= head)
            .and_then(|s| serde_json::from_value::<A>(s.state).ok().map(|a| (a, s.version)));
        match usable {
            Some((s, v)) => {
                state = s;
                version = v;
            }
            None => tracing::warn!(stream = stream_id, "ignoring an unusable snapshot; replaying the whole stream"),
        }
    }
    let tail = store.read_stream(stream_id, version + 1)?;
    let replayed = tail.len();
    for e in &tail {
        if e.version != version + 1 {
            return Err(StoreError::Corrupt {
                key: format!("{stream_id}@{}", e.version),
                message: format!("expected version {}", version + 1),
            });
        }
        state = state.evolve(&decode_event::<A::Event>(e)?);
        version = e.version;
    }
    Ok(LoadedState {
        state,
        version,
        last_event: tail.last().map(|e| e.event_id).or(last_event),
        replayed,
    })
}

/// A stream's state as [`load_state`] rebuilt it.
pub struct LoadedState<A> {
    pub state: A,
    pub version: u64,
    /// Id of the stream's last event (what the next append expects).
    pub last_event: Option<uuid::Uuid>,
    /// Events replayed after the snapshot.
    pub replayed: usize,
}

/// Rebuilds state by replaying envelopes of one stream.
pub fn replay<A: Aggregate>(envelopes: &[EventEnvelope]) -> Result<A, StoreError> {
    let mut state = A::default();
    for envelope in envelopes {
        let event: A::Event = decode_event(envelope)?;
        state = state.evolve(&event);
    }
    Ok(state)
}

/// The events one append wrote (one executed command), and that command when its input was
/// recorded: what the audit re-check and the load-test checker decide again.
pub struct RecordedCommand<'a, A: Aggregate> {
    pub events: Vec<&'a EventEnvelope>,
    pub command: Option<Command<A::Action>>,
}

/// Splits a stream's envelopes (in version order) into its recorded commands.
pub fn recorded_commands<'a, A: Aggregate>(envelopes: impl IntoIterator<Item = &'a EventEnvelope>) -> Vec<RecordedCommand<'a, A>> {
    let mut out: Vec<RecordedCommand<'a, A>> = Vec::new();
    for e in envelopes {
        match out.last_mut() {
            Some(last) if last.events[0].command_id == e.command_id => last.events.push(e),
            _ => {
                let command = serde_json::from_value::<A::Action>(e.command_input.clone())
                    .ok()
                    .map(|action| Command {
                        meta: CommandMeta {
                            request_id: e.request_id.clone(),
                            scope: Scope::new(&e.account, &e.region),
                            at_ms: e.timestamp_ms,
                            operation: e.command.split('/').next().unwrap_or_default().to_string(),
                        },
                        target: e.stream_id.clone(),
                        action,
                    });
                out.push(RecordedCommand { events: vec![e], command });
            }
        }
    }
    out
}

/// The aggregate kind a stream id belongs to.
pub fn kind_of_stream(stream_id: &str) -> Option<ResourceKind> {
    [ResourceKind::PhoneNumber, ResourceKind::Pool]
        .into_iter()
        .find(|k| k.is_id(stream_id))
}

/// Folds the whole feed into the index it implies, and writes it in place of the current one.
pub fn rebuild_index(store: &EventStore) -> Result<usize, StoreError> {
    let mut numbers: HashMap<String, PhoneNumberState> = HashMap::new();
    let mut pools: HashMap<String, PoolState> = HashMap::new();
    let mut index: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let chunk = store.read_feed(after, 4096)?;
        let Some(last) = chunk.last() else { break };
        after = last.position;
        for envelope in &chunk {
            match kind_of_stream(&envelope.stream_id) {
                Some(ResourceKind::PhoneNumber) => step(&mut numbers, &mut index, envelope)?,
                Some(ResourceKind::Pool) => step(&mut pools, &mut index, envelope)?,
                None => {
                    return Err(StoreError::Corrupt {
                        key: envelope.stream_id.clone(),
                        message: "unknown stream kind".into(),
                    })
                }
            }
        }
    }
    let count = index.len();
    store.replace_index(index, INDEX_LAYOUT_VERSION)?;
    Ok(count)
}

fn step<A: Projected>(
    states: &mut HashMap<String, A>,
    index: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    envelope: &EventEnvelope,
) -> Result<(), StoreError> {
    let before = states.remove(&envelope.stream_id).unwrap_or_default();
    let event: A::Event = decode_event(envelope)?;
    let after = before.clone().evolve(&event);
    for (k, v) in A::unique_claims(&before, &after) {
        index.insert(k, v);
    }
    for op in A::index_ops(&before, &after) {
        match op {
            IndexOp::Put(k, v) => {
                index.insert(k, v);
            }
            IndexOp::Delete(k) => {
                index.remove(&k);
            }
            IndexOp::Add(k, delta) => {
                let current = decode_counter(index.get(&k).map(Vec::as_slice));
                index.insert(k, (current + delta).to_be_bytes().to_vec());
            }
        }
    }
    states.insert(envelope.stream_id.clone(), after);
    Ok(())
}
