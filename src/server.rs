//! Wiring and lifecycle: open the log (rebuilding the derived index if it was dropped), build the
//! [`LifecycleService`], mount the AWS JSON API, the audit API and `/health` on one actix-web
//! app, serve on the given listener until the given shutdown future completes, then let
//! in-flight requests finish, end the feed followers, drain the writer and close the log.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::actors::ActorSettings;
use crate::api::{self, ApiState};
use crate::audit::http::AuditState;
use crate::config::Config;
use crate::numbering::NumberPicker;
use crate::projection::{rebuild_index_showing, INDEX_LAYOUT_VERSION};
use crate::service::LifecycleService;
use crate::store::{IndexState, Store, StoreError};

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the event log")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or create the pagination secret {path}")]
    Secret {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Io(#[from] std::io::Error),
    #[error("server thread: {0}")]
    Thread(String),
    #[error("strict SigV4 mode cannot start")]
    Credentials(#[from] crate::auth::CredentialsError),
    /// The log does not reach what it had acknowledged (see `durable_mark`).
    #[error("{0}")]
    Damaged(String),
}

/// Opens the configured log and makes its derived index current (rebuilding it from the log when
/// it was dropped or has another layout).
pub async fn open_store(config: &Config) -> Result<Store, ServerError> {
    let store = config.store.connect(&config.data_dir).await?;
    if store.index_state(INDEX_LAYOUT_VERSION).await? == IndexState::NeedsRebuild {
        let events = store.chain_head().await?.position;
        let progress = crate::progress::Progress::events("re-indexing the log", events);
        let entries = rebuild_index_showing(&*store, &progress).await?;
        tracing::info!(entries, "rebuilt derived index from the log");
    }
    Ok(store)
}

/// The application service over an open log.
pub fn service(config: &Config, store: Store) -> Arc<LifecycleService> {
    let actors = ActorSettings {
        snapshot_every: config.snapshot_every,
        idle_timeout: (config.actor_idle_secs > 0).then(|| std::time::Duration::from_secs(config.actor_idle_secs)),
    };
    Arc::new(LifecycleService::new(
        store,
        NumberPicker::new(config.numbering.clone()),
        config.quotas.clone(),
        actors,
        config.max_live_actors,
    ))
}

/// The secret that signs pagination tokens: from the configuration, or kept in the node's data
/// directory (created on first use, readable by its owner only).
fn pagination_secret(config: &Config) -> Result<[u8; 32], ServerError> {
    use sha2::{Digest, Sha256};
    if let Some(secret) = &config.pagination_secret {
        return Ok(Sha256::digest(secret.as_bytes()).into());
    }
    let path = config.data_dir.join("pagination.key");
    let failed = |source| ServerError::Secret {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => Ok(Sha256::digest(&bytes).into()),
        Ok(_) => Err(failed(std::io::Error::other("expected 32 bytes"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            std::fs::create_dir_all(&config.data_dir).map_err(failed)?;
            write_private(&path, &secret).map_err(failed)?;
            Ok(Sha256::digest(secret).into())
        }
        Err(e) => Err(failed(e)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Mounts every route: the AWS JSON endpoint, `/health`, `/metrics`, the audit console and API, and the AWS JSON
/// "unknown operation" answer for anything else.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(api::configure)
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .route("/console", web::get().to(crate::console::page))
        .service(web::scope("/audit").configure(crate::audit::http::configure))
        .default_service(web::to(api::not_found));
}

/// The Prometheus text exposition of `crate::metrics`.
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::render())
}

async fn health(state: web::Data<ApiState>) -> HttpResponse {
    let live = state.service.live_actors();
    let events = match state.service.store().chain_head().await {
        Ok(head) => head.position,
        Err(e) => {
            let id = uuid::Uuid::new_v4().to_string();
            return api::AwsJsonError::internal(&e, &id).to_response(&id);
        }
    };
    let mut body = serde_json::json!({
        "Status": "ok",
        "LivePhoneNumberActors": live.phone_numbers,
        "LivePoolActors": live.pools,
        "LiveOptOutListActors": live.opt_out_lists,
        "LiveSenderIdActors": live.sender_ids,
        "Events": events,
    });
    // With a shared log: how far into it the writes this node answered for reach (its reads
    // wait for its view to hold them).
    if let Some(through) = state.service.store().acknowledged_through() {
        body["LogThrough"] = through.into();
    }
    HttpResponse::Ok().content_type("application/json").body(body.to_string())
}

/// SIGINT or SIGTERM: the shutdown future of the `serve` command.
pub async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("signal received; stopping");
}

/// Binds the configured address (port 0: an ephemeral one).
pub fn bind(config: &Config) -> Result<TcpListener, ServerError> {
    TcpListener::bind(config.listen).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })
}

/// Serves on `listener` until `shutdown` completes. Must run inside an actix `System`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    serve_notifying(config, listener, shutdown, || {}).await
}

