//! `phone-ledger cluster`, the real binary as a person runs it: three real NATS servers and three
//! phone-ledger nodes on loopback ports. A process killed under it is reported and started again;
//! Ctrl-C stops every process it started.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use phone_ledger::nats_cluster::nats_server_available;

use common::{client_for, ACCOUNT, REGION};

/// The lines the command writes to standard error, as they come.
#[derive(Clone, Default)]
struct Said(Arc<Mutex<Vec<String>>>);

impl Said {
    fn collect(from: impl Read + Send + 'static) -> Self {
        let said = Said::default();
        let lines = said.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                eprintln!("cluster: {line}");
                lines.lock().expect("lines").push(line);
            }
        });
        said
    }

    /// The first line starting with `prefix`, waiting for it up to `within`.
    fn line(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.0.lock().expect("lines").iter().find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no line starting {prefix:?} within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The process id a line names as `pid N`.
fn pid_in(line: &str) -> u32 {
    let (_, rest) = line.split_once("pid ").unwrap_or_else(|| panic!("no pid in {line:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no pid in {line:?}"))
}

fn alive(pid: u32) -> bool {
    // A zombie is not running; its parent has yet to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
}

fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Whether `url` answers 200 (with a body containing `ok`, for a NATS health check).
fn healthy(url: &str) -> bool {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(1)).build();
    agent
        .get(url)
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .is_some_and(|b| b.contains("ok"))
}

fn wait_healthy(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !healthy(url) {
        assert!(Instant::now() < deadline, "{url} not healthy within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A first port for the three nodes and one for the three NATS servers (client ports; cluster
/// ports 2000 more, monitor ports 4000 more), each of the twelve free when looked at.
fn free_bases() -> (u16, u16) {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    for attempt in 0..200u16 {
        let seed = (std::process::id() as u16).wrapping_add(attempt.wrapping_mul(7919));
        let (port, nats) = (20_000 + seed % 9_000, 30_000 + seed % 3_000);
        let all = (0..3).flat_map(|i| [port + i, nats + i, nats + 2000 + i, nats + 4000 + i]);
        if all.into_iter().all(free) {
            return (port, nats);
        }
    }
    panic!("no free ports for the cluster");
}

/// A request through node `port`, answered from the shared log.
fn request_a_number(port: u16) -> String {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = client_for(&format!("http://127.0.0.1:{port}"), ACCOUNT, REGION);
    runtime.block_on(common::request(&client, MessageType::Transactional))
}

struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Its processes die with it (they are started with a parent-death signal).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Given `phone-ledger cluster` running, when a NATS server and then a phone-ledger node are
/// SIGKILLed, then each exit is reported and the process is started again and serves; when it
/// is sent SIGINT (Ctrl-C), then it exits 0 and no process it started is left.
#[test]
fn the_cluster_command_starts_again_what_is_killed_under_it_and_stops_everything() {
    if !common::tool_available("nats-server", nats_server_available(), "apt-get install -y nats-server") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (port, nats_port) = free_bases();
    let mut child = Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .args(["cluster", "--dir"])
        .arg(dir.path())
        .args(["--port", &port.to_string(), "--nats-port", &nats_port.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A job of its own, as a shell starts it: Ctrl-C signals its process group.
        .process_group(0)
        .spawn()
        .expect("phone-ledger cluster");
    // The nodes' logs (standard output) are read, so that a full pipe never stops them.
    let logs = Said::collect(child.stdout.take().expect("stdout"));
    let said = Said::collect(child.stderr.take().expect("stderr"));
    let supervisor = Supervisor(child);
    let health = |i: u16| format!("http://127.0.0.1:{}/health", port + i);
    for i in 0..3 {
        wait_healthy(&health(i), Duration::from_secs(120));
    }
    said.line("A process that exits is started again after 2 s", Duration::from_secs(5));
    request_a_number(port);

    // A NATS server crashes.
    let server = pid_in(&said.line("NATS server 2: ", Duration::from_secs(1)));
    kill(server, "KILL");
    let exit = said.line(&format!("NATS server 2 (pid {server}) "), Duration::from_secs(10));
    assert!(exit.ends_with("killed by signal 9 (SIGKILL); starting it again in 2 s"), "{exit}");
    let again = pid_in(&said.line("NATS server 2 started again (pid ", Duration::from_secs(10)));
    assert_ne!(again, server);
    wait_healthy(
        &format!("http://127.0.0.1:{}/healthz?js-enabled-only=true", nats_port + 4001),
        Duration::from_secs(30),
    );

    // A phone-ledger node crashes: started again, it serves from the shared log.
    let node = pid_in(&said.line("phone-ledger node 3: ", Duration::from_secs(1)));
    kill(node, "KILL");
    said.line(
        &format!("phone-ledger node 3 (pid {node}) killed by signal 9 (SIGKILL)"),
        Duration::from_secs(10),
    );
    let node_again = pid_in(&said.line("phone-ledger node 3 started again (pid ", Duration::from_secs(10)));
    wait_healthy(&health(2), Duration::from_secs(60));
    request_a_number(port + 2);

    // Ctrl-C (the terminal signals the job's process group): everything it started is stopped
    // cleanly by it (not by the kernel's parent-death signal), and nothing more is started.
    let mut started: Vec<u32> = (1..=3)
        .map(|i| pid_in(&said.line(&format!("NATS server {i}: "), Duration::ZERO)))
        .collect();
    started.extend((1..=3).map(|i| pid_in(&said.line(&format!("phone-ledger node {i}: "), Duration::ZERO))));
    started.extend([again, node_again]);
    let mut supervisor = supervisor;
    let group = format!("-{}", supervisor.0.id());
    let status = Command::new("kill").args(["-s", "INT", "--", &group]).status().expect("kill");
    assert!(status.success(), "kill -INT {group}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = supervisor.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "phone-ledger cluster did not stop within 60 s of SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let left: Vec<u32> = started.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "still running after the stop: {left:?}");
    assert!(!healthy(&health(0)));
    let lines = said.0.lock().expect("lines").clone();
    let after_stop: Vec<&String> = lines.iter().skip_while(|l| !l.starts_with("stopping")).collect();
    assert!(
        !after_stop.is_empty()
            && after_stop
                .iter()
                .all(|l| !l.contains("started again") && !l.contains("exited") && !l.contains("killed")),
        "{after_stop:?}"
    );
    // Each node still running stopped on its SIGTERM (node 3's first process was killed).
    let stopped = logs
        .0
        .lock()
        .expect("lines")
        .iter()
        .filter(|l| l.contains("phone-ledger stopped; log closed"))
        .count();
    assert_eq!(stopped, 3, "each node stops cleanly");
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("nats-{i}")).join("nats.log")).expect("nats.log");
        assert!(log.contains("Initiating Shutdown"), "NATS server {i} was shut down, not killed");
    }
}
