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

/// Requests that do not parse are the client's errors: the server answers 400 and keeps them
/// out of its log (actix-http reports them at ERROR), unless `RUST_LOG` asks for actix-http.
#[test]
fn a_clients_protocol_errors_stay_out_of_the_servers_error_log() {
    use std::io::{Read, Write};
    for (rust_log, shown) in [("info", false), ("info,actix_http=debug", true)] {
        let dir = tempfile::tempdir().expect("dir");
        let (mut child, addr, (log, drain)) = common::spawn_binary_logged(dir.path(), &[("RUST_LOG", rust_log), ("NO_COLOR", "")]);
        for garbage in [&b"GARBAGE / HTTP/1.1\r\nHost x\r\n\r\n"[..], b"\x00\x01\x02\r\n\r\n"] {
            let mut connection = std::net::TcpStream::connect(&addr).expect("connect");
            connection.write_all(garbage).expect("send");
            let mut answer = [0u8; 12];
            connection.read_exact(&mut answer).expect("answer");
            assert_eq!(&answer, b"HTTP/1.1 400", "{rust_log}");
        }
        common::signal(&child, "TERM");
        assert!(child.wait().expect("exit").success());
        // The drain thread has read the whole log once the process is gone.
        drain.join().expect("drain");
        let log = log.lock().expect("log").join("\n");
        assert!(log.contains("stopped"), "the log was read to its end:\n{log}");
        assert_eq!(log.contains("request parse error"), shown, "RUST_LOG={rust_log}:\n{log}");
        assert_eq!(log.contains("ERROR"), shown, "RUST_LOG={rust_log}:\n{log}");
        assert!(!log.contains('\u{1b}'), "a log written to a pipe has no colour codes:\n{log}");
    }
}

/// An audit answer piped into a reader that stops early (`| head`) ends the command quietly, as
/// any Unix tool's does: SIGPIPE, not a panic with a backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_answer_piped_into_head_ends_quietly() {
    use phone_ledger::codec::pending_events;
    use phone_ledger::domain::phone_number::{PhoneNumber, PhoneNumberChanges, PhoneNumberEvent};
    use phone_ledger::store::{AppendMeta, AppendRequest};
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("dir");
    let store = common::open_log(dir.path());
    let id = "phone-0123456789abcdef0123456789abcdef";
    // An answer far larger than a pipe holds (64 KiB): a table row per event.
    let mut events = vec![PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(
        id,
        common::ACCOUNT,
        common::REGION,
    )))];
    events.extend((0..2_000).map(|i| {
        PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
            deletion_protection_enabled: Some(i % 2 == 0),
            ..Default::default()
        })
    }));
    let meta = AppendMeta::direct(common::ACCOUNT, common::REGION, "pipe-test", "UpdatePhoneNumber/Update");
    store
        .append(AppendRequest::plain(id, 0, meta, pending_events(&events).expect("events")))
        .await
        .expect("append");
    store.close().await.expect("close");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .arg("audit")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["feed", "--limit", "5000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the audit command");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1024];
    stdout.read_exact(&mut first).expect("the answer begins");
    drop(stdout);
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    let status = child.wait().expect("exit");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}: {stderr}");
}
