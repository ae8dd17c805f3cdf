//! Read-only questions about the log: a stream's history, the global feed, the state at a version
//! or time (rebuilt with the actors' own `evolve`), and a step-by-step replay with the fields each
//! event changed and the state each refusal saw.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AuditError;
use crate::codec::{decode_event, kind_of_stream};
use crate::domain::opt_out_list::OptOutListState;
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
    /// `PhoneNumberInformation` (with `Status`) or `PoolInformation`, plus `PoolId`/`Members`.
    pub state: Value,
}

/// One member that an event changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FieldChange {
    pub field: String,
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
    /// For a refusal: the state the command was decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_seen: Option<Value>,
}

/// A stream's replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replay {
    pub stream_id: String,
    pub steps: Vec<ReplayStep>,
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
        let all = store.read_stream(stream, 1, usize::MAX).await?;
        let stream_end = all.last().map_or(filter.after, |e| e.position.max(filter.after));
        let mut matching = all.into_iter().filter(|e| filter.matches(e));
        events.extend(matching.by_ref().take(limit));
        let next_after = matching.next().and(events.last().map(|e| e.position));
        let scanned_to = next_after.unwrap_or(stream_end);
        return Ok(FeedPage {
            events,
            next_after,
            scanned_to,
        });
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

/// What the audit tools need of an aggregate beyond the decider.
pub trait Inspect: Aggregate {
    /// The full state as JSON (`null` before the first event).
    fn state_json(&self) -> Value;
    /// The state in the API's information shape plus its status.
    fn information(&self) -> Value;
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
}

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

fn fold_until<A: Inspect>(envelopes: &[EventEnvelope], point: PointInTime) -> Result<Option<(A, &EventEnvelope)>, AuditError> {
    let mut state = A::default();
    let mut last = None;
    for e in envelopes {
        let take = match point {
            PointInTime::Version(v) => e.version <= v,
            PointInTime::At(ms) => e.timestamp_ms <= ms,
            PointInTime::Latest => true,
        };
        if !take {
            break;
        }
        state = state.evolve(&decode_event::<A::Event>(e)?);
        last = Some(e);
    }
    Ok(last.map(|e| (state, e)))
}

/// The state of a stream right after the chosen event.
pub async fn state_at(store: &dyn EventStore, stream_id: &str, point: PointInTime) -> Result<StateAt, AuditError> {
    let envelopes = store.read_stream(stream_id, 1, usize::MAX).await?;
    let head = envelopes.last().map_or(0, |e| e.version);
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
    let render = |state: Value, e: &EventEnvelope| StateAt {
        stream_id: stream_id.to_string(),
        version: e.version,
        position: e.position,
        timestamp: e.timestamp_secs(),
        event_type: e.event_type.clone(),
        state,
    };
    match kind_of_stream(stream_id) {
        Some(ResourceKind::PhoneNumber) => {
            let (s, e) = fold_until::<PhoneNumberState>(&envelopes, point)?.ok_or_else(out_of_range)?;
            Ok(render(s.information(), e))
        }
        Some(ResourceKind::Pool) => {
            let (s, e) = fold_until::<PoolState>(&envelopes, point)?.ok_or_else(out_of_range)?;
            Ok(render(s.information(), e))
        }
        Some(ResourceKind::OptOutList) => {
            let (s, e) = fold_until::<OptOutListState>(&envelopes, point)?.ok_or_else(out_of_range)?;
            Ok(render(s.information(), e))
        }
        Some(ResourceKind::SenderId) => {
            let (s, e) = fold_until::<SenderIdState>(&envelopes, point)?.ok_or_else(out_of_range)?;
            Ok(render(s.information(), e))
        }
        None => Err(AuditError::NotFound(stream_id.to_string())),
    }
}

/// Members whose values differ between two states (top-level fields of the full state).
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (b.get(k).cloned().unwrap_or(Value::Null), a.get(k).cloned().unwrap_or(Value::Null));
            (x != y).then(|| FieldChange {
                field: k.clone(),
                before: x,
                after: y,
            })
        })
        .collect()
}

fn replay_as<A: Inspect>(stream_id: &str, envelopes: &[EventEnvelope]) -> Result<Replay, AuditError> {
    let mut state = A::default();
    let mut steps = Vec::with_capacity(envelopes.len());
    for e in envelopes {
        let event: A::Event = decode_event(e)?;
        let before = state.state_json();
        let rejection = A::rejection_in(&event).map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
        state = state.evolve(&event);
        let after = state.state_json();
        steps.push(ReplayStep {
            version: e.version,
            position: e.position,
            timestamp: e.timestamp_secs(),
            event_type: e.event_type.clone(),
            request_id: e.request_id.clone(),
            account: e.account.clone(),
            command: e.command.clone(),
            changes: diff(&before, &after),
            state_seen: rejection.as_ref().map(|_| before),
            rejection,
        });
    }
    Ok(Replay {
        stream_id: stream_id.to_string(),
        steps,
    })
}

/// Every event of a stream with what it changed.
pub async fn replay(store: &dyn EventStore, stream_id: &str) -> Result<Replay, AuditError> {
    let envelopes = store.read_stream(stream_id, 1, usize::MAX).await?;
    match kind_of_stream(stream_id) {
        Some(ResourceKind::PhoneNumber) => replay_as::<PhoneNumberState>(stream_id, &envelopes),
        Some(ResourceKind::Pool) => replay_as::<PoolState>(stream_id, &envelopes),
        Some(ResourceKind::OptOutList) => replay_as::<OptOutListState>(stream_id, &envelopes),
        Some(ResourceKind::SenderId) => replay_as::<SenderIdState>(stream_id, &envelopes),
        None => Err(AuditError::NotFound(stream_id.to_string())),
    }
}
