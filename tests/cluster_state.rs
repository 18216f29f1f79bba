//! Cluster state (issue "Cluster state"): placement on the least-used node with reservations,
//! durable ids and records in the embedded store, crash adoption, unique templates, the demo.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::*;
use ts3ab_lb::store::embedded::EmbeddedStore;
use ts3ab_lb::store::Store;

fn per_node_counts(nodes: &[FakeNode]) -> Vec<usize> {
    nodes.iter().map(|n| n.bots().len()).collect()
}

/// Reads the router's embedded store (the router must be stopped).
fn stored(router: &Router) -> ts3ab_lb::store::Snapshot {
    let store = EmbeddedStore::open(&router.data).expect("store opens after the router stopped");
    futures::executor::block_on(store.load()).expect("load")
}

/// 300 creates over nodes of capacity 100/200/300 land 50/100/150 (±1).
#[test]
fn placement_spreads_in_proportion_to_capacity() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let router = Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            capacities: vec![100, 200, 300],
            ..RouterOpts::default()
        },
    );
    for i in 0..300 {
        let r = router.get(&format!("/api/bot/connect/to/ts{i}.example.com"));
        assert_eq!(r.status, 200, "create {i}: {}", r.text());
    }
    let counts = per_node_counts(&nodes);
    println!("placement spread for 300 creates over capacities 100/200/300: {counts:?}");
    for (got, want) in counts.iter().zip([50, 100, 150]) {
        assert!(got.abs_diff(want) <= 1, "{counts:?}");
    }
    // Ids are 0..300, each once.
    let mut ids: Vec<u64> = router
        .bot_list()
        .iter()
        .filter_map(|b| b["Id"].as_u64())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..300).collect::<Vec<u64>>());
}

/// 64 concurrent creates never overshoot a capacity and spread evenly; when the cluster is
/// full, creates get TS3AudioBot's error shape with a 503.
#[test]
fn concurrent_creates_never_overshoot() {
    let nodes: Vec<FakeNode> = (0..3)
        .map(|i| fake_node_with(i, |c| c.service_time = Duration::from_millis(20)))
        .collect();
    let router = Arc::new(Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            capacities: vec![20, 20, 30],
            ..RouterOpts::default()
        },
    ));
    let handles: Vec<_> = (0..80)
        .map(|i| {
            let r = router.clone();
            std::thread::spawn(move || r.get(&format!("/api/bot/connect/to/c{i}.example.com")))
        })
        .collect();
    let results: Vec<Response> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    let ok = results.iter().filter(|r| r.status == 200).count();
    let odd: Vec<String> = results
        .iter()
        .filter(|r| r.status != 200 && r.status != 503)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert!(odd.is_empty(), "{odd:?}");
    let full: Vec<&Response> = results.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok,
        70,
        "exactly the total capacity succeeds; refusals: {:?}",
        full.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    assert_eq!(full.len(), 10);
    assert_eq!(full[0].json()["ErrorName"], "InternalError");
    assert!(full[0].json()["ErrorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("full")));
    assert_eq!(per_node_counts(&nodes), vec![20, 20, 30]);

    // 64 concurrent creates on an empty cluster spread evenly.
    let nodes: Vec<FakeNode> = (0..4)
        .map(|i| fake_node_with(i, |c| c.service_time = Duration::from_millis(20)))
        .collect();
    let router = Arc::new(Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts::default(),
    ));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let r = router.clone();
            std::thread::spawn(move || {
                r.get(&format!("/api/bot/connect/to/e{i}.example.com"))
                    .status
            })
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().expect("join") == 200));
    let counts = per_node_counts(&nodes);
    println!("64 concurrent creates over 4 equal nodes: {counts:?}");
    assert_eq!(counts, vec![16, 16, 16, 16]);
}

/// A draining node gets no new bots; its bots keep working.
#[test]
fn draining_node_gets_no_new_bots() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    nodes[1].connect_bot("old.example.com");
    let router = Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            draining: vec![1],
            ..RouterOpts::default()
        },
    );
    router.wait_until(10, "the existing bot", |r| !r.bot_list().is_empty());
    for i in 0..10 {
        assert_eq!(
            router
                .get(&format!("/api/bot/connect/to/d{i}.example.com"))
                .status,
            200
        );
    }
    assert_eq!(per_node_counts(&nodes), vec![5, 1, 5]);
    let old = router
        .bot_list()
        .iter()
        .find(|b| b["Server"] == "old.example.com")
        .and_then(|b| b["Id"].as_u64())
        .expect("id");
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{old}/(/volume/20)"))
            .status,
        204
    );
}

