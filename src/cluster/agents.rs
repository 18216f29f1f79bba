//! Reading the node agents in the background, for load-aware placement and the panel.
//!
//! Owns: [`AgentPoller`], a Pingora background service that every `placement.agent_interval`
//! reads the `/summary` of every node that has an agent (in parallel, each within the
//! poll deadline) and keeps the result on the node as an [`AgentReading`] stamped with the
//! router's own receive time; failures are logged once per change, never with the token.
//! Readings are never fetched on the request path: placement only looks at what is in
//! memory, and a reading older than `placement.agent_stale_after()` is ignored there.
//! Does not own: the HTTP call and the JSON (`node::agent`), the formula (`penalty`), or
//! node liveness, which comes from the node's own API (`health`), never from its agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cluster::penalty::Pressure;
use crate::cluster::{Cluster, Node};
use crate::node::agent::{read_summary, AgentSummary};
use crate::node::client::NodeClient;

/// One good answer of a node's agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReading {
    /// The figures.
    pub summary: AgentSummary,
    /// When the router received them (its own clock decides staleness, not the agent's).
    pub received: Instant,
}

impl AgentReading {
    /// The figures the penalty uses.
    pub fn pressure(&self) -> Pressure {
        Pressure {
            cpu_busy_ratio: self.summary.cpu_busy_ratio,
            memory_available_ratio: self.summary.memory_available_ratio,
        }
    }
}

/// Reads one node's agent (if it has one) and records the outcome on the node.
pub async fn read_agent(client: &NodeClient, node: &Node, timeout: Duration) {
    let Some(agent) = node.agent() else {
        return;
    };
    let result = read_summary(client, &agent, timeout)
        .await
        .map(|summary| AgentReading {
            summary,
            received: Instant::now(),
        })
        .map_err(|e| e.to_string());
    // The agent may have been replaced while the read ran: its answer is not the new one's.
    if node.agent().as_deref() != Some(&*agent) {
        return;
    }
    let error = result.as_ref().err().cloned();
    let Some(was) = node.record_agent(result) else {
        return;
    };
    match (was, error) {
        (_, Some(now)) => log::warn!(
            "{now} ({}); placement goes by node {}'s bot count until its agent answers",
            agent.url(),
            node.name
        ),
        (Some(was), None) => {
            log::info!("agent of node {} answers again (was: {was})", node.name)
        }
        (None, None) => {}
    }
}

/// Reads every node's agent once, in parallel.
pub async fn read_agents(cluster: &Cluster, client: &NodeClient, timeout: Duration) {
    let nodes = cluster.nodes();
    let reads = nodes.iter().map(|n| read_agent(client, n, timeout));
    futures::future::join_all(reads).await;
}

/// The background service reading the agents.
pub struct AgentPoller {
    cluster: Arc<Cluster>,
    client: NodeClient,
    interval: Duration,
    timeout: Duration,
}

impl AgentPoller {
    /// A poller with its own client (connections stay on the background runtime). One read
    /// may take at most `timeout`, and never longer than an interval, so rounds never pile up.
    pub fn new(
        cluster: Arc<Cluster>,
        interval: Duration,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        AgentPoller {
            cluster,
            client: NodeClient::new(connect_timeout),
            interval,
            timeout: timeout.min(interval),
        }
    }
}

#[async_trait]
impl BackgroundService for AgentPoller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            read_agents(&self.cluster, &self.client, self.timeout).await;
        }
    }
}
