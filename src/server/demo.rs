//! `ts3ab-lb demo`: the router on the embedded store in front of three local fake nodes.
//!
//! Owns: starting three in-process fake TS3AudioBot nodes (the `ts3ab-fake-node` crate, which
//! follows the TS3AudioBot API spec), a config pointing at them, and a printed `curl` to try.
//! It exists so the README's run command works on a fresh machine with no TS3AudioBot.
//! Does not own: anything `serve` does not also do; the router part is the production code.

use std::path::Path;
use ts3ab_fake_node::{AnonymousRights, FakeNode, FakeNodeConfig};

use crate::config::Config;

/// The demo's admin key.
pub const DEMO_KEY: &str = "admin";
/// Its secret (demo only: never use a fixed secret in production).
pub const DEMO_SECRET: &str = "demo-secret";

/// Starts the demo and runs until interrupted (then the store is closed, as `serve` does).
pub fn run(listen: &str, admin: &str, data: &Path) -> Result<(), String> {
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let node = FakeNode::start(FakeNodeConfig {
            name: format!("demo-node-{i}"),
            auth: Some(format!("router:node-{i}-token")),
            anonymous: AnonymousRights::Default,
            ..FakeNodeConfig::default()
        })
        .map_err(|e| format!("cannot start fake node {i}: {e}"))?;
        nodes.push(node);
    }
    // Something to look at: a template on node 1 and a running bot on node 2.
    nodes[0].add_template(
        "lobby",
        &[
            ("connect.address", "ts.example.com"),
            ("connect.name", "LobbyBot"),
        ],
    );
    nodes[1].connect_bot("ts.example.com");

    let mut yaml = format!(
        "listen: \"{listen}\"\nkeys:\n  - {{ name: {DEMO_KEY}, secret: \"{DEMO_SECRET}\", role: admin }}\nnodes:\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ name: node-{}, url: \"{}\", auth: \"router:node-{}-token\", capacity: 100 }}\n",
            i + 1,
            n.url(),
            i + 1
        ));
    }
    yaml.push_str(&format!(
        "storage: {{ kind: embedded, path: \"{}\" }}\nserver: {{ threads: 2, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }}\nhealth: {{ interval_ms: 1000 }}\nadmin: {{ listen: \"{admin}\" }}\n",
        data.display()
    ));
    let config = Config::from_yaml(&yaml, &|_| None).map_err(|e| format!("demo config: {e}"))?;
    let built = crate::server::build_with(config, crate::server::Launch::default())
        .map_err(|e| e.to_string())?;
    println!("ts3ab-lb demo: router on http://{listen} in front of 3 fake TS3AudioBot nodes:");
    for (i, n) in nodes.iter().enumerate() {
        println!("  node-{} at {}", i + 1, n.url());
    }
    println!("Try:");
    println!("  curl -u {DEMO_KEY}:{DEMO_SECRET} http://{listen}/api/bot/list");
    println!(
        "  curl -u {DEMO_KEY}:{DEMO_SECRET} http://{listen}/api/bot/connect/to/ts.example.com"
    );
    println!("  curl -u {DEMO_KEY}:{DEMO_SECRET} 'http://{listen}/api/bot/use/0/(/json/merge/(/bot/info)/(/volume))'");
    println!("Admin panel: http://{admin}/admin/  (log in with key `{DEMO_KEY}`, secret `{DEMO_SECRET}`)");
    println!("  curl -u {DEMO_KEY}:{DEMO_SECRET} http://{admin}/admin/api/nodes");
    println!("Stop with Ctrl-C. State is kept in {}.", data.display());
    // The nodes live until the router stopped (and closed its store), as `serve` stops.
    let stopped = crate::server::run(built).map_err(|e| e.to_string());
    drop(nodes);
    stopped
}
