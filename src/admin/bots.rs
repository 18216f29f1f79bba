//! The bot endpoints: search and page through the cluster's bots, show one, stop one.
//!
//! Owns: the `Bot` object the API shows (never the identity key or a password), the filters
//! (`node`, `status`, `q` on template, server and nickname) and paging, and stopping a bot
//! on its node. Does not own: moving bots (`operations`) or the bot records (`cluster`).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::admin::error::AdminError;
use crate::admin::AdminState;
use crate::cluster::{BotSnapshot, NodeId};
use crate::node::api::disconnect_target;

/// The most bots one page holds.
const MAX_PER_PAGE: usize = 500;

fn bot_json(node: Option<&str>, restoring: bool, healthy: bool, b: &BotSnapshot) -> Value {
    // The status as the router sees it: it does not keep each bot's live status.
    let status = if restoring || !healthy { 1 } else { 2 };
    json!({
        "id": b.gid,
        "node": node,
        "template": b.record.template,
        "server": b.server.clone().or_else(|| b.record.address.clone()),
        "status": status,
        "nickname": b.record.nickname,
        "channel": b.record.channel,
        "created_ms": b.record.created_ms,
        "restoring": restoring,
        "has_identity": b.record.identity.is_some(),
        // The key that created it (tenants see only their own bots).
        "owner": b.record.owner,
    })
}

fn node_names(state: &AdminState) -> HashMap<NodeId, (String, bool)> {
    state
        .cluster
        .nodes()
        .iter()
        .map(|n| (n.id, (n.name.to_string(), n.is_healthy())))
        .collect()
}

/// One bot as the API shows it, with its node's name and health from `names`.
fn row(
    names: &HashMap<NodeId, (String, bool)>,
    node: NodeId,
    restoring: bool,
    b: &BotSnapshot,
) -> Value {
    let (name, healthy) = names
        .get(&node)
        .map(|(n, h)| (Some(n.as_str()), *h))
        .unwrap_or((None, false));
    bot_json(name, restoring, healthy, b)
}

/// Every bot as the API shows it, by cluster id.
fn all(state: &AdminState) -> Vec<(u32, Value)> {
    let names = node_names(state);
    state
        .cluster
        .all_bots()
        .into_iter()
        .map(|(node, restoring, b)| (b.gid, row(&names, node, restoring, &b)))
        .collect()
}

/// A page of bots.
pub fn list(state: &AdminState, query: &HashMap<String, String>) -> Result<Value, AdminError> {
    let num = |k: &str, default: usize| -> Result<usize, AdminError> {
        match query.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| AdminError::invalid(k, format!("`{v}` is not a number"))),
        }
    };
    let page = num("page", 1)?.max(1);
    let per_page = num("per_page", 50)?.clamp(1, MAX_PER_PAGE);
    let status = match query.get("status") {
        None => None,
        Some(s) => Some(
            s.parse::<u8>()
                .ok()
                .filter(|v| *v <= 2)
                .ok_or_else(|| AdminError::invalid("status", "must be 0, 1 or 2"))?,
        ),
    };
    let q = query.get("q").map(|s| s.to_lowercase());
    let rows: Vec<Value> = all(state)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| {
            query
                .get("node")
                .is_none_or(|n| v["node"].as_str() == Some(n))
        })
        .filter(|v| status.is_none_or(|s| v["status"].as_u64() == Some(u64::from(s))))
        .filter(|v| {
            q.as_deref().is_none_or(|q| {
                ["template", "server", "nickname"]
                    .iter()
                    .any(|f| v[*f].as_str().is_some_and(|s| s.to_lowercase().contains(q)))
                    || v["id"].as_u64().is_some_and(|id| id.to_string() == q)
            })
        })
        .collect();
    let total = rows.len();
    let bots: Vec<Value> = rows
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    Ok(json!({ "total": total, "page": page, "per_page": per_page, "bots": bots }))
}

fn parse_id(id: &str) -> Result<u32, AdminError> {
    id.parse()
        .map_err(|_| AdminError::NotFound(format!("no bot with id `{id}`")))
}

/// One bot.
pub fn get(state: &AdminState, id: &str) -> Result<Value, AdminError> {
    let gid = parse_id(id)?;
    let names = node_names(state);
    state
        .cluster
        .whereabouts(gid)
        .map(|w| row(&names, w.node, w.restoring, &w.snapshot))
        .ok_or_else(|| AdminError::NotFound(format!("no bot with id {gid}")))
}

/// Stops a bot on its node (`bot disconnect`), and forgets it once the node confirmed.
pub async fn stop(state: &AdminState, id: &str) -> Result<(), AdminError> {
    let gid = parse_id(id)?;
    let (node_id, lid) = state
        .cluster
        .locate(gid)
        .ok_or_else(|| AdminError::NotFound(format!("no bot with id {gid}")))?;
    let node = state.cluster.node(node_id).ok_or_else(|| {
        AdminError::Conflict(format!(
            "bot {gid} is being started again after its node restarted; try again in a few seconds"
        ))
    })?;
    let target = disconnect_target(lid);
    let r = state
        .client
        .get(
            &node.endpoint(),
            target.as_bytes(),
            state.config.routing.request_timeout,
        )
        .await
        .map_err(|e| AdminError::Conflict(format!("node {} could not stop it: {e}", node.name)))?;
    if r.status != 204 && r.status != 200 {
        return Err(AdminError::Conflict(format!(
            "node {} refused to stop it (HTTP {}: {})",
            node.name,
            r.status,
            r.snippet()
        )));
    }
    state.cluster.forget_bot(gid, node.id);
    Ok(())
}
