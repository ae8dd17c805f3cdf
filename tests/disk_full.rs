//! A full disk, for real: the server's data directory sits on a small tmpfs that a filler file
//! fills (where this machine lets a test mount one; elsewhere the server runs under a file-size
//! limit, RLIMIT_FSIZE, which fails its writes the same way). Writes then fail with
//! `ServiceUnavailableException` saying the storage is failing (never a 500), every request is
//! answered so at once while the disk is full, and once there is room again (the filler removed,
//! or the limit lifted) the server opens its log again by itself and serves: every acknowledged
//! write is in the log, which verifies.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How the disk is made full, and made roomy again.
enum Squeeze {
    /// A tmpfs of `SIZE` mounted at `mount`, mostly taken by `filler`.
    Tmpfs { mount: PathBuf, filler: PathBuf },
    /// The server's file-size limit (no file may grow past `LIMIT`).
    FileSize,
}

const TMPFS_SIZE_MIB: usize = 16;
const FILLER_MIB: usize = 10;
const LIMIT: u64 = 6 << 20;

impl Squeeze {
    /// A tmpfs, if this machine lets the test mount one.
    fn tmpfs(dir: &Path) -> Option<Squeeze> {
        let mount = dir.join("tmpfs");
        std::fs::create_dir_all(&mount).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE_MIB}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("disk_full: this machine does not let the test mount a tmpfs; the file-size limit (RLIMIT_FSIZE) alone is used");
            return None;
        }
        let filler = mount.join("filler");
        std::fs::write(&filler, vec![0u8; FILLER_MIB << 20]).expect("filler");
        Some(Squeeze::Tmpfs { mount, filler })
    }

    fn data_dir(&self, dir: &Path) -> PathBuf {
        match self {
            Squeeze::Tmpfs { mount, .. } => mount.join("data"),
            Squeeze::FileSize => dir.join("data"),
        }
    }

    fn spawn(&self, data_dir: &Path) -> (Child, String) {
        let limited = matches!(self, Squeeze::FileSize);
        common::spawn_binary_with("127.0.0.1:0", data_dir, &[("RUST_LOG", "warn,phone_ledger=info")], |command| {
            if limited {
                use std::os::unix::process::CommandExt;
                // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
                unsafe {
                    command.pre_exec(|| {
                        let limit = libc::rlimit {
                            rlim_cur: LIMIT,
                            rlim_max: libc::RLIM_INFINITY,
                        };
                        if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        })
    }

    /// Makes room again.
    fn release(&self, server: &Child) {
        match self {
            Squeeze::Tmpfs { filler, .. } => std::fs::remove_file(filler).expect("remove the filler"),
            Squeeze::FileSize => {
                let unlimited = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: prlimit only reads `unlimited`.
                let done = unsafe { libc::prlimit(server.id() as libc::pid_t, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) };
                assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
}

impl Drop for Squeeze {
    fn drop(&mut self) {
        if let Squeeze::Tmpfs { mount, .. } = self {
            let _ = Command::new("umount").arg("-l").arg(&*mount).status();
        }
    }
}

async fn call(http: &reqwest::Client, url: &str, operation: &str, body: Value) -> (u16, Value) {
    try_call(http, url, operation, body).await.expect("answer")
}

async fn try_call(http: &reqwest::Client, url: &str, operation: &str, body: Value) -> Result<(u16, Value), reqwest::Error> {
    let resp = http
        .post(url)
        .header("X-Amz-Target", format!("PinpointSMSVoiceV2.{operation}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_answered_clearly_and_the_server_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("dir");
    if let Some(tmpfs) = Squeeze::tmpfs(dir.path()) {
        fill_and_recover(tmpfs, dir.path()).await;
    }
    let dir = tempfile::tempdir().expect("dir");
    fill_and_recover(Squeeze::FileSize, dir.path()).await;
}

async fn fill_and_recover(squeeze: Squeeze, dir: &Path) {
    let data_dir = squeeze.data_dir(dir);
    let (mut server, addr) = squeeze.spawn(&data_dir);
    let url = format!("http://{addr}/");
    let http = reqwest::Client::new();
    let request = json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE"});
    let (status, number) = call(&http, &url, "RequestPhoneNumber", request).await;
    assert_eq!(status, 200, "{number}");
    let id = number["PhoneNumberId"].as_str().expect("id").to_string();

    // Writes until the disk is full: acknowledged ones are counted, the first refusal read.
    let mut acknowledged = 1u64;
    let refusal = loop {
        let body = json!({"PhoneNumberId": id, "DeletionProtectionEnabled": acknowledged.is_multiple_of(2)});
        let (status, answer) = call(&http, &url, "UpdatePhoneNumber", body).await;
        match status {
            200 => acknowledged += 1,
            _ => break (status, answer),
        }
        assert!(acknowledged < 200_000, "the disk never filled");
    };
    assert_eq!(refusal.0, 503, "a full disk is not a bug: {}", refusal.1);
    assert_eq!(refusal.1["__type"], "ServiceUnavailableException");
    assert!(
        refusal.1["Message"].as_str().unwrap_or_default().contains("storage is failing"),
        "{}",
        refusal.1
    );

    // While the disk stays full, every request is answered at once, saying so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The server hands its listener to an answerer of the failure: a keep-alive connection
        // open at that moment is closed, and a request sent on it just then gets no answer (a
        // client sends it again, as the SDKs do).
        let (status, answer) = match try_call(&http, &url, "DescribePhoneNumbers", json!({})).await {
            Ok(answered) => answered,
            Err(e) => (0, Value::String(e.to_string())),
        };
        if status == 503
            && answer["Message"]
                .as_str()
                .unwrap_or_default()
                .contains("opens the log again by itself")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never told that it waits for the storage: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    squeeze.release(&server);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        // The listener goes back to the server proper: the same hand-over as above.
        match http.get(format!("{url}health")).send().await {
            Ok(answer) if answer.status() == 200 => break answer.json::<Value>().await.expect("json"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the server did not recover by itself");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        health["Events"].as_u64().expect("events") >= acknowledged,
        "every acknowledged write is in the log: {health} < {acknowledged}"
    );
    let (status, answer) = call(
        &http,
        &url,
        "UpdatePhoneNumber",
        json!({"PhoneNumberId": id, "DeletionProtectionEnabled": false}),
    )
    .await;
    assert_eq!(status, 200, "writes are taken again: {answer}");
    let verify: Value = http
        .get(format!("{url}audit/verify"))
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    assert_eq!(verify["Ok"], true, "{verify}");

    common::signal(&server, "TERM");
    assert!(server.wait().expect("exit").success());
}
