//! The router's in-memory view of the cluster: nodes, bots, templates and cluster-wide ids.
//!
//! Owns: the tables every request reads (cluster id → node + local id, node + local id →
//! cluster id, template → node), id allocation, and reconciling those tables with what the
//! nodes report (`bot/list`) or answer (BotInfo in responses). Every change is queued to the
//! store in the same step, so the store always holds what this view holds.
//! Does not own: talking to nodes (`node_client`, `health`), choosing nodes (`placement`,
//! `routing`) or the store itself (`store`).
//!
//! Concurrency: one `RwLock` over the tables, held only for in-memory work (never across an
//! await or I/O); the node list is an `ArcSwap` so readers never block.
//!
//! Identity rule: a node's `(local id)` slot is reused by TS3AudioBot for the next bot, so a
//! slot is only trusted while what the node reports there is the same bot: same template name,
//! and for temporary bots the same server address. Anything else retires the old cluster id
//! and gives the newcomer a fresh one, so a reused local id never routes to an old cluster id.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use crate::cluster::ids::Ids;
use crate::cluster::node::{Node, NodeId, NodeList, NodeSource};
use crate::cluster::stats::ClusterStats;
use crate::cluster::tables::{same_bot, seen_template, Bot, GoneBot, Tables, Template};
use crate::config::NodeConfig;
use crate::protocol::api_json::BotInfo;
use crate::store::{now_ms, BotRecord, Op, Snapshot, StoreError, StoreHandle, TemplateRecord};

/// A template name reserved by a create in flight; released when dropped.
#[derive(Debug)]
pub struct PendingTemplate {
    pub(super) cluster: Arc<Cluster>,
    pub(super) name: String,
}

impl Drop for PendingTemplate {
    fn drop(&mut self) {
        self.cluster.tables.write().pending.remove(&self.name);
    }
}

/// A running bot as a node reports it (in `bot/list` or a BotInfo answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported<'a> {
    /// Local id.
    pub lid: u32,
    /// Template name.
    pub name: Option<&'a str>,
    /// Server address.
    pub server: Option<&'a str>,
    /// 0/1/2.
    pub status: u8,
}

/// Why a bot a create just made could not be given a cluster id.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Every cluster id was handed out once (ids are never reused).
    #[error("the cluster id space is used up (ids are never reused)")]
    IdsExhausted,
    /// The node's answer could not be placed in the tables.
    #[error("the bot could not be registered")]
    NotRegistered,
    /// Its record could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the router knows about a bot at creation time, beyond what BotInfo says.
#[derive(Debug, Clone, Default)]
pub struct CreateInfo {
    /// Address given to `bot/connect/to`.
    pub address: Option<String>,
    /// Server password given to `bot/connect/to`.
    pub server_password: Option<String>,
    /// When the create was sent (ms since the epoch): on a shared store, a record of the
    /// bot's slot made before then is of a bot the create replaced.
    pub sent_ms: Option<u64>,
    /// The key that asked for it (the bot's owner).
    pub owner: Option<String>,
}

/// The cluster view.
pub struct Cluster {
    pub(super) nodes: ArcSwap<NodeList>,
    /// The next node id: ids only grow, so a removed node's id is never seen again.
    pub(super) next_node: AtomicU32,
    /// Serialises node-table changes (add, edit, remove) so checks and the swap are one step.
    pub(super) node_changes: tokio::sync::Mutex<()>,
    pub(super) tables: RwLock<Tables>,
    pub(super) ids: Mutex<Ids>,
    generation: AtomicU64,
    pub(super) store: StoreHandle,
    /// Whether this router runs failover and operations (see `shared`), and until when its
    /// lease surely lasts (None: no expiry, an unshared store).
    pub(super) lead: AtomicBool,
    pub(super) lead_until: Mutex<Option<std::time::Instant>>,
    /// Bots met first here whose claim is not settled yet (see `shared`).
    pub(super) claims: Mutex<Vec<u32>>,
    /// Templates a poll met first, to claim in the store (see `shared`).
    pub(super) template_claims: Mutex<Vec<TemplateRecord>>,
    pub(super) claims_waiting: tokio::sync::Notify,
    /// Failovers and moves, for metrics.
    pub stats: ClusterStats,
}

/// What the router still tracks on a node (a node is removed only when all are zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Bots running there, and those waiting to be restored there.
    pub bots: usize,
    /// Of those, the bots waiting to be restored there.
    pub restoring: usize,
    /// Templates it holds.
    pub templates: usize,
    /// Copies of moved bots still to stop there.
    pub fences: usize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.load().len())
            .finish()
    }
}

impl Cluster {
    /// Builds the view from the config file's nodes, the nodes stored by the admin API and a
    /// store snapshot. A config-file node edited at run time has a stored record of its
    /// changes (`from_config`), which wins over the file; a node added at run time whose name
    /// the config file now also has is the file's (the file wins on a clash).
    pub fn new(config_nodes: &[NodeConfig], snapshot: Snapshot, store: StoreHandle) -> Cluster {
        let defs = node_definitions(config_nodes, &snapshot.nodes);
        let nodes: Vec<Arc<Node>> = defs
            .iter()
            .zip(0u32..)
            .map(|((c, source), i)| Arc::new(Node::new(NodeId(i), c, *source)))
            .collect();
        let next_node = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        let by_name: HashMap<&str, NodeId> = nodes.iter().map(|n| (&*n.name, n.id)).collect();
        let mut t = Tables::default();
        let mut max_id = None;
        for rec in snapshot.bots {
            max_id = max_id.max(Some(rec.id));
            let Some(&node) = by_name.get(rec.node.as_str()) else {
                log::warn!(
                    "bot {} is recorded on node `{}`, which is not configured; it stays in the store but is not routed",
                    rec.id,
                    rec.node
                );
                continue;
            };
            t.insert_bot(node, rec, 0);
        }
        for rec in snapshot.templates {
            let Some(&node) = by_name.get(rec.node.as_str()) else {
                log::warn!(
                    "template `{}` is recorded on unconfigured node `{}`",
                    rec.name,
                    rec.node
                );
                continue;
            };
            t.add_template(Template {
                record: rec,
                node,
                since: 0,
            });
        }
        for f in snapshot.fences {
            match by_name.get(f.node.as_str()) {
                Some(&node) => t.fences.entry(node).or_default().push(f),
                None => log::warn!(
                    "bot {} left a copy on node `{}`, which is not configured; if that node is added again, stop the copy by hand",
                    f.bot,
                    f.node
                ),
            }
        }
        for n in &nodes {
            n.load.set_running(t.running_on(n.id));
        }
        let mut list = NodeList::default();
        for n in nodes {
            list = list.with(n);
        }
        let snapshot_high_water = snapshot.id_high_water;
        let shared = store.shared();
        // A shared store hands out ids only from blocks reserved in the database
        // (`ensure_id_headroom` before the first poll), never from what this router saw.
        let next = if shared {
            0
        } else {
            snapshot
                .id_high_water
                .max(max_id.map_or(0, |m| m.saturating_add(1)))
        };
        Cluster {
            stats: ClusterStats::default(),
            nodes: ArcSwap::from_pointee(list),
            next_node: AtomicU32::new(next_node),
            node_changes: tokio::sync::Mutex::new(()),
            tables: RwLock::new(t),
            ids: Mutex::new(Ids {
                next,
                limit: next,
                durable: snapshot_high_water,
                shared,
                spare: None,
            }),
            generation: AtomicU64::new(1),
            // An unshared store has one router, which always leads; a shared one leads
            // once it holds the lease.
            lead: AtomicBool::new(!shared),
            lead_until: Mutex::new(None),
            claims: Mutex::new(Vec::new()),
            template_claims: Mutex::new(Vec::new()),
            claims_waiting: tokio::sync::Notify::new(),
            store,
        }
    }

