//! Graceful upgrades and stops: the process side of handing the listening sockets and the
//! embedded store from an old router process to a new one.
//!
//! Owns: the hand-over socket's listener (bound before Pingora's bootstrap, so the old process
//! can forward to it at once, and handed to the proxy service through Pingora's fd table),
//! the old process's hand-over (on Pingora's "fds sent" phase: stop leading, forward, wait for
//! its own requests, flush and close the store), the new process's bounded wait for the
//! embedded store's file lock, and the systemd readiness messages (`sd_notify`).
//! Does not own: what a forwarded request looks like (`proxy::handover`), the store worker's
//! close (`store`), Pingora's signal handling and timers.

use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::{ExecutionPhase, ListenFds, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::Service;
use tokio::sync::broadcast;

use crate::cluster::Cluster;
use crate::config::{Config, ServerSettings, StorageConfig};
use crate::proxy::handover::Handover;
use crate::store::{StoreError, StoreHandle};

/// How long Pingora's old process keeps accepting after it sent its sockets (its
/// `CLOSE_TIMEOUT`, not configurable): a hand-over lasts at least this long.
pub const PINGORA_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the new process tries the embedded store's lock while the old process holds it.
const LOCK_RETRY: Duration = Duration::from_millis(25);

/// Why a hand-over step failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The hand-over socket could not be made.
    #[error("cannot listen on the hand-over socket {path}: {reason}")]
    Socket {
        /// Its path (`server.upgrade_sock` + `.handover`).
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The old process did not release the embedded store in time.
    #[error(
        "the store {path} was still locked after {waited:?} of waiting for the old process to \
         hand it over (is another router using it, not the one being upgraded?): {reason}"
    )]
    LockTimeout {
        /// The store's directory.
        path: String,
        /// How long this process waited.
        waited: Duration,
        /// The store's last refusal.
        reason: String,
    },
    /// Opening the store failed otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long an old process waits for the requests it answers itself before it closes the
/// store anyway: what Pingora gives them before it ends its runtimes, less the runtime
/// shutdown itself (so the close still happens while the process is alive).
pub fn drain_limit(s: &ServerSettings) -> Duration {
    PINGORA_CLOSE_TIMEOUT + Duration::from_secs(s.grace_period_seconds)
}

/// How long a new process waits for the embedded store's lock: the old process releases it
/// after [`drain_limit`] at the latest, and exits (releasing it anyway) after the runtime
/// shutdown too; a little more for its last writes.
pub fn lock_wait(s: &ServerSettings) -> Duration {
    drain_limit(s) + Duration::from_secs(s.graceful_shutdown_timeout_seconds + 5)
}

/// The hand-over socket's listener, bound by this process before Pingora's bootstrap.
pub struct HandoverSocket {
    path: PathBuf,
    listener: Mutex<Option<UnixListener>>,
    /// The socket file's inode: while the path still names it, no new process took over.
    inode: u64,
}

