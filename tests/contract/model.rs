//! A model of the storage port in memory, and a runner that applies random sequences of appends
//! (alone or submitted together), reads and reopens to a backend and to the model, and requires
//! them to agree at every step: the shape of sled's own model fuzzing, for our port.

use std::collections::BTreeMap;

use phone_ledger::store::{decode_counter, AppendError, AppendRequest, EventEnvelope, IndexOp, Store};
use proptest::prelude::*;
use uuid::Uuid;

use super::{append, Harness};

/// What the port promises, kept in plain collections.
#[derive(Debug, Default)]
pub struct Model {
    /// Event ids of each stream, version 1 first.
    streams: BTreeMap<String, Vec<Uuid>>,
    /// (stream, version, event id) at each position, position 1 first.
    feed: Vec<(String, u64, Uuid)>,
    index: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The outcome of an append, as the model and the backend both report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// (version, position) of each event written.
    Written(Vec<(u64, u64)>),
    WrongVersion {
        actual: u64,
    },
    Taken,
}

impl Outcome {
    fn of(result: Result<Vec<EventEnvelope>, AppendError>) -> Outcome {
        match result {
            Ok(envelopes) => Outcome::Written(envelopes.iter().map(|e| (e.version, e.position)).collect()),
            Err(AppendError::WrongExpectedVersion { actual, .. }) => Outcome::WrongVersion { actual },
            Err(AppendError::UniqueViolation(_)) => Outcome::Taken,
            Err(e) => panic!("the backend failed: {e:?}"),
        }
    }
}

impl Model {
    /// Applies an append as the port's guarantees say it must go.
    pub fn append(&mut self, req: &AppendRequest) -> Outcome {
        let stream = self.streams.get(&req.stream_id).cloned().unwrap_or_default();
        let version = stream.len() as u64;
        let same_last = req.expected_last_event.is_none() || stream.last().is_none() || req.expected_last_event == stream.last().copied();
        if version != req.expected_version || !same_last {
            return Outcome::WrongVersion { actual: version };
        }
        if req.unique_claims.iter().any(|(k, _)| self.index.contains_key(k)) {
            return Outcome::Taken;
        }
        let mut written = Vec::new();
        for (i, e) in req.events.iter().enumerate() {
            let v = version + i as u64 + 1;
            self.feed.push((req.stream_id.clone(), v, e.event_id));
            written.push((v, self.feed.len() as u64));
        }
        self.streams
            .entry(req.stream_id.clone())
            .or_default()
            .extend(req.events.iter().map(|e| e.event_id));
        for op in &req.index_ops {
            match op {
                IndexOp::Put(k, v) => {
                    self.index.insert(k.clone(), v.clone());
                }
                IndexOp::Delete(k) => {
                    self.index.remove(k);
                }
                IndexOp::Add(k, d) => {
                    let n = decode_counter(self.index.get(k).map(Vec::as_slice)) + d;
                    self.index.insert(k.clone(), n.to_be_bytes().to_vec());
                }
            }
        }
        for (k, v) in &req.unique_claims {
            self.index.insert(k.clone(), v.clone());
        }
        Outcome::Written(written)
    }

    fn version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.len() as u64)
    }

    fn last_event(&self, stream: &str) -> Option<Uuid> {
        self.streams.get(stream).and_then(|s| s.last().copied())
    }
}

/// One step of a run.
#[derive(Debug, Clone)]
pub enum Op {
    /// Appends submitted together (one group commit, usually), answered in order.
    Appends(Vec<AppendSpec>),
    ReadStream {
        stream: u8,
        from: u64,
        limit: usize,
    },
    ReadFeed {
        after: u64,
        limit: usize,
    },
    Reopen,
}

/// An append, relative to where the model's stream is.
#[derive(Debug, Clone)]
pub struct AppendSpec {
    stream: u8,
    /// Added to the stream's version (0: the right version).
    version_skew: i8,
    events: usize,
    /// Expect the stream's last event (or a made-up one).
    last_event: Option<bool>,
    claim: Option<u8>,
    put: Option<(u8, u8)>,
    delete: Option<u8>,
    add: Option<(u8, i8)>,
}

fn stream_name(i: u8) -> String {
    format!("phone-model-{i}")
}

