//! Snapshots in the key-value bucket, whole or in parts.
//!
//! A NATS message is at most the server's `max_payload` (1 MiB unless configured), and the
//! snapshot of an opt-out list of 13,500 numbers is bigger. A snapshot that fits is the value of
//! its stream's key, as it always was. One that does not is cut into parts, each under its own
//! key (`<key>.<commit sequence>.<n>`), and the stream's key holds a manifest naming them with
//! their total length and SHA-256; the manifest is written last, so a reader finds either the old
//! snapshot or the whole new one. Parts carry the sequence of the commit they follow, so two
//! nodes snapshotting one stream at once never mix their parts. A snapshot never replaces one of
//! a later commit, and the writer of a new one purges the parts of earlier commits, whether a
//! replaced manifest named them or a writer stopped before naming them (a purge, not a delete:
//! it leaves no marker behind per key).
//!
//! Reading is bounded: a manifest may name at most [`MAX_SNAPSHOT_BYTES`] in parts of at least
//! [`MIN_PART`] bytes, each part must be as long as the manifest says, and the whole must hash to
//! its SHA-256, or the snapshot is `StoreError::Corrupt` (a cache entry: the stream is replayed
//! instead).

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

/// The smallest part a manifest may name (a forged one naming a million 1-byte parts would cost
/// a reader a million round trips).
const MIN_PART: u64 = 4 * 1024;

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
    /// Every part's length but the last's, which holds the rest.
    part_size: u64,
    bytes: u64,
    sha256: String,
}

/// A manifest starts so; a whole snapshot (an object with `Version` first) never does.
const MANIFEST_START: &[u8] = b"{\"Parts\":";

impl Parts {
    fn key(&self, key: &str, n: u64) -> String {
        format!("{key}.{}.{n}", self.sequence)
    }

