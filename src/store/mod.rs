//! Durable router state behind the [`Store`] trait, and the worker that owns the store.
//!
//! Owns: the record types (what the router must remember to rebuild the cluster view and,
//! later, to rebuild a dead node's bots elsewhere), the [`Store`] trait every backend
//! implements (the embedded one here; MongoDB later), and [`StoreHandle`], the only way the
//! rest of the router talks to a store: requests go over a channel to a dedicated thread with
//! its own runtime, so the request path never runs database code and a database client stays on
//! the runtime it was created on.
//! Does not own: the in-memory view (`cluster`), which is the source every request reads.
//!
//! Writes are batches of [`Op`]s applied atomically and in submission order. The worker drains
//! whatever is queued into one batch, so many concurrent writers share one commit (group
//! commit) instead of paying one fsync each.

pub mod embedded;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Who a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May use the bot API; never sees node credentials or identity keys.
    User,
    /// May also run node-wide commands (`rights/reload`, `settings/global/*`, `plugin/*`,
    /// `eval`) and read secrets.
    Admin,
}

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened (missing permissions, corrupt file, locked by another
    /// router).
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
    /// A read or write failed.
    #[error("store operation failed: {0}")]
    Io(String),
    /// A stored record could not be decoded.
    #[error("store record {what} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// The store did not answer in time.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store worker has stopped.
    #[error("the store worker has stopped")]
    Closed,
}

pub use crate::protocol::settings::Identity;

/// How long the router waits for one of its own writes that an answer depends on (a new
/// bot's record, a move, a fence cleared): long enough for a slow disk or a replica set
/// election, short enough that no client waits past its own timeout.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// Everything the router knows about one bot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotRecord {
    /// Cluster-wide id (never reused).
    pub id: u32,
    /// Name of the node it runs on.
    pub node: String,
    /// Its id on that node.
    pub local_id: u32,
    /// Template name (None for temporary bots).
    pub template: Option<String>,
    /// TeamSpeak server address.
    pub address: Option<String>,
    /// Server password given at connect. Secret.
    pub server_password: Option<String>,
    /// Channel (path or `/<id>`).
    pub channel: Option<String>,
    /// Nickname.
    pub nickname: Option<String>,
    /// TeamSpeak identity, read once after creation.
    pub identity: Option<Identity>,
    /// Milliseconds since the Unix epoch when the router first saw it.
    pub created_ms: u64,
    /// The node process's `starttime` (`system/info`) when the router last saw the bot run
    /// there. A bot that is gone while the node's start time differs went down with a
    /// process restart (and is brought back); one gone under the same start time was
    /// stopped on purpose. None: not known (records older than this field).
    #[serde(default)]
    pub node_started: Option<String>,
}

impl fmt::Debug for BotRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotRecord")
            .field("id", &self.id)
            .field("node", &self.node)
            .field("local_id", &self.local_id)
            .field("template", &self.template)
            .field("address", &self.address)
            .field(
                "server_password",
                &self.server_password.as_ref().map(|_| "<redacted>"),
            )
            .field("channel", &self.channel)
            .field("nickname", &self.nickname)
            .field("identity", &self.identity)
            .finish()
    }
}

/// A bot template (`bots/<name>/bot.toml` on exactly one node).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Template name.
    pub name: String,
    /// Node that holds it.
    pub node: String,
    /// Every setting written through the router (`path` → raw value as sent to the node).
    pub settings: BTreeMap<String, String>,
    /// The identity of the bot that last ran it.
    pub identity: Option<Identity>,
}

impl fmt::Debug for TemplateRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateRecord")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .field("identity", &self.identity)
            .finish()
    }
}

/// A copy of a bot left on a node that was down when failover rebuilt the bot elsewhere. When
/// that node answers again, the router stops the copy (and deletes its template there) before
/// it uses the node, so one TeamSpeak identity never runs twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRecord {
    /// The node the copy was left on.
    pub node: String,
    /// The bot's cluster id (now running elsewhere).
    pub bot: u32,
    /// Its local id on that node when it went down.
    pub local_id: u32,
    /// Its template name there (None: a temporary bot).
    pub template: Option<String>,
    /// Its server address there (tells a temporary copy from a stranger in the same slot).
    pub address: Option<String>,
}

