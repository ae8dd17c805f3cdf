//! The store contract: what every backend of the storage port must do, as one set of checks
//! generic over a [`Harness`] that opens, closes and reopens a backend. `tests/store_contract.rs`
//! runs it against the embedded backend; a replicated backend runs the same checks unchanged with
//! a harness of its own (`contract_suite!(TheirHarness)`).
//!
//! Each check names the guarantee of the port it pins down (see the `store` module docs: what
//! one append guarantees).

#![allow(dead_code)]

pub mod model;

use std::future::Future;

use phone_ledger::store::{
    AppendError, AppendMeta, AppendRequest, CounterLimit, EventEnvelope, Fallback, IndexOp, PendingEvent, Snapshot, Store, GENESIS_HASH,
    SNAPSHOT_SCHEMA_VERSION,
};
use serde_json::json;
use uuid::Uuid;

/// Opens a backend for the contract checks, and opens it again over the same data.
pub trait Harness: Sized + Send {
    /// A new, empty store.
    fn fresh() -> impl Future<Output = Self> + Send;
    /// The open store.
    fn store(&self) -> Store;
    /// Closes the store and opens it again over the same data.
    fn reopen(&mut self) -> impl Future<Output = ()> + Send;
    /// Whether the backend can run here (a clustered backend needs its servers installed; the
    /// harness says loudly why not).
    fn available() -> bool {
        true
    }
}

/// Events `first..first + n` of a test stream, with fresh ids.
pub fn events(n: usize) -> Vec<PendingEvent> {
    (0..n)
        .map(|i| PendingEvent {
            event_id: Uuid::new_v4(),
            event_type: "ContractTested".into(),
            payload: json!({ "Index": i }),
        })
        .collect()
}

pub fn meta(request: &str) -> AppendMeta {
    AppendMeta::direct("111122223333", "us-east-1", request, "Contract/Append")
}

/// An append of `n` events to `stream` expecting `version`.
pub fn append(stream: &str, version: u64, n: usize) -> AppendRequest {
    AppendRequest::plain(stream, version, meta("contract"), events(n))
}

fn versions(events: &[EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// Checks the feed from position 1: gap-free positions, each envelope chained to the one before.
pub async fn assert_feed_is_a_chain(store: &Store) -> Vec<EventEnvelope> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_feed(after, 7).await.expect("feed");
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    let mut previous = GENESIS_HASH;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions run from 1 without gaps");
        let hash = e.chain_hash(&previous).expect("hash");
        assert_eq!(hex::encode(hash), e.hash, "event {} is chained to its predecessor", e.position);
        previous = hash;
    }
    let head = store.chain_head().await.expect("head");
    assert_eq!(head.position, all.len() as u64);
    assert_eq!(head.hash, previous, "the chain head is the last event's hash");
    all
}

/// (Guarantee 2.) An append that expects the wrong version writes nothing and says where the stream is.
pub async fn occ_on_expected_version<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    s.append(append("phone-a", 0, 1)).await.expect("create");
    match s.append(append("phone-a", 0, 1)).await {
        Err(AppendError::WrongExpectedVersion {
            expected: 0, actual: 1, ..
        }) => {}
        other => panic!("a second creation must be refused: {other:?}"),
    }
    match s.append(append("phone-a", 5, 1)).await {
        Err(AppendError::WrongExpectedVersion {
            expected: 5, actual: 1, ..
        }) => {}
        other => panic!("a version from the future must be refused: {other:?}"),
    }
    let done = s.append(append("phone-a", 1, 2)).await.expect("at the expected version");
    assert_eq!(versions(&done), [2, 3]);
    assert_eq!(s.stream_head("phone-a").await.expect("head").version, 3);
    assert_eq!(s.chain_head().await.expect("head").position, 3, "refused appends wrote nothing");
}

