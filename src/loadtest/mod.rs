//! `phone-ledger loadtest`: deliberately conflicting traffic over real HTTP (the AWS JSON requests
//! an SDK sends), a latency/throughput report, and a correctness verdict checked against the
//! event log from the same run ([`checker`]).
//!
//! Clients aim at a small hot set of numbers so operations really race: releases against
//! protection toggles and pool changes, associations against disassociations. A number that is
//! released is replaced in the hot set by a freshly requested one, so the race goes on.

pub mod checker;
pub mod report;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::checker::{check_after, ClientOp, Op, Verdict};
use crate::auth::ClientSigner;
use crate::config::Config;
use crate::domain::opt_out_list::DEFAULT_LIST;
use crate::domain::{ResourceKind, Scope};
use crate::server::RunningServer;
use crate::store::Durability;
use crate::store::EventEnvelope;

/// Load-test settings (also the command line).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct LoadTestArgs {
    /// A running server to drive, or several nodes of one cluster separated by commas (the
    /// clients are spread over them, all racing on the same numbers); by default one server is
    /// started in-process on a temporary directory.
    #[arg(long)]
    pub server: Option<String>,
    /// Phone numbers to create before the load starts.
    #[arg(long, default_value_t = 200)]
    pub numbers: usize,
    /// Pools to create (each with one of the numbers) before the load starts.
    #[arg(long, default_value_t = 10)]
    pub pools: usize,
    /// Concurrent in-flight requests.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to run (e.g. 10s, 1m); default 10s unless --requests is given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Operation weights.
    #[arg(long, default_value = DEFAULT_MIX)]
    pub mix: String,
    /// Share of the numbers that receive the operations (small = more conflicts).
    #[arg(long, default_value_t = 0.1)]
    pub hot_fraction: f64,
    /// Seed of the operation schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page with plots to this file.
    #[arg(long)]
    #[serde(default)]
    pub report: Option<PathBuf>,
    /// Account (SigV4 access key id) the clients use.
    #[arg(long, default_value = "111122223333")]
    pub account: String,
    /// Sign the requests with the AWS credentials of the environment or profile, as the AWS
    /// tools find them (for a server in strict SigV4 mode; `--account` must then be the
    /// credential's account).
    #[arg(long)]
    #[serde(default)]
    pub sign: bool,
    /// Durability of the in-process server (fsync, flush or relaxed).
    #[arg(long, value_parser = parse_durability)]
    pub durability: Option<Durability>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How long a client waits for an answer before giving up on it: the request then counts as
    /// unanswered (its outcome unknown), so a frozen node cannot hang the run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How long the load test waits for a node's health, or for the next part of its log export
/// (the whole export of a long run may take longer than any fixed bound; a frozen node sends
/// nothing at all).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for the nodes' own endpoints (`/health`, `/audit/export`): bounded by
/// [`ADMIN_TIMEOUT`] between reads, not over a whole answer.
fn admin_client() -> Result<reqwest::Client, LoadTestError> {
    reqwest::Client::builder()
        .connect_timeout(ADMIN_TIMEOUT)
        .read_timeout(ADMIN_TIMEOUT)
        .build()
        .map_err(|e| LoadTestError::Setup(format!("cannot build an HTTP client: {e}")))
}

/// The default operation weights: the lifecycle's races, and the neighbourhood's — sends against
/// releases and opt-outs, numbers and pools joining the load test's opt-out list while it is
/// deleted, sender ids released while they join and leave pools.
pub const DEFAULT_MIX: &str = "release=15,update=20,associate=20,disassociate=15,describe=5,send=15,opt-out=4,join-list=5,pool-list=1,\
delete-list=1,release-sender=3,associate-sender=4,disassociate-sender=3";

/// The load test's sender ids (`Load0`, ...), leased in this country: few, so their releases
/// race their associations with the pools.
const SENDER_IDS: usize = 6;
const SENDER_COUNTRY: &str = "US";
/// How many of the pools the sender ids join and leave.
const SENDER_POOLS: usize = 3;

/// The opt-out list the load test's numbers join and leave, and which it deletes and creates.
pub const LOAD_TEST_LIST: &str = "loadtest";

/// Destinations of the load test's messages and opt-outs: a window of this many, moving on
/// every `DESTINATION_STEP` requests, so sends and opt-outs keep colliding on fresh ones (an
/// opted-out number stays opted out: it can be deleted only once every 30 days).
const DESTINATIONS: u64 = 16;
const DESTINATION_STEP: u64 = 512;

/// A destination of the window the `n`-th request is in: a valid number (`PutOptedOutNumber`
/// refuses others), of the exchanges 200–299 of area code 206, a million of them.
fn destination(n: u64, rng: &mut StdRng) -> String {
    format!(
        "+12062{:06}",
        ((n / DESTINATION_STEP) * 4 + rng.gen_range(0..DESTINATIONS)) % 1_000_000
    )
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "fsync" => Ok(Durability::Fsync),
        "flush" => Ok(Durability::Flush),
        "relaxed" => Ok(Durability::Relaxed),
        other => Err(format!("{other:?}: expected fsync, flush or relaxed")),
    }
}

