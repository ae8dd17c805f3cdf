//! The store contract and the model test, run against the embedded (sled) backend.

mod contract;

use phone_ledger::store::{Durability, Store, StoreConfig};

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

contract_suite!(Embedded);

model_test!(the_embedded_store_agrees_with_the_model, Embedded, 64);
