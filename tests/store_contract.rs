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

/// Two nodes on one log racing for the same aggregate version, again and again: each time exactly
/// one wins and the other is told it was stale, whatever JetStream's own check let through, and
/// both nodes end with the same feed and the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_version_never_both_win() {
    use phone_ledger::store::AppendError;
    if !<Clustered as contract::Harness>::available() {
        return;
    }
    let urls = common::nats::shared_cluster().expect("cluster");
    let settings = common::nats::fresh_settings(&urls);
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

/// The chain is sealed by one node at a time: two nodes sealing at once extend the checkpoints
/// once, each checkpoint holds the chain hash of the feed at its position, and no node seals
/// over a checkpoint its own chain disagrees with (a rewritten history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sealer_at_a_time_and_checkpoints_hold_the_chain() {
    if !<Clustered as contract::Harness>::available() {
        return;
    }
    let urls = common::nats::shared_cluster().expect("cluster");
    let settings = common::nats::fresh_settings(&urls);
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
