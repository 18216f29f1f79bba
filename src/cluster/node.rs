//! The node model: one TS3AudioBot node as the router sees it, under a stable id.
//!
//! Owns: [`NodeId`] (handed out once per process when a node joins the view and never reused,
//! so a stale reference to a removed node can never reach another node), [`Node`] (the
//! node's endpoint, capacity, state and liveness, all changeable at run time without
//! replacing the node, so its load counters survive an edit) and [`NodeList`], the
//! copy-on-write list readers take without locking. A node also holds its agent's endpoint and
//! the agent's latest reading, so placement reads them from memory.
//! Does not own: the bots on a node (`view`), how liveness is decided (`health`), how
//! load is counted (`load`) or when agents are read (`agents`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;

use crate::cluster::agents::AgentReading;
use crate::cluster::load::NodeLoad;
use crate::cluster::stats::NodeStats;
use crate::config::{AgentConfig, NodeConfig, NodeState};
use crate::node::agent::AgentEndpoint;
use crate::node::endpoint::Endpoint;

/// A node's stable id within this process. Records name nodes by their (unique) name;
/// the id is what in-memory tables key on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// Where a bot is while the router rebuilds it after its node restarted: no node, so a
    /// request for it gets a fast 503 instead of reaching whatever bot now has its old slot.
    pub const NOWHERE: NodeId = NodeId(u32::MAX);
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a node's definition comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeSource {
    /// The YAML config file.
    Config,
    /// Added at run time (stored).
    Admin,
}

/// Consecutive poll results, for flipping liveness after a threshold.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    successes: usize,
    failures: usize,
}

/// One TS3AudioBot node and its live state.
#[derive(Debug)]
pub struct Node {
    /// Stable id.
    pub id: NodeId,
    /// Unique name.
    pub name: Arc<str>,
    /// Where it is and the router's credentials for it (replaced whole on an edit).
    endpoint: ArcSwap<Endpoint>,
    /// Where its definition comes from.
    pub source: NodeSource,
    /// Bot capacity.
    pub capacity: AtomicU32,
    /// Liveness as decided by the poller. A node starts down and is up only after a
    /// successful poll (also after its endpoint changed).
    pub healthy: AtomicBool,
    streak: Mutex<Streak>,
    /// Ready, drain or maint (a `NodeState` as u8).
    state: AtomicU8,
    /// Bots the router knows to run here and slots promised to creates in flight.
    pub load: NodeLoad,
    /// Failover is moving this node's bots away: it is not polled (and so not used) until the
    /// move is over and the copies it may still run are stopped.
    pub evacuating: AtomicBool,
    /// The last poll could not reach the node at all (refused, reset, timed out), as opposed
    /// to a node that answers but refuses or fails: only an unreachable node is evacuated.
    pub unreachable: AtomicBool,
    /// Held while the copies of moved bots on this node are stopped (`fencing::fence`): the
    /// poller and the return watch may both meet the node as it comes back, and one of them
    /// is enough.
    pub fencing: tokio::sync::Mutex<()>,
    /// Taken out of the view: holders of an old `Arc<Node>` must not place bots on it.
    pub removed: AtomicBool,
    /// The node process's `starttime` as last read from `system/info` (None: not read yet).
    starttime: Mutex<Option<String>>,
    /// The last poll's outcome: its duration and, if it failed, why (for operators).
    last_poll: Mutex<PollOutcome>,
    /// Placements, polls and failed requests, for metrics.
    pub stats: NodeStats,
    /// The node's agent, if it has one (replaced whole on an edit).
    agent: ArcSwapOption<AgentEndpoint>,
    /// The agent as configured (URL, resolved target, token), kept so that an edit of
    /// something else carries it over as it is, without resolving its host again.
    agent_config: ArcSwapOption<AgentConfig>,
    /// The agent's latest good reading (kept when a later read fails: its age tells).
    agent_reading: ArcSwapOption<AgentReading>,
    /// Why the latest read of the agent failed; None after a success.
    agent_error: Mutex<Option<String>>,
}

/// What the last poll of a node found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// How long it took, in milliseconds (None: never polled).
    pub latency_ms: Option<u64>,
    /// Why it failed; None after a success.
    pub error: Option<String>,
}

