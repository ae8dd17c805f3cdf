//! Snapshots in the key-value bucket, whole or in parts.
//!
//! A NATS message is at most the server's `max_payload` (1 MiB unless configured), and the
//! snapshot of an opt-out list of 15,000 numbers is bigger. A snapshot that fits is the value of
//! its stream's key, as it always was. One that does not is cut into parts, each under its own
//! key (`<key>.<commit sequence>.<n>`), and the stream's key holds a manifest naming them with
//! their total length and SHA-256; the manifest is written last, so a reader finds either the old
//! snapshot or the whole new one. Parts carry the sequence of the commit they follow, so two
//! nodes snapshotting one stream at once never mix their parts; the parts a manifest no longer
//! names are purged (not deleted: a purge leaves no marker behind per key).
//!
//! Reading is bounded: a manifest may name at most [`MAX_SNAPSHOT_BYTES`], each part must be as
//! long as the manifest says, and the whole must hash to its SHA-256, or the snapshot is
//! `StoreError::Corrupt` (a cache entry: the stream is replayed instead).

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stored::kv_entry;
use super::{backend, wire, StoredSnapshot};
use crate::store::StoreError;

/// The most a snapshot in parts may hold: a manifest naming more is not believed.
pub(super) const MAX_SNAPSHOT_BYTES: u64 = 512 * 1024 * 1024;

/// Room left in each part for the message's subject and headers.
const HEADROOM: usize = 16 * 1024;

/// What the stream's key holds when its snapshot is in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Manifest {
    parts: Parts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Parts {
    /// The commit the snapshot follows (it names the parts' keys).
    sequence: u64,
    count: u64,
    bytes: u64,
    sha256: String,
}

/// A manifest starts so; a whole snapshot (an object with `Version` first) never does.
const MANIFEST_START: &[u8] = b"{\"Parts\":";

impl Parts {
    fn key(&self, key: &str, n: u64) -> String {
        format!("{key}.{}.{n}", self.sequence)
    }
}

/// The key of `stream_id`'s snapshot.
fn key_of(stream_id: &str) -> String {
    wire::token(stream_id.as_bytes())
}

/// Whether a key of the bucket is a part of a snapshot rather than a stream's own key (a
/// stream's token never holds a `.`).
pub(super) fn is_part(key: &str) -> bool {
    key.contains('.')
}

/// The largest part a connection to `js`'s server may publish.
fn part_size(js: &jetstream::Context) -> usize {
    js.client().server_info().max_payload.saturating_sub(HEADROOM).max(HEADROOM)
}

/// The manifest `value` is, if it is one.
fn manifest(value: &[u8], stream_id: &str) -> Result<Option<Parts>, StoreError> {
    if !value.starts_with(MANIFEST_START) {
        return Ok(None);
    }
    let manifest: Manifest = serde_json::from_slice(value).map_err(|e| corrupt(stream_id, e.to_string()))?;
    Ok(Some(manifest.parts))
}

fn corrupt(stream_id: &str, message: String) -> StoreError {
    StoreError::Corrupt {
        key: format!("snapshot of {stream_id}"),
        message,
    }
}

