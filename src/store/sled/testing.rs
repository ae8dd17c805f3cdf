//! Direct access to a closed log's sled files, for tests that damage it the way an intruder or a
//! failing disk would (and only for that: nothing in the service uses it). Each function opens the
//! directory itself, so the store must be closed.

use std::path::Path;

use super::{open_sled, stream_key};
use crate::store::StoreError;

fn open(dir: &Path) -> Result<::sled::Db, StoreError> {
    Ok(open_sled(dir, 16 * 1024 * 1024)?)
}

/// Rewrites the stored bytes of one event with `damage`, as it is on disk.
pub fn tamper_with_event(dir: &Path, stream_id: &str, version: u64, damage: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let db = open(dir)?;
    let streams = db.open_tree("streams")?;
    let key = stream_key(stream_id, version);
    let mut bytes = streams
        .get(&key)?
        .ok_or_else(|| StoreError::Corrupt {
            key: format!("{stream_id}@{version}"),
            message: "no such event".into(),
        })?
        .to_vec();
    damage(&mut bytes);
    streams.insert(key, bytes)?;
    db.flush()?;
    Ok(())
}

/// Deletes the derived index (the server rebuilds it from the log on start).
pub fn drop_index(dir: &Path) -> Result<(), StoreError> {
    let db = open(dir)?;
    db.drop_tree("index")?;
    db.flush()?;
    Ok(())
}

/// Rewrites the stored snapshot of a stream with `damage`.
pub fn tamper_with_snapshot(dir: &Path, stream_id: &str, damage: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let db = open(dir)?;
    let snapshots = db.open_tree("snapshots")?;
    let mut bytes = snapshots
        .get(stream_id.as_bytes())?
        .ok_or_else(|| StoreError::Corrupt {
            key: format!("snapshot {stream_id}"),
            message: "no such snapshot".into(),
        })?
        .to_vec();
    damage(&mut bytes);
    snapshots.insert(stream_id.as_bytes(), bytes)?;
    db.flush()?;
    Ok(())
}
