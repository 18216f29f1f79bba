//! Moving bots on purpose: evacuating a live node, moving one bot, rebalancing the cluster.
//!
//! Owns: [`Operations`], the long-running admin operations the admin HTTP layer starts (it
//! answers 202 with the [`OperationView`] at once; the work runs on a spawned task), their
//! public types ([`Kind`], [`State`], [`Failure`], [`OpError`]), their records in the store
//! (`store::OperationRecord`, written durably when an operation starts and as it
//! progresses), starting them (evacuate, move, rebalance: which bots go where, and whether
//! an operation clashes with a running one), running them `failover.concurrency` bots at a
//! time, and resuming them after a router restart ([`Operations::resume`]; call it after the
//! router's first poll round).
//! Does not own: the planned move of one live bot (`moving`), the rebalance plan
//! (`plan`, [`plan_rebalance`]), reading and restoring a bot's playback (`playback`,
//! [`Playback`]); the rebuild of a bot's template on a node (`cluster::failover::Rebuilder`,
//! shared with failover), the view's records of a move (`Cluster::hand_over`,
//! `Cluster::restore_bot`, fences), placement (`Placer`), or HTTP (`admin::http`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::failover::Rebuilder;
use crate::cluster::placement::{Placer, Reservation};
use crate::cluster::{Cluster, Node, NodeId};
use crate::config::FailoverConfig;
use crate::store::{now_ms, Op, OperationRecord, StoreError, WRITE_DEADLINE};

mod moving;
mod plan;
mod playback;

use moving::reserve_target;
pub use plan::{plan_rebalance, NodeBots, Planned};
pub use playback::{Playback, Song, MAX_QUEUE};

/// Finished operations kept (older ones are deleted from the store).
const KEEP_FINISHED: usize = 100;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Every bot of one live node to other nodes.
    Evacuate,
    /// One bot to a given node.
    Move,
    /// From the fullest nodes to the emptiest.
    Rebalance,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Still moving bots.
    Running,
    /// Every bot moved.
    Done,
    /// Over, and some bots could not be moved (see `failed`).
    Failed,
}

/// A bot an operation could not move, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Cluster id.
    pub bot: u32,
    /// Why, in words.
    pub reason: String,
}

/// An operation as the admin API shows it (`Operation` in `docs/admin-api.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationView {
    /// Operation id (ascending, never reused).
    pub id: u64,
    /// What it does.
    pub kind: Kind,
    /// The node evacuated, or the node a moved bot goes to; None for a rebalance.
    pub target: Option<String>,
    /// Running, done or failed.
    pub state: State,
    /// Bots it set out to move.
    pub total: usize,
    /// Bots moved.
    pub done: usize,
    /// Bots that could not be moved.
    pub failed: Vec<Failure>,
    /// Bots still to move.
    pub left: Vec<u32>,
    /// Milliseconds since the Unix epoch when it started.
    pub created_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
}

/// Why an operation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such node, bot or operation.
    #[error("{0} not found")]
    NotFound(String),
    /// A field's value is not acceptable (e.g. the bot is on that node already).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// It clashes with the cluster's state: another operation runs there, the node is down,
    /// draining or full.
    #[error("{0}")]
    Conflict(String),
    /// The store could not record the operation (nothing was started).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One bot's way in an operation, kept in its record while the bot is still to move.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Leg {
    /// The node it is moved from.
    from: String,
    /// The node it goes to (for an evacuation: chosen when its move starts).
    to: Option<String>,
    /// Its playback, read before its old copy was stopped.
    #[serde(default)]
    playback: Option<Playback>,
}

/// What the store keeps of an operation (`OperationRecord::data`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpData {
    kind: Kind,
    target: Option<String>,
    state: State,
    total: usize,
    done: usize,
    failed: Vec<Failure>,
    left: Vec<u32>,
    created_ms: u64,
    updated_ms: u64,
    /// Per bot still to move.
    #[serde(default)]
    legs: BTreeMap<u32, Leg>,
}

