//! The store contract and the model test, run against the embedded (sled) backend and against
//! the clustered (NATS JetStream) backend on a real 3-node cluster.

mod common;
mod contract;

use phone_ledger::store::{Durability, EventStore, JetStreamSettings, JetStreamStore, Store, StoreConfig};

/// A sled store in a temporary directory.
struct Embedded {
    dir: tempfile::TempDir,
    store: Store,
}

fn open(dir: &std::path::Path) -> Store {
    // Small groups, so that group commits hold a few appends and also split them.
    StoreConfig::embedded(Durability::Flush, 4).open(dir).expect("open")
}

impl contract::Harness for Embedded {
    async fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        Embedded { dir, store }
    }

    fn store(&self) -> Store {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await.expect("close");
        self.store = open(self.dir.path());
    }
}

mod embedded {
    use super::*;
    contract_suite!(Embedded);
    model_test!(the_embedded_store_agrees_with_the_model, Embedded, 64);
}

/// A namespace of its own on the shared 3-node JetStream cluster (3 replicas).
struct Clustered {
    settings: JetStreamSettings,
    store: Store,
}

/// The shared cluster's URLs and settings naming a namespace of its own; `None` (the harness
/// having said why) when there is no cluster to run on.
fn fresh_namespace() -> Option<(Vec<String>, JetStreamSettings)> {
    if !<Clustered as contract::Harness>::available() {
        return None;
    }
    let urls = common::nats::shared_cluster().expect("cluster");
    let settings = common::nats::fresh_settings(&urls);
    Some((urls, settings))
}

async fn connect(settings: &JetStreamSettings) -> Store {
    std::sync::Arc::new(JetStreamStore::connect(settings).await.expect("connect"))
}

impl contract::Harness for Clustered {
    fn available() -> bool {
        common::nats::shared_cluster().is_some()
    }

    async fn fresh() -> Self {
        let urls = common::nats::shared_cluster().expect("cluster");
        let settings = common::nats::fresh_settings(&urls);
        let store = connect(&settings).await;
        Clustered { settings, store }
    }

    fn store(&self) -> Store {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store.close().await.expect("close");
        self.store = connect(&self.settings).await;
    }
}

mod clustered {
    use super::*;
    contract_suite!(Clustered);
    model_test!(the_clustered_store_agrees_with_the_model, Clustered, 16);
}

/// After the events stream's leader changes (here it steps down cleanly; killing it is
/// `tests/cluster_faults.rs`), each node's view still follows the stream: a write made after the
/// election reaches the view of the node that made it and of another one. Every node hears of
/// the election (counted by `phone_ledger_stream_leader_elections_heard_total`; the view is
/// watched closely then: `follower`), and its view starts following anew only if it stopped
/// moving while a reader waited for it (counted by `phone_ledger_view_follows_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_follow_the_stream_across_a_change_of_its_leader() {
    let Some((urls, settings)) = fresh_namespace() else { return };
    let metrics = phone_ledger::telemetry::install().expect("this process's recorder");
    let (writer, reader) = (connect(&settings).await, connect(&settings).await);
    writer.append(contract::append("phone-elected", 0, 1)).await.expect("append");
    let client = async_nats::connect(urls.clone()).await.expect("connect");
    let leader = |client: async_nats::Client, stream: String| async move {
        let info = client
            .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
            .await
            .expect("stream info");
        let info: serde_json::Value = serde_json::from_slice(&info.payload).expect("JSON");
        info["cluster"]["leader"].as_str().expect("a leader").to_string()
    };
    let stream = format!("{}_EVENTS", settings.namespace);
    let before = leader(client.clone(), stream.clone()).await;
    let heard_series = format!("phone_ledger_stream_leader_elections_heard_total{{stream=\"{stream}\"}}");
    let heard = || common::sample(&metrics.render(), &heard_series);
    let heard_before = heard();
    let answer = client
        .request(format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"), "".into())
        .await
        .expect("step down");
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).expect("JSON");
    assert_eq!(answer["success"], true, "{answer}");
    // Each write is resent until the new leader takes it, and answered once this node's view
    // has it.
    for version in 1..4 {
        writer
            .append(contract::append("phone-elected", version, 1))
            .await
            .expect("append after the election");
    }
    assert_ne!(leader(client.clone(), stream.clone()).await, before, "the leader stepped down");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reader.chain_head().await.expect("head").position < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the other node's view did not follow: {}",
            metrics.render()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Both nodes heard the new leader announced (what starts the close watch of their views).
    while heard() < heard_before + 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes did not hear of the election: {}",
            metrics.render()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Two nodes on one log racing for the same aggregate version, again and again: each time exactly
