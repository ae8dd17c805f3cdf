//! What the clustered backend puts in JetStream: names of its streams and buckets, the subject
//! of an aggregate's stream, the key of an index entry in a bucket, the headers of a commit and
//! the commit itself (one message per append).

use serde::{Deserialize, Serialize};

use crate::store::{CounterLimit, EventEnvelope, IndexOp, StoreError};

/// Headers of a commit message: where it files its events, so heads and verification need not
/// decode the payload.
pub const HEADER_STREAM: &str = "Pl-Stream";
/// The stream's version after this commit.
pub const HEADER_VERSION: &str = "Pl-Version";
/// The id of the commit's last event.
pub const HEADER_LAST_EVENT: &str = "Pl-Last-Event";
/// How many events the commit holds.
pub const HEADER_EVENTS: &str = "Pl-Events";

/// The names one deployment uses; `namespace` keeps several deployments (or test runs) apart on
/// one NATS cluster.
#[derive(Debug, Clone)]
pub struct Names {
    /// The events stream: every commit, one subject per aggregate.
    pub events: String,
    /// Subject prefix of the events stream (`<prefix>.<aggregate>`).
    pub events_subject: String,
    /// The stream of chain checkpoints (one subject, extended by one sealer at a time).
    pub chain: String,
    pub chain_subject: String,
    /// Key-value bucket of unique claims (E.164 numbers, client tokens).
    pub claims: String,
    /// Key-value bucket of snapshots.
    pub snapshots: String,
}

impl Names {
    pub fn new(namespace: &str) -> Self {
        let lower = namespace.to_ascii_lowercase();
        Names {
            events: format!("{namespace}_EVENTS"),
            events_subject: format!("{lower}.events"),
            chain: format!("{namespace}_CHAIN"),
            chain_subject: format!("{lower}.chain"),
            claims: format!("{namespace}_CLAIMS"),
            snapshots: format!("{namespace}_SNAPSHOTS"),
        }
    }

    /// The subject an aggregate's commits go to.
    pub fn subject_of(&self, stream_id: &str) -> String {
        format!("{}.{}", self.events_subject, token(stream_id.as_bytes()))
    }
}

/// A namespace must make valid stream and bucket names.
pub fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty() && namespace.len() <= 32 && namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One subject token (also a valid key-value key) for any id: the id itself when it is made of
/// letters, digits, `-` and `_` only (every aggregate id is), otherwise `=` and its hex.
pub fn token(id: &[u8]) -> String {
    let plain = !id.is_empty() && id[0] != b'=' && id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    match std::str::from_utf8(id) {
        Ok(s) if plain => s.to_string(),
        _ => format!("={}", hex::encode(id)),
    }
}

/// The id a [`token`] stands for.
pub fn untoken(token: &str) -> Option<Vec<u8>> {
    match token.strip_prefix('=') {
        Some(hex) => hex::decode(hex).ok(),
        None => Some(token.as_bytes().to_vec()),
    }
}

/// An index key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An index change as commits wrote it before [`IndexChange`] (keys and values hex): still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Op", rename_all = "PascalCase")]
pub enum StoredIndexOp {
    Put { key: String, value: String },
    Delete { key: String },
    Add { key: String, by: i64 },
}

impl StoredIndexOp {
    pub fn decode(&self) -> Result<IndexOp, hex::FromHexError> {
        Ok(match self {
            StoredIndexOp::Put { key, value } => IndexOp::Put(hex::decode(key)?, hex::decode(value)?),
            StoredIndexOp::Delete { key } => IndexOp::Delete(hex::decode(key)?),
            StoredIndexOp::Add { key, by } => IndexOp::Add(hex::decode(key)?, *by),
        })
    }
}

/// Bytes in a commit: as text when they are UTF-8 and do not start with `=` (every index key,
/// and every index value but a counter's, is), otherwise `=` and their hex — read back by
/// [`untoken`], as [`token`]'s stricter form is.
///
/// Hex doubled the size of a commit's index values (each a resource's whole description), which
/// were most of its bytes: every commit is stored on three servers and delivered to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes(pub Vec<u8>);

impl Serialize for StoredBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) if !text.starts_with('=') => serializer.serialize_str(text),
            _ => serializer.serialize_str(&format!("={}", hex::encode(&self.0))),
        }
    }
}

