//! Router core (issue "Router core"): authentication, cluster-wide ids, routing rules and
//! fidelity, against three fake TS3AudioBot nodes and the real `ts3ab-lb` binary.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Three nodes, a router in front, and a bot on each node.
struct Setup {
    nodes: Vec<FakeNode>,
    router: Router,
}

fn setup() -> Setup {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let router = Router::start(&nodes.iter().collect::<Vec<_>>(), RouterOpts::default());
    Setup { nodes, router }
}

impl Setup {
    /// Creates a temporary bot on node `i` behind the router's back and waits until the
    /// router lists it; returns its cluster id.
    fn bot_on(&self, i: usize, address: &str) -> u64 {
        let lid = self.nodes[i].connect_bot(address);
        let mut gid = None;
        self.router
            .wait_until(10, "the poller to adopt the bot", |r| {
                gid = r
                    .bot_list()
                    .iter()
                    .find(|b| b["Server"] == address)
                    .and_then(|b| b["Id"].as_u64());
                gid.is_some()
            });
        // The router reads an adopted bot's identity in the background: let that land, so
        // that tests comparing the requests a node got see only their own.
        wait_for_requests(
            &self.nodes[i],
            10,
            "the identity read",
            &[identity_read(lid)],
        );
        gid.expect("gid")
    }

    fn node_direct(&self, i: usize, target: &str) -> Response {
        raw_request(
            self.nodes[i].addr(),
            "GET",
            target.as_bytes(),
            &[("Authorization", &basic_node(i))],
            None,
        )
    }
}

impl Setup {
    /// A bot on node 0 whose cluster id has more digits than its local id (ten bots adopted
    /// elsewhere first): its cluster id and local id.
    fn bot_with_a_longer_id(&self) -> (u64, u32) {
        for i in 0..10 {
            self.nodes[1].connect_bot(&format!("ts.other{i}"));
        }
        self.router
            .wait_until(10, "the poller to adopt ten bots", |r| {
                r.bot_list().len() >= 10
            });
        let gid = self.bot_on(0, "ts.a");
        (gid, self.nodes[0].bots()[0].id)
    }
}

fn basic_node(i: usize) -> String {
    let t = node_token(i);
    let (u, s) = t.split_once(':').expect("uid:token");
    basic((u, s))
}

fn api_headers_ok(r: &Response) {
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{r:?}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"), "{r:?}");
    assert_eq!(
        r.header("CacheControl"),
        Some("no-cache, no-store, must-revalidate"),
        "{r:?}"
    );
}

// ---- authentication --------------------------------------------------------------------------

/// The four failure cases answer TS3AudioBot's exact 401 bodies, and anonymous requests are
/// refused except the cover image.
#[test]
fn authentication_failures_are_ts3audiobots_401s() {
    let s = setup();
    let r = &s.router;
    let cases: [(&str, &str); 6] = [
        (
            "Basic Zm9vOmJhcg==",
            "Unknown user or no active token found",
        ), // foo:bar
        ("Bearer abc", "Unsupported authentication scheme"),
        ("Basic !!!!", "Malformed base64 string"),
        ("Basic", "Authentication failed"),
        ("Basic YWxpY2U=", "Authentication failed"), // "alice": no colon
        ("Basic YWxpY2U6d3Jvbmc=", "Authentication failed"), // alice:wrong
    ];
    for (header, message) in cases {
        let resp = r.request("GET", b"/api/bot/list", &[("Authorization", header)]);
        assert_eq!(resp.status, 401, "{header}");
        api_headers_ok(&resp);
        assert_eq!(
            resp.json(),
            json!({"ErrorCode":2,"ErrorName":"Unauthorized","ErrorMessage":message,
                   "HelpMessage":"You have to authenticate yourself to call this method.",
                   "HelpLink":"https://github.com/Splamy/TS3AudioBot/wiki/WebAPI#authentication"}),
            "{header}"
        );
    }
    // Exact key order, as TS3AudioBot serialises it.
    let resp = r.request("GET", b"/api/version", &[("Authorization", "Bearer x")]);
    assert!(resp
        .text()
        .starts_with(r#"{"ErrorCode":2,"ErrorName":"Unauthorized","ErrorMessage":"Unsupported"#));
    let anon = r.request("GET", b"/api/bot/list", &[]);
    assert_eq!(anon.status, 401);
    assert_eq!(
        anon.json()["ErrorMessage"],
        "This bot does not allow anonymous api requests"
    );
    // No node saw any of these.
    for n in &s.nodes {
        assert!(client_targets(n).is_empty(), "{:?}", client_targets(n));
    }
}

/// The client's secret never reaches a node: each node gets its own token, and a client's
/// X-Real-IP (which a node trusts from loopback) is dropped.
#[test]
fn upstream_gets_the_nodes_own_credentials() {
    let s = setup();
    let gid = s.bot_on(1, "ts.one");
    for n in &s.nodes {
        n.clear_requests();
    }
    let resp = s.router.request(
        "GET",
        format!("/api/bot/use/{gid}/(/song)").as_bytes(),
        &[("Authorization", &basic(USER)), ("X-Real-IP", "127.0.0.1")],
    );
    assert_eq!(resp.status, 422, "{}", resp.text()); // nothing playing: the node's own answer
    let seen: Vec<_> = s.nodes[1]
        .requests()
        .into_iter()
        .filter(|r| r.target != b"/api/bot/list" && r.target != b"/api/system/info")
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(basic_node(1).as_str())
    );
    assert!(seen[0]
        .headers
        .iter()
        .all(|(k, _)| !k.eq_ignore_ascii_case("x-real-ip")));
    for n in &s.nodes {
        for req in n.requests() {
            let a = req.authorization.unwrap_or_default();
            assert!(!a.contains(&basic(USER)[6..]) && !a.contains(&basic(ADMIN)[6..]));
        }
    }
}

/// The official WebInterface loads covers with an `<img>` tag, without credentials: allowed.
#[test]
fn anonymous_cover_image_is_allowed_and_binary_passes_through() {
    let s = setup();
    let gid = s.bot_on(2, "ts.cover");
    let r = s.router.get(&format!(
        "/api/bot/use/{gid}/(/play/https%3A%2F%2Fexample.com%2Fa.mp3)"
    ));
    assert_eq!(r.status, 204, "{}", r.text());
    let cover = s.router.request(
        "GET",
        format!("/api/bot/use/{gid}/(/data/song/cover/get)").as_bytes(),
        &[],
    );
    assert_eq!(cover.status, 200);
    assert_eq!(cover.header("Content-Type"), Some("image/png"));
    assert!(cover.body.starts_with(b"\x89PNG"), "binary body intact");
    // The same request straight to the node gives the same bytes.
    let lid = s.nodes[2].bots()[0].id;
    let direct = s.node_direct(2, &format!("/api/bot/use/{lid}/(/data/song/cover/get)"));
    assert_eq!(direct.body, cover.body);
    // Anything else anonymous is refused.
    let other = s
        .router
        .request("GET", format!("/api/bot/use/{gid}/(/song)").as_bytes(), &[]);
    assert_eq!(other.status, 401);
}

// ---- cluster-wide ids ---------------------------------------------------------------------

/// Bots that already run when the router starts get ids 0, 1, 2...; the lists of all nodes are
/// merged and translated; each id routes to its own bot.
#[test]
fn existing_bots_get_cluster_ids_and_route_to_their_node() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    // Every node has a bot with local id 0: the cluster must tell them apart.
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.connect_bot(&format!("ts.node{i}")), 0);
    }
    let router = Router::start(&nodes.iter().collect::<Vec<_>>(), RouterOpts::default());
    router.wait_until(10, "three bots", |r| {
        r.bot_list().iter().filter(|b| !b["Id"].is_null()).count() == 3
    });
    let list = router.bot_list();
    let mut ids: Vec<u64> = list.iter().filter_map(|b| b["Id"].as_u64()).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2]);
    for b in &list {
        let gid = b["Id"].as_u64().expect("id");
        let info = router.get(&format!("/api/bot/use/{gid}/(/bot/info)"));
        assert_eq!(info.status, 200, "{}", info.text());
        // The BotInfo comes back with the cluster id, from the right node.
        assert_eq!(info.json()["Id"], json!(gid));
        assert_eq!(info.json()["Server"], b["Server"]);
    }
}

