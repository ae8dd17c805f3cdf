//! The load generator's verdict: a CI-sized conflicting run passes it, and the checker is honest:
//! doctored logs (a lost acknowledged event, a lost opt-out, a write no operation answers for, a
//! duplicate release, a reordered pair, a released number left in a pool) are each caught by the
//! check that owns the rule.

use std::sync::OnceLock;

use phone_ledger::loadtest::checker::{check, ClientOp, Op, Verdict};
use phone_ledger::loadtest::{run, LoadTestArgs, Report};
use phone_ledger::store::EventEnvelope;

/// One CI-sized run shared by the tests of this file: 16 clients, 50 numbers, 8,000 requests
/// (by count, not time, so a slow machine does the same work; a minute at most).
fn ci_run() -> &'static Report {
    static RUN: OnceLock<Report> = OnceLock::new();
    RUN.get_or_init(|| {
        let args = LoadTestArgs {
            clients: 16,
            numbers: 50,
            pools: 5,
            requests: Some(8_000),
            duration: Some(std::time::Duration::from_secs(60)),
            seed: 7,
            ..Default::default()
        };
        run(&args).expect("load test runs")
    })
}

fn failing(verdict: &Verdict) -> Vec<String> {
    verdict
        .checks
        .iter()
        .filter(|c| !c.violations.is_empty())
        .map(|c| c.name.clone())
        .collect()
}

fn assert_caught(verdict: &Verdict, check_number: &str) {
    assert!(!verdict.ok, "the doctored log passed");
    let caught = failing(verdict);
    assert!(
        caught.iter().any(|name| name.starts_with(check_number)),
        "check {check_number} did not fire; failing: {caught:?}"
    );
}

#[test]
fn a_ci_sized_conflicting_run_passes_its_verdict() {
    let report = ci_run();
    assert!(report.verdict.ok, "{:#?}", report.verdict);
    assert!(report.requests > 500, "the run did real work: {}", report.requests);
    // It really conflicted: refusals of several kinds happened.
    let release = &report.operations["release"];
    assert!(release.ok >= 1 && release.outcomes.len() >= 2, "{release:?}");
    assert_eq!(report.verdict.checks.len(), 9);
    // The neighbourhood raced too: messages were sent and refused, the list was deleted.
    let send = &report.operations["send"];
    assert!(send.ok >= 1 && send.outcomes.len() >= 2, "{send:?}");
    assert!(report.operations["delete-list"].ok >= 1, "{:?}", report.operations["delete-list"]);
    // Released numbers were replaced, some by requests into a pool (at times raced with a change
    // of the pool's list: a request refused then withdrew the number it made).
    let into_pool = &report.operations["request-into-pool"];
    assert!(into_pool.ok >= 1, "{into_pool:?}");
    let withdrawn = report.log.iter().filter(|e| e.event_type == "RequestWithdrawn").count();
    eprintln!("requests into a pool: {:?}; numbers withdrawn: {withdrawn}", into_pool.outcomes);
    assert!(report.verdict.checks.iter().all(|c| c.checked > 0), "{:#?}", report.verdict.checks);
}

fn acknowledged(report: &Report, op: Op) -> Vec<&ClientOp> {
    report
        .client_ops
        .iter()
        .filter(|o| o.op == op && (200..300).contains(&o.status))
        .collect()
}

#[test]
fn a_lost_acknowledged_event_is_caught() {
    let report = ci_run();
    let released = acknowledged(report, Op::Release)[0];
    let rid = released.request_id.clone().expect("request id");
    let log: Vec<EventEnvelope> = report
        .log
        .iter()
        .filter(|e| !(e.request_id == rid && e.event_type == "Released"))
        .cloned()
        .collect();
    assert_eq!(log.len(), report.log.len() - 1);
    assert_caught(&check(&log, &report.client_ops), "1.");
}