    /// What the router tracks on a node.
    pub fn holdings(&self, node: NodeId) -> Holdings {
        let t = self.tables.read();
        let restoring = t
            .bots
            .values()
            .filter(|b| b.restoring && b.node == node)
            .count();
        Holdings {
            // Bots waiting to be restored there count too: removing the node would strand them.
            bots: t.slots.get(&node).map_or(0, BTreeMap::len) + restoring,
            restoring,
            templates: t.node_templates.get(&node).map_or(0, |s| s.len()),
            fences: t.fences.get(&node).map_or(0, Vec::len),
        }
    }

    /// Bumps the generation after a node-table change (cached `bot/list`s are stale).
    /// A node id never used before.
    pub(super) fn new_node_id(&self) -> NodeId {
        NodeId(self.next_node.fetch_add(1, Ordering::AcqRel))
    }

    pub(super) fn nodes_changed(&self) {
        self.bump();
    }

    /// The store handle (for other modules' writes).
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// All nodes, ordered by id.
    pub fn nodes(&self) -> Arc<NodeList> {
        self.nodes.load_full()
    }

    /// One node (None once it was removed).
    pub fn node(&self, id: NodeId) -> Option<Arc<Node>> {
        self.nodes.load().get(id).cloned()
    }

    /// The node named `name`.
    pub fn node_by_name(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.load().by_name(name).cloned()
    }

    /// Current generation; bumps whenever the tables change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Where a cluster id runs: node and local id.
    pub fn locate(&self, gid: u32) -> Option<(NodeId, u32)> {
        let t = self.tables.read();
        t.bots.get(&gid).map(|b| {
            if b.restoring {
                (NodeId::NOWHERE, b.record.local_id)
            } else {
                (b.node, b.record.local_id)
            }
        })
    }

    /// The cluster id of a node's local id.
    pub fn gid_of(&self, node: NodeId, lid: u32) -> Option<u32> {
        self.tables
            .read()
            .slots
            .get(&node)
            .and_then(|s| s.get(&lid).copied())
    }

    /// The node that holds a template.
    pub fn template_owner(&self, name: &str) -> Option<NodeId> {
        self.tables.read().templates.get(name).map(|t| t.node)
    }

    /// The template a bot runs, if any.
    pub fn bot_template(&self, gid: u32) -> Option<String> {
        self.tables
            .read()
            .bots
            .get(&gid)
            .and_then(|b| b.record.template.clone())
    }

    /// A copy of a bot's record.
    pub fn bot_record(&self, gid: u32) -> Option<BotRecord> {
        self.tables.read().bots.get(&gid).map(|b| b.record.clone())
    }

    /// Number of bots known.
    pub fn bot_count(&self) -> usize {
        self.tables.read().bots.len()
    }

    pub(super) fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(super) fn node_name(&self, id: NodeId) -> String {
        self.node(id)
            .map(|n| n.name.to_string())
            .unwrap_or_default()
    }

    pub(super) fn recount(&self, t: &Tables, node: NodeId) {
        if let Some(n) = self.node(node) {
            n.load.set_running(t.running_on(node));
        }
    }

    /// Inserts or refreshes the bot a node reports in slot `lid`. Returns its cluster id, or
    /// None when a newer mapping (learned after `guard`) says the report is stale.
    fn upsert(
        &self,
        t: &mut Tables,
        node: NodeId,
        r: Reported<'_>,
        guard: u64,
        ops: &mut Vec<Op>,
    ) -> Option<u32> {
        // The status is not kept: answers and lists carry it fresh from the node.
        let Reported {
            lid, name, server, ..
        } = r;
        if let Some(&gid) = t.slots.get(&node).and_then(|s| s.get(&lid)) {
            let same = t.bots.get(&gid).is_some_and(|b| same_bot(b, name, server));
            if same {
                let mut renamed = None;
                if let Some(b) = t.bots.get_mut(&gid) {
                    if server.is_some() {
                        b.server = server.map(str::to_string);
                    }
                    if b.record.template.as_deref() != name {
                        // `bot save` named it, or its template was deleted.
                        b.record.template = name.map(str::to_string);
                        ops.push(Op::PutBot(b.record.clone()));
                        renamed = name;
                    }
                }
                if let Some(name) = renamed {
                    self.claim_template(t, name, node, ops);
                }
                return Some(gid);
            }
            if t.bots.get(&gid).is_some_and(|b| b.since > guard) {
                return None;
            }
            // The node reused the slot for another bot: the old one is gone.
            self.retire(t, gid, ops);
        } else if t.gone.is_stale(node, lid, guard) {
            // Read before the router saw this slot's bot go (a stop it sent, a newer poll):
            // the bot the report shows is no longer there.
            return None;
        }
        if let Some(gid) = name.and_then(|n| readopt_named(t, node, lid, n, server, guard, ops)) {
            return Some(gid);
        }
        let gid = self.alloc_id(ops)?;
        let record = BotRecord {
            id: gid,
            node: self.node_name(node),
            local_id: lid,
            template: name.map(str::to_string),
            address: server.map(str::to_string),
            server_password: None,
            channel: None,
            nickname: None,
            identity: None,
            created_ms: now_ms(),
            node_started: self.node(node).and_then(|n| n.starttime()),
            // A template's bot belongs to whoever owns the template, however it started.
            owner: name
                .and_then(|n| t.templates.get(n))
                .and_then(|tp| tp.record.owner.clone()),
        };
        if self.is_shared() {
            self.queue_claim(t, gid);
        } else {
            ops.push(Op::PutBot(record.clone()));
        }
        t.slots.entry(node).or_default().insert(lid, gid);
        t.bots.insert(
            gid,
            Bot {
                record,
                node,
                server: server.map(str::to_string),
                // The generation this change will be published under (callers bump once
                // their batch is done): a create sent before it knows this is its bot.
                since: self.generation() + 1,
                restoring: false,
            },
        );
        if let Some(name) = name {
            self.claim_template(t, name, node, ops);
        }
        Some(gid)
    }

