//! Fencing: a node that comes back after failover loses the copies that now run elsewhere.
//!
//! Owns: [`fence`] (and [`try_fence`], [`fence_listed`]), run by the poller before it
//! reconciles a node, by the return watch the moment a down node answers again (`returns`)
//! and by failover when a node answers in the middle of its evacuation, one at a time per
//! node (`Node::fencing`): it stops the copies of
//! moved bots the node still runs (`bot disconnect`) and deletes their moved templates there
//! (`settings delete`, so a restart with `run = true` cannot start them), checks the list
//! again, and only then forgets the fences durably, so one identity never runs on two nodes
//! the router can reach. Also [`stop_strays`]: the copies a rebuild left on a node without
//! recording them (a router crash after the `bot connect`), when the bot turned out to be
//! alive where it was, are stopped before the list is reconciled (not adopted as new bots).
//! Does not own: recording fences (`view`, when a bot moves) or liveness (`health`).

use std::time::Duration;

use futures::StreamExt;

use crate::cluster::failover::router_template_bot;
use crate::cluster::{Cluster, Node};
use crate::node::api::{delete_template_target, disconnect_target, fetch_identity, read_bot_list};
use crate::node::client::NodeClient;
use crate::protocol::api_json::BotInfo;
use crate::store::{FenceRecord, WRITE_DEADLINE};

/// Requests sent at once to one node (as many connections to it) while copies are stopped.
const STOPS_AT_ONCE: usize = 16;
/// Copies stopped by one `json merge` request (about 40 bytes of target each: a batch stays
/// well under the 8 KiB request line Kestrel allows).
const STOPS_PER_REQUEST: usize = 32;

/// One request that stops the bots in `lids` (`json merge` of their `bot disconnect`s).
fn merged_disconnect_target(lids: impl Iterator<Item = u32>) -> String {
    let mut t = String::from("/api/json/merge");
    for lid in lids {
        t.push_str(&format!("/(/bot/use/{lid}/(/bot/disconnect))"));
    }
    t
}

/// Whether a bot a node lists (local id, template name, server) is the copy fence `f`
/// names: for a template copy any running bot of that template (a restart gives it a new
/// id), for a temporary copy the same slot and the same address.
pub fn names_copy(
    f: &FenceRecord,
    id: Option<u32>,
    name: Option<&str>,
    server: Option<&str>,
) -> bool {
    match (&f.template, name) {
        (Some(t), Some(n)) => t == n,
        (None, None) => {
            id == Some(f.local_id)
                && match (&f.address, server) {
                    (Some(a), Some(s)) => a == s,
                    _ => true,
                }
        }
        _ => false,
    }
}

/// Why a node could not be fenced (it stays unused until it can).
#[derive(Debug, thiserror::Error)]
#[error("node {node}: could not stop the copies of moved bots it still holds: {reason}")]
pub struct FenceError {
    node: String,
    reason: String,
    /// The node could not be reached at all (so failover may still take it for dead).
    pub unreachable: bool,
}

/// Stops the copies of moved bots that `node` still holds, then forgets those fences (returns
/// whether there were any). Waits while somebody else fences the node.
pub async fn fence(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    timeout: Duration,
) -> Result<bool, FenceError> {
    if cluster.fences_on(node.id).is_empty() {
        return Ok(false);
    }
    let guard = node.fencing.lock().await;
    fence_locked(cluster, client, node, timeout, None, guard).await
}

/// [`fence`] for the poller, which must not wait: None while somebody else (the return
/// watch, failover) fences the node. Pingora awaits every node's poll together, so a poll
/// held up here would hold up the polls of all nodes.
pub async fn try_fence(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    timeout: Duration,
) -> Option<Result<bool, FenceError>> {
    if cluster.fences_on(node.id).is_empty() {
        return Some(Ok(false));
    }
    let guard = node.fencing.try_lock().ok()?;
    Some(fence_locked(cluster, client, node, timeout, None, guard).await)
}