/// one wins and the other is told it was stale, whatever JetStream's own check let through, and
/// both nodes end with the same feed and the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_version_never_both_win() {
    use phone_ledger::store::AppendError;
    let Some((_, settings)) = fresh_namespace() else { return };
    let (a, b) = (connect(&settings).await, connect(&settings).await);
    let rounds = 40;
    for version in 0..rounds {
        let (x, y) = tokio::join!(
            a.append(contract::append("phone-race", version, 1)),
            b.append(contract::append("phone-race", version, 1))
        );
        let won = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {version}: {x:?} / {y:?}");
        for r in [&x, &y] {
            assert!(
                matches!(r, Ok(_) | Err(AppendError::WrongExpectedVersion { .. })),
                "round {version}: {r:?}"
            );
        }
    }
    for s in [&a, &b] {
        let events = s.read_stream("phone-race", 1, usize::MAX).await.expect("read");
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=rounds).collect::<Vec<_>>()
        );
    }
    let fa = contract::assert_feed_is_a_chain(&a).await;
    let fb = contract::assert_feed_is_a_chain(&b).await;
    assert_eq!(fa, fb, "both nodes see the same feed and chain");
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// Two nodes creating under one counter limit at once (an account's quota, each node's own
/// bookkeeping blind to the other's creations): the log's order decides, so exactly the limit is
/// created, the others are refused as over it, and both nodes count the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_creating_under_one_limit_never_exceed_it() {
    use phone_ledger::store::{AppendError, AppendRequest, CounterLimit, IndexOp};
    let Some((_, settings)) = fresh_namespace() else { return };
    let (a, b) = (connect(&settings).await, connect(&settings).await);
    let count = b"c/111122223333/us-east-1/phone-number".to_vec();
    let limit = 5;
    let create = |stream: String| AppendRequest {
        index_ops: vec![IndexOp::Add(count.clone(), 1)],
        counter_limits: vec![CounterLimit::at_most(count.clone(), limit)],
        ..contract::append(&stream, 0, 1)
    };
    let mut answers = Vec::new();
    for i in 0..12 {
        answers.push(a.submit(create(format!("phone-qa{i}"))).expect("queued"));
        answers.push(b.submit(create(format!("phone-qb{i}"))).expect("queued"));
    }
    let (mut created, mut refused) = (0, 0);
    for answer in answers {
        match answer.await {
            Ok(_) => created += 1,
            Err(AppendError::LimitReached(_)) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((created, refused), (limit, 24 - limit));
    // Each node reads its own writes at once; the other's reach its view a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for s in [&a, &b] {
        loop {
            let stored = s.index_get(&count).await.expect("get").expect("counted");
            let counted = i64::from_be_bytes(stored.as_slice().try_into().expect("8 bytes"));
            assert!(counted <= limit, "{counted}");
            if counted == limit {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "counted {counted}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// Two nodes each pipelining a chain of appends on one aggregate (every append decided on the
/// state the one before it makes, submitted before that one is answered, as an actor does for a
/// hot number), round after round: on each node the answers are a run of successes then a run of
/// refusals, whatever interleaving the log stored, and the aggregate's history is exactly the
/// successful appends, in order, each decided after the event before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_pipelined_chains_keep_one_history() {
    use phone_ledger::store::{AppendError, AppendRequest, EventEnvelope};
    let Some((_, settings)) = fresh_namespace() else { return };
    let (a, b) = (connect(&settings).await, connect(&settings).await);
    let stream = "phone-chains";
    let first = a.append(contract::append(stream, 0, 1)).await.expect("create");
    let mut head = (1u64, first[0].event_id);
    let mut won = 0;
    for round in 0..30 {
        // Each node decides a chain of 4 on the head it knows.
        let chain = |tag: &str| -> Vec<AppendRequest> {
            let mut requests = Vec::new();
            let mut last = head.1;
            for i in 0..4 {
                let mut request = contract::append(stream, head.0 + i, 1);
                request.meta.command = format!("{tag}-{round}-{i}");
                request.expected_last_event = Some(last);
                last = request.events[0].event_id;
                requests.push(request);
            }
            requests
        };
        let submit =
            |store: &Store, chain: Vec<AppendRequest>| chain.into_iter().map(|r| store.submit(r).expect("queued")).collect::<Vec<_>>();
        let (from_a, from_b) = (submit(&a, chain("a")), submit(&b, chain("b")));
        let mut outcomes: Vec<Vec<Result<Vec<EventEnvelope>, AppendError>>> = Vec::new();
        for answers in [from_a, from_b] {
            let mut results = Vec::new();
            for answer in answers {
                results.push(answer.await);
            }
            outcomes.push(results);
        }
        for results in &outcomes {
            let successes = results.iter().take_while(|r| r.is_ok()).count();
            assert!(
                results[successes..]
                    .iter()
                    .all(|r| matches!(r, Err(AppendError::WrongExpectedVersion { .. }))),
                "round {round}: {results:?}"
            );
            won += successes;
        }
        let history = a.read_stream(stream, 1, usize::MAX).await.expect("read");
        let last = history.last().expect("events");
        head = (last.version, last.event_id);
        assert_eq!(head.0 as usize, 1 + won, "round {round}: the history holds exactly the successes");
    }
    // Each event of the history was decided after the event before it, and the two nodes agree.
    let history = b.read_stream(stream, 1, usize::MAX).await.expect("read");
    assert_eq!(history.len(), 1 + won);
    for pair in history.windows(2) {
        let (tag, next_tag) = (&pair[0].command, &pair[1].command);
        let (node, round, i) = parse(tag);
        let (next_node, next_round, next_i) = parse(next_tag);
        if next_round == round {
            assert!(next_node == node && next_i == i + 1, "{tag} then {next_tag}");
        } else {
            assert_eq!(next_i, 0, "a round's chain starts with its first append: {tag} then {next_tag}");
        }
    }
    let fa = contract::assert_feed_is_a_chain(&a).await;
    let fb = contract::assert_feed_is_a_chain(&b).await;
    assert_eq!(fa, fb, "both nodes see the same feed and chain");
    a.close().await.expect("close");
    b.close().await.expect("close");

    fn parse(tag: &str) -> (String, u64, u64) {
        let parts: Vec<&str> = tag.split('-').collect();
        match parts.as_slice() {
            [node, round, i] => (node.to_string(), round.parse().unwrap_or(u64::MAX), i.parse().unwrap_or(u64::MAX)),
            _ => ("create".into(), u64::MAX, 0),
        }
    }
}

/// A node's pipelined chain on an aggregate that breaks (an append refused by a counter limit, so
/// every append decided after it is refused too) does not take down the chain decided next on
/// the head the log kept, submitted as an actor does once told of the refusal (the broken chain's
/// void appends perhaps still on their way): every append of the new chain is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_decided_after_a_broken_one_is_taken_whole() {
    use phone_ledger::store::{AppendError, AppendRequest, CounterLimit, IndexOp};
    let Some((_, settings)) = fresh_namespace() else { return };
    let store = connect(&settings).await;
    let stream = "phone-broken-chain";
    let first = store.append(contract::append(stream, 0, 1)).await.expect("create");
    let mut head = (1u64, first[0].event_id);
    let counter = b"c/never-above-zero".to_vec();
    let chain = |head: (u64, uuid::Uuid), refused_at: Option<u64>| -> Vec<AppendRequest> {
        let mut requests = Vec::new();
        let mut last = head.1;
        for i in 0..4 {
            let mut request = contract::append(stream, head.0 + i, 1);
            request.expected_last_event = Some(last);
            if Some(i) == refused_at {
                request.index_ops = vec![IndexOp::Add(counter.clone(), 1)];
                request.counter_limits = vec![CounterLimit::at_most(counter.clone(), 0)];
            }
            last = request.events[0].event_id;
            requests.push(request);
        }
        requests
    };
    for round in 0..10 {
        let broken: Vec<_> = chain(head, Some(1)).into_iter().map(|r| store.submit(r).expect("queued")).collect();
        let mut broken = broken.into_iter();
        let taken = broken
            .next()
            .expect("first")
            .await
            .expect("the append before the refused one is taken");
        head = (taken[0].version, taken[0].event_id);
        let refused = broken.next().expect("second").await;
        assert!(matches!(refused, Err(AppendError::LimitReached(_))), "round {round}: {refused:?}");
        // Decided on the head the log kept, while the rest of the broken chain may be in flight.
        let next: Vec<_> = chain(head, None).into_iter().map(|r| store.submit(r).expect("queued")).collect();
        for doomed in broken {
            assert!(
                matches!(doomed.await, Err(AppendError::WrongExpectedVersion { .. })),
                "round {round}"
            );
        }
        for (i, answer) in next.into_iter().enumerate() {
            let events = answer
                .await
                .unwrap_or_else(|e| panic!("round {round}: append {i} of the next chain: {e:?}"));
            head = (events[0].version, events[0].event_id);
        }
    }
    assert_eq!(
        head.0,
        1 + 10 * 5,
        "each round kept one append of the broken chain and all four of the next"
    );
    contract::assert_feed_is_a_chain(&store).await;
    store.close().await.expect("close");
}

/// The chain is sealed by one node at a time: two nodes sealing at once extend the checkpoints
/// once, each checkpoint holds the chain hash of the feed at its position, and no node seals
/// over a checkpoint its own chain disagrees with (a rewritten history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sealer_at_a_time_and_checkpoints_hold_the_chain() {
    let Some((_, settings)) = fresh_namespace() else { return };
    let a = JetStreamStore::connect(&settings).await.expect("connect");
    let b = JetStreamStore::connect(&settings).await.expect("connect");
    for round in 0..5u64 {
        a.append(contract::append("phone-sealed", round * 2, 2)).await.expect("append");
        // Both nodes' views have the append before they race to seal it.
        let head = a.chain_head().await.expect("head");
        b.read_stream("phone-sealed", 1, usize::MAX).await.expect("b catches up");
        let (x, y) = tokio::join!(a.seal_now(), b.seal_now());
        let sealed: Vec<u64> = [x.expect("seal a"), y.expect("seal b")].into_iter().flatten().collect();
        assert!(sealed.len() <= 1, "round {round}: both sealed {sealed:?}");
        assert_eq!(a.sealed_up_to().await.expect("sealed"), head.position, "round {round}");
    }
    let checkpoints = a.checkpoints().await.expect("checkpoints");
    assert_eq!(
        checkpoints.iter().map(|c| c.position).collect::<Vec<_>>(),
        [2, 4, 6, 8, 10],
        "one checkpoint per sealed position"
    );
    let feed = contract::assert_feed_is_a_chain(&(std::sync::Arc::new(b.clone()) as Store)).await;
    for cp in &checkpoints {
        assert_eq!(
            feed[cp.position as usize - 1].hash,
            hex::encode(cp.hash),
            "checkpoint at {}",
            cp.position
        );
    }

    // A checkpoint sealing another history (as if the events had been rewritten after it).
    a.append(contract::append("phone-sealed", 10, 1)).await.expect("append");
    common::nats::forge_checkpoint(&settings, 11).await;
    a.append(contract::append("phone-sealed", 11, 1)).await.expect("append");
    assert!(
        b.seal_now().await.is_err(),
        "no node seals over a checkpoint its chain disagrees with"
    );
}

/// Anyone allowed to publish on the events subjects can store a message whose header block the
/// NATS client library cannot parse: delivered to a consumer, it makes the library drop its
/// connection (a line without a colon) or panic in it (a lone carriage return in a value); read
/// by sequence, it fails the read. The views must pass it all the same: it is read as a message
/// without headers, a damaged commit taking its place in the feed alike on every node, and the
/// log goes on.
async fn the_views_pass_a_message_with_the_header_block(block: &[u8]) {
    let Some((urls, settings)) = fresh_namespace() else { return };
    let a = connect(&settings).await;
    a.append(contract::append("phone-h", 0, 1)).await.expect("append");
    let subject = format!("{}.events.junk", settings.namespace.to_ascii_lowercase());
    common::nats::publish_raw(&urls[0], &subject, block, b"not a commit").await;
    let within = std::time::Duration::from_secs(30);
    let appended = tokio::time::timeout(within, a.append(contract::append("phone-h", 1, 1))).await;
    appended
        .expect("the append is answered")
        .expect("append after the malformed message");
    let read = tokio::time::timeout(within, a.read_stream("phone-h", 1, usize::MAX)).await;
    assert_eq!(read.expect("the read is answered").expect("read").len(), 2);

    // A node starting now replays the log through it too, to the same feed.
    let b = connect(&settings).await;
    let read = tokio::time::timeout(within, b.read_stream("phone-h", 1, usize::MAX)).await;
    assert_eq!(read.expect("the read is answered").expect("read").len(), 2);
    let head = b.stream_head("phone-h").await.expect("head");
    assert_eq!(head.version, 2);
    let entries = b.feed_entries(0, 100).await.expect("entries");
    let positions: Vec<(u64, bool)> = entries.iter().map(|e| (e.position, e.envelope.is_ok())).collect();
    assert_eq!(
        positions,
        [(1, true), (2, false), (3, true)],
        "the malformed message takes one position, holding no event"
    );
    assert_eq!(a.chain_head().await.expect("a"), b.chain_head().await.expect("b"));
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_a_malformed_header_block_does_not_stall_the_views() {
    the_views_pass_a_message_with_the_header_block(b"NATS/1.0\r\nno colon on this line\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_that_panics_the_client_library_does_not_stall_the_views() {
    the_views_pass_a_message_with_the_header_block(b"NATS/1.0\r\nPhone-Ledger-Events: 1\rX\r\n\r\n").await;
}

/// A key the log holds whose reservation the claims bucket has lost (deleted by hand, say) is
/// still refused as taken, up front: not published, voided and refused as stale at every retry.
/// The refused claim's reservation then stands for the claim in force again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_whose_reservation_is_gone_is_still_refused_as_taken() {
    use futures_util::StreamExt;
    use phone_ledger::store::{AppendError, AppendRequest};
    let Some((urls, settings)) = fresh_namespace() else { return };
    let a = connect(&settings).await;
    let claim = |stream: &str| AppendRequest {
        unique_claims: vec![(b"n/+12065550100".to_vec(), stream.as_bytes().to_vec())],
        ..contract::append(stream, 0, 1)
    };
    a.append(claim("phone-x")).await.expect("first claim");
    let js = async_nats::jetstream::new(async_nats::connect(urls.clone()).await.expect("connect"));
    let bucket = js.get_key_value(format!("{}_CLAIMS", settings.namespace)).await.expect("bucket");
    let keys: Vec<String> = bucket.keys().await.expect("keys").filter_map(|k| async { k.ok() }).collect().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    bucket.delete(&keys[0]).await.expect("delete");

    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), a.append(claim("phone-y"))).await;
    match answer.expect("answered at once") {
        Err(AppendError::UniqueViolation(key)) => assert!(key.contains("+12065550100"), "{key}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.chain_head().await.expect("head").position, 1, "nothing published for it");
    let entry = bucket.get(&keys[0]).await.expect("get");
    assert!(entry.is_some(), "the key is reserved again");
    a.close().await.expect("close");
}

/// The key-value buckets' entries are read as the log's messages are: one published with a
/// header value that makes the client library panic (a lone carriage return) is an unreadable
/// snapshot or reservation, not a node whose connection is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_entry_with_a_malformed_header_block_is_only_unreadable() {
    use phone_ledger::store::{AppendRequest, Snapshot, SNAPSHOT_SCHEMA_VERSION};
    let Some((urls, settings)) = fresh_namespace() else { return };
    let a = connect(&settings).await;
    let snapshot = Snapshot {
        version: 2,
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        state: serde_json::json!({ "Seen": 2 }),
    };
    let with_snapshot = AppendRequest {
        snapshot: Some(snapshot),
        ..contract::append("phone-k", 0, 2)
    };
    a.append(with_snapshot).await.expect("append");
    let block = b"NATS/1.0\r\nKV-Operation: PUT\rX\r\n\r\n";
    let bucket = |name: &str| format!("$KV.{}_{name}", settings.namespace);
    common::nats::publish_raw(&urls[0], &format!("{}.phone-k", bucket("SNAPSHOTS")), block, b"{}").await;
    let key = format!("={}", hex::encode(b"n/+12065550100"));
    common::nats::publish_raw(&urls[0], &format!("{}.{key}", bucket("CLAIMS")), block, b"not a reservation").await;

    let within = std::time::Duration::from_secs(30);
    let tail = tokio::time::timeout(within, a.read_tail("phone-k", 100))
        .await
        .expect("answered")
        .expect("tail");
    assert_eq!((tail.snapshot, tail.events.len()), (None, 2), "the unreadable snapshot is skipped");
    // `audit verify` lists the snapshots and finds the poisoned one unreadable.
    let listed = tokio::time::timeout(within, a.snapshot_ids(None, 10))
        .await
        .expect("answered")
        .expect("list");
    assert_eq!(listed, ["phone-k"]);
    match tokio::time::timeout(within, a.snapshot("phone-k")).await.expect("answered") {
        Err(phone_ledger::store::StoreError::Corrupt { key, .. }) => assert!(key.contains("phone-k"), "{key}"),
        other => panic!("{other:?}"),
    }
    let claim = AppendRequest {
        unique_claims: vec![(b"n/+12065550100".to_vec(), b"phone-c".to_vec())],
        ..contract::append("phone-c", 0, 1)
    };
    // The unreadable reservation counts as abandoned (its age cannot be read): the log decides.
    tokio::time::timeout(within, a.append(claim))
        .await
        .expect("answered")
        .expect("the claim is taken");
    a.close().await.expect("close");
}

/// A snapshot key whose last entry is a deletion is listed by the server like any other, and
/// reads as no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_snapshot_entry_is_listed_and_passed_over() {
    use phone_ledger::store::{AppendRequest, Snapshot, SNAPSHOT_SCHEMA_VERSION};
    let Some((urls, settings)) = fresh_namespace() else { return };
    let a = connect(&settings).await;
    for id in ["phone-a", "phone-b", "phone-c"] {
        let snapshot = Snapshot {
            version: 1,
            schema_version: SNAPSHOT_SCHEMA_VERSION,
            state: serde_json::json!({ "Seen": 1 }),
        };
        a.append(AppendRequest {
            snapshot: Some(snapshot),
            ..contract::append(id, 0, 1)
        })
        .await
        .expect("append");
    }
    let js = async_nats::jetstream::new(async_nats::connect(urls.clone()).await.expect("connect"));
    let bucket = js.get_key_value(format!("{}_SNAPSHOTS", settings.namespace)).await.expect("bucket");
    bucket.delete("phone-a").await.expect("delete");
    bucket.delete("phone-b").await.expect("delete");
    // Listed (the server lists the key), and read as none: `audit verify` passes over it.
    assert_eq!(a.snapshot_ids(None, 10).await.expect("list"), ["phone-a", "phone-b", "phone-c"]);
    assert_eq!(a.snapshot("phone-a").await.expect("read"), None);
    assert!(a.snapshot("phone-c").await.expect("read").is_some());
    // A key whose last message is the delete marker takes a snapshot again (its compare-and-set
    // names the marker's revision).
    a.append(AppendRequest {
        snapshot: Some(Snapshot {
            version: 2,
            schema_version: SNAPSHOT_SCHEMA_VERSION,
            state: serde_json::json!({ "Seen": 2 }),
        }),
        ..contract::append("phone-a", 1, 1)
    })
    .await
    .expect("append");
    assert_eq!(a.snapshot("phone-a").await.expect("read").map(|s| s.version), Some(2));
    a.close().await.expect("close");
}

