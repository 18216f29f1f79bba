//! One conformance suite for every [`Store`]: each check is a function over a store factory,
//! run against the embedded redb store and against [`MongoStore`] (on nx-27017, or on the
//! server `TS3AB_LB_TEST_MONGODB_URI` names). Checks that need two routers on one database
//! (the change feed, two writers racing) run on MongoDB only; where the embedded store has an
//! equivalent (two clones of one handle) they run on both.
//!
//! Every test gets its own database (or directory), so they run in parallel.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ts3ab_lb::store::embedded::EmbeddedStore;
use ts3ab_lb::store::mongo::MongoStore;
use ts3ab_lb::store::{
    AgentRecord, AuditRecord, BotRecord, Change, Claim, FenceRecord, Identity, KeyRecord,
    NodeRecord, NodeState, Op, OperationRecord, Role, Scope, Snapshot, Store, StoreError,
    StoreHandle, TemplateRecord,
};

use support::mongo;

const T: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Embedded,
    Mongo,
}

/// Where one test's stores live: a directory or a database.
struct Env {
    kind: Kind,
    dir: tempfile::TempDir,
    uri: String,
    db: String,
}

impl Env {
    fn new(kind: Kind, test: &str) -> Env {
        Env {
            kind,
            dir: tempfile::tempdir().expect("tempdir"),
            uri: if kind == Kind::Mongo {
                mongo::uri()
            } else {
                String::new()
            },
            db: mongo::database(test),
        }
    }

    /// A store as router `router` (the embedded file admits one at a time).
    async fn open(&self, router: &str) -> Box<dyn Store> {
        match self.kind {
            Kind::Embedded => Box::new(EmbeddedStore::open(self.dir.path()).expect("open")),
            Kind::Mongo => Box::new(
                MongoStore::open(&self.uri, &self.db, router)
                    .await
                    .expect("open"),
            ),
        }
    }

    /// `n` handles as `n` routers would have them: for MongoDB each on its own store (its
    /// own client and router id); for the embedded file clones of one handle (one router).
    fn handles(&self, n: usize) -> Vec<StoreHandle> {
        match self.kind {
            Kind::Embedded => {
                let h = StoreHandle::spawn(Box::new(
                    EmbeddedStore::open(self.dir.path()).expect("open"),
                ))
                .expect("spawn");
                vec![h; n]
            }
            Kind::Mongo => (0..n)
                .map(|i| {
                    let (uri, db) = (self.uri.clone(), self.db.clone());
                    StoreHandle::open(move || async move {
                        let s = MongoStore::open(&uri, &db, &format!("router-{i}")).await?;
                        Ok::<Box<dyn Store>, StoreError>(Box::new(s))
                    })
                    .expect("open")
                })
                .collect(),
        }
    }
}

/// Generates `embedded::NAME` and `mongo::NAME` for each check.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::new(super::Kind::Embedded, stringify!($name))).await
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::new(super::Kind::Mongo, stringify!($name))).await
                }
            )*
        }
    };
}

conformance!(
    every_record_and_op_round_trips_and_survives_a_reopen,
    a_batch_is_applied_in_order,
    reserved_ids_are_disjoint_and_increasing_across_routers,
    the_high_water_mark_is_respected,
    leases_are_exclusive_until_they_expire,
    a_bot_instance_is_claimed_once,
    concurrent_claims_of_one_instance_have_one_winner,
    a_template_name_is_claimed_once,
    clear_removes_everything,
    a_bot_patch_applies_only_where_the_bot_still_runs,
);

// === records ===

fn bot(id: u32, node: &str, local_id: u32, started: Option<&str>) -> BotRecord {
    BotRecord {
        id,
        node: node.into(),
        local_id,
        template: Some(format!("tpl-{id}")),
        address: Some("ts.example.com".into()),
        server_password: Some("pw".into()),
        channel: Some("/5".into()),
        nickname: Some(format!("bot {id}")),
        identity: Some(Identity {
            key: "KEY".into(),
            offset: 12345678901,
            level: -1,
        }),
        created_ms: 1_700_000_000_000 + u64::from(id),
        node_started: started.map(str::to_string),
        // The key that made it (tenants see only their own bots).
        owner: Some(format!("tenant-{id}")),
    }
}

