//! The `ts3ab-lb-agent` binary end to end: a fake TS3AudioBot node with a few bots, the agent
//! started as a process on a free loopback port, once over a fixture /proc tree (so every
//! number is known) and once over the real /proc; `/metrics`, `/summary`, the bearer token,
//! the bot process and API going down, bad requests and flags, `promtool check metrics`, and
//! that SIGTERM stops the process by itself.
//!
//! Every wait is on a condition with a deadline; no fixed sleeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ts3ab_fake_node::{AnonymousRights, FakeNode, FakeNodeConfig};

const BIN: &str = env!("CARGO_BIN_EXE_ts3ab-lb-agent");
const WAIT: Duration = Duration::from_secs(10);

// === helpers ===

/// A running agent process; killed (SIGKILL) on drop if a test did not stop it.
struct AgentProc {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl AgentProc {
    /// Starts the agent with `args` (plus `--listen 127.0.0.1:0`) and waits for its
    /// "listening on" line to learn the port.
    fn start(args: &[&str], envs: &[(&str, &str)]) -> AgentProc {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the agent");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            // Keeps draining stderr so the agent never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                }
                l.lock().expect("log lock").push(line);
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "agent did not report its address; stderr: {:?}",
                    log.lock().expect("log")
                );
            }
        };
        AgentProc { child, addr, log }
    }

    fn get(&self, path: &str, auth: Option<&str>) -> (u16, String) {
        let mut extra = String::new();
        if let Some(a) = auth {
            extra = format!("Authorization: {a}\r\n");
        }
        raw(
            self.addr,
            format!("GET {path} HTTP/1.1\r\nHost: agent\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    }

    fn metrics(&self, auth: Option<&str>) -> String {
        let (status, body) = self.get("/metrics", auth);
        assert_eq!(status, 200, "{body}");
        body
    }

    fn summary(&self, auth: Option<&str>) -> serde_json::Value {
        let (status, body) = self.get("/summary", auth);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("summary is JSON")
    }

    /// SIGTERM, then waits (bounded) for the process to exit by itself with status 0.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "agent exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop within {WAIT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The listener is gone with it.
        assert!(TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_err());
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends raw bytes, reads the answer until the server closes, returns (status, body).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the agent");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read the answer");
    let text = String::from_utf8(buf).expect("utf-8 answer");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the sample line `series` (name plus labels, exactly) in exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const FIXTURE_PID: &str = "4242";

/// Writes `root/rel` aside and renames it, so the agent never reads a half-written file.
fn write_atomic(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write fixture");
    std::fs::rename(&tmp, &p).expect("rename fixture");
}

/// The fixture's /proc/stat: cpu1 fixed, cpu0 with the given user and idle ticks.
fn write_fixture_stat(root: &Path, u: u64, i: u64) {
    write_atomic(
        root,
        "stat",
        &format!(
            "cpu  {} 0 100 {} 0 0 0 0 0 0\ncpu0 {u} 0 50 {i} 0 0 0 0 0 0\ncpu1 1000 0 50 9000 0 0 0 0 0 0\n\
             intr 1 2 3\nctxt 10\nbtime 1700000000\nprocesses 5\n",
            u + 1000,
            i + 9000
        ),
    );
}

/// A /proc tree with known numbers: two CPUs, 8 GiB with 6 GiB available, load 0.5/0.25/0.125,
/// `eth0` and `lo`, and a TS3AudioBot (`dotnet TS3AudioBot.dll`) as pid 4242.
fn write_fixture(root: &Path, cpu0_user_ticks: u64, cpu0_idle_ticks: u64) {
    let w = |rel: &str, text: &str| write_atomic(root, rel, text);
    write_fixture_stat(root, cpu0_user_ticks, cpu0_idle_ticks);
    w(
        "meminfo",
        "MemTotal:        8388608 kB\nMemFree:         1048576 kB\nMemAvailable:    6291456 kB\n\
         Buffers:           10240 kB\nCached:          2097152 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
    );
    w("loadavg", "0.50 0.25 0.125 2/300 4242\n");
    w(
        "net/dev",
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo:    5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0\n  \
         eth0: 123456789 1000 0 0 0 0 0 0 987654321 2000 0 0 0 0 0 0\n",
    );
    w(&format!("{FIXTURE_PID}/comm"), "dotnet\n");
    w(
        &format!("{FIXTURE_PID}/cmdline"),
        "/usr/bin/dotnet\0/opt/TS3AudioBot/TS3AudioBot.dll\0--non-interactive\0",
    );
    // utime 300 + stime 200 ticks = 5 s; starttime 1000 ticks = 10 s after boot.
    w(
        &format!("{FIXTURE_PID}/stat"),
        "4242 (dotnet) S 1 4242 4242 0 -1 4194560 100 0 0 0 300 200 0 0 20 0 14 0 1000 1000000 500 18446744073709551615\n",
    );
    w(
        &format!("{FIXTURE_PID}/status"),
        "Name:\tdotnet\nVmSize:\t  400000 kB\nVmRSS:\t  131072 kB\nThreads:\t14\n",
    );
}

/// A fake node that wants `uid:tok`, with two connected bots, one stuck connecting and one
/// offline template.
fn node_with_bots(auth: Option<&str>) -> FakeNode {
    let node = FakeNode::start(FakeNodeConfig {
        auth: auth.map(String::from),
        anonymous: if auth.is_some() {
            AnonymousRights::None
        } else {
            AnonymousRights::All
        },
        ..FakeNodeConfig::default()
    })
    .expect("start the fake node");
    node.connect_bot("ts1.example.com");
    node.connect_bot("ts2.example.com");
    node.connect_bot("unreachable.example.com");
    node.add_template("idle", &[("connect.address", "ts3.example.com")]);
    node
}

fn promtool() -> String {
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => "promtool".into(),
        _ => panic!(
            "promtool is not installed: it is needed to lint /metrics. Install Debian's \
             `prometheus` package (`apt-get install -y prometheus`, which ships /usr/bin/promtool; \
             scripts/prereqs.sh should do it) and run the tests again"
        ),
    }
}

/// Runs `promtool check metrics` on `text`; returns the findings that are not the accepted
/// camelCase lint on node_exporter's `node_memory_<Field>_bytes` names.
fn promtool_findings(text: &str) -> (Option<i32>, Vec<String>, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected = all
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let mut parts = l.splitn(2, ' ');
            let name = parts.next().unwrap_or_default();
            let msg = parts.next().unwrap_or_default();
            let camel_node_memory = name.starts_with("node_memory_")
                && name.ends_with("_bytes")
                && name.chars().any(|c| c.is_ascii_uppercase())
                && msg.contains("camelCase");
            !camel_node_memory
        })
        .map(String::from)
        .collect();
    (out.status.code(), unexpected, all)
}

