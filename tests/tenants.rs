//! Tenants: keys of scope `own` see only the bots and templates they created; another
//! tenant's bot or template is answered exactly as one that never existed (byte for byte, in
//! every request shape), also after failover moved it; `max_bots` caps a key's bots, atomic
//! against concurrent creates; `allow_from` refuses other addresses as a wrong secret is
//! refused; the admin API creates and changes keys with all three.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::*;

const TA: (&str, &str) = ("tenant-a", "tenant-a-secret");
const TB: (&str, &str) = ("tenant-b", "tenant-b-secret");
/// Far away: may only be used from 10.0.0.0/8 (the tests run on loopback).
const FAR: (&str, &str) = ("far", "far-secret-123");
/// Near: loopback in both families.
const NEAR: (&str, &str) = ("near", "near-secret-123");

/// A cluster id no bot ever had.
const NEVER: u64 = 999_999;

fn opts() -> RouterOpts {
    RouterOpts {
        poll_ms: 100,
        keys_yaml: vec![
            format!("{{ name: {}, secret: \"{}\", scope: own }}", TA.0, TA.1),
            format!(
                "{{ name: {}, secret: \"{}\", scope: own, max_bots: 2 }}",
                TB.0, TB.1
            ),
            format!(
                "{{ name: {}, secret: \"{}\", allow_from: [\"10.0.0.0/8\"] }}",
                FAR.0, FAR.1
            ),
            format!(
                "{{ name: {}, secret: \"{}\", allow_from: [\"127.0.0.0/8\", \"::1\"] }}",
                NEAR.0, NEAR.1
            ),
        ],
        extra_yaml: "failover: { after_ms: 300, retry_ms: 500 }\n".into(),
        admin: true,
        ..RouterOpts::default()
    }
}

fn create(router: &Router, key: (&str, &str), target: &str) -> u64 {
    let r = router.get_as(key, target);
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r.json()["Id"].as_u64().expect("Id")
}

/// What a client can tell apart: status, content type and every body byte.
type Seen = (u16, Option<String>, Vec<u8>);

/// A request shape: the target for an id or a name.
type Shape<T> = Box<dyn Fn(T) -> String>;

/// A request shape naming a template.
type NameShape = Box<dyn Fn(&str) -> String>;

fn seen(r: &Response) -> Seen {
    (
        r.status,
        r.header("content-type").map(str::to_string),
        r.body.clone(),
    )
}

/// The ids and names in a key's `bot/list`.
fn listed(router: &Router, key: (&str, &str)) -> (BTreeSet<u64>, BTreeSet<String>) {
    let r = router.get_as(key, "/api/bot/list");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let items = v.as_array().expect("array");
    let ids = items.iter().filter_map(|b| b["Id"].as_u64()).collect();
    let names = items
        .iter()
        .filter_map(|b| b["Name"].as_str().map(str::to_string))
        .collect();
    (ids, names)
}

/// Every request shape naming a bot: A's answer for B's bot `other` must be the answer for
/// a never-used id, byte for byte. `own` is one of A's bots (for nesting and merges).
fn assert_bots_hidden(router: &Router, own: u64, other: u64) {
    let shapes: Vec<Shape<u64>> = vec![
        Box::new(|id| format!("/api/bot/use/{id}/(/bot/info)")),
        Box::new(|id| format!("/api/bot/use/{id}/(/song)")),
        Box::new(|id| format!("/api/bot/use/{id}/(/bot/disconnect)")),
        Box::new(|id| format!("/api/bot/use/{id}/(/settings/get/connect.name)")),
        Box::new(|id| format!("/api/json/merge/(/bot/use/{id}/(/bot/info))")),
        Box::new(move |id| {
            format!("/api/json/merge/(/bot/use/{own}/(/bot/info))/(/bot/use/{id}/(/bot/info))")
        }),
        Box::new(|id| format!("/api/xecute/(/bot/use/{id}/(/bot/info))")),
        Box::new(move |id| format!("/api/bot/use/{own}/(/bot/use/{id}/(/bot/info))")),
        Box::new(move |id| {
            format!("/api/bot/use/{own}/(/json/merge/(/bot/info)/(/bot/use/{id}/(/bot/info)))")
        }),
        Box::new(|id| format!("/api/bot/info/{id}")),
    ];
    for shape in &shapes {
        let hidden = router.get_as(TA, &shape(other));
        let never = router.get_as(TA, &shape(NEVER));
        assert_eq!(
            seen(&hidden),
            seen(&never),
            "{} vs {}: {} / {}",
            shape(other),
            shape(NEVER),
            hidden.text(),
            never.text()
        );
    }
}

