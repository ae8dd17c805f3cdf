//! Micro-benchmarks of the write and read paths (criterion prints each figure):
//! - `append/*`: one durable append and its reply, per durability level, alone and 64 at once
//!   (group commit shares one flush among concurrent appends);
//! - `replay/10k`: read and fold a 10,000-event stream (actor activation);
//! - `replay/paged_10k_*`: the audit's step-by-step replay of that stream, read 100 steps a page;
//! - `replay/paged_opt_out_list_5k`: the same replay of an opt-out list that grows to 5,000
//!   numbers, one opt-out per event (a step must cost what it changed, not the list's size);
//! - `decide/*`: the pure decider alone;
//! - `actor/round_trip`: a message to a phone-number actor and its reply;
//! - `actor/opt_out_on_a_list_of_*`: one write (a number put on or taken off) through an opt-out list's actor, on
//!   lists of 1,000 to 50,000 numbers (a write costs what it changes, plus its share of the
//!   list's snapshots, which hold the whole list and are written every tenth of its size).
//!
//! Run: `cargo bench --bench ledger` (add `-- append` to pick a group).

use std::time::Duration;

use actix::Actor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use phone_ledger::actors::{AggregateActor, Execute, GetState};
use phone_ledger::audit::query::replay as audit_replay;
use phone_ledger::audit::replay_resume::ReplayResumes;
use phone_ledger::codec::pending_events;
use phone_ledger::domain::ids::ResourceKind;
use phone_ledger::domain::opt_out_list::{OptOutList, OptOutListAction, OptOutListEvent, OptOutListState, OptedOut};
use phone_ledger::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberChanges, PhoneNumberEvent, PhoneNumberState};
use phone_ledger::domain::{Aggregate, Command, CommandMeta, Scope};
use phone_ledger::rehydrate::replay;
use phone_ledger::store::{AppendMeta, AppendRequest, Durability, StoreConfig};

fn number(id: &str) -> PhoneNumber {
    PhoneNumber::example(id, "111122223333", "us-east-1")
}

fn update_event(on: bool) -> PhoneNumberEvent {
    PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
        deletion_protection_enabled: Some(on),
        ..Default::default()
    })
}

fn request(stream: &str, expected_version: u64, events: &[PhoneNumberEvent]) -> AppendRequest {
    AppendRequest::plain(
        stream,
        expected_version,
        AppendMeta::direct("111122223333", "us-east-1", "bench", "UpdatePhoneNumber/Update"),
        pending_events(events).expect("events"),
    )
}

fn stream_id(i: u64) -> String {
    format!("phone-{i:032x}")
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(5)).sample_size(20);
    for durability in [Durability::Fsync, Durability::Flush, Durability::Relaxed] {
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreConfig::embedded(durability, 256).open(dir.path()).expect("store");
        let mut next = 0u64;
        let name = format!("{durability:?}").to_lowercase();
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("single", &name), |b| {
            b.iter(|| {
                next += 1;
                rt.block_on(store.append(request(&stream_id(next), 0, &[update_event(true)])))
                    .expect("append")
            })
        });
        group.throughput(Throughput::Elements(64));
        group.bench_function(BenchmarkId::new("64_concurrent", &name), |b| {
            b.iter(|| {
                let base = next;
                next += 64;
                rt.block_on(async {
                    let appends = (0..64).map(|i| {
                        let store = store.clone();
                        tokio::spawn(async move { store.append(request(&stream_id(base + i + 1), 0, &[update_event(true)])).await })
                    });
                    for a in futures_util::future::join_all(appends).await {
                        a.expect("task").expect("append");
                    }
                })
            })
        });
        rt.block_on(store.close()).expect("close");
    }
    group.finish();
}

/// The append of an opt-out list's creation and `size` numbers opting out, one event each; and
/// the list's stream id.
fn growing_opt_out_list(size: u64) -> (String, AppendRequest) {
    let scope = Scope::new("111122223333", "us-east-1");
    let list_id = ResourceKind::opt_out_list_id(&scope, "bench");
    let arn = "arn:aws:sms-voice:us-east-1:111122223333:opt-out-list/bench".to_string();
    let list = OptOutList::new("bench", arn, &scope.account, &scope.region, 1, Vec::new(), None);
    let mut events = vec![OptOutListEvent::OptOutListCreated(Box::new(list))];
    events.extend((0..size).map(|i| OptOutListEvent::NumberOptedOut {
        number: format!("+1206{i:07}"),
        entry: OptedOut {
            opted_out_timestamp_ms: i,
            end_user_opted_out: false,
        },
    }));
    let meta = AppendMeta::direct("111122223333", "us-east-1", "bench", "PutOptedOutNumber/OptOut");
    let request = AppendRequest::plain(&list_id, 0, meta, pending_events(&events).expect("events"));
    (list_id, request)
}

