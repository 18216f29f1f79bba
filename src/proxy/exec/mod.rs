//! Plans the router carries out itself, calling nodes on the client's behalf.
//!
//! Owns: the executor ([`Exec`]: its shared handles, picking any healthy node, re-reading a
//! node's list after a change) and, one module each: answers and answer edits shared with the
//! proxy path (`answer`), `bot list` / `system info` / broadcast fan-outs (`fanout`),
//! creates (`create`), split `json merge` execution (`merge`) and setting read-backs
//! (`readback`), `max_bots` per key (`quota`), removing the router's template of a stopped rebuilt bot (`cleanup`). Every
//! node call has a deadline; a node that fails never fails a whole
//! fan-out.
//! Does not own: deciding the plan (`routing`) or the HTTP framing to the client (`proxy`).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::health::poll_node;
use crate::cluster::placement::Placer;
use crate::cluster::{Cluster, Node, NodeId};
use crate::config::RoutingConfig;
use crate::node::client::NodeClient;

mod answer;
mod cleanup;
mod create;
mod fanout;
mod merge;
mod quota;
mod readback;

pub use answer::{strip_names, withheld, Answer};
use fanout::{InfoFanOut, ListFanOut};

/// Executes router-made plans.
pub struct Exec {
    list: parking_lot::Mutex<Option<ListFanOut>>,
    info: parking_lot::Mutex<Option<InfoFanOut>>,
    cluster: Arc<Cluster>,
    client: Arc<NodeClient>,
    placer: Arc<Placer>,
    cfg: RoutingConfig,
    health_timeout: Duration,
    /// Creates in flight per key with a `max_bots`.
    quota: quota::Quota,
}

impl Exec {
    /// An executor.
    pub fn new(
        cluster: Arc<Cluster>,
        client: Arc<NodeClient>,
        placer: Arc<Placer>,
        cfg: RoutingConfig,
        health_timeout: Duration,
    ) -> Self {
        Exec {
            list: parking_lot::Mutex::new(None),
            info: parking_lot::Mutex::new(None),
            cluster,
            client,
            placer,
            cfg,
            health_timeout,
            quota: quota::Quota::default(),
        }
    }

    /// A healthy node, round-robin.
    pub fn any_node(&self, turn: usize, exclude: &[NodeId]) -> Option<Arc<Node>> {
        let nodes = self.cluster.nodes();
        let n = nodes.len();
        (0..n)
            .map(|i| &nodes[(turn + i) % n])
            .find(|node| node.is_healthy() && !exclude.contains(&node.id))
            .cloned()
    }

    /// Re-reads a node's list soon (after a change the answer did not show).
    pub fn poke(&self, node: Arc<Node>) {
        let client = self.client.clone();
        let cluster = self.cluster.clone();
        let timeout = self.health_timeout;
        tokio::spawn(async move {
            if let Err(e) = poll_node(&cluster, &client, &node, timeout).await {
                log::debug!("re-reading node {} failed: {e}", node.name);
            }
        });
    }
}
