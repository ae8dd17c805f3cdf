//! Back-pressure: a saturated server, or an account over its request rate, gets
//! `ThrottlingException` (HTTP 400, as AWS answers it) at once instead of an unbounded queue;
//! other accounts and later requests are served normally.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn call(http: &reqwest::Client, url: &str, account: &str, operation: &str, body: Value) -> (StatusCode, Value) {
    let resp = http
        .post(url)
        .header("X-Amz-Target", format!("PinpointSMSVoiceV2.{operation}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("response");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

fn request_body() -> Value {
    json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_server_throttles_instead_of_queueing() {
    let server = TestServer::start_with(|c| c.max_in_flight = 2);
    let url = format!("{}/", server.url());
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { call(&http, &url, "111122223333", "RequestPhoneNumber", request_body()).await })
        })
        .collect();
    let (mut ok, mut throttled) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match (status, body["__type"].as_str()) {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::BAD_REQUEST, Some("ThrottlingException")) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 1 && throttled >= 1, "ok {ok}, throttled {throttled}");
    // Nothing throttled was half-done: exactly the acknowledged numbers exist.
    let (_, listed) = call(&http, &url, "111122223333", "DescribePhoneNumbers", json!({})).await;
    assert_eq!(listed["PhoneNumbers"].as_array().expect("list").len(), ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_is_throttled_alone() {
    let server = TestServer::start_with(|c| c.account_requests_per_sec = 5);
    let url = format!("{}/", server.url());
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let (status, body) = call(&http, &url, "111122223333", "DescribePhoneNumbers", json!({})).await;
        codes.push((status, body["__type"].as_str().map(str::to_string)));
    }
    let took = started.elapsed().as_secs_f64();
    let throttled = codes
        .iter()
        .filter(|(s, t)| *s == StatusCode::BAD_REQUEST && t.as_deref() == Some("ThrottlingException"))
        .count();
    // A burst of 5, then 5 a second: however slowly this machine sent the 20, at most that many
    // were due to be served.
    let allowed = 5 + (5.0 * took).ceil() as usize;
    assert!(throttled >= 20usize.saturating_sub(allowed), "{took:.2} s: {codes:?}");
    assert!(throttled >= 1 || took > 3.0, "{took:.2} s: {codes:?}");
    assert!(
        codes.iter().take(5).all(|(s, _)| *s == StatusCode::OK),
        "the burst is served: {codes:?}"
    );
    // Another account is not affected.
    let (status, _) = call(&http, &url, "444455556666", "DescribePhoneNumbers", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // After a second the account is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, _) = call(&http, &url, "111122223333", "DescribePhoneNumbers", json!({})).await;
    assert_eq!(status, StatusCode::OK);

    // Audit questions count against the same rate: they read the same store.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let mut audit = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let resp = http
            .get(format!("{url}audit/events?Limit=1"))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=111122223333/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0",
            )
            .send()
            .await
            .expect("audit");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("json");
        audit.push((status, body["__type"].as_str().map(str::to_string)));
    }
    let took = started.elapsed().as_secs_f64();
    let throttled = audit.iter().filter(|(_, t)| t.as_deref() == Some("ThrottlingException")).count();
    assert!(
        throttled >= 20usize.saturating_sub(5 + (5.0 * took).ceil() as usize),
        "{took:.2} s: {audit:?}"
    );
    assert!(throttled >= 1 || took > 3.0, "{took:.2} s: {audit:?}");
    assert!(audit.iter().take(5).all(|(s, _)| *s == StatusCode::OK), "{audit:?}");
}

/// Clients that send a request's headers and then its body a byte at a time hold no place of
/// the server's bounded work: with room for 2 requests at once, 16 such clients leave every
/// normal request served, and each slow one is answered 408 (RequestTimeoutException, which the
/// SDKs retry) once the body deadline passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_lock_no_one_out() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.max_in_flight = 2;
        c.request_body_timeout_ms = 1500;
    });
    let addr = server.url().trim_start_matches("http://").to_string();
    let slow: Vec<_> = (0..16)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                let head = format!(
                    "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: PinpointSMSVoiceV2.DescribePhoneNumbers\r\n\
                     Content-Type: application/x-amz-json-1.0\r\nContent-Length: 1000\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.expect("head");
                let started = Instant::now();
                let mut answer = Vec::new();
                let mut buf = [0u8; 1024];
                while started.elapsed() < Duration::from_secs(10) && !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    tokio::select! {
                        n = s.read(&mut buf) => match n {
                            Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                            _ => break,
                        },
                        // A byte of the body every 300 ms, never the whole of it.
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {
                            if s.write_all(b" ").await.is_err() {
                                break;
                            }
                        }
                    }
                }
                (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let http = reqwest::Client::new();
    let url = format!("{}/", server.url());
    for _ in 0..10 {
        let (status, body) = call(&http, &url, "111122223333", "DescribePhoneNumbers", json!({})).await;
        assert_eq!(status, StatusCode::OK, "a normal request while slow bodies trickle in: {body}");
    }
    for task in slow {
        let (answer, took) = task.await.expect("task");
        assert!(answer.starts_with("HTTP/1.1 408"), "a slow body is cut off: {answer:?}");
        assert!(took < Duration::from_secs(5), "after the deadline, not at the end: {took:?}");
    }
}

