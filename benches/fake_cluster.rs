//! Many fake TS3AudioBot nodes in one process, for the benchmark runner (`benches/run.sh`):
//! the fan-out, scaling, placement and scale benchmarks need up to 100 nodes, and one process
//! (one PID to stop) is easier on the machine than a hundred.
//!
//! Usage: `fake_cluster --nodes N [--bots B] [--auth uid:token] [--service-time-ms S]
//! [--max-concurrency C] [--workers W]`. Each node gets `B` running temporary bots (local ids
//! 0..B), answers only the router's token (`--auth`, no anonymous rights), and runs on its own
//! runtime with `W` worker threads (default 1). Prints `listening on ADDR` per node, then
//! `ready`, and runs until SIGTERM or SIGINT.

use std::io::Write;
use std::time::Duration;

use ts3ab_fake_node::{AnonymousRights, FakeNode, FakeNodeConfig};

fn main() {
    let mut it = std::env::args().skip(1);
    let (mut nodes, mut bots, mut workers) = (1usize, 0u32, 1usize);
    let mut cfg = FakeNodeConfig {
        anonymous: AnonymousRights::None,
        ..FakeNodeConfig::default()
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let num = |v: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| fail(&format!("bad number for {flag}: {v}")))
        };
        match flag.as_str() {
            "--nodes" => nodes = num(&value) as usize,
            "--bots" => bots = num(&value) as u32,
            "--auth" => cfg.auth = Some(value),
            "--service-time-ms" => cfg.service_time = Duration::from_millis(num(&value)),
            "--max-concurrency" => cfg.max_concurrency = Some(num(&value) as usize),
            "--workers" => workers = num(&value) as usize,
            _ => fail(&format!("unknown option {flag}")),
        }
    }
    let mut out = std::io::stdout();
    let mut running = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let node = FakeNode::start_with_workers(
            FakeNodeConfig {
                name: format!("bench-node-{i}"),
                ..cfg.clone()
            },
            workers,
        )
        .unwrap_or_else(|e| fail(&format!("cannot start node {i}: {e}")));
        for _ in 0..bots {
            node.connect_bot("ts.example.com");
        }
        let _ = writeln!(out, "listening on {}", node.addr());
        running.push(node);
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).unwrap_or_else(|e| fail(&format!("signal: {e}")));
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    drop(running);
}

fn fail(msg: &str) -> ! {
    eprintln!("fake_cluster: {msg}");
    std::process::exit(2)
}
