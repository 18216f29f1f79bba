//! A node that crashes and restarts quickly (systemd's `Restart=always`) gets its bots back:
//! the same cluster ids and TeamSpeak identities, on the same node, none running twice; a
//! `run = true` template that the node starts by itself is re-adopted, not started again.
//! Also with the router restarted while the node was down, and during a failover of it.
//!
//! The crash is modelled on the fake node as the router sees a killed process: its listener
//! and every connection drop at once (`kill`), its process state restarts (`restart`: no
//! temporary bots, templates kept as on disk, `run = true` ones started with local ids from
//! 0, a new `starttime`), and one second later it listens again (`revive`).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use support::*;

fn opts(extra: &str, draining: Vec<usize>) -> RouterOpts {
    RouterOpts {
        poll_ms: 200,
        extra_yaml: extra.to_string(),
        draining,
        ..RouterOpts::default()
    }
}

fn create(router: &Router, target: &str) -> u64 {
    let r = router.get(target);
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r.json()["Id"].as_u64().expect("Id")
}

fn ok(router: &Router, target: &str) {
    let r = router.get(target);
    assert!(
        r.status == 200 || r.status == 204,
        "{target}: {} {}",
        r.status,
        r.text()
    );
}

/// A bot's identity key as the node it runs on reports it, through the router.
fn identity(router: &Router, gid: u64) -> Option<String> {
    let r = router.get(&format!(
        "/api/bot/use/{gid}/(/settings/get/connect.identity.key)"
    ));
    (r.status == 200)
        .then(|| r.json().as_str().map(str::to_string))
        .flatten()
}

/// Four temporary bots, a `run = true` template bot and a plain template bot, all created
/// through the router. Returns their ids.
fn populate(router: &Router) -> Vec<u64> {
    let mut gids: Vec<u64> = (0..4)
        .map(|i| create(router, &format!("/api/bot/connect/to/t{i}.example.com")))
        .collect();
    ok(router, "/api/settings/create/auto");
    ok(router, "/api/settings/bot/set/auto/run/true");
    gids.push(create(router, "/api/bot/connect/template/auto"));
    ok(router, "/api/settings/create/plain");
    gids.push(create(router, "/api/bot/connect/template/plain"));
    gids
}

/// Waits until the router has read every bot's identity (it does so in the background
/// after a create) and returns them.
fn identities(router: &Router, gids: &[u64]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    router.wait_until(10, "every identity readable", |r| {
        out = gids
            .iter()
            .filter_map(|g| Some((*g, identity(r, *g)?)))
            .collect();
        out.len() == gids.len()
    });
    out
}

/// An identity that runs on two nodes (or twice on one), described.
fn identity_twice(nodes: &[&FakeNode]) -> Option<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for b in n.bots() {
            if let Some(other) = seen.insert(b.identity_key.clone(), i) {
                return Some(format!(
                    "identity of bot {} ({:?}) runs on node {other} and node {i}",
                    b.id, b.name
                ));
            }
        }
    }
    None
}

fn assert_no_identity_twice(nodes: &[&FakeNode]) {
    if let Some(e) = identity_twice(nodes) {
        panic!("{e}");
    }
}

/// Waits (at most `secs`) until every bot answers through the router with its identity,
/// checking on every round that no identity runs twice. Returns how long it took.
fn wait_all_back(
    router: &Router,
    nodes: &[&FakeNode],
    want: &BTreeMap<u64, String>,
    secs: u64,
) -> Duration {
    let t0 = Instant::now();
    router.wait_until(secs, "every bot back with its identity", |r| {
        assert_no_identity_twice(nodes);
        want.iter()
            .all(|(g, key)| identity(r, *g).as_deref() == Some(key))
    });
    t0.elapsed()
}

/// The crash and the restart one second later.
fn crash_and_restart(node: &FakeNode) {
    crash_and_restart_with(node, |_| {});
}

/// [`crash_and_restart`], with `while_down` run on the restarted node before it listens
/// again (a fault set earlier would be gone with the crash).
fn crash_and_restart_with(node: &FakeNode, while_down: impl FnOnce(&FakeNode)) {
    let before = node.starttime();
    node.kill();
    node.restart();
    while_down(node);
    // The outage itself (what systemd's RestartSec gives), not a wait for a condition.
    std::thread::sleep(Duration::from_secs(1));
    node.revive().expect("node listens again");
    assert_ne!(node.starttime(), before, "a restart is a new process");
}

#[test]
fn a_node_restarting_within_a_second_gets_every_bot_back_on_it() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    // Node 1 takes no new bots, so everything starts on node 0.
    let router = Router::start(&refs, opts("", vec![1]));
    let gids = populate(&router);
    let want = identities(&router, &gids);
    assert_eq!(nodes[0].bots().len(), 6);

    crash_and_restart(&nodes[0]);
    assert_eq!(
        nodes[0].bots().len(),
        1,
        "after the restart only the run = true template runs"
    );
    let took = wait_all_back(&router, &refs, &want, 20);
    println!(
        "6 bots back {} ms after the node listened again",
        took.as_millis()
    );
    // All on the node where they were, the autostarted template exactly once.
    assert_eq!(nodes[0].bots().len(), 6, "{:?}", nodes[0].bots());
    assert!(nodes[1].bots().is_empty());
    let autos = nodes[0]
        .bots()
        .iter()
        .filter(|b| b.name.as_deref() == Some("auto"))
        .count();
    assert_eq!(
        autos, 1,
        "the autostarted template is not started a second time"
    );
    // The cluster list shows each id once, nothing else.
    let listed: Vec<u64> = router
        .bot_list()
        .iter()
        .filter_map(|b| b["Id"].as_u64())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    let mut expected = gids.clone();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "{listed:?}");
}

