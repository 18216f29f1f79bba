//! Assembling and starting the router: store, cluster view, poller, placement, failover, proxy.
//!
//! Owns: the start-up order (open the store and load it before anything listens, so every bot
//! keeps its cluster id across restarts; then the poller and the listener) and translating the
//! config into Pingora's `ServerConf`. Does not own: any request handling.

#[cfg(feature = "demo")]
pub mod demo;
pub mod keys;
pub mod store_cmd;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora_load_balancing::{Backends, LoadBalancer};

use crate::admin::http::AdminApp;
use crate::admin::operations::Operations;
use crate::admin::{AdminState, Parts, Resumer};
use crate::cluster::agents::AgentPoller;
use crate::cluster::failover::Failover;
use crate::cluster::health::{poll_all, NodePoller};
use crate::cluster::placement::{ClusterDiscovery, LoadOrder, Placer, Scoring};
use crate::cluster::Cluster;
use crate::config::{Config, KeyConfig};
use crate::metrics::Metrics;
use crate::node::client::NodeClient;
use crate::proxy::exec::Exec;
use crate::proxy::keys::{digest_from_hex, Keys};
use crate::proxy::stats::ProxyStats;
use crate::proxy::Router;
use crate::store::StoreError;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else in the set-up.
    #[error("{0}")]
    Setup(String),
}

/// Builds a ready-to-run Pingora server from a validated config.
pub fn build(config: Config) -> Result<Server, StartError> {
    let router_id = sync::router_id(&config);
    let store = sync::open_store(&config, &router_id)?;
    let mut snapshot = futures::executor::block_on(store.load())?;

    let keys = load_keys(&config, &snapshot);
    let stored_keys = snapshot.keys.clone();
    let stored_audit = std::mem::take(&mut snapshot.audit);
    let stored_operations = std::mem::take(&mut snapshot.operations);
    let cluster = Arc::new(Cluster::new(&config.nodes, snapshot, store.clone()));
    if store.shared() {
        // Ids for the bots the first poll meets come from a block reserved in the database.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::Setup(format!("cannot reserve ids: {e}")))?
            .block_on(cluster.ensure_id_headroom(crate::store::WRITE_DEADLINE))?;
        log::info!("router {router_id} shares its store with other routers");
    }
    log::info!(
        "loaded {} bots on {} nodes from the store",
        cluster.bot_count(),
        cluster.nodes().len()
    );

    let mut server = Server::new_with_opt_and_conf(None, pingora_conf(&config));
    server.bootstrap();

    let poller = background_service("node poller", node_poller(&cluster, &config)?);
    let placer = Arc::new(Placer::new(poller.task()));

    // Always running: it also brings back bots after a node restart; moving a dead node's
    // bots is what `failover.enabled` switches.
    let failover = background_service(
        "failover",
        Failover::new(
            cluster.clone(),
            placer.clone(),
            config.failover.clone(),
            config.routing.connect_timeout,
            config.routing.request_timeout,
        ),
    );
    let exec = Exec::new(
        cluster.clone(),
        Arc::new(NodeClient::new(config.routing.connect_timeout)),
        placer.clone(),
        config.routing.clone(),
        config.health.timeout,
    );
    let proxy_stats =
        Arc::new(ProxyStats::new().map_err(|e| StartError::Setup(format!("metrics: {e}")))?);
    let metrics = Arc::new(
        Metrics::new(cluster.clone(), placer.clone(), &proxy_stats)
            .map_err(|e| StartError::Setup(format!("metrics: {e}")))?,
    );
    let router = Router::new(
        cluster.clone(),
        keys.clone(),
        config.routing.clone(),
        exec,
        config.admin.metrics.then_some(proxy_stats),
    )
    .map_err(StartError::Setup)?;
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, router);
    proxy.add_tcp(&config.listen.to_string());
    server.add_service(poller);
    server.add_service(failover);
    // Always running (it does nothing for nodes without an agent): agents can be added at
    // run time, and the panel shows their figures under either strategy.
    server.add_service(background_service(
        "agent poller",
        AgentPoller::new(
            cluster.clone(),
            config.placement.agent_interval,
            config.health.timeout,
            config.routing.connect_timeout,
        ),
    ));
    if store.shared() {
        server.add_service(background_service(
            "store sync",
            sync::StoreSync::new(
                cluster.clone(),
                keys.clone(),
                store.clone(),
                router_id,
                &config,
            ),
        ));
    }
    server.add_service(proxy);
    let operations = Operations::new(
        cluster.clone(),
        placer.clone(),
        config.failover.clone(),
        config.routing.connect_timeout,
        config.routing.request_timeout,
        stored_operations,
    );
    server.add_service(background_service(
        "operations",
        Resumer(operations.clone()),
    ));
    if let Some(addr) = config.admin.listen {
        let state = AdminState::new(
            Parts {
                cluster,
                keys,
                placer,
                config: Arc::new(config.clone()),
                operations,
                metrics,
            },
            &stored_keys,
            stored_audit,
        );
        server.add_service(admin_service(addr, state));
    }
    Ok(server)
}