/// [`fence`], starting from `listed`, the node's list as just read (one round trip less for
/// a node that just came back, whose bots are about to reconnect). If somebody else was
/// fencing meanwhile the list may be stale, and it is read again.
pub async fn fence_listed(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    timeout: Duration,
    listed: Vec<BotInfo>,
) -> Result<bool, FenceError> {
    if cluster.fences_on(node.id).is_empty() {
        return Ok(false);
    }
    match node.fencing.try_lock() {
        Ok(guard) => fence_locked(cluster, client, node, timeout, Some(listed), guard).await,
        Err(_) => {
            let guard = node.fencing.lock().await;
            fence_locked(cluster, client, node, timeout, None, guard).await
        }
    }
}

/// The fencing itself, under the node's lock (`_fencing`): one at a time per node, and
/// whoever waited finds the fences already cleared.
async fn fence_locked(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    timeout: Duration,
    listed: Option<Vec<BotInfo>>,
    _fencing: tokio::sync::MutexGuard<'_, ()>,
) -> Result<bool, FenceError> {
    let fences = cluster.fences_on(node.id);
    if fences.is_empty() {
        return Ok(false);
    }
    let err = |reason: String| FenceError {
        node: node.name.to_string(),
        reason,
        unreachable: false,
    };
    let unreachable = |reason: String| FenceError {
        unreachable: true,
        ..err(reason)
    };
    let endpoint = node.endpoint();
    let read = || async {
        read_bot_list(client, &endpoint, timeout)
            .await
            .map_err(|e| FenceError {
                unreachable: e.unreachable(),
                ..err(e.to_string())
            })
    };
    let listed = match listed {
        Some(l) => l,
        None => read().await?,
    };
    // All copies in as few requests as possible: a node that comes back after a freeze has
    // its bots' reconnects due about a second later (`reconnect.ontimeout`), and a queue of
    // requests that waited for it while it was frozen to work through first. So the copies
    // are stopped in `json merge` batches on the connection just used (each element fails
    // to `null` on its own; the list read afterwards tells what stopped), and one by one
    // only what is still listed then.
    let (endpoint, err, unreachable) = (&endpoint, &err, &unreachable);
    let is_copy = |b: &BotInfo| {
        b.id.is_some()
            && fences
                .iter()
                .any(|f| names_copy(f, b.id, b.name.as_deref(), b.server.as_deref()))
    };
    let copies: Vec<&BotInfo> = listed.iter().filter(|b| is_copy(b)).collect();
    let batches: Vec<_> = copies
        .chunks(STOPS_PER_REQUEST)
        .map(|batch| {
            let target = merged_disconnect_target(batch.iter().filter_map(|b| b.id));
            async move {
                // Whatever it answers, the list read below decides.
                let _ = client.get(endpoint, target.as_bytes(), timeout).await;
            }
        })
        .collect();
    futures::stream::iter(batches)
        .buffer_unordered(STOPS_AT_ONCE)
        .collect::<Vec<()>>()
        .await;
    let still: Vec<BotInfo> = if copies.is_empty() {
        Vec::new()
    } else {
        read().await?.into_iter().filter(|b| is_copy(b)).collect()
    };
    for b in &copies {
        if !still.iter().any(|s| s.id == b.id) {
            log::warn!(
                "node {}: stopped bot {} (`{}`), which runs elsewhere since failover",
                node.name,
                b.id.unwrap_or_default(),
                b.name.as_deref().unwrap_or("temporary")
            );
        }
    }
    let stop = |lid: u32, b: &BotInfo| {
        let shown = b.name.clone().unwrap_or_else(|| "temporary".into());
        async move {
            let target = disconnect_target(lid);
            match client.get(endpoint, target.as_bytes(), timeout).await {
                Ok(r) if r.status == 204 || r.status == 200 => {
                    log::warn!(
                        "node {}: stopped bot {lid} (`{shown}`), which runs elsewhere since failover",
                        node.name
                    );
                    Ok(())
                }
                Ok(r) => Err(err(format!("bot disconnect answered HTTP {}", r.status))),
                Err(e) if e.not_sent() => Err(unreachable(e.to_string())),
                Err(e) => Err(err(e.to_string())),
            }
        }
    };
    // The list read after the batches already shows that nothing fenced runs, unless some
    // copy was still listed and is stopped one by one now.
    let verified = !copies.is_empty() && still.is_empty();
    let stops: Vec<_> = still.iter().filter_map(|b| Some(stop(b.id?, b))).collect();
    let stopped: Vec<Result<(), FenceError>> = futures::stream::iter(stops)
        .buffer_unordered(STOPS_AT_ONCE)
        .collect()
        .await;
    stopped.into_iter().collect::<Result<(), _>>()?;
    // Templates that moved: delete them here, so a restart (`run = true`) cannot start them.
    for f in &fences {
        let Some(name) = &f.template else { continue };
        if cluster.template_owner(name) == Some(node.id) {
            continue;
        }
        if listed.iter().any(|b| b.name.as_deref() == Some(name)) {
            let target = delete_template_target(name);
            match client.get(endpoint, target.as_bytes(), timeout).await {
                Ok(r) if r.status == 204 || r.status == 200 => {}
                Ok(r) => {
                    return Err(err(format!(
                        "settings delete {name} answered HTTP {}",
                        r.status
                    )))
                }
                Err(e) if e.not_sent() => return Err(unreachable(e.to_string())),
                Err(e) => return Err(err(e.to_string())),
            }
        }
    }
    // Check before letting go: nothing fenced may still run.
    if !verified && read().await?.iter().any(is_copy) {
        return Err(err("a stopped copy is still listed".into()));
    }
    cluster
        .clear_fences(node.id, &fences, WRITE_DEADLINE)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(true)
}

