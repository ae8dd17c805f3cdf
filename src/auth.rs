//! Who is calling: the account, region and rights of a request.
//!
//! Two modes (`[auth] mode`):
//! - `permissive` (the default, like other local AWS emulators): signatures are not checked. The
//!   account is the access key id of the SigV4 credential when it is 12 digits, else
//!   `default_account`; the region is the credential scope's. Every caller may read the whole
//!   audit trail.
//! - `sigv4`: every request must carry a valid AWS Signature Version 4 made with one of the
//!   credentials of `[auth] credentials_file`, within 15 minutes of the server's clock. The account
//!   and the admin right are the credential's; the region is the credential scope's.
//!
//! A signature is checked by computing it again with the `aws-sigv4` crate (the signer of the AWS
//! SDK for Rust), from the request as it arrived: its method, path, query, the headers it says it
//! signed, and its body. Nothing here canonicalises a request by hand. Failures are the errors
//! AWS's JSON services answer (`MissingAuthenticationTokenException`,
//! `IncompleteSignatureException`, `InvalidSignatureException`, `UnrecognizedClientException`),
//! which the SDKs surface by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use actix_web::http::header::HeaderMap;
use actix_web::HttpRequest;
use serde::{Deserialize, Serialize};

use crate::config::{is_account_id, is_region};
use crate::domain::Scope;

/// The signing name of the service (`signingName` in the model): a credential scope names it.
pub const SIGNING_NAME: &str = "sms-voice";

/// How far a request's signing time may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// `[auth]`: how callers are authenticated.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The TOML file of `[[credentials]]` (needed by `mode = "sigv4"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// Whether signatures are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Not checked; any caller may act as any account.
    #[default]
    Permissive,
    /// Checked against the credentials file.
    Sigv4,
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == AuthMode::Sigv4 && self.credentials_file.is_none() {
            return Err("auth.mode = \"sigv4\" needs auth.credentials_file".into());
        }
        Ok(())
    }
}

/// One `[[credentials]]` table of the credentials file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The 12-digit account this credential acts as.
    pub account: String,
    /// Whether it may read every account's audit trail and check the whole log.
    #[serde(default)]
    pub admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: Vec<Credential>,
}

/// Why the credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credentials file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    /// May read every account's audit trail (every caller in permissive mode).
    pub admin: bool,
}

/// Why a request is not authenticated; each is one of AWS's error shapes (see
/// [`crate::aws_error::AwsJsonError::unauthenticated`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header.
    #[error("Request is missing Authentication Token")]
    Missing,
    /// An `Authorization` header that is not a complete SigV4 one.
    #[error("{0}")]
    Incomplete(String),
    /// A signature made with another secret, or over another request.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    Mismatch,
    /// A signing time outside the skew window, or a credential scope that does not fit.
    #[error("{0}")]
    Invalid(String),
    /// An access key id the credentials file does not have.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
}

/// Authenticates requests in the configured mode.
pub struct Authenticator {
    credentials: Option<HashMap<String, Credential>>,
    default_account: String,
    default_region: String,
}

impl Authenticator {
    /// Permissive: nothing is checked.
    pub fn permissive(default_account: &str, default_region: &str) -> Self {
        Authenticator {
            credentials: None,
            default_account: default_account.to_string(),
            default_region: default_region.to_string(),
        }
    }

    /// Strict: requests must be signed with one of `credentials`.
    pub fn sigv4(credentials: Vec<Credential>, default_region: &str) -> Self {
        Authenticator {
            credentials: Some(credentials.into_iter().map(|c| (c.access_key_id.clone(), c)).collect()),
            default_account: String::new(),
            default_region: default_region.to_string(),
        }
    }

    /// The authenticator `config` describes (reading its credentials file).
    pub fn from_config(config: &AuthConfig, default_account: &str, default_region: &str) -> Result<Self, CredentialsError> {
        match (config.mode, &config.credentials_file) {
            (AuthMode::Sigv4, Some(path)) => Ok(Self::sigv4(load_credentials(path)?, default_region)),
            _ => Ok(Self::permissive(default_account, default_region)),
        }
    }

    /// Whether signatures are checked.
    pub fn is_strict(&self) -> bool {
        self.credentials.is_some()
    }

    /// Everything about `req`'s signature that its headers alone settle: an `Authorization` of
    /// a known key, scoped to this service and a region, signed within the skew window, naming
    /// the operation among what it signs. Checked before the body is read, so a caller without a
    /// key (or replaying an old request) takes no share of the budget of bodies being received.
    pub fn precheck(&self, req: &HttpRequest) -> Result<(), AuthFailure> {
        self.checked_headers(req).map(|_| ())
    }

