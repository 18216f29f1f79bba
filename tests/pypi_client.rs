//! The real PyPI client `ts3audiobot-api==0.0.3.9` against the router: list bots, connect via
//! template, connect to an address, play, set the volume, read the song, disconnect; checks
//! what it got back and what the nodes received.
//!
//! The client is installed into a venv under cargo's test tmp dir on first run (PyPI must be
//! reachable; `.ci/run` runs the tests on a machine where it is).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use support::*;

/// A venv with the client; created once and reused.
fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pypi-venv");
    let python = dir.join("bin/python");
    let ready = dir.join(".ready-0.0.3.9");
    if !ready.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 -m venv");
        assert!(
            status.success(),
            "cannot create a venv (is python3-venv installed?)"
        );
        let status = Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "ts3audiobot-api==0.0.3.9",
                "requests",
            ])
            .status()
            .expect("pip");
        assert!(
            status.success(),
            "pip could not install ts3audiobot-api==0.0.3.9 from PyPI"
        );
        std::fs::write(&ready, b"ok").expect("marker");
    }
    python
}

#[test]
fn pypi_client_drives_the_cluster() {
    let python = venv();
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    nodes[1].add_template("pybot", &[("connect.address", "ts.template.example")]);
    let router = Router::start(&nodes.iter().collect::<Vec<_>>(), RouterOpts::default());
    // The client addresses bot 0 for everything, as it does against a single TS3AudioBot: give
    // the cluster its first bot.
    let first = router.get("/api/bot/connect/to/ts.first.example");
    assert_eq!(first.json()["Id"], 0);
    router.wait_until(10, "the template to be known", |r| {
        r.bot_list().iter().any(|b| b["Name"] == "pybot")
    });
    for n in &nodes {
        n.clear_requests();
    }
    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pypi/drive.py"))
        .args([
            "127.0.0.1",
            &router.addr.port().to_string(),
            &format!("{}:{}", USER.0, USER.1),
        ])
        .output()
        .expect("run the client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("client output");

    let before = v["bots_before"].as_array().expect("list");
    assert!(
        before
            .iter()
            .any(|b| b["Id"] == 0 && b["Server"] == "ts.first.example"),
        "{v}"
    );
    assert!(
        before
            .contains(&json!({"Id":null,"Name":"pybot","Server":"ts.template.example","Status":0})),
        "{v}"
    );
    assert_eq!(v["template"]["Name"], "pybot");
    assert!(v["template"]["Id"].as_u64().is_some_and(|id| id > 0));
    let new_id = v["connected"]["Id"].as_u64().expect("new id");
    assert_eq!(v["connected"]["Server"], "ts.example.com");
    assert_eq!(v["info"]["Id"], json!(new_id));
    assert_eq!(v["play"], json!(true), "204 → True");
    assert_eq!(v["volume_set"], json!(true));
    assert_eq!(v["song"]["Link"], "https://example.com/a b.mp3?x=1&y=(2)");
    assert_eq!(v["disconnect"], json!(true));
    let after = v["bots_after"].as_array().expect("list");
    assert_eq!(after.iter().filter(|b| b["Id"].is_u64()).count(), 3);
    let last = v["bots_final"].as_array().expect("list");
    assert!(last.iter().all(|b| b["Id"] != json!(new_id)), "{v}");

    // The template started on its own node; the client's secret never reached a node; the
    // play URL reached the node exactly as the client encoded it (id aside).
    assert_eq!(
        nodes[1]
            .bots()
            .iter()
            .filter(|b| b.name.as_deref() == Some("pybot"))
            .count(),
        1
    );
    let all: Vec<String> = nodes.iter().flat_map(client_targets).collect();
    assert!(
        all.iter()
            .any(|t| t
                .ends_with("/(/play/https%3A%2F%2Fexample.com%2Fa%20b.mp3%3Fx%3D1%26y%3D%282%29")),
        "{all:?}"
    );
    for n in &nodes {
        for r in n.requests() {
            assert!(!r
                .authorization
                .unwrap_or_default()
                .contains(&basic(USER)[6..]));
        }
    }
}
