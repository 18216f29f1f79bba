//! Failover: a dead node's bots come back on other nodes with the same cluster id and the same
//! TeamSpeak identity; the copies a returning node still holds are stopped before the router
//! uses it again, across a router crash too; with failover off nothing moves.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use support::*;
use ts3ab_fake_node::FakeBot;

const FAST_FAILOVER: &str = "failover: { after_ms: 300, retry_ms: 500 }\n";

fn opts(extra: &str) -> RouterOpts {
    RouterOpts {
        poll_ms: 100,
        extra_yaml: extra.to_string(),
        ..RouterOpts::default()
    }
}

/// Every running bot of every live node, with the node's index.
fn all_bots(nodes: &[FakeNode], skip: Option<usize>) -> Vec<(usize, FakeBot)> {
    nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .flat_map(|(i, n)| n.bots().into_iter().map(move |b| (i, b)))
        .collect()
}

fn create(router: &Router, target: &str) -> u64 {
    let r = router.get(target);
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r.json()["Id"].as_u64().expect("Id")
}

#[test]
fn dead_node_bots_move_with_their_ids_and_identities_and_come_back_fenced() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut router = Router::start(&refs, opts(FAST_FAILOVER));

    // Temporary bots (one with a server password and a nickname set through the router) and
    // a template bot with a setting written through the router.
    let mut gids = Vec::new();
    for i in 0..8 {
        gids.push(create(
            &router,
            &format!("/api/bot/connect/to/t{i}.example.com"),
        ));
    }
    let pw_bot = create(&router, "/api/bot/connect/to/secret.example.com/hunter2");
    gids.push(pw_bot);
    assert_eq!(
        router
            .get(&format!("/api/bot/use/{pw_bot}/(/bot/name/Alice)"))
            .status,
        204
    );
    assert_eq!(router.get("/api/settings/create/music").status, 204);
    assert_eq!(
        router
            .get("/api/settings/bot/set/music/connect.address/music.example.com")
            .status,
        204
    );
    // Written inside a merge: the answer cannot confirm it, the router reads it back.
    let merged =
        router.get("/api/json/merge/(/settings/bot/set/music/audio.volume.default/30)/(/version)");
    assert_eq!(merged.status, 200, "{}", merged.text());
    let music = create(&router, "/api/bot/connect/template/music");
    gids.push(music);
    // Written inside xecute in the bot's context: recorded for its template the same way.
    let x = router.get(&format!(
        "/api/bot/use/{music}/(/xecute/(/settings/set/audio.volume.max/70))"
    ));
    assert!(x.status < 300, "{}", x.text());

    // The node holding the template dies; everything on it must move.
    let dead = nodes
        .iter()
        .position(|n| n.templates().contains(&"music".to_string()))
        .expect("music has a node");
    let before: Vec<FakeBot> = nodes[dead].bots();
    assert!(before.len() >= 3, "{before:?}");
    let before_ids: HashMap<String, FakeBot> = before
        .iter()
        .map(|b| (b.identity_key.clone(), b.clone()))
        .collect();
    // The router reads a new bot's identity in the background: wait until it has read every
    // bot's on this node before the node dies.
    let mut reads: Vec<String> = before.iter().map(|b| identity_read(b.id)).collect();
    // And the read-backs of the two settings the answers could not confirm.
    let music_lid = before
        .iter()
        .find(|b| b.name.as_deref() == Some("music"))
        .map(|b| b.id)
        .expect("music runs there");
    reads.push(format!(
        "/api/bot/use/{music_lid}/(/settings/get/audio.volume.max)"
    ));
    reads.push("/api/settings/bot/get/music/audio.volume.default".to_string());
    wait_for_requests(&nodes[dead], 10, "the identity reads", &reads);
    nodes[dead].kill();

    router.wait_until(15, "the dead node's bots running elsewhere", |_| {
        let live: HashSet<String> = all_bots(&nodes, Some(dead))
            .into_iter()
            .map(|(_, b)| b.identity_key)
            .collect();
        before_ids.keys().all(|k| live.contains(k))
    });
    let moved: BTreeMap<String, (usize, FakeBot)> = all_bots(&nodes, Some(dead))
        .into_iter()
        .filter(|(_, b)| before_ids.contains_key(&b.identity_key))
        .map(|(i, b)| (b.identity_key.clone(), (i, b)))
        .collect();
    for (key, (_, now)) in &moved {
        let was = &before_ids[key];
        assert_eq!(now.uid, was.uid, "same TeamSpeak identity");
        assert_eq!(now.identity_offset, was.identity_offset);
        assert_eq!(now.server, was.server, "same server");
        assert_eq!(now.nickname, was.nickname);
        assert_eq!(now.server_password, was.server_password);
        match &was.name {
            Some(n) => assert_eq!(now.name.as_ref(), Some(n), "a template keeps its name"),
            None => assert!(
                now.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("ts3ab-lb-")),
                "a temporary bot comes back from a router-named template: {now:?}"
            ),
        }
    }
    // The template moved with its settings.
    let (music_node, music_bot) = moved
        .values()
        .find(|(_, b)| b.name.as_deref() == Some("music"))
        .expect("music moved");
    assert!(nodes[*music_node]
        .templates()
        .contains(&"music".to_string()));
    assert_eq!(music_bot.volume, 30.0);
    let max = router.get("/api/settings/bot/get/music/audio.volume.max");
    assert_eq!(
        max.text().parse::<f64>().ok(),
        Some(70.0),
        "a setting written inside xecute moved with the template: {}",
        max.text()
    );

    // Same cluster ids, each once, all reachable through the router on their new nodes.
    router.wait_until(5, "the list to show every bot once", |r| {
        let list = r.bot_list();
        let ids: Vec<u64> = list.iter().filter_map(|b| b["Id"].as_u64()).collect();
        let set: HashSet<u64> = ids.iter().copied().collect();
        ids.len() == gids.len() && gids.iter().all(|g| set.contains(g))
    });
    // Nothing shows the router's work: a rebuilt temporary bot is still unnamed to clients
    // (its router-named template never shows), in the list and in its own answers.
    assert!(before_ids.values().any(|b| b.name.is_none()));
    let list = router.bot_list();
    let names: Vec<&serde_json::Value> = list.iter().map(|b| &b["Name"]).collect();
    assert_eq!(
        names.iter().filter(|n| n.is_null()).count(),
        gids.len() - 1,
        "every bot but `music` is a temporary one: {list:?}"
    );
    for gid in &gids {
        let r = router.get(&format!("/api/bot/use/{gid}/(/bot/info)"));
        assert_eq!(r.status, 200, "bot {gid}: {}", r.text());
        assert_eq!(r.json()["Id"].as_u64(), Some(*gid));
        assert!(!r.text().contains("ts3ab-lb-"), "bot {gid}: {}", r.text());
    }
    assert!(!router.get("/api/bot/list").text().contains("ts3ab-lb-"));
    // A client stopping a rebuilt temporary bot leaves nothing behind, as a temporary bot
    // does: its router-named template goes from the node too.
    let (host, stopped) = moved
        .values()
        .find(|(_, b)| {
            b.name
                .as_deref()
                .is_some_and(|n| n.starts_with("ts3ab-lb-"))
        })
        .map(|(i, b)| (*i, b.name.clone().expect("name")))
        .expect("a rebuilt temporary bot");
    let gid: u64 = stopped["ts3ab-lb-".len()..]
        .parse()
        .expect("gid in the name");
    let r = router.get(&format!("/api/bot/use/{gid}/(/bot/disconnect)"));
    assert!(r.status < 300, "{}", r.text());
    router.wait_until(10, "the stopped bot's template to go", |_| {
        !nodes[host].templates().contains(&stopped)
    });
    gids.retain(|g| *g != gid);
    assert!(!router.get("/api/bot/list").text().contains("ts3ab-lb-"));
    let alice = router.get(&format!("/api/bot/use/{pw_bot}/(/bot/info/client)"));
    assert_eq!(alice.status, 200, "{}", alice.text());

    // The router crashes; the fences it owes the dead node must survive that. The dead node
    // comes back while the router is down, its old copies still running (it was only
    // unreachable): the restarted router must not use it before it is fenced.
    router.kill();
    assert_eq!(nodes[dead].bots().len(), before.len());
    nodes[dead].revive().expect("revive");
    router.write_config(&refs, &opts(FAST_FAILOVER));
    router.spawn();
    let first = router.bot_list();
    let first_ids: Vec<u64> = first.iter().filter_map(|b| b["Id"].as_u64()).collect();
    assert_eq!(first_ids.len(), gids.len(), "old copies adopted: {first:?}");
    router.wait_until(10, "the returning node's copies to be stopped", |_| {
        nodes[dead].bots().is_empty() && !nodes[dead].templates().contains(&"music".to_string())
    });
    // One identity, one node: no key runs twice anywhere.
    let keys: Vec<String> = all_bots(&nodes, None)
        .into_iter()
        .map(|(_, b)| b.identity_key)
        .collect();
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), unique.len(), "an identity runs twice: {keys:?}");
    let list = router.bot_list();
    let ids: Vec<u64> = list.iter().filter_map(|b| b["Id"].as_u64()).collect();
    assert_eq!(ids.len(), gids.len(), "{list:?}");

    // And the node is used again: new bots can land on it.
    router.wait_until(5, "new bots on the returned node", |r| {
        create(r, "/api/bot/connect/to/new.example.com");
        !nodes[dead].bots().is_empty()
    });
}