fn template(name: &str, node: &str, setting: &str) -> TemplateRecord {
    TemplateRecord {
        name: name.into(),
        node: node.into(),
        // Dotted keys, as the real settings paths are.
        settings: [
            ("connect.name".to_string(), setting.to_string()),
            ("audio.volume.default".to_string(), "30".to_string()),
        ]
        .into(),
        identity: None,
        owner: Some("tenant-a".into()),
    }
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        url: format!("http://{name}:58913"),
        auth: Some("uid:token".into()),
        capacity: 7,
        draining: false,
        state: NodeState::Maint,
        from_config: true,
        agent: Some(Some(AgentRecord {
            url: format!("http://{name}:58915"),
            token: Some("agent-token".into()),
        })),
        ca_file: None,
        tls_host: None,
    }
}

fn key(name: &str) -> KeyRecord {
    KeyRecord {
        name: name.into(),
        secret: None,
        digest: Some("00ff".into()),
        role: Role::Admin,
        created_ms: 5,
        last_used_ms: Some(6),
        scope: Scope::Own,
        max_bots: Some(3),
        allow_from: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
    }
}

fn fence(node: &str, bot: u32) -> FenceRecord {
    FenceRecord {
        node: node.into(),
        bot,
        local_id: 3,
        template: Some("t".into()),
        address: None,
    }
}

fn audit(seq: u64) -> AuditRecord {
    AuditRecord {
        seq,
        at_ms: 1000 + seq,
        who: "ops".into(),
        from: "127.0.0.1".into(),
        action: "POST /admin/api/nodes".into(),
        target: Some("n1".into()),
        status: 201,
        outcome: "added".into(),
    }
}

fn operation(id: u64) -> OperationRecord {
    OperationRecord {
        id,
        data: serde_json::json!({"kind": "evacuate", "legs": {"5": {"from": "a", "to": ["b"]}}, "done": 0.5}),
    }
}

// === checks ===

/// Every record kind and every op (puts, deletes, the id mark, audit, operations) is stored
/// and read back exactly, also by a store opened afresh (a router restart).
async fn every_record_and_op_round_trips_and_survives_a_reopen(env: Env) {
    let ops = vec![
        Op::PutBot(bot(1, "n1", 0, Some("T1"))),
        Op::PutBot(bot(2, "n1", 1, None)),
        Op::PutBot(bot(3, "n/2", 0, Some("T1"))),
        Op::DeleteBot(1),
        Op::PutTemplate(template("a", "n1", "A")),
        Op::PutTemplate(template("b", "n1", "B")),
        Op::DeleteTemplate("b".into()),
        Op::PutNode(node("n1")),
        Op::PutNode(node("n9")),
        Op::DeleteNode("n9".into()),
        Op::PutKey(key("k1")),
        Op::PutKey(key("k2")),
        Op::DeleteKey("k1".into()),
        Op::PutFence(fence("n1", 4)),
        Op::PutFence(fence("n1", 5)),
        Op::PutFence(fence("n:2", 4)),
        Op::DeleteFence("n1".into(), 4),
        Op::RaiseIdHighWater(100),
        Op::RaiseIdHighWater(50),
        Op::PutAudit(audit(1)),
        Op::PutAudit(audit(2)),
        Op::PutOperation(operation(1)),
        Op::PutOperation(operation(2)),
        Op::DeleteOperation(1),
    ];
    let want = Snapshot {
        bots: vec![bot(2, "n1", 1, None), bot(3, "n/2", 0, Some("T1"))],
        templates: vec![template("a", "n1", "A")],
        nodes: vec![node("n1")],
        keys: vec![key("k2")],
        fences: vec![fence("n1", 5), fence("n:2", 4)],
        audit: vec![audit(1), audit(2)],
        operations: vec![operation(2)],
        id_high_water: 100,
    };
    {
        let s = env.open("r1").await;
        s.apply(&ops).await.expect("apply");
        assert_eq!(s.load().await.expect("load"), want);
    }
    let s = env.open("r1").await;
    let got = s.load().await.expect("load after reopen");
    assert_eq!(got, want);
    // KeyRecord's Debug hides its fields: compare them one by one too.
    assert_eq!(got.keys[0].digest.as_deref(), Some("00ff"));
    assert_eq!(got.keys[0].last_used_ms, Some(6));
}

