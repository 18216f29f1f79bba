//! Noticing at once that a node whose bots moved away is back.
//!
//! Owns: [`ReturnWatch`], a Pingora background service that keeps one request waiting on
//! every down node that still holds copies of moved bots (fences), so that the moment such a
//! node answers again it is fenced (`fencing::fence_listed`), without waiting for the next
//! poll. A frozen process (SIGSTOP, a stall of the process itself) answers a request its
//! kernel accepted while it was frozen as soon as it runs again (a frozen VM accepts nothing:
//! it is asked again every tick); its bots find their TeamSpeak connections timed out and reconnect
//! on `reconnect.ontimeout`'s first step (1 s), so the copies must be stopped within that
//! second, and the poller (every `health.interval`, with a poll deadline) cannot promise it.
//! A node that refuses connections (dead, restarting) is asked again every
//! [`tick`] of the health interval.
//! Does not own: what fencing does (`fencing`), liveness (`health`) or recording fences
//! (`view`, when a bot moves).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cluster::fencing::fence_listed;
use crate::cluster::{Cluster, Node, NodeId};
use crate::config::HealthConfig;
use crate::node::api::read_bot_list;
use crate::node::client::NodeClient;

/// How long the waiting request may wait: a node frozen for longer gets a new one.
const WAIT: Duration = Duration::from_secs(30);

/// How often nodes without a waiting request are looked at: a quarter of the poll interval,
/// between 20 ms and 500 ms (the shipped 2 s interval gives 500 ms, half of the bots' first
/// reconnect delay).
pub fn tick(health: &HealthConfig) -> Duration {
    (health.interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// The service.
pub struct ReturnWatch {
    cluster: Arc<Cluster>,
    client: Arc<NodeClient>,
    cfg: HealthConfig,
}

impl ReturnWatch {
    /// A watch with its own client (its connections stay on the background runtime).
    pub fn new(cluster: Arc<Cluster>, cfg: HealthConfig, connect_timeout: Duration) -> Self {
        ReturnWatch {
            cluster,
            client: Arc::new(NodeClient::new(connect_timeout)),
            cfg,
        }
    }
}

/// Nodes with a request waiting, and when a node that answered with an error may be asked
/// again (one that answers but refuses is asked once per poll interval, not every tick).
#[derive(Default)]
struct Watching {
    waiting: HashSet<NodeId>,
    next_try: HashMap<NodeId, Instant>,
}

/// Waits for `node` to answer, then fences it. Returns when to ask again if it answered
/// with an error (None: at the next tick).
async fn watch(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    cfg: &HealthConfig,
) -> Option<Instant> {
    let listed = match read_bot_list(client, &node.endpoint(), WAIT).await {
        Ok(l) => l,
        Err(e) => return (!e.unreachable()).then(|| Instant::now() + cfg.interval),
    };
    match fence_listed(cluster, client, node, cfg.timeout, listed).await {
        Ok(true) => {
            log::warn!(
                "node {} answers again: the copies of its moved bots are stopped",
                node.name
            );
            None
        }
        Ok(false) => None,
        Err(e) => {
            // The poller reports it too (it cannot count the node as up before fencing); a
            // node that answered but could not be fenced is not asked again every tick.
            log::debug!("{e}");
            Some(Instant::now() + cfg.interval)
        }
    }
}

#[async_trait]
impl BackgroundService for ReturnWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let state: Arc<Mutex<Watching>> = Arc::default();
        let mut tick = tokio::time::interval(tick(&self.cfg));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    tasks.abort_all();
                    return;
                }
                _ = tick.tick() => {}
            }
            // Reap finished watches (their results are in `state`).
            while tasks.try_join_next().is_some() {}
            // With a shared store the leader watches (its fencing reaches the other routers
            // through the store); the others still fence at their polls.
            if !self.cluster.leads() {
                continue;
            }
            let now = Instant::now();
            let nodes = self.cluster.nodes();
            for node in nodes.iter().cloned() {
                // A node that is up is fenced by its polls; a planned move (whose source is
                // up) stops its old copy itself and is left to do so.
                if node.is_healthy()
                    || node.removed.load(std::sync::atomic::Ordering::Acquire)
                    || self.cluster.fences_on(node.id).is_empty()
                {
                    continue;
                }
                {
                    let mut s = state.lock();
                    if s.waiting.contains(&node.id)
                        || s.next_try.get(&node.id).is_some_and(|t| now < *t)
                    {
                        continue;
                    }
                    s.next_try.remove(&node.id);
                    s.waiting.insert(node.id);
                }
                let (cluster, client, cfg, state) = (
                    self.cluster.clone(),
                    self.client.clone(),
                    self.cfg.clone(),
                    state.clone(),
                );
                tasks.spawn(async move {
                    // Whatever ends the watch (a panic too) lets the node be watched again.
                    struct Done(Arc<Mutex<Watching>>, NodeId);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0.lock().waiting.remove(&self.1);
                        }
                    }
                    let done = Done(state.clone(), node.id);
                    let again = watch(&cluster, &client, &node, &cfg).await;
                    if let Some(t) = again {
                        state.lock().next_try.insert(node.id, t);
                    }
                    drop(done);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_a_quarter_of_the_interval_within_bounds() {
        let with = |ms: u64| HealthConfig {
            interval: Duration::from_millis(ms),
            timeout: Duration::from_secs(1),
            failures_to_down: 2,
            successes_to_up: 1,
        };
        assert_eq!(tick(&with(2000)), Duration::from_millis(500));
        assert_eq!(tick(&with(200)), Duration::from_millis(50));
        assert_eq!(tick(&with(40)), Duration::from_millis(20));
        assert_eq!(tick(&with(60_000)), Duration::from_millis(500));
    }
}