/// What a node is used for (HAProxy's `set server state ready|drain|maint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new bots; its bots run.
    #[default]
    Ready,
    /// No new bots; its bots keep running and stay reachable.
    Drain,
    /// A planned restart: no new bots, requests for its bots get a fast 503 with
    /// `Retry-After`, failover is suspended for it.
    Maint,
}

impl NodeState {
    /// The lowercase name (`ready`, `drain`, `maint`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Drain => "drain",
            NodeState::Maint => "maint",
        }
    }
}

/// A node added at run time, or the run-time changes to a node of the config file
/// (`from_config`: those win over the file's values at start).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique name.
    pub name: String,
    /// `http://host:port`.
    pub url: String,
    /// The node's `uid:token`. Secret.
    pub auth: Option<String>,
    /// Bot capacity.
    pub capacity: u32,
    /// Whether new bots are kept off it (kept for records written before `state`).
    pub draining: bool,
    /// Ready, drain or maint.
    #[serde(default)]
    pub state: NodeState,
    /// The node is defined in the config file; this record holds its run-time changes.
    #[serde(default)]
    pub from_config: bool,
}

impl NodeRecord {
    /// The state, also for records written before `state` existed.
    pub fn effective_state(&self) -> NodeState {
        if self.state == NodeState::Ready && self.draining {
            NodeState::Drain
        } else {
            self.state
        }
    }
}

impl fmt::Debug for NodeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRecord")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("capacity", &self.capacity)
            .field("state", &self.effective_state())
            .field("from_config", &self.from_config)
            .finish()
    }
}

/// An API key added at run time. Only a digest of its secret is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key name (the Basic-auth user id).
    pub name: String,
    /// The secret itself, in records written before digests (read, never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// BLAKE2s-256 of the secret, hex.
    #[serde(default)]
    pub digest: Option<String>,
    /// Role.
    pub role: Role,
    /// Milliseconds since the Unix epoch when it was created.
    #[serde(default)]
    pub created_ms: u64,
    /// When it was last used (kept at a coarse grain, see the admin layer).
    #[serde(default)]
    pub last_used_ms: Option<u64>,
}

/// One change made through the admin interface: who, what, when, from where, outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number (ascending, never reused).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The key name (or session's key) that made it.
    pub who: String,
    /// The client address.
    pub from: String,
    /// What was done, e.g. `POST /admin/api/nodes`.
    pub action: String,
    /// What it was done to (a node, key, bot), if any.
    pub target: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// The outcome in words (never a secret).
    pub outcome: String,
}

/// A long-running admin operation (evacuate, move, rebalance), so a router restart can
/// resume or end it. Its shape belongs to the operations module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Operation id.
    pub id: u64,
    /// Kind, progress and state.
    pub data: serde_json::Value,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Everything in a store, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bots by id.
    pub bots: Vec<BotRecord>,
    /// Templates.
    pub templates: Vec<TemplateRecord>,
    /// Nodes added at run time.
    pub nodes: Vec<NodeRecord>,
    /// Keys added at run time.
    pub keys: Vec<KeyRecord>,
    /// Copies to stop on nodes that come back.
    pub fences: Vec<FenceRecord>,
    /// The audit trail, oldest first.
    pub audit: Vec<AuditRecord>,
    /// Admin operations, by id.
    pub operations: Vec<OperationRecord>,
    /// Ids below this value may have been handed out; the next one is at least this.
    pub id_high_water: u32,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace a bot.
    PutBot(BotRecord),
    /// Remove a bot.
    DeleteBot(u32),
    /// Insert or replace a template.
    PutTemplate(TemplateRecord),
    /// Remove a template.
    DeleteTemplate(String),
    /// Insert or replace a node.
    PutNode(NodeRecord),
    /// Remove a node.
    DeleteNode(String),
    /// Insert or replace a key.
    PutKey(KeyRecord),
    /// Remove a key.
    DeleteKey(String),
    /// Insert or replace a fence (keyed by node and bot).
    PutFence(FenceRecord),
    /// Remove a fence: (node, bot).
    DeleteFence(String, u32),
    /// Raise the id high-water mark (never lowers it).
    RaiseIdHighWater(u32),
    /// Append to the audit trail.
    PutAudit(AuditRecord),
    /// Insert or replace an operation.
    PutOperation(OperationRecord),
    /// Remove an operation.
    DeleteOperation(u64),
}

