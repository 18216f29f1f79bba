//! The monitoring files (`conf/prometheus.yml`, `conf/prometheus-rules.yml`,
//! `conf/grafana/ts3ab-lb.json`) and both `/metrics` outputs against the real Prometheus tools
//! (Debian's `prometheus` package: `promtool` and the server):
//!
//! - the rules, the config and every PromQL expression of the dashboard pass `promtool`, and
//!   every metric they name is one the router or the agent exports (so a typo fails);
//! - the router's and the agent's `/metrics` pass `promtool check metrics` (the agent: but
//!   for node_exporter's own camelCase `node_memory_*` names);
//! - a real Prometheus, run with the shipped config and rules, scrapes a router in front of
//!   fake nodes and an agent, and its queries give the bots the fake nodes hold.
//!
//! Every process is killed by PID when its guard drops and by a watchdog when the test process
//! is gone; every wait is on a condition with a deadline.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::prometheus::{check_metrics, promtool, Prometheus};
use support::*;

/// The router's metrics (the contract the dashboard and rules are written against): name and
/// type.
const ROUTER_METRICS: &[(&str, &str)] = &[
    ("ts3ab_lb_build_info", "gauge"),
    ("ts3ab_lb_requests_total", "counter"),
    ("ts3ab_lb_request_duration_seconds", "histogram"),
    ("ts3ab_lb_router_duration_seconds", "histogram"),
    ("ts3ab_lb_upstream_errors_total", "counter"),
    ("ts3ab_lb_node_up", "gauge"),
    ("ts3ab_lb_node_state", "gauge"),
    ("ts3ab_lb_node_bots", "gauge"),
    ("ts3ab_lb_node_reserved_bots", "gauge"),
    ("ts3ab_lb_node_capacity_bots", "gauge"),
    ("ts3ab_lb_placements_total", "counter"),
    ("ts3ab_lb_placement_refusals_total", "counter"),
    ("ts3ab_lb_failovers_started_total", "counter"),
    ("ts3ab_lb_failovers_completed_total", "counter"),
    ("ts3ab_lb_failovers_failed_total", "counter"),
    ("ts3ab_lb_failovers_called_off_total", "counter"),
    ("ts3ab_lb_moves_started_total", "counter"),
    ("ts3ab_lb_moves_completed_total", "counter"),
    ("ts3ab_lb_moves_failed_total", "counter"),
    ("ts3ab_lb_moves_called_off_total", "counter"),
    ("ts3ab_lb_health_checks_total", "counter"),
    ("ts3ab_lb_store_operations_total", "counter"),
    ("ts3ab_lb_store_operation_duration_seconds", "histogram"),
    ("ts3ab_lb_store_queue_depth", "gauge"),
    ("ts3ab_lb_store_available", "gauge"),
    ("ts3ab_lb_auth_failures_total", "counter"),
    ("ts3ab_lb_leader", "gauge"),
];

/// The router's gauges that exist from the start, whatever has happened (nodes are
/// configured, the store is open): a `/metrics` without them is not the contract's.
const ROUTER_GAUGES_AT_START: &[&str] = &[
    "ts3ab_lb_build_info",
    "ts3ab_lb_node_up",
    "ts3ab_lb_node_state",
    "ts3ab_lb_node_bots",
    "ts3ab_lb_node_reserved_bots",
    "ts3ab_lb_node_capacity_bots",
    "ts3ab_lb_store_available",
    "ts3ab_lb_leader",
];

/// node_exporter's `/proc/meminfo` fields the agent exports as `node_memory_<field>_bytes`.
const MEMINFO_FIELDS: &[&str] = &[
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
];