    /// The caller of `req`, whose body is `body`.
    pub fn authenticate(&self, req: &HttpRequest, body: &[u8]) -> Result<Caller, AuthFailure> {
        let Some((auth, credential, signed_at)) = self.checked_headers(req)? else {
            return Ok(Caller {
                scope: self.permissive_scope(req.headers()),
                admin: true,
            });
        };
        let expected = signature_of(req, body, &auth, credential, signed_at)?;
        // Compared in constant time: how long the comparison takes says nothing of the secret.
        if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
            return Err(AuthFailure::Mismatch);
        }
        Ok(Caller {
            scope: Scope::new(&credential.account, auth.region),
            admin: credential.admin,
        })
    }

    /// [`precheck`](Self::precheck)'s checks, and what they found (`None` in permissive mode).
    #[allow(clippy::type_complexity)]
    fn checked_headers<'r>(&self, req: &'r HttpRequest) -> Result<Option<(Authorization<'r>, &Credential, SystemTime)>, AuthFailure> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let header = match req.headers().get("authorization") {
            None => return Err(AuthFailure::Missing),
            Some(v) => v
                .to_str()
                .map_err(|_| AuthFailure::Incomplete("Authorization header is not ASCII".into()))?,
        };
        let auth = Authorization::parse(header)?;
        let credential = credentials.get(auth.access_key_id).ok_or(AuthFailure::UnknownKey)?;
        let signed_at = signing_time(req.headers())?;
        check_scope(&auth, signed_at)?;
        // The operation is part of what is signed: with `X-Amz-Target` left out, a captured
        // request's signed body could be sent again as another operation (an update's as a
        // release). The AWS SDKs and CLI sign it.
        if req.headers().contains_key("x-amz-target") && !auth.signed_headers.contains(&"x-amz-target") {
            return Err(AuthFailure::Incomplete(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        check_skew(signed_at, SystemTime::now())?;
        Ok(Some((auth, credential, signed_at)))
    }

    /// The account and region a request names, unchecked (permissive mode).
    fn permissive_scope(&self, headers: &HeaderMap) -> Scope {
        let parsed = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Authorization::parse(v).ok());
        let account = parsed
            .as_ref()
            .map(|a| a.access_key_id)
            .filter(|k| is_account_id(k))
            .unwrap_or(&self.default_account);
        let region = parsed
            .as_ref()
            .map(|a| a.region)
            .filter(|r| is_region(r))
            .unwrap_or(&self.default_region);
        Scope::new(account, region)
    }
}

/// Reads and checks a credentials file.
pub fn load_credentials(path: &Path) -> Result<Vec<Credential>, CredentialsError> {
    let invalid = |message: String| CredentialsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: CredentialsFile = toml_from_str(&text).map_err(invalid)?;
    if file.credentials.is_empty() {
        return Err(invalid("no [[credentials]]".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &file.credentials {
        if c.access_key_id.len() < 16 || c.access_key_id.len() > 128 || !c.access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(format!(
                "access_key_id {:?} must be 16 to 128 letters and digits",
                c.access_key_id
            )));
        }
        if c.secret_access_key.len() < 16 {
            return Err(invalid(format!("the secret of {} must be at least 16 characters", c.access_key_id)));
        }
        if !is_account_id(&c.account) {
            return Err(invalid(format!("the account of {} must be 12 digits", c.access_key_id)));
        }
        if !seen.insert(c.access_key_id.as_str()) {
            return Err(invalid(format!("access_key_id {} appears twice", c.access_key_id)));
        }
    }
    Ok(file.credentials)
}

/// TOML through `figment`, which the configuration already uses.
fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text)).extract().map_err(|e| e.to_string())
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
#[derive(Debug)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

impl<'a> Authorization<'a> {
    fn parse(header: &'a str) -> Result<Self, AuthFailure> {
        let incomplete = |m: String| AuthFailure::Incomplete(m);
        let rest = header.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
            incomplete(format!(
                "Authorization header requires the AWS4-HMAC-SHA256 algorithm. Authorization={}",
                header.split(' ').next().unwrap_or_default()
            ))
        })?;
        let mut params: HashMap<&str, &str> = HashMap::new();
        for pair in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                incomplete(format!(
                    "'{pair}' not a valid key=value pair (missing equal-sign) in Authorization header"
                ))
            })?;
            params.insert(key, value);
        }
        let required = |name: &str| {
            params.get(name).copied().filter(|v| !v.is_empty()).ok_or_else(|| {
                incomplete(format!(
                    "Authorization header requires '{name}' parameter. Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters."
                ))
            })
        };
        let credential = required("Credential")?;
        let signed_headers = required("SignedHeaders")?;
        let signature = required("Signature")?;
        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, "aws4_request"] = parts.as_slice() else {
            return Err(incomplete(format!(
                "Credential should be scoped to a valid region, not '{credential}'. Credential must be <access key>/<date>/<region>/<service>/aws4_request."
            )));
        };
        Ok(Authorization {
            access_key_id,
            date,
            region,
            service,
            signed_headers: signed_headers.split(';').collect(),
            signature,
        })
    }
}