/// (Guarantee 2.) With the id of the last event, the check is exact even at the same version.
pub async fn occ_on_last_event_id<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let first = s.append(append("phone-b", 0, 1)).await.expect("create");
    let stale = AppendRequest {
        expected_last_event: Some(Uuid::new_v4()),
        ..append("phone-b", 1, 1)
    };
    assert!(matches!(s.append(stale).await, Err(AppendError::WrongExpectedVersion { .. })));
    let exact = AppendRequest {
        expected_last_event: Some(first[0].event_id),
        ..append("phone-b", 1, 1)
    };
    let done = s.append(exact).await.expect("same version, same last event");
    let head = s.stream_head("phone-b").await.expect("head");
    assert_eq!((head.version, head.last_event), (2, Some(done[0].event_id)));
}

/// (Guarantee 1.) Versions are gap-free from 1; reads from any version, in pages; the events a
/// backend holds at hand are the ones it reads.
pub async fn gap_free_versions_and_stream_reads<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let mut version = 0;
    for n in [1, 3, 2, 5] {
        s.append(append("phone-c", version, n)).await.expect("append");
        version += n as u64;
    }
    let all = s.read_stream("phone-c", 1, usize::MAX).await.expect("read");
    assert_eq!(versions(&all), (1..=11).collect::<Vec<_>>());
    assert!(all.iter().all(|e| e.stream_id == "phone-c"));
    assert_eq!(versions(&s.read_stream("phone-c", 4, 3).await.expect("page")), [4, 5, 6]);
    assert_eq!(versions(&s.read_stream("phone-c", 0, 2).await.expect("from 0")), [1, 2]);
    assert!(s.read_stream("phone-c", 12, 10).await.expect("past the end").is_empty());
    // The events a backend has at hand, if it has them, are the ones a read gives (positions
    // and hashes included), from any version.
    for from in [1, 4, 11, 12] {
        if let Some(recent) = s.recent_events("phone-c", from) {
            let read = s.read_stream("phone-c", from, usize::MAX).await.expect("read");
            assert_eq!(recent, read, "recent events from version {from}");
        }
    }
    assert!(s.read_stream("phone-none", 1, 10).await.expect("unknown").is_empty());
    assert_eq!(s.stream_head("phone-none").await.expect("head").version, 0);
    // Streams whose ids extend another's are not mixed up with it.
    s.append(append("phone-cc", 0, 1)).await.expect("append");
    assert_eq!(s.read_stream("phone-c", 1, usize::MAX).await.expect("read").len(), 11);
    let heads = s.stream_heads(None, 10).await.expect("heads");
    assert_eq!(heads, [("phone-c".to_string(), 11), ("phone-cc".to_string(), 1)]);
    assert_eq!(
        s.stream_heads(Some("phone-c"), 10).await.expect("after"),
        [("phone-cc".to_string(), 1)]
    );
    assert_eq!(s.stream_heads(None, 1).await.expect("one"), [("phone-c".to_string(), 11)]);
}

/// (Guarantee 1.) Appends submitted together (a group) land in submission order in the feed, each with its
/// own check; one refused append does not hurt the others.
pub async fn feed_order_under_concurrent_appends<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let streams: Vec<String> = (0..8).map(|i| format!("phone-{i:02}")).collect();
    let mut answers = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        answers.push(s.submit(append(stream, 0, 1 + i % 3)).expect("queued"));
        // A stale append in the middle of the group.
        answers.push(s.submit(append(stream, 7, 1)).expect("queued"));
    }
    let mut positions = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match (i % 2, answer.await) {
            (0, Ok(envelopes)) => positions.extend(envelopes.iter().map(|e| e.position)),
            (1, Err(AppendError::WrongExpectedVersion { .. })) => {}
            (_, other) => panic!("append {i}: {other:?}"),
        }
    }
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted, "positions follow the order of submission");
    let feed = assert_feed_is_a_chain(&s).await;
    assert_eq!(feed.len(), positions.len());
    for stream in &streams {
        let of_stream: Vec<u64> = feed.iter().filter(|e| &e.stream_id == stream).map(|e| e.version).collect();
        assert_eq!(
            of_stream,
            (1..=of_stream.len() as u64).collect::<Vec<_>>(),
            "{stream} in version order"
        );
    }
}

