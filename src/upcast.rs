//! Event schema history and the upcasters that turn stored payloads of older schema versions
//! into today's shape at read time. Stored bytes are never rewritten (the hash chain covers
//! them); every reader goes through [`upcast`] before deserializing.
//!
//! | version | change |
//! |---|---|
//! | 1 | first stored format |
//! | 2 | refusal events (`*Rejected`, `*Aborted`): member `Reason` renamed `Rejection`, so a refusal reads `Payload.Rejection.Reason` rather than `Payload.Reason.Reason` |

use serde_json::Value;

use crate::store::CURRENT_SCHEMA_VERSION;

/// Why a stored payload cannot be brought to today's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("schema version {0} was written by a newer phone-ledger (this one reads up to {CURRENT_SCHEMA_VERSION})")]
    FromTheFuture(u32),
    #[error("schema version 0 does not exist")]
    Unknown,
}

/// Whether an event type records a refusal (its payload carries the rejection).
fn is_refusal(event_type: &str) -> bool {
    event_type.ends_with("Rejected") || event_type.ends_with("Aborted")
}

/// v1 → v2: `Reason` → `Rejection` in refusal events.
fn v1_to_v2(event_type: &str, mut payload: Value) -> Value {
    if is_refusal(event_type) {
        if let Some(obj) = payload.as_object_mut() {
            if let Some(r) = obj.remove("Reason") {
                obj.insert("Rejection".into(), r);
            }
        }
    }
    payload
}

/// The payload of an event of `event_type` stored at `schema_version`, in today's shape.
pub fn upcast(event_type: &str, schema_version: u32, payload: &Value) -> Result<Value, UpcastError> {
    match schema_version {
        0 => Err(UpcastError::Unknown),
        v if v > CURRENT_SCHEMA_VERSION => Err(UpcastError::FromTheFuture(v)),
        v => {
            let mut payload = payload.clone();
            if v < 2 {
                payload = v1_to_v2(event_type, payload);
            }
            Ok(payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_refusals_get_their_rejection_member() {
        let v1 = json!({"Reason": {"Kind": "NotFound"}});
        assert_eq!(upcast("ReleaseRejected", 1, &v1), Ok(json!({"Rejection": {"Kind": "NotFound"}})));
        assert_eq!(
            upcast("PoolAssociationAborted", 1, &json!({"PoolId": "p", "Reason": 1})),
            Ok(json!({"PoolId": "p", "Rejection": 1}))
        );
        // Other events and current payloads pass through.
        assert_eq!(
            upcast("Released", 1, &json!({"PhoneNumber": "+1"})),
            Ok(json!({"PhoneNumber": "+1"}))
        );
        assert_eq!(upcast("ReleaseRejected", 2, &json!({"Rejection": 1})), Ok(json!({"Rejection": 1})));
        assert_eq!(upcast("Released", 99, &json!({})), Err(UpcastError::FromTheFuture(99)));
    }
}