/// What A sees for every template command naming `name`.
fn template_answers(router: &Router, name: &str) -> Vec<(String, Seen)> {
    template_shapes()
        .iter()
        .map(|shape| {
            let target = shape(name);
            let r = router.get_as(TA, &target);
            (target, seen(&r))
        })
        .collect()
}

fn template_shapes() -> Vec<NameShape> {
    vec![
        Box::new(|n| format!("/api/settings/bot/get/{n}")),
        Box::new(|n| format!("/api/settings/bot/get/{n}/connect.address")),
        Box::new(|n| format!("/api/settings/bot/set/{n}/connect.name/x")),
        Box::new(|n| format!("/api/bot/info/template/{n}")),
        Box::new(|n| format!("/api/bot/template/{n}/(/bot/info)")),
        Box::new(|n| format!("/api/json/merge/(/settings/bot/get/{n})")),
        Box::new(|n| format!("/api/settings/delete/{n}")),
        Box::new(|n| format!("/api/bot/connect/template/{n}")),
    ]
}

/// Every template command: A's answer for B's template must be the answer for a name no
/// node has (here another never-used name of the same length, so the node's words differ
/// only where they repeat the name; the test's end compares the very same name once it is
/// gone, byte for byte).
fn assert_templates_hidden(router: &Router, other: &str) -> Vec<(String, Seen)> {
    let never: String = "z".repeat(other.len());
    let hidden = template_answers(router, other);
    let unknown = template_answers(router, &never);
    for ((target, h), (_, u)) in hidden.iter().zip(&unknown) {
        assert!(
            !String::from_utf8_lossy(&h.2).contains("ts3ab-lb-"),
            "{target}: the nodes' names never show"
        );
        let u_named = String::from_utf8_lossy(&u.2).replace(&never, other);
        assert_eq!(
            (h.0, &h.1, String::from_utf8_lossy(&h.2).into_owned()),
            (u.0, &u.1, u_named),
            "{target}"
        );
    }
    hidden
}

