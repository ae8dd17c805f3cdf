//! Service configuration: the embedded `config/default.toml`, an optional file on top of it,
//! `PHONE_LEDGER_*` environment variables on top of that, then command-line flags.
//!
//! Layering is done by `figment`; this module only declares the shape and checks it
//! (`Config::validate`) once at start-up so that a bad setting fails with a precise message
//! instead of surfacing later as a confusing runtime error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::types::NumberType;
use crate::store::{Durability, StoreConfig};

/// The defaults, compiled into the binary so that a bare `phone-ledger serve` works anywhere.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Per-account limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quotas {
    pub phone_numbers_per_account: u64,
    pub pools_per_account: u64,
    /// Opt-out lists per account and region, `Default` included.
    #[serde(default = "default_opt_out_lists")]
    pub opt_out_lists_per_account: u64,
    /// Keywords of its own per phone number or pool (HELP and STOP aside).
    #[serde(default = "default_keywords")]
    pub keywords_per_origination: u64,
    /// Sender ids leased per account and region.
    #[serde(default = "default_sender_ids")]
    pub sender_ids_per_account: u64,
}

fn default_sender_ids() -> u64 {
    25
}

fn default_keywords() -> u64 {
    30
}

/// What `DescribeAccountAttributes` and `DescribeSpendLimits` report for every account. Nothing
/// is charged here (no message leaves the machine), so spend limits are reported, not enforced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// `ACCOUNT_TIER`: `SANDBOX` or `PRODUCTION`.
    #[serde(default = "default_tier")]
    pub tier: String,
    /// Monthly spend limits in US dollars, per channel.
    #[serde(default = "default_spend")]
    pub text_monthly_spend_limit: u64,
    #[serde(default = "default_spend")]
    pub voice_monthly_spend_limit: u64,
    #[serde(default = "default_spend")]
    pub media_monthly_spend_limit: u64,
}

impl Default for Account {
    fn default() -> Self {
        Account {
            tier: default_tier(),
            text_monthly_spend_limit: default_spend(),
            voice_monthly_spend_limit: default_spend(),
            media_monthly_spend_limit: default_spend(),
        }
    }
}

fn default_tier() -> String {
    "PRODUCTION".into()
}

fn default_spend() -> u64 {
    1
}

fn default_opt_out_lists() -> u64 {
    25
}

/// Where numbers of one country and type come from, and what they cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NumberSupply {
    pub templates: Vec<String>,
    pub price: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub default_account: String,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's body (408 beyond).
    pub request_body_timeout_ms: u64,
    /// How long an admitted request may take in all (503 beyond, and its place is freed).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Bytes of request bodies held at once before their requests are admitted (bodies are read
    /// before the caller is known); beyond it ThrottlingException.
    #[serde(default = "default_max_body_buffer_bytes")]
    pub max_body_buffer_bytes: usize,
    /// Which backend holds the log, and its settings.
    pub store: StoreConfig,
    /// Secret that signs pagination tokens (any string of 16 or more characters). Nodes that
    /// serve the same log must share it (required with the jetstream backend); when unset, one
    /// is generated and kept in `data_dir/pagination.key`, so tokens survive restarts of a
    /// single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination_secret: Option<String>,
    pub workers: usize,
    /// Snapshot an aggregate's state every this many events (0: never).
    pub snapshot_every: u64,
    /// Stop an actor after this many seconds without a command (0: never).
    pub actor_idle_secs: u64,
    /// With several nodes on one log: a pool change begun (or a pool deleted) this many seconds
    /// ago and still unfinished is finished (or undone) by the reconciler of whichever node sees
    /// it first; so is a `RequestPhoneNumber` into a pool left as long between its steps.
    #[serde(default = "default_reconcile_after_secs")]
    pub reconcile_after_secs: u64,
    /// At most this many live actors per kind; beyond it the least recently used stop.
    pub max_live_actors: usize,
    /// Requests handled at once; beyond it the server answers ThrottlingException.
    pub max_in_flight: usize,
    /// Followers of the live audit feed connected at once; beyond it ThrottlingException.
    pub max_followers: usize,
    /// Followers of the live audit feed connected at once for one account (its SigV4 credential's).
    pub max_followers_per_account: usize,
    /// A follower of the live feed more than this many committed batches behind is dropped.
    #[serde(default = "default_follower_lag_limit")]
    pub follower_lag_limit: usize,
    /// Requests per second and account (0: unlimited); beyond it ThrottlingException.
    pub account_requests_per_sec: u32,
    pub quotas: Quotas,
    /// The account attributes and spend limits every account reports.
    #[serde(default)]
    pub account: Account,
    /// How callers are authenticated (permissive, or strict SigV4 with a credentials file).
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// With several nodes on one log: the nodes, for routing commands to a resource's owner.
    #[serde(default)]
    pub cluster: crate::api::routing::ClusterConfig,
    /// ISO country code → number type → supply.
    pub numbering: BTreeMap<String, BTreeMap<NumberType, NumberSupply>>,
    /// Deprecated flat keys of the embedded backend (see [`StoreConfig::adopt_legacy`]).
    #[serde(default, skip_serializing)]
    durability: Option<Durability>,
    #[serde(default, skip_serializing)]
    max_batch: Option<usize>,
    #[serde(default, skip_serializing)]
    cache_capacity_bytes: Option<u64>,
    /// What the loaded configuration said in a deprecated way, to be logged once logging runs.
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