/// Watches, after a node went down, for `polls` more of the router's polls of `watched` (the
/// router's own clock: a window measured in poll intervals that the router really ran),
/// checking `still` at every step.
fn for_polls(watched: &FakeNode, polls: usize, what: &str, mut still: impl FnMut() -> bool) {
    watched.clear_requests();
    wait_for(30, &format!("{polls} polls"), || {
        assert!(still(), "{what}");
        list_requests(watched) >= polls
    });
    assert!(still(), "{what}");
}

#[test]
fn with_failover_off_nothing_moves() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts("failover: { enabled: false, after_ms: 0 }\n"));
    for i in 0..4 {
        create(&router, &format!("/api/bot/connect/to/o{i}.example.com"));
    }
    let dead = if nodes[0].bots().is_empty() { 1 } else { 0 };
    let other = 1 - dead;
    let stranded = nodes[dead].bots().len();
    assert!(stranded > 0);
    nodes[dead].kill();
    // The router has seen the node down once its bots show as connecting.
    router.wait_until(10, "the dead node's bots to show as connecting", |r| {
        r.bot_list().iter().filter(|b| b["Status"] == 1).count() == stranded
    });
    // With failover on, `after_ms: 0` would move them at the next failover tick (every
    // 200 ms) after that: 10 polls at `poll_ms: 100` are a second, five such ticks.
    for_polls(&nodes[other], 10, "nothing moved", || {
        nodes[other].bots().len() == 4 - stranded
    });
    let connecting = router
        .bot_list()
        .iter()
        .filter(|b| b["Status"] == 1)
        .count();
    assert_eq!(
        connecting, stranded,
        "the dead node's bots show as connecting"
    );
}

