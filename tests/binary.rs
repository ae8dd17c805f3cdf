//! The real binary: `phone-ledger serve` logs the address it listens on, serves the SDK, and
//! stops cleanly on SIGTERM and SIGINT (exit 0, log flushed, data readable afterwards).

mod common;

use aws_sdk_pinpointsmsvoicev2::types::{MessageType, NumberCapability, RequestableNumberType};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().expect("dir");
    let mut ids = Vec::new();
    for sig in ["TERM", "INT"] {
        let (mut child, addr) = common::spawn_binary(dir.path(), &[]);
        let c = common::client_for(&format!("http://{addr}"), common::ACCOUNT, common::REGION);
        let out = c
            .request_phone_number()
            .iso_country_code("US")
            .message_type(MessageType::Transactional)
            .number_capabilities(NumberCapability::Sms)
            .number_type(RequestableNumberType::LongCode)
            .send()
            .await
            .expect("request through the binary");
        ids.push(out.phone_number_id().expect("id").to_string());
        // Everything acknowledged before the signal is there after it.
        assert_eq!(
            c.describe_phone_numbers().send().await.expect("describe").phone_numbers().len(),
            ids.len()
        );
        common::signal(&child, sig);
        let status = child.wait().expect("wait");
        assert!(status.success(), "SIG{sig} exits 0, got {status}");
    }
    let store = common::open_log(dir.path());
    for id in &ids {
        assert_eq!(store.stream_head(id).await.expect("head").version, 1);
    }
    store.close().await.expect("close");
}
