//! Opening the configured store, and the loop that keeps this router in step with the other
//! routers on a shared one.
//!
//! Owns: choosing the backend from `storage` (the embedded file, or MongoDB opened on the
//! store worker's own runtime, where its client must live), this router's id, and the sync
//! loop: every `storage.sync_interval_ms` it renews (or tries to take) the lead lease, applies
//! what other routers wrote (bots, templates, fences and nodes to the cluster view; keys to
//! the key table), settles the claims of bots met first here and keeps ids reserved ahead.
//! Does not own: what those changes mean to the view (`cluster::shared`) or the store
//! (`store`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cluster::Cluster;
use crate::config::{Config, StorageConfig};
use crate::proxy::keys::{digest_from_hex, Keys};
use crate::store::embedded::EmbeddedStore;
use crate::store::mongo::MongoStore;
use crate::store::{Change, Store, StoreError, StoreHandle};

/// The lease the leading router holds: failover, restores and admin operations run there.
pub const LEAD_LEASE: &str = "lead";

/// How long a lead lease lasts without renewal: another router takes over at most this long
/// after the leader dies (it is renewed every sync interval).
pub const LEAD_TTL: Duration = Duration::from_secs(10);

/// This router's name in leases and records: the configured one, or host name, process id
/// and start time (a restarted router is a new holder; its old lease simply expires).
pub fn router_id(config: &Config) -> String {
    if let StorageConfig::Mongodb(m) = &config.storage {
        if let Some(id) = &m.router_id {
            return id.clone();
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "router".to_string());
    format!("{host}-{}-{:x}", std::process::id(), crate::store::now_ms())
}

/// Opens the configured store behind its worker.
pub fn open_store(config: &Config, router_id: &str) -> Result<StoreHandle, StoreError> {
    match &config.storage {
        StorageConfig::Embedded { path } => {
            StoreHandle::spawn(Box::new(EmbeddedStore::open(std::path::Path::new(path))?))
        }
        StorageConfig::Mongodb(m) => {
            let (uri, database, id) = (m.uri.clone(), m.database.clone(), router_id.to_string());
            StoreHandle::open(move || async move {
                let store = MongoStore::open(&uri, &database, &id).await?;
                Ok(Box::new(store) as Box<dyn Store>)
            })
        }
    }
}

/// Keeps a router's view in step with the other routers on a shared store.
pub struct StoreSync {
    cluster: Arc<Cluster>,
    keys: Arc<Keys>,
    store: StoreHandle,
    router_id: String,
    interval: Duration,
    /// Keys of the config file: another router's change never replaces them here.
    config_keys: HashSet<String>,
}

impl StoreSync {
    /// A sync loop for `cluster` and `keys` on `store`.
    pub fn new(
        cluster: Arc<Cluster>,
        keys: Arc<Keys>,
        store: StoreHandle,
        router_id: String,
        config: &Config,
    ) -> StoreSync {
        let interval = match &config.storage {
            StorageConfig::Mongodb(m) => m.sync_interval,
            StorageConfig::Embedded { .. } => Duration::from_secs(1),
        };
        StoreSync {
            cluster,
            keys,
            store,
            router_id,
            interval,
            config_keys: config.keys.iter().map(|k| k.name.clone()).collect(),
        }
    }

    /// One round: lease, changes, claims, ids. `held_until` is when the lease this router
    /// last renewed runs out.
    pub async fn round(&self, held_until: &mut Option<Instant>) {
        let deadline = self.interval.max(Duration::from_secs(2));
        let asked = Instant::now();
        match self
            .store
            .acquire_lease(LEAD_LEASE, &self.router_id, LEAD_TTL, deadline)
            .await
        {
            Ok(true) => {
                *held_until = Some(asked + LEAD_TTL);
                self.cluster.set_lead(true);
            }
            Ok(false) => {
                *held_until = None;
                self.cluster.set_lead(false);
            }
            // The database does not answer: keep leading only while the lease this router
            // holds is surely still its own (counted from before it was renewed).
            Err(e) => {
                log::warn!("could not renew the lead lease: {e}");
                if held_until.is_none_or(|t| Instant::now() + self.interval >= t) {
                    *held_until = None;
                    self.cluster.set_lead(false);
                }
            }
        }
        match self.store.changes(deadline).await {
            Ok(changes) if !changes.is_empty() => {
                let applied = self.cluster.apply_changes(&changes);
                let keys = self.apply_keys(&changes);
                log::debug!("applied other routers' changes: {applied:?}, {keys} keys");
            }
            Ok(_) => {}
            Err(e) => log::warn!("could not read other routers' changes: {e}"),
        }
        self.cluster.settle_claims(deadline).await;
        if let Err(e) = self.cluster.ensure_id_headroom(deadline).await {
            log::warn!("could not reserve cluster ids: {e}");
        }
    }

    fn apply_keys(&self, changes: &[Change]) -> usize {
        let mut n = 0;
        for c in changes {
            let Change::Key(name, rec) = c else {
                continue;
            };
            if self.config_keys.contains(name) {
                continue;
            }
            match rec.as_ref().and_then(|r| {
                r.digest
                    .as_deref()
                    .and_then(digest_from_hex)
                    .map(|d| (d, r.role))
            }) {
                Some((digest, role)) => self.keys.put_digest(name, digest, role),
                // Removed (revoked), or a record this router cannot use: refuse the key.
                None => {
                    self.keys.remove(name);
                }
            }
            n += 1;
        }
        n
    }
}

#[async_trait]
impl BackgroundService for StoreSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut held_until = None;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.round(&mut held_until).await,
                // A bot met first here is claimed at once, not a sync interval later.
                _ = self.cluster.claims_queued(self.interval) => {
                    self.cluster.settle_claims(self.interval.max(Duration::from_secs(2))).await;
                }
            }
        }
        // Hand the lead over at once rather than after the lease runs out.
        if held_until.is_some() {
            let _ = self
                .store
                .release_lease(LEAD_LEASE, &self.router_id, Duration::from_secs(2))
                .await;
        }
    }
}
