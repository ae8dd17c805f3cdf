//! The audit trail (`/audit/...` and `phone-ledger audit`) over a scripted history driven through
//! the AWS SDK: request, protect, refused release, unprotect, join a pool, refused release, leave
//! the pool, release. Every endpoint and CLI command, tamper detection and decision re-check.

mod common;

use common::request;

use std::process::Command;

use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{open_log_read_only, TestServer, ACCOUNT, OTHER_ACCOUNT};
use phone_ledger::audit::recheck::{recheck, Deciders};
use phone_ledger::audit::verify::verify_store;
use phone_ledger::domain::phone_number::{PhoneNumberAction, PhoneNumberEvent, PhoneNumberState};
use phone_ledger::domain::{Aggregate, Command as DomainCommand, Rejection};
use serde_json::Value;

const SCRIPT: [&str; 10] = [
    "PhoneNumberRequested",
    "PhoneNumberUpdated",
    "ReleaseRejected",
    "PhoneNumberUpdated",
    "PoolAssociationStarted",
    "AssociatedWithPool",
    "ReleaseRejected",
    "PoolDisassociationStarted",
    "DisassociatedFromPool",
    "Released",
];

/// Runs the scripted history; returns (number, pool).
async fn script(c: &Client) -> (String, String) {
    let id = request(c, MessageType::Transactional).await;
    c.update_phone_number()
        .phone_number_id(&id)
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("protect");
    c.release_phone_number()
        .phone_number_id(&id)
        .send()
        .await
        .expect_err("refused: protected");
    c.update_phone_number()
        .phone_number_id(&id)
        .deletion_protection_enabled(false)
        .send()
        .await
        .expect("unprotect");
    let anchor = request(c, MessageType::Transactional).await;
    let pool_id = common::create_pool(c, &anchor).await;
    c.associate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&id)
        .send()
        .await
        .expect("join");
    c.release_phone_number()
        .phone_number_id(&id)
        .send()
        .await
        .expect_err("refused: pooled");
    c.disassociate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&id)
        .send()
        .await
        .expect("leave");
    c.release_phone_number().phone_number_id(&id).send().await.expect("release");
    (id, pool_id)
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

fn cli(args: &[&str]) -> (i32, String, String) {
    cli_with(&[], args)
}

