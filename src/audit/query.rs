//! Read-only questions about the log: a stream's history, the global feed, the state at a version
//! or time (rebuilt with the actors' own `evolve`), and a step-by-step replay with the fields each
//! event changed and the state each refusal saw.

use std::collections::BTreeMap;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::replay_resume::ReplayResumes;
use super::AuditError;
use crate::codec::{decode_event, kind_of_stream};
use crate::domain::opt_out_list::{OptOutListEvent, OptOutListState};
use crate::domain::phone_number::PhoneNumberState;
use crate::domain::pool::PoolState;
use crate::domain::sender_id::SenderIdState;
use crate::domain::{Aggregate, ResourceKind, Scope};
use crate::store::{EventEnvelope, EventStore};

/// Largest page of events one call returns.
pub const MAX_LIMIT: usize = 10_000;
/// Page size when no limit is given.
pub const DEFAULT_LIMIT: usize = 100;

/// A time given in epoch seconds (fractions allowed), as milliseconds; `name` is the parameter.
pub fn epoch_ms(name: &str, value: &str) -> Result<u64, AuditError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok((s * 1000.0).round() as u64),
        _ => Err(AuditError::BadParameter {
            name: name.into(),
            message: format!("{value:?} is not a time in epoch seconds"),
        }),
    }
}

/// A page size as asked (`Limit`), checked against [`MAX_LIMIT`].
pub fn page_limit(asked: Option<u64>) -> Result<usize, AuditError> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(AuditError::BadParameter {
            name: "Limit".into(),
            message: format!("{n} is not between 1 and {MAX_LIMIT}"),
        }),
    }
}

/// A page of one stream's events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamHistory {
    pub stream_id: String,
    pub events: Vec<EventEnvelope>,
    /// Version to ask for next, when more events follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_version: Option<u64>,
}

/// Which events of the global feed to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    pub event_type: Option<String>,
    pub account: Option<String>,
    pub stream_id: Option<String>,
    /// Inclusive bounds on the event timestamp, in milliseconds.
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Only messages from this origination (a phone number id, the identity the sender named,
    /// or the pool it was sent through; an ARN names its last segment).
    pub origination: Option<String>,
    /// Only messages to this destination phone number.
    pub destination: Option<String>,
    /// Only positions after this one.
    pub after: u64,
    pub limit: usize,
}

impl FeedFilter {
    pub fn matches(&self, e: &EventEnvelope) -> bool {
        e.position > self.after
            && self.event_type.as_ref().is_none_or(|t| *t == e.event_type)
            && self.account.as_ref().is_none_or(|a| *a == e.account)
            && self.stream_id.as_ref().is_none_or(|s| *s == e.stream_id)
            && self.from_ms.is_none_or(|f| e.timestamp_ms >= f)
            && self.to_ms.is_none_or(|t| e.timestamp_ms <= t)
            && self.matches_message(e)
    }

    /// The origination and destination filters, which only a sent message can pass.
    fn matches_message(&self, e: &EventEnvelope) -> bool {
        if self.origination.is_none() && self.destination.is_none() {
            return true;
        }
        if e.event_type != MESSAGE_SENT {
            return false;
        }
        let field = |name: &str| e.payload.get(name).and_then(Value::as_str);
        let origination = self.origination.as_deref().map(|o| o.rsplit('/').next().unwrap_or(o));
        origination.is_none_or(|o| {
            o == e.stream_id
                || Some(o) == field("PoolId")
                || Some(o) == field("OriginationIdentity").map(|i| i.rsplit('/').next().unwrap_or(i))
        }) && self
            .destination
            .as_deref()
            .is_none_or(|d| Some(d) == field("DestinationPhoneNumber"))
    }
}

/// The event type of an accepted message.
pub const MESSAGE_SENT: &str = "MessageSent";

/// Sent messages (from the feed, by the filter), for a user's tests to assert what their code
/// sent: each with where it came from and when.
pub async fn messages(store: &dyn EventStore, filter: &FeedFilter) -> Result<Value, AuditError> {
    let filter = FeedFilter {
        event_type: Some(MESSAGE_SENT.into()),
        ..filter.clone()
    };
    let page = feed(store, &filter).await?;
    let messages: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            let mut m = e.payload.as_object().cloned().unwrap_or_default();
            m.insert("PhoneNumberId".into(), Value::String(e.stream_id.clone()));
            m.insert("SentTimestamp".into(), Value::from(e.timestamp_secs()));
            m.insert("Position".into(), Value::from(e.position));
            m.insert("RequestId".into(), Value::String(e.request_id.clone()));
            m.insert("Account".into(), Value::String(e.account.clone()));
            Value::Object(m)
        })
        .collect();
    let mut out = Map::new();
    out.insert("Messages".into(), Value::Array(messages));
    if let Some(next) = page.next_after {
        out.insert("NextAfter".into(), Value::from(next));
    }
    Ok(Value::Object(out))
}

/// A page of the global feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FeedPage {
    pub events: Vec<EventEnvelope>,
    /// Position to pass as `After` for the next page, when the scan stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
    /// The last position looked at (matching or not), for followers.
    #[serde(skip)]
    pub scanned_to: u64,
}

/// A stream's state right after one of its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StateAt {
    pub stream_id: String,
    pub version: u64,
    pub position: u64,
    pub timestamp: f64,
    pub event_type: String,
    /// The resource's view (`crate::views`): `PhoneNumberInformation` (with `Status`,
    /// `PoolId`, `PendingPoolId`), `PoolInformation` (plus `Members`), an opt-out list's, or
    /// `SenderIdInformation` (plus `Status` and `Pools`).
    pub state: Value,
}

/// One member that an event changed, or one entry of a member that is a map (see [`diff`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FieldChange {
    /// The state's member.
    pub field: String,
    /// For a member that is a map on both sides (an opt-out list's `OptedOut`, a pool's
    /// `Members`): the entry that changed. `Before` and `After` are then that entry's values,
    /// `null` where it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub before: Value,
    pub after: Value,
}

