//! The plan types: what the planner decides about a request.
//!
//! Owns: [`Plan`] and what it carries: proxying to one node ([`ProxyPlan`]), answer edits
//! ([`Edits`]), bookkeeping once a node confirms ([`Effect`], [`ReadBack`]), creates
//! ([`CreatePlan`]) and split merges ([`MergePlan`], [`Element`]).
//! Does not own: making plans (`planner`, `merge`, `effects`) or carrying them out (`proxy`).

use crate::cluster::{CreateInfo, NodeId};
use crate::protocol::api_json::ApiError;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answer with this error, no node involved.
    Local(ApiError),
    /// Proxy to one node.
    Proxy(ProxyPlan),
    /// `bot list` over all nodes.
    FanOutList,
    /// `system info` summed over all nodes.
    SystemInfo,
    /// Send the command to every node.
    Broadcast {
        /// Request target to send (`/api/...`).
        target: Vec<u8>,
    },
    /// Create a bot or template on a chosen node.
    Create(CreatePlan),
    /// Run the elements of a `json merge` on their nodes and merge the results in order.
    Merge(MergePlan),
}

/// What pinned a request to its node, for error messages ("bot 7 runs on node ..."): words
/// are made only when a message needs them, not for every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Why {
    /// Nothing pinned it.
    #[default]
    Nothing,
    /// A bot, by cluster id.
    Bot(u32),
    /// A named template.
    Template(String),
    /// The template whose context a merge element runs in.
    TheTemplate,
}

impl Why {
    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        matches!(self, Why::Nothing)
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Nothing => Ok(()),
            Why::Bot(gid) => write!(f, "bot {gid}"),
            Why::Template(name) => write!(f, "template {name}"),
            Why::TheTemplate => f.write_str("the template"),
        }
    }
}

/// Proxying to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    /// The node; None = any healthy node.
    pub node: Option<NodeId>,
    /// Why this node (for error messages), e.g. "bot 7".
    pub why: Why,
    /// The request target to send, when it differs from the client's.
    pub target: Option<Vec<u8>>,
    /// Edits to the answer.
    pub edits: Edits,
    /// Bookkeeping to do when the node confirms (204/200).
    pub effects: Vec<Effect>,
    /// The request may change bots or templates in ways the answer does not show: re-read the
    /// node's list right after.
    pub poke: bool,
}

/// Edits to a node's JSON answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Edits {
    /// Translate BotInfo ids from local to cluster ids.
    pub bot_ids: bool,
    /// Translate the bot urls in `json api`'s `servers`.
    pub openapi: bool,
    /// Redact identities and passwords (non-admin caller reading settings).
    pub redact: bool,
    /// The whole answer is a secret settings leaf: replace it with null.
    pub redact_scalar: bool,
}

impl Edits {
    /// Whether the answer must be buffered and edited.
    pub fn any(&self) -> bool {
        self.bot_ids || self.openapi || self.redact || self.redact_scalar
    }

    /// Adds the edits `o` asks for.
    pub(super) fn merge(&mut self, o: Edits) {
        self.bot_ids |= o.bot_ids;
        self.openapi |= o.openapi;
        self.redact |= o.redact;
        self.redact_scalar |= o.redact_scalar;
    }
}

/// Bookkeeping after a node confirmed a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The bot stopped (`bot disconnect`).
    ForgetBot(u32),
    /// The bot was saved as a template (`bot save`).
    BotSaved {
        /// Cluster id.
        gid: u32,
        /// Template name.
        name: String,
    },
    /// A template now exists on the pinned node (`settings copy` target).
    ClaimTemplate(String),
    /// A template was deleted.
    DropTemplate(String),
    /// A template setting was written.
    TemplateSetting {
        /// Template.
        name: String,
        /// Config path.
        path: String,
        /// Raw value.
        value: String,
    },
    /// A setting was written by a command nested where the answer cannot confirm it (inside
    /// `json merge`, `xecute`, ...): once the request succeeded, the router reads the value
    /// back from the node and records what the node holds.
    ReadBack(ReadBack),
    /// A temporary bot's own setting was written (kept for rebuilding it elsewhere).
    BotSetting {
        /// Cluster id.
        gid: u32,
        /// Config path.
        path: String,
        /// Raw value.
        value: String,
    },
}

/// A setting to read back from the node after a request that wrote it (see
/// [`Effect::ReadBack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBack {
    /// A template's setting (`settings bot set`, `bot template <name> (settings set ...)`).
    Template {
        /// Template name.
        name: String,
        /// Config path.
        path: String,
    },
    /// A running bot's setting (`settings set` / `bot name` inside `bot use`).
    Bot {
        /// Cluster id.
        gid: u32,
        /// Config path.
        path: String,
    },
}

/// Where a create goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateNode {
    /// Choose by placement.
    Place,
    /// The node that holds the template.
    Fixed(NodeId),
}

/// What a create makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateKind {
    /// `bot connect to`.
    ConnectTo(CreateInfoEq),
    /// `bot connect template <name>`.
    ConnectTemplate(String),
    /// `settings create <name>`.
    SettingsCreate(String),
}

/// [`CreateInfo`] with equality for plan comparisons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateInfoEq {
    /// Address.
    pub address: Option<String>,
    /// Password.
    pub server_password: Option<String>,
}

impl From<CreateInfoEq> for CreateInfo {
    fn from(c: CreateInfoEq) -> Self {
        CreateInfo {
            address: c.address,
            server_password: c.server_password,
            sent_ms: None,
            owner: None,
        }
    }
}

/// A create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePlan {
    /// Request target to send.
    pub target: Vec<u8>,
    /// Where.
    pub node: CreateNode,
    /// What.
    pub kind: CreateKind,
    /// Edits to the answer (redaction never applies; ids always).
    pub edits: Edits,
    /// Nodes it must not be placed on (holding another tenant's template of that name).
    pub avoid: Vec<NodeId>,
}

/// A split `json merge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan {
    /// The elements in order.
    pub elements: Vec<Element>,
    /// Edits to every node's part.
    pub edits: Edits,
    /// Settings the elements write, read back once the merge succeeded.
    pub read_back: Vec<ReadBack>,
}

/// One element of a split merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// Run on a node as part of a `json merge` there. `piece` is the argument as it goes into
    /// that merge (`(/...)` for commands, the raw token for plain values).
    Node {
        /// The node; None = any.
        node: Option<NodeId>,
        /// The argument bytes.
        piece: Vec<u8>,
    },
    /// The element fails on every node (unknown bot): `null`, as a node's merge gives.
    Null,
    /// A plain word: its JSON, as a node's merge echoes it.
    Literal(Vec<u8>),
    /// `bot list` over all nodes.
    FanOutList,
    /// `system info` over all nodes.
    SystemInfo,
    /// A create.
    Create(CreatePlan),
}
