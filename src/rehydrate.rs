//! Rebuilding an aggregate's state from the log: its latest usable snapshot plus the events after
//! it (what every actor does when it starts), a plain replay (what the audit tools do), and the
//! snapshots an actor stores along the way.

use crate::codec::decode_event;
use crate::domain::Aggregate;
use crate::store::{EventEnvelope, EventStore, Snapshot, StoreError, StreamTail, SNAPSHOT_SCHEMA_VERSION};

/// The snapshot of `state` right after `version`, as the store keeps it.
pub fn snapshot_of<A: Aggregate>(state: &A, version: u64) -> Result<Snapshot, serde_json::Error> {
    Ok(Snapshot {
        version,
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        state: serde_json::to_value(state)?,
    })
}

/// The state a snapshot holds, if it is usable: same layout, decodable as today's state, and
/// reading back exactly as it was stored. A snapshot an older build wrote before the state gained
/// a member decodes with that member's default, which need not be what a replay derives (how
/// many times a list was created, say); re-encoded, it then differs from what was stored, so it
/// is replayed instead, without anyone having to remember to change the layout's version.
pub fn usable<A: Aggregate>(snapshot: &Snapshot) -> Option<A> {
    if snapshot.schema_version != SNAPSHOT_SCHEMA_VERSION {
        return None;
    }
    let state = serde_json::from_value::<A>(snapshot.state.clone()).ok()?;
    (serde_json::to_value(&state).ok()? == snapshot.state).then_some(state)
}

/// A stream's current state and version: its latest usable snapshot plus the events after it,
/// read in one go ([`EventStore::read_tail`]). A snapshot that cannot be used (another layout, a
/// state today's code cannot read) is skipped, never trusted: snapshots are a cache, and the
/// whole stream is replayed instead.
pub async fn load_state<A: Aggregate>(store: &dyn EventStore, stream_id: &str) -> Result<LoadedState<A>, StoreError> {
    let StreamTail { snapshot, events, head } = store.read_tail(stream_id, REPLAY_PAGE).await?;
    let (state, version, events, from) = match snapshot.as_ref().map(|s| (usable::<A>(s), s.version)) {
        Some((Some(state), version)) => (state, version, events, "snapshot"),
        Some((None, _)) => {
            tracing::warn!(stream = stream_id, "ignoring an unusable snapshot; replaying the whole stream");
            (
                A::default(),
                0,
                store.read_stream(stream_id, 1, REPLAY_PAGE).await?,
                "unusable-snapshot",
            )
        }
        None => (A::default(), 0, events, "replay"),
    };
    metrics::counter!(crate::telemetry::SNAPSHOT_LOADS, "from" => from).increment(1);
    let mut replayed = events.len();
    // The last event of what was folded, so that version and last event come from the reads
    // folded (the stream may have moved since the tail's read).
    let mut last_event = events.last().map_or(head.last_event, |e| Some(e.event_id));
    let (mut state, mut version) = fold(state, version, stream_id, &events)?;
    // A long tail (no usable snapshot) is read and folded a page at a time, to its end: memory
    // holds one page, however long the stream.
    let mut page = events;
    while page.len() >= REPLAY_PAGE {
        page = store.read_stream(stream_id, version + 1, REPLAY_PAGE).await?;
        replayed += page.len();
        last_event = page.last().map_or(last_event, |e| Some(e.event_id));
        (state, version) = fold(state, version, stream_id, &page)?;
    }
    Ok(LoadedState {
        state,
        version,
        last_event,
        replayed,
    })
}

/// Events read and folded at a time when a state is rebuilt from the log.
pub const REPLAY_PAGE: usize = 1_000;

/// `state` (durable at `version`, its last event `last_event`) brought up to the stream's head by
/// the events after `version` alone: what an actor does when another writer of a shared log has
/// moved its stream on, instead of reading its snapshot and every event after it again.
/// Read a page at a time, as a replay is: however far behind the state is, memory holds one page.
pub async fn catch_up<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    state: A,
    version: u64,
    last_event: Option<uuid::Uuid>,
) -> Result<LoadedState<A>, StoreError> {
    let mut loaded = LoadedState {
        state,
        version,
        last_event,
        replayed: 0,
    };
    loop {
        let page = store.read_stream(stream_id, loaded.version + 1, REPLAY_PAGE).await?;
        let replayed = loaded.replayed;
        loaded = caught_up_with(stream_id, loaded.state, loaded.version, loaded.last_event, &page)?;
        loaded.replayed += replayed;
        if page.len() < REPLAY_PAGE {
            return Ok(loaded);
        }
    }
}

/// `state` (at `version`, its last event `last_event`) brought up to date by `events`, the
/// stream's events after `version` (see [`catch_up`]).
pub fn caught_up_with<A: Aggregate>(
    stream_id: &str,
    state: A,
    version: u64,
    last_event: Option<uuid::Uuid>,
    events: &[EventEnvelope],
) -> Result<LoadedState<A>, StoreError> {
    let last_event = events.last().map_or(last_event, |e| Some(e.event_id));
    let replayed = events.len();
    let (state, version) = fold(state, version, stream_id, events)?;
    Ok(LoadedState {
        state,
        version,
        last_event,
        replayed,
    })
}

