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
    /// What the nodes call the template a client names `client`, when that differs (a
    /// tenant's templates live under its own prefix); None: the same name.
    fn node_template(&self, _client: &str) -> Option<String> {
        None
    }
    /// Whether a template, by the name the cluster knows it by, exists and is not this
    /// view's to touch.
    fn hides_node_template(&self, _name: &str) -> bool {
        false
    }
}

/// The prefix of every template name a tenant's templates have on the nodes:
/// `ts3ab-lb-t<12 hex digits of its key name's digest>-`. Template names are per tenant
/// (two tenants may each have `music`); the prefix lies inside the name space reserved for
/// the router (no client can create such a name), the fixed-length tag ends at the first
/// `-` after it, and the tags of all keys are checked to differ, so no two tenants' names
/// and no client's name can ever meet on a node. Every answer to the tenant has it removed.
pub fn tenant_prefix(tenant: &str) -> String {
    format!(
        "{}t{}-",
        crate::cluster::failover::RESERVED_PREFIX,
        crate::config::tenant_tag(tenant)
    )
}

/// The node-side name of a tenant's template `client` (None when the name holds characters
/// TS3AudioBot never allows in a template name: the node refuses it as it is, and no
/// template of that name can exist to be reached).
pub fn tenant_template(prefix: &str, client: &str) -> Option<String> {
    let valid = !client.is_empty()
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then(|| format!("{prefix}{client}"))
}

/// The cluster as key `tenant` (scope `own`) sees it: only the bots and templates it owns,
/// templates by the names it gave them.
pub struct TenantView<'a> {
    /// The whole cluster.
    pub cluster: &'a crate::cluster::Cluster,
    /// The key name.
    pub tenant: &'a str,
    /// Its [`tenant_prefix`].
    pub prefix: String,
}

impl TenantView<'_> {
    /// The name the cluster knows a template of this tenant by.
    fn mapped(&self, client: &str) -> String {
        tenant_template(&self.prefix, client).unwrap_or_else(|| client.to_string())
    }
}

impl View for TenantView<'_> {
    fn locate(&self, gid: u32) -> Option<(NodeId, u32)> {
        if !self.cluster.bot_owned_by(gid, self.tenant) {
            return None;
        }
        self.cluster.locate(gid)
    }
    fn template_owner(&self, name: &str) -> Option<NodeId> {
        let name = self.mapped(name);
        if !self.cluster.template_owned_by(&name, self.tenant) {
            return None;
        }
        self.cluster.template_owner(&name)
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
        self.cluster
            .template_hidden_from(&self.mapped(name), self.tenant)
    }
    fn node_besides(&self, avoid: &[NodeId]) -> Option<NodeId> {
        self.cluster.node_besides(avoid)
    }
    fn node_template(&self, client: &str) -> Option<String> {
        tenant_template(&self.prefix, client)
    }
    fn hides_node_template(&self, name: &str) -> bool {
        self.cluster
            .template_hidden_from(name, self.tenant)
            .is_some()
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