/// Every bot keeps its cluster id across a restart, and new ids continue above the old ones.
#[test]
fn ids_survive_a_restart() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, RouterOpts::default());
    let mut before = HashMap::new();
    for i in 0..6 {
        let r = router
            .get(&format!("/api/bot/connect/to/r{i}.example.com"))
            .json();
        before.insert(
            r["Server"].as_str().expect("server").to_string(),
            r["Id"].as_u64().expect("id"),
        );
    }
    // Retire one id: it must not come back.
    let retired = before.remove("r0.example.com").expect("r0");
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{retired}/(/bot/disconnect)"))
            .status,
        204
    );
    router.stop();
    router.write_config(&refs, &RouterOpts::default());
    router.spawn();
    let list = router.bot_list();
    for b in &list {
        let server = b["Server"].as_str().expect("server");
        assert_eq!(b["Id"].as_u64(), before.get(server).copied(), "{server}");
    }
    let fresh = router.get("/api/bot/connect/to/after.restart").json()["Id"]
        .as_u64()
        .expect("id");
    assert!(fresh > *before.values().max().expect("max") && fresh != retired);
}

/// SIGKILL: bots the router had recorded keep their ids; a bot a node created that the router
/// never recorded is adopted, not lost.
#[test]
fn sigkill_loses_nothing() {
    let node = fake_node(0);
    let mut router = Router::start(&[&node], RouterOpts::default());
    let a = router.get("/api/bot/connect/to/a.example.com").json()["Id"]
        .as_u64()
        .expect("id");
    let b = router.get("/api/bot/connect/to/b.example.com").json()["Id"]
        .as_u64()
        .expect("id");
    // A create in flight when the router dies: the node makes the bot, the router never
    // writes it down.
    node.set_latency(Duration::from_millis(800));
    let addr = router.addr;
    let inflight = std::thread::spawn(move || {
        raw_request(
            addr,
            "GET",
            b"/api/bot/connect/to/c.example.com",
            &[("Authorization", &basic(ADMIN))],
            None,
        )
    });
    // Kill the router once the node has made the bot (its answer is held back 800 ms).
    wait_for(10, "the in-flight create to reach the node", || {
        node.bots()
            .iter()
            .any(|b| b.server.as_deref() == Some("c.example.com"))
    });
    router.kill();
    let _ = inflight.join();
    node.set_latency(Duration::ZERO);
    // And one made behind its back while it was down.
    node.connect_bot("d.example.com");
    router.write_config(&[&node], &RouterOpts::default());
    router.spawn();
    router.wait_until(10, "all four bots", |r| r.bot_list().len() == 4);
    let list = router.bot_list();
    let id_of = |s: &str| {
        list.iter()
            .find(|x| x["Server"] == s)
            .and_then(|x| x["Id"].as_u64())
    };
    assert_eq!(id_of("a.example.com"), Some(a));
    assert_eq!(id_of("b.example.com"), Some(b));
    let (c, d) = (
        id_of("c.example.com").expect("c adopted"),
        id_of("d.example.com").expect("d adopted"),
    );
    assert!(c > b && d > b && c != d, "{list:?}");
}