/// An opt-out answered 200 whose entry never reached the log: check 1 fails (the service writes
/// nothing only for a destination already on the list, which the first opt-out's was not).
#[test]
fn a_lost_opt_out_is_caught() {
    let report = ci_run();
    let first = report
        .log
        .iter()
        .find(|e| e.event_type == "NumberOptedOut")
        .expect("a destination opted out");
    let log: Vec<EventEnvelope> = report.log.iter().filter(|e| e.event_id != first.event_id).cloned().collect();
    assert_caught(&check(&log, &report.client_ops), "1.");
}

/// An answer that leaves the outcome unknown (503 ServiceUnavailableException: the storage failed
/// under the request, or the server's deadline passed first) may or may not have taken effect;
/// a refusal that took effect is still caught.
#[test]
fn an_unknown_outcome_may_have_taken_effect_a_refusal_may_not() {
    let report = ci_run();
    let released = acknowledged(report, Op::Release)[0].request_id.clone();
    let answered = |error: &str, status: u16| -> Vec<ClientOp> {
        let mut ops = report.client_ops.clone();
        let op = ops.iter_mut().find(|o| o.request_id == released).expect("the release");
        (op.status, op.error) = (status, Some(error.into()));
        ops
    };
    let unknown = check(&report.log, &answered("ServiceUnavailableException", 503));
    assert!(unknown.ok, "{:#?}", failing(&unknown));
    assert_caught(&check(&report.log, &answered("ConflictException", 400)), "1.");
}

/// Appends a copy of `template` as the next event of its stream.
fn append_copy(log: &mut Vec<EventEnvelope>, template: &EventEnvelope, event_type: &str, payload: serde_json::Value) {
    let version = log
        .iter()
        .filter(|e| e.stream_id == template.stream_id)
        .map(|e| e.version)
        .max()
        .unwrap_or(0)
        + 1;
    let position = log.last().map_or(1, |e| e.position + 1);
    let mut e = template.clone();
    e.version = version;
    e.position = position;
    e.event_type = event_type.into();
    e.payload = payload;
    e.event_id = uuid::Uuid::new_v4();
    e.command_id = uuid::Uuid::new_v4();
    log.push(e);
}

/// A write under a request id no operation of the run answers for: check 1 fails.
#[test]
fn a_write_no_operation_answers_for_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    let updated = log
        .iter()
        .find(|e| e.event_type == "PhoneNumberUpdated")
        .cloned()
        .expect("a number was updated");
    append_copy(&mut log, &updated, "PhoneNumberUpdated", updated.payload.clone());
    if let Some(phantom) = log.last_mut() {
        phantom.request_id = "phantom".into();
    }
    assert_caught(&check(&log, &report.client_ops), "1.");
}

#[test]
fn a_duplicate_release_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    let released = log
        .iter()
        .find(|e| e.event_type == "Released" && e.stream_id.starts_with("phone-"))
        .cloned()
        .expect("a release happened");
    append_copy(&mut log, &released, "Released", released.payload.clone());
    assert_caught(&check(&log, &report.client_ops), "3.");
}