/// A node reuses the lowest free local id for the next bot; the old cluster id must never
/// reach the new bot, and the new bot gets a new id. Through the router this holds at once;
/// for changes made behind its back, from the next poll on.
#[test]
fn reused_local_id_never_routes_to_the_old_cluster_id() {
    let node = fake_node(0);
    let router = Router::start(&[&node], RouterOpts::default());
    let created = router.get("/api/bot/connect/to/ts.old");
    assert_eq!(created.status, 200, "{}", created.text());
    let old = created.json()["Id"].as_u64().expect("id");
    let lid = node.bots()[0].id;
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{old}/(/bot/disconnect)"))
            .status,
        204
    );
    let again = router.get("/api/bot/connect/to/ts.new").json();
    assert_eq!(node.bots()[0].id, lid, "the node reused the local id");
    let new = again["Id"].as_u64().expect("id");
    assert_ne!(new, old);
    let gone = router.get(&format!("/api/bot/use/{old}/(/bot/info)"));
    assert_eq!(gone.status, 422, "{}", gone.text());
    assert_eq!(gone.json()["ErrorMessage"], "This bot does not exist.");
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{new}/(/bot/info)"))
            .json()["Server"],
        "ts.new"
    );

    // Behind the router's back: the slot changes hands between two polls.
    node.disconnect_bot(lid);
    assert_eq!(node.connect_bot("ts.sneaky"), lid);
    router.wait_until(10, "the poller to see the new bot", |r| {
        r.bot_list().iter().any(|b| b["Server"] == "ts.sneaky")
    });
    let list = router.bot_list();
    let sneaky = list
        .iter()
        .find(|b| b["Server"] == "ts.sneaky")
        .and_then(|b| b["Id"].as_u64())
        .expect("id");
    assert!(sneaky > new, "{list:?}");
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{new}/(/bot/info)"))
            .status,
        422
    );
}

// ---- routing -----------------------------------------------------------------------------

/// Every id token anywhere is rewritten, and nothing else changes.
#[test]
fn pinned_requests_reach_the_node_byte_exact_except_ids() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    let b = s.bot_on(0, "ts.b");
    let lid_of = |gid: u64| {
        let info = s.router.get(&format!("/api/bot/use/{gid}/(/bot/info)"));
        let server = info.json()["Server"].as_str().map(str::to_string);
        s.nodes[0]
            .bots()
            .into_iter()
            .find(|x| x.server == server)
            .map(|x| x.id)
            .expect("lid")
    };
    let (la, lb) = (lid_of(a), lid_of(b));
    s.nodes[0].clear_requests();
    let sent = format!("/api/json/merge/(/bot/use/{a}/(/song))/(/bot/use/{b}/(/volume))/(/xecute/(/bot/use/{a}/(/print/%28x%29/\"q\")))");
    let r = s.router.get(&sent);
    assert_eq!(r.status, 200, "{}", r.text());
    let want = format!("/api/json/merge/(/bot/use/{la}/(/song))/(/bot/use/{lb}/(/volume))/(/xecute/(/bot/use/{la}/(/print/%28x%29/\"q\")))");
    assert_eq!(client_targets(&s.nodes[0]), vec![want]);
}

