//! A fake TS3AudioBot node: an HTTP/1.1 server that answers the Web API the way a real
//! TS3AudioBot 0.12 does (per `ts3audiobot-api.md`), with controls for tests, demos and
//! benchmarks.
//!
//! Owns: the public API ([`FakeNode`], its config and snapshots), the node's lifetime (its own
//! thread and tokio runtime, so it works from plain tests and from any async runtime), the
//! listener's kill/revive, request recording, and the fault/latency knobs.
//! Does not own: anything of the router; it shares no code with it (its own parser is the
//! point: an independent reading of the spec to cross-check against).

mod auth;
mod botcmds;
mod commands;
mod control;
mod corecmds;
mod exec;
mod http;
mod parser;
mod player;
mod playlists;
mod settings;
mod state;
#[cfg(test)]
mod tests;
mod value;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Semaphore};

use state::{ConfRef, NodeState, SysInfo};

/// What anonymous API callers (no `Authorization` header) may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnonymousRights {
    /// Everything (like a rights.toml rule matching the caller's IP with `"+" = "*"`).
    All,
    /// The default rights.toml root `"+"` set (help, version, song, json, bot use, ...).
    Default,
    /// Nothing (`"+" = []`).
    None,
}

/// A failure to inject into every non-control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A TS3AudioBot-shaped 500 (ErrorCode 0, "Unknown").
    Status500,
    /// Read the request, never answer.
    Hang,
    /// Close the connection without answering.
    Close,
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct FakeNodeConfig {
    /// Shown on the WebInterface page and in `/__fake/state`.
    pub name: String,
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The one API token, as `"uid:token"`; `None` = no tokens exist.
    pub auth: Option<String>,
    pub anonymous: AnonymousRights,
    /// How long a new bot stays "connecting" (Status 1) before it is connected (2).
    pub connect_delay: Duration,
    /// Whether `bot save` succeeds (TS3AudioBot's normally fails, see the spec 3.3).
    pub bot_save_works: bool,
    /// Added to every `/api` request, inside the concurrency limit.
    pub service_time: Duration,
    /// `/api` requests processed at once; others queue.
    pub max_concurrency: Option<usize>,
}

impl Default for FakeNodeConfig {
    fn default() -> Self {
        FakeNodeConfig {
            name: "fake".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: None,
            anonymous: AnonymousRights::All,
            connect_delay: Duration::ZERO,
            bot_save_works: false,
            service_time: Duration::ZERO,
            max_concurrency: None,
        }
    }
}

/// A request as the node received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target, byte for byte.
    pub target: Vec<u8>,
    pub authorization: Option<String>,
    /// All headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

/// A running bot, as a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeBot {
    pub id: u32,
    /// Template name; `None` for temporary bots.
    pub name: Option<String>,
    /// BotInfo.Server (the address it connected with; `None` when empty).
    pub server: Option<String>,
    /// 1 connecting, 2 connected.
    pub status: u8,
    pub identity_key: String,
    pub identity_offset: u64,
    /// The TS UID derived from the key.
    pub uid: String,
    pub nickname: String,
    pub channel: u64,
    pub server_password: String,
    pub volume: f32,
    /// The link that is on, if any.
    pub playing: Option<String>,
    pub paused: bool,
}

/// At most this many requests are kept.
const MAX_RECORDS: usize = 10_000;

/// A recorded request: the raw head (one allocation) is parsed only when asked for.
struct Recorded {
    head: Box<[u8]>,
    body_len: usize,
}

struct Listening {
    stop: watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
}

/// State shared by the node's tasks and the [`FakeNode`] handle.
pub(crate) struct Shared {
    name: String,
    addr: SocketAddr,
    auth: Option<(String, String)>,
    anonymous: AnonymousRights,
    service_time: Duration,
    sem: Option<Arc<Semaphore>>,
    state: Mutex<NodeState>,
    records: Mutex<VecDeque<Recorded>>,
    latency_ns: AtomicU64,
    /// 0 none, 1 Status500, 2 Hang, 3 Close.
    fault: AtomicU8,
    conns: AtomicUsize,
    listening: Mutex<Option<Listening>>,
    handle: tokio::runtime::Handle,
}

