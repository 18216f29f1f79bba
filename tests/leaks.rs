//! No leaks (issue 11 point 6): node tokens, TeamSpeak identity keys, server passwords, API key
//! secrets, agent tokens and the store's secrets key never appear in the router's log at
//! `RUST_LOG=trace`, in its metrics, or in any answer to a non-admin — in any of the forms
//! they travel in (as sent, base64 inside an `Authorization` header, percent-encoded inside a
//! request target) — through a mixed workload: creates with server passwords, template bots,
//! settings reads and writes, merges, refused keys, admin changes, a panel login and a
//! failover that rebuilds bots (identity keys and all) on another node.
//!
//! The router runs as its own process here (not the harness's), so every line of its log is
//! kept in a file, not only the tail.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use support::*;

const SERVER_PASSWORD: &str = "srv-pw-9d41c7e2";
const CHANNEL_PASSWORD: &str = "chan-pw-3b8f16aa";
const AGENT_TOKEN: &str = "agent-tok-77e1a0c5";
const WRONG_SECRET: &str = "wrong-secret-5c2e9b";
const SPARE_TOKEN: &str = "router:spare-tok-c0ffee42";

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The forms a secret travels in.
fn forms(secret: &str) -> Vec<String> {
    let mut f = vec![secret.to_string()];
    let pct: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if pct != secret {
        f.push(pct);
    }
    f
}

