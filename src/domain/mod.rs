//! The pure core: one decider per aggregate (`PhoneNumberState`, `PoolState`), with no actors,
//! storage or HTTP inside.
//!
//! `decide(&state, &command) -> Result<Vec<Event>, Rejection>` holds every business rule;
//! `evolve(state, &event) -> state` only applies what was decided. Everything the rules need
//! that is not in the state (the caller, the time, the pool's message type) travels in the
//! command, so the same inputs always give the same decision, which is what lets the audit
//! tools re-run history.

pub mod ids;
pub mod keywords;
pub mod membership;
pub mod message;
pub mod opt_out_list;
pub mod phone_number;
pub mod pool;
pub mod pool_change;
pub mod rejection;
pub mod sender_id;
pub mod tags;
pub mod types;

#[cfg(test)]
pub(crate) mod testing;

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use ids::{ResourceKind, Scope};
pub use rejection::Rejection;

/// Who asks, when, and in which request: the context every command carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CommandMeta {
    pub request_id: String,
    pub scope: Scope,
    /// Milliseconds since the Unix epoch, read once at the edge.
    pub at_ms: u64,
    /// The API operation that issued the command (`ReleasePhoneNumber`, ...).
    pub operation: String,
}

/// An action on an aggregate together with its context.
#[derive(Debug, Clone)]
pub struct Command<A> {
    pub meta: CommandMeta,
    /// The id of the aggregate the command is for (its stream id).
    pub target: String,
    pub action: A,
}

/// Names a command for the audit trail and for rejection events.
pub trait ActionName {
    fn name(&self) -> &'static str;
}

/// An event-sourced aggregate: its state type implements this; actors and the store are generic
/// over it.
/// The state is serializable so that it can be snapshotted.
pub trait Aggregate: Default + Clone + Debug + Serialize + DeserializeOwned + Send + Unpin + 'static {
    type Action: ActionName + Serialize + DeserializeOwned + Debug + Clone + Send + 'static;
    type Event: Serialize + DeserializeOwned + Debug + Clone + PartialEq + Send + 'static;

    /// Which kind of resource the aggregate is (stream id prefix, ARN segment, error type).
    const KIND: ResourceKind;

    /// All business rules: the events a command leads to, or why it is refused.
    fn decide(&self, command: &Command<Self::Action>) -> Result<Vec<Self::Event>, Rejection>;

    /// Applies one event. No rules here: an event is a fact.
    fn evolve(self, event: &Self::Event) -> Self;

    /// The event that records a refused command on the stream (the audit trail of refusals).
    fn rejected(action: &Self::Action, rejection: &Rejection) -> Self::Event;

    /// The refusal an event records, if it is a rejection event.
    fn rejection_in(event: &Self::Event) -> Option<&Rejection>;

    /// How many entries the state holds beyond its fixed members (a list's numbers, a pool's
    /// members): what its snapshot's size, and so its cost, grows with.
    fn entries(&self) -> u64 {
        0
    }

    /// Folds a history.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        events.into_iter().fold(Self::default(), Self::evolve)
    }
}

/// Applies one member of an update: `None` leaves the member as it is.
pub(crate) fn changed<T: Clone>(member: &mut T, change: &Option<T>) {
    if let Some(v) = change {
        *member = v.clone();
    }
}

/// [`changed`] for a member that may be absent: an update sets it, never clears it.
pub(crate) fn changed_optional<T: Clone>(member: &mut Option<T>, change: &Option<T>) {
    if let Some(v) = change {
        *member = Some(v.clone());
    }
}

/// Splits an event into its type name and JSON payload (the envelope stores them apart).
pub fn event_to_parts<E: Serialize>(event: &E) -> Result<(String, serde_json::Value), serde_json::Error> {
    let mut value = serde_json::to_value(event)?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| serde::ser::Error::custom("event must serialize to an object"))?;
    let event_type = match obj.remove("Type") {
        Some(serde_json::Value::String(s)) => s,
        _ => return Err(serde::ser::Error::custom("event has no Type")),
    };
    let payload = obj.remove("Payload").unwrap_or(serde_json::Value::Null);
    Ok((event_type, payload))
}

/// Rebuilds an event from its type name and payload.
pub fn event_from_parts<E: DeserializeOwned>(event_type: &str, payload: &serde_json::Value) -> Result<E, serde_json::Error> {
    let mut obj = serde_json::Map::new();
    obj.insert("Type".into(), serde_json::Value::String(event_type.to_string()));
    if !payload.is_null() {
        obj.insert("Payload".into(), payload.clone());
    }
    serde_json::from_value(serde_json::Value::Object(obj))
}
