//! Assembling and starting the router: store, cluster view, poller, placement, failover, proxy.
//!
//! Owns: the start-up order (open the store and load it before anything listens, so every bot
//! keeps its cluster id across restarts; then the poller and the listener) and translating the
//! config into Pingora's `ServerConf`. Does not own: any request handling.

pub mod cert;
#[cfg(feature = "demo")]
pub mod demo;
pub mod keys;
pub mod logging;
pub mod secrets_cmd;
pub mod store_cmd;
pub mod sync;
pub mod tls;
pub mod upgrade;
pub mod watchdog;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};
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
use crate::cluster::returns::ReturnWatch;
use crate::cluster::Cluster;
use crate::config::{Config, KeyConfig};
use crate::metrics::Metrics;
use crate::node::client::NodeClient;
use crate::proxy::connections::{ConnectionLimits, Guarded};
use crate::proxy::exec::Exec;
use crate::proxy::handover::Handover;
use crate::proxy::keys::{digest_from_hex, Keys};
use crate::proxy::stats::ProxyStats;
use crate::proxy::Router;
use crate::store::{StoreError, StoreHandle};

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else in the set-up.
    #[error("{0}")]
    Setup(String),
    /// The graceful upgrade's hand-over failed.
    #[error(transparent)]
    Upgrade(#[from] upgrade::UpgradeError),
}

/// How this process starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Take the listening sockets (and the store) over from a running process
    /// (`serve --upgrade`; the old process gets SIGQUIT).
    pub upgrade: bool,
}

/// A built server and what must be closed after it ran.
pub struct Built {
    /// The Pingora server, ready to run.
    pub server: Server,
    /// The store (flushed and closed once the server stopped).
    pub store: StoreHandle,
    /// The graceful-upgrade switch (tells `serve` whether an upgrade found no successor).
    pub handover: Arc<Handover>,
}

/// Runs the router until it is stopped: SIGTERM (in-flight requests finish within
/// `server.grace_period_seconds`, the listeners close at once), SIGQUIT (graceful upgrade to a
/// process started with `--upgrade`), SIGINT (at once). The store is flushed and closed
/// before this returns.
pub fn serve(config: Config, launch: Launch) -> Result<(), StartError> {
    run(build_with(config, launch)?)
}

/// Runs a built router until it is stopped (see [`serve`]); the stop is bounded by
/// [`watchdog::StopWatchdog`].
pub fn run(built: Built) -> Result<(), StartError> {
    let Built {
        server,
        store,
        handover,
    } = built;
    let runtime_timeout = Duration::from_secs(
        server
            .configuration
            .graceful_shutdown_timeout_seconds
            .unwrap_or(5),
    );
    // Run once, whichever comes first (the watchdog or the normal end); the other caller
    // waits for it: two closes at once could let the process exit while the first is still
    // dropping the store.
    let finish = Arc::new(OnceLock::<Result<(), String>>::new());
    let (once, s, h) = (finish.clone(), store.clone(), handover.clone());
    let watchdog = watchdog::StopWatchdog::start(
        server.watch_execution_phase(),
        runtime_timeout,
        watchdog::MARGIN,
        move || match finish_stop_once(&once, &s, &h) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
                1
            }
        },
        |code| std::process::exit(code),
    );
    let watchdog = match watchdog {
        Ok(w) => w,
        Err(e) => {
            // Nothing ran yet; the store is open and must not be left so.
            let _ = finish_stop(&store, &handover);
            return Err(StartError::Setup(format!(
                "cannot start the stop watchdog: {e}"
            )));
        }
    };
    server.run(pingora::server::RunArgs::default());
    // The runtimes are down: what is left (the store's close) has its own deadline.
    watchdog.finished();
    finish_stop_once(&finish, &store, &handover)
        .clone()
        .map_err(StartError::Setup)
}

/// [`finish_stop`] the first time it is asked for, its result every time after (a second
/// caller waits for the first to finish).
fn finish_stop_once<'a>(
    once: &'a OnceLock<Result<(), String>>,
    store: &StoreHandle,
    handover: &Handover,
) -> &'a Result<(), String> {
    once.get_or_init(|| finish_stop(store, handover).map_err(|e| e.to_string()))
}

/// The end of a stop, once Pingora let go: the store flushed and closed, and whether an
/// upgrade found no successor (an error then).
fn finish_stop(store: &StoreHandle, handover: &Handover) -> Result<(), StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Setup(format!("cannot close the store: {e}")))?
        .block_on(store.close(crate::store::WRITE_DEADLINE))?;
    log::info!("store flushed and closed; exiting");
    if handover.unclaimed() {
        // Pingora exits after SIGQUIT whether or not a new process took the sockets: exit
        // with a failure then, so a service manager (Restart=on-failure) starts it again.
        return Err(StartError::Setup(
            "a graceful upgrade sent the listening sockets but no new process took them over"
                .into(),
        ));
    }
    Ok(())
}

