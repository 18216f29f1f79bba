//! The node endpoints: list, add (checked first), edit, state, remove.
//!
//! Owns: turning admin JSON into node changes (the rules are the config file's:
//! `NodeConfig::parse`, `AgentConfig::parse`), checking a new node before it is saved, getting
//! it (and its agent) read at once, and the `Node` object the API shows, with its agent's
//! figures and its penalty. Does not own: the node table and its rules
//! (`cluster::membership`), the penalty formula (`cluster::penalty`) or moving bots
//! (`operations`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::error::AdminError;
use crate::admin::AdminState;
use crate::cluster::agents::read_agent;
use crate::cluster::health::poll_and_observe;
use crate::cluster::membership::{AgentEdit, NodeEdit};
use crate::cluster::placement::penalty_score;
use crate::cluster::{Node, NodeSource};
use crate::config::{AgentConfig, NodeConfig, NodeState};
use crate::node::api::check_node;
use crate::store::WRITE_DEADLINE;

/// Four decimals are plenty for a score or a ratio read by people.
fn rounded(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The node's agent as the API shows it: where it is, whether it has a token (never the
/// token), the latest figures and their age, and why the latest read failed; `null` for a
/// node without an agent.
fn agent_json(state: &AdminState, n: &Node, now: Instant) -> Value {
    let Some(agent) = n.agent() else {
        return Value::Null;
    };
    let reading = n.agent_reading();
    let stale_after = state.config.placement.agent_stale_after();
    let s = reading.as_ref().map(|r| &r.summary);
    json!({
        "url": agent.url(),
        "has_token": agent.token().is_some(),
        "error": n.agent_error(),
        "age_ms": reading.as_ref().map(|r| {
            u64::try_from(now.saturating_duration_since(r.received).as_millis()).unwrap_or(u64::MAX)
        }),
        "fresh": n.fresh_agent_reading(now, stale_after).is_some(),
        "cpu_busy_ratio": s.and_then(|s| s.cpu_busy_ratio).map(rounded),
        "cpu_count": s.and_then(|s| s.cpu_count),
        "memory_available_ratio": s.and_then(|s| s.memory_available_ratio).map(rounded),
        "memory_total_bytes": s.and_then(|s| s.memory_total_bytes),
        "load1": s.and_then(|s| s.load1).map(rounded),
        "process_up": s.and_then(|s| s.process_up),
        "process_cpu_ratio": s.and_then(|s| s.process_cpu_ratio).map(rounded),
        "api_up": s.and_then(|s| s.api_up),
        "version": s.and_then(|s| s.version.clone()),
    })
}

/// The API's view of a node.
pub fn node_json(state: &AdminState, n: &Node) -> Value {
    let poll = n.last_poll();
    let holdings = state.cluster.holdings(n.id);
    let now = Instant::now();
    let stale_after = state.config.placement.agent_stale_after();
    json!({
        "name": &*n.name,
        "url": n.url(),
        "capacity": n.capacity.load(Ordering::Acquire),
        "state": n.state().as_str(),
        "healthy": n.is_healthy(),
        "bots": n.load.running(),
        "reserved": n.load.reserved(),
        "templates": holdings.templates,
        "restoring": holdings.restoring,
        "last_error": poll.error,
        "latency_ms": poll.latency_ms,
        "source": match n.source { NodeSource::Config => "config", NodeSource::Admin => "admin" },
        "has_auth": n.endpoint().credentials.is_some(),
        "ca_file": n.endpoint().trust.ca_file.clone(),
        "tls_host": n.endpoint().trust.tls_host.clone(),
        "agent": agent_json(state, n, now),
        // Shown under either strategy, so an operator can see what `penalty` would do.
        "penalty": rounded(penalty_score(n, now, stale_after)),
    })
}

fn parse_state(s: &str) -> Result<NodeState, AdminError> {
    match s {
        "ready" => Ok(NodeState::Ready),
        "drain" => Ok(NodeState::Drain),
        "maint" => Ok(NodeState::Maint),
        other => Err(AdminError::invalid(
            "state",
            format!("`{other}` is not one of ready, drain, maint"),
        )),
    }
}

/// The list, by id.
pub fn list(state: &AdminState) -> Value {
    Value::Array(
        state
            .cluster
            .nodes()
            .iter()
            .map(|n| node_json(state, n))
            .collect(),
    )
}

/// One node.
pub fn get(state: &AdminState, name: &str) -> Result<Arc<Node>, AdminError> {
    state
        .cluster
        .node_by_name(name)
        .ok_or_else(|| AdminError::NotFound(format!("no node named `{name}`")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    name: String,
    url: String,
    auth: Option<String>,
    capacity: Option<u32>,
    state: Option<String>,
    agent: Option<NewAgent>,
    ca_file: Option<String>,
    tls_host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgent {
    url: String,
    token: Option<String>,
}

/// Adds a node: checks it (version and bot list with its credentials) and refuses with the
/// node's problem in words, without saving; otherwise stores it and polls it at once, so it
/// takes bots from this answer on (at the latest within one poll interval).
pub async fn add(state: &AdminState, body: &[u8]) -> Result<Value, AdminError> {
    let n: NewNode = crate::admin::http::json_body(body)?;
    let st = n.state.as_deref().map(parse_state).transpose()?;
    let cfg = NodeConfig::parse(
        &n.name,
        &n.url,
        n.auth,
        n.capacity
            .unwrap_or(state.config.placement.default_capacity),
        st.unwrap_or_default(),
    )?
    .with_agent(
        n.agent
            .map(|a| AgentConfig::parse(&a.url, a.token))
            .transpose()?,
    )
    .with_tls_files(n.ca_file, n.tls_host, &|p| std::fs::read(p))?;
    if state.cluster.node_by_name(&cfg.name).is_some() {
        return Err(AdminError::Conflict(format!(
            "a node named `{}` exists already",
            cfg.name
        )));
    }
    check_node(&state.client, &cfg.endpoint(), state.config.health.timeout)
        .await
        .map_err(AdminError::NodeCheck)?;
    let node = state.cluster.add_node(cfg, WRITE_DEADLINE).await?;
    admitted(state, &node).await;
    agent_read(state, &node).await;
    Ok(node_json(state, &node))
}

/// After a node was added or its endpoint changed: the load balancer learns it and it is
/// polled once now instead of at the next round.
async fn admitted(state: &AdminState, node: &Node) {
    if let Err(e) = state.placer.lb().update().await {
        log::warn!("the load balancer did not take the node list yet: {e}");
    }
    if let Err(e) =
        poll_and_observe(&state.cluster, &state.client, node, &state.config.health).await
    {
        log::warn!("node {}: first poll failed: {e}", node.name);
    }
}

/// An agent that was just set is read at once, so the answer (and the panel) shows its
/// figures or its problem. Placement does not wait for it: until it answers, bot counts.
async fn agent_read(state: &AdminState, node: &Node) {
    let timeout = state
        .config
        .health
        .timeout
        .min(state.config.placement.agent_interval);
    read_agent(&state.client, node, timeout).await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    url: Option<String>,
    // `auth: null` removes the credentials; a missing `auth` keeps them.
    #[serde(default, deserialize_with = "some")]
    auth: Option<Option<String>>,
    capacity: Option<u32>,
    state: Option<String>,
    // `agent: null` removes the agent; a missing `agent` keeps it.
    #[serde(default, deserialize_with = "some")]
    agent: Option<Option<PatchAgent>>,
    // `null` goes back to the system roots / the URL's host; missing keeps the current one.
    #[serde(default, deserialize_with = "some")]
    ca_file: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    tls_host: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchAgent {
    url: String,
    // `token: null` removes it; a missing `token` keeps the agent's current one.
    #[serde(default, deserialize_with = "some")]
    token: Option<Option<String>>,
}

fn some<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Edits a node (url, auth, capacity, state). A new URL or new credentials are checked
/// first, like an added node.
pub async fn edit(state: &AdminState, name: &str, body: &[u8]) -> Result<Value, AdminError> {
    let p: Patch = crate::admin::http::json_body(body)?;
    let node = get(state, name)?;
    let mut edit = NodeEdit {
        url: p.url,
        auth: p.auth,
        capacity: p.capacity,
        state: p.state.as_deref().map(parse_state).transpose()?,
        agent: p.agent.map(|a| {
            a.map(|a| AgentEdit {
                url: a.url,
                token: a.token,
            })
        }),
        tls: None,
    };
    let agent_changes = edit.agent.is_some();
    let tls_changes = p.ca_file.is_some() || p.tls_host.is_some();
    let endpoint_changes = edit.url.is_some() || edit.auth.is_some() || tls_changes;
    if endpoint_changes {
        let old = node.endpoint();
        let url = edit.url.clone().unwrap_or_else(|| old.url.clone());
        let auth = edit.auth.clone().unwrap_or_else(|| old.credentials.clone());
        let probe = NodeConfig::parse(name, &url, auth, 1, NodeState::Ready)?;
        // The node is checked with the TLS settings it will have (the current ones unless
        // the edit sets them).
        let probe = if probe.target.tls || tls_changes {
            let ca_file = p.ca_file.unwrap_or_else(|| old.trust.ca_file.clone());
            let tls_host = p.tls_host.unwrap_or_else(|| old.trust.tls_host.clone());
            probe.with_tls_files(ca_file, tls_host, &|p| std::fs::read(p))?
        } else {
            probe
        };
        if tls_changes && probe.target.tls {
            edit.tls = Some(probe.tls.clone());
        }
        check_node(
            &state.client,
            &probe.endpoint(),
            state.config.health.timeout,
        )
        .await
        .map_err(AdminError::NodeCheck)?;
    }
    let node = state.cluster.edit_node(name, edit, WRITE_DEADLINE).await?;
    if endpoint_changes {
        admitted(state, &node).await;
    }
    if agent_changes {
        agent_read(state, &node).await;
    }
    Ok(node_json(state, &node))
}

/// Removes a node (refused with 409 while it holds bots or templates).
pub async fn remove(state: &AdminState, name: &str) -> Result<(), AdminError> {
    state.cluster.remove_node(name, WRITE_DEADLINE).await?;
    if let Err(e) = state.placer.lb().update().await {
        log::warn!("the load balancer did not take the node list yet: {e}");
    }
    Ok(())
}