/// The feed can be followed: its head moves when an append is durable, and reading after the
/// last position seen gives exactly the new events.
pub async fn feed_follow<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    s.append(append("phone-f", 0, 2)).await.expect("append");
    let mut head = s.watch_head().expect("a writable store can be followed");
    let seen = *head.borrow_and_update();
    assert_eq!(seen, 2);
    let writer = s.clone();
    let appended = tokio::spawn(async move { writer.append(append("phone-g", 0, 3)).await });
    tokio::time::timeout(std::time::Duration::from_secs(10), head.wait_for(|p| *p >= 5))
        .await
        .expect("the head moves within 10 s")
        .expect("watch");
    appended.await.expect("task").expect("append");
    let new = s.read_feed(seen, 100).await.expect("after");
    assert_eq!(new.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(new.iter().all(|e| e.stream_id == "phone-g"));
    assert!(s.read_feed(5, 100).await.expect("at the head").is_empty());
}

/// (Guarantee 3.) A unique claim holds one key for one append: a second claim is refused and writes nothing,
/// also within one group commit.
pub async fn unique_claims<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let claim = |stream: &str| AppendRequest {
        unique_claims: vec![(b"n/+12065550100".to_vec(), stream.as_bytes().to_vec())],
        index_ops: vec![IndexOp::Put(format!("v/{stream}").into_bytes(), b"view".to_vec())],
        ..append(stream, 0, 1)
    };
    s.append(claim("phone-x")).await.expect("first claim");
    match s.append(claim("phone-y")).await {
        Err(AppendError::UniqueViolation(key)) => assert!(key.contains("+12065550100"), "{key}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.stream_head("phone-y").await.expect("head").version,
        0,
        "no event of the refused append"
    );
    assert_eq!(s.index_get(b"v/phone-y").await.expect("get"), None, "no index change of it either");
    assert_eq!(s.index_get(b"n/+12065550100").await.expect("get").as_deref(), Some(&b"phone-x"[..]));
    // Racing claims submitted together: exactly one wins.
    let racing = |stream: &str| AppendRequest {
        unique_claims: vec![(b"n/+12065550199".to_vec(), stream.as_bytes().to_vec())],
        ..append(stream, 0, 1)
    };
    let answers: Vec<_> = (0..6).map(|i| s.submit(racing(&format!("phone-r{i}"))).expect("queued")).collect();
    let mut winners = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        match a.await {
            Ok(_) => winners.push(format!("phone-r{i}")),
            Err(AppendError::UniqueViolation(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        s.index_get(b"n/+12065550199").await.expect("get"),
        Some(winners[0].as_bytes().to_vec())
    );
    // One append claiming a key twice takes it from itself: refused, nothing written.
    let twice = AppendRequest {
        unique_claims: vec![
            (b"n/+12065550177".to_vec(), b"phone-t".to_vec()),
            (b"n/+12065550177".to_vec(), b"phone-t".to_vec()),
        ],
        ..append("phone-t", 0, 1)
    };
    match s.append(twice).await {
        Err(AppendError::UniqueViolation(key)) => assert!(key.contains("+12065550177"), "{key}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.stream_head("phone-t").await.expect("head").version, 0);
    assert_eq!(s.index_get(b"n/+12065550177").await.expect("get"), None);
}

/// (Guarantee 3.) A client token is a unique claim bound to the resource its first request created: however
/// many requests race with the same token, one resource holds it and the others can find it.
pub async fn idempotent_client_tokens<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let token = b"t/111122223333/us-east-1/RequestPhoneNumber/token-1".to_vec();
    let create = |stream: &str| AppendRequest {
        unique_claims: vec![
            (format!("n/+1206555{:04}", stream.len()).into_bytes(), stream.as_bytes().to_vec()),
            (token.clone(), stream.as_bytes().to_vec()),
        ],
        ..append(stream, 0, 1)
    };
    let answers: Vec<_> = ["phone-t1", "phone-t22", "phone-t333"]
        .iter()
        .map(|id| s.submit(create(id)).expect("queued"))
        .collect();
    let mut created = Vec::new();
    for (id, a) in ["phone-t1", "phone-t22", "phone-t333"].iter().zip(answers) {
        match a.await {
            Ok(_) => created.push(id.to_string()),
            Err(AppendError::UniqueViolation(key)) => assert!(key.starts_with("t/"), "{key}"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(created.len(), 1);
    let owner = s.index_get(&token).await.expect("get").expect("the token is bound");
    assert_eq!(String::from_utf8(owner).expect("utf8"), created[0]);
    // A retry later finds it too, and still cannot create another.
    assert!(matches!(
        s.append(create("phone-t4444")).await,
        Err(AppendError::UniqueViolation(_))
    ));
}

/// (Fallback.) An append over the limit its fallback names commits the fallback's events in its
/// place (same versions and ids, the fallback's command input, none of the append's index
/// changes), so an append pipelined behind it still lands; within the limit, its own events;
/// over a limit the fallback does not name, refused.
pub async fn an_append_over_the_limit_its_fallback_names_commits_the_fallback<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let opted_out = b"x/111122223333/us-east-1/list/1/+12065550100".to_vec();
    let sent = b"sent/phone-fb".to_vec();
    let created = s.append(append("phone-fb", 0, 1)).await.expect("create");
    let bounded = |version: u64, after: Uuid, limit: usize| {
        let mut request = AppendRequest {
            expected_last_event: Some(after),
            index_ops: vec![IndexOp::Add(sent.clone(), 1)],
            counter_limits: vec![
                CounterLimit::at_most(opted_out.clone(), 0),
                CounterLimit::at_least(sent.clone(), i64::MIN),
            ],
            ..append("phone-fb", version, 1)
        };
        let mut instead = request.events.clone();
        instead[0].event_type = "ContractRefused".into();
        request.fallback = Some(Fallback {
            limit,
            events: instead,
            command_input: json!({ "Instead": true }),
        });
        request
    };

    // Within the limit: its own events and index changes.
    let own = s.append(bounded(1, created[0].event_id, 0)).await.expect("within the limit");
    assert_eq!(own[0].event_type, "ContractTested");
    assert_eq!(decode(s.index_get(&sent).await.expect("get")), 1);

    // The destination opts out; the next bounded append and one pipelined behind it.
    s.append(AppendRequest {
        index_ops: vec![IndexOp::Add(opted_out.clone(), 1)],
        ..append("list-fb", 0, 1)
    })
    .await
    .expect("opt out");
    let fell = bounded(2, own[0].event_id, 0);
    let fell_id = fell.events[0].event_id;
    let behind = AppendRequest {
        expected_last_event: Some(fell_id),
        ..append("phone-fb", 3, 1)
    };
    let (fell, behind) = (s.submit(fell).expect("queued"), s.submit(behind).expect("queued"));
    let fell = fell.await.expect("in force by its fallback");
    assert_eq!(
        (fell[0].event_type.as_str(), fell[0].event_id, fell[0].version),
        ("ContractRefused", fell_id, 3)
    );
    assert_eq!(fell[0].command_input, json!({ "Instead": true }));
    assert_eq!(behind.await.expect("pipelined behind it")[0].version, 4);
    assert_eq!(decode(s.index_get(&sent).await.expect("get")), 1, "none of its index changes");
    let stored = s.read_stream("phone-fb", 3, 1).await.expect("read");
    assert_eq!((stored[0].event_type.as_str(), stored[0].event_id), ("ContractRefused", fell_id));

    // Over a limit the fallback does not name: refused, nothing written.
    let last = s.read_stream("phone-fb", 4, 1).await.expect("read")[0].event_id;
    assert!(matches!(s.append(bounded(4, last, 1)).await, Err(AppendError::LimitReached(_))));
    assert_eq!(s.stream_head("phone-fb").await.expect("head").version, 4);
    assert_feed_is_a_chain(&s).await;
}

/// (Guarantee 2 and 3, in order.) Appends submitted together are decided one after the other,
/// each on the state the ones before it leave, also when one is refused while the one before it
/// is still on its way to the log: a claim refused behind an append that lands is `Taken`, behind
/// one that is refused it is stale; an append decided after the refused one's predecessor (not
/// after the refused one) still lands. Repeated, as the interleavings it pins down are a race in
/// a replicated backend.
pub async fn appends_behind_a_refused_one_are_decided_after_its_predecessor<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let held = b"n/+12065550142".to_vec();
    s.append(AppendRequest {
        unique_claims: vec![(held.clone(), b"phone-holder".to_vec())],
        ..append("phone-holder", 0, 1)
    })
    .await
    .expect("the claim is held");
    let full = b"c/111122223333/us-east-1/full".to_vec();
    s.append(AppendRequest {
        index_ops: vec![IndexOp::Add(full.clone(), 1)],
        ..append("counter-full", 0, 1)
    })
    .await
    .expect("the counter is at its limit");
    let claiming = |stream: &str, version: u64| AppendRequest {
        unique_claims: vec![(held.clone(), stream.as_bytes().to_vec())],
        ..append(stream, version, 1)
    };
    // The appends ahead are large, so that they take a while to reach the log.
    let large = |stream: &str, version: u64| {
        let mut request = append(stream, version, 1);
        request.events[0].payload = json!({ "Padding": "x".repeat(256 * 1024) });
        request
    };
    for round in 0..16 {
        let stream = format!("phone-behind-{round}");
        s.append(append(&stream, 0, 1)).await.expect("create");
        // Behind an append that lands.
        let answers: Vec<_> = [
            append(&stream, 5, 1),
            large(&stream, 1),
            claiming(&stream, 2),
            large(&stream, 2),
            claiming(&stream, 3),
        ]
        .into_iter()
        .map(|r| s.submit(r).expect("queued"))
        .collect();
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(match answer.await {
                Ok(events) => format!("written {:?}", versions(&events)),
                Err(AppendError::WrongExpectedVersion { actual, .. }) => format!("stale at {actual}"),
                Err(AppendError::UniqueViolation(_)) => "taken".to_string(),
                Err(e) => panic!("{e:?}"),
            });
        }
        assert_eq!(
            outcomes,
            ["stale at 1", "written [2]", "taken", "written [3]", "taken"],
            "round {round}"
        );
        // Behind an append the log refuses (over a counter's limit).
        let over = AppendRequest {
            index_ops: vec![IndexOp::Add(full.clone(), 1)],
            counter_limits: vec![CounterLimit::at_most(full.clone(), 1)],
            ..append(&stream, 3, 1)
        };
        let (over, behind) = (s.submit(over).expect("queued"), s.submit(claiming(&stream, 4)).expect("queued"));
        assert!(matches!(over.await, Err(AppendError::LimitReached(_))), "round {round}");
        match behind.await {
            Err(AppendError::WrongExpectedVersion { actual: 3, .. }) => {}
            other => panic!("round {round}: decided after a refused append: {other:?}"),
        }
        assert_eq!(s.stream_head(&stream).await.expect("head").version, 3);
    }
    assert_eq!(s.index_get(&held).await.expect("get").as_deref(), Some(&b"phone-holder"[..]));
    assert_feed_is_a_chain(&s).await;
}

/// (Guarantee 5.) A counter limit holds: an append that would take the counter over it is
/// refused and writes nothing, also when the appends that reach the limit are submitted together;
/// a decrement makes room again.
pub async fn counter_limits_hold<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let count = b"c/111122223333/us-east-1/pool".to_vec();
    let create = |stream: &str| AppendRequest {
        index_ops: vec![
            IndexOp::Add(count.clone(), 1),
            IndexOp::Put(format!("v/{stream}").into_bytes(), b"view".to_vec()),
        ],
        counter_limits: vec![CounterLimit::at_most(count.clone(), 3)],
        ..append(stream, 0, 1)
    };
    let answers: Vec<_> = (0..8).map(|i| s.submit(create(&format!("pool-l{i}"))).expect("queued")).collect();
    let mut created = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        match a.await {
            Ok(_) => created.push(format!("pool-l{i}")),
            Err(AppendError::LimitReached(key)) => assert!(key.contains("c/111122223333"), "{key}"),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(created.len(), 3, "{created:?}");
    assert_eq!(decode(s.index_get(&count).await.expect("get")), 3);
    for i in 0..8 {
        let stream = format!("pool-l{i}");
        let made = created.contains(&stream);
        assert_eq!(s.stream_head(&stream).await.expect("head").version, u64::from(made), "{stream}");
        assert_eq!(
            s.index_get(format!("v/{stream}").as_bytes()).await.expect("get").is_some(),
            made,
            "{stream}"
        );
    }
    // At the limit: refused. After a decrement: accepted, and at the limit again.
    assert!(matches!(s.append(create("pool-late")).await, Err(AppendError::LimitReached(_))));
    s.append(AppendRequest {
        index_ops: vec![IndexOp::Add(count.clone(), -1)],
        ..append(&created[0], 1, 1)
    })
    .await
    .expect("delete one");
    s.append(create("pool-late")).await.expect("room again");
    assert_eq!(decode(s.index_get(&count).await.expect("get")), 3);
    // An append without a limit is not held to one.
    s.append(AppendRequest {
        index_ops: vec![IndexOp::Add(count.clone(), 1)],
        ..append("pool-unlimited", 0, 1)
    })
    .await
    .expect("no limit named");
    // A lower bound: a user of a list needs the list alive (its counter at 1), and the list's
    // deletion needs it unused; submitted together, the first in commit order wins.
    let (alive, users) = (b"l/list-1".to_vec(), b"u/list-1".to_vec());
    s.append(AppendRequest {
        index_ops: vec![IndexOp::Add(alive.clone(), 1)],
        ..append("list-1", 0, 1)
    })
    .await
    .expect("list created");
    let join = |stream: &str| AppendRequest {
        index_ops: vec![IndexOp::Add(users.clone(), 1)],
        counter_limits: vec![CounterLimit::at_least(alive.clone(), 1)],
        ..append(stream, 0, 1)
    };
    let delete = AppendRequest {
        index_ops: vec![IndexOp::Add(alive.clone(), -1)],
        counter_limits: vec![CounterLimit::at_most(users.clone(), 0)],
        ..append("list-1", 1, 1)
    };
    let (first, second) = (s.submit(delete).expect("queued"), s.submit(join("phone-user")).expect("queued"));
    first.await.expect("the deletion, unused, goes first");
    match second.await {
        Err(AppendError::LimitReached(key)) => assert_eq!(key, "l/list-1"),
        other => panic!("a user of a deleted list: {other:?}"),
    }
    assert_eq!(decode(s.index_get(&users).await.expect("get")), 0);
}

fn decode(counter: Option<Vec<u8>>) -> i64 {
    counter
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, i64::from_be_bytes)
}

/// (Guarantee 4.) Index changes and counters commit with their events, and not without them.
pub async fn index_changes_are_atomic_with_events<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let with_ops = |stream: &str, version: u64, ops: Vec<IndexOp>| AppendRequest {
        index_ops: ops,
        ..append(stream, version, 1)
    };
    let count = b"c/111122223333/us-east-1/phone-number".to_vec();
    s.append(with_ops(
        "phone-i",
        0,
        vec![IndexOp::Put(b"v/a/phone-i".to_vec(), b"1".to_vec()), IndexOp::Add(count.clone(), 1)],
    ))
    .await
    .expect("append");
    s.append(with_ops("phone-j", 0, vec![IndexOp::Add(count.clone(), 1)]))
        .await
        .expect("append");
    // Refused: none of its changes apply.
    let refused = with_ops(
        "phone-i",
        0,
        vec![IndexOp::Delete(b"v/a/phone-i".to_vec()), IndexOp::Add(count.clone(), 10)],
    );
    assert!(s.append(refused).await.is_err());
    assert_eq!(s.index_get(b"v/a/phone-i").await.expect("get").as_deref(), Some(&b"1"[..]));
    let counter = |v: Option<Vec<u8>>| phone_ledger::store::decode_counter(v.as_deref());
    assert_eq!(counter(s.index_get(&count).await.expect("get")), 2);
    s.append(with_ops(
        "phone-i",
        1,
        vec![IndexOp::Delete(b"v/a/phone-i".to_vec()), IndexOp::Add(count.clone(), -1)],
    ))
    .await
    .expect("append");
    assert_eq!(s.index_get(b"v/a/phone-i").await.expect("get"), None);
    assert_eq!(counter(s.index_get(&count).await.expect("get")), 1);
    // Scans stay within their prefix and resume after a key.
    for k in ["v/b/1", "v/b/2", "v/b/3", "v/c/1"] {
        s.append(with_ops(
            &format!("phone-{k}"),
            0,
            vec![IndexOp::Put(k.as_bytes().to_vec(), b"x".to_vec())],
        ))
        .await
        .expect("append");
    }
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        entries.into_iter().map(|(k, _)| String::from_utf8(k).expect("utf8")).collect()
    };
    assert_eq!(
        keys(s.index_scan(b"v/b/", None, 10).await.expect("scan")),
        ["v/b/1", "v/b/2", "v/b/3"]
    );
    assert_eq!(keys(s.index_scan(b"v/b/", Some(b"v/b/1"), 1).await.expect("scan")), ["v/b/2"]);
    assert!(s.index_scan(b"v/b/", Some(b"v/b/3"), 10).await.expect("scan").is_empty());
}

