//! `phone-ledger audit ...`: the audit API as a command. Against a running server (`--server URL`)
//! it asks `GET /audit/...`; offline (`--data-dir DIR`) it opens the log read-only and calls the
//! same functions. Either way it gets the same JSON and prints it as tables (default) or as JSON
//! lines (`--json`, for jq). Exit codes: 0 fine, 1 verify found a break or recheck a divergence,
//! 2 unusable input (unknown id, bad value, missing/locked/foreign data directory, no server).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde_json::Value;

use super::query::{self, FeedFilter, PointInTime};
use super::recheck::{recheck_showing, Deciders};
use super::replay_resume::ReplayResumes;
use super::verify::{verify_export, verify_store_showing, ChainPoint};
use super::{digest, export_showing, AuditError};
use crate::domain::ResourceKind;
use crate::progress::Progress;
use crate::store::{Store, StoreConfig};

/// Where the audit data comes from, and how to print it.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// URL of a running phone-ledger (e.g. http://127.0.0.1:4566).
    #[arg(long, global = true, conflicts_with = "data_dir")]
    pub server: Option<String>,
    /// Data directory of a stopped phone-ledger (read-only).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// JSON lines instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Feed filters shared by `feed` and `export`.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only events of this type (e.g. Released, ReleaseRejected).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events recorded for this account.
    #[arg(long)]
    pub account: Option<String>,
    /// Only events of this stream (phone-... or pool-...).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only events at or after this time (epoch seconds).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events at or before this time (epoch seconds).
    #[arg(long)]
    pub to: Option<String>,
    /// Only messages sent from this phone number or pool (id or ARN).
    #[arg(long)]
    pub origination: Option<String>,
    /// Only messages sent to this phone number.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only events after this global position.
    #[arg(long)]
    pub after: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Every event of one phone number, pool, opt-out list or sender id, in order.
    Events {
        /// What to look at: an id or ARN (phone-..., pool-..., a sender id's ARN), an E.164
        /// number, or an opt-out list's name (with --server, a list of the caller's account).
        id: String,
        #[arg(long)]
        from_version: Option<u64>,
        #[arg(long)]
        limit: Option<u64>,
    },
    /// The global feed, filtered; --follow streams new events as they are committed.
    Feed {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        limit: Option<u64>,
        /// Keep printing events as they are committed (needs --server).
        #[arg(long)]
        follow: bool,
    },
    /// The messages sent (nothing leaves the machine: each is an event), filtered by
    /// --origination, --destination, --from and --to.
    Messages {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        limit: Option<u64>,
    },
    /// The state right after a version (or at a time).
    State {
        /// What to look at: an id or ARN (phone-..., pool-..., a sender id's ARN), an E.164
        /// number, or an opt-out list's name (with --server, a list of the caller's account).
        id: String,
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// Epoch seconds.
        #[arg(long)]
        at: Option<String>,
    },
    /// A timeline: what each event changed, and what each refusal saw (every page of it, or only
    /// the page --limit asks for).
    Replay {
        /// What to look at: an id or ARN (phone-..., pool-..., a sender id's ARN), an E.164
        /// number, or an opt-out list's name (with --server, a list of the caller's account).
        id: String,
        #[arg(long)]
        from_version: Option<u64>,
        #[arg(long)]
        limit: Option<u64>,
    },
    /// The head of the hash chain.
    Digest,
    /// Recompute the hash chain and check every stream for gaps (the log, or an export file).
    Verify {
        /// A file written by `audit export` instead of the log.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: a digest recorded earlier (`audit digest`'s Position and Hash, as
        /// POSITION:HASH) that the file must reach, with that hash there: only this shows the
        /// file is not cut short.
        #[arg(long, requires = "file")]
        digest: Option<ChainPoint>,
    },
    /// Re-decide every recorded command with this binary's rules; report differences.
    Recheck,
    /// Write the log (or a filter of it) as JSON lines.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Output file (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Where answers come from.
enum Source {
    Remote(Remote),
    /// A stopped node's log, the runtime its reads run on, its data directory, and where the
    /// pages of a replay left off.
    Local {
        store: Store,
        runtime: tokio::runtime::Runtime,
        dir: PathBuf,
        resumes: ReplayResumes,
    },
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("phone-ledger audit: {message}");
    ExitCode::from(2)
}

