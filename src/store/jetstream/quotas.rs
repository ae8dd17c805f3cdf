//! Per-account quotas across nodes without a multi-stream transaction: a creation in flight holds
//! a unit of its account's quota in the quotas bucket (one key per counter of live resources, its
//! value the list of holds). Every change is published with the bucket stream's expected last
//! sequence, a compare-and-set over the whole bucket: nats-server 2.9 checks a key's own
//! expected revision against stored messages only, so two changes in flight at once could both
//! pass it (two holds taking the last unit), while the stream-wide check counts changes in flight.
//!
//! A hold is granted only if the live resources (the counter in this node's view, caught up with
//! the whole log) plus the holds already there stay below the quota. The holds are read *before*
//! the view is caught up: a creation that let go of its hold before that read had committed
//! before it, so the view counts it; one that took a hold after it changed the key, so the
//! compare-and-set fails and the count is taken again. A creation that committed and has not
//! let go yet is counted twice: at the limit, the request waits for the holds to go instead of
//! being refused, as the embedded backend's in-process reservations do. A node that dies holding
//! a unit leaves it until it is [`HOLD_FOR`] old.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::Operation;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{backend, other_error, wire, Shared};
use crate::store::{decode_counter, QuotaHold, StoreError};

/// How long a hold counts without being let go: far beyond the longest a creation takes to
/// commit (an append is resent for at most 15 s), so only a dead node's holds expire.
pub const HOLD_FOR: Duration = Duration::from_secs(60);
/// How long a request at the limit waits for the creations in flight before it is refused.
const WAIT_AT_LIMIT: Duration = Duration::from_secs(20);

/// One unit of a quota held by a creation in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Hold {
    id: Uuid,
    at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The key's holds that have not expired.
async fn holds_of(shared: &Shared, token: &str) -> Result<Vec<Hold>, StoreError> {
    let entry = shared.quotas.entry(token).await.map_err(backend)?;
    let Some(entry) = entry else { return Ok(Vec::new()) };
    let holds: Vec<Hold> = match entry.operation {
        // A list that cannot be read is treated as empty: a hold is a reservation, not a fact,
        // and the next write replaces it.
        Operation::Put => serde_json::from_slice(&entry.value).unwrap_or_else(|e| {
            tracing::warn!(key = token, error = %e, "ignoring an unreadable list of quota holds");
            Vec::new()
        }),
        _ => Vec::new(),
    };
    let now = now_ms();
    Ok(holds
        .into_iter()
        .filter(|h| now.saturating_sub(h.at_ms) < HOLD_FOR.as_millis() as u64)
        .collect())
}

/// The bucket stream's last sequence: a change published expecting it is stored only if nothing
/// else was stored (or is in flight) since.
async fn bucket_sequence(shared: &Shared) -> Result<u64, StoreError> {
    Ok(shared.quotas_stream.get_info().await.map_err(backend)?.state.last_sequence)
}

/// Writes `holds` if nothing changed in the bucket since `sequence`; `false` if something did.
async fn replace(shared: &Shared, token: &str, sequence: u64, holds: &[Hold]) -> Result<bool, StoreError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let value = serde_json::to_vec(holds).map_err(backend)?;
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(value.into())
        .expected_last_sequence(sequence);
    let subject = format!("$KV.{}.{token}", shared.names.quotas);
    match shared.js.send_publish(subject, message).await.map_err(backend)?.await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

/// Takes one unit of the quota whose live count is the index counter `counter`, if `limit`
/// allows it.
pub(super) async fn hold(shared: &Shared, counter: &[u8], limit: u64) -> Result<QuotaHold, StoreError> {
    let token = wire::token(counter);
    let started = Instant::now();
    loop {
        let sequence = bucket_sequence(shared).await?;
        let mut holds = holds_of(shared, &token).await?;
        let last = shared.events.get_info().await.map_err(backend)?.state.last_sequence;
        shared.mirror.wait_for(last).await?;
        let live = decode_counter(shared.mirror.index_get(counter).as_deref()).max(0) as u64;
        if live + (holds.len() as u64) < limit {
            let id = Uuid::new_v4();
            holds.push(Hold { id, at_ms: now_ms() });
            if replace(shared, &token, sequence, &holds).await? {
                return Ok(QuotaHold::Held(id));
            }
            continue;
        }
        if holds.is_empty() || started.elapsed() >= WAIT_AT_LIMIT {
            return Ok(QuotaHold::Full { live });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Lets go of the hold `id` (a few tries; an unreleased hold expires).
pub(super) async fn release(shared: &Shared, counter: &[u8], id: Uuid) -> Result<(), StoreError> {
    let token = wire::token(counter);
    for _ in 0..64 {
        let sequence = bucket_sequence(shared).await?;
        let mut holds = holds_of(shared, &token).await?;
        let before = holds.len();
        holds.retain(|h| h.id != id);
        if holds.len() == before || replace(shared, &token, sequence, &holds).await? {
            return Ok(());
        }
    }
    Err(other_error(format!("cannot let go of quota hold {id}: the key keeps changing")))
}