/// [`cli`] with these environment variables (credentials, say).
fn cli_with(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .arg("audit")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run phone-ledger audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn types(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["EventType"].as_str().expect("type").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_api_and_cli_tell_the_whole_story() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, pool_id) = script(&c).await;
    let base = server.url();
    let (_, digest_before) = get(&format!("{base}/audit/digest")).await;

    // 1. Stream history, with paging.
    let (s, h) = get(&format!("{base}/audit/phone-numbers/{id}/events")).await;
    assert_eq!(s, 200);
    assert_eq!(types(&h["Events"]), SCRIPT);
    let events = h["Events"].as_array().expect("events");
    assert_eq!(events[2]["Payload"]["Rejection"]["Reason"], "DELETION_PROTECTION_ENABLED");
    assert_eq!(events[6]["Payload"]["Rejection"]["Reason"], "PHONE_NUMBER_ASSOCIATED_TO_POOL");
    assert_eq!(events[2]["Command"], "ReleasePhoneNumber/Release");
    assert_eq!(events[2]["Account"], ACCOUNT);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["Version"], i as u64 + 1);
        assert!(e["EventId"].is_string() && e["RequestId"].is_string() && e["Hash"].as_str().is_some_and(|h| h.len() == 64));
    }
    let (_, page) = get(&format!("{base}/audit/phone-numbers/{id}/events?FromVersion=3&Limit=2")).await;
    assert_eq!(types(&page["Events"]), ["ReleaseRejected", "PhoneNumberUpdated"]);
    assert_eq!(page["NextVersion"], 5);
    let arn = format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:phone-number/{id}");
    let (s, by_arn) = get(&format!("{base}/audit/phone-numbers/{}/events", arn.replace('/', "%2F"))).await;
    assert_eq!((s, types(&by_arn["Events"]).len()), (200, 10));
    // The ARN as a person pastes it, its `/` as it is.
    let (s, by_arn) = get(&format!("{base}/audit/phone-numbers/{arn}/events")).await;
    assert_eq!((s, types(&by_arn["Events"]).len()), (200, 10));
    let (s, state_by_arn) = get(&format!("{base}/audit/phone-numbers/{arn}/state?Version=1")).await;
    assert_eq!((s, &state_by_arn["Version"]), (200, &serde_json::json!(1)), "{state_by_arn}");
    let (_, pool_events) = get(&format!("{base}/audit/pools/{pool_id}/events")).await;
    assert_eq!(
        types(&pool_events["Events"]),
        ["PoolCreated", "OriginationIdentityAssociated", "OriginationIdentityDisassociated"]
    );

    // 2. Global feed with filters.
    let (_, refused) = get(&format!("{base}/audit/events?Type=ReleaseRejected")).await;
    assert_eq!(refused["Events"].as_array().expect("events").len(), 2);
    let (_, of_stream) = get(&format!("{base}/audit/events?StreamId={id}&After={}", events[4]["Position"])).await;
    assert_eq!(types(&of_stream["Events"]), SCRIPT[5..]);
    let (_, limited) = get(&format!("{base}/audit/events?Limit=3")).await;
    assert_eq!(limited["Events"].as_array().expect("events").len(), 3);
    assert_eq!(limited["NextAfter"], 3);
    let (_, none) = get(&format!("{base}/audit/events?Account=999999999999")).await;
    assert!(none["Events"].as_array().expect("events").is_empty());
    let t3 = events[2]["TimestampMs"].as_u64().expect("ts") as f64 / 1000.0;
    let (_, window) = get(&format!("{base}/audit/events?StreamId={id}&From={t3}&To={t3}")).await;
    assert!(types(&window["Events"]).contains(&"ReleaseRejected".to_string()));

    // 3. Time travel, with the actors' evolve.
    let state = |v: u64| {
        let url = format!("{base}/audit/phone-numbers/{id}/state?Version={v}");
        async move { get(&url).await.1 }
    };
    assert_eq!(state(2).await["State"]["DeletionProtectionEnabled"], true);
    assert_eq!(state(5).await["State"]["Status"], "ASSOCIATING");
    assert_eq!(state(6).await["State"]["PoolId"], pool_id.as_str());
    assert_eq!(state(9).await["State"].get("PoolId"), None);
    assert_eq!(state(10).await["State"]["Status"], "DELETED");
    let (_, at) = get(&format!("{base}/audit/phone-numbers/{id}/state?At={t3}")).await;
    assert!(at["Version"].as_u64().expect("version") >= 3);
    let (s, e) = get(&format!("{base}/audit/phone-numbers/{id}/state?Version=11")).await;
    assert_eq!((s, e["Parameter"].as_str()), (400, Some("Version")));

    // 4. Replay: what each event changed, what each refusal saw.
    let (_, replay) = get(&format!("{base}/audit/phone-numbers/{id}/replay")).await;
    let steps = replay["Steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 10);
    assert_eq!(
        steps[1]["Changes"],
        serde_json::json!([{"Field": "DeletionProtectionEnabled", "Before": false, "After": true}])
    );
    assert_eq!(steps[2]["Changes"], serde_json::json!([]));
    assert_eq!(steps[2]["Rejection"]["Reason"], "DELETION_PROTECTION_ENABLED");
    assert_eq!(steps[2]["StateSeen"]["DeletionProtectionEnabled"], true);
    assert_eq!(steps[6]["StateSeen"]["PoolId"], pool_id.as_str());
    assert!(steps[9]["Changes"]
        .as_array()
        .expect("changes")
        .iter()
        .any(|c| c["Field"] == "Status" && c["After"] == "DELETED"));

    // 5. Digest and verify.
    let (_, verify) = get(&format!("{base}/audit/verify")).await;
    assert_eq!(verify["Ok"], true, "{verify}");
    assert_eq!(verify["HeadPosition"], digest_before["Position"]);
    assert_eq!(verify["HeadHash"], digest_before["Hash"]);
    assert_eq!(digest_before["Durability"], "fsync");

    // 6. Re-check with today's rules: nothing diverges.
    let (_, rc) = get(&format!("{base}/audit/recheck")).await;
    assert_eq!(rc["Divergences"], serde_json::json!([]), "{rc}");
    assert!(rc["CommandsChecked"].as_u64().expect("n") >= 14);

    // Bad input: unknown ids 404 naming the id, bad or unknown parameters 400 naming them.
    let (s, e) = get(&format!("{base}/audit/phone-numbers/phone-00000000000000000000000000000000/events")).await;
    assert_eq!((s, e["ResourceId"].as_str()), (404, Some("phone-00000000000000000000000000000000")));
    let (s, e) = get(&format!("{base}/audit/events?Limit=0")).await;
    assert_eq!((s, e["Parameter"].as_str()), (400, Some("Limit")));
    let (s, e) = get(&format!("{base}/audit/events?Colour=red")).await;
    assert_eq!((s, e["Parameter"].as_str()), (400, Some("Colour")));
    let (s, e) = get(&format!("{base}/audit/events?From=yesterday")).await;
    assert_eq!((s, e["Parameter"].as_str()), (400, Some("From")));
    // The audit API's errors have the AWS JSON shape and headers of the rest of the service.
    let resp = reqwest::get(format!("{base}/audit/pools/pool-00000000000000000000000000000000/state"))
        .await
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 404);
    let error_type = resp
        .headers()
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    assert_eq!(error_type.as_deref(), Some("ResourceNotFoundException"));
    assert!(resp.headers().contains_key("x-amzn-RequestId"));
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["__type"], "ResourceNotFoundException", "{body}");

    // The CLI against the server prints the same as offline on the stopped server's directory.
    let url = server.url();
    let commands: Vec<Vec<String>> = vec![
        vec!["events".into(), id.clone()],
        vec!["feed".into(), "--type".into(), "ReleaseRejected".into()],
        vec!["state".into(), id.clone(), "--version".into(), "6".into()],
        vec!["replay".into(), id.clone()],
        vec!["verify".into()],
        vec!["recheck".into()],
    ];
    let mut online = Vec::new();
    for json in [false, true] {
        for cmd in &commands {
            let mut args = vec!["--server", url.as_str()];
            if json {
                args.push("--json");
            }
            args.extend(cmd.iter().map(String::as_str));
            let (code, out, err) = cli(&args);
            assert_eq!(code, 0, "{args:?}: {err}");
            online.push(out);
        }
    }
    assert!(
        online[0].contains("ReleaseRejected") && online[0].contains("DELETION_PROTECTION_ENABLED"),
        "{}",
        online[0]
    );
    assert!(
        online[3].contains("refused") && online[3].contains("DeletionProtectionEnabled: false → true"),
        "{}",
        online[3]
    );
    let (_, digest_after) = get(&format!("{base}/audit/digest")).await;
    assert_eq!(digest_before, digest_after, "the audit API never writes to the log");

    let export_file = server.dir.path().join("..").join(format!("export-{}.jsonl", std::process::id()));
    let export_path = export_file.to_string_lossy().to_string();
    let (code, _, err) = cli(&["--server", &url, "export", "--output", &export_path]);
    assert_eq!(code, 0, "{err}");
    // An export continuing an earlier one: the events after a position, whose chain verifies
    // from there.
    let later_file = server
        .dir
        .path()
        .join("..")
        .join(format!("export-later-{}.jsonl", std::process::id()));
    let later_path = later_file.to_string_lossy().to_string();
    let (code, _, err) = cli(&["--server", &url, "export", "--after", "3", "--output", &later_path]);
    assert_eq!(code, 0, "{err}");
    let later = std::fs::read_to_string(&later_file).expect("export");
    let positions: Vec<u64> = later
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["Position"]
                .as_u64()
                .expect("position")
        })
        .collect();
    let events = digest_before["Events"].as_u64().expect("n");
    assert_eq!(positions, (4..=events).collect::<Vec<_>>());
    let (code, out, _) = cli(&["verify", "--file", &later_path]);
    assert!(
        code == 0 && out.contains("intact from position 5 (the hash at 4 taken as given)"),
        "{out}"
    );
    let _ = std::fs::remove_file(&later_file);

    // Offline while the server runs: the directory is locked.
    let dir = server.dir.path().to_string_lossy().to_string();
    let (code, out, err) = cli(&["--data-dir", &dir, "digest"]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("locked") && err.lines().count() == 1, "{err}");

    server.stop();
    let mut offline = Vec::new();
    for json in [false, true] {
        for cmd in &commands {
            let mut args = vec!["--data-dir", dir.as_str()];
            if json {
                args.push("--json");
            }
            args.extend(cmd.iter().map(String::as_str));
            let (code, out, err) = cli(&args);
            assert_eq!(code, 0, "{args:?}: {err}");
            offline.push(out);
        }
    }
    assert_eq!(online, offline, "same output online and offline");

    // 7. Export + verify of the copy; a doctored copy is caught.
    let (code, out, _) = cli(&["verify", "--file", &export_path]);
    assert_eq!(code, 0, "{out}");
    // A copy is sealed by its own hashes: the check says nothing of a live log's sealing.
    assert!(!out.contains("sealed"), "{out}");
    let text = std::fs::read_to_string(&export_file).expect("export");
    assert_eq!(text.lines().count() as u64, digest_before["Events"].as_u64().expect("n"));
    let doctored = text.replacen("\"DeletionProtectionEnabled\":true", "\"DeletionProtectionEnabled\":false", 1);
    assert_ne!(doctored, text);
    std::fs::write(&export_file, doctored).expect("write");
    let (code, out, _) = cli(&["verify", "--file", &export_path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN") && out.contains("hash mismatch"), "{out}");

    // A copy cut short is whole by its own hashes: only the digest recorded apart shows it.
    let digest = format!("{}:{}", digest_before["Position"], digest_before["Hash"].as_str().expect("hash"));
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&export_file, lines[..lines.len() - 1].join("\n") + "\n").expect("write");
    let (code, out, _) = cli(&["verify", "--file", &export_path]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&["verify", "--file", &export_path, "--digest", &digest]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cut short"), "{out}");
    std::fs::write(&export_file, &text).expect("write");
    let (code, out, _) = cli(&["verify", "--file", &export_path, "--digest", &digest]);
    assert_eq!(code, 0, "{out}");
    // A member added to a line is not hashed, so it is refused; so is a file with no events.
    let added = text.replacen("{\"EventId\"", "{\"Note\":\"approved\",\"EventId\"", 1);
    assert_ne!(added, text);
    std::fs::write(&export_file, added).expect("write");
    let (code, out, _) = cli(&["verify", "--file", &export_path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not as `audit export` writes it"), "{out}");
    std::fs::write(&export_file, "").expect("write");
    let (code, out, _) = cli(&["verify", "--file", &export_path]);
    assert!(code == 1 && out.contains("holds no events"), "{out}");
    let _ = std::fs::remove_file(&export_file);

    // Errors of the offline mode: one line, exit 2.
    for bad in ["/nonexistent/phone-ledger", "/tmp"] {
        let (code, _, err) = cli(&["--data-dir", bad, "digest"]);
        assert_eq!(code, 2);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// Flip one byte of one stored event on disk: verify finds exactly that event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_a_flipped_byte() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, _) = script(&c).await;
    server.stop();
    let dir = server.dir.path().to_path_buf();
    let mut target_position = 0;
    // Change the stored bytes as an intruder with the files would.
    phone_ledger::store::testing::tamper_with_event(&dir, &id, 1, |bytes| {
        let envelope: Value = serde_json::from_slice(bytes).expect("json");
        target_position = envelope["Position"].as_u64().expect("pos");
        // Flip the lowest bit of one digit of the stored phone number: still valid JSON, still a
        // plausible number, but no longer what was written.
        let needle = b"\"PhoneNumber\":\"+1";
        let at = bytes.windows(needle.len()).position(|w| w == needle).expect("payload member") + needle.len() + 3;
        assert!(bytes[at].is_ascii_digit());
        bytes[at] ^= 0x01;
        assert!(serde_json::from_slice::<Value>(bytes).is_ok());
    })
    .expect("tamper");
    let store = open_log_read_only(&dir);
    let report = verify_store(&*store).await.expect("verify");
    store.close().await.expect("close");
    assert!(!report.ok);
    assert_eq!(report.first_break.as_ref().map(|b| b.position), Some(target_position), "{report:?}");
    let (code, out, _) = cli(&["--data-dir", &dir.to_string_lossy(), "verify"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("BROKEN at position {target_position}")) && out.contains("hash mismatch"),
        "{out}"
    );
}

/// An event added to a stream beside the feed is found, whatever position it claims: one beyond
/// the log's head is not taken for an append landing during the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_an_event_added_beside_the_feed() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, _) = script(&c).await;
    server.stop();
    let dir = server.dir.path().to_path_buf();
    let store = open_log_read_only(&dir);
    let last = store.read_stream(&id, 1, usize::MAX).await.expect("read").pop().expect("an event");
    store.close().await.expect("close");
    for claimed in [last.position + 1, 999_999_999] {
        let mut forged = serde_json::to_value(&last).expect("json");
        forged["Version"] = (last.version + 1).into();
        forged["Position"] = claimed.into();
        let bytes = serde_json::to_vec(&forged).expect("bytes");
        phone_ledger::store::testing::forge_event(&dir, &id, last.version + 1, &bytes).expect("forge");
        let store = open_log_read_only(&dir);
        let report = verify_store(&*store).await.expect("verify");
        store.close().await.expect("close");
        assert!(!report.ok, "claiming position {claimed}: {report:?}");
        let problem = report.first_break.map(|b| b.problem).unwrap_or_default();
        assert!(problem.contains(&format!("has head version {}", last.version + 1)), "{problem}");
    }
}

/// A changed rule shows up as divergences on exactly the commands it would decide differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_reports_commands_a_changed_rule_would_decide_differently() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, _) = script(&c).await;
    server.stop();
    let store = open_log_read_only(server.dir.path());
    let today = recheck(&*store, &Deciders::today()).await.expect("recheck");
    assert!(today.divergences.is_empty(), "{today:?}");
    assert!(today.commands_checked > 0);

    // A test-only decider that forgot the deletion-protection rule.
    let lenient = |state: &PhoneNumberState, command: &DomainCommand<PhoneNumberAction>| -> Result<Vec<PhoneNumberEvent>, Rejection> {
        match (&command.action, &state.0) {
            (PhoneNumberAction::Release, Some(n)) if n.deletion_protection_enabled && n.pool_id.is_none() => {
                Ok(vec![PhoneNumberEvent::Released {
                    phone_number: n.phone_number.clone(),
                }])
            }
            _ => state.decide(command),
        }
    };
    let changed = Deciders {
        phone_number: &lenient,
        pool: Deciders::today().pool,
        opt_out_list: Deciders::today().opt_out_list,
        sender_id: Deciders::today().sender_id,
    };
    let report = recheck(&*store, &changed).await.expect("recheck");
    store.close().await.expect("close");
    assert_eq!(report.divergences.len(), 1, "{report:?}");
    let d = &report.divergences[0];
    assert_eq!((d.stream_id.as_str(), d.version), (id.as_str(), 3));
    assert_eq!(d.recorded["Rejected"]["Reason"], "DELETION_PROTECTION_ENABLED");
    assert_eq!(d.today["Events"][0]["Type"], "Released");
}

/// `Follow=true` streams events as they are committed (server-sent events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_can_be_followed_live() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    request(&c, MessageType::Transactional).await;
    let resp = reqwest::get(format!("{}/audit/events?Follow=true&Type=PhoneNumberRequested", server.url()))
        .await
        .expect("follow");
    assert_eq!(
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let wanted = 3;
    let writer = tokio::spawn(async move {
        for _ in 0..2 {
            request(&c, MessageType::Transactional).await;
        }
    });
    let seen = read_events(&mut body, wanted).await;
    writer.await.expect("writer");
    assert_eq!(seen.matches("\"EventType\":\"PhoneNumberRequested\"").count(), wanted, "{seen}");
    assert!(seen.contains("id: 1\n"));
}

/// Reads server-sent events from a followed feed until `wanted` have come.
async fn read_events<S>(body: &mut S, wanted: usize) -> String
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    use futures_util::StreamExt;
    // One deadline for all of them: keep-alive comments come every few seconds regardless.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen = String::new();
    while seen.matches("data: ").count() < wanted {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("{wanted} events in time; got: {seen}"))
            .expect("open")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// The shared tail watches the log's head only while someone follows (so that commits nobody
/// follows wake nothing): a follower that comes after the tail sat idle, with commits made
/// meanwhile, still gets every event, and then the new ones live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_after_an_idle_spell_gets_every_event_and_the_new_ones_live() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let url = format!("{}/audit/events?Follow=true&Type=PhoneNumberRequested", server.url());
    request(&c, MessageType::Transactional).await;
    {
        let mut first = reqwest::get(&url).await.expect("follow").bytes_stream();
        read_events(&mut first, 1).await;
        request(&c, MessageType::Transactional).await;
        let live = read_events(&mut first, 1).await;
        assert!(live.contains("\"EventType\":\"PhoneNumberRequested\""), "{live}");
    }
    // Nobody follows now: these commits go by unwatched.
    for _ in 0..3 {
        request(&c, MessageType::Transactional).await;
    }
    let mut second = reqwest::get(&url).await.expect("follow again").bytes_stream();
    let caught_up = read_events(&mut second, 5).await;
    let writer = tokio::spawn(async move { request(&c, MessageType::Transactional).await });
    let seen = caught_up + &read_events(&mut second, 1).await;
    writer.await.expect("writer");
    assert_eq!(seen.matches("\"EventType\":\"PhoneNumberRequested\"").count(), 6, "{seen}");
}

/// Peak resident memory of a process, in KiB (`VmHWM` in /proc).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `/audit/export` streams the log page by page: exporting a log far larger than a page does not
/// grow the server's memory with the export (before, the whole body was built in memory: a
/// 239k-event log took the server from 31 to 702 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_streamed_in_bounded_memory() {
    use phone_ledger::codec::pending_events;
    use phone_ledger::domain::types::ConflictReason;
    use phone_ledger::domain::ResourceKind;
    use phone_ledger::store::{AppendMeta, AppendRequest};
    const EVENTS: u64 = 150_000;
    let mut server = TestServer::start();
    let id = request(&server.client(ACCOUNT), MessageType::Transactional).await;
    server.stop();
    // 150,000 refusals of about 1.5 KiB each on one number (refusals leave its state as it is).
    {
        let store = common::open_log(server.dir.path());
        let why = "x".repeat(900);
        let refused = PhoneNumberEvent::ReleaseRejected {
            reason: Rejection::conflict(ConflictReason::DeletionProtectionEnabled, ResourceKind::PhoneNumber, &id, &why),
        };
        let mut version = store.stream_head(&id).await.expect("head").version;
        for _ in 0..EVENTS / 1_000 {
            let batch = vec![refused.clone(); 1_000];
            let meta = AppendMeta::direct(ACCOUNT, "us-east-1", "bulk", "ReleasePhoneNumber/Release");
            store
                .append(AppendRequest::plain(&id, version, meta, pending_events(&batch).expect("events")))
                .await
                .expect("append");
            version += 1_000;
        }
        store.close().await.expect("close");
    }
    // sled's page cache is kept small, so that what grows is what the export itself holds.
    let (mut child, addr) = common::spawn_binary(server.dir.path(), &[("PHONE_LEDGER_STORE__SLED__CACHE_CAPACITY_BYTES", "16777216")]);
    let before = peak_rss_kib(child.id());
    let mut response = reqwest::get(format!("http://{addr}/audit/export")).await.expect("export");
    assert_eq!(response.status(), 200);
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let after = peak_rss_kib(child.id());
    common::signal(&child, "TERM");
    let _ = child.wait();
    assert!(lines as u64 > EVENTS, "every event exported: {lines} lines");
    let growth_mib = after.saturating_sub(before) / 1024;
    let export_mib = bytes / (1024 * 1024);
    eprintln!(
        "export of {export_mib} MiB ({lines} events): peak RSS {} → {} MiB",
        before / 1024,
        after / 1024
    );
    // The growth is what reading through the log costs anyway (sled's buffers: about 80 MiB
    // here, for 90 MiB and 230 MiB exports alike); building the body in memory added the export
    // itself on top (a 90 MiB export: +275 MiB).
    assert!(export_mib >= 200, "the export is large: {export_mib} MiB");
    assert!(
        growth_mib < 120,
        "the server's peak memory grew by {growth_mib} MiB for a {export_mib} MiB export"
    );
}

