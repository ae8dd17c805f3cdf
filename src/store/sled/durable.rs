//! What readers may see: only what is durable.
//!
//! The writer commits a batch in a sled transaction and then flushes it; between the two, the
//! batch is visible to every reader of the trees though a crash (or a failed flush) may still
//! lose it. A reader that returned it would answer with state the log may not keep: a Describe
//! showing a number that then never existed, a feed follower holding positions the log gives
//! to other events after a restart (its copy of the hash chain forks), an actor adopting an
//! append whose caller was told it failed.
//!
//! So each batch gets a number before its transaction commits, and a read, once done, waits
//! until every batch numbered before it ended is durable. A read sees nothing of a batch it
//! does not wait for: the number is taken before the commit that makes the batch visible. When
//! no flush is under way (most of the time) the wait is one atomic load and a compare. Once a
//! flush fails, nothing more is ever made durable in this open: reads that may have seen the
//! failed batch get the flush's error, until the log is opened again and read back from disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::store::StoreError;

/// The writer's side: numbers batches and says which are durable.
pub(crate) struct Batches {
    shared: Arc<Shared>,
    durable: watch::Sender<u64>,
}

/// The readers' side: a cheap handle each read waits on.
#[derive(Clone)]
pub(crate) struct Gate {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
}

struct Shared {
    /// The number of the last batch begun (its transaction may be committed, or not yet).
    begun: AtomicU64,
    /// Why a flush failed: no batch from that one on will ever be durable in this open.
    failed: OnceLock<StoreError>,
}

/// A writer's batch numbering and the gate its readers wait at.
pub(crate) fn batches() -> (Batches, Gate) {
    let shared = Arc::new(Shared {
        begun: AtomicU64::new(0),
        failed: OnceLock::new(),
    });
    let (durable, receiver) = watch::channel(0);
    (
        Batches {
            shared: shared.clone(),
            durable,
        },
        Gate { shared, durable: receiver },
    )
}

impl Batches {
    /// Numbers the next batch. Called before its transaction commits.
    pub(crate) fn begin(&self) -> u64 {
        self.shared.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Batch `n` (and every one before it) is durable, or changed nothing. Ignored once a flush
    /// failed: what that batch left in memory is still visible, and never durable.
    pub(crate) fn durable(&self, n: u64) {
        if self.shared.failed.get().is_none() {
            self.durable.send_if_modified(|at| {
                let moved = n > *at;
                *at = (*at).max(n);
                moved
            });
        }
    }

    /// Why a flush failed, once one has (the first failure is kept).
    pub(crate) fn failure(&self) -> Option<&StoreError> {
        self.shared.failed.get()
    }

    /// A batch's flush failed: readers waiting for it, and every later one, get `error`.
    pub(crate) fn failed(&self, error: StoreError) {
        let _ = self.shared.failed.set(error);
        // Wakes the waiting readers, who then find the failure.
        self.durable.send_modify(|_| {});
    }
}

impl Gate {
    /// Why a flush failed, once one has: nothing is made durable in this open any more.
    pub(crate) fn failure(&self) -> Option<StoreError> {
        self.shared.failed.get().cloned()
    }

    /// Resolves once every batch begun before this call is durable (call it after a read: the
    /// read saw at most those). `Err` if one of them never will be.
    pub(crate) async fn passed(mut self) -> Result<(), StoreError> {
        let target = self.shared.begun.load(Ordering::SeqCst);
        loop {
            if *self.durable.borrow_and_update() >= target {
                return Ok(());
            }
            if let Some(e) = self.shared.failed.get() {
                return Err(e.clone());
            }
            if self.durable.changed().await.is_err() {
                // The writer is gone without making the batch durable.
                return Err(StoreError::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settles(gate: &Gate) -> Option<Result<(), StoreError>> {
        tokio::time::timeout(Duration::from_millis(100), gate.clone().passed()).await.ok()
    }

    #[tokio::test]
    async fn a_read_waits_for_the_batches_begun_before_it_ends() {
        let (batches, gate) = batches();
        assert!(matches!(settles(&gate).await, Some(Ok(()))), "nothing begun: no wait");
        let first = batches.begin();
        let waiting = tokio::spawn(gate.clone().passed());
        assert!(settles(&gate).await.is_none(), "batch {first} is not durable yet");
        let second = batches.begin();
        batches.durable(first);
        assert!(settles(&gate).await.is_none(), "batch {second} is not durable yet");
        assert!(
            matches!(waiting.await, Ok(Ok(()))),
            "a read that ended before batch {second} began waits for {first} only"
        );
        batches.durable(second);
        assert!(matches!(settles(&gate).await, Some(Ok(()))));
        batches.durable(first);
        assert_eq!(*gate.durable.borrow(), second, "never backwards");
    }

    #[tokio::test]
    async fn after_a_failed_flush_a_read_that_may_have_seen_it_fails() {
        let (batches, gate) = batches();
        let first = batches.begin();
        batches.durable(first);
        let failing = batches.begin();
        let waiting = tokio::spawn(gate.clone().passed());
        batches.failed(StoreError::Corrupt {
            key: "db".into(),
            message: "flush failed".into(),
        });
        assert!(matches!(waiting.await, Ok(Err(StoreError::Corrupt { .. }))));
        // Later batches are refused without a commit; they do not make the failed one durable.
        let later = batches.begin();
        batches.durable(later);
        assert!(
            matches!(settles(&gate).await, Some(Err(StoreError::Corrupt { .. }))),
            "batch {failing} never is"
        );
    }

    #[tokio::test]
    async fn a_writer_gone_ends_the_wait() {
        let (batches, gate) = batches();
        batches.begin();
        drop(batches);
        assert!(matches!(settles(&gate).await, Some(Err(StoreError::Closed))));
    }
}
