//! The admin API on its own listener: every endpoint and every refusal, in the documented
//! error shape (`docs/admin-api.md`), against a real router and fake nodes.

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn admin_router(nodes: &[&FakeNode]) -> Router {
    Router::start(
        nodes,
        RouterOpts {
            admin: true,
            ..RouterOpts::default()
        },
    )
}

struct Admin {
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    fn of(r: &Router) -> Admin {
        Admin {
            addr: r.admin_addr.expect("admin listener"),
            auth: basic(ADMIN),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        raw_request(
            self.addr,
            method,
            path.as_bytes(),
            &[
                ("Authorization", &self.auth),
                ("Content-Type", "application/json"),
            ],
            body.as_deref(),
        )
    }
}

/// The one error shape, with the expected status and code.
fn refused(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
}

#[test]
fn nodes_are_listed_added_checked_edited_and_removed() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let spare = fake_node(2);
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = admin_router(&refs);
    let a = Admin::of(&router);

    let list = a.call("GET", "/admin/api/nodes", None);
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    for field in [
        "name",
        "url",
        "capacity",
        "state",
        "healthy",
        "bots",
        "reserved",
        "last_error",
        "latency_ms",
        "source",
    ] {
        assert!(list[0].get(field).is_some(), "missing {field}: {}", list[0]);
    }
    assert_eq!(list[0]["source"], "config");
    assert_eq!(list[0]["healthy"], true);

    // A node that refuses the connection, one with the wrong token, one that is not a
    // TS3AudioBot: refused with the problem in words, nothing saved.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "x", "url": dead})),
    );
    refused(&r, 422, "node_check_failed");
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("cannot connect"));
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "x", "url": spare.url(), "auth": "router:wrong"})),
    );
    refused(&r, 422, "node_check_failed");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("credentials"),
        "{}",
        r.text()
    );
    let not_ts3ab = format!("http://{}", a.addr);
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "x", "url": not_ts3ab})),
    );
    refused(&r, 422, "node_check_failed");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not answer like a TS3AudioBot"),
        "{}",
        r.text()
    );
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "bad name", "url": spare.url()})),
    );
    refused(&r, 422, "invalid");
    assert_eq!(r.json()["field"], "name");
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "x", "url": "ftp://x"})),
    );
    refused(&r, 422, "invalid");
    assert_eq!(r.json()["field"], "url");
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "x", "url": spare.url(), "capacity": 0})),
    );
    refused(&r, 422, "invalid");
    assert_eq!(r.json()["field"], "capacity");
    assert_eq!(
        a.call("GET", "/admin/api/nodes", None)
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // A good one: saved, polled at once, takes new bots.
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "spare", "url": spare.url(), "auth": node_token(2), "capacity": 5})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["healthy"], true, "{}", r.text());
    assert_eq!(r.json()["source"], "admin");
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "spare", "url": spare.url(), "auth": node_token(2)})),
    );
    refused(&r, 409, "conflict");
    // Only the new node takes bots now.
    for n in ["node-0", "node-1"] {
        let r = a.call(
            "PATCH",
            &format!("/admin/api/nodes/{n}"),
            Some(json!({"state": "drain"})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["state"], "drain");
    }
    let r = router.get("/api/bot/connect/to/new.example.com");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(spare.bots().len(), 1, "the added node took the new bot");

    // Edits: capacity, a bad state, an unknown node.
    let r = a.call(
        "PATCH",
        "/admin/api/nodes/spare",
        Some(json!({"capacity": 7})),
    );
    assert_eq!(r.json()["capacity"], 7);
    let r = a.call(
        "PATCH",
        "/admin/api/nodes/spare",
        Some(json!({"state": "sleepy"})),
    );
    refused(&r, 422, "invalid");
    assert_eq!(r.json()["field"], "state");
    refused(
        &a.call(
            "PATCH",
            "/admin/api/nodes/nope",
            Some(json!({"capacity": 1})),
        ),
        404,
        "not_found",
    );
    refused(
        &a.call("GET", "/admin/api/nodes/nope", None),
        404,
        "not_found",
    );
    assert_eq!(
        a.call("GET", "/admin/api/nodes/spare", None).json()["capacity"],
        7
    );

    // Removal is refused while the node has a bot, and for config-file nodes.
    let r = a.call("DELETE", "/admin/api/nodes/spare", None);
    refused(&r, 409, "conflict");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1 bots"),
        "{}",
        r.text()
    );
    refused(
        &a.call("DELETE", "/admin/api/nodes/node-0", None),
        409,
        "conflict",
    );
    let bots = a.call("GET", "/admin/api/bots?node=spare", None).json();
    let id = bots["bots"][0]["id"].as_u64().expect("bot id");
    assert_eq!(
        a.call("POST", &format!("/admin/api/bots/{id}/stop"), None)
            .status,
        204
    );
    assert!(spare.bots().is_empty());
    let r = a.call("DELETE", "/admin/api/nodes/spare", None);
    assert_eq!(r.status, 204, "{}", r.text());
    refused(
        &a.call("GET", "/admin/api/nodes/spare", None),
        404,
        "not_found",
    );

    // Maintenance: a fast 503 with Retry-After for the node's bots.
    let r = router.get("/api/bot/connect/to/m.example.com");
    assert_eq!(r.status, 503, "every node drains now: {}", r.text());
    a.call(
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"state": "ready"})),
    );
    let gid = router.get("/api/bot/connect/to/m.example.com").json()["Id"]
        .as_u64()
        .expect("id");
    a.call(
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"state": "maint"})),
    );
    let r = router.get(&format!("/api/bot/use/{gid}/(/bot/info)"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("10"));
    assert!(r.json()["ErrorMessage"]
        .as_str()
        .unwrap_or_default()
        .contains("maintenance"));
}

