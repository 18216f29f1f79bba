//! Where new bots go: the least-used (or least-penalised) node, with slots reserved at
//! decision time.
//!
//! Owns: [`LoadOrder`], a Pingora `BackendSelection` that orders nodes by their [`Scoring`]
//! score, lowest first (ties: the larger node first, then the lower index), the node discovery
//! feeding Pingora's `LoadBalancer`, and [`Placer`], which picks and reserves a slot
//! atomically so that concurrent creates never exceed a node's capacity and spread evenly.
//! A [`Reservation`] holds one slot of a node's `load` until the create ends.
//! Does not own: the counts themselves (`load`, kept by the view and fed by `health`), the
//! penalty formula (`penalty`), the agents' readings (`agents`) or sending the create
//! (`proxy::exec`).
//!
//! Strategies are named in the config (`placement.strategy`): `least_used` (the default, the
//! seed's rule) scores `(running + reserved) / capacity`; `penalty` adds the CPU and memory
//! pressure a node's agent reported, while that reading is fresh. Whatever the score, a node
//! takes a bot only if its reservation fits its capacity.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::{Backend, LoadBalancer};

use crate::cluster::penalty::{penalty, used_fraction};
use crate::cluster::stats::{PlacementStats, Refusal};
use crate::cluster::{Cluster, Node, NodeId};
use crate::config::{PlacementConfig, PlacementStrategy};
use crate::protocol::api_json::ApiError;

/// The cluster node a Pingora backend stands for (kept in `Backend::ext`).
#[derive(Clone, Debug)]
pub struct NodeRef(pub Arc<Node>);

/// The node behind a backend.
pub fn node_of(b: &Backend) -> Option<&Arc<Node>> {
    b.ext.get::<NodeRef>().map(|r| &r.0)
}

/// Discovery over the cluster's node list (nodes added at run time appear on the next
/// update).
pub struct ClusterDiscovery(pub Arc<Cluster>);

#[async_trait]
impl ServiceDiscovery for ClusterDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        for node in self.0.nodes().iter() {
            // Pingora tells backends apart by address and weight only (`ext` is ignored), so
            // the weight carries the node id: two nodes at one address, or a node removed and
            // another added at its address, stay distinct backends. Placement ignores weights.
            let mut b = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(node.endpoint().addr),
                weight: node.id.0 as usize + 1,
                ext: http::Extensions::new(),
            };
            b.ext.insert(NodeRef(node.clone()));
            set.insert(b);
        }
        Ok((set, HashMap::new()))
    }
}

/// Load score of a node: used fraction of its capacity, counting reserved slots.
pub fn score(node: &Node) -> f64 {
    used_fraction(node.load.used(), node.capacity.load(Ordering::Acquire))
}

/// A node's penalty at `now`: its used fraction plus its agent's figures if they were
/// received less than `stale_after` ago (otherwise exactly [`score`]).
pub fn penalty_score(node: &Node, now: Instant, stale_after: Duration) -> f64 {
    let reading = node.fresh_agent_reading(now, stale_after);
    penalty(
        node.load.used(),
        node.capacity.load(Ordering::Acquire),
        reading.map(|r| r.pressure()).as_ref(),
    )
}

/// How the selection scores nodes (its Pingora `Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scoring {
    /// The configured strategy.
    pub strategy: PlacementStrategy,
    /// How old an agent's reading may be before the penalty ignores it.
    pub stale_after: Duration,
}

impl Scoring {
    /// `least_used`.
    pub const LEAST_USED: Scoring = Scoring {
        strategy: PlacementStrategy::LeastUsed,
        stale_after: Duration::ZERO,
    };

    /// The scoring the config asks for.
    pub fn of(c: &PlacementConfig) -> Scoring {
        Scoring {
            strategy: c.strategy,
            stale_after: c.agent_stale_after(),
        }
    }

    /// A node's score at `now` (lower is placed first).
    pub fn score(&self, node: &Node, now: Instant) -> f64 {
        match self.strategy {
            PlacementStrategy::LeastUsed => score(node),
            PlacementStrategy::Penalty => penalty_score(node, now, self.stale_after),
        }
    }
}

/// Pingora selection: backends ordered from the lowest score to the highest.
pub struct LoadOrder {
    backends: Vec<Backend>,
    scoring: Scoring,
}

/// Yields backends from the lowest score to the highest. The order is found lazily (one scan
/// per step) because placement almost always takes the first: a full sort of 100 nodes per
/// create would cost more than everything else in the decision.
pub struct OrderIter {
    sel: Arc<LoadOrder>,
    /// (score, capacity, node index) per backend, read once when the iterator is made.
    keys: Vec<(f64, u32, NodeId)>,
    taken: Vec<bool>,
}

