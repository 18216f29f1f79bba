//! Planned moves (`admin::operations`) driven in process against real fake nodes: evacuating a
//! live node, moving a playing bot with its playback, rebalancing, and an operation cut off by
//! a router stop and resumed from its stored record. A sampler watches the fake nodes all the
//! while: no TeamSpeak identity may ever run on two nodes, no node may run over capacity.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_load_balancing::{Backends, LoadBalancer};
use serde_json::Value;
use ts3ab_fake_node::{FakeNode, FakeNodeConfig, Fault};
use ts3ab_lb::admin::operations::{OperationView, Operations, State};
use ts3ab_lb::cluster::health::poll_all;
use ts3ab_lb::cluster::placement::{ClusterDiscovery, LoadOrder, Placer};
use ts3ab_lb::cluster::{Cluster, NodeId};
use ts3ab_lb::config::{FailoverConfig, HealthConfig, NodeConfig, NodeState};
use ts3ab_lb::node::api::fetch_identity;
use ts3ab_lb::node::client::NodeClient;
use ts3ab_lb::store::embedded::EmbeddedStore;
use ts3ab_lb::store::{OperationRecord, StoreHandle};

const TIMEOUT: Duration = Duration::from_secs(5);

fn health() -> HealthConfig {
    HealthConfig {
        interval: Duration::from_millis(500),
        timeout: TIMEOUT,
        failures_to_down: 1,
        successes_to_up: 1,
    }
}

fn failover_cfg(concurrency: usize) -> FailoverConfig {
    FailoverConfig {
        enabled: true,
        after: Duration::from_secs(30),
        concurrency,
        retry: Duration::from_secs(1),
    }
}

fn fake_nodes(n: usize) -> Vec<FakeNode> {
    (0..n)
        .map(|i| {
            FakeNode::start(FakeNodeConfig {
                name: format!("n{i}"),
                ..FakeNodeConfig::default()
            })
            .expect("fake node")
        })
        .collect()
}

/// The router's parts over `nodes` (node `i` is `n<i>` with capacity `caps[i]`), with the
/// store in `dir`, after a first poll round.
struct Router {
    cluster: Arc<Cluster>,
    ops: Arc<Operations>,
    client: NodeClient,
}

async fn router(
    nodes: &[FakeNode],
    caps: &[u32],
    dir: &std::path::Path,
    concurrency: usize,
) -> Router {
    // A stopped router's store worker lets go of the file a moment later.
    let mut opened = EmbeddedStore::open(dir);
    for _ in 0..200 {
        if opened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        opened = EmbeddedStore::open(dir);
    }
    let store = StoreHandle::spawn(Box::new(opened.expect("store"))).expect("worker");
    let snap = store.load().await.expect("load");
    let stored: Vec<OperationRecord> = snap.operations.clone();
    let cfgs: Vec<NodeConfig> = nodes
        .iter()
        .zip(caps)
        .enumerate()
        .map(|(i, (n, c))| {
            NodeConfig::parse(&format!("n{i}"), &n.url(), None, *c, NodeState::Ready)
                .expect("node config")
        })
        .collect();
    let cluster = Arc::new(Cluster::new(&cfgs, snap, store));
    let lb = LoadBalancer::<LoadOrder>::from_backends(Backends::new(Box::new(ClusterDiscovery(
        cluster.clone(),
    ))));
    lb.update().await.expect("discovery");
    let placer = Arc::new(Placer::new(Arc::new(lb)));
    let client = NodeClient::new(TIMEOUT);
    poll_all(&cluster, &client, &health()).await;
    let ops = Operations::new(
        cluster.clone(),
        placer,
        failover_cfg(concurrency),
        TIMEOUT,
        TIMEOUT,
        stored,
    );
    Router {
        cluster,
        ops,
        client,
    }
}

impl Router {
    /// Adopts the bots started on the nodes behind the router's back and reads their
    /// identities (what the router's background sweep does).
    async fn adopt(&self) {
        poll_all(&self.cluster, &self.client, &health()).await;
        for node in self.cluster.nodes().iter() {
            for b in self.cluster.bots_on(node.id) {
                let id = fetch_identity(&self.client, &node.endpoint(), b.record.local_id, TIMEOUT)
                    .await
                    .expect("identity");
                self.cluster
                    .record_identity(b.gid, node.id, b.record.local_id, id);
            }
        }
    }

