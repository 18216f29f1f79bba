//! Request → decision: which node(s) serve a request, and which bytes change on the way.
//!
//! Owns: turning a parsed, authorised request into a [`Plan`] using only the in-memory cluster
//! view: pin to the node of every `bot use <id>` / `bot template <name>` / template-naming
//! command anywhere in the tree (rewriting only the id tokens), fan out `bot list` and
//! `system info`, broadcast node-wide commands, place creates, split a top-level `json merge`
//! whose elements live on different nodes, and refuse what cannot be served faithfully.
//! A cluster-level command nested in `bot use <id> (...)` is routed as if it were sent alone,
//! because real clients wrap everything in `bot use` (the PyPI client sends
//! `bot/use/0/(/bot/list`). Does not own: executing the plan (`proxy`, `exec`).
//!
//! The planner never waits: it reads the cluster tables and returns.

use std::ops::Range;

use crate::cluster::{CreateInfo, NodeId};
use crate::protocol::api_json::{ApiError, Reason};
use crate::protocol::catalog::{identify, Kind};
use crate::protocol::command::{parse_int32, splice, Arg, Command, Value};
use crate::protocol::settings::is_secret_path;
use crate::proxy::keys::Caller;

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

/// Proxying to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    /// The node; None = any healthy node.
    pub node: Option<NodeId>,
    /// Why this node (for error messages), e.g. "bot 7".
    pub why: String,
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

    fn merge(&mut self, o: Edits) {
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

/// The command context an element or nested command runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Core,
    /// Inside `bot use` of a known bot.
    Bot {
        gid: u32,
        node: NodeId,
        lid: u32,
    },
    /// Inside `bot template` of a known template (the name token's span in the text).
    Template {
        node: NodeId,
        name_start: usize,
        name_end: usize,
    },
}

impl Ctx {
    fn node(&self) -> Option<NodeId> {
        match *self {
            Ctx::Core => None,
            Ctx::Bot { node, .. } | Ctx::Template { node, .. } => Some(node),
        }
    }
}

/// Plans an `/api` request whose parsed root command is `root`. `text` is the raw command text
/// (the target after `/api`) and `target` the whole raw request target.
pub fn plan(
    view: &dyn View,
    caller: &Caller,
    target: &[u8],
    text_start: usize,
    root: &Command,
) -> Plan {
    let p = Planner {
        view,
        caller,
        target,
        base: text_start,
    };
    p.top(root)
}

struct Planner<'a> {
    view: &'a dyn View,
    caller: &'a Caller,
    /// The whole raw request target.
    target: &'a [u8],
    /// Offset of the command text in `target` (parser spans are relative to it).
    base: usize,
}

/// What walking a (sub)tree found.
#[derive(Default)]
struct Gather {
    pin: Option<(NodeId, String)>,
    conflict: Option<String>,
    /// Replacements, offsets relative to the command text.
    rewrites: Vec<(Range<usize>, Vec<u8>)>,
    error: Option<ApiError>,
    /// A create or node-wide command in a place the router cannot split out.
    stuck: Option<&'static str>,
    edits: Edits,
    poke: bool,
    /// Every settings write in the tree, to read back if the root's own effect does not
    /// already record it.
    writes: Vec<ReadBack>,
}

impl Gather {
    fn pin(&mut self, view: &dyn View, node: NodeId, why: String) {
        match &self.pin {
            None => self.pin = Some((node, why)),
            Some((n, first)) if *n != node && self.conflict.is_none() => {
                self.conflict = Some(format!(
                    "{first} is on node {} but {why} is on node {}",
                    view.node_name(*n),
                    view.node_name(node)
                ));
            }
            _ => {}
        }
    }

