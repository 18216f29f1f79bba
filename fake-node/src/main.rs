//! `ts3ab-fake-node`: one fake TS3AudioBot node as its own process (demo, benchmarks).
//!
//! Owns: command-line parsing, pre-creating temporary bots (`--bots`) and templates
//! (`--template`, handed to the library as initial templates), the single `listening on ADDR`
//! line, and waiting for SIGTERM/SIGINT. Does not own: the node, its data dir or restarts
//! (the library does).

use std::io::Write;
use std::time::Duration;

use ts3ab_fake_node::{AnonymousRights, FakeNode, FakeNodeConfig};

const USAGE: &str = "\
usage: ts3ab-fake-node [--listen 127.0.0.1:0] [--name NAME] [--auth uid:token]
                       [--anonymous all|default|none] [--service-time-ms N] [--max-concurrency N]
                       [--bots N] [--data-dir DIR] [--template NAME[:run]]...
                       [--ts-server ADDR] [--ts-time-scale N]
  --bots N               start N temporary bots (like bot connect to), ids after the templates'
  --data-dir DIR         keep templates as DIR/bots/<name>/bot.toml: loaded at start (bad files
                         are reported and skipped), `run = true` ones started from id 0, every
                         change written back. Without it templates live in memory only
  --template NAME[:run]  create template NAME (with run = true for :run) unless one of that
                         name exists already (in the data dir); repeatable
  --ts-server ADDR       every running bot is a client of the TeamSpeak server model at ADDR
                         (UDP: join, ping, leave; reconnects like TS3AudioBot)
  --ts-time-scale N      divide TeamSpeak/TS3AudioBot times (timeouts, reconnects) by N";

struct Args {
    cfg: FakeNodeConfig,
    bots: u32,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        cfg: FakeNodeConfig::default(),
        bots: 0,
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("bad {what} {value:?}\n{USAGE}");
        let template = |spec: &str| -> Result<(String, Vec<(String, String)>), String> {
            let (name, run) = match spec.split_once(':') {
                None => (spec, false),
                Some((name, "run")) => (name, true),
                Some(_) => return Err(bad("--template (want NAME or NAME:run)")),
            };
            let settings = if run {
                vec![("run".to_string(), "true".to_string())]
            } else {
                Vec::new()
            };
            Ok((name.to_string(), settings))
        };
        match flag.as_str() {
            "--listen" => a.cfg.listen = value.parse().map_err(|_| bad("address"))?,
            "--name" => a.cfg.name = value,
            "--auth" => {
                if !value.contains(':') {
                    return Err(bad("token (want uid:token)"));
                }
                a.cfg.auth = Some(value);
            }
            "--anonymous" => {
                a.cfg.anonymous = match value.as_str() {
                    "all" => AnonymousRights::All,
                    "default" => AnonymousRights::Default,
                    "none" => AnonymousRights::None,
                    _ => return Err(bad("--anonymous")),
                }
            }
            "--service-time-ms" => {
                a.cfg.service_time =
                    Duration::from_millis(value.parse().map_err(|_| bad("number"))?)
            }
            "--max-concurrency" => {
                a.cfg.max_concurrency = Some(value.parse().map_err(|_| bad("number"))?)
            }
            "--bots" => a.bots = value.parse().map_err(|_| bad("number"))?,
            "--data-dir" => a.cfg.data_dir = Some(value.into()),
            "--ts-server" => a.cfg.ts_server = Some(value.parse().map_err(|_| bad("address"))?),
            "--ts-time-scale" => {
                a.cfg.ts_time_scale = value.parse().map_err(|_| bad("number"))?;
            }
            // The library checks the name (it knows TS3AudioBot's rules) and fails the start.
            "--template" => a.cfg.initial_templates.push(template(&value)?),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let node = match FakeNode::start_with_workers(args.cfg, workers) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    for _ in 0..args.bots {
        node.connect_bot("ts.example.com");
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", node.addr());
    let _ = out.flush();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot wait for signals: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    });
    node.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn data_dir_and_templates() {
        let a = args(&[
            "--data-dir",
            "/tmp/x",
            "--template",
            "music:run",
            "--template",
            "idle",
            "--bots",
            "2",
        ])
        .unwrap();
        assert_eq!(
            a.cfg.data_dir.as_deref(),
            Some(std::path::Path::new("/tmp/x"))
        );
        assert_eq!(
            a.cfg.initial_templates,
            vec![
                (
                    "music".to_string(),
                    vec![("run".to_string(), "true".to_string())]
                ),
                ("idle".to_string(), vec![]),
            ]
        );
        assert_eq!(a.bots, 2);
        assert!(args(&["--template", "x:go"]).is_err_and(|e| e.contains("NAME:run")));
        assert!(args(&["--data-dir"]).is_err_and(|e| e.contains("needs a value")));
        assert!(args(&["--help"]).is_err_and(|e| e.contains("--data-dir DIR")));
    }
}
