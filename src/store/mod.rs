//! Durable router state behind the [`Store`] trait, and the worker that owns the store.
//!
//! Owns: the record types (what the router must remember to rebuild the cluster view and,
//! later, to rebuild a dead node's bots elsewhere), the [`Store`] trait every backend
//! implements (the embedded redb file in [`embedded`], MongoDB in [`mongo`]), and
//! [`StoreHandle`], the only way the rest of the router talks to a store: requests go over a
//! channel to a dedicated thread with its own runtime, so the request path never runs database
//! code and a database client stays on the runtime it was created on.
//! Does not own: the in-memory view (`cluster`), which is the source every request reads, nor
//! what the router does with a claim, a lease or a change another router made.
//!
//! Writes are batches of [`Op`]s applied in submission order. The worker drains whatever is
//! queued into one batch, so many concurrent writers share one commit (group commit) instead
//! of paying one fsync (or one round trip) each. A batch that fails is kept and retried until
//! it is written, so a write submitted without waiting survives a database outage for as long
//! as the process lives; [`StoreHandle::available`] tells callers meanwhile that the store is
//! down, so what must be durable before it answers can refuse at once.

pub mod embedded;
pub mod mongo;
pub mod sealed;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::stats::{StoreOp, StoreStats};
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

/// Which bots and templates a key reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every bot and template (subject to its role).
    #[default]
    All,
    /// Only the bots and templates it created; the others look as if they did not exist.
    Own,
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
    /// The database cannot be reached or did not answer in time (an outage, not a bad
    /// request): writes are kept and retried, callers that must write answer 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store answered and refused a record for good (one it can never take: too large,
    /// not encodable, failing validation); trying the same write again cannot succeed.
    #[error("the store refused a record: {0}")]
    Refused(String),
    /// The store's sealed secrets cannot be opened or sealed (no key, a wrong key, a damaged
    /// value): the router must not start on it.
    #[error("{0}")]
    Secrets(String),
}

impl StoreError {
    /// Whether trying again later can succeed (the store did not answer, or not in time), as
    /// opposed to a store that answered and refused.
    pub fn is_transient(&self) -> bool {
        // Everything but a refusal is tried again: a full disk, a primary stepping down or
        // an interrupted write may all succeed later, and dropping the write would lose it.
        !matches!(self, StoreError::Refused(_) | StoreError::Secrets(_))
    }
}

/// What an op writes, for messages (never its contents: records hold secrets).
fn op_name(op: &Op) -> String {
    match op {
        Op::PutBot(b) => format!("bot {}", b.id),
        Op::PatchBot(p) => format!("a change to bot {}", p.id),
        Op::DeleteBot(id) => format!("the removal of bot {id}"),
        Op::PutTemplate(t) => format!("template {}", t.name),
        Op::DeleteTemplate(n) => format!("the removal of template {n}"),
        Op::PutNode(n) => format!("node {}", n.name),
        Op::DeleteNode(n) => format!("the removal of node {n}"),
        Op::PutKey(k) => format!("key {}", k.name),
        Op::DeleteKey(k) => format!("the removal of key {k}"),
        Op::PutFence(f) => format!("the fence of bot {} on {}", f.bot, f.node),
        Op::DeleteFence(n, b) => format!("the removal of the fence of bot {b} on {n}"),
        Op::RaiseIdHighWater(m) => format!("the id mark {m}"),
        Op::PutAudit(a) => format!("audit entry {}", a.seq),
        Op::PutOperation(o) => format!("operation {}", o.id),
        Op::DeleteOperation(id) => format!("the removal of operation {id}"),
    }
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
    /// The key (by name) that created it, or whose template it runs: a key of scope `own`
    /// sees only its own bots. None: made by an admin or unscoped key, or met on a node.
    /// Carried whole through failover, evacuations and moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
    /// The key (by name) that created it: a key of scope `own` sees only its own templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
    /// The node's agent as last set: `None` in records written before agents existed (a
    /// config-file node then keeps the file's agent), `Some(None)` when it has none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub agent: Option<Option<AgentRecord>>,
    /// For an `https://` node: the CA file its certificate must chain to (None: the system
    /// roots, or a config-file node's own `ca_file`). The file is read again at each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// For an `https://` node: the name its certificate must be valid for, when not the
    /// URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_host: Option<String>,
}

/// The node agent (`ts3ab-lb-agent`) the router reads load figures from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// `http://host:port` of the agent.
    pub url: String,
    /// Its bearer token; for a config-file node only when set through the admin API (the
    /// file's token stays the file's). Secret.
    #[serde(default)]
    pub token: Option<String>,
}