/// Stops the stray copies in `listed`, `node`'s list: a running bot of a template whose bot
/// the router places on another node that is up (`Cluster::stray_owner`), with the same
/// TeamSpeak identity (read from the copy: a template of the same name made by hand is left
/// alone). Such a copy was started by a rebuild (failover, a restore) that a router crash
/// kept from being recorded, while the bot's own node only looked dead (frozen, cut off):
/// the bot still runs there, so the copy would be the identity's second client. Its template
/// is deleted too (a restart with `run = true` would start it again). Returns the list
/// without the copies stopped; one that cannot be stopped stays in it (and is tried again at
/// the next poll).
pub async fn stop_strays(
    cluster: &Cluster,
    client: &NodeClient,
    node: &Node,
    listed: Vec<BotInfo>,
    timeout: Duration,
) -> Vec<BotInfo> {
    let endpoint = node.endpoint();
    let mut kept = Vec::with_capacity(listed.len());
    for b in listed {
        let (Some(lid), Some(name)) = (b.id, b.name.as_deref()) else {
            kept.push(b);
            continue;
        };
        let Some((gid, identity)) = cluster.stray_owner(node.id, name) else {
            kept.push(b);
            continue;
        };
        match fetch_identity(client, &endpoint, lid, timeout).await {
            Ok(id) if id.key == identity.key => {}
            _ => {
                kept.push(b);
                continue;
            }
        }
        let stopped = client
            .get(&endpoint, disconnect_target(lid).as_bytes(), timeout)
            .await
            .is_ok_and(|r| r.status == 204 || r.status == 200);
        if !stopped {
            kept.push(b);
            continue;
        }
        log::warn!(
            "node {}: stopped bot {lid} (`{name}`), a second copy of bot {gid} (same identity), which runs on another node",
            node.name
        );
        if router_template_bot(name).is_some() || cluster.template_owner(name) != Some(node.id) {
            let _ = client
                .get(&endpoint, delete_template_target(name).as_bytes(), timeout)
                .await;
        }
    }
    kept
}