    fn fail(&mut self, e: ApiError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

fn file_exists() -> ApiError {
    ApiError::new(Reason::CommandError, "The file already exists.")
}

/// Template names failover makes for temporary bots are the router's: a client creating one
/// could later be mistaken for a moved bot's copy.
fn reserved_name(name: &str) -> Option<ApiError> {
    name.starts_with(crate::cluster::failover::RESERVED_PREFIX)
        .then(|| {
            ApiError::new(
                Reason::CommandError,
                format!(
                    "Template names starting with `{}` are reserved for ts3ab-lb's failover.",
                    crate::cluster::failover::RESERVED_PREFIX
                ),
            )
        })
}

impl Planner<'_> {
    fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.target[self.base + r.start..self.base + r.end]
    }

    fn text_of(&self, v: Option<&Value>) -> Option<String> {
        v.map(|v| v.text.clone())
    }

    /// `/api` + the given command text range.
    fn api_target(&self, r: &Range<usize>) -> Vec<u8> {
        let mut t = self.target[..self.base].to_vec();
        t.extend_from_slice(self.bytes(r));
        t
    }

    /// Resolves a `bot use` id token: Ok(Some) known bot, Ok(None) no id at all (the node
    /// answers that arguments are missing), Err(the node's error: unknown bot (422) or an id
    /// that is not an Int32 (400)).
    fn bot_of(&self, id: Option<&Value>) -> Result<Option<(u32, NodeId, u32)>, ApiError> {
        let Some(v) = id else { return Ok(None) };
        match parse_int32(&v.text) {
            Ok(g) => match u32::try_from(g)
                .ok()
                .and_then(|g| self.view.locate(g).map(|(n, l)| (g, n, l)))
            {
                Some(found) => Ok(Some(found)),
                None => Err(ApiError::bot_does_not_exist()),
            },
            // The node's own answers to an id it cannot read.
            Err(too_big) => Err(ApiError::new(
                Reason::MissingParameter,
                if too_big {
                    "The number is too big.".to_string()
                } else {
                    format!("Could not convert \"{}\" to Int32.", v.text)
                },
            )),
        }
    }

    fn top(&self, root: &Command) -> Plan {
        self.command(root, true)
    }

    /// Plans `cmd` as the whole request. `whole` = it is the root, so the client's bytes can go
    /// out as they are; otherwise it is a command that left its bot context and is sent alone.
    fn command(&self, cmd: &Command, whole: bool) -> Plan {
        let id = identify(cmd);
        match id.kind {
            Kind::BotUse {
                id: gid,
                inner: Some(inner),
            } => {
                let bot = match self.bot_of(gid) {
                    Ok(b) => b,
                    // A cluster-level command does not need the bot it is wrapped in: clients
                    // wrap everything in `bot use 0` (the PyPI client), and cluster ids are
                    // never reused, so bot 0 may be long gone.
                    Err(e) if e.status == 422 && identify(inner).kind.is_cluster_level() => {
                        return self.command(inner, false)
                    }
                    Err(e) => return Plan::Local(e),
                };
                if let Some((gid, node, lid)) = bot {
                    if let Some(p) = self.in_context(inner, Ctx::Bot { gid, node, lid }) {
                        return p;
                    }
                }
                self.generic(cmd, whole)
            }
            Kind::BotTemplate {
                name: Some(name),
                inner: Some(inner),
            } => {
                if let Some(node) = self.view.template_owner(&name.text) {
                    let ctx = Ctx::Template {
                        node,
                        name_start: name.span.start,
                        name_end: name.span.end,
                    };
                    if let Some(p) = self.in_context(inner, ctx) {
                        return p;
                    }
                }
                self.generic(cmd, whole)
            }
            Kind::BotList => Plan::FanOutList,
            Kind::SystemInfo => Plan::SystemInfo,
            Kind::RightsReload
            | Kind::SettingsBotReload { name: None }
            | Kind::SettingsGlobalSet => self.broadcast(cmd),
            Kind::Plugin { changes: true } => self.broadcast(cmd),
            Kind::BotConnectTo { .. }
            | Kind::BotConnectTemplate { .. }
            | Kind::SettingsCreate { .. } => match self.create(cmd, &id.kind) {
                Ok(p) => Plan::Create(p),
                Err(e) => Plan::Local(e),
            },
            Kind::JsonMerge { first } => match self.merge(cmd, first, Ctx::Core) {
                Some(p) => p,
                None => self.generic(cmd, whole),
            },
            _ => self.generic(cmd, whole),
        }
    }