/// The agent's metrics besides the memory ones (agent/README.md, "Metrics").
const AGENT_METRICS: &[&str] = &[
    "node_cpu_seconds_total",
    "node_boot_time_seconds",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "ts3ab_agent_process_up",
    "ts3ab_agent_process_cpu_seconds_total",
    "ts3ab_agent_process_resident_memory_bytes",
    "ts3ab_agent_process_virtual_memory_bytes",
    "ts3ab_agent_process_threads",
    "ts3ab_agent_process_start_time_seconds",
    "ts3ab_agent_api_up",
    "ts3ab_agent_bots",
    "ts3ab_agent_scrape_duration_seconds",
    "ts3ab_agent_build_info",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every series name a dashboard or rule may use: the router's (histograms with their
/// `_bucket`, `_sum` and `_count` series), the agent's, and Prometheus's own `up`.
fn exported_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["up".to_string()].into();
    for (name, kind) in ROUTER_METRICS {
        if *kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names.extend(AGENT_METRICS.iter().map(|n| n.to_string()));
    names.extend(
        MEMINFO_FIELDS
            .iter()
            .map(|f| format!("node_memory_{f}_bytes")),
    );
    names
}

// === PromQL ===

/// PromQL words that are not metric names: aggregations, binary operators, modifiers and
/// literals.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
];

/// The metric names an expression selects: identifiers outside strings, label matchers
/// (`{...}`), ranges (`[...]`) and label lists (`by (...)`, `on (...)`, ...), that are not
/// followed by `(` (a function) and not a PromQL word.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Skips from an opening byte to its closing one, over strings.
    let skip_to = |mut i: usize, close: u8| -> usize {
        while i < b.len() && b[i] != close {
            if matches!(b[i], b'"' | b'\'' | b'`') {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'{' {
            i = skip_to(i + 1, b'}');
        } else if c == b'[' {
            i = skip_to(i + 1, b']');
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // A number or a duration (1m, 0.99, 1e3).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                if next == Some(b'(') {
                    i = skip_to(j + 1, b')');
                }
            } else if next == Some(b'(') || PROMQL_WORDS.contains(&lower.as_str()) {
                // A function or an aggregation, or an operator.
            } else {
                out.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn metric_names_finds_the_selectors() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, kind) (rate(ts3ab_lb_request_duration_seconds_bucket{kind=~"a|b", x="}"}[$__rate_interval])))"#
        ),
        ["ts3ab_lb_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "max by (node) (a_b) == 0 unless on (node) (max by (node) (c:d:e{s=\"maint\"}) == 1) offset 5m"
        ),
        ["a_b", "c:d:e"]
    );
    assert_eq!(
        metric_names("1 - x / on (node) group_left (y) count by (node) (z) * 8e3 + 1.5 > bool 0"),
        ["x", "z"]
    );
}

/// A dashboard expression as Prometheus sees it: Grafana's variables replaced (`$node` by
/// `.*`, the interval variables by `1m`); panics on a variable it does not know.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("${__rate_interval}", "1m"),
        ("$__rate_interval", "1m"),
        ("${__interval}", "1m"),
        ("$__interval", "1m"),
        ("${__range}", "1h"),
        ("$__range", "1h"),
        ("${node}", ".*"),
        ("$node", ".*"),
    ] {
        e = e.replace(var, value);
    }
    assert!(
        !e.contains('$'),
        "unknown Grafana variable in `{expr}` (after substitution: `{e}`)"
    );
    e
}

/// Every (panel title, expression) of the dashboard, rows' nested panels included.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    out
}

/// Every panel that is not a row (rows' nested panels included).
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read("conf/grafana/ts3ab-lb.json")).expect("dashboard is JSON")
}

// === (a) the files ===

