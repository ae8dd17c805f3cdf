//! The sealer: fixes the hash chain in the log. Every node computes the chain from the events
//! stream, so no writer has to agree on it while appending; what makes it evidence is that it is
//! written down. At intervals a node publishes a checkpoint (the chain hash at its view's head)
//! to the chain stream, naming the sequence of the checkpoint before it as the stream's last:
//! JetStream stores it only if no other checkpoint got there first, so of nodes
//! sealing at once one extends the chain of checkpoints and the others are refused by the log
//! itself. A node seals only over a checkpoint its own chain agrees with.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{backend, other_error, retrying, stored, Shared};
use crate::store::{Checkpoint, StoreError};

/// How often each node tries to seal what its view has beyond the last checkpoint.
pub const SEAL_EVERY: Duration = Duration::from_secs(1);

/// A checkpoint as stored in the chain stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredCheckpoint {
    position: u64,
    hash: String,
    /// The events stream's sequence the chain had reached.
    events_sequence: u64,
    sealed_at_ms: u64,
    sealed_by: String,
}

impl StoredCheckpoint {
    fn decode(sequence: u64, payload: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
            key: format!("checkpoint at chain sequence {sequence}"),
            message: e.to_string(),
        })
    }

    fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let hash = hex::decode(&self.hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: format!("checkpoint at position {}", self.position),
                message: "the hash is not 64 hex digits".into(),
            })?;
        Ok(Checkpoint {
            position: self.position,
            hash,
            sealed_at_ms: self.sealed_at_ms,
        })
    }
}

/// The last checkpoint and its sequence in the chain stream.
async fn last(shared: &Shared) -> Result<Option<(StoredCheckpoint, u64)>, StoreError> {
    let subject = &shared.names.chain_subject;
    let message = retrying(|| stored::get(&shared.js, &shared.names.chain, stored::Which::LastOn(subject))).await?;
    message
        .map(|m| Ok((StoredCheckpoint::decode(m.sequence, &m.payload)?, m.sequence)))
        .transpose()
}

/// Seals this node's view up to its head if the last checkpoint is behind it; returns the
/// position sealed, or `None` when there was nothing to seal or another node sealed first.
pub(super) async fn seal_once(shared: &Shared, node: &str) -> Result<Option<u64>, StoreError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let head = shared.mirror.chain_head();
    let events_sequence = shared.mirror.applied();
    let last = last(shared).await?;
    let (sealed, expected) = last.as_ref().map_or((0, 0), |(cp, seq)| (cp.position, *seq));
    if let Some((cp, _)) = last.as_ref().filter(|(cp, _)| cp.position <= head.position) {
        let ours = shared.mirror.hash_at(cp.position).map(hex::encode);
        if ours.as_deref() != Some(cp.hash.as_str()) {
            return Err(StoreError::Corrupt {
                key: format!("checkpoint at position {}", cp.position),
                message: format!("it seals {} but this node's chain has {ours:?} there: the log was altered", cp.hash),
            });
        }
    }
    if head.position <= sealed {
        return Ok(None);
    }
    let checkpoint = StoredCheckpoint {
        position: head.position,
        hash: hex::encode(head.hash),
        events_sequence,
        sealed_at_ms: crate::now_ms(),
        sealed_by: node.to_string(),
    };
    let payload = serde_json::to_vec(&checkpoint).map_err(backend)?;
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload.into())
        // The stream-wide check, not the per-subject one: nats-server 2.9 applies the per-subject
        // check to stored messages only, so two sealers in flight at once could both pass it,
        // while the stream's last sequence is checked against the proposals in flight too.
        .expected_last_sequence(expected);
    let ack = shared
        .js
        .send_publish(shared.names.chain_subject.clone(), message)
        .await
        .map_err(backend)?
        .await;
    match ack {
        Ok(_) => Ok(Some(head.position)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

/// Seals every [`SEAL_EVERY`] until stopped.
pub(super) async fn seal_loop(shared: Arc<Shared>, node: String, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SEAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => match seal_once(&shared, &node).await {
                Ok(_) => {}
                Err(e @ StoreError::Corrupt { .. }) => tracing::error!(error = %e, "not sealing"),
                Err(e) => tracing::debug!(error = %crate::error_chain(&e), "sealing failed; trying again"),
            },
        }
    }
}

/// How far the chain is sealed.
pub(super) async fn sealed_up_to(shared: &Shared) -> Result<u64, StoreError> {
    Ok(last(shared).await?.map_or(0, |(cp, _)| cp.position))
}

/// Every checkpoint, in position order.
pub(super) async fn checkpoints(shared: &Shared) -> Result<Vec<Checkpoint>, StoreError> {
    use futures_util::StreamExt;
    let last = retrying(|| async { shared.chain.get_info().await.map_err(backend) })
        .await?
        .state
        .last_sequence;
    let reads = futures_util::stream::iter((1..=last).map(|s| async move {
        let m = retrying(|| stored::get(&shared.js, &shared.names.chain, stored::Which::Sequence(s)))
            .await?
            .ok_or_else(|| other_error(format!("the chain stream has no message at sequence {s}")))?;
        StoredCheckpoint::decode(m.sequence, &m.payload)?.checkpoint()
    }));
    let mut all: Vec<Checkpoint> = reads.buffered(32).collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
    all.sort_by_key(|c| c.position);
    Ok(all)
}
