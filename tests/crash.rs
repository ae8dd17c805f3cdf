//! Crash safety: the real binary under conflicting load is killed with SIGKILL at random moments,
//! restarted on the same data directory, and after each restart every acknowledged response's
//! event is present, no stream has a gap, the hash chain verifies, and the load test's verdict
//! passes on the surviving log.
//!
//! CI runs 3 cycles; the long version is
//! `PHONE_LEDGER_CRASH_CYCLES=50 cargo test --release --test crash -- --nocapture`.

mod common;

use std::time::Duration;

use phone_ledger::loadtest::checker::check;
use phone_ledger::loadtest::{fetch_log, prepare, race, LoadTestArgs};
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let cycles: u64 = std::env::var("PHONE_LEDGER_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("PHONE_LEDGER_QUOTAS__PHONE_NUMBERS_PER_ACCOUNT", "1000000"),
        ("PHONE_LEDGER_QUOTAS__POOLS_PER_ACCOUNT", "100000"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut all_ops = Vec::new();
    for cycle in 0..cycles {
        let (mut child, addr) = common::spawn_binary(dir.path(), &env);
        let base = format!("http://{addr}");
        let args = LoadTestArgs {
            clients: 16,
            numbers: 20,
            pools: 3,
            duration: Some(Duration::from_secs(3)),
            seed: cycle + 1,
            ..Default::default()
        };
        let prepared = prepare(&args, std::slice::from_ref(&base)).await.expect("prepare");
        let events_before = common::events_in_log(&base).await;
        all_ops.extend(prepared.ops.iter().cloned());
        let racing = {
            let args = args.clone();
            tokio::spawn(async move {
                let result = race(&args, &prepared).await;
                (prepared, result)
            })
        };
        // At a random moment, once the load has written something (a slow machine may take a
        // while to get going).
        let kill_after = Duration::from_millis(rng.gen_range(200..2_000));
        tokio::time::sleep(kill_after).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while common::events_in_log(&base).await < events_before + 50 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        common::signal(&child, "KILL");
        child.wait().expect("killed");
        let (_, raced) = racing.await.expect("race task");
        let (load_ops, _) = raced.expect("race");
        let acknowledged = load_ops.iter().filter(|o| (200..300).contains(&o.status)).count();
        all_ops.extend(load_ops);

        // Restart on the same directory: everything acknowledged is there, and consistent.
        let (mut child, addr) = common::spawn_binary(dir.path(), &env);
        let base = format!("http://{addr}");
        let log = fetch_log(&base).await.expect("log");
        let verdict = check(&log, &all_ops);
        assert!(
            verdict.ok,
            "cycle {cycle} (killed after {kill_after:?}, {acknowledged} acknowledged): {verdict:#?}"
        );
        let verify: serde_json::Value = reqwest::get(format!("{base}/audit/verify"))
            .await
            .expect("verify")
            .json()
            .await
            .expect("json");
        assert_eq!(verify["Ok"], true, "cycle {cycle}: {verify}");
        assert!(acknowledged > 0, "cycle {cycle}: the load did some work before the kill");
        eprintln!(
            "cycle {cycle}: killed after {kill_after:?}; {acknowledged} acknowledged; {} events verified",
            log.len()
        );
        common::signal(&child, "TERM");
        assert!(child.wait().expect("stopped").success());
    }
}
