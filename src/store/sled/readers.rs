//! The reader threads: every read of the sled adapter runs on one of a few threads of its own.
//!
//! Reads leave the caller's thread because a sled read may wait on the disk, and the callers are
//! HTTP workers and the actors living on them. A small fixed set of threads does this better than
//! a general blocking pool: measured on a restarted server releasing passivated numbers, tokio's
//! pool grew to about sixty threads, each with a cold allocator heap and its own wake-ups, and spent
//! a quarter of the machine's CPU on allocation and scheduling; a few long-lived threads that take
//! the next read without sleeping while reads are waiting keep their heaps and caches warm.

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
            // A caller that went away no longer needs its answer.
            let _ = reply.send(read(trees));
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