/// Builds a ready-to-run Pingora server from a validated config, as `launch` says.
///
/// Order: the hand-over socket, Pingora's bootstrap (with `--upgrade` it waits for the old
/// process's listening sockets), only then the store (with `--upgrade`, once the old process
/// released it), so that the old process can forward to this one while it finishes.
/// Connections that arrive meanwhile wait in the listening socket's queue.
pub fn build_with(config: Config, launch: Launch) -> Result<Built, StartError> {
    let handover_socket =
        match upgrade::HandoverSocket::bind(&Handover::socket_for(&config.server.upgrade_sock)) {
            Ok(s) => Some(Arc::new(s)),
            // Only upgrades need it: a router that cannot make it still serves.
            Err(e) if !launch.upgrade => {
                log::error!("{e}; graceful upgrades to a new process will not work");
                None
            }
            Err(e) => return Err(e.into()),
        };
    // Checked before this process takes any listening socket: a new process that fails on
    // its key after taking them over would leave nobody serving.
    sync::log_secrets_key(sync::secrets_key(&config)?.as_ref());
    let handover = Handover::new(Handover::socket_for(&config.server.upgrade_sock));
    let handover_for_serve = handover.clone();
    let opt = pingora::server::configuration::Opt {
        upgrade: launch.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, pingora_conf(&config));
    let phases = server.watch_execution_phase();
    server.bootstrap();
    if launch.upgrade {
        // systemd follows this process from now on (the old one exits within seconds).
        upgrade::sd_notify(&format!("MAINPID={}", std::process::id()));
        log::info!("graceful upgrade: listening sockets received from the old process");
    }

    let router_id = sync::router_id(&config);
    let store = upgrade::open_store_waiting(&config, &router_id, launch.upgrade)?;
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
    // Fences a node whose bots moved the moment it answers again (before its bots reconnect).
    let return_watch = background_service(
        "return watch",
        ReturnWatch::new(
            cluster.clone(),
            config.health.clone(),
            config.routing.connect_timeout,
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
    .map_err(StartError::Setup)?
    .with_handover(handover.clone());
    let limits = ConnectionLimits {
        per_address: config.routing.max_connections_per_address,
        header_timeout: config.routing.header_timeout,
        idle_timeout: config.routing.idle_timeout,
    };
    let mut app = pingora::proxy::http_proxy(&server.configuration, router);
    // h2 connections (ALPN on TLS) are not timed by `Guarded`'s stream: Pingora's own h2
    // idle timeout ends them after the same silence.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.routing.idle_timeout);
    app.server_options = Some(options);
    let mut proxy = Service::new("API".into(), Guarded::new(app, limits));
    let mut served = Vec::new();
    match &config.tls {
        Some(files) => {
            let cert = tls::ServedCert::load("tls", files).map_err(StartError::Setup)?;
            let settings = cert.settings().map_err(StartError::Setup)?;
            proxy.add_tls_with_settings(&config.listen.to_string(), None, settings);
            served.push(cert);
        }
        None => proxy.add_tcp(&config.listen.to_string()),
    }
    match &handover_socket {
        Some(socket) => {
            proxy.add_uds(
                &socket.path().display().to_string(),
                Some(std::fs::Permissions::from_mode(0o600)),
            );
            server.add_service(upgrade::WithHandoverSocket::new(proxy, socket.clone()));
        }
        None => {
            server.add_service(proxy);
        }
    }
    server.add_service(background_service(
        "hand-over",
        upgrade::HandoverWatch::new(
            phases,
            handover,
            handover_socket,
            cluster.clone(),
            store.clone(),
            &config,
        ),
    ));
    server.add_service(background_service("ready", upgrade::ReadyNotice));
    server.add_service(poller);
    server.add_service(failover);
    server.add_service(return_watch);
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
        let admin_cert = match &config.admin.tls {
            Some(files) => {
                Some(tls::ServedCert::load("admin.tls", files).map_err(StartError::Setup)?)
            }
            None => None,
        };
        server.add_service(admin_service(addr, state, admin_cert.as_ref())?);
        served.extend(admin_cert);
    }
    // Also without TLS listeners: SIGHUP then does nothing instead of ending the process.
    server.add_service(background_service("tls renewal", tls::Renewal::new(served)));
    Ok(Built {
        server,
        store,
        handover: handover_for_serve,
    })
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
            // A record older than digests; its tenancy as checked for any other (fail closed).
            (None, Some(secret)) => match crate::config::Tenancy::of_record(k) {
                Ok(tenancy) => keys.put(&KeyConfig {
                    name: k.name.clone(),
                    secret: secret.clone(),
                    role: k.role,
                    tenancy,
                }),
                Err(e) => log::error!("stored key `{}`: {e}; it is ignored", k.name),
            },
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

/// The admin listener's service (HTTPS when it has a certificate).
fn admin_service(
    addr: std::net::SocketAddr,
    state: AdminState,
    cert: Option<&Arc<tls::ServedCert>>,
) -> Result<Service<AdminApp>, StartError> {
    let mut admin = Service::new("admin".into(), AdminApp(Arc::new(state)));
    match cert {
        Some(c) => admin.add_tls_with_settings(
            &addr.to_string(),
            None,
            c.settings().map_err(StartError::Setup)?,
        ),
        None => admin.add_tcp(&addr.to_string()),
    }
    Ok(admin)
}