/// Ops on one record within one batch take effect in order: the last one wins.
async fn a_batch_is_applied_in_order(env: Env) {
    let s = env.open("r1").await;
    let mut b1 = bot(1, "n1", 0, None);
    b1.nickname = Some("second".into());
    s.apply(&[
        Op::PutBot(bot(1, "n1", 0, None)),
        Op::PutBot(b1.clone()),
        Op::PutBot(bot(2, "n1", 1, None)),
        Op::DeleteBot(2),
        Op::DeleteBot(3),
        Op::PutBot(bot(3, "n1", 2, None)),
        Op::PutTemplate(template("t", "n1", "x")),
        Op::DeleteTemplate("t".into()),
        Op::PutTemplate(template("t", "n2", "y")),
        Op::PutKey(key("k")),
        Op::DeleteKey("k".into()),
    ])
    .await
    .expect("apply");
    let snap = s.load().await.expect("load");
    assert_eq!(snap.bots, vec![b1, bot(3, "n1", 2, None)]);
    assert_eq!(snap.templates, vec![template("t", "n2", "y")]);
    assert!(snap.keys.is_empty());
}

/// Ids reserved by several routers at once never overlap, and each router's answers grow.
async fn reserved_ids_are_disjoint_and_increasing_across_routers(env: Env) {
    let handles = env.handles(2);
    let mut tasks = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for n in 0..40u32 {
                let count = 1 + (n + i as u32) % 5;
                let first = h.reserve_ids(count, T).await.expect("reserve");
                got.push((first, count));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.expect("task");
        assert!(
            got.windows(2).all(|w| w[1].0 >= w[0].0 + w[0].1),
            "one router's reservations grow: {got:?}"
        );
        all.extend(got);
    }
    let mut ids = BTreeSet::new();
    for (first, count) in &all {
        for id in *first..first + count {
            assert!(ids.insert(id), "id {id} reserved twice: {all:?}");
        }
    }
}

/// A reservation never starts below the stored high-water mark, the mark never goes down,
/// and it covers what was reserved.
async fn the_high_water_mark_is_respected(env: Env) {
    let s = env.open("r1").await;
    let a = s.reserve_ids(3).await.expect("reserve");
    s.apply(&[Op::RaiseIdHighWater(500)]).await.expect("raise");
    let b = s.reserve_ids(10).await.expect("reserve");
    assert!(b >= 500, "{b}");
    assert!(b >= a + 3);
    s.apply(&[Op::RaiseIdHighWater(20)]).await.expect("lower");
    let c = s.reserve_ids(1).await.expect("reserve");
    assert!(c >= b + 10, "a lower mark does not lower the counter: {c}");
    let snap = s.load().await.expect("load");
    assert!(snap.id_high_water > c, "{}", snap.id_high_water);
}

/// A lease is held by one holder at a time: renewable by it, refused to others while it is
/// valid, taken over once it expired, and free again once released.
async fn leases_are_exclusive_until_they_expire(env: Env) {
    let handles = env.handles(2);
    let (a, b) = (&handles[0], &handles[1]);
    let ttl = Duration::from_millis(1500);
    assert!(a.acquire_lease("poller", "A", ttl, T).await.expect("a"));
    assert!(a.acquire_lease("poller", "A", ttl, T).await.expect("renew"));
    assert!(!b.acquire_lease("poller", "B", ttl, T).await.expect("b"));
    // Only the holder can release it.
    b.release_lease("poller", "B", T).await.expect("release");
    assert!(!b.acquire_lease("poller", "B", ttl, T).await.expect("b"));
    // Another name is independent.
    assert!(b.acquire_lease("other", "B", ttl, T).await.expect("other"));
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert!(b
        .acquire_lease("poller", "B", ttl, T)
        .await
        .expect("expired"));
    assert!(!a
        .acquire_lease("poller", "A", ttl, T)
        .await
        .expect("a lost it"));
    b.release_lease("poller", "B", T).await.expect("release");
    assert!(a.acquire_lease("poller", "A", ttl, T).await.expect("free"));
}

