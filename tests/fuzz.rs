//! A fuzz harness kept in the repository: generated AWS JSON requests (valid shapes with mutated
//! members, and protocol garbage) against the real server. Whatever arrives, the answer is never
//! a 5xx and never a panic, every error has an AWS shape, and the log still verifies afterwards.
//! `PHONE_LEDGER_FUZZ_REQUESTS` sets how many requests (3,000 in `cargo test`; the README gives
//! the figures of a long run) and `PHONE_LEDGER_FUZZ_SEED` the seed.

mod common;

use common::{TestServer, ACCOUNT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const OPERATIONS: &[&str] = &[
    "RequestPhoneNumber",
    "UpdatePhoneNumber",
    "ReleasePhoneNumber",
    "DescribePhoneNumbers",
    "CreatePool",
    "DeletePool",
    "DescribePools",
    "AssociateOriginationIdentity",
    "DisassociateOriginationIdentity",
    "ListPoolOriginationIdentities",
    "CreateOptOutList",
    "DeleteOptOutList",
    "DescribeOptOutLists",
    "PutOptedOutNumber",
    "DeleteOptedOutNumber",
    "DescribeOptedOutNumbers",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "UpdatePool",
    "DescribeAccountAttributes",
    "DescribeAccountLimits",
    "DescribeSpendLimits",
    "PutKeyword",
    "DeleteKeyword",
    "DescribeKeywords",
    "SendTextMessage",
    "SendVoiceMessage",
    "SendMediaMessage",
    "RequestSenderId",
    "ReleaseSenderId",
    "UpdateSenderId",
    "DescribeSenderIds",
    "ListAvailablePhoneNumbers",
    // Operations of the model this service does not carry out, and names that are no operation.
    "CreateConfigurationSet",
    "NoSuchOperation",
    "",
];

/// A valid-looking input for `operation`, naming resources from `known` (real ids) when it can.
fn template(operation: &str, known: &[String], pools: &[String], rng: &mut StdRng) -> Value {
    let number = known.get(rng.gen_range(0..known.len().max(1))).cloned().unwrap_or_default();
    let pool = pools.get(rng.gen_range(0..pools.len().max(1))).cloned().unwrap_or_default();
    match operation {
        "RequestPhoneNumber" => json!({
            "IsoCountryCode": "US", "MessageType": "TRANSACTIONAL", "NumberCapabilities": ["SMS"],
            "NumberType": "LONG_CODE", "ClientToken": format!("t-{}", rng.gen_range(0..50)),
            "Tags": [{"Key": "k", "Value": "v"}], "DeletionProtectionEnabled": rng.gen_bool(0.3)
        }),
        "UpdatePhoneNumber" => {
            json!({"PhoneNumberId": number, "DeletionProtectionEnabled": rng.gen_bool(0.5), "SelfManagedOptOutsEnabled": false})
        }
        "ReleasePhoneNumber" => json!({"PhoneNumberId": number}),
        "DescribePhoneNumbers" => json!({
            "PhoneNumberIds": [number], "MaxResults": rng.gen_range(1..20),
            "Filters": [{"Name": "status", "Values": ["ACTIVE"]}]
        }),
        "CreatePool" => json!({"OriginationIdentity": number, "MessageType": "TRANSACTIONAL", "IsoCountryCode": "US"}),
        "DeletePool" => json!({"PoolId": pool}),
        "PutKeyword" | "DeleteKeyword" => {
            let keyword = ["INFO", "STOP", "join"][rng.gen_range(0..3)];
            json!({"OriginationIdentity": number, "Keyword": keyword, "KeywordMessage": "hi"})
        }
        "DescribeKeywords" => json!({"OriginationIdentity": pool, "MaxResults": rng.gen_range(1..5)}),
        "UpdatePool" => json!({"PoolId": pool, "DeletionProtectionEnabled": false, "OptOutListName": "Default"}),
        "SendTextMessage" | "SendVoiceMessage" | "SendMediaMessage" => json!({
            "OriginationIdentity": number, "DestinationPhoneNumber": format!("+1206555{:04}", rng.gen_range(0..100)),
            "MessageBody": "hello", "MediaUrls": ["s3://bucket-name/image.png"], "DryRun": rng.gen_bool(0.2)
        }),
        "DescribePools" => json!({"PoolIds": [pool], "MaxResults": rng.gen_range(1..20)}),
        "AssociateOriginationIdentity" => json!({"PoolId": pool, "OriginationIdentity": number, "IsoCountryCode": "US"}),
        "DisassociateOriginationIdentity" => json!({"PoolId": pool, "OriginationIdentity": number, "IsoCountryCode": "US"}),
        "ListPoolOriginationIdentities" => json!({"PoolId": pool, "MaxResults": rng.gen_range(1..20)}),
        "CreateOptOutList" | "DeleteOptOutList" => json!({"OptOutListName": format!("list-{}", rng.gen_range(0..4))}),
        "DescribeOptOutLists" => json!({"OptOutListNames": [format!("list-{}", rng.gen_range(0..4))], "MaxResults": rng.gen_range(1..20)}),
        "PutOptedOutNumber" | "DeleteOptedOutNumber" => json!({
            "OptOutListName": format!("list-{}", rng.gen_range(0..4)), "OptedOutNumber": format!("+1206555{:04}", rng.gen_range(0..100))
        }),
        "DescribeOptedOutNumbers" => json!({
            "OptOutListName": "Default", "MaxResults": rng.gen_range(1..20),
            "Filters": [{"Name": "end-user-opted-out", "Values": ["false"]}]
        }),
        "TagResource" => {
            json!({"ResourceArn": format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:phone-number/{number}"), "Tags": [{"Key": "k", "Value": "v"}]})
        }
        "UntagResource" => json!({"ResourceArn": format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:pool/{pool}"), "TagKeys": ["k"]}),
        "ListTagsForResource" => json!({"ResourceArn": format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/Default")}),
        "RequestSenderId" | "ReleaseSenderId" | "UpdateSenderId" => {
            let sender_id = ["Fuzz", "Fuzz-1", "-bad", "12345"][rng.gen_range(0..4)];
            let country = ["US", "GB"][rng.gen_range(0..2)];
            json!({
                "SenderId": sender_id, "IsoCountryCode": country,
                "MessageTypes": ["TRANSACTIONAL"], "DeletionProtectionEnabled": rng.gen_bool(0.3)
            })
        }
        "DescribeSenderIds" => json!({
            "SenderIds": [{"SenderId": "Fuzz", "IsoCountryCode": "US"}], "MaxResults": rng.gen_range(1..20),
            "Filters": [{"Name": "registered", "Values": ["false"]}]
        }),
        "ListAvailablePhoneNumbers" => {
            let kind = ["StartsWith", "EndsWith", "Contains", "ExactMatch", "Nope"][rng.gen_range(0..5)];
            let country = ["US", "GB"][rng.gen_range(0..2)];
            json!({
                "IsoCountryCode": country, "NumberCapabilities": ["SMS"], "NumberType": "TEN_DLC",
                "MaxResults": rng.gen_range(1..11),
                "NumberPreference": [{"PreferenceType": [kind], "Filter": [format!("{}", rng.gen_range(0..100_000))]}]
            })
        }
        _ => json!({"Anything": number}),
    }
}

/// A value of a random JSON type, sometimes huge or strange.
fn junk(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..11) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<f64>() * 1e300),
        4 => json!("x".repeat(rng.gen_range(0..5000))),
        5 => json!("\u{0}\u{feff}é漢字🙂\\\"'"),
        6 => json!(format!(
            "arn:aws:sms-voice:us-east-1:{ACCOUNT}:phone-number/phone-{}",
            "0".repeat(rng.gen_range(0..40))
        )),
        7 if depth < 4 => Value::Array((0..rng.gen_range(0..8)).map(|_| junk(rng, depth + 1)).collect()),
        8 if depth < 4 => {
            let mut m = serde_json::Map::new();
            for i in 0..rng.gen_range(0..6) {
                m.insert(format!("K{i}"), junk(rng, depth + 1));
            }
            Value::Object(m)
        }
        9 => json!(-1),
        _ => json!(""),
    }
}

/// Mutates members of `input`: removes, retypes, or adds some.
fn mutate(input: &mut Value, rng: &mut StdRng) {
    let Some(map) = input.as_object_mut() else { return };
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        match rng.gen_range(0..6) {
            0 => {
                map.remove(&key);
            }
            1 => {
                map.insert(key, junk(rng, 0));
            }
            _ => {}
        }
    }
    if rng.gen_bool(0.2) {
        map.insert(format!("Unknown{}", rng.gen_range(0..3)), junk(rng, 0));
    }
}

/// The raw request: (target header, content type, body).
fn request(rng: &mut StdRng, known: &[String], pools: &[String]) -> (Option<String>, String, Vec<u8>) {
    let operation = OPERATIONS[rng.gen_range(0..OPERATIONS.len())];
    let mut input = template(operation, known, pools, rng);
    let target = match rng.gen_range(0..20) {
        0 => None,
        1 => Some(format!("Other.{operation}")),
        _ => Some(format!("PinpointSMSVoiceV2.{operation}")),
    };
    let content_type = match rng.gen_range(0..20) {
        0 => "text/plain".to_string(),
        1 => "application/x-amz-json-1.1".to_string(),
        _ => "application/x-amz-json-1.0".to_string(),
    };
    let body = match rng.gen_range(0..10) {
        // Protocol garbage: not JSON, truncated JSON, a JSON value that is not an object.
        0 => (0..rng.gen_range(0..300)).map(|_| rng.gen::<u8>()).collect(),
        1 => {
            let text = input.to_string();
            text.as_bytes()[..rng.gen_range(0..text.len().max(1))].to_vec()
        }
        2 => junk(rng, 0).to_string().into_bytes(),
        3 => input.to_string().into_bytes(),
        _ => {
            mutate(&mut input, rng);
            input.to_string().into_bytes()
        }
    };
    (target, content_type, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_requests_never_get_a_5xx_and_the_log_stays_whole() {
    let count: usize = std::env::var("PHONE_LEDGER_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed: u64 = std::env::var("PHONE_LEDGER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let server = TestServer::start_with(|c| c.quotas.phone_numbers_per_account = 100_000);
    let c = server.client(ACCOUNT);
    let mut known = Vec::new();
    for _ in 0..20 {
        known.push(common::request(&c, aws_sdk_pinpointsmsvoicev2::types::MessageType::Transactional).await);
    }
    let pools = vec![common::create_pool(&c, &known[0]).await, common::create_pool(&c, &known[1]).await];
    let url = format!("{}/", server.url());
    let http = reqwest::Client::new();
    let authorization =
        format!("AWS4-HMAC-SHA256 Credential={ACCOUNT}/20261126/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0");
    let started = std::time::Instant::now();
    let clients = 16;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, url, known, pools) = (http.clone(), url.clone(), known.clone(), pools.clone());
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000).wrapping_add(client as u64));
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
            for _ in 0..count / clients {
                let (target, content_type, body) = request(&mut rng, &known, &pools);
                // As the account that owns the known numbers and pools: the generated commands
                // then reach their actors, not only the lookup that finds nothing.
                let mut req = http
                    .post(&url)
                    .header("Content-Type", content_type)
                    .header("Authorization", &authorization)
                    .body(body.clone());
                if let Some(t) = &target {
                    req = req.header("X-Amz-Target", t);
                }
                let resp = req.send().await.expect("an answer");
                let status = resp.status().as_u16();
                let text = resp.text().await.expect("body");
                assert!(status < 500, "{status} for {target:?} {}: {text}", String::from_utf8_lossy(&body));
                let outcome = if status >= 400 {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    assert!(v["__type"].is_string(), "an AWS error shape for {target:?}: {text}");
                    v["__type"].as_str().unwrap_or_default().to_string()
                } else {
                    status.to_string()
                };
                *statuses.entry(status).or_default() += 1;
                *outcomes.entry(outcome).or_default() += 1;
            }
            (statuses, outcomes)
        }));
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let (s, o) = t.await.expect("a client panicked");
        for (s, n) in s {
            *statuses.entry(s).or_default() += n;
        }
        for (o, n) in o {
            *outcomes.entry(o).or_default() += n;
        }
    }
    eprintln!("fuzz: outcomes {outcomes:?}");
    // The generated commands reached the resources: some carried out, some refused by the
    // deciders as conflicting with the state they found.
    let total = statuses.values().sum::<usize>();
    assert!(statuses.get(&200).copied().unwrap_or(0) * 20 >= total, "{outcomes:?}");
    assert!(outcomes.get("ConflictException").copied().unwrap_or(0) > 0, "{outcomes:?}");
    let (status, report) = {
        let resp = reqwest::get(format!("{}/audit/verify", server.url())).await.expect("verify");
        (resp.status().as_u16(), resp.json::<Value>().await.expect("json"))
    };
    eprintln!(
        "fuzz: {} requests (seed {seed}) in {:.1} s, statuses {statuses:?}; verify {}",
        statuses.values().sum::<usize>(),
        started.elapsed().as_secs_f64(),
        report["Ok"]
    );
    assert_eq!(status, 200);
    assert_eq!(report["Ok"], true, "{report}");
}
