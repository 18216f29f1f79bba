//! The node endpoints: list, add (checked first), edit, state, remove.
//!
//! Owns: turning admin JSON into node changes (the rules are the config file's:
//! `NodeConfig::parse`), checking a new node before it is saved, getting it polled at once,
//! and the `Node` object the API shows. Does not own: the node table and its rules
//! (`cluster::membership`) or moving bots (`operations`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::error::AdminError;
use crate::admin::AdminState;
use crate::cluster::health::poll_and_observe;
use crate::cluster::membership::NodeEdit;
use crate::cluster::{Node, NodeSource};
use crate::config::{NodeConfig, NodeState};
use crate::node::api::check_node;
use crate::store::WRITE_DEADLINE;

/// The API's view of a node.
pub fn node_json(state: &AdminState, n: &Node) -> Value {
    let poll = n.last_poll();
    let holdings = state.cluster.holdings(n.id);
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
    )?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    url: Option<String>,
    // `auth: null` removes the credentials; a missing `auth` keeps them.
    #[serde(default, deserialize_with = "some")]
    auth: Option<Option<String>>,
    capacity: Option<u32>,
    state: Option<String>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Edits a node (url, auth, capacity, state). A new URL or new credentials are checked
/// first, like an added node.
pub async fn edit(state: &AdminState, name: &str, body: &[u8]) -> Result<Value, AdminError> {
    let p: Patch = crate::admin::http::json_body(body)?;
    let node = get(state, name)?;
    let edit = NodeEdit {
        url: p.url,
        auth: p.auth,
        capacity: p.capacity,
        state: p.state.as_deref().map(parse_state).transpose()?,
    };
    let endpoint_changes = edit.url.is_some() || edit.auth.is_some();
    if endpoint_changes {
        let old = node.endpoint();
        let url = edit.url.clone().unwrap_or_else(|| old.url.clone());
        let auth = edit.auth.clone().unwrap_or_else(|| old.credentials.clone());
        let probe = NodeConfig::parse(name, &url, auth, 1, NodeState::Ready)?;
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
