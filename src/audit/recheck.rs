//! Decision re-check: replay every stream and, at each recorded command, run a decider on the
//! state that command saw; report every command where it decides differently from what was
//! recorded (other events, or another refusal). With today's decider this tells whether a code
//! change would have treated real history differently.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AuditError;
use crate::codec::{decode_event, kind_of_stream, recorded_commands};
use crate::domain::opt_out_list::OptOutListState;
use crate::domain::phone_number::PhoneNumberState;
use crate::domain::pool::PoolState;
use crate::domain::sender_id::SenderIdState;
use crate::domain::{Aggregate, Command, Rejection, ResourceKind};
use crate::progress::Progress;
use crate::store::{EventEnvelope, EventStore};

/// A decider for aggregate `A`.
pub type DecideFn<'a, A> = &'a (dyn Fn(&A, &Command<<A as Aggregate>::Action>) -> Result<Vec<<A as Aggregate>::Event>, Rejection> + Sync);

/// The deciders to re-check history with.
pub struct Deciders<'a> {
    pub phone_number: DecideFn<'a, PhoneNumberState>,
    pub pool: DecideFn<'a, PoolState>,
    pub opt_out_list: DecideFn<'a, OptOutListState>,
    pub sender_id: DecideFn<'a, SenderIdState>,
}

fn decide_today<A: Aggregate>(state: &A, command: &Command<A::Action>) -> Result<Vec<A::Event>, Rejection> {
    state.decide(command)
}

impl Deciders<'static> {
    /// The deciders compiled into this binary.
    pub fn today() -> Self {
        Deciders {
            phone_number: &decide_today::<PhoneNumberState>,
            pool: &decide_today::<PoolState>,
            opt_out_list: &decide_today::<OptOutListState>,
            sender_id: &decide_today::<SenderIdState>,
        }
    }
}

/// One command decided differently.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Divergence {
    pub stream_id: String,
    pub version: u64,
    pub position: u64,
    pub request_id: String,
    pub command: String,
    pub recorded: Value,
    pub today: Value,
}

/// What the re-check found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecheckReport {
    pub streams: u64,
    pub commands_checked: u64,
    /// Commands recorded before their input was stored (nothing to re-run).
    pub commands_skipped: u64,
    pub divergences: Vec<Divergence>,
}

/// A decision, compared by what it means: the events, or the kind and reason of the refusal
/// (message wording is not a decision).
fn signature<E: Serialize>(outcome: &Result<Vec<E>, Rejection>) -> Value {
    match outcome {
        Ok(events) => serde_json::json!({ "Events": events }),
        Err(r) => {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.remove("Message");
            }
            serde_json::json!({ "Rejected": v })
        }
    }
}

fn recheck_stream<A: Aggregate>(
    stream_id: &str,
    envelopes: &[EventEnvelope],
    decide: DecideFn<'_, A>,
    report: &mut RecheckReport,
) -> Result<(), AuditError> {
    let mut state = A::default();
    for recorded_command in recorded_commands::<A>(envelopes) {
        let first = recorded_command.events[0];
        let recorded: Vec<A::Event> = recorded_command.events.iter().map(|e| decode_event(e)).collect::<Result<_, _>>()?;
        if let Some(command) = &recorded_command.command {
            let recorded_outcome = match recorded.as_slice() {
                [only] => match A::rejection_in(only) {
                    Some(r) => Err(r.clone()),
                    None => Ok(recorded.clone()),
                },
                _ => Ok(recorded.clone()),
            };
            let today = decide(&state, command);
            let (was, now) = (signature(&recorded_outcome), signature(&today));
            report.commands_checked += 1;
            if was != now {
                report.divergences.push(Divergence {
                    stream_id: stream_id.to_string(),
                    version: first.version,
                    position: first.position,
                    request_id: first.request_id.clone(),
                    command: first.command.clone(),
                    recorded: was,
                    today: now,
                });
            }
        } else {
            report.commands_skipped += 1;
        }
        for e in &recorded {
            state = state.evolve(e);
        }
    }
    Ok(())
}

/// Re-checks every stream of the log with `deciders`.
pub async fn recheck(store: &dyn EventStore, deciders: &Deciders<'_>) -> Result<RecheckReport, AuditError> {
    recheck_showing(store, deciders, &Progress::none()).await
}

/// [`recheck`], showing how many events it has been through on `progress`.
pub async fn recheck_showing(store: &dyn EventStore, deciders: &Deciders<'_>, progress: &Progress) -> Result<RecheckReport, AuditError> {
    let mut report = RecheckReport {
        streams: 0,
        commands_checked: 0,
        commands_skipped: 0,
        divergences: vec![],
    };
    let mut after: Option<String> = None;
    loop {
        let streams = store.stream_heads(after.as_deref(), 1024).await?;
        let Some((last, _)) = streams.last() else { return Ok(report) };
        after = Some(last.clone());
        for (stream_id, _) in streams {
            let envelopes = store.read_stream(&stream_id, 1, usize::MAX).await?;
            progress.add(envelopes.len() as u64);
            report.streams += 1;
            match kind_of_stream(&stream_id) {
                Some(ResourceKind::PhoneNumber) => {
                    recheck_stream::<PhoneNumberState>(&stream_id, &envelopes, deciders.phone_number, &mut report)?
                }
                Some(ResourceKind::Pool) => recheck_stream::<PoolState>(&stream_id, &envelopes, deciders.pool, &mut report)?,
                Some(ResourceKind::OptOutList) => {
                    recheck_stream::<OptOutListState>(&stream_id, &envelopes, deciders.opt_out_list, &mut report)?
                }
                Some(ResourceKind::SenderId) => recheck_stream::<SenderIdState>(&stream_id, &envelopes, deciders.sender_id, &mut report)?,
                None => return Err(AuditError::NotFound(stream_id)),
            }
        }
    }
}