    fn broadcast(&self, cmd: &Command) -> Plan {
        Plan::Broadcast {
            target: self.api_target(&cmd.inner),
        }
    }

    /// A command nested in a bot or template context: None when it simply runs there (the
    /// caller forwards the whole request), or the plan for it when it must leave.
    fn in_context(&self, inner: &Command, ctx: Ctx) -> Option<Plan> {
        let node = ctx.node()?;
        if let Kind::JsonMerge { first } = identify(inner).kind {
            return self.merge(inner, first, ctx);
        }
        self.reroutes(inner, node)
            .then(|| self.command(inner, false))
    }

    /// Whether a command nested in a context on `node` must leave that node: cluster-level
    /// commands, and template-naming ones whose template lives elsewhere.
    fn reroutes(&self, inner: &Command, node: NodeId) -> bool {
        let kind = identify(inner).kind;
        if !kind.is_cluster_level() {
            return false;
        }
        let owner = |v: Option<&Value>| v.and_then(|v| self.view.template_owner(&v.text));
        match kind {
            Kind::BotInfoTemplate { name }
            | Kind::SettingsDelete { name }
            | Kind::SettingsBotGet { name, .. }
            | Kind::SettingsBotSet { name, .. }
            | Kind::SettingsCopy { from: name, .. } => owner(name).is_some_and(|o| o != node),
            _ => true,
        }
    }

    fn create(&self, cmd: &Command, kind: &Kind<'_>) -> Result<CreatePlan, ApiError> {
        let target = self.api_target(&cmd.inner);
        let edits = Edits {
            bot_ids: true,
            ..Edits::default()
        };
        let plan = |node, kind| CreatePlan {
            target: target.clone(),
            node,
            kind,
            edits,
        };
        match *kind {
            Kind::BotConnectTo { address, password } => Ok(plan(
                CreateNode::Place,
                CreateKind::ConnectTo(CreateInfoEq {
                    address: self.text_of(address),
                    server_password: self.text_of(password),
                }),
            )),
            Kind::BotConnectTemplate { name } => {
                let name = self.text_of(name).unwrap_or_default();
                let node = match self.view.template_owner(&name) {
                    Some(n) => CreateNode::Fixed(n),
                    None => CreateNode::Place,
                };
                Ok(plan(node, CreateKind::ConnectTemplate(name)))
            }
            Kind::SettingsCreate { name } => {
                let name = self.text_of(name).unwrap_or_default();
                if self.view.template_owner(&name).is_some() {
                    // Template names are unique in the cluster, whichever node would get it.
                    return Err(file_exists());
                }
                if let Some(e) = reserved_name(&name) {
                    return Err(e);
                }
                Ok(plan(CreateNode::Place, CreateKind::SettingsCreate(name)))
            }
            _ => Err(ApiError::new(Reason::InternalError, "not a create")),
        }
    }