impl HandoverSocket {
    /// Binds `path` (a stale socket file there, e.g. the old process's, is replaced: the old
    /// process forwards to whoever listens there now). Only this user may connect.
    pub fn bind(path: &Path) -> Result<HandoverSocket, UpgradeError> {
        let err = |reason: String| UpgradeError::Socket {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|e| err(e.to_string()))?
            }
            Ok(_) => return Err(err("the path exists and is not a socket".into())),
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
        // Pingora's listener takes it over as a non-blocking tokio socket.
        listener
            .set_nonblocking(true)
            .map_err(|e| err(e.to_string()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(e.to_string()))?;
        let inode = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .ino();
        Ok(HandoverSocket {
            path: path.to_path_buf(),
            listener: Mutex::new(Some(listener)),
            inode,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether another process listens at the path now (it bound the path after this one).
    pub fn taken_over(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() != self.inode)
            && std::os::unix::net::UnixStream::connect(&self.path).is_ok()
    }
}

/// A listening service whose hand-over socket is the one bound before bootstrap: it is put
/// into Pingora's fd table under its path just before the service listens (replacing the
/// old process's socket of the same name, which this process must not accept on).
pub struct WithHandoverSocket<S> {
    inner: S,
    socket: Arc<HandoverSocket>,
}

impl<S> WithHandoverSocket<S> {
    /// Wraps `inner`, whose listeners include the unix socket at `socket`'s path.
    pub fn new(inner: S, socket: Arc<HandoverSocket>) -> Self {
        WithHandoverSocket { inner, socket }
    }
}

#[async_trait]
impl<S: Service> Service for WithHandoverSocket<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        if let (Some(fds), Some(l)) = (&fds, self.socket.listener.lock().take()) {
            fds.lock()
                .add(self.socket.path.display().to_string(), l.into_raw_fd());
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        // The hand-over socket is not claimed from the inherited fds: Pingora closes the old
        // process's socket of that name, and this service uses its own.
        let own = self.socket.path.display().to_string();
        self.inner
            .listen_addresses()
            .map(|a| a.into_iter().filter(|x| *x != own).collect())
    }
}

/// The old process's side of an upgrade, run when Pingora reports that the listening sockets
/// were sent: from then on requests are forwarded, and once this process's own requests are
/// done the store is flushed and closed, so that the new process can open it.
pub struct HandoverWatch {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    handover: Arc<Handover>,
    /// None: it could not be made; nothing is forwarded.
    socket: Option<Arc<HandoverSocket>>,
    cluster: Arc<Cluster>,
    store: StoreHandle,
    drain_limit: Duration,
}

impl HandoverWatch {
    /// A watch over `phases` (from `Server::watch_execution_phase`, taken before `run`).
    pub fn new(
        phases: broadcast::Receiver<ExecutionPhase>,
        handover: Arc<Handover>,
        socket: Option<Arc<HandoverSocket>>,
        cluster: Arc<Cluster>,
        store: StoreHandle,
        config: &Config,
    ) -> HandoverWatch {
        HandoverWatch {
            phases: Mutex::new(Some(phases)),
            handover,
            socket,
            cluster,
            store,
            drain_limit: drain_limit(&config.server),
        }
    }