#[test]
fn tenants_see_only_their_own_bots_and_templates_also_after_failover() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts());

    let a1 = create(&router, TA, "/api/bot/connect/to/a1.example.com");
    let a2 = create(&router, TA, "/api/bot/connect/to/a2.example.com");
    let b1 = create(&router, TB, "/api/bot/connect/to/b1.example.com");
    let x1 = create(&router, ADMIN, "/api/bot/connect/to/x1.example.com");
    assert_eq!(router.get_as(TA, "/api/settings/create/amusic").status, 204);
    assert_eq!(router.get_as(TB, "/api/settings/create/bmusic").status, 204);
    // B's template bot: counted as B's (one of its two).
    assert_eq!(
        router
            .get_as(
                TB,
                "/api/settings/bot/set/bmusic/connect.address/b.example.com"
            )
            .status,
        204
    );
    let b2 = create(&router, TB, "/api/bot/connect/template/bmusic");

    // bot/list: each tenant its own; the admin everything.
    let (ids, names) = listed(&router, TA);
    assert_eq!(ids, BTreeSet::from([a1, a2]), "A's list");
    assert_eq!(names, BTreeSet::from(["amusic".to_string()]));
    let (ids, names) = listed(&router, TB);
    assert_eq!(ids, BTreeSet::from([b1, b2]), "B's list");
    assert_eq!(names, BTreeSet::from(["bmusic".to_string()]));
    let (ids, _) = listed(&router, ADMIN);
    assert!(
        [a1, a2, b1, b2, x1].iter().all(|i| ids.contains(i)),
        "{ids:?}"
    );
    // Inside a merge, the list is cut the same way.
    let merged = router.get_as(TA, "/api/json/merge/(/bot/list)");
    assert_eq!(merged.status, 200);
    let own_list = router.get_as(TA, "/api/bot/list");
    assert_eq!(
        merged.body,
        [b"[".as_slice(), &own_list.body, b"]"].concat(),
        "merge's list"
    );

    // Own bots work; others' look nonexistent, byte for byte, in every shape.
    assert_eq!(
        router
            .get_as(TA, &format!("/api/bot/use/{a1}/(/bot/info)"))
            .json()["Id"],
        json!(a1)
    );
    assert_bots_hidden(&router, a1, b1);
    assert_bots_hidden(&router, a1, b2);
    assert_bots_hidden(&router, a1, x1);
    let before = assert_templates_hidden(&router, "bmusic");
    // A's `settings delete` of B's template (204, as for any unknown name) changed nothing.
    assert!(
        nodes
            .iter()
            .any(|n| n.templates().iter().any(|t| t.ends_with("-bmusic"))),
        "B's template is still on its node"
    );
    assert_eq!(
        router
            .get_as(TB, "/api/settings/bot/get/bmusic/connect.address")
            .status,
        200
    );
    // json/api's servers list: none of another tenant's bots.
    let api = router.get_as(TA, &format!("/api/bot/use/{a1}/(/json/api)"));
    assert_eq!(api.status, 200, "{}", api.text());
    let urls: Vec<String> = api.json()["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["url"].as_str().map(str::to_string))
        .collect();
    for other in [b1, b2, x1] {
        assert!(
            !urls.contains(&format!("/api/bot/use/{other}/(/")),
            "{urls:?}"
        );
    }

    // The node holding B's template bot dies: failover moves it (and whatever else ran
    // there); owners hold.
    let dead = nodes
        .iter()
        .position(|n| n.templates().iter().any(|t| t.ends_with("-bmusic")))
        .expect("bmusic has a node");
    let gone: Vec<String> = nodes[dead]
        .bots()
        .into_iter()
        .map(|b| b.identity_key)
        .collect();
    wait_for_requests(
        &nodes[dead],
        10,
        "the identity reads",
        &nodes[dead]
            .bots()
            .iter()
            .map(|b| identity_read(b.id))
            .collect::<Vec<_>>(),
    );
    nodes[dead].kill();
    router.wait_until(15, "the dead node's bots running elsewhere", |_| {
        let live: BTreeSet<String> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dead)
            .flat_map(|(_, n)| n.bots().into_iter().map(|b| b.identity_key))
            .collect();
        gone.iter().all(|k| live.contains(k))
    });
    router.wait_until(10, "B's template bot answering again", |r| {
        r.get_as(TB, &format!("/api/bot/use/{b2}/(/bot/info)"))
            .status
            == 200
    });
    let (ids, names) = listed(&router, TA);
    assert_eq!(ids, BTreeSet::from([a1, a2]), "A's list after failover");
    assert_eq!(names, BTreeSet::from(["amusic".to_string()]));
    let (ids, names) = listed(&router, TB);
    assert_eq!(ids, BTreeSet::from([b1, b2]), "B's list after failover");
    assert_eq!(names, BTreeSet::from(["bmusic".to_string()]));
    assert_bots_hidden(&router, a1, b2);
    assert_bots_hidden(&router, a1, b1);
    let after = assert_templates_hidden(&router, "bmusic");
    assert_eq!(before, after, "the same answers after failover");

    // B's template gone for good: what A saw for it is what A sees for a name nobody has,
    // byte for byte.
    assert_eq!(
        router
            .get_as(TB, &format!("/api/bot/use/{b2}/(/bot/disconnect)"))
            .status,
        204
    );
    assert_eq!(router.get_as(TB, "/api/settings/delete/bmusic").status, 204);
    router.wait_until(10, "bmusic gone from every live node", |_| {
        nodes
            .iter()
            .enumerate()
            .all(|(i, n)| i == dead || !n.templates().iter().any(|t| t.ends_with("-bmusic")))
    });
    assert_eq!(
        template_answers(&router, "bmusic"),
        before,
        "never-existed answers"
    );
}