/// A poll that read a node's list just before a bot was stopped answers just after: it must
/// not bring the stopped bot back under a new id, or the node looks occupied (its removal
/// refused with "1 bots") until the poll after it.
#[test]
fn a_poll_answered_after_a_stop_does_not_bring_the_bot_back() {
    let node = fake_node(0);
    let spare = fake_node(1);
    // The held poll must still be waited for when it is let go, however slow the stop.
    let router = Router::start(
        &[&node],
        RouterOpts {
            admin: true,
            poll_timeout_ms: Some(20_000),
            ..RouterOpts::default()
        },
    );
    let a = Admin::of(&router);
    let r = a.call(
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "spare", "url": spare.url(), "auth": node_token(1)})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = a.call(
        "PATCH",
        "/admin/api/nodes/node-0",
        Some(json!({"state": "drain"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = router.get("/api/bot/connect/to/late.example.com");
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["Id"].as_u64().expect("id");
    assert_eq!(spare.bots().len(), 1);

    // A poll reads the list (the bot is in it); its answer waits.
    spare.hold("/api/bot/list");
    wait_for(10, "a poll of spare to be held", || spare.held() >= 1);
    let r = a.call("POST", &format!("/admin/api/bots/{id}/stop"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(spare.bots().is_empty());
    // The next poll's answer is slow, so whatever the stale one did is still there to see
    // once that next poll has begun (polls of one node never overlap).
    spare.set_latency_on(Duration::from_secs(30), "bot/list");
    let lists = |n: &FakeNode| {
        n.requests()
            .iter()
            .filter(|q| q.target.ends_with(b"/bot/list"))
            .count()
    };
    let before = lists(&spare);
    spare.release();
    wait_for(10, "the next poll of spare", || lists(&spare) > before);
    // The held poll was applied (it did not time out): the next one is still in flight.
    let row = a.call("GET", "/admin/api/nodes/spare", None).json();
    assert!(row["last_error"].is_null(), "{row}");
    let bots = a.call("GET", "/admin/api/bots?node=spare", None).json();
    assert_eq!(bots["bots"].as_array().map(Vec::len), Some(0), "{bots}");
    let r = a.call("DELETE", "/admin/api/nodes/spare", None);
    assert_eq!(r.status, 204, "{}", r.text());
    spare.set_latency(Duration::ZERO);
}

#[test]
fn keys_are_made_shown_once_used_and_revoked() {
    let node = fake_node(0);
    let router = admin_router(&[&node]);
    let a = Admin::of(&router);
    let r = a.call(
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "carol", "role": "user"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["secret"].as_str().expect("secret").to_string();
    assert!(secret.len() >= 32);
    let carol = ("carol", secret.as_str());
    assert_eq!(router.get_as(carol, "/api/bot/list").status, 200);
    let list = a.call("GET", "/admin/api/keys", None);
    assert!(!list.text().contains(&secret), "never a secret in the list");
    let carol_row = list
        .json()
        .as_array()
        .and_then(|l| l.iter().find(|k| k["name"] == "carol").cloned())
        .expect("listed");
    assert_eq!(carol_row["role"], "user");
    assert_eq!(carol_row["source"], "admin");
    assert!(carol_row["created_ms"].as_u64().is_some_and(|t| t > 0));
    assert!(carol_row["last_used_ms"].as_u64().is_some(), "{carol_row}");
    refused(
        &a.call(
            "POST",
            "/admin/api/keys",
            Some(json!({"name": "carol", "role": "user"})),
        ),
        409,
        "conflict",
    );
    let r = a.call(
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "a:b", "role": "user"})),
    );
    refused(&r, 422, "invalid");
    assert_eq!(r.json()["field"], "name");
    let r = a.call(
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "d", "role": "root"})),
    );
    refused(&r, 422, "invalid");
    assert_eq!(r.json()["field"], "role");
    // A user key gets 403 on the admin API.
    let as_carol = Admin {
        addr: a.addr,
        auth: basic(carol),
    };
    refused(
        &as_carol.call("GET", "/admin/api/nodes", None),
        403,
        "forbidden",
    );
    // Revoked at once; config-file keys cannot be revoked here.
    assert_eq!(a.call("DELETE", "/admin/api/keys/carol", None).status, 204);
    assert_eq!(router.get_as(carol, "/api/bot/list").status, 401);
    refused(
        &a.call("DELETE", "/admin/api/keys/carol", None),
        404,
        "not_found",
    );
    refused(
        &a.call("DELETE", &format!("/admin/api/keys/{}", USER.0), None),
        409,
        "conflict",
    );

    // Stored keys survive a restart (only their digest is stored).
    let r = a.call(
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "dave", "role": "admin"})),
    );
    let dave_secret = r.json()["secret"].as_str().expect("secret").to_string();
    let mut router = router;
    router.stop();
    let raw = std::fs::read(router.data.join("ts3ab-lb.redb")).expect("store file");
    assert!(
        !raw.windows(dave_secret.len())
            .any(|w| w == dave_secret.as_bytes()),
        "the secret itself is not in the store"
    );
    router.spawn();
    assert_eq!(
        router
            .get_as(("dave", &dave_secret), "/api/bot/list")
            .status,
        200
    );
    let a = Admin::of(&router);
    let audit = a.call("GET", "/admin/api/audit", None).json();
    let actions: Vec<String> = audit
        .as_array()
        .expect("audit")
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap_or_default(),
                e["status"],
                e["who"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        actions.iter().any(|x| x == "POST /admin/api/keys 201 ops"),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|x| x == "DELETE /admin/api/keys/carol 204 ops"),
        "{actions:?}"
    );
    assert!(
        audit[0]["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("127.0.0.1")),
        "{audit}"
    );
    assert!(!audit.to_string().contains(&dave_secret));
}

