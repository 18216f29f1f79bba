//! The router killed (SIGKILL) in the middle of building a bot's copy, at every step, for a
//! failover, an evacuate (an admin operation) and a plain create: restarted on the same store,
//! it finishes the work from its records. The bot ends up running exactly once, with its
//! cluster id and TeamSpeak identity, and nothing is started twice.
//!
//! A fake node holds the answer to one command of the rebuild (`FakeNode::hold`: the command
//! has run on the node, the router waits for the answer), the router is killed while it waits,
//! the hold is released and the router started again. The steps: `settings create`, the first
//! `settings bot set`, and `bot connect template` (held after the connect ran: the crash
//! between the connect and the move's record).

mod support;

use std::time::{Duration, Instant};

use support::*;

const FAILOVER: &str = "failover: { after_ms: 300, retry_ms: 300 }\n";

/// The rebuild's steps, as the target node sees them (a temporary bot's copy is the template
/// `ts3ab-lb-<id>`).
const STEPS: [(&str, &str); 3] = [
    ("settings create", "/api/settings/create/ts3ab-lb-"),
    ("settings bot set", "/api/settings/bot/set/ts3ab-lb-"),
    ("bot connect", "/api/bot/connect/template/ts3ab-lb-"),
];

fn opts() -> RouterOpts {
    RouterOpts {
        poll_ms: 100,
        extra_yaml: FAILOVER.to_string(),
        admin: true,
        ..RouterOpts::default()
    }
}

fn create(router: &Router, target: &str) -> u64 {
    let r = router.get(target);
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r.json()["Id"].as_u64().expect("Id")
}

/// Running copies of identity `key` on `nodes`, as (node index, local id).
fn copies(nodes: &[&FakeNode], key: &str) -> Vec<(usize, u32)> {
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.bots()
                .into_iter()
                .filter(|b| b.identity_key == key)
                .map(move |b| (i, b.id))
        })
        .collect()
}

/// Every running bot on every node, as (node index, identity key).
fn all_running(nodes: &[&FakeNode]) -> Vec<(usize, String)> {
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.bots().into_iter().map(move |b| (i, b.identity_key)))
        .collect()
}

/// The router's templates for bot `gid` (`ts3ab-lb-<gid>`), as the node indexes holding one.
/// A half-made copy left on a node that is not the bot's would start the identity a second
/// time when that node restarts or someone connects it.
fn copy_templates(nodes: &[&FakeNode], gid: u64) -> Vec<usize> {
    let name = format!("ts3ab-lb-{gid}");
    (0..nodes.len())
        .filter(|i| nodes[*i].templates().contains(&name))
        .collect()
}

/// The identity key the router serves for bot `gid`, if it answers.
fn key_through_router(router: &Router, gid: u64) -> Option<String> {
    let r = router.get(&format!(
        "/api/bot/use/{gid}/(/settings/get/connect.identity.key)"
    ));
    (r.status == 200)
        .then(|| r.json().as_str().map(String::from))
        .flatten()
}

