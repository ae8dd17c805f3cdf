//! Wiring and lifecycle: open the log (rebuilding derived indexes if they were dropped), build
//! the [`Ledger`], serve the API, and on stop let in-flight requests finish, then drain the
//! writer and flush the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use crate::actors::Ledger;
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::numbering::NumberPicker;
use crate::projection::rebuild_index;
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
    let store = EventStore::open(&config.data_dir, config.durability, config.max_batch)?;
    if store.index_needs_rebuild()? {
        let entries = rebuild_index(&store)?;
        tracing::info!(entries, "rebuilt derived index from the log");
    }
    Ok(Arc::new(Ledger::new(
        store,
        NumberPicker::new(config.numbering.clone()),
        config.quotas.clone(),
    )))
}

/// Serves until the server is stopped (by `handle.stop`, SIGINT or SIGTERM). Must run inside an
/// actix `System`. `on_ready` receives the bound address and a handle once listening.
pub async fn serve(config: Config, signals: bool, on_ready: impl FnOnce(SocketAddr, ServerHandle)) -> Result<(), ServerError> {
    let ledger = open_ledger(&config)?;
    let store = ledger.store().clone();
    match ledger.recover_interrupted().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(repaired = n, "finished pool changes interrupted by the last stop"),
        Err(e) => tracing::error!(error = %e, "could not finish interrupted pool changes"),
    }
    let state = web::Data::new(ApiState {
        ledger: ledger.clone(),
        default_account: config.default_account.clone(),
        default_region: config.region.clone(),
        max_body_bytes: config.max_body_bytes,
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
    if !signals {
        server = server.disable_signals();
    }
    let addr = server.addrs().first().copied().unwrap_or(config.listen);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), durability = ?config.durability, events = store.len(), "phone-ledger listening");
    let running = server.run();
    on_ready(addr, running.handle());
    let outcome = running.await;
    drop(ledger);
    store.close();
    tracing::info!("phone-ledger stopped; log flushed");
    Ok(outcome?)
}

/// A server on its own thread and actix system (for tests, benches and the load generator).
pub struct RunningServer {
    pub addr: SocketAddr,
    handle: ServerHandle,
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
        // `stop` sends the command at once; its future only reports completion, which joining
        // the thread observes too. Not awaiting it lets this run from any thread, async or not.
        drop(self.handle.stop(true));
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
