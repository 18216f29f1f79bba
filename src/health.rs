//! Node polling: liveness and bot counts from each node's `bot/list`.
//!
//! Owns: [`NodePoller`], a Pingora `HealthCheck` run by the load balancer's background service
//! every `health.interval`: it reads each node's `bot/list` with that node's own credentials,
//! hands the list to the cluster view for reconciliation (which also updates the running
//! counts placement uses), and flips node liveness after `failures_to_down` / `successes_to_up`
//! consecutive results. A node that failover evacuated is fenced first (see `failover::fence`).
//! Also [`poll_node`], the same read on demand (after a request changed
//! bots in ways its answer does not show), and [`parse_bot_list`].
//! Does not own: the tables (`cluster`) or the HTTP client (`node_client`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::{Error, ErrorType};
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;
use serde::Deserialize;

use crate::cluster::{Cluster, ListedBot, Node};
use crate::config::HealthConfig;
use crate::node_client::{NodeClient, NodeError};
use crate::placement::node_of;

/// The request target the poller reads.
pub const BOT_LIST: &[u8] = b"/api/bot/list";

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The node could not be reached or did not answer.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The node answered with an error status (wrong token, missing rights...).
    #[error("node {node} answered bot/list with HTTP {status}: {body}")]
    Status {
        /// Node name.
        node: String,
        /// Status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Failover is moving the node's bots; it is left alone until that is over.
    #[error("node {0} is being evacuated by failover")]
    Evacuating(String),
    /// Copies of moved bots could not be stopped; the node stays unused.
    #[error(transparent)]
    Fence(#[from] crate::failover::FenceError),
    /// The answer is not a bot list.
    #[error("node {node} sent a bot/list that is not a BotInfo array: {reason}")]
    Format {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawBotInfo {
    id: Option<i64>,
    name: Option<String>,
    server: Option<String>,
    status: Option<i64>,
}

/// Parses a node's `bot/list` answer.
pub fn parse_bot_list(body: &[u8]) -> Result<Vec<ListedBot>, String> {
    let raw: Vec<RawBotInfo> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|b| {
            let id = match b.id {
                Some(i) => Some(u32::try_from(i).map_err(|_| format!("bot id {i} out of range"))?),
                None => None,
            };
            Ok(ListedBot {
                id,
                name: b.name,
                server: b.server,
                status: u8::try_from(b.status.unwrap_or(0).clamp(0, 2)).unwrap_or(0),
            })
        })
        .collect()
}

/// Reads one node's `bot/list` (the node's own view, local ids; nothing is reconciled).
pub async fn read_bot_list(
    client: &NodeClient,
    node: &Node,
    timeout: Duration,
) -> Result<Vec<ListedBot>, PollError> {
    let resp = client.get(node, BOT_LIST, timeout).await?;
    if resp.status != 200 {
        return Err(PollError::Status {
            node: node.name.to_string(),
            status: resp.status,
            body: String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned(),
        });
    }
    parse_bot_list(&resp.body).map_err(|reason| PollError::Format {
        node: node.name.to_string(),
        reason,
    })
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
    let fenced = crate::failover::fence(cluster, client, node, timeout).await?;
    let started = cluster.generation();
    let listed = read_bot_list(client, node, timeout).await?;
    // Refused (and changes nothing) if an evacuation started meanwhile.
    cluster.reconcile(node.id, &listed, started);
    if node.evacuating.load(Ordering::Acquire) {
        // Failover began while this poll ran: the node must not count as up now.
        return Err(PollError::Evacuating(node.name.to_string()));
    }
    if fenced && !node.is_healthy() {
        // Nodes with fences start down; once fenced they are usable at once (Pingora may
        // already count them up, and then reports no change).
        node.healthy.store(true, Ordering::Release);
        log::warn!("node {} is fenced and in use again", node.name);
    }
    Ok(())
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
        let result = poll_node(&self.cluster, &self.client, node, self.cfg.timeout).await;
        // Failover moves the bots only of a node it cannot reach: one that answers but refuses
        // (a revoked token, an error status) still runs its bots.
        match &result {
            Ok(()) => node.unreachable.store(false, Ordering::Release),
            Err(PollError::Node(
                NodeError::Connect { .. } | NodeError::Exchange { .. } | NodeError::Timeout { .. },
            )) => node.unreachable.store(true, Ordering::Release),
            Err(PollError::Evacuating(_)) => {}
            Err(_) => node.unreachable.store(false, Ordering::Release),
        }
        result.map_err(|e| {
            log::debug!("{e}");
            Error::explain(ErrorType::ConnectError, e.to_string())
        })
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(node) = node_of(target) {
            node.healthy.store(healthy, Ordering::Release);
            if healthy {
                log::warn!("node {} is up again", node.name);
            } else {
                log::warn!(
                    "node {} is down ({} consecutive failed polls); its bots answer 503 until it is back",
                    node.name,
                    self.cfg.failures_to_down
                );
            }
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        node_of(target).map_or_else(
            || format!("{target:?}"),
            |n| format!("node {} ({})", n.name, n.url),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_node_list() {
        let l = parse_bot_list(
            br#"[{"Id":0,"Name":"a","Server":"s","Status":2},{"Id":null,"Name":"t","Server":"","Status":0},{"Id":3,"Name":null,"Server":null,"Status":1}]"#,
        )
        .expect("list");
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].id, Some(0));
        assert_eq!(l[1].id, None);
        assert_eq!(l[2].server, None);
        assert!(parse_bot_list(br#"{"ErrorCode":11}"#).is_err());
        assert!(parse_bot_list(br#"[{"Id":-1,"Name":null,"Server":null,"Status":1}]"#).is_err());
    }
}
