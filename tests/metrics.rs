//! `GET /metrics`: the Prometheus text format, checked by Prometheus's own `promtool check
//! metrics` (Debian's prometheus package, which `.ci/run` installs), and counters and histograms
//! that move with the requests, the group commits and the actors.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use common::{request, sample, TestServer, ACCOUNT};

async fn scrape(server: &TestServer) -> String {
    let resp = reqwest::get(format!("{}/metrics", server.url())).await.expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    resp.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_move() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let before = scrape(&server).await;
    let released_ok = r#"phone_ledger_requests_total{operation="ReleasePhoneNumber",outcome="200",reason=""}"#;
    let refused =
        r#"phone_ledger_requests_total{operation="ReleasePhoneNumber",outcome="ConflictException",reason="DELETION_PROTECTION_ENABLED"}"#;

    let number = request(&c, MessageType::Transactional).await;
    c.update_phone_number()
        .phone_number_id(&number)
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("protect");
    c.release_phone_number()
        .phone_number_id(&number)
        .send()
        .await
        .expect_err("protected");
    c.update_phone_number()
        .phone_number_id(&number)
        .deletion_protection_enabled(false)
        .send()
        .await
        .expect("unprotect");
    c.release_phone_number().phone_number_id(&number).send().await.expect("released");
    // An operation that does not exist is counted as "unknown": callers cannot make new series.
    let _ = reqwest::Client::new()
        .post(format!("{}/", server.url()))
        .header("X-Amz-Target", "PinpointSMSVoiceV2.MadeUpOperation12345")
        .header("Content-Type", "application/x-amz-json-1.0")
        .body("{}")
        .send()
        .await
        .expect("unknown operation");

    let after = scrape(&server).await;
    assert_eq!(sample(&after, released_ok) - sample(&before, released_ok), 1.0, "{after}");
    assert_eq!(sample(&after, refused) - sample(&before, refused), 1.0, "{after}");
    assert!(!after.contains("MadeUpOperation12345"), "{after}");
    assert!(
        sample(
            &after,
            r#"phone_ledger_requests_total{operation="unknown",outcome="UnknownOperationException",reason=""}"#
        ) >= 1.0,
        "{after}"
    );
    let latency = r#"phone_ledger_request_duration_seconds_count{operation="ReleasePhoneNumber"}"#;
    assert!(sample(&after, latency) - sample(&before, latency) >= 2.0, "{after}");
    assert!(after.contains(r#"phone_ledger_request_duration_seconds_bucket{operation="ReleasePhoneNumber",le="+Inf"}"#));
    // Every accepted or refused command was appended by a group commit, made durable once each.
    assert!(sample(&after, "phone_ledger_commit_batch_size_count") - sample(&before, "phone_ledger_commit_batch_size_count") >= 5.0);
    assert!(
        after.contains("phone_ledger_flush_duration_seconds_bucket{durability=\"fsync\""),
        "{after}"
    );
    assert!(after.contains("# TYPE phone_ledger_writer_queue_depth gauge"), "{after}");
    assert!(
        sample(&after, r#"phone_ledger_actor_activations_total{kind="phone-number"}"#) >= 1.0,
        "{after}"
    );
    assert!(after.contains(r#"phone_ledger_live_actors{kind="phone-number"}"#), "{after}");

    let has_promtool = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !common::tool_available("promtool", has_promtool, "apt-get install prometheus") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check.stdin.take().expect("stdin").write_all(after.as_bytes()).expect("write");
    let out = check.wait_with_output().expect("promtool output");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{after}"
    );
}

/// Every kind of state reads back from the snapshots its actors store: with a snapshot after
/// every event and one live actor of each kind, commands alternating between two resources of
/// each kind activate their actors from snapshots, and none is found unusable (a state that would
/// not read back as it was stored is replayed instead: silently slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_state_is_activated_from_its_snapshot() {
    let server = TestServer::start_with(|c| {
        c.snapshot_every = 1;
        c.max_live_actors = 1;
    });
    let c = server.client(ACCOUNT);
    let loads = |text: &str, from: &str| sample(text, &format!("phone_ledger_snapshot_loads_total{{from=\"{from}\"}}"));
    let before = scrape(&server).await;

    let mut numbers = Vec::new();
    let mut pools = Vec::new();
    for i in 0..2 {
        let number = request(&c, MessageType::Transactional).await;
        c.put_keyword()
            .origination_identity(&number)
            .keyword("JOIN")
            .keyword_message("Welcome")
            .send()
            .await
            .expect("PutKeyword");
        let other = request(&c, MessageType::Transactional).await;
        let pool = c
            .create_pool()
            .origination_identity(&other)
            .message_type(MessageType::Transactional)
            .send()
            .await
            .expect("CreatePool");
        pools.push(pool.pool_id().expect("pool id").to_string());
        numbers.push(number);
        c.create_opt_out_list()
            .opt_out_list_name(format!("snapshots-{i}"))
            .send()
            .await
            .expect("list");
        c.request_sender_id()
            .sender_id(format!("Snapshots{i}"))
            .iso_country_code("GB")
            .message_types(MessageType::Transactional)
            .send()
            .await
            .expect("RequestSenderId");
    }
    for round in 0..3 {
        let protect = round % 2 == 0;
        for i in 0..2 {
            c.update_phone_number()
                .phone_number_id(&numbers[i])
                .deletion_protection_enabled(protect)
                .send()
                .await
                .expect("number");
            c.update_pool()
                .pool_id(&pools[i])
                .deletion_protection_enabled(protect)
                .send()
                .await
                .expect("pool");
            c.put_opted_out_number()
                .opt_out_list_name(format!("snapshots-{i}"))
                .opted_out_number(format!("+1206555010{round}"))
                .send()
                .await
                .expect("opt out");
            c.update_sender_id()
                .sender_id(format!("Snapshots{i}"))
                .iso_country_code("GB")
                .deletion_protection_enabled(protect)
                .send()
                .await
                .expect("sender id");
        }
    }
    let after = scrape(&server).await;
    let used = loads(&after, "snapshot") - loads(&before, "snapshot");
    // Four kinds, each alternating between two resources, three rounds.
    assert!(used >= 24.0, "activations from a snapshot: {used}");
    assert_eq!(loads(&after, "unusable-snapshot"), loads(&before, "unusable-snapshot"));
}