    pub(super) fn retire(&self, t: &mut Tables, gid: u32, ops: &mut Vec<Op>) {
        if let Some(b) = t.bots.remove(&gid) {
            self.vacate(t, b.node, b.record.local_id, GoneBot::of(gid, &b));
            ops.push(Op::DeleteBot(gid));
        }
    }

    /// Takes bot `gone` out of slot `lid` of `node` if that slot still maps to it, and marks
    /// the slot gone under the next generation (callers bump once their batch is done), so a
    /// list read before then does not bring the bot back. Returns whether it did.
    pub(super) fn vacate(&self, t: &mut Tables, node: NodeId, lid: u32, gone: GoneBot) -> bool {
        let freed = t.unslot(node, lid, gone.gid);
        if freed {
            t.gone.mark(node, lid, gone, self.generation() + 1);
        }
        freed
    }

    pub(super) fn claim_template(
        &self,
        t: &mut Tables,
        name: &str,
        node: NodeId,
        ops: &mut Vec<Op>,
    ) {
        match t.templates.get(name) {
            Some(tp) if tp.node == node => {}
            Some(tp) => log::warn!(
                "template `{name}` is on node `{}` but also appeared on `{}`; keeping `{}` as its owner",
                self.node_name(tp.node),
                self.node_name(node),
                self.node_name(tp.node)
            ),
            None => {
                let record = TemplateRecord {
                    name: name.to_string(),
                    node: self.node_name(node),
                    settings: BTreeMap::new(),
                    identity: None,
                    owner: None,
                };
                ops.push(Op::PutTemplate(record.clone()));
                t.add_template(Template {
                    record,
                    node,
                    since: 0,
                });
            }
        }
    }

    /// Takes the bots that went down with a restart of `node` (stamped with another start
    /// time) out of their slots; returns the node's current start time.
    fn detach_restarted(&self, t: &mut Tables, node: NodeId, ops: &mut Vec<Op>) -> Option<String> {
        // The node's process restarted since these bots were seen: they are gone (its
        // temporary bots never survive a restart) and wait to be rebuilt, out of the
        // slots the node now gives to others.
        let current = self.node(node).and_then(|n| n.starttime());
        if let Some(cur) = &current {
            let detached = t.detach_restarted(node, cur);
            if !detached.is_empty() {
                log::warn!(
                    "node {} restarted (start time {cur}): {} bots went down with it and are brought back",
                    self.node_name(node),
                    detached.len()
                );
            }
            for gid in detached {
                if let Some(b) = t.bots.get(&gid) {
                    ops.push(Op::PutBot(b.record.clone()));
                }
            }
        }
        current
    }

    /// Whether a node's list says exactly what the view holds (the common poll).
    pub fn list_unchanged(&self, node: NodeId, listed: &[BotInfo]) -> bool {
        let current = self.node(node).and_then(|n| n.starttime());
        self.tables
            .read()
            .unchanged(node, listed, current.as_deref())
    }

    /// Applies a node's full `bot/list` (read by the poller or a fan-out that started at
    /// generation `started`): new bots get cluster ids, moved named bots keep theirs. Bots
    /// that are gone are dropped if the node's process is the one they ran under (stopped on
    /// purpose, behind the router's back); if it restarted since (its start time changed)
    /// they wait to be brought back, and an autostarted template is re-adopted under its id.
    /// Returns whether new cluster ids were handed out.
    pub fn reconcile(&self, node: NodeId, listed: &[BotInfo], started: u64) -> bool {
        if self.list_unchanged(node, listed) {
            return false;
        }
        let mut ops = Vec::new();
        let mut added = false;
        {
            let mut t = self.tables.write();
            // A node being evacuated, or holding copies of moved bots, is not read until it is
            // fenced: its list would adopt those copies as new bots.
            if t.fences.contains_key(&node)
                || self
                    .node(node)
                    .is_some_and(|n| n.evacuating.load(Ordering::Acquire))
            {
                return false;
            }
            let current = self.detach_restarted(&mut t, node, &mut ops);
            let mut seen = std::collections::HashSet::new();
            let before = self.ids.lock().next;
            for e in listed {
                match e.id {
                    Some(lid) => {
                        let r = Reported {
                            lid,
                            name: e.name.as_deref(),
                            server: e.server.as_deref(),
                            status: e.status,
                        };
                        if let Some(gid) = self.upsert(&mut t, node, r, started, &mut ops) {
                            seen.insert(gid);
                        }
                    }
                    None => {
                        if let Some(name) = &e.name {
                            self.claim_template(&mut t, name, node, &mut ops);
                            seen_template(&mut t, name, node, e.server.as_deref());
                        }
                    }
                }
            }
            added = added || self.ids.lock().next != before;
            // What the node runs now runs under its current process.
            if current.is_some() {
                for gid in &seen {
                    if let Some(b) = t.bots.get_mut(gid) {
                        if b.record.node_started != current {
                            b.record.node_started.clone_from(&current);
                            ops.push(Op::PutBot(b.record.clone()));
                        }
                    }
                }
            }
            // Bots the node no longer lists are gone, unless learned after the poll began.
            let gone: Vec<u32> = t
                .slots
                .get(&node)
                .map(|s| {
                    s.values()
                        .copied()
                        .filter(|g| {
                            !seen.contains(g) && t.bots.get(g).is_none_or(|b| b.since <= started)
                        })
                        .collect()
                })
                .unwrap_or_default();
            for gid in gone {
                self.retire(&mut t, gid, &mut ops);
            }
            // Templates the node no longer has were deleted behind the router's back.
            let listed_names: std::collections::HashSet<&str> =
                listed.iter().filter_map(|e| e.name.as_deref()).collect();
            let gone_templates: Vec<String> = t
                .node_templates
                .get(&node)
                .into_iter()
                .flatten()
                .filter(|name| {
                    !listed_names.contains(name.as_str())
                        && t.templates.get(*name).is_some_and(|tp| tp.since <= started)
                })
                .cloned()
                .collect();
            for name in gone_templates {
                t.remove_template(&name);
                ops.push(Op::DeleteTemplate(name));
            }
            self.recount(&t, node);
        }
        if !ops.is_empty() {
            self.bump();
            self.submit_ops(ops);
        }
        added
    }

