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
