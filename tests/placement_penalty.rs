//! Load-aware placement (`placement.strategy: penalty`) against the real router: fake nodes,
//! and per node a tiny in-test agent serving a `/summary` whose figures the test controls
//! (the router shares no code with the agent crate, only the JSON). A node whose agent
//! reports pressure gets fewer new bots, no node ever goes over its capacity, an agent that
//! stops answering makes placement go by bot counts again, and the admin API shows the
//! figures (never the token).

mod support;

use serde_json::{json, Value};
use support::fake_agent::{summary, FakeAgent, AGENT_TOKEN};
use support::*;

fn hot() -> Value {
    summary(0.95, 0.1)
}

fn idle() -> Value {
    summary(0.05, 0.9)
}

fn admin_call(r: &Router, method: &str, path: &str, body: Option<Value>) -> Response {
    r.admin_request(method, path, body.as_ref())
}

fn admin_nodes(r: &Router) -> Vec<Value> {
    let resp = admin_call(r, "GET", "/admin/api/nodes", None);
    assert_eq!(resp.status, 200, "{}", resp.text());
    serde_json::from_slice(&resp.body).expect("nodes")
}

fn create(r: &Router, name: &str) -> Response {
    r.get(&format!("/api/bot/connect/to/{name}.example.com"))
}

fn counts(nodes: &[FakeNode]) -> Vec<usize> {
    nodes.iter().map(|n| n.bots().len()).collect()
}

/// A router placing by penalty. `agent_ms` is its agent interval: figures go stale after
/// three of them, so a test that needs them fresh throughout gives a loaded machine room.
fn penalty_router(
    nodes: &[FakeNode],
    agents: &[&FakeAgent],
    capacities: Vec<u32>,
    agent_ms: u64,
) -> Router {
    Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            capacities,
            admin: true,
            agents: agents.iter().map(|a| Some(a.yaml())).collect(),
            extra_yaml: format!(
                "placement: {{ strategy: penalty, agent_interval_ms: {agent_ms} }}\n"
            ),
            ..RouterOpts::default()
        },
    )
}

/// Waits until the admin API shows every node's agent figures as fresh.
fn wait_for_fresh_agents(r: &Router) {
    r.wait_until(10, "fresh agent figures", |r| {
        admin_nodes(r).iter().all(|n| n["agent"]["fresh"] == true)
    });
}

/// With `strategy: penalty`, the node whose agent reports high CPU and memory pressure gets
/// none of the first bots (it scores more than a full node), then takes bots only when the
/// other node is full; no node ever goes over its capacity, and the create after that is
/// refused.
#[test]
fn a_loaded_node_gets_fewer_bots_and_no_node_goes_over_capacity() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let (loaded, calm) = (
        FakeAgent::start(Some(hot())),
        FakeAgent::start(Some(idle())),
    );
    let router = penalty_router(&nodes, &[&loaded, &calm], vec![4, 4], 2000);
    wait_for_fresh_agents(&router);

    let shown = admin_nodes(&router);
    let a = &shown[0]["agent"];
    assert_eq!(a["url"], loaded.url());
    assert_eq!(a["has_token"], true);
    assert_eq!(a["cpu_busy_ratio"], 0.95);
    assert_eq!(a["memory_available_ratio"], 0.1);
    assert_eq!(a["load1"], 3.5);
    assert_eq!(a["process_up"], true);
    assert!(a["age_ms"].as_u64().is_some(), "{a}");
    assert_eq!(a["error"], Value::Null);
    let hot_penalty = shown[0]["penalty"].as_f64().expect("penalty");
    assert!(hot_penalty > 1.0, "{hot_penalty}");
    assert!(shown[1]["penalty"].as_f64().expect("penalty") < 0.05);
    let text = serde_json::to_string(&shown).expect("json");
    assert!(
        !text.contains(AGENT_TOKEN),
        "the token never leaves the router"
    );

    for i in 0..4 {
        let r = create(&router, &format!("first{i}"));
        assert_eq!(r.status, 200, "create {i}: {}", r.text());
    }
    assert_eq!(
        counts(&nodes),
        vec![0, 4],
        "the loaded node got none of the first four"
    );
    for i in 0..4 {
        let r = create(&router, &format!("rest{i}"));
        assert_eq!(r.status, 200, "create {i}: {}", r.text());
    }
    assert_eq!(counts(&nodes), vec![4, 4]);
    let r = create(&router, "one-too-many");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["ErrorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("full")));
    assert_eq!(counts(&nodes), vec![4, 4], "no node over its capacity");
}

