//! Shared helpers for the black-box tests: a real server on an ephemeral port with a temporary
//! data directory, and the official AWS SDK for Rust pointed at it.

#![allow(dead_code)]

pub mod nats;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use aws_sdk_pinpointsmsvoicev2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_pinpointsmsvoicev2::types::{MessageType, NumberCapability, RequestableNumberType};
use aws_sdk_pinpointsmsvoicev2::Client;
use phone_ledger::config::Config;
use phone_ledger::server::RunningServer;

pub const ACCOUNT: &str = "111122223333";
pub const OTHER_ACCOUNT: &str = "444455556666";
pub const REGION: &str = "us-east-1";

/// A running server and the directory that holds its log.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    /// The configuration it runs with (kept for restarts).
    pub config: Config,
}

pub fn config_for(dir: &Path) -> Config {
    let mut config = Config::defaults_with_data_dir(dir).expect("default config");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.workers = 2;
    config
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config_for(dir.path());
        tweak(&mut config);
        let server = RunningServer::spawn(config.clone()).expect("server starts");
        TestServer {
            server: Some(server),
            dir,
            config,
        }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("running").url()
    }

    /// Graceful stop, then a new server on the same data directory.
    pub fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().expect("clean stop");
        }
        let server = RunningServer::spawn(self.config.clone()).expect("server restarts");
        self.server = Some(server);
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().expect("clean stop");
        }
    }

    /// An SDK client whose SigV4 access key is `account`.
    pub fn client(&self, account: &str) -> Client {
        client_for(&self.url(), account, REGION)
    }
}

pub fn client_for(url: &str, account: &str, region: &str) -> Client {
    let config = aws_sdk_pinpointsmsvoicev2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(account, "secret", None, None, "test"))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

/// Starts the real `phone-ledger serve` binary on an ephemeral port; returns it and its address
/// (read from the "listening" log line).
pub fn spawn_binary(data_dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    spawn_binary_on("127.0.0.1:0", data_dir, env)
}

/// [`spawn_binary`] on a given address (a node restarted where its clients expect it).
pub fn spawn_binary_on(listen: &str, data_dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    spawn_binary_with(listen, data_dir, env, |_| {})
}

/// [`spawn_binary_on`], with the command adjusted first (limits for the child, say).
pub fn spawn_binary_with(listen: &str, data_dir: &Path, env: &[(&str, &str)], adjust: impl FnOnce(&mut Command)) -> (Child, String) {
    let (child, addr, _, _) = spawn_binary_inner(listen, data_dir, env, adjust, false);
    (child, addr)
}

/// The lines a server logs, and the thread that collects them (it ends once the server has
/// exited and its last line is in).
pub type Logged = (std::sync::Arc<std::sync::Mutex<Vec<String>>>, std::thread::JoinHandle<()>);

/// [`spawn_binary`], keeping the lines it logs (after the "listening" one) for the test to read.
pub fn spawn_binary_logged(data_dir: &Path, env: &[(&str, &str)]) -> (Child, String, Logged) {
    let (child, addr, kept, drain) = spawn_binary_inner("127.0.0.1:0", data_dir, env, |_| {}, true);
    (child, addr, (kept, drain))
}

fn spawn_binary_inner(
    listen: &str,
    data_dir: &Path,
    env: &[(&str, &str)],
    adjust: impl FnOnce(&mut Command),
    keep: bool,
) -> (
    Child,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    let mut command = serve_command(listen, data_dir, env);
    adjust(&mut command);
    let (child, addr, kept, drain) = try_spawn_inner(command, keep);
    (child, addr.expect("the server logs its address before exiting"), kept, drain)
}

/// [`spawn_binary_on`], or `None` if the server exits before it listens (its address taken).
pub fn try_spawn_binary_on(listen: &str, data_dir: &Path, env: &[(&str, &str)]) -> Option<(Child, String)> {
    let (mut child, addr, _, _) = try_spawn_inner(serve_command(listen, data_dir, env), false);
    match addr {
        Some(addr) => Some((child, addr)),
        None => {
            let _ = child.wait();
            None
        }
    }
}

/// `phone-ledger serve` on `listen` over `data_dir`, its log on a pipe.
fn serve_command(listen: &str, data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_phone-ledger"));
    command
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // A test that panics before it stops its server leaves none running behind it.
    phone_ledger::nats_cluster::die_with_parent(&mut command);
    command
}

/// How long a server may take to log its address. A server that runs without ever saying it
/// (a changed log line, colour codes around it) fails its test instead of hanging it.
const LISTENING_WITHIN: std::time::Duration = std::time::Duration::from_secs(180);

/// Starts `command` (a `serve`) and reads its log up to the "listening" line: its address, or
/// `None` if it exited first.
#[allow(clippy::type_complexity)]
fn try_spawn_inner(
    mut command: Command,
    keep: bool,
) -> (
    Child,
    Option<String>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    let mut child = command.spawn().expect("spawn phone-ledger");
    let stdout = child.stdout.take().expect("stdout");
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let before = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (sink, seen) = (kept.clone(), before.clone());
    let (found, address) = std::sync::mpsc::channel();
    // One thread reads the whole log: up to the address (kept to show if it never comes), then
    // draining it so the server never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let addr = lines.by_ref().find_map(|line| {
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string);
            seen.lock().expect("log").push(line);
            addr
        });
        let _ = found.send(addr);
        for line in lines {
            if keep {
                sink.lock().expect("log").push(line);
            }
        }
    });
    let addr = match address.recv_timeout(LISTENING_WITHIN) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server logged no address (addr=...) within {LISTENING_WITHIN:?}; its log: {:?}",
                before.lock().expect("log")
            );
        }
    };
    (child, addr, kept, drain)
}

