//! One 3-node NATS JetStream cluster shared by the tests of a test binary (each test keeps to a
//! namespace of its own on it), started on first use from real `nats-server` processes.

#![allow(dead_code)]

use std::sync::OnceLock;

use phone_ledger::nats_cluster::{nats_server_available, LocalCluster};
use phone_ledger::store::JetStreamSettings;

/// The client URLs of the shared cluster, or `None` (said loudly) when `nats-server` is not
/// installed; fails when the tools are required (`PHONE_LEDGER_REQUIRE_TOOLS`).
pub fn shared_cluster() -> Option<Vec<String>> {
    static URLS: OnceLock<Option<Vec<String>>> = OnceLock::new();
    URLS.get_or_init(|| {
        if !super::tool_available("nats-server", nats_server_available(), "apt-get install -y nats-server") {
            return None;
        }
        // Started from a thread that lives as long as the process: the servers are killed when
        // the thread that started them ends (see `nats_cluster`), so not a test's thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("nats-cluster".into())
            .spawn(move || {
                let dir = shared_cluster_dir();
                let cluster = LocalCluster::start(&dir, 3).expect("a 3-node cluster starts");
                tx.send(cluster.client_urls()).expect("send");
                loop {
                    std::thread::park();
                }
            })
            .expect("thread");
        Some(rx.recv().expect("cluster started"))
    })
    .clone()
}

/// Where this test process keeps its shared cluster: under the target directory, one directory
/// per process id. The process never drops the cluster (it lives as long as the process), so its
/// files outlive it; each new process removes those of processes that are gone (their servers
/// died with them), so repeated runs do not fill the disk.
fn shared_cluster_dir() -> std::path::PathBuf {
    let parent = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-nats-clusters");
    std::fs::create_dir_all(&parent).expect("cluster parent dir");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let gone = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = parent.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cluster dir");
    dir
}

/// Settings for a fresh namespace on the cluster at `urls`.
pub fn fresh_settings(urls: &[String]) -> JetStreamSettings {
    JetStreamSettings {
        servers: urls.to_vec(),
        namespace: format!("T{}", uuid::Uuid::new_v4().simple()).chars().take(24).collect(),
        ..JetStreamSettings::default()
    }
}

/// Publishes a checkpoint claiming chain hash `[7; 32]` at `position` straight into a
/// deployment's chain stream: a forged seal, or a history rewritten after it.
pub async fn forge_checkpoint(settings: &JetStreamSettings, position: u64) {
    let client = async_nats::connect(settings.servers.clone()).await.expect("connect");
    let forged = serde_json::json!({
        "Position": position, "Hash": hex::encode([7u8; 32]), "EventsSequence": 0, "SealedAtMs": 0, "SealedBy": "forger",
    });
    async_nats::jetstream::new(client)
        .publish(
            format!("{}.chain", settings.namespace.to_ascii_lowercase()),
            forged.to_string().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// Publishes `payload` on `subject` (a subject a stream stores) with `header_block` as its
/// header block, byte for byte, over a plain connection to the server at `url` (the NATS client
/// library only writes well-formed headers): what anyone allowed to publish on a subject can
/// store. Returns once the stream has stored it: its acknowledgement, sent to a reply subject,
/// has come back (the server having processed the publish is not enough: the stream's leader
/// may be another server, which stores it a moment later).
pub async fn publish_raw(url: &str, subject: &str, header_block: &[u8], payload: &[u8]) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let address = url.trim_start_matches("nats://");
    let stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut lines = BufReader::new(stream);
    let mut info = String::new();
    lines.read_line(&mut info).await.expect("INFO");
    assert!(info.starts_with("INFO"), "{info}");
    let inbox = format!("_INBOX.raw.{}", uuid::Uuid::new_v4().simple());
    let mut out = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}}\r\nSUB {inbox} 1\r\nHPUB {subject} {inbox} {} {}\r\n",
        header_block.len(),
        header_block.len() + payload.len()
    )
    .into_bytes();
    out.extend_from_slice(header_block);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    lines.get_mut().write_all(&out).await.expect("publish");
    let acknowledged = async {
        loop {
            let mut line = String::new();
            lines.read_line(&mut line).await.expect("a line from the server");
            if line.starts_with("PING") {
                lines.get_mut().write_all(b"PONG\r\n").await.expect("PONG");
                continue;
            }
            assert!(!line.starts_with("-ERR"), "the server refused the message: {line}");
            // MSG <subject> <sid> <bytes>: the acknowledgement, a JSON document.
            if let Some(size) = line.strip_prefix("MSG ").and_then(|rest| rest.split_whitespace().last()) {
                let size: usize = size.parse().expect("a size");
                let mut body = vec![0; size + 2];
                lines.read_exact(&mut body).await.expect("the acknowledgement");
                let ack = String::from_utf8_lossy(&body[..size]).into_owned();
                assert!(ack.contains("\"seq\"") && !ack.contains("\"error\""), "not stored: {ack}");
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), acknowledged)
        .await
        .expect("the stream acknowledged the message within 30 s");
}
