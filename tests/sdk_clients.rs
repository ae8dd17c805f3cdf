//! The other AWS clients against the real server, each running the same lifecycle (request,
//! describe with filters and pagination, update, release refused then accepted, pools, the errors
//! with their Reason): the AWS SDK for JavaScript v3 (`tests/clients/js/lifecycle.mjs`) and the
//! AWS CLI as pip installs it, configured as the README shows (`tests/clients/aws_cli.sh`). The
//! Rust SDK and boto3 have their own tests. `.ci/run` installs the JavaScript SDK (npm) and the
//! CLI (pip); where one is missing its test says so and skips (or fails, under `.ci/run`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;

fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Runs `program args... URL` against a fresh server; its output must end with `ok_line`.
fn run_against_server(program: &str, args: &[&Path], ok_line: &str) {
    let server = TestServer::start();
    let out = Command::new(program)
        .args(args)
        .arg(server.url())
        .current_dir(clients())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(ok_line), "{stdout}\n{stderr}");
}

#[test]
fn the_javascript_sdk_runs_the_lifecycle() {
    let js = clients().join("js");
    let installed = succeeds("node", &["--version"]) && js.join("node_modules/@aws-sdk/client-pinpoint-sms-voice-v2").is_dir();
    if !common::tool_available("the AWS SDK for JavaScript v3", installed, "npm ci --prefix tests/clients/js") {
        return;
    }
    run_against_server("node", &[&js.join("lifecycle.mjs")], "js-sdk: ok");
}

#[test]
fn the_aws_cli_runs_the_lifecycle() {
    let installed = succeeds("aws", &["--version"]) && succeeds("bash", &["--version"]);
    if !common::tool_available("the AWS CLI", installed, "pip install awscli") {
        return;
    }
    run_against_server("bash", &[&clients().join("aws_cli.sh")], "aws-cli: ok");
}