impl OpData {
    fn view(&self, id: u64) -> OperationView {
        OperationView {
            id,
            kind: self.kind,
            target: self.target.clone(),
            state: self.state,
            total: self.total,
            done: self.done,
            failed: self.failed.clone(),
            left: self.left.clone(),
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }

    /// The nodes it owns: an evacuation its node; a move or rebalance the nodes it moves
    /// bots from or to.
    fn nodes(&self) -> HashSet<String> {
        let mut s: HashSet<String> = self.target.iter().cloned().collect();
        if self.kind == Kind::Evacuate {
            return s;
        }
        for leg in self.legs.values() {
            s.insert(leg.from.clone());
            s.extend(leg.to.iter().cloned());
        }
        s
    }

    fn record(&self, id: u64) -> Op {
        Op::PutOperation(OperationRecord {
            id,
            // A plain struct of strings and numbers always serialises.
            data: serde_json::to_value(self).unwrap_or(Value::Null),
        })
    }
}

/// The admin operations: planned moves of live bots, and their records.
pub struct Operations {
    cluster: Arc<Cluster>,
    placer: Arc<Placer>,
    cfg: FailoverConfig,
    rebuilder: Rebuilder,
    next_id: AtomicU64,
    ops: Mutex<BTreeMap<u64, OpData>>,
    /// Operations with a task running here: one task per operation, also when the lead
    /// leaves and comes back while an old task still winds down.
    running: Arc<Mutex<HashSet<u64>>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations")
            .field("ops", &self.ops.lock().len())
            .finish()
    }
}

impl Operations {
    /// The operations over the running router's parts, with the records loaded at start
    /// (`Snapshot::operations`); unreadable records are logged and skipped.
    pub fn new(
        cluster: Arc<Cluster>,
        placer: Arc<Placer>,
        failover_cfg: FailoverConfig,
        connect_timeout: Duration,
        request_timeout: Duration,
        stored: Vec<OperationRecord>,
    ) -> Arc<Operations> {
        let mut ops = BTreeMap::new();
        for rec in stored {
            match serde_json::from_value::<OpData>(rec.data) {
                Ok(d) => {
                    ops.insert(rec.id, d);
                }
                Err(e) => log::error!("stored operation {} is unreadable: {e}", rec.id),
            }
        }
        let next = ops.keys().next_back().map_or(1, |m| m + 1);
        let rebuild_view = cluster.clone();
        Arc::new(Operations {
            cluster,
            placer,
            cfg: failover_cfg,
            rebuilder: Rebuilder::new(rebuild_view, connect_timeout, request_timeout),
            next_id: AtomicU64::new(next),
            ops: Mutex::new(ops),
            running: Arc::default(),
        })
    }

