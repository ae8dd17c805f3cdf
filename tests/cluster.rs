//! Several phone-ledger nodes on one replicated log: three servers over a real 3-node NATS
//! JetStream cluster, driven through the AWS SDK and the load generator. Any node serves any
//! number; conflicting commands arriving at different nodes stay correct.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::operation::release_phone_number::ReleasePhoneNumberError;
use aws_sdk_pinpointsmsvoicev2::types::{ConflictExceptionReason, MessageType, NumberStatus};
use phone_ledger::config::Config;
use phone_ledger::loadtest::{run, LoadTestArgs};
use phone_ledger::server::{RunningServer, ServerError};
use phone_ledger::store::{JetStreamSettings, StoreConfig};

use common::{client_for, ACCOUNT, REGION};

/// Three phone-ledger nodes sharing one namespace of the shared NATS cluster.
struct Nodes {
    servers: Vec<RunningServer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    fn start(settings: &JetStreamSettings) -> Self {
        Self::start_with(settings, |_| {})
    }

    fn start_with(settings: &JetStreamSettings, tweak: impl Fn(&mut Config)) -> Self {
        // Addresses are chosen first, so each node knows its peers (routing to a number's owner);
        // another test may take one before its node binds it, so the three start again on fresh
        // addresses then (the nodes already up stop when dropped).
        for _ in 0..5 {
            if let Some(nodes) = Self::try_start(settings, &tweak) {
                return nodes;
            }
        }
        panic!("three nodes could not bind their addresses in 5 tries");
    }

    fn try_start(settings: &JetStreamSettings, tweak: &impl Fn(&mut Config)) -> Option<Self> {
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        let addrs: Vec<std::net::SocketAddr> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr")
            })
            .collect();
        let peers: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
        for addr in &addrs {
            let dir = tempfile::tempdir().expect("dir");
            let mut config = common::config_for(dir.path());
            config.listen = *addr;
            config.cluster.peers = peers.clone();
            config.cluster.self_url = format!("http://{addr}");
            config.store = StoreConfig::clustered(settings.clone());
            // Pagination tokens from one node are good at every other.
            config.pagination_secret = Some("a secret shared by the nodes".into());
            config.quotas.phone_numbers_per_account = u64::MAX;
            tweak(&mut config);
            match RunningServer::spawn(config) {
                Ok(server) => servers.push(server),
                Err(ServerError::Bind { addr, source }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                    eprintln!("{addr} was taken before its node bound it; starting the three again");
                    return None;
                }
                Err(e) => panic!("node starts: {e:?}"),
            }
            dirs.push(dir);
        }
        Some(Nodes { servers, _dirs: dirs })
    }

    fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url()).collect()
    }

    fn stop(self) {
        for s in self.servers {
            s.stop().expect("clean stop");
        }
    }
}

/// A RequestPhoneNumber for a transactional US long code with SMS.
fn long_code(
    client: &aws_sdk_pinpointsmsvoicev2::Client,
) -> aws_sdk_pinpointsmsvoicev2::operation::request_phone_number::builders::RequestPhoneNumberFluentBuilder {
    client
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(aws_sdk_pinpointsmsvoicev2::types::NumberCapability::Sms)
        .number_type(aws_sdk_pinpointsmsvoicev2::types::RequestableNumberType::LongCode)
}

fn cluster_settings() -> Option<JetStreamSettings> {
    let urls = common::nats::shared_cluster()?;
    Some(common::nats::fresh_settings(&urls))
}

