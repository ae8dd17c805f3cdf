//! The performance table of the README, each figure measured in this run next to the reference
//! it is judged against:
//!
//! 1. durable `ReleasePhoneNumber` throughput (64 clients, numbers that don't conflict) against
//!    a raw actix-web handler that parses the same JSON and returns a response of the same size
//!    (built into this bench), and against the same server flushing once per event (`max_batch = 1`);
//! 2. activation time of a number with 100,000 events against one with 100;
//! 3. resident memory of the server after creating 1,000,000 numbers and touching each once;
//! 4. p50/p99 under the conflict load (64 clients, 10 hot numbers);
//! 5. the server's memory under 10× overload (640 clients against 64), with admission control;
//! 6. (`cold`) with every server driven by wrk (a light client, the same for all; Debian package
//!    `wrk`, the part is skipped loudly without it; the script is `benches/wrk/aws_json.lua`),
//!    64 connections: the raw handler; then on a fresh server holding `PERF_COLD_NUMBERS`
//!    numbers (150,000 by default, the live-actor cap raised to hold them all): warm release
//!    (half of them, actors live since creation), RequestPhoneNumber, and after a restart on the
//!    same data (every actor passivated) cold release (the other half). Each wrk run lasts
//!    `PERF_WRK_SECS` (4 by default); releases never repeat an id unless the numbers run out,
//!    which is reported loudly, as is any run with more than 1 % errors.
//! 7. (`cluster`) clustered mode on this one machine: a 3-node NATS JetStream cluster (Debian's
//!    `nats-server`, skipped loudly without it or wrk) and three phone-ledger nodes sharing its
//!    log (replicas 3): the conflict load spread over the nodes (64 clients, 10 hot numbers,
//!    `PERF_CLUSTER_SECS`, 20 by default; `PERF_ROUNDS` runs, the median by p99); durable release
//!    throughput of the three nodes (one wrk per node, 64 connections in all,
//!    `PERF_CLUSTER_NUMBERS` numbers) against one sled node driven the same way in this run;
//!    and the longest gap without a successful response when the events stream's leader server
//!    is lost under the conflict load: SIGKILLed; then, once it is back and caught up, the new
//!    leader stopped as for maintenance (SIGTERM).
//!
//! Run: `cargo bench --bench performance` (about 17 minutes here, plus the cold part;
//! `PERF_ROUNDS` sets how many rounds the throughput comparisons take the median of, 3 by
//! default). Smaller runs for a quick look: `PERF_NUMBERS=100000 PERF_RELEASES=10000
//! PERF_COLD_NUMBERS=40000 cargo bench --bench performance`; some parts only:
//! `PERF_PARTS=overload,cold cargo bench --bench performance` (release, activation, conflict,
//! overload, memory, cold). `PERF_BINARY=path/to/phone-ledger` measures another build of the
//! server in parts 1–5; in the cold part it is measured beside this build, in alternating runs
//! against the same raw figure (is warm release no slower than that build?).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix_web::{web, App, HttpResponse, HttpServer};
use phone_ledger::actors::{ActorSettings, AggregateActor, GetState};
use phone_ledger::codec::pending_events;
use phone_ledger::domain::phone_number::{PhoneNumber, PhoneNumberChanges, PhoneNumberEvent, PhoneNumberState};
use phone_ledger::domain::Aggregate;
use phone_ledger::loadtest::{self, LoadTestArgs};
use phone_ledger::rehydrate::snapshot_of;
use phone_ledger::store::Durability;
use phone_ledger::store::{AppendMeta, AppendRequest, Store, StoreConfig};
use serde_json::{json, Value};

const CLIENTS: usize = 64;
const THIS_BUILD: &str = env!("CARGO_BIN_EXE_phone-ledger");
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=111122223333/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0";

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---- servers -----------------------------------------------------------------------------------

/// The real binary, on an ephemeral port, with extra settings from the environment.
struct Ledger {
    child: Child,
    url: String,
}

impl Ledger {
    /// The server of the other parts: `PERF_BINARY` if set (another build, to compare two
    /// versions), this build otherwise.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Ledger {
        let binary = std::env::var_os("PERF_BINARY").unwrap_or_else(|| THIS_BUILD.into());
        Ledger::start_binary(&binary, dir, env)
    }

    fn start_binary(binary: &OsStr, dir: &Path, env: &[(&str, &str)]) -> Ledger {
        Ledger::start_binary_on(binary, "127.0.0.1:0", dir, env)
    }

    fn start_binary_on(binary: &OsStr, listen: &str, dir: &Path, env: &[(&str, &str)]) -> Ledger {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(binary)
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn,phone_ledger::server=info")
            .env("NO_COLOR", "1")
            .env("PHONE_LEDGER_QUOTAS__PHONE_NUMBERS_PER_ACCOUNT", "100000000")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn phone-ledger");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = loop {
            let line = lines.next().expect("server log").expect("line");
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().expect("addr").to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ledger {
            child,
            url: format!("http://{addr}/"),
        }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// CPU time the server process has used so far (user + system), in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Ledger {
    /// A part that panics (a failed measurement) leaves no server running behind it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A release response of the real service's size, for the reference handler.
fn release_response(id: &str) -> Value {
    json!({
        "CreatedTimestamp": 1795731291.078, "IsoCountryCode": "US", "MessageType": "TRANSACTIONAL",
        "MonthlyLeasingPrice": "1.00", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE",
        "OptOutListName": "Default", "PhoneNumber": "+12068773252",
        "PhoneNumberArn": format!("arn:aws:sms-voice:us-east-1:111122223333:phone-number/{id}"),
        "PhoneNumberId": id, "SelfManagedOptOutsEnabled": false, "Status": "DELETED", "TwoWayEnabled": false
    })
}

/// The reference: parse the same JSON, answer the same size, no actor and no disk.
async fn raw_release(body: web::Bytes) -> HttpResponse {
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return HttpResponse::BadRequest().finish(),
    };
    let id = input["PhoneNumberId"].as_str().unwrap_or_default();
    HttpResponse::Ok()
        .insert_header(("x-amzn-RequestId", uuid::Uuid::new_v4().to_string()))
        .content_type("application/x-amz-json-1.0")
        .body(release_response(id).to_string())
}

fn start_reference() -> (String, actix_web::dev::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(|| App::new().route("/", web::post().to(raw_release)))
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("bind");
            let addr = server.addrs()[0];
            let running = server.run();
            tx.send((format!("http://{addr}/"), running.handle())).expect("send");
            let _ = running.await;
        })
    });
    rx.recv().expect("reference server")
}

// ---- drivers -----------------------------------------------------------------------------------

