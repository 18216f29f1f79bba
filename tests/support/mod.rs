//! Shared integration-test harness: fake TS3AudioBot nodes (in-process, each on its own
//! thread and port), the real `ts3ab-lb` binary as a child process on a free loopback port, and
//! a raw HTTP/1.1 client that sends request targets byte for byte.
//!
//! Every process a test starts is killed when its guard drops, so nothing outlives a test.
//!
//! A free port is found by binding port 0 and releasing it, so another process can take it
//! before the router binds it: [`Router::spawn`] notices (the router's stderr names the
//! address as in use, or the port is held by some other process) and starts again on a new
//! port, a few times.

#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod fake_agent;
pub mod mongo;
pub mod prometheus;
pub mod watched;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
pub use ts3ab_fake_node::{AnonymousRights, FakeNode, FakeNodeConfig, Fault};

/// The admin key every harness router has.
pub const ADMIN: (&str, &str) = ("ops", "ops-secret-123");
/// The user key every harness router has.
pub const USER: (&str, &str) = ("alice", "alice-secret-123");

/// `Authorization` value for a key.
pub fn basic(key: (&str, &str)) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", key.0, key.1))
    )
}

/// The node token the router uses for node `i` (0-based).
pub fn node_token(i: usize) -> String {
    format!("router:token-of-node-{i}")
}

/// Starts a fake node that requires the router's token and refuses anonymous callers.
pub fn fake_node(i: usize) -> FakeNode {
    fake_node_with(i, |_| {})
}

/// Like [`fake_node`], with a config tweak.
pub fn fake_node_with(i: usize, tweak: impl FnOnce(&mut FakeNodeConfig)) -> FakeNode {
    let mut cfg = FakeNodeConfig {
        name: format!("node-{i}"),
        auth: Some(node_token(i)),
        anonymous: AnonymousRights::None,
        ..FakeNodeConfig::default()
    };
    tweak(&mut cfg);
    FakeNode::start(cfg).expect("fake node starts")
}

/// A free loopback port (bound to port 0, then released for the router to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Options for a harness router.
#[derive(Clone)]
pub struct RouterOpts {
    /// Node capacities (one per node, in order).
    pub capacities: Vec<u32>,
    /// Poll interval.
    pub poll_ms: u64,
    /// Extra YAML appended verbatim (e.g. a `placement:` block).
    pub extra_yaml: String,
    /// Indexes of nodes configured with `draining: true`.
    pub draining: Vec<usize>,
    /// Start the admin listener (on a free port, see [`Router::admin_addr`]); off otherwise,
    /// so parallel routers never share its default port.
    pub admin: bool,
    /// The `storage:` value (YAML flow mapping); None: the embedded store in the router's
    /// own directory.
    pub storage: Option<String>,
    /// More keys of the `admin:` flow mapping (e.g. `metrics: false`), with `admin: true`.
    pub admin_yaml: String,
    /// Per node (in order), its `agent:` value (a YAML flow mapping), if it has one.
    pub agents: Vec<Option<String>>,
    /// More keys of the `routing:` flow mapping (e.g. `max_connections_per_address: 3`).
    pub routing_yaml: String,
    /// Per node (in order), a URL instead of the fake node's own (e.g. a TLS terminator in
    /// front of it).
    pub node_urls: Vec<Option<String>>,
    /// Per node (in order), more keys of its flow mapping (e.g. `ca_file: "/x/ca.pem"`).
    pub node_yaml: Vec<Option<String>>,
    /// More `keys:` entries after the admin and user keys (YAML flow mappings).
    pub keys_yaml: Vec<String>,
    /// The poll deadline (`health.timeout_ms`), 2000 unless set.
    pub poll_timeout_ms: Option<u64>,
}

impl Default for RouterOpts {
    fn default() -> Self {
        RouterOpts {
            capacities: Vec::new(),
            poll_ms: 200,
            extra_yaml: String::new(),
            draining: Vec::new(),
            admin: false,
            storage: None,
            admin_yaml: String::new(),
            agents: Vec::new(),
            routing_yaml: String::new(),
            node_urls: Vec::new(),
            node_yaml: Vec::new(),
            keys_yaml: Vec::new(),
            poll_timeout_ms: None,
        }
    }
}