impl BackendIter for OrderIter {
    fn next(&mut self) -> Option<&Backend> {
        let mut best: Option<usize> = None;
        for (i, k) in self.keys.iter().enumerate() {
            if self.taken[i] {
                continue;
            }
            let better = match best {
                None => true,
                // Least used first; on a tie the larger node, then the lower index.
                Some(b) => {
                    let o = &self.keys[b];
                    k.0.total_cmp(&o.0)
                        .then(o.1.cmp(&k.1))
                        .then(k.2.cmp(&o.2))
                        .is_lt()
                }
            };
            if better {
                best = Some(i);
            }
        }
        let i = best?;
        self.taken[i] = true;
        self.sel.backends.get(i)
    }
}

impl BackendSelection for LoadOrder {
    type Iter = OrderIter;
    type Config = Scoring;

    fn build_with_config(backends: &BTreeSet<Backend>, scoring: &Scoring) -> Self {
        LoadOrder {
            backends: backends.iter().cloned().collect(),
            scoring: *scoring,
        }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &Scoring::LEAST_USED)
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> OrderIter {
        // One clock reading for all nodes, so each is judged stale or fresh at the same time.
        let now = Instant::now();
        let keys: Vec<(f64, u32, NodeId)> = self
            .backends
            .iter()
            .map(|b| match node_of(b) {
                Some(n) => (
                    self.scoring.score(n, now),
                    n.capacity.load(Ordering::Acquire),
                    n.id,
                ),
                None => (f64::MAX, 0, NodeId(u32::MAX)),
            })
            .collect();
        OrderIter {
            taken: vec![false; keys.len()],
            keys,
            sel: self.clone(),
        }
    }
}

/// A slot promised to a create in flight; released on drop.
#[derive(Debug)]
pub struct Reservation {
    node: Arc<Node>,
}

impl Reservation {
    /// The node the slot is on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.node.load.release();
    }
}

/// Chooses nodes for new bots.
pub struct Placer {
    lb: Arc<LoadBalancer<LoadOrder>>,
    /// Choosing and reserving happen under one lock so two creates never take the same
    /// "least used" slot; the lock is held for microseconds and never across I/O.
    lock: Mutex<()>,
    /// Refused placements (each node counts its own placements).
    pub stats: PlacementStats,
}

impl Placer {
    /// A placer over a load balancer built with [`ClusterDiscovery`].
    pub fn new(lb: Arc<LoadBalancer<LoadOrder>>) -> Self {
        Placer {
            lb,
            lock: Mutex::new(()),
            stats: PlacementStats::default(),
        }
    }

    /// The load balancer (its background service polls the nodes).
    pub fn lb(&self) -> &Arc<LoadBalancer<LoadOrder>> {
        &self.lb
    }

    /// Reserves a slot on the healthy, non-draining node with room and the lowest score,
    /// skipping `exclude`. Fails with TS3AudioBot's error shape (503) when no node can take a bot.
    pub fn reserve(&self, exclude: &[NodeId]) -> Result<Reservation, ApiError> {
        let _guard = self.lock.lock();
        // The chosen node's count can still rise between the choice and the reservation (a
        // poll counting a bot started behind the router's back), so the reservation checks
        // the room again atomically and the choice is repeated if it lost.
        loop {
            // Liveness is the node's own (see `health`), not Pingora's readiness flag.
            let chosen = self.lb.select_with(b"", usize::MAX, |b, _ready| {
                node_of(b).is_some_and(|n| {
                    n.takes_new_bots()
                        && !exclude.contains(&n.id)
                        && n.load.used() < n.capacity.load(Ordering::Acquire)
                })
            });
            let node = chosen.as_ref().and_then(node_of).cloned().ok_or_else(|| {
                self.stats.record_refusal(Refusal::NoNode);
                ApiError::unavailable(
                    "The cluster is full: no healthy, non-draining node has room for another bot \
                     (every node runs as many bots as its capacity allows, or is down). \
                     Add a node or raise a node's capacity.",
                )
            })?;
            if node.load.try_reserve(node.capacity.load(Ordering::Acquire)) {
                node.stats.placements.inc();
                return Ok(Reservation { node });
            }
        }
    }

