//! `ts3ab-lb-agent`: the node agent of ts3ab-lb. It runs on a TS3AudioBot host and serves the
//! host's CPU, memory, load and network counters, the TS3AudioBot process's CPU and memory,
//! and the bots by status from the local TS3AudioBot API, as Prometheus text (`/metrics`) and
//! as a small JSON summary for the router (`/summary`).
//!
//! Owns: wiring the modules together ([`run`]) and the [`http::Handler`] that turns a
//! snapshot into the two documents.
//! Does not own: anything of the router; the agent shares no code with the `ts3ab-lb` crate
//! and pulls in neither Pingora nor a database driver.
//!
//! Modules, one concern each: `config` (flags), `procfs` (/proc parsing), `bots` (the
//! TS3AudioBot API client), `sample` (CPU ratios between samples), `snapshot` (one look at
//! the node), `metrics` (Prometheus text), `summary` (JSON), `http` (the server).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod bots;
pub mod config;
pub mod http;
pub mod metrics;
pub mod procfs;
pub mod sample;
pub mod snapshot;
pub mod summary;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use bots::BotsClient;
use config::Config;
use procfs::{Proc, ProcessLocator};
use sample::Sampler;

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("--listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The state behind the two documents.
pub struct Agent {
    proc: Proc,
    locator: ProcessLocator,
    bots: BotsClient,
    sampler: Sampler,
    /// Last seen state of the process and the API (0 unknown, 1 up, 2 down), so a change is
    /// logged once instead of on every scrape.
    process_state: AtomicU8,
    api_state: AtomicU8,
}

impl Agent {
    /// An agent for `config` (nothing is read yet).
    pub fn new(config: &Config) -> Agent {
        let proc = Proc::new(&config.proc_root);
        Agent {
            sampler: Sampler::new(proc.clone(), config.process.clone()),
            bots: BotsClient::new(
                config.api.clone(),
                config.api_auth.as_deref(),
                config.api_timeout,
            ),
            locator: config.process.clone(),
            proc,
            process_state: AtomicU8::new(0),
            api_state: AtomicU8::new(0),
        }
    }

    async fn snapshot(&self) -> snapshot::Snapshot {
        let s = snapshot::take(&self.proc, &self.locator, &self.bots).await;
        let process = if s.process.is_some() { 1 } else { 2 };
        if self.process_state.swap(process, Ordering::Relaxed) != process {
            match &s.process {
                Some(p) => log::info!("TS3AudioBot process found (pid {})", p.pid),
                None => log::warn!("TS3AudioBot process not found ({:?})", self.locator),
            }
        }
        let api = if s.bots.is_some() { 1 } else { 2 };
        if self.api_state.swap(api, Ordering::Relaxed) != api {
            match &s.api_error {
                None => log::info!("TS3AudioBot API answers"),
                Some(e) => log::warn!("{e}"),
            }
        }
        s
    }
}

impl http::Handler for Agent {
    async fn metrics(&self) -> String {
        let s = self.snapshot().await;
        metrics::render(&s)
    }

    async fn summary(&self) -> String {
        let s = self.snapshot().await;
        summary::Summary::new(&s, self.sampler.ratios()).to_json()
    }
}

/// Runs the agent on its own runtime until SIGTERM or SIGINT (what the binary does).
pub fn run_until_signal(config: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Two workers are plenty: requests are rare and small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: stopping"),
                _ = int.recv() => log::info!("SIGINT: stopping"),
            }
            let _ = stop_tx.send(true);
        });
        run(config, stop_rx).await
    })
}

/// Binds, then serves and samples until `stop` is set.
pub async fn run(config: Config, stop: watch::Receiver<bool>) -> Result<(), RunError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.listen);
    log::info!(
        "listening on http://{local} (TS3AudioBot API http://{}{}, proc root {}, bearer token {})",
        config.api.authority,
        config.api.base_path,
        config.proc_root.display(),
        if config.token.is_some() {
            "required"
        } else {
            "not required"
        }
    );
    let agent = Arc::new(Agent::new(&config));
    let sampler = tokio::spawn(agent.sampler.clone().run(config.sample_interval));
    let token: Option<Arc<str>> = config.token.as_deref().map(Arc::from);
    http::serve(listener, agent, token, stop).await;
    sampler.abort();
    log::info!("stopped");
    Ok(())
}