/// When no other node has room, the bots stay (shown as connecting) and move as soon as room
/// appears.
#[test]
fn bots_wait_for_room_and_move_when_it_appears() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let mut o = opts(FAST_FAILOVER);
    o.capacities = vec![3, 3];
    let mut router = Router::start(&refs, o.clone());
    for i in 0..6 {
        create(&router, &format!("/api/bot/connect/to/r{i}.example.com"));
    }
    nodes[0].kill();
    router.wait_until(10, "node-0's bots to show as connecting", |r| {
        r.bot_list().iter().filter(|b| b["Status"] == 1).count() == 3
    });
    // From here failover tries after `after_ms: 300` and again every `retry_ms: 500`: 15
    // polls at `poll_ms: 100` (1.5 s) cover the first try and two retries.
    for_polls(&nodes[1], 15, "no room: nothing moved", || {
        nodes[1].bots().len() == 3
    });
    // Raise node-1's capacity (a config change and restart).
    o.capacities = vec![3, 6];
    router.stop();
    router.write_config(&refs, &o);
    router.spawn();
    router.wait_until(15, "the stranded bots on node-1", |_| {
        nodes[1].bots().len() == 6
    });
}

/// A node that answers but refuses (here: every answer a 500) is down for routing but not
/// dead: its bots keep running there, so failover must not start them a second time. A third
/// node that really dies at the same time is evacuated: that failover has run, and acted,
/// while the refusing node was down.
#[test]
fn a_node_that_answers_but_refuses_is_not_evacuated() {
    let nodes: Vec<FakeNode> = (0..3).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(&refs, opts("failover: { after_ms: 0, retry_ms: 200 }\n"));
    for i in 0..6 {
        create(&router, &format!("/api/bot/connect/to/f{i}.example.com"));
    }
    let (healthy, sick, dead) = (0, 1, 2);
    let keys = |n: &FakeNode| -> HashSet<String> {
        n.bots().into_iter().map(|b| b.identity_key).collect()
    };
    let (healthy_keys, sick_keys, dead_keys) = (
        keys(&nodes[healthy]),
        keys(&nodes[sick]),
        keys(&nodes[dead]),
    );
    assert!(
        !sick_keys.is_empty() && !dead_keys.is_empty(),
        "{sick_keys:?} {dead_keys:?}"
    );
    // Failover needs the dead node's identities (read in the background after each create).
    let reads: Vec<String> = nodes[dead]
        .bots()
        .iter()
        .map(|b| identity_read(b.id))
        .collect();
    wait_for_requests(&nodes[dead], 10, "the identity reads", &reads);
    nodes[sick].set_fault(Some(Fault::Status500));
    router.wait_until(5, "the refusing node to be marked down", |r| {
        r.bot_list().iter().filter(|b| b["Status"] == 1).count() == sick_keys.len()
    });
    nodes[dead].kill();
    // Generous: under a loaded machine a rebuild can time out once and be retried.
    wait_for(
        30,
        "the dead node's bots running on the healthy node",
        || keys(&nodes[healthy]).is_superset(&dead_keys),
    );
    // No identity of the refusing node runs anywhere else (the dead node's state is still
    // readable: it only stopped listening).
    for i in [healthy, dead] {
        let twice: Vec<String> = keys(&nodes[i]).intersection(&sick_keys).cloned().collect();
        assert!(
            twice.is_empty(),
            "a refusing node's bots were started again on node-{i}: {twice:?}"
        );
    }
    assert_eq!(
        keys(&nodes[healthy]),
        &healthy_keys | &dead_keys,
        "the healthy node runs its own bots and the dead node's"
    );
    assert_eq!(keys(&nodes[sick]), sick_keys, "its bots keep running there");
}