/// Template names are unique in the cluster and a template lives on one node only: a second
/// create answers TS3AudioBot's 422 without reaching any node; starting it goes to its node.
#[test]
fn a_template_is_never_on_two_nodes() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let router = Router::start(&nodes.iter().collect::<Vec<_>>(), RouterOpts::default());
    assert_eq!(router.get("/api/settings/create/music").status, 204);
    let owner = nodes
        .iter()
        .position(|n| n.templates().contains(&"music".to_string()))
        .expect("owner");
    for n in &nodes {
        n.clear_requests();
    }
    for _ in 0..3 {
        let again = router.get("/api/settings/create/music");
        assert_eq!(again.status, 422);
        assert_eq!(
            again.json(),
            json!({"ErrorCode":10,"ErrorName":"CommandError","ErrorMessage":"The file already exists."})
        );
    }
    assert!(nodes.iter().all(|n| client_targets(n).is_empty()));
    let r = router.get("/api/settings/bot/set/music/connect.address/ts.music.example");
    assert_eq!(r.status, 204, "{}", r.text());
    // Load the owner, so that least-used placement would put the bot on one of the other
    // (empty) nodes, where the template is not: only going to the owner can succeed.
    for i in 0..3 {
        nodes[owner].connect_bot(&format!("load{i}.example.com"));
    }
    router.wait_until(10, "the owner's three bots in the list", |r| {
        r.bot_list().iter().filter(|b| b["Status"] == 2).count() == 3
    });
    let started = router.get("/api/bot/connect/template/music");
    assert_eq!(
        started.status,
        200,
        "starting a template must go to its owner: {}",
        started.text()
    );
    assert_eq!(started.json()["Name"], "music");
    let on_owner = |n: &FakeNode| {
        n.bots()
            .iter()
            .filter(|b| b.name.as_deref() == Some("music"))
            .count()
    };
    assert_eq!(
        on_owner(&nodes[owner]),
        1,
        "the template bot runs on its owner"
    );
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != owner) {
        assert!(n.bots().is_empty(), "node-{i} got a bot: {:?}", n.bots());
    }
    let holders = nodes
        .iter()
        .filter(|n| n.templates().contains(&"music".to_string()))
        .count();
    assert_eq!(holders, 1);
    // Starting it again returns the running bot (TS3AudioBot's own behaviour), same id.
    let again = router.get("/api/bot/connect/template/music");
    assert_eq!(again.json()["Id"], started.json()["Id"]);
    assert_eq!(nodes.iter().map(|n| n.bots().len()).sum::<usize>(), 4);
    assert_eq!(on_owner(&nodes[owner]), 1);
    // A template appearing on a second node behind the router's back does not move it, also
    // once the router has polled that node (two polls after the change, so one has fully
    // been answered with the template in it).
    let other = (owner + 1) % 3;
    nodes[other].add_template("music", &[]);
    nodes[other].clear_requests();
    wait_for(10, "two polls of the node with the second copy", || {
        list_requests(&nodes[other]) >= 2
    });
    let r = router.get("/api/settings/bot/get/music/connect.address");
    assert_eq!(r.text(), "\"ts.music.example\"", "served by the owner");
}

/// Two concurrent creates of one template name: exactly one reaches a node.
#[test]
fn concurrent_template_creates_cannot_duplicate() {
    let nodes: Vec<FakeNode> = (0..3)
        .map(|i| fake_node_with(i, |c| c.service_time = Duration::from_millis(50)))
        .collect();
    let router = Arc::new(Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts::default(),
    ));
    for round in 0..5 {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let r = router.clone();
                std::thread::spawn(move || {
                    r.get(&format!("/api/settings/create/race{round}")).status
                })
            })
            .collect();
        let statuses: Vec<u16> = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 204).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 204 || *s == 422),
            "{statuses:?}"
        );
        let holders = nodes
            .iter()
            .filter(|n| n.templates().contains(&format!("race{round}")))
            .count();
        assert_eq!(holders, 1);
    }
}

/// What the router must remember to rebuild a bot elsewhere is in the store: address,
/// password, template, identity (read once after creation) and template settings.
#[test]
fn the_store_holds_what_failover_needs() {
    let node = fake_node(0);
    let mut router = Router::start(&[&node], RouterOpts::default());
    let r = router.get("/api/bot/connect/to/ts.example.com/serverpw");
    let gid = r.json()["Id"].as_u64().expect("id");
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{gid}/(/bot/name/Nick)"))
            .status,
        204
    );
    assert_eq!(router.get("/api/settings/create/tpl").status, 204);
    assert_eq!(
        router
            .get("/api/settings/bot/set/tpl/connect.name/TplBot")
            .status,
        204
    );
    let t = router.get("/api/bot/connect/template/tpl").json();
    let tgid = t["Id"].as_u64().expect("id");
    assert_eq!(
        router
            .get(&format!(
                "/api/bot/use/{tgid}/(/settings/set/audio.volume.default/30)"
            ))
            .status,
        204
    );
    // The identities are read in the background after the creates: wait for those reads
    // before stopping.
    let lid_of = |pred: &dyn Fn(&ts3ab_fake_node::FakeBot) -> bool| {
        node.bots().into_iter().find(|b| pred(b)).expect("bot").id
    };
    let plain = lid_of(&|b| b.server.as_deref() == Some("ts.example.com"));
    let templ = lid_of(&|b| b.name.as_deref() == Some("tpl"));
    wait_for_requests(
        &node,
        10,
        "the identity reads",
        &[identity_read(plain), identity_read(templ)],
    );
    router.stop();
    let snap = stored(&router);
    let bot = snap
        .bots
        .iter()
        .find(|b| u64::from(b.id) == gid)
        .expect("bot record");
    assert_eq!(bot.address.as_deref(), Some("ts.example.com"));
    assert_eq!(bot.server_password.as_deref(), Some("serverpw"));
    assert_eq!(bot.nickname.as_deref(), Some("Nick"));
    let live = node
        .bots()
        .into_iter()
        .find(|b| b.server.as_deref() == Some("ts.example.com"))
        .expect("live");
    assert_eq!(
        bot.identity.as_ref().map(|i| i.key.clone()),
        Some(live.identity_key.clone())
    );
    let tpl = snap
        .templates
        .iter()
        .find(|t| t.name == "tpl")
        .expect("template");
    assert_eq!(tpl.node, "node-0");
    assert_eq!(
        tpl.settings.get("connect.name").map(String::as_str),
        Some("TplBot")
    );
    assert_eq!(
        tpl.settings.get("audio.volume.default").map(String::as_str),
        Some("30")
    );
    assert!(tpl.identity.is_some());
    assert!(snap.id_high_water > tgid as u32);
}