async fn call(http: &reqwest::Client, url: &str, operation: &str, body: String) -> (u16, Value) {
    let resp = http
        .post(url)
        .header("X-Amz-Target", format!("PinpointSMSVoiceV2.{operation}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .header("Authorization", AUTH)
        .body(body)
        .send()
        .await
        .expect("response");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Runs `bodies` through `CLIENTS` concurrent clients; returns requests per second.
async fn drive(http: &reqwest::Client, url: &str, operation: &'static str, bodies: Vec<String>) -> (f64, Vec<Value>) {
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, bodies, next) = (http.clone(), url.to_string(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let (status, value) = call(&http, &url, operation, body.clone()).await;
                assert_eq!(status, 200, "{operation}: {value}");
                out.push(value);
            }
            out
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.extend(t.await.expect("client"));
    }
    (bodies.len() as f64 / started.elapsed().as_secs_f64(), values)
}

/// The `RequestPhoneNumber` body of the whole bench (US long codes: 50 million candidates).
fn request_body() -> String {
    json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE"}).to_string()
}

async fn request_numbers(http: &reqwest::Client, url: &str, n: usize) -> (f64, Vec<String>) {
    let (rate, values) = drive(http, url, "RequestPhoneNumber", vec![request_body(); n]).await;
    (
        rate,
        values
            .iter()
            .map(|v| v["PhoneNumberId"].as_str().expect("id").to_string())
            .collect(),
    )
}

fn releases(ids: &[String]) -> Vec<String> {
    ids.iter().map(|id| json!({"PhoneNumberId": id}).to_string()).collect()
}

/// `clients` closed-loop clients sending `bodies` (throttled answers are expected); returns
/// successful updates per second and the server's peak RSS while they ran.
async fn overload(http: &reqwest::Client, server: &Ledger, clients: usize, bodies: Vec<String>) -> (f64, f64) {
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, bodies, next, ok) = (http.clone(), server.url.clone(), bodies.clone(), next.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let (status, value) = call(&http, &url, "UpdatePhoneNumber", body.clone()).await;
                match (status, value["__type"].as_str()) {
                    (200, _) => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    (400, Some("ThrottlingException")) => {}
                    other => panic!("unexpected answer under overload: {other:?}"),
                }
            }
        }));
    }
    let mut peak: f64 = 0.0;
    while tasks.iter().any(|t| !t.is_finished()) {
        peak = peak.max(server.rss_mib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.await.expect("client");
    }
    (
        ok.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        peak,
    )
}

/// Durable releases of `n` numbers that don't conflict, on a fresh server with `env`: releases
/// per second, and the server's CPU time per release in microseconds.
async fn ledger_release_rate(http: &reqwest::Client, n: usize, env: &[(&str, &str)]) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("dir");
    let server = Ledger::start(dir.path(), env);
    let (_, ids) = request_numbers(http, &server.url, n).await;
    let cpu_before = server.cpu_secs();
    let (rate, _) = drive(http, &server.url, "ReleasePhoneNumber", releases(&ids)).await;
    let cpu_us = (server.cpu_secs() - cpu_before) * 1e6 / n as f64;
    server.stop();
    (rate, cpu_us)
}

// ---- the cold part: every server driven by wrk -------------------------------------------------

/// wrk's threads; each drives `CLIENTS / WRK_THREADS` connections.
const WRK_THREADS: usize = 2;
const WRK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wrk/aws_json.lua");

/// One wrk run, as `benches/wrk/aws_json.lua` reports it (times in microseconds).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct WrkRun {
    requests: u64,
    duration_us: u64,
    non_2xx: u64,
    socket_errors: u64,
    p50_us: u64,
    p99_us: u64,
    /// Requests the script built (completed or in flight at the end), and how many of them
    /// carried a body that no earlier request of the run carried.
    sent: u64,
    distinct: u64,
}

impl WrkRun {
    fn rate(&self) -> f64 {
        self.requests as f64 * 1e6 / self.duration_us as f64
    }

    /// More than 1 % of the answers were errors: the figure is not the server's throughput.
    fn failed(&self) -> bool {
        (self.non_2xx + self.socket_errors) * 100 > self.requests
    }
}

fn wrk_installed() -> bool {
    Command::new("wrk").arg("-v").output().is_ok()
}

/// `secs` seconds of wrk, `CLIENTS` connections, POSTing `operation` to `url` with `bodies`:
/// each wrk thread sends its share of them in turn, and starts over when it has sent them all.
fn wrk(url: &str, operation: &str, bodies: &[String], secs: usize) -> WrkRun {
    let started = WrkStarted::spawn(url, operation, bodies, secs, WRK_THREADS, CLIENTS);
    started.finish()
}

/// A wrk process running (its bodies file lives as long as it does).
struct WrkStarted {
    child: Child,
    _bodies: tempfile::NamedTempFile,
    url: String,
    operation: String,
}