/// A snapshot too big for one message is kept in parts: replaced, it leaves no parts of the old
/// one behind; a damaged part makes it unreadable (never a wrong state), and the stream is then
/// read from its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_parts_leaves_no_parts_behind_and_a_damaged_part_is_found() {
    use phone_ledger::store::{AppendRequest, StoreError};
    let Some((urls, settings)) = fresh_namespace() else { return };
    let a = connect(&settings).await;
    let id = "optout-parts";
    for (version, numbers) in [(1, 30_000), (2, 45_000), (3, 30_000)] {
        a.append(AppendRequest {
            snapshot: Some(contract::opt_out_list_snapshot(version, numbers)),
            ..contract::append(id, version - 1, 1)
        })
        .await
        .expect("append");
    }
    let js = async_nats::jetstream::new(async_nats::connect(urls.clone()).await.expect("connect"));
    let bucket = format!("{}_SNAPSHOTS", settings.namespace);
    let mut stream = js.get_stream(format!("KV_{bucket}")).await.expect("bucket stream");
    let subjects = subjects_of(&stream, &format!("$KV.{bucket}.>")).await;
    let key = format!("$KV.{bucket}.{id}");
    let parts: Vec<&String> = subjects.iter().filter(|s| s.starts_with(&format!("{key}."))).collect();
    assert!(subjects.contains(&key) && parts.len() >= 2, "{subjects:?}");
    assert_eq!(parts.len() + 1, subjects.len(), "only the key and its parts: {subjects:?}");
    let sequences: std::collections::BTreeSet<&str> = parts.iter().filter_map(|p| p[key.len() + 1..].split('.').next()).collect();
    assert_eq!(sequences.len(), 1, "the parts of one snapshot, the last: {parts:?}");
    assert_eq!(
        stream.info().await.expect("info").state.messages as usize,
        subjects.len(),
        "purged, not marked deleted"
    );

    // A part overwritten with as many other bytes: its manifest's SHA-256 finds it.
    let kv = js.get_key_value(&bucket).await.expect("bucket");
    let manifest: serde_json::Value = serde_json::from_slice(&kv.get(id).await.expect("get").expect("the manifest")).expect("JSON");
    let part_size = manifest["Parts"]["PartSize"].as_u64().expect("a part size") as usize;
    let first = parts.iter().find(|p| p.ends_with(".1")).expect("a first part");
    js.publish(first.to_string(), vec![b'x'; part_size].into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let unreadable = |why: &'static str| {
        let a = a.clone();
        async move {
            match a.snapshot(id).await {
                Err(StoreError::Corrupt { key, message }) => assert!(key.contains(id) && message.contains(why), "{key}: {message}"),
                other => panic!("{:?}", other.map(|s| s.map(|s| s.version))),
            }
        }
    };
    unreadable("SHA-256").await;
    // A part gone: read again (its writer may have replaced it), then unreadable.
    let second = parts.iter().find(|p| p.ends_with(".2")).expect("a second part");
    stream.purge().filter(second.to_string()).await.expect("purge");
    unreadable("missing").await;
    let tail = a.read_tail(id, usize::MAX).await.expect("tail");
    assert_eq!((tail.snapshot.is_none(), tail.events.len()), (true, 3), "read from its events");
    a.close().await.expect("close");
}

