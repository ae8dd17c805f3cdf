//! Storage formats. Today one feed entry per group commit (a run) covers all of its events and a
//! stream's head is its last event; logs written with format 1 hold one feed entry per event and
//! a stored head per stream. A format-1 log still reads, verifies and takes new appends, and both
//! feed forms read back as the same gap-free sequence.

use super::SledStore;
use crate::audit::verify::verify_store;
use crate::codec::pending_events;
use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges, PhoneNumberEvent};
use crate::store::{AppendMeta, AppendRequest, Durability, EventStore, SledSettings};

const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

fn events(id: &str, from_version: u64, n: u64) -> Vec<PhoneNumberEvent> {
    (from_version..from_version + n)
        .map(|v| match v {
            0 => PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(id, ACCOUNT, REGION))),
            v => PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                deletion_protection_enabled: Some(v % 2 == 0),
                ..Default::default()
            }),
        })
        .collect()
}

/// Appends `n` events to each of `ids` concurrently, so that the writer commits several streams'
/// events in one batch (one feed run).
async fn append_round(store: &SledStore, ids: &[String], from_version: u64, n: u64) {
    let answers: Vec<_> = ids
        .iter()
        .map(|id| {
            let meta = AppendMeta::direct(ACCOUNT, REGION, "format-test", "Test/Append");
            let request = AppendRequest::plain(
                id,
                from_version,
                meta,
                pending_events(&events(id, from_version, n)).expect("events"),
            );
            store.submit(request).expect("queued")
        })
        .collect();
    for answer in answers {
        answer.await.expect("appended");
    }
}

async fn positions(store: &SledStore, after: u64) -> Vec<u64> {
    store
        .read_feed(after, usize::MAX)
        .await
        .expect("feed")
        .iter()
        .map(|e| e.position)
        .collect()
}

/// Rewrites the log as format 1 wrote it: one feed entry per position (the value the event's
/// key) and a stored head per stream, here deliberately stale (version 1, no event id) to show
/// that today's code no longer trusts them.
async fn downgrade_to_format_1(store: &SledStore) {
    let events = store.read_feed(0, usize::MAX).await.expect("feed");
    let db = trees(store).db.clone();
    let feed = db.open_tree("feed").expect("feed tree");
    feed.clear().expect("clear");
    for e in &events {
        let mut key = e.stream_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&e.version.to_be_bytes());
        feed.insert(e.position.to_be_bytes(), key).expect("insert");
    }
    let heads = db.open_tree("heads").expect("heads tree");
    for e in &events {
        heads.insert(e.stream_id.as_bytes(), &1u64.to_be_bytes()).expect("head");
    }
    db.insert("format", "phone-ledger/1").expect("format");
    db.flush().expect("flush");
}

fn trees(store: &SledStore) -> std::sync::Arc<super::Trees> {
    let open = store.open.read().expect("lock");
    open.as_ref().expect("open").trees.clone()
}

fn settings() -> SledSettings {
    SledSettings {
        durability: Durability::Flush,
        ..SledSettings::default()
    }
}

async fn len(store: &SledStore) -> u64 {
    store.chain_head().await.expect("head").position
}

async fn version(store: &SledStore, id: &str) -> u64 {
    store.stream_head(id).await.expect("head").version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_log_reads_verifies_and_takes_new_appends_as_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let ids: Vec<String> = (0..8).map(|i| format!("phone-{i:032x}")).collect();

    let store = SledStore::open(dir.path(), &settings()).expect("open");
    append_round(&store, &ids, 0, 3).await;
    assert_eq!(len(&store).await, 24);
    let feed_entries = trees(&store).feed.len();
    assert!(
        feed_entries < 24,
        "a batch shares one feed entry ({feed_entries} entries for 24 events)"
    );
    downgrade_to_format_1(&store).await;
    assert_eq!(trees(&store).feed.len(), 24);
    store.close().await.expect("close");

    // Read-only (offline audit), the old log reads as it is, heads come from the streams.
    let read_only = SledStore::open_read_only(dir.path()).expect("read-only");
    assert_eq!(positions(&read_only, 0).await, (1..=24).collect::<Vec<_>>());
    assert_eq!(version(&read_only, &ids[0]).await, 3);
    read_only.close().await.expect("close");

    // Reopened by today's code: the old entries read as before, new ones are appended as runs.
    let store = SledStore::open(dir.path(), &settings()).expect("reopen");
    let heads: Vec<_> = trees(&store).heads.iter().keys().map(|k| k.expect("key").to_vec()).collect();
    assert_eq!(heads, vec![b"!chain".to_vec()], "the stored per-stream heads are dropped");
    assert_eq!(positions(&store, 0).await, (1..=24).collect::<Vec<_>>());
    assert_eq!(version(&store, &ids[0]).await, 3);
    append_round(&store, &ids, 3, 2).await;
    assert_eq!(len(&store).await, 40);
    assert_eq!(
        positions(&store, 0).await,
        (1..=40).collect::<Vec<_>>(),
        "one gap-free sequence over both forms"
    );
    for after in [0, 1, 23, 24, 25, 39] {
        assert_eq!(
            positions(&store, after).await,
            (after + 1..=40).collect::<Vec<_>>(),
            "reading after {after}"
        );
    }
    let report = verify_store(&store).await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 40);
    for id in &ids {
        let versions: Vec<u64> = store
            .read_stream(id, 1, usize::MAX)
            .await
            .expect("stream")
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=5).collect::<Vec<_>>());
    }
    assert_eq!(
        trees(&store).db.get("format").expect("get").as_deref(),
        Some(&b"phone-ledger/2"[..]),
        "opened for writing, the log is marked with today's format"
    );
    store.close().await.expect("close");
}
