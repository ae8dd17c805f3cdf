//! The global feed: which event holds each position, in commit order.
//!
//! Each group commit writes **one** feed entry for all of its events, a *run*: the key is the
//! run's first position (big-endian), the value `RUN_TAG ‖ count (u32) ‖ (length (u16) ‖ streams
//! key)*`, the events in position order. One sled insert per batch instead of one per event
//! matters because a sled insert costs about as much as everything else the writer does for an
//! event (the performance bench measured the server's CPU per durable release dropping by a
//! tenth without the per-event feed insert).
//!
//! Logs written before format 2 hold one entry per position whose value is the `streams` key
//! itself (never starting with `RUN_TAG`: stream ids are printable); readers accept both, so old
//! logs need no migration.

use std::collections::VecDeque;

use super::decode_u64;
use crate::store::StoreError;

/// First byte of a run value.
const RUN_TAG: u8 = 0x01;

/// The value of a run holding `keys` (the `streams` keys of consecutive positions).
pub(crate) fn encode_run(keys: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + keys.iter().map(|k| k.len() + 2).sum::<usize>());
    v.push(RUN_TAG);
    v.extend_from_slice(&(keys.len() as u32).to_be_bytes());
    for k in keys {
        v.extend_from_slice(&(k.len() as u16).to_be_bytes());
        v.extend_from_slice(k);
    }
    v
}

/// The `streams` keys a feed entry holds, in position order.
fn decode_entry(position: u64, value: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt {
        key: format!("feed position {position}"),
        message: message.into(),
    };
    let Some(rest) = value.strip_prefix(&[RUN_TAG]) else {
        // Format 1: one position, the value is the key.
        return Ok(vec![value.to_vec()]);
    };
    let count = rest.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
    let Some(count) = count else {
        return Err(corrupt("truncated run header"));
    };
    let mut rest = &rest[4..];
    // `count` comes from the disk: a damaged one must not reserve more than the run can hold
    // (every key takes at least its two length bytes).
    let mut keys = Vec::with_capacity((count as usize).min(rest.len() / 2));
    for _ in 0..count {
        let len = rest.get(..2).and_then(|b| <[u8; 2]>::try_from(b).ok()).map(u16::from_be_bytes);
        let key = len.and_then(|len| rest.get(2..2 + len as usize));
        let Some(key) = key else {
            return Err(corrupt("truncated run"));
        };
        keys.push(key.to_vec());
        rest = &rest[2 + key.len()..];
    }
    if !rest.is_empty() || keys.is_empty() {
        return Err(corrupt("malformed run"));
    }
    // The run's last position is `position + len - 1` (`keys` is not empty): one that does not
    // fit in a u64 is damage. Exactly that: a run ending at u64::MAX is whole.
    if position.checked_add(keys.len() as u64 - 1).is_none() {
        return Err(corrupt("run past the last position"));
    }
    Ok(keys)
}

/// `(position, streams key)` of every event after position `after`, in order.
pub(crate) struct FeedIter {
    entries: sled::Iter,
    after: u64,
    pending: VecDeque<(u64, Vec<u8>)>,
}

impl FeedIter {
    pub(crate) fn new(feed: &sled::Tree, after: u64) -> Result<Self, StoreError> {
        let first_wanted = after.saturating_add(1);
        // The run that holds `first_wanted` may start before it.
        let start = match feed.range(..=first_wanted.to_be_bytes()).next_back() {
            Some(entry) => entry?.0.to_vec(),
            None => first_wanted.to_be_bytes().to_vec(),
        };
        Ok(FeedIter {
            entries: feed.range(start..),
            after,
            pending: VecDeque::new(),
        })
    }
}