/// Every place a secret must not be: (what, text).
fn check(places: &[(String, String)], secrets: &[(String, String)]) {
    let mut found = Vec::new();
    for (what, text) in places {
        for (name, secret) in secrets {
            for form in forms(secret) {
                if let Some(at) = text.find(&form) {
                    let line = text[..at].rsplit('\n').next().unwrap_or("");
                    found.push(format!(
                        "{name} in {what}: …{}",
                        &line[line.len().saturating_sub(120)..]
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

fn get(addr: SocketAddr, key: (&str, &str), target: &str) -> Response {
    raw_request(
        addr,
        "GET",
        target.as_bytes(),
        &[("Authorization", &basic(key))],
        None,
    )
}

#[test]
fn no_secret_in_trace_logs_metrics_or_answers_to_non_admins() {
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let spare = fake_node_with(5, |c| c.auth = Some(SPARE_TOKEN.into()));
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("secrets.key");
    new_secrets_key(&key_file);
    let secrets_key = std::fs::read_to_string(&key_file)
        .expect("key")
        .trim()
        .to_string();

    let (port, admin_port) = (free_port(), free_port());
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut yaml = format!(
        "listen: \"{api}\"\nkeys:\n  - {{ name: {}, secret: \"{}\", role: admin }}\n  - {{ name: {}, secret: \"{}\", role: user }}\nnodes:\n",
        ADMIN.0, ADMIN.1, USER.0, USER.1
    );
    for (i, n) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ name: node-{i}, url: \"{}\", auth: \"{}\" }}\n",
            n.url(),
            node_token(i)
        ));
    }
    let d = dir.path();
    yaml.push_str(&format!(
        "storage: {{ kind: embedded, path: \"{}\" }}\nsecrets: {{ key_file: \"{}\" }}\nserver: {{ threads: 2, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1, pid_file: \"{}\", upgrade_sock: \"{}\" }}\nhealth: {{ interval_ms: 100, timeout_ms: 1000, failures_to_down: 2 }}\nfailover: {{ after_ms: 300, retry_ms: 500 }}\nadmin: {{ listen: \"{admin}\" }}\n",
        d.join("data").display(),
        key_file.display(),
        d.join("pid").display(),
        d.join("upgrade.sock").display(),
    ));
    let config = d.join("ts3ab-lb.yaml");
    std::fs::write(&config, yaml).expect("config");
    let log_path = d.join("router.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _router = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("router"),
    };
    wait_for(20, "the router listening", || {
        std::net::TcpStream::connect_timeout(&api, Duration::from_millis(100)).is_ok()
            && std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(100)).is_ok()
    });

    // What non-admins get back, and what admins get (checked for node credentials only: an
    // admin may read identities through settings, as on a node).
    let mut user_answers: Vec<(String, String)> = Vec::new();
    let mut admin_answers: Vec<(String, String)> = Vec::new();
    let mut as_user = |target: &str| {
        let r = get(api, USER, target);
        user_answers.push((format!("the answer to {target}"), r.text()));
        r
    };

    // Creates with passwords, a template bot, settings, merges, reads.
    let r = as_user(&format!(
        "/api/bot/connect/to/pw.example.com/{SERVER_PASSWORD}"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let pw_bot = r.json()["Id"].as_u64().expect("Id");
    assert_eq!(as_user("/api/settings/create/music").status, 204);
    as_user("/api/settings/bot/set/music/connect.address/music.example.com");
    as_user(&format!(
        "/api/settings/bot/set/music/connect.channel_password.pw/{CHANNEL_PASSWORD}"
    ));
    let r = as_user("/api/bot/connect/template/music");
    assert_eq!(r.status, 200, "{}", r.text());
    let music = r.json()["Id"].as_u64().expect("Id");
    for id in [pw_bot, music] {
        as_user(&format!("/api/bot/use/{id}/(/bot/info)"));
        as_user(&format!(
            "/api/bot/use/{id}/(/settings/get/connect.identity)"
        ));
        as_user(&format!("/api/bot/use/{id}/(/settings/get/connect)"));
        as_user(&format!(
            "/api/bot/use/{id}/(/settings/get/connect.server_password)"
        ));
        as_user(&format!(
            "/api/json/merge/(/bot/use/{id}/(/settings/get/connect.identity.key))/(/bot/info/{id})"
        ));
        as_user(&format!("/api/bot/use/{id}/(/bot/name/DJ{id})"));
    }
    as_user("/api/settings/bot/get/music/connect");
    as_user("/api/settings/bot/get/music/connect.identity.key");
    as_user("/api/bot/list");
    as_user("/api/system/info");
    as_user("/api/settings/global/get/web");
    // Refused keys: a wrong secret and a made-up key.
    let r = get(api, (USER.0, WRONG_SECRET), "/api/bot/list");
    user_answers.push(("a refused key's answer".into(), r.text()));
    let r = get(api, ("nobody", WRONG_SECRET), "/api/bot/list");
    user_answers.push(("an unknown key's answer".into(), r.text()));
    let r = raw_request(api, "GET", b"/api/bot/list", &[], None);
    user_answers.push(("an anonymous answer".into(), r.text()));

    // Admin work: a node with a token and an agent token, a new key, lists, the config view,
    // the audit trail, metrics, a panel login (and a failed one).
    let admin_call = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        raw_request(
            admin,
            method,
            path.as_bytes(),
            &[
                ("Authorization", &basic(ADMIN)),
                ("Content-Type", "application/json"),
            ],
            body.as_deref(),
        )
    };
    let r = admin_call(
        "POST",
        "/admin/api/nodes",
        Some(
            json!({"name": "spare", "url": spare.url(), "auth": SPARE_TOKEN,
                    "agent": {"url": "http://127.0.0.1:9", "token": AGENT_TOKEN}}),
        ),
    );
    assert!(r.status < 300, "{}", r.text());
    admin_answers.push(("the node add answer".into(), r.text()));
    let r = admin_call(
        "POST",
        "/admin/api/keys",
        Some(json!({"name": "carol", "role": "user"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let carol_secret = r.json()["secret"].as_str().expect("secret").to_string();
    let r = get(api, ("carol", &carol_secret), "/api/bot/list");
    user_answers.push(("carol's answer".into(), r.text()));
    for path in [
        "/admin/api/nodes",
        "/admin/api/keys",
        "/admin/api/config",
        "/admin/api/audit",
        "/admin/api/bots",
        "/metrics",
    ] {
        let r = admin_call("GET", path, None);
        admin_answers.push((format!("the admin answer to {path}"), r.text()));
    }
    let bad = serde_json::to_vec(&json!({"name": ADMIN.0, "secret": WRONG_SECRET})).expect("json");
    let r = raw_request(admin, "POST", b"/admin/api/login", &[], Some(&bad));
    admin_answers.push(("a failed login".into(), r.text()));
    let good = serde_json::to_vec(&json!({"name": ADMIN.0, "secret": ADMIN.1})).expect("json");
    let r = raw_request(admin, "POST", b"/admin/api/login", &[], Some(&good));
    assert_eq!(r.status, 200, "{}", r.text());
    admin_answers.push(("the login answer".into(), r.text()));

    // The router reads every bot's identity in the background; then the node holding the
    // template dies and failover rebuilds its bots elsewhere, identity keys sent along.
    let all_bots = || -> Vec<ts3ab_fake_node::FakeBot> {
        nodes
            .iter()
            .chain([&spare])
            .flat_map(|n| n.bots())
            .collect()
    };
    let identities: Vec<String> = all_bots().into_iter().map(|b| b.identity_key).collect();
    assert_eq!(identities.len(), 2);
    for n in &nodes {
        for b in n.bots() {
            wait_for(10, "the identity read", || {
                targets(n).contains(&identity_read(b.id))
            });
        }
    }
    let dead = nodes
        .iter()
        .position(|n| n.templates().contains(&"music".to_string()))
        .expect("music somewhere");
    nodes[dead].kill();
    wait_for(20, "the bots rebuilt elsewhere", || {
        let live: Vec<String> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dead)
            .map(|(_, n)| n)
            .chain([&spare])
            .flat_map(|n| n.bots())
            .map(|b| b.identity_key)
            .collect();
        nodes[dead]
            .bots()
            .iter()
            .all(|b| live.contains(&b.identity_key))
    });
    for id in [pw_bot, music] {
        let r = get(
            api,
            USER,
            &format!("/api/bot/use/{id}/(/settings/get/connect)"),
        );
        user_answers.push((format!("bot {id}'s settings after failover"), r.text()));
    }
    let r = admin_call("GET", "/metrics", None);
    let metrics = r.text();

    // The secrets, by name.
    let mut secrets: Vec<(String, String)> = vec![
        ("a server password".into(), SERVER_PASSWORD.into()),
        ("a channel password".into(), CHANNEL_PASSWORD.into()),
        ("the agent token".into(), AGENT_TOKEN.into()),
        ("a wrong secret a client sent".into(), WRONG_SECRET.into()),
        ("the admin key's secret".into(), ADMIN.1.into()),
        ("the user key's secret".into(), USER.1.into()),
        ("carol's secret".into(), carol_secret.clone()),
        ("the store's secrets key".into(), secrets_key.clone()),
        ("the spare node's token".into(), SPARE_TOKEN.into()),
        ("the spare node's Authorization".into(), b64(SPARE_TOKEN)),
        (
            "the user key's Authorization".into(),
            b64(&format!("{}:{}", USER.0, USER.1)),
        ),
        (
            "the admin key's Authorization".into(),
            b64(&format!("{}:{}", ADMIN.0, ADMIN.1)),
        ),
    ];
    for i in 0..nodes.len() {
        let token = node_token(i);
        let bare = token.split(':').nth(1).expect("token").to_string();
        secrets.push((format!("node-{i}'s token"), bare));
        secrets.push((format!("node-{i}'s Authorization"), b64(&token)));
    }
    for (i, k) in identities.iter().enumerate() {
        secrets.push((format!("identity key {i}"), k.clone()));
    }

    let log_text = String::from_utf8_lossy(&std::fs::read(&log_path).expect("log")).into_owned();
    // The check reads a log below info (RUST_LOG=trace in effect: debug lines of other
    // crates are there; the router's own modules log nothing at trace).
    assert!(
        log_text.contains(" DEBUG "),
        "the log holds nothing below info:\n{log_text}"
    );
    let mut places = vec![
        ("the router's trace log".to_string(), log_text),
        ("the metrics page".to_string(), metrics),
    ];
    places.extend(user_answers);
    check(&places, &secrets);

    // Answers from the admin API: no secret either, but the key secret shown once when the
    // key was made.
    let admin_secrets: Vec<(String, String)> = secrets
        .iter()
        .filter(|(name, _)| name != "carol's secret")
        .cloned()
        .collect();
    check(&admin_answers, &admin_secrets);
}
