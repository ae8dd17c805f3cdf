//! Strict SigV4 mode (`[auth] mode = "sigv4"`) against the real server: the AWS SDK for Rust
//! signing with credentials of the credentials file, every way a signature can be wrong answered
//! with the error AWS answers, nothing written for a refused request, and the audit trail scoped
//! to the caller's account (the API and `phone-ledger audit --server`).

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_sdk_pinpointsmsvoicev2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{events_in_log, TestServer, REGION};
use phone_ledger::auth::{sign_request, AuthMode};
use serde_json::Value;

const A: (&str, &str, &str) = ("AKIAACCOUNTA00000001", "secret-of-account-a-0000000000", "111122223333");
const B: (&str, &str, &str) = ("AKIAACCOUNTB00000001", "secret-of-account-b-0000000000", "444455556666");
const ADMIN: (&str, &str, &str) = ("AKIAAUDITADMIN000001", "secret-of-the-auditor-00000000", "999988887777");

fn strict_server() -> TestServer {
    TestServer::start_with(|config| {
        let path = config.data_dir.join("credentials.toml");
        let table = |(key, secret, account): (&str, &str, &str), admin: bool| {
            format!(
                "[[credentials]]\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\naccount = \"{account}\"\nadmin = {admin}\n"
            )
        };
        let text = [table(A, false), table(B, false), table(ADMIN, true)].concat();
        std::fs::write(&path, text).expect("credentials file");
        config.auth.mode = AuthMode::Sigv4;
        config.auth.credentials_file = Some(path);
    })
}

