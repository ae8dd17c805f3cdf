//! Wiring and lifecycle: open the log (rebuilding derived indexes if they were dropped), build
//! the [`Ledger`], serve the API, and on stop let in-flight requests finish, then drain the
//! writer and flush the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use crate::actors::{ActorSettings, Ledger};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::numbering::NumberPicker;
use crate::projection::{rebuild_index, INDEX_LAYOUT_VERSION};
use crate::store::{EventStore, StoreError};

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("server thread: {0}")]
    Thread(String),
}

/// Opens the log and prepares the application service.
pub fn open_ledger(config: &Config) -> Result<Arc<Ledger>, ServerError> {
    let store = EventStore::open_tuned(&config.data_dir, config.durability, config.max_batch, config.cache_capacity_bytes)?;
    if store.index_needs_rebuild(INDEX_LAYOUT_VERSION)? {
        let entries = rebuild_index(&store)?;
        tracing::info!(entries, "rebuilt derived index from the log");
    } else {
        store.set_index_layout(INDEX_LAYOUT_VERSION)?;
    }
    let actors = ActorSettings {
        snapshot_every: config.snapshot_every,
        idle_timeout: (config.actor_idle_secs > 0).then(|| std::time::Duration::from_secs(config.actor_idle_secs)),
    };
    Ok(Arc::new(Ledger::new(
        store,
        NumberPicker::new(config.numbering.clone()),
        config.quotas.clone(),
        actors,
        config.max_live_actors,
    )))
}

/// Stops a running server: first tells long-lived responses (feed followers) to end, then asks
/// actix to stop gracefully, so in-flight requests finish and nothing waits for a stream that
/// would never end by itself.
#[derive(Clone)]
pub struct StopHandle {
    server: ServerHandle,
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        // The command is sent at once; the returned future only reports completion.
        drop(self.server.stop(true));
    }
}

async fn wait_for_signal() {
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
}

/// Serves until the server is stopped (by its [`StopHandle`], SIGINT or SIGTERM when `signals`).
/// Must run inside an actix `System`. `on_ready` receives the bound address and a stop handle.
pub async fn serve(config: Config, signals: bool, on_ready: impl FnOnce(SocketAddr, StopHandle)) -> Result<(), ServerError> {
    let ledger = open_ledger(&config)?;
    let store = ledger.store().clone();
    match ledger.recover_interrupted().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(repaired = n, "finished pool changes interrupted by the last stop"),
        Err(e) => tracing::error!(error = %e, "could not finish interrupted pool changes"),
    }
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let state = web::Data::new(ApiState {
        stopping,
        ledger: ledger.clone(),
        default_account: config.default_account.clone(),
        default_region: config.region.clone(),
        max_body_bytes: config.max_body_bytes,
        admission: crate::api::admission::Admission::new(config.max_in_flight, config.account_requests_per_sec),
    });
    let mut server = HttpServer::new(move || App::new().app_data(state.clone()).configure(api::configure))
        .shutdown_timeout(10)
        .bind(config.listen)
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    // Signals are ours to handle, so that followers are told before actix waits for them.
    server = server.disable_signals();
    let addr = server.addrs().first().copied().unwrap_or(config.listen);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), durability = ?config.durability, events = store.len(), "phone-ledger listening");
    let running = server.run();
    let stop = StopHandle {
        server: running.handle(),
        stopping: Arc::new(stopping_tx),
    };
    if signals {
        let on_signal = stop.clone();
        actix_rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; stopping");
            on_signal.stop();
        });
    }
    on_ready(addr, stop);
    let outcome = running.await;
    drop(ledger);
    store.close();
    tracing::info!("phone-ledger stopped; log flushed");
    Ok(outcome?)
}

/// A server on its own thread and actix system (for tests, benches and the load generator).
pub struct RunningServer {
    pub addr: SocketAddr,
    handle: StopHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// Starts a server and returns once it listens.
    pub fn spawn(config: Config) -> Result<RunningServer, ServerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("phone-ledger-server".into()).spawn(move || {
            let ready = tx.clone();
            let result = actix_rt::System::new().block_on(serve(config, false, move |addr, handle| {
                let _ = ready.send(Ok((addr, handle)));
            }));
            if let Err(e) = &result {
                let _ = tx.send(Err(e.to_string()));
            }
            result
        })?;
        match rx.recv() {
            Ok(Ok((addr, handle))) => Ok(RunningServer {
                addr,
                handle,
                thread: Some(thread),
            }),
            Ok(Err(message)) => {
                let _ = thread.join();
                Err(ServerError::Thread(message))
            }
            Err(_) => Err(ServerError::Thread("server thread ended before listening".into())),
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
        self.handle.stop();
        thread.join().map_err(|_| ServerError::Thread("server thread panicked".into()))?
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "server did not stop cleanly");
        }
    }
}
