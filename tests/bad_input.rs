//! Bad input over raw HTTP: every validation rule the model states for the ten operations,
//! unknown operations, non-JSON, wrong content type and oversized bodies all get a clear 4xx
//! error shape, and the server stays healthy.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Raw {
    http: reqwest::Client,
    url: String,
}

impl Raw {
    async fn call(
        &self,
        target: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .post(&self.url)
            .header("X-Amz-Target", target)
            .header("Content-Type", content_type)
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=111122223333/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body)
            .send()
            .await
            .expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body is JSON ({e}): {text}"));
        (status, headers, value)
    }

    async fn op(&self, operation: &str, body: Value) -> (StatusCode, Value) {
        let (s, h, v) = self
            .call(
                &format!("PinpointSMSVoiceV2.{operation}"),
                "application/x-amz-json-1.0",
                body.to_string(),
            )
            .await;
        assert!(h.contains_key("x-amzn-requestid"), "every response carries x-amzn-RequestId");
        assert_eq!(
            h.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/x-amz-json-1.0")
        );
        if s != StatusCode::OK {
            assert_eq!(
                h.get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
                v["__type"].as_str(),
                "x-amzn-ErrorType matches __type"
            );
        }
        (s, v)
    }

    async fn healthy(&self) {
        let r = self.http.get(format!("{}health", self.url)).send().await.expect("health");
        assert_eq!(r.status(), StatusCode::OK);
    }
}

fn raw(server: &TestServer) -> Raw {
    Raw {
        http: reqwest::Client::new(),
        url: format!("{}/", server.url()),
    }
}

