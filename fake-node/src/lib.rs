//! A fake TS3AudioBot node: an HTTP/1.1 server that answers the Web API the way a real
//! TS3AudioBot 0.12 does (per `ts3audiobot-api.md`), with controls for tests, demos and
//! benchmarks.
//!
//! Owns: the public API ([`FakeNode`], its config and snapshots), the node's lifetime (its own
//! thread and tokio runtime, so it works from plain tests and from any async runtime), the
//! listener's kill/revive, process restarts (in place, or a new `FakeNode` on the same data
//! dir), request recording, and the fault/latency knobs.
//! Does not own: anything of the router; it shares no code with it (its own parser is the
//! point: an independent reading of the spec to cross-check against).

mod auth;
mod botcmds;
mod commands;
mod control;
mod corecmds;
mod exec;
mod faults;
mod http;
mod parser;
mod player;
mod playlists;
mod settings;
mod state;
mod store;
#[cfg(test)]
mod tests;
mod tsclient;
mod value;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Semaphore};

use state::{ConfRef, NodeState, SysInfo};
pub use tsclient::TsTiming;

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

/// A failure to inject into every non-control request (or only some, see
/// [`FakeNode::set_fault_on`]).
///
/// The first three are a TS3AudioBot that fails; the others are a node that answers garbage
/// (the bytes are in `faults`): what a broken build, a proxy in between, another server on
/// the port or a crash mid-write would send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A TS3AudioBot-shaped 500 (ErrorCode 0, "Unknown").
    Status500,
    /// Read the request, never answer.
    Hang,
    /// Close the connection without answering.
    Close,
    /// 200 with TS3AudioBot's `application/json` content type and a body that is not JSON.
    InvalidJson,
    /// 200 with valid JSON of the wrong shape for every command: one object (not the array
    /// `bot/list` gives) shaped like a BotInfo with the wrong types (`"Id":"seven"`,
    /// `"Status":true`).
    WrongTypes,
    /// 200 `application/json` with a body of `bytes` bytes (a JSON array of zeros), written
    /// in pieces from one small buffer so the node never holds it; with a Content-Length when
    /// `declared`, else close-delimited (`Connection: close`, no length, no chunking).
    Huge {
        /// Body size.
        bytes: u64,
        /// Whether the head announces it.
        declared: bool,
    },
    /// Bytes that are not HTTP at all (an SSH server's banner), then close.
    NotHttp,
    /// A 200 head with a Content-Length and part of the body, then a reset (SO_LINGER 0,
    /// close): a node that crashed mid-write.
    ResetMidAnswer,
    /// A valid HTTP 200 `text/html` page from another server (nginx's default welcome page),
    /// as when the node's port is taken by a web server.
    WrongServer,
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
    /// Where templates live on disk, as `DIR/bots/<name>/bot.toml` (TOML of the values set
    /// on the template, identity included), written on every change. At start the node loads
    /// them (a malformed file is reported on stderr and skipped) and starts the `run = true`
    /// ones, so a node started again on the same dir behaves like a restarted TS3AudioBot.
    /// `None`: templates live in memory only and die with the node.
    pub data_dir: Option<PathBuf>,
    /// Templates to create at start if none of that name exists (in the data dir, or at all
    /// without one), before `run = true` templates are started: a name and settings encoded
    /// as for [`FakeNode::add_template`], e.g. `("music", vec![("run", "true")])`.
    pub initial_templates: Vec<(String, Vec<(String, String)>)>,
    /// The shared "TeamSpeak server" (a registry a test runs) every running bot connects to
    /// as a TeamSpeak client (see `tsclient`): joins, pings, leaves, reconnects like
    /// TS3AudioBot. `None`: bots talk to no server.
    pub ts_server: Option<SocketAddr>,
    /// TeamSpeak and TS3AudioBot times (ping, timeout, reconnect schedules) are divided by
    /// this, so tests run in seconds; 1 = real time.
    pub ts_time_scale: u32,
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
            data_dir: None,
            initial_templates: Vec::new(),
            ts_server: None,
            ts_time_scale: 1,
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
    /// When set, the latency applies only to command texts containing these bytes.
    latency_only: Mutex<Option<Vec<u8>>>,
    /// The fault's code (see `Shared::set_fault`); 0 = none.
    fault: AtomicU8,
    /// `Fault::Huge`'s size (its `declared` flag is in the code).
    huge_bytes: AtomicU64,
    /// When set, the fault applies only to request targets containing these bytes.
    fault_only: Mutex<Option<Vec<u8>>>,
    conns: AtomicUsize,
    /// When set, the answers to requests whose target contains these bytes are held (the
    /// command has run) until [`FakeNode::release`].
    hold: Mutex<Option<Vec<u8>>>,
    /// Answers held since the node started.
    held: AtomicUsize,
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
        let huge = |declared| Fault::Huge {
            bytes: self.huge_bytes.load(Ordering::Relaxed),
            declared,
        };
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(Fault::Status500),
            2 => Some(Fault::Hang),
            3 => Some(Fault::Close),
            4 => Some(Fault::InvalidJson),
            5 => Some(Fault::WrongTypes),
            6 => Some(huge(true)),
            7 => Some(huge(false)),
            8 => Some(Fault::NotHttp),
            9 => Some(Fault::ResetMidAnswer),
            10 => Some(Fault::WrongServer),
            _ => None,
        }
    }

    /// Whether the answer to `target` is to be held now.
    fn holds(&self, target: &[u8]) -> bool {
        match &*self.hold.lock() {
            Some(h) => target.windows(h.len().max(1)).any(|w| w == h.as_slice()),
            None => false,
        }
    }

    /// The fault for a request to `target` (see [`FakeNode::set_fault_on`]).
    fn fault_for(&self, target: &[u8]) -> Option<Fault> {
        let f = self.fault()?;
        match &*self.fault_only.lock() {
            Some(only)
                if !target
                    .windows(only.len().max(1))
                    .any(|w| w == only.as_slice()) =>
            {
                None
            }
            _ => Some(f),
        }
    }

    /// Two atomics rather than a lock: every request reads the fault (benchmarks too). A
    /// reader racing a change from one `Huge` size to another may see the old size once.
    fn set_fault(&self, f: Option<Fault>) {
        let v = match f {
            None => 0,
            Some(Fault::Status500) => 1,
            Some(Fault::Hang) => 2,
            Some(Fault::Close) => 3,
            Some(Fault::InvalidJson) => 4,
            Some(Fault::WrongTypes) => 5,
            Some(Fault::Huge { bytes, declared }) => {
                self.huge_bytes.store(bytes, Ordering::Relaxed);
                if declared {
                    6
                } else {
                    7
                }
            }
            Some(Fault::NotHttp) => 8,
            Some(Fault::ResetMidAnswer) => 9,
            Some(Fault::WrongServer) => 10,
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

    /// Runs `f` on the state and then writes any template change to the data dir, under the
    /// same lock. Every entry point that may change templates goes through here.
    fn mutate<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        let mut st = self.state.lock();
        let r = f(&mut st);
        st.persist();
        r
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
        json!({ "name": self.name, "starttime": st.starttime(), "bots": bots, "templates": templates })
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

fn add_template<S: AsRef<str>>(st: &mut NodeState, name: &str, settings: &[(S, S)]) {
    st.templates.entry(name.to_string()).or_default();
    for (path, value) in settings {
        let _ = st.conf_set(
            &ConfRef::Template(name.to_string()),
            path.as_ref(),
            Some(value.as_ref()),
        );
    }
}

/// The state of a node that has just started: templates from the data dir plus the initial
/// ones, with the `run = true` ones running from id 0 and any identities they were given
/// already written back.
fn initial_state(cfg: &FakeNodeConfig) -> std::io::Result<NodeState> {
    let mut st = NodeState::new(cfg.connect_delay, cfg.bot_save_works);
    if let Some(dir) = &cfg.data_dir {
        let (store, templates) = store::Store::open(dir)?;
        st.attach_store(store, templates);
    }
    for (name, settings) in &cfg.initial_templates {
        settings::check_name(name).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad initial template name {name:?}: {e}"),
            )
        })?;
        if !st.templates.contains_key(name) {
            add_template(&mut st, name, settings);
        }
    }
    st.autostart(Instant::now());
    st.persist();
    Ok(st)
}

