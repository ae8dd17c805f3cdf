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
    for _ in 0..20 {
        let (status, body) = call(&http, &url, "111122223333", "DescribePhoneNumbers", json!({})).await;
        codes.push((status, body["__type"].as_str().map(str::to_string)));
    }
    let throttled = codes
        .iter()
        .filter(|(s, t)| *s == StatusCode::BAD_REQUEST && t.as_deref() == Some("ThrottlingException"))
        .count();
    assert!(throttled >= 10, "{codes:?}");
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
}