#[test]
fn max_bots_caps_a_key_and_concurrent_creates_cannot_both_pass() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts());

    let first = create(&router, TB, "/api/bot/connect/to/b1.example.com");
    // One seat left: of eight concurrent creates exactly one gets it.
    let answers: Vec<Response> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let router = &router;
                s.spawn(move || router.get_as(TB, &format!("/api/bot/connect/to/c{i}.example.com")))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        answers.iter().map(Response::text).collect::<Vec<_>>()
    );
    let refused: Vec<&Response> = answers.iter().filter(|r| r.status != 200).collect();
    for r in &refused {
        assert_eq!(r.status, 429, "{}", r.text());
        let v = r.json();
        assert_eq!(v["ErrorCode"], json!(10), "{v}");
        assert!(
            v["ErrorMessage"]
                .as_str()
                .is_some_and(|m| m.contains("at most 2 bots")),
            "{v}"
        );
    }
    let (ids, _) = listed(&router, TB);
    assert_eq!(ids.len(), 2, "{ids:?}");
    // Other keys are not limited by it.
    create(&router, TA, "/api/bot/connect/to/a.example.com");
    // A stopped bot no longer counts.
    assert_eq!(
        router
            .get_as(TB, &format!("/api/bot/use/{first}/(/bot/disconnect)"))
            .status,
        204
    );
    create(&router, TB, "/api/bot/connect/to/b3.example.com");
    assert_eq!(
        router
            .get_as(TB, "/api/bot/connect/to/b4.example.com")
            .status,
        429
    );
}

#[test]
fn allow_from_refuses_like_a_wrong_secret_and_is_throttled() {
    let node = fake_node(0);
    let router = Router::start(&[&node], opts());

    assert_eq!(router.get_as(NEAR, "/api/bot/list").status, 200);
    let far = router.get_as(FAR, "/api/bot/list");
    let wrong = router.get_as((FAR.0, "not-the-secret"), "/api/bot/list");
    assert_eq!(far.status, 401, "{}", far.text());
    assert_eq!(
        seen(&far),
        seen(&wrong),
        "the same answer as a wrong secret"
    );
    // Counted by the failed-authentication limit (20 in a minute by default).
    let mut throttled = None;
    for _ in 0..25 {
        let r = router.get_as(FAR, "/api/bot/list");
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status, 401);
    }
    assert!(throttled.is_some(), "the address was never throttled");
}

#[test]
fn admin_api_creates_and_changes_tenant_keys() {
    let node = fake_node(0);
    let router = Router::start(&[&node], opts());

    let bad = router.admin_request(
        "POST",
        "/admin/api/keys",
        Some(&json!({"name": "t", "role": "user", "allow_from": ["10.0.0.0/33"]})),
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("allow_from"), "{}", bad.text());
    let bad = router.admin_request(
        "POST",
        "/admin/api/keys",
        Some(&json!({"name": "t", "role": "user", "scope": "mine"})),
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("scope"), "{}", bad.text());

    let made = router.admin_request(
        "POST",
        "/admin/api/keys",
        Some(&json!({"name": "t", "role": "user", "scope": "own", "max_bots": 1, "allow_from": ["127.0.0.0/8"]})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let v = made.json();
    assert_eq!(v["scope"], json!("own"));
    assert_eq!(v["max_bots"], json!(1));
    assert_eq!(v["allow_from"], json!(["127.0.0.0/8"]));
    let secret = v["secret"].as_str().expect("secret").to_string();
    let t = ("t", secret.as_str());

    let other = create(&router, ADMIN, "/api/bot/connect/to/x.example.com");
    let mine = create(&router, t, "/api/bot/connect/to/t.example.com");
    assert_eq!(listed(&router, t).0, BTreeSet::from([mine]));
    assert_eq!(
        router
            .get_as(t, "/api/bot/connect/to/t2.example.com")
            .status,
        429,
        "max_bots 1"
    );
    let keys = router.admin_request("GET", "/admin/api/keys", None).json();
    let shown = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == json!("t"))
        .cloned()
        .expect("listed");
    assert_eq!(shown["scope"], json!("own"));
    assert_eq!(shown["max_bots"], json!(1));
    assert_eq!(shown["allow_from"], json!(["127.0.0.0/8"]));
    let tb: &Value = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == json!(TB.0))
        .expect("config key listed");
    assert_eq!(tb["max_bots"], json!(2));

    // Changed: everything visible, no limit; then allowed only from elsewhere.
    let edit = router.admin_request(
        "PATCH",
        "/admin/api/keys/t",
        Some(&json!({"scope": "all", "max_bots": null})),
    );
    assert_eq!(edit.status, 200, "{}", edit.text());
    assert_eq!(edit.json()["max_bots"], Value::Null);
    let (ids, _) = listed(&router, t);
    assert!(ids.contains(&other) && ids.contains(&mine), "{ids:?}");
    create(&router, t, "/api/bot/connect/to/t3.example.com");
    let bad = router.admin_request(
        "PATCH",
        "/admin/api/keys/t",
        Some(&json!({"allow_from": ["nope"]})),
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("allow_from"), "{}", bad.text());
    let edit = router.admin_request(
        "PATCH",
        "/admin/api/keys/t",
        Some(&json!({"allow_from": ["192.0.2.0/24"]})),
    );
    assert_eq!(edit.status, 200, "{}", edit.text());
    assert_eq!(router.get_as(t, "/api/bot/list").status, 401);
    // A config-file key is changed in the file.
    let conflict = router.admin_request(
        "PATCH",
        &format!("/admin/api/keys/{}", TB.0),
        Some(&json!({"max_bots": 5})),
    );
    assert_eq!(conflict.status, 409, "{}", conflict.text());
}