/// A top-level json merge over bots on different nodes is split, run on each node and merged
/// back in order; anything else naming bots on two nodes is a 400 that says why.
#[test]
fn merge_across_nodes_is_split_and_other_cross_node_requests_refused() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    let b = s.bot_on(1, "ts.b");
    assert_eq!(
        s.router
            .get(&format!("/api/bot/use/{b}/(/volume/30)"))
            .status,
        204
    );
    let r = s.router.get(&format!(
        "/api/json/merge/(/bot/use/{a}/(/volume))/(/bot/use/{b}/(/volume))/(/bot/use/{a}/(/bot/info))/(/bot/use/999/(/song))"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v[0], json!(50.0));
    assert_eq!(v[1], json!(30.0));
    assert_eq!(v[2]["Id"], json!(a));
    assert_eq!(v[3], Value::Null);
    // The volume floats come back byte-exact (50.0, not 50).
    assert!(r.text().starts_with("[50.0,30.0,{"), "{}", r.text());
    let e = s.router.get(&format!(
        "/api/xecute/(/bot/use/{a}/(/next))/(/bot/use/{b}/(/next))"
    ));
    assert_eq!(e.status, 400);
    assert_eq!(e.json()["ErrorName"], "NotSupported");
    assert!(e.json()["ErrorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("node-0") && m.contains("node-1")));
}

/// bot/list (top level or nested, as the PyPI client sends it) fans out; a failing or hung node
/// does not fail the list: its known bots appear with Status 1, quickly.
#[test]
fn bot_list_fans_out_and_survives_a_dead_node() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    let b = s.bot_on(1, "ts.b");
    let nested = s.router.get(&format!("/api/bot/use/{a}/(/bot/list"));
    assert_eq!(nested.status, 200);
    api_headers_ok(&nested);
    assert_eq!(nested.json().as_array().map(Vec::len), Some(2));
    s.nodes[1].set_fault(Some(Fault::Hang));
    // Lists within routing.list_cache_ms of the last one may be that one again; ask until a
    // fresh fan-out shows the hung node's bot as connecting. No answer may be slow.
    let mut list = Vec::new();
    s.router
        .wait_until(10, "a list showing b as connecting", |r| {
            let t = Instant::now();
            list = r.bot_list();
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "fan-out waited {:?}",
                t.elapsed()
            );
            list.iter()
                .find(|x| x["Id"] == json!(b))
                .expect("b still listed")["Status"]
                == 1
        });
    assert_eq!(
        list.iter().find(|x| x["Id"] == json!(a)).expect("a")["Status"],
        2
    );
    s.nodes[1].set_fault(None);
    s.nodes[2].kill();
    let list = s.router.bot_list();
    assert_eq!(list.len(), 2);
}

/// Offline templates appear once, and not while the template runs somewhere.
#[test]
fn offline_templates_appear_once() {
    let s = setup();
    s.nodes[0].add_template("music", &[("connect.address", "ts.music")]);
    s.nodes[1].add_template("radio", &[]);
    s.router
        .wait_until(10, "templates", |r| r.bot_list().len() == 2);
    let list = s.router.bot_list();
    assert!(
        list.contains(&json!({"Id":null,"Name":"music","Server":"ts.music","Status":0})),
        "{list:?}"
    );
    let started = s.router.get("/api/bot/connect/template/music");
    assert_eq!(started.status, 200, "{}", started.text());
    let list = s.router.bot_list();
    let music: Vec<_> = list.iter().filter(|b| b["Name"] == "music").collect();
    assert_eq!(music.len(), 1, "{list:?}");
    assert!(music[0]["Id"].is_u64());
}

/// Template commands go to the node that holds the template, wherever they are nested.
#[test]
fn templates_route_to_their_node() {
    let s = setup();
    s.nodes[2].add_template("quiet", &[("connect.name", "Quiet")]);
    s.router.wait_until(10, "template", |r| {
        r.bot_list().iter().any(|b| b["Name"] == "quiet")
    });
    let a = s.bot_on(0, "ts.a");
    for n in &s.nodes {
        n.clear_requests();
    }
    let r = s.router.get("/api/settings/bot/get/quiet/connect.name");
    assert_eq!((r.status, r.text()), (200, "\"Quiet\"".to_string()));
    let r = s.router.get(&format!(
        "/api/bot/use/{a}/(/settings/bot/set/quiet/connect.name/Silent"
    ));
    assert_eq!(r.status, 204, "{}", r.text());
    let r = s.router.get("/api/bot/info/template/quiet");
    assert_eq!(r.json()["Name"], "quiet");
    let r = s.router.get("/api/bot/template/quiet/(/bot/info)");
    assert_eq!(
        r.status,
        422,
        "not running: the node's own error ({})",
        r.text()
    );
    assert_eq!(
        client_targets(&s.nodes[2]),
        vec![
            "/api/settings/bot/get/quiet/connect.name".to_string(),
            "/api/settings/bot/set/quiet/connect.name/Silent".into(),
            "/api/bot/info/template/quiet".into(),
            "/api/bot/template/quiet/(/bot/info)".into(),
        ]
    );
    assert!(client_targets(&s.nodes[0]).is_empty());
}