/// A running fake node. Dropping it stops it (bounded in time).
pub struct FakeNode {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    ts_stop: Arc<AtomicBool>,
    ts_thread: Option<JoinHandle<()>>,
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
        // Before the runtime exists, so a bad data dir fails the start and leaves nothing behind.
        let state = initial_state(&cfg)?;
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
            state: Mutex::new(state),
            records: Mutex::new(VecDeque::new()),
            latency_ns: AtomicU64::new(0),
            latency_only: Mutex::new(None),
            fault: AtomicU8::new(0),
            huge_bytes: AtomicU64::new(0),
            fault_only: Mutex::new(None),
            conns: AtomicUsize::new(0),
            hold: Mutex::new(None),
            held: AtomicUsize::new(0),
            listening: Mutex::new(None),
            handle,
        });
        let ts_stop = Arc::new(AtomicBool::new(false));
        let ts_thread = match cfg.ts_server {
            Some(server) => {
                let (shared, stop) = (shared.clone(), ts_stop.clone());
                let timing = TsTiming::scaled(cfg.ts_time_scale);
                Some(
                    std::thread::Builder::new()
                        .name(format!("fake-node-ts-{}", cfg.name))
                        .spawn(move || tsclient::run(shared, server, timing, stop))?,
                )
            }
            None => None,
        };
        let node = FakeNode {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
            ts_stop,
            ts_thread,
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
        *self.shared.latency_only.lock() = None;
        self.shared.latency_ns.store(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Like [`FakeNode::set_latency`], but only for `/api` requests whose command text
    /// contains `only` (e.g. `"bot/connect"`): a slow create while polls stay fast.
    pub fn set_latency_on(&self, d: Duration, only: &str) {
        *self.shared.latency_only.lock() = Some(only.as_bytes().to_vec());
        self.shared.latency_ns.store(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn set_fault(&self, f: Option<Fault>) {
        *self.shared.fault_only.lock() = None;
        self.shared.set_fault(f);
    }

    /// Like [`FakeNode::set_fault`], but only for requests whose target contains `only`
    /// (e.g. `"bot/connect"`); other requests are answered as usual.
    pub fn set_fault_on(&self, f: Option<Fault>, only: &str) {
        *self.shared.fault_only.lock() = Some(only.as_bytes().to_vec());
        self.shared.set_fault(f);
    }

    /// From now on, the answers to requests whose target contains `pattern` are held: the
    /// command runs, its answer waits until [`FakeNode::release`] (or the connection or the
    /// node goes away). A test uses it to stop a caller between two of its steps.
    pub fn hold(&self, pattern: &str) {
        *self.shared.hold.lock() = Some(pattern.as_bytes().to_vec());
    }

    /// Ends [`FakeNode::hold`]: held answers go out, new ones are not held.
    pub fn release(&self) {
        *self.shared.hold.lock() = None;
    }

    /// How many answers have been held since the node started.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
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

    /// A process restart: running bots stop, temporary bots (and their identities) are gone,
    /// templates stay (with their identities), `run = true` ones start again with ids from 0,
    /// and `system info`'s `starttime` changes. Templates are taken as they are in memory
    /// (with a data dir, the same as on disk); a bot.toml edited behind the node's back is
    /// read only by a new `FakeNode` on that dir. The listener stays up (use
    /// [`FakeNode::kill`] and [`FakeNode::revive`] around it for downtime).
    pub fn restart(&self) {
        self.shared.mutate(|st| st.restart(Instant::now()));
    }

    /// What `system info` reports as `starttime` (new after every restart).
    pub fn starttime(&self) -> String {
        self.shared.state.lock().starttime().to_string()
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
    /// With a data dir the template is written to disk too (a name outside
    /// `[A-Za-z0-9_-]{1,64}` is then kept in memory only, with a message on stderr).
    pub fn add_template(&self, name: &str, settings: &[(&str, &str)]) {
        self.shared.mutate(|st| add_template(st, name, settings));
    }

    /// Starts a temporary bot like `bot connect to` (a bot created behind the router's back).
    pub fn connect_bot(&self, address: &str) -> u32 {
        self.shared
            .mutate(|st| st.connect_to(address, None, Instant::now()))
    }

    pub fn disconnect_bot(&self, id: u32) {
        self.shared.mutate(|st| st.stop_bot(id));
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
        self.ts_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ts_thread.take() {
            let _ = t.join();
        }
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