#[test]
fn template_names_are_per_tenant_and_the_nodes_names_never_show() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts());

    // Both tenants make `music`; the admin has one too.
    for key in [TA, TB, ADMIN] {
        let r = router.get_as(key, "/api/settings/create/music");
        assert_eq!(r.status, 204, "{}: {}", key.0, r.text());
    }
    for (key, addr) in [(TA, "a.example.com"), (TB, "b.example.com")] {
        let r = router.get_as(
            key,
            &format!("/api/settings/bot/set/music/connect.address/{addr}"),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    // Three templates on the nodes, under three names.
    let on_nodes: Vec<String> = nodes.iter().flat_map(|n| n.templates()).collect();
    assert_eq!(on_nodes.len(), 3, "{on_nodes:?}");
    assert_eq!(
        on_nodes.iter().collect::<BTreeSet<_>>().len(),
        3,
        "{on_nodes:?}"
    );
    let a_bot = router.get_as(TA, "/api/bot/connect/template/music");
    assert_eq!(a_bot.status, 200, "{}", a_bot.text());
    assert_eq!(a_bot.json()["Name"], json!("music"), "{}", a_bot.text());
    let a_id = a_bot.json()["Id"].as_u64().expect("Id");
    for (key, addr) in [(TA, "a.example.com"), (TB, "b.example.com")] {
        let r = router.get_as(key, "/api/settings/bot/get/music/connect.address");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!(addr), "{}'s own music", key.0);
    }
    let r = router.get_as(TB, "/api/bot/info/template/music");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Name"], json!("music"));
    assert_eq!(r.json()["Id"], Value::Null, "B's music is not running");
    let r = router.get_as(TA, "/api/bot/template/music/(/bot/info)");
    assert_eq!(r.json()["Id"], json!(a_id), "{}", r.text());
    let r = router.get_as(TA, &format!("/api/bot/use/{a_id}/(/bot/info)"));
    assert_eq!(r.json()["Name"], json!("music"), "{}", r.text());
    // Evacuating A's bot's node moves it, owner and name kept.
    let bot = router
        .admin_request("GET", &format!("/admin/api/bots/{a_id}"), None)
        .json();
    assert_eq!(bot["owner"], json!(TA.0), "{bot}");
    let from = bot["node"].as_str().expect("node").to_string();
    let op = router.admin_request("POST", &format!("/admin/api/nodes/{from}/evacuate"), None);
    assert_eq!(op.status, 202, "{}", op.text());
    let op_id = op.json()["id"].as_u64().expect("operation id");
    router.wait_until(20, "the evacuation", |r| {
        r.admin_request("GET", &format!("/admin/api/operations/{op_id}"), None)
            .json()["state"]
            != json!("running")
    });
    let op = router
        .admin_request("GET", &format!("/admin/api/operations/{op_id}"), None)
        .json();
    assert_eq!(op["state"], json!("done"), "{op}");
    let bot = router
        .admin_request("GET", &format!("/admin/api/bots/{a_id}"), None)
        .json();
    assert_ne!(bot["node"], json!(from), "{bot}");
    assert_eq!(bot["owner"], json!(TA.0), "{bot}");
    // Back on the API of the node that took it.
    assert_eq!(
        router
            .admin_request(
                "PATCH",
                &format!("/admin/api/nodes/{from}"),
                Some(&json!({"state": "ready"}))
            )
            .status,
        200
    );
    let (ids, _) = listed(&router, TA);
    assert_eq!(ids, BTreeSet::from([a_id]), "A's list after the evacuation");
    assert!(listed(&router, TB).0.is_empty(), "B has no bot");
    let r = router.get_as(TA, &format!("/api/bot/use/{a_id}/(/bot/info)"));
    assert_eq!(r.json()["Name"], json!("music"), "{}", r.text());

    // Lists and merges in the tenant's own names; nothing anywhere shows the nodes' names.
    let (_, names) = listed(&router, TA);
    assert_eq!(names, BTreeSet::from(["music".to_string()]));
    let merged = router.get_as(
        TA,
        "/api/json/merge/(/bot/list)/(/bot/info/template/music)/(/settings/bot/get/music/connect.address)",
    );
    assert_eq!(merged.status, 200, "{}", merged.text());
    for target in [
        "/api/bot/list".to_string(),
        "/api/bot/info/template/nope".to_string(),
        "/api/bot/connect/template/nope".to_string(),
        format!("/api/bot/use/{a_id}/(/json/api)"),
    ] {
        let r = router.get_as(TA, &target);
        assert!(!r.text().contains("ts3ab-lb-"), "{target}: {}", r.text());
    }
    assert!(!merged.text().contains("ts3ab-lb-"), "{}", merged.text());
    // A name in the router's space is refused as before, for tenants too.
    let r = router.get_as(TA, "/api/settings/create/ts3ab-lb-x");
    assert_eq!(r.status, 422, "{}", r.text());
    // A tenant deleting its `music` leaves the others' alone.
    assert_eq!(
        router
            .get_as(TA, &format!("/api/bot/use/{a_id}/(/bot/disconnect)"))
            .status,
        204
    );
    assert_eq!(router.get_as(TA, "/api/settings/delete/music").status, 204);
    assert_eq!(
        router
            .get_as(TB, "/api/settings/bot/get/music/connect.address")
            .json(),
        json!("b.example.com")
    );
    assert_eq!(router.get("/api/settings/bot/get/music").status, 200);
    router.wait_until(5, "A's music gone from its node", |_| {
        nodes.iter().flat_map(|n| n.templates()).count() == 2
    });

    // A template in A's name space that the router did not make (put on a node by hand):
    // nobody's, so A is answered as for a name no node has, by a node that lacks it.
    let prefix = ts3ab_lb::proxy::routing::view::tenant_prefix(TA.0);
    nodes[0].add_template(&format!("{prefix}orphan"), &[]);
    router.wait_until(5, "the router meeting the orphan", |r| {
        r.bot_list()
            .iter()
            .any(|b| b["Name"] == json!(format!("{prefix}orphan")))
    });
    assert!(listed(&router, TA).1.is_empty(), "not A's");
    assert_templates_hidden(&router, "orphan");
}