impl fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRecord")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A field that is present, even as `null`, is `Some` (serde's plain `Option<Option<_>>`
/// reads `null` as absent).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
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
            .field("agent", &self.agent)
            .field("ca_file", &self.ca_file)
            .field("tls_host", &self.tls_host)
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
    /// Which bots and templates it reaches (records older than the field: all).
    #[serde(default)]
    pub scope: Scope,
    /// How many bots it may have at once (None: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bots: Option<u32>,
    /// The client networks it may be used from, as CIDR text (empty: anywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
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
            .field("scope", &self.scope)
            .field("max_bots", &self.max_bots)
            .field("allow_from", &self.allow_from)
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

/// Changes to a bot record's own fields (not where it runs), applied only while the record
/// still places the bot where the writer saw it: a router editing a bot never undoes a move
/// another router made meanwhile (several routers write one store).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct BotPatch {
    /// Cluster id.
    pub id: u32,
    /// The node the writer saw it on.
    pub node: String,
    /// Its local id there.
    pub local_id: u32,
    /// A new nickname.
    pub nickname: Option<String>,
    /// A new channel.
    pub channel: Option<String>,
    /// A new server address.
    pub address: Option<String>,
    /// The server password given at connect. Secret.
    pub server_password: Option<String>,
    /// The identity read from the node.
    pub identity: Option<Identity>,
}

impl fmt::Debug for BotPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotPatch")
            .field("id", &self.id)
            .field("node", &self.node)
            .field("local_id", &self.local_id)
            .field("nickname", &self.nickname)
            .field("channel", &self.channel)
            .field("address", &self.address)
            .field(
                "server_password",
                &self.server_password.as_ref().map(|_| "<redacted>"),
            )
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl BotPatch {
    /// The fields that differ between two versions of one record (None: nothing besides
    /// them changed, or where it runs changed, which a patch cannot say).
    pub fn between(old: &BotRecord, new: &BotRecord) -> Option<BotPatch> {
        let mut rest = old.clone();
        rest.nickname.clone_from(&new.nickname);
        rest.channel.clone_from(&new.channel);
        rest.address.clone_from(&new.address);
        rest.server_password.clone_from(&new.server_password);
        rest.identity.clone_from(&new.identity);
        if rest != *new || old == new {
            return None;
        }
        let changed =
            |a: &Option<String>, b: &Option<String>| (a != b).then(|| b.clone()).flatten();
        Some(BotPatch {
            id: new.id,
            node: new.node.clone(),
            local_id: new.local_id,
            nickname: changed(&old.nickname, &new.nickname),
            channel: changed(&old.channel, &new.channel),
            address: changed(&old.address, &new.address),
            server_password: changed(&old.server_password, &new.server_password),
            identity: (old.identity != new.identity)
                .then(|| new.identity.clone())
                .flatten(),
        })
    }

    /// Applies it to `rec` if `rec` still places the bot where the patch was made.
    pub fn apply_to(&self, rec: &mut BotRecord) -> bool {
        if rec.id != self.id || rec.node != self.node || rec.local_id != self.local_id {
            return false;
        }
        if let Some(v) = &self.nickname {
            rec.nickname = Some(v.clone());
        }
        if let Some(v) = &self.channel {
            rec.channel = Some(v.clone());
        }
        if let Some(v) = &self.address {
            rec.address = Some(v.clone());
        }
        if let Some(v) = &self.server_password {
            rec.server_password = Some(v.clone());
        }
        if let Some(v) = &self.identity {
            rec.identity = Some(v.clone());
        }
        true
    }
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace a bot.
    PutBot(BotRecord),
    /// Change a bot's own fields, only where it still runs where the writer saw it.
    PatchBot(BotPatch),
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

/// The outcome of [`Store::claim_bot`] and [`Store::claim_template`].
#[derive(Debug, Clone, PartialEq)]
pub enum Claim<T> {
    /// The caller's record was stored: it owns the bot instance or template name.
    Won,
    /// Another router (or an earlier call) holds it: its stored record, to adopt.
    Lost(T),
}

/// A record another router changed ([`Store::changes`]): its current state, or None when it
/// was removed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A bot, by cluster id.
    Bot(u32, Option<BotRecord>),
    /// A template, by name.
    Template(String, Option<TemplateRecord>),
    /// A run-time node, by name.
    Node(String, Option<NodeRecord>),
    /// A run-time key, by name.
    Key(String, Option<KeyRecord>),
    /// A fence, by node and bot id.
    Fence(String, u32, Option<FenceRecord>),
    /// An admin operation, by id.
    Operation(u64, Option<OperationRecord>),
}