/// Runs an audit command.
pub fn run(args: AuditArgs) -> ExitCode {
    if let AuditCommand::Verify { file: Some(path), digest } = &args.command {
        return match std::fs::File::open(path) {
            Ok(f) => match verify_export(BufReader::new(f), digest.as_ref()) {
                Ok(report) => print_verify(&to_value(&report), args.json),
                Err(e) => fail(e),
            },
            Err(e) => fail(format!("{}: {e}", path.display())),
        };
    }
    let source = match (&args.server, &args.data_dir) {
        (Some(url), _) => Source::Remote(Remote {
            base: url.trim_end_matches('/').to_string(),
            signer: crate::auth::ClientSigner::from_environment(),
        }),
        (None, Some(dir)) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match StoreConfig::open_offline(dir) {
                Ok(store) => Source::Local {
                    store,
                    runtime,
                    dir: dir.clone(),
                    resumes: ReplayResumes::default(),
                },
                Err(e) => return fail(crate::error_chain(&e)),
            }
        }
        (None, None) => return fail("give --server URL (a running server) or --data-dir DIR (a stopped one)"),
    };
    let code = execute(&source, &args);
    if let Source::Local { store, runtime, .. } = source {
        if let Err(e) = runtime.block_on(store.close()) {
            return fail(crate::error_chain(&e));
        }
    }
    code
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The kind of resource `id` names: by its id's or ARN's form, or an E.164 number (a phone
/// number's); `None` for anything else, which is taken as an opt-out list's name.
fn kind_of(id: &str) -> Option<ResourceKind> {
    const KINDS: [ResourceKind; 4] = [
        ResourceKind::PhoneNumber,
        ResourceKind::Pool,
        ResourceKind::OptOutList,
        ResourceKind::SenderId,
    ];
    if id.starts_with('+') {
        return Some(ResourceKind::PhoneNumber);
    }
    // An id is its kind's prefix and 32 hex digits: a list may be called `phone-alerts`.
    KINDS
        .into_iter()
        .find(|kind| kind.is_id(id) || (id.starts_with("arn:") && id.contains(&format!(":{}/", kind.arn_segment()))))
}

/// The stream `id` names in the local log: an id, an ARN, an E.164 number, or the name of an
/// opt-out list (in whichever account has one of that name).
async fn stream_of(store: &dyn crate::store::EventStore, id: &str) -> Result<String, AuditError> {
    match kind_of(id) {
        Some(kind) => query::resolve_stream(store, kind, id).await,
        None => query::opt_out_list_named(store, id).await,
    }
}

fn segment(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::PhoneNumber => "phone-numbers",
        ResourceKind::Pool => "pools",
        ResourceKind::OptOutList => "opt-out-lists",
        ResourceKind::SenderId => "sender-ids",
    }
}

fn filter_query(f: &FilterArgs, limit: Option<u64>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    let mut push = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            q.push((k, v));
        }
    };
    push("Type", f.event_type.clone());
    push("Account", f.account.clone());
    push("StreamId", f.stream.clone());
    push("From", f.from.clone());
    push("To", f.to.clone());
    push("Origination", f.origination.clone());
    push("Destination", f.destination.clone());
    push("After", f.after.map(|a| a.to_string()));
    push("Limit", limit.map(|l| l.to_string()));
    q
}

