//! Unique claims across streams without a multi-stream transaction: a claim is reserved in the
//! claims bucket with a compare-and-set create *before* the append that makes it is published.
//!
//! A reservation is in one of three situations, and a second claimant tells them apart:
//! - **held**: the log has a commit that claimed the key and no later one deleted it (this
//!   node's view has the key in its index): the second claim is refused;
//! - **in flight**: younger than [`CLAIM_GRACE`], its append may still be on its way: refused
//!   too (the caller's retry decides again);
//! - **abandoned**: older than that, and the log, read up to its current end, holds no commit
//!   with the key: the append was refused or never sent (a crash between the two steps). The
//!   second claimant takes the reservation over with a compare-and-set on its revision, so of
//!   several claimants one wins.
//!
//! When an append is refused its reservations are released at once; when a later append deletes a
//! claimed key from the index (a released number), its reservation is freed once that append is
//! stored. If a node dies in between, the reservation is abandoned and taken over as above.
//!
//! The reservations make a lost claim race rare and cheap (refused before anything is
//! published); they are not what makes claims exact. nats-server 2.9 checks a key's expected
//! revision against stored messages only, so two creates in flight at once can both succeed.
//! Exactness comes from the log: every node's view voids a commit that claims a key another
//! commit in force holds (see `mirror`), and its writer is told it was stale.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{backend, stored, wire, Shared};
use crate::now_ms;
use crate::store::AppendError;

/// How long a reservation without a commit is presumed to belong to an append in flight: well
/// beyond the longest an append is resent (15 s, through a leader election), so a reservation is
/// never taken over while the append that made it can still be stored.
pub const CLAIM_GRACE: Duration = Duration::from_secs(30);

/// What a reservation records: who made it and when, and a nonce that makes each one unique (so
/// a writer whose create got no answer knows the entry it then finds for its own).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reservation {
    stream: String,
    at_ms: u64,
    #[serde(default)]
    nonce: Option<uuid::Uuid>,
}

/// Reserves `key` for an append to `stream_id`; returns the reservation's revision.
pub(super) async fn reserve(shared: &Shared, key: &[u8], stream_id: &str) -> Result<u64, AppendError> {
    let token = wire::token(key);
    let taken = || AppendError::UniqueViolation(String::from_utf8_lossy(key).into_owned());
    let storage = |e: crate::store::StoreError| AppendError::Storage(e);
    let record = serde_json::to_vec(&Reservation {
        stream: stream_id.to_string(),
        at_ms: now_ms(),
        nonce: Some(uuid::Uuid::new_v4()),
    })
    .map_err(|e| AppendError::Storage(backend(e)))?;
    // A reservation deleted between our create and our look at it: try again, a few times.
    for _ in 0..3 {
        match create(shared, &token, record.clone().into()).await {
            // A key the log holds though its reservation is gone (lost, or deleted by hand):
            // taken all the same, and the entry just made stands for the claim in force again.
            // Asked of the log as it is now: this node's view may not have the release yet
            // whose append freed the reservation.
            Ok(revision) if shared.mirror.index_get(key).is_some() => {
                held_in_the_log_now(shared, key).await?;
                if shared.mirror.index_get(key).is_some() {
                    return Err(taken());
                }
                return Ok(revision);
            }
            Ok(revision) => return Ok(revision),
            Err(Created::Exists) => {}
            Err(Created::Failed(e)) => return Err(AppendError::Storage(e)),
        }
        let Some(entry) = stored::kv_entry(&shared.js, &shared.names.claims, &token).await.map_err(storage)? else {
            continue;
        };
        if !entry.put {
            continue;
        }
        shared.caught_up().await.map_err(storage)?;
        if shared.mirror.index_get(key).is_some() {
            return Err(taken());
        }
        let age_ms = serde_json::from_slice::<Reservation>(&entry.value).map_or(u64::MAX, |r| now_ms().saturating_sub(r.at_ms));
        if age_ms < CLAIM_GRACE.as_millis() as u64 {
            return Err(taken());
        }
        // Old enough that no append can still be in flight: the log decides.
        held_in_the_log_now(shared, key).await?;
        if shared.mirror.index_get(key).is_some() {
            return Err(taken());
        }
        return match shared.claims.update(&token, record.clone().into(), entry.revision).await {
            Ok(revision) => {
                tracing::warn!(key = %String::from_utf8_lossy(key), age_ms, "took over an abandoned claim reservation");
                Ok(revision)
            }
            Err(_) => Err(taken()),
        };
    }
    Err(taken())
}