/// A storage backend. Every method runs on the store worker's own thread and runtime, never on
/// a request path, so an implementation may block inside it (the embedded one does).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads everything.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Applies a batch in order, atomically where the backend can (redb: one transaction;
    /// MongoDB: document by document). Every op is idempotent, so retrying a batch that failed
    /// half-way is safe.
    async fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Reserves `count` fresh cluster ids for the caller alone (also against every other router
    /// sharing the store) and returns the first of `[first, first + count)`. Never below an
    /// earlier answer nor below the stored high-water mark ([`Op::RaiseIdHighWater`] raises
    /// the same counter).
    async fn reserve_ids(&self, count: u32) -> Result<u32, StoreError>;
    /// Takes or renews lease `name` for `holder` until now + `ttl`. True: `holder` holds it
    /// after the call. The expiry is checked by the store at the call, never left to a cleanup
    /// job, so an expired lease is taken over at once.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives lease `name` up if `holder` holds it (no-op otherwise).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Records a bot first seen (by a poll or a create) unless another router already recorded
    /// the same bot instance, keyed by (node, local id, `node_started` or ""). Won: `bot` was
    /// stored (as [`Op::PutBot`]). Lost: the record of whoever recorded that instance first
    /// (the caller adopts its id). A bot's key is released when its record is deleted or put
    /// with another slot, but only while the key still points at that bot id, so a slow router
    /// can never release a key another bot holds now.
    async fn claim_bot(&self, bot: &BotRecord) -> Result<Claim<BotRecord>, StoreError>;
    /// The same for a template name (unique across the cluster): Won (stored as
    /// [`Op::PutTemplate`]) only when no record of that name exists; otherwise Lost with the
    /// stored record, also when it is on the same node (a claim never overwrites the settings
    /// and identity a template's record holds).
    async fn claim_template(&self, t: &TemplateRecord)
        -> Result<Claim<TemplateRecord>, StoreError>;
    /// Records other routers changed since the previous call (the first call: since
    /// [`Store::load`]), each once, never the caller's own writes. Audit records are not synced.
    async fn changes(&self) -> Result<Vec<Change>, StoreError>;
    /// Whether other routers may share this store.
    fn shared(&self) -> bool;
    /// Removes every record, counters and leases included (`store copy --overwrite`).
    async fn clear(&self) -> Result<(), StoreError>;
    /// Holds a seat on node `node` for a create in flight, unless the bots recorded on the
    /// node and the seats other creates hold (on any router) already fill `capacity`:
    /// Ok(Some(seat)) reserved (give it up with [`Store::release_seat`] once the new bot's
    /// record is written or the create failed; it lapses after `ttl` if the router dies),
    /// Ok(None) full. Insert first, count after: two creates racing for the last seat both
    /// see each other, so a node never goes over (at worst both are refused). The default
    /// (an unshared store) always grants one: a single router's placement already counts
    /// every create it makes.
    async fn reserve_seat(
        &self,
        _node: &str,
        _capacity: u32,
        _ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(Some(String::new()))
    }
    /// Gives a seat up (a no-op for one that lapsed or was never held).
    async fn release_seat(&self, _seat: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Load(Reply<Snapshot>),
    Apply(Vec<Op>, Option<Reply<()>>),
    ReserveIds(u32, Reply<u32>),
    AcquireLease {
        name: String,
        holder: String,
        ttl: Duration,
        reply: Reply<bool>,
    },
    ReleaseLease {
        name: String,
        holder: String,
        reply: Reply<()>,
    },
    ClaimBot(BotRecord, Reply<Claim<BotRecord>>),
    ClaimTemplate(TemplateRecord, Reply<Claim<TemplateRecord>>),
    Changes(Reply<Vec<Change>>),
    ReserveSeat {
        node: String,
        capacity: u32,
        ttl: Duration,
        reply: Reply<Option<String>>,
    },
    ReleaseSeat(String, Option<Reply<()>>),
    /// Write what is queued, then stop the worker and drop the store (releasing the embedded
    /// store's file lock); answered once it is dropped.
    Close(Reply<()>),
}

/// The router's handle to the store worker. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::UnboundedSender<Request>,
    available: Arc<AtomicBool>,
    shared: bool,
    stats: Arc<StoreStats>,
    /// Set by [`StoreHandle::close`]: later writes are dropped quietly.
    closed: Arc<AtomicBool>,
}

