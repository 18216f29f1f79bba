//! The request side of a graceful upgrade: while an old process hands its work to a new one,
//! it forwards the requests it still accepts to the new process instead of answering them.
//!
//! Owns: the forwarding switch, the count of requests this process answers itself (the ones
//! the hand-over waits for before it closes the store), the hand-over socket's path, and the
//! header that carries the client's address over that socket (trusted only on it).
//! Does not own: when the switch is thrown or what happens once the count is zero
//! (`server::upgrade`), nor the socket's listener (the proxy service in `server`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The header the old process adds to a forwarded request: the client's own address, so the
/// new process's failed-authentication limit still counts per client. Read only from a
/// request that came over the hand-over socket, removed from every other one.
pub const CLIENT_HEADER: &str = "x-ts3ab-lb-handover-client";

/// The hand-over state one process shares between its proxy and its upgrade watcher.
#[derive(Debug)]
pub struct Handover {
    /// Where the new process listens for forwarded requests (next to `upgrade_sock`).
    socket: PathBuf,
    /// Set once this process sent its listening sockets away: from then on it forwards.
    forwarding: AtomicBool,
    /// Set once the sockets were sent (with or without forwarding): answers close their
    /// connection, so that no keep-alive connection is left idle when the listener stops.
    closing: AtomicBool,
    /// Requests this process answers itself, still running.
    own: AtomicUsize,
    /// Woken whenever `own` drops to zero.
    idle: Notify,
    /// The sockets were sent but no new process took them: this process must not exit as
    /// if it had been replaced.
    unclaimed: AtomicBool,
}

/// Counts one request this process answers itself, until dropped.
#[derive(Debug)]
pub struct OwnRequest(Arc<Handover>);

impl Drop for OwnRequest {
    fn drop(&mut self) {
        if self.0.own.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Handover {
    /// The state for a process whose hand-over socket is `socket`.
    pub fn new(socket: PathBuf) -> Arc<Handover> {
        Arc::new(Handover {
            socket,
            forwarding: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            own: AtomicUsize::new(0),
            idle: Notify::new(),
            unclaimed: AtomicBool::new(false),
        })
    }

    /// The hand-over socket of a process whose Pingora `upgrade_sock` is `upgrade_sock`.
    pub fn socket_for(upgrade_sock: &str) -> PathBuf {
        PathBuf::from(format!("{upgrade_sock}.handover"))
    }

    /// The hand-over socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Admits a request: `Some` (counted until dropped) when this process answers it, `None`
    /// when it must be forwarded. Counted before the switch is read, so a request admitted
    /// just before the switch is thrown is always seen by [`Handover::drained`].
    pub fn admit(self: &Arc<Self>) -> Option<OwnRequest> {
        self.own.fetch_add(1, Ordering::SeqCst);
        let guard = OwnRequest(self.clone());
        if self.forwarding.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    /// Throws the switch: every request admitted from now on is forwarded.
    pub fn start_forwarding(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.forwarding.store(true, Ordering::SeqCst);
    }

    /// Answers from now on close their connection (the client reconnects, to whichever
    /// process listens then).
    pub fn stop_keepalive(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether answers close their connection.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Records that the sockets went out and no new process took them.
    pub fn mark_unclaimed(&self) {
        self.unclaimed.store(true, Ordering::SeqCst);
    }

    /// Whether an upgrade started and nobody took over (see [`Handover::mark_unclaimed`]).
    pub fn unclaimed(&self) -> bool {
        self.unclaimed.load(Ordering::SeqCst)
    }

    /// Whether the switch is thrown.
    pub fn forwarding(&self) -> bool {
        self.forwarding.load(Ordering::SeqCst)
    }

    /// How many requests this process is answering itself.
    pub fn own_requests(&self) -> usize {
        self.own.load(Ordering::SeqCst)
    }

    /// Waits until no request this process answers itself is running, at most `limit`;
    /// returns how many still run (0: drained).
    pub async fn drained(&self, limit: Duration) -> usize {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                // Registered before the count is read: a drop in between still wakes it.
                idle.as_mut().enable();
                if self.own.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.own.load(Ordering::SeqCst)
    }
}

/// The client address a forwarded request names (None: absent or not an address).
pub fn forwarded_client(value: Option<&str>) -> Option<IpAddr> {
    value?.trim().parse::<IpAddr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_requests_are_counted_until_the_switch() {
        let h = Handover::new(PathBuf::from("/tmp/x.handover"));
        let a = h.admit();
        assert!(a.is_some());
        assert_eq!(h.own_requests(), 1);
        h.start_forwarding();
        assert!(h.admit().is_none(), "forwarded after the switch");
        assert_eq!(h.own_requests(), 1, "a forwarded request is not waited for");
        drop(a);
        assert_eq!(h.own_requests(), 0);
    }

    #[test]
    fn drained_waits_for_the_last_own_request() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let h = Handover::new(PathBuf::from("/tmp/y.handover"));
        let a = h.admit();
        h.start_forwarding();
        let left = rt.block_on(h.drained(Duration::from_millis(50)));
        assert_eq!(left, 1, "still running after the limit");
        let h2 = h.clone();
        let left = rt.block_on(async move {
            let end = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(a);
            });
            let left = h2.drained(Duration::from_secs(5)).await;
            let _ = end.await;
            left
        });
        assert_eq!(left, 0);
    }

    #[test]
    fn client_header_parses_addresses_only() {
        assert_eq!(
            forwarded_client(Some("10.0.0.7")),
            Some(IpAddr::from([10, 0, 0, 7]))
        );
        assert_eq!(forwarded_client(Some("::1")), "::1".parse().ok());
        assert_eq!(forwarded_client(Some("x")), None);
        assert_eq!(forwarded_client(None), None);
    }
}
