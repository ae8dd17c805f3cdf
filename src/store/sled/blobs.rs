//! Making sled's blob files durable with the log.
//!
//! sled writes a log item bigger than a quarter of a log segment (128 KiB by default: a tree
//! node holding a big snapshot, or many big events) to a file of its own, `blobs/<lsn>`, and
//! puts only a pointer in the log. Its flush syncs the log, never those files: after a power
//! loss the log may point at a blob that never reached the disk, and sled then reads the log
//! without that node (a test in this module's parent shows the value simply gone). So the writer
//! syncs the blob files itself, before its flush (what its batch wrote: durable before any
//! pointer to it is) and after (what other threads wrote meanwhile, sled rewriting nodes as it
//! reads), with the directory that names them.
//!
//! Blob files are named by their log sequence number, which only grows; [`BlobFiles`] keeps the
//! highest one synced and syncs those above it. One found in the first pass may still be being
//! written by another thread, so the files found in a pass are synced once more in the next.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The blob files of one sled directory, and how far they are synced.
pub(crate) struct BlobFiles {
    dir: PathBuf,
    /// Every blob at or below this number is synced (shared: tests read it from another thread).
    synced_through: Arc<AtomicU64>,
    /// The blobs the last pass found new, synced again by the next.
    last_found: Vec<u64>,
}

impl BlobFiles {
    pub(crate) fn new(sled_dir: PathBuf) -> Self {
        BlobFiles {
            dir: sled_dir.join("blobs"),
            synced_through: Arc::new(AtomicU64::new(0)),
            last_found: Vec::new(),
        }
    }

    /// Syncs the blob files above the ones already synced (and those the last pass found), and
    /// the directory if any was; how many files it synced.
    pub(crate) fn sync_new(&mut self) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // No blob written yet: sled makes the directory when it writes the first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            // sled names every blob by its number; anything else there is not one of its files.
            let Some(lsn) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if lsn > self.synced_through.load(Ordering::SeqCst) {
                found.push(lsn);
            }
        }
        let again = std::mem::take(&mut self.last_found);
        let mut synced = 0;
        for lsn in found.iter().chain(again.iter().filter(|l| !found.contains(l))) {
            match File::open(self.dir.join(lsn.to_string())) {
                Ok(file) => {
                    file.sync_all()?;
                    synced += 1;
                }
                // Removed by sled meanwhile (its node rewritten and the old one collected).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if synced > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        self.synced_through
            .fetch_max(found.iter().copied().max().unwrap_or(0), Ordering::SeqCst);
        self.last_found = found;
        Ok(synced)
    }

    /// The highest blob number synced, as it moves.
    #[cfg(test)]
    pub(crate) fn synced_through(&self) -> Arc<AtomicU64> {
        self.synced_through.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blobs_are_synced_once_more_then_no_longer() {
        let dir = tempfile::tempdir().expect("dir");
        let mut blobs = BlobFiles::new(dir.path().to_path_buf());
        assert_eq!(blobs.sync_new().expect("no directory yet"), 0);
        std::fs::create_dir(dir.path().join("blobs")).expect("blobs");
        for name in ["100", "250", "not-a-blob"] {
            std::fs::write(dir.path().join("blobs").join(name), b"x").expect("write");
        }
        assert_eq!(blobs.sync_new().expect("sync"), 2);
        assert_eq!(blobs.synced_through().load(Ordering::SeqCst), 250);
        // Found last time: synced again (its writer may not have finished it then).
        assert_eq!(blobs.sync_new().expect("sync"), 2);
        assert_eq!(blobs.sync_new().expect("sync"), 0, "then left alone");
        std::fs::write(dir.path().join("blobs").join("300"), b"x").expect("write");
        std::fs::remove_file(dir.path().join("blobs").join("100")).expect("remove");
        assert_eq!(blobs.sync_new().expect("sync"), 1, "only the new one");
        std::fs::remove_file(dir.path().join("blobs").join("300")).expect("remove");
        assert_eq!(blobs.sync_new().expect("a blob gone meanwhile"), 0);
        assert_eq!(blobs.synced_through().load(Ordering::SeqCst), 300);
    }
}