/// Cluster-wide commands: version, json api (with translated server urls), help and the login
/// probe go to one healthy node; system info is summed; rights reload goes everywhere.
#[test]
fn cluster_wide_commands() {
    let s = setup();
    // A bot on every node, and two on node-0, so that no node's local ids equal the cluster
    // ids of its bots: node-0 runs local 0 and 1 as 0 and 3, node-1 and node-2 run local 0 as
    // 1 and 2.
    let x = s.bot_on(0, "ts.x");
    let a = s.bot_on(1, "ts.a");
    let y = s.bot_on(2, "ts.y");
    let z = s.bot_on(0, "ts.z");
    let expected: [Vec<(u64, &str)>; 3] = [
        vec![(x, "ts.x"), (z, "ts.z")],
        vec![(a, "ts.a")],
        vec![(y, "ts.y")],
    ];
    let v = s.router.get("/api/version");
    assert_eq!(v.status, 200);
    assert!(v.json()["Version"].is_string());
    let probe = s.router.get("/api/json/merge");
    assert_eq!((probe.status, probe.text()), (200, "[]".to_string()));
    let bad_probe = s.router.request(
        "GET",
        b"/api/json/merge",
        &[("Authorization", "Basic YTpi")],
    );
    assert_eq!(bad_probe.status, 401);
    // json api goes to one node (round-robin); ask until each node has answered once. The
    // answer lists exactly the answering node's bots, under their cluster ids.
    let mut answered = [false; 3];
    for _ in 0..12 {
        if answered.iter().all(|a| *a) {
            break;
        }
        for n in &s.nodes {
            n.clear_requests();
        }
        let api = s.router.get("/api/json/api");
        assert_eq!(api.status, 200, "{}", api.text());
        let who: Vec<usize> = (0..3)
            .filter(|i| client_targets(&s.nodes[*i]).contains(&"/api/json/api".to_string()))
            .collect();
        assert_eq!(who.len(), 1, "json api reached nodes {who:?}");
        let node = who[0];
        answered[node] = true;
        let api = api.json();
        let urls: Vec<&str> = api["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .filter_map(|x| x["url"].as_str())
            .collect();
        assert!(urls.contains(&"/api"), "{urls:?}");
        let mut ids: Vec<u64> = urls
            .iter()
            .filter(|u| u.starts_with("/api/bot/use/"))
            .map(|u| {
                u.trim_start_matches("/api/bot/use/")
                    .trim_end_matches("/(/")
                    .parse()
                    .unwrap_or_else(|e| panic!("{u}: {e}"))
            })
            .collect();
        ids.sort();
        assert!(
            !ids.is_empty(),
            "node-{node} runs bots, its json api lists none: {urls:?}"
        );
        let want: Vec<u64> = expected[node].iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, want, "node-{node}'s bots under their cluster ids");
        for (id, server) in &expected[node] {
            let info = s.router.get(&format!("/api/bot/use/{id}/(/bot/info)"));
            assert_eq!(info.status, 200, "bot {id}: {}", info.text());
            assert_eq!(info.json()["Server"], *server, "bot {id}");
        }
    }
    assert_eq!(
        answered, [true; 3],
        "json api did not reach every node in 12 tries"
    );
    for n in &s.nodes {
        n.clear_requests();
    }
    let rr = s.router.get("/api/rights/reload");
    assert_eq!(rr.status, 204);
    for n in &s.nodes {
        assert_eq!(client_targets(n), vec!["/api/rights/reload".to_string()]);
    }
    let denied = s.router.get_as(USER, "/api/rights/reload");
    assert_eq!(denied.status, 403);

    // help goes to one healthy node and comes back as that node wrote it.
    let paths = ["/api/help", "/api/help/command/play"];
    let direct: Vec<Vec<u8>> = paths.iter().map(|p| s.node_direct(0, p).body).collect();
    for n in &s.nodes {
        n.clear_requests();
    }
    for (path, direct) in paths.iter().zip(&direct) {
        let r = s.router.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(&r.body, direct, "{path}");
    }
    let helped: usize = s
        .nodes
        .iter()
        .map(|n| {
            client_targets(n)
                .iter()
                .filter(|t| t.starts_with("/api/help"))
                .count()
        })
        .sum();
    assert_eq!(helped, 2, "each help request reached exactly one node");

    // Other node-wide commands reach every node, for admin keys only.
    for path in [
        "/api/settings/bot/reload",
        "/api/settings/global/set/web.api.enabled/true",
        "/api/plugin/load/x",
        "/api/plugin/unload/x",
    ] {
        for n in &s.nodes {
            n.clear_requests();
        }
        let denied = s.router.get_as(USER, path);
        assert_eq!(denied.status, 403, "{path}");
        assert_eq!(denied.json()["ErrorName"], "MissingRights", "{path}");
        for n in &s.nodes {
            assert!(
                client_targets(n).is_empty(),
                "{path}: a user's request got through"
            );
        }
        let _ = s.router.get(path);
        for n in &s.nodes {
            assert_eq!(client_targets(n), vec![path.to_string()], "{path}");
        }
    }
    // Last, because a new start time reads as a node restart: the router then brings the
    // node's bots back, and that traffic would show up in the request logs checked above.
    for (i, n) in s.nodes.iter().enumerate() {
        n.set_system_info(
            vec![100, 200],
            vec![0.5, 1.0],
            &format!("2021-04-0{}T12:00:00Z", 3 - i),
        );
    }
    let info = s.router.get("/api/system/info");
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(
        info.json(),
        json!({"memory":[300,600],"cpu":[1.5,3.0],"starttime":"2021-04-01T12:00:00Z"})
    );
}