/// A configuration that could not be loaded or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Keys whose environment values are taken verbatim as strings.
const RAW_ENV_KEYS: &[&str] = &["default_account", "region"];

/// Values given on the command line; `None` leaves the layer below in force.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

fn default_follower_lag_limit() -> usize {
    4096
}

fn default_max_body_buffer_bytes() -> usize {
    crate::api::admission::DEFAULT_BODY_BUDGET
}

fn default_request_timeout_ms() -> u64 {
    60_000
}

fn default_reconcile_after_secs() -> u64 {
    120
}

impl Config {
    /// Defaults + optional file + `PHONE_LEDGER_*` env + flags, validated.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Env values are parsed as TOML-ish values, which would turn account `000011112222`
        // into the integer 11112222: the keys that are strings of digits are read raw.
        figment = figment.merge(Env::prefixed("PHONE_LEDGER_").split("__").ignore(RAW_ENV_KEYS));
        for key in RAW_ENV_KEYS {
            if let Some(value) = Env::var(&format!("PHONE_LEDGER_{}", key.to_uppercase())) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let mut config: Config = figment.merge(Serialized::defaults(overrides)).extract().map_err(Box::new)?;
        config.apply_deprecated_keys();
        config.validate()?;
        Ok(config)
    }

    /// The flat keys of before the `[store]` section still work, with a warning each.
    fn apply_deprecated_keys(&mut self) {
        let legacy = (self.durability.take(), self.max_batch.take(), self.cache_capacity_bytes.take());
        self.deprecations = self.store.adopt_legacy(legacy.0, legacy.1, legacy.2);
    }

    /// The embedded defaults alone (used by tests and benches), with the data directory given.
    pub fn defaults_with_data_dir(data_dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let mut config: Config = Figment::from(Toml::string(DEFAULT_TOML)).extract().map_err(Box::new)?;
        config.data_dir = data_dir.into();
        config.validate()?;
        Ok(config)
    }