impl Iterator for FeedIter {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Some(Ok(next));
            }
            let (key, value) = match self.entries.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(StoreError::backend(e))),
            };
            let decoded = decode_u64(&key, "feed").and_then(|first| Ok((first, decode_entry(first, &value)?)));
            let (first, keys) = match decoded {
                Ok(d) => d,
                Err(e) => return Some(Err(e)),
            };
            // Positions by offset from the first, never by counting on past the last: an open
            // range `first..` zipped with the keys steps once past the last key, which overflows
            // for a run ending at u64::MAX. `decode_entry` checked that `first + offset` fits.
            self.pending = keys
                .into_iter()
                .enumerate()
                .map(|(offset, key)| (first + offset as u64, key))
                .filter(|(position, _)| *position > self.after)
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_with(entries: &[(u64, Vec<u8>)]) -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let feed = db.open_tree("feed").expect("tree");
        for (k, v) in entries {
            feed.insert(k.to_be_bytes(), v.as_slice()).expect("insert");
        }
        feed
    }

    fn keys(range: std::ops::RangeInclusive<u64>) -> Vec<Vec<u8>> {
        range.map(|i| format!("phone-{i}").into_bytes()).collect()
    }

    fn read(feed: &sled::Tree, after: u64) -> Vec<(u64, String)> {
        FeedIter::new(feed, after)
            .expect("iter")
            .map(|r| r.map(|(p, k)| (p, String::from_utf8(k).expect("utf8"))).expect("entry"))
            .collect()
    }

    #[test]
    fn runs_and_single_entries_read_as_one_sequence_from_any_position() {
        // Format 1 entries at 1 and 2, then runs of 3 (3..=5) and 2 (6..=7).
        let feed = feed_with(&[
            (1, b"phone-1".to_vec()),
            (2, b"phone-2".to_vec()),
            (3, encode_run(&keys(3..=5))),
            (6, encode_run(&keys(6..=7))),
        ]);
        let all: Vec<(u64, String)> = (1..=7).map(|i| (i, format!("phone-{i}"))).collect();
        for after in 0..=7 {
            assert_eq!(read(&feed, after), all[after as usize..].to_vec(), "after {after}");
        }
        assert!(read(&feed, 100).is_empty());
    }

    #[test]
    fn a_damaged_run_is_reported_not_skipped() {
        let mut run = encode_run(&keys(1..=3));
        run.truncate(run.len() - 1);
        let feed = feed_with(&[(1, run)]);
        let first = FeedIter::new(&feed, 0).expect("iter").next().expect("an item");
        assert!(matches!(first, Err(StoreError::Corrupt { .. })), "{first:?}");
    }

    /// At the top of the position space a run is read to its last position, u64::MAX itself, and
    /// one position more is damage: reported, never an overflow.
    #[test]
    fn a_run_at_the_top_of_the_positions_is_read_to_its_end_and_no_further() {
        const TOP: u64 = u64::MAX;
        let named = |first: u64, n: usize| (first..=TOP).take(n).map(|p| (p, format!("phone-{p}"))).collect::<Vec<_>>();
        let run_of = |first: u64, n: usize| encode_run(&named(first, n).into_iter().map(|(_, k)| k.into_bytes()).collect::<Vec<_>>());
        // Ending one before the top, at the top, and a single position at the top.
        for (first, n) in [(TOP - 2, 2), (TOP - 1, 2), (TOP, 1)] {
            let feed = feed_with(&[(first, run_of(first, n))]);
            assert_eq!(read(&feed, 0), named(first, n), "{n} from {first}");
            // After the position before the top: the top, if the run reaches it.
            let top = if first + (n as u64 - 1) == TOP { named(TOP, 1) } else { vec![] };
            assert_eq!(read(&feed, TOP - 1), top, "{n} from {first}, after {}", TOP - 1);
        }
        // A run whose last position would be one past the top.
        let feed = feed_with(&[(TOP - 1, run_of(TOP - 2, 3))]);
        let first = FeedIter::new(&feed, 0).expect("iter").next().expect("an item");
        assert!(matches!(first, Err(StoreError::Corrupt { .. })), "{first:?}");
    }

    #[test]
    fn a_damaged_run_header_is_reported_without_reserving_what_it_claims() {
        // A count of u32::MAX over two keys: reserving it up front would ask for about 100 GB.
        let mut huge = encode_run(&keys(1..=2));
        huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        // A run whose positions would go past u64::MAX.
        let past_the_end = encode_run(&keys(1..=2));
        for (position, run) in [(1, huge), (u64::MAX, past_the_end)] {
            let feed = feed_with(&[(position, run)]);
            let first = FeedIter::new(&feed, 0).expect("iter").next().expect("an item");
            assert!(matches!(first, Err(StoreError::Corrupt { .. })), "{first:?}");
        }
    }
}