/// A summed `system/info` is reused within `routing.system_info_cache_ms` (the WebInterface
/// asks every second, the nodes sample once per second), and asked afresh with the cache off.
#[test]
fn summed_system_info_is_reused_within_its_window_and_fresh_with_the_cache_off() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    // Before the routers start: a start time that changes later would read as a restart.
    let set = |memory: i64| {
        for n in &nodes {
            n.set_system_info(
                vec![memory, 2 * memory],
                vec![0.5, 1.0],
                "2021-04-01T12:00:00Z",
            );
        }
    };
    set(100);
    let with_cache = |ms: u64| {
        Router::start(
            &nodes.iter().collect::<Vec<_>>(),
            RouterOpts {
                routing_yaml: format!("system_info_cache_ms: {ms}"),
                ..RouterOpts::default()
            },
        )
    };
    let (cached, fresh) = (with_cache(60_000), with_cache(0));
    let sum = |r: &Router| {
        let info = r.get("/api/system/info");
        assert_eq!(info.status, 200, "{}", info.text());
        info.json()["memory"].clone()
    };
    assert_eq!(sum(&cached), json!([200, 400]));
    assert_eq!(sum(&fresh), json!([200, 400]));
    set(1000);
    assert_eq!(
        sum(&fresh),
        json!([2000, 4000]),
        "the cache off asks the nodes every time"
    );
    assert_eq!(
        sum(&cached),
        json!([200, 400]),
        "within the window the summed answer is reused"
    );
}

/// A summed `system/info` that misses a node (it did not answer within the fan-out deadline)
/// is not reused, however long the window: the next request asks every node again.
#[test]
fn a_summed_system_info_missing_a_node_is_not_reused() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    for n in &nodes {
        n.set_system_info(vec![100, 200], vec![0.5, 1.0], "2021-04-01T12:00:00Z");
    }
    let router = Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            routing_yaml: "system_info_cache_ms: 60000".into(),
            ..RouterOpts::default()
        },
    );
    let sum = || {
        let info = router.get("/api/system/info");
        assert_eq!(info.status, 200, "{}", info.text());
        info.json()["memory"].clone()
    };
    // Slower than the fan-out's 1 s deadline, within the poll's 2 s: node-1 stays up.
    nodes[1].set_latency_on(Duration::from_millis(1500), "system/info");
    assert_eq!(sum(), json!([100, 200]), "node-1 missed the deadline");
    nodes[1].set_latency(Duration::ZERO);
    assert_eq!(
        sum(),
        json!([200, 400]),
        "the sum without node-1 was not reused"
    );
}