impl Shared {
    fn record(&self, head: Box<[u8]>, body_len: usize) {
        let mut r = self.records.lock();
        if r.len() >= MAX_RECORDS {
            r.pop_front();
        }
        r.push_back(Recorded { head, body_len });
    }

    fn fault(&self) -> Option<Fault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(Fault::Status500),
            2 => Some(Fault::Hang),
            3 => Some(Fault::Close),
            _ => None,
        }
    }

    fn set_fault(&self, f: Option<Fault>) {
        let v = match f {
            None => 0,
            Some(Fault::Status500) => 1,
            Some(Fault::Hang) => 2,
            Some(Fault::Close) => 3,
        };
        self.fault.store(v, Ordering::Relaxed);
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.records
            .lock()
            .iter()
            .map(|r| parse_recorded(&r.head, r.body_len))
            .collect()
    }

    /// Starts accepting on `listener`.
    fn listen_on(self: &Arc<Self>, listener: std::net::TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let _enter = self.handle.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop, rx) = watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel();
        self.handle
            .spawn(http::accept_loop(self.clone(), listener, rx, done_tx));
        *self.listening.lock() = Some(Listening { stop, done });
        Ok(())
    }

    /// Tells the listener and every connection to stop; does not wait.
    fn signal_kill(&self) -> Option<std::sync::mpsc::Receiver<()>> {
        let l = self.listening.lock().take()?;
        let _ = l.stop.send(true);
        Some(l.done)
    }

    /// Stops listening and drops every connection, waiting (bounded) until both happened.
    fn kill_and_wait(&self) {
        if let Some(done) = self.signal_kill() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.conns.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn bots(&self) -> Vec<FakeBot> {
        let st = self.state.lock();
        let now = Instant::now();
        st.running()
            .map(|b| {
                let eff = st.effective(&ConfRef::Bot(b.id));
                let key = eff["connect"]["identity"]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                FakeBot {
                    id: b.id,
                    name: b.name().map(String::from),
                    server: (!b.address.is_empty()).then(|| b.address.clone()),
                    status: b.status(now),
                    uid: state::uid_of(&key),
                    identity_key: key,
                    identity_offset: eff["connect"]["identity"]["offset"]
                        .as_u64()
                        .unwrap_or_default(),
                    nickname: b.nickname.clone(),
                    channel: b.channel,
                    server_password: eff["connect"]["server_password"]["pw"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    volume: b.player.volume,
                    playing: b.player.current.as_ref().map(|c| c.item.link.clone()),
                    paused: b.player.paused,
                }
            })
            .collect()
    }

    fn state_json(&self) -> Value {
        let bots: Vec<Value> = self
            .bots()
            .into_iter()
            .map(|b| {
                json!({
                    "id": b.id, "name": b.name, "server": b.server, "status": b.status,
                    "identity_key": b.identity_key, "identity_offset": b.identity_offset, "uid": b.uid,
                    "nickname": b.nickname, "channel": b.channel, "volume": b.volume,
                    "playing": b.playing, "paused": b.paused,
                })
            })
            .collect();
        let st = self.state.lock();
        let templates: Vec<Value> =
            st.templates.iter().map(|(n, t)| json!({ "name": n, "settings": t.overlay, "playlists": t.playlists.keys().collect::<Vec<_>>() })).collect();
        json!({ "name": self.name, "bots": bots, "templates": templates })
    }
}

fn parse_recorded(head: &[u8], body_len: usize) -> RecordedRequest {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let mut parts = head[..line_end].splitn(3, |&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let target = parts.next().unwrap_or_default().to_vec();
    let mut raw = [httparse::EMPTY_HEADER; 96];
    let headers: Vec<(String, String)> =
        match httparse::parse_headers(head.get(line_end + 2..).unwrap_or_default(), &mut raw) {
            Ok(httparse::Status::Complete((_, hs))) => hs
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
    let authorization = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone());
    RecordedRequest {
        method,
        target,
        authorization,
        headers,
        body_len,
    }
}

/// A running fake node. Dropping it stops it (bounded in time).
pub struct FakeNode {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNode {
    /// Binds, starts the node's thread and runtime, and returns once it is listening.
    pub fn start(cfg: FakeNodeConfig) -> std::io::Result<FakeNode> {
        FakeNode::start_with_workers(cfg, 2)
    }

    /// Like [`FakeNode::start`] with a chosen number of runtime worker threads (benchmarks).
    pub fn start_with_workers(cfg: FakeNodeConfig, workers: usize) -> std::io::Result<FakeNode> {
        let listener = std::net::TcpListener::bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("fake-node-{}", cfg.name))
            .spawn(move || {
                // Deeply nested commands recurse; give the workers room like a .NET thread has.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers.max(1))
                    .thread_stack_size(16 * 1024 * 1024)
                    .thread_name("fake-node-worker")
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_millis(500));
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("fake node runtime thread died"))??;
        let auth = cfg.auth.as_deref().map(|a| {
            let (u, t) = a.split_once(':').unwrap_or((a, ""));
            (u.to_string(), t.to_string())
        });
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            addr,
            auth,
            anonymous: cfg.anonymous,
            service_time: cfg.service_time,
            sem: cfg
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            state: Mutex::new(NodeState::new(cfg.connect_delay, cfg.bot_save_works)),
            records: Mutex::new(VecDeque::new()),
            latency_ns: AtomicU64::new(0),
            fault: AtomicU8::new(0),
            conns: AtomicUsize::new(0),
            listening: Mutex::new(None),
            handle,
        });
        let node = FakeNode {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        node.shared.listen_on(listener)?;
        Ok(node)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Extra delay before each `/api` answer.
    pub fn set_latency(&self, d: Duration) {
        self.shared.latency_ns.store(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn set_fault(&self, f: Option<Fault>) {
        self.shared.set_fault(f);
    }

    /// Stops listening and drops all connections: connections are refused afterwards.
    pub fn kill(&self) {
        self.shared.kill_and_wait();
    }

    /// Listens again on the same port, with the same state.
    pub fn revive(&self) -> std::io::Result<()> {
        if self.shared.listening.lock().is_some() {
            return Ok(());
        }
        let listener = std::net::TcpListener::bind(self.shared.addr)?;
        self.shared.listen_on(listener)
    }

    /// A process restart: running bots stop, `run = true` templates start again with new
    /// lowest-free ids, temporary bots are gone.
    pub fn restart(&self) {
        self.shared.state.lock().restart(Instant::now());
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    pub fn clear_requests(&self) {
        self.shared.records.lock().clear();
    }

    pub fn bots(&self) -> Vec<FakeBot> {
        self.shared.bots()
    }

    /// Template names in enumeration order.
    pub fn templates(&self) -> Vec<String> {
        self.shared.state.lock().templates.keys().cloned().collect()
    }

    /// Creates (or extends) a template; values are encoded as for `settings set` (raw text
    /// for strings, JSON otherwise), e.g. `("connect.address", "ts.example.com")`,
    /// `("run", "true")`. Invalid settings are skipped.
    pub fn add_template(&self, name: &str, settings: &[(&str, &str)]) {
        let mut st = self.shared.state.lock();
        st.templates.entry(name.to_string()).or_default();
        for (path, value) in settings {
            let _ = st.conf_set(&ConfRef::Template(name.to_string()), path, Some(value));
        }
    }

    /// Starts a temporary bot like `bot connect to` (a bot created behind the router's back).
    pub fn connect_bot(&self, address: &str) -> u32 {
        self.shared
            .state
            .lock()
            .connect_to(address, None, Instant::now())
    }

    pub fn disconnect_bot(&self, id: u32) {
        self.shared.state.lock().stop_bot(id);
    }

    /// What `system info` reports.
    pub fn set_system_info(&self, memory: Vec<i64>, cpu: Vec<f64>, starttime: &str) {
        self.shared.state.lock().sysinfo = SysInfo {
            memory,
            cpu,
            starttime: starttime.to_string(),
        };
    }

    /// Stops the node (same as dropping it).
    pub fn stop(self) {}
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Some(done) = self.shared.signal_kill() {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