    /// Learns a bot from a BotInfo in a node's response (synchronous; used on the request
    /// path) to a request sent at generation `sent`. Returns its cluster id.
    pub fn learn(&self, node: NodeId, r: Reported<'_>, sent: u64) -> Option<u32> {
        // Fast path (every `bot info` answer comes here): the router already knows exactly
        // this bot in this slot, so nothing changes and no write lock is taken.
        {
            let t = self.tables.read();
            if let Some(&gid) = t.slots.get(&node).and_then(|s| s.get(&r.lid)) {
                let unchanged = t
                    .bots
                    .get(&gid)
                    .is_some_and(|b| b.is_exactly(r.name, r.server));
                if unchanged {
                    return Some(gid);
                }
            }
        }
        let mut ops = Vec::new();
        let gid = {
            let mut t = self.tables.write();
            // The slot is empty, or holds a bot the router learned after the request went
            // and the answer is not of it.
            let holder = t.slots.get(&node).and_then(|s| s.get(&r.lid));
            let older = holder
                .and_then(|g| t.bots.get(g))
                .is_none_or(|b| b.since > sent && !same_bot(b, r.name, r.server));
            let shown = older
                .then(|| t.gone.shown_before(node, r.lid, sent, r.name, r.server))
                .flatten();
            if let Some(went) = shown {
                // Answered before the router saw this bot go (another request stopped it
                // meanwhile): the answer shows the bot that was there, under its id, and
                // does not bring it back (nor take the slot from the bot there now).
                return Some(went);
            }
            // Otherwise the answer is the newest word on the slot (a create's own answer,
            // a bot met first here).
            let gid = self.upsert(&mut t, node, r, u64::MAX, &mut ops);
            self.recount(&t, node);
            gid
        };
        if !ops.is_empty() {
            self.bump();
            self.submit_ops(ops);
        }
        gid
    }

    /// Registers a bot a create request just made, and waits until its record is durable.
    ///
    /// `sent` is the generation read before the create was sent, for creates that always make a
    /// new bot (`bot connect to`): whatever the router knew in that slot from before is gone,
    /// even if it looks alike (a temporary bot to the same address).
    pub async fn register_created(
        &self,
        node: NodeId,
        r: Reported<'_>,
        info: CreateInfo,
        sent: Option<u64>,
        timeout: Duration,
    ) -> Result<u32, (Option<u32>, RegisterError)> {
        if self.is_shared() {
            // Ids come from blocks reserved in the database: make sure one is at hand.
            self.ensure_id_headroom(timeout)
                .await
                .map_err(|e| (None, RegisterError::Store(e)))?;
        }
        // Records of this slot older than the create are of a bot the create replaced.
        let sent_ms = info.sent_ms.unwrap_or_else(now_ms);
        let mut ops = Vec::new();
        let gid = {
            let mut t = self.tables.write();
            if let Some(sent) = sent {
                let stale = t
                    .slots
                    .get(&node)
                    .and_then(|s| s.get(&r.lid))
                    .copied()
                    .filter(|g| t.bots.get(g).is_some_and(|b| b.since <= sent));
                if let Some(old) = stale {
                    self.retire(&mut t, old, &mut ops);
                }
            }
            let gen = self.bump();
            let gid = self.upsert(&mut t, node, r, u64::MAX, &mut ops);
            if let Some(g) = gid.filter(|g| sent.is_some() && t.unclaimed.contains(g)) {
                // In the same step as its claim is queued: whoever settles it knows.
                t.fresh.insert(g, sent_ms);
            }
            if let Some(b) = gid.and_then(|g| t.bots.get_mut(&g)) {
                b.since = gen;
                if info.address.is_some() {
                    b.record.address = info.address.clone();
                }
                if info.server_password.is_some() {
                    b.record.server_password = info.server_password.clone();
                }
                if b.record.owner.is_none() {
                    // A template's running bot answered to another key's connect keeps
                    // the owner it has.
                    b.record.owner = info.owner.clone();
                }
                ops.push(Op::PutBot(b.record.clone()));
            }
            self.recount(&t, node);
            gid
        };
        let Some(gid) = gid else {
            let e = if self.ids_exhausted() {
                RegisterError::IdsExhausted
            } else {
                RegisterError::NotRegistered
            };
            return Err((None, e));
        };
        if self.is_shared() {
            // The claim writes the new bot's record (a stale holder of its slot is dropped
            // there, from the store's own record of the slot).
            let t = self.tables.read();
            ops.retain(|op| match op {
                Op::PutBot(b) => !t.unclaimed.contains(&b.id),
                Op::DeleteBot(_) => false,
                _ => true,
            });
        }
        self.store
            .commit(ops, timeout)
            .await
            .map_err(|e| (Some(gid), RegisterError::Store(e)))?;
        if self.is_shared() {
            // The client gets the id only once the bot's record is claimed: its own, or
            // that of a router whose poll recorded this bot first.
            self.claims.lock().retain(|g| *g != gid);
            let fresh = sent.map(|_| sent_ms);
            return self
                .claim_one(gid, fresh, timeout)
                .await
                .map_err(|e| (Some(gid), RegisterError::Store(e)));
        }
        Ok(gid)
    }

    /// Drops a bot that `node` said it stopped (`bot disconnect` answered 204), unless the bot
    /// lives elsewhere by now (a late answer from a node whose bots failover moved meanwhile).
    pub fn forget_bot(&self, gid: u32, node: NodeId) {
        let mut ops = Vec::new();
        {
            let mut t = self.tables.write();
            if t.bots.get(&gid).is_none_or(|b| b.node != node) {
                return;
            }
            self.retire(&mut t, gid, &mut ops);
            self.recount(&t, node);
        }
        if !ops.is_empty() {
            self.bump();
            self.submit(ops);
        }
    }
}

