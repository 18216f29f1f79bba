//! Where new bots go: the least-used node, with slots reserved at decision time.
//!
//! Owns: [`LeastUsed`], a Pingora `BackendSelection` that orders nodes by
//! `(running + reserved) / capacity` (ties: the larger node first, then the lower index), the
//! node discovery feeding Pingora's `LoadBalancer`, and [`Placer`], which picks and reserves a
//! slot atomically so that concurrent creates never exceed a node's capacity and spread evenly.
//! A [`Reservation`] gives its slot back when dropped; by then the created bot (if any) is in the
//! cluster tables and counted as running, so each slot is counted once.
//! Does not own: the counts themselves (`cluster`, fed by `health`) or sending the create
//! (`exec`).
//!
//! Strategies are named in the config (`placement.strategy`); `least_used` is the seed's rule.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::{Backend, LoadBalancer};

use crate::api_json::ApiError;
use crate::cluster::{Cluster, Node, NodeId};

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
            let mut b = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(node.addr),
                weight: 1,
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
    let used = node.running.load(Ordering::Acquire) + node.reserved.load(Ordering::Acquire);
    f64::from(used) / f64::from(node.capacity.load(Ordering::Acquire).max(1))
}

/// Pingora selection: backends ordered from least to most used.
pub struct LeastUsed {
    backends: Vec<Backend>,
}

/// Yields backends from least to most used. The order is found lazily (one scan per step)
/// because placement almost always takes the first: a full sort of 100 nodes per create would
/// cost more than everything else in the decision.
pub struct OrderIter {
    sel: Arc<LeastUsed>,
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

impl BackendSelection for LeastUsed {
    type Iter = OrderIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        LeastUsed {
            backends: backends.iter().cloned().collect(),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> OrderIter {
        let keys: Vec<(f64, u32, NodeId)> = self
            .backends
            .iter()
            .map(|b| match node_of(b) {
                Some(n) => (score(n), n.capacity.load(Ordering::Acquire), n.id),
                None => (f64::MAX, 0, usize::MAX),
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
        self.node.reserved.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Chooses nodes for new bots.
pub struct Placer {
    lb: Arc<LoadBalancer<LeastUsed>>,
    /// Choosing and reserving happen under one lock so two creates never take the same
    /// "least used" slot; the lock is held for microseconds and never across I/O.
    lock: Mutex<()>,
}

impl Placer {
    /// A placer over a load balancer built with [`ClusterDiscovery`].
    pub fn new(lb: Arc<LoadBalancer<LeastUsed>>) -> Self {
        Placer {
            lb,
            lock: Mutex::new(()),
        }
    }

    /// The load balancer (its background service polls the nodes).
    pub fn lb(&self) -> &Arc<LoadBalancer<LeastUsed>> {
        &self.lb
    }

    /// Reserves a slot on the least-used healthy, non-draining node with room, skipping
    /// `exclude`. Fails with TS3AudioBot's error shape (503) when no node can take a bot.
    pub fn reserve(&self, exclude: &[NodeId]) -> Result<Reservation, ApiError> {
        let _guard = self.lock.lock();
        let chosen = self.lb.select_with(b"", usize::MAX, |b, ready| {
            node_of(b).is_some_and(|n| {
                ready
                    && n.is_healthy()
                    && !n.draining.load(Ordering::Acquire)
                    && !exclude.contains(&n.id)
                    && n.running.load(Ordering::Acquire) + n.reserved.load(Ordering::Acquire)
                        < n.capacity.load(Ordering::Acquire)
            })
        });
        let node = chosen.as_ref().and_then(node_of).cloned().ok_or_else(|| {
            ApiError::unavailable(
                "The cluster is full: no healthy, non-draining node has room for another bot \
                 (every node runs as many bots as its capacity allows, or is down). \
                 Add a node or raise a node's capacity.",
            )
        })?;
        node.reserved.fetch_add(1, Ordering::AcqRel);
        Ok(Reservation { node })
    }

    /// Reserves a slot on a given node regardless of its load (a template must run where it
    /// lives); fails only if the node is down.
    pub fn reserve_on(&self, node: Arc<Node>) -> Result<Reservation, ApiError> {
        if !node.is_healthy() {
            return Err(ApiError::unavailable(format!(
                "node {} is down; it holds this template, so the bot can only start there",
                node.name
            )));
        }
        let _guard = self.lock.lock();
        node.reserved.fetch_add(1, Ordering::AcqRel);
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
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        let nodes: Vec<NodeConfig> = caps
            .iter()
            .enumerate()
            .map(|(i, c)| NodeConfig {
                name: format!("n{i}"),
                url: format!("http://127.0.0.1:{}", 1000 + i),
                addr: format!("127.0.0.1:{}", 1000 + i).parse().expect("addr"),
                authority: String::new(),
                tls: false,
                host: "127.0.0.1".into(),
                auth: None,
                capacity: *c,
                draining: false,
            })
            .collect();
        let cluster = Arc::new(Cluster::new(&nodes, Snapshot::default(), store));
        let lb = LoadBalancer::<LeastUsed>::from_backends(Backends::new(Box::new(
            ClusterDiscovery(cluster.clone()),
        )));
        futures::executor::block_on(lb.update()).expect("update");
        (cluster, Placer::new(Arc::new(lb)), dir)
    }

    /// Simulates a create that succeeds: the node's running count goes up, the slot is freed.
    fn create(p: &Placer) -> Option<NodeId> {
        let r = p.reserve(&[]).ok()?;
        r.node().running.fetch_add(1, Ordering::AcqRel);
        Some(r.node().id)
    }

    #[test]
    fn spreads_in_proportion_to_capacity() {
        let (c, p, _d) = setup(&[100, 200, 300]);
        for _ in 0..300 {
            create(&p).expect("room");
        }
        let counts: Vec<u32> = c
            .nodes()
            .iter()
            .map(|n| n.running.load(Ordering::Acquire))
            .collect();
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
        let per: Vec<u32> = c
            .nodes()
            .iter()
            .map(|n| n.reserved.load(Ordering::Acquire))
            .collect();
        assert_eq!(per, vec![2, 3]);
        drop(held);
        assert_eq!(c.nodes()[0].reserved.load(Ordering::Acquire), 0);
    }

    #[test]
    fn skips_unhealthy_draining_and_excluded() {
        let (c, p, _d) = setup(&[10, 10, 10]);
        c.nodes()[0].healthy.store(false, Ordering::Release);
        c.nodes()[1].draining.store(true, Ordering::Release);
        let r = p.reserve(&[]).expect("room");
        assert_eq!(r.node().id, 2);
        assert!(p.reserve(&[2]).is_err());
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
        let per: Vec<u32> = c
            .nodes()
            .iter()
            .map(|n| n.reserved.load(Ordering::Acquire))
            .collect();
        assert_eq!(per, vec![20, 20, 24]);
    }
}
