//! Every request shape real TS3AudioBot clients send (api-clients.md section 2) goes through the
//! router and reaches the node byte for byte, ids aside: unclosed and closed parentheses,
//! `%28`/`%29`, raw `"` and `'`, JSON in the path, `//`, trailing `/`, query strings, GETs
//! with `Content-Type: application/json`, and core commands nested in `bot/use`.

mod support;

use support::*;

/// `{id}` in a shape is the cluster id in what the client sends and the node-local id in what
/// the node must receive.
struct Shape {
    client: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const fn s(client: &'static str, path: &'static str) -> Shape {
    Shape {
        client,
        path,
        headers: &[],
    }
}

const JSON_GET: &[(&str, &str)] = &[
    ("Content-Type", "application/json"),
    ("Accept", "application/json"),
];

const SHAPES: &[Shape] = &[
    // Splamy WebInterface (closed parentheses, encodeURIComponent + %28/%29).
    s("webinterface", "/api/bot/use/{id}/(/json/merge/(/bot/info)/(/info/%40-1/5)/(/song)/(/repeat)/(/random)/(/volume))"),
    s("webinterface", "/api/bot/use/{id}/(/play/https%3A%2F%2Fyoutu.be%2Fxyz%28live%29)"),
    s("webinterface", "/api/bot/use/{id}/(/add/https%3A%2F%2Fexample.com%2Fa.mp3)"),
    s("webinterface", "/api/bot/use/{id}/(/json/merge/(/repeat/all)/(/repeat))"),
    s("webinterface", "/api/bot/use/{id}/(/json/merge/(/random/on)/(/random))"),
    s("webinterface", "/api/bot/use/{id}/(/json/merge/(/volume/42)/(/volume))"),
    s("webinterface", "/api/bot/use/{id}/(/json/merge/(/pause)/(/song))"),
    s("webinterface", "/api/bot/use/{id}/(/next)"),
    s("webinterface", "/api/bot/use/{id}/(/previous)"),
    s("webinterface", "/api/bot/use/{id}/(/seek/30)"),
    s("webinterface", "/api/bot/use/{id}/(/bot/name/My%20Bot)"),
    s("webinterface", "/api/bot/use/{id}/(/bot/move/5)"),
    s("webinterface", "/api/bot/use/{id}/(/json/merge/(/server/tree)/(/whisper/list))"),
    s("webinterface", "/api/bot/use/{id}/(/unsubscribe/channel/3)"),
    s("webinterface", "/api/bot/use/{id}/(/settings/get)"),
    s("webinterface", "/api/bot/use/{id}/(/settings/set/audio.volume.default/40)"),
    s("webinterface", "/api/bot/use/{id}/(/list/list)"),
    s("webinterface", "/api/bot/use/{id}/(/list/create/mylist/My%20List)"),
    s("webinterface", "/api/version"),
    s("webinterface", "/api/json/merge"),
    // EverHype PyPI client (never closes the parenthesis).
    s("pypi", "/api/bot/use/{id}/(/play/https%3A%2F%2Fexample.com%2Fa%20b.mp3%3Fx%3D1%26y%3D%282%29"),
    s("pypi", "/api/bot/use/{id}/(/volume/30"),
    s("pypi", "/api/bot/use/{id}/(/song"),
    s("pypi", "/api/bot/use/{id}/(/bot/commander/on"),
    s("pypi", "/api/bot/use/{id}/(/bot/info"),
    // AlexBexDE Node client (unclosed, trailing slashes).
    s("node", "/api/bot/use/{id}/(/stop/"),
    s("node", "/api/bot/use/{id}/(/previous/"),
    s("node", "/api/bot/use/{id}/(/repeat/"),
    s("node", "/api/bot/use/{id}/(/repeat/off"),
    s("node", "/api/bot/use/{id}/(/bot/avatar/set/https%3A%2F%2Fx.y%2Fa.png"),
    // Vexura PHP (JSON Content-Type on GETs, JSON in the path).
    Shape { client: "vexura", path: "/api/bot/use/{id}/(/play/https%3A%2F%2Fx.y%2Fz/{\"volume\":10}", headers: JSON_GET },
    Shape { client: "vexura", path: "/api/bot/use/{id}/(/rights/can/[\"cmd.play\"]", headers: JSON_GET },
    Shape { client: "vexura", path: "/api/bot/use/{id}/(/info/0/10", headers: JSON_GET },
    // rexlManu (closed), bennetgallein (unclosed), mskarbek48 (double slash, trailing slash).
    s("rexlmanu", "/api/bot/use/{id}/(/volume/25)"),
    s("bennetgallein", "/api/bot/use/{id}/(/play/https%3A%2F%2Fx.y%2F%7Ea"),
    s("mskarbek48", "/api/bot/use/{id}//(/volume/20"),
    s("mskarbek48", "/api/bot/use/{id}/(/song/"),
    s("mskarbek48", "/api/bot/use/{id}/(/bot/info/client"),
    // x-Scripts panel: raw double quotes.
    s("x-scripts", "/api/bot/use/{id}/(/play/\"https%3A%2F%2Fx.y%2Fq\")"),
    s("x-scripts", "/api/bot/use/{id}/(/bot/name/\"Music%20Bot\")"),
    s("x-scripts", "/api/bot/use/{id}/(/settings/set/connect.name/\"Music%20Bot\")"),
    // elipeF wrapper and kevingroeger client.
    s("elipef", "/api/bot/use/{id}/(/alias/add/hi/%21print%20hi)"),
    s("kevingroeger", "/api/bot/use/{id}/(/history/last/20"),
    s("kevingroeger", "/api/bot/use/{id}/(/list/import/imported/https%3A%2F%2Fx.y%2Fpl"),
    // Ts3Panel (query strings are not supported by TS3AudioBot: it must get them anyway).
    s("ts3panel", "/api/version?token=abc"),
    // Uppercase /API reaches the API too.
    s("any", "/API/version"),
];

#[test]
fn every_client_shape_reaches_the_node_byte_exact() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let router = Router::start(&nodes.iter().collect::<Vec<_>>(), RouterOpts::default());
    // Make cluster ids differ from local ids, so a missing rewrite shows.
    for i in 0..5 {
        assert_eq!(
            router
                .get(&format!("/api/bot/connect/to/s{i}.example.com"))
                .status,
            200
        );
    }
    let list = router.bot_list();
    let (gid, node, lid) = list
        .iter()
        .find_map(|b| {
            let gid = b["Id"].as_u64()?;
            let server = b["Server"].as_str()?;
            nodes.iter().enumerate().find_map(|(i, n)| {
                n.bots()
                    .into_iter()
                    .find(|x| x.server.as_deref() == Some(server) && u64::from(x.id) != gid)
                    .map(|x| (gid, i, x.id))
            })
        })
        .expect("a bot whose cluster id differs from its local id");
    let mut failures = Vec::new();
    for shape in SHAPES {
        for n in &nodes {
            n.clear_requests();
        }
        let sent = shape.path.replace("{id}", &gid.to_string());
        let want = shape.path.replace("{id}", &lid.to_string());
        let mut headers: Vec<(&str, &str)> = shape.headers.to_vec();
        // An admin key: some shapes (aliases) are admin-only behind the router.
        let auth = basic(ADMIN);
        headers.push(("Authorization", &auth));
        let resp = router.request("GET", sent.as_bytes(), &headers);
        let got: Vec<_> = nodes
            .iter()
            .flat_map(|n| n.requests())
            .filter(|r| r.target != b"/api/bot/list" && r.target != b"/api/system/info")
            .collect();
        let ok = got.len() == 1
            && got[0].target == want.as_bytes()
            && shape.headers.iter().all(|(k, v)| {
                got[0]
                    .headers
                    .iter()
                    .any(|(hk, hv)| hk.eq_ignore_ascii_case(k) && hv == v)
            })
            && (!shape.path.contains("{id}")
                || nodes[node]
                    .requests()
                    .iter()
                    .any(|r| r.target == want.as_bytes()));
        if !ok {
            failures.push(format!(
                "{} {sent}: status {} {}; node got {:?}",
                shape.client,
                resp.status,
                resp.text(),
                got.iter()
                    .map(|r| String::from_utf8_lossy(&r.target).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "shapes that did not arrive byte-exact:\n{}",
        failures.join("\n")
    );
}

/// Router-made requests (creates, nested core commands) send the client's own command bytes.
#[test]
fn creates_and_nested_core_commands_send_the_clients_bytes() {
    let node = fake_node(0);
    node.add_template("my_bot", &[]);
    let router = Router::start(&[&node], RouterOpts::default());
    assert_eq!(
        router
            .get("/api/bot/connect/to/ts.example.com%3A9987/pw%20x")
            .status,
        200
    );
    router.wait_until(10, "template", |r| {
        r.bot_list().iter().any(|b| b["Name"] == "my_bot")
    });
    node.clear_requests();
    // The PyPI client wraps creates in bot/use/0/( ... unclosed.
    let r = router.get("/api/bot/use/0/(/bot/connect/template/my_bot");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = router.get("/api/bot/use/0/(/settings/create/new_one");
    assert_eq!(r.status, 204, "{}", r.text());
    let got = client_targets(&node);
    assert!(
        got.contains(&"/api/bot/connect/template/my_bot".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"/api/settings/create/new_one".to_string()),
        "{got:?}"
    );
    node.clear_requests();
    assert_eq!(
        router
            .get("/api/bot/connect/to/ts2.example.com%3A9987/pw%20x")
            .status,
        200
    );
    assert_eq!(
        client_targets(&node).first().map(String::as_str),
        Some("/api/bot/connect/to/ts2.example.com%3A9987/pw%20x")
    );
}
