//! `GET /console`: the audit console, one page served by the server itself (HTML, CSS and script
//! embedded in the binary; nothing from a CDN or the network). It reads only the audit API:
//! a number's or pool's timeline (`/audit/{kind}/{id}/replay`) with each event's command, caller,
//! request id, what it changed and, for a refusal, the reason and the state it saw; the state
//! right after any version (`.../state?Version=N`); the live feed (`/audit/events?Follow=true`,
//! server-sent events) filtered by type and account; the chain's digest and a verify button.
//! What is shown lives in the URL's hash, so a link shares it.
//!
//! The browser signs nothing: the console is for a permissive server (the default, on
//! loopback), where the audit API answers unsigned reads.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("index.html");

/// The console page.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page's own inline script and style, and requests to this server only.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(PAGE)
}