    /// The cluster the operations move bots in.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Spawn on the current tokio runtime: resumes operations that were running when the
    /// router stopped. Call it after the first poll round (nodes are down until polled).
    pub fn resume(self: &Arc<Self>) {
        if !self.cluster.leads() {
            return;
        }
        let running: Vec<u64> = self
            .ops
            .lock()
            .iter()
            .filter(|(_, d)| d.state == State::Running)
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            if self.running.lock().contains(&id) {
                continue;
            }
            log::warn!(
                "resuming operation {id} (interrupted by a router restart or a change of lead)"
            );
            tokio::spawn(self.clone().run(id, HashMap::new()));
        }
    }

    /// This router just took the lead on a shared store: the operations table becomes the
    /// store's (another router may have started or advanced operations), and those still
    /// running are resumed from their records.
    pub fn take_over(self: &Arc<Self>, stored: Vec<OperationRecord>) {
        {
            let mut ops = self.ops.lock();
            for rec in stored {
                match serde_json::from_value::<OpData>(rec.data) {
                    Ok(d) => {
                        let newer = ops
                            .get(&rec.id)
                            .is_none_or(|o| o.updated_ms <= d.updated_ms);
                        if newer {
                            ops.insert(rec.id, d);
                        }
                    }
                    Err(e) => log::error!("stored operation {} is unreadable: {e}", rec.id),
                }
            }
            let next = ops.keys().next_back().map_or(1, |m| m + 1);
            self.next_id.fetch_max(next, Ordering::AcqRel);
        }
        self.resume();
    }

    /// Moves every bot of live node `node` to other nodes (the node's state is not changed:
    /// bots created there meanwhile stay; set it to `drain` first to avoid that).
    pub async fn evacuate(self: &Arc<Self>, node: &str) -> Result<OperationView, OpError> {
        let n = self
            .cluster
            .node_by_name(node)
            .ok_or_else(|| OpError::NotFound(format!("node `{node}`")))?;
        if !n.is_healthy() {
            return Err(OpError::Conflict(format!(
                "node `{node}` is down; failover moves the bots of a dead node"
            )));
        }
        let mut gids: Vec<u32> = self
            .cluster
            .bots_on(n.id)
            .into_iter()
            .map(|b| b.gid)
            .collect();
        gids.sort_unstable();
        let legs = gids
            .iter()
            .map(|g| {
                let leg = Leg {
                    from: node.to_string(),
                    ..Leg::default()
                };
                (*g, leg)
            })
            .collect();
        self.start(Kind::Evacuate, Some(node.to_string()), legs, HashMap::new())
            .await
    }

    /// Moves bot `gid` to node `node`.
    pub async fn move_bot(
        self: &Arc<Self>,
        gid: u32,
        node: &str,
    ) -> Result<OperationView, OpError> {
        let w = self
            .cluster
            .whereabouts(gid)
            .ok_or_else(|| OpError::NotFound(format!("bot {gid}")))?;
        let to = self
            .cluster
            .node_by_name(node)
            .ok_or_else(|| OpError::NotFound(format!("node `{node}`")))?;
        if w.node == to.id {
            return Err(OpError::Invalid {
                field: "node",
                message: format!("bot {gid} is on node `{node}` already"),
            });
        }
        let from = self
            .cluster
            .node(w.node)
            .filter(|_| !w.restoring)
            .ok_or_else(|| {
                OpError::Conflict(format!(
                    "bot {gid} is not running now (it waits to be brought back)"
                ))
            })?;
        if !from.is_healthy() {
            return Err(OpError::Conflict(format!(
                "bot {gid}'s node `{}` is down; failover moves it",
                from.name
            )));
        }
        let reservation = reserve_target(&self.placer, &to).map_err(OpError::Conflict)?;
        let legs = BTreeMap::from([(
            gid,
            Leg {
                from: from.name.to_string(),
                to: Some(node.to_string()),
                playback: None,
            },
        )]);
        self.start(
            Kind::Move,
            Some(node.to_string()),
            legs,
            HashMap::from([(gid, reservation)]),
        )
        .await
    }

    /// Moves bots from the fullest nodes to the emptiest (among those up and `ready`) until
    /// each is within about one bot of its fair share, in proportion to capacity (see
    /// [`plan_rebalance`]; [30, 0, 0] on equal capacities ends at [10, 10, 10]).
    pub async fn rebalance(self: &Arc<Self>) -> Result<OperationView, OpError> {
        let nodes: Vec<Arc<Node>> = self
            .cluster
            .nodes()
            .iter()
            .filter(|n| n.takes_new_bots())
            .cloned()
            .collect();
        let input: Vec<NodeBots> = nodes
            .iter()
            .map(|n| {
                let mut bots: Vec<u32> = self
                    .cluster
                    .bots_on(n.id)
                    .into_iter()
                    .map(|b| b.gid)
                    .collect();
                bots.sort_unstable();
                NodeBots {
                    node: n.id,
                    capacity: n.capacity.load(Ordering::Acquire),
                    bots,
                }
            })
            .collect();
        let name = |id: NodeId| {
            nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.name.to_string())
                .unwrap_or_default()
        };
        let legs = plan_rebalance(&input)
            .into_iter()
            .map(|m| {
                let leg = Leg {
                    from: name(m.from),
                    to: Some(name(m.to)),
                    playback: None,
                };
                (m.gid, leg)
            })
            .collect();
        self.start(Kind::Rebalance, None, legs, HashMap::new())
            .await
    }

    /// One operation.
    pub fn get(&self, id: u64) -> Option<OperationView> {
        self.ops.lock().get(&id).map(|d| d.view(id))
    }

    /// Every operation kept, newest first.
    pub fn list(&self) -> Vec<OperationView> {
        self.ops
            .lock()
            .iter()
            .rev()
            .map(|(id, d)| d.view(*id))
            .collect()
    }

    /// Records a new operation durably and spawns its work.
    async fn start(
        self: &Arc<Self>,
        kind: Kind,
        target: Option<String>,
        legs: BTreeMap<u32, Leg>,
        reservations: HashMap<u32, Reservation>,
    ) -> Result<OperationView, OpError> {
        // Several routers on one store: operations run on the leading router only, so no
        // two routers ever move the same bot.
        if !self.cluster.leads() {
            return Err(OpError::Conflict(
                "another router leads the cluster and runs its operations; send this to it (or retry: the lead passes on within 10 s if that router is gone)".into(),
            ));
        }
        let now = now_ms();
        let data = OpData {
            kind,
            target,
            state: if legs.is_empty() {
                State::Done
            } else {
                State::Running
            },
            total: legs.len(),
            done: 0,
            failed: Vec::new(),
            left: legs.keys().copied().collect(),
            created_ms: now,
            updated_ms: now,
            legs,
        };
        let id = {
            let mut ops = self.ops.lock();
            if let Some(why) = clash(&ops, &data) {
                return Err(OpError::Conflict(why));
            }
            let id = self.next_id.fetch_add(1, Ordering::AcqRel);
            ops.insert(id, data.clone());
            id
        };
        if let Err(e) = self
            .cluster
            .store()
            .commit(vec![data.record(id)], WRITE_DEADLINE)
            .await
        {
            self.ops.lock().remove(&id);
            return Err(OpError::Store(e));
        }
        if data.state == State::Running {
            tokio::spawn(self.clone().run(id, reservations));
        }
        Ok(data.view(id))
    }

    /// Works through an operation's bots, `failover.concurrency` at a time.
    async fn run(self: Arc<Self>, id: u64, mut reservations: HashMap<u32, Reservation>) {
        struct Running(Arc<Mutex<HashSet<u64>>>, u64);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.lock().remove(&self.1);
            }
        }
        if !self.running.lock().insert(id) {
            log::debug!("operation {id} runs here already");
            return;
        }
        let _running = Running(self.running.clone(), id);
        let Some(left) = self.ops.lock().get(&id).map(|d| d.left.clone()) else {
            return;
        };
        let started = Instant::now();
        let this = &self;
        let jobs: Vec<(u32, Option<Reservation>)> = left
            .into_iter()
            .map(|g| (g, reservations.remove(&g)))
            .collect();
        let mut paused = false;
        // Once the lead is lost this task moves nothing more, even if the lead comes back:
        // another router may have moved some of these bots meanwhile, and a fresh task
        // (`resume`) starts from the record instead.
        let lost = std::sync::atomic::AtomicBool::new(false);
        let lost = &lost;
        let mut results = futures::stream::iter(jobs)
            .map(|(gid, r)| async move {
                if lost.load(Ordering::Acquire) || !this.cluster.leads() {
                    lost.store(true, Ordering::Release);
                    return (gid, None);
                }
                let stats = &this.cluster.stats.moves;
                stats.started.inc();
                let result = this.move_one(id, gid, r).await;
                match result {
                    Ok(()) => stats.completed.inc(),
                    Err(_) => stats.failed.inc(),
                }
                (gid, Some(result))
            })
            .buffer_unordered(self.cfg.concurrency.max(1));
        while let Some((gid, result)) = results.next().await {
            let Some(result) = result else {
                paused = true;
                continue;
            };
            if let Err(reason) = &result {
                log::error!("operation {id}: bot {gid} not moved: {reason}");
            }
            self.update(id, |d| {
                d.left.retain(|g| *g != gid);
                d.legs.remove(&gid);
                match result {
                    Ok(()) => d.done += 1,
                    Err(reason) => d.failed.push(Failure { bot: gid, reason }),
                }
            })
            .await;
        }
        drop(results);
        if paused {
            // Resumed by `resume` (the Resumer calls it while this router leads) from
            // what is left.
            log::warn!("operation {id} paused here: this router did not lead the cluster");
            return;
        }
        self.update(id, |d| {
            d.state = if d.failed.is_empty() {
                State::Done
            } else {
                State::Failed
            };
        })
        .await;
        if let Some(v) = self.get(id) {
            log::warn!(
                "operation {id} ({:?}): {} of {} bots moved in {} ms, {} failed",
                v.kind,
                v.done,
                v.total,
                started.elapsed().as_millis(),
                v.failed.len()
            );
        }
        self.prune().await;
    }

    /// Changes an operation and waits until its record is durable (a failed write is logged:
    /// the next one carries the state again).
    async fn update(&self, id: u64, f: impl FnOnce(&mut OpData)) {
        {
            let mut ops = self.ops.lock();
            let Some(d) = ops.get_mut(&id) else { return };
            f(d);
            d.updated_ms = now_ms();
            // Queued under the lock, so records reach the store in the order they changed.
            self.cluster.store().submit(vec![d.record(id)]);
        }
        if let Err(e) = self.cluster.store().flush(WRITE_DEADLINE).await {
            log::error!("operation {id}: its progress is not durable yet: {e}");
        }
    }

    /// Forgets the oldest finished operations beyond [`KEEP_FINISHED`].
    async fn prune(&self) {
        let ops: Vec<Op> = {
            let mut ops = self.ops.lock();
            let finished: Vec<u64> = ops
                .iter()
                .filter(|(_, d)| d.state != State::Running)
                .map(|(id, _)| *id)
                .collect();
            let extra = finished.len().saturating_sub(KEEP_FINISHED);
            finished[..extra]
                .iter()
                .map(|id| {
                    ops.remove(id);
                    Op::DeleteOperation(*id)
                })
                .collect()
        };
        self.cluster.store().submit(ops);
    }
}