impl Node {
    /// A node from its configuration; it is down until its first successful poll.
    pub fn new(id: NodeId, c: &NodeConfig, source: NodeSource) -> Node {
        Node {
            id,
            name: Arc::from(c.name.as_str()),
            endpoint: ArcSwap::from_pointee(c.endpoint()),
            source,
            capacity: AtomicU32::new(c.capacity),
            healthy: AtomicBool::new(false),
            streak: Mutex::new(Streak::default()),
            state: AtomicU8::new(c.state as u8),
            load: NodeLoad::default(),
            evacuating: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            fencing: tokio::sync::Mutex::new(()),
            removed: AtomicBool::new(false),
            starttime: Mutex::new(None),
            last_poll: Mutex::new(PollOutcome::default()),
            stats: NodeStats::default(),
            agent: ArcSwapOption::new(c.agent_endpoint().map(Arc::new)),
            agent_config: ArcSwapOption::new(c.agent.clone().map(Arc::new)),
            agent_reading: ArcSwapOption::empty(),
            agent_error: Mutex::new(None),
        }
    }

    /// The agent's endpoint, if the node has an agent.
    pub fn agent(&self) -> Option<Arc<AgentEndpoint>> {
        self.agent.load_full()
    }

    /// The agent as configured, if the node has one.
    pub fn agent_config(&self) -> Option<AgentConfig> {
        self.agent_config.load_full().map(|a| (*a).clone())
    }

    /// Replaces the agent (or removes it). A different agent's figures start from nothing:
    /// until it answers, placement goes by bot counts.
    pub fn set_agent(&self, config: Option<AgentConfig>) {
        let agent = config
            .as_ref()
            .map(|a| AgentEndpoint::new(&self.name, &a.url, a.target.clone(), a.token.as_deref()));
        self.agent_config.store(config.map(Arc::new));
        if self.agent.load().as_deref() == agent.as_ref() {
            return;
        }
        self.agent.store(agent.map(Arc::new));
        self.agent_reading.store(None);
        *self.agent_error.lock() = None;
    }

    /// The agent's latest good reading, however old.
    pub fn agent_reading(&self) -> Option<Arc<AgentReading>> {
        self.agent_reading.load_full()
    }

    /// The agent's latest reading if it was received less than `stale_after` before `now`
    /// (by the router's clock: the agent's own may be off).
    pub fn fresh_agent_reading(
        &self,
        now: Instant,
        stale_after: Duration,
    ) -> Option<Arc<AgentReading>> {
        self.agent_reading
            .load_full()
            .filter(|r| now.saturating_duration_since(r.received) < stale_after)
    }

    /// Why the latest read of the agent failed (None after a success or before any).
    pub fn agent_error(&self) -> Option<String> {
        self.agent_error.lock().clone()
    }

    /// Records one read of the agent: a reading, or why there is none. Returns the error
    /// as it was before when the outcome changed (`Some(None)`: it was fine), so the caller
    /// can log once per change rather than once per read.
    pub fn record_agent(&self, result: Result<AgentReading, String>) -> Option<Option<String>> {
        let error = match result {
            Ok(reading) => {
                self.agent_reading.store(Some(Arc::new(reading)));
                None
            }
            Err(e) => Some(e),
        };
        let mut last = self.agent_error.lock();
        (*last != error).then(|| std::mem::replace(&mut *last, error))
    }

    /// What the last poll found.
    pub fn last_poll(&self) -> PollOutcome {
        self.last_poll.lock().clone()
    }

    /// Records a poll's outcome.
    pub fn set_last_poll(&self, outcome: PollOutcome) {
        *self.last_poll.lock() = outcome;
    }

    /// The node process's start time as last read (changes when TS3AudioBot restarts).
    pub fn starttime(&self) -> Option<String> {
        self.starttime.lock().clone()
    }

    /// Whether the node's start time is known (no copy of it made).
    pub fn has_starttime(&self) -> bool {
        self.starttime.lock().is_some()
    }

    /// Records the start time just read; returns the previous one.
    pub fn set_starttime(&self, t: String) -> Option<String> {
        self.starttime.lock().replace(t)
    }