    /// Plans a `json merge` in `ctx`. Returns None when it needs no splitting (one node serves
    /// it as it is).
    fn merge(&self, cmd: &Command, first: usize, ctx: Ctx) -> Option<Plan> {
        let args = cmd.args.get(first..).unwrap_or_default();
        if args.is_empty() {
            return None;
        }
        let mut elements = Vec::with_capacity(args.len());
        let mut edits = Edits::default();
        let mut split = false;
        let mut pinned: Option<NodeId> = ctx.node();
        let last = args.len() - 1;
        for (i, arg) in args.iter().enumerate() {
            let el = match arg {
                // A plain word is echoed by the merge; answered here, because moved into a
                // node's shorter merge it could become the last argument, which TS3AudioBot
                // turns into a TailString.
                Arg::Value(v) => Element::Literal(
                    if i == last {
                        serde_json::to_vec(
                            &serde_json::json!({ "Content": v.text, "Tail": v.text }),
                        )
                    } else {
                        serde_json::to_vec(&v.text)
                    }
                    .unwrap_or_else(|_| b"null".to_vec()),
                ),
                Arg::Command(c) => match self.element(c, ctx) {
                    Ok((el, e)) => {
                        edits.merge(e);
                        el
                    }
                    Err(e) => return Some(Plan::Local(e)),
                },
            };
            match &el {
                Element::Node { node: Some(n), .. } => match pinned {
                    None => pinned = Some(*n),
                    Some(p) if p != *n => split = true,
                    _ => {}
                },
                Element::Node { node: None, .. } | Element::Literal(_) => {}
                _ => split = true,
            }
            elements.push(el);
        }
        if !split {
            return None;
        }
        // Settings written anywhere in the merge, in their bot or template context.
        let mut g = Gather::default();
        self.walk(cmd, ctx, &mut g);
        Some(Plan::Merge(MergePlan {
            elements,
            edits,
            read_back: g.writes,
        }))
    }

    /// Plans one merge element run in `ctx`.
    fn element(&self, c: &Command, ctx: Ctx) -> Result<(Element, Edits), ApiError> {
        let id = identify(c);
        // An element with its own bot context: unknown bot → null; a cluster-level command
        // inside it is planned as if it stood alone.
        if let Kind::BotUse { id: gid, inner } = id.kind {
            match self.bot_of(gid) {
                Err(_) => return Ok((Element::Null, Edits::default())),
                Ok(Some((_, node, _))) => {
                    if let Some(inner) = inner {
                        if !matches!(identify(inner).kind, Kind::JsonMerge { .. })
                            && self.reroutes(inner, node)
                        {
                            return self.element(inner, Ctx::Core);
                        }
                    }
                }
                Ok(None) => {}
            }
        }
        let own_ctx = matches!(id.kind, Kind::BotUse { .. } | Kind::BotTemplate { .. });
        let leaves = match ctx.node() {
            Some(node) => own_ctx || self.reroutes(c, node),
            None => true,
        };
        if leaves {
            match id.kind {
                Kind::BotList => return Ok((Element::FanOutList, Edits::default())),
                Kind::SystemInfo => return Ok((Element::SystemInfo, Edits::default())),
                Kind::BotConnectTo { .. } | Kind::BotConnectTemplate { .. } | Kind::SettingsCreate { .. } => {
                    return match self.create(c, &id.kind) {
                        Ok(p) => Ok((Element::Create(p), Edits::default())),
                        // A failing element is null in a merge, as on a node.
                        Err(_) => Ok((Element::Null, Edits::default())),
                    };
                }
                Kind::RightsReload | Kind::SettingsBotReload { name: None } | Kind::SettingsGlobalSet => {
                    return Err(ApiError::new(
                        Reason::NotSupported,
                        "ts3ab-lb sends node-wide commands to every node; send them on their own, not inside json merge",
                    ))
                }
                _ => {}
            }
        }
        let mut g = Gather::default();
        if !leaves {
            if let Some(node) = ctx.node() {
                g.pin = Some((node, self.ctx_why(ctx)));
            }
        }
        self.walk(c, if leaves { Ctx::Core } else { ctx }, &mut g);
        if let Some(e) = g.error {
            return match e.reason {
                // Errors a node reports per element become null in its merge.
                Reason::CommandError => Ok((Element::Null, g.edits)),
                _ => Err(e),
            };
        }
        if let Some(what) = g.stuck {
            return Err(stuck_error(what));
        }
        if let Some(why) = g.conflict {
            return Err(conflict_error(&why));
        }
        let body = splice_range(self, &c.inner, &mut g.rewrites);
        let mut piece = Vec::with_capacity(body.len() + 32);
        match (ctx, leaves) {
            (Ctx::Bot { lid, .. }, false) => {
                piece.extend_from_slice(format!("(/bot/use/{lid}/(").as_bytes());
                piece.extend_from_slice(&body);
                piece.extend_from_slice(b"))");
            }
            (
                Ctx::Template {
                    name_start,
                    name_end,
                    ..
                },
                false,
            ) => {
                piece.extend_from_slice(b"(/bot/template/");
                piece.extend_from_slice(self.bytes(&(name_start..name_end)));
                piece.extend_from_slice(b"/(");
                piece.extend_from_slice(&body);
                piece.extend_from_slice(b"))");
            }
            _ => {
                piece.push(b'(');
                piece.extend_from_slice(&body);
                piece.push(b')');
            }
        }
        Ok((
            Element::Node {
                node: g.pin.map(|(n, _)| n),
                piece,
            },
            g.edits,
        ))
    }

