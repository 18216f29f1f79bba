//! Node polling: liveness and bot counts from each node's `bot/list`.
//!
//! Owns: [`NodePoller`], a Pingora `HealthCheck` run by the load balancer's background service
//! every `health.interval`: it reads each node's `bot/list` with that node's own credentials,
//! hands the list to the cluster view for reconciliation (which also updates the running
//! counts placement uses), and flips node liveness after `failures_to_down` / `successes_to_up`
//! consecutive results (the node's own streak, see `Node::observe_poll`). A node that
//! failover evacuated is fenced first (see `fencing`). Also [`poll_node`], the same read on
//! demand (after a request changed bots in ways its answer does not show).
//! Does not own: the tables (`view`) or reading the list (`node::api`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::fencing::{stop_strays, try_fence, FenceError};
use crate::cluster::node::PollOutcome;
use crate::cluster::placement::node_of;
use crate::cluster::{Cluster, Node};
use crate::config::HealthConfig;
use crate::node::api::{read_bot_list, read_starttime, ReadError};
use crate::node::client::NodeClient;
use crate::protocol::api_json::BotInfo;
use async_trait::async_trait;
use pingora::{Error, ErrorType};
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The list could not be read (unreachable, error status, not a bot list).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Failover is moving the node's bots; it is left alone until that is over.
    #[error("node {0} is being evacuated by failover")]
    Evacuating(String),
    /// Copies of moved bots could not be stopped; the node stays unused.
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// Somebody else (the return watch, failover) is stopping the copies of moved bots on
    /// it right now; it is left alone until that is over.
    #[error("node {0} is being fenced")]
    Fencing(String),
}

/// Reconciles the view with a list just read from `node` (by the poller or a `bot/list`
/// fan-out). Whether bots that are gone were stopped on purpose or went down with a restart
/// depends on the node's start time, so it is read first: by the poller on every poll (so
/// the start time new bots are stamped with is at most one poll old), by a fan-out only
/// when it can decide something (the start time is unknown or the list differs from what
/// the router knows). If the node answers the list but not its start time although it gave
/// one before, nothing is applied this time. Returns whether new cluster ids were handed out.
pub async fn apply_list(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    listed: &[BotInfo],
    started: u64,
    timeout: Duration,
    always_read: bool,
) -> Result<bool, PollError> {
    if !always_read && node.has_starttime() && cluster.list_unchanged(node.id, listed) {
        // The common fan-out: nothing to read, and nothing `reconcile` would apply.
        return Ok(false);
    }
    match read_starttime(client, &node.endpoint(), timeout).await {
        Ok(Some(t)) => {
            if let Some(old) = node.set_starttime(t.clone()).filter(|o| *o != t) {
                log::warn!("node {} restarted (start time {old} -> {t})", node.name);
            }
        }
        // A node that never said: bots that are gone are taken as stopped on purpose.
        Ok(None) if !node.has_starttime() => {}
        // It said before and will not now (starting up, an error): decide nothing.
        Ok(None) => {
            return Err(PollError::Read(ReadError::Status {
                node: node.name.to_string(),
                status: 0,
                body: "system/info gave no start time".into(),
            }))
        }
        Err(e) => return Err(PollError::Read(ReadError::Node(e))),
    }
    Ok(cluster.reconcile(node.id, listed, started))
}

/// Reads one node's list and reconciles the cluster view with it.
pub async fn poll_node(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    timeout: Duration,
) -> Result<(), PollError> {
    if node.evacuating.load(Ordering::Acquire) {
        return Err(PollError::Evacuating(node.name.to_string()));
    }
    // A node that comes back after failover first loses the copies that now run elsewhere.
    match try_fence(cluster, client, node, timeout).await {
        Some(done) => done?,
        None => return Err(PollError::Fencing(node.name.to_string())),
    };
    let started = cluster.generation();
    let endpoint = node.endpoint();
    let listed = read_bot_list(client, &endpoint, timeout).await?;
    // Copies an unrecorded rebuild left here while their bot lived on are not adopted.
    // Only the leader acts on what it concludes about other nodes (with a shared store a
    // follower's view of who is up may be wrong; it stops nothing).
    let listed = if cluster.leads() {
        stop_strays(cluster, client, node, listed, timeout).await
    } else {
        listed
    };
    // Refused (and changes nothing) if an evacuation started meanwhile.
    apply_list(cluster, client, node, &listed, started, timeout, true).await?;
    if node.evacuating.load(Ordering::Acquire) {
        // Failover began while this poll ran: the node must not count as up now.
        return Err(PollError::Evacuating(node.name.to_string()));
    }
    Ok(())
}

