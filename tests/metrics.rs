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