/// The key table: the config file's keys, then those added at run time (stored as digests);
/// the config file wins on a clash.
fn load_keys(config: &Config, snapshot: &crate::store::Snapshot) -> Arc<Keys> {
    let keys = Arc::new(Keys::new(&config.keys));
    for k in &snapshot.keys {
        if keys.contains(&k.name) {
            log::info!(
                "key `{}` is in the config file and in the store; the config file wins",
                k.name
            );
            continue;
        }
        match (k.digest.as_deref().and_then(digest_from_hex), &k.secret) {
            (Some(d), _) => match crate::config::Tenancy::of_record(k) {
                Ok(t) => keys.put_digest_with(&k.name, d, k.role, t),
                Err(e) => log::error!("stored key `{}`: {e}; it is ignored", k.name),
            },
            (None, Some(secret)) => keys.put(&KeyConfig {
                name: k.name.clone(),
                secret: secret.clone(),
                role: k.role,
                tenancy: crate::config::Tenancy::of_record(k).unwrap_or_default(),
            }),
            (None, None) => log::error!(
                "stored key `{}` has no usable digest; it is ignored",
                k.name
            ),
        }
    }
    keys
}

/// Pingora's settings from ours.
fn pingora_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        // Creates and pinned requests are never retried blindly; unpinned ones at most twice.
        max_retries: 2,
        ..ServerConf::default()
    }
}

/// The load balancer whose background service polls the nodes, after one round of polls
/// (so the router starts with each node's real state).
fn node_poller(
    cluster: &Arc<Cluster>,
    config: &Config,
) -> Result<LoadBalancer<LoadOrder>, StartError> {
    let mut lb = LoadBalancer::<LoadOrder>::from_backends_with_config(
        Backends::new(Box::new(ClusterDiscovery(cluster.clone()))),
        Some(Scoring::of(&config.placement)),
    );
    lb.set_health_check(Box::new(NodePoller::new(
        cluster.clone(),
        config.health.clone(),
        config.routing.connect_timeout,
    )));
    lb.health_check_frequency = Some(config.health.interval);
    lb.update_frequency = Some(Duration::from_secs(5));
    lb.parallel_health_check = true;
    futures::executor::block_on(lb.update()).map_err(|e| StartError::Setup(e.to_string()))?;
    // One round of polls before anything listens, on a runtime (and client) of its own so
    // that no pooled connection outlives it.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Setup(format!("cannot start the first poll: {e}")))?
        .block_on(poll_all(
            cluster,
            &NodeClient::new(config.routing.connect_timeout),
            &config.health,
        ));
    Ok(lb)
}

/// The admin listener's service.
fn admin_service(addr: std::net::SocketAddr, state: AdminState) -> Service<AdminApp> {
    let mut admin = Service::new("admin".into(), AdminApp(Arc::new(state)));
    admin.add_tcp(&addr.to_string());
    admin
}