fn encode(query: &[(&str, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running server, and how requests to it are signed.
struct Remote {
    base: String,
    signer: Option<crate::auth::ClientSigner>,
}

impl Remote {
    /// A GET of `url`, signed when there are credentials.
    fn get(&self, url: &str) -> ureq::Request {
        let mut request = ureq::get(url);
        if let Some(signer) = &self.signer {
            match signer.sign("GET", url, &[], &[]) {
                Ok(headers) => {
                    for (name, value) in headers {
                        request = request.set(&name, &value);
                    }
                }
                Err(e) => eprintln!("phone-ledger audit: cannot sign the request, sending it unsigned: {e}"),
            }
        }
        request
    }
}

/// Tries of a request the server throttles (its account's rate, or its work in flight), waiting
/// twice as long before each, from [`THROTTLED_FIRST_WAIT`]: about 6 s in all.
const THROTTLED_TRIES: u32 = 6;
const THROTTLED_FIRST_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// GET a JSON document from the server; its error bodies become one-line errors. A throttled
/// request is sent again a few times, as the AWS tools do.
fn get(remote: &Remote, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
    let base = &remote.base;
    let url = if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{}", encode(query))
    };
    let (mut wait, mut attempt) = (THROTTLED_FIRST_WAIT, 1);
    loop {
        return match remote.get(&url).call() {
            Ok(resp) => resp.into_json::<Value>().map_err(|e| format!("{url}: {e}")),
            Err(ureq::Error::Status(code, resp)) => {
                let body: Value = resp.into_json().unwrap_or(Value::Null);
                if body["__type"] == "ThrottlingException" && attempt < THROTTLED_TRIES {
                    std::thread::sleep(wait);
                    (wait, attempt) = (wait * 2, attempt + 1);
                    continue;
                }
                Err(body["Message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{url}: HTTP {code}")))
            }
            Err(e) => Err(format!("cannot reach {base}: {e}")),
        };
    }
}

/// The feed filter the arguments describe (checked as the server checks its query).
fn feed_filter(f: &FilterArgs, limit: Option<u64>) -> Result<FeedFilter, AuditError> {
    Ok(FeedFilter {
        event_type: f.event_type.clone(),
        account: f.account.clone(),
        stream_id: f.stream.clone(),
        from_ms: f.from.as_deref().map(|v| query::epoch_ms("From", v)).transpose()?,
        to_ms: f.to.as_deref().map(|v| query::epoch_ms("To", v)).transpose()?,
        origination: f.origination.clone(),
        destination: f.destination.clone(),
        after: f.after.unwrap_or(0),
        limit: query::page_limit(limit)?,
    })
}

/// Answers the question from the local log, as the server would, as JSON.
async fn local(store: &Store, dir: &Path, resumes: &ReplayResumes, command: &AuditCommand) -> Result<Value, AuditError> {
    let store = &**store;
    match command {
        AuditCommand::Events { id, from_version, limit } => {
            let stream = stream_of(store, id).await?;
            let history = query::stream_history(store, &stream, from_version.unwrap_or(1), query::page_limit(*limit)?).await?;
            Ok(to_value(&history))
        }
        AuditCommand::Feed { filter, limit, .. } => Ok(to_value(&query::feed(store, &feed_filter(filter, *limit)?).await?)),
        AuditCommand::Messages { filter, limit } => query::messages(store, &feed_filter(filter, *limit)?).await,
        AuditCommand::State { id, version, at } => {
            let stream = stream_of(store, id).await?;
            let point = match (version, at) {
                (Some(v), _) => PointInTime::Version(*v),
                (None, Some(at)) => PointInTime::At(query::epoch_ms("At", at)?),
                (None, None) => PointInTime::Latest,
            };
            Ok(to_value(&query::state_at(store, &stream, point).await?))
        }
        AuditCommand::Replay { id, from_version, limit } => {
            let stream = stream_of(store, id).await?;
            let replay = query::replay(store, resumes, &stream, from_version.unwrap_or(1), query::page_limit(*limit)?).await?;
            Ok(to_value(&replay))
        }
        AuditCommand::Digest => Ok(to_value(&digest(store).await?)),
        AuditCommand::Verify { .. } => {
            let progress = Progress::events("verifying the chain", store.chain_head().await?.position);
            let mut report = verify_store_showing(store, &progress).await?;
            // A stopped log is also held to the durable mark its server left beside it: a log
            // cut short at a consistent earlier state has a whole chain, and only the mark knows
            // it once went further (what a server refuses to start on, said here too).
            match crate::durable_mark::check(store, dir).await {
                Ok(()) => {}
                Err(crate::durable_mark::MarkError::Store(e)) => return Err(e.into()),
                Err(damage) => {
                    report.ok = false;
                    report.first_break.get_or_insert(damage.broken_link());
                }
            }
            Ok(to_value(&report))
        }
        AuditCommand::Recheck => {
            let progress = Progress::events("re-deciding every command", store.chain_head().await?.position);
            Ok(to_value(&recheck_showing(store, &Deciders::today(), &progress).await?))
        }
        AuditCommand::Export { .. } => Err(AuditError::Input("export is handled separately".into())),
    }
}

/// `FromVersion` and `Limit`, for a page of one stream (its events, its replay).
fn page_query(from_version: Option<u64>, limit: Option<u64>) -> Vec<(&'static str, String)> {
    let version = from_version.map(|v| ("FromVersion", v.to_string()));
    version.into_iter().chain(limit.map(|l| ("Limit", l.to_string()))).collect()
}

/// Asks the server the same question.
fn remote(base: &Remote, command: &AuditCommand) -> Result<Value, String> {
    // The server looks a list's bare name up in the caller's own account.
    let path_for = |id: &str, what: &str| -> Result<String, String> {
        let kind = kind_of(id).unwrap_or(ResourceKind::OptOutList);
        Ok(format!("/audit/{}/{}/{what}", segment(kind), urlencode(id)))
    };
    match command {
        AuditCommand::Events { id, from_version, limit } => get(base, &path_for(id, "events")?, &page_query(*from_version, *limit)),
        AuditCommand::Feed { filter, limit, .. } => get(base, "/audit/events", &filter_query(filter, *limit)),
        AuditCommand::Messages { filter, limit } => get(base, "/audit/messages", &filter_query(filter, *limit)),
        AuditCommand::State { id, version, at } => {
            let mut q = Vec::new();
            if let Some(v) = version {
                q.push(("Version", v.to_string()));
            }
            if let Some(a) = at {
                q.push(("At", a.clone()));
            }
            get(base, &path_for(id, "state")?, &q)
        }
        AuditCommand::Replay { id, from_version, limit } => get(base, &path_for(id, "replay")?, &page_query(*from_version, *limit)),
        AuditCommand::Digest => get(base, "/audit/digest", &[]),
        AuditCommand::Verify { .. } => get(base, "/audit/verify", &[]),
        AuditCommand::Recheck => get(base, "/audit/recheck", &[]),
        AuditCommand::Export { .. } => Err("export is handled separately".into()),
    }
}

fn execute(source: &Source, args: &AuditArgs) -> ExitCode {
    match &args.command {
        AuditCommand::Export { filter, output } => return run_export(source, filter, output.as_ref()),
        AuditCommand::Feed { filter, follow: true, .. } => {
            return match source {
                Source::Remote(base) => follow(base, filter, args.json),
                Source::Local { .. } => fail("--follow needs a running server (--server URL)"),
            }
        }
        AuditCommand::Replay {
            id,
            from_version,
            limit: None,
        } => return replay_all(source, id, *from_version, args.json),
        _ => {}
    }
    let value = match answer(source, &args.command) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    match &args.command {
        AuditCommand::Events { .. } | AuditCommand::Feed { .. } => {
            print_events(value["Events"].as_array().map(Vec::as_slice).unwrap_or_default(), args.json)
        }
        AuditCommand::Messages { .. } => print_messages(value["Messages"].as_array().map(Vec::as_slice).unwrap_or_default(), args.json),
        AuditCommand::State { .. } => print_fields(&value, args.json),
        AuditCommand::Replay { .. } => print_replay(&value, args.json, true),
        AuditCommand::Digest => print_fields(&value, args.json),
        AuditCommand::Verify { .. } => return print_verify(&value, args.json),
        AuditCommand::Recheck => return print_recheck(&value, args.json),
        AuditCommand::Export { .. } => {}
    }
    ExitCode::SUCCESS
}

/// The answer to one question, from the server or the local log.
fn answer(source: &Source, command: &AuditCommand) -> Result<Value, String> {
    match source {
        Source::Remote(base) => remote(base, command),
        Source::Local {
            store,
            runtime,
            dir,
            resumes,
        } => runtime
            .block_on(local(store, dir, resumes, command))
            .map_err(|e| crate::error_chain(&e)),
    }
}

/// Prints a whole replay, page by page as it is read (the server answers a page at a time).
fn replay_all(source: &Source, id: &str, from_version: Option<u64>, json: bool) -> ExitCode {
    let mut from_version = from_version;
    let mut first = true;
    loop {
        let page = AuditCommand::Replay {
            id: id.to_string(),
            from_version,
            limit: Some(query::MAX_LIMIT as u64),
        };
        let value = match answer(source, &page) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        print_replay(&value, json, first);
        first = false;
        match value["NextVersion"].as_u64() {
            Some(next) => from_version = Some(next),
            None => return ExitCode::SUCCESS,
        }
    }
}

fn run_export(source: &Source, filter: &FilterArgs, output: Option<&PathBuf>) -> ExitCode {
    let mut out: Box<dyn Write> = match output {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => return fail(format!("{}: {e}", path.display())),
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let result = match source {
        Source::Local { store, runtime, .. } => feed_filter(filter, None)
            .map(|f| {
                runtime.block_on(async {
                    let progress = Progress::events("exporting", store.chain_head().await?.position);
                    export_showing(&**store, &f, &mut out, &progress).await
                })
            })
            .and_then(|written| written.map(|_| ()))
            .map_err(|e| crate::error_chain(&e)),
        Source::Remote(remote) => {
            let (base, url) = (
                &remote.base,
                format!("{}/audit/export?{}", remote.base, encode(&filter_query(filter, None))),
            );
            match remote.get(&url).call() {
                Ok(resp) => std::io::copy(&mut resp.into_reader(), &mut out)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(ureq::Error::Status(_, resp)) => Err(resp
                    .into_json::<Value>()
                    .ok()
                    .and_then(|b| b["Message"].as_str().map(str::to_string))
                    .unwrap_or_default()),
                Err(e) => Err(format!("cannot reach {base}: {e}")),
            }
        }
    };
    match result.and_then(|_| out.flush().map_err(|e| e.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn follow(remote: &Remote, filter: &FilterArgs, json: bool) -> ExitCode {
    let mut q = filter_query(filter, None);
    q.push(("Follow", "true".into()));
    let base = &remote.base;
    let url = format!("{base}/audit/events?{}", encode(&q));
    let resp = match remote.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, resp)) => {
            let message = resp
                .into_json::<Value>()
                .ok()
                .and_then(|b| b["Message"].as_str().map(str::to_string));
            return fail(message.unwrap_or_else(|| format!("{url}: HTTP {code}")));
        }
        Err(e) => return fail(format!("cannot reach {base}: {e}")),
    };
    if !json {
        println!(
            "{:>8} {:>4}  {:<24} {:<26} {:<38} DETAIL",
            "POSITION", "VER", "TIME", "TYPE", "STREAM"
        );
    }
    // The name of the server-sent event being read (`dropped`: this follower fell behind).
    let mut kind = String::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix("event: ") {
            kind = name.to_string();
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else {
            kind.clear();
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(data) else { continue };
        if kind == "dropped" {
            let _ = std::io::stdout().flush();
            return fail(text(&event["Message"]));
        }
        if json {
            println!("{event}");
        } else {
            let row = event_row(&event);
            println!(
                "{:>8} {:>4}  {:<24} {:<26} {:<38} {}",
                row[0], row[1], row[2], row[3], row[4], row[7]
            );
        }
        if std::io::stdout().flush().is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

// ---- rendering ---------------------------------------------------------------------------------

fn time(secs: &Value) -> String {
    let Some(s) = secs.as_f64() else { return String::new() };
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis((s * 1000.0).round() as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a row says about an event beyond its type, cut to fit a table row.
fn detail(event: &Value) -> String {
    let full = full_detail(event);
    match full.char_indices().nth(90) {
        Some((i, _)) => format!("{}…", &full[..i]),
        None => full,
    }
}

/// The refusal an event records, or the members it sets.
fn full_detail(event: &Value) -> String {
    let payload = &event["Payload"];
    // `Rejection` since schema 2, `Reason` in schema 1 (shown as stored).
    if let Some(reason) = payload.get("Rejection").or(payload.get("Reason")).filter(|r| r.is_object()) {
        let code = reason.get("Reason").map(text).unwrap_or_else(|| text(&reason["Kind"]));
        return format!("REFUSED {}: {}", code, text(&reason["Message"]));
    }
    match payload {
        Value::Object(m) if event["EventType"] == "PhoneNumberRequested" => {
            format!("{} {}", text(&m["PhoneNumber"]), text(&m["NumberType"]))
        }
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| *k != "Reason")
            .map(|(k, v)| format!("{k}={}", text(v)))
            .take(4)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn event_row(e: &Value) -> [String; 8] {
    [
        text(&e["Position"]),
        text(&e["Version"]),
        time(&e["TimestampMs"].as_f64().map(|ms| Value::from(ms / 1000.0)).unwrap_or(Value::Null)),
        text(&e["EventType"]),
        text(&e["StreamId"]),
        text(&e["Account"]),
        text(&e["RequestId"]),
        detail(e),
    ]
}

fn print_events(events: &[Value], json: bool) {
    if json {
        for e in events {
            println!("{e}");
        }
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["Position", "Ver", "Time", "Type", "Stream", "Account", "Request", "Detail"]);
    for e in events {
        table.add_row(event_row(e));
    }
    println!("{table}");
}

fn print_messages(messages: &[Value], json: bool) {
    if json {
        for m in messages {
            println!("{m}");
        }
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["Position", "Time", "Channel", "From", "To", "Message id", "Body"]);
    for m in messages {
        let from = match m.get("PoolId") {
            Some(pool) => format!("{} (pool {})", text(&m["PhoneNumberId"]), text(pool)),
            None => text(&m["PhoneNumberId"]),
        };
        table.add_row([
            text(&m["Position"]),
            time(&m["SentTimestamp"]),
            text(&m["Channel"]),
            from,
            text(&m["DestinationPhoneNumber"]),
            text(&m["MessageId"]),
            m.get("MessageBody").map(text).unwrap_or_default(),
        ]);
    }
    println!("{table}");
}

fn print_fields(value: &Value, json: bool) {
    if json {
        println!("{value}");
        return;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["Field", "Value"]);
    let mut add = |k: &str, v: &Value| {
        table.add_row([
            k.to_string(),
            if k.ends_with("Timestamp") {
                format!("{} ({})", text(v), time(v))
            } else {
                text(v)
            },
        ]);
    };
    if let Some(m) = value.as_object() {
        for (k, v) in m {
            match v {
                Value::Object(inner) => {
                    for (ik, iv) in inner {
                        add(&format!("{k}.{ik}"), iv);
                    }
                }
                other => add(k, other),
            }
        }
    }
    println!("{table}");
}

/// Prints a page of a replay; the stream's name heads the first.
fn print_replay(value: &Value, json: bool, first: bool) {
    let steps = value["Steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    if json {
        for s in steps {
            println!("{s}");
        }
        return;
    }
    if first {
        println!("{}", text(&value["StreamId"]));
    }
    for s in steps {
        println!(
            "  v{:<3} #{:<6} {}  {:<24} {}  ({} by {})",
            text(&s["Version"]),
            text(&s["Position"]),
            time(&s["Timestamp"]),
            text(&s["EventType"]),
            text(&s["Command"]),
            text(&s["RequestId"]),
            text(&s["Account"])
        );
        if let Some(r) = s.get("Rejection") {
            println!(
                "         refused: {} {} — {}",
                text(&r["Kind"]),
                r.get("Reason").map(text).unwrap_or_default(),
                text(&r["Message"])
            );
            let seen = &s["StateSeen"];
            let facts: Vec<String> = ["Status", "DeletionProtectionEnabled", "PoolId", "PendingPoolId", "Pools", "Members"]
                .iter()
                .filter_map(|k| seen.get(*k).map(|v| format!("{k}={}", text(v))))
                .collect();
            // A big map of the state seen shows only the entry the refusal names: say so.
            let omitted: Vec<String> = s["StateSeenOmitted"]
                .as_object()
                .map(|o| o.iter().map(|(k, n)| format!("{} entries of {k} not shown", text(n))).collect())
                .unwrap_or_default();
            let omitted = if omitted.is_empty() {
                String::new()
            } else {
                format!(" ({})", omitted.join(", "))
            };
            println!(
                "         state seen: {}{omitted}",
                if facts.is_empty() { "(none)".into() } else { facts.join(", ") }
            );
        }
        for c in s["Changes"].as_array().map(Vec::as_slice).unwrap_or_default() {
            if text(&s["EventType"]).ends_with("Requested") || text(&s["EventType"]).ends_with("Created") {
                continue;
            }
            // An entry of a map member (`Key`) is named as `Member[key]`.
            let field = match c.get("Key") {
                Some(key) => format!("{}[{}]", text(&c["Field"]), text(key)),
                None => text(&c["Field"]),
            };
            println!("         {field}: {} → {}", text(&c["Before"]), text(&c["After"]));
        }
    }
}

/// What a clustered log's check cannot vouch for yet: the events after the last checkpoint are
/// chained by the node that answered, from what it read, not fixed by the sealer.
fn unsealed(value: &Value, sealed: u64) -> String {
    match value["HeadPosition"].as_u64() {
        Some(head) if head > sealed => format!(" (positions {} to {head} not sealed yet)", sealed + 1),
        _ => String::new(),
    }
}

/// How far a verified log is sealed, when that says something: with several nodes, the
/// checkpoints matched and the positions none covers yet (the whole log before the first).
fn sealing(value: &Value) -> String {
    let Some(sealed) = value["SealedUpTo"].as_u64() else {
        return String::new();
    };
    let note = unsealed(value, sealed);
    match value["CheckpointsChecked"].as_u64() {
        Some(n) if n > 0 => format!("; sealed up to {sealed}, {n} checkpoints match{note}"),
        _ if sealed > 0 || !note.is_empty() => format!("; sealed up to {sealed}{note}"),
        _ => String::new(),
    }
}

fn print_verify(value: &Value, json: bool) -> ExitCode {
    if json {
        println!("{value}");
    } else if value["Ok"] == Value::Bool(true) {
        // A chain that starts mid-log takes its first event's hash as given: what it proves
        // starts with the event after.
        let from = match value["AnchoredAt"].as_u64() {
            Some(at) if at > 1 => format!("{} (the hash at {at} taken as given)", at.saturating_add(1)),
            _ => text(&value["AnchoredAt"]),
        };
        println!(
            "OK: {} events in {} streams; chain intact from position {from} to {}; head hash {}{}{}",
            text(&value["Events"]),
            text(&value["Streams"]),
            text(&value["HeadPosition"]),
            text(&value["HeadHash"]),
            match value["SnapshotsChecked"].as_u64() {
                Some(n) if n > 0 => format!("; {n} snapshots equal a full replay"),
                _ => String::new(),
            },
            sealing(value)
        );
    } else {
        let b = &value["FirstBreak"];
        println!(
            "BROKEN at position {} ({} v{}): {}",
            text(&b["Position"]),
            text(&b["StreamId"]),
            text(&b["Version"]),
            text(&b["Problem"])
        );
    }
    if value["Ok"] == Value::Bool(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_recheck(value: &Value, json: bool) -> ExitCode {
    let divergences = value["Divergences"].as_array().map(Vec::as_slice).unwrap_or_default();
    if json {
        println!("{value}");
    } else {
        println!(
            "{} commands in {} streams re-decided ({} without a recorded input); {} decided differently",
            text(&value["CommandsChecked"]),
            text(&value["Streams"]),
            text(&value["CommandsSkipped"]),
            divergences.len()
        );
        if !divergences.is_empty() {
            let mut table = Table::new();
            table
                .load_preset(UTF8_BORDERS_ONLY)
                .set_header(["Stream", "Ver", "Command", "Request", "Recorded", "Today"]);
            for d in divergences {
                table.add_row([
                    text(&d["StreamId"]),
                    text(&d["Version"]),
                    text(&d["Command"]),
                    text(&d["RequestId"]),
                    d["Recorded"].to_string(),
                    d["Today"].to_string(),
                ]);
            }
            println!("{table}");
        }
    }
    if divergences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_says_which_positions_no_checkpoint_covers_yet() {
        let report = |head: u64| serde_json::json!({"HeadPosition": head});
        assert_eq!(unsealed(&report(120), 100), " (positions 101 to 120 not sealed yet)");
        assert_eq!(unsealed(&report(100), 100), "");
        assert_eq!(unsealed(&serde_json::json!({}), 100), "");
        let report = |head: u64, sealed: u64, checkpoints: u64| serde_json::json!({"HeadPosition": head, "SealedUpTo": sealed, "CheckpointsChecked": checkpoints});
        assert_eq!(sealing(&report(7, 7, 0)), "; sealed up to 7", "one node: the whole log");
        assert_eq!(sealing(&report(0, 0, 0)), "", "an empty log");
        assert_eq!(
            sealing(&report(120, 100, 3)),
            "; sealed up to 100, 3 checkpoints match (positions 101 to 120 not sealed yet)"
        );
        // A clustered log with no checkpoint yet: the whole of it.
        assert_eq!(sealing(&report(7, 0, 0)), "; sealed up to 0 (positions 1 to 7 not sealed yet)");
    }
}