/// `promtool check rules` on the rules file; `promtool check config` on the config (its
/// syntax: the secret files it names exist only on a real Prometheus host); every metric the
/// rules select is exported by the router or the agent, or recorded by the rules themselves.
#[test]
fn rules_and_config_pass_promtool() {
    let rules = repo("conf/prometheus-rules.yml");
    let run = promtool(&["check", "rules", rules.to_str().expect("utf-8")], None);
    assert_eq!(run.code, Some(0), "promtool check rules:\n{}", run.output);
    assert!(run.output.contains("SUCCESS"), "{}", run.output);

    let config = repo("conf/prometheus.yml");
    let run = promtool(
        &[
            "check",
            "config",
            "--syntax-only",
            config.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "promtool check config:\n{}", run.output);

    // The config's jobs are the ones the rules and the dashboard select on.
    let cfg: serde_yaml::Value = serde_yaml::from_str(&read("conf/prometheus.yml")).expect("yaml");
    let jobs: Vec<&str> = cfg["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    assert_eq!(jobs, ["ts3ab-lb", "ts3ab-lb-agent"]);
    assert_eq!(cfg["rule_files"][0].as_str(), Some("prometheus-rules.yml"));
    let router_job = &cfg["scrape_configs"][0];
    assert_eq!(router_job["metrics_path"].as_str(), Some("/metrics"));
    assert!(router_job["basic_auth"]["password_file"].as_str().is_some());
    let agent_job = &cfg["scrape_configs"][1];
    assert!(agent_job["authorization"]["credentials_file"]
        .as_str()
        .is_some());
    for sc in agent_job["static_configs"]
        .as_sequence()
        .expect("agent targets")
    {
        assert!(
            sc["labels"]["node"].as_str().is_some(),
            "every agent target needs a `node` label: {sc:?}"
        );
    }

    let doc: serde_yaml::Value =
        serde_yaml::from_str(&read("conf/prometheus-rules.yml")).expect("yaml");
    let mut known = exported_names();
    let mut alerts = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let expr = r["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                assert!(
                    known.contains(&name),
                    "rule {:?} selects `{name}`, which neither the router nor the agent exports \
                     and no earlier rule records",
                    r["record"].as_str().or(r["alert"].as_str())
                );
            }
            if let Some(rec) = r["record"].as_str() {
                assert_eq!(rec.split(':').count(), 3, "{rec}: level:metric:operation");
                known.insert(rec.to_string());
            }
            if let Some(a) = r["alert"].as_str() {
                alerts.push(a.to_string());
            }
        }
    }
    for wanted in [
        "TS3ABNodeDown",
        "TS3ABClusterNearlyFull",
        "TS3ABFailoverFailing",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "no {wanted} alert in {alerts:?}"
        );
    }
}

/// The dashboard: importable shape (a datasource variable every panel uses, a multi-value
/// `node` variable over the router's nodes, at least six panels that do not overlap); every
/// expression, variables substituted, passes `promtool check rules` as a recording rule, and
/// selects only metrics the router or the agent exports.
#[test]
fn dashboard_is_importable_and_its_promql_passes_promtool() {
    let dash = dashboard();
    assert_eq!(dash["schemaVersion"].as_u64().map(|v| v >= 36), Some(true));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["id"].is_null(), "an importable dashboard has no id");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");

    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let node = var("node");
    assert_eq!(node["type"], "query");
    assert_eq!(node["datasource"]["uid"], "${datasource}");
    assert_eq!(node["multi"], true);
    assert_eq!(node["includeAll"], true);
    assert_eq!(node["allValue"], ".*");
    let q = node["query"]["query"].as_str().or(node["query"].as_str());
    assert_eq!(q, Some("label_values(ts3ab_lb_node_up, node)"));

    let panels = panels(&dash);
    assert!(panels.len() >= 6, "{} panels", panels.len());
    let mut cells = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {title} has no query");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "a target of {title}"
            );
        }
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "panel {title} at {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {title} overlaps another at ({cx}, {cy})"
                );
            }
        }
    }
    // The rows have their own line.
    for r in dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
    {
        let y = r["gridPos"]["y"].as_u64().expect("row y");
        assert!(
            !(0..24).any(|x| cells.contains(&(x, y))),
            "row {} overlaps a panel",
            r["title"]
        );
    }
    // The node variable is used: some panel filters by it.
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.iter().any(|(_, e)| e.contains("node=~\"$node\"")));

    // Every expression as a recording rule.
    let known = exported_names();
    let mut rules = Vec::new();
    for (i, (title, expr)) in exprs.iter().enumerate() {
        let e = substitute(expr);
        for name in metric_names(&e) {
            assert!(
                known.contains(&name),
                "panel {title:?} selects `{name}`, which neither the router nor the agent exports: {expr}"
            );
        }
        rules.push(serde_json::json!({"record": format!("dashboard:panel_{i}:expr"), "expr": e}));
    }
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, serde_yaml::to_string(&doc).expect("yaml")).expect("write rules");
    let run = promtool(&["check", "rules", file.to_str().expect("utf-8")], None);
    assert_eq!(
        run.code,
        Some(0),
        "the dashboard's PromQL does not pass promtool:\n{}\n{}",
        run.output,
        std::fs::read_to_string(&file).unwrap_or_default()
    );
    assert!(
        run.output
            .contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{}",
        run.output
    );
}