    /// How long part `n` must be; `None` if the manifest does not add up.
    fn length_of(&self, n: u64) -> Option<u64> {
        let whole = self.part_size >= MIN_PART && self.bytes <= MAX_SNAPSHOT_BYTES && self.bytes.div_ceil(self.part_size) == self.count;
        match n {
            _ if !whole || n == 0 || n > self.count => None,
            _ if n < self.count => Some(self.part_size),
            _ => Some(self.bytes - self.part_size * (self.count - 1)),
        }
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
    js.client()
        .server_info()
        .max_payload
        .saturating_sub(HEADROOM)
        .max(MIN_PART as usize)
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
/// A snapshot never replaces one of a later commit (two nodes may finish their appends out of
/// order). The key is replaced only if it still holds what was read before the parts were
/// written (a compare-and-set on its revision): a writer refused so purges its own parts (one
/// that got no answer leaves them, as its manifest may yet land). The winner sweeps the key's parts of earlier commits: those of the snapshot it replaced,
/// and those a writer left behind when it stopped between writing them and settling its manifest.
/// No writer still at work can own those (it would have read a later snapshot than its own and
/// given up, or its compare-and-set fails); parts of later commits are left to their writer.
pub(super) async fn keep(
    js: &jetstream::Context,
    bucket: &kv::Store,
    bucket_name: &str,
    stream_id: &str,
    stored: &StoredSnapshot,
) -> Result<(), StoreError> {
    let key = key_of(stream_id);
    // The key's last message, a delete or purge marker too: its revision is what a
    // compare-and-set must name.
    let before = kv_entry(js, bucket_name, &key).await?;
    let revision = before.as_ref().map_or(0, |e| e.revision);
    let replaced = before.as_ref().filter(|e| e.put).map(|e| follows(&e.value, stream_id));
    if replaced.is_some_and(|r| r.sequence >= stored.sequence) {
        return Ok(());
    }
    let bytes = serde_json::to_vec(stored).map_err(backend)?;
    let size = part_size(js);
    let (value, written) = if bytes.len() <= size {
        (bytes, None)
    } else {
        let parts = Parts {
            sequence: stored.sequence,
            count: bytes.len().div_ceil(size) as u64,
            part_size: size as u64,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        for (n, part) in (1..).zip(bytes.chunks(size)) {
            if let Err(e) = bucket.put(parts.key(&key, n), bytes::Bytes::copy_from_slice(part)).await {
                purge_parts(js, bucket_name, &key, parts.sequence, stream_id).await;
                return Err(backend(e));
            }
        }
        (
            serde_json::to_vec(&Manifest { parts: parts.clone() }).map_err(backend)?,
            Some(parts),
        )
    };
    let landed = match bucket.update(&key, value.into(), revision).await {
        Ok(_) => true,
        // Another node kept a snapshot of this stream meanwhile: as good as this one.
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
        // No answer is not a refusal: the manifest may be stored, its acknowledgement lost in a
        // failover, or still be on its way (a proposal the key does not show yet). Its parts are
        // left alone; if no manifest names them, the next snapshot's sweep purges them.
        Err(e) => return Err(backend(e)),
    };
    match (landed, &written) {
        // Parts of earlier commits can only be there if a snapshot was ever kept in parts: if
        // this one is, or the one it replaced was.
        (true, _) if written.is_some() || replaced.is_some_and(|r| r.in_parts) => {
            sweep_parts(js, bucket_name, &key, stored.sequence, stream_id).await
        }
        (false, Some(parts)) => purge_parts(js, bucket_name, &key, parts.sequence, stream_id).await,
        _ => {}
    }
    Ok(())
}

/// What a key's value says of the snapshot it holds.
#[derive(Debug, Clone, Copy)]
struct Follows {
    /// The commit the snapshot follows.
    sequence: u64,
    in_parts: bool,
}

/// The commit the snapshot `value` follows. A value that cannot be read follows none: it is
/// replaced, and it names no parts this writer could purge.
fn follows(value: &[u8], stream_id: &str) -> Follows {
    /// The one field of a whole snapshot needed here (the state is skipped, not kept).
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Sequence {
        sequence: u64,
    }
    match manifest(value, stream_id) {
        Ok(Some(parts)) => Follows {
            sequence: parts.sequence,
            in_parts: true,
        },
        _ => Follows {
            sequence: serde_json::from_slice::<Sequence>(value).map_or(0, |s| s.sequence),
            in_parts: false,
        },
    }
}

/// The most part subjects of one key a sweep looks at (a key holds the parts of one snapshot,
/// plus those of the rare writer that stopped half way).
const SWEEP_LIMIT: usize = 10_000;

/// Purges the key's parts of commits before `sequence`. Like a purge, a failure only costs room,
/// so it is only said in the log.
async fn sweep_parts(js: &jetstream::Context, bucket_name: &str, key: &str, sequence: u64, stream_id: &str) {
    use futures_util::StreamExt;
    let prefix = format!("$KV.{bucket_name}.{key}.");
    let listed = async {
        let stream = js.get_stream(format!("KV_{bucket_name}")).await.map_err(backend)?;
        let mut subjects = stream.info_with_subjects(format!("{prefix}>")).await.map_err(backend)?;
        let mut earlier = std::collections::BTreeSet::new();
        let mut seen = 0;
        while let Some(listed) = subjects.next().await {
            let (subject, _) = listed.map_err(backend)?;
            let of = subject
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('.').next()?.parse::<u64>().ok());
            earlier.extend(of.filter(|s| *s < sequence));
            seen += 1;
            if seen >= SWEEP_LIMIT {
                break;
            }
        }
        Ok::<_, StoreError>(earlier)
    };
    match listed.await {
        Ok(earlier) => {
            for of in earlier {
                purge_parts(js, bucket_name, key, of, stream_id).await;
            }
        }
        Err(e) => tracing::warn!(stream = %stream_id, error = %crate::error_chain(&e), "cannot list the parts of earlier snapshots"),
    }
}

/// Removes the key's parts of the snapshot of the commit at `sequence`. A failure leaves them
/// behind (no snapshot names them), so it is only said in the log.
async fn purge_parts(js: &jetstream::Context, bucket_name: &str, key: &str, sequence: u64, stream_id: &str) {
    let subjects = format!("$KV.{bucket_name}.{key}.{sequence}.>");
    let purged = async {
        let stream = js.get_stream(format!("KV_{bucket_name}")).await.map_err(backend)?;
        stream.purge().filter(subjects).await.map_err(backend)
    };
    if let Err(e) = purged.await {
        tracing::warn!(stream = %stream_id, sequence, error = %crate::error_chain(&e), "cannot purge the parts of a snapshot no longer named");
    }
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

/// The bytes `parts` name, checked against the manifest; `None` if a part is missing. Memory
/// grows with the parts read, not with what the manifest claims.
async fn assemble(
    js: &jetstream::Context,
    bucket_name: &str,
    key: &str,
    parts: &Parts,
    stream_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    if parts.length_of(1).is_none() {
        return Err(corrupt(
            stream_id,
            format!(
                "a manifest of {} parts of {} bytes, {} bytes in all",
                parts.count, parts.part_size, parts.bytes
            ),
        ));
    }
    let mut bytes = Vec::new();
    for n in 1..=parts.count {
        let Some(part) = kv_entry(js, bucket_name, &parts.key(key, n)).await?.filter(|e| e.put) else {
            return Ok(None);
        };
        let expected = parts.length_of(n).unwrap_or(0);
        if part.value.len() as u64 != expected {
            return Err(corrupt(
                stream_id,
                format!("part {n} holds {} bytes, its manifest says {expected}", part.value.len()),
            ));
        }
        bytes.extend_from_slice(&part.value);
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
            part_size: 8192,
            bytes: 10_000,
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

    /// A manifest says how long each part is; one that does not add up names no part.
    #[test]
    fn a_manifest_that_does_not_add_up_names_no_part() {
        let parts = |count, part_size, bytes| Parts {
            sequence: 1,
            count,
            part_size,
            bytes,
            sha256: String::new(),
        };
        let good = parts(3, 8192, 20_000);
        assert_eq!([1, 2, 3, 4].map(|n| good.length_of(n)), [Some(8192), Some(8192), Some(3616), None]);
        assert_eq!(parts(4, 8192, 20_000).length_of(1), None, "too many parts");
        assert_eq!(parts(20_000, 1, 20_000).length_of(1), None, "parts too small");
        assert_eq!(parts(2, MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_BYTES + 1).length_of(1), None, "too big");
        assert_eq!(parts(0, 8192, 0).length_of(1), None);
    }
}