/// A frozen node that runs again while failover moves its bots: its bots rejoin their
/// servers at once, so failover starts no further copy once the node answers (it asks the
/// node all along), not even the one whose template it was writing: every bot stays where
/// it runs, no identity runs twice, and the half-done copy's template is removed.
#[test]
fn failover_stops_moving_bots_once_their_node_answers_again() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let router = Router::start(
        &refs,
        opts("failover: { after_ms: 300, retry_ms: 500, concurrency: 1 }\n"),
    );
    for i in 0..12 {
        create(&router, &format!("/api/bot/connect/to/f{i}.example.com"));
    }
    let frozen = &nodes[0];
    let before: Vec<FakeBot> = frozen.bots();
    assert!(before.len() >= 5, "{before:?}");
    let reads: Vec<String> = before.iter().map(|b| identity_read(b.id)).collect();
    wait_for_requests(frozen, 10, "the identity reads", &reads);

    // Frozen: every answer waits. Each rebuild on the other node takes 400 ms at least.
    nodes[1].set_latency_on(Duration::from_millis(400), "settings/create/");
    frozen.hold("/api/");
    router.wait_until(20, "failover's first rebuild", |_| {
        targets(&nodes[1])
            .iter()
            .any(|t| t.starts_with("/api/settings/create/"))
    });
    frozen.release();

    let keys = |n: &FakeNode| -> HashSet<String> {
        n.bots().into_iter().map(|b| b.identity_key).collect()
    };
    let original: HashSet<String> = before.iter().map(|b| b.identity_key.clone()).collect();
    router.wait_until(20, "the end of the failover", |r| {
        r.stderr_text().contains("failover of node node-0: moved")
    });
    // Settled: every identity of the frozen node runs exactly once, and the node is fenced.
    router.wait_until(20, "each identity running once", |_| {
        let (a, b) = (keys(&nodes[0]), keys(&nodes[1]));
        original.iter().all(|k| a.contains(k) != b.contains(k))
    });
    // The rebuild under way when the node answered is not started either (its template was
    // written on the other node, its connect not sent): every bot stayed.
    let stayed = original.intersection(&keys(&nodes[0])).count();
    assert_eq!(
        stayed,
        original.len(),
        "failover went on after the node answered"
    );
    let left: Vec<String> = nodes[1]
        .templates()
        .into_iter()
        .filter(|t| t.starts_with("ts3ab-lb-"))
        .collect();
    assert!(
        left.is_empty(),
        "the undone rebuild left templates: {left:?}"
    );
}