/// A named bot the router already knows, reported in slot `lid` of `node`: one that went
/// down with a restart of the node (an autostarted template), or one that came back in
/// another slot. Returns its cluster id, moved to the new slot.
fn readopt_named(
    t: &mut Tables,
    node: NodeId,
    lid: u32,
    name: &str,
    server: Option<&str>,
    guard: u64,
    ops: &mut Vec<Op>,
) -> Option<u32> {
    // A template that autostarts (`run = true`) after a restart is the bot that went down
    // with it: it keeps its cluster id and is not started a second time.
    if let Some(gid) = t.restoring_template(node, name) {
        t.slots.entry(node).or_default().insert(lid, gid);
        if let Some(b) = t.bots.get_mut(&gid) {
            b.restoring = false;
            b.record.local_id = lid;
            b.server = server.map(str::to_string).or(b.server.take());
            ops.push(Op::PutBot(b.record.clone()));
        }
        return Some(gid);
    }
    // A named bot may have come back in another slot (node restart): keep its id.
    {
        let moved = t.slots.get(&node).and_then(|s| {
            s.iter()
                .find(|(l, g)| {
                    **l != lid
                        && t.bots.get(g).is_some_and(|b| {
                            b.record.template.as_deref() == Some(name) && b.since <= guard
                        })
                })
                .map(|(l, g)| (*l, *g))
        });
        if let Some((old_lid, gid)) = moved {
            if let Some(s) = t.slots.get_mut(&node) {
                s.remove(&old_lid);
                s.insert(lid, gid);
            }
            if let Some(b) = t.bots.get_mut(&gid) {
                b.record.local_id = lid;
                b.server = server.map(str::to_string).or(b.server.take());
                ops.push(Op::PutBot(b.record.clone()));
            }
            return Some(gid);
        }
    }
    None
}