/// Sends a signal (`TERM`, `INT`, `KILL`) to a child process.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Requests a US long code with SMS and VOICE; returns its id and E.164 number.
pub async fn request_with_number(client: &Client, message_type: MessageType) -> (String, String) {
    let out = client
        .request_phone_number()
        .iso_country_code("US")
        .message_type(message_type)
        .number_capabilities(NumberCapability::Sms)
        .number_capabilities(NumberCapability::Voice)
        .number_type(RequestableNumberType::LongCode)
        .send()
        .await
        .expect("RequestPhoneNumber");
    (
        out.phone_number_id().expect("id").to_string(),
        out.phone_number().expect("number").to_string(),
    )
}

/// Requests a US long code; returns its id.
pub async fn request(client: &Client, message_type: MessageType) -> String {
    request_with_number(client, message_type).await.0
}

/// Creates a transactional pool with `identity` as its first member; returns its id.
pub async fn create_pool(client: &Client, identity: &str) -> String {
    client
        .create_pool()
        .origination_identity(identity)
        .message_type(MessageType::Transactional)
        .send()
        .await
        .expect("CreatePool")
        .pool_id()
        .expect("pool id")
        .to_string()
}

/// Two new numbers and a pool holding both: (first, second, pool).
#[allow(dead_code)]
pub async fn pool_of_two(client: &Client) -> (String, String, String) {
    let a = request(client, MessageType::Transactional).await;
    let b = request(client, MessageType::Transactional).await;
    let pool = create_pool(client, &a).await;
    client
        .associate_origination_identity()
        .pool_id(&pool)
        .origination_identity(&b)
        .send()
        .await
        .expect("associate");
    (a, b, pool)
}

/// The log of a stopped server, opened for reading and writing through the storage port (for
/// tests that write a stream directly or inspect one).
pub fn open_log(dir: &Path) -> phone_ledger::store::Store {
    phone_ledger::store::StoreConfig::embedded(phone_ledger::store::Durability::Flush, 64)
        .open(dir)
        .expect("open the log")
}

/// The log of a stopped server, read-only, as the offline audit tools open it.
pub fn open_log_read_only(dir: &Path) -> phone_ledger::store::Store {
    phone_ledger::store::StoreConfig::open_offline(dir).expect("open the log read-only")
}

/// Set by `.ci/run`: a test whose external program is missing fails instead of skipping, so CI
/// can never pass by skipping.
pub const REQUIRE_TOOLS: &str = "PHONE_LEDGER_REQUIRE_TOOLS";

/// Whether an external program a test needs is here. When it is not, says so loudly and returns
/// `false` (the test then skips), or fails the test when [`REQUIRE_TOOLS`] is set.
pub fn tool_available(what: &str, present: bool, install: &str) -> bool {
    if present {
        return true;
    }
    let message = format!("{what} is not available ({install}); .ci/run installs it");
    if std::env::var_os(REQUIRE_TOOLS).is_some_and(|v| v != "0") {
        panic!("{message}, and {REQUIRE_TOOLS} is set");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// The value of the sample `name{labels}` in Prometheus exposition text (labels as the exposition
/// writes them), 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the server at `base` says of itself (`/health`).
pub async fn health(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json")
}

/// How many events the server at `base` has in its log (its `/health`).
pub async fn events_in_log(base: &str) -> u64 {
    health(base).await["Events"].as_u64().expect("Events")
}

/// Appends `event` to the stream `id` the way its actor would (the same index changes and unique
/// claims, at the stream's version, recorded as `command` with `command_input`), straight into
/// the log: what a node that died, or is still busy, between two steps leaves there.
pub async fn append_as_an_actor_would<A: phone_ledger::projection::Projected>(
    store: &dyn phone_ledger::store::EventStore,
    id: &str,
    event: A::Event,
    request_id: &str,
    command: &str,
    command_input: serde_json::Value,
) {
    use phone_ledger::store::{AppendMeta, AppendRequest};
    let envelopes = store.read_stream(id, 1, usize::MAX).await.expect("read");
    let before: A = phone_ledger::rehydrate::replay(&envelopes).expect("replay");
    let after = before.clone().evolve(&event);
    let meta = AppendMeta {
        command_input,
        ..AppendMeta::direct(ACCOUNT, REGION, request_id, command)
    };
    store
        .append(AppendRequest {
            index_ops: A::index_ops(&before, &after),
            unique_claims: A::unique_claims(&before, &after),
            ..AppendRequest::plain(
                id,
                envelopes.len() as u64,
                meta,
                phone_ledger::codec::pending_events(&[event]).expect("events"),
            )
        })
        .await
        .expect("append");
}