    /// Forwards `cmd` to the one node its tree pins it to (any node when nothing pins it).
    fn generic(&self, cmd: &Command, whole: bool) -> Plan {
        let mut g = Gather::default();
        self.walk(cmd, Ctx::Core, &mut g);
        if let Some(e) = g.error {
            return Plan::Local(e);
        }
        if let Some(what) = g.stuck {
            return Plan::Local(stuck_error(what));
        }
        if let Some(why) = g.conflict {
            return Plan::Local(conflict_error(&why));
        }
        let mut effects = self.effects(cmd);
        // A root-level write is recorded from the request itself on the node's 204; every
        // other write in the tree is read back once the request succeeded.
        let root_write = effects.iter().any(|e| {
            matches!(
                e,
                Effect::TemplateSetting { .. } | Effect::BotSetting { .. }
            )
        });
        let skip = usize::from(root_write && g.writes.len() == 1);
        effects.extend(g.writes.into_iter().skip(skip).map(Effect::ReadBack));
        let target = if whole {
            if g.rewrites.is_empty() {
                None
            } else {
                let mut t = self.target[..self.base].to_vec();
                t.extend(splice(&self.target[self.base..], &mut g.rewrites));
                Some(t)
            }
        } else {
            // A nested command sent on its own (it left its bot context).
            let mut t = self.target[..self.base].to_vec();
            t.extend(splice_range(self, &cmd.inner, &mut g.rewrites));
            Some(t)
        };
        let (node, why) = match g.pin {
            Some((n, why)) => (Some(n), why),
            None => (None, String::new()),
        };
        Plan::Proxy(ProxyPlan {
            node,
            why,
            target,
            edits: g.edits,
            effects,
            poke: g.poke,
        })
    }

    fn ctx_why(&self, ctx: Ctx) -> String {
        match ctx {
            Ctx::Bot { gid, .. } => format!("bot {gid}"),
            Ctx::Template { .. } => "the template".into(),
            Ctx::Core => String::new(),
        }
    }