/// The first claim of a bot instance wins; a second (another id) loses and gets the winner's
/// record; a delete frees the key; a late delete of a former holder cannot free a key another
/// bot holds; a new node start time is another instance; a move frees the old slot and takes
/// the new one.
async fn a_bot_instance_is_claimed_once(env: Env) {
    let s = env.open("r1").await;
    let b1 = bot(1, "n1", 0, Some("T1"));
    assert_eq!(s.claim_bot(&b1).await.expect("claim"), Claim::Won);
    assert_eq!(s.load().await.expect("load").bots, vec![b1.clone()]);
    // Claiming again with the same id (an update) still wins.
    assert_eq!(s.claim_bot(&b1).await.expect("again"), Claim::Won);
    let b2 = bot(2, "n1", 0, Some("T1"));
    assert_eq!(
        s.claim_bot(&b2).await.expect("second"),
        Claim::Lost(b1.clone())
    );
    assert_eq!(s.load().await.expect("load").bots, vec![b1.clone()]);

    s.apply(&[Op::DeleteBot(1)]).await.expect("delete");
    assert_eq!(s.claim_bot(&b2).await.expect("free"), Claim::Won);
    // A slow router deletes bot 1 again: the key now names bot 2 and stays taken.
    s.apply(&[Op::DeleteBot(1)]).await.expect("late delete");
    let b3 = bot(3, "n1", 0, Some("T1"));
    assert_eq!(
        s.claim_bot(&b3).await.expect("third"),
        Claim::Lost(b2.clone())
    );

    // The node restarted: the same slot under a new start time is a new bot.
    let b4 = bot(4, "n1", 0, Some("T2"));
    assert_eq!(s.claim_bot(&b4).await.expect("restart"), Claim::Won);
    // No start time known is an instance of its own, too.
    let b5 = bot(5, "n1", 0, None);
    assert_eq!(s.claim_bot(&b5).await.expect("no start time"), Claim::Won);

    // Bot 2 moves to slot 7: its old slot is free, the new one is taken.
    let moved = bot(2, "n1", 7, Some("T1"));
    s.apply(&[Op::PutBot(moved.clone())]).await.expect("move");
    assert_eq!(s.claim_bot(&b3).await.expect("old slot"), Claim::Won);
    assert_eq!(
        s.claim_bot(&bot(6, "n1", 7, Some("T1")))
            .await
            .expect("new slot"),
        Claim::Lost(moved)
    );
}