/// Keeps `stored` as `stream_id`'s snapshot, in parts if it does not fit in one message.
///
/// The key is replaced only if it still holds what was read before the parts were written (a
/// compare-and-set on its revision): a writer that lost to another purges its own parts, the
/// winner those of the snapshot it replaced, so parts are left behind only by a crash between
/// writing them and the manifest.
pub(super) async fn keep(
    js: &jetstream::Context,
    bucket: &kv::Store,
    bucket_name: &str,
    stream_id: &str,
    stored: &StoredSnapshot,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(stored).map_err(backend)?;
    let key = key_of(stream_id);
    let before = kv_entry(js, bucket_name, &key).await?;
    let revision = before.as_ref().map_or(0, |e| e.revision);
    let replaced = before.filter(|e| e.put).and_then(|e| manifest(&e.value, stream_id).ok().flatten());
    let size = part_size(js);
    let (value, written) = if bytes.len() <= size {
        (bytes, None)
    } else {
        let parts = Parts {
            sequence: stored.sequence,
            count: bytes.len().div_ceil(size) as u64,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        for (n, part) in (1..).zip(bytes.chunks(size)) {
            bucket
                .put(parts.key(&key, n), bytes::Bytes::copy_from_slice(part))
                .await
                .map_err(backend)?;
        }
        (
            serde_json::to_vec(&Manifest { parts: parts.clone() }).map_err(backend)?,
            Some(parts),
        )
    };
    let unnamed = match bucket.update(&key, value.into(), revision).await {
        Ok(_) => replaced.filter(|old| written.as_ref().is_none_or(|new| new.sequence != old.sequence)),
        // Another node kept a snapshot of this stream meanwhile: as good as this one.
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => written,
        Err(e) => {
            if let Some(parts) = written {
                let _ = purge_parts(js, bucket_name, &key, &parts).await;
            }
            return Err(backend(e));
        }
    };
    match unnamed {
        Some(parts) => purge_parts(js, bucket_name, &key, &parts).await,
        None => Ok(()),
    }
}

/// Removes `parts` from the bucket.
async fn purge_parts(js: &jetstream::Context, bucket_name: &str, key: &str, parts: &Parts) -> Result<(), StoreError> {
    let stream = js.get_stream(format!("KV_{bucket_name}")).await.map_err(backend)?;
    let subjects = format!("$KV.{bucket_name}.{key}.{}.>", parts.sequence);
    stream.purge().filter(subjects).await.map_err(backend)?;
    Ok(())
}

/// Tries of a read of parts that its writer replaced meanwhile.
const READ_TRIES: usize = 3;

/// `stream_id`'s snapshot, whole or put together from its parts.
pub(super) async fn read(js: &jetstream::Context, bucket_name: &str, stream_id: &str) -> Result<Option<StoredSnapshot>, StoreError> {
    let key = key_of(stream_id);
    for _ in 0..READ_TRIES {
        let Some(entry) = kv_entry(js, bucket_name, &key).await?.filter(|e| e.put) else {
            return Ok(None);
        };
        let Some(parts) = manifest(&entry.value, stream_id)? else {
            return serde_json::from_slice(&entry.value)
                .map(Some)
                .map_err(|e| corrupt(stream_id, e.to_string()));
        };
        match assemble(js, bucket_name, &key, &parts, stream_id).await? {
            Some(bytes) => {
                return serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| corrupt(stream_id, e.to_string()))
            }
            // A part is gone: its writer (another node, say) replaced the snapshot after this
            // read its manifest. The new manifest names parts that are there.
            None => continue,
        }
    }
    Err(corrupt(stream_id, format!("its parts were missing {READ_TRIES} times in a row")))
}

/// The bytes `parts` name, checked against the manifest; `None` if a part is missing.
async fn assemble(
    js: &jetstream::Context,
    bucket_name: &str,
    key: &str,
    parts: &Parts,
    stream_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    if parts.bytes > MAX_SNAPSHOT_BYTES || parts.count == 0 || parts.count > parts.bytes {
        return Err(corrupt(
            stream_id,
            format!("a manifest of {} parts and {} bytes", parts.count, parts.bytes),
        ));
    }
    let mut bytes = Vec::with_capacity(parts.bytes as usize);
    for n in 1..=parts.count {
        let Some(part) = kv_entry(js, bucket_name, &parts.key(key, n)).await?.filter(|e| e.put) else {
            return Ok(None);
        };
        if (bytes.len() + part.value.len()) as u64 > parts.bytes {
            return Err(corrupt(
                stream_id,
                format!("its parts hold more than the {} bytes its manifest says", parts.bytes),
            ));
        }
        bytes.extend_from_slice(&part.value);
    }
    if bytes.len() as u64 != parts.bytes {
        return Err(corrupt(
            stream_id,
            format!("its parts hold {} bytes, its manifest says {}", bytes.len(), parts.bytes),
        ));
    }
    if hex::encode(Sha256::digest(&bytes)) != parts.sha256 {
        return Err(corrupt(stream_id, "its parts do not hash to its manifest's SHA-256".into()));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_told_from_a_whole_snapshot_by_its_start() {
        let parts = Parts {
            sequence: 7,
            count: 2,
            bytes: 10,
            sha256: "00".into(),
        };
        let written = serde_json::to_vec(&Manifest { parts: parts.clone() }).expect("encode");
        assert!(written.starts_with(MANIFEST_START));
        assert_eq!(manifest(&written, "s").expect("read"), Some(parts.clone()));
        let whole = serde_json::to_vec(&StoredSnapshot {
            snapshot: crate::store::Snapshot {
                version: 1,
                schema_version: 1,
                state: serde_json::json!({ "Parts": 1 }),
            },
            sequence: 3,
        })
        .expect("encode");
        assert_eq!(manifest(&whole, "s").expect("read"), None);
        assert_eq!(parts.key("phone-1", 2), "phone-1.7.2");
        assert!(is_part(&parts.key("phone-1", 2)) && !is_part(&key_of("zz/odd")));
    }
}
