//! The operator side: the admin listener's JSON API and panel.
//!
//! Owns: [`AdminState`] (what the admin endpoints share: the cluster view, the key table,
//! placement, sessions, the audit trail, the effective config) and building the admin
//! service. The modules: [`http`] (the Pingora app: reading, auth, dispatch, audit),
//! [`routes`] (the endpoint table and OpenAPI), [`auth`] (sessions, CSRF, login throttling),
//! [`error`] (the one error shape), [`nodes`], [`keys`], [`bots`], [`audit`],
//! [`config_view`], [`operations`] (evacuate, move, rebalance) and [`panel`] (the browser
//! panel's files).
//! Does not own: the bot API (`proxy`), the tables and their rules (`cluster`).

pub mod audit;
pub mod auth;
pub mod bots;
pub mod config_view;
pub mod error;
pub mod http;
pub mod keys;
pub mod nodes;
pub mod operations;
pub mod panel;
pub mod routes;

use std::sync::Arc;

use serde_json::Value;

use crate::admin::audit::Audit;
use crate::admin::auth::Sessions;
use crate::admin::error::AdminError;
use crate::admin::keys::{KeyBook, KeyMeta};
use crate::admin::operations::{OpError, OperationView, Operations};
use crate::cluster::placement::Placer;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::client::NodeClient;
use crate::proxy::keys::Keys;
use crate::store::{AuditRecord, KeyRecord};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// What every admin endpoint can reach.
pub struct AdminState {
    /// The cluster view.
    pub cluster: Arc<Cluster>,
    /// The live key table (shared with the bot API).
    pub keys: Arc<Keys>,
    /// Placement (its load balancer learns added nodes).
    pub placer: Arc<Placer>,
    /// Panel sessions.
    pub sessions: Sessions,
    /// The audit trail.
    pub audit: Audit,
    /// Where keys come from.
    pub key_book: KeyBook,
    /// Requests to nodes (checks, stops) on the admin service's runtime.
    pub client: NodeClient,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Evacuations, moves and rebalances.
    pub operations: Arc<Operations>,
    /// What `GET /metrics` serves.
    pub metrics: Arc<Metrics>,
}

/// The running router's parts the admin side works on.
pub struct Parts {
    /// The cluster view.
    pub cluster: Arc<Cluster>,
    /// The live key table.
    pub keys: Arc<Keys>,
    /// Placement.
    pub placer: Arc<Placer>,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Evacuations, moves and rebalances.
    pub operations: Arc<Operations>,
    /// What `GET /metrics` serves.
    pub metrics: Arc<Metrics>,
}

impl AdminState {
    /// The admin state over the running router's parts, with the keys and audit records
    /// the store held at start.
    pub fn new(
        parts: Parts,
        stored_keys: &[KeyRecord],
        stored_audit: Vec<AuditRecord>,
    ) -> AdminState {
        let Parts {
            cluster,
            keys,
            placer,
            config,
            operations,
            metrics,
        } = parts;
        let book = KeyBook::default();
        {
            let mut b = book.0.lock();
            for k in &config.keys {
                b.insert(
                    k.name.clone(),
                    KeyMeta {
                        from_config: true,
                        created_ms: 0,
                        last_used_ms: None,
                    },
                );
            }
            for k in stored_keys {
                b.entry(k.name.clone()).or_insert(KeyMeta {
                    from_config: false,
                    created_ms: k.created_ms,
                    last_used_ms: k.last_used_ms,
                });
            }
        }
        AdminState {
            audit: Audit::new(cluster.store().clone(), stored_audit),
            client: NodeClient::new(config.routing.connect_timeout),
            sessions: Sessions::new(config.admin.session_ttl),
            key_book: book,
            cluster,
            keys,
            placer,
            config,
            operations,
            metrics,
        }
    }

    fn operations_api(&self) -> OpsApi<'_> {
        OpsApi(&self.operations)
    }
}

impl From<OpError> for AdminError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(_) => AdminError::NotFound(e.to_string()),
            OpError::Invalid { field, message } => AdminError::invalid(field, message),
            OpError::Conflict(m) => AdminError::Conflict(m),
            OpError::Store(s) => s.into(),
        }
    }
}

fn view(v: OperationView) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The operations endpoints (evacuate, move, rebalance, progress) over [`Operations`].
pub struct OpsApi<'a>(&'a Arc<Operations>);

impl OpsApi<'_> {
    async fn evacuate(&self, node: &str) -> Result<Value, AdminError> {
        Ok(view(self.0.evacuate(node).await?))
    }

    async fn move_bot(&self, gid: u32, node: &str) -> Result<Value, AdminError> {
        Ok(view(self.0.move_bot(gid, node).await?))
    }

    async fn rebalance(&self) -> Result<Value, AdminError> {
        Ok(view(self.0.rebalance().await?))
    }

    fn list(&self) -> Value {
        Value::Array(self.0.list().into_iter().map(view).collect())
    }

    fn get(&self, id: &str) -> Result<Value, AdminError> {
        id.parse::<u64>()
            .ok()
            .and_then(|id| self.0.get(id))
            .map(view)
            .ok_or_else(|| AdminError::NotFound(format!("no operation `{id}`")))
    }
}

/// Resumes the operations that were running when the router stopped, once the service
/// runtime is up (the first poll round already ran, so nodes' liveness is known).
pub struct Resumer(pub Arc<Operations>);

#[async_trait::async_trait]
impl BackgroundService for Resumer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let cluster = self.0.cluster().clone();
        if !cluster.is_shared() {
            self.0.resume();
            // The resumed work runs on this service's runtime: keep it until shutdown.
            let _ = shutdown.changed().await;
            return;
        }
        // A shared store: operations run where the lead is. Each time the lead comes here
        // the operations are read afresh from the store (another router may have started
        // or advanced them) and the running ones resumed.
        let mut leading = false;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = cluster.leads();
            if now && !leading {
                let load =
                    tokio::time::timeout(crate::store::WRITE_DEADLINE, cluster.store().load());
                match load.await {
                    Ok(Ok(snapshot)) => self.0.take_over(snapshot.operations),
                    Ok(Err(e)) => {
                        log::error!("could not read the operations to resume: {e}; again in 5 s");
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        continue;
                    }
                    Err(_) => {
                        log::error!("could not read the operations to resume: the store did not answer; again in 5 s");
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        continue;
                    }
                }
            } else if now {
                // An operation paused by a short loss of the lead goes on (one task each).
                self.0.resume();
            }
            leading = now;
        }
    }
}
