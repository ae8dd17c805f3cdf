//! The durable mark: how far the embedded log had got (the feed position and its chain hash),
//! written beside it about once a second in a small file of its own (replaced atomically, synced).
//! At start-up the log must still reach the mark with the same hash. A log that ends before it
//! has lost events that were acknowledged (a truncated file that sled reads without complaint
//! starts on an earlier state), and one with another hash there was rewritten: either way the
//! server refuses to start, naming the damage, rather than take writes on a partial history.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{EventStore, Store, StoreError};

/// The file, in the data directory.
const FILE: &str = "durable-mark.json";
/// How often the mark is brought up to date (events acknowledged since may be lost unnoticed by
/// a later truncation; nothing older can be).
const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct Mark {
    position: u64,
    hash: String,
}

/// Why the log does not reach its mark.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(
        "the log has lost acknowledged events: it ends at position {ends_at}, but had reached position {had} \
         (recorded in {file}). It was damaged (truncated?) while stopped; nothing was changed. Check a copy with \
         `phone-ledger audit verify --data-dir DIR`, and restore the data directory from a backup or an export"
    )]
    Lost { ends_at: u64, had: u64, file: PathBuf },
    #[error(
        "the log was rewritten: the event at position {position} no longer has the hash recorded in {file}. \
         Nothing was changed. Check a copy with `phone-ledger audit verify --data-dir DIR`"
    )]
    Rewritten { position: u64, file: PathBuf },
    #[error("cannot read the log to compare it with its mark")]
    Store(#[from] StoreError),
}

impl MarkError {
    /// The damage as `audit verify` reports a break: the first position lost or rewritten.
    pub fn broken_link(&self) -> crate::audit::verify::BrokenLink {
        let position = match self {
            MarkError::Lost { ends_at, .. } => ends_at + 1,
            MarkError::Rewritten { position, .. } => *position,
            MarkError::Store(_) => 0,
        };
        crate::audit::verify::BrokenLink {
            position,
            stream_id: None,
            version: None,
            problem: self.to_string(),
        }
    }
}

/// Checks that the log in `dir` reaches its mark (no mark yet: nothing to check).
pub async fn check(store: &dyn EventStore, dir: &Path) -> Result<(), MarkError> {
    let file = dir.join(FILE);
    let Some(mark) = read(&file) else { return Ok(()) };
    let head = store.chain_head().await?;
    if head.position < mark.position {
        return Err(MarkError::Lost {
            ends_at: head.position,
            had: mark.position,
            file,
        });
    }
    if mark.position > 0 {
        let at = store.read_feed(mark.position - 1, 1).await?;
        if at.first().is_none_or(|e| e.hash != mark.hash) {
            return Err(MarkError::Rewritten {
                position: mark.position,
                file,
            });
        }
    }
    Ok(())
}

fn read(file: &Path) -> Option<Mark> {
    let bytes = std::fs::read(file).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(mark) => Some(mark),
        Err(e) => {
            // The mark is a safeguard, not the log: an unreadable one is replaced.
            tracing::warn!(file = %file.display(), error = %e, "ignoring an unreadable durable mark");
            None
        }
    }
}

fn write(file: &Path, mark: &Mark) -> std::io::Result<()> {
    use std::io::Write;
    // One write at a time (the ticker's, already on its blocking thread, and the stop's), and
    // never back: a mark further than this one stays.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    if read(file).is_some_and(|there| there.position > mark.position) {
        return Ok(());
    }
    let tmp = file.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(&serde_json::to_vec(mark).map_err(std::io::Error::other)?)?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)?;
    // The rename itself is durable only once the directory is.
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Keeps the mark of a log up to date while the server runs, and brings it to the log's last
/// acknowledged position when the server stops.
pub struct MarkKeeper {
    store: Store,
    file: PathBuf,
    durable: tokio::sync::watch::Receiver<u64>,
    task: actix_rt::task::JoinHandle<()>,
}

impl MarkKeeper {
    /// Writes the mark at the last acknowledged position, once the server has stopped taking
    /// appends and before the log is closed: a clean stop leaves no acknowledged event outside
    /// the mark.
    pub async fn finish(self) {
        self.task.abort();
        let position = *self.durable.borrow();
        if let Err(e) = mark_at(&self.store, &self.file, position).await {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot write the durable mark at the stop");
        }
    }
}

impl Drop for MarkKeeper {
    /// The log is closing without a clean stop (its storage failed): the mark stays where it is.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the mark of `store` at `position` (nothing at position 0).
async fn mark_at(store: &Store, file: &Path, position: u64) -> Result<(), String> {
    if position == 0 {
        return Ok(());
    }
    let at = store.read_feed(position - 1, 1).await.map_err(|e| crate::error_chain(&e))?;
    let Some(event) = at.into_iter().next() else {
        return Err(format!("the log has no event at position {position}"));
    };
    let mark = Mark {
        position,
        hash: event.hash,
    };
    let target = file.to_path_buf();
    // On a blocking thread: the syncs must not hold a worker.
    match tokio::task::spawn_blocking(move || write(&target, &mark)).await {
        Ok(written) => written.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps the mark of `store` in `dir` up to date while the server runs; `None` when the store
/// takes no appends.
pub fn keep(store: Store, dir: PathBuf) -> Option<MarkKeeper> {
    // Only what was acknowledged: the writer publishes a position once its batch is durable,
    // while the log's own head may already hold a batch whose flush failed (a full disk), which
    // nobody was told had succeeded and which the disk may not have.
    let durable = store.watch_head()?;
    let file = dir.join(FILE);
    let task = {
        let (store, file, mut durable) = (store.clone(), file.clone(), durable.clone());
        actix_rt::spawn(async move {
            let mut written = None;
            loop {
                tokio::time::sleep(EVERY).await;
                let position = *durable.borrow_and_update();
                if position == 0 || written == Some(position) {
                    continue;
                }
                match mark_at(&store, &file, position).await {
                    Ok(()) => written = Some(position),
                    // Tried again at the next tick: a mark that stopped moving silently would
                    // weaken the start-up check without anyone knowing.
                    Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot write the durable mark"),
                }
            }
        })
    };
    Some(MarkKeeper {
        store,
        file,
        durable,
        task,
    })
}
