//! The service's measurements, served at `GET /metrics` in the Prometheus text format: recorded
//! with the `metrics` facade and rendered by `metrics-exporter-prometheus`.
//!
//! What is measured, and where:
//! - `phone_ledger_requests_total{operation, outcome, reason}` and
//!   `phone_ledger_request_duration_seconds{operation}` — every AWS JSON request (`api`);
//! - `phone_ledger_throttled_requests_total{cause}` — requests refused by admission, for an
//!   account's rate or the server's requests in flight (`api::admission`);
//! - `phone_ledger_commit_batch_size`, `phone_ledger_flush_duration_seconds{durability}` and
//!   `phone_ledger_writer_queue_depth` — the embedded log writer's group commits (`src/store/sled/writer.rs`);
//! - `phone_ledger_live_actors{kind}` and `phone_ledger_actor_activations_total{kind}` — the actor
//!   registries (`actors::registry`);
//! - `phone_ledger_snapshot_loads_total{from}` — states rebuilt from the log: from a snapshot
//!   (`snapshot`), replayed from the start (`replay`), or replayed because the snapshot could not
//!   be used (`unusable-snapshot`) (`rehydrate`);
//! - `phone_ledger_view_follows_total{reason}` — with several nodes, each time a node's view
//!   starts following the events stream: at `start`, after a `new-leader` of the stream announced
//!   itself, after the view `stalled`, or after its consumer `failed` (`src/store/jetstream`).
//!
//! The recorder is process-wide (the `metrics` facade has one): the first server of a process
//! installs it and every later one (tests start many) shares it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "phone_ledger_requests_total";
pub const REQUEST_DURATION: &str = "phone_ledger_request_duration_seconds";
pub const THROTTLED: &str = "phone_ledger_throttled_requests_total";
pub const COMMIT_BATCH: &str = "phone_ledger_commit_batch_size";
pub const FLUSH_DURATION: &str = "phone_ledger_flush_duration_seconds";
pub const WRITER_QUEUE: &str = "phone_ledger_writer_queue_depth";
pub const LIVE_ACTORS: &str = "phone_ledger_live_actors";
pub const ACTIVATIONS: &str = "phone_ledger_actor_activations_total";
pub const SNAPSHOT_LOADS: &str = "phone_ledger_snapshot_loads_total";
pub const VIEW_FOLLOWS: &str = "phone_ledger_view_follows_total";
pub const LEADER_ELECTIONS_HEARD: &str = "phone_ledger_stream_leader_elections_heard_total";

/// Bucket bounds of the latency histograms, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Bucket bounds of the batch-size histogram (appends per group commit; at most `max_batch`).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once) and returns its handle; `None` when another recorder
/// was installed first (an embedding program's), whose metrics this endpoint cannot render.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS));
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot configure the metrics recorder");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "AWS JSON requests by operation and outcome (200, or the error type and Reason)"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its answer, by operation"
    );
    describe_counter!(
        THROTTLED,
        "Requests refused by admission (ThrottlingException): an account's rate, or the requests in flight"
    );
    describe_histogram!(COMMIT_BATCH, Unit::Count, "Appends committed together by one group commit");
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Time a group commit took to become durable (flush or fsync)"
    );
    describe_gauge!(
        WRITER_QUEUE,
        Unit::Count,
        "Appends waiting for the writer when it took its last batch"
    );
    describe_gauge!(LIVE_ACTORS, Unit::Count, "Aggregate actors in memory, by kind");
    describe_counter!(ACTIVATIONS, "Aggregate actors started, by kind");
    describe_counter!(
        SNAPSHOT_LOADS,
        "States rebuilt from the log: from a snapshot, or replayed from the start"
    );
    describe_counter!(
        VIEW_FOLLOWS,
        "Times this node's view started following the events stream, by reason (start, new-leader, stalled, failed)"
    );
    describe_counter!(
        LEADER_ELECTIONS_HEARD,
        "New leaders of the events stream that the servers announced to this node (each starts a close watch of its view)"
    );
}

/// The exposition text (empty when the recorder is not ours).
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}