impl WrkStarted {
    fn spawn(url: &str, operation: &str, bodies: &[String], secs: usize, threads: usize, connections: usize) -> WrkStarted {
        let mut file = tempfile::NamedTempFile::new().expect("bodies file");
        file.write_all(bodies.join("\n").as_bytes()).expect("write bodies");
        let child = Command::new("wrk")
            .args([format!("-t{threads}"), format!("-c{connections}"), format!("-d{secs}s")])
            .args(["--timeout", "10s", "--latency", "-s", WRK_SCRIPT])
            .args(["-H", &format!("X-Amz-Target: PinpointSMSVoiceV2.{operation}")])
            .args(["-H", "Content-Type: application/x-amz-json-1.0"])
            .args(["-H", &format!("Authorization: {AUTH}")])
            .args([url, "--"])
            .arg(file.path())
            .arg(threads.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wrk");
        WrkStarted {
            child,
            _bodies: file,
            url: url.to_string(),
            operation: operation.to_string(),
        }
    }

    fn finish(self) -> WrkRun {
        let output = self.child.wait_with_output().expect("wrk");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let run: WrkRun = stdout
            .lines()
            .find_map(|l| l.strip_prefix("wrk-result "))
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_else(|| panic!("wrk gave no result:\n{stdout}{}", String::from_utf8_lossy(&output.stderr)));
        if run.failed() {
            eprintln!(
                "\n!!!!! FAILED MEASUREMENT: {} at {}: {} non-2xx answers and {} socket errors in {} requests. wrk said:\n{stdout}",
                self.operation, self.url, run.non_2xx, run.socket_errors, run.requests
            );
        }
        run
    }
}

/// A wrk run against the real server, with the server's CPU time per completed request.
#[derive(Debug, Clone, Copy)]
struct Measured {
    run: WrkRun,
    cpu_us: f64,
}

fn measure(server: &Ledger, operation: &str, bodies: &[String], secs: usize) -> Measured {
    let cpu_before = server.cpu_secs();
    let run = wrk(&server.url, operation, bodies, secs);
    let cpu_us = (server.cpu_secs() - cpu_before) * 1e6 / run.requests.max(1) as f64;
    Measured { run, cpu_us }
}

/// The medians, each on its own, of the runs of one measure.
#[derive(Debug, Clone, Copy)]
struct Figure {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server CPU per request (NaN for the in-process reference).
    cpu_us: f64,
    /// Some run had more than 1 % errors.
    failed: bool,
}

impl Figure {
    fn of(runs: &[Measured]) -> Figure {
        let med = |f: &dyn Fn(&Measured) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Figure {
            rate: med(&|m| m.run.rate()),
            p50_ms: med(&|m| m.run.p50_us as f64 / 1000.0),
            p99_ms: med(&|m| m.run.p99_us as f64 / 1000.0),
            cpu_us: med(&|m| m.cpu_us),
            failed: runs.iter().any(|m| m.run.failed()),
        }
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms", self.rate, self.p50_ms, self.p99_ms)?;
        if self.cpu_us.is_finite() {
            write!(f, ", {:.0} µs server CPU each", self.cpu_us)?;
        }
        if self.failed {
            write!(f, " (FAILED MEASUREMENT: errors)")?;
        }
        Ok(())
    }
}

/// The server measures of the cold part for one build: of one round (`Measured`), or their
/// medians over the rounds (`Figure`).
struct ColdMeasures<T> {
    warm: T,
    request: T,
    cold: T,
}

type ColdRound = ColdMeasures<Measured>;

impl ColdMeasures<Figure> {
    fn of(rounds: &[ColdRound]) -> Self {
        let of = |pick: fn(&ColdRound) -> Measured| Figure::of(&rounds.iter().map(pick).collect::<Vec<_>>());
        ColdMeasures {
            warm: of(|r| r.warm),
            request: of(|r| r.request),
            cold: of(|r| r.cold),
        }
    }
}

/// On a fresh server of `binary` whose live-actor cap holds all `n` numbers: creates them, then
/// with wrk releases half of them (warm: each actor live since its number was created, as in the
/// release part) and measures RequestPhoneNumber (whose new actors push the oldest out, as under
/// the default cap); restarts the server on the same data (every actor passivated, the cap still
/// above what the cold release activates) and releases the other half (cold).
fn cold_round(rt: &tokio::runtime::Runtime, http: &reqwest::Client, binary: &OsStr, n: usize, secs: usize) -> ColdRound {
    let dir = tempfile::tempdir().expect("dir");
    let cap = n.to_string();
    let env = [("PHONE_LEDGER_MAX_LIVE_ACTORS", cap.as_str())];
    let server = Ledger::start_binary(binary, dir.path(), &env);
    let (create_rate, ids) = rt.block_on(request_numbers(http, &server.url, n));
    let (warm_ids, cold_ids) = ids.split_at(n / 2);
    let warm = measure(&server, "ReleasePhoneNumber", &releases(warm_ids), secs);
    let request = measure(&server, "RequestPhoneNumber", &vec![request_body(); WRK_THREADS], secs);
    server.stop();
    let restarted = Instant::now();
    let server = Ledger::start_binary(binary, dir.path(), &env);
    let restart_s = restarted.elapsed().as_secs_f64();
    let cold = measure(&server, "ReleasePhoneNumber", &releases(cold_ids), secs);
    server.stop();
    eprintln!("  {n} numbers created at {create_rate:.0}/s (reqwest client); restart took {restart_s:.2} s");
    for (what, m) in [("warm", &warm), ("cold", &cold)] {
        let run = &m.run;
        eprintln!(
            "  {what} release: {} released, {} ids sent, {} distinct",
            run.requests, run.sent, run.distinct
        );
        if run.sent > run.distinct {
            eprintln!(
                "\n!!!!! {what} release ran out of ids: {} of {} releases repeated an id (refusals); raise PERF_COLD_NUMBERS or lower PERF_WRK_SECS\n",
                run.sent - run.distinct,
                run.sent
            );
        }
    }
    ColdRound { warm, request, cold }
}

/// Whether a target is met, unless a figure it rests on is a failed measurement.
fn verdict(ok: bool, figures: &[Figure]) -> &'static str {
    if figures.iter().any(|f| f.failed) {
        "no verdict (FAILED MEASUREMENT)"
    } else if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Raw handler, warm release, cold release and RequestPhoneNumber, all driven by wrk, in rounds
/// (raw, this build, PERF_BINARY, raw, this build, ...); rows of the table from the medians.
fn cold_part(rt: &tokio::runtime::Runtime, http: &reqwest::Client) -> Vec<[String; 5]> {
    let n = env_usize("PERF_COLD_NUMBERS", 150_000);
    // 4 s: 150,000 numbers last both releases up to 18,750 req/s.
    let secs = env_usize("PERF_WRK_SECS", 4).max(1);
    let rounds = env_usize("PERF_ROUNDS", 3).max(1);
    let mut builds: Vec<(String, OsString)> = vec![("this build".into(), THIS_BUILD.into())];
    if let Some(other) = std::env::var_os("PERF_BINARY") {
        builds.push((format!("PERF_BINARY ({})", other.to_string_lossy()), other));
    }
    let fake_ids: Vec<String> = (0..100_000).map(|i| format!("phone-{i:032x}")).collect();
    let raw_bodies = releases(&fake_ids);
    let mut raw = vec![];
    let mut measured: Vec<Vec<ColdRound>> = builds.iter().map(|_| vec![]).collect();
    for round in 1..=rounds {
        let (url, reference) = start_reference();
        wrk(&url, "ReleasePhoneNumber", &raw_bodies, 1);
        raw.push(Measured {
            run: wrk(&url, "ReleasePhoneNumber", &raw_bodies, secs),
            cpu_us: f64::NAN,
        });
        drop(reference.stop(true));
        eprintln!("round {round}: raw handler (wrk) {}", Figure::of(&raw[round - 1..]));
        for ((name, binary), runs) in builds.iter().zip(&mut measured) {
            runs.push(cold_round(rt, http, binary, n, secs));
            let this = ColdMeasures::of(&runs[round - 1..]);
            eprintln!(
                "round {round}, {name}: warm release {}; cold release {}; RequestPhoneNumber {}",
                this.warm, this.cold, this.request
            );
        }
    }
    let raw = Figure::of(&raw);
    let ColdMeasures { warm, request, cold } = ColdMeasures::of(&measured[0]);
    let of = format!("wrk, {CLIENTS} connections, median of {rounds} rounds of {secs} s");
    let against_warm = |measure: String, figure: Figure, at_least: f64| {
        [
            measure,
            figure.to_string(),
            format!("warm release: {warm}"),
            format!("{:.2}×", figure.rate / warm.rate),
            format!(
                "≥ {at_least}× warm: {}",
                verdict(figure.rate >= at_least * warm.rate, &[figure, warm])
            ),
        ]
    };
    let mut rows = vec![
        against_warm(
            format!("cold ReleasePhoneNumber: server restarted on {n} numbers, every actor passivated ({of})"),
            cold,
            0.8,
        ),
        against_warm(format!("RequestPhoneNumber ({of})"), request, 0.5),
    ];
    let warm_row = |name: &str, warm: Figure, target: String| {
        [
            format!("warm ReleasePhoneNumber, {name}: actors live since creation ({of})"),
            warm.to_string(),
            format!("raw actix-web handler (wrk): {raw}"),
            format!("{:.3}×", warm.rate / raw.rate),
            target,
        ]
    };
    match measured.get(1) {
        Some(other) => {
            let ColdMeasures {
                warm: other_warm,
                request: other_request,
                cold: other_cold,
            } = ColdMeasures::of(other);
            rows.push(warm_row(
                &builds[0].0,
                warm,
                format!(
                    "no slower than PERF_BINARY ({:.2}× of it): {}",
                    warm.rate / other_warm.rate,
                    verdict(warm.rate >= other_warm.rate, &[warm, other_warm])
                ),
            ));
            rows.push(warm_row(&builds[1].0, other_warm, String::new()));
            rows.push([
                format!("{}: cold release / RequestPhoneNumber", builds[1].0),
                format!("cold: {other_cold}"),
                format!("RequestPhoneNumber: {other_request}"),
                format!(
                    "cold {:.2}× warm, request {:.2}× warm",
                    other_cold.rate / other_warm.rate,
                    other_request.rate / other_warm.rate
                ),
                String::new(),
            ]);
        }
        None => rows.push(warm_row(
            &builds[0].0,
            warm,
            "no slower than today's binary: set PERF_BINARY".into(),
        )),
    }
    rows
}

// ---- activation --------------------------------------------------------------------------------

/// Settings of a clustered node on the NATS servers at `servers`.
fn cluster_env(servers: &[String]) -> Vec<(String, String)> {
    let list = format!("[{}]", servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(","));
    let cores = phone_ledger::nats_cluster::cores_per_node(3).to_string();
    vec![
        ("PHONE_LEDGER_STORE__BACKEND".into(), "jetstream".into()),
        ("PHONE_LEDGER_STORE__JETSTREAM__SERVERS".into(), list),
        ("PHONE_LEDGER_STORE__JETSTREAM__NAMESPACE".into(), "BENCH".into()),
        ("PHONE_LEDGER_PAGINATION_SECRET".into(), "shared by the nodes of the bench".into()),
        ("PHONE_LEDGER_QUOTAS__POOLS_PER_ACCOUNT".into(), "100000".into()),
        // Three nodes on one machine share its cores, as `phone-ledger cluster` sets them up.
        ("PHONE_LEDGER_WORKERS".into(), cores.clone()),
        ("PHONE_LEDGER_STORE__JETSTREAM__THREADS".into(), cores),
    ]
}

/// Part 7: the clustered mode's three targets, measured in one run.
fn cluster_part(rt: &tokio::runtime::Runtime, http: &reqwest::Client) -> Vec<[String; 5]> {
    use phone_ledger::loadtest::settle;
    use phone_ledger::nats_cluster::LocalCluster;
    // Enough that no run releases a number twice: one sled node releases ~13k/s here, each
    // clustered node ~2k/s.
    let n = env_usize("PERF_CLUSTER_NUMBERS", 60_000);
    let secs = env_usize("PERF_WRK_SECS", 4);
    let load_secs = env_usize("PERF_CLUSTER_SECS", 20) as u64;
    let mut rows = Vec::new();

    // One sled node, the reference: the same numbers, released by one wrk with 64 connections.
    let sled_dir = tempfile::tempdir().expect("dir");
    let sled = Ledger::start_binary(OsStr::new(THIS_BUILD), sled_dir.path(), &[]);
    let (_, ids) = rt.block_on(request_numbers(http, &sled.url, n));
    let single = measure(&sled, "ReleasePhoneNumber", &releases(&ids), secs);
    sled.stop();

    let dir = tempfile::tempdir().expect("dir");
    let mut nats = LocalCluster::start(dir.path(), 3).expect("a 3-node NATS cluster");
    // Addresses chosen first: each node is told its peers, to route a number's commands to its
    // owner: PERF_CLUSTER_ROUTE=always (the default), contended (only a number this node lost a
    // race for), or off.
    let listens: Vec<String> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        })
        .collect();
    let route = std::env::var("PERF_CLUSTER_ROUTE").unwrap_or_else(|_| "always".into());
    let routing = route != "off";
    let peers = format!(
        "[{}]",
        listens.iter().map(|l| format!("\"http://{l}\"")).collect::<Vec<_>>().join(",")
    );
    let node_dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let nodes: Vec<Ledger> = node_dirs
        .iter()
        .zip(&listens)
        .map(|(d, listen)| {
            let mut env = cluster_env(&nats.client_urls());
            if routing {
                env.push(("PHONE_LEDGER_CLUSTER__PEERS".into(), peers.clone()));
                env.push(("PHONE_LEDGER_CLUSTER__SELF_URL".into(), format!("http://{listen}")));
                env.push(("PHONE_LEDGER_CLUSTER__ROUTE".into(), route.clone()));
            }
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Ledger::start_binary_on(OsStr::new(THIS_BUILD), listen, d.path(), &env)
        })
        .collect();
    eprintln!("cluster: routing to a number's owner: {route}");
    let urls: Vec<String> = nodes.iter().map(|l| l.url.trim_end_matches('/').to_string()).collect();

    // Durable release throughput of the cluster: a sixth of the numbers created through each
    // node, each released through it by a wrk of its own (64 connections in all).
    let per_node: Vec<Vec<String>> = nodes.iter().map(|l| rt.block_on(request_numbers(http, &l.url, n / 6)).1).collect();
    let started: Vec<WrkStarted> = nodes
        .iter()
        .zip(&per_node)
        .map(|(l, ids)| WrkStarted::spawn(&l.url, "ReleasePhoneNumber", &releases(ids), secs, 1, CLIENTS / 3))
        .collect();
    let runs: Vec<WrkRun> = started.into_iter().map(WrkStarted::finish).collect();
    let cluster_rate: f64 = runs.iter().map(WrkRun::rate).sum();
    let cluster_p99 = runs.iter().map(|r| r.p99_us).max().unwrap_or(0) as f64 / 1000.0;
    let failed = runs.iter().any(WrkRun::failed);
    let ratio = cluster_rate / single.run.rate();
    eprintln!(
        "cluster: release {cluster_rate:.0} req/s (p99 {cluster_p99:.1} ms) over 3 nodes; one sled node {:.0} req/s: {ratio:.2}×",
        single.run.rate()
    );
    rows.push([
        "durable ReleasePhoneNumber throughput, 3 nodes on a 3-replica JetStream log (wrk per node, 64 connections in all)".into(),
        format!(
            "{cluster_rate:.0} req/s, p99 {cluster_p99:.1} ms{}",
            if failed { " (FAILED MEASUREMENT: errors)" } else { "" }
        ),
        format!("one sled node (fsync): {:.0} req/s", single.run.rate()),
        format!("{ratio:.2}×"),
        format!("≥ 0.25× — {}", if ratio >= 0.25 && !failed { "met" } else { "NOT MET" }),
    ]);

    // The conflict load over the three nodes.
    let conflict = LoadTestArgs {
        server: Some(urls.join(",")),
        clients: CLIENTS,
        numbers: 100,
        pools: 10,
        hot_fraction: 0.1,
        duration: Some(Duration::from_secs(load_secs)),
        seed: 5,
        quiet: true,
        ..Default::default()
    };
    // The machine's speed drifts by ±15 % within minutes (the same build, minutes apart), so the
    // load runs PERF_ROUNDS times, each on fresh numbers and pools of its own: the median run by
    // p99 is the figure, every run is printed, and every run's verdict must pass.
    let rounds = env_usize("PERF_ROUNDS", 3).max(1);
    let mut runs = Vec::new();
    for round in 0..rounds as u64 {
        let args = LoadTestArgs {
            seed: conflict.seed + 10 * round,
            ..conflict.clone()
        };
        let report = loadtest::run(&args).expect("clustered conflict load");
        for c in report.verdict.checks.iter().filter(|c| !c.violations.is_empty()) {
            eprintln!(
                "!!!!! {}: {} violations, first: {:?}",
                c.name,
                c.violations.len(),
                c.violations.iter().take(3).collect::<Vec<_>>()
            );
        }
        let (p50, p99) = (report.overall.p50_us as f64 / 1000.0, report.overall.p99_us as f64 / 1000.0);
        eprintln!(
            "cluster: conflict load, run {} of {rounds}: {:.0} req/s, p50 {p50:.1} ms, p99 {p99:.1} ms, verdict {}",
            round + 1,
            report.throughput_per_s,
            if report.verdict.ok { "PASS" } else { "FAIL" }
        );
        runs.push((report.throughput_per_s, p50, p99, report.verdict.ok));
    }
    let all_pass = runs.iter().all(|r| r.3);
    let each = runs.iter().map(|r| format!("{:.1}", r.2)).collect::<Vec<_>>().join(" / ");
    runs.sort_by(|a, b| a.2.total_cmp(&b.2));
    let (rate, p50, p99, _) = runs[runs.len() / 2];
    let verdict = if all_pass { "PASS" } else { "FAIL" };
    eprintln!(
        "cluster: conflict load, median run {rate:.0} req/s, p50 {p50:.1} ms, p99 {p99:.1} ms (runs: p99 {each} ms), verdict {verdict}"
    );
    rows.push([
        "conflict load over 3 nodes: p50 / p99 (64 clients, 10 hot numbers; median of the runs by p99)".into(),
        format!("{rate:.0} req/s, p50 {p50:.1} ms, p99 {p99:.1} ms (runs: p99 {each} ms); verdict {verdict}"),
        "—".into(),
        "—".into(),
        format!("PASS, p99 ≤ 50 ms — {}", if all_pass && p99 <= 50.0 { "met" } else { "NOT MET" }),
    ]);

    // The events stream's leader lost a third of the way into the same load: first killed as by
    // a crash (SIGKILL: the others must elect a leader); then, once it is back and caught up,
    // the new leader stopped as for maintenance (SIGTERM: it hands its groups over first).
    for (loss, seed) in [(LeaderLoss::Killed, 6), (LeaderLoss::Stopped, 7)] {
        let args = LoadTestArgs { seed, ..conflict.clone() };
        let (leader, measured) = rt.block_on(leader_lost_under_load(&mut nats, &args, &urls, load_secs, loss));
        rows.push(measured.row(loss));
        if loss == LeaderLoss::Killed {
            nats.restart(leader).expect("the killed server starts again");
            let current = nats.wait_current("BENCH_EVENTS", Duration::from_secs(120));
            eprintln!("cluster: the killed server is back; every replica caught up: {current}");
            rt.block_on(settle(&urls)).expect("the nodes agree");
        }
    }
    for node in nodes {
        node.stop();
    }
    nats.stop();
    rows
}