impl Default for LoadTestArgs {
    fn default() -> Self {
        LoadTestArgs {
            server: None,
            numbers: 200,
            pools: 10,
            clients: 64,
            duration: None,
            requests: None,
            mix: DEFAULT_MIX.into(),
            hot_fraction: 0.1,
            seed: 1,
            json: None,
            report: None,
            account: "111122223333".into(),
            sign: false,
            durability: None,
            quiet: true,
            request_timeout: default_request_timeout(),
        }
    }
}

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("{0}")]
    Setup(String),
}

/// Latency and outcomes of one operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpStats {
    pub count: u64,
    pub ok: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// `200`, or the error type and reason.
    pub outcomes: BTreeMap<String, u64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    pub settings: LoadTestArgs,
    pub server: String,
    pub elapsed_s: f64,
    pub requests: u64,
    pub throughput_per_s: f64,
    pub operations: BTreeMap<String, OpStats>,
    /// All operations of the race together.
    pub overall: OpStats,
    pub log_events: u64,
    pub verdict: Verdict,
    /// The log the verdict was checked against (not written to the JSON report).
    #[serde(skip)]
    pub log: Vec<EventEnvelope>,
    /// Every operation the clients made, set-up included (not written to the JSON report).
    #[serde(skip)]
    pub client_ops: Vec<ClientOp>,
    /// How many of `client_ops` come first from the set-up (the race's follow them).
    #[serde(skip)]
    pub setup_ops: usize,
}

fn parse_mix(mix: &str) -> Result<Vec<(Op, u32)>, LoadTestError> {
    let mut out = Vec::new();
    for part in mix.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| LoadTestError::Setup(format!("--mix: {part:?} is not name=weight")))?;
        let op = Op::ALL
            .into_iter()
            .find(|o| o.name() == name.trim())
            .filter(|o| o.scheduled())
            .ok_or_else(|| LoadTestError::Setup(format!("--mix: unknown operation {name:?}")))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| LoadTestError::Setup(format!("--mix: {weight:?} is not a weight")))?;
        out.push((op, weight));
    }
    if out.iter().map(|(_, w)| w).sum::<u32>() == 0 {
        return Err(LoadTestError::Setup("--mix: weights add up to zero".into()));
    }
    Ok(out)
}

/// The instant client timestamps (`ClientOp::started_ns`, `finished_ns`) count from: the same
/// for every load run in the process.
fn clock_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A client of the AWS JSON protocol.
#[derive(Clone)]
struct Wire {
    http: reqwest::Client,
    url: String,
    authorization: String,
    /// With `--sign`: signs each request (else `authorization` names the account unsigned).
    signer: Option<Arc<ClientSigner>>,
    started: Instant,
}

/// The error of a request that could not connect to its server (so was never sent).
pub const CONNECT_ERROR: &str = "ConnectError";

impl Wire {
    async fn call(&self, operation: &str, body: Value) -> (u16, Value, Option<String>) {
        let target = format!("PinpointSMSVoiceV2.{operation}");
        let body = body.to_string();
        let mut request = self
            .http
            .post(&self.url)
            .header("X-Amz-Target", &target)
            .header("Content-Type", "application/x-amz-json-1.0");
        request = match &self.signer {
            None => request.header("Authorization", &self.authorization),
            Some(signer) => {
                let headers = [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", target.as_str())];
                match signer.sign("POST", &self.url, &headers, body.as_bytes()) {
                    Ok(signed) => signed.into_iter().fold(request, |r, (k, v)| r.header(k, v)),
                    Err(e) => return (0, Value::String(format!("cannot sign: {e}")), None),
                }
            }
        };
        let resp = request.body(body).send().await;
        match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let rid = r
                    .headers()
                    .get("x-amzn-requestid")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = r.json::<Value>().await.unwrap_or(Value::Null);
                (status, body, rid)
            }
            // A request that found no connection never reached a server: it cannot have written.
            Err(e) if e.is_connect() => (0, json!({"__type": CONNECT_ERROR, "Message": e.to_string()}), None),
            Err(e) => (0, json!({"__type": "ClientError", "Message": e.to_string()}), None),
        }
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Sends one operation and records what the client saw.
    async fn op(&self, op: Op, number: &str, pool: Option<&str>, body: Value, operation: &str) -> (ClientOp, Value) {
        let started_ns = self.now_ns();
        let (status, response, request_id) = self.call(operation, body).await;
        let finished_ns = self.now_ns();
        let ok = (200..300).contains(&status);
        let record = ClientOp {
            op,
            number: number.to_string(),
            pool: pool.map(str::to_string),
            started_ns,
            finished_ns,
            status,
            error: (!ok).then(|| response["__type"].as_str().unwrap_or("Unknown").to_string()),
            reason: (!ok).then(|| response["Reason"].as_str().map(str::to_string)).flatten(),
            request_id,
            destination: None,
        };
        (record, response)
    }

    /// Leases the load test's sender id `name` (its stream is `stream`).
    async fn request_sender(&self, name: &str, stream: &str) -> (ClientOp, Value) {
        let body = json!({"SenderId": name, "IsoCountryCode": SENDER_COUNTRY});
        self.op(Op::RequestSender, stream, None, body, "RequestSenderId").await
    }

