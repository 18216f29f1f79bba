//! The read-only view of the cluster the planner works on.
//!
//! Owns: the [`View`] trait (bot and template locations, node names) and its implementation
//! over `Cluster`. Does not own: the tables behind it (`cluster`) or any decision (`planner`).

use crate::cluster::NodeId;

/// The read-only view of the cluster the planner needs (implemented by `Cluster`; tests may
/// use a map).
pub trait View {
    /// Node and local id of a cluster id.
    fn locate(&self, gid: u32) -> Option<(NodeId, u32)>;
    /// Node holding a template.
    fn template_owner(&self, name: &str) -> Option<NodeId>;
    /// Name of a node (for messages).
    fn node_name(&self, node: NodeId) -> String;
    /// Template a bot runs.
    fn bot_template(&self, gid: u32) -> Option<String>;
}

impl View for crate::cluster::Cluster {
    fn locate(&self, gid: u32) -> Option<(NodeId, u32)> {
        crate::cluster::Cluster::locate(self, gid)
    }
    fn template_owner(&self, name: &str) -> Option<NodeId> {
        crate::cluster::Cluster::template_owner(self, name)
    }
    fn node_name(&self, node: NodeId) -> String {
        self.node(node)
            .map(|n| n.name.to_string())
            .unwrap_or_default()
    }
    fn bot_template(&self, gid: u32) -> Option<String> {
        crate::cluster::Cluster::bot_template(self, gid)
    }
}
