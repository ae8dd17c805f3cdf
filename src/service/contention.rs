//! Which aggregates this node has recently lost a race for: a command on them was refused by the
//! log as stale because another writer (another node) had moved their stream first. With several
//! nodes, routing sends later commands on such an aggregate to its owning node, so that they
//! meet in one mailbox instead of racing again (see `api::routing`). A hint only: it is this
//! node's memory, bounded, and forgets an aggregate after a while without a lost race.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an aggregate counts as contended after this node last lost a race for it.
const CONTENDED_FOR: Duration = Duration::from_secs(30);
/// At most this many aggregates are remembered (the oldest are forgotten first).
const REMEMBERED: usize = 16_384;

/// The aggregates this node recently lost a race for, with when it last did.
#[derive(Default)]
pub struct Contention {
    lost: Mutex<HashMap<String, Instant>>,
}

impl Contention {
    /// Records a lost race for `stream_id`.
    pub fn note(&self, stream_id: &str) {
        let now = Instant::now();
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.len() >= REMEMBERED && !lost.contains_key(stream_id) {
            lost.retain(|_, at| now.duration_since(*at) < CONTENDED_FOR);
            if lost.len() >= REMEMBERED {
                // Still full of recent ones: forget the older half.
                let mut ages: Vec<Instant> = lost.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                lost.retain(|_, at| *at > cut);
            }
        }
        lost.insert(stream_id.to_string(), now);
    }

    /// Whether this node lost a race for `stream_id` recently.
    pub fn is_contended(&self, stream_id: &str) -> bool {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.get(stream_id).is_some_and(|at| at.elapsed() < CONTENDED_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_it_was_told_and_stays_bounded() {
        let c = Contention::default();
        assert!(!c.is_contended("phone-a"));
        c.note("phone-a");
        assert!(c.is_contended("phone-a"));
        assert!(!c.is_contended("phone-b"));
        for i in 0..REMEMBERED * 2 {
            c.note(&format!("phone-{i}"));
        }
        let len = c.lost.lock().map(|l| l.len()).unwrap_or_default();
        assert!(len <= REMEMBERED, "{len} remembered");
        assert!(c.is_contended(&format!("phone-{}", REMEMBERED * 2 - 1)), "the latest is kept");
    }
}