/// system quit is refused for everyone; node-wide commands need an admin key; identities and
/// passwords are redacted for user keys.
#[test]
fn policy_and_redaction() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    for key in [ADMIN, USER] {
        let r = s.router.get_as(key, "/api/system/quit");
        assert_eq!(r.status, 403);
        assert!(r.json()["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("system quit")));
    }
    for path in [
        "/api/settings/global/get",
        "/api/plugin/list",
        "/api/eval/x",
    ] {
        let r = s.router.get_as(USER, path);
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["ErrorName"], "MissingRights");
    }
    let admin_view = s
        .router
        .get(&format!(
            "/api/bot/use/{a}/(/settings/get/connect.identity)"
        ))
        .json();
    assert!(admin_view["key"].as_str().is_some_and(|k| !k.is_empty()));
    let user_view = s
        .router
        .get_as(
            USER,
            &format!("/api/bot/use/{a}/(/settings/get/connect.identity)"),
        )
        .json();
    assert_eq!(user_view, json!({"key":null,"offset":null,"level":null}));
    let full = s
        .router
        .get_as(USER, &format!("/api/bot/use/{a}/(/settings/get)"))
        .text();
    assert!(
        !full.contains(admin_view["key"].as_str().unwrap_or("-")),
        "identity key leaked"
    );
    let leaf = s.router.get_as(
        USER,
        &format!("/api/bot/use/{a}/(/settings/get/connect.identity.key)"),
    );
    assert_eq!(leaf.text(), "null");

    // Passwords too, for a bot's own settings and for templates (`settings bot get`).
    let p = s.router.get("/api/bot/connect/to/pw.example.com/hunter2");
    assert_eq!(p.status, 200, "{}", p.text());
    let p = p.json()["Id"].as_u64().expect("id");
    let admin_pw = s
        .router
        .get(&format!(
            "/api/bot/use/{p}/(/settings/get/connect.server_password)"
        ))
        .text();
    assert!(admin_pw.contains("hunter2"), "{admin_pw}");
    for path in [
        format!("/api/bot/use/{p}/(/settings/get/connect.server_password)"),
        format!("/api/bot/use/{p}/(/settings/get/connect.server_password.pw)"),
        format!("/api/bot/use/{p}/(/settings/get/connect)"),
        format!("/api/bot/use/{p}/(/settings/get)"),
    ] {
        let r = s.router.get_as(USER, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(!r.text().contains("hunter2"), "{path}: password leaked");
    }
    assert_eq!(s.router.get("/api/settings/create/vault").status, 204);
    for (k, v) in [
        ("connect.server_password.pw", "swordfish"),
        ("connect.channel_password.pw", "tunafish"),
        ("connect.identity.key", "SECRETKEY123"),
    ] {
        let r = s
            .router
            .get(&format!("/api/settings/bot/set/vault/{k}/{v}"));
        assert_eq!(r.status, 204, "{k}: {}", r.text());
    }
    let admin_tpl = s.router.get("/api/settings/bot/get/vault").text();
    for secret in ["swordfish", "tunafish", "SECRETKEY123"] {
        assert!(admin_tpl.contains(secret), "admin sees {secret}");
    }
    for path in [
        "/api/settings/bot/get/vault",
        "/api/settings/bot/get/vault/connect",
        "/api/settings/bot/get/vault/connect.identity",
        "/api/settings/bot/get/vault/connect.identity.key",
        "/api/settings/bot/get/vault/connect.channel_password.pw",
    ] {
        let r = s.router.get_as(USER, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let t = r.text();
        for secret in ["swordfish", "tunafish", "SECRETKEY123"] {
            assert!(!t.contains(secret), "{path}: {secret} leaked: {t}");
        }
    }
    assert_eq!(
        s.nodes[0]
            .requests()
            .iter()
            .filter(|r| r.target.starts_with(b"/api/system/quit"))
            .count(),
        0
    );
}

// ---- fidelity ------------------------------------------------------------------------------

/// 204s, {"Value":..} wrappers, 200 bodies with an ErrorCode and node errors pass through with
/// status, headers and body unchanged.
#[test]
fn node_answers_pass_through_unchanged() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    let lid = s.nodes[0].bots()[0].id;
    for cmd in [
        "(/volume)",
        "(/volume/40)",
        "(/song)",
        "(/play/https%3A%2F%2Fx%2Ffail)",
        "(/repeat)",
        "(/random)",
        "(/nosuchcommand)",
    ] {
        let via = s.router.get(&format!("/api/bot/use/{a}/{cmd}"));
        let direct = s.node_direct(0, &format!("/api/bot/use/{lid}/{cmd}"));
        assert_eq!(via.status, direct.status, "{cmd}");
        assert_eq!(via.body, direct.body, "{cmd}");
        assert_eq!(
            via.header("Content-Type"),
            direct.header("Content-Type"),
            "{cmd}"
        );
        assert_eq!(
            via.header("CacheControl"),
            direct.header("CacheControl"),
            "{cmd}"
        );
    }
}

/// An answer whose BotInfo ids the router translates (`bot info`, which the WebInterface polls
/// for every bot) keeps the node's own head (`Server`, its API headers) and carries the edited
/// body's `Content-Length`, not a chunked body: the node sent it in one write, so the router
/// edits it whole before writing the head. Only the id differs from the node's bytes.
#[test]
fn edited_answers_keep_the_nodes_head_with_a_content_length() {
    let s = setup();
    // An answer framed with the node's own length would be cut short.
    let (gid, lid) = s.bot_with_a_longer_id();
    assert!(gid.to_string().len() > lid.to_string().len(), "{gid} {lid}");
    let direct = s.node_direct(0, &format!("/api/bot/use/{lid}/(/bot/info)"));
    assert_eq!(direct.status, 200, "{}", direct.text());
    for _ in 0..3 {
        let via = s.router.get(&format!("/api/bot/use/{gid}/(/bot/info)"));
        assert_eq!(via.status, 200, "{}", via.text());
        assert_eq!(
            via.text(),
            direct
                .text()
                .replace(&format!("\"Id\":{lid},"), &format!("\"Id\":{gid},")),
            "only the id differs"
        );
        assert_eq!(via.header("Transfer-Encoding"), None, "{via:?}");
        assert_eq!(
            via.header("Content-Length"),
            Some(via.body.len().to_string().as_str()),
            "{via:?}"
        );
        assert_eq!(via.header("Server"), Some("Kestrel"), "{via:?}");
        assert!(via.header("Date").is_some(), "{via:?}");
        api_headers_ok(&via);
    }
}

/// Answers without a body keep the node's framing where the router would edit the body:
/// a HEAD carries no body to edit, so it goes out with neither the node's `Content-Length`
/// (that of the unedited body, which a GET through the router would not have) nor a
/// `Transfer-Encoding`; and an answer that follows a `100 Continue` is edited like any other
/// (the informational head is not the answer's).
#[test]
fn head_and_continued_answers_are_framed_right() {
    let s = setup();
    let (gid, lid) = s.bot_with_a_longer_id();
    assert_ne!(gid, u64::from(lid));
    let info = format!("/api/bot/use/{gid}/(/bot/info)");

    let direct = raw_request(
        s.nodes[0].addr(),
        "HEAD",
        format!("/api/bot/use/{lid}/(/bot/info)").as_bytes(),
        &[("Authorization", &basic_node(0))],
        None,
    );
    assert_eq!(direct.status, 200);
    assert!(direct.header("Content-Length").is_some(), "{direct:?}");
    let head = s
        .router
        .request("HEAD", info.as_bytes(), &[("Authorization", &basic(ADMIN))]);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("Transfer-Encoding"), None, "{head:?}");
    assert_eq!(head.header("Content-Length"), None, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    api_headers_ok(&head);

    // A body with `Expect: 100-continue`: the node answers `100 Continue` first.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(s.router.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "GET {info} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        basic(ADMIN)
    );
    stream.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let continued = b"HTTP/1.1 100 Continue\r\n\r\n";
    assert!(
        raw.starts_with(continued),
        "the node's 100 Continue: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let r = read_response(&mut std::io::BufReader::new(&raw[continued.len()..]), false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["Id"],
        gid,
        "the answer after the 100 is edited: {r:?}"
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str()),
        "{r:?}"
    );
}

