//! Who owns which bot and template: what a key of scope `own` may see, and how many bots a
//! key has.
//!
//! Owns: reading the owner (a key name) recorded on bots and templates, for the tenant view
//! the planner works on and for `max_bots`. Does not own: recording owners (creates in
//! `view`, template claims in `records`), or deciding what a hidden thing looks like
//! (`proxy::routing`).

use crate::cluster::node::NodeId;
use crate::cluster::view::Cluster;

impl Cluster {
    /// Whether bot `gid` belongs to key `owner`.
    pub fn bot_owned_by(&self, gid: u32, owner: &str) -> bool {
        self.tables
            .read()
            .bots
            .get(&gid)
            .is_some_and(|b| b.record.owner.as_deref() == Some(owner))
    }

    /// Whether template `name` belongs to key `owner`.
    pub fn template_owned_by(&self, name: &str, owner: &str) -> bool {
        self.tables
            .read()
            .templates
            .get(name)
            .is_some_and(|t| t.record.owner.as_deref() == Some(owner))
    }

    /// The node of template `name` when it exists but does not belong to `owner`.
    pub fn template_hidden_from(&self, name: &str, owner: &str) -> Option<NodeId> {
        self.tables
            .read()
            .templates
            .get(name)
            .filter(|t| t.record.owner.as_deref() != Some(owner))
            .map(|t| t.node)
    }

    /// How many bots key `owner` has right now (running or being brought back; a stopped
    /// bot is forgotten, so it no longer counts).
    pub fn bots_owned_by(&self, owner: &str) -> usize {
        self.tables
            .read()
            .bots
            .values()
            .filter(|b| b.record.owner.as_deref() == Some(owner))
            .count()
    }

    /// A healthy node other than those in `avoid` (the first in list order), for requests
    /// that name a template the caller must not know about: they go where that template is
    /// not, so the answer is the one any unknown name gets.
    pub fn node_besides(&self, avoid: &[NodeId]) -> Option<NodeId> {
        self.nodes()
            .iter()
            .find(|n| n.is_healthy() && !avoid.contains(&n.id))
            .map(|n| n.id)
    }
}