/// (Guarantee 5.) Snapshots round-trip, and a stream's tail is read from its latest snapshot.
pub async fn snapshot_round_trip<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let snapshot = Snapshot {
        version: 3,
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        state: json!({ "Seen": 3 }),
    };
    s.append(append("phone-s", 0, 2)).await.expect("append");
    let with_snapshot = AppendRequest {
        snapshot: Some(snapshot.clone()),
        ..append("phone-s", 2, 1)
    };
    s.append(with_snapshot).await.expect("append");
    s.append(append("phone-s", 3, 2)).await.expect("append");
    assert_eq!(s.snapshot("phone-s").await.expect("read"), Some(snapshot.clone()));
    let tail = s.read_tail("phone-s", usize::MAX).await.expect("tail");
    assert_eq!(tail.snapshot, Some(snapshot.clone()));
    assert_eq!(versions(&tail.events), [4, 5]);
    assert_eq!(tail.head.version, 5);
    assert_eq!(tail.head.last_event, tail.events.last().map(|e| e.event_id));
    // A tail read cut short: the first events after the snapshot, and the stream's own head.
    let short = s.read_tail("phone-s", 1).await.expect("tail");
    assert_eq!(versions(&short.events), [4]);
    assert_eq!((short.head.version, short.head.last_event), (5, tail.head.last_event));
    // A snapshot at the head: no tail, and the head still names the last event.
    let at_head = Snapshot { version: 5, ..snapshot };
    let last = s
        .append(AppendRequest {
            snapshot: Some(at_head.clone()),
            ..append("phone-s2", 0, 5)
        })
        .await
        .expect("append");
    let tail = s.read_tail("phone-s2", usize::MAX).await.expect("tail");
    assert!(tail.events.is_empty());
    assert_eq!((tail.head.version, tail.head.last_event), (5, Some(last[4].event_id)));
    // An id a backend must spell otherwise in its keys lists in id order all the same.
    s.append(AppendRequest {
        snapshot: Some(at_head.clone()),
        ..append("zz/odd", 0, 5)
    })
    .await
    .expect("append");
    let page = |after: Option<&'static str>, limit| {
        let s = s.clone();
        async move { s.snapshot_ids(after, limit).await.expect("list") }
    };
    assert_eq!(page(None, 10).await, ["phone-s", "phone-s2", "zz/odd"]);
    // Each listed snapshot reads back (the listing used to carry them; the check stays).
    for id in page(None, 10).await {
        assert!(s.snapshot(&id).await.expect("read").is_some(), "{id}");
    }
    assert_eq!(page(None, 1).await, ["phone-s"]);
    assert_eq!(page(Some("phone-s"), 1).await, ["phone-s2"]);
    assert_eq!(page(Some("phone-s2"), 5).await, ["zz/odd"]);
    assert!(page(Some("zz/odd"), 5).await.is_empty());
    s.clear_snapshots().await.expect("clear");
    let tail = s.read_tail("phone-s", usize::MAX).await.expect("tail");
    assert_eq!(
        (tail.snapshot, versions(&tail.events).len()),
        (None, 5),
        "without a snapshot, the whole stream"
    );
    let short = s.read_tail("phone-s", 2).await.expect("tail");
    assert_eq!((versions(&short.events), short.head.version), (vec![1, 2], 5));
}