/// Why one run of the server over an open log ended.
enum Stopped {
    /// The shutdown future completed.
    Shutdown,
    /// The log's storage failed (a full disk): the log was closed, to be opened again once the
    /// storage works.
    StorageFailed,
}

/// How often the storage is probed while serving, and, after it failed, how often it is tried
/// again.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// [`serve`], calling `ready` once the log is open and requests are being served. When the
/// log's storage fails (a full disk: the embedded engine refuses everything after a failed
/// write), the server closes the log and answers every request `ServiceUnavailableException`
/// at once, tries the storage every second, and once it takes writes again opens the log again
/// (with every start-up check) and serves as before, on the same listener: it recovers by
/// itself.
async fn serve_notifying(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), ServerError> {
    for warning in &config.deprecations {
        tracing::warn!("{warning}");
    }
    tokio::pin!(shutdown);
    let mut ready = Some(ready);
    let mut recovering = false;
    loop {
        let run = serve_once(&config, listener.try_clone()?, shutdown.as_mut(), || {
            if let Some(ready) = ready.take() {
                ready();
            }
        })
        .await;
        match run {
            Ok(Stopped::Shutdown) => return Ok(()),
            Ok(Stopped::StorageFailed) => recovering = true,
            // The storage still fails as the log is opened again: keep waiting.
            Err(ServerError::Store(e)) if recovering => {
                tracing::warn!(error = %crate::error_chain(&e), "the log cannot be opened yet");
            }
            Err(e) => return Err(e),
        }
        // Meanwhile every request is told at once that the storage is failing.
        let unavailable = HttpServer::new(|| App::new().default_service(web::to(storage_unavailable)))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener.try_clone()?)?
            .run();
        let handle = unavailable.handle();
        let waiting = actix_rt::spawn(unavailable);
        let shut_down = loop {
            tokio::select! {
                () = shutdown.as_mut() => break true,
                () = tokio::time::sleep(PROBE_EVERY) => {}
            }
            if storage_takes_writes(&config.data_dir).await {
                break false;
            }
        };
        handle.stop(true).await;
        let _ = waiting.await;
        if shut_down {
            return Ok(());
        }
        tracing::info!(data_dir = %config.data_dir.display(), "the storage takes writes again; opening the log again");
    }
}

/// The answer to every request while the log's storage is failing.
async fn storage_unavailable() -> HttpResponse {
    let id = uuid::Uuid::new_v4().to_string();
    api::AwsJsonError::storage_recovering().to_response(&id)
}

/// Whether the data directory takes a write of a megabyte again (made durable, then removed).
async fn storage_takes_writes(dir: &Path) -> bool {
    let probe = dir.join(".storage-probe");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let written = std::fs::File::create(&probe).and_then(|mut f| {
            f.write_all(&vec![0u8; 1 << 20])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        written.is_ok()
    })
    .await
    .unwrap_or(false)
}

