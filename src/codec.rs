//! Domain events ↔ stored envelopes: what the writer takes (type name and JSON payload apart),
//! how a stored event of any schema version becomes today's event type (through the upcasters),
//! and how a stream's envelopes group into the commands that wrote them.

use serde::de::DeserializeOwned;

use crate::domain::{event_from_parts, Aggregate, Command, CommandMeta, ResourceKind, Scope};
use crate::store::{EventEnvelope, PendingEvent, StoreError};

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
    ResourceKind::ALL.into_iter().find(|k| k.is_id(stream_id))
}
