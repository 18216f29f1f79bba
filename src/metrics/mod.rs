//! The router's Prometheus metrics: what `GET /metrics` on the admin listener serves.
//!
//! Owns: the registry (the proxy's and the store worker's instruments, no global registry),
//! the families read from the cluster at scrape time (nodes, their bots and counters,
//! placement refusals, failovers and moves, the store's and the lead's state, build info) and
//! the text exposition. Names follow Prometheus's conventions (`ts3ab_lb_` prefix, base units,
//! `_total` counters) and every label is bounded: node names, plan kinds, status classes,
//! store operations, fixed reasons; never bot ids, keys, paths or client addresses.
//! Does not own: counting (each layer counts its own: `proxy::stats`, `cluster::stats`,
//! `store::stats`), or who may read the page (`admin::http`).
//!
//! Reading the cluster at scrape time rather than keeping gauges up to date means the request
//! path pays nothing for node figures, and a removed node's series vanish with it.

use std::sync::Arc;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::cluster::placement::Placer;
use crate::cluster::stats::{Counter as Count, Outcomes};
use crate::cluster::Cluster;
use crate::proxy::stats::ProxyStats;
use crate::store::NodeState;

/// The exposition's content type (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The router's metrics.
pub struct Metrics {
    registry: Registry,
    cluster: Arc<Cluster>,
    placer: Arc<Placer>,
}

impl Metrics {
    /// Metrics over the running router's parts. Fails only on a bad metric definition.
    pub fn new(
        cluster: Arc<Cluster>,
        placer: Arc<Placer>,
        proxy: &ProxyStats,
    ) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        for c in proxy
            .collectors()
            .into_iter()
            .chain(cluster.store().stats().collectors())
        {
            registry.register(c)?;
        }
        Ok(Metrics {
            registry,
            cluster,
            placer,
        })
    }

    /// Every family, sorted by name.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let mut families = self.registry.gather();
        // A family without samples (no nodes yet) cannot be encoded: leave it out.
        families.extend(
            self.cluster_families()
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families
    }

    /// The text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.gather(), &mut out) {
            // Only a family without samples of its type can fail to encode; the page is
            // still served, with what was written and the reason in the log.
            log::error!("metrics could not be encoded completely: {e}");
        }
        out
    }

    /// The families read from the cluster now.
    fn cluster_families(&self) -> Vec<MetricFamily> {
        let nodes = self.cluster.nodes();
        let mut up = Family::gauge(
            "ts3ab_lb_node_up",
            "Whether the node answers its polls (1) or is down (0).",
        );
        let mut state = Family::gauge(
            "ts3ab_lb_node_state",
            "The node's administrative state: 1 for its current state (ready, drain or maint), 0 for the others.",
        );
        let mut bots = Family::gauge(
            "ts3ab_lb_node_bots",
            "Bots the router knows to run on the node.",
        );
        let mut reserved = Family::gauge(
            "ts3ab_lb_node_reserved_bots",
            "Slots on the node promised to creates, failovers and moves in flight.",
        );
        let mut capacity = Family::gauge(
            "ts3ab_lb_node_capacity_bots",
            "How many bots the node may run.",
        );
        let mut placements = Family::counter(
            "ts3ab_lb_placements_total",
            "Bots placed on the node (slots reserved for creates, failovers and moves).",
        );
        let mut checks = Family::counter(
            "ts3ab_lb_health_checks_total",
            "Polls of the node's bot list, by result.",
        );
        let mut upstream = Family::counter(
            "ts3ab_lb_upstream_errors_total",
            "Bot API requests proxied to the node that failed, by how: no connection, no answer in time, or a broken answer.",
        );
        for n in nodes.iter() {
            let node = [("node", &*n.name)];
            up.push(&node, f64::from(u8::from(n.is_healthy())));
            let current = n.state();
            for s in [NodeState::Ready, NodeState::Drain, NodeState::Maint] {
                state.push(
                    &[("node", &*n.name), ("state", s.as_str())],
                    f64::from(u8::from(s == current)),
                );
            }
            bots.push(&node, f64::from(n.load.running()));
            reserved.push(&node, f64::from(n.load.reserved()));
            capacity.push(
                &node,
                f64::from(n.capacity.load(std::sync::atomic::Ordering::Acquire)),
            );
            placements.push_count(&node, &n.stats.placements);
            let st = &n.stats;
            for (result, c) in [("ok", &st.checks_ok), ("failed", &st.checks_failed)] {
                checks.push_count(&[("node", &*n.name), ("result", result)], c);
            }
            for (error, c) in [
                ("connect", &st.upstream_connect),
                ("timeout", &st.upstream_timeout),
                ("failed", &st.upstream_failed),
            ] {
                upstream.push_count(&[("node", &*n.name), ("error", error)], c);
            }
        }
        let mut refusals = Family::counter(
            "ts3ab_lb_placement_refusals_total",
            "Placements refused: no node had room (no_node), or the one node the bot must run on was full or down (full).",
        );
        let p = &self.placer.stats;
        refusals.push_count(&[("reason", "no_node")], &p.refused_no_node);
        refusals.push_count(&[("reason", "full")], &p.refused_full);
        let stats = &self.cluster.stats;
        let mut out = vec![
            up.done(),
            state.done(),
            bots.done(),
            reserved.done(),
            capacity.done(),
            placements.done(),
            checks.done(),
            upstream.done(),
            refusals.done(),
        ];
        out.extend(outcomes(
            "ts3ab_lb_failovers",
            "bots rebuilt after their node died or restarted",
            &stats.failovers,
        ));
        out.extend(outcomes(
            "ts3ab_lb_moves",
            "bots moved on purpose (admin moves, evacuations, rebalances)",
            &stats.moves,
        ));
        let mut available = Family::gauge(
            "ts3ab_lb_store_available",
            "Whether the store answers (1); while it does not (0), writes are kept and retried and changes are refused.",
        );
        available.push(&[], f64::from(u8::from(self.cluster.store_available())));
        let mut leader = Family::gauge(
            "ts3ab_lb_leader",
            "Whether this router runs failover and operations (1); with a shared store only one router does.",
        );
        leader.push(&[], f64::from(u8::from(self.cluster.leads())));
        let mut build = Family::gauge("ts3ab_lb_build_info", "The router's version; always 1.");
        build.push(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        out.extend([available.done(), leader.done(), build.done()]);
        out
    }
}