impl<'de> Deserialize<'de> for StoredBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StoredBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("text, or `=` and hex")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StoredBytes, E> {
                untoken(text)
                    .map(StoredBytes)
                    .ok_or_else(|| E::custom("`=` followed by what is not hex"))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<StoredBytes, E> {
                if text.starts_with('=') {
                    self.visit_str(&text)
                } else {
                    Ok(StoredBytes(text.into_bytes()))
                }
            }
        }
        deserializer.deserialize_string(Visitor)
    }
}

/// An index change as stored in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Op", rename_all = "PascalCase")]
pub enum IndexChange {
    #[serde(rename_all = "PascalCase")]
    Put { key: StoredBytes, value: StoredBytes },
    #[serde(rename_all = "PascalCase")]
    Delete { key: StoredBytes },
    #[serde(rename_all = "PascalCase")]
    Add { key: StoredBytes, by: i64 },
}

impl From<&IndexOp> for IndexChange {
    fn from(op: &IndexOp) -> Self {
        match op {
            IndexOp::Put(k, v) => IndexChange::Put {
                key: StoredBytes(k.clone()),
                value: StoredBytes(v.clone()),
            },
            IndexOp::Delete(k) => IndexChange::Delete {
                key: StoredBytes(k.clone()),
            },
            IndexOp::Add(k, by) => IndexChange::Add {
                key: StoredBytes(k.clone()),
                by: *by,
            },
        }
    }
}

impl From<IndexChange> for IndexOp {
    fn from(change: IndexChange) -> Self {
        match change {
            IndexChange::Put { key, value } => IndexOp::Put(key.0, value.0),
            IndexChange::Delete { key } => IndexOp::Delete(key.0),
            IndexChange::Add { key, by } => IndexOp::Add(key.0, by),
        }
    }
}

/// One append as one message: its events (their `Position` and `Hash` left empty: the global
/// order is the stream sequence, known only once stored, and every node derives positions and
/// the chain from it), its index changes and its claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Commit {
    pub events: Vec<EventEnvelope>,
    /// Index changes as commits wrote them before `index` (hex): read, no longer written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_ops: Vec<StoredIndexOp>,
    /// The commit's index changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<IndexChange>,
    /// Claimed keys and their values (hex).
    #[serde(default)]
    pub claims: Vec<(String, String)>,
    /// Layout version of the derived index the index changes were computed for.
    #[serde(default)]
    pub index_layout: u64,
    /// The id of the aggregate's last event this commit was decided after (none for a creation;
    /// absent from commits written before it was recorded). With the versions, it makes the
    /// log's rule exact: a commit decided after a void one does not extend the head that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<uuid::Uuid>,
    /// Counters (hex keys) and the bounds each must be within with this commit: a commit that
    /// would take one out of them is void (absent from commits written before limits were
    /// recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<(String, i64, i64)>,
    /// The events in force instead of `events` when the limit it names is the first out of its
    /// bounds (absent from commits without one): same count, versions and ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<StoredFallback>,
    /// Whether its writer stores a snapshot of the aggregate with it (absent from commits written
    /// before this was recorded: unknown). A node activating an aggregate none of whose commits
    /// did skips the snapshot read, one request to the cluster fewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshotted: Option<bool>,
}

/// A commit's fallback (see [`crate::store::Fallback`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoredFallback {
    /// The index of the limit among the commit's `limits`.
    pub limit: usize,
    pub events: Vec<EventEnvelope>,
}

impl Commit {
    /// The events in force: the fallback's if the commit fell back to them (the view says).
    pub fn into_events(self, fell_back: bool) -> Vec<EventEnvelope> {
        match self.fallback {
            Some(fallback) if fell_back => fallback.events,
            _ => self.events,
        }
    }