/// An agent that stops answering (here: 503) makes its figures stale after three agent
/// intervals; placement then goes by bot counts, so the loaded node gets bots again. When it
/// answers again, its pressure counts again.
#[test]
fn stale_or_missing_agent_data_falls_back_to_bot_counts() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let (loaded, calm) = (
        FakeAgent::start(Some(hot())),
        FakeAgent::start(Some(idle())),
    );
    let router = penalty_router(&nodes, &[&loaded, &calm], vec![10, 10], 200);
    wait_for_fresh_agents(&router);
    for i in 0..2 {
        assert_eq!(create(&router, &format!("a{i}")).status, 200);
    }
    assert_eq!(counts(&nodes), vec![0, 2]);

    loaded.set(None);
    router.wait_until(10, "the loaded node's figures to go stale", |r| {
        let n = &admin_nodes(r)[0];
        n["agent"]["fresh"] == false && n["penalty"] == 0.0
    });
    let n = &admin_nodes(&router)[0];
    assert!(
        n["agent"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{n}"
    );
    // The last figures are still shown, with their age.
    assert_eq!(n["agent"]["cpu_busy_ratio"], 0.95);
    for i in 0..2 {
        assert_eq!(create(&router, &format!("b{i}")).status, 200);
    }
    assert_eq!(
        counts(&nodes),
        vec![2, 2],
        "by counts the emptier node gets the bots"
    );

    loaded.set(Some(hot()));
    wait_for_fresh_agents(&router);
    assert_eq!(admin_nodes(&router)[0]["agent"]["error"], Value::Null);
    for i in 0..2 {
        assert_eq!(create(&router, &format!("c{i}")).status, 200);
    }
    assert_eq!(counts(&nodes), vec![2, 4], "its pressure counts again");
}

/// The admin API sets a node's agent on add and edit (the config rules, the field named),
/// reads it at once, shows its URL and figures but never its token, and removes it.
#[test]
fn the_admin_api_sets_shows_and_removes_agents() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let agent = FakeAgent::start(Some(idle()));
    let router = Router::start(
        &[&nodes[0]],
        RouterOpts {
            admin: true,
            ..RouterOpts::default()
        },
    );
    let shown = &admin_nodes(&router)[0];
    assert_eq!(shown["agent"], Value::Null);
    assert_eq!(shown["penalty"], 0.0);

    let r = admin_call(
        &router,
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"agent": {"url": agent.url(), "token": AGENT_TOKEN}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["agent"]["url"], agent.url());
    assert_eq!(j["agent"]["has_token"], true);
    assert_eq!(j["agent"]["fresh"], true, "read at once: {j}");
    assert_eq!(j["agent"]["cpu_busy_ratio"], 0.05);
    assert!(!r.text().contains(AGENT_TOKEN));

    // A new URL without a token keeps the token (the agent still answers).
    let r = admin_call(
        &router,
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"agent": {"url": format!("{}/", agent.url())}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["agent"]["error"], Value::Null, "{}", r.text());
    assert_eq!(r.json()["agent"]["has_token"], true);

    let r = admin_call(
        &router,
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"agent": {"url": "ftp://x"}})),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "agent.url");
    let r = admin_call(
        &router,
        "POST",
        "/admin/api/nodes",
        Some(
            json!({"name": "node-1", "url": nodes[1].url(), "auth": node_token(1),
                    "agent": {"url": agent.url(), "token": "has space"}}),
        ),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "agent.token");

    // Added with an agent whose token is wrong: the node is added, the agent's 401 shown.
    let r = admin_call(
        &router,
        "POST",
        "/admin/api/nodes",
        Some(
            json!({"name": "node-1", "url": nodes[1].url(), "auth": node_token(1),
                    "agent": {"url": agent.url(), "token": "wrong-token"}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    assert_eq!(j["agent"]["fresh"], false);
    assert!(
        j["agent"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{j}"
    );

    let r = admin_call(
        &router,
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"agent": null})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["agent"], Value::Null);
    let config = admin_call(&router, "GET", "/admin/api/config", None);
    assert_eq!(config.json()["placement"]["strategy"], "least_used");
}