/// One run of the server over the log, opened here, until shutdown or a storage failure.
async fn serve_once(
    config: &Config,
    listener: TcpListener,
    shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ready: impl FnOnce(),
) -> Result<Stopped, ServerError> {
    let config = config.clone();
    let addr = listener.local_addr()?;
    let auth = Arc::new(crate::auth::Authenticator::from_config(
        &config.auth,
        &config.default_account,
        &config.region,
    )?);
    if auth.is_strict() {
        tracing::info!("auth: sigv4 (every request must be signed with a credential of the credentials file)");
    } else if addr.ip().is_loopback() {
        tracing::info!("auth: permissive (signatures are not checked; a caller acts as the account its access key id names)");
    } else {
        tracing::warn!(%addr, "auth: permissive while listening beyond loopback: every caller can act as any account and read every audit trail; set [auth] mode = \"sigv4\"");
    }
    // Installed before anything is measured (the store's writer, the re-index).
    crate::telemetry::install();
    let store = open_store(&config).await?;
    // The embedded log must reach the mark it left (unless its durability level lets a crash
    // lose the last writes anyway), and keeps it up to date while serving.
    let marked = config.store.backend == crate::store::Backend::Sled && config.store.sled.durability != crate::store::Durability::Relaxed;
    if marked {
        crate::durable_mark::check(&*store, &config.data_dir)
            .await
            .map_err(|e| ServerError::Damaged(crate::error_chain(&e)))?;
    }
    let mark_keeper = if marked {
        crate::durable_mark::keep(store.clone(), config.data_dir.clone())
    } else {
        None
    };
    let secret = pagination_secret(&config)?;
    let service = service(&config, store.clone());
    let shared_log = config.store.backend != crate::store::Backend::Sled;
    // With one node nothing is in flight before requests are served; with several, another node
    // may be between two steps, so only changes left alone for a while are finished, and the
    // same check runs periodically (the reconciler).
    let reconcile_after = std::time::Duration::from_secs(config.reconcile_after_secs.max(1));
    let left_alone_for = if shared_log { reconcile_after } else { std::time::Duration::ZERO };
    match service.recover_interrupted(left_alone_for).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(repaired = n, "finished pool changes and requests interrupted by the last stop"),
        Err(e) => tracing::error!(error = %crate::error_chain(&e), "could not finish interrupted pool changes and requests"),
    }
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let reconciler = shared_log.then(|| {
        let service = service.clone();
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(reconcile_after / 3);
            loop {
                tick.tick().await;
                match service.recover_interrupted(reconcile_after).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(repaired = n, "finished pool changes and requests that a node left unfinished"),
                    Err(e) => tracing::warn!(error = %crate::error_chain(&e), "reconciling pool changes and requests failed; trying again"),
                }
            }
        })
    });
    let admission = Arc::new(
        api::admission::Admission::new(config.max_in_flight, config.account_requests_per_sec)
            .with_body_budget(config.max_body_buffer_bytes),
    );
    let api_state = web::Data::new(ApiState {
        service: service.clone(),
        auth: auth.clone(),
        max_body_bytes: config.max_body_bytes,
        body_timeout: std::time::Duration::from_millis(config.request_body_timeout_ms),
        deadline: std::time::Duration::from_millis(config.request_timeout_ms),
        admission: admission.clone(),
        pagination_secret: secret,
        router: api::routing::Router::new(&config.cluster),
        account: config.account.clone(),
    });
    let tail = crate::audit::tail::SharedTail::start(store.clone(), stopping.clone(), config.follower_lag_limit);
    let audit_state = web::Data::new(AuditState {
        store: store.clone(),
        tail,
        stopping,
        followers: Arc::new(tokio::sync::Semaphore::new(config.max_followers)),
        max_followers: config.max_followers,
        followers_by_account: Arc::default(),
        max_followers_per_account: config.max_followers_per_account,
        replay_resumes: Arc::default(),
        admission,
        auth,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(api_state.clone())
            .app_data(audit_state.clone())
            .configure(routes)
    })
    .shutdown_timeout(10)
    // Shutdown is ours to decide (the `shutdown` future), so that followers are told first.
    .disable_signals()
    .listen(listener)?;
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let events = store.chain_head().await?.position;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), durability = ?store.durability(), events, "phone-ledger listening");
    let running = server.run();
    let handle = running.handle();
    ready();
    // The storage is probed every second: after a failed write the embedded engine refuses
    // everything until the log is opened again.
    let failing = {
        let store = store.clone();
        async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                match store.probe().await {
                    Ok(()) => {}
                    Err(StoreError::Closed) => std::future::pending::<()>().await,
                    Err(e) => return e,
                }
            }
        }
    };
    let (stopped, why) = {
        tokio::pin!(running);
        tokio::pin!(failing);
        // The HTTP server may also end by itself (it failed): the log is closed below all the same.
        let mut ended_by_itself = None;
        let why = tokio::select! {
            outcome = &mut running => {
                ended_by_itself = Some(outcome);
                Stopped::Shutdown
            }
            () = shutdown => Stopped::Shutdown,
            e = &mut failing => {
                tracing::error!(error = %crate::error_chain(&e), "the log's storage is failing; closing the log, answering ServiceUnavailableException, and opening it again once the storage takes writes");
                Stopped::StorageFailed
            }
        };
        let stopped = match ended_by_itself {
            Some(outcome) => outcome,
            None => {
                // Long-lived responses (feed followers) end first; then in-flight requests
                // finish. The command is sent at once; the server future carries it out, so it
                // is the one to wait for (awaiting the handle's future would never end).
                stopping_tx.send_replace(true);
                drop(handle.stop(true));
                running.await
            }
        };
        (stopped, why)
    };
    if let Some(reconciler) = reconciler {
        reconciler.abort();
    }
    drop(service);
    if let (Some(keeper), Stopped::Shutdown) = (mark_keeper, &why) {
        keeper.finish().await;
    }
    match (store.close().await, &why) {
        (Ok(()), _) => tracing::info!("phone-ledger stopped; log closed"),
        // What was acknowledged is durable; what was not is the storage's failure.
        (Err(e), Stopped::StorageFailed) => tracing::warn!(error = %crate::error_chain(&e), "the failing log closed with an error"),
        (Err(e), Stopped::Shutdown) => return Err(e.into()),
    }
    stopped?;
    Ok(why)
}