    /// Checks what figment's typing cannot: formats and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !is_account_id(&self.default_account) {
            return bad(format!("default_account {:?} must be 12 digits", self.default_account));
        }
        if !is_region(&self.region) {
            return bad(format!("region {:?} is not a region name", self.region));
        }
        if self.request_body_timeout_ms == 0 {
            return bad("request_body_timeout_ms must be at least 1".into());
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be at least 1024".into());
        }
        if self.max_body_buffer_bytes < self.max_body_bytes {
            return bad("max_body_buffer_bytes must be at least max_body_bytes".into());
        }
        if let Err(m) = self.store.validate() {
            return bad(m);
        }
        if let Err(m) = self.auth.validate() {
            return bad(m);
        }
        if let Err(m) = self.cluster.validate() {
            return bad(m);
        }
        if self.pagination_secret.as_ref().is_some_and(|s| s.chars().count() < 16) {
            return bad("pagination_secret must be at least 16 characters".into());
        }
        // A key generated per node would make a page token good only on the node that issued
        // it: behind a load balancer, the next page would be refused by the others.
        if self.store.backend == crate::store::Backend::Jetstream && self.pagination_secret.is_none() {
            return bad(
                "pagination_secret must be set with store.backend = \"jetstream\": every node serving the log signs page tokens with it"
                    .into(),
            );
        }
        if self.max_live_actors == 0 {
            return bad("max_live_actors must be at least 1".into());
        }
        for (country, supplies) in &self.numbering {
            if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
                return bad(format!("numbering: {country:?} is not an ISO 3166-1 alpha-2 code"));
            }
            for (number_type, supply) in supplies {
                if supply.templates.is_empty() {
                    return bad(format!("numbering.{country}.{number_type}: no templates"));
                }
                for t in &supply.templates {
                    let ok = t.starts_with('+') && t.len() <= 16 && t[1..].chars().all(|c| c.is_ascii_digit() || c == 'X');
                    if !ok {
                        return bad(format!(
                            "numbering.{country}.{number_type}: template {t:?} must be '+' then digits or X"
                        ));
                    }
                }
                if supply.price.parse::<f64>().is_err() {
                    return bad(format!(
                        "numbering.{country}.{number_type}: price {:?} is not a number",
                        supply.price
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Longest region name taken (AWS's longest today, `ap-southeast-5`, is 14): the region goes into
/// every ARN and page token, whose lengths the model limits.
const MAX_REGION_LEN: usize = 32;

/// Whether `r` can be a region name: lowercase letters, digits and hyphens, at most 32.
pub fn is_region(r: &str) -> bool {
    (1..=MAX_REGION_LEN).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
// figment::Jail's closure error type is figment's own; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::defaults_with_data_dir("/tmp/x").expect("defaults load");
        assert_eq!(c.listen.to_string(), "127.0.0.1:4566");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.default_account, "000000000000");
        assert_eq!(c.store.backend, crate::store::Backend::Sled);
        assert!(c.deprecations.is_empty());
        assert!(c.numbering["US"].contains_key(&NumberType::TollFree));
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "extra.toml",
                "region = \"eu-west-1\"\n[quotas]\nphone_numbers_per_account = 7\npools_per_account = 1\n",
            )?;
            jail.set_env("PHONE_LEDGER_REGION", "eu-central-1");
            jail.set_env("PHONE_LEDGER_QUOTAS__POOLS_PER_ACCOUNT", "3");
            jail.set_env("PHONE_LEDGER_LISTEN", "127.0.0.1:1");
            let flags = Overrides {
                listen: Some("127.0.0.1:2".parse().expect("addr")),
                data_dir: None,
            };
            let c = Config::load(Some(Path::new("extra.toml")), &flags).expect("load");
            assert_eq!(c.region, "eu-central-1");
            assert_eq!(c.quotas.phone_numbers_per_account, 7);
            assert_eq!(c.quotas.pools_per_account, 3);
            assert_eq!(c.listen.to_string(), "127.0.0.1:2");
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PHONE_LEDGER_DEFAULT_ACCOUNT", "12");
            let err = Config::load(None, &Overrides::default()).expect_err("must fail");
            assert!(err.to_string().contains("default_account"), "{err}");
            jail.set_env("PHONE_LEDGER_DEFAULT_ACCOUNT", "000011112222");
            let c = Config::load(None, &Overrides::default()).expect("digits are an account");
            assert_eq!(c.default_account, "000011112222");
            // The region goes into ARNs: a name too long for them is refused.
            jail.set_env("PHONE_LEDGER_REGION", "a".repeat(33));
            let err = Config::load(None, &Overrides::default()).expect_err("too long");
            assert!(err.to_string().contains("not a region name"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn strict_auth_needs_a_credentials_file() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, &Overrides::default()).expect("defaults");
            assert_eq!(c.auth.mode, crate::auth::AuthMode::Permissive);
            jail.set_env("PHONE_LEDGER_AUTH__MODE", "sigv4");
            let err = Config::load(None, &Overrides::default()).expect_err("no file");
            assert!(err.to_string().contains("credentials_file"), "{err}");
            jail.set_env("PHONE_LEDGER_AUTH__CREDENTIALS_FILE", "/etc/credentials.toml");
            let c = Config::load(None, &Overrides::default()).expect("strict");
            assert_eq!(c.auth.mode, crate::auth::AuthMode::Sigv4);
            jail.set_env("PHONE_LEDGER_AUTH__MODE", "open");
            assert!(Config::load(None, &Overrides::default()).is_err(), "an unknown mode is refused");
            Ok(())
        });
    }
}
