//! Secrets at rest (issue 11 point 5): with `secrets.key_file` set, a copy of the store alone
//! (the embedded redb file, every MongoDB document) holds none of the secrets the router
//! keeps — TeamSpeak identity keys, server passwords, node tokens, agent tokens — while the
//! router started again with the key works on; a wrong or missing key stops the start with a
//! message naming the keys.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const SERVER_PASSWORD: &str = "server-pw-7f3a9c";
const AGENT_TOKEN: &str = "agent-token-51be08";

/// Runs `serve` with `config` and expects it to exit (within 20 s) with an error; its stderr.
fn refused_start(config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
                .expect("stderr");
            assert!(!status.success(), "the router started: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the router neither started nor exited within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the router keeps that is secret, after a workload: a bot created with a server
/// password, its identity read from the node, a node added at run time with its token and an
/// agent token. Returns the secrets to look for and a value that must be readable.
fn workload(router: &Router, nodes: &[&FakeNode], spare: &FakeNode) -> Vec<String> {
    let r = router.get(&format!(
        "/api/bot/connect/to/s1.example.com/{SERVER_PASSWORD}"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = router.get("/api/bot/connect/to/s2.example.com");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = router.admin_request(
        "POST",
        "/admin/api/nodes",
        Some(&json!({
            "name": "spare",
            "url": spare.url(),
            "auth": node_token(9),
            "agent": {"url": "http://127.0.0.1:9", "token": AGENT_TOKEN},
        })),
    );
    assert!(r.status < 300, "{}", r.text());
    // The router reads each new bot's identity once; wait until it has asked for both.
    for n in nodes {
        for b in n.bots() {
            wait_for(10, "the identity read", || {
                targets(n).contains(&identity_read(b.id))
            });
        }
    }
    let mut secrets = vec![
        SERVER_PASSWORD.to_string(),
        AGENT_TOKEN.to_string(),
        node_token(9).split(':').nth(1).expect("token").to_string(),
    ];
    for n in nodes {
        for b in n.bots() {
            assert!(b.identity_key.len() > 20, "a real identity key");
            secrets.push(b.identity_key.clone());
        }
    }
    secrets
}

fn assert_none_in(what: &str, hay: &[u8], secrets: &[String], readable: &str) {
    let has = |s: &str| hay.windows(s.len()).any(|w| w == s.as_bytes());
    // The check reads what it claims to: the store's ordinary data is there in the clear.
    assert!(has(readable), "{what} does not even hold `{readable}`");
    for s in secrets {
        assert!(!has(s), "{what} holds the secret {s}");
    }
}

fn raw_files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).expect("data dir") {
        let p = e.expect("entry").path();
        if p.is_file() {
            all.extend(std::fs::read(&p).expect("read"));
        }
    }
    all
}

fn with_secrets(router: &mut Router, nodes: &[&FakeNode], opts: &RouterOpts, secrets: &str) {
    let mut o = opts.clone();
    o.extra_yaml = format!("{}{secrets}\n", opts.extra_yaml);
    router.write_config(nodes, &o);
}

#[test]
fn the_embedded_store_file_holds_no_secret_and_a_wrong_key_is_refused() {
    let n0 = fake_node(0);
    let spare = fake_node_with(1, |c| c.auth = Some(node_token(9)));
    let keys = tempfile::tempdir().expect("tempdir");
    let (k1, k2) = (keys.path().join("k1"), keys.path().join("k2"));
    new_secrets_key(&k1);
    new_secrets_key(&k2);
    let opts = RouterOpts {
        admin: true,
        extra_yaml: format!("secrets: {{ key_file: \"{}\" }}\n", k1.display()),
        ..RouterOpts::default()
    };
    let mut router = Router::start(&[&n0], opts.clone());
    let secrets = workload(&router, &[&n0], &spare);
    router.stop();
    assert_none_in(
        "the redb file",
        &raw_files(&router.data),
        &secrets,
        "s1.example.com",
    );

    // Started again with the key: everything is there (both bots route by their ids).
    router.spawn();
    let ids: Vec<u64> = router
        .bot_list()
        .iter()
        .filter_map(|b| b["Id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in ids {
        let r = router.get(&format!("/api/bot/use/{id}/(/bot/info)"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    router.stop();

    // A wrong key, and no key at all: the start is refused, naming what is wrong.
    with_secrets(
        &mut router,
        &[&n0],
        &RouterOpts {
            extra_yaml: String::new(),
            ..opts.clone()
        },
        &format!("secrets: {{ key_file: \"{}\" }}", k2.display()),
    );
    let err = refused_start(&router.config);
    assert!(
        err.contains("sealed with key") && err.contains("the configured secrets key is"),
        "{err}"
    );
    with_secrets(
        &mut router,
        &[&n0],
        &RouterOpts {
            extra_yaml: String::new(),
            ..opts.clone()
        },
        "",
    );
    let err = refused_start(&router.config);
    assert!(err.contains("no secrets key is configured"), "{err}");

    // Rotation: rekey to k2, then k2 opens the store and k1 no longer does.
    with_secrets(&mut router, &[&n0], &opts, "");
    let out = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["store", "rekey", "--config"])
        .arg(&router.config)
        .arg("--new-key-file")
        .arg(&k2)
        .output()
        .expect("rekey");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = refused_start(&router.config);
    assert!(err.contains("sealed with key"), "k1 opens no more: {err}");
    with_secrets(
        &mut router,
        &[&n0],
        &RouterOpts {
            extra_yaml: String::new(),
            ..opts.clone()
        },
        &format!("secrets: {{ key_file: \"{}\" }}", k2.display()),
    );
    router.spawn();
    assert_eq!(router.bot_list().len(), 2);
    router.stop();

    // What was sealed opens to what the bots need: the node dies, failover rebuilds both bots
    // on the other nodes (node-2 or the spare) from the (rekeyed) store, identity and server
    // password included.
    let before = n0.bots();
    // Listed second, so the harness gives it the second node's token.
    let n2 = fake_node_with(2, |c| c.auth = Some(node_token(1)));
    with_secrets(
        &mut router,
        &[&n0, &n2],
        &RouterOpts {
            extra_yaml: "failover: { after_ms: 300, retry_ms: 500 }\n".into(),
            poll_ms: 100,
            ..opts.clone()
        },
        &format!("secrets: {{ key_file: \"{}\" }}", k2.display()),
    );
    router.spawn();
    n0.kill();
    let elsewhere = || {
        let mut b = n2.bots();
        b.extend(spare.bots());
        b
    };
    router.wait_until(20, "both bots rebuilt elsewhere", |_| {
        elsewhere().len() == 2
    });
    for was in &before {
        let now = elsewhere()
            .into_iter()
            .find(|b| b.identity_key == was.identity_key)
            .expect("the same identity runs on another node");
        assert_eq!(now.server_password, was.server_password);
        assert_eq!(now.server, was.server);
    }
    router.stop();
}

#[test]
fn mongodb_documents_hold_no_secret() {
    let uri = support::mongo::uri();
    let db = support::mongo::database("sealed");
    let n0 = fake_node(0);
    let spare = fake_node_with(1, |c| c.auth = Some(node_token(9)));
    let keys = tempfile::tempdir().expect("tempdir");
    let k = keys.path().join("k");
    new_secrets_key(&k);
    // First without a key (every record, bot slot copies included, in plain text), then
    // started with one: what was written before is sealed at that start.
    let plain = RouterOpts {
        admin: true,
        storage: Some(format!(
            "{{ kind: mongodb, uri: \"{uri}\", database: \"{db}\", sync_interval_ms: 200 }}"
        )),
        ..RouterOpts::default()
    };
    let mut router = Router::start(&[&n0], plain.clone());
    let secrets = workload(&router, &[&n0], &spare);
    router.stop();
    let sealed = RouterOpts {
        extra_yaml: format!("secrets: {{ key_file: \"{}\" }}\n", k.display()),
        ..plain
    };
    router.write_config(&[&n0], &sealed);
    router.spawn();
    assert_eq!(router.bot_list().len(), 2);
    router.stop();

    let dump = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let client = ::mongodb::Client::with_uri_str(&uri).await.expect("client");
            let database = client.database(&db);
            let mut all = String::new();
            for name in database.list_collection_names().await.expect("collections") {
                let mut cursor = database
                    .collection::<bson::Document>(&name)
                    .find(bson::doc! {})
                    .await
                    .expect("find");
                while cursor.advance().await.expect("next") {
                    let doc = cursor.deserialize_current().expect("doc");
                    all.push_str(&bson::Bson::Document(doc).into_relaxed_extjson().to_string());
                    all.push('\n');
                }
            }
            all
        });
    assert_none_in(
        "the MongoDB documents",
        dump.as_bytes(),
        &secrets,
        "s1.example.com",
    );
}