#[test]
fn bots_stopped_behind_the_routers_back_stay_stopped() {
    let nodes: Vec<FakeNode> = (0..1).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts("", vec![]));
    let gid = create(&router, "/api/bot/connect/to/gone.example.com");
    let keep = create(&router, "/api/bot/connect/to/keep.example.com");
    identities(&router, &[gid, keep]);
    // `bot disconnect` straight to the node: same process, so the bot is gone for good.
    let lid = nodes[0]
        .bots()
        .iter()
        .find(|b| b.server.as_deref() == Some("gone.example.com"))
        .map(|b| b.id)
        .expect("on the node");
    nodes[0].disconnect_bot(lid);
    router.wait_until(10, "the stopped bot to be dropped", |r| {
        r.get(&format!("/api/bot/use/{gid}/(/bot/info)")).status == 422
    });
    // It never comes back (the failover loop would bring it back within its 200 ms tick).
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(nodes[0].bots().len(), 1, "a stopped bot was started again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(identity(&router, keep).is_some());
}

#[test]
fn a_router_restarted_while_the_node_was_down_brings_its_bots_back() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, opts("", vec![1]));
    let gids = populate(&router);
    let want = identities(&router, &gids);
    router.stop();

    let before = nodes[0].starttime();
    nodes[0].kill();
    nodes[0].restart();
    router.spawn();
    // The router is up and node 0 is still down: its bots answer 503, not 422.
    let r = router.get(&format!("/api/bot/use/{}/(/bot/info)", gids[0]));
    assert_eq!(r.status, 503, "{}", r.text());
    nodes[0].revive().expect("listens");
    assert_ne!(nodes[0].starttime(), before);
    wait_all_back(&router, &refs, &want, 20);
    assert_eq!(nodes[0].bots().len(), 6);
}

#[test]
fn a_restart_during_a_failover_of_the_node_loses_no_bot_and_runs_none_twice() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(
        &refs,
        opts(
            "failover: { after_ms: 0, retry_ms: 300, concurrency: 2 }\n",
            vec![1],
        ),
    );
    let gids = populate(&router);
    let want = identities(&router, &gids);
    // Node 1 must take the moved bots: restart the router without draining it.
    router.stop();
    router.write_config(
        &refs,
        &opts(
            "failover: { after_ms: 0, retry_ms: 300, concurrency: 2 }\n",
            vec![],
        ),
    );
    router.spawn();
    identities(&router, &gids);
    // Slow rebuilds, so the node comes back while its bots are being moved.
    nodes[1].set_latency(Duration::from_millis(150));
    nodes[0].kill();
    nodes[0].restart();
    router.wait_until(10, "failover to start moving bots", |_| {
        !nodes[1].bots().is_empty()
    });
    nodes[0].revive().expect("listens");
    router.wait_until(30, "every bot back with its identity", |r| {
        want.iter()
            .all(|(g, key)| identity(r, *g).as_deref() == Some(key))
    });
    // Once both nodes are in use again, every identity runs once.
    router.wait_until(10, "no identity twice", |_| identity_twice(&refs).is_none());
    let running = nodes[0].bots().len() + nodes[1].bots().len();
    assert_eq!(
        running,
        gids.len(),
        "{:?} {:?}",
        nodes[0].bots(),
        nodes[1].bots()
    );
}

/// While a restarted node's bots wait to be brought back (here its `bot connect` fails for a
/// while), the cluster list shows each of them as connecting (1) under its id, once, beside
/// what the node runs; when the node takes connects again, they come back.
#[test]
fn bots_waiting_to_be_brought_back_are_listed_as_connecting_under_their_ids() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts("", vec![1]));
    let gids = populate(&router);
    let want = identities(&router, &gids);
    // Connects fail once it is back.
    crash_and_restart_with(&nodes[0], |n| {
        n.set_fault_on(Some(Fault::Status500), "bot/connect");
        n.clear_requests();
    });
    // Its first `bot connect` (refused) shows the router took the restart in and brings the
    // bots back: from here on they are listed from its records as ones being brought back.
    wait_for(20, "a first attempt to bring the bots back", || {
        targets(&nodes[0]).iter().any(|t| t.contains("bot/connect"))
    });
    // A bot started on the node behind the router's back is only in the node's own list: a
    // list that shows it and the waiting bots is the node's live list plus the router's
    // records of what is being brought back (not the list of a node that is down).
    nodes[0].connect_bot("live.example.com");
    // The autostarted template (gids[4]) runs again by itself; the others wait.
    let waiting: Vec<u64> = gids.iter().copied().filter(|g| *g != gids[4]).collect();
    let mut listed = Vec::new();
    router.wait_until(
        20,
        "the node's own bot and the waiting ones, as connecting",
        |r| {
            let list = r.bot_list();
            let connecting: Vec<u64> = list
                .iter()
                .filter(|b| b["Status"] == 1)
                .filter_map(|b| b["Id"].as_u64())
                .collect();
            listed = list.iter().filter_map(|b| b["Id"].as_u64()).collect();
            list.iter().any(|b| b["Server"] == "live.example.com")
                && waiting.iter().all(|g| connecting.contains(g))
        },
    );
    listed.sort_unstable();
    let mut once = listed.clone();
    once.dedup();
    assert_eq!(once, listed, "each id once");
    assert_eq!(listed.len(), gids.len() + 1, "the six bots and the new one");
    assert!(gids.iter().all(|g| listed.contains(g)), "{listed:?}");
    nodes[0].set_fault(None);
    wait_all_back(&router, &refs, &want, 20);
}