    /// Reserves a slot on a given node (a template must run where it lives); fails when the
    /// node is down or full, so a node's capacity holds for template bots too.
    pub fn reserve_on(&self, node: Arc<Node>) -> Result<Reservation, ApiError> {
        if !node.is_healthy() || node.removed.load(Ordering::Acquire) {
            self.stats.record_refusal(Refusal::Full);
            return Err(ApiError::unavailable(format!(
                "node {} is down; it holds this template, so the bot can only start there",
                node.name
            )));
        }
        let capacity = node.capacity.load(Ordering::Acquire);
        if !node.load.try_reserve(capacity) {
            self.stats.record_refusal(Refusal::Full);
            return Err(ApiError::unavailable(format!(
                "node {} holds this template and already runs as many bots as its capacity \
                 ({capacity}) allows; stop a bot there or raise its capacity",
                node.name
            )));
        }
        node.stats.placements.inc();
        Ok(Reservation { node })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::store::{embedded::EmbeddedStore, Snapshot, StoreHandle};
    use pingora_load_balancing::Backends;

    fn setup(caps: &[u32]) -> (Arc<Cluster>, Placer, tempfile::TempDir) {
        setup_with(caps, Scoring::LEAST_USED)
    }

    fn setup_with(caps: &[u32], scoring: Scoring) -> (Arc<Cluster>, Placer, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        let nodes: Vec<NodeConfig> = caps
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let url = format!("http://127.0.0.1:{}", 1000 + i);
                NodeConfig::parse(
                    &format!("n{i}"),
                    &url,
                    None,
                    *c,
                    crate::config::NodeState::Ready,
                )
                .expect("node")
            })
            .collect();
        let cluster = Arc::new(Cluster::new(&nodes, Snapshot::default(), store));
        for n in cluster.nodes().iter() {
            n.observe_poll(true, 1, 1);
        }
        let lb = LoadBalancer::<LoadOrder>::from_backends_with_config(
            Backends::new(Box::new(ClusterDiscovery(cluster.clone()))),
            Some(scoring),
        );
        futures::executor::block_on(lb.update()).expect("update");
        (cluster, Placer::new(Arc::new(lb)), dir)
    }

    /// Simulates a create that succeeds: the node's running count goes up, the slot is freed.
    fn create(p: &Placer) -> Option<NodeId> {
        let r = p.reserve(&[]).ok()?;
        let n = r.node().clone();
        n.load.set_running(n.load.running() + 1);
        Some(n.id)
    }

    const PENALTY: Scoring = Scoring {
        strategy: PlacementStrategy::Penalty,
        stale_after: Duration::from_secs(3),
    };

    /// Gives node `i` an agent reading received `age` ago.
    fn report(c: &Cluster, i: u32, cpu: f64, mem_available: f64, age: Duration) {
        use crate::cluster::agents::AgentReading;
        use crate::node::agent::AgentSummary;
        let node = c.node(NodeId(i)).expect("node");
        node.record_agent(Ok(AgentReading {
            summary: AgentSummary {
                cpu_busy_ratio: Some(cpu),
                memory_available_ratio: Some(mem_available),
                ..AgentSummary::default()
            },
            received: Instant::now().checked_sub(age).expect("age"),
        }));
    }

    /// Without agent figures (none, or stale ones) the penalty strategy places exactly like
    /// `least_used`, create by create.
    #[test]
    fn without_fresh_figures_penalty_places_like_least_used() {
        let caps = [3, 5, 7, 5];
        let run = |scoring: Scoring, stale: bool| {
            let (c, p, _d) = setup_with(&caps, scoring);
            if stale {
                report(&c, 0, 1.0, 0.0, Duration::from_secs(4));
                report(&c, 2, 0.99, 0.01, Duration::from_secs(60));
            }
            let order: Vec<NodeId> = std::iter::from_fn(|| create(&p)).collect();
            assert_eq!(order.len(), 20, "every slot is used");
            order
        };
        let least_used = run(Scoring::LEAST_USED, false);
        assert_eq!(run(PENALTY, false), least_used);
        assert_eq!(run(PENALTY, true), least_used);
    }

    /// A node whose agent reports pressure gets fewer new bots, and no node ever takes more
    /// than its capacity, whatever the scores.
    #[test]
    fn a_loaded_node_gets_fewer_bots_and_capacity_holds() {
        let (c, p, _d) = setup_with(&[4, 4], PENALTY);
        report(&c, 0, 0.9, 0.2, Duration::ZERO);
        report(&c, 1, 0.1, 0.9, Duration::ZERO);
        let loaded = c.node(NodeId(0)).expect("node");
        let idle = c.node(NodeId(1)).expect("node");
        let hot = PENALTY.score(&loaded, Instant::now());
        assert!(hot > 0.9, "{hot}");
        let first: Vec<NodeId> = (0..4).filter_map(|_| create(&p)).collect();
        assert_eq!(first, vec![NodeId(1); 4], "the idle node first");
        let rest: Vec<NodeId> = std::iter::from_fn(|| create(&p)).collect();
        assert_eq!(
            rest,
            vec![NodeId(0); 4],
            "then the loaded one, up to its capacity"
        );
        assert_eq!((loaded.load.used(), idle.load.used()), (4, 4));
        assert!(p.reserve(&[]).is_err(), "full");
        // The loaded node's figures turn stale: it scores its count again.
        report(&c, 0, 0.9, 0.2, PENALTY.stale_after);
        assert_eq!(PENALTY.score(&loaded, Instant::now()), score(&loaded));
        // Under least_used the figures are shown but never used.
        report(&c, 0, 0.9, 0.2, Duration::ZERO);
        assert_eq!(
            Scoring::LEAST_USED.score(&loaded, Instant::now()),
            score(&loaded)
        );
    }

    #[test]
    fn spreads_in_proportion_to_capacity() {
        let (c, p, _d) = setup(&[100, 200, 300]);
        for _ in 0..300 {
            create(&p).expect("room");
        }
        let counts: Vec<u32> = c.nodes().iter().map(|n| n.load.running()).collect();
        assert!(
            counts[0].abs_diff(50) <= 1
                && counts[1].abs_diff(100) <= 1
                && counts[2].abs_diff(150) <= 1,
            "{counts:?}"
        );
    }

    #[test]
    fn reservations_count_and_never_overshoot() {
        let (c, p, _d) = setup(&[2, 3]);
        let held: Vec<Reservation> = (0..5).map(|_| p.reserve(&[]).expect("room")).collect();
        assert!(p.reserve(&[]).is_err(), "cluster is full");
        let per: Vec<u32> = c.nodes().iter().map(|n| n.load.reserved()).collect();
        assert_eq!(per, vec![2, 3]);
        drop(held);
        assert_eq!(c.nodes()[0].load.reserved(), 0);
    }

    #[test]
    fn a_templates_node_keeps_its_capacity() {
        let (c, p, _d) = setup(&[1, 5]);
        let n0 = c.nodes()[0].clone();
        let held = p.reserve_on(n0.clone()).expect("room");
        let e = p.reserve_on(n0.clone()).expect_err("full");
        assert_eq!(e.status, 503);
        assert!(e.message.contains("capacity (1)"), "{}", e.message);
        drop(held);
        assert!(p.reserve_on(n0).is_ok());
    }

    #[test]
    fn skips_unhealthy_draining_and_excluded() {
        let (c, p, _d) = setup(&[10, 10, 10]);
        c.nodes()[0].healthy.store(false, Ordering::Release);
        c.nodes()[1].set_state(crate::config::NodeState::Drain);
        let r = p.reserve(&[]).expect("room");
        assert_eq!(r.node().id, NodeId(2));
        assert!(p.reserve(&[NodeId(2)]).is_err());
    }

    #[test]
    fn concurrent_reservations_respect_capacity() {
        let (c, p, _d) = setup(&[20, 20, 24]);
        let p = Arc::new(p);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    (0..16)
                        .filter_map(|_| p.reserve(&[]).ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let held: Vec<Reservation> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("join"))
            .collect();
        assert_eq!(held.len(), 64);
        let per: Vec<u32> = c.nodes().iter().map(|n| n.load.reserved()).collect();
        assert_eq!(per, vec![20, 20, 24]);
    }

    /// The create's answer and the poller may see a new bot in either order; the node's used
    /// count never shows the slot twice, so the last free slot of a full cluster stays
    /// available to exactly one create.
    #[test]
    fn a_created_bot_is_counted_once_whoever_sees_it_first() {
        use crate::cluster::{CreateInfo, Reported};
        use crate::protocol::api_json::BotInfo;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for poller_first in [false, true] {
            let (c, p, _d) = setup(&[2]);
            let first = p.reserve(&[]).expect("room");
            let r = p.reserve(&[]).expect("room");
            assert_eq!(c.nodes()[0].load.used(), 2);
            let listed = BotInfo {
                id: Some(0),
                name: None,
                server: Some("a.example".into()),
                status: 2,
            };
            let sent = c.generation();
            if poller_first {
                c.reconcile(NodeId(0), std::slice::from_ref(&listed), c.generation());
                assert_eq!(c.nodes()[0].load.used(), 2, "poller first");
            }
            let reported = Reported {
                lid: 0,
                name: None,
                server: Some("a.example"),
                status: 2,
            };
            rt.block_on(c.register_created(
                NodeId(0),
                reported,
                CreateInfo::default(),
                (!poller_first).then_some(sent),
                std::time::Duration::from_secs(5),
            ))
            .expect("registered");
            assert_eq!(c.nodes()[0].load.used(), 2, "answer");
            if !poller_first {
                c.reconcile(NodeId(0), std::slice::from_ref(&listed), c.generation());
                assert_eq!(c.nodes()[0].load.used(), 2, "poller after");
            }
            assert!(p.reserve(&[]).is_err(), "full while both are in flight");
            drop(r);
            assert_eq!(c.nodes()[0].load.used(), 2);
            drop(first);
            assert_eq!(c.nodes()[0].load.used(), 1);
            assert!(p.reserve(&[]).is_ok());
        }
    }
}