/// A corrupt or unwritable store is a clear error at start, not a panic.
#[test]
fn bad_store_is_a_clear_start_error() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(
        data.join(ts3ab_lb::store::embedded::FILE_NAME),
        b"garbage garbage garbage garbage",
    )
    .expect("write");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: \"127.0.0.1:{}\"\nstorage: {{ kind: embedded, path: \"{}\" }}\n",
            free_port(),
            data.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store") && err.contains("ts3ab-lb.redb"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // An unwritable place (a path below a regular file: refused even for root).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    std::fs::write(
        &cfg,
        format!(
            "listen: \"127.0.0.1:{}\"\nstorage: {{ kind: embedded, path: \"{}\" }}\n",
            free_port(),
            blocker.join("data").display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store") && err.contains("cannot create the directory"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `check-config` names the bad key and exits 1.
#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "nodes:\n  - { name: a, url: \"http://127.0.0.1:1\", capacity: 0 }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nodes[0].capacity"));
    // The shipped example, with its secrets key file where the example puts it (here: in the
    // test's directory, made by `store new-key`; check-config reads the key too).
    let shipped = include_str!("../conf/ts3ab-lb.yaml");
    let check = |yaml: &str| {
        let path = dir.path().join("shipped.yaml");
        std::fs::write(&path, yaml).expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env("TS3AB_ADMIN_SECRET", "a-long-admin-secret")
            .env("TS3AB_NODE1_TOKEN", "router:abc")
            .output()
            .expect("run")
    };
    assert!(shipped.contains("/etc/ts3ab-lb/secrets.key"));
    let key = dir.path().join("secrets.key");
    let missing = check(&shipped.replace("/etc/ts3ab-lb/secrets.key", &key.display().to_string()));
    assert_eq!(
        missing.status.code(),
        Some(1),
        "a missing key file fails the check"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("secrets"));
    new_secrets_key(&key);
    let good = check(&shipped.replace("/etc/ts3ab-lb/secrets.key", &key.display().to_string()));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

/// The README's run command: `ts3ab-lb demo` serves the API in front of three fake nodes.
#[test]
fn demo_runs_on_a_fresh_machine() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let admin_port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}"), "--data"])
        .arg(dir.path().join("demo"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("demo starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let key = (
        ts3ab_lb::server::demo::DEMO_KEY,
        ts3ab_lb::server::demo::DEMO_SECRET,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut list = None;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            let r = raw_request(
                addr,
                "GET",
                b"/api/bot/list",
                &[("Authorization", &basic(key))],
                None,
            );
            if r.status == 200 && r.json().as_array().is_some_and(|a| a.len() >= 2) {
                list = Some(r.json());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The demo's admin listener: the panel and the API with the demo key.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let nodes = raw_request(
        admin,
        "GET",
        b"/admin/api/nodes",
        &[("Authorization", &basic(key))],
        None,
    );
    let panel = raw_request(admin, "GET", b"/admin/", &[], None);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(nodes.status, 200, "{}", nodes.text());
    assert_eq!(nodes.json().as_array().map(Vec::len), Some(3));
    assert_eq!(panel.status, 200);
    assert!(panel.text().contains("<html"), "{}", panel.text());
    let list = list.expect("demo answered bot/list");
    assert!(
        list.as_array()
            .is_some_and(|a| a.iter().any(|b| b["Name"] == "lobby")),
        "{list}"
    );
}