impl AppendSpec {
    fn request(&self, model: &Model) -> AppendRequest {
        let stream = stream_name(self.stream);
        let version = model.version(&stream).saturating_add_signed(self.version_skew as i64);
        AppendRequest {
            expected_last_event: match self.last_event {
                Some(true) => model.last_event(&stream),
                Some(false) => Some(Uuid::new_v4()),
                None => None,
            },
            unique_claims: self
                .claim
                .map(|c| vec![(format!("n/{c}").into_bytes(), stream.clone().into_bytes())])
                .unwrap_or_default(),
            index_ops: [
                self.put.map(|(k, v)| IndexOp::Put(format!("v/{k}").into_bytes(), vec![v])),
                self.delete.map(|k| IndexOp::Delete(format!("v/{k}").into_bytes())),
                self.add.map(|(k, d)| IndexOp::Add(format!("c/{k}").into_bytes(), d as i64)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ..append(&stream, version, self.events)
        }
    }
}

fn append_spec() -> impl Strategy<Value = AppendSpec> {
    (
        0u8..4,
        prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
        1usize..4,
        prop::option::of(prop_oneof![4 => Just(true), 1 => Just(false)]),
        prop::option::weighted(0.3, 0u8..4),
        prop::option::of((0u8..4, any::<u8>())),
        prop::option::weighted(0.3, 0u8..4),
        prop::option::of((0u8..2, -2i8..3)),
    )
        .prop_map(|(stream, version_skew, events, last_event, claim, put, delete, add)| AppendSpec {
            stream,
            version_skew,
            events,
            last_event,
            claim,
            put,
            delete,
            add,
        })
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(append_spec(), 1..5).prop_map(Op::Appends),
        2 => (0u8..4, 0u64..5, 1usize..6).prop_map(|(stream, from, limit)| Op::ReadStream { stream, from, limit }),
        2 => (0u64..20, 1usize..8).prop_map(|(after, limit)| Op::ReadFeed { after, limit }),
        1 => Just(Op::Reopen),
    ]
}

fn ids(events: &[EventEnvelope]) -> Vec<(String, u64, Uuid)> {
    events.iter().map(|e| (e.stream_id.clone(), e.version, e.event_id)).collect()
}

/// Applies `ops` to a fresh backend and to the model; panics at the first disagreement.
pub async fn run<H: Harness>(ops: Vec<Op>) {
    let mut h = H::fresh().await;
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let store: Store = h.store();
        match op {
            Op::Appends(specs) => {
                // Requests are built against the model as it will be when each is decided, so
                // that "the right version" stays right within a group.
                let mut expected = Vec::new();
                let mut answers = Vec::new();
                for spec in &specs {
                    let request = spec.request(&model);
                    expected.push(model.append(&request));
                    answers.push(store.submit(request).expect("queued"));
                }
                for (i, (answer, want)) in answers.into_iter().zip(expected).enumerate() {
                    assert_eq!(Outcome::of(answer.await), want, "step {step}, append {i} of {specs:?}");
                }
            }
            Op::ReadStream { stream, from, limit } => {
                let name = stream_name(stream);
                let got = store.read_stream(&name, from, limit).await.expect("read");
                let want: Vec<_> = model
                    .feed
                    .iter()
                    .filter(|(s, v, _)| *s == name && *v >= from.max(1))
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(ids(&got), want, "step {step}: read {name} from {from}");
                let head = store.stream_head(&name).await.expect("head");
                assert_eq!((head.version, head.last_event), (model.version(&name), model.last_event(&name)));
            }
            Op::ReadFeed { after, limit } => {
                let got = store.read_feed(after, limit).await.expect("feed");
                let want: Vec<_> = model.feed.iter().skip(after as usize).take(limit).cloned().collect();
                assert_eq!(ids(&got), want, "step {step}: feed after {after}");
                let positions: Vec<u64> = got.iter().map(|e| e.position).collect();
                assert_eq!(positions, (after + 1..=after + got.len() as u64).collect::<Vec<_>>());
            }
            Op::Reopen => {
                drop(store);
                h.reopen().await;
            }
        }
        let store = h.store();
        let index = store.index_scan(b"", None, usize::MAX).await.expect("scan");
        assert_eq!(index.into_iter().collect::<BTreeMap<_, _>>(), model.index, "step {step}: the index");
        assert_eq!(
            store.chain_head().await.expect("head").position,
            model.feed.len() as u64,
            "step {step}: the feed's head"
        );
    }
    super::assert_feed_is_a_chain(&h.store()).await;
}

/// A proptest over [`run`] for a harness, as a test function.
#[macro_export]
macro_rules! model_test {
    ($name:ident, $harness:ty, $cases:expr) => {
        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig { cases: $cases, failure_persistence: None, ..Default::default() })]
            #[test]
            fn $name(ops in proptest::collection::vec(contract::model::op(), 1..30)) {
                if !<$harness as contract::Harness>::available() {
                    return Ok(());
                }
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(contract::model::run::<$harness>(ops));
            }
        }
    };
}
