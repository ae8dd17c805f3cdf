//! The real binary: `phone-ledger serve` logs the address it listens on, serves the SDK, and
//! stops cleanly on SIGTERM and SIGINT (exit 0, log flushed, data readable afterwards).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use aws_sdk_pinpointsmsvoicev2::types::{MessageType, NumberCapability, RequestableNumberType};
use phone_ledger::config::Durability;
use phone_ledger::store::EventStore;

fn spawn(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn phone-ledger");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server logs before exiting").expect("line");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("addr").trim_matches('\u{1b}').to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().expect("dir");
    let mut ids = Vec::new();
    for sig in ["TERM", "INT"] {
        let (mut child, addr) = spawn(dir.path());
        let c = common::client_for(&format!("http://{addr}"), common::ACCOUNT, common::REGION);
        let out = c
            .request_phone_number()
            .iso_country_code("US")
            .message_type(MessageType::Transactional)
            .number_capabilities(NumberCapability::Sms)
            .number_type(RequestableNumberType::LongCode)
            .send()
            .await
            .expect("request through the binary");
        ids.push(out.phone_number_id().expect("id").to_string());
        // Everything acknowledged before the signal is there after it.
        assert_eq!(
            c.describe_phone_numbers().send().await.expect("describe").phone_numbers().len(),
            ids.len()
        );
        signal(&child, sig);
        let status = child.wait().expect("wait");
        assert!(status.success(), "SIG{sig} exits 0, got {status}");
    }
    let store = EventStore::open(dir.path(), Durability::Flush, 1).expect("lock released, log readable");
    for id in &ids {
        assert_eq!(store.stream_version(id).expect("version"), 1);
    }
    store.close();
}
