//! What the proxy counts per request: requests by plan kind and status class, how long they
//! took in all and in the router itself, and failed authentications.
//!
//! Owns: the request instruments ([`ProxyStats`]) and the bounded label values ([`Kind`] and
//! the status classes). Every label set is resolved once when the stats are made, so
//! recording a request is two relaxed atomic adds per counter and a bucket search per
//! histogram, with no lookup and no lock. Does not own: registering or serving them
//! (`metrics`), failures per node (counted on the node, `cluster::stats`).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// What a request turned out to be (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Proxied to the node that runs the bot or holds the template it names.
    Pinned,
    /// Proxied to any healthy node (node-independent commands, non-command paths).
    Any,
    /// `bot/list` over every node.
    List,
    /// `system/info` summed over every node.
    SystemInfo,
    /// Sent to every node.
    Broadcast,
    /// A new bot or template placed by the router.
    Create,
    /// `json/merge` split over several nodes.
    Merge,
    /// Answered by the router alone: refused (authentication, rights, limits) or malformed.
    #[default]
    Local,
    /// A WebInterface file.
    Static,
    /// A CORS preflight.
    Preflight,
}

/// Every kind, in label order.
const KINDS: [Kind; 10] = [
    Kind::Pinned,
    Kind::Any,
    Kind::List,
    Kind::SystemInfo,
    Kind::Broadcast,
    Kind::Create,
    Kind::Merge,
    Kind::Local,
    Kind::Static,
    Kind::Preflight,
];

/// Status classes (the `class` label); `none` is a request that got no answer at all (the
/// client went away first, or the answer could not be written).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

impl Kind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pinned => "pinned",
            Kind::Any => "any",
            Kind::List => "list",
            Kind::SystemInfo => "system_info",
            Kind::Broadcast => "broadcast",
            Kind::Create => "create",
            Kind::Merge => "merge",
            Kind::Local => "local",
            Kind::Static => "static",
            Kind::Preflight => "preflight",
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// The index of a status code's class in [`CLASSES`].
fn class_of(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100) - 1,
        _ => CLASSES.len() - 1,
    }
}

/// Request latency buckets in seconds: a pinned request through the router takes about
/// 0.1-1 ms on a LAN, a fan-out over many nodes a few ms to the fan-out timeout, a create a
/// node's connect time (seconds).
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The router's own time is far shorter: parsing, planning and editing take microseconds.
const OWN_BUCKETS: [f64; 12] = [
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

/// The proxy's instruments.
pub struct ProxyStats {
    requests: IntCounterVec,
    duration: HistogramVec,
    own: HistogramVec,
    auth_failures: IntCounter,
    /// `[kind][class]` counters.
    counted: Vec<IntCounter>,
    /// Per kind: whole request, the router's own time.
    timed: Vec<(Histogram, Histogram)>,
}

impl ProxyStats {
    /// The instruments, every label set present at zero. Fails only on a bad metric
    /// definition.
    pub fn new() -> prometheus::Result<ProxyStats> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ts3ab_lb_requests_total",
                "Bot API requests answered, by what the router made of them and status class.",
            ),
            &["kind", "class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ts3ab_lb_request_duration_seconds",
                "Whole bot API requests, from the request head read to the answer sent.",
            )
            .buckets(BUCKETS.to_vec()),
            &["kind"],
        )?;
        let own = HistogramVec::new(
            HistogramOpts::new(
                "ts3ab_lb_router_duration_seconds",
                "The router's own time in a bot API request: deciding where it goes (or \
                 refusing it) and editing the answer; waiting for nodes is not counted.",
            )
            .buckets(OWN_BUCKETS.to_vec()),
            &["kind"],
        )?;
        let auth_failures = IntCounter::new(
            "ts3ab_lb_auth_failures_total",
            "Bot API requests refused because their credentials are wrong or malformed.",
        )?;
        let mut counted = Vec::with_capacity(KINDS.len() * CLASSES.len());
        let mut timed = Vec::with_capacity(KINDS.len());
        for kind in KINDS {
            for class in CLASSES {
                counted.push(requests.get_metric_with_label_values(&[kind.as_str(), class])?);
            }
            timed.push((
                duration.get_metric_with_label_values(&[kind.as_str()])?,
                own.get_metric_with_label_values(&[kind.as_str()])?,
            ));
        }
        Ok(ProxyStats {
            requests,
            duration,
            own,
            auth_failures,
            counted,
            timed,
        })
    }

    /// Records one finished request: its kind, the status sent (None: nothing was sent),
    /// its whole time and the router's own part of it.
    pub fn record(&self, kind: Kind, status: Option<u16>, total: Duration, own: Duration) {
        let k = kind.index();
        if let Some(c) = self.counted.get(k * CLASSES.len() + class_of(status)) {
            c.inc();
        }
        if let Some((whole, mine)) = self.timed.get(k) {
            whole.observe(total.as_secs_f64());
            mine.observe(own.as_secs_f64());
        }
    }

    /// Counts a refused authentication.
    pub fn record_auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// The instruments, for a registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.own.clone()),
            Box::new(self.auth_failures.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &ProxyStats, kind: &str, class: &str) -> u64 {
        s.requests.with_label_values(&[kind, class]).get()
    }

    #[test]
    fn requests_land_under_their_kind_and_class() {
        let s = ProxyStats::new().expect("stats");
        let ms = Duration::from_millis(1);
        s.record(Kind::Pinned, Some(200), ms, ms);
        s.record(Kind::Pinned, Some(204), ms, ms);
        s.record(Kind::Create, Some(503), ms, ms);
        s.record(Kind::Local, Some(401), ms, ms);
        s.record(Kind::List, None, ms, ms);
        s.record(Kind::Static, Some(304), ms, ms);
        assert_eq!(count(&s, "pinned", "2xx"), 2);
        assert_eq!(count(&s, "create", "5xx"), 1);
        assert_eq!(count(&s, "local", "4xx"), 1);
        assert_eq!(count(&s, "list", "none"), 1);
        assert_eq!(count(&s, "static", "3xx"), 1);
        assert_eq!(count(&s, "pinned", "5xx"), 0);
        let h = s.duration.with_label_values(&["pinned"]);
        assert_eq!(h.get_sample_count(), 2);
        assert!((h.get_sample_sum() - 0.002).abs() < 1e-9);
        assert_eq!(s.own.with_label_values(&["create"]).get_sample_count(), 1);
    }

    #[test]
    fn every_label_set_exists_before_the_first_request() {
        let s = ProxyStats::new().expect("stats");
        let families: Vec<_> = s.collectors().iter().flat_map(|c| c.collect()).collect();
        let requests = families
            .iter()
            .find(|f| f.name() == "ts3ab_lb_requests_total")
            .expect("requests family");
        assert_eq!(requests.get_metric().len(), KINDS.len() * CLASSES.len());
    }

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[class_of(Some(101))], "1xx");
        assert_eq!(CLASSES[class_of(Some(299))], "2xx");
        assert_eq!(CLASSES[class_of(Some(599))], "5xx");
        assert_eq!(CLASSES[class_of(Some(600))], "none");
        assert_eq!(CLASSES[class_of(Some(0))], "none");
        assert_eq!(CLASSES[class_of(None)], "none");
    }
}