/// How many queued requests one commit may absorb.
const MAX_BATCH: usize = 512;
/// The first pause before a failed batch is written again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a failed batch: short enough that writes resume
/// within seconds of the database coming back.
const RETRY_MAX: Duration = Duration::from_secs(2);

impl StoreHandle {
    /// Starts the worker thread (with its own single-threaded runtime) that owns `store`.
    pub fn spawn(store: Box<dyn Store>) -> Result<StoreHandle, StoreError> {
        StoreHandle::open(move || async move { Ok(store) })
    }

    /// Starts the worker thread and runs `open` on its runtime (a database client must live on
    /// the runtime it was created on); returns once `open` finished, with its error if it
    /// failed. Blocks the calling thread meanwhile (it runs at start-up).
    pub fn open<F, Fut>(open: F) -> Result<StoreHandle, StoreError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Box<dyn Store>, StoreError>> + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Request>();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel::<Result<bool, StoreError>>();
        let available = Arc::new(AtomicBool::new(true));
        let worker_available = available.clone();
        let stats = Arc::new(
            StoreStats::new()
                .map_err(|e| StoreError::Io(format!("cannot define the store metrics: {e}")))?,
        );
        let worker_stats = stats.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the store runtime: {e}")))?;
        std::thread::Builder::new()
            .name("ts3ab-store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let store = match open().await {
                        Ok(store) => store,
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = opened_tx.send(Ok(store.shared()));
                    let closed = Worker {
                        store,
                        available: worker_available,
                        stats: worker_stats,
                    }
                    .run(rx)
                    .await;
                    // The worker (and with it the store) is dropped by now: whoever waits
                    // for the close may open the file.
                    if let Some(reply) = closed {
                        let _ = reply.send(Ok(()));
                    }
                });
            })
            .map_err(|e| StoreError::Io(format!("cannot start the store thread: {e}")))?;
        let shared = opened_rx.recv().map_err(|_| StoreError::Closed)??;
        Ok(StoreHandle {
            tx,
            available,
            shared,
            stats,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The worker's instruments (calls, latency, queue depth).
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Hands a request to the worker, counting it as queued until the worker takes it.
    fn send(&self, r: Request) -> Result<(), StoreError> {
        self.stats.queued.inc();
        self.tx.send(r).map_err(|_| {
            self.stats.queued.dec();
            StoreError::Closed
        })
    }

    /// Reads everything (waits for queued writes first).
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Load(reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues writes without waiting. A failure is logged by the worker, which keeps the
    /// batch and writes it again until it is written.
    pub fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if self.send(Request::Apply(ops, None)).is_err() {
            if self.tx.is_closed() && self.closed.load(Ordering::Relaxed) {
                // Closed on purpose (a hand-over or the exit): the process no longer acts.
                log::debug!("store closed; a write was dropped");
            } else {
                log::error!("store worker has stopped; a write was dropped");
            }
        }
    }

    /// Writes and waits until the batch is durable, at most `timeout`. An error means the first
    /// try failed (or took too long): the batch is still written later, when the store answers.
    pub async fn commit(&self, ops: Vec<Op>, timeout: Duration) -> Result<(), StoreError> {
        self.ask(|reply| Request::Apply(ops, Some(reply)), timeout)
            .await
    }

    /// Waits until everything submitted so far is durable.
    pub async fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        self.commit(Vec::new(), timeout).await
    }

    /// Reserves `count` fresh cluster ids (see [`Store::reserve_ids`]).
    pub async fn reserve_ids(&self, count: u32, timeout: Duration) -> Result<u32, StoreError> {
        self.ask(|reply| Request::ReserveIds(count, reply), timeout)
            .await
    }

    /// Takes or renews a lease (see [`Store::acquire_lease`]).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.ask(
            |reply| Request::AcquireLease {
                name,
                holder,
                ttl,
                reply,
            },
            timeout,
        )
        .await
    }

    /// Gives a lease up (see [`Store::release_lease`]).
    pub async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.ask(
            |reply| Request::ReleaseLease {
                name,
                holder,
                reply,
            },
            timeout,
        )
        .await
    }

    /// Records a bot first seen unless another router did (see [`Store::claim_bot`]).
    pub async fn claim_bot(
        &self,
        bot: BotRecord,
        timeout: Duration,
    ) -> Result<Claim<BotRecord>, StoreError> {
        self.ask(|reply| Request::ClaimBot(bot, reply), timeout)
            .await
    }

    /// Claims a template name (see [`Store::claim_template`]).
    pub async fn claim_template(
        &self,
        t: TemplateRecord,
        timeout: Duration,
    ) -> Result<Claim<TemplateRecord>, StoreError> {
        self.ask(|reply| Request::ClaimTemplate(t, reply), timeout)
            .await
    }

    /// What other routers changed since the previous call (see [`Store::changes`]).
    pub async fn changes(&self, timeout: Duration) -> Result<Vec<Change>, StoreError> {
        self.ask(Request::Changes, timeout).await
    }

    /// Holds a seat on `node` for a create in flight (see [`Store::reserve_seat`]).
    pub async fn reserve_seat(
        &self,
        node: &str,
        capacity: u32,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let node = node.to_string();
        self.ask(
            |reply| Request::ReserveSeat {
                node,
                capacity,
                ttl,
                reply,
            },
            timeout,
        )
        .await
    }

    /// Gives a seat up without waiting (it lapses by itself if this never lands).
    pub fn release_seat(&self, seat: String) {
        if self.send(Request::ReleaseSeat(seat, None)).is_err() {
            log::debug!("store worker has stopped; a seat lapses by itself");
        }
    }

    /// Writes everything submitted so far, then stops the worker and drops the store (the
    /// embedded store's file lock is free once this returns `Ok`). Every later call fails with
    /// [`StoreError::Closed`]; closing again is `Ok` at once. Used when the process hands its
    /// work to another one (graceful upgrade) and before it exits.
    pub async fn close(&self, timeout: Duration) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Relaxed);
        if self.tx.is_closed() {
            return Ok(());
        }
        match self.ask(Request::Close, timeout).await {
            // The worker was already gone (closed by an earlier call).
            Err(StoreError::Closed) => Ok(()),
            other => other,
        }
    }

    /// Whether other routers may share the store.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// False while the last store call failed (an outage): callers that must write refuse at
    /// once (503) instead of waiting for their deadline.
    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Sends a request and waits for its answer, at most `timeout`. Giving up drops only the
    /// answer: the worker still runs the request, it never waits for a caller.
    async fn ask<T>(
        &self,
        request: impl FnOnce(Reply<T>) -> Request,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(request(reply))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }
}