    /// Walks a tree: pins, id rewrites, answer edits, errors.
    fn walk(&self, cmd: &Command, ctx: Ctx, g: &mut Gather) {
        let id = identify(cmd);
        let owner_pin = |g: &mut Gather, name: Option<&Value>| {
            if let Some(name) = name {
                if let Some(node) = self.view.template_owner(&name.text) {
                    g.pin(self.view, node, format!("template {}", name.text));
                }
            }
        };
        let mut child_ctx = ctx;
        let mut nested_from = 0;
        match id.kind {
            Kind::BotUse { id: gid, .. } => {
                nested_from = 3;
                match self.bot_of(gid) {
                    Ok(Some((gid, node, lid))) => {
                        g.pin(self.view, node, format!("bot {gid}"));
                        // Only a changed id is rewritten: the same id keeps the client's bytes.
                        if let (Some(v), true) = (cmd.value(2), lid != gid) {
                            g.rewrites
                                .push((v.span.clone(), lid.to_string().into_bytes()));
                        }
                        child_ctx = Ctx::Bot { gid, node, lid };
                    }
                    Ok(None) => child_ctx = Ctx::Core,
                    Err(e) => g.fail(e),
                }
            }
            Kind::BotTemplate { name, .. } => {
                nested_from = 3;
                owner_pin(g, name);
                child_ctx =
                    match name.and_then(|n| self.view.template_owner(&n.text).map(|o| (o, n))) {
                        Some((node, n)) => Ctx::Template {
                            node,
                            name_start: n.span.start,
                            name_end: n.span.end,
                        },
                        None => Ctx::Core,
                    };
            }
            Kind::BotInfoTemplate { name } => {
                owner_pin(g, name);
                g.edits.bot_ids = true;
            }
            Kind::SettingsBotGet { name, path } => {
                owner_pin(g, name);
                self.redaction(g, path);
            }
            Kind::SettingsBotSet { name, path, .. } => {
                owner_pin(g, name);
                if let (Some(n), Some(p)) = (name, path) {
                    g.writes.push(ReadBack::Template {
                        name: n.text.clone(),
                        path: p.text.clone(),
                    });
                }
            }
            Kind::SettingsDelete { name } => owner_pin(g, name),
            Kind::SettingsBotReload { name } => owner_pin(g, name),
            Kind::SettingsCopy { from, to } => {
                owner_pin(g, from);
                if to.is_some_and(|t| self.view.template_owner(&t.text).is_some()) {
                    g.fail(file_exists());
                }
                if let Some(e) = to.and_then(|t| reserved_name(&t.text)) {
                    g.fail(e);
                }
            }
            Kind::BotSave { name } => {
                if name.is_some_and(|n| self.view.template_owner(&n.text).is_some()) {
                    g.fail(file_exists());
                }
                if let Some(e) = name.and_then(|n| reserved_name(&n.text)) {
                    g.fail(e);
                }
                g.poke = true;
            }
            Kind::SettingsGet { path } => self.redaction(g, path),
            Kind::BotInfo | Kind::BotList => g.edits.bot_ids = true,
            Kind::JsonApi => g.edits.openapi = true,
            Kind::BotDisconnect => g.poke = true,
            Kind::SettingsSet { path, .. } => {
                g.poke = true;
                if let Some(p) = path {
                    self.write_in(ctx, &p.text, g);
                }
            }
            Kind::BotName { name: Some(_) } => self.write_in(ctx, "connect.name", g),
            Kind::SystemInfo => {}
            Kind::BotConnectTo { .. }
            | Kind::BotConnectTemplate { .. }
            | Kind::SettingsCreate { .. } => {
                g.stuck
                    .get_or_insert(if matches!(id.kind, Kind::SettingsCreate { .. }) {
                        "settings create"
                    } else {
                        "bot connect"
                    });
            }
            Kind::RightsReload | Kind::SettingsGlobalSet => {
                g.stuck.get_or_insert("a node-wide command");
            }
            _ => {}
        }
        for (i, arg) in cmd.args.iter().enumerate() {
            if let Arg::Command(c) = arg {
                let ctx = if nested_from > 0 && i >= nested_from {
                    child_ctx
                } else {
                    ctx
                };
                self.walk(c, ctx, g);
            }
        }
    }

    /// A settings write inside a bot or template context.
    fn write_in(&self, ctx: Ctx, path: &str, g: &mut Gather) {
        let path = path.to_string();
        match ctx {
            Ctx::Bot { gid, .. } => g.writes.push(ReadBack::Bot { gid, path }),
            Ctx::Template {
                name_start,
                name_end,
                ..
            } => g.writes.push(ReadBack::Template {
                name: crate::protocol::command::unescape(self.bytes(&(name_start..name_end))),
                path,
            }),
            Ctx::Core => {}
        }
    }