/// How the events stream's leader server is lost in the failover measurements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LeaderLoss {
    /// SIGTERM, as for maintenance: nats-server hands its Raft groups to caught-up followers.
    Stopped,
    /// SIGKILL, as a crash: a follower campaigns once its election timeout runs out.
    Killed,
}

/// What one leader loss under the conflict load did to the service.
struct Failover {
    /// The longest stretch in which the log took no append that a client was answered for.
    gap: Duration,
    elected_after: Option<Duration>,
    acknowledged: usize,
    ok: bool,
}

impl Failover {
    fn row(&self, loss: LeaderLoss) -> [String; 5] {
        let (what, after) = match loss {
            LeaderLoss::Stopped => ("stopped (SIGTERM, as for maintenance)", "the stop"),
            LeaderLoss::Killed => ("SIGKILLed (a crash)", "the kill"),
        };
        let elected = self.elected_after.map_or("no new leader within 60 s".to_string(), |d| {
            format!("the new leader elected {:.2} s after {after}", d.as_secs_f64())
        });
        eprintln!(
            "cluster: leader {what}: longest gap between answered appends {:?} ({elected}), {} acknowledged, verdict ok: {}",
            self.gap, self.acknowledged, self.ok
        );
        [
            format!("leader failover: events stream's leader {what} under the conflict load"),
            format!(
                "longest gap without an answered append {:.2} s ({elected}); {} acknowledged, verdict {}",
                self.gap.as_secs_f64(),
                self.acknowledged,
                if self.ok { "PASS (none lost)" } else { "FAIL" }
            ),
            "—".into(),
            "—".into(),
            format!(
                "no acknowledged write lost — {}; gap ≤ 2 s — {}",
                if self.ok { "met" } else { "NOT MET" },
                if self.gap <= Duration::from_secs(2) { "met" } else { "NOT MET" }
            ),
        ]
    }
}

