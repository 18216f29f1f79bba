//! What `bot/list` shows from the router's own records: the bots being brought back after a
//! restart of their node (for every node at once, in id order), and everything a node is
//! known to hold while it is down (in TS3AudioBot's order: named bots, offline templates,
//! temporary bots).
//!
//! Owns: those two lists. Does not own: the live lists from nodes (`proxy::exec`) or the
//! tables (`view`).

use std::collections::HashMap;

use crate::cluster::failover::is_router_template;
use crate::cluster::node::NodeId;
use crate::cluster::view::Cluster;
use crate::protocol::api_json::BotInfo;

/// The name a client sees for a bot running template `t`: none for the router's own templates
/// (a rebuilt temporary bot stays unnamed).
fn client_name(t: Option<&str>) -> Option<String> {
    t.filter(|n| !is_router_template(n)).map(str::to_string)
}

impl Cluster {
    /// What `bot/list` adds for the nodes that answer: each node's bots that went down with a
    /// restart and are being brought back, as "connecting" (1), in id order. One pass over
    /// the bots for the whole fan-out (a pass per node would cost nodes × bots per `bot/list`:
    /// 500,000 visits at 50 nodes and 10,000 bots).
    pub fn restoring_lists(&self) -> HashMap<NodeId, Vec<BotInfo>> {
        let t = self.tables.read();
        let mut by_node: HashMap<NodeId, Vec<BotInfo>> = HashMap::new();
        for (gid, b) in t.bots.iter().filter(|(_, b)| b.restoring) {
            by_node.entry(b.node).or_default().push(BotInfo {
                id: Some(*gid),
                name: client_name(b.record.template.as_deref()),
                server: b.server.clone().or_else(|| b.record.address.clone()),
                status: 1,
            });
        }
        for v in by_node.values_mut() {
            v.sort_by_key(|b| b.id);
        }
        by_node
    }

    /// What `bot/list` shows for a node the router cannot reach: its known bots as
    /// "connecting" (1), and its templates that are not running as offline entries.
    pub fn fallback_list(&self, node: NodeId) -> Vec<BotInfo> {
        let t = self.tables.read();
        let mut running_names = std::collections::HashSet::new();
        let mut named = Vec::new();
        let mut unnamed = Vec::new();
        let restoring = t
            .bots
            .iter()
            .filter(|(_, b)| b.restoring && b.node == node)
            .map(|(g, _)| g);
        for gid in t
            .slots
            .get(&node)
            .into_iter()
            .flat_map(|s| s.values())
            .chain(restoring)
        {
            let Some(b) = t.bots.get(gid) else { continue };
            let info = BotInfo {
                id: Some(*gid),
                name: client_name(b.record.template.as_deref()),
                server: b.server.clone(),
                status: 1,
            };
            match &info.name {
                Some(n) => {
                    running_names.insert(n.clone());
                    named.push(info);
                }
                None => unnamed.push(info),
            }
        }
        let mut offline: Vec<BotInfo> = t
            .node_templates
            .get(&node)
            .into_iter()
            .flatten()
            .filter_map(|name| t.templates.get(name))
            .filter(|tp| {
                !running_names.contains(&tp.record.name) && !is_router_template(&tp.record.name)
            })
            .map(|tp| BotInfo {
                id: None,
                name: Some(tp.record.name.clone()),
                server: Some(
                    tp.record
                        .settings
                        .get("connect.address")
                        .cloned()
                        .unwrap_or_default(),
                ),
                status: 0,
            })
            .collect();
        offline.sort_by(|a, b| a.name.cmp(&b.name));
        named.extend(offline);
        named.extend(unnamed);
        named
    }
}