/// Asserts a ValidationException naming exactly `fields` (in any order) with `reason`.
fn assert_validation(status: StatusCode, body: &Value, reason: &str, fields: &[&str]) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["__type"], "ValidationException", "{body}");
    assert_eq!(body["Reason"], reason, "{body}");
    let mut named: Vec<&str> = body["Fields"]
        .as_array()
        .expect("Fields")
        .iter()
        .map(|f| f["Name"].as_str().expect("Name"))
        .collect();
    named.sort();
    named.dedup();
    let mut expected = fields.to_vec();
    expected.sort();
    assert_eq!(named, expected, "{body}");
    assert!(body["Message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_have_aws_shapes() {
    let server = TestServer::start();
    let r = raw(&server);

    let (s, _, b) = r
        .call("PinpointSMSVoiceV2.CreateConfigurationSet", "application/x-amz-json-1.0", "{}")
        .await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("UnknownOperationException"))
    );
    let (s, _, b) = r
        .call("SomeOtherService.ReleasePhoneNumber", "application/x-amz-json-1.0", "{}")
        .await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("UnknownOperationException"))
    );
    let (s, _, b) = r.call("", "application/x-amz-json-1.0", "{}").await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("UnknownOperationException"))
    );

    let (s, _, b) = r
        .call("PinpointSMSVoiceV2.ReleasePhoneNumber", "application/x-amz-json-1.0", "{not json")
        .await;
    assert_eq!((s, b["__type"].as_str()), (StatusCode::BAD_REQUEST, Some("SerializationException")));
    let (s, _, b) = r
        .call("PinpointSMSVoiceV2.ReleasePhoneNumber", "application/x-amz-json-1.0", "[1,2]")
        .await;
    assert_eq!((s, b["__type"].as_str()), (StatusCode::BAD_REQUEST, Some("SerializationException")));
    let (s, _, b) = r
        .call(
            "PinpointSMSVoiceV2.ReleasePhoneNumber",
            "application/x-amz-json-1.0",
            vec![0xffu8, 0xfe, 0x00],
        )
        .await;
    assert_eq!((s, b["__type"].as_str()), (StatusCode::BAD_REQUEST, Some("SerializationException")));

    let (s, _, b) = r.call("PinpointSMSVoiceV2.DescribePools", "text/plain", "{}").await;
    assert_eq!(
        (s, b["__type"].as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("SerializationException"))
    );

    let huge = json!({ "PhoneNumberId": "a".repeat(300_000) }).to_string();
    let (s, _, b) = r
        .call("PinpointSMSVoiceV2.ReleasePhoneNumber", "application/x-amz-json-1.0", huge)
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        (b["__type"].as_str(), b["Reason"].as_str()),
        (Some("ValidationException"), Some("MAXIMUM_SIZE_EXCEEDED"))
    );

    // Tens of thousands of bad list items: refused naming the first 20, in an answer of a few
    // KiB, not one 150 times the body (two errors of ~230 bytes for each 3-byte item).
    let many = json!({ "PhoneNumberIds": vec![""; 80_000] }).to_string();
    let resp = r
        .http
        .post(&r.url)
        .header("X-Amz-Target", "PinpointSMSVoiceV2.DescribePhoneNumbers")
        .header("Content-Type", "application/x-amz-json-1.0")
        .body(many)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await.expect("body");
    assert!(text.len() < 16 * 1024, "an answer of {} bytes", text.len());
    let b: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(b["Fields"].as_array().map(Vec::len), Some(20));
    assert!(
        b["Message"]
            .as_str()
            .is_some_and(|m| m.starts_with("More than 20 validation errors detected: ")),
        "{b}"
    );

    // Members of another operation are unknown members here, ignored as AWS JSON services do:
    // not read as this operation's ids or filters.
    let (s, b) = r.op("DescribePhoneNumbers", json!({"PoolIds": ["pool-x"]})).await;
    assert_eq!((s, b["PhoneNumbers"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{b}");
    // Nor parsed at all: one of another type is no reason to refuse the request.
    for filters in [json!([{"Name": "status", "Values": ["x"]}]), json!("x"), json!([{"Name": 5}])] {
        let (s, b) = r.op("DescribeOptOutLists", json!({"Filters": filters})).await;
        assert_eq!(
            (s, b["OptOutLists"][0]["OptOutListName"].as_str()),
            (StatusCode::OK, Some("Default")),
            "{filters}: {b}"
        );
    }

    // Wrong method or path.
    let resp = r.http.get(format!("{}/nothing", server.url())).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b: Value = resp.json().await.expect("json");
    assert_eq!(b["__type"], "UnknownOperationException");

    // An empty body is an empty input, as the SDKs send for operations without members.
    let (s, _, b) = r.call("PinpointSMSVoiceV2.DescribePools", "application/x-amz-json-1.0", "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    r.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_rule_is_enforced_and_named() {
    let server = TestServer::start();
    let r = raw(&server);
    let ok_request =
        json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"], "NumberType": "LONG_CODE"});

    // Required members: MISSING_PARAMETER naming each.
    let (s, b) = r.op("RequestPhoneNumber", json!({})).await;
    assert_validation(
        s,
        &b,
        "MISSING_PARAMETER",
        &["IsoCountryCode", "MessageType", "NumberCapabilities", "NumberType"],
    );
    for (op, fields) in [
        ("ReleasePhoneNumber", vec!["PhoneNumberId"]),
        ("UpdatePhoneNumber", vec!["PhoneNumberId"]),
        ("CreatePool", vec!["MessageType", "OriginationIdentity"]),
        ("DeletePool", vec!["PoolId"]),
        ("AssociateOriginationIdentity", vec!["OriginationIdentity", "PoolId"]),
        ("DisassociateOriginationIdentity", vec!["OriginationIdentity", "PoolId"]),
        ("ListPoolOriginationIdentities", vec!["PoolId"]),
    ] {
        let (s, b) = r.op(op, json!({})).await;
        assert_validation(s, &b, "MISSING_PARAMETER", &fields);
    }

    // Lengths, patterns, enums, list sizes: FIELD_VALIDATION_FAILED naming each member.
    let mut bad = ok_request.clone();
    bad["IsoCountryCode"] = json!("us");
    bad["MessageType"] = json!("URGENT");
    bad["NumberType"] = json!("SHORT_CODE"); // not a RequestableNumberType
    bad["NumberCapabilities"] = json!(["SMS", "VOICE", "MMS", "RCS", "SMS"]);
    bad["ClientToken"] = json!("has space");
    bad["OptOutListName"] = json!("x".repeat(257));
    bad["Tags"] = json!([{"Key": "", "Value": "v"}]);
    bad["NumberPreference"] = json!([{"Filter": ["abc"], "PreferenceType": ["Sometimes"]}]);
    let (s, b) = r.op("RequestPhoneNumber", bad).await;
    assert_validation(
        s,
        &b,
        "FIELD_VALIDATION_FAILED",
        &[
            "ClientToken",
            "IsoCountryCode",
            "MessageType",
            "NumberCapabilities",
            "NumberPreference[0].Filter[0]",
            "NumberPreference[0].PreferenceType[0]",
            "NumberType",
            "OptOutListName",
            "Tags[0].Key",
        ],
    );
    let (s, b) = r
        .op(
            "RequestPhoneNumber",
            json!({"IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["FAX"], "NumberType": "LONG_CODE"}),
        )
        .await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["NumberCapabilities[0]"]);

    let (s, b) = r.op("ReleasePhoneNumber", json!({"PhoneNumberId": "phone-1; DROP TABLE"})).await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["PhoneNumberId"]);
    let (s, b) = r.op("ReleasePhoneNumber", json!({"PhoneNumberId": ""})).await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["PhoneNumberId"]);
    let (s, b) = r
        .op(
            "UpdatePhoneNumber",
            json!({"PhoneNumberId": "phone-x", "TwoWayChannelArn": "short", "TwoWayChannelRole": "not-an-arn-but-long-enough"}),
        )
        .await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["TwoWayChannelArn", "TwoWayChannelRole"]);
    let (s, b) = r
        .op(
            "DescribePhoneNumbers",
            json!({"MaxResults": 101, "Owner": "NOBODY", "NextToken": "", "PhoneNumberIds": ["a","b","c","d","e","f"]}),
        )
        .await;
    assert_validation(
        s,
        &b,
        "FIELD_VALIDATION_FAILED",
        &["MaxResults", "NextToken", "Owner", "PhoneNumberIds"],
    );
    let (s, b) = r
        .op(
            "DescribePools",
            json!({"Filters": [{"Name": "number-type", "Values": ["LONG_CODE"]}], "MaxResults": 0}),
        )
        .await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["Filters[0].Name", "MaxResults"]);
    let (s, b) = r
        .op(
            "ListPoolOriginationIdentities",
            json!({"PoolId": "pool-x", "Filters": [{"Name": "iso-country-code", "Values": []}]}),
        )
        .await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["Filters[0].Values"]);
    let (s, b) = r
        .op(
            "AssociateOriginationIdentity",
            json!({"PoolId": "p", "OriginationIdentity": "o", "IsoCountryCode": "USA"}),
        )
        .await;
    assert_validation(s, &b, "FIELD_VALIDATION_FAILED", &["IsoCountryCode"]);

    // Wrong JSON types: CANNOT_PARSE naming the member.
    let (s, b) = r
        .op(
            "UpdatePhoneNumber",
            json!({"PhoneNumberId": "phone-x", "DeletionProtectionEnabled": "yes"}),
        )
        .await;
    assert_validation(s, &b, "CANNOT_PARSE", &["DeletionProtectionEnabled"]);
    let (s, b) = r.op("DescribePhoneNumbers", json!({"MaxResults": "ten"})).await;
    assert_validation(s, &b, "CANNOT_PARSE", &["MaxResults"]);
    let (s, b) = r.op("ReleasePhoneNumber", json!({"PhoneNumberId": ["phone-x"]})).await;
    assert_validation(s, &b, "CANNOT_PARSE", &["PhoneNumberId"]);

    // Unknown members are ignored, as AWS JSON services do.
    let mut extra = ok_request.clone();
    extra["SomethingNew"] = json!(1);
    let (s, b) = r.op("RequestPhoneNumber", extra).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (id, arn) = (b["PhoneNumberId"].as_str().expect("id").to_string(), b["PhoneNumberArn"].clone());
    let (s, b) = r
        .op("ListTagsForResource", json!({"ResourceArn": arn, "Tags": 5, "TagKeys": "x"}))
        .await;
    assert_eq!((s, b["Tags"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{b}");
    let (s, b) = r
        .op(
            "DeleteKeyword",
            json!({"OriginationIdentity": id, "Keyword": "NOPE", "KeywordAction": 5}),
        )
        .await;
    assert_eq!(b["__type"], "ResourceNotFoundException", "{s} {b}");

    // State-dependent validation comes from the decider: TWO_WAY_CHANNEL_NOT_PRESENT.
    let (s, b) = r.op("UpdatePhoneNumber", json!({"PhoneNumberId": id, "TwoWayEnabled": true})).await;
    assert_validation(s, &b, "TWO_WAY_CHANNEL_NOT_PRESENT", &["TwoWayChannelArn"]);

    // Not-found and conflict shapes carry their members.
    let (s, b) = r
        .op(
            "ReleasePhoneNumber",
            json!({"PhoneNumberId": "phone-00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"__type": "ResourceNotFoundException", "Message": b["Message"], "ResourceType": "phone-number", "ResourceId": "phone-00000000000000000000000000000000"})
    );
    r.op("UpdatePhoneNumber", json!({"PhoneNumberId": id, "DeletionProtectionEnabled": true}))
        .await;
    let (_, b) = r.op("ReleasePhoneNumber", json!({"PhoneNumberId": id})).await;
    assert_eq!(
        (
            b["__type"].as_str(),
            b["Reason"].as_str(),
            b["ResourceType"].as_str(),
            b["ResourceId"].as_str()
        ),
        (
            Some("ConflictException"),
            Some("DELETION_PROTECTION_ENABLED"),
            Some("phone-number"),
            Some(id.as_str())
        )
    );

    r.healthy().await;
    // And it still serves real work.
    let (s, _) = r.op("RequestPhoneNumber", ok_request).await;
    assert_eq!(s, StatusCode::OK);
}