/// Runs the conflict load over `urls` and loses the events stream's leader server a third of
/// the way in; checks the verdict over the whole log. Returns which server it was.
async fn leader_lost_under_load(
    nats: &mut phone_ledger::nats_cluster::LocalCluster,
    args: &LoadTestArgs,
    urls: &[String],
    load_secs: u64,
    loss: LeaderLoss,
) -> (usize, Failover) {
    use phone_ledger::loadtest::checker::check_after;
    use phone_ledger::loadtest::{acknowledged_writes, fetch_log, furthest_log_head, longest_append_gap, prepare, race, settle};
    // The log already holds the bench's earlier parts: the verdict is of this run's events, from
    // the head once the log has been quiet for 3 s (a request of an earlier part still on its
    // way, e.g. waiting out an election, would otherwise land in this run unclaimed).
    let mut before = furthest_log_head(urls).await.expect("the log's head");
    let quiet_since = Instant::now();
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(3) && quiet_since.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let head = furthest_log_head(urls).await.expect("the log's head");
        if head != before {
            (before, last_change) = (head, Instant::now());
        }
    }
    let prepared = prepare(args, urls).await.expect("prepare");
    let mut ops = prepared.ops.clone();
    let racing = {
        let args = args.clone();
        tokio::spawn(async move { race(&args, &prepared).await })
    };
    tokio::time::sleep(Duration::from_secs(load_secs / 3)).await;
    let leader = nats.leader_of("BENCH_EVENTS").expect("a leader");
    let lost_at = Instant::now();
    // When the servers report another leader (polled on their monitoring ports): the part of
    // the gap that is the server's own election or hand-over.
    let elected_after = tokio::task::block_in_place(|| {
        match loss {
            LeaderLoss::Stopped => nats.shut_down(leader, Duration::from_secs(30)),
            LeaderLoss::Killed => nats.kill(leader),
        }
        nats.new_leader_after("BENCH_EVENTS", leader, lost_at, Duration::from_secs(60))
    });
    let (load_ops, _) = racing.await.expect("task").expect("race");
    let acknowledged = acknowledged_writes(&load_ops);
    let prepared_ops = ops.len();
    ops.extend(load_ops);
    settle(urls).await.expect("the nodes agree");
    let log = fetch_log(&urls[0]).await.expect("log");
    let gap = longest_append_gap(&log, &ops[prepared_ops..]);
    let verdict = check_after(&log, &ops, before);
    for c in verdict.checks.iter().filter(|c| !c.violations.is_empty()) {
        eprintln!(
            "!!!!! {}: {} violations, first: {:?}",
            c.name,
            c.violations.len(),
            c.violations.iter().take(3).collect::<Vec<_>>()
        );
    }
    let failover = Failover {
        gap,
        elected_after,
        acknowledged,
        ok: verdict.ok,
    };
    (leader, failover)
}

