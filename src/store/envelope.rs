//! The stored form of an event: an immutable envelope around the domain event's JSON payload,
//! chained to its predecessor in the global feed by a SHA-256 hash (tamper evidence).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Schema version written with every event today; readers upcast older ones.
pub const CURRENT_SCHEMA_VERSION: u32 = 2;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub stream_id: String,
    /// 1-based, gap-free within the stream.
    pub version: u64,
    /// 1-based, strictly increasing across all streams (the global feed).
    pub position: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub timestamp_ms: u64,
    pub account: String,
    pub region: String,
    pub request_id: String,
    /// One id per executed command: the events of one append share it.
    pub command_id: Uuid,
    /// The API operation and the aggregate command that produced the event
    /// (`ReleasePhoneNumber/Release`).
    pub command: String,
    /// The command itself, so that history can be decided again (`audit recheck`).
    pub command_input: serde_json::Value,
    pub payload: serde_json::Value,
    /// Hex SHA-256 of (previous envelope's hash ‖ this envelope's canonical bytes).
    pub hash: String,
}

/// Hash of the empty chain: what the first envelope's predecessor hash is.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

impl EventEnvelope {
    /// The bytes the hash covers: the envelope's JSON with an empty `Hash`. serde_json writes
    /// struct fields in declaration order and object keys sorted, so this is deterministic.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        serde_json::to_vec(&unhashed)
    }

    /// The chain hash of this envelope given its predecessor's.
    /// An envelope not sealed yet (every event a node's view chains) is written straight into
    /// the hash, without a copy of it or of its bytes.
    pub fn chain_hash(&self, previous: &[u8; 32]) -> Result<[u8; 32], serde_json::Error> {
        let mut hasher = Sha256::new();
        hasher.update(previous);
        if self.hash.is_empty() {
            serde_json::to_writer(&mut hasher, self)?;
        } else {
            hasher.update(self.canonical_bytes()?);
        }
        Ok(hasher.finalize().into())
    }

    /// Puts this envelope (its `hash` still empty) on the chain after `previous`: fills in its
    /// hash and returns it with the envelope's stored JSON.
    ///
    /// One serialization serves both. The canonical bytes are the JSON with `"Hash":""` as the
    /// last member (it is the last field), so the stored form is those bytes with the hex hash
    /// written between the quotes; the writer does this for every event, so it is worth not
    /// serializing (and cloning) each envelope twice.
    pub fn seal(&mut self, previous: &[u8; 32]) -> Result<([u8; 32], Vec<u8>), serde_json::Error> {
        const EMPTY_HASH_TAIL: &[u8] = br#""Hash":""}"#;
        self.hash.clear();
        let mut bytes = serde_json::to_vec(&*self)?;
        let hash: [u8; 32] = Sha256::new().chain_update(previous).chain_update(&bytes).finalize().into();
        self.hash = hex::encode(hash);
        if bytes.ends_with(EMPTY_HASH_TAIL) {
            bytes.truncate(bytes.len() - 2);
            bytes.extend_from_slice(self.hash.as_bytes());
            bytes.extend_from_slice(b"\"}");
        } else {
            bytes = serde_json::to_vec(&*self)?;
        }
        Ok((hash, bytes))
    }

    /// Timestamp as epoch seconds, the form the AWS SDKs expect.
    pub fn timestamp_secs(&self) -> f64 {
        self.timestamp_ms as f64 / 1000.0
    }
}

/// An event the writer has yet to number, chain and store.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: serde_json::Value,
}

impl AppendMeta {
    /// Context for an append that no API command caused (tools, tests, benchmarks): now, a fresh
    /// command id, no recorded input.
    pub fn direct(account: &str, region: &str, request_id: &str, command: &str) -> Self {
        AppendMeta {
            timestamp_ms: crate::now_ms(),
            account: account.into(),
            region: region.into(),
            request_id: request_id.into(),
            command_id: Uuid::new_v4(),
            command: command.into(),
            command_input: serde_json::Value::Null,
        }
    }
}

/// Context shared by all events of one append.
#[derive(Debug, Clone)]
pub struct AppendMeta {
    pub timestamp_ms: u64,
    pub account: String,
    pub region: String,
    pub request_id: String,
    pub command_id: Uuid,
    pub command: String,
    pub command_input: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: "phone-0123456789abcdef0123456789abcdef".into(),
            version: 3,
            position: 42,
            event_type: "PhoneNumberReleased".into(),
            schema_version: CURRENT_SCHEMA_VERSION,
            timestamp_ms: 1_795_731_291_078,
            account: "111122223333".into(),
            region: "us-east-1".into(),
            request_id: "req \"quoted\" \u{e9}".into(),
            command_id: Uuid::new_v4(),
            command: "ReleasePhoneNumber/Release".into(),
            command_input: serde_json::json!({"PhoneNumberId": "phone-1", "Hash": ""}),
            payload: serde_json::json!({"Reason": null, "Nested": {"Hash": ""}}),
            hash: String::new(),
        }
    }

    #[test]
    fn seal_stores_exactly_the_serialized_envelope_and_its_chain_hash() {
        let previous = [7u8; 32];
        let mut sealed = envelope();
        let unsealed_hash = sealed.chain_hash(&previous).expect("hash of the unsealed envelope");
        let (hash, bytes) = sealed.seal(&previous).expect("seal");
        assert_eq!(hash, unsealed_hash, "hashed without a copy, the same");
        assert_eq!(
            hash,
            sealed.chain_hash(&previous).expect("hash"),
            "same hash as verification computes"
        );
        assert_eq!(sealed.hash, hex::encode(hash));
        assert_eq!(
            bytes,
            serde_json::to_vec(&sealed).expect("json"),
            "stored bytes are the envelope's JSON"
        );
        let back: EventEnvelope = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, sealed);
    }

    #[test]
    fn sealing_again_gives_the_same_result() {
        let mut once = envelope();
        let first = once.seal(&GENESIS_HASH).expect("seal");
        let second = once.seal(&GENESIS_HASH).expect("seal again");
        assert_eq!(first, second);
    }
}