// === (b) the /metrics outputs ===

/// A router with the admin listener in front of two fake nodes (node-0 with 2 bots, node-1
/// with 3), both nodes' bots adopted.
fn router_with_bots() -> (Vec<FakeNode>, Router) {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    nodes[0].connect_bot("ts1.example.com");
    nodes[0].connect_bot("ts2.example.com");
    nodes[1].connect_bot("ts3.example.com");
    nodes[1].connect_bot("ts4.example.com");
    nodes[1].connect_bot("unreachable.example.com");
    let router = Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            admin: true,
            capacities: vec![10, 10],
            ..RouterOpts::default()
        },
    );
    router.wait_until(15, "the router to adopt the five bots", |r| {
        r.bot_list().len() == 5
    });
    (nodes, router)
}

/// The router's `/metrics` on its admin listener, with the admin key.
fn router_metrics(router: &Router) -> Response {
    router.admin_request("GET", "/metrics", None)
}

/// `promtool check metrics` finds nothing in the router's `/metrics`, which has the
/// contract's families with the contract's types and wants the admin key.
#[test]
fn router_metrics_pass_promtool() {
    let (_nodes, router) = router_with_bots();
    // Some traffic, so request counters and histograms have samples.
    for _ in 0..3 {
        assert_eq!(router.get("/api/bot/list").status, 200);
    }
    let r = router_metrics(&router);
    assert_eq!(
        r.status,
        200,
        "GET /metrics on the admin listener (contract: the router's metrics there, admin key \
         as HTTP Basic): {}",
        r.text()
    );
    let text = r.text();
    for (name, kind) in ROUTER_METRICS {
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with(&format!("# TYPE {name} ")))
        {
            assert_eq!(line, format!("# TYPE {name} {kind}"), "the contract's type");
        } else {
            assert!(
                !ROUTER_GAUGES_AT_START.contains(name),
                "no `{name}` family in /metrics:\n{text}"
            );
        }
    }
    assert!(text.contains("ts3ab_lb_node_bots{"), "{text}");
    let (code, findings) = check_metrics(&text);
    assert!(
        findings.is_empty(),
        "promtool check metrics: {findings:#?}\n{text}"
    );
    assert_eq!(code, Some(0));

    let admin = router.admin_addr.expect("admin listener");
    let anonymous = raw_request(admin, "GET", b"/metrics", &[], None);
    assert_eq!(anonymous.status, 401, "/metrics without credentials");
}

