//! The real Prometheus tools for tests: `promtool` (config, rules and exposition checks) and a
//! `prometheus` server on a free loopback port with a temporary TSDB, under a watchdog
//! ([`super::watched`]), queried through its HTTP API.
//!
//! Both come from Debian's `prometheus` package (`scripts/prereqs.sh` installs it); a missing
//! tool fails the test with that hint.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::watched::Watched;
use super::{free_port, raw_request};

/// The longest a test Prometheus lives, whatever happens to the test process.
pub const LIFETIME: Duration = Duration::from_secs(600);
/// How long a start may take (it replays an empty WAL and opens the web listener).
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often [`Prometheus::start`] tries a new port when the old one was taken.
const START_TRIES: usize = 5;

/// The path of a program on `PATH`, or a panic naming the package that has it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: install Debian's `prometheus` package (`apt-get install -y \
                 prometheus`, which ships /usr/bin/prometheus and /usr/bin/promtool; \
                 scripts/prereqs.sh does it) and run the tests again"
            )
        })
}

/// What one `promtool` run said.
#[derive(Debug)]
pub struct PromtoolRun {
    /// Its exit status (0 success, 1 error, 3 lint findings only).
    pub code: Option<i32>,
    /// stdout and stderr together.
    pub output: String,
}

/// Runs `promtool args`, feeding `stdin` if given; bounded to a minute.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> PromtoolRun {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("promtool output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("promtool {args:?} did not finish within 60 s");
        }
    };
    PromtoolRun {
        code: out.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `promtool check metrics` on exposition text: its exit status and its findings, one per
/// line (`<metric name> <problem>`).
pub fn check_metrics(text: &str) -> (Option<i32>, Vec<String>) {
    let run = promtool(&["check", "metrics"], Some(text));
    let findings = run
        .output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    (run.code, findings)
}

/// A running Prometheus server.
pub struct Prometheus {
    proc: Watched,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts a server with `config` (YAML) on a free loopback port, with its TSDB in a
    /// temporary directory, and waits until `/-/ready` answers 200.
    pub fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let check = promtool(
            &["check", "config", config_path.to_str().expect("utf-8 path")],
            None,
        );
        assert_eq!(
            check.code,
            Some(0),
            "the generated Prometheus config does not pass promtool:\n{}\n{config}",
            check.output
        );
        for attempt in 1..=START_TRIES {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let args = vec![
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address={addr}"),
                "--storage.tsdb.retention.time=1h".into(),
                "--log.level=info".into(),
            ];
            let mut proc = Watched::spawn(&tool("prometheus"), &args, &[], &log, LIFETIME);
            match wait_ready(&mut proc, addr) {
                Ok(()) => {
                    return Prometheus {
                        proc,
                        addr,
                        config: config_path,
                        dir,
                    }
                }
                Err(out) if out.contains("address already in use") && attempt < START_TRIES => {
                    eprintln!("prometheus: {addr} was taken; trying a new port");
                }
                Err(out) => panic!("prometheus did not become ready on {addr}; its log:\n{out}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Its temporary directory (for files its config names).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// GET `path` (with its query string) on the HTTP API, as JSON; panics on a non-JSON
    /// answer.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let r = raw_request(self.addr, "GET", path.as_bytes(), &[], None);
        serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "prometheus answered {path} with {} and no JSON ({e}): {}",
                r.status,
                r.text()
            )
        })
    }

    /// An instant query: the result's `resultType` and `result`, or the error Prometheus
    /// gives (a bad expression, or one that fails on the data, e.g. many-to-many matching).
    pub fn query(&self, expr: &str) -> Result<(String, serde_json::Value), String> {
        let v = self.get_json(&format!("/api/v1/query?query={}", url_encode(expr)));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok((
            v["data"]["resultType"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["data"]["result"].clone(),
        ))
    }

    /// The value of an expression that gives one sample (a one-element vector or a scalar);
    /// None while it gives nothing.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let (kind, result) = self
            .query(expr)
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let sample = match kind.as_str() {
            "scalar" => result.clone(),
            "vector" => match result.as_array().map(Vec::as_slice) {
                Some([one]) => one["value"].clone(),
                Some([]) => return None,
                _ => panic!("{expr} gives several series: {result}"),
            },
            other => panic!("{expr} gives a {other}, not one sample"),
        };
        sample[1].as_str().and_then(|s| s.parse().ok())
    }

    /// Waits until `expr` gives `want`, at most `secs` seconds; the panic says what it gave
    /// last and how the scrape targets are doing.
    pub fn wait_value(&self, expr: &str, want: f64, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.value(expr);
            if got == Some(want) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {secs} s waiting for `{expr}` to be {want}; it is {got:?}.\n\
                     Scrape targets:\n{}",
                    self.targets()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One line per active scrape target: job, URL, health and last error.
    pub fn targets(&self) -> String {
        let v = self.get_json("/api/v1/targets?state=active");
        v["data"]["activeTargets"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        format!(
                            "  {} {} health={} lastError={}",
                            t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| v.to_string())
    }

    /// The tail of its log.
    pub fn log_tail(&self) -> String {
        self.proc.tail(40)
    }
}

/// Waits until `/-/ready` answers 200; Err(log) when the process exits or after
/// [`START_DEADLINE`].
fn wait_ready(proc: &mut Watched, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && raw_request(addr, "GET", b"/-/ready", &[], None).status == 200
        {
            return Ok(());
        }
        if !proc.running() || Instant::now() >= deadline {
            proc.kill();
            return Err(proc.output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