/// Followers of the live feed are bounded (`max_followers`): beyond it a follower is told to
/// retry (ThrottlingException), and a follower that leaves gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_the_feed_are_bounded() {
    let server = TestServer::start_with(|c| c.max_followers = 2);
    request(&server.client(ACCOUNT), MessageType::Transactional).await;
    let url = format!("{}/audit/events?Follow=true", server.url());
    let first = reqwest::get(&url).await.expect("follow");
    let second = reqwest::get(&url).await.expect("follow");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = reqwest::get(&url).await.expect("follow");
    assert_eq!(third.status().as_u16(), 400);
    let body: Value = third.json().await.expect("json");
    assert_eq!(body["__type"], "ThrottlingException", "{body}");
    // Reads of the feed that do not follow are not bounded by it.
    let (status, _) = get(&format!("{}/audit/events", server.url())).await;
    assert_eq!(status, 200);
    // One leaves: its place is given back once the server notices.
    drop(first);
    let started = std::time::Instant::now();
    loop {
        let again = reqwest::get(&url).await.expect("follow");
        if again.status().as_u16() == 200 {
            break;
        }
        // Noticed at the second keep-alive written to it (every 4 s).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the place was never given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!("a follower's place came back after {:?}", started.elapsed());
}

/// One account cannot take every follower's place: beyond `max_followers_per_account` its
/// followers are refused while another account's are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_take_every_followers_place() {
    let server = TestServer::start_with(|c| {
        c.max_followers = 10;
        c.max_followers_per_account = 2;
    });
    let url = format!("{}/audit/events?Follow=true", server.url());
    let http = reqwest::Client::new();
    let follow = |account: &'static str| {
        http.get(&url)
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 Credential={account}/20261127/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .send()
    };
    let mine = [
        follow("111122223333").await.expect("follow"),
        follow("111122223333").await.expect("follow"),
    ];
    assert!(mine.iter().all(|r| r.status() == 200));
    let third = follow("111122223333").await.expect("follow");
    assert_eq!(third.status().as_u16(), 400);
    let body: Value = third.json().await.expect("json");
    assert_eq!(body["__type"], "ThrottlingException");
    assert!(body["Message"].as_str().unwrap_or_default().contains("111122223333"), "{body}");
    let theirs = follow("444455556666").await.expect("follow");
    assert_eq!(theirs.status().as_u16(), 200, "another account is still served");
}