#[test]
fn sessions_need_csrf_tokens_and_bad_input_gets_the_error_shape() {
    let node = fake_node(0);
    let router = admin_router(&[&node]);
    let a = Admin::of(&router);
    let admin = a.addr;
    // No credentials.
    refused(
        &raw_request(admin, "GET", b"/admin/api/nodes", &[], None),
        401,
        "unauthorized",
    );
    // A failed login, then a good one.
    let bad =
        serde_json::to_vec(&json!({"name": ADMIN.0, "secret": "wrong-secret"})).expect("json");
    refused(
        &raw_request(admin, "POST", b"/admin/api/login", &[], Some(&bad)),
        401,
        "unauthorized",
    );
    let good = serde_json::to_vec(&json!({"name": ADMIN.0, "secret": ADMIN.1})).expect("json");
    let t0 = std::time::Instant::now();
    let r = raw_request(admin, "POST", b"/admin/api/login", &[], Some(&good));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "after a failure the next login is slowed down"
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.header("Set-Cookie").expect("cookie").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csrf = r.json()["csrf"].as_str().expect("csrf").to_string();
    let session = cookie.split(';').next().expect("pair").to_string();
    let get = raw_request(
        admin,
        "GET",
        b"/admin/api/session",
        &[("Cookie", &session)],
        None,
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.json()["csrf"], csrf.as_str());
    // A change with the cookie but no CSRF token is refused; with it, it goes through.
    let body = serde_json::to_vec(&json!({"name": "e", "role": "user"})).expect("json");
    refused(
        &raw_request(
            admin,
            "POST",
            b"/admin/api/keys",
            &[("Cookie", &session)],
            Some(&body),
        ),
        403,
        "forbidden",
    );
    let r = raw_request(
        admin,
        "POST",
        b"/admin/api/keys",
        &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Logout ends the session.
    assert_eq!(
        raw_request(
            admin,
            "POST",
            b"/admin/api/logout",
            &[("Cookie", &session)],
            None
        )
        .status,
        204
    );
    refused(
        &raw_request(
            admin,
            "GET",
            b"/admin/api/session",
            &[("Cookie", &session)],
            None,
        ),
        401,
        "unauthorized",
    );

    // Bad input.
    let r = raw_request(
        admin,
        "POST",
        b"/admin/api/keys",
        &[("Authorization", &a.auth)],
        Some(b"{nope"),
    );
    refused(&r, 400, "bad_request");
    let r = a.call(
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "f", "role": "user", "extra": 1})),
    );
    refused(&r, 400, "bad_request");
    refused(&a.call("GET", "/admin/api/nothing", None), 404, "not_found");
    refused(
        &a.call("PUT", "/admin/api/nodes", None),
        405,
        "method_not_allowed",
    );
    refused(
        &a.call("GET", "/admin/api/bots/99999", None),
        404,
        "not_found",
    );
    refused(
        &a.call("GET", "/admin/api/bots?status=7", None),
        422,
        "invalid",
    );
    // A body over 64 KiB: 413, the router stays up.
    let mut s = TcpStream::connect(admin).expect("connect");
    let big = vec![b'x'; 70 * 1024];
    let head = format!(
        "POST /admin/api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
        a.auth,
        big.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    let _ = s.write_all(&big);
    let r = read_response(&mut BufReader::new(s), false);
    refused(&r, 413, "too_large");
    assert_eq!(a.call("GET", "/admin/api/nodes", None).status, 200);
}