/// `promtool check metrics` on the agent's `/metrics` (fixture /proc, a fake node's API):
/// the one finding accepted is node_exporter's camelCase `node_memory_<field>_bytes`, and only
/// for the meminfo fields the agent exports.
#[test]
fn agent_metrics_pass_promtool_but_for_node_exporter_names() {
    let node = fake_node(1);
    node.connect_bot("ts1.example.com");
    let proc_dir = tempfile::tempdir().expect("tempdir");
    agent::write_fixture_proc(proc_dir.path(), 0);
    let token = node_token(1);
    let agent = agent::Agent::start(
        &[
            "--api",
            &node.url(),
            "--api-auth-env",
            "TEST_API_AUTH",
            "--proc-root",
            proc_dir.path().to_str().expect("utf-8"),
        ],
        &[("TEST_API_AUTH", &token)],
    );
    let r = agent.get("/metrics", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    // Every family is there (the process was found, the API answered).
    for name in AGENT_METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no {name}:\n{text}"
        );
    }
    let (code, findings) = check_metrics(&text);
    let unexpected = unaccepted_agent_findings(&findings);
    assert!(
        unexpected.is_empty(),
        "promtool check metrics on the agent: {unexpected:#?}\n{text}\n{}",
        agent.log()
    );
    assert!(
        matches!(code, Some(0) | Some(3)),
        "promtool exit {code:?}: {findings:?}"
    );

    // The filter lets a real mistake through: a counter without _total, a camelCase name
    // that is not node_exporter's, or a camelCase node_memory name with another complaint.
    let bad = "# HELP ts3ab_agent_x_ms x\n# TYPE ts3ab_agent_x_ms counter\nts3ab_agent_x_ms 1\n\
               # HELP node_memory_MadeUp_bytes x\n# TYPE node_memory_MadeUp_bytes gauge\nnode_memory_MadeUp_bytes 1\n";
    let (_, findings) = check_metrics(bad);
    let unexpected = unaccepted_agent_findings(&findings);
    assert!(
        unexpected
            .iter()
            .any(|f| f.starts_with("ts3ab_agent_x_ms "))
            && unexpected
                .iter()
                .any(|f| f.starts_with("node_memory_MadeUp_bytes ")),
        "{findings:?}"
    );
}

/// The findings that are not the camelCase lint on an exported `node_memory_<field>_bytes`.
fn unaccepted_agent_findings(findings: &[String]) -> Vec<String> {
    findings
        .iter()
        .filter(|l| {
            let (name, msg) = l.split_once(' ').unwrap_or((l, ""));
            let node_exporter_name = MEMINFO_FIELDS
                .iter()
                .any(|f| name == format!("node_memory_{f}_bytes"));
            !(node_exporter_name && msg.contains("camelCase") && !msg.contains(';'))
        })
        .cloned()
        .collect()
}

// === (c) a real Prometheus ===

