//! A log written with event schema version 1 (`tests/fixtures/schema-v1.jsonl`, exported from a
//! real run before refusal payloads moved from `Reason` to `Rejection`) still replays: the stored
//! bytes are untouched (its hash chain verifies) and the upcaster brings each payload to today's
//! types at read time.

use std::collections::BTreeMap;
use std::io::BufReader;

use phone_ledger::audit::verify::verify_export;
use phone_ledger::codec::decode_event;
use phone_ledger::domain::phone_number::{PhoneNumberEvent, PhoneNumberState};
use phone_ledger::domain::pool::PoolState;
use phone_ledger::domain::types::{ConflictReason, NumberStatus};
use phone_ledger::domain::Rejection;
use phone_ledger::loadtest::checker::check_invariants;
use phone_ledger::rehydrate::replay;
use phone_ledger::store::{EventEnvelope, CURRENT_SCHEMA_VERSION};

const FIXTURE: &str = include_str!("fixtures/schema-v1.jsonl");

fn fixture() -> Vec<EventEnvelope> {
    FIXTURE.lines().map(|l| serde_json::from_str(l).expect("envelope")).collect()
}

#[test]
fn a_schema_v1_log_replays_into_todays_types() {
    let log = fixture();
    assert!(log.iter().all(|e| e.schema_version == 1), "the fixture is the old format");
    const { assert!(CURRENT_SCHEMA_VERSION > 1) };
    assert!(
        FIXTURE.contains("\"Reason\":{\"Kind\":\"Conflict\""),
        "old refusal payloads use Reason"
    );

    // Stored bytes are what was written: the chain verifies.
    let report = verify_export(BufReader::new(FIXTURE.as_bytes()), None).expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 16);

    // Old refusals decode into today's events.
    let refusals: Vec<PhoneNumberEvent> = log
        .iter()
        .filter(|e| e.event_type == "ReleaseRejected")
        .map(|e| decode_event(e).expect("upcast"))
        .collect();
    let reasons: Vec<ConflictReason> = refusals
        .iter()
        .map(|e| match e {
            PhoneNumberEvent::ReleaseRejected {
                reason: Rejection::Conflict { reason, .. },
            } => *reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ConflictReason::DeletionProtectionEnabled,
            ConflictReason::PhoneNumberAssociatedToPool
        ]
    );

    // Every stream replays with today's evolve.
    let mut streams: BTreeMap<&str, Vec<EventEnvelope>> = BTreeMap::new();
    for e in &log {
        streams.entry(e.stream_id.as_str()).or_default().push(e.clone());
    }
    let mut released = 0;
    let mut pooled = 0;
    for (id, events) in &streams {
        if id.starts_with("phone-") {
            let n = replay::<PhoneNumberState>(events).expect("replay").0.expect("number");
            released += (n.status == NumberStatus::Deleted) as u32;
            pooled += n.pool_id.is_some() as u32;
        } else {
            let p = replay::<PoolState>(events).expect("replay").0.expect("pool");
            assert_eq!(p.members.len(), 1);
        }
    }
    assert_eq!((released, pooled), (1, 1));

    // The load-test invariants hold on the old log too (no client operations to match).
    let verdict = check_invariants(&log);
    assert!(verdict.ok, "{verdict:#?}");
}

#[test]
fn events_from_a_newer_schema_are_refused_clearly() {
    let mut e = fixture().remove(0);
    e.schema_version = CURRENT_SCHEMA_VERSION + 1;
    let err = decode_event::<PhoneNumberEvent>(&e).expect_err("from the future");
    assert!(err.to_string().contains("newer phone-ledger"), "{err}");
}