/// A storage backend. Implementations may block inside these methods: they run on the store
/// worker's own thread, never on a request path.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads everything.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Applies a batch atomically (all or nothing), in order.
    async fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
}

enum Request {
    Load(oneshot::Sender<Result<Snapshot, StoreError>>),
    Apply(Vec<Op>, Option<oneshot::Sender<Result<(), StoreError>>>),
}

/// The router's handle to the store worker. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::UnboundedSender<Request>,
}

/// How many queued requests one commit may absorb.
const MAX_BATCH: usize = 512;

impl StoreHandle {
    /// Starts the worker thread (with its own single-threaded runtime) that owns `store`.
    pub fn spawn(store: Box<dyn Store>) -> Result<StoreHandle, StoreError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the store runtime: {e}")))?;
        std::thread::Builder::new()
            .name("ts3ab-store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(first) = rx.recv().await {
                        let mut ops = Vec::new();
                        let mut waiters = Vec::new();
                        let mut next = Some(first);
                        let mut taken = 0;
                        while let Some(req) = next.take() {
                            match req {
                                Request::Load(reply) => {
                                    // Flush what is queued before reading, so a load sees
                                    // every write submitted before it.
                                    commit(&*store, &mut ops, &mut waiters).await;
                                    let _ = reply.send(store.load().await);
                                }
                                Request::Apply(batch, reply) => {
                                    ops.extend(batch);
                                    waiters.extend(reply);
                                }
                            }
                            taken += 1;
                            if taken < MAX_BATCH {
                                next = rx.try_recv().ok();
                            }
                        }
                        commit(&*store, &mut ops, &mut waiters).await;
                    }
                });
            })
            .map_err(|e| StoreError::Io(format!("cannot start the store thread: {e}")))?;
        Ok(StoreHandle { tx })
    }

    /// Reads everything (waits for queued writes first).
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Load(reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues writes without waiting. Failures are logged by the worker.
    pub fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if self.tx.send(Request::Apply(ops, None)).is_err() {
            log::error!("store worker has stopped; a write was dropped");
        }
    }

    /// Writes and waits until the batch is durable, at most `timeout`.
    pub async fn commit(&self, ops: Vec<Op>, timeout: Duration) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Apply(ops, Some(reply)))
            .map_err(|_| StoreError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }

    /// Waits until everything submitted so far is durable.
    pub async fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        self.commit(Vec::new(), timeout).await
    }
}

async fn commit(
    store: &dyn Store,
    ops: &mut Vec<Op>,
    waiters: &mut Vec<oneshot::Sender<Result<(), StoreError>>>,
) {
    if ops.is_empty() && waiters.is_empty() {
        return;
    }
    let result = if ops.is_empty() {
        Ok(())
    } else {
        store.apply(ops).await
    };
    if let Err(e) = &result {
        log::error!("store write of {} operation(s) failed: {e}", ops.len());
    }
    ops.clear();
    for w in waiters.drain(..) {
        let _ = w.send(result.clone());
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let id = Identity {
            key: "SECRETKEY".into(),
            offset: 5,
            level: -1,
        };
        let bot = BotRecord {
            id: 1,
            node: "n".into(),
            local_id: 0,
            template: None,
            address: Some("a".into()),
            server_password: Some("SECRETPW".into()),
            channel: None,
            nickname: None,
            identity: Some(id.clone()),
            created_ms: 0,
            node_started: None,
        };
        let t = TemplateRecord {
            name: "t".into(),
            node: "n".into(),
            settings: [("connect.identity.key".to_string(), "SECRETKEY".to_string())].into(),
            identity: Some(id),
        };
        let node = NodeRecord {
            name: "n".into(),
            url: "u".into(),
            auth: Some("uid:SECRETTOK".into()),
            capacity: 1,
            draining: false,
            state: NodeState::Ready,
            from_config: false,
        };
        let key = KeyRecord {
            name: "k".into(),
            secret: Some("SECRETKEYSECRET".into()),
            digest: Some("SECRETDIGEST".into()),
            role: Role::User,
            created_ms: 0,
            last_used_ms: None,
        };
        let all = format!("{bot:?}{t:?}{node:?}{key:?}");
        assert!(!all.contains("SECRET"), "{all}");
    }
}