/// A real Prometheus with the shipped `conf/prometheus.yml` (targets, secrets and intervals
/// replaced) and `conf/prometheus-rules.yml` scrapes a router (basic auth with the admin key
/// from a password file) and an agent (bearer token from a credentials file) on node-1:
/// `sum(ts3ab_agent_bots)` for node-1 is node-1's bots, `sum(ts3ab_lb_node_bots)` all the
/// fake nodes' bots, router and agent series join on `node`, the recording rules hold, every
/// rule evaluates and every dashboard expression runs on the data.
///
/// The agent half is checked first, so that a router without `/metrics` fails at the router
/// half with the scrape error.
#[test]
fn prometheus_scrapes_router_and_agent() {
    let (nodes, router) = router_with_bots();
    let node1_bots = nodes[1].bots().len();
    let all_bots: usize = nodes.iter().map(|n| n.bots().len()).sum();
    assert_eq!((node1_bots, all_bots), (3, 5));

    let proc_dir = tempfile::tempdir().expect("tempdir");
    agent::write_fixture_proc(proc_dir.path(), 0);
    let api_auth = node_token(1);
    let agent = agent::Agent::start(
        &[
            "--api",
            &nodes[1].url(),
            "--api-auth-env",
            "TEST_API_AUTH",
            "--token-env",
            "TEST_AGENT_TOKEN",
            "--proc-root",
            proc_dir.path().to_str().expect("utf-8"),
            "--sample-interval",
            "0.2",
        ],
        &[
            ("TEST_API_AUTH", &api_auth),
            ("TEST_AGENT_TOKEN", "agent-token-123"),
        ],
    );

    // The shipped config, pointed at this router and agent.
    let secrets = tempfile::tempdir().expect("tempdir");
    let password_file = secrets.path().join("admin.secret");
    std::fs::write(&password_file, ADMIN.1).expect("password file");
    let token_file = secrets.path().join("agent.token");
    std::fs::write(&token_file, "agent-token-123\n").expect("token file");
    let mut cfg: serde_yaml::Value =
        serde_yaml::from_str(&read("conf/prometheus.yml")).expect("conf/prometheus.yml");
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    cfg["rule_files"] = vec![serde_yaml::Value::from(
        repo("conf/prometheus-rules.yml").display().to_string(),
    )]
    .into();
    let jobs = cfg["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs");
    let router_job = &mut jobs[0];
    assert_eq!(router_job["job_name"].as_str(), Some("ts3ab-lb"));
    router_job["basic_auth"]["username"] = ADMIN.0.into();
    router_job["basic_auth"]["password_file"] = password_file.display().to_string().into();
    router_job["static_configs"] = serde_yaml::from_str(&format!(
        "[{{targets: [\"{}\"]}}]",
        router.admin_addr.expect("admin listener")
    ))
    .expect("targets");
    let agent_job = &mut jobs[1];
    assert_eq!(agent_job["job_name"].as_str(), Some("ts3ab-lb-agent"));
    agent_job["authorization"]["credentials_file"] = token_file.display().to_string().into();
    agent_job["static_configs"] = serde_yaml::from_str(&format!(
        "[{{targets: [\"{}\"], labels: {{node: node-1}}}}]",
        agent.addr
    ))
    .expect("targets");
    let prom = Prometheus::start(&serde_yaml::to_string(&cfg).expect("yaml"));

    // The agent half.
    prom.wait_value(r#"up{job="ts3ab-lb-agent"}"#, 1.0, 20);
    prom.wait_value(
        r#"sum(ts3ab_agent_bots{job="ts3ab-lb-agent",node="node-1"})"#,
        node1_bots as f64,
        20,
    );
    prom.wait_value(
        r#"node:node_memory_utilisation:ratio{node="node-1"}"#,
        0.25,
        20,
    );

    // The router half.
    prom.wait_value(r#"up{job="ts3ab-lb"}"#, 1.0, 20);
    prom.wait_value("sum(ts3ab_lb_node_bots)", all_bots as f64, 20);
    prom.wait_value(
        r#"sum(ts3ab_lb_node_bots{node="node-1"})"#,
        node1_bots as f64,
        20,
    );
    // Router and agent series join on the node label.
    prom.wait_value(
        "sum by (node) (ts3ab_lb_node_bots) - on (node) sum by (node) (ts3ab_agent_bots)",
        0.0,
        20,
    );
    prom.wait_value("sum(ts3ab_lb_node_capacity_bots)", 20.0, 20);
    prom.wait_value(
        "cluster:ts3ab_lb_capacity_used:ratio",
        all_bots as f64 / 20.0,
        20,
    );
    // The dashboard's node variable lists the router's nodes.
    let values = prom.get_json("/api/v1/label/node/values?match[]=ts3ab_lb_node_up");
    assert_eq!(
        values["data"],
        serde_json::json!(["node-0", "node-1"]),
        "{values}"
    );

    // Every rule evaluates without an error.
    wait_for(20, "every rule evaluated without an error", || {
        let v = prom.get_json("/api/v1/rules");
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let bad: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {}: {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if !bad.is_empty() {
            eprintln!("rules not ok yet: {bad:?}");
        }
        rules.len() >= 20 && bad.is_empty()
    });
    // Every dashboard expression runs on the data (no many-to-many matches, no type errors).
    for (title, expr) in dashboard_exprs(&dashboard()) {
        if let Err(e) = prom.query(&substitute(&expr)) {
            panic!("panel {title:?}: `{expr}` fails in Prometheus: {e}");
        }
    }
    drop(prom);
    drop(agent);
}