fn client(url: &str, key: &str, secret: &str) -> Client {
    let config = aws_sdk_pinpointsmsvoicev2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

/// A request signed with `(key, secret)` at `at`, sent with a plain HTTP client.
async fn signed(method: &str, url: &str, body: &str, who: (&str, &str, &str), at: SystemTime) -> (u16, Value) {
    let credentials = aws_credential_types::Credentials::new(who.0, who.1, None, None, "test");
    let mut headers = vec![("content-type", "application/x-amz-json-1.0")];
    if method == "POST" {
        headers.push(("x-amz-target", "PinpointSMSVoiceV2.DescribePhoneNumbers"));
    }
    let added = sign_request(method, url, &headers, body.as_bytes(), &credentials, REGION, at).expect("sign");
    let mut request = reqwest::Client::new()
        .request(method.parse().expect("method"), url)
        .body(body.to_string());
    for (k, v) in headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(added) {
        request = request.header(k, v);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn unsigned(method: &str, url: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method.parse().expect("method"), url)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", "PinpointSMSVoiceV2.DescribePhoneNumbers")
        .body("{}");
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `member` of every event of a feed page.
fn members<'a>(feed: &'a Value, member: &str) -> Vec<&'a str> {
    feed["Events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e[member].as_str()).collect())
        .unwrap_or_default()
}

async fn export_of(url: &str, who: (&str, &str, &str)) -> String {
    let credentials = aws_credential_types::Credentials::new(who.0, who.1, None, None, "test");
    let export_url = format!("{url}/audit/export");
    let mut request = reqwest::Client::new().get(&export_url);
    for (k, v) in sign_request("GET", &export_url, &[], b"", &credentials, REGION, SystemTime::now()).expect("sign") {
        request = request.header(k, v);
    }
    request.send().await.expect("export").text().await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_signs_and_acts_as_its_credentials_account() {
    let server = strict_server();
    let url = server.url();
    let a = client(&url, A.0, A.1);
    let (id, _) = common::request_with_number(&a, MessageType::Transactional).await;
    let described = a.describe_phone_numbers().phone_number_ids(&id).send().await.expect("own number");
    let arn = described.phone_numbers()[0].phone_number_arn();
    assert!(arn.contains(":111122223333:"), "the credential's account owns it: {arn}");

    // Account B, correctly signed, cannot see it or touch it.
    let b = client(&url, B.0, B.1);
    let err = b
        .release_phone_number()
        .phone_number_id(&id)
        .send()
        .await
        .expect_err("another account's number");
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_signature_gets_the_error_aws_answers_and_writes_nothing() {
    let server = strict_server();
    let url = server.url();
    let before = events_in_log(&url).await;

    // Through the SDK: a wrong secret, an unknown key.
    let wrong_secret = client(&url, A.0, "not-the-secret-of-account-a-000");
    let err = wrong_secret
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(aws_sdk_pinpointsmsvoicev2::types::NumberCapability::Sms)
        .number_type(aws_sdk_pinpointsmsvoicev2::types::RequestableNumberType::LongCode)
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");
    assert!(err.message().unwrap_or_default().contains("does not match"), "{err:?}");
    let unknown = client(&url, "AKIANOBODYKNOWS00001", A.1);
    let err = unknown.describe_pools().send().await.expect_err("unknown key");
    assert_eq!(err.code(), Some("UnrecognizedClientException"), "{err:?}");

    // By hand: no Authorization, a malformed one, an expired and a future signature, and a body
    // changed after signing.
    let (status, body) = unsigned("POST", &format!("{url}/"), None).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException"))
    );
    let (status, body) = unsigned("POST", &format!("{url}/"), Some("AWS4-HMAC-SHA256 Credential=AKIAACCOUNTA00000001")).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("IncompleteSignatureException")),
        "{body}"
    );
    let hour = Duration::from_secs(3600);
    for at in [SystemTime::now() - hour, SystemTime::now() + hour] {
        let (status, body) = signed("POST", &format!("{url}/"), "{}", A, at).await;
        assert_eq!(
            (status, body["__type"].as_str()),
            (400, Some("InvalidSignatureException")),
            "{body}"
        );
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Signature expired") || message.starts_with("Signature not yet current"),
            "{message}"
        );
    }
    let (status, _) = signed("POST", &format!("{url}/"), "{}", A, SystemTime::now()).await;
    assert_eq!(status, 200, "the same request signed now is accepted");

    let credentials = aws_credential_types::Credentials::new(A.0, A.1, None, None, "test");
    let headers = [
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amz-target", "PinpointSMSVoiceV2.ReleasePhoneNumber"),
    ];
    let signed_for = sign_request("POST", &format!("{url}/"), &headers, b"{}", &credentials, REGION, SystemTime::now()).expect("sign");
    let mut tampered = reqwest::Client::new()
        .post(format!("{url}/"))
        .body(r#"{"PhoneNumberId":"phone-00000000000000000000000000000000"}"#);
    for (k, v) in headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(signed_for) {
        tampered = tampered.header(k, v);
    }
    let answer = tampered.send().await.expect("answer");
    assert_eq!(
        answer.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
        Some("InvalidSignatureException")
    );
    assert_eq!(events_in_log(&url).await, before, "no refused request reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_reads_only_its_own_audit_trail() {
    let server = strict_server();
    let url = server.url();
    let (a_number, _) = common::request_with_number(&client(&url, A.0, A.1), MessageType::Transactional).await;
    let (b_number, _) = common::request_with_number(&client(&url, B.0, B.1), MessageType::Promotional).await;
    let now = SystemTime::now;

    // Unsigned: refused.
    let (status, body) = unsigned("GET", &format!("{url}/audit/phone-numbers/{a_number}/events"), None).await;
    assert_eq!(
        (status, body["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException"))
    );

    // A sees its own number, B is told it does not exist (as for an unknown id).
    for what in ["events", "state", "replay"] {
        let (status, _) = signed("GET", &format!("{url}/audit/phone-numbers/{a_number}/{what}"), "", A, now()).await;
        assert_eq!(status, 200, "{what}");
        let (status, body) = signed("GET", &format!("{url}/audit/phone-numbers/{a_number}/{what}"), "", B, now()).await;
        assert_eq!(
            (status, body["__type"].as_str()),
            (404, Some("ResourceNotFoundException")),
            "{what}"
        );
    }

    // The feed and the export hold only the caller's own entries; asking for another account's
    // is refused.
    let (status, feed) = signed("GET", &format!("{url}/audit/events"), "", B, now()).await;
    assert_eq!(status, 200);
    let accounts = members(&feed, "Account");
    assert!(!accounts.is_empty() && accounts.iter().all(|a| *a == B.2), "{accounts:?}");
    let streams = members(&feed, "StreamId");
    assert!(streams.contains(&b_number.as_str()) && !streams.contains(&a_number.as_str()));
    let (status, body) = signed("GET", &format!("{url}/audit/events?Account={}", A.2), "", B, now()).await;
    assert_eq!((status, body["__type"].as_str()), (403, Some("AccessDeniedException")));
    let b_export = export_of(&url, B).await;
    assert!(
        b_export.lines().count() > 0 && !b_export.contains(&a_number),
        "B's export holds B's entries only"
    );

    // The whole-log questions are for the admin, who sees every account.
    for what in ["digest", "verify", "recheck"] {
        let (status, body) = signed("GET", &format!("{url}/audit/{what}"), "", A, now()).await;
        assert_eq!((status, body["__type"].as_str()), (403, Some("AccessDeniedException")), "{what}");
        let (status, _) = signed("GET", &format!("{url}/audit/{what}"), "", ADMIN, now()).await;
        assert_eq!(status, 200, "{what}");
    }
    let (_, feed) = signed("GET", &format!("{url}/audit/events"), "", ADMIN, now()).await;
    let all = members(&feed, "StreamId");
    assert!(all.contains(&a_number.as_str()) && all.contains(&b_number.as_str()));
    let (status, _) = signed("GET", &format!("{url}/audit/phone-numbers/{a_number}/events"), "", ADMIN, now()).await;
    assert_eq!(status, 200);
    let admin_export = export_of(&url, ADMIN).await;
    assert!(admin_export.contains(&a_number) && admin_export.contains(&b_number));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_command_signs_with_the_usual_aws_credentials() {
    let server = strict_server();
    let url = server.url();
    let (a_number, _) = common::request_with_number(&client(&url, A.0, A.1), MessageType::Transactional).await;
    let audit = |who: Option<(&str, &str, &str)>, args: &[&str]| {
        let home = tempfile::tempdir().expect("home");
        let mut command = Command::new(env!("CARGO_BIN_EXE_phone-ledger"));
        command
            .args(["audit", "--server", &url])
            .args(args)
            // Only the environment is a credential source here: no profile file, no instance role.
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN");
        if let Some((key, secret, _)) = who {
            command.env("AWS_ACCESS_KEY_ID", key).env("AWS_SECRET_ACCESS_KEY", secret);
        }
        let out = command.output().expect("run phone-ledger audit");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = audit(Some(A), &["events", &a_number]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("PhoneNumberRequested"), "{stdout}");
    let (code, _, stderr) = audit(Some(B), &["events", &a_number]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("does not exist"), "{stderr}");
    let (code, _, stderr) = audit(None, &["events", &a_number]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("missing Authentication Token"), "{stderr}");
    let (code, stdout, stderr) = audit(Some(ADMIN), &["verify"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, _, stderr) = audit(Some(A), &["verify"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("admin"), "{stderr}");
}

#[test]
fn boto3_signs_too() {
    let has_boto3 = Command::new("python3")
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !common::tool_available("boto3", has_boto3, "pip install boto3") {
        return;
    }
    let server = strict_server();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_sigv4.py");
    let out = Command::new("python3")
        .arg(script)
        .args([server.url().as_str(), A.0, A.1, A.2])
        .output()
        .expect("python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("boto3 sigv4: ok"), "{stdout}");
}

/// `phone-ledger loadtest --sign` drives a strict server with the environment's credentials,
/// reads the log back through the signed export (its account's own entries) and passes.
#[test]
fn the_load_tester_signs_too() {
    let server = strict_server();
    let home = tempfile::tempdir().expect("home");
    let out = Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .args(["loadtest", "--server", &server.url(), "--sign", "--account", A.2])
        .args(["--clients", "8", "--numbers", "20", "--pools", "2", "--requests", "300", "--quiet"])
        .env("HOME", home.path())
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", A.0)
        .env("AWS_SECRET_ACCESS_KEY", A.1)
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("VERDICT: PASS"), "{stdout}");
    // Unsigned (its access key is the account id, which the credentials file does not know),
    // the same run is refused by the server at its first request.
    let out = Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .args(["loadtest", "--server", &server.url(), "--account", A.2])
        .args(["--clients", "8", "--numbers", "20", "--pools", "2", "--requests", "300", "--quiet"])
        .output()
        .expect("run loadtest");
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("UnrecognizedClientException"), "{said}");
}

/// A simulated inbound message (an end user's STOP) changes an account's opt-outs, so it is
/// authenticated like every API call: unsigned or badly signed it is refused and writes nothing,
/// and signed by another account it does not reach this account's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_inbound_message_must_be_signed_by_the_numbers_account() {
    let server = strict_server();
    let url = server.url();
    let a = client(&url, A.0, A.1);
    let (_, e164) = common::request_with_number(&a, MessageType::Transactional).await;
    let inbound = format!("{url}/simulate/inbound-message");
    let body = serde_json::json!({"OriginationNumber": "+12065550142", "DestinationPhoneNumber": e164, "MessageBody": "STOP"}).to_string();
    let send = |headers: Vec<(String, String)>| {
        let (inbound, body) = (inbound.clone(), body.clone());
        async move {
            let mut request = reqwest::Client::new().post(&inbound).body(body);
            for (k, v) in headers {
                request = request.header(k, v);
            }
            let response = request.send().await.expect("answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let signed_by = |who: (&str, &str, &str)| {
        let credentials = aws_credential_types::Credentials::new(who.0, who.1, None, None, "test");
        let headers = [("content-type", "application/json")];
        let added = sign_request("POST", &inbound, &headers, body.as_bytes(), &credentials, REGION, SystemTime::now()).expect("sign");
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(added)
            .collect::<Vec<_>>()
    };
    let before = events_in_log(&url).await;

    let (status, answer) = send(vec![("content-type".into(), "application/json".into())]).await;
    assert_eq!(
        (status, answer["__type"].as_str()),
        (403, Some("MissingAuthenticationTokenException")),
        "{answer}"
    );
    let wrong = signed_by((A.0, "not-the-secret-of-account-a-000", A.2));
    let (status, answer) = send(wrong).await;
    assert_eq!(
        (status, answer["__type"].as_str()),
        (400, Some("InvalidSignatureException")),
        "{answer}"
    );
    let (status, answer) = send(signed_by(B)).await;
    assert_eq!(
        (status, answer["__type"].as_str()),
        (400, Some("ResourceNotFoundException")),
        "{answer}"
    );
    assert_eq!(events_in_log(&url).await, before, "no refused message reached the log");

    let (status, answer) = send(signed_by(A)).await;
    assert_eq!(status, 200, "{answer}");
    let opted_out = a
        .describe_opted_out_numbers()
        .opt_out_list_name("Default")
        .send()
        .await
        .expect("DescribeOptedOutNumbers");
    let numbers: Vec<&str> = opted_out.opted_out_numbers().iter().map(|o| o.opted_out_number()).collect();
    assert_eq!(numbers, ["+12065550142"]);
}

/// A caller whose key is unknown is refused from its headers alone, before its body: one that
/// declares a body and never sends it is answered at once, not after the body's deadline (and
/// holds no share of the budget of bodies being received while it stalls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = strict_server();
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let now = time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: PinpointSMSVoiceV2.DescribePhoneNumbers\r\n\
         X-Amz-Date: {date}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIANOBODYKNOWS00001/{}/{REGION}/sms-voice/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature={}\r\nContent-Length: 200000\r\n\r\n",
        &date[..8],
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).await.expect("send the head, and no body");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer)).await;
    let n = read.expect("answered before the body (its deadline is 10 s)").expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.contains("UnrecognizedClientException"), "{text}");
}