/// One poll of `node` whose result counts towards its liveness (and says whether failover
/// may take it for dead).
pub async fn poll_and_observe(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    cfg: &HealthConfig,
) -> Result<(), PollError> {
    let began = std::time::Instant::now();
    // On a shared store a bot the poll meets first takes an id from a block the sync loop
    // keeps reserved ahead (never waited for here); without one it is learned at a later poll.
    let result = poll_node(cluster, client, node, cfg.timeout).await;
    if !matches!(
        result,
        Err(PollError::Evacuating(_) | PollError::Fencing(_))
    ) {
        node.set_last_poll(PollOutcome {
            latency_ms: Some(u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX)),
            error: result.as_ref().err().map(ToString::to_string),
        });
    }
    // Failover moves the bots only of a node it cannot reach: one that answers but refuses
    // (a revoked token, an error status) still runs its bots.
    match &result {
        Ok(()) => node.unreachable.store(false, Ordering::Release),
        Err(PollError::Read(e)) => node.unreachable.store(e.unreachable(), Ordering::Release),
        Err(PollError::Evacuating(_) | PollError::Fencing(_)) => return result,
        // A node whose copies cannot be stopped because it cannot be reached at all is as
        // dead as one whose list cannot be read (a router that restarted, or took the lead,
        // in the middle of a failover meets exactly that).
        Err(PollError::Fence(e)) => node.unreachable.store(e.unreachable, Ordering::Release),
    }
    // Liveness is decided here rather than by Pingora's own flags: Pingora starts every
    // backend healthy, but a node (new, edited, or with copies to fence) is down until a
    // poll of it succeeds.
    match node.observe_poll(result.is_ok(), cfg.successes_to_up, cfg.failures_to_down) {
        Some(true) => log::warn!("node {} is up", node.name),
        Some(false) => log::warn!(
            "node {} is down ({} consecutive failed polls): {}; its bots answer 503 until it is back",
            node.name,
            cfg.failures_to_down,
            result.as_ref().err().map(ToString::to_string).unwrap_or_default()
        ),
        None => {}
    }
    result
}

/// Polls every node once, in parallel, so that the router starts with each node's real
/// state (up, down, fenced, its bots reconciled) instead of serving its first requests
/// against nodes it has not heard from. Bounded by one poll's deadline (plus fencing).
pub async fn poll_all(cluster: &Cluster, client: &NodeClient, cfg: &HealthConfig) {
    let nodes = cluster.nodes();
    let polls = nodes.iter().map(|node| async move {
        // A first failure does not count as `failures_to_down`: a node that was never up
        // stays down either way, and the result is logged once.
        if let Err(e) = poll_and_observe(cluster, client, node, cfg).await {
            log::warn!("node {} is not reachable at start: {e}", node.name);
        }
    });
    futures::future::join_all(polls).await;
}

/// The poller, run by Pingora's load-balancer background service.
pub struct NodePoller {
    cluster: Arc<Cluster>,
    client: NodeClient,
    cfg: HealthConfig,
}

impl NodePoller {
    /// A poller with its own client (connections stay on the background runtime).
    pub fn new(cluster: Arc<Cluster>, cfg: HealthConfig, connect_timeout: Duration) -> Self {
        NodePoller {
            cluster,
            client: NodeClient::new(connect_timeout),
            cfg,
        }
    }
}

#[async_trait]
impl HealthCheck for NodePoller {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let Some(node) = node_of(target) else {
            return Error::e_explain(ErrorType::InternalError, "backend without a node");
        };
        let result = poll_and_observe(&self.cluster, &self.client, node, &self.cfg).await;
        result.map_err(|e| {
            log::debug!("{e}");
            Error::explain(ErrorType::ConnectError, e.to_string())
        })
    }

    fn backend_summary(&self, target: &Backend) -> String {
        node_of(target).map_or_else(
            || format!("{target:?}"),
            |n| format!("node {} ({})", n.name, n.url()),
        )
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.cfg.successes_to_up
        } else {
            self.cfg.failures_to_down
        }
    }
}