// === tests ===

/// Over a fixture tree: every host number, the process, the bots by status from an API that
/// wants Basic auth, the summary, the token, and what happens when the process and the API go
/// away; then SIGTERM stops the agent.
#[test]
fn fixture_tree_metrics_summary_token_and_down_sources() {
    let node = node_with_bots(Some("uid:tok"));
    let dir = tempfile::tempdir().expect("tempdir");
    write_fixture(dir.path(), 1000, 9000);
    let proc_root = dir.path().to_str().expect("utf-8 path");
    let api = node.url();
    let agent = AgentProc::start(
        &[
            "--api",
            &api,
            "--api-auth-env",
            "TEST_API_AUTH",
            "--token-env",
            "TEST_AGENT_TOKEN",
            "--proc-root",
            proc_root,
            "--sample-interval",
            "0.05",
        ],
        &[("TEST_API_AUTH", "uid:tok"), ("TEST_AGENT_TOKEN", "s3cret")],
    );
    let auth = Some("Bearer s3cret");

    // The token: missing, wrong, wrong scheme -> 401 on both documents.
    for path in ["/metrics", "/summary"] {
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
        ] {
            let (status, _) = agent.get(path, bad);
            assert_eq!(status, 401, "{path} with {bad:?}");
        }
    }
    assert_eq!(agent.get("/nope", auth).0, 404);
    let (status, _) = raw(
        agent.addr,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(status, 405);

    let m = agent.metrics(auth);
    let expect = [
        ("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}", 10.0),
        ("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}", 90.0),
        ("node_cpu_seconds_total{cpu=\"1\",mode=\"system\"}", 0.5),
        ("node_boot_time_seconds", 1_700_000_000.0),
        ("node_memory_MemTotal_bytes", 8_589_934_592.0),
        ("node_memory_MemAvailable_bytes", 6_442_450_944.0),
        ("node_load1", 0.5),
        ("node_load5", 0.25),
        ("node_load15", 0.125),
        (
            "node_network_receive_bytes_total{device=\"eth0\"}",
            123_456_789.0,
        ),
        (
            "node_network_transmit_bytes_total{device=\"eth0\"}",
            987_654_321.0,
        ),
        ("node_network_receive_bytes_total{device=\"lo\"}", 5000.0),
        ("ts3ab_agent_process_up", 1.0),
        ("ts3ab_agent_process_cpu_seconds_total", 5.0),
        ("ts3ab_agent_process_resident_memory_bytes", 134_217_728.0),
        ("ts3ab_agent_process_start_time_seconds", 1_700_000_010.0),
        ("ts3ab_agent_api_up", 1.0),
        ("ts3ab_agent_bots{status=\"offline\"}", 1.0),
        ("ts3ab_agent_bots{status=\"connecting\"}", 1.0),
        ("ts3ab_agent_bots{status=\"connected\"}", 2.0),
    ];
    for (series, v) in expect {
        assert_eq!(sample(&m, series), Some(v), "{series} in\n{m}");
    }
    for family in [
        "node_cpu_seconds_total",
        "ts3ab_agent_bots",
        "ts3ab_agent_scrape_duration_seconds",
    ] {
        assert!(m.contains(&format!("# HELP {family} ")), "{family} HELP");
        assert!(m.contains(&format!("# TYPE {family} ")), "{family} TYPE");
    }
    assert!(m.contains(&format!(
        "ts3ab_agent_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // The agent asked bot/list with the configured Basic credentials.
    let asked = node.requests();
    let req = asked
        .iter()
        .find(|r| r.target == b"/api/bot/list")
        .expect("the agent asked /api/bot/list");
    assert_eq!(req.method, "GET");
    assert_eq!(req.authorization.as_deref(), Some("Basic dWlkOnRvaw=="));

    // Summary: memory and load are known at once; CPU ratios appear after two samples. Move
    // cpu0 by 100 user + 100 idle ticks: busy 1 s of 2 s.
    let s = agent.summary(auth);
    assert_eq!(s["memory_available_ratio"], 0.75);
    assert_eq!(s["memory_total_bytes"], 8_589_934_592u64);
    assert_eq!(s["cpu_count"], 2);
    assert_eq!(s["load1"], 0.5);
    assert_eq!(s["process_up"], true);
    assert_eq!(s["process_resident_bytes"], 134_217_728u64);
    assert_eq!(s["api_up"], true);
    assert_eq!(
        s["bots"],
        serde_json::json!({"offline": 1, "connecting": 1, "connected": 2})
    );
    assert!(s["at_ms"].as_u64().expect("at_ms") > 1_700_000_000_000);
    // The process used 0.2 s more of those 2 s (written first: a sample that sees only this
    // change has no CPU time passed and is skipped).
    write_atomic(
        dir.path(),
        "4242/stat",
        "4242 (dotnet) S 1 4242 4242 0 -1 4194560 100 0 0 0 320 200 0 0 20 0 14 0 1000 1000000 500 18446744073709551615\n",
    );
    write_fixture_stat(dir.path(), 1100, 9100);
    let s = wait_for("cpu ratios over the new sample", || {
        let s = agent.summary(auth);
        (s["cpu_busy_ratio"].as_f64() == Some(0.5)).then_some(s)
    });
    let p = s["process_cpu_ratio"].as_f64().expect("process_cpu_ratio");
    assert!((p - 0.1).abs() < 1e-9, "{p}");

    // The API goes down: host metrics stay, api_up says 0, bots are left out.
    node.kill();
    let m = wait_for("api_up 0", || {
        let m = agent.metrics(auth);
        (sample(&m, "ts3ab_agent_api_up") == Some(0.0)).then_some(m)
    });
    assert_eq!(sample(&m, "node_load1"), Some(0.5), "host metrics stay");
    assert_eq!(sample(&m, "ts3ab_agent_process_up"), Some(1.0));
    assert!(
        !m.contains("ts3ab_agent_bots{"),
        "no bot counts while the API is down"
    );
    let s = agent.summary(auth);
    assert_eq!(s["api_up"], false);
    assert_eq!(s["bots"], serde_json::Value::Null);

    // The process goes away too.
    std::fs::remove_dir_all(dir.path().join(FIXTURE_PID)).expect("rm pid dir");
    let m = agent.metrics(auth);
    assert_eq!(sample(&m, "ts3ab_agent_process_up"), Some(0.0), "{m}");
    assert!(!m.contains("ts3ab_agent_process_cpu_seconds_total"));
    assert_eq!(
        sample(&m, "node_memory_MemTotal_bytes"),
        Some(8_589_934_592.0)
    );
    let s = agent.summary(auth);
    assert_eq!(s["process_up"], false);
    assert_eq!(s["process_cpu_ratio"], serde_json::Value::Null);
    assert_eq!(s["memory_available_ratio"], 0.75);

    // The API comes back.
    node.revive().expect("revive");
    wait_for("api_up 1 again", || {
        (sample(&agent.metrics(auth), "ts3ab_agent_api_up") == Some(1.0)).then_some(())
    });
    let log = agent.log.lock().expect("log").join("\n");
    assert!(
        !log.contains("s3cret") && !log.contains("uid:tok"),
        "secrets logged: {log}"
    );
    agent.stop();
}

/// Over the real /proc, with the test process itself as "TS3AudioBot" (by pid file) and an
/// API without auth: the host families are there, the process has real numbers.
#[test]
fn real_proc_with_pid_file() {
    let node = node_with_bots(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("ts3ab.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("pid file");
    let agent = AgentProc::start(
        &[
            "--api",
            &node.url(),
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
        ],
        &[],
    );
    let m = agent.metrics(None);
    assert!(
        sample(&m, "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}").is_some_and(|v| v > 0.0),
        "{m}"
    );
    assert!(sample(&m, "node_memory_MemTotal_bytes").is_some_and(|v| v > 0.0));
    assert!(sample(&m, "node_memory_MemAvailable_bytes").is_some_and(|v| v > 0.0));
    assert!(sample(&m, "node_load1").is_some());
    assert!(
        sample(&m, "node_network_receive_bytes_total{device=\"lo\"}").is_some(),
        "{m}"
    );
    assert_eq!(sample(&m, "ts3ab_agent_process_up"), Some(1.0));
    assert!(sample(&m, "ts3ab_agent_process_resident_memory_bytes").is_some_and(|v| v > 1e6));
    assert!(sample(&m, "ts3ab_agent_process_cpu_seconds_total").is_some());
    assert_eq!(
        sample(&m, "ts3ab_agent_bots{status=\"connected\"}"),
        Some(2.0)
    );
    assert!(sample(&m, "ts3ab_agent_scrape_duration_seconds").is_some_and(|v| v > 0.0 && v < 10.0));
    let s = agent.summary(None);
    assert_eq!(s["process_up"], true);
    assert!(s["memory_available_ratio"]
        .as_f64()
        .is_some_and(|r| r > 0.0 && r <= 1.0));

    // A pid file naming a process that is gone: process_up 0, the rest keeps working.
    std::fs::write(&pid_file, "999999999\n").expect("pid file");
    let m = agent.metrics(None);
    assert_eq!(sample(&m, "ts3ab_agent_process_up"), Some(0.0));
    assert_eq!(sample(&m, "ts3ab_agent_api_up"), Some(1.0));
    agent.stop();
}

/// Wrong API credentials are the API being down for the agent (it cannot count bots).
#[test]
fn wrong_api_credentials_report_api_down() {
    let node = node_with_bots(Some("uid:tok"));
    let agent = AgentProc::start(
        &[
            "--api",
            &node.url(),
            "--api-auth",
            "uid:wrong",
            "--process-name",
            "no-such-process-xyz",
        ],
        &[],
    );
    let m = agent.metrics(None);
    assert_eq!(sample(&m, "ts3ab_agent_api_up"), Some(0.0), "{m}");
    assert_eq!(sample(&m, "ts3ab_agent_process_up"), Some(0.0), "{m}");
    assert!(!m.contains("ts3ab_agent_bots{"));
    agent.stop();
}

/// Malformed and oversized requests get 400/431 and never take the agent down; keep-alive
/// serves two requests on one connection.
#[test]
fn bad_requests_and_keep_alive() {
    let agent = AgentProc::start(
        &["--api", "http://127.0.0.1:9", "--api-timeout", "0.5"],
        &[],
    );
    assert_eq!(raw(agent.addr, b"GARBAGE\r\n\r\n").0, 400);
    assert_eq!(
        raw(agent.addr, b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n").0,
        400
    );
    assert_eq!(
        raw(agent.addr, b"GET /metrics HTTP/1.1\r\n\xff\xfe: x\r\n\r\n").0,
        400
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(raw(agent.addr, huge.as_bytes()).0, 431);
    // A POST with a body larger than the bound is answered without reading it.
    let big_body = format!(
        "POST /summary HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n{}",
        "x".repeat(1000)
    );
    assert_eq!(raw(agent.addr, big_body.as_bytes()).0, 405);

    let mut s = TcpStream::connect(agent.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /summary HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    assert!(all.contains("\"api_up\":false"), "{all}");
    assert!(all.contains("ts3ab_agent_api_up 0"), "{all}");
    agent.stop();
}

/// Bad flags end the process at once with a message naming the flag.
#[test]
fn bad_flags_name_the_flag() {
    for (args, needle) in [
        (vec!["--api", "https://127.0.0.1:58913"], "--api"),
        (
            vec!["--token-env", "TS3AB_AGENT_TEST_UNSET_VAR"],
            "--token-env TS3AB_AGENT_TEST_UNSET_VAR",
        ),
        (vec!["--api-auth", "nocolon"], "--api-auth"),
        (vec!["--listen", "not-an-address"], "--listen"),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("TS3AB_AGENT_TEST_UNSET_VAR")
            .output()
            .expect("run the agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A taken port is reported with the flag, too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args(["--listen", &addr])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("--listen {addr}")));
}

/// `promtool check metrics` passes on the agent's /metrics (real /proc and the fixture tree,
/// every family present), except for node_exporter's own camelCase `node_memory_*` names.
/// Fails with install instructions when promtool is missing.
#[test]
fn promtool_check_metrics_passes() {
    promtool();
    let node = node_with_bots(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("ts3ab.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("pid file");
    let real = AgentProc::start(
        &[
            "--api",
            &node.url(),
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
        ],
        &[],
    );
    let fixture_root = dir.path().join("proc");
    write_fixture(&fixture_root, 1000, 9000);
    let fixture = AgentProc::start(
        &[
            "--api",
            &node.url(),
            "--proc-root",
            fixture_root.to_str().expect("utf-8"),
        ],
        &[],
    );
    for (what, agent) in [("real /proc", &real), ("fixture tree", &fixture)] {
        let text = agent.metrics(None);
        assert!(
            text.contains("ts3ab_agent_bots{"),
            "{what}: every family present"
        );
        assert!(
            text.contains("ts3ab_agent_process_cpu_seconds_total"),
            "{what}"
        );
        let (code, unexpected, all) = promtool_findings(&text);
        assert!(
            unexpected.is_empty(),
            "{what}: promtool findings {unexpected:?}\n{all}\n{text}"
        );
        // 0 = clean, 3 = lint findings only (all of them the accepted camelCase ones).
        assert!(
            matches!(code, Some(0) | Some(3)),
            "{what}: promtool exit {code:?}: {all}"
        );
    }
    // The check itself would catch a real mistake (guards against a filter that accepts all).
    let (_, unexpected, _) = promtool_findings(
        "# HELP ts3ab_agent_x_ms x\n# TYPE ts3ab_agent_x_ms counter\nts3ab_agent_x_ms 1\n",
    );
    assert!(
        !unexpected.is_empty(),
        "promtool should flag a counter without _total"
    );
    real.stop();
    fixture.stop();
}
