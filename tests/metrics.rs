//! The router's `/metrics` on the admin listener: who may read it, and that each family counts
//! what it names, against a real router and fake nodes (creates, pinned requests, fan-outs,
//! refused keys, a node that breaks off, a planned move, a failover, a full cluster).

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::*;
use ts3ab_fake_node::Fault;

/// One scrape: `name{labels sorted by name}` → value.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let key = match series.split_once('{') {
                // Labels sorted by name, so lookups need not know the encoder's order (label
                // values here never hold a comma).
                Some((name, labels)) => {
                    let mut l: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    l.sort_unstable();
                    format!("{name}{{{}}}", l.join(","))
                }
                None => series.to_string(),
            };
            samples.insert(key, value.parse::<f64>().expect("value"));
        }
        Scrape(samples)
    }

    /// The value of a series (labels in any order).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            l.sort_unstable();
            format!("{name}{{{}}}", l.join(","))
        };
        *self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key} in the scrape"))
    }

    /// The sum over every series of a family.
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }
}

fn scrape(router: &Router) -> Scrape {
    let r = router.admin_request("GET", "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&r.text())
}

fn create(router: &Router) -> u64 {
    let r = router.get("/api/bot/connect/to/ts.example");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["Id"].as_u64().expect("Id")
}

/// Which fake node runs cluster bot `gid` (by the router's bot/info answer's node-local id
/// and each node's bot list is not needed: the admin API says).
fn node_of(router: &Router, gid: u64) -> String {
    let r = router.admin_request("GET", &format!("/admin/api/bots/{gid}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["node"].as_str().expect("node").to_string()
}

#[test]
fn metrics_need_an_admin_key() {
    let node = fake_node(0);
    let router = Router::start(
        &[&node],
        RouterOpts {
            admin: true,
            ..RouterOpts::default()
        },
    );
    let admin = router.admin_addr.expect("admin listener");
    let anonymous = raw_request(admin, "GET", b"/metrics", &[], None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let user = raw_request(
        admin,
        "GET",
        b"/metrics",
        &[("Authorization", &basic(USER))],
        None,
    );
    assert_eq!(user.status, 403, "{}", user.text());
    let post = raw_request(
        admin,
        "POST",
        b"/metrics",
        &[("Authorization", &basic(ADMIN))],
        Some(b""),
    );
    assert_eq!(post.status, 405, "{}", post.text());
    // No label carries a key, a bot id, a path or an address.
    let text =
        String::from_utf8(router.admin_request("GET", "/metrics", None).body).expect("utf-8");
    for secret in [ADMIN.0, ADMIN.1, USER.1, "127.0.0.1", "/api"] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }
    assert!(text.contains("ts3ab_lb_build_info{version=\""), "{text}");
}

#[test]
fn each_family_counts_what_it_names() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let router = Router::start(
        &[&nodes[0], &nodes[1]],
        RouterOpts {
            admin: true,
            capacities: vec![4, 4],
            poll_ms: 100,
            extra_yaml: "failover: { after_ms: 300, retry_ms: 500 }\n".into(),
            ..RouterOpts::default()
        },
    );
    router.wait_until(10, "both nodes up", |r| {
        scrape(r).sum("ts3ab_lb_node_up") == 2.0
    });
    let before = scrape(&router);
    assert_eq!(
        before.get("ts3ab_lb_node_capacity_bots", &[("node", "node-0")]),
        4.0
    );
    assert_eq!(
        before.get(
            "ts3ab_lb_node_state",
            &[("node", "node-1"), ("state", "ready")]
        ),
        1.0
    );
    assert_eq!(
        before.get(
            "ts3ab_lb_node_state",
            &[("node", "node-1"), ("state", "drain")]
        ),
        0.0
    );
    assert_eq!(before.get("ts3ab_lb_leader", &[]), 1.0);
    assert_eq!(before.get("ts3ab_lb_store_available", &[]), 1.0);
    assert!(
        before.get(
            "ts3ab_lb_health_checks_total",
            &[("node", "node-0"), ("result", "ok")]
        ) > 0.0
    );

    // Creates, pinned requests, a fan-out, refused keys.
    let ids: Vec<u64> = (0..4).map(|_| create(&router)).collect();
    for id in &ids {
        let r = router.get(&format!("/api/bot/use/{id}/(/song)"));
        assert!(r.status < 500, "{}", r.text());
    }
    assert_eq!(router.get("/api/bot/list").status, 200);
    for _ in 0..3 {
        let r = router.get_as(("ops", "wrong-secret"), "/api/bot/list");
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // A request is counted just after its answer is sent: wait for the last ones.
    let mut after = scrape(&router);
    router.wait_until(5, "the last requests to be counted", |r| {
        after = scrape(r);
        after.sum("ts3ab_lb_requests_total") - before.sum("ts3ab_lb_requests_total") >= 12.0
    });
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta(
            "ts3ab_lb_requests_total",
            &[("kind", "create"), ("class", "2xx")]
        ),
        4.0
    );
    let pinned_ok = delta(
        "ts3ab_lb_requests_total",
        &[("kind", "pinned"), ("class", "2xx")],
    ) + delta(
        "ts3ab_lb_requests_total",
        &[("kind", "pinned"), ("class", "4xx")],
    );
    assert_eq!(pinned_ok, 4.0);
    assert_eq!(
        delta(
            "ts3ab_lb_requests_total",
            &[("kind", "list"), ("class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "ts3ab_lb_requests_total",
            &[("kind", "local"), ("class", "4xx")]
        ),
        3.0
    );
    assert_eq!(delta("ts3ab_lb_auth_failures_total", &[]), 3.0);
    assert_eq!(
        delta(
            "ts3ab_lb_request_duration_seconds_count",
            &[("kind", "pinned")]
        ),
        4.0
    );
    assert_eq!(
        delta(
            "ts3ab_lb_router_duration_seconds_count",
            &[("kind", "create")]
        ),
        4.0
    );
    // The router's own part of a create is far less than the whole (which waits on a node).
    assert!(
        delta(
            "ts3ab_lb_router_duration_seconds_sum",
            &[("kind", "create")]
        ) < delta(
            "ts3ab_lb_request_duration_seconds_sum",
            &[("kind", "create")]
        )
    );
    assert_eq!(
        after.sum("ts3ab_lb_placements_total") - before.sum("ts3ab_lb_placements_total"),
        4.0
    );
    assert_eq!(after.sum("ts3ab_lb_node_bots"), 4.0);
    assert_eq!(after.sum("ts3ab_lb_node_reserved_bots"), 0.0);
    assert!(
        delta(
            "ts3ab_lb_store_operations_total",
            &[("op", "write"), ("result", "ok")]
        ) > 0.0
    );
    assert!(
        delta(
            "ts3ab_lb_store_operation_duration_seconds_count",
            &[("op", "write")]
        ) > 0.0
    );

    // A node that breaks off mid-request: one failed request counted on that node.
    let victim = ids[0];
    let on = node_of(&router, victim);
    let idx: usize = on.trim_start_matches("node-").parse().expect("node index");
    nodes[idx].set_fault_on(Some(Fault::Close), "/song");
    let r = router.get(&format!("/api/bot/use/{victim}/(/song)"));
    assert!(r.status >= 500, "{}", r.text());
    nodes[idx].set_fault(None);
    let broke = scrape(&router);
    assert!(
        broke.get(
            "ts3ab_lb_upstream_errors_total",
            &[("error", "failed"), ("node", &on)]
        ) >= 1.0
    );
    assert_eq!(
        broke.get(
            "ts3ab_lb_upstream_errors_total",
            &[("error", "timeout"), ("node", &on)]
        ),
        0.0
    );

    // A planned move: started and completed once.
    let other = if idx == 0 { "node-1" } else { "node-0" };
    let mv = router.admin_request(
        "POST",
        &format!("/admin/api/bots/{victim}/move"),
        Some(&json!({ "node": other })),
    );
    assert!(mv.status < 300, "{}", mv.text());
    router.wait_until(20, "the move to complete", |r| {
        scrape(r).get("ts3ab_lb_moves_completed_total", &[]) == 1.0
    });
    let moved = scrape(&router);
    assert_eq!(moved.get("ts3ab_lb_moves_started_total", &[]), 1.0);
    assert_eq!(moved.get("ts3ab_lb_moves_failed_total", &[]), 0.0);

    // Failover: the dead node's bots are rebuilt on the other one, each counted.
    let dead = idx;
    let on_dead = moved.get("ts3ab_lb_node_bots", &[("node", &format!("node-{dead}"))]);
    assert!(on_dead >= 1.0, "node-{dead} still runs a bot");
    nodes[dead].kill();
    router.wait_until(30, "failover to finish", |r| {
        let s = scrape(r);
        s.get("ts3ab_lb_failovers_completed_total", &[]) == on_dead
    });
    let failed_over = scrape(&router);
    assert_eq!(
        failed_over.get("ts3ab_lb_failovers_started_total", &[]),
        on_dead
    );
    assert_eq!(
        failed_over.get("ts3ab_lb_node_up", &[("node", &format!("node-{dead}"))]),
        0.0
    );
    assert!(
        failed_over.get(
            "ts3ab_lb_health_checks_total",
            &[("node", &format!("node-{dead}")), ("result", "failed")]
        ) >= 1.0
    );

    // A full cluster: the one live node has room for 4; the next create is refused.
    let refused_before = failed_over.get(
        "ts3ab_lb_placement_refusals_total",
        &[("reason", "no_node")],
    );
    let live = failed_over.sum("ts3ab_lb_node_bots") as u64;
    for _ in live..4 {
        create(&router);
    }
    let full = router.get("/api/bot/connect/to/ts.example");
    assert_eq!(full.status, 503, "{}", full.text());
    let mut end = scrape(&router);
    router.wait_until(5, "the refused create to be counted", |r| {
        end = scrape(r);
        end.get(
            "ts3ab_lb_requests_total",
            &[("class", "5xx"), ("kind", "create")],
        ) > 0.0
    });
    assert_eq!(
        end.get(
            "ts3ab_lb_placement_refusals_total",
            &[("reason", "no_node")]
        ) - refused_before,
        1.0
    );
    assert_eq!(
        end.get(
            "ts3ab_lb_requests_total",
            &[("kind", "create"), ("class", "5xx")]
        ) - before.get(
            "ts3ab_lb_requests_total",
            &[("kind", "create"), ("class", "5xx")]
        ),
        1.0
    );
}

#[test]
fn metrics_off_records_no_requests() {
    let node = fake_node(0);
    let router = Router::start(
        &[&node],
        RouterOpts {
            admin: true,
            admin_yaml: "metrics: false".into(),
            ..RouterOpts::default()
        },
    );
    for _ in 0..3 {
        assert_eq!(router.get("/api/bot/list").status, 200);
    }
    let s = scrape(&router);
    assert_eq!(s.sum("ts3ab_lb_requests_total"), 0.0);
    // The cluster's own figures are still there.
    assert_eq!(
        s.get("ts3ab_lb_node_capacity_bots", &[("node", "node-0")]),
        300.0
    );
}