/// How often [`Router::spawn`] starts the router on a new port when the old one was taken.
const START_TRIES: usize = 5;
/// How long one start may take (the router polls every node once before it listens: up to
/// ~1.5 s per dead node, in parallel).
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How much of the router's stderr is kept for messages (the tail).
const STDERR_KEEP: usize = 64 * 1024;

/// How one start ended.
enum Start {
    Listening,
    PortTaken(String),
}

/// A running `ts3ab-lb` process.
pub struct Router {
    child: Option<Child>,
    /// What the current process wrote to stderr so far (the tail), also echoed to the test's
    /// stderr.
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin listener is, if it has one.
    pub admin_addr: Option<SocketAddr>,
    /// Its config file.
    pub config: PathBuf,
    /// Its data directory.
    pub data: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Router {
    /// Writes a config for `nodes` and starts the router; returns once it answers.
    pub fn start(nodes: &[&FakeNode], opts: RouterOpts) -> Router {
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        Router::start_urls(&urls, opts)
    }

    /// Like [`Router::start`] for nodes given by URL (fake nodes running as processes).
    pub fn start_urls(urls: &[String], opts: RouterOpts) -> Router {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut r = Router {
            child: None,
            stderr: Arc::default(),
            stderr_reader: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: None,
            config: dir.path().join("ts3ab-lb.yaml"),
            data,
            dir: Some(dir),
        };
        r.write_config_urls(urls, &opts);
        r.spawn();
        r
    }

    /// Writes the config file (a fresh port each time).
    pub fn write_config(&mut self, nodes: &[&FakeNode], opts: &RouterOpts) {
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        self.write_config_urls(&urls, opts);
    }

    /// [`Router::write_config`] for nodes given by URL.
    pub fn write_config_urls(&mut self, urls: &[String], opts: &RouterOpts) {
        let port = free_port();
        self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut yaml = format!(
            "listen: \"127.0.0.1:{port}\"\nkeys:\n  - {{ name: {}, secret: \"{}\", role: admin }}\n  - {{ name: {}, secret: \"{}\", role: user }}\nnodes:\n",
            ADMIN.0, ADMIN.1, USER.0, USER.1
        );
        if !opts.keys_yaml.is_empty() {
            let nodes_at = yaml.len() - "nodes:\n".len();
            let extra: String = opts
                .keys_yaml
                .iter()
                .map(|k| format!("  - {k}\n"))
                .collect();
            yaml.insert_str(nodes_at, &extra);
        }
        for (i, n) in urls.iter().enumerate() {
            let cap = opts.capacities.get(i).copied().unwrap_or(300);
            let agent = match opts.agents.get(i) {
                Some(Some(a)) => format!(", agent: {a}"),
                _ => String::new(),
            };
            let more = match opts.node_yaml.get(i) {
                Some(Some(m)) => format!(", {m}"),
                _ => String::new(),
            };
            let url = match opts.node_urls.get(i) {
                Some(Some(u)) => u.clone(),
                _ => n.clone(),
            };
            yaml.push_str(&format!(
                "  - {{ name: node-{i}, url: \"{}\", auth: \"{}\", capacity: {cap}, draining: {}{agent}{more} }}\n",
                url,
                node_token(i),
                opts.draining.contains(&i)
            ));
        }
        let dir = self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .expect("dir");
        let storage = opts
            .storage
            .clone()
            .unwrap_or_else(|| format!("{{ kind: embedded, path: \"{}\" }}", self.data.display()));
        yaml.push_str(&format!(
            "storage: {storage}\nserver: {{ threads: 2, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1, pid_file: \"{}\", upgrade_sock: \"{}\" }}\nhealth: {{ interval_ms: {}, timeout_ms: {}, failures_to_down: 2 }}\nrouting: {{ connect_timeout_ms: 500, request_timeout_ms: 5000, fanout_timeout_ms: 1000{} }}\n{}",
            dir.join("pid").display(),
            dir.join("upgrade.sock").display(),
            opts.poll_ms,
            opts.poll_timeout_ms.unwrap_or(2000),
            if opts.routing_yaml.is_empty() {
                String::new()
            } else {
                format!(", {}", opts.routing_yaml)
            },
            opts.extra_yaml
        ));
        self.admin_addr = opts
            .admin
            .then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        match self.admin_addr {
            Some(a) if opts.admin_yaml.is_empty() => {
                yaml.push_str(&format!("admin: {{ listen: \"{a}\" }}\n"))
            }
            Some(a) => yaml.push_str(&format!(
                "admin: {{ listen: \"{a}\", {} }}\n",
                opts.admin_yaml
            )),
            None => yaml.push_str("admin: { listen: \"off\" }\n"),
        }
        std::fs::write(&self.config, yaml).expect("write config");
    }

    /// Starts the process and waits until it accepts connections. When its port turns out to
    /// be taken, the config is rewritten with a new port and it starts again (at most
    /// [`START_TRIES`] times); any other early exit panics with the router's stderr.
    pub fn spawn(&mut self) {
        for attempt in 1..=START_TRIES {
            match self.spawn_once() {
                Start::Listening => return,
                Start::PortTaken(why) if attempt < START_TRIES => {
                    eprintln!("harness: {why}; starting again on a new port");
                    self.move_to_a_new_port();
                }
                Start::PortTaken(why) => {
                    panic!("router did not get a free port in {START_TRIES} tries: {why}")
                }
            }
        }
    }

    /// One start: waits until the router itself listens on `self.addr` (and on the admin
    /// address, which its own service binds a moment later, when there is one).
    fn spawn_once(&mut self) -> Start {
        self.kill();
        self.stderr.lock().expect("stderr lock").clear();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("router starts");
        // Ends when the process's stderr closes, i.e. when the process is gone.
        self.stderr_reader = Some(read_stderr(&mut child, self.stderr.clone()));
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let admin_listens = self.admin_addr.is_none_or(|a| {
                listens_on(pid, a.port())
                    && TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok()
            });
            if listens_on(pid, self.addr.port())
                && TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
                && admin_listens
            {
                return Start::Listening;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                // Let the reader collect the last words before looking at them.
                if let Some(t) = self.stderr_reader.take() {
                    let _ = t.join();
                }
                self.child = None;
                let err = self.stderr_text();
                if self.port_taken(&err) {
                    return Start::PortTaken(format!("router exited ({status}): {}", self.addr));
                }
                panic!("router exited early ({status}); its stderr:\n{err}");
            }
            if self.port_taken(&self.stderr_text()) {
                // Pingora keeps retrying a taken port for a long time: do not wait for it.
                self.kill();
                return Start::PortTaken(format!("{} was in use", self.addr));
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "router did not start listening on {} within {START_DEADLINE:?}; its stderr:\n{}",
                    self.addr,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running process's id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the current (or last) process wrote to stderr (the tail).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Whether the router's stderr says that its listen address is taken.
    fn port_taken(&self, stderr: &str) -> bool {
        let addrs: Vec<String> = std::iter::once(self.addr)
            .chain(self.admin_addr)
            .map(|a| a.to_string())
            .collect();
        stderr.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            addrs.iter().any(|a| l.contains(a)) && (l.contains("in use") || l.contains("addrinuse"))
        })
    }

    /// Rewrites the config's `listen:` line with a fresh port.
    fn move_to_a_new_port(&mut self) {
        let old = format!("listen: \"{}\"", self.addr);
        let text = std::fs::read_to_string(&self.config).expect("read config");
        assert!(text.contains(&old), "the config has no {old}");
        let port = free_port();
        self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        let new = format!("listen: \"{}\"", self.addr);
        let mut text = text.replacen(&old, &new, 1);
        if let Some(a) = self.admin_addr {
            let old = format!("admin: {{ listen: \"{a}\" }}");
            let moved = SocketAddr::from(([127, 0, 0, 1], free_port()));
            text = text.replacen(&old, &format!("admin: {{ listen: \"{moved}\" }}"), 1);
            self.admin_addr = Some(moved);
        }
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.stderr_reader.take() {
            let _ = t.join();
        }
    }

    /// Stops it with SIGTERM (graceful) and waits, bounded.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.stderr_reader.take() {
            let _ = t.join();
        }
    }

    /// A request to the admin listener with the admin key, a JSON body if given.
    pub fn admin_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).expect("json"));
        raw_request(
            self.admin_addr.expect("admin listener"),
            method,
            path.as_bytes(),
            &[
                ("Authorization", &basic(ADMIN)),
                ("Content-Type", "application/json"),
            ],
            body.as_deref(),
        )
    }

    /// GET with the admin key.
    pub fn get(&self, target: &str) -> Response {
        self.request(
            "GET",
            target.as_bytes(),
            &[("Authorization", &basic(ADMIN))],
        )
    }

    /// GET with a given key.
    pub fn get_as(&self, key: (&str, &str), target: &str) -> Response {
        self.request("GET", target.as_bytes(), &[("Authorization", &basic(key))])
    }

    /// A raw request.
    pub fn request(&self, method: &str, target: &[u8], headers: &[(&str, &str)]) -> Response {
        raw_request(self.addr, method, target, headers, None)
    }

    /// Waits until `f` holds, polling every 50 ms, at most `secs` seconds.
    pub fn wait_until(&self, secs: u64, what: &str, mut f: impl FnMut(&Router) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The cluster's bot list as JSON.
    pub fn bot_list(&self) -> Vec<serde_json::Value> {
        let r = self.get("/api/bot/list");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("bot list json")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` itself holds a socket listening on loopback `port` (and not some
/// other process that took the port meanwhile): its socket fds' inodes against
/// `/proc/net/tcp`.
pub fn listens_on(pid: u32, port: u16) -> bool {
    // 0A = LISTEN.
    holds_socket(
        pid,
        &proc_net_addr(SocketAddr::from(([127, 0, 0, 1], port))),
        None,
        "0A",
    )
}

/// An IPv4 address as `/proc/net/tcp` writes it: one native-endian (here little) u32, the
/// port in hex.
fn proc_net_addr(a: SocketAddr) -> String {
    match a.ip() {
        std::net::IpAddr::V4(ip) => {
            let [w, x, y, z] = ip.octets();
            format!("{z:02X}{y:02X}{x:02X}{w:02X}:{:04X}", a.port())
        }
        std::net::IpAddr::V6(a) => panic!("/proc/net/tcp holds IPv4 sockets, not {a}"),
    }
}

/// Whether process `pid` has accepted `client`'s connection (holds the server side as an
/// open fd; a connection still in the listener's queue has no inode yet).
pub fn holds_connection(pid: u32, client: &TcpStream) -> bool {
    let (Ok(local), Ok(peer)) = (client.local_addr(), client.peer_addr()) else {
        return false;
    };
    // 01 = ESTABLISHED; the server side's local address is the client's peer.
    holds_socket(pid, &proc_net_addr(peer), Some(&proc_net_addr(local)), "01")
}

/// Whether `pid` holds an IPv4 TCP socket with local address `local` (and remote `remote`)
/// in state `state`, both as `/proc/net/tcp` spells them.
fn holds_socket(pid: u32, local: &str, remote: Option<&str>, state: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // sl local_address rem_address st ... inode (10th field).
        f.len() > 9
            && f[1] == local
            && remote.is_none_or(|r| f[2] == r)
            && f[3] == state
            && inodes.iter().any(|i| i == f[9])
    })
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ts3ab\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        req.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    s.write_all(&req).expect("write");
    read_response(&mut BufReader::new(s), method == "HEAD")
}

/// Reads one HTTP/1.1 response.
pub fn read_response(r: &mut impl BufRead, head: bool) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("header");
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if head || status == 204 || status == 304 {
        // No body.
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .expect("hex");
            if n == 0 {
                let mut end = String::new();
                let _ = r.read_line(&mut end);
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            r.read_exact(&mut crlf).expect("crlf");
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).expect("body");
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Response {
        status,
        headers,
        body,
    }
}

/// The raw targets a node received, as strings.
pub fn targets(node: &FakeNode) -> Vec<String> {
    node.requests()
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.target).into_owned())
        .collect()
}

/// The raw targets a node received that were not the router's own polling (`bot/list`, and
/// `system/info` for the node's start time).
pub fn client_targets(node: &FakeNode) -> Vec<String> {
    targets(node)
        .into_iter()
        .filter(|t| t != "/api/bot/list" && t != "/api/system/info")
        .collect()
}

/// Waits until `f` holds, polling every 20 ms, at most `secs` seconds; panics naming `what`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many `bot/list` requests `node` has received (the router's polls, plus any fan-out of
/// a client's `bot/list`).
pub fn list_requests(node: &FakeNode) -> usize {
    targets(node)
        .iter()
        .filter(|t| *t == "/api/bot/list")
        .count()
}

/// Waits until `node` has received every target in `wanted` and, after the last of them, one
/// more `bot/list` poll. The answers themselves cannot be seen from here, but the fake node
/// answers at once and the router polls on its own clock: a poll that arrives after the
/// requests means the router has carried on past them for a poll interval.
pub fn wait_for_requests(node: &FakeNode, secs: u64, what: &str, wanted: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = targets(node);
        let last = wanted
            .iter()
            .map(|w| seen.iter().position(|t| t == w))
            .collect::<Option<Vec<usize>>>()
            .and_then(|p| p.into_iter().max());
        if last.is_some_and(|i| seen[i + 1..].iter().any(|t| t == "/api/bot/list")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: wanted {wanted:?}, the node got {:?}",
            client_targets(node)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The target with which the router reads a new bot's identity (local id `lid`).
pub fn identity_read(lid: u32) -> String {
    format!("/api/bot/use/{lid}/(/settings/get/connect.identity)")
}

/// A router process that was replaced by a graceful upgrade ([`Router::upgrade_begin`]);
/// killed when dropped, if it still runs.
pub struct OldProcess {
    /// The old process.
    pub child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl OldProcess {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until it exited, at most `limit`; returns how long that took (None: still
    /// running after `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.child.try_wait().ok().flatten().is_some() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for OldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// Echoes a child's stderr into `sink` (and the test's stderr) until it closes.
fn read_stderr(child: &mut Child, sink: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    let pipe = child.stderr.take().expect("stderr pipe");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let mut s = sink.lock().expect("stderr lock");
            s.push_str(&line);
            s.push('\n');
            if s.len() > 2 * STDERR_KEEP {
                let cut = s.len() - STDERR_KEEP;
                let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                s.drain(..cut);
            }
        }
    })
}

