//! The admin API's endpoints, in one table: the dispatcher matches requests against it and
//! the OpenAPI document is written from it, so the document describes every endpoint.
//!
//! Owns: [`ROUTES`] (method, path pattern, what it does), matching a path against them, and
//! `openapi.json`. Does not own: what an endpoint does (`http` and the resource modules).

use serde_json::{json, Map, Value};

/// What an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /admin/api/login`.
    Login,
    /// `POST /admin/api/logout`.
    Logout,
    /// `GET /admin/api/session`.
    Session,
    /// `GET /admin/api/overview`.
    Overview,
    /// `GET /admin/api/nodes`.
    Nodes,
    /// `POST /admin/api/nodes`.
    NodeAdd,
    /// `GET /admin/api/nodes/{name}`.
    Node,
    /// `PATCH /admin/api/nodes/{name}`.
    NodeEdit,
    /// `DELETE /admin/api/nodes/{name}`.
    NodeDelete,
    /// `POST /admin/api/nodes/{name}/evacuate`.
    NodeEvacuate,
    /// `GET /admin/api/bots`.
    Bots,
    /// `GET /admin/api/bots/{id}`.
    Bot,
    /// `POST /admin/api/bots/{id}/stop`.
    BotStop,
    /// `POST /admin/api/bots/{id}/move`.
    BotMove,
    /// `POST /admin/api/rebalance`.
    Rebalance,
    /// `GET /admin/api/operations`.
    Operations,
    /// `GET /admin/api/operations/{id}`.
    Operation,
    /// `GET /admin/api/keys`.
    Keys,
    /// `POST /admin/api/keys`.
    KeyAdd,
    /// `DELETE /admin/api/keys/{name}`.
    KeyDelete,
    /// `PATCH /admin/api/keys/{name}`.
    KeyEdit,
    /// `GET /admin/api/audit`.
    Audit,
    /// `GET /admin/api/config`.
    Config,
    /// `GET /admin/api/openapi.json`.
    OpenApi,
}

/// One endpoint: method, path pattern (`{x}` is one segment), endpoint, summary, JSON body
/// fields it takes (name, type, required).
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern.
    pub path: &'static str,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// What it does.
    pub summary: &'static str,
    /// Body fields: (name, JSON type, required).
    pub body: &'static [(&'static str, &'static str, bool)],
}

const fn r(
    method: &'static str,
    path: &'static str,
    endpoint: Endpoint,
    summary: &'static str,
    body: &'static [(&'static str, &'static str, bool)],
) -> Route {
    Route {
        method,
        path,
        endpoint,
        summary,
        body,
    }
}

/// Every admin endpoint.
pub const ROUTES: &[Route] = &[
    r("POST", "/admin/api/login", Endpoint::Login, "Log in with an admin key: sets the session cookie, answers the CSRF token", &[("name", "string", true), ("secret", "string", true)]),
    r("POST", "/admin/api/logout", Endpoint::Logout, "End the session", &[]),
    r("GET", "/admin/api/session", Endpoint::Session, "The current session (name, role, csrf)", &[]),
    r("GET", "/admin/api/overview", Endpoint::Overview, "Cluster totals", &[]),
    r("GET", "/admin/api/nodes", Endpoint::Nodes, "Every node with its state, health and load", &[]),
    r("POST", "/admin/api/nodes", Endpoint::NodeAdd, "Add a node (checked first: version and bot list with those credentials)", &[("name", "string", true), ("url", "string", true), ("auth", "string", false), ("capacity", "integer", false), ("state", "string", false), ("agent", "object", false), ("ca_file", "string", false), ("tls_host", "string", false)]),
    r("GET", "/admin/api/nodes/{name}", Endpoint::Node, "One node", &[]),
    r("PATCH", "/admin/api/nodes/{name}", Endpoint::NodeEdit, "Change a node's url, auth (null removes it), capacity, state (ready, drain, maint) or agent ({url, token?}; null removes it), ca_file or tls_host (null: system roots, the URL's host)", &[("url", "string", false), ("auth", "string", false), ("capacity", "integer", false), ("state", "string", false), ("agent", "object", false), ("ca_file", "string", false), ("tls_host", "string", false)]),
    r("DELETE", "/admin/api/nodes/{name}", Endpoint::NodeDelete, "Remove a node that holds no bots or templates", &[]),
    r("POST", "/admin/api/nodes/{name}/evacuate", Endpoint::NodeEvacuate, "Move every bot of the node to other nodes (an operation)", &[]),
    r("GET", "/admin/api/bots", Endpoint::Bots, "Bots, filtered (node, status, q on template/server/nickname) and paged (page, per_page)", &[]),
    r("GET", "/admin/api/bots/{id}", Endpoint::Bot, "One bot's record (never its identity key)", &[]),
    r("POST", "/admin/api/bots/{id}/stop", Endpoint::BotStop, "Stop a bot (bot disconnect on its node)", &[]),
    r("POST", "/admin/api/bots/{id}/move", Endpoint::BotMove, "Move a bot to another node, playback carried over (an operation)", &[("node", "string", true)]),
    r("POST", "/admin/api/rebalance", Endpoint::Rebalance, "Move bots from the fullest to the emptiest nodes until each is within one bot of its fair share (an operation)", &[]),
    r("GET", "/admin/api/operations", Endpoint::Operations, "Operations, newest first", &[]),
    r("GET", "/admin/api/operations/{id}", Endpoint::Operation, "One operation's progress", &[]),
    r("GET", "/admin/api/keys", Endpoint::Keys, "API keys (names, roles, created, last used; never secrets)", &[]),
    r("POST", "/admin/api/keys", Endpoint::KeyAdd, "Create a key; its secret is in this answer only", &[("name", "string", true), ("role", "string", true), ("scope", "string", false), ("max_bots", "integer", false), ("allow_from", "array", false)]),
    r("PATCH", "/admin/api/keys/{name}", Endpoint::KeyEdit, "Change a key's scope (all, own), max_bots (null: no limit) or allow_from (CIDR list); applies from the next request", &[("scope", "string", false), ("max_bots", "integer", false), ("allow_from", "array", false)]),
    r("DELETE", "/admin/api/keys/{name}", Endpoint::KeyDelete, "Revoke a key at once", &[]),
    r("GET", "/admin/api/audit", Endpoint::Audit, "The audit trail, newest first (limit, before)", &[]),
    r("GET", "/admin/api/config", Endpoint::Config, "The effective configuration, secrets redacted", &[]),
    r("GET", "/admin/api/openapi.json", Endpoint::OpenApi, "This document", &[]),
];

