//! The Pingora `ProxyHttp` implementation: glue between Pingora's request phases and the
//! router's modules. No routing or cluster logic lives here.
//!
//! Phases, in order:
//! - `request_filter`: CORS preflight, size limits, authentication (`auth`), parsing
//!   (`command`), rights (`policy`), the plan (`routing`); answers the router makes itself
//!   (errors, fan-outs, creates, split merges via `exec`) are written here.
//! - `upstream_peer`: the node the plan pinned (or any healthy node).
//! - `upstream_request_filter`: the rewritten target (only id tokens differ), the node's own
//!   `Authorization` instead of the client's secret, no client `X-Real-IP` (a node trusts it
//!   from loopback peers, i.e. from a router on the same host).
//! - `response_filter` / `response_body_filter`: bookkeeping on confirmed changes, and JSON
//!   edits only for answers that can carry bot ids or secrets (everything else streams through).
//! - `fail_to_connect` / `fail_to_proxy`: retry unpinned requests elsewhere; TS3AudioBot-shaped
//!   503/504 otherwise, never a hang.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::cluster::failover::router_template_bot;
use crate::cluster::stats::UpstreamError;
use crate::cluster::{Cluster, Node, NodeId, PendingTemplate};
use crate::config::NodeState;
use crate::config::RoutingConfig;
use crate::node::client::{exchange_gist, NodeClient, MAX_RESPONSE};
use crate::node::endpoint::Endpoint;
use crate::protocol::api_json::{
    ApiError, Reason, CACHE_CONTROL_NAME, CACHE_CONTROL_VALUE, CONTENT_TYPE_JSON,
};
use crate::protocol::command::{self, log_summary, Parsed};
use crate::protocol::pattern::AllowPattern;
use crate::proxy::connections::NodeGate;
use crate::proxy::exec::{strip_names, withheld, Answer, Exec};
use crate::proxy::framing::{is_interim, EditedFraming};
use crate::proxy::handover::{self, Handover, OwnRequest};
use crate::proxy::keys::Keys;
use crate::proxy::policy;
use crate::proxy::routing::{self, Edits, Effect, Plan, Why};
use crate::proxy::stats::{Kind, ProxyStats};
use crate::proxy::throttle::AuthThrottle;
use crate::store::WRITE_DEADLINE;

/// The router service.
pub struct Router {
    cluster: Arc<Cluster>,
    keys: Arc<Keys>,
    allow: Vec<AllowPattern>,
    cfg: RoutingConfig,
    exec: Exec,
    turn: AtomicUsize,
    /// None: metrics are off (`admin.metrics: false`), nothing is recorded.
    stats: Option<Arc<ProxyStats>>,
    /// Failed authentications per client address.
    throttle: AuthThrottle,
    /// The graceful-upgrade switch (None: this router never hands over, e.g. the demo).
    handover: Option<Arc<Handover>>,
    /// Places for requests to each node.
    gate: NodeGate,
}

/// Per-request state (Pingora's `CTX`), named apart from the planner's `PlanCtx`.
#[derive(Default)]
pub struct RequestCtx {
    node: Option<Arc<Node>>,
    /// The endpoint the request went to (taken once, in `upstream_peer`).
    endpoint: Option<Arc<Endpoint>>,
    /// The plan did not pin a node: another healthy node may be tried if this one is down.
    movable: bool,
    tried: Vec<NodeId>,
    /// Why this node (for error messages).
    why: Why,
    target: Option<Vec<u8>>,
    edits: Edits,
    effects: Vec<Effect>,
    poke: bool,
    status: u16,
    buf: Vec<u8>,
    /// A WebInterface file, not an API call: no credentials go to the node.
    static_file: bool,
    /// Template names this request may create (`settings copy`, `bot save`), held until it
    /// ends so that no concurrent request creates the same name on another node.
    claims: Vec<PendingTemplate>,
    /// When the request head was read (`new_ctx`).
    started: Option<Instant>,
    /// What the request turned out to be, for metrics.
    kind: Kind,
    /// The router's own time so far: deciding, and editing the answer.
    own: Duration,
    /// The last try could not connect (already counted as a connect error): until a
    /// connection is made, a final failure is not counted again.
    connect_failed: bool,
    /// The error sent instead of a node answer that had to be edited or checked and turned
    /// out to be garbage (set just before the hook that found it fails the request).
    withheld: Option<ApiError>,
    /// This process is handing over: the request goes unchanged to the new process.
    forward: bool,
    /// Counts this request as one this process answers itself (a hand-over waits for it).
    own_request: Option<OwnRequest>,
    /// Its place among the requests to its node (`NodeGate`), held until it ends.
    node_place: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The caller's key: the owner of templates this request creates.
    key: Option<Arc<str>>,
    /// The caller is a key of scope `own`: answers show only its bots and templates.
    tenant: Option<Arc<str>>,
    /// Its template prefix, removed from every JSON answer (error answers too).
    strip: Option<String>,
    /// This answer is JSON and has the prefix removed (decided on the response head).
    stripping: bool,
    /// The cluster's generation when the request last went to a node (`upstream_peer`):
    /// its answer may be older than what the router learned since.
    sent: Option<u64>,
}

