//! The admin listener's HTTP handling: a Pingora `ServeHttp` app for the JSON API and panel.
//!
//! Owns: reading a request (method, path, query, credentials, a body of at most 64 KiB),
//! authenticating it (admin key or session + CSRF token for changes), dispatching it along
//! [`routes::ROUTES`], writing JSON answers and the one error shape, recording every change
//! in the audit trail, and serving the panel's files. Does not own: what each endpoint does
//! (`nodes`, `keys`, `bots`, `operations`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::admin::audit::Entry;
use crate::admin::auth::{cleared_cookie, cookie_value, session_cookie, Admin, COOKIE};
use crate::admin::error::AdminError;
use crate::admin::routes::{self, Endpoint, Matched};
use crate::admin::{bots, keys, nodes, panel, AdminState};
use crate::protocol::basic_auth::basic_header;
use crate::protocol::command::unescape;
use crate::proxy::keys::Caller;

/// The largest admin request body.
pub const MAX_BODY: usize = 64 * 1024;

/// One request, read.
#[derive(Debug, Default)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query parameters, decoded.
    pub query: HashMap<String, String>,
    /// `Authorization`.
    pub authorization: Option<Vec<u8>>,
    /// `Cookie`.
    pub cookie: Option<String>,
    /// `X-CSRF-Token`.
    pub csrf: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// The client's address.
    pub peer: Option<IpAddr>,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    fn empty() -> Reply {
        Reply {
            status: 204,
            content_type: "application/json",
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn error(e: &AdminError) -> Reply {
        Reply {
            status: e.status(),
            content_type: "application/json",
            body: e.body(),
            headers: Vec::new(),
        }
    }

    /// A static file.
    pub fn file(content_type: &'static str, body: &[u8]) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.to_vec(),
            headers: Vec::new(),
        }
    }

    fn redirect(to: &str) -> Reply {
        Reply {
            status: 302,
            content_type: "text/plain",
            body: Vec::new(),
            headers: vec![("Location", to.to_string())],
        }
    }

    fn into_response(self) -> Response<Vec<u8>> {
        let mut b = Response::builder()
            .status(self.status)
            .header("Content-Type", self.content_type)
            .header("Content-Length", self.body.len().to_string())
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .header(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            );
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        b.body(self.body).unwrap_or_else(|_| {
            let mut r = Response::new(Vec::new());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// Parses a JSON body into `T`; refusals name what is wrong.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    if body.is_empty() {
        return Err(AdminError::BadRequest(
            "this endpoint takes a JSON object".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("invalid JSON body: {e}")))
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| unescape(s.replace('+', " ").as_bytes());
            (dec(k), dec(v))
        })
        .collect()
}

async fn read(s: &mut ServerSession) -> Result<Request, AdminError> {
    let h = s.req_header();
    let header = |name: &str| h.headers.get(name).map(|v| v.as_bytes().to_vec());
    let text = |name: &str| header(name).map(|v| String::from_utf8_lossy(&v).into_owned());
    let (path, query) = match h.uri.path_and_query() {
        Some(pq) => (
            pq.path().to_string(),
            pq.query().map(parse_query).unwrap_or_default(),
        ),
        None => (h.uri.path().to_string(), HashMap::new()),
    };
    let declared = text("content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(AdminError::TooLarge(MAX_BODY));
    }
    let mut req = Request {
        method: h.method.as_str().to_string(),
        path,
        query,
        authorization: header("authorization"),
        cookie: text("cookie"),
        csrf: text("x-csrf-token"),
        body: Vec::new(),
        peer: s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
    };
    while let Some(chunk) = s
        .read_request_body()
        .await
        .map_err(|e| AdminError::BadRequest(format!("could not read the body: {e}")))?
    {
        if req.body.len() + chunk.len() > MAX_BODY {
            return Err(AdminError::TooLarge(MAX_BODY));
        }
        req.body.extend_from_slice(&chunk);
    }
    Ok(req)
}

/// The admin listener's app.
pub struct AdminApp(pub Arc<AdminState>);

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let reply = match read(s).await {
            Ok(req) => self.0.handle(req).await,
            Err(e) => {
                // The rest of an oversized body is never read: close the connection.
                s.set_keepalive(None);
                Reply::error(&e)
            }
        };
        reply.into_response()
    }
}

fn is_change(method: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "DELETE" | "PUT")
}

