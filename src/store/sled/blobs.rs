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
//! Each pass syncs the blob files it has not synced yet, and once more those the last pass found
//! new (one may still have been being written by another thread then). A file's number is fixed
//! before the file is made, so numbers do not tell new files from old: the names synced are kept
//! (as many as the directory holds: sled removes the files of nodes rewritten since).
//!
//! What this cannot order: sled writes a full log buffer to its file in the middle of a commit,
//! and may then make it durable before the writer's next pass; a blob written in that window
//! has its pointer durable first. The window is one buffer's write; the writer's passes close
//! every other one.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The blob files of one sled directory, and which are synced.
pub(crate) struct BlobFiles {
    dir: PathBuf,
    /// The blob files synced, of those the directory still holds.
    synced: BTreeSet<u64>,
    /// The blobs the last pass found new, synced again by the next.
    last_found: Vec<u64>,
    /// The highest blob number synced (shared: tests read it from another thread).
    synced_through: Arc<AtomicU64>,
}

impl BlobFiles {
    pub(crate) fn new(sled_dir: PathBuf) -> Self {
        BlobFiles {
            dir: sled_dir.join("blobs"),
            synced: BTreeSet::new(),
            last_found: Vec::new(),
            synced_through: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Syncs the blob files not synced yet (and those the last pass found), and the directory if
    /// any was; how many files it synced.
    pub(crate) fn sync_new(&mut self) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // No blob written yet: sled makes the directory when it writes the first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut present = BTreeSet::new();
        for entry in entries {
            // sled names every blob by its number; anything else there is not one of its files.
            if let Some(lsn) = entry?.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                present.insert(lsn);
            }
        }
        let found: Vec<u64> = present.difference(&self.synced).copied().collect();
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
        // Names of files gone are forgotten: the set is as big as the directory.
        self.synced = present;
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
        let blob = |name: &str| dir.path().join("blobs").join(name);
        let mut blobs = BlobFiles::new(dir.path().to_path_buf());
        assert_eq!(blobs.sync_new().expect("no directory yet"), 0);
        std::fs::create_dir(dir.path().join("blobs")).expect("blobs");
        for name in ["100", "250", "not-a-blob"] {
            std::fs::write(blob(name), b"x").expect("write");
        }
        assert_eq!(blobs.sync_new().expect("sync"), 2);
        assert_eq!(blobs.synced_through().load(Ordering::SeqCst), 250);
        // Found last time: synced again (its writer may not have finished it then).
        assert_eq!(blobs.sync_new().expect("sync"), 2);
        assert_eq!(blobs.sync_new().expect("sync"), 0, "then left alone");
        std::fs::write(blob("300"), b"x").expect("write");
        std::fs::remove_file(blob("100")).expect("remove");
        assert_eq!(blobs.sync_new().expect("sync"), 1, "only the new one");
        // A lower number made after a higher one was synced (numbers are fixed before files).
        std::fs::write(blob("200"), b"x").expect("write");
        assert_eq!(blobs.sync_new().expect("sync"), 2, "the one made late, and 300 once more");
        std::fs::remove_file(blob("300")).expect("remove");
        assert_eq!(blobs.sync_new().expect("a blob gone meanwhile"), 1, "200 once more");
        assert_eq!(blobs.sync_new().expect("sync"), 0);
        assert_eq!(blobs.synced_through().load(Ordering::SeqCst), 300);
    }
}