fn number(id: &str) -> PhoneNumber {
    PhoneNumber::example(id, "111122223333", "us-east-1")
}

/// Writes a stream of `events` events in chunks, with the snapshot an actor would have left
/// (every `snapshot_every` events).
fn build_stream(store: &Store, rt: &actix_rt::SystemRunner, id: &str, events: u64, snapshot_every: u64) {
    let mut state = PhoneNumberState::default();
    let mut version = 0;
    while version < events {
        let chunk = (events - version).min(1_000);
        let batch: Vec<PhoneNumberEvent> = (0..chunk)
            .map(|i| match version + i {
                0 => PhoneNumberEvent::PhoneNumberRequested(Box::new(number(id))),
                v => PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
                    deletion_protection_enabled: Some(v % 2 == 0),
                    ..Default::default()
                }),
            })
            .collect();
        for e in &batch {
            state = state.evolve(e);
        }
        let to = version + chunk;
        let snapshot_at = to / snapshot_every * snapshot_every;
        let snapshot = (snapshot_at > version && snapshot_at == to).then(|| snapshot_of(&state, to).expect("snapshot"));
        let meta = AppendMeta::direct("111122223333", "us-east-1", "bench", "Bench/Update");
        let request = AppendRequest {
            snapshot,
            ..AppendRequest::plain(id, version, meta, pending_events(&batch).expect("events"))
        };
        rt.block_on(store.append(request)).expect("append");
        version = to;
    }
}

/// Median time from starting a fresh actor to its first answer.
fn activation_ms(store: &Store, rt: &actix_rt::SystemRunner, id: &str, settings: ActorSettings, rounds: usize) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            rt.block_on(async {
                let addr = AggregateActor::<PhoneNumberState>::with_settings(id.to_string(), store.clone(), settings).start();
                addr.send(GetState::<PhoneNumberState>::default())
                    .await
                    .expect("mailbox")
                    .expect("state")
            });
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

// ---- main --------------------------------------------------------------------------------------

// ---- followers of the live feed -----------------------------------------------------------------

/// The number of events in the log of the server at `base`.
fn events_in_log(rt: &tokio::runtime::Runtime, http: &reqwest::Client, base: &str) -> u64 {
    rt.block_on(async {
        let health: Value = http
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        health["Events"].as_u64().unwrap_or(0)
    })
}

/// A follower of the live feed from position `after`, counting what it receives into `received`.
fn follow(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    base: &str,
    after: u64,
    received: &Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (url, http, received) = (
        format!("{base}/audit/events?Follow=true&After={after}"),
        http.clone(),
        received.clone(),
    );
    rt.spawn(async move {
        use futures_util::StreamExt;
        let Ok(resp) = http.get(url).header("Authorization", AUTH).send().await else {
            return;
        };
        let mut body = resp.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            received.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    })
}