/// The worker's side: the store and the availability flag it keeps up to date.
struct Worker {
    store: Box<dyn Store>,
    available: Arc<AtomicBool>,
    stats: Arc<StoreStats>,
}

impl Worker {
    /// Serves requests until every handle is gone or a `Close` arrives; returns the closer's
    /// reply (sent by the caller once the store is dropped with `self`).
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Request>) -> Option<Reply<()>> {
        while let Some(first) = rx.recv().await {
            self.stats.queued.dec();
            let mut ops = Vec::new();
            let mut waiters = Vec::new();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(req) = next.take() {
                match req {
                    Request::Apply(batch, reply) => {
                        ops.extend(batch);
                        waiters.extend(reply);
                    }
                    Request::Close(reply) => {
                        // Everything submitted before the close is written first.
                        self.commit(&mut ops, &mut waiters).await;
                        rx.close();
                        return Some(reply);
                    }
                    other => {
                        // Flush what is queued first, so every request sees every write
                        // submitted before it (requests run in submission order).
                        self.commit(&mut ops, &mut waiters).await;
                        self.call(other).await;
                    }
                }
                taken += 1;
                if taken < MAX_BATCH {
                    next = rx.try_recv().ok();
                    if next.is_some() {
                        self.stats.queued.dec();
                    }
                }
            }
            self.commit(&mut ops, &mut waiters).await;
        }
        None
    }

    /// Writes `ops` and answers `waiters`. A failed batch is written again (with a growing
    /// pause) until it is written, before anything else runs: dropping it would lose writes
    /// nobody waits for, and running later requests first would reorder writes. The waiters
    /// get the first failure at once; they have their own deadlines.
    async fn commit(&self, ops: &mut Vec<Op>, waiters: &mut Vec<Reply<()>>) {
        if ops.is_empty() {
            for w in waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            return;
        }
        let mut pause = RETRY_FIRST;
        let mut failures: u32 = 0;
        'batch: loop {
            match self.timed(StoreOp::Write, self.store.apply(ops)).await {
                Ok(()) => {
                    if failures > 0 {
                        log::warn!(
                            "store write of {} operation(s) succeeded after {failures} failed tries",
                            ops.len()
                        );
                    }
                    self.set_available(true);
                    for w in waiters.drain(..) {
                        let _ = w.send(Ok(()));
                    }
                    break;
                }
                Err(e) if !e.is_transient() => {
                    // The store answered and refused (a record it cannot take): retrying
                    // the same batch would block every later request for good. Write the
                    // ops one by one so that only the refused ones are lost, and say which.
                    log::error!(
                        "store write of {} operation(s) refused: {e}; writing them one by one",
                        ops.len()
                    );
                    for w in waiters.drain(..) {
                        let _ = w.send(Err(e.clone()));
                    }
                    let mut i = 0;
                    while i < ops.len() {
                        match self
                            .timed(StoreOp::Write, self.store.apply(&ops[i..=i]))
                            .await
                        {
                            Ok(()) => i += 1,
                            Err(e) if e.is_transient() => {
                                // An outage began: the rest waits for it like any batch.
                                ops.drain(..i);
                                self.set_available(false);
                                failures = failures.saturating_add(1);
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(RETRY_MAX);
                                continue 'batch;
                            }
                            Err(e) => {
                                log::error!(
                                    "store write dropped: {} refused: {e}",
                                    op_name(&ops[i])
                                );
                                i += 1;
                            }
                        }
                    }
                    break;
                }
                Err(e) => {
                    self.set_available(false);
                    if failures == 0 {
                        log::error!(
                            "store write of {} operation(s) failed (kept, retrying): {e}",
                            ops.len()
                        );
                        for w in waiters.drain(..) {
                            let _ = w.send(Err(e.clone()));
                        }
                    } else if failures.is_power_of_two() {
                        // Logged at 2, 4, 8, ... failures, so an outage does not flood the log.
                        log::warn!("store write still failing after {failures} tries: {e}");
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
        ops.clear();
    }

    /// Runs `call` and records how long it took and whether it succeeded.
    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let r = call.await;
        self.stats.record(op, started.elapsed(), r.is_ok());
        r
    }

    /// Runs one request other than a write and answers it.
    async fn call(&self, req: Request) {
        let store = &*self.store;
        match req {
            Request::Load(reply) => {
                let r = self.timed(StoreOp::Load, store.load()).await;
                let _ = reply.send(self.note(r));
            }
            Request::ReserveIds(count, reply) => {
                let r = self
                    .timed(StoreOp::ReserveIds, store.reserve_ids(count))
                    .await;
                let _ = reply.send(self.note(r));
            }
            Request::AcquireLease {
                name,
                holder,
                ttl,
                reply,
            } => {
                let r = self
                    .timed(
                        StoreOp::AcquireLease,
                        store.acquire_lease(&name, &holder, ttl),
                    )
                    .await;
                let _ = reply.send(self.note(r));
            }
            Request::ReleaseLease {
                name,
                holder,
                reply,
            } => {
                let r = self
                    .timed(StoreOp::ReleaseLease, store.release_lease(&name, &holder))
                    .await;
                let _ = reply.send(self.note(r));
            }
            Request::ClaimBot(bot, reply) => {
                let r = self.timed(StoreOp::ClaimBot, store.claim_bot(&bot)).await;
                let _ = reply.send(self.note(r));
            }
            Request::ClaimTemplate(t, reply) => {
                let r = self
                    .timed(StoreOp::ClaimTemplate, store.claim_template(&t))
                    .await;
                let _ = reply.send(self.note(r));
            }
            Request::Changes(reply) => {
                let r = self.timed(StoreOp::Changes, store.changes()).await;
                let _ = reply.send(self.note(r));
            }
            Request::ReserveSeat {
                node,
                capacity,
                ttl,
                reply,
            } => {
                let r = self
                    .timed(
                        StoreOp::ReserveSeat,
                        store.reserve_seat(&node, capacity, ttl),
                    )
                    .await;
                let _ = reply.send(self.note(r));
            }
            Request::ReleaseSeat(seat, reply) => {
                let r = self
                    .timed(StoreOp::ReleaseSeat, store.release_seat(&seat))
                    .await;
                if let Err(e) = &r {
                    log::debug!("a seat was not given up ({e}); it lapses by itself");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            // Writes and closes never get here: `run` handles them.
            Request::Apply(..) | Request::Close(_) => {}
        }
    }

    /// Updates the availability flag from a result: an outage (or a failing read or write)
    /// makes the store unavailable; a corrupt record does not, the database answered.
    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.set_available(true),
            Err(StoreError::Corrupt { .. }) => {}
            Err(_) => self.set_available(false),
        }
        r
    }

    fn set_available(&self, up: bool) {
        if self.available.swap(up, Ordering::Relaxed) != up {
            if up {
                log::info!("the store answers again");
            } else {
                log::warn!("the store is unavailable; writes are kept and retried");
            }
        }
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

    /// A node record tells "no agent" (`null`) from "written before agents existed"
    /// (absent), so an old override of a config-file node does not drop the file's agent.
    #[test]
    fn node_records_tell_no_agent_from_an_old_record() {
        let old = r#"{"name":"n","url":"u","auth":null,"capacity":1,"draining":false}"#;
        let rec: NodeRecord = serde_json::from_str(old).expect("old record");
        assert_eq!(rec.agent, None);
        for agent in [
            Some(None),
            Some(Some(AgentRecord {
                url: "http://a:1".into(),
                token: None,
            })),
            None,
        ] {
            let rec = NodeRecord {
                agent,
                ..rec.clone()
            };
            let text = serde_json::to_string(&rec).expect("json");
            let back: NodeRecord = serde_json::from_str(&text).expect("back");
            assert_eq!(back.agent, rec.agent, "{text}");
        }
    }

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
            owner: None,
        };
        let t = TemplateRecord {
            name: "t".into(),
            node: "n".into(),
            settings: [("connect.identity.key".to_string(), "SECRETKEY".to_string())].into(),
            identity: Some(id),
            owner: None,
        };
        let node = NodeRecord {
            name: "n".into(),
            url: "u".into(),
            auth: Some("uid:SECRETTOK".into()),
            capacity: 1,
            draining: false,
            state: NodeState::Ready,
            from_config: false,
            agent: Some(Some(AgentRecord {
                url: "http://a:1".into(),
                token: Some("SECRETAGENT".into()),
            })),
            ca_file: None,
            tls_host: None,
        };
        let key = KeyRecord {
            name: "k".into(),
            secret: Some("SECRETKEYSECRET".into()),
            digest: Some("SECRETDIGEST".into()),
            role: Role::User,
            created_ms: 0,
            last_used_ms: None,
            scope: Default::default(),
            max_bots: None,
            allow_from: Vec::new(),
        };
        let all = format!("{bot:?}{t:?}{node:?}{key:?}");
        assert!(!all.contains("SECRET"), "{all}");
    }

    /// A store whose writes fail while `failing` is above zero (one failure per try), and
    /// that remembers every batch it wrote.
    struct FlakyStore {
        failing: std::sync::atomic::AtomicU32,
        tries: std::sync::atomic::AtomicU32,
        written: parking_lot::Mutex<Vec<Op>>,
    }

    impl FlakyStore {
        fn new(failures: u32) -> Arc<FlakyStore> {
            Arc::new(FlakyStore {
                failing: failures.into(),
                tries: 0.into(),
                written: parking_lot::Mutex::new(Vec::new()),
            })
        }
    }

    /// Lets a test keep a reference to the store the worker owns.
    struct Shared(Arc<FlakyStore>);

    #[async_trait]
    impl Store for Shared {
        async fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        async fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
            self.0.tries.fetch_add(1, Ordering::SeqCst);
            let left = self.0.failing.load(Ordering::SeqCst);
            if left > 0 {
                self.0.failing.store(left - 1, Ordering::SeqCst);
                return Err(StoreError::Unavailable("test outage".into()));
            }
            // Refused for good (the store answered): the removal of bot 666.
            if ops.contains(&Op::DeleteBot(666)) {
                return Err(StoreError::Refused("refused by the test store".into()));
            }
            self.0.written.lock().extend(ops.iter().cloned());
            Ok(())
        }
        async fn reserve_ids(&self, count: u32) -> Result<u32, StoreError> {
            Ok(count)
        }
        async fn acquire_lease(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn claim_bot(&self, _: &BotRecord) -> Result<Claim<BotRecord>, StoreError> {
            Ok(Claim::Won)
        }
        async fn claim_template(
            &self,
            _: &TemplateRecord,
        ) -> Result<Claim<TemplateRecord>, StoreError> {
            Ok(Claim::Won)
        }
        async fn changes(&self) -> Result<Vec<Change>, StoreError> {
            Ok(Vec::new())
        }
        fn shared(&self) -> bool {
            true
        }
        async fn clear(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// A batch that fails is retried until it is written, not dropped; the caller waiting on
    /// it gets the first failure; writes after it land after it; `available()` is false in
    /// between and true again after the write.
    #[tokio::test]
    async fn failed_batches_are_retried_in_order_and_availability_flips() {
        let store = FlakyStore::new(3);
        let h = StoreHandle::spawn(Box::new(Shared(store.clone()))).expect("spawn");
        assert!(h.shared());
        assert!(h.available());
        let first = h
            .commit(vec![Op::DeleteBot(1)], Duration::from_secs(5))
            .await;
        assert!(
            matches!(first, Err(StoreError::Unavailable(_))),
            "{first:?}"
        );
        assert!(!h.available(), "a failed write makes the store unavailable");
        h.submit(vec![Op::DeleteBot(2)]);
        // Three failures with pauses of 100, 200 and 400 ms: the flush waits for all of it.
        h.flush(Duration::from_secs(10)).await.expect("flush");
        assert!(h.available(), "a successful retry makes it available again");
        assert_eq!(
            *store.written.lock(),
            vec![Op::DeleteBot(1), Op::DeleteBot(2)],
            "the failed batch is written first, then the later one"
        );
        assert_eq!(store.tries.load(Ordering::SeqCst), 5);
    }

    /// A patch carries exactly the edited own fields; a change of where the bot runs (or of
    /// its template) is no patch.
    #[test]
    fn a_patch_is_the_difference_of_the_own_fields() {
        let old = BotRecord {
            id: 1,
            node: "n".into(),
            local_id: 2,
            template: None,
            address: Some("a".into()),
            server_password: None,
            channel: None,
            nickname: Some("x".into()),
            identity: None,
            created_ms: 0,
            node_started: None,
            owner: None,
        };
        let mut new = old.clone();
        new.nickname = Some("y".into());
        new.channel = Some("/5".into());
        new.server_password = Some("secretpw".into());
        let p = BotPatch::between(&old, &new).expect("a patch");
        assert_eq!(
            (
                p.nickname.as_deref(),
                p.channel.as_deref(),
                p.address.as_deref(),
                p.server_password.as_deref()
            ),
            (Some("y"), Some("/5"), None, Some("secretpw"))
        );
        assert!(!format!("{p:?}").contains("secretpw"), "{p:?}");
        let mut applied = old.clone();
        assert!(p.apply_to(&mut applied));
        assert_eq!(applied, new);
        let mut moved = old.clone();
        moved.local_id = 9;
        assert!(!p.apply_to(&mut moved), "a moved bot is left alone");
        assert!(BotPatch::between(&old, &old).is_none());
        let mut renamed = new.clone();
        renamed.template = Some("t".into());
        assert!(BotPatch::between(&old, &renamed).is_none());
    }

    /// A batch the store refuses (it answered: not an outage) is not retried for ever: its
    /// other ops are written one by one, the refused one is dropped, and later requests run.
    #[tokio::test]
    async fn a_refused_op_is_dropped_and_the_rest_of_its_batch_written() {
        let store = FlakyStore::new(0);
        let h = StoreHandle::spawn(Box::new(Shared(store.clone()))).expect("spawn");
        let r = h
            .commit(
                vec![Op::DeleteBot(1), Op::DeleteBot(666), Op::DeleteBot(2)],
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(r, Err(StoreError::Refused(_))), "{r:?}");
        h.commit(vec![Op::DeleteBot(3)], Duration::from_secs(5))
            .await
            .expect("a later write");
        assert_eq!(
            *store.written.lock(),
            vec![Op::DeleteBot(1), Op::DeleteBot(2), Op::DeleteBot(3)]
        );
        assert!(h.available());
    }

    /// A caller that gives up does not stop the worker, and `open` runs its opener on the
    /// worker and reports its error.
    #[tokio::test]
    async fn timeouts_do_not_block_the_worker_and_open_reports_errors() {
        let store = FlakyStore::new(1);
        let h = StoreHandle::spawn(Box::new(Shared(store.clone()))).expect("spawn");
        let r = h
            .commit(vec![Op::DeleteBot(7)], Duration::from_millis(1))
            .await;
        assert!(r.is_err());
        assert_eq!(
            h.reserve_ids(4, Duration::from_secs(5))
                .await
                .expect("reserve"),
            4
        );
        assert_eq!(*store.written.lock(), vec![Op::DeleteBot(7)]);
        let err = StoreHandle::open(|| async {
            Err::<Box<dyn Store>, _>(StoreError::Open {
                path: "p".into(),
                reason: "nope".into(),
            })
        })
        .err()
        .expect("open fails");
        assert!(err.to_string().contains("nope"), "{err}");
        let opened = StoreHandle::open(move || async move {
            // The worker's runtime is current here (a database client needs one).
            tokio::runtime::Handle::current();
            Ok::<Box<dyn Store>, _>(Box::new(Shared(store)))
        })
        .expect("open");
        assert!(opened.shared());
    }
}