/// A server on its own thread and actix system (for tests, benches and the load generator).
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// Starts a server and returns once it serves requests.
    pub fn spawn(config: Config) -> Result<RunningServer, ServerError> {
        let listener = bind(&config)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("phone-ledger-server".into()).spawn(move || {
            let shutdown = async move {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            };
            actix_rt::System::new().block_on(serve_notifying(config, listener, shutdown, move || {
                let _ = ready_tx.send(());
            }))
        })?;
        match ready_rx.recv() {
            Ok(()) => Ok(RunningServer {
                addr,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(ServerError::Thread("server stopped before serving".into())),
                Err(_) => Err(ServerError::Thread("server thread panicked".into())),
            },
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:4566`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: in-flight requests finish, the log is flushed and closed.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ServerError> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        thread.join().map_err(|_| ServerError::Thread("server thread panicked".into()))?
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %crate::error_chain(&e), "server did not stop cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pagination_secret_is_made_once_per_data_directory_unless_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let config = Config::defaults_with_data_dir(dir.path().join("not/yet/there")).expect("config");
        let first = pagination_secret(&config).expect("created with its directory");
        assert_eq!(pagination_secret(&config).expect("read back"), first, "kept across restarts");
        let other = Config::defaults_with_data_dir(dir.path().join("elsewhere")).expect("config");
        assert_ne!(pagination_secret(&other).expect("another node's"), first);
        let (mut shared, mut again) = (other.clone(), config);
        shared.pagination_secret = Some("a secret both nodes know".into());
        again.pagination_secret = Some("a secret both nodes know".into());
        assert_eq!(
            pagination_secret(&shared).expect("configured"),
            pagination_secret(&again).expect("configured")
        );
    }
}
