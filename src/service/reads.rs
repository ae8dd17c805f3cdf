//! Reads for Describe and List operations: the live views of the derived index, in pages.

use serde::de::DeserializeOwned;

use super::error::not_found;
use super::{LifecycleService, ServiceError};
use crate::domain::{ResourceKind, Scope};
use crate::projection::{view_key, view_prefix};

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Key of the last item when more may follow.
    pub last_key: Option<String>,
}

/// Index entries read per store call while scanning views.
const SCAN_PAGE: usize = 256;

pub(super) fn decode_view<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(bytes).map_err(|e| ServiceError::CorruptView {
        key: String::from_utf8_lossy(key).into_owned(),
        source: std::sync::Arc::new(e),
    })
}

impl LifecycleService {
    /// The live view of one resource of the caller, by id or ARN.
    pub async fn view<T: DeserializeOwned>(&self, scope: &Scope, kind: ResourceKind, id_or_arn: &str) -> Result<T, ServiceError> {
        let id = Self::resolve(kind, scope, id_or_arn)?;
        let key = view_key(scope, kind, &id);
        let bytes = self.store.index_get(&key).await?.ok_or_else(|| not_found(kind, id_or_arn))?;
        decode_view(&key, &bytes)
    }

    /// Live views of the caller after `after` (an id), keeping those `keep` accepts, up to `limit`.
    pub async fn scan_views<T: DeserializeOwned>(
        &self,
        scope: &Scope,
        kind: ResourceKind,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, ServiceError> {
        let prefix = view_prefix(scope, kind);
        let mut after_key = after.map(|id| view_key(scope, kind, id));
        let mut items = Vec::new();
        let mut last_key = None;
        loop {
            let entries = self.store.index_scan(&prefix, after_key.as_deref(), SCAN_PAGE).await?;
            let exhausted = entries.len() < SCAN_PAGE;
            for (k, v) in entries {
                if items.len() == limit {
                    return Ok(Page { items, last_key });
                }
                let view: T = decode_view(&k, &v)?;
                if keep(&view) {
                    items.push(view);
                    last_key = Some(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
                }
                after_key = Some(k);
            }
            if exhausted {
                return Ok(Page { items, last_key: None });
            }
        }
    }

    /// Every live view of `kind` in every scope, in pages, handed to `each`.
    pub(super) async fn for_each_view<T: DeserializeOwned>(&self, kind: ResourceKind, mut each: impl FnMut(T)) -> Result<(), ServiceError> {
        let segment = format!("/{}/", kind.arn_segment()).into_bytes();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let entries = self.store.index_scan(b"v/", after.as_deref(), SCAN_PAGE).await?;
            let exhausted = entries.len() < SCAN_PAGE;
            for (k, v) in entries {
                if k.windows(segment.len()).any(|w| w == segment.as_slice()) {
                    each(decode_view(&k, &v)?);
                }
                after = Some(k);
            }
            if exhausted {
                return Ok(());
            }
        }
    }
}