/// Why a new operation cannot run beside the running ones, if it cannot: an evacuation or a
/// rebalance owns its nodes; two moves only clash over the same bot.
fn clash(ops: &BTreeMap<u64, OpData>, new: &OpData) -> Option<String> {
    let new_nodes = new.nodes();
    let new_bots: HashSet<u32> = new.left.iter().copied().collect();
    for (id, d) in ops.iter().filter(|(_, d)| d.state == State::Running) {
        if let Some(b) = d.left.iter().find(|b| new_bots.contains(b)) {
            return Some(format!("operation {id} is moving bot {b}"));
        }
        let exclusive = new.kind != Kind::Move || d.kind != Kind::Move;
        if new.kind == Kind::Rebalance || d.kind == Kind::Rebalance {
            return Some(format!("operation {id} ({:?}) is running", d.kind).to_lowercase());
        }
        if exclusive {
            if let Some(n) = d.nodes().intersection(&new_nodes).next() {
                return Some(format!("operation {id} is moving bots of node `{n}`"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evacuations_and_rebalances_own_their_nodes() {
        let op = |kind, from: &str, to: Option<&str>, bot| OpData {
            kind,
            target: match kind {
                Kind::Evacuate => Some(from.to_string()),
                Kind::Move => to.map(str::to_string),
                Kind::Rebalance => None,
            },
            state: State::Running,
            total: 1,
            done: 0,
            failed: Vec::new(),
            left: vec![bot],
            created_ms: 0,
            updated_ms: 0,
            legs: BTreeMap::from([(
                bot,
                Leg {
                    from: from.into(),
                    to: to.map(str::to_string),
                    playback: None,
                },
            )]),
        };
        let running = BTreeMap::from([(1, op(Kind::Evacuate, "a", None, 1))]);
        assert!(clash(&running, &op(Kind::Move, "b", Some("a"), 2)).is_some());
        assert!(clash(&running, &op(Kind::Move, "b", Some("c"), 2)).is_none());
        assert!(clash(&running, &op(Kind::Move, "a", Some("c"), 2)).is_some());
        assert!(clash(&running, &op(Kind::Evacuate, "a", None, 2)).is_some());
        assert!(clash(&running, &op(Kind::Evacuate, "b", None, 2)).is_none());
        assert!(clash(&running, &op(Kind::Rebalance, "b", Some("c"), 3)).is_some());
        let moves = BTreeMap::from([(1, op(Kind::Move, "a", Some("b"), 1))]);
        assert!(clash(&moves, &op(Kind::Move, "a", Some("b"), 2)).is_none());
        assert!(
            clash(&moves, &op(Kind::Move, "a", Some("c"), 1)).is_some(),
            "same bot"
        );
    }
}
