//! Several routers on one MongoDB (issue "MongoDB store, and several routers"): ids never
//! handed out twice, each router sees the others' bots and admin changes within the sync
//! interval, one router leads (failover, operations) and another takes over when it dies,
//! and a database outage leaves routing alone and refuses writes quickly. Against a real
//! MongoDB wire server (`support::mongo`), two real router processes and fake nodes.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// How often the routers here read each other's changes.
const SYNC_MS: u64 = 200;

fn shared_opts(uri: &str, db: &str, extra: &str) -> RouterOpts {
    RouterOpts {
        poll_ms: 150,
        admin: true,
        storage: Some(format!(
            "{{ kind: mongodb, uri: \"{uri}\", database: \"{db}\", sync_interval_ms: {SYNC_MS} }}"
        )),
        extra_yaml: extra.to_string(),
        ..RouterOpts::default()
    }
}

fn admin(r: &Router, method: &str, path: &str, body: Option<Value>) -> Response {
    r.admin_request(method, path, body.as_ref())
}

/// Cluster id → server address, as a router lists its bots.
fn listing(r: &Router) -> BTreeMap<u64, String> {
    r.bot_list()
        .iter()
        .filter_map(|b| Some((b["Id"].as_u64()?, b["Server"].as_str()?.to_string())))
        .collect()
}

/// Waits until both routers list `n` bots, alike; returns how long that took. On a timeout
/// the panic shows where the two lists differ.
fn same_listing(a: &Router, b: &Router, n: usize, within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let (la, lb) = (listing(a), listing(b));
        if la.len() == n && la == lb {
            return began.elapsed();
        }
        if began.elapsed() > within {
            let only_a: Vec<_> = la.iter().filter(|(k, v)| lb.get(k) != Some(v)).collect();
            let only_b: Vec<_> = lb.iter().filter(|(k, v)| la.get(k) != Some(v)).collect();
            panic!(
                "the routers do not list the same {n} bots after {within:?}: A has {}, B has {}; only on A: {only_a:?}; only on B: {only_b:?}\n--- A's log:\n{}\n--- B's log:\n{}",
                la.len(),
                lb.len(),
                a.stderr_text(),
                b.stderr_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn overview(r: &Router) -> Value {
    let o = admin(r, "GET", "/admin/api/overview", None);
    assert_eq!(o.status, 200, "{}", o.text());
    o.json()
}

/// Waits until exactly one of the routers leads; returns its index.
fn leader(routers: &[&Router]) -> usize {
    let mut who = None;
    wait_for(15, "exactly one router to lead", || {
        let leading: Vec<usize> = (0..routers.len())
            .filter(|i| overview(routers[*i])["leads"] == true)
            .collect();
        who = leading.first().copied();
        leading.len() == 1
    });
    who.expect("leader")
}

/// Two routers on one database: bots met by polling get one id each; concurrent creates on
/// both get distinct ids; each router lists every bot under the same id within the sync
/// interval; keys, revocations, node states and new nodes made through one reach the other;
/// exactly one leads.
#[test]
fn two_routers_share_ids_bots_and_admin_changes() {
    let (uri, db) = (mongo::uri(), mongo::database("two_routers"));
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let spare = fake_node(3);
    // Bots that run before any router does: each must get exactly one cluster id.
    nodes[0].connect_bot("old-a.example.com");
    nodes[1].connect_bot("old-b.example.com");
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let a = Arc::new(Router::start(&refs, shared_opts(&uri, &db, "")));
    let b = Arc::new(Router::start(&refs, shared_opts(&uri, &db, "")));
    let mut same = BTreeMap::new();
    wait_for(
        10,
        "both routers to list the two old bots under the same ids",
        || {
            let (la, lb) = (listing(&a), listing(&b));
            same = la.clone();
            la.len() == 2 && la == lb
        },
    );
    let old_ids: HashSet<u64> = same.keys().copied().collect();

    // 15 creates through each router at once.
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let r = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let t = format!("/api/bot/connect/to/new{i}.example.com");
                let resp = r.get(&t);
                assert_eq!(resp.status, 200, "{t}: {}", resp.text());
                resp.json()["Id"].as_u64().expect("Id")
            })
        })
        .collect();
    let ids: Vec<u64> = handles
        .into_iter()
        .map(|h| h.join().expect("create"))
        .collect();
    let distinct: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 30, "ids handed out twice: {ids:?}");
    assert!(distinct.is_disjoint(&old_ids), "{ids:?} vs {old_ids:?}");
    let began = Instant::now();
    let agreed = same_listing(&a, &b, 32, Duration::from_secs(5));
    println!(
        "two routers: 30 concurrent creates, both list all 32 bots alike {} ms after the last answer",
        agreed.as_millis()
    );
    let _ = began;
    let on_nodes: usize = nodes.iter().map(|n| n.bots().len()).sum();
    assert_eq!(on_nodes, 32, "every create made exactly one bot");

    // Admin changes made through one router reach the other.
    let made = admin(
        &a,
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "late", "role": "user"})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let secret = made.json()["secret"].as_str().expect("secret").to_string();
    let late = ("late", secret.as_str());
    wait_for(3, "router B to accept a key made on router A", || {
        b.get_as(late, "/api/bot/list").status == 200
    });
    assert_eq!(
        admin(&a, "DELETE", "/admin/api/keys/late", None).status,
        204
    );
    wait_for(3, "router B to refuse a key revoked on router A", || {
        b.get_as(late, "/api/bot/list").status == 401
    });
    let drained = admin(
        &a,
        "PATCH",
        "/admin/api/nodes/node-2",
        Some(json!({"state": "drain"})),
    );
    assert_eq!(drained.status, 200, "{}", drained.text());
    wait_for(3, "router B to see node-2 draining", || {
        let n = admin(&b, "GET", "/admin/api/nodes/node-2", None);
        n.json()["state"] == "drain"
    });
    let added = admin(
        &a,
        "POST",
        "/admin/api/nodes",
        Some(json!({"name": "node-3", "url": spare.url(), "auth": node_token(3)})),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    wait_for(5, "router B to add and poll node-3", || {
        let n = admin(&b, "GET", "/admin/api/nodes/node-3", None);
        n.status == 200 && n.json()["healthy"] == true
    });
    // Exactly one router leads.
    leader(&[&a, &b]);
}