/// The nodes to start with: the config file's (with their stored run-time changes), then
/// those added at run time (the file wins on a name clash).
fn node_definitions(
    config_nodes: &[NodeConfig],
    stored: &[crate::store::NodeRecord],
) -> Vec<(NodeConfig, NodeSource)> {
    let mut defs: Vec<(NodeConfig, NodeSource)> = config_nodes
        .iter()
        .map(|c| (c.clone(), NodeSource::Config))
        .collect();
    for rec in stored {
        let at = defs.iter().position(|(c, _)| c.name == rec.name);
        let file_agent = at.and_then(|i| defs[i].0.agent.as_ref());
        let parsed = NodeConfig::parse(
            &rec.name,
            &rec.url,
            rec.auth.clone(),
            rec.capacity,
            rec.effective_state(),
        )
        .and_then(|c| {
            let agent = crate::cluster::membership::agent_of_record(rec, file_agent)?;
            let file_tls = at.map(|i| &defs[i].0.tls);
            crate::cluster::membership::tls_of_record(rec, c.with_agent(agent), file_tls)
        });
        match (parsed, at) {
                (Ok(mut c), Some(i)) if rec.from_config => {
                    // No stored token: the file's (see `edit_node`).
                    if c.auth.is_none() {
                        c.auth = defs[i].0.auth.clone();
                    }
                    // TLS settings are the file's, unless changed at run time.
                    if rec.ca_file.is_none() && rec.tls_host.is_none() {
                        c.tls = defs[i].0.tls.clone();
                    }
                    defs[i].0 = c;
                }
                (Ok(_), Some(_)) => log::info!(
                    "node `{}` is in the config file and was also added at run time; the config file wins",
                    rec.name
                ),
                (Ok(c), None) if !rec.from_config => defs.push((c, NodeSource::Admin)),
                (Ok(_), None) => log::info!(
                    "node `{}` was edited at run time but is no longer in the config file; it is not used",
                    rec.name
                ),
                (Err(e), _) => log::error!("stored node `{}` is unusable: {e}", rec.name),
            }
    }
    defs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ids::ID_BLOCK;
    use crate::cluster::moves::Move;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::Identity;

    fn node_cfg(name: &str, port: u16) -> NodeConfig {
        NodeConfig::parse(
            name,
            &format!("http://127.0.0.1:{port}"),
            None,
            10,
            crate::config::NodeState::Ready,
        )
        .expect("node")
    }

    fn cluster(dir: &std::path::Path) -> Cluster {
        // A dropped cluster's store worker lets go of the file a moment later.
        let mut opened = EmbeddedStore::open(dir);
        for _ in 0..100 {
            if opened.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            opened = EmbeddedStore::open(dir);
        }
        let store = StoreHandle::spawn(Box::new(opened.expect("open"))).expect("spawn");
        let snap = futures::executor::block_on(store.load()).expect("load");
        let c = Cluster::new(&[node_cfg("a", 1), node_cfg("b", 2)], snap, store);
        for n in c.nodes().iter() {
            n.observe_poll(true, 1, 1);
        }
        c
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn listed(id: u32, name: Option<&str>, server: &str) -> BotInfo {
        BotInfo {
            id: Some(id),
            name: name.map(str::to_string),
            server: Some(server.into()),
            status: 2,
        }
    }

    #[test]
    fn a_restart_keeps_gone_bots_for_restoring_and_a_stop_drops_them() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let a = c.node(NodeId(0)).expect("a");
        a.set_starttime("S1".into());
        let g = c.generation();
        c.reconcile(
            NodeId(0),
            &[listed(0, Some("music"), "ts.m"), listed(1, None, "ts.x")],
            g,
        );
        let (music, temp) = (
            c.gid_of(NodeId(0), 0).expect("music"),
            c.gid_of(NodeId(0), 1).expect("temp"),
        );
        // The process restarts: the temporary bot is gone, the `run = true` template comes
        // back in slot 1, and a new bot took slot 0.
        a.set_starttime("S2".into());
        let g = c.generation();
        c.reconcile(
            NodeId(0),
            &[listed(1, Some("music"), "ts.m"), listed(0, None, "ts.new")],
            g,
        );
        assert_eq!(
            c.gid_of(NodeId(0), 1),
            Some(music),
            "re-adopted under its id"
        );
        let newcomer = c.gid_of(NodeId(0), 0).expect("newcomer");
        assert!(newcomer != temp && newcomer != music);
        assert_eq!(
            c.locate(temp).map(|(n, _)| n),
            Some(NodeId::NOWHERE),
            "the temporary bot waits to be restored, routed nowhere"
        );
        let restoring: Vec<u32> = c.restoring().iter().map(|(_, b)| b.gid).collect();
        assert_eq!(restoring, vec![temp]);
        let lists = c.restoring_lists();
        assert_eq!(lists.len(), 1, "only node 0 has bots coming back");
        assert_eq!(lists[&NodeId(0)][0].id, Some(temp));
        assert_eq!(lists[&NodeId(0)][0].status, 1);
        assert_eq!(
            c.bot_record(music).and_then(|r| r.node_started),
            Some("S2".into())
        );
        // Same process, a bot gone: stopped behind the router's back, dropped as before.
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(1, Some("music"), "ts.m")], g);
        assert_eq!(c.locate(newcomer), None);
        assert_eq!(c.restoring().len(), 1, "the restoring bot is not dropped");
        // A router restart keeps the bot waiting (its record says so).
        let rt = runtime();
        rt.block_on(c.store().flush(Duration::from_secs(5)))
            .expect("flush");
        drop(c);
        let c = cluster(dir.path());
        assert_eq!(c.locate(temp).map(|(n, _)| n), Some(NodeId::NOWHERE));
    }

    #[test]
    fn ids_run_out_by_refusing_never_by_reusing() {
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        let snap = Snapshot {
            id_high_water: crate::cluster::ids::MAX_ID - 1,
            ..Snapshot::default()
        };
        let c = Cluster::new(&[node_cfg("a", 1)], snap, store);
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, None, "x")], g);
        assert_eq!(
            c.gid_of(NodeId(0), 0),
            Some(crate::cluster::ids::MAX_ID - 1)
        );
        assert!(c.ids_exhausted());
        // The next bot gets no id: not the last one again.
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, None, "x"), listed(1, None, "y")], g);
        assert_eq!(c.gid_of(NodeId(0), 1), None);
        let rt = runtime();
        let r = Reported {
            lid: 2,
            name: None,
            server: Some("z"),
            status: 1,
        };
        let out = rt.block_on(c.register_created(
            NodeId(0),
            r,
            CreateInfo::default(),
            Some(c.generation()),
            Duration::from_secs(5),
        ));
        assert!(
            matches!(out, Err((None, RegisterError::IdsExhausted))),
            "{out:?}"
        );
        assert_eq!(c.bot_count(), 1);
    }

    #[test]
    fn ids_start_at_zero_and_are_never_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, None, "x"), listed(1, None, "y")], g);
        assert_eq!(c.gid_of(NodeId(0), 0), Some(0));
        assert_eq!(c.gid_of(NodeId(0), 1), Some(1));
        // Slot 0 now holds another bot: old id retired, new id given.
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, None, "z"), listed(1, None, "y")], g);
        assert_eq!(c.gid_of(NodeId(0), 0), Some(2));
        assert_eq!(c.locate(0), None);
        assert_eq!(c.node(NodeId(0)).expect("node").load.running(), 2);
    }

    /// A created bot counts once whether the poller or the create's answer sees it first.
    #[test]
    fn poller_first_then_create_answer_counts_once() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(2, None, "new.example")], g);
        let seen = c.gid_of(NodeId(0), 2).expect("adopted by the poller");
        let rt = runtime();
        let reported = Reported {
            lid: 2,
            name: None,
            server: Some("new.example"),
            status: 1,
        };
        let info = CreateInfo {
            address: Some("new.example".into()),
            server_password: Some("pw".into()),
            sent_ms: None,
            owner: None,
        };
        let gid = rt
            // The create was sent before the poll that adopted the bot (generation `g`).
            .block_on(c.register_created(
                NodeId(0),
                reported,
                info,
                Some(g),
                Duration::from_secs(5),
            ))
            .expect("registered");
        assert_eq!(gid, seen);
        assert_eq!(c.node(NodeId(0)).expect("node").load.running(), 1);
        assert_eq!(
            c.bot_record(gid).and_then(|r| r.server_password),
            Some("pw".into())
        );
        // And the other order: answer first, then a poll that lists it.
        let gid2 = rt
            .block_on(c.register_created(
                NodeId(0),
                Reported {
                    lid: 3,
                    name: None,
                    server: Some("b"),
                    status: 1,
                },
                CreateInfo::default(),
                None,
                Duration::from_secs(5),
            ))
            .expect("registered");
        let g = c.generation();
        c.reconcile(
            NodeId(0),
            &[listed(2, None, "new.example"), listed(3, None, "b")],
            g,
        );
        assert_eq!(c.gid_of(NodeId(0), 3), Some(gid2));
        assert_eq!(c.node(NodeId(0)).expect("node").load.running(), 2);
    }

    /// A `bot connect to` answer is a new bot, even when the slot held a bot to the same
    /// address that the router has not seen go yet: the old cluster id must not move over.
    #[test]
    fn a_fresh_create_never_inherits_an_old_id() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, None, "same.example")], g);
        let old = c.gid_of(NodeId(0), 0).expect("old");
        let sent = c.generation();
        let rt = runtime();
        let r = Reported {
            lid: 0,
            name: None,
            server: Some("same.example"),
            status: 1,
        };
        let new = rt
            .block_on(c.register_created(
                NodeId(0),
                r,
                CreateInfo::default(),
                Some(sent),
                Duration::from_secs(5),
            ))
            .expect("registered");
        assert_ne!(new, old);
        assert_eq!(c.locate(old), None);
    }

    /// A poll read before a bot was stopped still lists it: applied after the stop, it must
    /// not bring the bot back under a new id (its node would look occupied and refuse removal
    /// until the next poll). A poll read after the stop that lists a bot there is believed.
    #[test]
    fn a_poll_read_before_a_stop_does_not_bring_the_bot_back() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(
            NodeId(0),
            &[listed(0, None, "a.example"), listed(1, Some("music"), "m")],
            g,
        );
        let temp = c.gid_of(NodeId(0), 0).expect("temp");
        let music = c.gid_of(NodeId(0), 1).expect("music");
        let before_stop = c.generation();
        c.forget_bot(temp, NodeId(0));
        c.forget_bot(music, NodeId(0));
        assert_eq!(c.holdings(NodeId(0)).bots, 0);
        // The poll that began before the stops answers now, with both bots still in it.
        c.reconcile(
            NodeId(0),
            &[listed(0, None, "a.example"), listed(1, Some("music"), "m")],
            before_stop,
        );
        assert_eq!(c.gid_of(NodeId(0), 0), None, "the stopped bot stays gone");
        assert_eq!(c.gid_of(NodeId(0), 1), None, "the stopped template bot too");
        assert_eq!(c.holdings(NodeId(0)).bots, 0);
        assert_eq!(c.node(NodeId(0)).expect("node").load.running(), 0);
        // So does an answer to a request sent before the stop (a `bot info` another client
        // asked for meanwhile): it shows the bot under the id it had, and learns nothing.
        let answered = Reported {
            lid: 0,
            name: None,
            server: Some("a.example"),
            status: 2,
        };
        assert_eq!(c.learn(NodeId(0), answered, before_stop), Some(temp));
        assert_eq!(c.holdings(NodeId(0)).bots, 0);
        // A poll begun after the stops that lists a bot in slot 0 is a new bot there.
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, None, "b.example")], g);
        let newcomer = c
            .gid_of(NodeId(0), 0)
            .expect("a bot started later is adopted");
        assert_ne!(newcomer, temp);
        // The old poll answering late now does not hide the newcomer (it is the newer word
        // on slot 0), and a late answer about the stopped bot neither takes its slot.
        c.reconcile(NodeId(0), &[listed(0, None, "b.example")], before_stop);
        assert_eq!(c.gid_of(NodeId(0), 0), Some(newcomer));
        assert_eq!(c.learn(NodeId(0), answered, before_stop), Some(temp));
        assert_eq!(
            c.gid_of(NodeId(0), 0),
            Some(newcomer),
            "the newcomer keeps slot 0"
        );
    }

    /// `bot save` turns a temporary bot into a template bot in the same slot: same cluster id.
    #[test]
    fn saving_a_bot_keeps_its_id() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(1, None, "ts.x")], g);
        let gid = c.gid_of(NodeId(0), 1).expect("gid");
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(1, Some("saved"), "ts.x")], g);
        assert_eq!(c.gid_of(NodeId(0), 1), Some(gid));
        assert_eq!(c.bot_template(gid).as_deref(), Some("saved"));
        assert_eq!(c.template_owner("saved"), Some(NodeId(0)));
        // A different named bot in that slot is another bot.
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(1, Some("other"), "ts.x")], g);
        assert_ne!(c.gid_of(NodeId(0), 1), Some(gid));
    }

    #[test]
    fn pending_template_names_are_exclusive() {
        let dir = tempfile::tempdir().expect("dir");
        let c = Arc::new(cluster(dir.path()));
        let first = c.claim_pending("t").expect("free");
        assert!(c.claim_pending("t").is_none());
        drop(first);
        assert!(c.claim_pending("t").is_some());
        let g = c.generation();
        c.reconcile(
            NodeId(0),
            &[BotInfo {
                id: None,
                name: Some("x".into()),
                server: None,
                status: 0,
            }],
            g,
        );
        assert!(
            c.claim_pending("x").is_none(),
            "an existing template is taken"
        );
    }

    /// A poll that reports nothing new changes nothing (and takes no write lock).
    #[test]
    fn unchanged_poll_is_a_no_op() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let list = vec![
            listed(0, Some("run"), "s1"),
            BotInfo {
                id: None,
                name: Some("off".into()),
                server: Some("s2".into()),
                status: 0,
            },
            listed(1, None, "tmp"),
        ];
        let g = c.generation();
        assert!(c.reconcile(NodeId(0), &list, g));
        let g = c.generation();
        assert!(!c.reconcile(NodeId(0), &list, g));
        assert_eq!(c.generation(), g, "nothing changed");
        // One template fewer is a change, and it is applied.
        let g = c.generation();
        c.reconcile(NodeId(0), &[list[0].clone(), list[2].clone()], g);
        assert_eq!(c.template_owner("off"), None);
        assert!(c.generation() > g);
    }

    #[test]
    fn named_bot_moving_slot_keeps_its_id() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(1), &[listed(0, Some("music"), "s")], g);
        let gid = c.gid_of(NodeId(1), 0).expect("gid");
        let g = c.generation();
        c.reconcile(NodeId(1), &[listed(4, Some("music"), "s")], g);
        assert_eq!(c.locate(gid), Some((NodeId(1), 4)));
        assert_eq!(c.template_owner("music"), Some(NodeId(1)));
    }

    #[test]
    fn stale_poll_does_not_undo_a_newer_create() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let started = c.generation();
        let gid = c
            .learn(
                NodeId(0),
                Reported {
                    lid: 3,
                    name: None,
                    server: Some("new"),
                    status: 1,
                },
                u64::MAX,
            )
            .expect("gid");
        // The poll began before the create and does not list the new bot.
        c.reconcile(NodeId(0), &[], started);
        assert_eq!(c.locate(gid), Some((NodeId(0), 3)));
        // A later poll that does not list it drops it.
        let g = c.generation();
        c.reconcile(NodeId(0), &[], g);
        assert_eq!(c.locate(gid), None);
    }

    #[test]
    fn offline_templates_are_owned_and_listed_as_fallback() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(
            NodeId(0),
            &[
                listed(0, Some("run"), "s1"),
                BotInfo {
                    id: None,
                    name: Some("off".into()),
                    server: Some("s2".into()),
                    status: 0,
                },
                listed(1, None, "tmp"),
            ],
            g,
        );
        assert_eq!(c.template_owner("off"), Some(NodeId(0)));
        let fb = c.fallback_list(NodeId(0));
        assert_eq!(fb.len(), 3);
        assert_eq!(fb[0].name.as_deref(), Some("run"));
        assert_eq!(fb[0].status, 1);
        assert_eq!(
            fb[1],
            BotInfo {
                id: None,
                name: Some("off".into()),
                server: Some("s2".into()),
                status: 0
            }
        );
        assert_eq!(fb[2].name, None);
    }

    #[test]
    fn ids_survive_restart_and_counter_never_goes_back() {
        let dir = tempfile::tempdir().expect("dir");
        let gid;
        {
            let c = cluster(dir.path());
            let g = c.generation();
            c.reconcile(NodeId(0), &[listed(0, None, "x"), listed(1, None, "y")], g);
            gid = c.gid_of(NodeId(0), 1).expect("gid");
            c.forget_bot(c.gid_of(NodeId(0), 0).expect("gid"), NodeId(0));
            let rt = runtime();
            rt.block_on(c.store().flush(Duration::from_secs(5)))
                .expect("flush");
        }
        let c = cluster(dir.path());
        assert_eq!(c.locate(gid), Some((NodeId(0), 1)));
        // The poll after restart keeps the id; a new bot gets a fresh one above all earlier.
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(1, None, "y"), listed(0, None, "q")], g);
        assert_eq!(c.gid_of(NodeId(0), 1), Some(gid));
        assert!(c.gid_of(NodeId(0), 0).expect("gid") >= 2);
    }

    /// A failover move keeps the cluster id, moves slot, count and template, and leaves a
    /// durable fence for the old copy; a poll that saw the new bot first is folded in.
    #[test]
    fn a_move_keeps_the_id_and_leaves_a_durable_fence() {
        let dir = tempfile::tempdir().expect("dir");
        let gid;
        {
            let c = cluster(dir.path());
            let g = c.generation();
            c.reconcile(NodeId(0), &[listed(3, None, "ts.x")], g);
            gid = c.gid_of(NodeId(0), 3).expect("gid");
            // The target's poll sees the rebuilt bot before the move is recorded.
            let g = c.generation();
            c.reconcile(NodeId(1), &[listed(0, Some("ts3ab-lb-0"), "ts.x")], g);
            let stranger = c.gid_of(NodeId(1), 0).expect("adopted");
            assert_ne!(stranger, gid);
            let rt = runtime();
            let moved = rt
                .block_on(c.move_bot(
                    Move {
                        gid,
                        from: NodeId(0),
                        to: NodeId(1),
                        local_id: 0,
                        template: "ts3ab-lb-0".into(),
                        settings: [("connect.address".to_string(), "ts.x".to_string())].into(),
                        server: Some("ts.x".into()),
                    },
                    Duration::from_secs(5),
                ))
                .expect("durable");
            assert!(moved);
            assert_eq!(c.locate(gid), Some((NodeId(1), 0)));
            assert_eq!(c.locate(stranger), None, "the poll's guess is folded in");
            assert_eq!(c.template_owner("ts3ab-lb-0"), Some(NodeId(1)));
            assert_eq!(c.node(NodeId(0)).expect("n").load.running(), 0);
            assert_eq!(c.node(NodeId(1)).expect("n").load.running(), 1);
            let f = c.fences_on(NodeId(0));
            assert_eq!((f.len(), f[0].bot, f[0].local_id), (1, gid, 3));
            // Moving again from the old node is refused: the bot is no longer there.
            let again = rt
                .block_on(c.move_bot(
                    Move {
                        gid,
                        from: NodeId(0),
                        to: NodeId(1),
                        local_id: 5,
                        template: "x".into(),
                        settings: BTreeMap::new(),
                        server: None,
                    },
                    Duration::from_secs(5),
                ))
                .expect("store");
            assert!(!again);
        }
        let c = cluster(dir.path());
        assert_eq!(
            c.locate(gid),
            Some((NodeId(1), 0)),
            "the move survives a restart"
        );
        assert_eq!(c.fences_on(NodeId(0)).len(), 1, "and so does the fence");
        let rt = runtime();
        rt.block_on(c.clear_fences(NodeId(0), &c.fences_on(NodeId(0)), Duration::from_secs(5)))
            .expect("clear");
        drop(c);
        let c = cluster(dir.path());
        assert!(c.fences_on(NodeId(0)).is_empty());
    }

    /// Ids handed out on paths that cannot wait are below a durable high-water mark, so a
    /// crash can never give them to another bot.
    #[test]
    fn id_headroom_is_durable_before_ids_are_used() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let rt = runtime();
        rt.block_on(c.ensure_id_headroom(Duration::from_secs(5)))
            .expect("headroom");
        let snap = rt.block_on(c.store().load()).expect("load");
        assert!(snap.id_high_water >= ID_BLOCK / 2, "{}", snap.id_high_water);
        // Learned on a synchronous path, never flushed: still below the durable mark.
        let gid = c
            .learn(
                NodeId(0),
                Reported {
                    lid: 0,
                    name: None,
                    server: Some("x"),
                    status: 2,
                },
                u64::MAX,
            )
            .expect("gid");
        assert!(gid < snap.id_high_water);
        // With headroom left there is nothing to write again.
        let before = c.ids.lock().durable;
        rt.block_on(c.ensure_id_headroom(Duration::from_secs(5)))
            .expect("headroom");
        assert_eq!(c.ids.lock().durable, before);
    }

    /// An interrupted failover's copy, adopted by the poller on another node while the
    /// template is still recorded on the dead node, is found so that the retry reuses it.
    #[test]
    fn the_holder_of_an_interrupted_copy_is_found() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(0, Some("music"), "ts.x")], g);
        assert_eq!(c.template_owner("music"), Some(NodeId(0)));
        assert_eq!(c.holder_of("music", NodeId(0)), None);
        let g = c.generation();
        c.reconcile(NodeId(1), &[listed(4, Some("music"), "ts.x")], g);
        assert_eq!(
            c.template_owner("music"),
            Some(NodeId(0)),
            "the first owner is kept"
        );
        assert_eq!(c.holder_of("music", NodeId(0)), Some(NodeId(1)));
        assert_eq!(c.holder_of("music", NodeId(1)), Some(NodeId(0)));
    }

    /// Late answers about a slot the bot has left change nothing: a `bot disconnect` 204 from
    /// another node does not drop it, an identity read from another slot is not recorded.
    #[test]
    fn late_answers_about_an_old_slot_are_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let g = c.generation();
        c.reconcile(NodeId(0), &[listed(2, None, "a.example")], g);
        let gid = c.gid_of(NodeId(0), 2).expect("gid");
        let id = Identity {
            key: "K".into(),
            offset: 1,
            level: -1,
        };
        c.record_identity(gid, NodeId(1), 2, id.clone());
        c.record_identity(gid, NodeId(0), 3, id.clone());
        assert_eq!(c.bot_record(gid).and_then(|r| r.identity), None);
        c.record_identity(gid, NodeId(0), 2, id.clone());
        assert_eq!(c.bot_record(gid).and_then(|r| r.identity), Some(id));
        c.forget_bot(gid, NodeId(1));
        assert_eq!(c.locate(gid), Some((NodeId(0), 2)), "another node's answer");
        c.forget_bot(gid, NodeId(0));
        assert_eq!(c.locate(gid), None);
        assert_eq!(c.node(NodeId(0)).expect("n").load.running(), 0);
    }
}