/// Two nodes and a router that fails over one bot at a time, with `n` bots created through it
/// (`<prefix><i>.example.com`) and the identities of node-0's bots read. Returns the sorted
/// cluster ids and node-0's identity keys.
fn two_nodes_one_rebuild_at_a_time(
    n: usize,
    prefix: &str,
) -> (Vec<FakeNode>, Router, Vec<u64>, HashSet<String>) {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let router = Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        opts("failover: { after_ms: 300, retry_ms: 500, concurrency: 1 }\n"),
    );
    let mut gids: Vec<u64> = (0..n)
        .map(|i| {
            create(
                &router,
                &format!("/api/bot/connect/to/{prefix}{i}.example.com"),
            )
        })
        .collect();
    gids.sort_unstable();
    let before: Vec<FakeBot> = nodes[0].bots();
    assert!(before.len() >= 2, "{before:?}");
    let reads: Vec<String> = before.iter().map(|b| identity_read(b.id)).collect();
    wait_for_requests(&nodes[0], 10, "the identity reads", &reads);
    let original = before.iter().map(|b| b.identity_key.clone()).collect();
    (nodes, router, gids, original)
}

/// Freezes node-0 (every answer held) and holds node-1's answers to `bot connect template`
/// (the copy runs, its connect has not answered); returns once failover's first copy is
/// being started there.
fn freeze_until_the_first_copy_starts(nodes: &[FakeNode], router: &Router) {
    nodes[1].hold("/api/bot/connect/template/");
    nodes[0].hold("/api/");
    router.wait_until(20, "the first copy's connect", |_| nodes[1].held() > 0);
}

/// Every identity key a node runs (a key twice if it runs twice).
fn keys(n: &FakeNode) -> Vec<String> {
    n.bots().into_iter().map(|b| b.identity_key).collect()
}