/// The cluster ids the router lists for running bots.
fn listed_ids(router: &Router) -> Vec<u64> {
    let mut ids: Vec<u64> = router
        .bot_list()
        .iter()
        .filter_map(|b| b["Id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

/// Holds `pattern` on `nodes`, waits until one of them holds an answer, kills the router,
/// releases the holds and starts the router again.
fn kill_while_held(router: &mut Router, nodes: &[&FakeNode], pattern: &str, start: impl FnOnce()) {
    for n in nodes {
        n.hold(pattern);
    }
    start();
    wait_for(20, &format!("a node to hold `{pattern}`"), || {
        nodes.iter().any(|n| n.held() > 0)
    });
    router.kill();
    for n in nodes {
        n.release();
    }
    router.spawn();
}

/// Waits until `ok` has held for a few of the router's poll rounds in a row (a copy started
/// twice would show up meanwhile), at most `secs`.
fn settles(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut since: Option<Instant> = None;
    loop {
        if ok() {
            let s = *since.get_or_insert_with(Instant::now);
            if s.elapsed() >= Duration::from_millis(1500) {
                return;
            }
        } else {
            since = None;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A bot whose node dies is rebuilt elsewhere; the router is killed at `step`.
fn failover_killed_at(step: usize) {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, opts());
    let gid = create(&router, "/api/bot/connect/to/moving.example.com");
    let key = wait_key(&router, gid);
    let (home, lid) = copies(&refs, &key)[0];
    wait_for_requests(&nodes[home], 10, "the identity read", &[identity_read(lid)]);
    let others: Vec<&FakeNode> = (0..3).filter(|i| *i != home).map(|i| &nodes[i]).collect();
    let (name, pattern) = STEPS[step];
    kill_while_held(&mut router, &others, pattern, || nodes[home].kill());
    eprintln!("failover: router killed while a node held `{name}`");

    // The node is still down: the restarted router finishes the failover.
    settles(30, "the bot running once elsewhere, under its id", || {
        let live = copies(&others, &key);
        live.len() == 1
            && key_through_router(&router, gid).as_deref() == Some(key.as_str())
            && listed_ids(&router) == vec![gid]
    });
    // The old node comes back with its copy: fenced, so the identity still runs once.
    nodes[home].revive().expect("revive");
    settles(30, "the old copy fenced", || {
        copies(&refs, &key).len() == 1 && all_running(&refs).len() == 1
    });
    assert_eq!(listed_ids(&router), vec![gid]);
    assert_eq!(
        key_through_router(&router, gid).as_deref(),
        Some(key.as_str())
    );
    let (at, _) = copies(&refs, &key)[0];
    assert_ne!(at, home, "the bot stays where failover put it");
    settles(30, "the copy's template only where it runs", || {
        copy_templates(&refs, gid) == vec![at]
    });
}

/// Failover of a bot killed after the connect on the target, before the move is recorded;
/// the old node (which only looked dead: a frozen process) is back, with its copy, before the
/// restarted router retries. `template`: a client's template bot, else a temporary bot.
fn failover_killed_after_connect_then_node_returns(template: bool) {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, opts());
    let (gid, pattern) = if template {
        assert_eq!(router.get("/api/settings/create/music").status, 204);
        assert_eq!(
            router
                .get("/api/settings/bot/set/music/connect.address/music.example.com")
                .status,
            204
        );
        (
            create(&router, "/api/bot/connect/template/music"),
            "/api/bot/connect/template/music",
        )
    } else {
        (
            create(&router, "/api/bot/connect/to/moving.example.com"),
            STEPS[2].1,
        )
    };
    let key = wait_key(&router, gid);
    let (home, lid) = copies(&refs, &key)[0];
    wait_for_requests(&nodes[home], 10, "the identity read", &[identity_read(lid)]);
    let others: Vec<&FakeNode> = (0..3).filter(|i| *i != home).map(|i| &nodes[i]).collect();
    kill_while_held(&mut router, &others, pattern, || nodes[home].kill());
    // Back before the restarted router's failover would move it again.
    nodes[home].revive().expect("revive");
    settles(30, "the identity running once, under its id", || {
        copies(&refs, &key).len() == 1
            && all_running(&refs).len() == 1
            && key_through_router(&router, gid).as_deref() == Some(key.as_str())
            && listed_ids(&router) == vec![gid]
    });
    // The copy's template is gone too (a restart of that node must not start it).
    let name = if template {
        "music".to_string()
    } else {
        format!("ts3ab-lb-{gid}")
    };
    settles(30, "the copy's template removed", || {
        let holders: Vec<usize> = (0..3)
            .filter(|i| nodes[*i].templates().contains(&name))
            .collect();
        holders == if template { vec![home] } else { vec![] }
    });
}

/// A bot is evacuated from its live node (an admin operation); the router is killed at `step`.
fn evacuate_killed_at(step: usize) {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, opts());
    let gid = create(&router, "/api/bot/connect/to/evacuated.example.com");
    let key = wait_key(&router, gid);
    let (home, lid) = copies(&refs, &key)[0];
    wait_for_requests(&nodes[home], 10, "the identity read", &[identity_read(lid)]);
    let others: Vec<&FakeNode> = (0..3).filter(|i| *i != home).map(|i| &nodes[i]).collect();
    let (name, pattern) = STEPS[step];
    let admin = router.admin_addr.expect("admin");
    kill_while_held(&mut router, &others, pattern, || {
        let r = raw_request(
            admin,
            "POST",
            format!("/admin/api/nodes/node-{home}/evacuate").as_bytes(),
            &[("Authorization", &basic(ADMIN))],
            Some(b""),
        );
        assert!(r.status < 300, "evacuate: {} {}", r.status, r.text());
    });
    eprintln!("evacuate: router killed while a node held `{name}`");

    settles(30, "the bot running once, under its id", || {
        // Read once: the copies may change between two reads.
        let c = copies(&refs, &key);
        c.len() == 1
            && c[0].0 != home
            && all_running(&refs).len() == 1
            && key_through_router(&router, gid).as_deref() == Some(key.as_str())
            && listed_ids(&router) == vec![gid]
    });
    let (at, _) = copies(&refs, &key)[0];
    settles(30, "the copy's template only where it runs", || {
        copy_templates(&refs, gid) == vec![at]
    });
}

/// A client's create (`bot connect to`, or `bot connect template`): the router is killed while
/// the node's answer to the connect is held (the bot runs, the router has not recorded it).
fn create_killed(target: &str, pattern: &str, template: Option<&str>) {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, opts());
    if let Some(t) = template {
        assert_eq!(router.get(&format!("/api/settings/create/{t}")).status, 204);
    }
    let addr = router.addr;
    let target = target.to_string();
    let client = std::thread::spawn(move || {
        // The router dies under this request; whatever it gets (an error, a reset) is fine.
        let _ = std::panic::catch_unwind(|| {
            raw_request(
                addr,
                "GET",
                target.as_bytes(),
                &[("Authorization", &basic(ADMIN))],
                None,
            )
        });
    });
    kill_while_held(&mut router, &refs, pattern, || {});
    let _ = client.join();

    // The copy the node started is the one bot: adopted once, never started again.
    settles(30, "the one bot adopted once", || {
        let running = all_running(&refs);
        running.len() == 1 && listed_ids(&router).len() == 1
    });
    let key = all_running(&refs)[0].1.clone();
    let gid = listed_ids(&router)[0];
    assert_eq!(
        key_through_router(&router, gid).as_deref(),
        Some(key.as_str())
    );
}

/// The identity key of a new bot, once the router serves it.
fn wait_key(router: &Router, gid: u64) -> String {
    let mut key = None;
    wait_for(10, "the bot's identity", || {
        key = key_through_router(router, gid).filter(|k| !k.is_empty());
        key.is_some()
    });
    key.expect("key")
}

#[test]
fn failover_router_killed_after_settings_create() {
    failover_killed_at(0);
}

#[test]
fn failover_router_killed_after_settings_bot_set() {
    failover_killed_at(1);
}

#[test]
fn failover_router_killed_after_the_connect_before_the_move_is_recorded() {
    failover_killed_at(2);
}

#[test]
fn failover_killed_after_connect_old_node_returns_temporary_bot() {
    failover_killed_after_connect_then_node_returns(false);
}

#[test]
fn failover_killed_after_connect_old_node_returns_template_bot() {
    failover_killed_after_connect_then_node_returns(true);
}

#[test]
fn evacuate_router_killed_after_settings_create() {
    evacuate_killed_at(0);
}

#[test]
fn evacuate_router_killed_after_settings_bot_set() {
    evacuate_killed_at(1);
}

#[test]
fn evacuate_router_killed_after_the_connect_before_the_move_is_recorded() {
    evacuate_killed_at(2);
}

#[test]
fn create_router_killed_before_the_new_bot_is_recorded() {
    create_killed(
        "/api/bot/connect/to/new.example.com",
        "/api/bot/connect/to/",
        None,
    );
}

#[test]
fn template_create_router_killed_before_the_new_bot_is_recorded() {
    create_killed(
        "/api/bot/connect/template/music",
        "/api/bot/connect/template/music",
        Some("music"),
    );
}