/// The request's signing time (`X-Amz-Date`, `20261127T201500Z`).
fn signing_time(headers: &HeaderMap) -> Result<SystemTime, AuthFailure> {
    let value = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        AuthFailure::Incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into())
    })?;
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(value, &format)
        .map_err(|_| AuthFailure::Incomplete(format!("X-Amz-Date '{value}' is not of the form YYYYMMDD'T'HHMMSS'Z'")))?
        .assume_utc();
    Ok(SystemTime::from(at))
}

fn amz_date(t: SystemTime) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from(t).format(&format).unwrap_or_default()
}

/// The credential scope must name the signing day, a region and this service.
fn check_scope(auth: &Authorization<'_>, signed_at: SystemTime) -> Result<(), AuthFailure> {
    let day = &amz_date(signed_at)[..8];
    if auth.date != day {
        return Err(AuthFailure::Invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}', from '{}'.",
            auth.date,
            amz_date(signed_at)
        )));
    }
    if !is_region(auth.region) {
        return Err(AuthFailure::Invalid(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            auth.region
        )));
    }
    if auth.service != SIGNING_NAME {
        return Err(AuthFailure::Invalid(format!(
            "Credential should be scoped to correct service: '{SIGNING_NAME}'."
        )));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(AuthFailure::Invalid(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    Ok(())
}

/// The signing time must be within [`MAX_SKEW`] of `now` (AWS's wording for either side).
fn check_skew(signed_at: SystemTime, now: SystemTime) -> Result<(), AuthFailure> {
    if signed_at + MAX_SKEW < now {
        return Err(AuthFailure::Invalid(format!(
            "Signature expired: {} is now earlier than {} ({} - 15 min.)",
            amz_date(signed_at),
            amz_date(now - MAX_SKEW),
            amz_date(now)
        )));
    }
    if signed_at > now + MAX_SKEW {
        return Err(AuthFailure::Invalid(format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            amz_date(signed_at),
            amz_date(now + MAX_SKEW),
            amz_date(now)
        )));
    }
    Ok(())
}

/// The signature `credential` gives this request, computed by `aws-sigv4` over the headers the
/// request says it signed.
fn signature_of(
    req: &HttpRequest,
    body: &[u8],
    auth: &Authorization<'_>,
    credential: &Credential,
    signed_at: SystemTime,
) -> Result<String, AuthFailure> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let mut headers = Vec::new();
    for name in &auth.signed_headers {
        for value in req.headers().get_all(*name) {
            let value = value
                .to_str()
                .map_err(|_| AuthFailure::Incomplete(format!("signed header {name} is not ASCII")))?;
            headers.push((*name, value));
        }
    }
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFailure::Mismatch)?;
    let uri = format!("http://{host}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let request = SignableRequest::new(req.method().as_str(), uri, headers.into_iter(), SignableBody::Bytes(body))
        .map_err(|_| AuthFailure::Mismatch)?;
    // The same settings as the SDKs' signer, except that nothing is excluded: exactly the headers
    // the client signed are given.
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let identity = aws_credential_types::Credentials::new(
        auth.access_key_id,
        &credential.secret_access_key,
        None,
        None,
        "phone-ledger credentials file",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(SIGNING_NAME)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| AuthFailure::Mismatch)?
        .into();
    let output = sign(request, &params).map_err(|_| AuthFailure::Mismatch)?;
    Ok(output.signature().to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Signs a request as the AWS SDKs do (for this crate's own clients: `audit --server`, tests).
/// Returns the headers to add (`x-amz-date`, `authorization`, and `x-amz-security-token` with a
/// session token).
pub fn sign_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &aws_credential_types::Credentials,
    region: &str,
    at: SystemTime,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(at)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let request = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))?;
    let (instructions, _) = sign(request, &params)?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Signs this crate's own requests (`audit --server`, `loadtest --sign`) as the AWS SDKs do,
/// with the credentials a person has set up for them: the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the shared files (`~/.aws/credentials`
/// and `~/.aws/config`, profile `AWS_PROFILE`), read by `aws-config`. (Instance and container
/// roles are not asked: these talk to a local service.)
pub struct ClientSigner {
    credentials: aws_credential_types::Credentials,
    region: String,
}

impl ClientSigner {
    /// The credentials found, if any.
    pub fn from_environment() -> Option<ClientSigner> {
        use aws_config::environment::EnvironmentVariableCredentialsProvider;
        use aws_config::meta::credentials::CredentialsProviderChain;
        use aws_config::profile::ProfileFileCredentialsProvider;
        use aws_credential_types::provider::ProvideCredentials;
        let chain = CredentialsProviderChain::first_try("Environment", EnvironmentVariableCredentialsProvider::new())
            .or_else("Profile", ProfileFileCredentialsProvider::builder().build());
        // Its own small runtime: callers may or may not be inside one.
        let credentials = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(chain.provide_credentials()).ok()
        })
        .join()
        .ok()??;
        // The region only names the signature's scope.
        let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_string());
        Some(ClientSigner { credentials, region })
    }

    /// The headers that sign a request of `method` to `url` with `headers` and `body`.
    pub fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>> {
        sign_request(method, url, headers, body, &self.credentials, &self.region, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const KEY: &str = "AKIAPHONELEDGER0001";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn strict() -> Authenticator {
        Authenticator::sigv4(
            vec![Credential {
                access_key_id: KEY.into(),
                secret_access_key: SECRET.into(),
                account: "111122223333".into(),
                admin: false,
            }],
            "us-east-1",
        )
    }

    /// A request signed with `secret` at `at`, as the SDK's signer signs it.
    fn signed(secret: &str, at: SystemTime, body: &[u8]) -> TestRequest {
        let credentials = aws_credential_types::Credentials::new(KEY, secret, None, None, "test");
        let base = [
            ("host", "localhost:4566"),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "PinpointSMSVoiceV2.DescribePools"),
        ];
        let added = sign_request("POST", "http://localhost:4566/", &base, body, &credentials, "eu-west-1", at).expect("sign");
        let mut req = TestRequest::post().uri("/");
        for (k, v) in base.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(added) {
            req = req.insert_header((k, v));
        }
        req
    }

    #[test]
    fn a_good_signature_names_the_credentials_account_and_the_scopes_region() {
        let caller = strict()
            .authenticate(&signed(SECRET, SystemTime::now(), b"{}").to_http_request(), b"{}")
            .expect("authenticated");
        assert_eq!(caller.scope, Scope::new("111122223333", "eu-west-1"));
        assert!(!caller.admin);
    }

    #[test]
    fn another_secret_or_another_body_does_not_match() {
        let auth = strict();
        let wrong = signed("a-wrong-secret-of-enough-length", SystemTime::now(), b"{}");
        assert_eq!(auth.authenticate(&wrong.to_http_request(), b"{}"), Err(AuthFailure::Mismatch));
        let tampered = signed(SECRET, SystemTime::now(), b"{}");
        assert_eq!(
            auth.authenticate(&tampered.to_http_request(), br#"{"PoolIds":["x"]}"#),
            Err(AuthFailure::Mismatch)
        );
    }

    #[test]
    fn signatures_older_or_newer_than_fifteen_minutes_are_refused() {
        let auth = strict();
        let old = signed(SECRET, SystemTime::now() - Duration::from_secs(16 * 60), b"{}");
        let refused = auth.authenticate(&old.to_http_request(), b"{}");
        assert!(
            matches!(&refused, Err(AuthFailure::Invalid(m)) if m.starts_with("Signature expired:")),
            "{refused:?}"
        );
        let future = signed(SECRET, SystemTime::now() + Duration::from_secs(16 * 60), b"{}");
        let refused = auth.authenticate(&future.to_http_request(), b"{}");
        assert!(
            matches!(&refused, Err(AuthFailure::Invalid(m)) if m.starts_with("Signature not yet current:")),
            "{refused:?}"
        );
        let recent = signed(SECRET, SystemTime::now() - Duration::from_secs(14 * 60), b"{}");
        assert!(auth.authenticate(&recent.to_http_request(), b"{}").is_ok());
    }

    /// A signature that leaves the operation out does not authenticate a request naming one.
    #[test]
    fn the_operation_must_be_signed() {
        let credentials = aws_credential_types::Credentials::new(KEY, SECRET, None, None, "test");
        let unsigned_target = [("host", "localhost:4566"), ("content-type", "application/x-amz-json-1.0")];
        let added = sign_request(
            "POST",
            "http://localhost:4566/",
            &unsigned_target,
            b"{}",
            &credentials,
            "us-east-1",
            SystemTime::now(),
        )
        .expect("sign");
        let request = |target: Option<&str>| {
            let mut req = TestRequest::post().uri("/");
            for (k, v) in unsigned_target
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(added.clone())
            {
                req = req.insert_header((k, v));
            }
            if let Some(target) = target {
                req = req.insert_header(("x-amz-target", target.to_string()));
            }
            req.to_http_request()
        };
        assert!(
            strict().authenticate(&request(None), b"{}").is_ok(),
            "no operation named: the signature stands"
        );
        match strict().authenticate(&request(Some("PinpointSMSVoiceV2.ReleasePhoneNumber")), b"{}") {
            Err(AuthFailure::Incomplete(message)) => assert!(message.contains("X-Amz-Target"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_malformed_and_unknown_credentials_are_told_apart() {
        let auth = strict();
        let none = TestRequest::post().uri("/").to_http_request();
        assert_eq!(auth.authenticate(&none, b""), Err(AuthFailure::Missing));
        for header in [
            "Bearer x",
            "AWS4-HMAC-SHA256 garbage",
            "AWS4-HMAC-SHA256 Credential=AKIAPHONELEDGER0001/20261127/us-east-1/sms-voice/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=AKIAPHONELEDGER0001, SignedHeaders=host, Signature=00",
        ] {
            let req = TestRequest::post()
                .uri("/")
                .insert_header(("authorization", header))
                .to_http_request();
            assert!(matches!(auth.authenticate(&req, b""), Err(AuthFailure::Incomplete(_))), "{header}");
        }
        let unknown = TestRequest::post()
            .uri("/")
            .insert_header((
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWNKEY000000/20261127/us-east-1/sms-voice/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            ))
            .to_http_request();
        assert_eq!(auth.authenticate(&unknown, b""), Err(AuthFailure::UnknownKey));
    }

    #[test]
    fn permissive_mode_reads_the_account_and_region_without_checking() {
        let auth = Authenticator::permissive("000000000000", "us-east-1");
        let scope = |header: Option<&str>| {
            let mut req = TestRequest::post().uri("/");
            if let Some(h) = header {
                req = req.insert_header(("authorization", h));
            }
            auth.authenticate(&req.to_http_request(), b"").expect("permissive").scope
        };
        assert_eq!(
            scope(Some(
                "AWS4-HMAC-SHA256 Credential=111122223333/20261126/eu-west-1/sms-voice/aws4_request, SignedHeaders=host, Signature=abc"
            )),
            Scope::new("111122223333", "eu-west-1")
        );
        assert_eq!(
            scope(Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-west-2/sms-voice/aws4_request, SignedHeaders=host, Signature=x"
            )),
            Scope::new("000000000000", "us-west-2")
        );
        assert_eq!(scope(None), Scope::new("000000000000", "us-east-1"));
        assert_eq!(scope(Some("garbage")), Scope::new("000000000000", "us-east-1"));
        // A region too long for the ARNs made from it is not taken.
        let long = format!(
            "AWS4-HMAC-SHA256 Credential=111122223333/20261126/{}/sms-voice/aws4_request, SignedHeaders=host, Signature=x",
            "a".repeat(300)
        );
        assert_eq!(scope(Some(&long)), Scope::new("111122223333", "us-east-1"));
    }

    #[test]
    fn a_credentials_file_is_checked_when_loaded() {
        let dir = tempfile::tempdir().expect("dir");
        let write = |text: &str| {
            let path = dir.path().join("credentials.toml");
            std::fs::write(&path, text).expect("write");
            load_credentials(&path)
        };
        let good = "[[credentials]]\naccess_key_id = \"AKIAPHONELEDGER0001\"\nsecret_access_key = \"0123456789abcdef0123\"\naccount = \"111122223333\"\nadmin = true\n";
        assert_eq!(write(good).expect("loads")[0].account, "111122223333");
        for bad in [
            "",
            "[[credentials]]\naccess_key_id = \"short\"\nsecret_access_key = \"0123456789abcdef0123\"\naccount = \"111122223333\"\n",
            "[[credentials]]\naccess_key_id = \"AKIAPHONELEDGER0001\"\nsecret_access_key = \"0123456789abcdef0123\"\naccount = \"1\"\n",
            &format!("{good}{good}"),
            "[[credentials]]\naccess_key_id = \"AKIAPHONELEDGER0001\"\nsecret = \"x\"\n",
        ] {
            assert!(matches!(write(bad), Err(CredentialsError::Invalid { .. })), "{bad}");
        }
        assert!(matches!(
            load_credentials(&dir.path().join("absent.toml")),
            Err(CredentialsError::Read { .. })
        ));
    }
}