/// Waits until the router's `bot/list` shows exactly `gids`, each once.
fn wait_for_ids(router: &Router, gids: &[u64]) {
    router.wait_until(20, "the cluster's list", |r| {
        let mut ids: Vec<u64> = r
            .get("/api/bot/list")
            .json()
            .as_array()
            .map(|l| l.iter().filter_map(|b| b["Id"].as_u64()).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids == gids
    });
}

/// The identity keys node-1 runs that it did not run in `before`.
fn new_on_other(nodes: &[FakeNode], before: &[String]) -> Vec<String> {
    keys(&nodes[1])
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect()
}

/// A node that answers again while one of its bots' copies is inside `bot connect` on
/// another node (the copy may have joined its server already, and the old copy rejoins a
/// moment later): that bot moves all the same, and its old copy is stopped while the connect
/// is still answering, not once it has answered.
#[test]
fn a_copy_being_started_when_its_node_answers_again_takes_over_and_the_old_one_stops_at_once() {
    let (nodes, router, gids, original) = two_nodes_one_rebuild_at_a_time(8, "c");
    let on_other_before = keys(&nodes[1]);
    freeze_until_the_first_copy_starts(&nodes, &router);
    let moving = new_on_other(&nodes, &on_other_before);
    assert_eq!(moving.len(), 1, "one copy is being started: {moving:?}");
    let moving = moving[0].clone();
    assert!(original.contains(&moving));
    nodes[0].release();

    // The old copy stops while the connect is still held.
    router.wait_until(10, "the old copy stopped during the connect", |_| {
        !keys(&nodes[0]).contains(&moving)
    });
    assert_eq!(nodes[1].held(), 1, "the connect is still held");
    nodes[1].release();
    router.wait_until(20, "the end of the failover", |r| {
        r.stderr_text().contains("failover of node node-0: moved")
    });
    // Settled: every identity runs once; only the bot being started moved.
    router.wait_until(20, "each identity running once", |_| {
        let (a, b) = (keys(&nodes[0]), keys(&nodes[1]));
        original.iter().all(|k| a.contains(k) != b.contains(k))
    });
    let (a, b) = (keys(&nodes[0]), keys(&nodes[1]));
    assert!(b.contains(&moving) && !a.contains(&moving));
    assert_eq!(
        original.iter().filter(|k| a.contains(k)).count(),
        original.len() - 1,
        "the bots not started elsewhere stay"
    );
    wait_for_ids(&router, &gids);
}

/// The same, but the connect of the copy being started never answers in time (the router's
/// request deadline passes) while the copy runs: that copy is the bot, recorded under its
/// cluster id, not a stranger next to a second start of the same template.
#[test]
fn a_handed_over_copy_whose_connect_times_out_is_still_the_bot() {
    let (nodes, router, gids, original) = two_nodes_one_rebuild_at_a_time(6, "d");
    let on_other_before = keys(&nodes[1]);
    freeze_until_the_first_copy_starts(&nodes, &router);
    nodes[0].release();
    // The connect stays held past the router's 5 s request deadline.
    router.wait_until(20, "the connect's deadline", |r| {
        r.stderr_text().contains("failover of node node-0: moved")
    });
    nodes[1].release();
    let moving = new_on_other(&nodes, &on_other_before);
    assert_eq!(moving.len(), 1, "one copy runs, once: {moving:?}");
    assert!(original.contains(&moving[0]));
    // Settled: every identity once, across both nodes; the cluster ids unchanged.
    router.wait_until(20, "each identity running once", |_| {
        let (a, b) = (keys(&nodes[0]), keys(&nodes[1]));
        original
            .iter()
            .all(|k| a.iter().chain(&b).filter(|x| *x == k).count() == 1)
    });
    wait_for_ids(&router, &gids);
    assert!(
        !router
            .stderr_text()
            .contains("waits there for failover's restore"),
        "the running copy was taken for a failed start"
    );
}