/// Every bot of every live node by its server address (a moved bot keeps its address).
fn running_by_address(nodes: &[FakeNode], skip: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != skip) {
        for bot in n.bots() {
            *m.entry(bot.server.clone().unwrap_or_default()).or_insert(0) += 1;
            let _ = i;
        }
    }
    m
}

/// A dead node's bots are failed over by exactly one router (the leader); when the leader
/// is killed in the middle of it, the other router takes the lease over and finishes: every
/// bot runs exactly once, under its cluster id, on both routers' lists.
#[test]
fn one_router_fails_over_and_another_takes_over_when_it_dies() {
    let (uri, db) = (mongo::uri(), mongo::database("failover_lease"));
    // Slow nodes, so that the leader is still rebuilding when it is killed.
    let nodes: Vec<FakeNode> = (0..3)
        .map(|i| fake_node_with(i, |c| c.service_time = Duration::from_millis(40)))
        .collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let extra = "failover: { after_ms: 500, retry_ms: 500, concurrency: 1 }\n";
    let mut routers = [
        Router::start(&refs, shared_opts(&uri, &db, extra)),
        Router::start(&refs, shared_opts(&uri, &db, extra)),
    ];
    let lead = leader(&[&routers[0], &routers[1]]);
    let other = 1 - lead;
    // Bots on node-0 only (the others drain while they are made).
    for n in ["node-1", "node-2"] {
        let r = admin(
            &routers[lead],
            "PATCH",
            &format!("/admin/api/nodes/{n}"),
            Some(json!({"state": "drain"})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_for(3, "the other router to see the drains", || {
        admin(&routers[other], "GET", "/admin/api/nodes/node-2", None).json()["state"] == "drain"
    });
    let mut want = BTreeMap::new();
    for i in 0..12 {
        let r = routers[i % 2].get(&format!("/api/bot/connect/to/f{i}.example.com"));
        assert_eq!(r.status, 200, "{}", r.text());
        want.insert(
            r.json()["Id"].as_u64().expect("Id"),
            format!("f{i}.example.com"),
        );
    }
    assert_eq!(nodes[0].bots().len(), 12);
    for n in ["node-1", "node-2"] {
        let r = admin(
            &routers[lead],
            "PATCH",
            &format!("/admin/api/nodes/{n}"),
            Some(json!({"state": "ready"})),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_for(5, "both routers to list the 12 bots alike", || {
        listing(&routers[0]) == want && listing(&routers[1]) == want
    });

    nodes[0].kill();
    // The leader starts moving them; kill it after the first few are back.
    wait_for(20, "the leader to rebuild some of node-0's bots", || {
        running_by_address(&nodes, 0).len() >= 3
    });
    routers[lead].kill();
    let moved_before = running_by_address(&nodes, 0).len();
    println!("leader killed after {moved_before} of 12 bots were rebuilt");
    assert!(
        moved_before < 12,
        "the leader finished before it could be killed"
    );
    let began = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    while running_by_address(&nodes, 0).len() < 12 {
        if Instant::now() > deadline {
            let n0 = admin(&routers[other], "GET", "/admin/api/nodes", None).text();
            let all = admin(&routers[other], "GET", "/admin/api/bots", None).text();
            panic!(
                "the other router did not finish the failover in 40 s: {:?} run; its nodes: {n0}\nits bots: {all}",
                running_by_address(&nodes, 0)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "the other router finished the failover {} ms after the leader died",
        began.elapsed().as_millis()
    );
    assert_eq!(overview(&routers[other])["leads"], true);
    // Exactly once each: no bot was started twice.
    let m = running_by_address(&nodes, 0);
    assert!(m.values().all(|c| *c == 1), "bots started twice: {m:?}");
    wait_for(
        10,
        "the surviving router to list every bot under its own id",
        || {
            let l = listing(&routers[other]);
            l == want
        },
    );
    drop(routers);
}

/// A database outage under load, first frozen (SIGSTOP), then killed and restarted on the
/// same data: requests to existing bots go on from memory throughout (a client thread keeps
/// asking and never sees a failure); creates and admin changes answer 503 in TS3AudioBot's
/// (or the admin API's) error shape within a bounded time and leave no unrecorded bot on a
/// node; when the database is back everything works again by itself, with nothing lost.
#[test]
fn a_database_outage_keeps_routing_and_refuses_writes_quickly() {
    let mut server = mongo::MongoServer::start_on_disk();
    let db = mongo::database("outage");
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Arc::new(Router::start(&refs, shared_opts(&server.uri(), &db, "")));
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = router.get(&format!("/api/bot/connect/to/o{i}.example.com"));
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["Id"].as_u64().expect("Id"));
    }
    // The load: pinned requests to the existing bots, all through the outage.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (router, ids, stop) = (router.clone(), ids.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut slowest) = (0usize, Vec::new(), Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &ids {
                    let began = Instant::now();
                    let r = router.get(&format!("/api/bot/use/{id}/(/bot/info)"));
                    slowest = slowest.max(began.elapsed());
                    if r.status == 200 {
                        ok += 1;
                    } else {
                        failed.push((*id, r.status, r.text()));
                    }
                }
            }
            (ok, failed, slowest)
        })
    };

    let refused_while = |phase: &str| {
        let before: usize = nodes.iter().map(|n| n.bots().len()).sum();
        for i in 0..3 {
            let began = Instant::now();
            let r = router.get(&format!("/api/bot/connect/to/{phase}{i}.example.com"));
            let took = began.elapsed();
            assert_eq!(r.status, 503, "create while {phase}: {}", r.text());
            let j = r.json();
            assert!(
                j["ErrorCode"].is_number() && j["ErrorName"].is_string(),
                "{j}"
            );
            assert!(
                j["ErrorMessage"]
                    .as_str()
                    .is_some_and(|m| m.contains("storage") || m.contains("record")),
                "{j}"
            );
            assert!(
                took < Duration::from_secs(8),
                "create {i} while {phase} took {took:?}"
            );
        }
        let r = router.get("/api/bot/list");
        assert_eq!(r.status, 200, "bot/list while {phase}: {}", r.text());
        let began = Instant::now();
        let k = admin(
            &router,
            "POST",
            "/admin/api/keys",
            Some(json!({"name": "nope", "role": "user"})),
        );
        assert_eq!(k.status, 503, "{}", k.text());
        assert!(k.json()["error"].is_string(), "{}", k.text());
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "{:?}",
            began.elapsed()
        );
        // No bot a client was refused for is left running.
        let deadline = Instant::now() + Duration::from_secs(10);
        while nodes.iter().map(|n| n.bots().len()).sum::<usize>() != before {
            assert!(
                Instant::now() < deadline,
                "refused creates left bots behind while {phase}: {:?}",
                nodes.iter().map(|n| n.bots()).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let works_again = |tag: &str| -> u64 {
        let mut back = None;
        wait_for(
            30,
            "creates to work again once the database is back",
            || {
                let r = router.get(&format!("/api/bot/connect/to/{tag}.example.com"));
                if r.status == 200 {
                    back = r.json()["Id"].as_u64();
                }
                r.status == 200
            },
        );
        back.expect("id")
    };

    server.pause();
    refused_while("frozen");
    server.resume();
    let after_freeze = works_again("after-freeze");

    server.kill();
    refused_while("dead");
    server.restart();
    let after_restart = works_again("after-restart");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, slowest) = load.join().expect("load");
    println!(
        "outage: {ok} pinned requests answered 200 during the outages, {} failed, slowest {slowest:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "pinned requests failed during the outage: {failed:?}"
    );
    assert!(ok > 0);
    let mut all = ids.clone();
    all.extend([after_freeze, after_restart]);
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "an id was handed out twice: {all:?}"
    );
    // Nothing lost: a second router started on the restarted database sees every bot.
    let mut opts = shared_opts(&server.uri(), &db, "");
    opts.admin = false;
    let fresh = Router::start(&refs, opts);
    wait_for(
        10,
        "a router started afresh on the database to list every bot",
        || {
            let l = listing(&fresh);
            all.iter().all(|id| l.contains_key(id))
        },
    );
}