fn replay_10k(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = StoreConfig::embedded(Durability::Relaxed, 256).open(dir.path()).expect("store");
    let id = stream_id(1);
    let mut events = vec![PhoneNumberEvent::PhoneNumberRequested(Box::new(number(&id)))];
    events.extend((1..10_000).map(|i| update_event(i % 2 == 0)));
    rt.block_on(store.append(request(&id, 0, &events))).expect("append 10k");
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("10k", |b| {
        b.iter(|| {
            let envelopes = rt.block_on(store.read_stream(&id, 1, usize::MAX)).expect("read");
            let state: PhoneNumberState = replay(&envelopes).expect("replay");
            assert!(state.0.is_some());
        })
    });
    // The audit's replay of the same stream, read page by page as a client of
    // `/audit/.../replay` taking the default page (100 steps) would: each page folding on from
    // where the one before ended, and, for comparison, each page folding from the stream's start
    // (what a page costs when its start is not remembered).
    group.sample_size(10);
    for (name, resumed) in [("paged_10k_resumed", true), ("paged_10k_from_start", false)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let resumes = ReplayResumes::default();
                let mut from = Some(1);
                while let Some(v) = from {
                    let fresh = ReplayResumes::default();
                    let cache = if resumed { &resumes } else { &fresh };
                    let page = rt.block_on(audit_replay(&*store, cache, &id, v, 100)).expect("page");
                    from = page.next_version;
                }
            })
        });
    }
    // An opt-out list that grows by one number per event, replayed the same way.
    let (list_id, list) = growing_opt_out_list(5_000);
    let events = list.events.len() as u64;
    rt.block_on(store.append(list)).expect("append the list");
    group.throughput(Throughput::Elements(events));
    group.bench_function("paged_opt_out_list_5k", |b| {
        b.iter(|| {
            let resumes = ReplayResumes::default();
            let mut from = Some(1);
            while let Some(v) = from {
                let page = rt.block_on(audit_replay(&*store, &resumes, &list_id, v, 100)).expect("page");
                from = page.next_version;
            }
        })
    });
    group.finish();
    rt.block_on(store.close()).expect("close");
}

fn decide(c: &mut Criterion) {
    let id = stream_id(1);
    let state = PhoneNumberState::replay(&[PhoneNumberEvent::PhoneNumberRequested(Box::new(number(&id)))]);
    let meta = CommandMeta {
        request_id: "r".into(),
        scope: Scope::new("111122223333", "us-east-1"),
        at_ms: 1,
        operation: "Bench".into(),
    };
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    let release = Command {
        meta: meta.clone(),
        target: id.clone(),
        action: PhoneNumberAction::Release,
    };
    group.bench_function("release", |b| b.iter(|| state.decide(&release).expect("decide")));
    let update = Command {
        meta,
        target: id,
        action: PhoneNumberAction::Update(PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        }),
    };
    group.bench_function("update_and_evolve", |b| {
        b.iter(|| {
            let events = state.decide(&update).expect("decide");
            events.iter().fold(state.clone(), |s, e| s.evolve(e))
        })
    });
    group.finish();
}

fn actor_round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let system = actix_rt::System::new();
    let store = StoreConfig::embedded(Durability::Relaxed, 256).open(dir.path()).expect("store");
    let id = stream_id(1);
    system
        .block_on(store.append(request(&id, 0, &[PhoneNumberEvent::PhoneNumberRequested(Box::new(number(&id)))])))
        .expect("append");
    let addr = system.block_on(async { AggregateActor::<PhoneNumberState>::new(id.clone(), store.clone()).start() });
    let mut group = c.benchmark_group("actor");
    group.throughput(Throughput::Elements(1));
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            system
                .block_on(addr.send(GetState::<PhoneNumberState>::default()))
                .expect("mailbox")
                .expect("state")
        })
    });
    group.finish();
    system.block_on(store.close()).expect("close");
}

/// A write through the actor of a list holding `size` numbers (`PutOptedOutNumber` and the
/// end user's opt-in of one number in turn): decided, appended (durably, relaxed), answered.
fn opt_out_list_write(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let mut group = c.benchmark_group("actor");
    group.throughput(Throughput::Elements(1)).sample_size(20);
    let scope = Scope::new("111122223333", "us-east-1");
    for size in [1_000u64, 10_000, 50_000] {
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreConfig::embedded(Durability::Relaxed, 256).open(dir.path()).expect("store");
        let (list_id, list) = growing_opt_out_list(size);
        system.block_on(store.append(list)).expect("append the list");
        let addr = system.block_on(async { AggregateActor::<OptOutListState>::new(list_id.clone(), store.clone()).start() });
        // Activated (the list replayed) before the clock starts.
        system
            .block_on(addr.send(GetState::<OptOutListState>::default()))
            .expect("mailbox")
            .expect("state");
        let mut next = 0u64;
        group.bench_function(format!("opt_out_on_a_list_of_{size}"), |b| {
            b.iter(|| {
                next += 1;
                let put = Execute::<OptOutListState> {
                    meta: CommandMeta {
                        request_id: format!("r{next}"),
                        scope: scope.clone(),
                        at_ms: 1,
                        operation: "PutOptedOutNumber".into(),
                    },
                    // One number on and off the list in turn: each iteration appends one event,
                    // and the list keeps its size however many iterations criterion runs.
                    action: match next % 2 {
                        1 => OptOutListAction::PutOptedOutNumber {
                            number: "+13030000000".into(),
                            end_user_opted_out: false,
                        },
                        _ => OptOutListAction::EndUserOptedIn {
                            number: "+13030000000".into(),
                        },
                    },
                    counter_limits: Vec::new(),
                    premise: None,
                    otherwise: None,
                };
                system.block_on(addr.send(put)).expect("mailbox").expect("opted out")
            })
        });
        system.block_on(store.close()).expect("close");
    }
    group.finish();
}

criterion_group!(benches, append, replay_10k, decide, actor_round_trip, opt_out_list_write);
criterion_main!(benches);
