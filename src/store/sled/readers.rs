//! The reader threads: every read of the sled adapter runs on one of a few threads of its own.
//!
//! Reads leave the caller's thread because a sled read may wait on the disk, and the callers are
//! HTTP workers and the actors living on them. A small fixed set of threads does this better than
//! a general blocking pool: measured on a restarted server releasing passivated numbers, tokio's
//! pool grew to about sixty threads, each with a cold allocator heap and its own wake-ups, and spent
//! a quarter of the machine's CPU on allocation and scheduling; a few long-lived threads that take
//! the next read without sleeping while reads are waiting keep their heaps and caches warm.
//!
//! A read that panics fails alone: its caller is answered [`StoreError::ReadPanicked`] and the
//! thread takes the next read. A reader that died with it would be gone for good, and with all of
//! them gone every read would answer `Closed`, which the server takes for its own shutdown (its
//! storage probe stops). A panic inside sled itself is another matter: it means damaged files, and
//! the process's panic hook (`main.rs`) stops it before any unwinding reaches this.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Trees;
use crate::store::{StoreError, StoreFuture};

/// How many reads run at once. More than the cores, so that one long read (an audit export's
/// page, a long stream) does not hold up the point reads of actor activations.
const READERS: usize = 4;

type Job = Box<dyn FnOnce(&Trees) + Send>;

pub(crate) struct Readers {
    jobs: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl Readers {
    pub(crate) fn start(trees: Arc<Trees>) -> Result<Self, StoreError> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..READERS)
            .map(|i| {
                let (trees, queue) = (trees.clone(), queue.clone());
                std::thread::Builder::new()
                    .name(format!("event-reader-{i}"))
                    .spawn(move || serve(&trees, &queue))
                    .map_err(StoreError::backend)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Readers { jobs, threads })
    }

    /// Runs `read` on a reader thread; the future resolves with its result.
    pub(crate) fn run<T: Send + 'static>(&self, read: impl FnOnce(&Trees) -> Result<T, StoreError> + Send + 'static) -> StoreFuture<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |trees| {
            // Unwind safety: a job shares only the trees, and a panic leaves them as an error at
            // the same point would (each sled operation is done whole or not at all); what the
            // job built is dropped by the unwinding.
            let answer = catch_unwind(AssertUnwindSafe(|| read(trees))).unwrap_or_else(|panic| {
                let what = panic_message(panic.as_ref());
                tracing::error!(panic = %what, "a read of the event store panicked; answering it with an error, the reader goes on");
                Err(StoreError::ReadPanicked(what))
            });
            // A caller that went away no longer needs its answer.
            let _ = reply.send(answer);
        });
        let queued = self.jobs.send(job).is_ok();
        Box::pin(async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Lets the reads already queued finish, then stops the threads (they hold the trees).
    pub(crate) fn shutdown(self) {
        drop(self.jobs);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("event reader thread panicked");
            }
        }
    }
}

/// What a panic said (`panic!` with a literal or a formatted message; anything else unnamed).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn serve(trees: &Trees, queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(job) => job(trees),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trees() -> Arc<Trees> {
        let db = ::sled::Config::new().temporary(true).open().expect("db");
        let tree = |name: &str| db.open_tree(name).expect("tree");
        Arc::new(Trees {
            streams: tree("streams"),
            feed: tree("feed"),
            heads: tree("heads"),
            index: tree("index"),
            snapshots: tree("snapshots"),
            db,
        })
    }

    /// More reads panic than there are readers: each is answered with the panic, and the readers
    /// are all still there for the read after them.
    #[tokio::test]
    async fn a_read_that_panics_fails_alone_and_its_reader_goes_on() {
        let readers = Readers::start(trees()).expect("start");
        for i in 0..2 * READERS {
            let answer = readers
                .run(move |_| -> Result<(), StoreError> { panic!("read {i} went wrong") })
                .await;
            match answer {
                Err(StoreError::ReadPanicked(what)) => assert_eq!(what, format!("read {i} went wrong")),
                other => panic!("read {i}: {other:?}"),
            }
        }
        let reads: Vec<_> = (0..2 * READERS).map(|i| readers.run(move |t| Ok(t.feed.len() + i))).collect();
        for (i, read) in reads.into_iter().enumerate() {
            assert_eq!(read.await.expect("a reader answers"), i);
        }
        readers.shutdown();
    }
}