/// Runs the router binary with `args` and waits at most `secs` (then kills it): exit code
/// and stderr.
fn run_bounded(args: &[&str], secs: u64) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let began = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if began.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut out);
    }
    (status.and_then(|s| s.code()), format!("{err}{out}"))
}

/// A bad URI or an unreachable server: a clear message naming the problem, exit 1, quickly.
#[test]
fn bad_mongodb_settings_stop_the_router_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("c.yaml");
    let closed = free_port();
    for (uri, wanted) in [
        (
            format!("mongodb://user:hunter2@127.0.0.1:{closed}/"),
            format!("127.0.0.1:{closed}"),
        ),
        (
            "mongodb://user:hunter2@/".to_string(),
            "hunter2-never".to_string(),
        ),
        (
            "mongodb://127.0.0.1:1/?replicaSet=".to_string(),
            "replicaSet".to_string(),
        ),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "listen: \"127.0.0.1:{}\"\nadmin: {{ listen: off }}\nstorage: {{ kind: mongodb, uri: \"{uri}\", database: x }}\n",
                free_port()
            ),
        )
        .expect("write");
        let began = Instant::now();
        let (code, err) = run_bounded(&["serve", "--config", &cfg.display().to_string()], 30);
        assert_eq!(code, Some(1), "{uri}: {err}");
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{uri}: {:?}",
            began.elapsed()
        );
        assert!(!err.contains("panicked"), "{uri}: {err}");
        assert!(!err.contains("hunter2"), "the password shows: {err}");
        if wanted != "hunter2-never" {
            assert!(
                err.contains(&wanted),
                "{uri}: the message does not name {wanted}: {err}"
            );
        }
        assert!(err.to_lowercase().contains("mongodb"), "{uri}: {err}");
    }
}