    async fn hand_over(&self) {
        // Keep-alive clients reconnect after their next answer, to whichever process listens.
        self.handover.stop_keepalive();
        if self.store.shared() {
            // A shared store needs no hand-over: both processes are routers on it for a
            // few seconds, as several routers always are.
            log::info!("graceful upgrade: the sockets were sent; this process keeps answering until it stops (the store is shared)");
            return;
        }
        let Some(socket) = &self.socket else {
            self.handover.mark_unclaimed();
            log::error!("graceful upgrade: this process has no hand-over socket; it keeps answering until it stops");
            return;
        };
        if !socket.taken_over() {
            self.handover.mark_unclaimed();
            // Nobody took the sockets (no new process, or it died): forwarding would fail
            // every request, and this process still holds the store.
            log::error!(
                "graceful upgrade: no new process listens on {}; this process keeps answering until it stops",
                socket.path.display()
            );
            return;
        }
        // Failover and operations would write records the new process never learns of.
        self.cluster.set_lead_until(None);
        self.handover.start_forwarding();
        let started = Instant::now();
        log::info!(
            "graceful upgrade: forwarding new requests to the new process; waiting for {} of this process's own",
            self.handover.own_requests()
        );
        let left = self.handover.drained(self.drain_limit).await;
        if left > 0 {
            log::error!(
                "graceful upgrade: {left} request(s) still running after {:?}; closing the store anyway",
                self.drain_limit
            );
        }
        match self.store.close(crate::store::WRITE_DEADLINE).await {
            Ok(()) => log::info!(
                "graceful upgrade: store flushed and closed after {:?}; the new process can open it",
                started.elapsed()
            ),
            Err(e) => log::error!("graceful upgrade: closing the store failed: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for HandoverWatch {
    async fn start(&self, _shutdown: ShutdownWatch) {
        // Not stopped by the shutdown broadcast: the hand-over outlives it.
        let Some(mut phases) = self.phases.lock().take() else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => {
                    self.hand_over().await;
                    return;
                }
                Ok(ExecutionPhase::Terminated) | Err(broadcast::error::RecvError::Closed) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
    }
}

/// Opens the configured store; an upgrading process waits (bounded) while the old process
/// still holds the embedded store's lock.
pub fn open_store_waiting(
    config: &Config,
    router_id: &str,
    upgrading: bool,
) -> Result<StoreHandle, UpgradeError> {
    let limit = lock_wait(&config.server);
    let started = Instant::now();
    let mut logged = false;
    loop {
        match super::sync::open_store(config, router_id) {
            Ok(s) => {
                if logged {
                    log::info!(
                        "graceful upgrade: the old process released the store after {:?}",
                        started.elapsed()
                    );
                }
                return Ok(s);
            }
            Err(StoreError::Open { path, reason })
                if upgrading
                    && matches!(config.storage, StorageConfig::Embedded { .. })
                    && reason.starts_with(crate::store::embedded::ALREADY_OPEN) =>
            {
                if started.elapsed() >= limit {
                    return Err(UpgradeError::LockTimeout {
                        path,
                        waited: started.elapsed(),
                        reason,
                    });
                }
                if !logged {
                    log::info!("graceful upgrade: waiting for the old process to hand over the store {path}");
                    logged = true;
                }
                std::thread::sleep(LOCK_RETRY);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) something about this process, when it
/// runs under systemd (`NOTIFY_SOCKET` set); a no-op otherwise. Failures are only logged:
/// the router works without systemd.
pub fn sd_notify(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let target = target.to_string_lossy();
        match target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                s.send_to_addr(message.as_bytes(), &addr)
            }
            None => s.send_to(message.as_bytes(), target.as_ref()),
        }
    });
    if let Err(e) = sent {
        log::warn!("cannot notify systemd ({message:?}): {e}");
    }
}

/// Tells systemd this process serves once the services start.
pub struct ReadyNotice;

#[async_trait]
impl BackgroundService for ReadyNotice {
    async fn start(&self, _shutdown: ShutdownWatch) {
        sd_notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn config(dir: &Path) -> Config {
        let yaml = format!(
            "listen: \"127.0.0.1:1\"\nkeys:\n  - {{ name: ops, secret: \"ops-secret-1\", role: admin }}\nnodes:\n  - {{ name: n, url: \"http://127.0.0.1:1001\" }}\nstorage: {{ kind: embedded, path: \"{}\" }}\nserver: {{ grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 0 }}\n",
            dir.display()
        );
        Config::from_yaml(&yaml, &|_| None).expect("config")
    }

    #[test]
    fn an_upgrade_waits_for_the_lock_and_opens_once_it_is_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path());
        let held = EmbeddedStore::open(dir.path()).expect("open");
        let started = Instant::now();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let opened = open_store_waiting(&c, "r", true);
        release.join().expect("thread");
        assert!(opened.is_ok(), "{:?}", opened.err());
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_normal_start_does_not_wait_and_an_upgrade_gives_up_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path());
        let _held = EmbeddedStore::open(dir.path()).expect("open");
        let started = Instant::now();
        let err = open_store_waiting(&c, "r", false).err().expect("locked");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            err.to_string()
                .contains(crate::store::embedded::ALREADY_OPEN),
            "{err}"
        );
        // 5 s (Pingora) + 0 + 0 + 5 s.
        assert_eq!(lock_wait(&c.server), Duration::from_secs(10));
        let err = open_store_waiting(&c, "r", true)
            .err()
            .expect("still locked");
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert!(matches!(err, UpgradeError::LockTimeout { .. }), "{err}");
        assert!(err.to_string().contains("still locked after"), "{err}");
    }
}