    fn redaction(&self, g: &mut Gather, path: Option<&Value>) {
        if self.caller.is_admin() {
            return;
        }
        g.edits.redact = true;
        if path.is_some_and(|p| is_secret_path(&p.text)) {
            g.edits.redact_scalar = true;
        }
    }

    /// Bookkeeping for the request's own command once the node confirms it.
    fn effects(&self, cmd: &Command) -> Vec<Effect> {
        let id = identify(cmd);
        let text = |v: Option<&Value>| v.map(|v| v.text.clone());
        let (cmd, gid) = match id.kind {
            Kind::BotUse {
                inner: Some(inner),
                id: gid,
            } => match self.bot_of(gid) {
                Ok(Some((gid, _, _))) => (inner, Some(gid)),
                _ => return Vec::new(),
            },
            _ => (cmd, None),
        };
        match identify(cmd).kind {
            Kind::BotDisconnect => gid.map(Effect::ForgetBot).into_iter().collect(),
            Kind::BotSave { name: Some(n) } => gid
                .map(|gid| Effect::BotSaved {
                    gid,
                    name: n.text.clone(),
                })
                .into_iter()
                .collect(),
            Kind::SettingsCopy { to: Some(to), .. } => vec![Effect::ClaimTemplate(to.text.clone())],
            Kind::SettingsDelete { name: Some(n) } => vec![Effect::DropTemplate(n.text.clone())],
            Kind::SettingsBotSet {
                name: Some(n),
                path: Some(p),
                value,
            } => vec![Effect::TemplateSetting {
                name: n.text.clone(),
                path: p.text.clone(),
                value: text(value).unwrap_or_default(),
            }],
            Kind::SettingsSet {
                path: Some(p),
                value,
            } => match gid {
                Some(gid) => match self.view.bot_template(gid) {
                    Some(name) => vec![Effect::TemplateSetting {
                        name,
                        path: p.text.clone(),
                        value: text(value).unwrap_or_default(),
                    }],
                    None => vec![Effect::BotSetting {
                        gid,
                        path: p.text.clone(),
                        value: text(value).unwrap_or_default(),
                    }],
                },
                None => Vec::new(),
            },
            Kind::BotName { name: Some(n) } => gid
                .map(|gid| Effect::BotSetting {
                    gid,
                    path: "connect.name".into(),
                    value: n.text.clone(),
                })
                .into_iter()
                .collect(),
            Kind::BotMove { channel: Some(c) } => gid
                .map(|gid| Effect::BotSetting {
                    gid,
                    path: "connect.channel".into(),
                    value: format!("/{}", c.text),
                })
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Applies the rewrites that fall inside `range` to that slice of the command text.
fn splice_range(
    p: &Planner<'_>,
    range: &Range<usize>,
    rewrites: &mut [(Range<usize>, Vec<u8>)],
) -> Vec<u8> {
    let mut local: Vec<(Range<usize>, Vec<u8>)> = rewrites
        .iter()
        .filter(|(r, _)| r.start >= range.start && r.end <= range.end)
        .map(|(r, w)| (r.start - range.start..r.end - range.start, w.clone()))
        .collect();
    splice(p.bytes(range), &mut local)
}

fn conflict_error(why: &str) -> ApiError {
    ApiError::new(
        Reason::NotSupported,
        format!(
            "This request addresses bots on different nodes ({why}). ts3ab-lb can only combine bots \
             of different nodes as separate elements of a top-level json merge; send one request per bot otherwise."
        ),
    )
}

fn stuck_error(what: &str) -> ApiError {
    ApiError::new(
        Reason::NotSupported,
        format!(
            "ts3ab-lb cannot run {what} nested inside another command: send it on its own, \
             inside bot use, or as an element of a top-level json merge."
        ),
    )
}

#[cfg(test)]
mod tests;
