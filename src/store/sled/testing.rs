//! Direct access to a closed log's sled files, for tests that damage it the way an intruder or a
//! failing disk would (and only for that: nothing in the service uses it). Each function opens the
//! directory itself, so the store must be closed.

use std::path::Path;

use super::{open_sled, stream_key};
use crate::store::StoreError;

/// Rewrites the stored bytes under `key` of `tree` with `damage`.
fn tamper(dir: &Path, tree: &str, key: &[u8], what: &str, damage: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let db = open_sled(dir, 16 * 1024 * 1024, crate::store::Durability::Flush)?;
    let tree = db.open_tree(tree)?;
    let mut bytes = tree
        .get(key)?
        .ok_or_else(|| StoreError::Corrupt {
            key: what.to_string(),
            message: "nothing stored there".into(),
        })?
        .to_vec();
    damage(&mut bytes);
    tree.insert(key, bytes)?;
    db.flush()?;
    Ok(())
}

/// Rewrites the stored bytes of one event with `damage`, as it is on disk.
pub fn tamper_with_event(dir: &Path, stream_id: &str, version: u64, damage: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let what = format!("{stream_id}@{version}");
    tamper(dir, "streams", &stream_key(stream_id, version), &what, damage)
}

/// Stores `bytes` as event `version` of `stream_id`, beside the feed (as an intruder with the files
/// could: the stream's head moves, nothing else does).
pub fn forge_event(dir: &Path, stream_id: &str, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
    let db = open_sled(dir, 16 * 1024 * 1024, crate::store::Durability::Flush)?;
    db.open_tree("streams")?.insert(stream_key(stream_id, version), bytes)?;
    db.flush()?;
    Ok(())
}

/// Rewrites the stored snapshot of a stream with `damage`.
pub fn tamper_with_snapshot(dir: &Path, stream_id: &str, damage: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let what = format!("snapshot {stream_id}");
    tamper(dir, "snapshots", stream_id.as_bytes(), &what, damage)
}

/// Deletes the derived index (the server rebuilds it from the log on start).
pub fn drop_index(dir: &Path) -> Result<(), StoreError> {
    let db = open_sled(dir, 16 * 1024 * 1024, crate::store::Durability::Flush)?;
    db.drop_tree("index")?;
    db.flush()?;
    Ok(())
}