/// A tenant's answers are edited (the node's names stripped), but one without a body keeps
/// the node's framing: a 204 gets neither a `Content-Length` nor a `Transfer-Encoding`; a
/// HEAD shows no `Content-Length` of the node's unedited body; a HEAD of `bot/list` (the
/// router's own answer) has the length of the tenant's own list.
#[test]
fn a_tenants_bodiless_answers_are_framed_right() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let router = Router::start(&nodes.iter().collect::<Vec<_>>(), opts());
    let own = create(&router, TA, "/api/bot/connect/to/framing.example.com");
    create(&router, TB, "/api/bot/connect/to/other.example.com");
    let r = router.get_as(TA, &format!("/api/bot/use/{own}/(/volume/42)"));
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("Transfer-Encoding"), None, "{r:?}");
    assert_eq!(r.header("Content-Length"), None, "{r:?}");
    let info = format!("/api/bot/use/{own}/(/bot/info)");
    let head = router.request("HEAD", info.as_bytes(), &[("Authorization", &basic(TA))]);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("Transfer-Encoding"), None, "{head:?}");
    assert_eq!(head.header("Content-Length"), None, "{head:?}");
    let head = router.request("HEAD", b"/api/bot/list", &[("Authorization", &basic(TA))]);
    let get = router.get_as(TA, "/api/bot/list");
    assert_eq!(get.json().as_array().map(Vec::len), Some(1), "{get:?}");
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("Content-Length"),
        Some(get.body.len().to_string().as_str()),
        "{head:?}"
    );
}