/// `--report FILE.html`: one page with the three plots (SVG drawn in Rust), the tables and the
/// verdict; nothing it shows comes out unescaped.
#[test]
fn the_html_report_shows_the_plots_tables_and_verdict() {
    let report = ci_run();
    let page = phone_ledger::loadtest::report::html(report).expect("report");
    assert_eq!(page.matches("<svg").count(), 3, "throughput, latency over time, histogram");
    for name in [
        "Throughput over time",
        "Latency over time",
        "Latency histogram per operation",
        "Outcomes",
        "Verdict",
    ] {
        assert!(page.contains(name), "{name}");
    }
    for op in report.operations.keys() {
        assert!(page.contains(&format!("<td>{op}</td>")), "{op} in the tables");
    }
    assert!(page.contains(r#"<span class="pass">PASS</span>"#));
    assert_eq!(page.matches(r#"<td class="pass">PASS</td>"#).count(), report.verdict.checks.len());
    let mut failing = report.clone();
    failing.verdict.ok = false;
    failing.verdict.checks[0].violations.push("<script>alert(1)</script> & more".into());
    let page = phone_ledger::loadtest::report::html(&failing).expect("report");
    assert!(page.contains(r#"<span class="fail">FAIL</span>"#));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more") && !page.contains("<script>"));
}

/// The sender-id rule: a sender id released while it is a pool's member (its release racing an
/// association) is caught by check 4, and the pool that does not hold it by check 5.
#[test]
fn a_sender_id_released_in_a_pool_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    let leased = log
        .iter()
        .find(|e| e.event_type == "SenderIdRequested")
        .cloned()
        .expect("a sender id was leased");
    let pool = log
        .iter()
        .find(|e| e.stream_id.starts_with("pool-"))
        .map(|e| e.stream_id.clone())
        .expect("a pool");
    append_copy(&mut log, &leased, "AssociatedWithPool", serde_json::json!({"PoolId": pool}));
    append_copy(&mut log, &leased, "Released", serde_json::json!({"SenderId": "Load0"}));
    let verdict = check(&log, &report.client_ops);
    assert_caught(&verdict, "4.");
    assert_caught(&verdict, "5.");
}

#[test]
fn a_reordered_pair_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    let by_rid: std::collections::HashMap<&str, &ClientOp> = report
        .client_ops
        .iter()
        .filter_map(|o| o.request_id.as_deref().map(|r| (r, o)))
        .collect();
    // Two updates of one number, the first finished before the second started: swap them.
    let updates: Vec<usize> = (0..log.len()).filter(|&i| log[i].event_type == "PhoneNumberUpdated").collect();
    let mut pair = None;
    'search: for (a, &i) in updates.iter().enumerate() {
        for &j in &updates[a + 1..] {
            let (x, y) = (&log[i], &log[j]);
            if x.stream_id != y.stream_id {
                continue;
            }
            if let (Some(ox), Some(oy)) = (by_rid.get(x.request_id.as_str()), by_rid.get(y.request_id.as_str())) {
                if ox.finished_ns < oy.started_ns {
                    pair = Some((i, j));
                    break 'search;
                }
            }
        }
    }
    let (i, j) = pair.expect("two sequential updates of one number");
    let (vi, pi, vj, pj) = (log[i].version, log[i].position, log[j].version, log[j].position);
    log.swap(i, j);
    log[i].version = vi;
    log[i].position = pi;
    log[j].version = vj;
    log[j].position = pj;
    assert_caught(&check(&log, &report.client_ops), "6.");
}

#[test]
fn a_released_number_left_in_a_pool_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    // A number that ends the run in a pool, released behind the pool's back.
    let member = log
        .iter()
        .filter(|e| e.event_type == "AssociatedWithPool")
        .map(|e| e.stream_id.clone())
        .find(|s| {
            let last_pool_event = log
                .iter()
                .rev()
                .find(|e| &e.stream_id == s && (e.event_type == "AssociatedWithPool" || e.event_type == "DisassociatedFromPool"));
            last_pool_event.is_some_and(|e| e.event_type == "AssociatedWithPool")
        })
        .or_else(|| {
            // Pools' seed numbers never leave unless another member stays.
            log.iter()
                .find(|e| e.event_type == "PoolCreated")
                .and_then(|e| e.payload["Members"].as_object().and_then(|m| m.keys().next().cloned()))
        })
        .expect("a pooled number");
    let template = log.iter().rev().find(|e| e.stream_id == member).cloned().expect("its last event");
    append_copy(&mut log, &template, "Released", serde_json::json!({"PhoneNumber": "+10000000000"}));
    assert_caught(&check(&log, &report.client_ops), "5.");
}

/// The stream of the load test's opt-out list, or of `Default`, in the run's log.
fn list_stream(log: &[EventEnvelope], name: &str) -> String {
    log.iter()
        .find(|e| e.event_type == "OptOutListCreated" && e.payload["OptOutListName"] == name)
        .map(|e| e.stream_id.clone())
        .expect("the list was created")
}

/// A message accepted after its destination opted out on the number's list: check 7 fails.
#[test]
fn a_message_to_an_opted_out_destination_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    let sent = log
        .iter()
        .rev()
        .find(|e| e.event_type == "MessageSent")
        .cloned()
        .expect("a message was sent");
    // The number is put on Default, the destination opts out there, then the message is sent.
    append_copy(
        &mut log,
        &sent,
        "PhoneNumberUpdated",
        serde_json::json!({"OptOutListName": "Default", "SelfManagedOptOutsEnabled": false}),
    );
    let default = list_stream(&log, "Default");
    let template = log
        .iter()
        .rev()
        .find(|e| e.stream_id == default)
        .cloned()
        .expect("Default's last event");
    let destination = sent.payload["DestinationPhoneNumber"].clone();
    append_copy(
        &mut log,
        &template,
        "NumberOptedOut",
        serde_json::json!({"Number": destination, "OptedOutTimestampMs": 1, "EndUserOptedOut": false}),
    );
    append_copy(&mut log, &sent, "MessageSent", sent.payload.clone());
    assert_caught(&check(&log, &report.client_ops), "7.");
}

/// The load test's list deleted while a number names it: check 8 fails.
#[test]
fn a_list_deleted_in_use_is_caught() {
    let report = ci_run();
    let mut log = report.log.clone();
    let list = list_stream(&log, "loadtest");
    let number = log
        .iter()
        .rev()
        .find(|e| e.event_type == "PhoneNumberUpdated" && !log.iter().any(|r| r.stream_id == e.stream_id && r.event_type == "Released"))
        .cloned()
        .expect("a live number was updated");
    // Make sure the list is there, put the number on it, and delete the list under it.
    let template = log
        .iter()
        .rev()
        .find(|e| e.stream_id == list)
        .cloned()
        .expect("the list's last event");
    let created = log
        .iter()
        .find(|e| e.stream_id == list && e.event_type == "OptOutListCreated")
        .cloned()
        .expect("created");
    append_copy(&mut log, &template, "OptOutListCreated", created.payload.clone());
    append_copy(
        &mut log,
        &number,
        "PhoneNumberUpdated",
        serde_json::json!({"OptOutListName": "loadtest"}),
    );
    append_copy(&mut log, &template, "OptOutListDeleted", serde_json::json!({"OptedOut": 0}));
    assert_caught(&check(&log, &report.client_ops), "8.");
}

/// The command itself: exit 0 and a JSON report whose verdict passed.
#[test]
fn the_loadtest_command_writes_a_json_report() {
    let dir = tempfile::tempdir().expect("dir");
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
        .args([
            "loadtest",
            "--clients",
            "8",
            "--numbers",
            "20",
            "--pools",
            "2",
            "--requests",
            "300",
            "--seed",
            "3",
            "--json",
        ])
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("VERDICT: PASS") && stdout.contains("p99.9 ms"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON");
    assert_eq!(report["Verdict"]["Ok"], true);
    // 300 scheduled operations, plus what they set off: a replacement request per successful
    // release of a number (asked again while refused, or unanswered; one into a pool at times
    // raced with a change of that pool's list) or of a sender id, and a re-creation per
    // deletion of the load test's opt-out list.
    let ok = |op: &str| report["Operations"][op]["Ok"].as_u64().unwrap_or(0);
    let count = |op: &str| report["Operations"][op]["Count"].as_u64().unwrap_or(0);
    let replacements = count("request") + count("request-into-pool");
    assert!(replacements >= ok("release"), "{}", report["Operations"]);
    assert_eq!(count("request-sender"), ok("release-sender"));
    assert_eq!(count("create-list"), ok("delete-list"));
    let set_off = replacements + count("request-sender") + count("create-list");
    let raced = report["Requests"].as_u64().unwrap_or(0).checked_sub(300 + set_off);
    assert!(raced.is_some_and(|r| r <= count("request-into-pool")), "{raced:?}");
    assert!(report["Operations"]["update"]["P99Us"].as_u64().is_some());
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(page.contains("VERDICT") || page.contains("Verdict"), "{page}");
    assert_eq!(page.matches("<svg").count(), 3);
}