/// Several routers: one template name is created on exactly one node, whichever router gets
/// it; a template made through one router is used through the other; operations run on the
/// leader only (the other answers 409 in the admin error shape).
#[test]
fn template_names_and_operations_are_the_clusters_not_a_routers() {
    let (uri, db) = (mongo::uri(), mongo::database("templates"));
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    // Each router would place a new template on another node (each drains the other's
    // choice in its own config file), so only the database's claim keeps a name on one.
    let a = Arc::new(Router::start(
        &refs,
        RouterOpts {
            draining: vec![1],
            ..shared_opts(&uri, &db, "")
        },
    ));
    let b = Arc::new(Router::start(
        &refs,
        RouterOpts {
            draining: vec![0],
            ..shared_opts(&uri, &db, "")
        },
    ));
    for round in 0..5 {
        let name = format!("music{round}");
        let handles: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .map(|r| {
                let t = format!("/api/settings/create/{name}");
                std::thread::spawn(move || r.get(&t))
            })
            .collect();
        let answers: Vec<Response> = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        let made = answers.iter().filter(|r| r.status == 204).count();
        assert_eq!(
            made,
            1,
            "{name}: {:?}",
            answers
                .iter()
                .map(|r| (r.status, r.text()))
                .collect::<Vec<_>>()
        );
        for r in answers.iter().filter(|r| r.status != 204) {
            // TS3AudioBot's own answer for an existing template.
            assert_eq!(r.status, 422, "{}", r.text());
            assert!(r.text().contains("already exists"), "{}", r.text());
        }
        let holders = nodes
            .iter()
            .filter(|n| n.templates().contains(&name))
            .count();
        assert_eq!(holders, 1, "{name} is on {holders} nodes");
    }
    // Made through A, written and started through B.
    assert_eq!(a.get("/api/settings/create/radio").status, 204);
    wait_for(3, "router B to list the template", || {
        b.bot_list().iter().any(|x| x["Name"] == "radio")
    });
    let set = b.get("/api/settings/bot/set/radio/connect.address/radio.example.com");
    assert_eq!(set.status, 204, "{}", set.text());
    let started = b.get("/api/bot/connect/template/radio");
    assert_eq!(started.status, 200, "{}", started.text());
    let id = started.json()["Id"].as_u64().expect("Id");
    wait_for(3, "router A to route the bot B started", || {
        a.get(&format!("/api/bot/use/{id}/(/bot/info)")).status == 200
    });
    // Operations: the leader runs them, the other router refuses.
    let lead = leader(&[&a, &b]);
    let (leading, other) = if lead == 0 { (&a, &b) } else { (&b, &a) };
    let refused = admin(other, "POST", "/admin/api/rebalance", None);
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["error"], "conflict", "{}", refused.text());
    assert!(refused.text().contains("leads"), "{}", refused.text());
    let ran = admin(leading, "POST", "/admin/api/rebalance", None);
    assert_eq!(ran.status, 202, "{}", ran.text());
}

