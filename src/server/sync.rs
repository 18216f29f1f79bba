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
use crate::config::{Config, SecretsKeySource, StorageConfig};
use crate::proxy::keys::{digest_from_hex, Keys};
use crate::store::embedded::EmbeddedStore;
use crate::store::mongo::MongoStore;
use crate::store::sealed::{SealedStore, Sealer, SecretsKey};
use crate::store::{Change, Store, StoreError, StoreHandle};

/// The lease the leading router holds: failover, restores and admin operations run there.
pub const LEAD_LEASE: &str = "lead";

/// How long a lead lease lasts without renewal (at least; longer with a long sync interval):
/// another router takes over at most this long after the leader dies.
pub const LEAD_TTL: Duration = Duration::from_secs(10);

/// How much sooner than its lease a leader stops acting (clock differences between routers).
const LEAD_MARGIN: Duration = Duration::from_secs(2);

/// This router's name in leases and records: the configured one or the host name and process
/// id, with the start time (a restarted router is a new holder; its old lease simply
/// expires).
pub fn router_id(config: &Config) -> String {
    if let StorageConfig::Mongodb(m) = &config.storage {
        if let Some(id) = &m.router_id {
            // With this process's start time: two routers given the same name by mistake
            // still hold leases and tell their writes apart as two routers.
            return format!("{id}.{:x}", crate::store::now_ms());
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "router".to_string());
    format!("{host}-{}-{:x}", std::process::id(), crate::store::now_ms())
}

/// The configured secrets key (read from its file now), or None.
pub fn secrets_key(config: &Config) -> Result<Option<SecretsKey>, StoreError> {
    match &config.secrets {
        SecretsKeySource::None => Ok(None),
        SecretsKeySource::File(path) => SecretsKey::from_file(std::path::Path::new(path)).map(Some),
        SecretsKeySource::Text { var, text } => {
            SecretsKey::from_text(text, &format!("the secrets key in {var} (secrets.key_env)"))
                .map(Some)
        }
    }
}

/// Says once at start how the store's secrets are kept (`key`: the configured one).
pub fn log_secrets_key(key: Option<&SecretsKey>) {
    match key {
        Some(k) => log::info!("store secrets are sealed with key {}", k.id()),
        None => log::warn!(
            "no secrets key is configured (secrets.key_file): identity keys, passwords and node \
             tokens are stored in plain text"
        ),
    }
}

/// Opens the configured store behind its worker, its secrets sealed with the configured key.
pub fn open_store(config: &Config, router_id: &str) -> Result<StoreHandle, StoreError> {
    let sealer = Sealer::new(secrets_key(config)?);
    match &config.storage {
        StorageConfig::Embedded { path } => {
            let inner = EmbeddedStore::open(std::path::Path::new(path))?;
            StoreHandle::spawn(Box::new(SealedStore::new(Box::new(inner), sealer)))
        }
        StorageConfig::Mongodb(m) => {
            let (uri, database, id) = (m.uri.clone(), m.database.clone(), router_id.to_string());
            StoreHandle::open(move || async move {
                let store = MongoStore::open(&uri, &database, &id).await?;
                Ok(Box::new(SealedStore::new(Box::new(store), sealer)) as Box<dyn Store>)
            })
        }
    }
}

/// The lead lease's length for a sync interval: at least [`LEAD_TTL`], and long enough that
/// the lead (which ends [`LEAD_MARGIN`] before the lease) outlasts two renewal intervals.
fn lease_ttl(interval: Duration) -> Duration {
    LEAD_TTL.max(interval * 3 + LEAD_MARGIN)
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

    /// How long one store call of the loops may take: a sync interval, at least 2 s.
    fn call_deadline(&self) -> Duration {
        self.interval.max(Duration::from_secs(2))
    }

    /// How long the lease is taken for: at least [`LEAD_TTL`], and three sync intervals
    /// (renewed every interval, so two renewals may fail before it runs out).
    fn lease_ttl(&self) -> Duration {
        lease_ttl(self.interval)
    }

    /// Renews (or tries to take) the lead lease. `held_until` is when this router's lead
    /// ends unless renewed.
    pub async fn renew_lease(&self, held_until: &mut Option<Instant>) {
        let deadline = self.call_deadline();
        let asked = Instant::now();
        match self
            .store
            .acquire_lease(LEAD_LEASE, &self.router_id, self.lease_ttl(), deadline)
            .await
        {
            Ok(true) => {
                // Counted from before the request, less a margin for clocks: the lead ends
                // here before the lease does.
                let until = asked + self.lease_ttl().saturating_sub(LEAD_MARGIN);
                *held_until = Some(until);
                self.cluster.set_lead_until(Some(until));
            }
            Ok(false) => {
                *held_until = None;
                self.cluster.set_lead_until(None);
            }
            // The database does not answer: the lead lasts as long as the last renewal
            // (`Cluster::leads` checks the time), not a moment longer.
            Err(e) => {
                log::warn!("could not renew the lead lease: {e}");
                if held_until.is_none_or(|t| Instant::now() >= t) {
                    *held_until = None;
                    self.cluster.set_lead_until(None);
                }
            }
        }
    }

    /// One round of everything else: other routers' changes, claims, ids.
    pub async fn round(&self) {
        let deadline = self.call_deadline();
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
                let tenancy = crate::config::Tenancy::of_record(r).ok()?;
                r.digest
                    .as_deref()
                    .and_then(digest_from_hex)
                    .map(|d| (d, r.role, tenancy))
            }) {
                Some((digest, role, tenancy)) => {
                    self.keys.put_digest_with(name, digest, role, tenancy)
                }
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

/// A tick every `interval`; a late tick does not make the next ones come sooner.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

#[async_trait]
impl BackgroundService for StoreSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut held_until = None;
        // The lease in a loop of its own: a slow round (claims waiting for the store) must
        // not delay its renewal (`Cluster::leads` ends the lead on time either way).
        let lease = async {
            let (mut stop, mut tick) = (shutdown.clone(), ticker(self.interval));
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => self.renew_lease(&mut held_until).await,
                }
            }
        };
        let sync = async {
            let (mut stop, mut tick) = (shutdown.clone(), ticker(self.interval));
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => self.round().await,
                    // A bot met first here is claimed at once, not a sync interval later.
                    _ = self.cluster.claims_queued(self.interval) => {
                        self.cluster.settle_claims(self.call_deadline()).await;
                    }
                }
            }
        };
        tokio::join!(lease, sync);
        // Hand the lead over at once rather than after the lease runs out.
        if held_until.is_some() {
            let _ = self
                .store
                .release_lease(LEAD_LEASE, &self.router_id, Duration::from_secs(2))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the sync interval, the lead lasts past the next renewal (with a margin).
    #[test]
    fn the_lead_outlasts_the_next_renewal_at_any_interval() {
        for ms in [100u64, 1000, 5000, 8000, 20_000, 60_000] {
            let interval = Duration::from_millis(ms);
            let lead = lease_ttl(interval) - LEAD_MARGIN;
            assert!(lead >= interval * 2, "{ms} ms: the lead lasts {lead:?}");
            assert!(lease_ttl(interval) >= LEAD_TTL);
        }
    }
}
