//! The operator side: the admin listener's JSON API and panel.
//!
//! Owns: [`AdminState`] (what the admin endpoints share: the cluster view, the key table,
//! placement, sessions, the audit trail, the effective config) and building the admin
//! service. The modules: [`http`] (the Pingora app: reading, auth, dispatch, audit),
//! [`routes`] (the endpoint table and OpenAPI), [`auth`] (sessions, CSRF, login throttling),
//! [`error`] (the one error shape), [`nodes`], [`keys`], [`bots`], [`audit`],
//! [`config_view`] and [`panel`] (the browser panel's files).
//! Does not own: the bot API (`proxy`), the tables and their rules (`cluster`).

pub mod audit;
pub mod auth;
pub mod bots;
pub mod config_view;
pub mod error;
pub mod http;
pub mod keys;
pub mod nodes;
pub mod panel;
pub mod routes;

use std::sync::Arc;

use serde_json::Value;

use crate::admin::audit::Audit;
use crate::admin::auth::Sessions;
use crate::admin::error::AdminError;
use crate::admin::keys::{KeyBook, KeyMeta};
use crate::cluster::placement::Placer;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::node::client::NodeClient;
use crate::proxy::keys::Keys;
use crate::store::{AuditRecord, KeyRecord};

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
}

impl AdminState {
    /// The admin state over the running router's parts.
    pub fn new(
        cluster: Arc<Cluster>,
        keys: Arc<Keys>,
        placer: Arc<Placer>,
        config: Arc<Config>,
        stored_keys: &[KeyRecord],
        stored_audit: Vec<AuditRecord>,
    ) -> AdminState {
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
        }
    }

    fn operations_api(&self) -> OpsApi<'_> {
        OpsApi(self)
    }
}

/// The operations endpoints (evacuate, move, rebalance, progress).
pub struct OpsApi<'a>(&'a AdminState);

impl OpsApi<'_> {
    fn missing(&self) -> AdminError {
        let _ = self.0;
        AdminError::Unavailable("operations are not available in this build".into())
    }

    async fn evacuate(&self, _node: &str) -> Result<Value, AdminError> {
        Err(self.missing())
    }

    async fn move_bot(&self, _gid: u32, _node: &str) -> Result<Value, AdminError> {
        Err(self.missing())
    }

    async fn rebalance(&self) -> Result<Value, AdminError> {
        Err(self.missing())
    }

    fn list(&self) -> Value {
        Value::Array(Vec::new())
    }

    fn get(&self, id: &str) -> Result<Value, AdminError> {
        Err(AdminError::NotFound(format!("no operation `{id}`")))
    }
}