/// `store copy` moves a cluster's state from the embedded store to MongoDB and back: counts
/// and checksum verified, the id counter carried over, a non-empty target refused unless
/// `--overwrite`.
#[test]
fn store_copy_moves_state_both_ways() {
    let (uri, db) = (mongo::uri(), mongo::database("copy"));
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(
        &refs,
        RouterOpts {
            admin: true,
            ..RouterOpts::default()
        },
    );
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = router.get(&format!("/api/bot/connect/to/c{i}.example.com"));
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["Id"].as_u64().expect("Id"));
    }
    assert_eq!(router.get("/api/settings/create/kept").status, 204);
    let k = admin(
        &router,
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "copied", "role": "user"})),
    );
    assert_eq!(k.status, 201, "{}", k.text());
    let secret = k.json()["secret"].as_str().expect("secret").to_string();
    router.stop();

    let embedded = router.data.display().to_string();
    let target = format!("{}{db}", uri);
    let (code, out) = run_bounded(
        &["store", "copy", "--from", &embedded, "--to", &target],
        120,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verified") && out.contains("5 bots"), "{out}");
    let checksum = out
        .split("checksum ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_hexdigit()).next())
        .expect("checksum")
        .to_string();
    let (code, out) = run_bounded(
        &["store", "copy", "--from", &embedded, "--to", &target],
        120,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--overwrite"), "{out}");

    // A router on the copy routes the same bots and accepts the copied key; new ids go on
    // above the old ones.
    let mut opts = shared_opts(&uri, &db, "");
    opts.admin = false;
    let on_mongo = Router::start(&refs, opts);
    let listed = listing(&on_mongo);
    for id in &ids {
        assert!(
            listed.contains_key(id),
            "bot {id} missing after the copy: {listed:?}"
        );
    }
    assert_eq!(
        on_mongo.get_as(("copied", &secret), "/api/bot/list").status,
        200
    );
    let r = on_mongo.get("/api/bot/connect/to/later.example.com");
    assert_eq!(r.status, 200, "{}", r.text());
    let later = r.json()["Id"].as_u64().expect("Id");
    assert!(ids.iter().all(|i| *i < later), "{later} vs {ids:?}");
    drop(on_mongo);

    // And back, into a fresh embedded store: the same checksum.
    let back = tempfile::tempdir().expect("dir");
    let back_dir = back.path().display().to_string();
    let (code, out) = run_bounded(
        &["store", "copy", "--from", &target, "--to", &back_dir],
        120,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("6 bots"), "{out}");
    assert!(
        !out.contains(&checksum),
        "the later bot must change the checksum: {out}"
    );
    let (code, out) = run_bounded(
        &[
            "store",
            "copy",
            "--from",
            &target,
            "--to",
            &back_dir,
            "--overwrite",
        ],
        120,
    );
    assert_eq!(code, Some(0), "{out}");
}

/// Concurrent creates through two routers never put a node over its capacity: the seats are
/// in the database, not in one router's memory. A full cluster answers TS3AudioBot's 503.
#[test]
fn creates_through_two_routers_never_overfill_a_node() {
    let (uri, db) = (mongo::uri(), mongo::database("capacity"));
    let nodes: Vec<FakeNode> = (0..2)
        .map(|i| fake_node_with(i, |c| c.service_time = Duration::from_millis(30)))
        .collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let opts = RouterOpts {
        capacities: vec![5, 5],
        ..shared_opts(&uri, &db, "")
    };
    let a = Arc::new(Router::start(&refs, opts.clone()));
    let b = Arc::new(Router::start(&refs, opts));
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let r = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || r.get(&format!("/api/bot/connect/to/cap{i}.example.com")))
        })
        .collect();
    let answers: Vec<Response> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    let made = answers.iter().filter(|r| r.status == 200).count();
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.json()["ErrorName"].is_string(), "{}", r.text());
    }
    let counts: Vec<usize> = nodes.iter().map(|n| n.bots().len()).collect();
    println!(
        "24 creates through two routers on 2 nodes of capacity 5: {made} made, per node {counts:?}"
    );
    assert!(
        counts.iter().all(|c| *c <= 5),
        "a node went over its capacity: {counts:?}"
    );
    assert_eq!(
        counts.iter().sum::<usize>(),
        made,
        "{counts:?} vs {made} answered"
    );
    assert!(made >= 8, "only {made} of 10 places were used: {counts:?}");
}