    pub fn decode(sequence: u64, payload: &[u8]) -> Result<Self, StoreError> {
        let commit: Commit = serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
            key: format!("stream sequence {sequence}"),
            message: e.to_string(),
        })?;
        if commit.events.is_empty() {
            return Err(StoreError::Corrupt {
                key: format!("stream sequence {sequence}"),
                message: "a commit without events".into(),
            });
        }
        Ok(commit)
    }

    /// The commit's index changes (of either form), in order.
    pub fn take_index_changes(&mut self) -> Result<Vec<IndexOp>, hex::FromHexError> {
        let mut ops = self.index_ops.iter().map(StoredIndexOp::decode).collect::<Result<Vec<_>, _>>()?;
        ops.extend(std::mem::take(&mut self.index).into_iter().map(IndexOp::from));
        Ok(ops)
    }

    /// The claims as bytes.
    pub fn claimed(&self) -> Result<Vec<KeyValue>, hex::FromHexError> {
        self.claims.iter().map(|(k, v)| Ok((hex::decode(k)?, hex::decode(v)?))).collect()
    }

    /// The counter limits, keys as bytes.
    pub fn counter_limits(&self) -> Result<Vec<CounterLimit>, hex::FromHexError> {
        self.limits
            .iter()
            .map(|(k, at_least, at_most)| {
                Ok(CounterLimit {
                    key: hex::decode(k)?,
                    at_least: *at_least,
                    at_most: *at_most,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_plain_ids_and_encode_everything_else() {
        assert_eq!(token(b"phone-0123abcd"), "phone-0123abcd");
        assert_eq!(token(b"pool_1"), "pool_1");
        for odd in [&b"phone-v/b/1"[..], b"a.b", b"=x", b"", b"n/+1206", &[0xff, 0]] {
            let t = token(odd);
            assert!(t.starts_with('='), "{t}");
            assert!(t[1..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(untoken(&t).as_deref(), Some(odd));
        }
        assert_eq!(untoken("phone-1").as_deref(), Some(&b"phone-1"[..]));
    }

    #[test]
    fn index_changes_round_trip_through_their_stored_form() {
        let record = br#"{"PhoneNumberId":"phone-1","Status":"ACTIVE"}"#.to_vec();
        for op in [
            IndexOp::Put(b"v/1/us-east-1/phone-number/phone-1".to_vec(), record.clone()),
            IndexOp::Put(b"v/\x00\xff".to_vec(), b"=not hex".to_vec()),
            IndexOp::Delete(b"n/+1".to_vec()),
            IndexOp::Add(b"c/1".to_vec(), -3),
            IndexOp::Put(b"c/2".to_vec(), 7i64.to_be_bytes().to_vec()),
        ] {
            let json = serde_json::to_string(&IndexChange::from(&op)).expect("json");
            let back: IndexChange = serde_json::from_str(&json).expect("parse");
            assert_eq!(IndexOp::from(back), op, "{json}");
        }
        // Text stays text (escaped, not hex); other bytes, and text that would read as hex, are hex.
        let json = serde_json::to_string(&IndexChange::from(&IndexOp::Put(b"v/a".to_vec(), record))).expect("json");
        assert_eq!(
            json,
            r#"{"Op":"Put","Key":"v/a","Value":"{\"PhoneNumberId\":\"phone-1\",\"Status\":\"ACTIVE\"}"}"#
        );
        let json = serde_json::to_string(&IndexChange::from(&IndexOp::Put(b"=x".to_vec(), vec![0, 255]))).expect("json");
        assert_eq!(json, r#"{"Op":"Put","Key":"=3d78","Value":"=00ff"}"#);
        // Hex that is not hex is a clear error.
        assert!(serde_json::from_str::<IndexChange>(r#"{"Op":"Delete","Key":"=zz"}"#).is_err());
    }

    #[test]
    fn commits_written_with_hex_index_changes_are_still_read() {
        let old = r#"{"Events":[],"IndexOps":[{"Op":"Put","key":"762f61","value":"7b7d"},{"Op":"Add","key":"632f31","by":2},{"Op":"Delete","key":"6e2f2b31"}]}"#;
        let mut commit: Commit = serde_json::from_str(old).expect("parse");
        assert_eq!(
            commit.take_index_changes().expect("hex"),
            [
                IndexOp::Put(b"v/a".to_vec(), b"{}".to_vec()),
                IndexOp::Add(b"c/1".to_vec(), 2),
                IndexOp::Delete(b"n/+1".to_vec())
            ]
        );
        let damaged = r#"{"Events":[],"IndexOps":[{"Op":"Delete","key":"zz"}]}"#;
        let mut commit: Commit = serde_json::from_str(damaged).expect("parse");
        assert!(commit.take_index_changes().is_err());
    }

    #[test]
    fn a_damaged_commit_is_a_clear_error() {
        assert!(matches!(Commit::decode(7, b"{\"Events\":[]}"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(Commit::decode(7, b"\xff"), Err(StoreError::Corrupt { .. })));
    }
}