/// Durable UpdatePhoneNumber throughput (wrk, 64 connections, `PERF_WRK_SECS`) with 0, 50 and
/// 500 followers of the live feed connected at the head, each draining its server-sent events:
/// what followers cost the writers.
fn followers_part(rt: &tokio::runtime::Runtime, http: &reqwest::Client) -> Vec<[String; 5]> {
    let secs = env_usize("PERF_WRK_SECS", 4);
    let dir = tempfile::tempdir().expect("dir");
    let server = Ledger::start(
        dir.path(),
        &[
            ("PHONE_LEDGER_MAX_FOLLOWERS", "1000"),
            ("PHONE_LEDGER_MAX_FOLLOWERS_PER_ACCOUNT", "1000"),
        ],
    );
    let (_, ids) = rt.block_on(request_numbers(http, &server.url, 20_000));
    let updates: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"PhoneNumberId": id, "DeletionProtectionEnabled": i % 2 == 0}).to_string())
        .collect();
    let base = server.url.trim_end_matches('/').to_string();
    let mut measured = Vec::new();
    for followers in [0usize, 50, 500] {
        let after = events_in_log(rt, http, &base);
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks: Vec<_> = (0..followers).map(|_| follow(rt, http, &base, after, &received)).collect();
        std::thread::sleep(Duration::from_secs(1));
        let run = measure(&server, "UpdatePhoneNumber", &updates, secs);
        let bytes = received.load(std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        eprintln!(
            "followers {followers}: UpdatePhoneNumber {:.0} req/s, p99 {:.2} ms, {:.0} µs server CPU each; followers received {:.1} MiB",
            run.run.rate(),
            run.run.p99_us as f64 / 1000.0,
            run.cpu_us,
            bytes as f64 / 1048576.0
        );
        measured.push((followers, run));
        std::thread::sleep(Duration::from_secs(1));
    }
    // Followers catching up from position 0 on the whole log (every event written above), while
    // reads are measured: their pages are read off the HTTP workers, so reads should not wait.
    let describe = vec![json!({"MaxResults": 10}).to_string(); 2];
    let reads_alone = measure(&server, "DescribePhoneNumbers", &describe, secs);
    let events = events_in_log(rt, http, &base);
    let unread = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let catching_up: Vec<_> = (0..20).map(|_| follow(rt, http, &base, 0, &unread)).collect();
    let reads_with = measure(&server, "DescribePhoneNumbers", &describe, secs);
    for t in catching_up {
        t.abort();
    }
    eprintln!(
        "DescribePhoneNumbers alone: {:.0} req/s, p99 {:.2} ms; with 20 followers catching up from 0 on {} events: {:.0} req/s, p99 {:.2} ms, {} errors",
        reads_alone.run.rate(),
        reads_alone.run.p99_us as f64 / 1000.0,
        events,
        reads_with.run.rate(),
        reads_with.run.p99_us as f64 / 1000.0,
        reads_with.run.non_2xx + reads_with.run.socket_errors
    );
    server.stop();
    let alone = measured[0].1.run.rate();
    measured[1..]
        .iter()
        .map(|(followers, m)| {
            [
                format!("durable UpdatePhoneNumber (wrk, 64 connections) with {followers} followers of the live feed at the head"),
                format!("{:.0} req/s, p99 {:.2} ms", m.run.rate(), m.run.p99_us as f64 / 1000.0),
                format!("no followers: {alone:.0} req/s"),
                format!("{:.2}×", m.run.rate() / alone),
                "writes not held up by followers".into(),
            ]
        })
        .chain(std::iter::once([
            format!(
                "DescribePhoneNumbers (wrk, 64 connections) while 20 followers catch up from position 0 on {} events",
                events
            ),
            format!(
                "{:.0} req/s, p99 {:.2} ms",
                reads_with.run.rate(),
                reads_with.run.p99_us as f64 / 1000.0
            ),
            format!(
                "no followers: {:.0} req/s, p99 {:.2} ms",
                reads_alone.run.rate(),
                reads_alone.run.p99_us as f64 / 1000.0
            ),
            format!("{:.2}×", reads_with.run.rate() / reads_alone.run.rate()),
            "reads not held up by followers catching up".into(),
        ]))
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we use. Only run the
    // (long) measurements when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("performance: run with `cargo bench --bench performance`");
        return;
    }
    // Fewer than `max_live_actors` (10,000 by default): every release finds its actor live, in
    // both server configurations compared.
    let releases_n = env_usize("PERF_RELEASES", 8_000);
    let million = env_usize("PERF_NUMBERS", 1_000_000);
    let mut rows: Vec<[String; 5]> = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().expect("client");

    let parts = std::env::var("PERF_PARTS").unwrap_or_else(|_| "release,activation,conflict,overload,memory,cold,followers,cluster".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);

    // 1. Durable release throughput vs the raw handler and vs flush-per-event. The machine is
    //    noisy (±15 % between identical runs), so the three are measured in turn, PERF_ROUNDS
    //    times, and the medians compared.
    if part("release") {
        let rounds = env_usize("PERF_ROUNDS", 3).max(1);
        let (mut raw, mut grouped, mut grouped_cpu, mut per_event) = (vec![], vec![], vec![], vec![]);
        for round in 1..=rounds {
            let (reference_url, reference) = start_reference();
            // The reference is stateless: it gets a warm-up and a longer run (about a second),
            // so that its figure is not a fraction of a second's worth of noise.
            let fake_ids: Vec<String> = (0..releases_n.max(50_000)).map(|i| format!("phone-{i:032x}")).collect();
            rt.block_on(drive(&http, &reference_url, "ReleasePhoneNumber", releases(&fake_ids[..2_000])));
            raw.push(
                rt.block_on(drive(&http, &reference_url, "ReleasePhoneNumber", releases(&fake_ids)))
                    .0,
            );
            drop(reference.stop(true));
            let (rate, cpu) = rt.block_on(ledger_release_rate(&http, releases_n, &[]));
            grouped.push(rate);
            grouped_cpu.push(cpu);
            let per_event_n = (releases_n / 5).max(1_000);
            per_event.push(
                rt.block_on(ledger_release_rate(
                    &http,
                    per_event_n,
                    &[("PHONE_LEDGER_STORE__SLED__MAX_BATCH", "1")],
                ))
                .0,
            );
            eprintln!(
                "round {round}: raw handler {:.0} req/s; phone-ledger (group commit, fsync) {:.0} req/s, server CPU {:.0} µs per release; one flush per event {:.0} req/s",
                raw[round - 1],
                grouped[round - 1],
                grouped_cpu[round - 1],
                per_event[round - 1]
            );
        }
        let (raw_rate, grouped_rate, cpu, per_event_rate) = (median(&raw), median(&grouped), median(&grouped_cpu), median(&per_event));
        let each = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        rows.push([
            format!("durable ReleasePhoneNumber, 64 clients, {releases_n} numbers that don't conflict (median of {rounds} rounds)"),
            format!("{grouped_rate:.0} req/s ({cpu:.0} µs server CPU each; rounds: {})", each(&grouped)),
            format!("raw actix-web handler: {raw_rate:.0} req/s (rounds: {})", each(&raw)),
            format!("{:.2}×", grouped_rate / raw_rate),
            "≥ 0.3×".into(),
        ]);
        rows.push([
            "same, vs the server flushing once per event".into(),
            format!("{grouped_rate:.0} req/s"),
            format!("max_batch = 1: {per_event_rate:.0} req/s (rounds: {})", each(&per_event)),
            format!("{:.1}×", grouped_rate / per_event_rate),
            "≥ 4×".into(),
        ]);
    }

    // 2. Activation: 100,000 events vs 100.
    if part("activation") {
        let dir = tempfile::tempdir().expect("dir");
        let system = actix_rt::System::new();
        let store = StoreConfig::embedded(Durability::Relaxed, 256).open(dir.path()).expect("store");
        let (long, short, worst) = (
            format!("phone-{:032x}", 1),
            format!("phone-{:032x}", 2),
            format!("phone-{:032x}", 3),
        );
        build_stream(&store, &system, &long, 100_000, 100);
        build_stream(&store, &system, &short, 100, 100);
        // The longest tail a snapshot leaves: 99 events after the last multiple of 100.
        build_stream(&store, &system, &worst, 100_099, 100);
        let settings = ActorSettings {
            snapshot_every: 100,
            idle_timeout: None,
        };
        let long_ms = activation_ms(&store, &system, &long, settings, 201);
        let short_ms = activation_ms(&store, &system, &short, settings, 201);
        let worst_ms = activation_ms(&store, &system, &worst, settings, 201);
        // For context: what snapshots save (full replay of the long stream).
        system.block_on(store.clear_snapshots()).expect("clear");
        let full_ms = activation_ms(&store, &system, &long, settings, 5);
        system.block_on(store.close()).expect("close");
        eprintln!("activation: 100k events {long_ms:.3} ms, 100 events {short_ms:.3} ms, 100,099 events {worst_ms:.3} ms, 100k without snapshot {full_ms:.1} ms");
        rows.push([
            "activation of a number with 100,000 events (median)".into(),
            format!("{long_ms:.3} ms"),
            format!(
                "100 events: {short_ms:.3} ms (100,099 events, longest tail: {worst_ms:.3} ms; 100,000 without snapshots: {full_ms:.0} ms)"
            ),
            format!("{:.2}×", long_ms / short_ms),
            "≤ 2×".into(),
        ]);
    }

    // 4. Conflict load: 64 clients, 10 hot numbers (before the big run, on a fresh server).
    if part("conflict") {
        let dir = tempfile::tempdir().expect("dir");
        let server = Ledger::start(dir.path(), &[]);
        let args = LoadTestArgs {
            server: Some(server.url.trim_end_matches('/').to_string()),
            clients: 64,
            numbers: 100,
            pools: 5,
            hot_fraction: 0.1,
            duration: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let report = loadtest::run(&args).expect("load test");
        server.stop();
        let o = &report.overall;
        eprintln!(
            "conflict load: {:.0} req/s, p50 {} µs, p99 {} µs, verdict {}",
            report.throughput_per_s, o.p50_us, o.p99_us, report.verdict.ok
        );
        rows.push([
            "conflict load, 64 clients, 10 hot numbers: p50 / p99".into(),
            format!("{:.2} / {:.2} ms", o.p50_us as f64 / 1000.0, o.p99_us as f64 / 1000.0),
            format!(
                "{:.0} req/s, verdict {}",
                report.throughput_per_s,
                if report.verdict.ok { "PASS" } else { "FAIL" }
            ),
            "".into(),
            "p99 ≤ 10 ms".into(),
        ]);
    }

    // 5. Overload: ten times the clients against a server admitting 128 requests at once.
    if part("overload") {
        let dir = tempfile::tempdir().expect("dir");
        let server = Ledger::start(dir.path(), &[("PHONE_LEDGER_MAX_IN_FLIGHT", "128")]);
        let (_, ids) = rt.block_on(request_numbers(&http, &server.url, 2_000));
        let updates = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| json!({"PhoneNumberId": ids[i % ids.len()], "DeletionProtectionEnabled": i % 2 == 0}).to_string())
                .collect()
        };
        let (normal_rate, normal_rss) = rt.block_on(overload(&http, &server, 64, updates(100_000)));
        let (over_rate, over_rss) = rt.block_on(overload(&http, &server, 640, updates(400_000)));
        server.stop();
        eprintln!(
            "overload: 64 clients {normal_rate:.0} ok/s, RSS {normal_rss:.0} MiB; 640 clients {over_rate:.0} ok/s, RSS {over_rss:.0} MiB"
        );
        rows.push([
            "memory under 10× overload (640 clients vs 64, max_in_flight 128)".into(),
            format!("{over_rss:.0} MiB at 640 clients"),
            format!("{normal_rss:.0} MiB at 64 clients; served {over_rate:.0} vs {normal_rate:.0} updates/s, the rest throttled"),
            format!("{:.2}×", over_rss / normal_rss),
            "flat".into(),
        ]);
    }

    // 3. Memory with a million numbers, each touched once.
    if part("memory") {
        let dir = tempfile::tempdir().expect("dir");
        let server = Ledger::start(dir.path(), &[]);
        let (create_rate, ids) = rt.block_on(request_numbers(&http, &server.url, million));
        let touches: Vec<String> = ids
            .iter()
            .map(|id| json!({"PhoneNumberId": id, "DeletionProtectionEnabled": false}).to_string())
            .collect();
        let (touch_rate, _) = rt.block_on(drive(&http, &server.url, "UpdatePhoneNumber", touches));
        let rss = server.rss_mib();
        eprintln!("{million} numbers: created at {create_rate:.0}/s, touched at {touch_rate:.0}/s, RSS {rss:.0} MiB");
        server.stop();
        rows.push([
            format!("resident memory after creating {million} numbers and touching each once"),
            format!("{rss:.0} MiB"),
            format!("created at {create_rate:.0}/s, updated at {touch_rate:.0}/s (durable)"),
            "".into(),
            "≤ 1024 MiB".into(),
        ]);
    }

    // 6. The cold path, and RequestPhoneNumber, against warm release and the raw handler, every
    //    server driven by wrk.
    if part("cold") {
        if wrk_installed() {
            rows.extend(cold_part(&rt, &http));
        } else {
            eprintln!("\n!!!!! cold part SKIPPED: wrk is not installed (Debian: apt-get install wrk)\n");
            rows.push([
                "cold release, RequestPhoneNumber, warm release vs raw (wrk)".into(),
                "SKIPPED: wrk is not installed".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
    }

    if part("followers") {
        if wrk_installed() {
            rows.extend(followers_part(&rt, &http));
        } else {
            eprintln!("\n!!!!! followers part SKIPPED: wrk is not installed (Debian: apt-get install wrk)\n");
        }
    }

    if part("cluster") {
        if !wrk_installed() || !phone_ledger::nats_cluster::nats_server_available() {
            eprintln!("\n!!!!! cluster part SKIPPED: needs wrk and nats-server (Debian: apt-get install wrk nats-server)\n");
            rows.push([
                "clustered mode".into(),
                "SKIPPED (wrk or nats-server missing)".into(),
                "—".into(),
                "—".into(),
                "—".into(),
            ]);
        } else {
            rows.extend(cluster_part(&rt, &http));
        }
    }

    println!();
    println!("| measure | phone-ledger | reference (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }
}