/// Retries `check` until it holds (another node's view follows a write a moment later).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_numbers_lifecycle_across_three_nodes() {
    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start(&settings);
    let urls = nodes.urls();
    let c: Vec<_> = urls.iter().map(|u| client_for(u, ACCOUNT, REGION)).collect();

    // Requested on node 1, with deletion protection and a client token.
    let request = |client: &aws_sdk_pinpointsmsvoicev2::Client| {
        long_code(client)
            .deletion_protection_enabled(true)
            .client_token("cluster-token-1")
            .send()
    };
    let requested = request(&c[0]).await.expect("RequestPhoneNumber");
    let id = requested.phone_number_id().expect("id").to_string();
    // The same client token at another node finds the same number (the claim is cluster-wide).
    let again = request(&c[1]).await.expect("retried RequestPhoneNumber");
    assert_eq!(again.phone_number_id(), Some(id.as_str()));

    // Release refused at node 2: the actor there rebuilt the number from the log.
    let err = c[1]
        .release_phone_number()
        .phone_number_id(&id)
        .send()
        .await
        .expect_err("protected");
    match err.into_service_error() {
        ReleasePhoneNumberError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::DeletionProtectionEnabled))
        }
        other => panic!("{other:?}"),
    }
    // Protection lifted at node 3, release accepted at node 2: node 2's live actor is stale
    // and the log's per-subject check makes it read the update before deciding.
    c[2].update_phone_number()
        .phone_number_id(&id)
        .deletion_protection_enabled(false)
        .send()
        .await
        .expect("UpdatePhoneNumber");
    let released = c[1]
        .release_phone_number()
        .phone_number_id(&id)
        .send()
        .await
        .expect("ReleasePhoneNumber");
    assert_eq!(released.status(), Some(&NumberStatus::Deleted));
    // And a second release anywhere finds it gone.
    let again = c[0].release_phone_number().phone_number_id(&id).send().await;
    assert_eq!(again.expect_err("released").code(), Some("ResourceNotFoundException"));
    // Every node's Describe comes to show the release.
    for (i, client) in c.iter().enumerate() {
        eventually(&format!("node {} sees the release", i + 1), || async {
            let described = client.describe_phone_numbers().phone_number_ids(&id).send().await;
            described.is_err_and(|e| e.code() == Some("ResourceNotFoundException"))
        })
        .await;
    }
    // Every node's audit trail has the same history of it, chained the same way.
    let mut histories = Vec::new();
    for url in &urls {
        let history: serde_json::Value = reqwest::get(format!("{url}/audit/phone-numbers/{id}/events"))
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        histories.push(history);
    }
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
    let types: Vec<&str> = histories[0]["Events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"PhoneNumberRequested"), "{types:?}");
    assert!(types.contains(&"ReleaseRejected"), "{types:?}");
    // The release, then the refused second one (a refusal is history too).
    assert_eq!(&types[types.len() - 2..], ["Released", "ReleaseRejected"], "{types:?}");

    // The sealer fixes the chain within a few seconds, and verification checks it against
    // every checkpoint.
    let get = |url: String| async move {
        reqwest::get(url)
            .await
            .expect("get")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    eventually("the chain is sealed up to the head", || async {
        let digest = get(format!("{}/audit/digest", urls[2])).await;
        digest["SealedUpTo"] == digest["Position"]
    })
    .await;
    let verified = get(format!("{}/audit/verify", urls[1])).await;
    assert_eq!(verified["Ok"], true, "{verified}");
    assert!(verified["CheckpointsChecked"].as_u64() >= Some(1), "{verified}");
    assert_eq!(verified["SealedUpTo"], verified["HeadPosition"], "{verified}");
    // A checkpoint of another history in the log is found by verification.
    let head = verified["HeadPosition"].as_u64().expect("head");
    common::nats::forge_checkpoint(&settings, head).await;
    let verified = get(format!("{}/audit/verify", urls[0])).await;
    assert_eq!(verified["Ok"], false, "{verified}");
    assert!(
        verified["FirstBreak"]["Problem"].as_str().is_some_and(|p| p.contains("checkpoint")),
        "{verified}"
    );
    nodes.stop();
}

#[test]
fn conflicting_load_spread_over_three_nodes_passes_the_verdict() {
    let Some(settings) = cluster_settings() else { return };
    phone_ledger::cli::init_tracing("warn", true);
    let nodes = Nodes::start(&settings);
    let args = LoadTestArgs {
        server: Some(nodes.urls().join(",")),
        clients: 24,
        numbers: 40,
        pools: 4,
        hot_fraction: 0.25,
        // By count, so a slow machine does the same work (a minute at most).
        requests: Some(5_000),
        duration: Some(Duration::from_secs(60)),
        seed: 11,
        ..Default::default()
    };
    let report = run(&args).expect("load test runs");
    if !report.verdict.ok {
        for v in report.verdict.checks.iter().flat_map(|c| c.violations.iter()) {
            let Some(req) = v.split_whitespace().nth(1) else { continue };
            let Some(stream) = v.split(" on ").nth(1).and_then(|r| r.split(':').next()) else {
                continue;
            };
            eprintln!("VIOLATION {v}");
            for e in report.log.iter().filter(|e| e.request_id == req || e.stream_id == stream) {
                eprintln!(
                    "  {} v{} p{} {} {} {}",
                    e.stream_id, e.version, e.position, e.request_id, e.event_type, e.payload
                );
            }
            for o in report.client_ops.iter().filter(|o| o.request_id.as_deref() == Some(req)) {
                eprintln!("  OP {o:?}");
            }
        }
    }
    assert!(report.verdict.ok, "{:#?}", report.verdict);
    assert!(report.requests > 300, "the run did real work: {}", report.requests);
    let release = &report.operations["release"];
    assert!(release.ok >= 1 && release.outcomes.len() >= 2, "{release:?}");
    assert!(report.verdict.checks.iter().all(|c| c.checked > 0), "{:#?}", report.verdict.checks);
    nodes.stop();
}

/// The configuration a person writes for a node names the backend and the servers.
#[test]
fn the_store_section_selects_the_clustered_backend() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "[store]\nbackend = \"jetstream\"\n[store.jetstream]\nservers = [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:4223\"]\nnamespace = \"DEMO\"\n",
    )
    .expect("write");
    // Every node must sign page tokens with one secret: a node refuses to start without it.
    let refused = Config::load(Some(&file), &Default::default()).expect_err("no pagination secret");
    assert!(phone_ledger::error_chain(&refused).contains("pagination_secret"), "{refused}");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, format!("pagination_secret = \"shared by the nodes\"\n{text}")).expect("write");
    let config = Config::load(Some(&file), &Default::default()).expect("load");
    assert_eq!(config.store.backend, phone_ledger::store::Backend::Jetstream);
    assert_eq!(config.store.jetstream.servers.len(), 2);
    assert_eq!(config.store.jetstream.replicas, 3, "three copies unless told otherwise");
    std::fs::write(
        &file,
        "pagination_secret = \"shared by the nodes\"\n[store]\nbackend = \"jetstream\"\n[store.jetstream]\nreplicas = 2\n",
    )
    .expect("write");
    assert!(
        Config::load(Some(&file), &Default::default()).is_err(),
        "2 replicas cannot form a quorum that survives a loss"
    );
}