/// The subjects `stream` holds messages on under `filter`, in order.
async fn subjects_of(stream: &async_nats::jetstream::stream::Stream, filter: &str) -> Vec<String> {
    use futures_util::StreamExt;
    let mut listed = stream.info_with_subjects(filter).await.expect("subjects");
    let mut subjects = Vec::new();
    while let Some(subject) = listed.next().await {
        subjects.push(subject.expect("subject").0);
    }
    subjects.sort();
    subjects
}

/// The parts a writer left behind when it stopped before naming them are swept by the next
/// snapshot (not those of a later commit, whose writer may be at work), and a snapshot of an
/// earlier commit never replaces one of a later commit (two nodes finishing out of order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_parts_are_swept_and_a_later_snapshot_is_not_replaced() {
    use phone_ledger::store::AppendRequest;
    let Some((urls, settings)) = fresh_namespace() else { return };
    let a = connect(&settings).await;
    let id = "optout-strays";
    let js = async_nats::jetstream::new(async_nats::connect(urls.clone()).await.expect("connect"));
    let bucket = format!("{}_SNAPSHOTS", settings.namespace);
    let kv = js.get_key_value(&bucket).await.expect("bucket");
    let stream = js.get_stream(format!("KV_{bucket}")).await.expect("bucket stream");
    let parts_of = |sequence: u64| format!("$KV.{bucket}.{id}.{sequence}.1");
    // Left by writers that stopped half way: one before any commit of the stream, one (at work,
    // as far as anyone can tell) after every commit to come.
    let (stray, later) = (parts_of(0), parts_of(1 << 40));
    for subject in [&stray, &later] {
        js.publish(subject.clone(), vec![b'x'; 8192].into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    for (version, numbers) in [(1, 30_000), (2, 10)] {
        a.append(AppendRequest {
            snapshot: Some(contract::opt_out_list_snapshot(version, numbers)),
            ..contract::append(id, version - 1, 1)
        })
        .await
        .expect("append");
    }
    let key = format!("$KV.{bucket}.{id}");
    // The second snapshot is whole: the first one's parts and the stray are swept with it.
    assert_eq!(subjects_of(&stream, &format!("{key}.>")).await, std::slice::from_ref(&later));
    assert!(a.snapshot(id).await.expect("read").is_some_and(|s| s.version == 2));

    // A node that kept a snapshot of a later commit: this node's, of an earlier one, gives way.
    let mut kept: serde_json::Value = serde_json::from_slice(&kv.get(id).await.expect("get").expect("a snapshot")).expect("JSON");
    kept["Sequence"] = serde_json::json!(1u64 << 40);
    kv.put(id, serde_json::to_vec(&kept).expect("encode").into()).await.expect("put");
    a.append(AppendRequest {
        snapshot: Some(contract::opt_out_list_snapshot(3, 30_000)),
        ..contract::append(id, 2, 1)
    })
    .await
    .expect("append");
    let now: serde_json::Value = serde_json::from_slice(&kv.get(id).await.expect("get").expect("a snapshot")).expect("JSON");
    assert_eq!(now, kept, "the later snapshot stays");
    assert_eq!(
        subjects_of(&stream, &format!("{key}.>")).await,
        [later],
        "no parts written for nothing"
    );
    a.close().await.expect("close");
}
