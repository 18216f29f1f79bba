//! Request → plan: the planner proper.
//!
//! Owns: walking a parsed request tree over the cluster [`View`]: which node each part pins
//! to, which id tokens are rewritten (and how, byte-exactly), which answer edits apply, which
//! writes must be read back, what is refused, and which plan kind the request becomes
//! (proxy, fan-out, broadcast, create). Does not own: splitting a top-level `json merge`
//! (`merge`), the bookkeeping a confirmed answer implies (`effects`), or the plan types
//! (`plan`).

use std::ops::Range;

use crate::cluster::NodeId;
use crate::protocol::api_json::{ApiError, Reason};
use crate::protocol::catalog::{identify, Kind};
use crate::protocol::command::{parse_int32, splice, Arg, Command, Value};
use crate::protocol::settings::is_secret_path;
use crate::proxy::keys::Caller;
use crate::proxy::routing::plan::{
    CreateInfoEq, CreateKind, CreateNode, CreatePlan, Edits, Plan, ProxyPlan, ReadBack, Why,
};
use crate::proxy::routing::view::View;

/// The command context an element or nested command runs in (named apart from the proxy's
/// per-request `RequestCtx`: this one is the planner's position in the command tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PlanCtx {
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

impl PlanCtx {
    pub(super) fn node(&self) -> Option<NodeId> {
        match *self {
            PlanCtx::Core => None,
            PlanCtx::Bot { node, .. } | PlanCtx::Template { node, .. } => Some(node),
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

/// One planning run over one request.
pub(super) struct Planner<'a> {
    pub(super) view: &'a dyn View,
    pub(super) caller: &'a Caller,
    /// The whole raw request target.
    pub(super) target: &'a [u8],
    /// Offset of the command text in `target` (parser spans are relative to it).
    pub(super) base: usize,
}

/// What walking a (sub)tree found.
#[derive(Default)]
pub(super) struct Gather {
    pub(super) pin: Option<(NodeId, Why)>,
    pub(super) conflict: Option<String>,
    /// Replacements, offsets relative to the command text.
    pub(super) rewrites: Vec<(Range<usize>, Vec<u8>)>,
    pub(super) error: Option<ApiError>,
    /// A create or node-wide command in a place the router cannot split out.
    pub(super) stuck: Option<&'static str>,
    pub(super) edits: Edits,
    pub(super) poke: bool,
    /// Every settings write in the tree, to read back if the root's own effect does not
    /// already record it.
    pub(super) writes: Vec<ReadBack>,
    /// Nodes holding templates the tree names that the caller must not see (another
    /// tenant's), with the first such name: the request must not reach them.
    pub(super) avoid: Vec<NodeId>,
    pub(super) hidden_name: Option<String>,
}

impl Gather {
    pub(super) fn pin(&mut self, view: &dyn View, node: NodeId, why: Why) {
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

    pub(super) fn fail(&mut self, e: ApiError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Once the walk is done: a tree naming a hidden template goes to a node that does not
    /// hold it (where the name is as unknown as any never-used name), unless something else
    /// pins it to the template's own node; then it is refused as a bot that does not exist.
    pub(super) fn settle_hidden(&mut self, view: &dyn View) {
        if self.avoid.is_empty() {
            return;
        }
        match &self.pin {
            None => match view.node_besides(&self.avoid) {
                Some(n) => {
                    let why = Why::Template(self.hidden_name.clone().unwrap_or_default());
                    self.pin = Some((n, why));
                }
                None => self.fail(ApiError::bot_does_not_exist()),
            },
            Some((n, _)) if self.avoid.contains(n) => self.fail(ApiError::bot_does_not_exist()),
            Some(_) => {}
        }
    }
}

/// Template names starting with `ts3ab-lb-` are the router's: failover names temporary bots'
/// templates so (a client creating one could later be mistaken for a moved bot's copy), and
/// tenants' templates have such names on the nodes (a client's could collide with one).
fn reserved_name(name: &str) -> Option<ApiError> {
    name.starts_with(crate::cluster::failover::RESERVED_PREFIX)
        .then(|| {
            ApiError::new(
                Reason::CommandError,
                format!(
                    "Template names starting with `{}` are reserved for ts3ab-lb.",
                    crate::cluster::failover::RESERVED_PREFIX
                ),
            )
        })
}

impl Planner<'_> {
    pub(super) fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.target[self.base + r.start..self.base + r.end]
    }

    pub(super) fn text_of(&self, v: Option<&Value>) -> Option<String> {
        v.map(|v| v.text.to_string())
    }

    /// The name the cluster and the nodes know a template by that the client calls
    /// `client` (a tenant's own name space; the same name for everyone else).
    pub(super) fn tname(&self, client: &str) -> String {
        self.view
            .node_template(client)
            .unwrap_or_else(|| client.to_string())
    }

    /// The bytes that replace a template name token for the node, when they differ.
    pub(super) fn name_token(&self, v: &Value) -> Option<Vec<u8>> {
        let mapped = self.view.node_template(&v.text)?;
        Some(quoted_like(
            self.bytes(&v.span),
            v.quoted,
            mapped.as_bytes(),
        ))
    }

    /// Queues the rewrite of a template name token to the node's name for it.
    fn rename(&self, v: Option<&Value>, g: &mut Gather) {
        if let Some(v) = v {
            if let Some(with) = self.name_token(v) {
                g.rewrites.push((v.span.clone(), with));
            }
        }
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
    pub(super) fn bot_of(
        &self,
        id: Option<&Value>,
    ) -> Result<Option<(u32, NodeId, u32)>, ApiError> {
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
                    if let Some(p) = self.in_context(inner, PlanCtx::Bot { gid, node, lid }) {
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
                    let ctx = PlanCtx::Template {
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
            Kind::JsonMerge { first } => match self.merge(cmd, first, PlanCtx::Core) {
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
    fn in_context(&self, inner: &Command, ctx: PlanCtx) -> Option<Plan> {
        let node = ctx.node()?;
        if let Kind::JsonMerge { first } = identify(inner).kind {
            return self.merge(inner, first, ctx);
        }
        self.reroutes(inner, node)
            .then(|| self.command(inner, false))
    }

    /// Whether a command nested in a context on `node` must leave that node: cluster-level
    /// commands, and template-naming ones whose template lives elsewhere.
    pub(super) fn reroutes(&self, inner: &Command, node: NodeId) -> bool {
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

    pub(super) fn create(&self, cmd: &Command, kind: &Kind<'_>) -> Result<CreatePlan, ApiError> {
        let target = match kind {
            // A tenant's template: the node's name for it.
            Kind::BotConnectTemplate { name: Some(v) } | Kind::SettingsCreate { name: Some(v) } => {
                match self.name_token(v) {
                    Some(with) => {
                        let mut t = self.target[..self.base].to_vec();
                        t.extend(splice_range(
                            self,
                            &cmd.inner,
                            &mut [(v.span.clone(), with)],
                        ));
                        t
                    }
                    None => self.api_target(&cmd.inner),
                }
            }
            _ => self.api_target(&cmd.inner),
        };
        let edits = Edits {
            bot_ids: true,
            ..Edits::default()
        };
        let plan = |node, kind| CreatePlan {
            target: target.clone(),
            node,
            kind,
            edits,
            avoid: Vec::new(),
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
                // Another tenant's template: placed where it is not, so the node answers
                // as for any template it does not have.
                let avoid = self.view.hidden_template(&name).into_iter().collect();
                Ok(CreatePlan {
                    avoid,
                    ..plan(node, CreateKind::ConnectTemplate(self.tname(&name)))
                })
            }
            Kind::SettingsCreate { name } => {
                let name = self.text_of(name).unwrap_or_default();
                if self.view.template_owner(&name).is_some()
                    || self.view.hidden_template(&name).is_some()
                {
                    // Template names are unique in the cluster, whichever node would get it.
                    return Err(ApiError::file_exists());
                }
                if let Some(e) = reserved_name(&name) {
                    return Err(e);
                }
                Ok(plan(
                    CreateNode::Place,
                    CreateKind::SettingsCreate(self.tname(&name)),
                ))
            }
            _ => Err(ApiError::new(Reason::InternalError, "not a create")),
        }
    }

    /// Forwards `cmd` to the one node its tree pins it to (any node when nothing pins it).
    fn generic(&self, cmd: &Command, whole: bool) -> Plan {
        let mut g = Gather::default();
        self.walk(cmd, PlanCtx::Core, &mut g);
        g.settle_hidden(self.view);
        if let Some(e) = g.error {
            return Plan::Local(e);
        }
        if let Some(what) = g.stuck {
            return Plan::Local(stuck_error(what));
        }
        if let Some(why) = g.conflict {
            return Plan::Local(conflict_error(&why));
        }
        let effects = self.effects(cmd, g.writes);
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
            None => (None, Why::Nothing),
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

    pub(super) fn ctx_why(&self, ctx: PlanCtx) -> Why {
        match ctx {
            PlanCtx::Bot { gid, .. } => Why::Bot(gid),
            PlanCtx::Template { .. } => Why::TheTemplate,
            PlanCtx::Core => Why::Nothing,
        }
    }

    /// Walks a tree: pins, id rewrites, answer edits, errors.
    pub(super) fn walk(&self, cmd: &Command, ctx: PlanCtx, g: &mut Gather) {
        let id = identify(cmd);
        // `bot use` and `bot template` run their arguments from the third on in the context
        // they open; every other command passes its own context down.
        let mut child_ctx = ctx;
        let mut nested_from = 0;
        match id.kind {
            Kind::BotUse { id: gid, .. } => {
                nested_from = 3;
                if let Some(c) = self.enter_bot(cmd, gid, g) {
                    child_ctx = c;
                }
            }
            Kind::BotTemplate { name, .. } => {
                nested_from = 3;
                child_ctx = self.enter_template(name, g);
            }
            kind => self.note(kind, ctx, g),
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

    /// `bot use <id>`: pins the bot's node and queues the id rewrite. Returns the context its
    /// nested command runs in, or None (context unchanged) when the id is refused, which is
    /// recorded as the error.
    fn enter_bot(&self, cmd: &Command, gid: Option<&Value>, g: &mut Gather) -> Option<PlanCtx> {
        match self.bot_of(gid) {
            Ok(Some((gid, node, lid))) => {
                g.pin(self.view, node, Why::Bot(gid));
                // Only a changed id is rewritten: the same id keeps the client's bytes.
                if let (Some(v), true) = (cmd.value(2), lid != gid) {
                    let with = id_token(self.bytes(&v.span), v.quoted, lid);
                    g.rewrites.push((v.span.clone(), with));
                }
                Some(PlanCtx::Bot { gid, node, lid })
            }
            Ok(None) => Some(PlanCtx::Core),
            Err(e) => {
                g.fail(e);
                None
            }
        }
    }

    /// `bot template <name>`: pins the template's node. Returns the context its nested command
    /// runs in (none for an unknown template).
    fn enter_template(&self, name: Option<&Value>, g: &mut Gather) -> PlanCtx {
        self.owner_pin(g, name);
        self.rename(name, g);
        match name.and_then(|n| self.view.template_owner(&n.text).map(|o| (o, n))) {
            Some((node, n)) => PlanCtx::Template {
                node,
                name_start: n.span.start,
                name_end: n.span.end,
            },
            None => PlanCtx::Core,
        }
    }

    /// Pins the node of a named template, when the cluster knows it; keeps the request off
    /// the node of a template the caller must not see.
    fn owner_pin(&self, g: &mut Gather, name: Option<&Value>) {
        if let Some(name) = name {
            if let Some(node) = self.view.template_owner(&name.text) {
                g.pin(self.view, node, Why::Template(name.text.to_string()));
            } else if let Some(node) = self.view.hidden_template(&name.text) {
                g.avoid.push(node);
                g.hidden_name.get_or_insert_with(|| name.text.to_string());
            }
        }
    }

    /// What one command (other than `bot use` / `bot template`) adds to the walk: template
    /// pins, answer edits, refused names, writes to read back, and commands that cannot run
    /// where they stand.
    fn note(&self, kind: Kind<'_>, ctx: PlanCtx, g: &mut Gather) {
        match kind {
            Kind::BotInfoTemplate { name } => {
                self.owner_pin(g, name);
                self.rename(name, g);
                g.edits.bot_ids = true;
            }
            Kind::SettingsBotGet { name, path } => {
                self.owner_pin(g, name);
                self.rename(name, g);
                self.redaction(g, path);
            }
            Kind::SettingsBotSet { name, path, .. } => {
                self.owner_pin(g, name);
                self.rename(name, g);
                if let (Some(n), Some(p)) = (name, path) {
                    g.writes.push(ReadBack::Template {
                        name: self.tname(&n.text),
                        path: p.text.to_string(),
                    });
                }
            }
            Kind::SettingsDelete { name } | Kind::SettingsBotReload { name } => {
                self.owner_pin(g, name);
                self.rename(name, g);
            }
            Kind::SettingsCopy { from, to } => {
                self.owner_pin(g, from);
                self.rename(from, g);
                self.refuse_taken_name(to, g);
                self.rename(to, g);
            }
            Kind::BotSave { name } => {
                self.refuse_taken_name(name, g);
                self.rename(name, g);
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
                    .get_or_insert(if matches!(kind, Kind::SettingsCreate { .. }) {
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
    }

    /// A template name a command would create (`settings copy` target, `bot save` name): one
    /// the cluster already has, or one reserved for failover, is refused as the node would.
    fn refuse_taken_name(&self, name: Option<&Value>, g: &mut Gather) {
        if name.is_some_and(|n| {
            self.view.template_owner(&n.text).is_some()
                || self.view.hidden_template(&n.text).is_some()
        }) {
            g.fail(ApiError::file_exists());
        }
        if let Some(e) = name.and_then(|n| reserved_name(&n.text)) {
            g.fail(e);
        }
    }

    /// A settings write inside a bot or template context.
    fn write_in(&self, ctx: PlanCtx, path: &str, g: &mut Gather) {
        let path = path.to_string();
        match ctx {
            PlanCtx::Bot { gid, .. } => g.writes.push(ReadBack::Bot { gid, path }),
            PlanCtx::Template {
                name_start,
                name_end,
                ..
            } => g.writes.push(ReadBack::Template {
                name: self.tname(&crate::protocol::command::unescape(
                    self.bytes(&(name_start..name_end)),
                )),
                path,
            }),
            PlanCtx::Core => {}
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
}

/// The bytes that replace a `bot use` id token (`token`, as the client sent it): the node-local
/// id, inside the client's quotes when the token was quoted. A quoted token ends at its closing
/// quote and text right after it is a new argument, so a bare id would run into that text
/// (`'0'x` would be read as `5x`; found by fuzzing). A token whose value is an Int32 holds no
/// quote character but its own, so it was closed exactly when it ends with that quote; an
/// unclosed one (running to the end of the request) stays unclosed.
fn id_token(token: &[u8], quoted: bool, lid: u32) -> Vec<u8> {
    // The digits go straight into the token (no `String` first): every routed request
    // rewrites one.
    use std::io::Write;
    let quote = token.first().copied().filter(|_| quoted);
    let mut out = Vec::with_capacity(12);
    out.extend(quote);
    let _ = write!(out, "{lid}");
    if quote.is_some() && token.len() > 1 && token.last().copied() == quote {
        out.extend(quote);
    }
    out
}

/// `with` in place of `token`, inside the token's quotes when it had them (see
/// [`id_token`]; a tenant's template name has only characters that need no escape).
fn quoted_like(token: &[u8], quoted: bool, with: &[u8]) -> Vec<u8> {
    let Some((&quote, rest)) = token.split_first().filter(|_| quoted) else {
        return with.to_vec();
    };
    let mut out = vec![quote];
    out.extend_from_slice(with);
    if rest.last() == Some(&quote) {
        out.push(quote);
    }
    out
}

/// Applies the rewrites that fall inside `range` to that slice of the command text.
pub(super) fn splice_range(
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

pub(super) fn conflict_error(why: &str) -> ApiError {
    ApiError::new(
        Reason::NotSupported,
        format!(
            "This request addresses bots on different nodes ({why}). ts3ab-lb can only combine bots \
             of different nodes as separate elements of a top-level json merge; send one request per bot otherwise."
        ),
    )
}

pub(super) fn stuck_error(what: &str) -> ApiError {
    ApiError::new(
        Reason::NotSupported,
        format!(
            "ts3ab-lb cannot run {what} nested inside another command: send it on its own, \
             inside bot use, or as an element of a top-level json merge."
        ),
    )
}