impl RequestCtx {
    /// Time since the request head was read.
    fn elapsed(&self) -> Duration {
        self.started.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// "bot 3 on " (what the request was for), or nothing, for error messages.
    fn subject(&self) -> String {
        if self.why.is_empty() {
            String::new()
        } else {
            format!("{} on ", self.why)
        }
    }

    /// Withholds the node's answer: `why` says what is wrong with it. The returned error
    /// fails the request, and `fail_to_proxy` sends the TS3AudioBot error instead.
    fn withhold(&mut self, why: &str) -> Box<Error> {
        let node = self
            .node
            .as_ref()
            .map(|n| n.name.to_string())
            .unwrap_or_default();
        self.withheld = Some(withheld(&self.subject(), &node, why));
        self.edits = Edits::default();
        self.buf = Vec::new();
        Error::explain(WITHHELD, why.to_string())
    }
}

/// The least a forwarded request waits for the new process's answer: it may first wait for
/// the store's lock and load it, and poll every node once.
const HANDOVER_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// The error a hook fails a request with when the node's answer is withheld.
const WITHHELD: ErrorType = ErrorType::Custom("node answer withheld");

impl Router {
    /// Builds the router.
    pub fn new(
        cluster: Arc<Cluster>,
        keys: Arc<Keys>,
        cfg: RoutingConfig,
        exec: Exec,
        stats: Option<Arc<ProxyStats>>,
    ) -> Result<Router, String> {
        let allow = cfg
            .anonymous_allow
            .iter()
            .map(|p| AllowPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let throttle = AuthThrottle::new(cfg.auth_failure_limit, cfg.auth_failure_window);
        let cfg_gate = cfg.max_node_connections;
        Ok(Router {
            throttle,
            cluster,
            keys,
            allow,
            cfg,
            exec,
            turn: AtomicUsize::new(0),
            stats,
            handover: None,
            gate: NodeGate::new(cfg_gate),
        })
    }

    /// A place for this request among the requests to its node (`NodeGate`), held in `ctx`
    /// until the request ends.
    async fn take_place(&self, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        if let Some(node) = ctx.node.clone() {
            ctx.node_place = self
                .gate
                .enter(node.id, &node.name, self.cfg.connect_timeout)
                .await?;
        }
        Ok(())
    }

    /// The router with a graceful-upgrade switch: once thrown, requests are forwarded to the
    /// new process over the hand-over socket.
    pub fn with_handover(mut self, handover: Arc<Handover>) -> Router {
        self.handover = Some(handover);
        self
    }

    fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// The new process's hand-over socket as a peer: it may take a while to answer (it opens
    /// and loads the store first), so its read deadline is generous.
    fn handover_peer(&self, h: &Handover) -> pingora::Result<HttpPeer> {
        let path = h.socket().to_string_lossy();
        let mut peer = HttpPeer::new_uds(&path, false, String::new())?;
        peer.options.connection_timeout = Some(self.cfg.connect_timeout);
        let wait = (self.cfg.request_timeout * 2).max(HANDOVER_ANSWER_WAIT);
        peer.options.read_timeout = Some(wait);
        peer.options.write_timeout = Some(wait);
        Ok(peer)
    }

    fn pick_any(&self, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        match self.exec.any_node(self.next_turn(), &ctx.tried) {
            Some(n) => {
                ctx.node = Some(n);
                ctx.movable = true;
                Ok(())
            }
            None => Err(ApiError::unavailable(
                "no TS3AudioBot node is reachable right now; try again in a few seconds",
            )),
        }
    }

    /// Bookkeeping once the node answered: what a 204 confirms is applied (template claims
    /// durably, before the client gets the answer), and settings written where the answer
    /// cannot confirm them are read back after any success.
    async fn apply_effects(&self, ctx: &RequestCtx) {
        let Some(node) = &ctx.node else { return };
        let mut read_back = Vec::new();
        let mut claimed = false;
        for e in &ctx.effects {
            match e {
                Effect::ReadBack(r) => read_back.push(r.clone()),
                _ if ctx.status != 204 => {}
                Effect::ForgetBot(gid) => {
                    let template = self
                        .cluster
                        .whereabouts(*gid)
                        .filter(|w| w.node == node.id)
                        .and_then(|w| w.snapshot.record.template)
                        // Only the template failover made for this very bot.
                        .filter(|t| router_template_bot(t) == Some(*gid));
                    self.cluster.forget_bot(*gid, node.id);
                    if let Some(t) = template {
                        self.exec.remove_router_template(node.clone(), t);
                    }
                }
                Effect::BotSaved { gid, name } => {
                    self.cluster
                        .claim_template_now(name, node.id, ctx.key.as_deref());
                    claimed = true;
                    self.cluster
                        .update_bot(*gid, |r| r.template = Some(name.clone()));
                }
                Effect::ClaimTemplate(name) => {
                    self.cluster
                        .claim_template_now(name, node.id, ctx.key.as_deref());
                    claimed = true;
                }
                Effect::DropTemplate(name) => self.cluster.drop_template(name),
                Effect::TemplateSetting { name, path, value } => {
                    self.cluster.record_template_setting(name, path, value)
                }
                Effect::BotSetting { gid, path, value } => {
                    self.cluster.record_bot_setting(*gid, path, value)
                }
            }
        }
        // A new template's owner must survive a crash once the client knows it exists.
        if claimed {
            if let Err(e) = self.cluster.store().flush(WRITE_DEADLINE).await {
                log::error!(
                    "a template created on node {} is not durable yet: {e}",
                    node.name
                );
            }
        }
        if !read_back.is_empty() {
            self.exec.read_back(read_back);
        }
    }
}

/// What `request_filter` needs from the request head, copied out so the decision can be made
/// without holding the session.
/// Borrowed from the request head: the decision copies nothing it only reads.
struct Incoming<'a> {
    target: &'a [u8],
    declared_body: Option<u64>,
    /// The `Authorization` value; several headers are joined by ", " as ASP.NET does (which
    /// never parses).
    authorization: Option<Cow<'a, [u8]>>,
    /// The client's address (for the failed-authentication limit).
    peer: Option<std::net::IpAddr>,
}

impl<'a> Incoming<'a> {
    fn read(req: &'a RequestHeader, peer: Option<std::net::IpAddr>) -> Incoming<'a> {
        let mut values = req.headers.get_all("authorization").iter();
        let authorization = values.next().map(|first| match values.next() {
            None => Cow::Borrowed(first.as_bytes()),
            Some(second) => {
                let mut joined = first.as_bytes().to_vec();
                for more in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(more.as_bytes());
                }
                Cow::Owned(joined)
            }
        });
        Incoming {
            target: req.raw_path(),
            declared_body: header_str(req, "content-length")
                .and_then(|v| v.trim().parse::<u64>().ok()),
            authorization,
            peer,
        }
    }
}

/// What to do with a request once it is decided.
enum Flow {
    /// Proxy it to `ctx.node`.
    Proxy,
    /// Answer it with this (router-made) answer.
    Answer(Answer),
}

impl Router {
    /// Limits, authentication, rights and the plan. Errors are answered as they are.
    async fn route(&self, req: Incoming<'_>, ctx: &mut RequestCtx) -> Result<Flow, ApiError> {
        let target = req.target;
        if target.len() > self.cfg.max_target_bytes {
            return Err(ApiError::with_status(
                414,
                Reason::Unknown,
                format!(
                    "The request target is longer than {} bytes.",
                    self.cfg.max_target_bytes
                ),
            ));
        }
        if req
            .declared_body
            .is_some_and(|n| n > self.cfg.max_body_bytes as u64)
        {
            return Err(body_too_large(self.cfg.max_body_bytes));
        }
        let Some(base) = api_text_start(target) else {
            if sneaks_into_api(target) {
                return Err(ApiError::new(
                    Reason::NotSupported,
                    "The path reaches /api only through dot segments or escapes; send /api/... directly.",
                ));
            }
            // The static WebInterface: any node serves it, credentials or not (TS3AudioBot
            // checks them only under /api), and without any credentials towards the node.
            ctx.static_file = true;
            ctx.kind = Kind::Static;
            self.pick_any(ctx)?;
            return Ok(Flow::Proxy);
        };
        if req.authorization.is_some() {
            // An address that failed too often is not even checked: its guesses tell nothing.
            self.throttle.check(req.peer, Instant::now())?;
        }
        let caller = self
            .keys
            .authenticate_from(req.authorization.as_deref(), req.peer)
            .map_err(|e| {
                if let Some(stats) = &self.stats {
                    stats.record_auth_failure();
                }
                self.throttle.record_failure(req.peer, Instant::now());
                ApiError::unauthorized(&e.to_string())
            })?;
        let parsed = command::parse(&target[base..]);
        if let Some(e) = policy::check(&parsed, &caller, &self.allow, self.cfg.max_commands) {
            return Err(e);
        }
        let Parsed::Command(root) = &parsed else {
            // Not a command: the node echoes it (`{"Value": ...}`).
            ctx.kind = Kind::Any;
            self.pick_any(ctx)?;
            return Ok(Flow::Proxy);
        };
        ctx.key = caller.key_name().cloned();
        ctx.tenant = caller.tenant().map(Arc::from);
        let plan = match caller.tenant() {
            // Another tenant's bots and templates are not in this view at all, so every
            // request naming one takes the path of a name that never existed.
            Some(tenant) => {
                let view = routing::view::TenantView {
                    cluster: &self.cluster,
                    tenant,
                    prefix: routing::view::tenant_prefix(tenant),
                };
                ctx.strip = Some(view.prefix.clone());
                routing::plan(&view, &caller, target, base, root)
            }
            None => routing::plan(&*self.cluster, &caller, target, base, root),
        };
        if let Some(kind) = answered_kind(&plan) {
            // What follows waits on nodes: the router's own part ends here.
            ctx.kind = kind;
            ctx.own += ctx.elapsed();
        }
        let answer = match plan {
            Plan::Local(e) => return Err(e),
            Plan::Proxy(p) => {
                ctx.kind = if p.node.is_some() {
                    Kind::Pinned
                } else {
                    Kind::Any
                };
                match p.node {
                    Some(id) => {
                        let node = self.cluster.node(id).ok_or_else(|| gone(id, &p.why))?;
                        if node.state() == NodeState::Maint {
                            return Err(ApiError::unavailable(format!(
                                "{} runs on node {}, which is in maintenance (a planned restart); try again shortly",
                                p.why, node.name
                            ))
                            .with_retry_after(MAINT_RETRY_AFTER));
                        }
                        if !node.is_healthy() {
                            return Err(ApiError::unavailable(format!(
                                "{} runs on node {}, which is not reachable right now; try again when it is back",
                                p.why, node.name
                            )));
                        }
                        ctx.node = Some(node);
                        ctx.why = p.why;
                    }
                    None => self.pick_any(ctx)?,
                }
                for e in &p.effects {
                    if let Effect::ClaimTemplate(name) | Effect::BotSaved { name, .. } = e {
                        let claim = Cluster::claim_pending(&self.cluster, name)
                            .ok_or_else(ApiError::file_exists)?;
                        ctx.claims.push(claim);
                    }
                }
                ctx.target = p.target;
                ctx.edits = p.edits;
                ctx.effects = p.effects;
                ctx.poke = p.poke;
                return Ok(Flow::Proxy);
            }
            Plan::FanOutList => self.exec.bot_list(caller.tenant()).await,
            Plan::SystemInfo => self.exec.system_info().await,
            Plan::Broadcast { target } => self.exec.broadcast(&target).await,
            Plan::Create(c) => self.exec.create(&c, &caller).await,
            Plan::Merge(m) => self.exec.merge(&m, self.next_turn(), &caller).await,
        };
        Ok(Flow::Answer(answer.for_tenant(ctx.strip.as_deref())))
    }
}

/// The kind of a plan the router answers itself by asking nodes (None: the others).
fn answered_kind(plan: &Plan) -> Option<Kind> {
    match plan {
        Plan::FanOutList => Some(Kind::List),
        Plan::SystemInfo => Some(Kind::SystemInfo),
        Plan::Broadcast { .. } => Some(Kind::Broadcast),
        Plan::Create(_) => Some(Kind::Create),
        Plan::Merge(_) => Some(Kind::Merge),
        Plan::Local(_) | Plan::Proxy(_) => None,
    }
}

/// A `Cookie` value without the admin session cookie, or None when it has none (nothing to
/// change).
fn without_admin_session(cookie: &str) -> Option<String> {
    const SESSION: &str = "ts3ab_session=";
    if !cookie.contains(SESSION) {
        return None;
    }
    Some(
        cookie
            .split(';')
            .map(str::trim)
            .filter(|p| !p.starts_with(SESSION) && !p.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// The `Retry-After` of a request for a bot on a node in maintenance: a TS3AudioBot restart
/// takes a few seconds.
const MAINT_RETRY_AFTER: u32 = 10;

/// The 503 for a plan pinned to no node: the bot is being brought back after its node
/// restarted (or the node was just removed).
fn gone(id: NodeId, why: &Why) -> ApiError {
    if id == NodeId::NOWHERE {
        ApiError::unavailable(format!(
            "{why} went down with a restart of its node and is being started again; try again in a few seconds"
        ))
    } else {
        ApiError::unavailable(format!("{why} ran on a node that was removed"))
    }
}

/// The 413 answer to a request body over the limit, whether the router sees the declared
/// length or Pingora stops the body on the way.
fn body_too_large(limit: usize) -> ApiError {
    ApiError::with_status(
        413,
        Reason::Unknown,
        format!("The request body is larger than {limit} bytes."),
    )
}

/// Whether a raw target addresses the API: `/api` (any case) at a segment boundary. Returns the
/// offset of the command text.
pub fn api_text_start(target: &[u8]) -> Option<usize> {
    let prefix = target.get(..4)?;
    if !prefix.eq_ignore_ascii_case(b"/api") {
        return None;
    }
    match target.get(4) {
        None | Some(b'/') | Some(b'?') => Some(4),
        _ => None,
    }
}

/// Whether a target that does not start with `/api` still reaches the node's API: Kestrel
/// routes on the percent-decoded path with dot segments removed, while TS3AudioBot reads the
/// command from the raw target, so `/abc/system/quit)/../../api` would run `system quit` on
/// the node. Such targets are refused.
pub fn sneaks_into_api(target: &[u8]) -> bool {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let path = &target[..end];
    // Decode like ASP.NET's request path: every escape except an encoded slash. This is not
    // `command::unescape` on purpose: Kestrel routes on bytes with `%2F` kept encoded (so
    // `..%2Fapi` is one segment), while `unescape` (.NET `Uri.UnescapeDataString`, how
    // TS3AudioBot reads argument values) decodes `%2F` too and keeps escapes that do not form
    // valid UTF-8 as written. Using it here would see dot segments Kestrel does not.
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match (
            path[i],
            path.get(i + 1).and_then(|b| hex(*b)),
            path.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) if (h << 4 | l) != b'/' => {
                decoded.push(h << 4 | l);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let segs: Vec<&[u8]> = decoded.split(|b| *b == b'/').collect();
    let mut out: Vec<&[u8]> = Vec::new();
    for (k, seg) in segs.iter().enumerate().skip(1) {
        let last = k + 1 == segs.len();
        match *seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
        if last && matches!(*seg, b"." | b"..") {
            out.push(b"");
        }
    }
    let mut normal = Vec::with_capacity(decoded.len());
    for seg in out {
        normal.push(b'/');
        normal.extend_from_slice(seg);
    }
    api_text_start(&normal).is_some()
}

/// Writes a complete answer with TS3AudioBot's API headers.
async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    retry_after: Option<u32>,
) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(status, Some(5))?;
    if let Some(secs) = retry_after {
        h.insert_header("Retry-After", secs.to_string())?;
    }
    h.insert_header("Content-Type", content_type)?;
    h.insert_header("Access-Control-Allow-Origin", "*")?;
    h.insert_header(CACHE_CONTROL_NAME, CACHE_CONTROL_VALUE)?;
    h.insert_header("Content-Length", body.len().to_string())?;
    // The client may have sent a body we never read: close instead of draining it.
    if request_has_body(session) {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Kestrel's answer to request headers over its limit: 431 with no body, connection closed.
async fn headers_too_large(session: &mut Session) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(431, Some(2))?;
    h.insert_header("Content-Length", "0")?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(h), true).await?;
    Ok(())
}

async fn respond_error(session: &mut Session, e: &ApiError) -> pingora::Result<()> {
    respond(
        session,
        e.status,
        CONTENT_TYPE_JSON,
        Bytes::from(e.body()),
        e.retry_after,
    )
    .await
}

async fn respond_answer(session: &mut Session, a: Answer) -> pingora::Result<()> {
    respond(session, a.status, &a.content_type, a.body, None).await
}

fn request_has_body(session: &Session) -> bool {
    let h = session.req_header();
    h.headers.get(http::header::TRANSFER_ENCODING).is_some()
        || header_str(h, "content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_str_resp<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
    resp.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The node's answer will be edited: its framing (the edited length, or chunked) is decided
/// as its head is written (`framing`).
fn edited_framing(session: &mut Session, upstream: &mut ResponseHeader) -> pingora::Result<()> {
    match session.downstream_modules_ctx.get_mut::<EditedFraming>() {
        Some(f) => f.editing(),
        None => {
            upstream.remove_header("content-length");
            upstream.insert_header("Transfer-Encoding", "chunked")?;
        }
    }
    Ok(())
}

/// The ASP.NET CORS middleware's answer to a preflight (any origin, method and header).
async fn preflight(session: &mut Session) -> pingora::Result<()> {
    let req = session.req_header();
    let method = header_str(req, "access-control-request-method")
        .unwrap_or("GET")
        .to_string();
    let headers = header_str(req, "access-control-request-headers").map(str::to_string);
    let mut h = ResponseHeader::build(204, Some(4))?;
    h.insert_header("Access-Control-Allow-Origin", "*")?;
    h.insert_header("Access-Control-Allow-Methods", method)?;
    if let Some(hs) = headers {
        h.insert_header("Access-Control-Allow-Headers", hs)?;
    }
    session.write_response_header(Box::new(h), true).await?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for Router {
    type CTX = RequestCtx;

    /// Only [`EditedFraming`] (edited answers' framing, the bound on chunked request bodies):
    /// Pingora's default, a disabled compression module, would only cost each request its
    /// boxed hooks (the router never compresses).
    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(EditedFraming::builder(self.cfg.max_body_bytes));
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            // No clock reads at all when nothing is recorded.
            started: self.stats.is_some().then(Instant::now),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        if let Some(h) = &self.handover {
            match h.admit() {
                Some(own) => {
                    if h.closing() {
                        session.set_keepalive(None);
                    }
                    ctx.own_request = Some(own);
                }
                None => {
                    // Handing over: the new process decides everything (limits, auth, plan).
                    // The client's next request opens a new connection, which the new
                    // process accepts once this one stops listening.
                    ctx.forward = true;
                    ctx.kind = Kind::Any;
                    session.set_keepalive(None);
                    return Ok(false);
                }
            }
        }
        let req = session.req_header();
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if header_bytes > self.cfg.max_header_bytes {
            ctx.own = ctx.elapsed();
            headers_too_large(session).await?;
            return Ok(true);
        }
        if req.method == http::Method::OPTIONS
            && req.headers.contains_key("origin")
            && req.headers.contains_key("access-control-request-method")
        {
            ctx.kind = Kind::Preflight;
            ctx.own = ctx.elapsed();
            preflight(session).await?;
            return Ok(true);
        }
        let peer = match session.client_addr() {
            // The only unix listener is the hand-over socket: the old process names the
            // client it forwards for.
            Some(a) if a.as_unix().is_some() => handover::forwarded_client(header_str(
                session.req_header(),
                handover::CLIENT_HEADER,
            )),
            a => a
                .and_then(|a| a.as_inet())
                // An IPv4 client on a dual-stack listener is the same client as on an IPv4 one.
                .map(|a| a.ip().to_canonical()),
        };
        let incoming = Incoming::read(session.req_header(), peer);
        match self.route(incoming, ctx).await {
            Ok(Flow::Proxy) => {
                // The router's own time ends here: a wait for a place is the node's.
                ctx.own += ctx.elapsed();
                if let Err(e) = self.take_place(ctx).await {
                    respond_error(session, &e).await?;
                    return Ok(true);
                }
                Ok(false)
            }
            Ok(Flow::Answer(a)) => {
                respond_answer(session, a).await?;
                Ok(true)
            }
            Err(e) => {
                // Refused or failed before any node was asked (or by the plan's own check):
                // all of it was the router's time, unless a router-made answer's nodes failed.
                if ctx.own.is_zero() {
                    ctx.own = ctx.elapsed();
                }
                respond_error(session, &e).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Every attempt sends the request body from its start (a retry replays what was read
        // so far), so it is counted from its start.
        if let Some(f) = session.downstream_modules_ctx.get_mut::<EditedFraming>() {
            f.new_attempt();
        }
        if ctx.forward {
            if let Some(h) = &self.handover {
                return Ok(Box::new(self.handover_peer(h)?));
            }
        }
        let endpoint = match &ctx.node {
            Some(n) => n.endpoint(),
            None => return Error::e_explain(ErrorType::HTTPStatus(503), "no node chosen"),
        };
        // A retry on another node (`fail_to_connect`) needs a place there too.
        if ctx.node_place.is_none() {
            if let Err(e) = self.take_place(ctx).await {
                return Error::e_explain(ErrorType::HTTPStatus(503), e.message);
            }
        }
        let peer = NodeClient::proxy_peer(
            &endpoint,
            self.cfg.connect_timeout,
            self.cfg.request_timeout,
        );
        ctx.endpoint = Some(endpoint);
        ctx.sent = Some(self.cluster.generation());
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        upstream.remove_header(handover::CLIENT_HEADER);
        if ctx.forward {
            // Unchanged (the client's own Authorization included), with the client's address.
            // `Connection` is hop-by-hop: the client's `close` must not end the pooled
            // connection to the new process.
            upstream.remove_header("connection");
            if let Some(ip) = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_canonical())
            {
                upstream.insert_header(handover::CLIENT_HEADER, ip.to_string())?;
            }
            return Ok(());
        }
        // Called once connected: a later failure is the node's answer failing.
        ctx.connect_failed = false;
        if let Some(t) = &ctx.target {
            upstream.set_raw_path(t)?;
        }
        // The client's secret never leaves the router; the node gets its own credentials.
        upstream.remove_header("authorization");
        if !ctx.static_file {
            if let Some(auth) = ctx.endpoint.as_deref().and_then(NodeClient::proxy_auth) {
                upstream.insert_header("Authorization", auth.clone())?;
            }
        }
        upstream.remove_header("x-real-ip");
        // Browsers send cookies to every port of a host: the admin panel's session must not
        // travel on to a node.
        if let Some(kept) = header_str(upstream, "cookie").and_then(without_admin_session) {
            if kept.is_empty() {
                upstream.remove_header("cookie");
            } else {
                upstream.insert_header("Cookie", kept)?;
            }
        }
        if ctx.edits.any() || ctx.strip.is_some() {
            upstream.remove_header("accept-encoding");
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // An informational head (`100 Continue`) is not the answer: the answer's own head,
        // which follows, decides how it is edited.
        if is_interim(upstream.status) {
            return Ok(());
        }
        ctx.status = upstream.status.as_u16();
        if ctx.forward {
            return Ok(());
        }
        if (200..300).contains(&ctx.status) && !ctx.effects.is_empty() {
            self.apply_effects(ctx).await;
        }
        if ctx.edits.bot_ids {
            // The body may show bots the router meets for the first time; the ids it gives
            // them there (without waiting) must already be durably reserved.
            if let Err(e) = self.cluster.ensure_id_headroom(WRITE_DEADLINE).await {
                log::error!("could not reserve cluster ids durably: {e}");
            }
        }
        // No body follows (HEAD, 204, 304): nothing to edit, and the node's framing stays. But
        // a HEAD's `Content-Length` is that of the node's unedited body, which the GET it
        // stands for would not have (other ids, a tenant's shorter list): it goes.
        let head = session.req_header().method == http::Method::HEAD;
        if head || matches!(ctx.status, 204 | 304) {
            if head && (ctx.edits.any() || ctx.strip.is_some()) {
                upstream.remove_header(&http::header::CONTENT_LENGTH);
            }
            ctx.edits = Edits::default();
            ctx.stripping = false;
            return Ok(());
        }
        let json = upstream
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(CONTENT_TYPE_JSON));
        if ctx.edits.any() && ctx.status == 200 {
            // An answer that must be edited or checked and that the head already shows cannot
            // be is refused here, while the client can still get a real error status.
            if !json {
                let ct = upstream
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let why = match ct {
                    Some(ct) => format!("Content-Type {ct}, not TS3AudioBot's JSON"),
                    None => "no Content-Type, not TS3AudioBot's JSON".to_string(),
                };
                return Err(ctx.withhold(&why));
            }
            let declared = header_str_resp(upstream, "content-length")
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_RESPONSE as u64) {
                return Err(ctx.withhold(&format!(
                    "an answer larger than {MAX_RESPONSE} bytes, too large to edit"
                )));
            }
            edited_framing(session, upstream)?;
        } else {
            ctx.edits = Edits::default();
        }
        // A tenant's answers never show the node's names of its templates, errors included.
        ctx.stripping = ctx.strip.is_some() && json;
        if ctx.stripping && !ctx.edits.any() {
            edited_framing(session, upstream)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Duration>> {
        if !ctx.edits.any() && !ctx.stripping {
            return Ok(None);
        }
        if let Some(b) = body.take() {
            ctx.buf.extend_from_slice(&b);
        }
        if ctx.buf.len() > MAX_RESPONSE {
            // Too large to edit, and never sent on unedited: its BotInfo ids would be the
            // node's local ones (a client using one reaches another bot) and its secrets
            // unredacted. Failing here also stops reading a body that may never end.
            return Err(ctx.withhold(&format!(
                "an answer larger than {MAX_RESPONSE} bytes, too large to edit"
            )));
        }
        if end_of_stream {
            let editing = ctx.started.map(|_| Instant::now());
            let buf = std::mem::take(&mut ctx.buf);
            let edited = match &ctx.node {
                Some(n) if ctx.edits.any() => Exec::edit_for(
                    &self.cluster,
                    n.id,
                    &buf,
                    &ctx.edits,
                    ctx.tenant.as_deref(),
                    ctx.sent.unwrap_or(u64::MAX),
                ),
                _ => Ok(None),
            };
            let edited = match edited {
                Ok(e) => e,
                Err(why) => return Err(ctx.withhold(&why)),
            };
            let mut out = edited.unwrap_or(buf);
            if let (true, Some(prefix)) = (ctx.stripping, &ctx.strip) {
                if let Some(s) = strip_names(&out, prefix) {
                    out = s;
                }
            }
            // Known before the head is written when the body came with it (`framing`).
            if let Some(f) = session.downstream_modules_ctx.get_mut::<EditedFraming>() {
                f.edited_length(out.len());
            }
            *body = Some(Bytes::from(out));
            if let Some(t) = editing {
                ctx.own += t.elapsed();
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(node) = &ctx.node {
            node.stats.record_upstream_error(UpstreamError::Connect);
            ctx.connect_failed = true;
            ctx.tried.push(node.id);
            // Nothing was sent: an unpinned request may go to another node.
            if ctx.movable && ctx.tried.len() < 3 && self.pick_any(ctx).is_ok() {
                // The place was the first node's; `upstream_peer` takes one on the next.
                ctx.node_place = None;
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let node = ctx
            .node
            .as_ref()
            .map(|n| n.name.to_string())
            .unwrap_or_default();
        let subject = ctx.subject();
        // The client already has the head of a streamed answer (and maybe part of its body):
        // anything written now would be taken for the rest of the node's body (it would even
        // fill up a declared Content-Length), so the connection is only closed and the client
        // sees a cut answer, as it would from the node. An answer being edited was buffered
        // whole (nothing of its body sent; its head either not yet written or sent chunked):
        // the error can still be its body.
        // A `100 Continue` passed on is not the answer's head: a real one can still follow.
        let streamed_partly = session
            .response_written()
            .is_some_and(|h| !is_interim(h.status))
            && !ctx.edits.any()
            && ctx.withheld.is_none();
        // An answer withheld as garbage is the node's failure however the hook ended it.
        let garbage = ctx.withheld.is_some();
        let api = match ctx.withheld.take() {
            // The hook that found the answer garbage said why.
            Some(w) => w,
            None if ctx.forward => {
                if session.response_written().is_some() {
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                log::error!("a request forwarded to the new process failed: {e}");
                ApiError::unavailable(format!(
                    "the router is being upgraded and its new process did not answer ({}); try again",
                    e.etype().as_str()
                ))
            }
            None => match e.etype() {
                ErrorType::HTTPStatus(413) => body_too_large(self.cfg.max_body_bytes),
                ErrorType::HTTPStatus(code) => {
                    ApiError::with_status(*code, Reason::InternalError, e.to_string())
                }
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::ConnectProxyFailure
                | ErrorType::BindError
                | ErrorType::SocketError
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout
                | ErrorType::TLSWantX509Lookup
                | ErrorType::InvalidCert
                | ErrorType::HandshakeError => ApiError::unavailable(format!(
                    "{subject}node {node} is not reachable: {}",
                    e.etype().as_str()
                )),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => ApiError::with_status(
                    504,
                    Reason::InternalError,
                    format!(
                        "{subject}node {node} did not answer within {:?}",
                        self.cfg.request_timeout
                    ),
                ),
                _ if e.esource() == &pingora::ErrorSource::Downstream => {
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    }
                }
                _ => ApiError::with_status(
                    502,
                    Reason::InternalError,
                    format!(
                        "{subject}node {node} failed while answering: {}",
                        exchange_gist(e).unwrap_or_else(|| e.etype().as_str())
                    ),
                ),
            },
        };
        // Connect failures were counted as they happened (`fail_to_connect`); only what
        // went wrong with the node's side of an established exchange counts here (not the
        // client's side, nor the router's own errors).
        let failed = match e.etype() {
            _ if garbage => Some(UpstreamError::Failed),
            _ if ctx.connect_failed || e.esource() != &pingora::ErrorSource::Upstream => None,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(UpstreamError::Timeout),
            _ => Some(UpstreamError::Failed),
        };
        if let (Some(node), Some(failed)) = (&ctx.node, failed) {
            node.stats.record_upstream_error(failed);
        }
        // The node may be gone: re-read its list so liveness and counts catch up now.
        ctx.poke = ctx.node.is_some();
        let code = api.status;
        // The error answer is the router's own, framed by its own Content-Length.
        if let Some(f) = session.downstream_modules_ctx.get_mut::<EditedFraming>() {
            f.reset();
        }
        if !streamed_partly {
            // A head already sent stays as it was; the error is then the body.
            let _ = respond_error(session, &api).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own warnings and errors say about a request: never its arguments (they
    /// carry passwords and identity keys) nor headers (`Authorization`).
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("", |p| p.as_str());
        format!("{} {}", req.method, log_summary(target.as_bytes()))
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(stats) = &self.stats {
            let status = session
                .response_written()
                .map(|r| r.status.as_u16())
                .filter(|s| *s != 0);
            stats.record(ctx.kind, status, ctx.elapsed(), ctx.own);
        }
        if ctx.poke {
            if let Some(node) = ctx.node.clone() {
                self.exec.poke(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefix_at_segment_boundary() {
        assert_eq!(api_text_start(b"/api"), Some(4));
        assert_eq!(api_text_start(b"/API/bot/list"), Some(4));
        assert_eq!(api_text_start(b"/Api?x"), Some(4));
        assert_eq!(api_text_start(b"/apix"), None);
        assert_eq!(api_text_start(b"/ap"), None);
        assert_eq!(api_text_start(b"/"), None);
        assert_eq!(api_text_start(b"/index.html"), None);
    }

    #[test]
    fn dot_segments_into_api_are_detected() {
        for t in [
            &b"/abc/system/quit)/../../../api"[..],
            b"/abc/../api/bot/list",
            b"/x/%2e%2e/API/bot/list",
            b"/x/./../api",
            b"/abc/%2E%2E/api?x",
        ] {
            assert!(sneaks_into_api(t), "{}", String::from_utf8_lossy(t));
        }
        for t in [
            &b"/"[..],
            b"/index.html",
            b"/openapi/index.html",
            b"/x/..%2Fapi",
            b"/apix/../apiy",
            b"/a/b/../c",
        ] {
            assert!(!sneaks_into_api(t), "{}", String::from_utf8_lossy(t));
        }
    }
}