/// Applies `events` to `state` (at `version`), checking that they follow on without a gap.
fn fold<A: Aggregate>(mut state: A, mut version: u64, stream_id: &str, events: &[EventEnvelope]) -> Result<(A, u64), StoreError> {
    for e in events {
        if e.version != version + 1 {
            return Err(StoreError::Corrupt {
                key: format!("{stream_id}@{}", e.version),
                message: format!("expected version {}", version + 1),
            });
        }
        state = state.evolve(&decode_event::<A::Event>(e)?);
        version = e.version;
    }
    Ok((state, version))
}

impl<A: Aggregate> LoadedState<A> {
    /// The state of a stream that has no event.
    pub fn empty() -> Self {
        LoadedState {
            state: A::default(),
            version: 0,
            last_event: None,
            replayed: 0,
        }
    }
}

/// A stream's state as [`load_state`] rebuilt it.
pub struct LoadedState<A> {
    pub state: A,
    pub version: u64,
    /// Id of the stream's last event (what the next append expects).
    pub last_event: Option<uuid::Uuid>,
    /// Events replayed after the snapshot.
    pub replayed: usize,
}

/// Rebuilds state by replaying envelopes of one stream.
pub fn replay<A: Aggregate>(envelopes: &[EventEnvelope]) -> Result<A, StoreError> {
    let mut state = A::default();
    for envelope in envelopes {
        let event: A::Event = decode_event(envelope)?;
        state = state.evolve(&event);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::opt_out_list::{OptOutList, OptOutListState};

    /// A long stream without a snapshot is rebuilt a page at a time: the same state as folding
    /// it whole, without ever holding more than a page of its events.
    #[tokio::test]
    async fn a_long_tail_is_folded_a_page_at_a_time() {
        use crate::codec::pending_events;
        use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges, PhoneNumberEvent, PhoneNumberState};
        use crate::store::gated::GatedStore;
        use crate::store::{AppendMeta, AppendRequest};
        let dir = tempfile::tempdir().expect("dir");
        let (gated, store) = GatedStore::embedded(dir.path());
        let id = "phone-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut events = vec![PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(
            id,
            "111122223333",
            "us-east-1",
        )))];
        events.extend((1..2_500u64).map(|i| {
            PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                deletion_protection_enabled: Some(i % 3 == 0),
                ..Default::default()
            })
        }));
        let meta = AppendMeta::direct("111122223333", "us-east-1", "r", "Test/Write");
        let request = AppendRequest::plain(id, 0, meta, pending_events(&events).expect("events"));
        let written = store.append(request).await.expect("append");

        let loaded = load_state::<PhoneNumberState>(&*store, id).await.expect("load");
        let whole = store.read_stream(id, 1, usize::MAX).await.expect("read");
        let (folded, _) = fold(PhoneNumberState::default(), 0, id, &whole).expect("fold");
        assert_eq!((loaded.version, loaded.replayed), (2_500, 2_500));
        assert_eq!(loaded.last_event, written.last().map(|e| e.event_id));
        assert_eq!(serde_json::to_value(&loaded.state).ok(), serde_json::to_value(&folded).ok());
        let pages: Vec<u64> = gated.take_reads().into_iter().take(3).map(|(_, from)| from).collect();
        assert_eq!(pages, [1_001, 2_001, 1], "after the tail's first page, a page at a time");
        // A state far behind catches up a page at a time too.
        let (at_400, _) = fold(PhoneNumberState::default(), 0, id, &whole[..400]).expect("fold");
        gated.take_reads();
        let caught = catch_up::<PhoneNumberState>(&*store, id, at_400, 400, Some(whole[399].event_id))
            .await
            .expect("catch up");
        assert_eq!(
            (caught.version, caught.replayed, caught.last_event),
            (2_500, 2_100, loaded.last_event)
        );
        assert_eq!(serde_json::to_value(&caught.state).ok(), serde_json::to_value(&folded).ok());
        let pages: Vec<u64> = gated.take_reads().into_iter().map(|(_, from)| from).collect();
        assert_eq!(pages, [401, 1_401, 2_401]);
        store.close().await.expect("close");
    }

    /// A snapshot that lacks a member of today's state (written before the member existed) is
    /// not used: its default is not what a replay would derive.
    #[test]
    fn a_snapshot_missing_a_member_of_the_state_is_not_used() {
        let list = OptOutList {
            opt_out_list_name: "loadtest".into(),
            opt_out_list_arn: "arn:aws:sms-voice:us-east-1:111122223333:opt-out-list/loadtest".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            created_timestamp_ms: 1_700_000_000_000,
            tags: vec![],
            deleted: false,
            opted_out: Default::default(),
            deleted_at: Default::default(),
            client_token: None,
            incarnation: 3,
        };
        let snapshot = snapshot_of(&OptOutListState(Some(list)), 7).expect("snapshot");
        assert!(usable::<OptOutListState>(&snapshot).is_some());
        let mut older = snapshot.clone();
        let removed = older.state.as_object_mut().and_then(|list| list.remove("Incarnation"));
        assert_eq!(removed, Some(serde_json::json!(3)), "{}", snapshot.state);
        assert!(usable::<OptOutListState>(&older).is_none(), "decoded with Incarnation 0");
        let mut foreign = snapshot.clone();
        foreign.schema_version += 1;
        assert!(usable::<OptOutListState>(&foreign).is_none());
    }
}
