//! Criterion micro-benchmarks: the parser/rewriter, the routing decision, the placement
//! decision and recording one request's metrics. Run: `cargo bench --bench micro` (the runner `benches/run.sh` runs it too and puts
//! the medians into its table).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pingora_load_balancing::{Backends, LoadBalancer};
use ts3ab_lb::cluster::placement::{ClusterDiscovery, LoadOrder, Placer};
use ts3ab_lb::cluster::Cluster;
use ts3ab_lb::config::{KeyConfig, NodeConfig, Role};
use ts3ab_lb::protocol::api_json::BotInfo;
use ts3ab_lb::protocol::basic_auth::basic_header;
use ts3ab_lb::protocol::command::{parse, splice, Parsed};
use ts3ab_lb::protocol::pattern::AllowPattern;
use ts3ab_lb::proxy::keys::Keys;
use ts3ab_lb::proxy::policy;
use ts3ab_lb::proxy::routing::{self, Plan};
use ts3ab_lb::proxy::stats::{Kind, ProxyStats};
use ts3ab_lb::store::embedded::EmbeddedStore;
use ts3ab_lb::store::{Snapshot, StoreHandle};

const UI_REFRESH: &[u8] =
    b"/bot/use/12/(/json/merge/(/bot/info)/(/info/%40-1/5)/(/song)/(/repeat)/(/random)/(/volume))";

fn parser(c: &mut Criterion) {
    c.bench_function("parse ui refresh merge", |b| {
        b.iter(|| parse(black_box(UI_REFRESH)))
    });
    c.bench_function("parse + rewrite id", |b| {
        b.iter(|| {
            if let Parsed::Command(cmd) = parse(black_box(UI_REFRESH)) {
                if let Some(v) = cmd.value(2) {
                    return splice(UI_REFRESH, &mut [(v.span.clone(), b"3".to_vec())]);
                }
            }
            Vec::new()
        })
    });
}

/// A cluster of `nodes` nodes with `bots` running bots each (local ids 0.., cluster ids
/// handed out by reconciliation, as the poller does), on a throwaway embedded store.
fn cluster(nodes: usize, capacity: u32, bots: u32) -> (Arc<Cluster>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StoreHandle::spawn(Box::new(
        EmbeddedStore::open(dir.path()).expect("open store"),
    ))
    .expect("store");
    let configs: Vec<NodeConfig> = (0..nodes)
        .map(|i| {
            let url = format!("http://127.0.0.1:{}", 20000 + i);
            let auth = Some(format!("router:token-{i}"));
            NodeConfig::parse(
                &format!("n{i}"),
                &url,
                auth,
                capacity,
                ts3ab_lb::config::NodeState::Ready,
            )
            .expect("node")
        })
        .collect();
    let cluster = Arc::new(Cluster::new(&configs, Snapshot::default(), store));
    for n in cluster.nodes().iter() {
        // Up, as after a first successful poll.
        n.observe_poll(true, 1, 1);
        let listed: Vec<BotInfo> = (0..bots)
            .map(|lid| BotInfo {
                id: Some(lid),
                name: None,
                server: Some("ts.example.com".into()),
                status: 2,
            })
            .collect();
        cluster.reconcile(n.id, &listed, cluster.generation());
    }
    (cluster, dir)
}

fn placer(cluster: &Arc<Cluster>) -> Placer {
    let lb = LoadBalancer::<LoadOrder>::from_backends(Backends::new(Box::new(ClusterDiscovery(
        cluster.clone(),
    ))));
    futures::executor::block_on(lb.update()).expect("discovery");
    Placer::new(Arc::new(lb))
}

/// The placement decision: choose the least-used healthy node with room and reserve a slot
/// (the reservation is dropped right away, so every iteration sees the same cluster).
fn placement(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement reserve");
    for nodes in [4usize, 16, 100] {
        let (cluster, _dir) = cluster(nodes, 100_000, 0);
        // Uneven load, so the order is not trivial.
        for (i, n) in cluster.nodes().iter().enumerate() {
            n.load.force((i as u32 * 7919) % 3000, 0);
        }
        let p = placer(&cluster);
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{nodes} nodes")),
            &p,
            |b, p| b.iter(|| drop(black_box(p.reserve(&[]).expect("room")))),
        );
    }
    g.finish();
}

/// The routing decision of a pinned request, as `request_filter` makes it: authenticate the
/// key, parse the command, check rights, plan over the cluster view (id lookup and rewrite).
fn route(c: &mut Criterion) {
    let keys = Keys::new(&[KeyConfig {
        name: "bench".into(),
        secret: "bench-secret-123".into(),
        role: Role::User,
        tenancy: Default::default(),
    }]);
    let header = basic_header("bench:bench-secret-123");
    let allow =
        vec![AllowPattern::parse(ts3ab_lb::config::DEFAULT_ANONYMOUS_ALLOW).expect("pattern")];
    let mut g = c.benchmark_group("route bot/use");
    for (nodes, bots) in [(1usize, 1u32), (100, 300)] {
        let (cluster, _dir) = cluster(nodes, 300, bots);
        let total = cluster.bot_count() as u32;
        let target = format!("/api/bot/use/{}/(/volume)", total / 2).into_bytes();
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{} bots", total)),
            &target,
            |b, target| {
                b.iter(|| {
                    let caller = keys.authenticate(Some(header.as_bytes())).expect("key");
                    let parsed = parse(&target[4..]);
                    assert!(policy::check(&parsed, &caller, &allow, 64).is_none());
                    let Parsed::Command(root) = &parsed else {
                        panic!("a command")
                    };
                    match routing::plan(&*cluster, &caller, black_box(target), 4, root) {
                        Plan::Proxy(p) => black_box(p.target),
                        other => panic!("{other:?}"),
                    }
                })
            },
        );
    }
    g.finish();
}

/// What recording one request costs the proxy (`admin.metrics`, on by default): the clock
/// reads `RequestCtx` makes (at the head, at the routing decision, at the end) and
/// `ProxyStats::record` (a counter and two histograms, label sets resolved beforehand).
fn metrics(c: &mut Criterion) {
    let stats = ProxyStats::new().expect("stats");
    c.bench_function("record one request (metrics)", |b| {
        b.iter(|| {
            let started = Instant::now();
            let own = started.elapsed();
            stats.record(
                black_box(Kind::Pinned),
                black_box(Some(200)),
                started.elapsed(),
                own,
            );
        })
    });
}

criterion_group!(benches, parser, route, placement, metrics);
criterion_main!(benches);