/// Answers the router makes itself carry TS3AudioBot's headers; CORS preflight works; paths
/// outside /api reach a node (the WebInterface).
#[test]
fn local_answers_preflight_and_static_files() {
    let s = setup();
    let r = s.router.get("/api/bot/use/77/(/song)");
    assert_eq!(r.status, 422);
    api_headers_ok(&r);
    let pre = s.router.request(
        "OPTIONS",
        b"/api/bot/list",
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(
        pre.header("Access-Control-Allow-Headers"),
        Some("authorization")
    );
    let page = s.router.request("GET", b"/", &[]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("WebInterface"));
}

/// A node that is down gives a fast 503 in TS3AudioBot's error shape; a hung node a 504 within
/// the request timeout; never a hang.
#[test]
fn dead_or_hung_node_gives_fast_ts3ab_errors() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    let b = s.bot_on(1, "ts.b");
    s.nodes[0].kill();
    let t = Instant::now();
    let r = s.router.get(&format!("/api/bot/use/{a}/(/song)"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    api_headers_ok(&r);
    assert!(
        r.json()["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("node-0")),
        "{}",
        r.text()
    );
    s.nodes[1].set_fault(Some(Fault::Hang));
    let t = Instant::now();
    let r = s.router.get(&format!("/api/bot/use/{b}/(/song)"));
    assert!(matches!(r.status, 503 | 504), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    // Other nodes are unaffected.
    s.nodes[1].set_fault(None);
    assert_eq!(s.router.get("/api/version").status, 200);
}

/// Bad input: huge targets and bodies get clear errors, never a crash.
#[test]
fn bad_input_gets_clear_errors() {
    let s = setup();
    let long = format!("/api/print/{}", "a".repeat(9000));
    let r = s.router.get(&long);
    assert_eq!(r.status, 414);
    // A declared body over the limit is refused from the headers alone (the body is not sent
    // here: a server that refuses early closes the connection, and a client still writing
    // would see a reset instead of the answer).
    let r = s.router.request(
        "POST",
        b"/api/version",
        &[
            ("Authorization", &basic(ADMIN)),
            ("Content-Type", "application/json"),
            ("Content-Length", "3000001"),
        ],
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["ErrorCode"], 0);
    // A chunked body is counted as it streams. The answer is read while the body is still
    // being written: the router answers and closes before it has read everything, and a
    // client that only reads afterwards may find the connection reset instead.
    let mut stream = std::net::TcpStream::connect(s.router.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stream = stream.try_clone().expect("clone");
        let answered = answered.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            let read = std::io::BufReader::new(stream).read_line(&mut line);
            answered.store(true, std::sync::atomic::Ordering::Release);
            (read.map_err(|e| e.to_string()), line)
        })
    };
    use std::io::Write;
    let head = format!(
        "POST /api/version HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        basic(ADMIN)
    );
    stream.write_all(head.as_bytes()).expect("head");
    let chunk = vec![b'x'; 65536];
    for _ in 0..48 {
        if answered.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        if stream.write_all(&c).is_err() {
            break; // the router refused and closed: its answer is with the reader
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let (read, status_line) = reader.join().expect("reader");
    assert!(
        status_line.starts_with("HTTP/1.1 413 "),
        "an oversized chunked body must get a 413, got {status_line:?} (read: {read:?})"
    );
    // Control bytes in a header are refused by the HTTP parser itself (as by Kestrel).
    let r = s.router.request(
        "GET",
        b"/api/bot/use/0/(/x",
        &[("Authorization", "Basic \u{1}\u{2}")],
    );
    assert_eq!(r.status, 400);
    let r = s.router.request(
        "GET",
        b"/api/bot/use/0/(/x",
        &[("Authorization", "Basic \u{e9}\u{e8}")],
    );
    assert_eq!(r.status, 401);
    // The router is still fine.
    assert_eq!(s.router.get("/api/version").status, 200);
}

// ---- hardening ---------------------------------------------------------------------------

/// A path outside /api that Kestrel would route into /api (dot segments, escapes) is refused;
/// WebInterface files are fetched without any credentials.
#[test]
fn static_paths_cannot_reach_the_api_or_carry_credentials() {
    let s = setup();
    for t in [
        "/abc/system/quit)/../../../api",
        "/x/%2e%2e/api/bot/list",
        "/abc/bot/list)/./../../../api",
    ] {
        let r = s.router.request("GET", t.as_bytes(), &[]);
        assert_eq!(r.status, 400, "{t}: {}", r.text());
    }
    let page = s
        .router
        .request("GET", b"/index.html", &[("Authorization", &basic(ADMIN))]);
    assert_eq!(page.status, 200);
    for n in &s.nodes {
        for r in n
            .requests()
            .iter()
            .filter(|r| !r.target.starts_with(b"/api"))
        {
            assert_eq!(r.authorization, None, "static request carried credentials");
        }
        assert!(n
            .requests()
            .iter()
            .all(|r| !r.target.starts_with(b"/abc") && !r.target.starts_with(b"/x/")));
    }
}

/// Secrets cannot be read through positions the router cannot redact; settings that run
/// commands cannot be written; aliases cannot be defined; with user keys.
#[test]
fn user_keys_cannot_get_around_redaction_or_run_scripts() {
    let s = setup();
    let a = s.bot_on(0, "ts.a");
    for t in [
        format!("/api/bot/use/{a}/(/json/merge/(/settings/get/connect.identity.key))"),
        format!("/api/bot/use/{a}/(/print/(/settings/get/connect.identity))"),
        format!("/api/bot/use/{a}/(/settings/get/connect.identity%5Bkey%5D)"),
        format!("/api/bot/use/{a}/(/settings/set/events.onsongstart/!system%20quit)"),
        format!("/api/bot/use/{a}/(/alias/add/q/!system%20quit)"),
    ] {
        let r = s.router.get_as(USER, &t);
        assert_eq!(r.status, 403, "{t}: {}", r.text());
    }
    let key = s.nodes[0].bots()[0].identity_key.clone();
    for n in &s.nodes {
        assert!(client_targets(n)
            .iter()
            .all(|t| !t.contains("settings/set/events") && !t.contains("alias/add")));
    }
    let merged = s.router.get_as(
        USER,
        &format!("/api/bot/use/{a}/(/json/merge/(/settings/get/connect)/(/volume))"),
    );
    assert_eq!(merged.status, 200, "{}", merged.text());
    assert!(
        !merged.text().contains(&key),
        "identity leaked through a merge"
    );
}

/// Deeply nested or overly long commands get TS3AudioBot's complexity error; the router lives on.
#[test]
fn deep_or_huge_commands_are_refused_not_fatal() {
    let s = setup();
    let deep = format!("/api/bot/use/0/{}", "(/".repeat(4000));
    let r = s.router.request("GET", deep.as_bytes(), &[]);
    assert_eq!(r.status, 401, "anonymous first");
    let r = s.router.get(&deep);
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["ErrorMessage"],
        "The command exceeded the maximum calling complexity."
    );
    let many = format!("/api/json/merge{}", "/(/bot/list)".repeat(100));
    assert_eq!(s.router.get(&many).status, 422);
    assert_eq!(s.router.get("/api/version").status, 200);
}

/// Concurrent `bot/list` calls share one fan-out instead of multiplying node requests.
#[test]
fn concurrent_bot_lists_share_a_fan_out() {
    let nodes: Vec<FakeNode> = (0..3)
        .map(|i| fake_node_with(i, |c| c.service_time = Duration::from_millis(100)))
        .collect();
    let router = std::sync::Arc::new(Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            poll_ms: 60_000,
            ..RouterOpts::default()
        },
    ));
    // No waiting for the start-up polls: one of them landing in the window below adds at most
    // one request per node.
    for n in &nodes {
        n.clear_requests();
    }
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let r = router.clone();
            std::thread::spawn(move || r.get("/api/bot/list").status)
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().expect("join") == 200));
    let lists = nodes[0]
        .requests()
        .iter()
        .filter(|r| r.target == b"/api/bot/list")
        .count();
    assert!(
        lists < 10,
        "20 concurrent lists caused {lists} node requests"
    );
    // A change is visible at once: no stale cache after a create.
    let created = router.get("/api/bot/connect/to/fresh.example").json()["Id"].clone();
    assert!(router.bot_list().iter().any(|b| b["Id"] == created));
}

