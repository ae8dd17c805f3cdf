//! The `[store]` section of the configuration: which backend holds the log, and each backend's
//! own settings under `[store.<backend>]`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// How long a reply waits for durability (embedded backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Flush, then `fdatasync` of the data file: survives power loss.
    Fsync,
    /// Flush only (`sync_file_range`): survives a killed process.
    Flush,
    /// No flush before replying: the engine writes back in the background (every 500 ms). For
    /// pure load experiments only: a crash may lose acknowledged events.
    Relaxed,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Flush => "flush",
            Durability::Relaxed => "relaxed",
        }
    }
}

/// Which backend holds the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded log in `data_dir` (one process).
    Sled,
    /// A replicated NATS JetStream stream shared by several nodes (`[store.jetstream]`).
    Jetstream,
}

/// Settings of the embedded sled backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SledSettings {
    pub durability: Durability,
    /// At most this many appends are committed together (group commit).
    pub max_batch: usize,
    /// The engine's page cache, in bytes.
    pub cache_capacity_bytes: u64,
}

impl Default for SledSettings {
    fn default() -> Self {
        SledSettings {
            durability: Durability::Fsync,
            max_batch: 256,
            cache_capacity_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The `[store]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreConfig {
    pub backend: Backend,
    #[serde(default)]
    pub sled: SledSettings,
    #[serde(default)]
    pub jetstream: super::JetStreamSettings,
}

impl StoreConfig {
    /// The embedded backend with the given durability and group-commit size, other settings
    /// at their defaults (tools, tests and benchmarks that open a log directly).
    pub fn embedded(durability: Durability, max_batch: usize) -> Self {
        StoreConfig {
            backend: Backend::Sled,
            sled: SledSettings {
                durability,
                max_batch,
                ..SledSettings::default()
            },
            jetstream: super::JetStreamSettings::default(),
        }
    }

    /// The clustered backend with the given settings.
    pub fn clustered(jetstream: super::JetStreamSettings) -> Self {
        StoreConfig {
            backend: Backend::Jetstream,
            sled: SledSettings::default(),
            jetstream,
        }
    }

    /// Checks what typing cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.sled.max_batch == 0 {
            return Err("store.sled.max_batch must be at least 1".into());
        }
        match self.backend {
            Backend::Sled => Ok(()),
            Backend::Jetstream => self.jetstream.validate(),
        }
    }

    /// Takes the values of the flat keys that held the embedded backend's settings before there
    /// was a `[store]` section (`durability`, `max_batch`, `cache_capacity_bytes`): each one that
    /// is set was set by the user, so it wins over the default it replaces. Returns a warning
    /// for each.
    pub fn adopt_legacy(&mut self, durability: Option<Durability>, max_batch: Option<usize>, cache: Option<u64>) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut moved = |old: &str, new: &str| warnings.push(format!("configuration key `{old}` is deprecated; use `{new}`"));
        if let Some(d) = durability {
            moved("durability", "store.sled.durability");
            self.sled.durability = d;
        }
        if let Some(b) = max_batch {
            moved("max_batch", "store.sled.max_batch");
            self.sled.max_batch = b;
        }
        if let Some(c) = cache {
            moved("cache_capacity_bytes", "store.sled.cache_capacity_bytes");
            self.sled.cache_capacity_bytes = c;
        }
        warnings
    }

    /// How durable an acknowledged append is, for backends that let it be chosen.
    pub fn set_durability(&mut self, durability: Durability) {
        self.sled.durability = durability;
    }

    /// Opens a stopped node's embedded log for reading only (the offline audit tools).
    pub fn open_offline(data_dir: &Path) -> Result<Store, StoreError> {
        Ok(std::sync::Arc::new(super::sled::SledStore::open_read_only(data_dir)?))
    }

    /// Opens the embedded backend for reading and writing (`data_dir`: this node's directory);
    /// tools and tests that open a log on disk directly.
    pub fn open(&self, data_dir: &Path) -> Result<Store, StoreError> {
        Ok(std::sync::Arc::new(super::sled::SledStore::open(data_dir, &self.sled)?))
    }

    /// Opens (or connects to) the configured backend for reading and writing.
    pub async fn connect(&self, data_dir: &Path) -> Result<Store, StoreError> {
        match self.backend {
            Backend::Sled => self.open(data_dir),
            Backend::Jetstream => Ok(std::sync::Arc::new(super::JetStreamStore::connect(&self.jetstream).await?)),
        }
    }
}

#[cfg(test)]
// figment::Jail's closure error type is figment's own; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, Overrides};

    #[test]
    fn the_store_section_and_the_deprecated_flat_keys_both_set_the_backend() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "new.toml",
                "[store]\nbackend = \"sled\"\n[store.sled]\ndurability = \"flush\"\nmax_batch = 7\n",
            )?;
            let c = Config::load(Some(Path::new("new.toml")), &Overrides::default()).expect("load");
            assert_eq!((c.store.sled.durability, c.store.sled.max_batch), (Durability::Flush, 7));
            assert!(c.deprecations.is_empty());

            jail.create_file(
                "old.toml",
                "durability = \"relaxed\"\nmax_batch = 3\ncache_capacity_bytes = 1048576\n",
            )?;
            let c = Config::load(Some(Path::new("old.toml")), &Overrides::default()).expect("load");
            assert_eq!(c.store.sled.durability, Durability::Relaxed);
            assert_eq!(c.store.sled.max_batch, 3);
            assert_eq!(c.store.sled.cache_capacity_bytes, 1_048_576);
            assert_eq!(c.deprecations.len(), 3, "{:?}", c.deprecations);
            assert!(c.deprecations[0].contains("store.sled.durability"), "{:?}", c.deprecations);

            jail.set_env("PHONE_LEDGER_STORE__SLED__MAX_BATCH", "9");
            let c = Config::load(None, &Overrides::default()).expect("load");
            assert_eq!(c.store.sled.max_batch, 9, "nested environment variables");
            assert!(c.deprecations.is_empty());
            jail.set_env("PHONE_LEDGER_MAX_BATCH", "5");
            let c = Config::load(None, &Overrides::default()).expect("load");
            assert_eq!(c.store.sled.max_batch, 5, "old environment variables still work");
            assert_eq!(c.deprecations.len(), 1);
            Ok(())
        });
    }
}