/// The live feed's shared tail: a follower that reads gets every event in order; one that does
/// not read is told, once it is `lag_limit` batches behind, where to resume, and dropped; one
/// that starts from position 0 later catches up from the log and then follows live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_share_one_tail_and_a_laggard_is_told_and_dropped() {
    use futures_util::StreamExt;
    use phone_ledger::audit::query::FeedFilter;
    use phone_ledger::audit::tail::SharedTail;
    use phone_ledger::store::{AppendMeta, AppendRequest, PendingEvent};
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("dir");
    let store = common::open_log(dir.path());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let lag_limit = 4;
    let tail = SharedTail::start(store.clone(), stopping.clone(), lag_limit).expect("a writable log has a tail");
    let follower = || Box::pin(tail.follow(store.clone(), FeedFilter::default(), stopping.clone(), ()));
    let (mut reader, mut laggard) = (follower(), follower());
    // Each catches up (there is nothing yet) and joins the tail.
    for f in [&mut reader, &mut laggard] {
        assert!(tokio::time::timeout(Duration::from_millis(200), f.next()).await.is_err());
    }
    let append = |i: u64| {
        let event = PendingEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "Followed".into(),
            payload: serde_json::json!({ "Index": i }),
        };
        let meta = AppendMeta::direct(ACCOUNT, "us-east-1", "follow-test", "Test/Append");
        store.append(AppendRequest::plain(&format!("stream-{i}"), 0, meta, vec![event]))
    };
    // One commit at a time, each read by `reader` before the next: one batch each.
    let batches = 3 * lag_limit as u64;
    for i in 1..=batches {
        append(i).await.expect("append");
        let chunk = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .expect("the reader is served")
            .expect("open")
            .expect("chunk");
        let text = String::from_utf8_lossy(&chunk).to_string();
        assert!(text.starts_with(&format!("id: {i}\n")), "{text}");
    }
    // The laggard never read: told where to resume, then its stream ends.
    let told = laggard.next().await.expect("told").expect("chunk");
    let text = String::from_utf8_lossy(&told).to_string();
    assert!(text.starts_with("event: dropped\n"), "{text}");
    assert!(text.contains("\"ResumeAfter\":0"), "{text}");
    assert!(laggard.next().await.is_none(), "dropped");

    // A late follower from 0 reads the log, then follows live.
    let mut late = follower();
    let caught_up = late.next().await.expect("open").expect("chunk");
    assert_eq!(String::from_utf8_lossy(&caught_up).matches("id: ").count() as u64, batches);
    append(batches + 1).await.expect("append");
    let live = tokio::time::timeout(Duration::from_secs(5), late.next())
        .await
        .expect("served live")
        .expect("open")
        .expect("chunk");
    assert!(String::from_utf8_lossy(&live).starts_with(&format!("id: {}\n", batches + 1)));
    stop.send(true).expect("stop");
    assert!(late.next().await.is_none(), "followers end when the server stops");
}