    /// Requests a number, into `pool` if given (it takes the pool's opt-out list, so a change of
    /// the pool's list between the request's reading it and the number's join has the join
    /// refused and the number withdrawn): its id, and the account and region its ARN names.
    async fn request_number(&self, pool: Option<&str>) -> (ClientOp, Option<String>, Option<Scope>) {
        let mut body =
            json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE"});
        let op = match pool {
            Some(pool) => {
                body["PoolId"] = json!(pool);
                Op::RequestIntoPool
            }
            None => Op::Request,
        };
        let (mut record, response) = self.op(op, "", pool, body, "RequestPhoneNumber").await;
        let id = response["PhoneNumberId"].as_str().map(str::to_string);
        record.number = id.clone().unwrap_or_default();
        (record, id, response["PhoneNumberArn"].as_str().and_then(scope_of_arn))
    }
}

/// The account and region an ARN (`arn:aws:sms-voice:REGION:ACCOUNT:...`) names.
fn scope_of_arn(arn: &str) -> Option<Scope> {
    let mut parts = arn.splitn(6, ':');
    let (region, account) = (parts.nth(3)?, parts.next()?);
    Some(Scope::new(account, region))
}

/// The streams of the opt-out lists the load uses (the clients record operations on a list by
/// its stream, which names its account and region as well as its name).
#[derive(Debug, Clone)]
struct ListStreams {
    load_test: String,
    default: String,
}

impl ListStreams {
    fn new(scope: &Scope) -> Self {
        ListStreams {
            load_test: ResourceKind::opt_out_list_id(scope, LOAD_TEST_LIST),
            default: ResourceKind::opt_out_list_id(scope, DEFAULT_LIST),
        }
    }

    /// The stream of the list `name` (the load test's or `Default`).
    fn of(&self, name: &str) -> &str {
        if name == LOAD_TEST_LIST {
            &self.load_test
        } else {
            &self.default
        }
    }
}

/// How many times a client asks for the number that replaces one it released, while the
/// service answers that it cannot take it now (5xx, or no answer).
const REPLACE_ATTEMPTS: u64 = 20;

struct Shared {
    hot: Mutex<Vec<String>>,
    pools: Vec<String>,
    /// The load test's sender ids: name and stream id.
    senders: Vec<(String, String)>,
    lists: ListStreams,
    mix: Vec<(Op, u32)>,
    sent: AtomicU64,
    errors: AtomicU64,
    budget: Option<u64>,
    deadline: Instant,
}

fn pick<'a>(rng: &mut StdRng, mix: &'a [(Op, u32)]) -> &'a Op {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total);
    for (op, w) in mix {
        if roll < *w {
            return op;
        }
        roll -= w;
    }
    &mix[0].0
}