/// The snapshot of an opt-out list of `numbers` numbers at `version` (30,000 are about 2.3 MB of
/// JSON, more than a NATS message holds by default).
pub fn opt_out_list_snapshot(version: u64, numbers: u64) -> Snapshot {
    let opted_out: serde_json::Map<String, serde_json::Value> = (0..numbers)
        .map(|i| {
            let entry = json!({ "OptedOutTimestampMs": 1_700_000_000_000u64 + i * 7919, "EndUserOptedOut": i % 3 == 0 });
            (format!("+1206{:07}", (i * 7_654_321) % 10_000_000), entry)
        })
        .collect();
    Snapshot {
        version,
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        state: json!({ "OptOutListName": "big", "OptedOut": opted_out }),
    }
}

/// (Guarantee 5, at any size.) A snapshot bigger than one message of the log reads back whole,
/// and so do the bigger and the small ones that replace it; it is listed once.
pub async fn a_snapshot_bigger_than_a_message_round_trips<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    let id = "optout-big";
    for (version, numbers) in (0u64..).zip([30_000, 45_000, 10, 30_000]) {
        let snapshot = opt_out_list_snapshot(version + 1, numbers);
        s.append(AppendRequest {
            snapshot: Some(snapshot.clone()),
            ..append(id, version, 1)
        })
        .await
        .expect("append");
        assert!(s.snapshot(id).await.expect("read") == Some(snapshot.clone()), "{numbers} numbers");
        let tail = s.read_tail(id, usize::MAX).await.expect("tail");
        assert!(tail.snapshot == Some(snapshot) && tail.events.is_empty(), "{numbers} numbers");
    }
    assert_eq!(s.snapshot_ids(None, 10).await.expect("list"), [id]);
}

