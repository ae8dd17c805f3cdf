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
    let mut stopped_clearly = 0;
    for (i, (what, damage)) in damages.iter().enumerate() {
        let dir: PathBuf = work.path().join(format!("copy-{i}"));
        copy_dir(&original, &dir);
        damage(&dir.join("db"));
        let data_dir = dir.to_string_lossy().to_string();
        for args in [
            vec!["audit", "--data-dir", data_dir.as_str(), "verify"],
            vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str()],
        ] {
            let (code, err) = run(&args, Duration::from_secs(4));
            assert!(
                !err.contains("panicked at") && code != Some(101),
                "{what}: `{}` panicked (exit {code:?}):\n{err}",
                args[0]
            );
            if code == Some(2) {
                assert!(err.contains("damaged"), "{what}: exit 2 says why:\n{err}");
                stopped_clearly += 1;
            }
        }
    }
    eprintln!("{stopped_clearly} runs stopped with the clear damage message");
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