/// The started, completed and failed counters of one kind of work.
fn outcomes(prefix: &str, what: &str, o: &Outcomes) -> [MetricFamily; 4] {
    let one = |suffix: &str, help: String, c: &Count| {
        let mut f = Family::counter(&format!("{prefix}_{suffix}_total"), &help);
        f.push_count(&[], c);
        f.done()
    };
    [
        one("started", format!("Started: {what}."), &o.started),
        one(
            "completed",
            format!("Completed (running on the new node, recorded): {what}."),
            &o.completed,
        ),
        one(
            "failed",
            format!(
                "Given up this time (no room, a node failing, the bot changed meanwhile): {what}."
            ),
            &o.failed,
        ),
        one(
            "called_off",
            format!(
                "Called off because the old node answered again (the bot stays there): {what}."
            ),
            &o.called_off,
        ),
    ]
}

/// A family being filled.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    fn labels(labels: &[(&str, &str)]) -> Metric {
        Metric::from_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        )
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Family::labels(labels);
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        self.0.mut_metric().push(m);
    }

    fn push_count(&mut self, labels: &[(&str, &str)], count: &Count) {
        let mut m = Family::labels(labels);
        let mut c = Counter::default();
        // Exact up to 2^53 events, far beyond any router's lifetime.
        c.set_value(count.get() as f64);
        m.set_counter(c);
        self.0.mut_metric().push(m);
    }

    fn done(self) -> MetricFamily {
        self.0
    }
}