impl Router {
    /// Sends the running process a signal (`"TERM"`, `"QUIT"`, ...).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("router runs");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Replaces `from` by `to` in the config file (once; it must be there).
    pub fn edit_config(&mut self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        assert!(text.contains(from), "the config has no {from}");
        std::fs::write(&self.config, text.replacen(from, to, 1)).expect("write config");
    }

    /// The router's temporary directory (config, data, sockets).
    pub fn dir_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .expect("dir")
    }

    /// The hand-over socket's path (`server.upgrade_sock` + `.handover`).
    pub fn handover_socket(&self) -> PathBuf {
        let dir = self.dir.as_ref().map(|d| d.path()).expect("dir");
        dir.join("upgrade.sock.handover")
    }

    /// Starts a graceful upgrade: a new process with `serve --upgrade` on the same config,
    /// then (once it listens on the hand-over socket) SIGQUIT to the old one. The new process
    /// becomes this router's process; the old one is returned (it exits by itself).
    pub fn upgrade_begin(&mut self) -> OldProcess {
        self.upgrade_begin_with_env(&[])
    }

    /// Like [`Router::upgrade_begin`], with more environment for the new process (e.g.
    /// `NOTIFY_SOCKET`).
    pub fn upgrade_begin_with_env(&mut self, env: &[(&str, &str)]) -> OldProcess {
        let old = self.child.take().expect("router runs");
        let old_reader = self.stderr_reader.take();
        let inode = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).map(|m| m.ino()).ok()
        };
        let socket = self.handover_socket();
        let before = inode(&socket);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
            .args(["serve", "--upgrade", "--config"])
            .arg(&self.config)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("new router starts");
        self.stderr_reader = Some(read_stderr(&mut child, self.stderr.clone()));
        self.child = Some(child);
        let old = OldProcess {
            child: old,
            reader: old_reader,
        };
        // The new process binds its hand-over socket just before it waits for the sockets;
        // Pingora's old process retries sending them for a few seconds.
        wait_for(10, "the new process's hand-over socket", || {
            inode(&socket).is_some() && inode(&socket) != before
        });
        let ok = Command::new("kill")
            .arg("-QUIT")
            .arg(old.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -QUIT {} failed", old.pid());
        old
    }
}

/// Makes a secrets key file with `ts3ab-lb store new-key --out path`.
pub fn new_secrets_key(path: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["store", "new-key", "--out"])
        .arg(path)
        .output()
        .expect("run new-key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