/// What a path matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched<'a> {
    /// An endpoint, with the path's `{x}` segments in order.
    Found(Endpoint, Vec<&'a str>),
    /// The path exists, the method does not.
    WrongMethod,
    /// No such path.
    NotFound,
}

fn captures<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    if p.len() != s.len() {
        return None;
    }
    let mut out = Vec::new();
    for (a, b) in p.iter().zip(&s) {
        if a.starts_with('{') {
            if b.is_empty() {
                return None;
            }
            out.push(*b);
        } else if a != b {
            return None;
        }
    }
    Some(out)
}

/// Matches a request.
pub fn find<'a>(method: &str, path: &'a str) -> Matched<'a> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut path_known = false;
    for route in ROUTES {
        if let Some(c) = captures(route.path, path) {
            if route.method == method {
                return Matched::Found(route.endpoint, c);
            }
            path_known = true;
        }
    }
    if path_known {
        Matched::WrongMethod
    } else {
        Matched::NotFound
    }
}

/// The OpenAPI 3 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK (201 for a creation, 202 for an operation, 204 with no body)"},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if !route.body.is_empty() {
            let props: Map<String, Value> = route
                .body
                .iter()
                .map(|(n, t, _)| (n.to_string(), json!({"type": t})))
                .collect();
            let required: Vec<&str> = route.body.iter().filter(|f| f.2).map(|f| f.0).collect();
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": props, "required": required}}}});
        }
        entry[route.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "ts3ab-lb admin API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Authenticate with an admin key (Basic) or a session cookie from /admin/api/login; changes made with the cookie need the X-CSRF-Token header."},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}, "session": {"type": "apiKey", "in": "cookie", "name": "ts3ab_session"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "message"], "properties": {
                "error": {"type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "conflict", "too_large", "invalid", "node_check_failed", "unavailable"]},
                "message": {"type": "string"}, "field": {"type": "string"}}}}
        },
        "security": [{"basic": []}, {"session": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_with_captures_and_wrong_methods_are_told_apart() {
        assert_eq!(
            find("GET", "/admin/api/nodes/n1"),
            Matched::Found(Endpoint::Node, vec!["n1"])
        );
        assert_eq!(
            find("POST", "/admin/api/nodes/n1/evacuate/"),
            Matched::Found(Endpoint::NodeEvacuate, vec!["n1"])
        );
        assert_eq!(find("PUT", "/admin/api/nodes/n1"), Matched::WrongMethod);
        assert_eq!(find("GET", "/admin/api/nodes//x"), Matched::NotFound);
        assert_eq!(find("GET", "/admin/api/nope"), Matched::NotFound);
    }

    #[test]
    fn the_document_has_every_route() {
        let doc = openapi();
        for route in ROUTES {
            assert!(
                doc["paths"][route.path][route.method.to_ascii_lowercase()]["summary"].is_string(),
                "{} {}",
                route.method,
                route.path
            );
        }
        assert_eq!(
            doc["paths"]["/admin/api/nodes"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"]["required"],
            json!(["name", "url"])
        );
    }
}
