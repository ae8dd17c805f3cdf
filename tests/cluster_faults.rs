//! Faults in clustered mode, each on a 3-node NATS JetStream cluster of its own with three
//! phone-ledger nodes, under conflicting load spread over the nodes:
//! - the events stream's leader NATS server is SIGKILLed mid-load: the verdict passes (every
//!   acknowledged response's event is in the log) and the gap in service is measured;
//! - the same with the leader stopped as for maintenance (SIGTERM);
//! - a phone-ledger node is SIGKILLed mid-load and restarted: the verdict passes;
//! - then everything is stopped and started again: every stream's state is as it was.
//!
//! CI runs them small; `PHONE_LEDGER_FAULT_SECS=60 cargo test --release --test cluster_faults --
//! --nocapture --test-threads 1` runs them long.

mod common;

use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use phone_ledger::loadtest::checker::{check, ClientOp};
use phone_ledger::loadtest::{acknowledged_writes, fetch_log, longest_append_gap, prepare, race, settle, LoadTestArgs};
use phone_ledger::nats_cluster::{nats_server_available, LocalCluster, NodePorts};
use phone_ledger::store::EventEnvelope;

/// One cluster at a time: six servers and the load already fill this machine's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn load_secs() -> u64 {
    std::env::var("PHONE_LEDGER_FAULT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

fn load(seed: u64) -> LoadTestArgs {
    LoadTestArgs {
        clients: 24,
        numbers: 30,
        pools: 3,
        hot_fraction: 0.3,
        duration: Some(Duration::from_secs(load_secs())),
        seed,
        ..Default::default()
    }
}

/// A phone-ledger node as its own process, on a fixed address so it can be restarted there.
struct Node {
    child: Option<Child>,
    listen: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Node {
    fn start(listen: String, peers: &[String], servers: &[String], namespace: &str) -> Self {
        let servers = format!("[{}]", servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(","));
        let env = vec![
            ("PHONE_LEDGER_STORE__BACKEND".to_string(), "jetstream".to_string()),
            ("PHONE_LEDGER_STORE__JETSTREAM__SERVERS".to_string(), servers),
            ("PHONE_LEDGER_STORE__JETSTREAM__NAMESPACE".to_string(), namespace.to_string()),
            (
                "PHONE_LEDGER_PAGINATION_SECRET".to_string(),
                "shared by the nodes of this test".to_string(),
            ),
            ("PHONE_LEDGER_QUOTAS__PHONE_NUMBERS_PER_ACCOUNT".to_string(), "1000000".to_string()),
            ("PHONE_LEDGER_QUOTAS__POOLS_PER_ACCOUNT".to_string(), "100000".to_string()),
            // A node killed between the two steps of a pool change leaves them to the others'
            // reconcilers: much sooner than by default, for the test; so soon that a live change
            // slowed by a leader election (4-9 s, then resends) can be settled under it, which
            // the pool's fence keeps consistent (its late step is refused).
            ("PHONE_LEDGER_RECONCILE_AFTER_SECS".to_string(), "10".to_string()),
            ("RUST_LOG".to_string(), "warn,phone_ledger=info".to_string()),
            (
                "PHONE_LEDGER_CLUSTER__PEERS".to_string(),
                format!("[{}]", peers.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(",")),
            ),
            ("PHONE_LEDGER_CLUSTER__SELF_URL".to_string(), format!("http://{listen}")),
        ];
        let mut node = Node {
            child: None,
            listen,
            dir: tempfile::tempdir().expect("dir"),
            env,
        };
        node.spawn();
        node
    }

    /// Starts the node on its address; if that was taken meanwhile (by one of the load's
    /// client sockets, say), tries again a few times.
    fn spawn(&mut self) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for _ in 0..5 {
            if let Some((child, _)) = common::try_spawn_binary_on(&self.listen, self.dir.path(), &env) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("node on {} did not start", self.listen);
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::signal(&child, "TERM");
            let status = child.wait().expect("wait");
            assert!(status.success(), "a node stops cleanly on SIGTERM: {status}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

struct Setup {
    _guard: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    ports: Vec<NodePorts>,
    nats: LocalCluster,
    nodes: Vec<Node>,
    namespace: String,
}

fn setup() -> Option<Setup> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !common::tool_available("nats-server", nats_server_available(), "apt-get install -y nats-server") {
        return None;
    }
    let dir = tempfile::tempdir().expect("dir");
    let nats = LocalCluster::start(dir.path(), 3).expect("NATS cluster");
    let ports = nats.ports();
    let namespace = "FAULTS".to_string();
    let servers = nats.client_urls();
    let listens: Vec<String> = (0..3).map(|_| free_listen()).collect();
    let peers: Vec<String> = listens.iter().map(|l| format!("http://{l}")).collect();
    let nodes = listens.into_iter().map(|l| Node::start(l, &peers, &servers, &namespace)).collect();
    Some(Setup {
        _guard: guard,
        dir,
        ports,
        nats,
        nodes,
        namespace,
    })
}

impl Setup {
    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The name of the events stream.
    fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.namespace)
    }

    /// The index of the NATS server leading the events stream.
    fn events_leader(&self) -> usize {
        self.nats.leader_of(&self.events_stream()).expect("a leader")
    }
}

/// Checks the verdict over the whole log (waiting for the nodes to agree first), again every
/// second for up to `patience` while it fails (what a reconciler has yet to settle); returns
/// the log.
async fn verdict_within(setup: &Setup, ops: &[ClientOp], patience: Duration) -> Vec<EventEnvelope> {
    let urls = setup.urls();
    let deadline = Instant::now() + patience;
    let (log, verdict) = loop {
        settle(&urls).await.expect("the nodes agree");
        let log = fetch_log(&urls[0]).await.expect("log");
        let verdict = check(&log, ops);
        if verdict.ok || Instant::now() >= deadline {
            break (log, verdict);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if !verdict.ok {
        // The log and the operations, for a look at what happened.
        let dump = std::env::temp_dir().join("phone-ledger-cluster-faults.json");
        let _ = std::fs::write(
            &dump,
            serde_json::to_vec(&serde_json::json!({"log": log, "ops": ops})).unwrap_or_default(),
        );
        eprintln!("log and operations written to {}", dump.display());
    }
    assert!(verdict.ok, "{verdict:#?}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_mid_load_loses_no_acknowledged_write() {
    stream_leader_lost_mid_load(21, "killed", |nats, leader| nats.kill(leader)).await;
}

/// The path of maintenance: nats-server stopped by SIGTERM hands the stream to a follower
/// before it exits, so the others need not wait out an election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_stream_leader_mid_load_loses_no_acknowledged_write() {
    stream_leader_lost_mid_load(23, "stopped", |nats, leader| nats.shut_down(leader, Duration::from_secs(30))).await;
}

/// Loses the events stream's leader server a third of the way into the load, `how`; checks
/// that every acknowledged write is in the log and that the service comes back, and brings
/// the server back.
async fn stream_leader_lost_mid_load(seed: u64, what: &str, how: impl FnOnce(&mut LocalCluster, usize)) {
    let Some(mut setup) = setup() else { return };
    let args = load(seed);
    let prepared = prepare(&args, &setup.urls()).await.expect("prepare");
    let mut ops = prepared.ops.clone();
    let racing = {
        let args = args.clone();
        tokio::spawn(async move { race(&args, &prepared).await })
    };
    tokio::time::sleep(Duration::from_secs(load_secs() / 3)).await;
    let leader = setup.events_leader();
    let lost_at = Instant::now();
    tokio::task::block_in_place(|| how(&mut setup.nats, leader));
    let elected_after = tokio::task::block_in_place(|| {
        setup
            .nats
            .new_leader_after(&setup.events_stream(), leader, lost_at, Duration::from_secs(60))
    });
    let (load_ops, _) = racing.await.expect("task").expect("race");
    let acknowledged = acknowledged_writes(&load_ops);
    let prepared_ops = ops.len();
    ops.extend(load_ops);
    // A request into a pool whose join could not be written during the election answered a
    // 5xx and left its number outside the pool: a reconciler finishes it once it has been left
    // alone for 10 s (checked every 10/3 s), and the verdict waits for that, up to a minute.
    let log = verdict_within(&setup, &ops, Duration::from_secs(60)).await;
    let (events, gap) = (log.len(), longest_append_gap(&log, &ops[prepared_ops..]));
    eprintln!(
        "stream leader n{} {what}: a new leader after {elected_after:?}; {acknowledged} writes acknowledged, \
         {events} events; longest gap between answered appends {gap:?}",
        leader + 1
    );
    assert!(elected_after.is_some(), "the stream has a new leader");
    // The service comes back: nats-server 2.9 elects a new stream leader after a Raft election
    // timeout of 4-9 s (fixed in its source) when its leader is killed, and a CI machine under
    // this load has taken up to 18 s in all. The figure is what the bench reports; this bound
    // only catches a service that never returns.
    assert!(gap < Duration::from_secs(40), "service came back: {gap:?}");
    // The lost server rejoins and catches up.
    setup.nats.restart(leader).expect("restart");
    assert!(
        setup.nats.wait_current(&setup.events_stream(), Duration::from_secs(60)),
        "n{} caught up with the stream",
        leader + 1
    );
    for node in &mut setup.nodes {
        node.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_load_restarts_and_a_full_restart_keeps_every_stream() {
    let Some(mut setup) = setup() else { return };
    let args = load(22);
    let prepared = prepare(&args, &setup.urls()).await.expect("prepare");
    let numbers = prepared.numbers.clone();
    let mut ops = prepared.ops.clone();
    let racing = {
        let args = args.clone();
        tokio::spawn(async move { race(&args, &prepared).await })
    };
    tokio::time::sleep(Duration::from_secs(load_secs() / 3)).await;
    setup.nodes[1].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    setup.nodes[1].spawn();
    let (load_ops, _) = racing.await.expect("task").expect("race");
    ops.extend(load_ops);
    // What the killed node left between two steps is finished by a reconciler once it has been
    // left alone for 10 s (checked every 10/3 s): the verdict waits for it, up to a minute.
    let events = verdict_within(&setup, &ops, Duration::from_secs(60)).await.len();
    eprintln!("node 2 killed and restarted: {events} events, verdict PASS");

    // Everything down, everything up again: the same log, the same state of every stream.
    let before = snapshot_of(&setup.nodes[0].url(), &numbers).await;
    for node in &mut setup.nodes {
        node.stop();
    }
    setup.nats.stop();
    setup.nats = LocalCluster::start_on(setup.dir.path(), &setup.ports).expect("NATS again");
    for node in &mut setup.nodes {
        node.spawn();
    }
    for node in &setup.nodes {
        let after = snapshot_of(&node.url(), &numbers).await;
        assert_eq!(before, after, "{} after a full restart", node.url());
    }
    for node in &mut setup.nodes {
        node.stop();
    }
}

/// The chain digest and the state of every number, as one node serves them.
async fn snapshot_of(url: &str, numbers: &[String]) -> Vec<serde_json::Value> {
    let get = |path: String| async move {
        reqwest::get(format!("{url}{path}"))
            .await
            .expect("get")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    let mut digest = get("/audit/digest".into()).await;
    // Not how far the chain is sealed: the sealer goes on sealing after a restart.
    digest.as_object_mut().map(|d| (d.remove("Durability"), d.remove("SealedUpTo")));
    let mut out = vec![digest];
    for n in numbers {
        out.push(get(format!("/audit/phone-numbers/{n}/state")).await);
    }
    out
}