/// A node that dies between the two steps of a pool change leaves its number `ASSOCIATING`; the
/// reconciler of the nodes still running finishes it once the change has been left alone long
/// enough, though the number's clients keep writing to it meanwhile (each write, refused or not,
/// is an event on its stream, so "the number has not moved lately" would never hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finishes_what_a_dead_node_left_between_two_steps() {
    use phone_ledger::domain::phone_number::{PhoneNumberEvent, PhoneNumberState};
    use phone_ledger::store::{EventStore, JetStreamStore};

    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start_with(&settings, |c| c.reconcile_after_secs = 2);
    let urls = nodes.urls();
    let c = client_for(&urls[0], ACCOUNT, REGION);
    let (first, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let (stuck, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let pool_id = common::create_pool(&c, &first).await;

    // What a node that died after the number's first step leaves in the log.
    let log = JetStreamStore::connect(&settings).await.expect("connect");
    let event = PhoneNumberEvent::Membership(phone_ledger::domain::membership::MembershipEvent::PoolAssociationStarted {
        pool_id: pool_id.clone(),
    });
    let command = "AssociateOriginationIdentity/BeginAssociation";
    common::append_as_an_actor_would::<PhoneNumberState>(&log, &stuck, event, "died-mid-change", command, serde_json::Value::Null).await;
    log.close().await.expect("close");

    // A client keeps updating the number, more often than the reconciler's patience.
    let busy = {
        let (c, stuck) = (client_for(&urls[2], ACCOUNT, REGION), stuck.clone());
        tokio::spawn(async move {
            loop {
                let _ = c
                    .update_phone_number()
                    .phone_number_id(&stuck)
                    .deletion_protection_enabled(false)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let client = client_for(&urls[1], ACCOUNT, REGION);
    eventually("the number is ACTIVE again, outside the pool", || async {
        let out = client.describe_phone_numbers().phone_number_ids(&stuck).send().await;
        out.ok().and_then(|o| {
            o.phone_numbers()
                .first()
                .map(|n| (n.status().clone(), n.pool_id().map(String::from)))
        }) == Some((NumberStatus::Active, None))
    })
    .await;
    busy.abort();
    // It was the reconciler that settled it, not a view that had not yet seen the first step.
    let log = JetStreamStore::connect(&settings).await.expect("connect");
    let types: Vec<String> = log
        .read_stream(&stuck, 1, usize::MAX)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_type)
        // The client's updates (refused while the number is joining a pool) are left out.
        .filter(|t| t != "PhoneNumberUpdated" && t != "UpdateRejected")
        .collect();
    log.close().await.expect("close");
    assert_eq!(
        types.iter().rev().take(2).rev().map(String::as_str).collect::<Vec<_>>(),
        ["PoolAssociationStarted", "PoolAssociationAborted"],
        "{types:?}"
    );
    nodes.stop();
}

/// One AWS JSON request to `url`, as the SDKs send it.
async fn call(http: &reqwest::Client, url: String, operation: &str, body: serde_json::Value) -> reqwest::Response {
    http.post(format!("{url}/"))
        .header("X-Amz-Target", format!("PinpointSMSVoiceV2.{operation}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={ACCOUNT}/20261127/{REGION}/sms-voice/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("send")
}

/// The node among `urls` that owns `id` (as each of them computes it).
fn owner_of(urls: &[String], id: &str) -> String {
    use phone_ledger::api::routing::{ClusterConfig, Router};
    let router = Router::new(&ClusterConfig {
        peers: urls.to_vec(),
        self_url: urls[0].clone(),
        ..Default::default()
    })
    .expect("router");
    router.owner_of(id).to_string()
}

/// The node that decided an answer.
fn decided_by(answer: &reqwest::Response) -> Option<String> {
    use phone_ledger::api::routing::DECIDED_BY;
    answer.headers().get(DECIDED_BY).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Read-your-writes for a client that keeps talking to one node, when that node forwards its
/// writes to their owners: the owner says how far into the log its appends reach, and the node
/// that relayed the answer makes its next reads wait for that much. Each write is read back at
/// once, through the node that relayed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_node_reads_the_writes_it_made_through_it() {
    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start(&settings);
    let urls = nodes.urls();
    // A node that does not own the account's creations: each one is forwarded.
    let creator = owner_of(&urls, &format!("quota/{ACCOUNT}/{REGION}"));
    let relay = urls.iter().find(|u| **u != creator).expect("another node").clone();
    let http = reqwest::Client::new();
    let mut unseen = Vec::new();
    for round in 0..30 {
        let created = call(
            &http,
            relay.clone(),
            "RequestPhoneNumber",
            serde_json::json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE"}),
        )
        .await;
        assert_eq!(created.status(), 200);
        assert_eq!(decided_by(&created).as_deref(), Some(creator.as_str()), "forwarded");
        let id = created.json::<serde_json::Value>().await.expect("json")["PhoneNumberId"]
            .as_str()
            .expect("id")
            .to_string();
        let read = call(
            &http,
            relay.clone(),
            "DescribePhoneNumbers",
            serde_json::json!({"PhoneNumberIds": [id]}),
        )
        .await;
        if read.status() != 200 {
            unseen.push((round, read.status().as_u16()));
        }
    }
    assert!(unseen.is_empty(), "writes relayed by {relay} not read back through it: {unseen:?}");
    // The relay never appended anything itself, yet its reads wait for the writes it relayed
    // (how far the creator's reach, at the last one of them).
    let through = |url: String| async move { common::health(&url).await["LogThrough"].as_u64().expect("LogThrough") };
    let (relayed, created) = (through(relay.clone()).await, through(creator.clone()).await);
    assert!(
        relayed > 0 && relayed <= created,
        "the relay waits for {relayed}, the creator's writes reach {created}"
    );
    nodes.stop();
}

/// Routing is an optimisation: with `route = "always"` (the default), a command on a number is
/// decided by the node that owns it, wherever it arrives; reads are served where they arrive. A
/// pool change is decided by its member's owner, from that node's view of the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_number_are_decided_by_its_owner() {
    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start(&settings);
    let urls = nodes.urls();
    let c = client_for(&urls[0], ACCOUNT, REGION);
    let id = common::request(&c, MessageType::Transactional).await;
    let owner = owner_of(&urls, &id);
    let http = reqwest::Client::new();
    let call = |url: String, operation: &'static str, body: serde_json::Value| call(&http, url, operation, body);
    for (i, url) in urls.iter().enumerate() {
        let answer = call(
            url.clone(),
            "UpdatePhoneNumber",
            serde_json::json!({"PhoneNumberId": id, "DeletionProtectionEnabled": i % 2 == 0}),
        )
        .await;
        assert_eq!(answer.status(), 200);
        assert!(answer.headers().contains_key("x-amzn-requestid"));
        assert_eq!(decided_by(&answer).as_deref(), Some(owner.as_str()), "sent to {url}");
        // A read is served where it arrives.
        let read = call(url.clone(), "DescribePhoneNumbers", serde_json::json!({"PhoneNumberIds": [id]})).await;
        assert_eq!(decided_by(&read).as_deref(), Some(url.as_str()));
    }
    // A pool is created by the owner of the account; a number another node owns joins it at
    // once, decided by that node, whose view of the log must first find the new pool.
    let creator = owner_of(&urls, &format!("quota/{ACCOUNT}/{REGION}"));
    let mut others = Vec::new();
    while others.len() < 2 {
        let other = common::request(&c, MessageType::Transactional).await;
        if owner_of(&urls, &other) != creator {
            others.push(other);
        }
    }
    let created = call(
        urls[0].clone(),
        "CreatePool",
        serde_json::json!({"OriginationIdentity": id, "IsoCountryCode": "US", "MessageType": "TRANSACTIONAL"}),
    )
    .await;
    assert_eq!(created.status(), 200);
    assert_eq!(decided_by(&created).as_deref(), Some(creator.as_str()));
    let pool: serde_json::Value = created.json().await.expect("pool");
    let pool_id = pool["PoolId"].as_str().expect("PoolId").to_string();
    let join = |number: &str| {
        call(
            urls[2].clone(),
            "AssociateOriginationIdentity",
            serde_json::json!({"PoolId": pool_id, "OriginationIdentity": number, "IsoCountryCode": "US"}),
        )
    };
    let joined = join(&others[0]).await;
    assert_eq!(decided_by(&joined).as_deref(), Some(owner_of(&urls, &others[0]).as_str()));
    assert_eq!(joined.status(), 200, "{:?}", joined.text().await);
    // Once the pool is deleted, no node lets a number join it, whatever its view still shows.
    let deleted = call(urls[1].clone(), "DeletePool", serde_json::json!({"PoolId": pool_id})).await;
    assert_eq!(deleted.status(), 200);
    let refused = join(&others[1]).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(error_type(&refused), Some("ResourceNotFoundException".to_string()));

    // An error answer is relayed as the owner gave it.
    let gone = call(
        urls[1].clone(),
        "ReleasePhoneNumber",
        serde_json::json!({"PhoneNumberId": "phone-0123456789abcdef0123456789abcdef"}),
    )
    .await;
    assert_eq!(gone.status(), 400);
    assert_eq!(error_type(&gone), Some("ResourceNotFoundException".to_string()));
    nodes.stop();
}

/// The error type an answer names (`x-amzn-errortype`, without its URL part).
fn error_type(answer: &reqwest::Response) -> Option<String> {
    answer
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(':').next().unwrap_or(t).to_string())
}

/// With `route = "contended"`, a quiet number is decided where its commands arrive (no extra
/// hop), and once a node has lost a race for it, that node sends its commands on it to the owner,
/// so the racing stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_number_moves_to_its_owner() {
    use phone_ledger::api::routing::Route;
    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start_with(&settings, |c| c.cluster.route = Route::Contended);
    let urls = nodes.urls();
    let id = common::request(&client_for(&urls[0], ACCOUNT, REGION), MessageType::Transactional).await;
    let owner = owner_of(&urls, &id);
    let elsewhere = urls.iter().find(|u| **u != owner).expect("a node that is not the owner").clone();
    let http = reqwest::Client::new();
    let update = |url: String, protect: bool| {
        call(
            &http,
            url,
            "UpdatePhoneNumber",
            serde_json::json!({"PhoneNumberId": id, "DeletionProtectionEnabled": protect}),
        )
    };
    let quiet = update(elsewhere.clone(), true).await;
    assert_eq!(quiet.status(), 200);
    assert_eq!(
        decided_by(&quiet).as_deref(),
        Some(elsewhere.as_str()),
        "a quiet number is decided where it arrives"
    );
    // Updates racing through all three nodes until `elsewhere` has lost a race and hands over.
    for round in 0..20 {
        let racing: Vec<_> = (0..12).map(|i| update(urls[i % 3].clone(), (i + round) % 2 == 0)).collect();
        for answer in futures_util::future::join_all(racing).await {
            assert_eq!(answer.status(), 200, "round {round}");
        }
        let after = update(elsewhere.clone(), round % 2 == 0).await;
        assert_eq!(after.status(), 200);
        if decided_by(&after).as_deref() == Some(owner.as_str()) {
            nodes.stop();
            return;
        }
    }
    panic!("{elsewhere} kept deciding the contended number itself instead of sending it to its owner {owner}");
}

/// A quota holds across nodes: racing requests spread over three nodes create exactly as many
/// numbers as the quota allows. With routing, the account's owner decides them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_for_requests_racing_on_three_nodes() {
    quota_race(true).await;
}

/// Without routing (or with the account's owner unreachable) each node decides for itself, blind
/// to the others' creations in flight: the quota still holds, because each creation's append
/// names it as its counter's limit and the log refuses the one that would go over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_on_three_nodes_deciding_each_for_itself() {
    quota_race(false).await;
}

async fn quota_race(routing: bool) {
    use aws_sdk_pinpointsmsvoicev2::operation::request_phone_number::RequestPhoneNumberError;
    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start_with(&settings, |c| {
        c.quotas.phone_numbers_per_account = 4;
        if !routing {
            c.cluster.peers.clear();
        }
    });
    let clients: Vec<_> = nodes.urls().iter().map(|u| client_for(u, ACCOUNT, REGION)).collect();
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..15 {
        let client = clients[i % 3].clone();
        racing.spawn(async move { long_code(&client).send().await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(answer) = racing.join_next().await {
        match answer.expect("task") {
            Ok(_) => created += 1,
            Err(e) => match e.into_service_error() {
                RequestPhoneNumberError::ServiceQuotaExceededException(_) => refused += 1,
                other => panic!("{other:?}"),
            },
        }
    }
    assert_eq!((created, refused), (4, 11), "routing: {routing}");
    nodes.stop();
}

/// In strict SigV4 mode a forwarded request is checked by its owner against the client's own
/// signature: the forwarding node passes it on as it came, `Host` included, and vouches for
/// nothing. Signed for the node it was sent to, it is decided by the owner; a bad signature is
/// refused before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_checked_against_the_clients_own_signature() {
    use phone_ledger::auth::{sign_request, AuthMode};
    let Some(settings) = cluster_settings() else { return };
    let (key, secret) = ("AKIACLUSTERTEST00001", "secret-of-the-cluster-test-0000");
    let credentials_dir = tempfile::tempdir().expect("dir");
    let credentials_file = credentials_dir.path().join("credentials.toml");
    std::fs::write(
        &credentials_file,
        format!("[[credentials]]\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\naccount = \"{ACCOUNT}\"\n"),
    )
    .expect("credentials");
    let nodes = Nodes::start_with(&settings, |config| {
        config.auth.mode = AuthMode::Sigv4;
        config.auth.credentials_file = Some(credentials_file.clone());
    });
    let urls = nodes.urls();
    let sdk = aws_sdk_pinpointsmsvoicev2::Client::from_conf(
        aws_sdk_pinpointsmsvoicev2::Config::builder()
            .behavior_version(aws_sdk_pinpointsmsvoicev2::config::BehaviorVersion::latest())
            .region(aws_sdk_pinpointsmsvoicev2::config::Region::new(REGION))
            .credentials_provider(aws_sdk_pinpointsmsvoicev2::config::Credentials::new(
                key, secret, None, None, "test",
            ))
            .endpoint_url(&urls[0])
            .build(),
    );
    let id = common::request(&sdk, MessageType::Transactional).await;
    let owner = owner_of(&urls, &id);
    let http = reqwest::Client::new();
    let signed = |url: &str, secret: &str, body: &serde_json::Value| {
        let credentials = aws_credential_types::Credentials::new(key, secret, None, None, "test");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "PinpointSMSVoiceV2.UpdatePhoneNumber"),
        ];
        let url = format!("{url}/");
        let added = sign_request(
            "POST",
            &url,
            &headers,
            body.to_string().as_bytes(),
            &credentials,
            REGION,
            std::time::SystemTime::now(),
        )
        .expect("sign");
        let mut request = http.post(url).body(body.to_string());
        for (k, v) in headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(added) {
            request = request.header(k, v);
        }
        request
    };
    for (i, url) in urls.iter().enumerate() {
        let body = serde_json::json!({"PhoneNumberId": id, "DeletionProtectionEnabled": i % 2 == 0});
        let answer = signed(url, secret, &body).send().await.expect("answer");
        assert_eq!(answer.status(), 200, "sent to {url}");
        assert_eq!(decided_by(&answer).as_deref(), Some(owner.as_str()), "sent to {url}");
        let refused = signed(url, "not-the-secret-of-the-test-00000", &body).send().await.expect("answer");
        assert_eq!(
            refused.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
            Some("InvalidSignatureException")
        );
        assert_eq!(decided_by(&refused).as_deref(), Some(url.as_str()), "refused where it arrived");
    }
    nodes.stop();
}

/// A server whose port another process holds stops at once: the local cluster says so (so
/// `LocalCluster::start` tries fresh ports) instead of taking that process's answers on the
/// port for the server's own.
#[test]
fn a_server_that_cannot_bind_its_port_is_reported_stopped() {
    if cluster_settings().is_none() {
        return;
    }
    use phone_ledger::nats_cluster::{ClusterError, LocalCluster, NodePorts};
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ports = NodePorts {
        client: free(),
        cluster: free(),
        monitor: held.local_addr().expect("addr").port(),
    };
    let dir = tempfile::tempdir().expect("dir");
    match LocalCluster::start_on(dir.path(), &[ports]) {
        Err(ClusterError::Stopped { node: 1, .. }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a server started on a port another process holds"),
    }
}

/// A `CreatePool` retried on another node while its first attempt is still between its steps
/// (its number joining, the pool not written yet) is answered with that attempt's pool once it
/// exists, as on one node: not refused because the number is busy joining (the per-token lock is
/// each node's own). The first attempt is played by writing its steps straight into the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_pool_retried_on_another_node_mid_attempt_gets_that_attempts_pool() {
    use phone_ledger::domain::membership::MembershipEvent;
    use phone_ledger::domain::phone_number::{PhoneNumberEvent, PhoneNumberState};
    use phone_ledger::domain::pool::{PoolAction, PoolEvent, PoolState};
    use phone_ledger::domain::ResourceKind;
    use phone_ledger::store::{EventStore, JetStreamStore};

    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start(&settings);
    let urls = nodes.urls();
    let c = client_for(&urls[0], ACCOUNT, REGION);
    let (other, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let (number, e164) = common::request_with_number(&c, MessageType::Transactional).await;
    // A pool made the ordinary way, as the model of the one the first attempt will write.
    let model_id = common::create_pool(&c, &other).await;
    let log = JetStreamStore::connect(&settings).await.expect("connect");
    let model: PoolState =
        phone_ledger::rehydrate::replay(&log.read_stream(&model_id, 1, usize::MAX).await.expect("read")).expect("replay");
    let mut pool = model.0.expect("the model pool");

    // The first attempt has taken its number's first step.
    let pool_id = ResourceKind::Pool.new_id();
    let joining = PhoneNumberEvent::Membership(MembershipEvent::PoolAssociationStarted { pool_id: pool_id.clone() });
    let step = "CreatePool/BeginAssociation";
    common::append_as_an_actor_would::<PhoneNumberState>(&log, &number, joining, "first-attempt", step, serde_json::Value::Null).await;

    // The retry, on another node.
    let retry = {
        let c = client_for(&urls[1], ACCOUNT, REGION);
        let number = number.clone();
        tokio::spawn(async move {
            c.create_pool()
                .origination_identity(&number)
                .message_type(MessageType::Transactional)
                .client_token("one-pool-please")
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!retry.is_finished(), "the retry waits for the attempt in flight");

    // The first attempt writes its pool, with the token.
    let mut member = pool.members.values().next().cloned().expect("a member");
    member.origination_identity_arn = member.origination_identity_arn.replace(&other, &number);
    member.origination_identity = number.clone();
    member.phone_number = e164;
    pool.pool_arn = pool.pool_arn.replace(&model_id, &pool_id);
    pool.pool_id = pool_id.clone();
    pool.members = [(number.clone(), member)].into_iter().collect();
    pool.client_token = Some("one-pool-please".into());
    let input = serde_json::to_value(PoolAction::Create(Box::new(pool.clone()))).expect("input");
    let created = PoolEvent::PoolCreated(Box::new(pool));
    common::append_as_an_actor_would::<PoolState>(&log, &pool_id, created, "first-attempt", "CreatePool/Create", input).await;
    log.close().await.expect("close");

    let answer = retry.await.expect("task").expect("the retry is answered with the pool");
    assert_eq!(answer.pool_id(), Some(pool_id.as_str()));
    nodes.stop();
}

/// A client token another node has reserved for a creation still on its way (its append not yet
/// in the log, as while it is resent through a leader election) is not "claimed by nothing":
/// the request waits for the winner's resource, and if that never lands, it is refused as one
/// racing another request (`ConflictException`) — before, it was answered with a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_reserved_by_a_creation_in_flight_is_waited_for_not_a_500() {
    let Some(settings) = cluster_settings() else { return };
    let nodes = Nodes::start(&settings);
    let urls = nodes.urls();
    let js = async_nats::jetstream::new(async_nats::connect(settings.servers.clone()).await.expect("connect"));
    let claims = js
        .get_key_value(format!("{}_CLAIMS", settings.namespace))
        .await
        .expect("claims bucket");
    // The reservation a node makes before it publishes a creation with this token.
    let key = format!("t/{ACCOUNT}/{REGION}/RequestPhoneNumber/token-in-flight");
    let reservation = serde_json::json!({
        "Stream": "phone-0123456789abcdef0123456789abcdef",
        "AtMs": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64,
    });
    claims
        .put(format!("={}", hex::encode(&key)), reservation.to_string().into())
        .await
        .expect("reserve");
    let started = Instant::now();
    let refused = client_for(&urls[1], ACCOUNT, REGION)
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(aws_sdk_pinpointsmsvoicev2::types::NumberCapability::Sms)
        .number_type(aws_sdk_pinpointsmsvoicev2::types::RequestableNumberType::LongCode)
        .client_token("token-in-flight")
        .send()
        .await
        .expect_err("no creation ever lands");
    assert_eq!(refused.code(), Some("ConflictException"), "{refused:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "the winner was waited for beyond an append's resends: {:?}",
        started.elapsed()
    );
}