/// A broadcast does not wait for a node that is known to be down; it says which one.
#[test]
fn broadcast_reports_down_nodes_quickly() {
    let s = setup();
    s.nodes[2].kill();
    s.router.wait_until(10, "node-2 to be marked down", |r| {
        r.get("/api/rights/reload").status == 503
    });
    let t = Instant::now();
    let r = s.router.get("/api/rights/reload");
    assert_eq!(r.status, 503);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(r.json()["ErrorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("node-2")));
}

// ---- harness -----------------------------------------------------------------------------

/// The harness survives losing its port to another process between picking it and the
/// router binding it (it starts again on a new port), and a router that fails for any
/// other reason panics with the router's stderr.
#[test]
fn harness_moves_off_a_taken_port_and_shows_other_failures() {
    let node = fake_node(0);
    let mut router = Router::start(&[&node], RouterOpts::default());
    let taken = router.addr;
    router.kill();
    // Another process takes the port the config names.
    let _thief = std::net::TcpListener::bind(taken).expect("take the port");
    router.spawn();
    assert_ne!(router.addr, taken, "started again on a new port");
    assert_eq!(router.get("/api/version").status, 200);
    router.kill();

    // Any other early exit is a panic that shows what the router said.
    std::fs::write(
        router.data.join(ts3ab_lb::store::embedded::FILE_NAME),
        b"garbage garbage garbage garbage",
    )
    .expect("spoil the store");
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| router.spawn()))
        .expect_err("a router that cannot open its store does not start");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("router exited early") && msg.contains("cannot open the store"),
        "{msg}"
    );
}

/// A client address that failed to authenticate 20 times within a minute is held back with
/// 429 in TS3AudioBot's shape and `Retry-After`, even with a right key then; another address
/// is not, and anonymous requests from the held-back one still pass.
#[test]
fn failed_authentications_are_limited_per_client_address() {
    let node = fake_node(0);
    let router = Router::start(&[&node], RouterOpts::default());
    for i in 0..20 {
        let r = router.get_as((ADMIN.0, "wrong-secret"), "/api/bot/list");
        assert_eq!(r.status, 401, "attempt {i}: {}", r.text());
    }
    let held = router.get("/api/bot/list");
    assert_eq!(held.status, 429, "{}", held.text());
    let j = held.json();
    assert_eq!(j["ErrorName"], "Unauthorized", "{j}");
    assert!(
        j["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("20 within 60 s")),
        "{j}"
    );
    let wait: u64 = held
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=61).contains(&wait), "{wait}");
    // Another loopback address is another client.
    let other = from_address([127, 0, 0, 2], router.addr, &basic(ADMIN));
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // No credentials, nothing to guess: the anonymous allow-list still answers.
    let anonymous = router.request("GET", b"/api/bot/list", &[]);
    assert_ne!(anonymous.status, 429, "{}", anonymous.text());
}

/// One GET of `/api/bot/list` with `auth`, sent from local address `from`; the raw answer.
fn from_address(from: [u8; 4], to: std::net::SocketAddr, auth: &str) -> String {
    use std::io::{Read, Write};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(std::net::SocketAddr::from((from, 0))).expect("bind");
        s.connect(to).await.expect("connect")
    });
    let mut stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/bot/list HTTP/1.1\r\nHost: ts3ab\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// Request headers over 32 KiB in all are refused as Kestrel (so a TS3AudioBot node) refuses
/// them: 431, no body; just under the limit passes.
#[test]
fn request_headers_over_32_kib_get_431() {
    let node = fake_node(0);
    let router = Router::start(&[&node], RouterOpts::default());
    let auth = basic(ADMIN);
    // Names and values count: the harness's Host and Connection headers, ours and the pad.
    let fixed = "host".len()
        + "ts3ab".len()
        + "connection".len()
        + "close".len()
        + "authorization".len()
        + auth.len()
        + "x-pad".len();
    let under = "a".repeat(32 * 1024 - fixed);
    let r = router.request(
        "GET",
        b"/api/bot/list",
        &[("Authorization", &auth), ("X-Pad", &under)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let over = "a".repeat(32 * 1024 - fixed + 1);
    let r = router.request(
        "GET",
        b"/api/bot/list",
        &[("Authorization", &auth), ("X-Pad", &over)],
    );
    assert_eq!(r.status, 431, "{}", r.text());
    assert!(r.body.is_empty());
    assert!(
        client_targets(&node).is_empty(),
        "nothing reached the node: {:?}",
        client_targets(&node)
    );
}