/// Two routers that first see one bot instance at the same time: exactly one wins, the other
/// gets the winner's record.
async fn concurrent_claims_of_one_instance_have_one_winner(env: Env) {
    let handles = env.handles(2);
    for round in 0..5u32 {
        let mut tasks = Vec::new();
        for (i, h) in handles.iter().enumerate() {
            let h = h.clone();
            let b = bot(100 * round + i as u32, "n1", round, Some("T1"));
            tasks.push(tokio::spawn(async move {
                (b.clone(), h.claim_bot(b, T).await.expect("claim"))
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, c)| *c == Claim::Won)
            .map(|(b, _)| b.clone())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, c) in &results {
            if let Claim::Lost(rec) = c {
                assert_eq!(rec, &winners[0]);
            }
        }
    }
}

/// A template name is held by one record: a claim from another node, or from the same node,
/// loses to it (and never overwrites its settings), and a deleted name can be claimed again.
async fn a_template_name_is_claimed_once(env: Env) {
    let s = env.open("r1").await;
    let a = template("music", "n1", "A");
    assert_eq!(s.claim_template(&a).await.expect("claim"), Claim::Won);
    let b = template("music", "n2", "B");
    assert_eq!(
        s.claim_template(&b).await.expect("other node"),
        Claim::Lost(a.clone())
    );
    // The same node does not overwrite the stored record (its settings stay).
    let a2 = template("music", "n1", "A2");
    assert_eq!(
        s.claim_template(&a2).await.expect("same node"),
        Claim::Lost(a.clone())
    );
    assert_eq!(s.load().await.expect("load").templates, vec![a.clone()]);
    s.apply(&[Op::DeleteTemplate("music".into())])
        .await
        .expect("delete");
    assert_eq!(s.claim_template(&b).await.expect("freed"), Claim::Won);
    assert_eq!(s.load().await.expect("load").templates, vec![b]);
}

/// A patch of a bot's own fields applies while the record places the bot where the patch
/// was made, and is ignored once another writer moved it (it never moves it back).
async fn a_bot_patch_applies_only_where_the_bot_still_runs(env: Env) {
    let s = env.open("r1").await;
    let b = bot(5, "n1", 3, Some("T1"));
    s.apply(&[Op::PutBot(b.clone())]).await.expect("put");
    let patch = |nick: &str| {
        Op::PatchBot(ts3ab_lb::store::BotPatch {
            id: 5,
            node: "n1".into(),
            local_id: 3,
            nickname: Some(nick.into()),
            ..Default::default()
        })
    };
    s.apply(&[patch("Alice")]).await.expect("patch");
    let got = s.load().await.expect("load").bots;
    let mut want = b.clone();
    want.nickname = Some("Alice".into());
    assert_eq!(got, vec![want.clone()]);
    // Moved by another writer: a patch made against the old place changes nothing.
    let moved = BotRecord {
        node: "n2".into(),
        local_id: 0,
        ..want.clone()
    };
    s.apply(&[Op::PutBot(moved.clone())]).await.expect("move");
    s.apply(&[patch("Bob")]).await.expect("stale patch");
    assert_eq!(s.load().await.expect("load").bots, vec![moved]);
    // A patch of a bot that is gone creates nothing.
    s.apply(&[Op::DeleteBot(5), patch("Carol")])
        .await
        .expect("gone");
    assert!(s.load().await.expect("load").bots.is_empty());
}

/// Clearing removes every record, the counters and the leases.
async fn clear_removes_everything(env: Env) {
    let s = env.open("r1").await;
    s.apply(&[
        Op::PutBot(bot(1, "n1", 0, None)),
        Op::PutTemplate(template("t", "n1", "x")),
        Op::PutNode(node("n1")),
        Op::PutKey(key("k")),
        Op::PutFence(fence("n1", 1)),
        Op::PutAudit(audit(1)),
        Op::PutOperation(operation(1)),
        Op::RaiseIdHighWater(77),
    ])
    .await
    .expect("apply");
    s.reserve_ids(5).await.expect("reserve");
    assert!(s
        .acquire_lease("l", "A", Duration::from_secs(60))
        .await
        .expect("lease"));
    s.clear().await.expect("clear");
    assert_eq!(s.load().await.expect("load"), Snapshot::default());
    assert_eq!(s.reserve_ids(1).await.expect("reserve"), 0);
    assert!(s
        .acquire_lease("l", "B", Duration::from_secs(60))
        .await
        .expect("lease"));
    // A cleared bot's claim key is gone too.
    assert_eq!(
        s.claim_bot(&bot(9, "n1", 0, None)).await.expect("claim"),
        Claim::Won
    );
}

// === MongoDB only: several routers on one database ===

fn mongo_env(test: &str) -> Env {
    Env::new(Kind::Mongo, test)
}

/// Sorts changes so two lists compare regardless of collection order.
fn sorted(mut c: Vec<Change>) -> Vec<Change> {
    c.sort_by_key(|c| format!("{c:?}"));
    c
}

/// Router B sees what router A put and deleted, of every synced kind, once each, and never
/// its own writes; audit records are not synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_changes_show_other_routers_writes_once() {
    let env = mongo_env("changes");
    let a = env.open("router-a").await;
    let b = env.open("router-b").await;
    b.load().await.expect("load");
    a.load().await.expect("load");
    assert_eq!(b.changes().await.expect("changes"), vec![]);

    a.apply(&[
        Op::PutBot(bot(1, "n1", 0, None)),
        Op::PutTemplate(template("t", "n1", "x")),
        Op::PutNode(node("n1")),
        Op::PutKey(key("k")),
        Op::PutFence(fence("n:1", 1)),
        Op::PutOperation(operation(1)),
        Op::PutAudit(audit(1)),
        Op::RaiseIdHighWater(10),
    ])
    .await
    .expect("apply");
    let want = sorted(vec![
        Change::Bot(1, Some(bot(1, "n1", 0, None))),
        Change::Template("t".into(), Some(template("t", "n1", "x"))),
        Change::Node("n1".into(), Some(node("n1"))),
        Change::Key("k".into(), Some(key("k"))),
        Change::Fence("n:1".into(), 1, Some(fence("n:1", 1))),
        Change::Operation(1, Some(operation(1))),
    ]);
    assert_eq!(sorted(b.changes().await.expect("changes")), want);
    assert_eq!(b.changes().await.expect("again"), vec![], "each once");
    assert_eq!(a.changes().await.expect("own"), vec![], "never its own");

    // An update is a change again.
    let mut renamed = bot(1, "n1", 0, None);
    renamed.nickname = Some("renamed".into());
    a.apply(&[Op::PutBot(renamed.clone())])
        .await
        .expect("update");
    assert_eq!(
        b.changes().await.expect("changes"),
        vec![Change::Bot(1, Some(renamed))]
    );

    a.apply(&[
        Op::DeleteBot(1),
        Op::DeleteTemplate("t".into()),
        Op::DeleteNode("n1".into()),
        Op::DeleteKey("k".into()),
        Op::DeleteFence("n:1".into(), 1),
        Op::DeleteOperation(1),
    ])
    .await
    .expect("delete");
    let want = sorted(vec![
        Change::Bot(1, None),
        Change::Template("t".into(), None),
        Change::Node("n1".into(), None),
        Change::Key("k".into(), None),
        Change::Fence("n:1".into(), 1, None),
        Change::Operation(1, None),
    ]);
    assert_eq!(sorted(b.changes().await.expect("changes")), want);
    assert_eq!(b.changes().await.expect("again"), vec![]);
    // Deleted records stay deleted for a fresh router.
    let snap = env.open("router-c").await.load().await.expect("load");
    assert!(snap.bots.is_empty() && snap.templates.is_empty() && snap.fences.is_empty());

    // B's own writes are not returned to B, but are to A.
    b.apply(&[Op::PutNode(node("n2"))]).await.expect("b writes");
    assert_eq!(b.changes().await.expect("own"), vec![]);
    assert_eq!(
        a.changes().await.expect("a sees b"),
        vec![Change::Node("n2".into(), Some(node("n2")))]
    );
    // Claims are changes too (they store the record).
    assert_eq!(
        a.claim_bot(&bot(7, "n2", 0, None)).await.expect("claim"),
        Claim::Won
    );
    assert_eq!(
        b.changes().await.expect("claim seen"),
        vec![Change::Bot(7, Some(bot(7, "n2", 0, None)))]
    );
}

