//! The store contract and the model test, run against the embedded (sled) backend and against
//! the clustered (NATS JetStream) backend on a real 3-node cluster.

mod common;
mod contract;

use phone_ledger::store::{Durability, JetStreamSettings, JetStreamStore, Store, StoreConfig};

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
