//! Snapshots and passivation: activation starts from the latest snapshot, deleting every snapshot
//! changes no answer, `audit verify` checks snapshots against a full replay, and actors that
//! stop (idle, or beyond the live-actor cap) come back transparently with their rules intact.

mod common;

use common::request;

use aws_sdk_pinpointsmsvoicev2::operation::release_phone_number::ReleasePhoneNumberError;
use aws_sdk_pinpointsmsvoicev2::types::{ConflictExceptionReason, MessageType};
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{open_log, open_log_read_only, TestServer, ACCOUNT};
use phone_ledger::audit::verify::verify_store;
use phone_ledger::domain::phone_number::PhoneNumberState;
use phone_ledger::rehydrate::{catch_up, load_state, replay};
use phone_ledger::store::Snapshot;

async fn protect(c: &Client, id: &str, on: bool) {
    c.update_phone_number()
        .phone_number_id(id)
        .deletion_protection_enabled(on)
        .send()
        .await
        .expect("update");
}

async fn health(server: &TestServer) -> serde_json::Value {
    common::health(&server.url()).await
}

fn assert_protected(err: aws_sdk_pinpointsmsvoicev2::error::SdkError<ReleasePhoneNumberError>) {
    match err.into_service_error() {
        ReleasePhoneNumberError::ConflictException(e) => assert_eq!(e.reason(), Some(&ConflictExceptionReason::DeletionProtectionEnabled)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_speed_activation_but_change_no_answer() {
    let mut server = TestServer::start_with(|c| c.snapshot_every = 5);
    let c = server.client(ACCOUNT);
    let id = request(&c, MessageType::Transactional).await;
    for i in 0..12 {
        protect(&c, &id, i % 2 == 0).await; // versions 2..=13
    }
    protect(&c, &id, true).await; // version 14, protected
    let before = c.describe_phone_numbers().send().await.expect("describe");
    server.stop();

    {
        let store = open_log(server.dir.path());
        let record = store.snapshot(&id).await.expect("read").expect("a snapshot exists");
        assert_eq!(record.version, 10, "snapshots every 5 events: the latest is at 10 of 14");
        let loaded = load_state::<PhoneNumberState>(&*store, &id).await.expect("load");
        let (state, version, replayed) = (loaded.state, loaded.version, loaded.replayed);
        assert_eq!((version, replayed), (14, 4), "activation replays only the tail after the snapshot");
        assert!(state.0.clone().expect("number").deletion_protection_enabled);
        // An actor another writer has moved on from catches up by the new events alone, to the
        // state a full activation gives.
        let first = store.read_stream(&id, 1, 9).await.expect("the first 9 events");
        let at_9 = replay::<PhoneNumberState>(&first).expect("replay");
        let last_event = first.last().map(|e| e.event_id);
        let caught_up = catch_up(&*store, &id, at_9, 9, last_event).await.expect("catch up");
        assert_eq!((caught_up.version, caught_up.replayed), (14, 5));
        assert_eq!(caught_up.last_event, loaded.last_event);
        assert_eq!(format!("{:?}", caught_up.state), format!("{state:?}"));
        let report = verify_store(&*store).await.expect("verify");
        assert!(report.ok && report.snapshots_checked >= 1, "{report:?}");
        store.close().await.expect("close");
    }

    // Activation from the snapshot gives the same answers and the same rules (the refused
    // release is version 15).
    server.restart();
    let c = server.client(ACCOUNT);
    assert_eq!(
        format!("{:?}", c.describe_phone_numbers().send().await.expect("describe").phone_numbers()),
        format!("{:?}", before.phone_numbers())
    );
    assert_protected(c.release_phone_number().phone_number_id(&id).send().await.expect_err("protected"));

    // Delete every snapshot: nothing changes.
    server.stop();
    {
        let store = open_log(server.dir.path());
        store.clear_snapshots().await.expect("delete every snapshot");
        store.close().await.expect("close");
    }
    server.restart();
    let c = server.client(ACCOUNT);
    assert_protected(
        c.release_phone_number()
            .phone_number_id(&id)
            .send()
            .await
            .expect_err("still protected"),
    ); // v16
    for on in [false, true, false, true] {
        protect(&c, &id, on).await; // v17..v20: a new snapshot at 20
    }
    protect(&c, &id, false).await;
    c.release_phone_number().phone_number_id(&id).send().await.expect("release");

    // A snapshot an older build wrote, which today's code does not use (it reads back
    // otherwise: a member since retired), is a stale cache replayed instead, not a break.
    server.stop();
    phone_ledger::store::testing::tamper_with_snapshot(server.dir.path(), &id, |bytes| {
        let mut record: Snapshot = serde_json::from_slice(bytes).expect("snapshot");
        record.state["RetiredMember"] = serde_json::Value::Bool(true);
        *bytes = serde_json::to_vec(&record).expect("json");
    })
    .expect("tamper");
    let store = open_log_read_only(server.dir.path());
    let report = verify_store(&*store).await.expect("verify");
    store.close().await.expect("close");
    assert!(report.ok, "{:?}", report.first_break);

    // A snapshot that disagrees with the log is caught by verify.
    phone_ledger::store::testing::tamper_with_snapshot(server.dir.path(), &id, |bytes| {
        let mut record: Snapshot = serde_json::from_slice(bytes).expect("snapshot");
        assert_eq!(record.version, 20, "a new snapshot at 20");
        record.state.as_object_mut().expect("an object").remove("RetiredMember");
        record.state["DeletionProtectionEnabled"] =
            serde_json::Value::Bool(!record.state["DeletionProtectionEnabled"].as_bool().expect("bool"));
        *bytes = serde_json::to_vec(&record).expect("json");
    })
    .expect("tamper");
    let store = open_log_read_only(server.dir.path());
    let report = verify_store(&*store).await.expect("verify");
    store.close().await.expect("close");
    assert!(!report.ok);
    assert!(report.first_break.expect("break").problem.contains("differs from a full replay"));

    // One that cannot be read at all is reported as such (not an error of the check itself).
    phone_ledger::store::testing::tamper_with_snapshot(server.dir.path(), &id, |bytes| bytes.truncate(bytes.len() / 2)).expect("tamper");
    let store = open_log_read_only(server.dir.path());
    let report = verify_store(&*store).await.expect("verify");
    store.close().await.expect("close");
    let broken = report.first_break.expect("break");
    assert_eq!(broken.stream_id.as_deref(), Some(id.as_str()));
    assert!(broken.problem.contains("unreadable"), "{}", broken.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivated_actors_come_back_transparently() {
    let server = TestServer::start_with(|c| {
        c.max_live_actors = 2;
        c.actor_idle_secs = 1;
    });
    let c = server.client(ACCOUNT);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = request(&c, MessageType::Transactional).await;
        protect(&c, &id, true).await;
        ids.push(id);
    }
    // Those pushed out stop once they have handled the request to (counted until then): well
    // within the idle second after which every actor would stop anyway.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let h = loop {
        let h = health(&server).await;
        if h["LivePhoneNumberActors"].as_u64().expect("count") <= 2 || std::time::Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(h["LivePhoneNumberActors"].as_u64().expect("count") <= 2, "{h}");
    // Every number, whether its actor was evicted or not, still obeys its history.
    for id in &ids {
        assert_protected(c.release_phone_number().phone_number_id(id).send().await.expect_err("protected"));
    }
    // Idle actors stop by themselves (idle for 1 s, checked every half second; a loaded machine
    // may take longer, so the test waits for it, up to a bound).
    let kinds = [
        "LivePhoneNumberActors",
        "LivePoolActors",
        "LiveOptOutListActors",
        "LiveSenderIdActors",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let h = loop {
        let h = health(&server).await;
        if kinds.iter().all(|k| h[k] == 0) || std::time::Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for kind in kinds {
        assert_eq!(h[kind], 0, "{kind}: {h}");
    }
    for id in &ids {
        protect(&c, id, false).await;
        c.release_phone_number()
            .phone_number_id(id)
            .send()
            .await
            .expect("release after reactivation");
    }
    assert!(c
        .describe_phone_numbers()
        .send()
        .await
        .expect("describe")
        .phone_numbers()
        .is_empty());
}

/// A list of many numbers is snapshotted every tenth of its size in events, not every
/// `snapshot_every`: with 5, a list growing to 100 numbers is snapshotted at versions 5, 10, ...
/// 60, then 66, 77, 88, 99 (every 6, 7, 8, 9 events: the crossings of a tenth of its size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_opt_out_list_is_snapshotted_by_its_size() {
    use phone_ledger::domain::opt_out_list::OptOutListState;
    use phone_ledger::domain::{ResourceKind, Scope};
    let mut server = TestServer::start_with(|c| c.snapshot_every = 5);
    let c = server.client(ACCOUNT);
    c.create_opt_out_list().opt_out_list_name("big").send().await.expect("create");
    for i in 0..100 {
        c.put_opted_out_number()
            .opt_out_list_name("big")
            .opted_out_number(format!("+1206555{i:04}"))
            .send()
            .await
            .expect("put");
    }
    server.stop();
    let store = open_log(server.dir.path());
    let id = ResourceKind::opt_out_list_id(&Scope::new(ACCOUNT, common::REGION), "big");
    let record = store.snapshot(&id).await.expect("read").expect("a snapshot");
    assert_eq!(record.version, 99, "every 5 events would have made it 100");
    let loaded = load_state::<OptOutListState>(&*store, &id).await.expect("load");
    assert_eq!((loaded.version, loaded.replayed), (101, 2));
    store.close().await.expect("close");
}
