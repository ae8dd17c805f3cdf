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
/// (message wording is not a decision). Also the load test's (check 6).
pub(crate) fn signature<E: Serialize>(outcome: &Result<Vec<E>, Rejection>) -> Value {
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

/// Events of a stream read at a time: what a recheck holds of one stream.
const CHUNK: usize = 1_000;

/// Re-checks one stream, read a chunk at a time (a command's events that go on past a chunk's
/// end are kept for the next), with the state its commands were decided on.
async fn recheck_stream<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    decide: DecideFn<'_, A>,
    report: &mut RecheckReport,
    progress: &Progress,
) -> Result<(), AuditError> {
    let (mut state, mut carried, mut from) = (A::default(), Vec::new(), 1);
    loop {
        let chunk = store.read_stream(stream_id, from, CHUNK).await?;
        let more = chunk.len() == CHUNK;
        progress.add(chunk.len() as u64);
        if let Some(last) = chunk.last() {
            from = last.version.saturating_add(1);
        }
        let mut envelopes: Vec<EventEnvelope> = std::mem::take(&mut carried);
        envelopes.extend(chunk);
        if more {
            let last_command = envelopes.last().map(|e| e.command_id);
            let split = envelopes
                .iter()
                .rposition(|e| Some(e.command_id) != last_command)
                .map_or(0, |i| i + 1);
            carried = envelopes.split_off(split);
        }
        recheck_commands(stream_id, &envelopes, &mut state, decide, report)?;
        if !more {
            return Ok(());
        }
    }
}

/// Re-checks the whole commands in `envelopes`, from `state` on (left as they leave it).
fn recheck_commands<A: Aggregate>(
    stream_id: &str,
    envelopes: &[EventEnvelope],
    state: &mut A,
    decide: DecideFn<'_, A>,
    report: &mut RecheckReport,
) -> Result<(), AuditError> {
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
            let today = decide(state, command);
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
            *state = std::mem::take(state).evolve(e);
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
            report.streams += 1;
            let r = &mut report;
            match kind_of_stream(&stream_id) {
                Some(ResourceKind::PhoneNumber) => {
                    recheck_stream::<PhoneNumberState>(store, &stream_id, deciders.phone_number, r, progress).await?
                }
                Some(ResourceKind::Pool) => recheck_stream::<PoolState>(store, &stream_id, deciders.pool, r, progress).await?,
                Some(ResourceKind::OptOutList) => {
                    recheck_stream::<OptOutListState>(store, &stream_id, deciders.opt_out_list, r, progress).await?
                }
                Some(ResourceKind::SenderId) => recheck_stream::<SenderIdState>(store, &stream_id, deciders.sender_id, r, progress).await?,
                None => return Err(AuditError::NotFound(stream_id)),
            }
        }
    }
}

/// A stream several chunks long, whose commands straddle the chunks' ends, is re-checked one
/// whole command at a time.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pending_events;
    use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges, PhoneNumberEvent};
    use crate::store::{AppendMeta, AppendRequest, Durability};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_across_chunk_ends_are_rechecked_whole() {
        const ID: &str = "phone-0123456789abcdef0123456789abcdef";
        let dir = tempfile::tempdir().expect("dir");
        let mut config = crate::config::Config::defaults_with_data_dir(dir.path()).expect("config");
        config.store.sled.durability = Durability::Flush;
        let store = config.store.open(dir.path()).expect("open");
        // 335 commands of 7 events each: 2,345 events, so commands straddle every chunk's end.
        let mut version = 0;
        for _ in 0..335 {
            let events: Vec<PhoneNumberEvent> = (version + 1..=version + 7)
                .map(|v| match v {
                    1 => PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(ID, "111122223333", "us-east-1"))),
                    v => PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                        deletion_protection_enabled: Some(v % 2 == 0),
                        ..Default::default()
                    }),
                })
                .collect();
            let meta = AppendMeta::direct("111122223333", "us-east-1", "recheck-test", "Test/Append");
            let request = AppendRequest::plain(ID, version, meta, pending_events(&events).expect("events"));
            store.submit(request).expect("queued").await.expect("appended");
            version += 7;
        }
        let report = recheck(&*store, &Deciders::today()).await.expect("recheck");
        // Appended directly, the commands record no input: each is counted once, as skipped.
        assert_eq!((report.streams, report.commands_skipped, report.commands_checked), (1, 335, 0));
        store.close().await.expect("close");
    }
}
