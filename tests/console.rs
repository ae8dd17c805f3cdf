//! The audit console (`/console`) in a real browser: Debian's chromium, driven over WebDriver
//! (Debian's chromedriver) from Rust with fantoccini, against a server with a scripted history.
//! It asserts what a person sees: the timeline of a number looked up by its E.164 number, a
//! refusal's reason and the state it saw, the diff after stepping with the keyboard, a link that
//! reopens the same view, a live feed entry appearing, and the chain verified. `.ci/run` installs
//! chromium and chromium-driver; where they are missing the test says so and skips (or fails,
//! under `.ci/run`). With `PHONE_LEDGER_CONSOLE_SCREENSHOT=FILE.png` it saves a screenshot.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use common::{request_with_number, TestServer, ACCOUNT};
use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver on a loopback port of its own, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // In a process group of its own, with the browsers it starts: the guard stops them all.
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("chromedriver");
        // Owned by the guard from here on: stopped however the test ends.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if ureq::get(&format!("{}/status", driver.url)).call().is_ok() {
                return driver;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not come up on {}", driver.url);
    }
}

impl Drop for Driver {
    /// Kills chromedriver and any browser it left (a test that panicked before closing its
    /// session leaves a headless chromium behind otherwise).
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium session; the flags keep it off the network (this machine has none).
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    // Both of rustls's crypto providers are linked in (by different dependencies): name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClientBuilder::rustls()
        .expect("TLS")
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

async fn text_of(client: &Client, css: &str) -> String {
    let element = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    element.text().await.expect("text")
}

/// Waits until the text of `css` contains `wanted`.
async fn until_text(client: &Client, css: &str, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = match client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now.contains(wanted) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css} never showed {wanted:?}; it shows {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_numbers_story_and_the_live_feed() {
    let installed = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !common::tool_available("chromium and chromedriver", installed, "apt-get install chromium chromium-driver") {
        return;
    }
    // The scripted history: requested, protected, a release refused, unprotected, released.
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, e164) = request_with_number(&c, MessageType::Transactional).await;
    let protect = |on: bool| c.update_phone_number().phone_number_id(&id).deletion_protection_enabled(on).send();
    protect(true).await.expect("protect");
    c.release_phone_number().phone_number_id(&id).send().await.expect_err("protected");
    protect(false).await.expect("unprotect");
    c.release_phone_number().phone_number_id(&id).send().await.expect("released");

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;
    let console = format!("{}/console", server.url());

    // Looked up by its E.164 number: the whole timeline, the last event selected.
    client
        .goto(&format!("{console}#resource={}", e164.replace('+', "%2B")))
        .await
        .expect("goto");
    until_text(&client, "#detail", "Version 5: Released").await;
    let rows = client.find_all(Locator::Css("#timeline tbody tr")).await.expect("rows");
    let mut types = Vec::new();
    for r in &rows {
        types.push(r.find(Locator::Css("td.type")).await.expect("type").text().await.expect("text"));
    }
    assert_eq!(
        types,
        [
            "PhoneNumberRequested",
            "PhoneNumberUpdated",
            "ReleaseRejected",
            "PhoneNumberUpdated",
            "Released"
        ]
    );
    assert!(text_of(&client, "#timeline tbody tr:nth-child(3)")
        .await
        .contains("ReleasePhoneNumber"));

    // The refusal: its reason, and the state the command was decided on.
    rows[2].click().await.expect("click the refusal");
    let reason = until_text(&client, "#detail .refusal-reason", "DELETION_PROTECTION_ENABLED").await;
    assert!(reason.starts_with("Refused"), "{reason}");
    let seen = text_of(&client, "#detail .state-seen").await;
    assert!(seen.contains("\"DeletionProtectionEnabled\": true"), "{seen}");

    // One step back with the keyboard: the protection being turned on, as a diff, and the URL
    // now holds that version.
    client.active_element().await.expect("focus").send_keys("k").await.expect("k");
    until_text(&client, "#detail", "Version 2: PhoneNumberUpdated").await;
    let diff = text_of(&client, "#detail table.diff tbody").await;
    assert!(
        diff.contains("DeletionProtectionEnabled") && diff.contains("false") && diff.contains("true"),
        "{diff}"
    );
    until_text(&client, "#detail pre.state", "\"DeletionProtectionEnabled\": true").await;
    let shared = client.current_url().await.expect("url");
    assert!(shared.fragment().is_some_and(|f| f.contains("version=2")), "{shared}");

    // The link reopens the same view.
    client.goto("about:blank").await.expect("away");
    client.goto(shared.as_str()).await.expect("back");
    until_text(&client, "#detail", "Version 2: PhoneNumberUpdated").await;

    // The live feed: a number requested now appears.
    let (fresh, _) = request_with_number(&c, MessageType::Transactional).await;
    until_text(&client, "#feed", &fresh).await;
    assert!(text_of(&client, "#feed li.feed-entry").await.contains("PhoneNumberRequested"));

    // The chain, verified from the page.
    client
        .find(Locator::Id("verify"))
        .await
        .expect("button")
        .click()
        .await
        .expect("verify");
    until_text(&client, "#verified", "chain OK").await;
    assert!(text_of(&client, "#digest").await.contains("events"));

    if let Ok(path) = std::env::var("PHONE_LEDGER_CONSOLE_SCREENSHOT") {
        rows_back_to_refusal(&client).await;
        std::fs::write(&path, client.screenshot().await.expect("screenshot")).expect("save the screenshot");
    }
    client.close().await.expect("close");
}

/// Selects the refusal again (the most telling view, for the README's screenshot).
async fn rows_back_to_refusal(client: &Client) {
    let rows = client.find_all(Locator::Css("#timeline tbody tr")).await.expect("rows");
    rows[2].click().await.expect("click");
    until_text(client, "#detail .refusal-reason", "DELETION_PROTECTION_ENABLED").await;
}