/// Everything survives a close and a reopen, and the chain goes on where it stopped.
pub async fn reopen_after_close<H: Harness>() {
    let mut h = H::fresh().await;
    let s = h.store();
    s.append(AppendRequest {
        index_ops: vec![IndexOp::Put(b"v/k".to_vec(), b"1".to_vec())],
        unique_claims: vec![(b"n/+1".to_vec(), b"phone-o".to_vec())],
        ..append("phone-o", 0, 3)
    })
    .await
    .expect("append");
    let before = assert_feed_is_a_chain(&s).await;
    drop(s);
    h.reopen().await;
    let s = h.store();
    assert_eq!(s.read_stream("phone-o", 1, 10).await.expect("read"), before);
    assert_eq!(s.index_get(b"v/k").await.expect("get").as_deref(), Some(&b"1"[..]));
    assert!(matches!(
        s.append(AppendRequest {
            unique_claims: vec![(b"n/+1".to_vec(), b"phone-p".to_vec())],
            ..append("phone-p", 0, 1)
        })
        .await,
        Err(AppendError::UniqueViolation(_))
    ));
    s.append(append("phone-o", 3, 2)).await.expect("append after reopen");
    let after = assert_feed_is_a_chain(&s).await;
    assert_eq!(after.len(), 5);
}