/// The long-running commands show a progress bar on a terminal (a pseudo-terminal from
/// util-linux's `script`) and write nothing but their results when piped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_on_a_terminal_and_stays_quiet_when_piped() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    for _ in 0..3 {
        request(&c, MessageType::Transactional).await;
    }
    server.stop();
    let dir = server.dir.path().to_string_lossy().to_string();
    for command in ["verify", "recheck"] {
        let (code, out, err) = cli(&["--data-dir", &dir, command]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(err.is_empty(), "{command} piped wrote to stderr: {err:?}");
    }
    let has_script = Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    if !common::tool_available("script (util-linux)", has_script, "apt-get install util-linux") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_phone-ledger");
    for (command, shown) in [("verify", "verifying the chain"), ("recheck", "re-deciding every command")] {
        let out = Command::new("script")
            .args(["-qec", &format!("{bin} audit --data-dir {dir} {command}"), "/dev/null"])
            .output()
            .expect("script");
        let terminal = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{terminal}");
        assert!(
            terminal.contains(shown) && terminal.contains("events"),
            "{command} on a terminal: {terminal:?}"
        );
    }
}

/// `phone-ledger audit --server` sends a throttled question again, as the AWS tools do: an
/// account held to one request a second still gets its answers, a little later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_out_a_throttled_question() {
    let server = TestServer::start_with(|c| c.account_requests_per_sec = 1);
    let url = server.url();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let (code, out, err) = cli(&["--server", &url, "digest"]);
        assert_eq!(code, 0, "{out} {err}");
    }
    // A burst of one, then one a second: the third answer came at least a second after the first.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "{:?}", started.elapsed());
}