/// A writer that took its revision before another writer but wrote after it is still seen
/// (the floor does not pass revisions in flight), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_changes_see_a_writer_that_committed_out_of_order() {
    let env = mongo_env("out_of_order");
    let a = env.open("router-a").await;
    let b = env.open("router-b").await;
    b.load().await.expect("load");
    // The slow writer: takes a revision now, writes later (by hand, as a router would).
    let client = ::mongodb::Client::with_uri_str(&env.uri)
        .await
        .expect("client");
    let db = client.database(&env.db);
    let counters = db.collection::<bson::Document>("counters");
    let slow_rev = counters
        .find_one_and_update(bson::doc! {"_id": "rev"}, bson::doc! {"$inc": {"n": 1i64}})
        .upsert(true)
        .return_document(::mongodb::options::ReturnDocument::After)
        .await
        .expect("rev")
        .and_then(|d| d.get_i64("n").ok().or(d.get_i32("n").ok().map(i64::from)))
        .expect("n");

    // A faster writer takes a later revision and writes first; B sees it.
    a.apply(&[Op::PutNode(node("fast"))]).await.expect("fast");
    assert_eq!(
        b.changes().await.expect("changes"),
        vec![Change::Node("fast".into(), Some(node("fast")))]
    );
    // Now the slow write lands, with its older revision.
    let mut doc = bson::to_document(&node("slow")).expect("bson");
    doc.insert("_id", "slow");
    doc.insert("rev", slow_rev);
    doc.insert("by", "router-slow");
    db.collection::<bson::Document>("nodes")
        .insert_one(doc)
        .await
        .expect("slow write");
    assert_eq!(
        b.changes().await.expect("changes"),
        vec![Change::Node("slow".into(), Some(node("slow")))]
    );
    assert_eq!(b.changes().await.expect("again"), vec![]);
}