    /// The current endpoint.
    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.load_full()
    }

    /// The URL as configured.
    pub fn url(&self) -> String {
        self.endpoint.load().url.clone()
    }

    /// Replaces the endpoint (URL or credentials changed): the node is down until a poll
    /// of the new endpoint succeeds.
    pub fn set_endpoint(&self, e: Endpoint) {
        self.endpoint.store(Arc::new(e));
        *self.streak.lock() = Streak::default();
        self.healthy.store(false, Ordering::Release);
    }

    /// Ready, drain or maint.
    pub fn state(&self) -> NodeState {
        match self.state.load(Ordering::Acquire) {
            x if x == NodeState::Drain as u8 => NodeState::Drain,
            x if x == NodeState::Maint as u8 => NodeState::Maint,
            _ => NodeState::Ready,
        }
    }

    /// Sets the state (takes effect for the next placement and request).
    pub fn set_state(&self, s: NodeState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Whether the poller considers the node up.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Whether new bots may go here (up, not draining, still in the view).
    pub fn takes_new_bots(&self) -> bool {
        self.is_healthy()
            && self.state() == NodeState::Ready
            && !self.removed.load(Ordering::Acquire)
    }

    /// Counts one poll result; liveness flips after `to_up` consecutive successes or
    /// `to_down` consecutive failures. Returns the new liveness when it flipped.
    pub fn observe_poll(&self, ok: bool, to_up: usize, to_down: usize) -> Option<bool> {
        self.stats.record_check(ok);
        let mut s = self.streak.lock();
        if ok {
            s.successes += 1;
            s.failures = 0;
        } else {
            s.failures += 1;
            s.successes = 0;
        }
        let was = self.is_healthy();
        let now = if was {
            s.failures < to_down.max(1)
        } else {
            s.successes >= to_up.max(1)
        };
        (now != was).then(|| {
            self.healthy.store(now, Ordering::Release);
            now
        })
    }

    /// Marks the node down at once (fences pending after a restart).
    pub fn mark_down(&self) {
        *self.streak.lock() = Streak::default();
        self.healthy.store(false, Ordering::Release);
    }
}

/// The nodes of the view, ordered by id; replaced whole on every change (copy on write).
#[derive(Debug, Default, Clone)]
pub struct NodeList(Vec<Arc<Node>>);

impl NodeList {
    /// The node with id `id`.
    pub fn get(&self, id: NodeId) -> Option<&Arc<Node>> {
        self.0
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .and_then(|i| self.0.get(i))
    }

    /// The node named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Node>> {
        self.0.iter().find(|n| &*n.name == name)
    }

    /// A list with `node` added (ids only grow, so it goes last).
    pub fn with(&self, node: Arc<Node>) -> NodeList {
        let mut v = self.0.clone();
        v.push(node);
        v.sort_by_key(|n| n.id);
        NodeList(v)
    }

    /// A list without node `id`.
    pub fn without(&self, id: NodeId) -> NodeList {
        NodeList(self.0.iter().filter(|n| n.id != id).cloned().collect())
    }
}

impl std::ops::Deref for NodeList {
    type Target = [Arc<Node>];
    fn deref(&self) -> &[Arc<Node>] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a NodeList {
    type Item = &'a Arc<Node>;
    type IntoIter = std::slice::Iter<'a, Arc<Node>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str) -> NodeConfig {
        NodeConfig::parse(name, "http://127.0.0.1:1", None, 10, NodeState::Ready).expect("node")
    }

    #[test]
    fn a_node_is_down_until_polled_and_after_an_edit() {
        let n = Node::new(NodeId(0), &cfg("a"), NodeSource::Config);
        assert!(!n.is_healthy(), "a new node is down before its first poll");
        assert_eq!(n.observe_poll(true, 1, 2), Some(true));
        assert!(n.takes_new_bots());
        assert_eq!(
            n.observe_poll(false, 1, 2),
            None,
            "one failure is not enough"
        );
        assert_eq!(n.observe_poll(true, 1, 2), None);
        assert_eq!(n.observe_poll(false, 1, 2), None);
        assert_eq!(n.observe_poll(false, 1, 2), Some(false));
        assert_eq!(n.observe_poll(true, 2, 2), None, "two successes needed");
        assert_eq!(n.observe_poll(true, 2, 2), Some(true));
        n.set_endpoint(cfg("a").endpoint());
        assert!(!n.is_healthy(), "an edited node is down until polled again");
    }

    #[test]
    fn the_list_finds_nodes_by_id_and_name() {
        let a = Arc::new(Node::new(NodeId(0), &cfg("a"), NodeSource::Config));
        let b = Arc::new(Node::new(NodeId(5), &cfg("b"), NodeSource::Admin));
        let l = NodeList::default().with(b.clone()).with(a.clone());
        assert_eq!(l.get(NodeId(5)).map(|n| &*n.name), Some("b"));
        assert_eq!(l.by_name("a").map(|n| n.id), Some(NodeId(0)));
        assert_eq!(l.iter().map(|n| n.id.0).collect::<Vec<_>>(), vec![0, 5]);
        let l = l.without(NodeId(0));
        assert!(l.get(NodeId(0)).is_none());
        assert_eq!(l.len(), 1);
    }
}