async fn client(wire: Wire, shared: Arc<Shared>, seed: u64) -> Vec<ClientOp> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = Vec::new();
    loop {
        if Instant::now() >= shared.deadline {
            break;
        }
        let n = shared.sent.fetch_add(1, Ordering::Relaxed);
        if shared.budget.is_some_and(|b| n >= b) {
            break;
        }
        let op = *pick(&mut rng, &shared.mix);
        let (slot, number) = {
            let hot = shared.hot.lock().unwrap_or_else(|p| p.into_inner());
            let slot = rng.gen_range(0..hot.len());
            (slot, hot[slot].clone())
        };
        let pool = shared.pools.get(rng.gen_range(0..shared.pools.len().max(1))).cloned();
        let (record, _) = match op {
            Op::Release => {
                wire.op(op, &number, None, json!({"PhoneNumberId": number}), "ReleasePhoneNumber")
                    .await
            }
            Op::Update => {
                let protect = rng.gen_bool(0.5);
                wire.op(
                    op,
                    &number,
                    None,
                    json!({"PhoneNumberId": number, "DeletionProtectionEnabled": protect}),
                    "UpdatePhoneNumber",
                )
                .await
            }
            Op::Associate | Op::Disassociate if pool.is_some() => {
                let pool = pool.clone().unwrap_or_default();
                let operation = if op == Op::Associate {
                    "AssociateOriginationIdentity"
                } else {
                    "DisassociateOriginationIdentity"
                };
                wire.op(
                    op,
                    &number,
                    Some(&pool),
                    json!({"PoolId": pool, "OriginationIdentity": number}),
                    operation,
                )
                .await
            }
            Op::Send => {
                let to = destination(n, &mut rng);
                let body = json!({"OriginationIdentity": number, "DestinationPhoneNumber": to, "MessageBody": "load"});
                wire.op(op, &number, None, body, "SendTextMessage").await
            }
            Op::OptOut => {
                let to = destination(n, &mut rng);
                let list = if rng.gen_bool(0.5) { LOAD_TEST_LIST } else { DEFAULT_LIST };
                let body = json!({"OptOutListName": list, "OptedOutNumber": to});
                let (mut record, response) = wire.op(op, shared.lists.of(list), None, body, "PutOptedOutNumber").await;
                record.destination = Some(to);
                (record, response)
            }
            Op::JoinList => {
                // Mostly back to Default, so the list is at times unused and can be deleted.
                let list = if rng.gen_bool(0.15) { LOAD_TEST_LIST } else { DEFAULT_LIST };
                let body = json!({"PhoneNumberId": number, "OptOutListName": list});
                wire.op(op, &number, None, body, "UpdatePhoneNumber").await
            }
            Op::PoolList if pool.is_some() => {
                // As numbers do, mostly back to Default.
                let pool = pool.clone().unwrap_or_default();
                let list = if rng.gen_bool(0.15) { LOAD_TEST_LIST } else { DEFAULT_LIST };
                let body = json!({"PoolId": pool, "OptOutListName": list});
                wire.op(op, &pool, Some(&pool), body, "UpdatePool").await
            }
            Op::DeleteList => {
                let body = json!({"OptOutListName": LOAD_TEST_LIST});
                wire.op(op, &shared.lists.load_test, None, body, "DeleteOptOutList").await
            }
            Op::ReleaseSender | Op::AssociateSender | Op::DisassociateSender if !shared.senders.is_empty() && pool.is_some() => {
                let (name, stream) = &shared.senders[rng.gen_range(0..shared.senders.len())];
                // A few pools only: a sender id is in several at once, and at times in none,
                // when its release can win its race (in any of twenty pools it never would be).
                let pools = &shared.pools[..shared.pools.len().min(SENDER_POOLS)];
                let pool = pools[rng.gen_range(0..pools.len())].clone();
                let (operation, body, pool) = match op {
                    Op::ReleaseSender => ("ReleaseSenderId", json!({"SenderId": name, "IsoCountryCode": SENDER_COUNTRY}), None),
                    Op::AssociateSender => (
                        "AssociateOriginationIdentity",
                        json!({"PoolId": pool, "OriginationIdentity": name, "IsoCountryCode": SENDER_COUNTRY}),
                        Some(pool.as_str()),
                    ),
                    _ => (
                        "DisassociateOriginationIdentity",
                        json!({"PoolId": pool, "OriginationIdentity": name, "IsoCountryCode": SENDER_COUNTRY}),
                        Some(pool.as_str()),
                    ),
                };
                let (record, response) = wire.op(op, stream, pool, body, operation).await;
                if op == Op::ReleaseSender && (200..300).contains(&record.status) {
                    // Keep the race going: the sender id is leased again (another client may be
                    // first, and is refused as existing, recorded).
                    ops.push(record);
                    wire.request_sender(name, stream).await
                } else {
                    (record, response)
                }
            }
            _ => {
                wire.op(
                    Op::Describe,
                    &number,
                    None,
                    json!({"PhoneNumberIds": [number]}),
                    "DescribePhoneNumbers",
                )
                .await
            }
        };
        if !(200..300).contains(&record.status) {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        if record.status == 0 || record.error.as_deref() == Some("ThrottlingException") {
            // The server is unreachable (e.g. killed by the crash test) or asks for less: do not
            // spin on it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let released = record.op == Op::Release && (200..300).contains(&record.status);
        let list_deleted = record.op == Op::DeleteList && (200..300).contains(&record.status);
        ops.push(record);
        if list_deleted {
            // Keep the race going: the list comes back (another client may have been first).
            let body = json!({"OptOutListName": LOAD_TEST_LIST});
            let (record, _) = wire
                .op(Op::CreateList, &shared.lists.load_test, None, body, "CreateOptOutList")
                .await;
            ops.push(record);
        }
        if released {
            // Keep the race going: a fresh number takes the released one's place. Asked for
            // again while the service cannot answer (a failover): otherwise the slot would keep
            // the released number, and the rest of the run would be refusals on it.
            for attempt in 1..=REPLACE_ATTEMPTS {
                // Half the time into a pool; one refused (its pool's list changed meanwhile) is
                // asked for again.
                let into = shared.pools.get(rng.gen_range(0..shared.pools.len().max(1)));
                let into = into.filter(|_| rng.gen_bool(0.5)).cloned();
                let (record, id, _) = match &into {
                    // At times raced with a change of the pool's opt-out list, which the number
                    // takes from the pool: a change between the request's reading the pool and
                    // the number's join has the join refused and the number withdrawn.
                    Some(pool) if rng.gen_bool(0.5) => {
                        let list = if rng.gen_bool(0.5) { LOAD_TEST_LIST } else { DEFAULT_LIST };
                        let body = json!({"PoolId": pool, "OptOutListName": list});
                        let change = wire.op(Op::PoolList, pool, Some(pool), body, "UpdatePool");
                        let (requested, (changed, _)) = tokio::join!(wire.request_number(Some(pool)), change);
                        ops.push(changed);
                        requested
                    }
                    _ => wire.request_number(into.as_deref()).await,
                };
                let retry = matches!(record.status, 0 | 500..=599) || into.is_some();
                ops.push(record);
                if let Some(id) = id {
                    let mut hot = shared.hot.lock().unwrap_or_else(|p| p.into_inner());
                    if hot.get(slot) == Some(&number) {
                        hot[slot] = id;
                    }
                    break;
                }
                if !retry || Instant::now() >= shared.deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
    ops
}

/// Runs a load test and returns its report (the verdict included).
pub fn run(args: &LoadTestArgs) -> Result<Report, LoadTestError> {
    parse_mix(&args.mix)?;
    if args.numbers == 0 || args.clients == 0 {
        return Err(LoadTestError::Setup("--numbers and --clients must be at least 1".into()));
    }
    if args.pools > args.numbers {
        return Err(LoadTestError::Setup(
            "--pools cannot exceed --numbers (each pool starts with one number)".into(),
        ));
    }
    let (_dir, server, bases) = match &args.server {
        Some(urls) => {
            let bases: Vec<String> = urls
                .split(',')
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty())
                .collect();
            if bases.is_empty() {
                return Err(LoadTestError::Setup("--server names no URL".into()));
            }
            (None, None, bases)
        }
        None => {
            let dir = tempfile::tempdir().map_err(|e| LoadTestError::Setup(e.to_string()))?;
            let mut config = Config::defaults_with_data_dir(dir.path()).map_err(|e| LoadTestError::Setup(e.to_string()))?;
            config.listen = "127.0.0.1:0"
                .parse()
                .map_err(|e: std::net::AddrParseError| LoadTestError::Setup(e.to_string()))?;
            config.quotas.phone_numbers_per_account = u64::MAX;
            config.quotas.pools_per_account = u64::MAX;
            config.quotas.sender_ids_per_account = u64::MAX;
            if let Some(d) = args.durability {
                config.store.set_durability(d);
            }
            let server = RunningServer::spawn(config).map_err(|e| LoadTestError::Setup(e.to_string()))?;
            let url = server.url();
            (Some(dir), Some(server), vec![url])
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LoadTestError::Setup(e.to_string()))?;
    let report = runtime.block_on(drive(args, &bases));
    drop(runtime);
    if let Some(server) = server {
        server.stop().map_err(|e| LoadTestError::Setup(e.to_string()))?;
    }
    report
}

/// Numbers and pools created before the race, and the set-up's own operations.
pub struct Prepared {
    /// One per node.
    wires: Vec<Wire>,
    pub numbers: Vec<String>,
    pub pools: Vec<String>,
    /// The sender ids, by name and stream id.
    pub senders: Vec<(String, String)>,
    lists: ListStreams,
    pub ops: Vec<ClientOp>,
}

/// The clients' HTTP client: a request gets `--request-timeout` to be answered.
fn load_client(args: &LoadTestArgs) -> Result<reqwest::Client, LoadTestError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .timeout(args.request_timeout)
        .build()
        .map_err(|e| LoadTestError::Setup(format!("cannot build an HTTP client: {e}")))
}

/// Creates the numbers and pools the race will use, spreading the requests over the nodes at
/// `bases`.
pub async fn prepare(args: &LoadTestArgs, bases: &[String]) -> Result<Prepared, LoadTestError> {
    let http = load_client(args)?;
    // One origin for every run in this process: operations of several runs against one log (a
    // crash test's cycles) are then ordered in real time against each other too.
    let started = clock_origin();
    let signer = signer_for(args)?;
    let wires: Vec<Wire> = bases
        .iter()
        .map(|base| Wire {
            http: http.clone(),
            url: format!("{base}/"),
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={}/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0",
                args.account
            ),
            signer: signer.clone(),
            started,
        })
        .collect();
    let Some(wire) = wires.first().cloned() else {
        return Err(LoadTestError::Setup("no server to drive".into()));
    };
    let base = bases.join(",");
    let mut ops = Vec::new();
    let mut numbers = Vec::with_capacity(args.numbers);
    // The account and region the service puts the run's resources in (with `--sign`, the
    // credential's), as the numbers' ARNs name them.
    let mut scope = None;
    let mut setup = tokio::task::JoinSet::new();
    let mut take = |(record, id, in_scope): (ClientOp, Option<String>, Option<Scope>)| {
        ops.push(record);
        numbers.extend(id);
        scope = scope.take().or(in_scope);
    };
    for i in 0..args.numbers {
        let w = wires[i % wires.len()].clone();
        setup.spawn(async move { w.request_number(None).await });
        if setup.len() >= args.clients {
            if let Some(Ok(requested)) = setup.join_next().await {
                take(requested);
            }
        }
    }
    while let Some(joined) = setup.join_next().await {
        if let Ok(requested) = joined {
            take(requested);
        }
    }
    let scope = scope.unwrap_or_else(|| Scope::new(args.account.clone(), "us-east-1"));
    let lists = ListStreams::new(&scope);
    if numbers.len() < args.numbers {
        // Why, as the server said it (a refused signature, a quota, ...).
        let why = ops
            .iter()
            .find(|o| !(200..300).contains(&o.status))
            .map(|o| {
                let error = o.error.as_deref().unwrap_or("no answer");
                format!(": HTTP {} {error} {}", o.status, o.reason.as_deref().unwrap_or_default())
            })
            .unwrap_or_default();
        return Err(LoadTestError::Setup(format!(
            "only {} of {} numbers could be requested from {base}{}",
            numbers.len(),
            args.numbers,
            why.trim_end()
        )));
    }
    numbers.sort();
    // The opt-out list the numbers join and leave (left from an earlier run, or new). Like every
    // set-up call, recorded: its events are the run's, and the verdict wants each event's
    // operation.
    let body = json!({"OptOutListName": LOAD_TEST_LIST});
    let (record, body) = wire.op(Op::CreateList, &lists.load_test, None, body, "CreateOptOutList").await;
    let created = record.status == 200;
    ops.push(record);
    if !created && body["Reason"] != "RESOURCE_ALREADY_EXISTS" {
        return Err(LoadTestError::Setup(format!("CreateOptOutList failed: {body}")));
    }
    let mut pools = Vec::new();
    for seed_number in numbers.iter().take(args.pools) {
        let body = json!({"OriginationIdentity": seed_number, "MessageType": "TRANSACTIONAL"});
        let (mut record, body) = wire.op(Op::CreatePool, seed_number, None, body, "CreatePool").await;
        let id = body["PoolId"].as_str().filter(|_| record.status == 200).map(str::to_string);
        record.pool = id.clone();
        ops.push(record);
        match id {
            Some(id) => pools.push(id),
            None => return Err(LoadTestError::Setup(format!("CreatePool failed: {body}"))),
        }
    }
    // The sender ids (an earlier run against the same server may have left them leased).
    let mut senders = Vec::new();
    for i in 0..SENDER_IDS {
        let name = format!("Load{i}");
        let (mut record, body) = wire.request_sender(&name, "").await;
        let already = body["Reason"] == "RESOURCE_ALREADY_EXISTS";
        let arn = body["SenderIdArn"].as_str().map(str::to_string);
        // The stream id follows from the account and region the server put in the ARN.
        let scope = arn.as_deref().and_then(scope_of_arn).unwrap_or_else(|| scope.clone());
        let stream = ResourceKind::sender_id_id(&scope, &name, SENDER_COUNTRY);
        record.number = stream.clone();
        ops.push(record);
        if arn.is_none() && !already {
            return Err(LoadTestError::Setup(format!("RequestSenderId failed: {body}")));
        }
        senders.push((name, stream));
    }
    Ok(Prepared {
        wires,
        numbers,
        pools,
        senders,
        lists,
        ops,
    })
}

/// Races the clients over the prepared numbers; returns their operations and the time taken.
pub async fn race(args: &LoadTestArgs, prepared: &Prepared) -> Result<(Vec<ClientOp>, Duration), LoadTestError> {
    let mix = parse_mix(&args.mix)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let hot_len = ((prepared.numbers.len() as f64 * args.hot_fraction).ceil() as usize).clamp(1, prepared.numbers.len().max(1));
    let mut shuffled = prepared.numbers.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.gen_range(0..=i));
    }
    let hot: Vec<String> = shuffled.into_iter().take(hot_len).collect();
    if hot.is_empty() {
        return Err(LoadTestError::Setup("no numbers to race on".into()));
    }
    let duration = args.duration.unwrap_or(if args.requests.is_some() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(10)
    });
    let started = Instant::now();
    let shared = Arc::new(Shared {
        hot: Mutex::new(hot),
        pools: prepared.pools.clone(),
        senders: prepared.senders.clone(),
        lists: prepared.lists.clone(),
        mix,
        sent: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        budget: args.requests,
        deadline: started + duration,
    });
    let progress = progress_bar(args, &shared, duration);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        clients.spawn(client(
            prepared.wires[i % prepared.wires.len()].clone(),
            shared.clone(),
            args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
        ));
    }
    let mut load_ops = Vec::new();
    while let Some(joined) = clients.join_next().await {
        load_ops.extend(joined.map_err(|e| LoadTestError::Setup(format!("client task failed: {e}")))?);
    }
    let elapsed = started.elapsed();
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    Ok((load_ops, elapsed))
}