impl AdminState {
    /// Answers one request (and records it in the audit trail if it is a change).
    pub async fn handle(&self, req: Request) -> Reply {
        if req.path == "/" || req.path == "/admin" {
            return Reply::redirect("/admin/");
        }
        if req.path == "/metrics" {
            return self.metrics(&req);
        }
        if !req.path.starts_with("/admin/api/") {
            return match (req.method.as_str(), panel::file(&req.path)) {
                ("GET" | "HEAD", Some(r)) => r,
                _ => Reply::error(&AdminError::NotFound(format!("no page at {}", req.path))),
            };
        }
        let matched = routes::find(&req.method, &req.path);
        let (endpoint, captures): (Option<Endpoint>, Vec<String>) = match &matched {
            Matched::Found(e, c) => (Some(*e), c.iter().map(|s| unescape(s.as_bytes())).collect()),
            _ => (None, Vec::new()),
        };
        let mut who = None;
        let result = match endpoint {
            None => Err(match matched {
                Matched::WrongMethod => AdminError::MethodNotAllowed(format!(
                    "{} is not allowed on {}",
                    req.method, req.path
                )),
                _ => AdminError::NotFound(format!("no endpoint {}", req.path)),
            }),
            Some(Endpoint::Login) => self.login(&req, &mut who).await,
            Some(Endpoint::Logout) => Ok(self.logout(&req)),
            Some(e) => match self.authorize(&req) {
                // Every change is in the store before its answer: while the store does not
                // answer, say so at once rather than after its deadline.
                Ok(admin) if is_change(&req.method) && !self.cluster.store_available() => {
                    who = Some(admin.name.clone());
                    Err(AdminError::Unavailable(
                        "the router's storage is unavailable, so no change can be recorded; try again when it is back".into(),
                    ))
                }
                Ok(admin) => {
                    who = Some(admin.name.clone());
                    self.dispatch(e, &captures, &req, &admin).await
                }
                Err(err) => Err(err),
            },
        };
        let reply = result.unwrap_or_else(|e| Reply::error(&e));
        // Changes by authenticated admins and login attempts are recorded; anonymous requests
        // that were refused are not (they would let anyone fill the store).
        if is_change(&req.method) && (who.is_some() || endpoint == Some(Endpoint::Login)) {
            let outcome = if reply.status < 300 {
                "ok".to_string()
            } else {
                serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("HTTP {}", reply.status))
            };
            self.audit
                .record(Entry {
                    who: who.unwrap_or_else(|| "anonymous".into()),
                    from: req.peer.map(|p| p.to_string()).unwrap_or_default(),
                    action: format!("{} {}", req.method, req.path),
                    // The thing changed: named in the path, or in the body of a creation.
                    target: captures.first().cloned().or_else(|| {
                        serde_json::from_slice::<Value>(&req.body)
                            .ok()
                            .filter(|_| endpoint != Some(Endpoint::Login))
                            .and_then(|v| v["name"].as_str().map(str::to_string))
                    }),
                    status: reply.status,
                    outcome,
                })
                .await;
        }
        reply
    }

    /// `GET /metrics`: the Prometheus exposition, for admin keys (Prometheus sends one as
    /// `basic_auth`) and panel sessions.
    fn metrics(&self, req: &Request) -> Reply {
        if !matches!(req.method.as_str(), "GET" | "HEAD") {
            return Reply::error(&AdminError::MethodNotAllowed(format!(
                "{} is not allowed on /metrics",
                req.method
            )));
        }
        match self.authorize(req) {
            Ok(_) => Reply::file(crate::metrics::CONTENT_TYPE, &self.metrics.render()),
            Err(e) => Reply::error(&e),
        }
    }

    fn authorize(&self, req: &Request) -> Result<Admin, AdminError> {
        let admin = self.sessions.authenticate_from(
            &self.keys,
            req.authorization.as_deref(),
            req.cookie.as_deref(),
            req.peer,
        )?;
        if is_change(&req.method) {
            if let Some(expected) = &admin.csrf {
                if req.csrf.as_deref() != Some(expected.as_str()) {
                    return Err(AdminError::Forbidden(
                        "changes made with a session need its X-CSRF-Token header".into(),
                    ));
                }
            }
        }
        Ok(admin)
    }

    async fn login(&self, req: &Request, who: &mut Option<String>) -> Result<Reply, AdminError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Login {
            name: String,
            secret: String,
        }
        let l: Login = json_body(&req.body)?;
        *who = Some(l.name.clone());
        // Slowed down per address: every login waits a second per recent failure from there
        // (at most five), so guessing secrets costs time.
        tokio::time::sleep(self.sessions.login_delay(req.peer)).await;
        let header = basic_header(&format!("{}:{}", l.name, l.secret));
        match self
            .keys
            .authenticate_from(Some(header.as_bytes()), req.peer)
        {
            Ok(Caller::Key {
                name,
                role: crate::config::Role::Admin,
                ..
            }) => {
                let (token, csrf) = self.sessions.open(&name)?;
                let mut r = Reply::json(
                    200,
                    &json!({ "name": &*name, "role": "admin", "csrf": csrf }),
                );
                r.headers.push((
                    "Set-Cookie",
                    session_cookie(&token, self.config.admin.session_ttl),
                ));
                Ok(r)
            }
            Ok(_) => Err(AdminError::Forbidden("this key is not an admin key".into())),
            Err(_) => {
                self.sessions.login_failed(req.peer);
                Err(AdminError::Unauthorized(
                    "unknown key name or wrong secret".into(),
                ))
            }
        }
    }

    fn logout(&self, req: &Request) -> Reply {
        if let Some(t) = req.cookie.as_deref().and_then(|c| cookie_value(c, COOKIE)) {
            self.sessions.close(t);
        }
        let mut r = Reply::empty();
        r.headers.push(("Set-Cookie", cleared_cookie()));
        r
    }

    async fn dispatch(
        &self,
        e: Endpoint,
        cap: &[String],
        req: &Request,
        admin: &Admin,
    ) -> Result<Reply, AdminError> {
        let first = || cap.first().map(String::as_str).unwrap_or_default();
        Ok(match e {
            Endpoint::Login | Endpoint::Logout => Reply::empty(),
            Endpoint::Session => Reply::json(
                200,
                &json!({ "name": admin.name, "role": "admin", "csrf": admin.csrf }),
            ),
            Endpoint::Overview => Reply::json(200, &self.overview()),
            Endpoint::Nodes => Reply::json(200, &nodes::list(self)),
            Endpoint::NodeAdd => Reply::json(201, &nodes::add(self, &req.body).await?),
            Endpoint::Node => {
                let node = nodes::get(self, first())?;
                Reply::json(200, &nodes::node_json(self, &node))
            }
            Endpoint::NodeEdit => Reply::json(200, &nodes::edit(self, first(), &req.body).await?),
            Endpoint::NodeDelete => {
                nodes::remove(self, first()).await?;
                Reply::empty()
            }
            Endpoint::NodeEvacuate => {
                Reply::json(202, &self.operations_api().evacuate(first()).await?)
            }
            Endpoint::Bots => Reply::json(200, &bots::list(self, &req.query)?),
            Endpoint::Bot => Reply::json(200, &bots::get(self, first())?),
            Endpoint::BotStop => {
                bots::stop(self, first()).await?;
                Reply::empty()
            }
            Endpoint::BotMove => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct To {
                    node: String,
                }
                let to: To = json_body(&req.body)?;
                let gid: u32 = first()
                    .parse()
                    .map_err(|_| AdminError::NotFound(format!("no bot with id `{}`", first())))?;
                Reply::json(202, &self.operations_api().move_bot(gid, &to.node).await?)
            }
            Endpoint::Rebalance => Reply::json(202, &self.operations_api().rebalance().await?),
            Endpoint::Operations => Reply::json(200, &self.operations_api().list()),
            Endpoint::Operation => Reply::json(200, &self.operations_api().get(first())?),
            Endpoint::Keys => Reply::json(200, &keys::list(self)),
            Endpoint::KeyAdd => Reply::json(201, &keys::create(self, &req.body).await?),
            Endpoint::KeyEdit => Reply::json(200, &keys::edit(self, first(), &req.body).await?),
            Endpoint::KeyDelete => {
                keys::revoke(self, first()).await?;
                Reply::empty()
            }
            Endpoint::Audit => {
                let limit = match req.query.get("limit") {
                    Some(v) => v
                        .parse::<usize>()
                        .map_err(|_| AdminError::invalid("limit", "must be a number"))?,
                    None => 100,
                };
                let before = match req.query.get("before") {
                    Some(v) => Some(
                        v.parse::<u64>()
                            .map_err(|_| AdminError::invalid("before", "must be a number"))?,
                    ),
                    None => None,
                };
                Reply::json(200, &json!(self.audit.list(limit.min(10_000), before)))
            }
            Endpoint::Config => {
                Reply::json(200, &crate::admin::config_view::redacted(&self.config))
            }
            Endpoint::OpenApi => Reply::json(200, &routes::openapi()),
        })
    }

    fn overview(&self) -> Value {
        let nodes = self.cluster.nodes();
        let up = nodes.iter().filter(|n| n.is_healthy()).count();
        let cap: u64 = nodes
            .iter()
            .map(|n| u64::from(n.capacity.load(std::sync::atomic::Ordering::Acquire)))
            .sum();
        let reserved: u64 = nodes.iter().map(|n| u64::from(n.load.reserved())).sum();
        json!({
            "nodes": nodes.len(),
            "nodes_up": up,
            "bots": self.cluster.bot_count(),
            "capacity": cap,
            "reserved": reserved,
            "restoring": self.cluster.restoring().len(),
            // Several routers on one store: whether this one runs failover and operations,
            // and whether the store answers (creates and changes are refused while not).
            "leads": self.cluster.leads(),
            "store": {
                "shared": self.cluster.is_shared(),
                "available": self.cluster.store_available(),
            },
        })
    }
}
