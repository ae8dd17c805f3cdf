//! boto3 (Python) against the real server: the calls, errors, `Reason` members, request ids,
//! timestamps and paginators an operator's scripts rely on. `.ci/run` installs boto3; where it is
//! missing this test says so and skips (or fails, under `.ci/run`).

mod common;

use common::TestServer;

#[test]
fn boto3_talks_to_phone_ledger() {
    let has_boto3 = std::process::Command::new("python3")
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !common::tool_available("boto3", has_boto3, "pip install boto3") {
        return;
    }
    let server = TestServer::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_smoke.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(server.url())
        .output()
        .expect("python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("boto3: ok"), "{stdout}");
}