/// A storage that stops answering (its one NATS server frozen with SIGSTOP) holds no client
/// longer than `request_timeout_ms`: each is told `ServiceUnavailableException` (the outcome is
/// unknown) at the deadline, not when the storage's own retries give up (an API call and an end
/// user's message through the simulation endpoint alike); the stalled work keeps
/// its places meanwhile (more requests are throttled, memory stays bounded), and once the
/// storage is back the server serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_storage_answers_at_the_request_deadline() {
    use phone_ledger::nats_cluster::{nats_server_available, LocalCluster};
    if !common::tool_available("nats-server", nats_server_available(), "apt-get install -y nats-server") {
        return;
    }
    let nats_dir = tempfile::tempdir().expect("dir");
    let nats = LocalCluster::start(nats_dir.path(), 1).expect("nats-server starts");
    let server = TestServer::start_with(|c| {
        c.store.backend = phone_ledger::store::Backend::Jetstream;
        c.store.jetstream = common::nats::fresh_settings(&nats.client_urls());
        c.store.jetstream.replicas = 1;
        c.pagination_secret = Some("one node on its own log".into());
        c.request_timeout_ms = 2_000;
        c.max_in_flight = 5;
    });
    let (url, http) = (server.url(), reqwest::Client::new());
    let (status, number) = call(&http, &url, "111122223333", "RequestPhoneNumber", request_body()).await;
    assert_eq!(status, StatusCode::OK);
    // An end user's STOP to that number, through the simulation endpoint: under the same deadline.
    let inbound = format!("{url}/simulate/inbound-message");
    let stop = json!({"OriginationNumber": "+12065550100", "DestinationPhoneNumber": number["PhoneNumber"], "MessageBody": "STOP"});

    let pid = nats.pid(0).expect("running").to_string();
    let kill = |sig: &str| std::process::Command::new("kill").args([sig, &pid]).status().expect("kill");
    assert!(kill("-STOP").success());
    let started = std::time::Instant::now();
    let stalled = (0..5).map(|i| match i {
        0 => call(&http, &inbound, "111122223333", "", stop.clone()),
        _ => call(&http, &url, "111122223333", "RequestPhoneNumber", request_body()),
    });
    for (status, body) in futures_util::future::join_all(stalled).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["__type"], "ServiceUnavailableException", "{body}");
        assert!(body["Message"].as_str().unwrap_or_default().contains("2000 ms"), "{body}");
    }
    let waited = started.elapsed();
    // The storage's own resends go on for 15 s; the clients were answered at the deadline.
    assert!(waited < std::time::Duration::from_secs(10), "answered after {waited:?}");
    // The stalled work still holds its five places.
    let (status, body) = call(&http, &url, "111122223333", "RequestPhoneNumber", request_body()).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ThrottlingException")),
        "{body}"
    );

    assert!(kill("-CONT").success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = call(&http, &url, "111122223333", "RequestPhoneNumber", request_body()).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served again: {status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The load test reads the log right after its race, when the account's rate may be spent: a
/// throttled read of the log is asked again, not taken for a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tests_log_read_waits_out_the_accounts_rate() {
    let server = TestServer::start_with(|c| c.account_requests_per_sec = 1);
    let url = format!("{}/", server.url());
    let http = reqwest::Client::new();
    // The load test's reads are unsigned: the default account's, whose budget this spends.
    let (status, _) = call(&http, &url, "000000000000", "RequestPhoneNumber", request_body()).await;
    assert_eq!(status, StatusCode::OK);
    let log = phone_ledger::loadtest::fetch_log(&server.url())
        .await
        .expect("the log, once the rate allows");
    assert_eq!(log.len(), 1, "{log:?}");
}

/// Bodies are read before the caller is known, so together they are bounded by a budget, not by
/// memory: while slow clients hold most of `max_body_buffer_bytes` in bodies they never finish,
/// a request whose body does not fit what is left is throttled at once, and once their deadline
/// has cut them off, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_not_yet_admitted_share_a_bounded_budget() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.max_body_bytes = 1024;
        c.max_body_buffer_bytes = 4096;
        c.request_body_timeout_ms = 2000;
    });
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: PinpointSMSVoiceV2.DescribePhoneNumbers\r\n\
             Content-Type: application/x-amz-json-1.0\r\nContent-Length: 1024\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&[b' '; 1000]).await.expect("most of the body");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = reqwest::Client::new();
    let url = format!("{}/", server.url());
    let padded = |n: usize| json!({ "MaxResults": 5 }).to_string() + &" ".repeat(n);
    let send = |body: String| {
        http.post(&url)
            .header("X-Amz-Target", "PinpointSMSVoiceV2.DescribePhoneNumbers")
            .header("Content-Type", "application/x-amz-json-1.0")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=111122223333/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body)
            .send()
    };
    let answer = send(padded(500)).await.expect("send");
    let status = answer.status();
    let body: Value = answer.json().await.expect("json");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["__type"], "ThrottlingException", "{body}");
    // The slow bodies are cut off at their deadline, and give their share back.
    for mut s in slow {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        assert!(answer.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&answer));
    }
    let answer = send(padded(500)).await.expect("send");
    assert_eq!(answer.status(), StatusCode::OK, "{:?}", answer.text().await);
}