/// The signer `--sign` asks for.
fn signer_for(args: &LoadTestArgs) -> Result<Option<Arc<ClientSigner>>, LoadTestError> {
    if !args.sign {
        return Ok(None);
    }
    ClientSigner::from_environment().map(|s| Some(Arc::new(s))).ok_or_else(|| {
        LoadTestError::Setup("--sign: no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or profile".into())
    })
}

/// The whole log of a server, through its audit export.
pub async fn fetch_log(base: &str) -> Result<Vec<EventEnvelope>, LoadTestError> {
    fetch_log_as(base, None).await
}

/// [`fetch_log`], signed (a strict server exports to an account its own entries: all the load
/// test's).
pub async fn fetch_log_as(base: &str, signer: Option<&ClientSigner>) -> Result<Vec<EventEnvelope>, LoadTestError> {
    let unreadable = |e: String| LoadTestError::Setup(format!("cannot read the log: {e}"));
    let url = format!("{base}/audit/export");
    // Right after the race the account's request rate (if the server sets one) may be spent: a
    // throttled export is asked again, waiting twice as long each time (about 6 s in all).
    let mut wait = Duration::from_millis(200);
    let mut export = loop {
        let mut request = admin_client()?.get(&url);
        if let Some(signer) = signer {
            for (k, v) in signer.sign("GET", &url, &[], &[]).map_err(|e| unreadable(e.to_string()))? {
                request = request.header(k, v);
            }
        }
        let response = request.send().await.map_err(|e| unreadable(e.to_string()))?;
        let throttled = response.status() == reqwest::StatusCode::BAD_REQUEST
            && response.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()) == Some("ThrottlingException");
        if throttled && wait < Duration::from_secs(6) {
            tokio::time::sleep(wait).await;
            wait *= 2;
            continue;
        }
        break response.error_for_status().map_err(|e| unreadable(e.to_string()))?;
    };
    // Read as it streams in, a line at a time: only the events are held, never the whole body.
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let take = |line: &[u8], events: &mut Vec<EventEnvelope>| -> Result<(), LoadTestError> {
        if !line.iter().all(u8::is_ascii_whitespace) {
            let event = serde_json::from_slice(line).map_err(|e| LoadTestError::Setup(format!("unreadable log export: {e}")))?;
            events.push(event);
        }
        Ok(())
    };
    while let Some(chunk) = export.chunk().await.map_err(|e| unreadable(e.to_string()))? {
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            take(&pending[start..start + end], &mut events)?;
            start += end + 1;
        }
        pending.drain(..start);
    }
    take(&pending, &mut events)?;
    Ok(events)
}

