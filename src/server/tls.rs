//! HTTPS on the router's own listeners (API and admin) and certificate renewal in the running
//! process.
//!
//! Owns: the certificate each TLS listener serves ([`ServedCert`], a rustls
//! `ResolvesServerCert` whose pair is swapped atomically), Pingora's `TlsSettings` for it
//! (HTTP/1.1 and h2 by ALPN), and [`Renewal`], the background service that re-reads the files
//! when they change (checked every second) or on SIGHUP. Does not own: checking a pair
//! (`config::tls::load_pair`, shared with the config check) or the graceful upgrade.
//!
//! Why a resolver and not Pingora's cert/key paths: `TlsSettings::build` reads the files once
//! into a fixed rustls `ServerConfig`; with `set_cert_resolver` every handshake asks us, so a
//! renewed pair is served from the next handshake on while open connections (and requests in
//! flight on them) carry on untouched. A pair that does not load (say certbot has replaced the
//! certificate but not yet the key) is not taken: the previous one is served and the files are
//! tried again at the next check.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::listeners::tls::TlsSettings;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};

use crate::config::tls::{load_pair, TlsFiles};

/// How often the files are looked at (two `stat` calls per listener).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of a file: replaced files (a new inode, certbot's symlink
/// switch) and rewritten ones (mtime, size) both change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &str) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// The pair one TLS listener serves, renewable while it runs.
pub struct ServedCert {
    /// The config key (`tls`, `admin.tls`), for messages.
    at: &'static str,
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The files' stamps when `current` was read from them (or last failed to load).
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
    /// The last load error, so a lasting one is logged once, not every second.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for ServedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCert")
            .field("at", &self.at)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServedCert {
    /// Reads the pair (the config check read it once already; this is the copy served).
    pub fn load(at: &'static str, files: &TlsFiles) -> Result<Arc<ServedCert>, String> {
        let seen = (stamp(&files.cert), stamp(&files.key));
        let pair = load_pair(files, &|p| std::fs::read(p)).map_err(|e| format!("{at}.{e}"))?;
        log::info!("{at}: serving {}", describe(&pair, &files.cert));
        Ok(Arc::new(ServedCert {
            at,
            files: files.clone(),
            current: ArcSwap::new(pair),
            seen: Mutex::new(seen),
            last_error: Mutex::new(None),
        }))
    }

    /// Pingora's settings for a listener serving this pair: TLS 1.2/1.3, h2 preferred over
    /// HTTP/1.1 by ALPN.
    pub fn settings(self: &Arc<Self>) -> Result<TlsSettings, String> {
        // Empty paths: with a resolver set, `build` reads no files.
        let mut s = TlsSettings::intermediate("", "")
            .map_err(|e| format!("{}: Pingora's TLS settings: {e}", self.at))?;
        s.set_cert_resolver(self.clone());
        s.enable_h2();
        Ok(s)
    }

    /// Reads the files again when they changed since the last look (`force`: even if not,
    /// as on SIGHUP). True when a new pair is served from now on.
    pub fn refresh(&self, force: bool) -> bool {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        {
            let mut seen = self.seen.lock();
            if !force && *seen == now {
                return false;
            }
            *seen = now;
        }
        match load_pair(&self.files, &|p| std::fs::read(p)) {
            Ok(pair) => {
                let changed = pair.cert != self.current.load().cert;
                *self.last_error.lock() = None;
                if changed {
                    log::warn!(
                        "{}: renewed, now serving {}",
                        self.at,
                        describe(&pair, &self.files.cert)
                    );
                    self.current.store(pair);
                }
                changed
            }
            Err(e) => {
                // Looked at again next time even if nothing changes: a half-replaced pair
                // usually completes within a second.
                *self.seen.lock() = (None, None);
                let msg = e.to_string();
                let mut last = self.last_error.lock();
                if last.as_deref() != Some(msg.as_str()) {
                    log::warn!(
                        "{}.{msg}; the previous certificate is served until the files load",
                        self.at
                    );
                    *last = Some(msg);
                }
                false
            }
        }
    }
}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A pair for the log: the leaf's serial and expiry.
fn describe(pair: &CertifiedKey, path: &str) -> String {
    match pair.cert.first() {
        Some(leaf) => match crate::node::tls::wrap(leaf.to_vec()) {
            Some(x) => format!(
                "{path} (serial {}, valid until {})",
                x.borrow_cert().raw_serial_as_string(),
                x.not_after()
            ),
            None => path.to_string(),
        },
        None => path.to_string(),
    }
}

/// Renewal of every TLS listener's pair: a look at the files every [`CHECK_EVERY`], and a
/// forced re-read on SIGHUP (what a certbot deploy hook sends). Runs without TLS listeners
/// too, so that SIGHUP means the same everywhere and never ends the process (its default).
pub struct Renewal {
    certs: Vec<Arc<ServedCert>>,
}

impl Renewal {
    /// Renewal for these listeners' pairs.
    pub fn new(certs: Vec<Arc<ServedCert>>) -> Renewal {
        Renewal { certs }
    }

    fn refresh_all(&self, force: bool) {
        for c in &self.certs {
            c.refresh(force);
        }
    }
}

#[async_trait]
impl BackgroundService for Renewal {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP ({e}); certificates are still renewed when their files change");
                None
            }
        };
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangup => {
                    if self.certs.is_empty() {
                        log::info!("SIGHUP: no TLS listener, nothing to read again");
                    } else {
                        log::info!("SIGHUP: reading the TLS certificates again");
                    }
                    self.refresh_all(true);
                }
                _ = tick.tick() => self.refresh_all(false),
            }
        }
    }
}