/// Why [`create`] made no entry.
enum Created {
    /// The key has a live entry.
    Exists,
    Failed(crate::store::StoreError),
}

/// Makes `token`'s entry unless it has a live one; returns its revision. What the client
/// library's `create` does (a put expecting no message on the key, or its last message if that
/// is a delete), with the entry read as every stored message is here (see `stored`): the
/// library reads it over the wire, where a malformed header block takes the connection down.
/// A create whose answer was lost (a leader change of the bucket) but that was stored finds
/// its own entry, byte for byte: it is this reservation, not another claimant's.
async fn create(shared: &Shared, token: &str, value: bytes::Bytes) -> Result<u64, Created> {
    let failed = match shared.claims.update(token, value.clone(), 0).await {
        Ok(revision) => return Ok(revision),
        Err(e) => e,
    };
    match stored::kv_entry(&shared.js, &shared.names.claims, token)
        .await
        .map_err(Created::Failed)?
    {
        Some(entry) if entry.put && entry.value == value => Ok(entry.revision),
        Some(entry) if !entry.put => shared
            .claims
            .update(token, value, entry.revision)
            .await
            .map_err(|_| Created::Exists),
        Some(_) => Err(Created::Exists),
        None => Err(Created::Failed(backend(failed))),
    }
}

/// Brings this node's view up to the log's end as it is now, so that its index says whether
/// `key` is held in the log.
async fn held_in_the_log_now(shared: &Shared, key: &[u8]) -> Result<(), AppendError> {
    let last = shared
        .events
        .get_info()
        .await
        .map_err(|e| AppendError::Storage(backend(e)))?
        .state
        .last_sequence;
    tracing::debug!(key = %String::from_utf8_lossy(key), last, "reading the log to its end for a claim");
    shared.mirror.wait_for(last).await.map_err(AppendError::Storage)
}

/// Releases a reservation whose append was refused (only if it is still ours).
pub(super) async fn release(shared: &Shared, token: &str, revision: u64) {
    if let Err(e) = shared.claims.delete_expect_revision(token, Some(revision)).await {
        tracing::warn!(key = token, error = %e, "cannot release a claim reservation; it will be taken over later");
    }
}

/// Frees the reservation of a claimed key that a stored append deleted, if it is still the one
/// `holder` (the stream whose claim was deleted) made: once the key is free in the log, another
/// claimant may already have taken the reservation over, and that one is not this append's to
/// delete (a delete expecting the revision read, so not one made meanwhile either).
pub(super) async fn free(shared: &Shared, token: &str, holder: Option<&str>) {
    let freed = async {
        let Some(entry) = stored::kv_entry(&shared.js, &shared.names.claims, token).await?.filter(|e| e.put) else {
            return Ok(());
        };
        let made_by = serde_json::from_slice::<Reservation>(&entry.value).ok().map(|r| r.stream);
        if holder.is_some_and(|h| made_by.as_deref() != Some(h)) {
            return Ok(());
        }
        shared
            .claims
            .delete_expect_revision(token, Some(entry.revision))
            .await
            .map_err(backend)
    };
    if let Err(e) = freed.await {
        tracing::warn!(key = token, error = %crate::error_chain(&e), "cannot free a claim reservation; it will be taken over later");
    }
}