/// One event of a replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplayStep {
    pub version: u64,
    pub position: u64,
    pub timestamp: f64,
    pub event_type: String,
    pub request_id: String,
    pub account: String,
    pub command: String,
    pub changes: Vec<FieldChange>,
    /// For a refusal: the recorded reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Value>,
    /// For a refusal: the state the command was decided on, a map member of more than
    /// [`SEEN_MAP_ENTRIES`] entries cut to the entry the refusal names (see [`seen_json`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_seen: Option<Value>,
    /// How many entries of each map member `StateSeen` leaves out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state_seen_omitted: BTreeMap<String, u64>,
}

/// A stream's replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replay {
    pub stream_id: String,
    pub steps: Vec<ReplayStep>,
    /// Version to ask for next, when more events follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_version: Option<u64>,
}

/// Resolves an id, ARN or (for a phone number) E.164 number of `kind` to a stream that exists (in any account: the audit trail is
/// the operator's view).
pub async fn resolve_stream(store: &dyn EventStore, kind: ResourceKind, id_or_arn: &str) -> Result<String, AuditError> {
    let id = if kind.is_id(id_or_arn) {
        Some(id_or_arn.to_string())
    } else if kind == ResourceKind::PhoneNumber && id_or_arn.starts_with('+') {
        // An E.164 number: the number that was given it (numbers are never handed out twice).
        let holder = store.index_get(&crate::projection::number_claim_key(id_or_arn)).await?;
        holder.map(|h| String::from_utf8_lossy(&h).into_owned())
    } else {
        // An ARN names its own scope; read it from the ARN itself.
        id_or_arn.strip_prefix("arn:").and_then(|rest| {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [_, _, region, account, _] => kind.resolve(&Scope::new(*account, *region), id_or_arn),
                _ => None,
            }
        })
    };
    match id {
        Some(id) if store.stream_head(&id).await?.version > 0 => Ok(id),
        _ => Err(AuditError::NotFound(id_or_arn.to_string())),
    }
}

/// The opt-out list called `name` in whichever account and region has one: the lookup of a
/// caller with no scope of its own (the offline audit command reads every account). Exactly one
/// list of that name (live or deleted) is its stream; several are answered with their ARNs, to
/// name one by.
pub async fn opt_out_list_named(store: &dyn EventStore, name: &str) -> Result<String, AuditError> {
    const PAGE: usize = 1024;
    let prefix = crate::projection::OPT_OUT_LIST_ALIVE_PREFIX.as_bytes();
    let (mut scopes, mut after) = (Vec::new(), None::<Vec<u8>>);
    loop {
        let page = store.index_scan(prefix, after.as_deref(), PAGE).await?;
        scopes.extend(
            page.iter()
                .filter_map(|(key, _)| crate::projection::opt_out_list_of_alive_key(key))
                .filter(|(_, listed)| listed == name)
                .map(|(scope, _)| scope),
        );
        match page.last() {
            Some((key, _)) if page.len() == PAGE => after = Some(key.clone()),
            _ => break,
        }
    }
    match scopes.as_slice() {
        [] => Err(AuditError::NotFound(name.to_string())),
        [scope] => Ok(ResourceKind::opt_out_list_id(scope, name)),
        several => {
            let arns: Vec<String> = several.iter().map(|s| s.arn(ResourceKind::OptOutList, name)).collect();
            Err(AuditError::Input(format!(
                "{} accounts or regions have an opt-out list called {name}; name one by its ARN: {}",
                arns.len(),
                arns.join(", ")
            )))
        }
    }
}

/// Events of a stream from `from_version`, at most `limit`.
pub async fn stream_history(store: &dyn EventStore, stream_id: &str, from_version: u64, limit: usize) -> Result<StreamHistory, AuditError> {
    let mut events = store.read_stream(stream_id, from_version.max(1), limit.saturating_add(1)).await?;
    let next_version = (events.len() > limit).then(|| events[limit].version);
    events.truncate(limit);
    Ok(StreamHistory {
        stream_id: stream_id.to_string(),
        events,
        next_version,
    })
}

/// Events of the global feed that pass the filter, in position order.
pub async fn feed(store: &dyn EventStore, filter: &FeedFilter) -> Result<FeedPage, AuditError> {
    let limit = filter.limit.clamp(1, MAX_LIMIT);
    let mut events = Vec::new();
    if let Some(stream) = &filter.stream_id {
        return stream_feed(store, stream, filter, limit).await;
    }
    let mut after = filter.after;
    // Scan at most this many events per call so a narrow filter cannot make one call read the
    // whole log; the caller continues from `NextAfter`.
    let mut budget = 100 * limit.max(100);
    loop {
        let chunk = store.read_feed(after, 1024).await?;
        if chunk.is_empty() {
            return Ok(FeedPage {
                events,
                next_after: None,
                scanned_to: after,
            });
        }
        for e in chunk {
            after = e.position;
            budget = budget.saturating_sub(1);
            if filter.matches(&e) {
                events.push(e);
                if events.len() == limit {
                    let more = !store.read_feed(after, 1).await?.is_empty();
                    return Ok(FeedPage {
                        events,
                        next_after: more.then_some(after),
                        scanned_to: after,
                    });
                }
            }
        }
        if budget == 0 {
            return Ok(FeedPage {
                events,
                next_after: Some(after),
                scanned_to: after,
            });
        }
    }
}

/// Events read at a time when a stream is scanned or folded: what one request holds of it, so
/// that a stream of any length is read in the memory of one chunk.
const STREAM_CHUNK: usize = 1_000;

