//! The read-only view of the cluster the planner works on.
//!
//! Owns: the [`View`] trait (bot and template locations, node names), its implementation
//! over `Cluster`, and the [`TenantView`] a key of scope `own` plans through: another
//! tenant's bot or template is simply absent from it, so the planner takes the very path a
//! nonexistent id or name takes and the answer is the same, byte for byte. Does not own:
//! the tables behind it (`cluster`) or any decision (`planner`).

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
    /// The node of a template that exists but that this view must not show (another
    /// tenant's): a request naming it must not reach that node, where the name would be
    /// found. None for every name in a view that shows everything.
    fn hidden_template(&self, _name: &str) -> Option<NodeId> {
        None
    }
    /// A healthy node other than `avoid` (for requests naming a hidden template).
    fn node_besides(&self, _avoid: &[NodeId]) -> Option<NodeId> {
        None
    }
}

/// The cluster as key `tenant` (scope `own`) sees it: only the bots and templates it owns.
pub struct TenantView<'a> {
    /// The whole cluster.
    pub cluster: &'a crate::cluster::Cluster,
    /// The key name.
    pub tenant: &'a str,
}

impl View for TenantView<'_> {
    fn locate(&self, gid: u32) -> Option<(NodeId, u32)> {
        if !self.cluster.bot_owned_by(gid, self.tenant) {
            return None;
        }
        self.cluster.locate(gid)
    }
    fn template_owner(&self, name: &str) -> Option<NodeId> {
        if !self.cluster.template_owned_by(name, self.tenant) {
            return None;
        }
        self.cluster.template_owner(name)
    }
    fn node_name(&self, node: NodeId) -> String {
        View::node_name(self.cluster, node)
    }
    fn bot_template(&self, gid: u32) -> Option<String> {
        if !self.cluster.bot_owned_by(gid, self.tenant) {
            return None;
        }
        self.cluster.bot_template(gid)
    }
    fn hidden_template(&self, name: &str) -> Option<NodeId> {
        self.cluster.template_hidden_from(name, self.tenant)
    }
    fn node_besides(&self, avoid: &[NodeId]) -> Option<NodeId> {
        self.cluster.node_besides(avoid)
    }
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