/// A closed store refuses work with a clear error instead of hanging or panicking.
pub async fn a_closed_store_refuses_work<H: Harness>() {
    let h = H::fresh().await;
    let s = h.store();
    s.append(append("phone-z", 0, 1)).await.expect("append");
    s.close().await.expect("close");
    assert!(matches!(s.append(append("phone-z", 1, 1)).await, Err(AppendError::Closed)));
    assert!(s.read_stream("phone-z", 1, 10).await.is_err());
    s.close().await.expect("closing twice is harmless");
}

/// Runs every check of the contract against a harness, one test each.
#[macro_export]
macro_rules! contract_suite {
    ($harness:ty) => {
        $crate::contract_suite!(@tests $harness;
            occ_on_expected_version, occ_on_last_event_id, gap_free_versions_and_stream_reads,
            feed_order_under_concurrent_appends, feed_follow, unique_claims, idempotent_client_tokens,
            counter_limits_hold, appends_behind_a_refused_one_are_decided_after_its_predecessor, an_append_over_the_limit_its_fallback_names_commits_the_fallback,
            index_changes_are_atomic_with_events, snapshot_round_trip, a_snapshot_bigger_than_a_message_round_trips, reopen_after_close,
            a_closed_store_refuses_work);
    };
    (@tests $harness:ty; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if <$harness as contract::Harness>::available() {
                    contract::$check::<$harness>().await;
                }
            }
        )*
    };
}