/// The audit command names things as a person knows them: an E.164 number, or an opt-out
/// list's name. Against a server a name is the caller's own list; offline (every account's log)
/// one list of that name is found wherever it is, and two are told apart only by their ARNs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_command_takes_an_e164_number_and_an_opt_out_list_name() {
    let mut server = TestServer::start();
    let (mine, theirs) = (server.client(ACCOUNT), server.client(OTHER_ACCOUNT));
    let (_, e164) = common::request_with_number(&mine, MessageType::Transactional).await;
    mine.create_opt_out_list().opt_out_list_name("solo").send().await.expect("create");
    // A name that starts as an id does is still a name.
    mine.create_opt_out_list()
        .opt_out_list_name("phone-alerts")
        .send()
        .await
        .expect("create");
    for client in [&mine, &theirs] {
        client
            .create_opt_out_list()
            .opt_out_list_name("shared")
            .send()
            .await
            .expect("create");
    }
    theirs
        .put_opted_out_number()
        .opt_out_list_name("shared")
        .opted_out_number("+12065550142")
        .send()
        .await
        .expect("put");
    let url = server.url();
    let as_theirs = [
        ("AWS_ACCESS_KEY_ID", OTHER_ACCOUNT),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_PROFILE", ""),
    ];
    let (code, out, err) = cli_with(&as_theirs, &["--server", &url, "--json", "events", "shared"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("NumberOptedOut") && out.contains(OTHER_ACCOUNT),
        "the caller's own list: {out}"
    );
    let (code, out, err) = cli(&["--server", &url, "--json", "events", &e164]);
    assert_eq!((code, out.contains("PhoneNumberRequested")), (0, true), "{out}{err}");

    server.stop();
    let dir = server.dir.path().to_string_lossy().to_string();
    for name in ["solo", "phone-alerts"] {
        let (code, out, err) = cli(&["--data-dir", &dir, "--json", "events", name]);
        assert_eq!((code, out.contains("OptOutListCreated")), (0, true), "{name}: {out}{err}");
    }
    let (code, out, err) = cli(&["--data-dir", &dir, "--json", "state", &e164]);
    assert_eq!((code, out.contains(&e164)), (0, true), "{out}{err}");
    let (code, _, err) = cli(&["--data-dir", &dir, "events", "shared"]);
    assert_eq!(code, 2, "{err}");
    for account in [ACCOUNT, OTHER_ACCOUNT] {
        let arn = format!("arn:aws:sms-voice:us-east-1:{account}:opt-out-list/shared");
        assert!(err.contains(&arn), "names {arn}: {err}");
        let (code, out, err) = cli(&["--data-dir", &dir, "--json", "events", &arn]);
        assert_eq!((code, out.contains("OptOutListCreated")), (0, true), "{out}{err}");
    }
    let (code, _, err) = cli(&["--data-dir", &dir, "events", "nosuch"]);
    assert_eq!(code, 2);
    assert!(err.contains("nosuch does not exist"), "{err}");
}