/// Hands the events of a stream from version `from` on to `visit`, a chunk at a time, until
/// `visit` answers `false` or the stream ends.
pub(crate) async fn for_each_event(
    store: &dyn EventStore,
    stream_id: &str,
    from: u64,
    visit: impl FnMut(EventEnvelope) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    for_each_event_in(store, stream_id, from, STREAM_CHUNK, visit).await
}

/// [`for_each_event`] reading `chunk` events at a time (at most [`STREAM_CHUNK`]): a caller that
/// knows it needs few reads no more.
async fn for_each_event_in(
    store: &dyn EventStore,
    stream_id: &str,
    from: u64,
    chunk: usize,
    mut visit: impl FnMut(EventEnvelope) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    let (mut from, size) = (from.max(1), chunk.clamp(1, STREAM_CHUNK));
    loop {
        let chunk = store.read_stream(stream_id, from, size).await?;
        let (Some(last), full) = (chunk.last(), chunk.len() == size) else {
            return Ok(());
        };
        from = last.version.saturating_add(1);
        for e in chunk {
            if !visit(e)? {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// The feed narrowed to one stream: read from the stream itself, from the first of its events
/// after `filter.after`, within the same scan budget as the global feed.
async fn stream_feed(store: &dyn EventStore, stream: &str, filter: &FeedFilter, limit: usize) -> Result<FeedPage, AuditError> {
    // Positions grow with versions within a stream, so the first version after `filter.after`
    // is found by bisection: a few one-event reads, however long the stream.
    let (mut from, mut until) = (1, store.stream_head(stream).await?.version.saturating_add(1));
    if filter.after > 0 {
        while from < until {
            let mid = from + (until - from) / 2;
            match store.read_stream(stream, mid, 1).await?.first() {
                Some(e) if e.position <= filter.after => from = mid + 1,
                _ => until = mid,
            }
        }
    }
    let (mut events, mut scanned_to, mut stopped_at) = (Vec::new(), filter.after, None);
    let mut budget = 100 * limit.max(100);
    for_each_event(store, stream, from, |e| {
        scanned_to = scanned_to.max(e.position);
        budget -= 1;
        let version = e.version;
        if filter.matches(&e) {
            events.push(e);
        }
        if events.len() == limit || budget == 0 {
            stopped_at = Some(version);
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    let next_after = match stopped_at {
        Some(version) if !store.read_stream(stream, version.saturating_add(1), 1).await?.is_empty() => Some(scanned_to),
        _ => None,
    };
    Ok(FeedPage {
        events,
        next_after,
        scanned_to,
    })
}

/// What the audit tools need of an aggregate beyond the decider.
pub trait Inspect: Aggregate {
    /// The full state as JSON (`null` before the first event).
    fn state_json(&self) -> Value;
    /// The state in the API's information shape plus its status.
    fn information(&self) -> Value;

    /// The keys of the state's growing maps that `event` can change, when it changes no other
    /// entry of them; `None` when it may change any (a deletion that empties them, a creation).
    /// Lets a replay step serialize the entries its event changed instead of the whole state.
    fn keys_changed(_event: &Self::Event) -> Option<Vec<String>> {
        None
    }

    /// The state as JSON with its map members cut to `entries`, and how many entries each member
    /// cut leaves out (by member name). The default serializes the whole state and cuts its JSON;
    /// a state whose maps grow without bound cuts them before serializing (see
    /// [`OptOutListState`]'s), so a step costs what it shows.
    fn state_json_cut(&mut self, entries: Entries<'_>) -> (Value, BTreeMap<String, u64>) {
        let json = self.state_json();
        match entries {
            Entries::Seen(key) => seen_json(json, key),
            Entries::All | Entries::At(_) => (json, BTreeMap::new()),
        }
    }
}

/// Which entries of a state's map members a replay step's JSON holds.
#[derive(Debug, Clone, Copy)]
pub enum Entries<'a> {
    /// Every entry (the default [`Inspect::state_json_cut`] always holds every one here too).
    All,
    /// Only those at these keys: the ones a step's event changes ([`Inspect::keys_changed`]).
    At(&'a [String]),
    /// What a refusal's `StateSeen` shows: a map of at most [`SEEN_MAP_ENTRIES`] entries whole,
    /// a bigger one only at this key (the one the refusal names).
    Seen(Option<&'a str>),
}

impl Entries<'_> {
    /// Cuts `map` to these entries in place, returning the whole map (to be put back) and how
    /// many entries the cut leaves out; `None` when the map is kept whole.
    fn cut<V: Clone>(self, map: &mut OrdMap<String, V>) -> Option<(OrdMap<String, V>, u64)> {
        let kept: OrdMap<String, V> = match self {
            Entries::All => return None,
            Entries::Seen(_) if seen_whole(map.len()) => return None,
            Entries::Seen(key) => key
                .and_then(|k| map.get_key_value(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect(),
            Entries::At(keys) => keys.iter().filter_map(|k| map.get(k).map(|v| (k.clone(), v.clone()))).collect(),
        };
        let left_out = (map.len() - kept.len()) as u64;
        Some((std::mem::replace(map, kept), left_out))
    }
}

impl Inspect for PhoneNumberState {
    fn state_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    fn information(&self) -> Value {
        self.0.as_ref().map_or(Value::Null, crate::views::phone_number_information)
    }
}

impl Inspect for PoolState {
    fn state_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    fn information(&self) -> Value {
        self.0.as_ref().map_or(Value::Null, crate::views::pool_information)
    }
}

impl Inspect for OptOutListState {
    fn state_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    fn information(&self) -> Value {
        self.0.as_ref().map_or(Value::Null, crate::views::opt_out_list_information)
    }

    fn keys_changed(event: &OptOutListEvent) -> Option<Vec<String>> {
        match event {
            OptOutListEvent::NumberOptedOut { number, .. }
            | OptOutListEvent::EndUserOptedIn { number }
            | OptOutListEvent::OptedOutNumberDeleted { number, .. } => Some(vec![number.clone()]),
            OptOutListEvent::TagsChanged { .. } | OptOutListEvent::CommandRejected { .. } => Some(Vec::new()),
            OptOutListEvent::OptOutListCreated(_) | OptOutListEvent::OptOutListDeleted { .. } => None,
        }
    }

    /// The list's two maps (one entry per number ever opted out or deleted) are cut before the
    /// state is serialized, then put back: a step of a list of 20,000 numbers serializes the
    /// entries it shows, not 20,000.
    fn state_json_cut(&mut self, entries: Entries<'_>) -> (Value, BTreeMap<String, u64>) {
        let Some(list) = self.0.as_mut() else {
            return (Value::Null, BTreeMap::new());
        };
        let opted_out = entries.cut(&mut list.opted_out);
        let deleted_at = entries.cut(&mut list.deleted_at);
        let json = serde_json::to_value(&*list).unwrap_or(Value::Null);
        let mut left_out = BTreeMap::new();
        if let Some((whole, n)) = opted_out {
            list.opted_out = whole;
            left_out.insert(OPTED_OUT_MEMBER.to_string(), n);
        }
        if let Some((whole, n)) = deleted_at {
            list.deleted_at = whole;
            left_out.insert(DELETED_AT_MEMBER.to_string(), n);
        }
        left_out.retain(|_, n| *n > 0);
        (json, left_out)
    }
}

/// The JSON names of an opt-out list's map members (a unit test checks them against the state's
/// serialization).
const OPTED_OUT_MEMBER: &str = "OptedOut";
const DELETED_AT_MEMBER: &str = "DeletedAt";

impl Inspect for SenderIdState {
    fn state_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    fn information(&self) -> Value {
        self.0.as_ref().map_or(Value::Null, crate::views::sender_id_information)
    }
}

/// Which point of a stream's history to rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointInTime {
    /// Right after this version.
    Version(u64),
    /// Right after the last event at or before this time (milliseconds).
    At(u64),
    /// Now.
    Latest,
}

/// The state of a stream right after the chosen event.
pub async fn state_at(store: &dyn EventStore, stream_id: &str, point: PointInTime) -> Result<StateAt, AuditError> {
    match kind_of_stream(stream_id) {
        Some(ResourceKind::PhoneNumber) => state_as::<PhoneNumberState>(store, stream_id, point).await,
        Some(ResourceKind::Pool) => state_as::<PoolState>(store, stream_id, point).await,
        Some(ResourceKind::OptOutList) => state_as::<OptOutListState>(store, stream_id, point).await,
        Some(ResourceKind::SenderId) => state_as::<SenderIdState>(store, stream_id, point).await,
        None => Err(AuditError::NotFound(stream_id.to_string())),
    }
}

async fn state_as<A: Inspect>(store: &dyn EventStore, stream_id: &str, point: PointInTime) -> Result<StateAt, AuditError> {
    let head = store.stream_head(stream_id).await?.version;
    let out_of_range = || match point {
        PointInTime::Version(v) => AuditError::BadParameter {
            name: "Version".into(),
            message: format!("{stream_id} has versions 1 to {head}, not {v}"),
        },
        _ => AuditError::BadParameter {
            name: "At".into(),
            message: format!("{stream_id} did not exist yet at that time"),
        },
    };
    if let PointInTime::Version(v) = point {
        if v == 0 || v > head {
            return Err(out_of_range());
        }
    }
    let (mut state, mut last) = (A::default(), None::<EventEnvelope>);
    for_each_event(store, stream_id, 1, |e| {
        let take = match point {
            PointInTime::Version(v) => e.version <= v,
            PointInTime::At(ms) => e.timestamp_ms <= ms,
            PointInTime::Latest => e.version <= head,
        };
        if take {
            state = std::mem::take(&mut state).evolve(&decode_event::<A::Event>(&e)?);
            last = Some(e);
        }
        Ok(take)
    })
    .await?;
    let e = last.ok_or_else(out_of_range)?;
    Ok(StateAt {
        stream_id: stream_id.to_string(),
        version: e.version,
        position: e.position,
        timestamp: e.timestamp_secs(),
        event_type: e.event_type,
        state: state.information(),
    })
}

/// What changed between two states: each top-level member whose value differs, except that a
/// member that is a map on both sides (a JSON object) is reported per entry added, removed or
/// changed, with `Key` naming the entry.
///
/// Per entry because the maps grow with use: an opt-out list's `OptedOut` holds one entry per
/// number, and both whole copies of it in every step made a replay page of a list of 20,000
/// numbers hold gigabytes of JSON (each of 10,000 steps two copies of a 20,000-entry map), where
/// one entry per step says the same.
///
/// A member absent on one side of a state that exists on both, and a map on the other, is an
/// empty map: states leave empty maps out.
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let absent = (before.is_object() && after.is_object()).then_some(&empty);
    fn as_map<'a>(member: Option<&'a Value>, absent: Option<&'a Map<String, Value>>) -> Option<&'a Map<String, Value>> {
        match member {
            Some(Value::Object(map)) => Some(map),
            None => absent,
            Some(_) => None,
        }
    }
    let mut changes = Vec::new();
    for (field, x, y) in differing(b, a) {
        match (as_map(x, absent), as_map(y, absent)) {
            (Some(x), Some(y)) => changes.extend(differing(x, y).map(|(key, x, y)| FieldChange {
                field: field.clone(),
                key: Some(key.clone()),
                before: x.cloned().unwrap_or(Value::Null),
                after: y.cloned().unwrap_or(Value::Null),
            })),
            _ => changes.push(FieldChange {
                field: field.clone(),
                key: None,
                before: x.cloned().unwrap_or(Value::Null),
                after: y.cloned().unwrap_or(Value::Null),
            }),
        }
    }
    // In key order whatever order the maps keep (`serde_json`'s `preserve_order` would keep
    // insertion order); only the changes are sorted, usually a few.
    changes.sort_by(|p, q| (&p.field, &p.key).cmp(&(&q.field, &q.key)));
    changes
}

/// The keys whose values differ between two maps, each with its value on either side (`None`
/// where absent). Only references: the unchanged entries, nearly all of a big map, are compared
/// where they are, never copied.
fn differing<'a>(
    b: &'a Map<String, Value>,
    a: &'a Map<String, Value>,
) -> impl Iterator<Item = (&'a String, Option<&'a Value>, Option<&'a Value>)> {
    let in_b = b.iter().map(|(k, x)| (k, Some(x), a.get(k)));
    let only_in_a = a.iter().filter(|(k, _)| !b.contains_key(*k)).map(|(k, y)| (k, None, Some(y)));
    in_b.chain(only_in_a).filter(|(_, x, y)| x != y)
}

/// Entries a map member of a refusal's `StateSeen` shows whole.
pub const SEEN_MAP_ENTRIES: usize = 100;

/// Whether a refusal's `StateSeen` shows a map of `len` entries whole (else only the entry the
/// refusal names): the one rule for a state's JSON ([`seen_json`]) and a state cut before it is
/// serialized ([`Entries::cut`]).
fn seen_whole(len: usize) -> bool {
    len <= SEEN_MAP_ENTRIES
}

/// What a refusal's step shows of the state it was decided on (its JSON whole), and how many
/// entries of each map member it leaves out: a map of more than [`SEEN_MAP_ENTRIES`] entries
/// keeps only the entry at `key` (the refusal's `ResourceId`: the opted-out number refused, the
/// pool member), if it has it.
///
/// Cut because a whole copy per refusal made a page of refusals on a list of 20,000 numbers as
/// costly as the whole copies of the changes were (see [`diff`]); the entries left out are each
/// shown by the step that added or last changed it.
fn seen_json(mut state: Value, key: Option<&str>) -> (Value, BTreeMap<String, u64>) {
    let mut omitted = BTreeMap::new();
    if let Some(members) = state.as_object_mut() {
        for (field, member) in members.iter_mut() {
            let Value::Object(map) = member else { continue };
            if seen_whole(map.len()) {
                continue;
            }
            // The named entry moves out; what is left in `map` is what is left out.
            let kept: Map<String, Value> = key.and_then(|k| map.remove_entry(k)).into_iter().collect();
            omitted.insert(field.clone(), map.len() as u64);
            *map = kept;
        }
    }
    (state, omitted)
}

/// The events of a stream from `from_version` (at most `limit`) with what each changed, and the
/// version to ask for next when more follow. A page that follows one read before starts from the
/// state that page ended on (kept in `resumes`), so reading a whole replay page by page folds
/// each event once.
pub async fn replay(
    store: &dyn EventStore,
    resumes: &ReplayResumes,
    stream_id: &str,
    from_version: u64,
    limit: usize,
) -> Result<Replay, AuditError> {
    match kind_of_stream(stream_id) {
        Some(ResourceKind::PhoneNumber) => replay_as::<PhoneNumberState>(store, resumes, stream_id, from_version, limit).await,
        Some(ResourceKind::Pool) => replay_as::<PoolState>(store, resumes, stream_id, from_version, limit).await,
        Some(ResourceKind::OptOutList) => replay_as::<OptOutListState>(store, resumes, stream_id, from_version, limit).await,
        Some(ResourceKind::SenderId) => replay_as::<SenderIdState>(store, resumes, stream_id, from_version, limit).await,
        None => Err(AuditError::NotFound(stream_id.to_string())),
    }
}

/// The state right before `version` of a stream and the version to fold on from: where an
/// earlier page ended, if that is remembered and its last event is still the log's (same chain
/// hash, which seals everything before it), else the stream's start.
async fn replay_start<A: Inspect>(
    store: &dyn EventStore,
    resumes: &ReplayResumes,
    stream_id: &str,
    version: u64,
) -> Result<(A, u64), AuditError> {
    let before = version.saturating_sub(1);
    if let Some((state, hash)) = resumes.get::<A>(stream_id, before) {
        match store.read_stream(stream_id, before, 1).await?.first() {
            Some(e) if e.version == before && e.hash == hash => return Ok((state, version)),
            _ => resumes.forget(stream_id, before),
        }
    }
    Ok((A::default(), 1))
}

async fn replay_as<A: Inspect>(
    store: &dyn EventStore,
    resumes: &ReplayResumes,
    stream_id: &str,
    from_version: u64,
    limit: usize,
) -> Result<Replay, AuditError> {
    let from_version = from_version.max(1);
    let (mut state, start) = replay_start::<A>(store, resumes, stream_id, from_version).await?;
    let (mut steps, mut next_version, mut last_hash) = (Vec::<ReplayStep>::new(), None, String::new());
    // The whole state's JSON as the last step left it: the next step's `before` when that step
    // needs the whole state too, not serialized again.
    let mut whole = None::<Value>;
    // The events before the page are folded, not kept: the page's first step needs the state
    // they left. A page that starts where the state is needs its steps and one more event (to
    // know whether more follow), and reads no more.
    let chunk = if start == from_version {
        limit.saturating_add(1)
    } else {
        STREAM_CHUNK
    };
    for_each_event_in(store, stream_id, start, chunk, |e| {
        if e.version < from_version {
            state = std::mem::take(&mut state).evolve(&decode_event::<A::Event>(&e)?);
            return Ok(true);
        }
        if steps.len() == limit {
            next_version = Some(e.version);
            return Ok(false);
        }
        let event: A::Event = decode_event(&e)?;
        let rejection = A::rejection_in(&event).map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
        // Both sides of the step hold the map entries the event can change (all, if it does not
        // say): the diff of the two is the diff of the whole states.
        let keys = A::keys_changed(&event);
        let entries = keys.as_deref().map_or(Entries::All, Entries::At);
        let before = match (entries, whole.take()) {
            (Entries::All, Some(json)) => json,
            _ => state.state_json_cut(entries).0,
        };
        let (state_seen, state_seen_omitted) = match &rejection {
            Some(r) => {
                let key = r.get("ResourceId").and_then(Value::as_str);
                // A step that serialized the whole state already cuts that copy.
                let (seen, omitted) = match entries {
                    Entries::All => seen_json(before.clone(), key),
                    _ => state.state_json_cut(Entries::Seen(key)),
                };
                (Some(seen), omitted)
            }
            None => (None, BTreeMap::new()),
        };
        state = std::mem::take(&mut state).evolve(&event);
        let (after, _) = state.state_json_cut(entries);
        let changes = diff(&before, &after);
        if let Entries::All = entries {
            whole = Some(after);
        }
        steps.push(ReplayStep {
            version: e.version,
            position: e.position,
            timestamp: e.timestamp_secs(),
            event_type: e.event_type,
            request_id: e.request_id,
            account: e.account,
            command: e.command,
            changes,
            state_seen,
            state_seen_omitted,
            rejection,
        });
        last_hash = e.hash;
        Ok(true)
    })
    .await?;
    // The next page starts where this one ends: remember the state it reached.
    if let (Some(_), Some(last)) = (next_version, steps.last()) {
        resumes.put(stream_id, last.version, &last_hash, &state);
    }
    Ok(Replay {
        stream_id: stream_id.to_string(),
        steps,
        next_version,
    })
}

/// The stream questions read a stream a chunk at a time: their answers on a stream several
/// chunks long, read from the middle, are those of the whole stream read at once.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pending_events;
    use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges, PhoneNumberEvent};
    use crate::domain::Rejection;
    use crate::store::gated::GatedStore;
    use crate::store::{AppendMeta, AppendRequest, Durability, Store};

    const ACCOUNT: &str = "111122223333";
    const LONG: &str = "phone-0123456789abcdef0123456789abcdef";
    const OTHER: &str = "phone-fedcba9876543210fedcba9876543210";
    /// Events of the long stream: two chunks and a part.
    const EVENTS: u64 = 2 * STREAM_CHUNK as u64 + 345;

    fn events(id: &str, from_version: u64, n: u64) -> Vec<PhoneNumberEvent> {
        (from_version..from_version + n)
            .map(|v| match v {
                1 => PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(id, ACCOUNT, "us-east-1"))),
                v => PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                    deletion_protection_enabled: Some(v % 2 == 0),
                    ..Default::default()
                }),
            })
            .collect()
    }

    async fn append(store: &Store, id: &str, version: u64, n: u64) {
        append_events(store, id, version, &events(id, version + 1, n)).await;
    }

    async fn append_events<E: Serialize>(store: &Store, id: &str, version: u64, events: &[E]) {
        let meta = AppendMeta::direct(ACCOUNT, "us-east-1", "query-test", "Test/Append");
        let request = AppendRequest::plain(id, version, meta, pending_events(events).expect("events"));
        store.submit(request).expect("queued").await.expect("appended");
    }

    fn open_store(dir: &tempfile::TempDir) -> Store {
        let mut config = crate::config::Config::defaults_with_data_dir(dir.path()).expect("config");
        config.store.sled.durability = Durability::Flush;
        config.store.open(dir.path()).expect("open")
    }

    /// The long stream, interleaved with another so that its positions are not its versions.
    async fn long_stream() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("dir");
        let store = open_store(&dir);
        let (mut long, mut other) = (0, 0);
        while long < EVENTS {
            let n = 100.min(EVENTS - long);
            append(&store, LONG, long, n).await;
            append(&store, OTHER, other, 7).await;
            (long, other) = (long + n, other + 7);
        }
        (dir, store)
    }

    /// A step that changes a few entries of a map of 20,000 reports those entries, not the map.
    #[test]
    fn a_step_on_a_big_map_reports_only_the_entries_it_changed() {
        use serde_json::json;
        let entry = |t: u64| json!({"OptedOutTimestampMs": t, "EndUserOptedOut": false});
        let numbers: Map<String, Value> = (0..20_000).map(|i| (format!("+1206555{i:05}"), entry(i))).collect();
        let mut changed = numbers.clone();
        changed.insert("+19995550000".into(), entry(7));
        changed.remove("+120655500007");
        changed.insert("+120655500009".into(), entry(99));
        let before = json!({"OptOutListName": "L", "OptedOut": numbers, "Tags": []});
        let after = json!({"OptOutListName": "L", "OptedOut": changed, "Tags": [{"Key": "k", "Value": "v"}],
            "DeletedAt": {"+120655500007": 5}});
        let changes = diff(&before, &after);
        // What changed, before the values (a failure shows these, not two maps of 20,000).
        let changed: Vec<(&str, Option<&str>)> = changes.iter().map(|c| (c.field.as_str(), c.key.as_deref())).collect();
        assert_eq!(
            changed,
            [
                ("DeletedAt", Some("+120655500007")),
                ("OptedOut", Some("+120655500007")),
                ("OptedOut", Some("+120655500009")),
                ("OptedOut", Some("+19995550000")),
                ("Tags", None),
            ]
        );
        assert_eq!(
            serde_json::to_value(&changes).expect("json"),
            json!([
                // A map the state left out (empty) that appears is reported per entry too.
                {"Field": "DeletedAt", "Key": "+120655500007", "Before": null, "After": 5},
                {"Field": "OptedOut", "Key": "+120655500007", "Before": entry(7), "After": null},
                {"Field": "OptedOut", "Key": "+120655500009", "Before": entry(9), "After": entry(99)},
                {"Field": "OptedOut", "Key": "+19995550000", "Before": null, "After": entry(7)},
                {"Field": "Tags", "Before": [], "After": [{"Key": "k", "Value": "v"}]},
            ])
        );
        // The first event: every member appears, whole.
        let created = json!({"OptOutListName": "L", "OptedOut": {}});
        assert_eq!(
            serde_json::to_value(diff(&Value::Null, &created)).expect("json"),
            json!([{"Field": "OptOutListName", "Before": null, "After": "L"}, {"Field": "OptedOut", "Before": null, "After": {}}])
        );
    }

    /// A replay page of an opt-out list grows with its steps, not with its steps times the list:
    /// each step of `n` numbers opting out, one in ten of them refused, is the same size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_page_of_a_growing_opt_out_list_grows_linearly() {
        use crate::domain::opt_out_list::{OptOutList, OptOutListEvent, OptedOut};
        const LIST: &str = "optout-0123456789abcdef0123456789abcdef";
        let number = |i: u64| format!("+1206555{i:05}");
        let page_size = |n: u64| async move {
            let dir = tempfile::tempdir().expect("dir");
            let store = open_store(&dir);
            let arn = format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/L");
            let list = OptOutList::new("L", arn, ACCOUNT, "us-east-1", 1, vec![], None);
            let mut events = vec![OptOutListEvent::OptOutListCreated(Box::new(list))];
            for i in 0..n {
                events.push(OptOutListEvent::NumberOptedOut {
                    number: number(i),
                    entry: OptedOut {
                        opted_out_timestamp_ms: i,
                        end_user_opted_out: false,
                    },
                });
                if i % 10 == 9 {
                    // Refused on a number the list holds (as the 30-day rule refuses).
                    events.push(OptOutListEvent::CommandRejected {
                        command: "DeleteOptedOutNumber".into(),
                        reason: Rejection::not_found(ResourceKind::OptOutList, &number(i / 2)),
                    });
                }
            }
            for (at, batch) in events.chunks(100).enumerate() {
                append_events(&store, LIST, at as u64 * 100, batch).await;
            }
            let page = replay(&*store, &ReplayResumes::default(), LIST, 1, MAX_LIMIT)
                .await
                .expect("replay");
            assert_eq!(page.steps.len(), events.len());
            store.close().await.expect("close");
            let last_refusal = page.steps.iter().rev().find(|s| s.rejection.is_some()).expect("a refusal");
            (serde_json::to_vec(&page).expect("json").len(), last_refusal.clone())
        };
        let ((small, _), (large, refusal)) = (page_size(500).await, page_size(1_000).await);
        // Twice the steps on a list twice as long: twice the bytes (it was four times, every step
        // holding the list twice).
        assert!(large < small * 21 / 10, "{small} bytes for 500 numbers, {large} for 1,000");
        // The refusal of number 499, on a list of 1,000, shows that entry and counts the rest.
        assert_eq!(
            refusal.state_seen.as_ref().map(|s| s["OptedOut"].clone()),
            Some(serde_json::json!({number(499): {"OptedOutTimestampMs": 499, "EndUserOptedOut": false}}))
        );
        assert_eq!(refusal.state_seen_omitted, BTreeMap::from([("OptedOut".to_string(), 999)]));
    }

    /// An opt-out list's replay serializes only the entries each step's event changes (and a
    /// refusal's `StateSeen` only what it shows), and says exactly what the whole states would:
    /// every step here, over every kind of event, against the diff of the whole states.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opt_out_list_replay_cut_to_the_changed_entries_says_what_the_whole_states_do() {
        use crate::domain::opt_out_list::{OptOutList, OptedOut};
        use crate::domain::types::Tag;
        use OptOutListEvent as E;
        const LIST: &str = "optout-0123456789abcdef0123456789abcdef";
        let number = |i: u64| format!("+1206555{i:05}");
        let opted_out = |i: u64, end_user: bool| E::NumberOptedOut {
            number: number(i),
            entry: OptedOut {
                opted_out_timestamp_ms: i,
                end_user_opted_out: end_user,
            },
        };
        let refused = |i: u64| E::CommandRejected {
            command: "PutOptedOutNumber".into(),
            reason: Rejection::not_found(ResourceKind::OptOutList, &number(i)),
        };
        let arn = format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/L");
        let created = || E::OptOutListCreated(Box::new(OptOutList::new("L", arn.clone(), ACCOUNT, "us-east-1", 1, vec![], None)));
        let mut events = vec![created(), refused(3)];
        // Past the size at which a refusal's `StateSeen` shows only the entry it names.
        events.extend((0..=SEEN_MAP_ENTRIES as u64 + 5).map(|i| opted_out(i, i % 3 == 0)));
        events.extend([
            refused(7),
            refused(9_999),
            E::OptedOutNumberDeleted {
                number: number(7),
                at_ms: 70,
            },
            E::OptedOutNumberDeleted {
                number: number(8),
                at_ms: 80,
            },
            E::EndUserOptedIn { number: number(9) },
            E::EndUserOptedIn { number: number(9_998) },
            opted_out(7, true),
            refused(8),
            E::TagsChanged {
                tags: vec![Tag {
                    key: "k".into(),
                    value: "v".into(),
                }],
            },
            E::OptOutListDeleted { opted_out: 104 },
            // Whole states one after the other: the JSON the first ends with starts the next.
            created(),
            E::OptOutListDeleted { opted_out: 0 },
            refused(1),
            created(),
            opted_out(1, false),
            refused(1),
        ]);
        let dir = tempfile::tempdir().expect("dir");
        let store = open_store(&dir);
        append_events(&store, LIST, 0, &events).await;
        let page = replay(&*store, &ReplayResumes::default(), LIST, 1, MAX_LIMIT)
            .await
            .expect("replay");
        store.close().await.expect("close");
        assert_eq!(page.steps.len(), events.len());

        let mut state = OptOutListState::default();
        for (step, event) in page.steps.iter().zip(&events) {
            let before = state.state_json();
            let seen = OptOutListState::rejection_in(event).map(|r| {
                let key = serde_json::to_value(r).expect("json")["ResourceId"].as_str().map(str::to_string);
                seen_json(before.clone(), key.as_deref())
            });
            state = state.evolve(event);
            let changes = diff(&before, &state.state_json());
            let at = step.version;
            assert_eq!(
                serde_json::to_value(&step.changes).expect("json"),
                serde_json::to_value(&changes).expect("json"),
                "the changes of step {at}"
            );
            assert_eq!(step.state_seen, seen.as_ref().map(|(s, _)| s.clone()), "what step {at} saw");
            assert_eq!(
                step.state_seen_omitted,
                seen.map(|(_, o)| o).unwrap_or_default(),
                "what step {at} left out"
            );
        }
        // The cuts did happen: a refusal on the big list showed one entry and counted the rest.
        let big_refusal = &page.steps[SEEN_MAP_ENTRIES + 8];
        assert_eq!(big_refusal.state_seen_omitted, BTreeMap::from([("OptedOut".to_string(), 105)]));
    }

    /// The member names an opt-out list's cut counts its left-out entries under are its JSON's.
    #[test]
    fn the_opt_out_list_member_names_are_those_of_its_json() {
        use crate::domain::opt_out_list::OptOutList;
        let mut list = OptOutList::new("L", "arn".into(), ACCOUNT, "us-east-1", 1, vec![], None);
        list.deleted_at.insert("+12065550100".into(), 1);
        let json = OptOutListState(Some(list)).state_json();
        assert!(json[OPTED_OUT_MEMBER].is_object() && json[DELETED_AT_MEMBER].is_object(), "{json}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn questions_about_a_long_stream_read_it_a_chunk_at_a_time_with_the_answers_of_one_read() {
        let (_dir, store) = long_stream().await;
        let all = store.read_stream(LONG, 1, usize::MAX).await.expect("read");
        assert_eq!(all.len() as u64, EVENTS);

        // The feed of one stream after a position in its middle (not one of its own).
        let after = all[1_500].position - 1;
        assert!(!all.iter().any(|e| e.position == after));
        let mut filter = FeedFilter {
            stream_id: Some(LONG.into()),
            after,
            limit: 700,
            ..FeedFilter::default()
        };
        let page = feed(&*store, &filter).await.expect("feed");
        let versions = |events: &[EventEnvelope]| events.iter().map(|e| e.version).collect::<Vec<_>>();
        assert_eq!(versions(&page.events), (1_501..=2_200).collect::<Vec<_>>());
        assert_eq!(page.next_after, Some(all[2_199].position));
        filter.after = all[2_199].position;
        let last = feed(&*store, &filter).await.expect("feed");
        assert_eq!(versions(&last.events), (2_201..=EVENTS).collect::<Vec<_>>());
        assert_eq!(last.next_after, None);

        // The state at versions on either side of a chunk's end, and the latest.
        for version in [1, 999, 1_000, 1_001, 2_001, EVENTS] {
            let state = state_at(&*store, LONG, PointInTime::Version(version)).await.expect("state");
            assert_eq!(state.version, version);
            assert_eq!(
                state.state["DeletionProtectionEnabled"],
                version > 1 && version % 2 == 0,
                "v{version}"
            );
        }
        let latest = state_at(&*store, LONG, PointInTime::Latest).await.expect("latest");
        assert_eq!(latest.version, EVENTS);

        let json = |steps: &[ReplayStep]| serde_json::to_value(steps).expect("json");
        // A replay read in pages is the replay read at once, and each page after the first folds
        // on from where the one before ended: no read of the stream starts at its beginning again.
        let resumes = ReplayResumes::default();
        let whole = replay(&*store, &resumes, LONG, 1, MAX_LIMIT).await.expect("replay");
        assert_eq!((whole.steps.len() as u64, whole.next_version), (EVENTS, None));
        let gated = GatedStore::over(store.clone());
        let (mut paged, mut from) = (Vec::new(), Some(1));
        while let Some(v) = from {
            let page = replay(&*gated, &resumes, LONG, v, 333).await.expect("page");
            assert!(page.steps.len() <= 333);
            let starts: Vec<u64> = gated.take_reads().into_iter().map(|(_, from)| from).collect();
            assert!(v == 1 || !starts.contains(&1), "the page from v{v} read from the start: {starts:?}");
            paged.extend(page.steps);
            from = page.next_version;
        }
        assert_eq!(paged.len() as u64, EVENTS);
        // A page whose start is not remembered (another process, or pushed out), or whose
        // remembered state no longer ends with the log's event there, is folded from the start.
        for resumes in [ReplayResumes::default(), {
            let wrong = ReplayResumes::default();
            wrong.put(LONG, 1_331, &all[1_331].hash, &PhoneNumberState::default());
            wrong
        }] {
            let page = replay(&*gated, &resumes, LONG, 1_332, 333).await.expect("page");
            assert_eq!(gated.take_reads().iter().filter(|(_, from)| *from == 1).count(), 1);
            assert_eq!(json(&page.steps), json(&whole.steps[1_331..1_664]));
        }
        assert_eq!(json(&paged), json(&whole.steps));
        assert_eq!(
            json(&whole.steps[1_000..1_001]),
            serde_json::json!([{
                "Version": 1_001, "Position": all[1_000].position, "Timestamp": all[1_000].timestamp_secs(),
                "EventType": "PhoneNumberUpdated", "RequestId": "query-test", "Account": ACCOUNT,
                "Command": "Test/Append",
                "Changes": [{"Field": "DeletionProtectionEnabled", "Before": true, "After": false}],
            }])
        );
        store.close().await.expect("close");
    }
}
