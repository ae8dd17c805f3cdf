//! Damaged files: a copy of a real log is truncated or has bytes flipped at several offsets, and
//! the tools and the server are run on it. Whatever the damage, they never panic: the log's
//! library panics on bytes it cannot read, and the process then stops with one clear line and
//! exit code 2 (or the damage is reported by `audit verify` as a broken log, or not noticed at
//! all when it hit bytes nothing reads).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use common::{TestServer, ACCOUNT};

/// Copies the data directory (flat: the log's files and its blobs directory).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Runs the binary with `args` for at most `limit`; its exit code (`None`: still running, then
/// killed) and what it wrote to stderr.
fn run(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut err);
    }
    (code, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_never_make_a_tool_or_the_server_panic() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    for _ in 0..150 {
        common::request(&c, MessageType::Transactional).await;
    }
    server.stop();
    let original = server.dir.path().to_path_buf();
    let len = std::fs::metadata(original.join("db")).expect("db").len();
    let work = tempfile::tempdir().expect("dir");
    let mut damages: Vec<(String, Damage)> = vec![
        (
            "truncated by 8 KiB".into(),
            Box::new(move |db: &Path| truncate(db, len.saturating_sub(8 * 1024))),
        ),
        ("truncated to half".into(), Box::new(move |db: &Path| truncate(db, len / 2))),
    ];
    for k in 1..8u64 {
        let at = len * k / 8;
        damages.push((format!("a byte flipped at {at}"), Box::new(move |db: &Path| flip(db, at))));
    }
    let (mut stopped_clearly, mut lost_found) = (0, 0);
    for (i, (what, damage)) in damages.iter().enumerate() {
        let dir: PathBuf = work.path().join(format!("copy-{i}"));
        copy_dir(&original, &dir);
        damage(&dir.join("db"));
        let data_dir = dir.to_string_lossy().to_string();
        // The server either refuses to start (2) or serves until it is stopped; `audit verify`
        // always comes to a verdict (0 whole, 1 broken, 2 unreadable), and where the server
        // found acknowledged events lost (a log cut short at an earlier consistent state, whose
        // chain is whole), verify says so too, from the same durable mark.
        let serve = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str()];
        let verify = vec!["audit", "--data-dir", data_dir.as_str(), "verify"];
        let mut lost = false;
        for (args, limit) in [(serve, Duration::from_secs(4)), (verify, Duration::from_secs(30))] {
            let (code, err) = run(&args, limit);
            assert!(
                !err.contains("panicked at") && code != Some(101),
                "{what}: `{}` panicked (exit {code:?}):\n{err}",
                args[0]
            );
            if args[0] == "serve" {
                lost = code == Some(2) && err.contains("lost acknowledged events");
                lost_found += usize::from(lost);
            } else {
                assert!(matches!(code, Some(0..=2)), "{what}: verify came to no verdict ({code:?}):\n{err}");
                assert!(
                    !(lost && code == Some(0)),
                    "{what}: the server found events lost, verify nothing wrong"
                );
            }
            if code == Some(2) {
                assert!(
                    err.contains("damaged") || err.contains("lost acknowledged events"),
                    "{what}: exit 2 says why:\n{err}"
                );
                stopped_clearly += 1;
            }
        }
    }
    eprintln!("{stopped_clearly} runs stopped with the clear damage message; {lost_found} copies had lost acknowledged events");
    // Halving the file loses the second half of the events, whatever sled's layout.
    assert!(
        lost_found >= 1,
        "no damage lost an acknowledged event: the comparison with verify never ran"
    );
}

/// A way to damage the log's data file.
type Damage = Box<dyn Fn(&Path)>;

fn truncate(db: &Path, to: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open")
        .set_len(to)
        .expect("truncate");
}

fn flip(db: &Path, at: u64) {
    let mut bytes = std::fs::read(db).expect("read");
    if let Some(b) = bytes.get_mut(at as usize) {
        *b ^= 0xFF;
    }
    std::fs::write(db, bytes).expect("write");
}

/// The log must reach the durable mark it left beside itself: a log that ends before it lost
/// acknowledged events (a truncation sled may read without complaint), one with another hash
/// there was rewritten, and the server refuses to start on either, naming the damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_lost_acknowledged_events_does_not_start() {
    let data = tempfile::tempdir().expect("dir");
    let (child, addr) = common::spawn_binary(data.path(), &[]);
    let c = common::client_for(&format!("http://{addr}"), ACCOUNT, common::REGION);
    for _ in 0..150 {
        common::request(&c, MessageType::Transactional).await;
    }
    let events = common::events_in_log(&format!("http://{addr}")).await;
    assert!(events >= 150, "{events} events");
    // Stopped at once: the mark is brought up to date about once a second while serving, and
    // to the last acknowledged event by a clean stop.
    common::signal(&child, "TERM");
    let mut child = child;
    let _ = child.wait();
    let mark: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("durable-mark.json")).expect("a mark")).expect("json");
    let position = mark["Position"].as_u64().expect("position");
    assert_eq!(position, events, "{mark}");
    let work = tempfile::tempdir().expect("dir");
    let serve = |dir: &Path| {
        let dir = dir.to_string_lossy().to_string();
        run(
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.as_str()],
            Duration::from_secs(8),
        )
    };
    // The events after the mark's position are gone (the mark says more was acknowledged).
    let lost = work.path().join("lost");
    copy_dir(data.path(), &lost);
    let mut ahead = mark.clone();
    ahead["Position"] = serde_json::json!(position + 10);
    std::fs::write(lost.join("durable-mark.json"), ahead.to_string()).expect("write");
    let (code, err) = serve(&lost);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("lost acknowledged events") && err.contains("audit verify"), "{err}");
    // Another event at the mark's position.
    let rewritten = work.path().join("rewritten");
    copy_dir(data.path(), &rewritten);
    let mut other = mark.clone();
    other["Hash"] = serde_json::json!("0".repeat(64));
    std::fs::write(rewritten.join("durable-mark.json"), other.to_string()).expect("write");
    let (code, err) = serve(&rewritten);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("rewritten"), "{err}");
    // Half of the data file gone: the server never starts on what is left.
    let truncated = work.path().join("truncated");
    copy_dir(data.path(), &truncated);
    let len = std::fs::metadata(truncated.join("db")).expect("db").len();
    truncate(&truncated.join("db"), len / 2);
    let (code, err) = serve(&truncated);
    assert_eq!(code, Some(2), "a log that lost half its file does not start: {err}");
    // The intact log starts (and is still running when the check gives up waiting).
    let (code, err) = serve(data.path());
    assert_eq!(code, None, "the intact log starts: {err}");
}