#[test]
fn reads_overview_bots_config_and_openapi() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = admin_router(&refs);
    let a = Admin::of(&router);
    for i in 0..3 {
        let r = router.get(&format!("/api/bot/connect/to/s{i}.example.com"));
        assert_eq!(r.status, 200);
    }
    let o = a.call("GET", "/admin/api/overview", None).json();
    assert_eq!(o["nodes"], 2);
    assert_eq!(o["nodes_up"], 2);
    assert_eq!(o["bots"], 3);
    assert_eq!(o["capacity"], 600);
    let b = a
        .call("GET", "/admin/api/bots?q=s1.example&per_page=10", None)
        .json();
    assert_eq!(b["total"], 1, "{b}");
    assert_eq!(b["bots"][0]["server"], "s1.example.com");
    let page = a
        .call("GET", "/admin/api/bots?per_page=2&page=2", None)
        .json();
    assert_eq!(page["total"], 3);
    assert_eq!(page["bots"].as_array().map(Vec::len), Some(1));
    let id = b["bots"][0]["id"].as_u64().expect("id");
    let one = a.call("GET", &format!("/admin/api/bots/{id}"), None);
    assert_eq!(one.status, 200);
    assert!(one.json().get("identity").is_none(), "never the identity");
    let cfg = a.call("GET", "/admin/api/config", None);
    assert_eq!(cfg.status, 200);
    let text = cfg.text();
    assert!(
        !text.contains(ADMIN.1) && !text.contains(&node_token(0)),
        "{text}"
    );
    assert!(text.contains("<redacted>"));
    let doc = a.call("GET", "/admin/api/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/admin/api/nodes",
        "/admin/api/keys",
        "/admin/api/bots/{id}/move",
        "/admin/api/audit",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    let panel = raw_request(a.addr, "GET", b"/admin/", &[], None);
    assert_eq!(panel.status, 200);
    assert!(panel
        .header("Content-Type")
        .unwrap_or_default()
        .starts_with("text/html"));
}

#[test]
fn the_admin_session_cookie_never_reaches_a_node() {
    let node = fake_node(0);
    let router = admin_router(&[&node]);
    node.clear_requests();
    let with_session = [("Cookie", "ts3ab_session=secret-token; theme=dark")];
    assert_eq!(router.request("GET", b"/", &with_session).status, 200);
    let only_session = [("Cookie", "ts3ab_session=secret-token")];
    router.request("GET", b"/index.html", &only_session);
    let cookies: Vec<Option<String>> = node
        .requests()
        .iter()
        .filter(|r| !String::from_utf8_lossy(&r.target).starts_with("/api/"))
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        cookies,
        vec![Some("theme=dark".to_string()), None],
        "{cookies:?}"
    );
}