/// Open errors say what is wrong: a bad URI (without its password), an unreachable server
/// (naming host:port, within a few seconds), a bad database name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_open_errors_are_clear() {
    let err = MongoStore::open("mongodb://ops:hunter2@", "db", "r")
        .await
        .err()
        .expect("bad uri")
        .to_string();
    assert!(err.contains("invalid MongoDB URI"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let err = MongoStore::open("http://localhost", "db", "r")
        .await
        .err()
        .expect("bad scheme")
        .to_string();
    assert!(err.contains("invalid MongoDB URI"), "{err}");

    let port = support::free_port();
    let started = Instant::now();
    let err = MongoStore::open(
        &format!("mongodb://ops:hunter2@127.0.0.1:{port}/"),
        "db",
        "r",
    )
    .await
    .err()
    .expect("unreachable")
    .to_string();
    assert!(
        err.contains(&format!("cannot reach MongoDB at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let err = MongoStore::open(&mongo::uri(), "bad.name", "r")
        .await
        .err()
        .expect("bad name")
        .to_string();
    assert!(err.contains("may not contain"), "{err}");
}

/// Credentials the server refuses are named as such. nx-27017 has no users: it either
/// accepts any credentials or refuses them; a real MongoDB with authentication refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_refused_credentials_are_named() {
    let base = mongo::uri();
    let Some(rest) = base.strip_prefix("mongodb://") else {
        return;
    };
    if rest.contains('@') {
        // The configured server has its own credentials: spoil the password instead.
        return;
    }
    let uri = format!("mongodb://nobody:wrong-pass@{rest}");
    match MongoStore::open(&uri, &mongo::database("creds"), "r").await {
        Ok(_) => assert!(mongo::is_nx(), "a real MongoDB must refuse unknown users"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("refused the credentials of user nobody"), "{e}");
            assert!(!e.contains("wrong-pass"), "{e}");
        }
    }
}

/// A frozen server (SIGSTOP) is an outage: calls fail within their bounds instead of hanging,
/// `available()` turns false, a write submitted meanwhile is kept, and once the server runs
/// again the write lands and `available()` turns true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_keeps_writes_and_flips_availability() {
    if !mongo::is_nx() {
        // A server we did not start cannot be frozen; this needs nx-27017.
        return;
    }
    let server = Arc::new(mongo::MongoServer::start());
    let (uri, db) = (server.uri(), mongo::database("outage"));
    let h = StoreHandle::open(move || async move {
        let s = MongoStore::open(&uri, &db, "r1").await?;
        Ok::<Box<dyn Store>, StoreError>(Box::new(s))
    })
    .expect("open");
    assert!(h.shared());
    h.commit(vec![Op::PutBot(bot(1, "n1", 0, None))], T)
        .await
        .expect("write");

    server.pause();
    let started = Instant::now();
    let err = h
        .commit(vec![Op::PutNode(node("n1"))], Duration::from_secs(20))
        .await
        .expect_err("the server is frozen");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(!h.available());
    // A write submitted now queues behind the kept batch (a commit would wait for it too,
    // hence `available()`); other calls queue as well, and a caller's deadline still holds.
    h.submit(vec![Op::PutBot(bot(2, "n1", 1, None))]);
    let r = h.reserve_ids(1, Duration::from_millis(300)).await;
    assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");

    server.resume();
    h.flush(Duration::from_secs(30)).await.expect("flush");
    assert!(h.available());
    let snap = h.load().await.expect("load");
    assert_eq!(
        snap.bots.len(),
        2,
        "the write made during the outage landed"
    );
    assert_eq!(snap.nodes, vec![node("n1")]);
}

/// Seats: creates on several routers never fill a node past its capacity. With 3 bots
/// recorded on a node of capacity 5, six creates racing on two routers get at most two seats;
/// a seat given up or lapsed makes room again; a tombstone does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_seats_keep_a_node_within_its_capacity() {
    let env = mongo_env("seats");
    let handles = env.handles(2);
    let ops: Vec<Op> = (0..4)
        .map(|i| Op::PutBot(bot(i, "n1", i, Some("T1"))))
        .chain([Op::DeleteBot(3)])
        .collect();
    handles[0].commit(ops, T).await.expect("bots");
    let ttl = Duration::from_secs(30);
    let tries: Vec<_> = (0..6)
        .map(|i| {
            let h = handles[i % 2].clone();
            tokio::spawn(async move { h.reserve_seat("n1", 5, ttl, T).await })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tries {
        if let Some(seat) = t.await.expect("join").expect("seat") {
            granted.push(seat);
        }
    }
    assert!(
        granted.len() <= 2 && !granted.is_empty(),
        "{} seats on a node with 3 bots and room for 5",
        granted.len()
    );
    // Another node is independent.
    assert!(handles[1]
        .reserve_seat("n2", 1, ttl, T)
        .await
        .expect("n2")
        .is_some());
    // Giving one up makes room again (the release is not awaited: retry briefly).
    let freed = granted.pop().expect("one");
    handles[0].release_seat(freed);
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        if let Some(s) = handles[1]
            .reserve_seat("n1", 5, ttl, T)
            .await
            .expect("again")
        {
            break s;
        }
        assert!(Instant::now() < deadline, "a given-up seat never made room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Room for exactly two again once every seat is given up; a seat that lapses (its
    // router died) stops counting.
    handles[0].release_seat(again);
    for g in granted {
        handles[0].release_seat(g);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let short = loop {
        let s = handles[0]
            .reserve_seat("n1", 5, Duration::from_millis(700), T)
            .await
            .expect("short");
        if let Some(s) = s {
            let long = handles[1]
                .reserve_seat("n1", 5, ttl, T)
                .await
                .expect("long");
            if long.is_some() {
                break s;
            }
            handles[0].release_seat(s);
        }
        assert!(Instant::now() < deadline, "given-up seats never made room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        handles[1]
            .reserve_seat("n1", 5, ttl, T)
            .await
            .expect("full"),
        None,
        "3 bots and 2 seats fill a node of 5"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        handles[1]
            .reserve_seat("n1", 5, ttl, T)
            .await
            .expect("lapsed")
            .is_some(),
        "seat {short} lapsed but still counts"
    );
}

/// An unshared store always grants a seat (one router's placement counts its own creates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_seats_are_always_granted() {
    let env = Env::new(Kind::Embedded, "seats");
    let h = &env.handles(1)[0];
    for _ in 0..3 {
        assert!(h
            .reserve_seat("n1", 1, Duration::from_secs(1), T)
            .await
            .expect("seat")
            .is_some());
    }
}