/// The longest stretch in which the log took no append that a client was answered for: between
/// two answers (success or refusal, not a server error) to requests whose events are in `log`.
/// This is how long writes were out of service, e.g. while the log's leader was replaced.
/// Neither reads nor writes that change nothing (answered without an append) bridge it: a node
/// answers those from its own view of the log, which outlives the log's leader.
pub fn longest_append_gap(log: &[EventEnvelope], ops: &[ClientOp]) -> Duration {
    let appended: HashSet<&str> = log.iter().map(|e| e.request_id.as_str()).collect();
    let mut answered: Vec<u64> = ops
        .iter()
        .filter(|o| o.status != 0 && o.status < 500)
        .filter(|o| o.request_id.as_deref().is_some_and(|r| appended.contains(r)))
        .map(|o| o.finished_ns)
        .collect();
    answered.sort_unstable();
    Duration::from_nanos(answered.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0))
}

/// How many of `ops` are writes the service acknowledged: each one's event must be in the log.
pub fn acknowledged_writes(ops: &[ClientOp]) -> usize {
    ops.iter()
        .filter(|o| o.op != Op::Describe && (200..300).contains(&o.status))
        .count()
}

/// The position of the last event in the log as the node at `base` sees it.
async fn log_head(base: &str) -> Result<u64, LoadTestError> {
    let health: Value = admin_client()?
        .get(format!("{base}/health"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| LoadTestError::Setup(format!("{base}/health: {e}")))?
        .json()
        .await
        .map_err(|e| LoadTestError::Setup(format!("{base}/health: {e}")))?;
    health["Events"]
        .as_u64()
        .ok_or_else(|| LoadTestError::Setup(format!("{base}/health: no event count")))
}

/// The last position of the log any of the nodes at `bases` has.
pub async fn furthest_log_head(bases: &[String]) -> Result<u64, LoadTestError> {
    let mut most = 0;
    for base in bases {
        most = most.max(log_head(base).await?);
    }
    Ok(most)
}

/// Waits until the node at `bases[0]` has every event any of the nodes has (each node's view of
/// a shared log follows the others' appends a moment later).
pub async fn settle(bases: &[String]) -> Result<(), LoadTestError> {
    let most = furthest_log_head(bases).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = log_head(&bases[0]).await?;
        if seen >= most {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadTestError::Setup(format!(
                "{} has {seen} events after 30 s, another node {most}",
                bases[0]
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive(args: &LoadTestArgs, bases: &[String]) -> Result<Report, LoadTestError> {
    // A server driven with `--server` may hold events from before the run (an earlier run's):
    // no operation of this one answers for them.
    let before = furthest_log_head(bases).await?;
    let prepared = prepare(args, bases).await?;
    let (load_ops, elapsed) = race(args, &prepared).await?;
    settle(bases).await?;
    let base = bases.join(",");
    let log = fetch_log_as(&bases[0], signer_for(args)?.as_deref()).await?;
    let setup_ops = prepared.ops.len();
    // One copy of every operation: the set-up's, then the race's (moved, not cloned: a long run
    // makes millions).
    let mut all_ops = prepared.ops;
    all_ops.extend(load_ops);
    let load_ops = &all_ops[setup_ops..];
    let verdict = check_after(&log, &all_ops, before);
    Ok(Report {
        settings: args.clone(),
        server: base,
        elapsed_s: elapsed.as_secs_f64(),
        requests: load_ops.len() as u64,
        throughput_per_s: load_ops.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        operations: stats(load_ops),
        overall: op_stats(&load_ops.iter().collect::<Vec<_>>()),
        log_events: log.len() as u64,
        verdict,
        log,
        client_ops: all_ops,
        setup_ops,
    })
}

fn progress_bar(
    args: &LoadTestArgs,
    shared: &Arc<Shared>,
    duration: Duration,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if args.quiet {
        return None;
    }
    let bar = match args.requests {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new(duration.as_secs().max(1)),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (b, s) = (bar.clone(), shared.clone());
    let by_requests = args.requests.is_some();
    let started = Instant::now();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let sent = s.sent.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            b.set_position(if by_requests { sent } else { started.elapsed().as_secs() });
            b.set_message(format!(
                "{sent} requests, {:.0} req/s, {} errors",
                sent as f64 / secs,
                s.errors.load(Ordering::Relaxed)
            ));
        }
    });
    Some((bar, ticker))
}

fn stats(ops: &[ClientOp]) -> BTreeMap<String, OpStats> {
    let mut by_op: BTreeMap<Op, Vec<&ClientOp>> = BTreeMap::new();
    for o in ops {
        by_op.entry(o.op).or_default().push(o);
    }
    by_op
        .into_iter()
        .map(|(op, list)| (op.name().to_string(), op_stats(&list)))
        .collect()
}

/// Latency percentiles and outcome counts of a set of operations.
fn op_stats(list: &[&ClientOp]) -> OpStats {
    // Bounds: 1 µs to 60 s at three significant digits; `new_with_bounds` only fails on invalid
    // bounds, which these are not.
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut outcomes = BTreeMap::new();
    let mut ok = 0;
    for o in list {
        let us = ((o.finished_ns.saturating_sub(o.started_ns)) / 1000).clamp(1, 60_000_000);
        h.saturating_record(us);
        let key = if (200..300).contains(&o.status) {
            ok += 1;
            "200 OK".to_string()
        } else {
            match &o.reason {
                Some(r) => format!("{} {}", o.error.as_deref().unwrap_or("?"), r),
                None => o.error.clone().unwrap_or_else(|| o.status.to_string()),
            }
        };
        *outcomes.entry(key).or_insert(0) += 1;
    }
    OpStats {
        count: list.len() as u64,
        ok,
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        outcomes,
    }
}

/// One line of the latency table.
fn latency_row(name: &str, s: &OpStats) -> [String; 8] {
    [
        name.to_string(),
        s.count.to_string(),
        s.ok.to_string(),
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us),
    ]
}

pub(crate) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Prints the report for people.
pub fn print(report: &Report) {
    println!(
        "{} requests in {:.1} s against {}: {:.0} req/s ({} clients, {} numbers, {} hot, {} pools, seed {})",
        report.requests,
        report.elapsed_s,
        report.server,
        report.throughput_per_s,
        report.settings.clients,
        report.settings.numbers,
        ((report.settings.numbers as f64 * report.settings.hot_fraction).ceil() as usize).max(1),
        report.settings.pools,
        report.settings.seed
    );
    let mut latency = Table::new();
    latency
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["operation", "count", "ok", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]);
    for (name, s) in &report.operations {
        latency.add_row(latency_row(name, s));
    }
    latency.add_row(latency_row("all", &report.overall));
    println!("{latency}");
    let mut outcomes = Table::new();
    outcomes
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["operation", "outcome", "count"]);
    for (name, s) in &report.operations {
        for (outcome, n) in &s.outcomes {
            outcomes.add_row([name.clone(), outcome.clone(), n.to_string()]);
        }
    }
    println!("{outcomes}");
    println!("verdict over {} events in the log:", report.log_events);
    for c in &report.verdict.checks {
        let mark = if c.violations.is_empty() { "PASS" } else { "FAIL" };
        println!("  {mark} {} ({} checked)", c.name, c.checked);
        for v in &c.violations {
            println!("       {v}");
        }
    }
    println!("{}", if report.verdict.ok { "VERDICT: PASS" } else { "VERDICT: FAIL" });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load test's destinations are valid numbers (`PutOptedOutNumber` takes no other), over
    /// a run far longer than the README's.
    #[test]
    fn destinations_are_valid_numbers() {
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(7);
        for n in (0..200_000_000u64).step_by(99_991) {
            let to = destination(n, &mut rng);
            assert!(crate::numbering::is_valid_number(&to), "{to} (request {n})");
        }
    }

    fn op(op: Op, request: &str, finished_ms: u64, status: u16) -> ClientOp {
        ClientOp {
            op,
            number: "phone-1".into(),
            pool: None,
            started_ns: 0,
            finished_ns: finished_ms * 1_000_000,
            status,
            error: None,
            reason: None,
            request_id: Some(request.into()),
            destination: None,
        }
    }

    fn event_of(request: &str) -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            stream_id: "phone-1".into(),
            version: 1,
            position: 1,
            event_type: "PhoneNumberUpdated".into(),
            schema_version: 1,
            timestamp_ms: 0,
            account: "111122223333".into(),
            region: "us-east-1".into(),
            request_id: request.into(),
            command_id: uuid::Uuid::new_v4(),
            command: "UpdatePhoneNumber/Update".into(),
            command_input: Value::Null,
            payload: Value::Null,
            hash: String::new(),
        }
    }

    /// A node that takes the request and never answers (frozen) does not hang the client: after
    /// `--request-timeout` the request counts as unanswered.
    #[tokio::test]
    async fn a_request_a_frozen_node_never_answers_times_out_as_unanswered() {
        let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", frozen.local_addr().expect("address"));
        let args = LoadTestArgs {
            request_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let wire = Wire {
            http: load_client(&args).expect("client"),
            url,
            authorization: String::new(),
            signer: None,
            started: Instant::now(),
        };
        let body = json!({"PhoneNumberIds": ["phone-1"]});
        let asked = wire.op(Op::Describe, "phone-1", None, body, "DescribePhoneNumbers");
        let (record, _) = tokio::time::timeout(Duration::from_secs(10), asked)
            .await
            .expect("the client gave up on the frozen node");
        assert_eq!((record.status, record.request_id), (0, None));
        drop(frozen);
    }

    #[test]
    fn the_append_gap_is_bridged_only_by_answers_whose_events_are_in_the_log() {
        // Appends answered at 0 and 5,000 ms (the second a refusal, recorded); in between, reads
        // succeed, an update that changed nothing succeeds without an event, and a write whose
        // outcome was unknown (503) has an event that landed later: the log took no answered
        // append for 5 s.
        let ops = vec![
            op(Op::Release, "r1", 0, 200),
            op(Op::Describe, "r2", 1_000, 200),
            op(Op::Update, "r3", 1_500, 200),
            op(Op::Associate, "r4", 2_000, 503),
            op(Op::Describe, "r5", 2_500, 200),
            op(Op::Describe, "r6", 4_000, 200),
            op(Op::Release, "r7", 5_000, 400),
            op(Op::Describe, "r8", 5_200, 200),
        ];
        let log: Vec<EventEnvelope> = ["r1", "r4", "r7"].into_iter().map(event_of).collect();
        assert_eq!(longest_append_gap(&log, &ops), Duration::from_millis(5_000));
        assert_eq!(acknowledged_writes(&ops), 2);
        assert_eq!(longest_append_gap(&[], &ops), Duration::ZERO);
    }
}