    async fn get(&self, node: usize, target: &str) -> (u16, Value) {
        let n = self.cluster.node(NodeId(node as u32)).expect("node");
        let r = self
            .client
            .get(&n.endpoint(), target.as_bytes(), TIMEOUT)
            .await
            .expect("request");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    async fn wait(&self, id: u64, within: Duration) -> OperationView {
        let end = Instant::now() + within;
        loop {
            let v = self.ops.get(id).expect("operation");
            if v.state != State::Running {
                return v;
            }
            assert!(Instant::now() < end, "operation still running: {v:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every bot the router knows: cluster id → (node index, identity key on the node).
    fn placed(&self, nodes: &[FakeNode]) -> BTreeMap<u32, (usize, String)> {
        let mut out = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for b in n.bots() {
                if let Some(gid) = self.cluster.gid_of(NodeId(i as u32), b.id) {
                    assert!(
                        out.insert(gid, (i, b.identity_key)).is_none(),
                        "bot {gid} runs twice"
                    );
                }
            }
        }
        out
    }
}

/// Watches the fake nodes (in memory, no HTTP) until dropped: identities seen on two nodes at
/// once, and the most bots each node ran.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<usize>, usize)>>,
}

impl Sampler {
    fn start(nodes: Arc<Vec<FakeNode>>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut twice = 0;
            let mut samples = 0;
            let mut max = vec![0; nodes.len()];
            // Nodes cannot be read at one instant: a bot that moves from a node read early to
            // one read late would show on both. So each sample reads the nodes forwards, then
            // backwards, and counts an identity that both passes see on the same two nodes
            // (a copy stopped before the other started cannot be seen so by both).
            let pass = |order: &mut dyn Iterator<Item = usize>, max: &mut Vec<usize>| {
                let mut on: HashMap<String, Vec<usize>> = HashMap::new();
                for i in order {
                    let bots = nodes[i].bots();
                    max[i] = max[i].max(bots.len());
                    for b in bots {
                        on.entry(b.identity_key).or_default().push(i);
                    }
                }
                on.retain(|_, v| v.len() > 1);
                for v in on.values_mut() {
                    v.sort_unstable();
                }
                on
            };
            while !s.load(Ordering::Acquire) {
                let forward = pass(&mut (0..nodes.len()), &mut max);
                let backward = pass(&mut (0..nodes.len()).rev(), &mut max);
                twice += forward
                    .iter()
                    .filter(|(k, v)| backward.get(*k) == Some(v))
                    .count();
                samples += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            (twice, max, samples)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// (identities seen twice, per-node maximum, samples taken).
    fn finish(mut self) -> (usize, Vec<usize>, usize) {
        self.stop.store(true, Ordering::Release);
        self.thread.take().expect("thread").join().expect("sampler")
    }
}

/// Starts `temporary` bots and `templates` template bots on a node, behind the router.
async fn start_bots(
    r: &Router,
    nodes: &[FakeNode],
    node: usize,
    temporary: usize,
    templates: usize,
) {
    for i in 0..temporary {
        nodes[node].connect_bot(&format!("ts{i}.example.com"));
    }
    for i in 0..templates {
        let name = format!("music{node}x{i}");
        nodes[node].add_template(&name, &[("connect.address", "music.example.com")]);
        let (status, _) = r
            .get(node, &format!("/api/bot/connect/template/{name}"))
            .await;
        assert_eq!(status, 200);
    }
}

/// A live node's 20 bots (18 temporary, 2 from templates) all move to the other nodes with
/// their cluster ids and identity keys; an identity never runs on two nodes at once, no
/// target runs over its capacity, and the moved templates are gone from the old node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evacuate_moves_every_bot_with_its_id_and_identity() {
    let nodes = Arc::new(fake_nodes(3));
    let dir = tempfile::tempdir().expect("dir");
    let caps = [50, 12, 12];
    let r = router(&nodes, &caps, dir.path(), 8).await;
    start_bots(&r, &nodes, 0, 18, 2).await;
    r.adopt().await;
    let before = r.placed(&nodes);
    assert_eq!(before.len(), 20);

    let sampler = Sampler::start(nodes.clone());
    let op = r.ops.evacuate("n0").await.expect("evacuate");
    assert_eq!(
        (op.state, op.total, op.left.len()),
        (State::Running, 20, 20)
    );
    let done = r.wait(op.id, Duration::from_secs(60)).await;
    let (twice, max, _) = sampler.finish();

    assert_eq!((done.state, done.done), (State::Done, 20), "{done:?}");
    assert!(done.failed.is_empty() && done.left.is_empty(), "{done:?}");
    assert_eq!(twice, 0, "an identity ran on two nodes at once");
    assert!(max[1] <= 12 && max[2] <= 12, "over capacity: {max:?}");
    assert!(nodes[0].bots().is_empty());
    assert!(
        nodes[0].templates().iter().all(|t| !t.starts_with("music")),
        "moved templates stay behind: {:?}",
        nodes[0].templates()
    );
    let after = r.placed(&nodes);
    assert_eq!(after.len(), 20);
    for (gid, (node, key)) in &before {
        let (new_node, new_key) = after.get(gid).expect("bot kept its cluster id");
        assert_ne!(*new_node, *node);
        assert_eq!(new_key, key, "bot {gid} kept its identity");
    }
    assert!(r.ops.list().first().is_some_and(|v| v.id == op.id));
}

/// A bot playing the second song of a three-song queue, 60 s in, with volume, repeat all and
/// random set, moves to another node and goes on there: the same song from about the same
/// position, the same volume, repeat and random, and the queue in its loop order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_carries_the_song_position_volume_repeat_random_and_queue() {
    let nodes = Arc::new(fake_nodes(2));
    let dir = tempfile::tempdir().expect("dir");
    let r = router(&nodes, &[10, 10], dir.path(), 4).await;
    start_bots(&r, &nodes, 0, 1, 0).await;
    r.adopt().await;
    let gid = *r.placed(&nodes).keys().next().expect("bot");
    let lid = nodes[0].bots()[0].id;
    let (x, a, b) = (
        "https://example.com/x.mp3",
        "https://example.com/a.mp3",
        "https://example.com/b.mp3",
    );
    let enc = |s: &str| s.replace(':', "%3A").replace('/', "%2F");
    let setup = format!(
        "/api/bot/use/{lid}/(/json/merge/(/play/{})/(/add/{})/(/add/{})/(/jump/1)/(/seek/60)/(/volume/37)/(/repeat/all)/(/random/on))",
        enc(x),
        enc(a),
        enc(b)
    );
    let (status, _) = r.get(0, &setup).await;
    assert_eq!(status, 200);
    let (_, song) = r.get(0, &format!("/api/bot/use/{lid}/(/song)")).await;
    assert_eq!(song["Link"], a, "set up: {song}");
    let seeked = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let op = r.ops.move_bot(gid, "n1").await.expect("move");
    assert_eq!(op.target.as_deref(), Some("n1"));
    let done = r.wait(op.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, State::Done, "{done:?}");
    assert!(nodes[0].bots().is_empty());
    let (node, new_lid) = r.cluster.locate(gid).expect("located");
    assert_eq!(node, NodeId(1));
    let (status, state) = r
        .get(
            1,
            &format!("/api/bot/use/{new_lid}/(/json/merge/(/song)/(/volume)/(/repeat)/(/random)/(/info/0/20))"),
        )
        .await;
    assert_eq!(status, 200);
    let expected = 60.0 + seeked.elapsed().as_secs_f64();
    let song = &state[0];
    assert_eq!(song["Link"], a, "{state}");
    let position = song["Position"].as_f64().expect("position");
    assert!(
        (position - expected).abs() <= 2.0,
        "position {position}, expected about {expected}"
    );
    assert_eq!(song["Paused"], false);
    assert_eq!(state[1].as_f64(), Some(37.0));
    assert_eq!(state[2], 2);
    assert_eq!(state[3], true);
    let queue: Vec<&str> = state[4]["Items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["Link"].as_str())
        .collect();
    assert_eq!(queue, vec![a, b, x], "the loop goes on in its order");
}

/// [30, 0, 0] on equal capacities ends at [10, 10, 10] (±1), every bot under its cluster id,
/// none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_spreads_thirty_bots_evenly() {
    let nodes = Arc::new(fake_nodes(3));
    let dir = tempfile::tempdir().expect("dir");
    let r = router(&nodes, &[40, 40, 40], dir.path(), 8).await;
    start_bots(&r, &nodes, 0, 30, 0).await;
    r.adopt().await;
    let before = r.placed(&nodes);
    let sampler = Sampler::start(nodes.clone());
    let op = r.ops.rebalance().await.expect("rebalance");
    assert!(op.target.is_none());
    assert!(
        r.ops.rebalance().await.is_err(),
        "a second rebalance waits for the first"
    );
    let done = r.wait(op.id, Duration::from_secs(60)).await;
    let (twice, _, _) = sampler.finish();
    assert_eq!(done.state, State::Done, "{done:?}");
    assert_eq!(twice, 0);
    let counts: Vec<usize> = nodes.iter().map(|n| n.bots().len()).collect();
    assert!(counts.iter().all(|c| c.abs_diff(10) <= 1), "{counts:?}");
    let after = r.placed(&nodes);
    let keys = |m: &BTreeMap<u32, (usize, String)>| {
        m.iter()
            .map(|(g, (_, k))| (*g, k.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&after), keys(&before));
}

/// An evacuation cut off mid-way by stopping the router (its runtime dropped at an await,
/// like a crash between any two steps) and resumed by a new router from the stored records:
/// every bot ends up on exactly one node, under its cluster id and identity, none left
/// behind, and no identity ever ran twice.
#[test]
fn an_interrupted_evacuation_resumes_without_losing_or_doubling_a_bot() {
    let nodes = Arc::new(fake_nodes(3));
    for n in nodes.iter() {
        // Slow nodes, so that the stop lands in the middle of moves.
        n.set_latency(Duration::from_millis(15));
    }
    let dir = tempfile::tempdir().expect("dir");
    let caps = [50, 20, 20];
    let sampler = Sampler::start(nodes.clone());
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };

    let first = rt();
    let (before, id) = first.block_on(async {
        let r = router(&nodes, &caps, dir.path(), 4).await;
        start_bots(&r, &nodes, 0, 18, 2).await;
        r.adopt().await;
        let before = r.placed(&nodes);
        let op = r.ops.evacuate("n0").await.expect("evacuate");
        // Stop once a few bots moved and others are half-way.
        let end = Instant::now() + Duration::from_secs(30);
        while r.ops.get(op.id).is_some_and(|v| v.done < 5) {
            assert!(Instant::now() < end);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The targets stop answering `bot connect`: the moves in flight freeze after their
        // old copy was stopped, before the new one runs.
        nodes[1].set_fault_on(Some(Fault::Hang), "bot/connect");
        nodes[2].set_fault_on(Some(Fault::Hang), "bot/connect");
        tokio::time::sleep(Duration::from_millis(400)).await;
        (before, op.id)
    });
    // The router stops: every task is dropped wherever it was.
    first.shutdown_timeout(Duration::from_secs(1));
    nodes[1].set_fault(None);
    nodes[2].set_fault(None);
    let running: usize = nodes.iter().map(|n| n.bots().len()).sum();
    assert!(
        running < 20,
        "the stop came after an old copy was stopped and before its new one started"
    );
    let cut = nodes[0].bots().len();
    assert!(
        cut > 0 && cut < 20,
        "the stop came mid-way ({cut} bots left)"
    );

    let second = rt();
    let resumed = AtomicUsize::new(0);
    second.block_on(async {
        let r = router(&nodes, &caps, dir.path(), 4).await;
        let stored = r.ops.get(id).expect("the operation was stored");
        assert_eq!(stored.state, State::Running);
        resumed.store(stored.left.len(), Ordering::Relaxed);
        r.ops.resume();
        let done = r.wait(id, Duration::from_secs(60)).await;
        assert_eq!(done.state, State::Done, "{done:?}");
        assert_eq!(done.done + done.failed.len(), 20);
        // Fences left by the stop are carried out by the next poll.
        poll_all(&r.cluster, &r.client, &health()).await;
        let after = r.placed(&nodes);
        assert_eq!(after.len(), 20, "{after:?}");
        for (gid, (_, key)) in &before {
            let (node, new_key) = after.get(gid).expect("bot kept its cluster id");
            assert_ne!(*node, 0, "bot {gid} left behind");
            assert_eq!(new_key, key);
        }
    });
    let (twice, _, _) = sampler.finish();
    assert_eq!(twice, 0, "an identity ran on two nodes at once");
    let total: usize = nodes.iter().map(|n| n.bots().len()).sum();
    assert_eq!(total, 20);
    let keys: HashSet<String> = nodes
        .iter()
        .flat_map(|n| n.bots().into_iter().map(|b| b.identity_key))
        .collect();
    assert_eq!(keys.len(), 20);
    assert!(resumed.load(Ordering::Relaxed) > 0);
}

/// The figure: evacuating 300 bots over fake nodes (printed), with the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evacuate_300_bots_timing() {
    let nodes = Arc::new(fake_nodes(4));
    let dir = tempfile::tempdir().expect("dir");
    let r = router(&nodes, &[300, 100, 100, 100], dir.path(), 16).await;
    start_bots(&r, &nodes, 0, 300, 0).await;
    r.adopt().await;
    let before = r.placed(&nodes);
    assert_eq!(before.len(), 300);
    let sampler = Sampler::start(nodes.clone());
    let started = Instant::now();
    let op = r.ops.evacuate("n0").await.expect("evacuate");
    let done = r.wait(op.id, Duration::from_secs(300)).await;
    let took = started.elapsed();
    let (twice, max, samples) = sampler.finish();
    println!(
        "evacuate 300 bots over fake nodes: {} ms ({:.1} bots/s, concurrency 16); identities seen on two nodes: {twice} in {samples} samples; most per target: {:?}",
        took.as_millis(),
        300.0 / took.as_secs_f64(),
        &max[1..]
    );
    assert_eq!(done.done, 300, "{:?}", done.failed);
    assert_eq!(twice, 0);
    assert!(max[1..].iter().all(|m| *m <= 100), "{max:?}");
    let after = r.placed(&nodes);
    for (gid, (_, key)) in &before {
        assert_eq!(&after.get(gid).expect("kept").1, key);
    }
}
