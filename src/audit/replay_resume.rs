//! Where paged replays left off: the state each page of a replay ended on, kept in a bounded cache
//! so that the next page folds on from it instead of from the stream's first event.
//!
//! Without it, reading a long stream's replay page by page costs the square of its length (each
//! page refolds every event before it). A resumed state is never taken on trust: it is used only
//! when the event it ends with is still the one at that version with the same chain hash (which
//! seals every event before it in the log), and everything
//! it holds was folded by this process's own `evolve` from the log, so a page read from it is the
//! page a refold would give. The cache is only a shortcut: a miss (evicted, another process, a
//! page asked out of order) refolds from version 1, as before.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::domain::Aggregate;

/// Pages ends remembered at most.
const MAX_ENTRIES: usize = 4_096;
/// Memory for remembered states at most (their JSON size, as an estimate).
const MAX_BYTES: usize = 64 << 20;
/// A state larger than this is not remembered: one entry may not push out every other.
const MAX_ENTRY_BYTES: usize = 4 << 20;

/// The state right after one version of one stream.
struct Resume {
    /// Chain hash of the event at that version: the resumed state is used only if it matches.
    hash: String,
    state: Box<dyn Any + Send>,
    bytes: usize,
}

struct Entries {
    lru: LruCache<(String, u64), Resume>,
    bytes: usize,
    max_bytes: usize,
}

/// The states paged replays ended on, shared by every replay a process answers.
pub struct ReplayResumes {
    entries: Mutex<Entries>,
}

impl Default for ReplayResumes {
    fn default() -> Self {
        ReplayResumes::bounded(MAX_ENTRIES, MAX_BYTES)
    }
}

impl ReplayResumes {
    /// A cache of at most `max_entries` states and about `max_bytes` bytes.
    fn bounded(max_entries: usize, max_bytes: usize) -> Self {
        ReplayResumes {
            entries: Mutex::new(Entries {
                lru: LruCache::new(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN)),
                bytes: 0,
                max_bytes,
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic elsewhere while holding the lock leaves entries that are each whole.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `stream_id` right after `version`, if a page ended there, with the chain
    /// hash of that version's event (to check against the log before use).
    pub fn get<A: Aggregate>(&self, stream_id: &str, version: u64) -> Option<(A, String)> {
        let mut entries = self.entries();
        let resume = entries.lru.get(&(stream_id.to_string(), version))?;
        let state = resume.state.downcast_ref::<A>()?.clone();
        Some((state, resume.hash.clone()))
    }

    /// Forgets a remembered state (one that no longer matches the log).
    pub fn forget(&self, stream_id: &str, version: u64) {
        let mut entries = self.entries();
        if let Some(gone) = entries.lru.pop(&(stream_id.to_string(), version)) {
            entries.bytes -= gone.bytes;
        }
    }

    /// Remembers `state`, the state of `stream_id` right after `version`, whose event has the
    /// chain hash `hash`.
    pub fn put<A: Aggregate>(&self, stream_id: &str, version: u64, hash: &str, state: &A) {
        let bytes = serde_json::to_vec(state).map_or(usize::MAX, |json| json.len());
        if bytes > MAX_ENTRY_BYTES {
            return;
        }
        let resume = Resume {
            hash: hash.to_string(),
            state: Box::new(state.clone()),
            bytes,
        };
        let mut entries = self.entries();
        if let Some((_, replaced)) = entries.lru.push((stream_id.to_string(), version), resume) {
            // The entry pushed out, or the one this replaces under the same key.
            entries.bytes -= replaced.bytes;
        }
        entries.bytes += bytes;
        while entries.bytes > entries.max_bytes {
            match entries.lru.pop_lru() {
                Some((_, gone)) => entries.bytes -= gone.bytes,
                None => break,
            }
        }
    }

    /// How many states are remembered, and their estimated bytes.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.lru.len(), entries.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::phone_number::{PhoneNumber, PhoneNumberState};
    use crate::domain::pool::PoolState;

    const STREAM: &str = "phone-0123456789abcdef0123456789abcdef";

    fn number() -> PhoneNumberState {
        PhoneNumberState(Some(PhoneNumber::example(STREAM, "111122223333", "us-east-1")))
    }

    #[test]
    fn a_state_is_given_back_for_its_stream_version_and_kind_only() {
        let resumes = ReplayResumes::default();
        resumes.put(STREAM, 7, "42", &number());
        let (state, hash) = resumes.get::<PhoneNumberState>(STREAM, 7).expect("kept");
        assert_eq!(
            (serde_json::to_value(&state).ok(), hash.as_str()),
            (serde_json::to_value(number()).ok(), "42")
        );
        assert!(resumes.get::<PhoneNumberState>(STREAM, 6).is_none());
        assert!(
            resumes.get::<PoolState>(STREAM, 7).is_none(),
            "another kind's state is never handed over"
        );
        resumes.forget(STREAM, 7);
        assert!(resumes.get::<PhoneNumberState>(STREAM, 7).is_none());
        assert_eq!(resumes.size(), (0, 0));
    }

    #[test]
    fn memory_stays_within_its_bounds_and_the_least_recently_used_go_first() {
        let one = serde_json::to_vec(&number()).expect("json").len();
        // Bounded by count.
        let resumes = ReplayResumes::bounded(100, usize::MAX);
        for version in 0..110 {
            resumes.put(STREAM, version, "h", &number());
        }
        assert_eq!(resumes.size(), (100, 100 * one));
        assert!(resumes.get::<PhoneNumberState>(STREAM, 9).is_none(), "the oldest are pushed out");
        assert!(resumes.get::<PhoneNumberState>(STREAM, 10).is_some());
        // Putting again under one key replaces, and counts its bytes once.
        resumes.put(STREAM, 109, "h", &number());
        assert_eq!(resumes.size(), (100, 100 * one));

        // Bounded by bytes: room for three; the one just read is kept.
        let resumes = ReplayResumes::bounded(100, 3 * one + one / 2);
        for version in 0..3 {
            resumes.put(STREAM, version, "h", &number());
        }
        assert!(resumes.get::<PhoneNumberState>(STREAM, 0).is_some());
        resumes.put(STREAM, 3, "h", &number());
        assert_eq!(resumes.size(), (3, 3 * one));
        assert!(resumes.get::<PhoneNumberState>(STREAM, 1).is_none(), "the least recently used goes");
        assert!(resumes.get::<PhoneNumberState>(STREAM, 0).is_some());

        // A state bigger than one entry may be is not kept.
        let resumes = ReplayResumes::default();
        let mut big = number();
        if let Some(n) = big.0.as_mut() {
            n.opt_out_list_name = "x".repeat(MAX_ENTRY_BYTES);
        }
        resumes.put(STREAM, 1, "h", &big);
        assert_eq!(resumes.size(), (0, 0));
    }
}
