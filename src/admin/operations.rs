//! Moving bots on purpose: evacuating a live node, moving one bot, rebalancing the cluster.
//!
//! Owns: [`Operations`], the long-running admin operations the admin HTTP layer starts (it
//! answers 202 with the [`OperationView`] at once; the work runs on a spawned task), their
//! records in the store (`store::OperationRecord`, written durably when an operation starts
//! and as it progresses) and resuming them after a router restart; the planned move of one
//! live bot; the rebalance plan ([`plan_rebalance`]); reading and restoring a bot's playback
//! ([`Playback`]).
//! Does not own: the rebuild of a bot's template on a node (`cluster::failover::Rebuilder`,
//! shared with failover), the view's records of a move (`Cluster::hand_over`,
//! `Cluster::restore_bot`, fences), placement (`Placer`), or HTTP (`admin::http`).
//!
//! # One planned move
//! Unlike failover, the old copy is alive, so it is read first and stopped before the new one
//! starts (one TeamSpeak identity is never connected twice; listeners hear a gap of one
//! `bot connect template`):
//! 1. claim the bot (`Cluster::claim_move`: failover and restores leave it alone meanwhile),
//!    reserve a slot on the target (never over capacity),
//! 2. read the old copy's playback, and record the target and that playback in the
//!    operation's record (durably),
//! 3. write the bot's template on the target from the router's records, same cluster id and
//!    identity (`Rebuilder::prepare`),
//! 4. hand the bot over (`Cluster::hand_over`, durable): it now belongs to the target as a bot
//!    waiting to be rebuilt there, and the old copy is a fence,
//! 5. stop the old copy (`bot disconnect`),
//! 6. start the new one (`Rebuilder::start`) and record it (`Cluster::restore_bot`),
//! 7. delete the moved template on the old node and clear the fence,
//! 8. restore the playback on the new copy.
//!
//! A router crash at any step loses no bot and starts none twice: before step 4 the bot is
//! where it was (a template written on the target is reused by the resumed move); after it,
//! the old node is fenced before it is read again (its copy is stopped, never adopted or taken
//! for gone) and the bot is brought back on the target like one whose node restarted (by the
//! resumed operation, or failover's restore; a copy already started there is re-adopted
//! under its id). [`Operations::resume`] picks every running operation up where its record
//! says it was; call it after the router's first poll round.
//!
//! # What TS3AudioBot's API lets us carry over
//! Read in one request, `bot use <lid> (json merge (song) (volume) (repeat) (random)
//! (info 0 20))`, then further `info <offset> 20` pages of the queue (at most
//! [`MAX_QUEUE`] items), and restored in order on the new copy:
//! - the song that is on: `play <link>` then `seek <seconds>` (its position plus the time the
//!   move took, unless paused) and `pause` if it was paused;
//! - `volume <v>` (after `play`, which may clamp the volume on song start), `repeat off|one|all`,
//!   `random on|off`;
//! - the queue after the current song (`add <link>` each). `play <link>` makes the current
//!   song the queue's first item, so the songs before it cannot be put back in front of it:
//!   with `repeat all` they are appended after the others (the same loop, rotated), otherwise
//!   they are dropped (`previous` then finds nothing).
//!
//! Not carried: the history (a node-wide database), a template bot's playlists, avatars and
//! local music files (files on the old node; the API could copy playlists, this does not yet),
//! the random seed, quiz mode, whisper targets, anything set on a template behind the router's
//! back (the rebuild uses the router's records, as failover does), and the queue items' own
//! titles (`add` resolves each link again). An idle bot's queue is not restored (`add` would
//! start it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::failover::{settings_for, template_name, Rebuilder};
use crate::cluster::placement::{Placer, Reservation};
use crate::cluster::{BotSnapshot, Cluster, HandOver, Move, MoveClaim, Node, NodeId};
use crate::config::FailoverConfig;
use crate::node::api::{delete_template_target, disconnect_target, read_bot_list};
use crate::protocol::command::escape;
use crate::store::{now_ms, FenceRecord, Op, OperationRecord, StoreError, WRITE_DEADLINE};

/// Queue items read and restored at most.
pub const MAX_QUEUE: usize = 500;
/// Finished operations kept (older ones are deleted from the store).
const KEEP_FINISHED: usize = 100;
/// How long a move waits for another mover (failover, a restore) to let go of its bot.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// Bytes of inner commands per restoring request (TS3AudioBot's request line is ~8 KiB).
const REQUEST_BUDGET: usize = 4000;

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

/// A bot's playback, as read from its node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Playback {
    /// The song that is on.
    pub song: Option<Song>,
    /// `volume` (0-100).
    pub volume: Option<f64>,
    /// `repeat`: 0 off, 1 one, 2 all.
    pub repeat: Option<u8>,
    /// `random`.
    pub random: Option<bool>,
    /// The queue's links, in order.
    pub queue: Vec<String>,
    /// The queue index of the song that is on.
    pub index: Option<usize>,
    /// When it was read (milliseconds since the Unix epoch), so the position can be advanced
    /// by the time the move took.
    pub read_ms: u64,
}

/// The song that is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Song {
    /// Its link (what `play` takes).
    pub link: String,
    /// Seconds into it.
    pub position: f64,
    /// Its length in seconds.
    pub length: f64,
    /// Paused.
    pub paused: bool,
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
        })
    }

    /// Spawn on the current tokio runtime: resumes operations that were running when the
    /// router stopped. Call it after the first poll round (nodes are down until polled).
    pub fn resume(self: &Arc<Self>) {
        let running: Vec<u64> = self
            .ops
            .lock()
            .iter()
            .filter(|(_, d)| d.state == State::Running)
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            log::warn!("resuming operation {id}, interrupted by a router restart");
            tokio::spawn(self.clone().run(id, HashMap::new()));
        }
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
        let Some(left) = self.ops.lock().get(&id).map(|d| d.left.clone()) else {
            return;
        };
        let started = Instant::now();
        let this = &self;
        let jobs: Vec<(u32, Option<Reservation>)> = left
            .into_iter()
            .map(|g| (g, reservations.remove(&g)))
            .collect();
        let mut results = futures::stream::iter(jobs)
            .map(|(gid, r)| async move { (gid, this.move_one(id, gid, r).await) })
            .buffer_unordered(self.cfg.concurrency.max(1));
        while let Some((gid, result)) = results.next().await {
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

    /// Moves one bot of operation `id` (see the module documentation), or finishes a move an
    /// interrupted run of it left half-done.
    async fn move_one(
        self: &Arc<Self>,
        id: u64,
        gid: u32,
        reservation: Option<Reservation>,
    ) -> Result<(), String> {
        let (kind, leg) = {
            let ops = self.ops.lock();
            let d = ops.get(&id).ok_or("the operation is gone")?;
            (d.kind, d.legs.get(&gid).cloned().unwrap_or_default())
        };
        let from = self
            .cluster
            .node_by_name(&leg.from)
            .ok_or_else(|| format!("node `{}` is gone", leg.from))?;
        let _claim = self.claim(gid).await?;
        let w = self
            .cluster
            .whereabouts(gid)
            .ok_or("the bot no longer exists")?;
        let to = leg.to.as_deref().and_then(|n| self.cluster.node_by_name(n));
        if let Some(to) = to.as_ref().filter(|t| t.id == w.node) {
            if w.restoring {
                // Handed over by an interrupted run: finish it there.
                return self
                    .finish(
                        gid,
                        &from,
                        to,
                        &w.snapshot,
                        leg.playback,
                        false,
                        reservation,
                    )
                    .await;
            }
            // An interrupted run finished it.
            return Ok(());
        }
        if w.node != from.id || w.restoring {
            return match kind {
                // Off the node all the same.
                Kind::Evacuate if w.node != from.id => Ok(()),
                _ => Err(format!(
                    "the bot is no longer running on node `{}`",
                    from.name
                )),
            };
        }
        if !from.is_healthy() {
            return Err(format!(
                "node `{}` is down; failover moves its bots",
                from.name
            ));
        }
        let reservation = match (reservation, &to) {
            (Some(r), _) => r,
            (None, Some(to)) => reserve_target(&self.placer, to)?,
            (None, None) => self
                .placer
                .reserve(&self.evacuated_nodes(from.id))
                .map_err(|e| format!("no node can take it: {}", e.message))?,
        };
        let to = reservation.node().clone();
        let lid = w.snapshot.record.local_id;
        let playback = match self.read_playback(&from, lid).await {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("bot {gid}: playback not read, it moves without it: {e}");
                None
            }
        };
        self.update(id, |d| {
            if let Some(l) = d.legs.get_mut(&gid) {
                l.to = Some(to.name.to_string());
                l.playback.clone_from(&playback);
            }
        })
        .await;
        let name = template_name(&w.snapshot);
        let settings = settings_for(&w.snapshot);
        self.rebuilder
            .prepare(&self.cluster, gid, from.id, &to, &name, &settings)
            .await
            .map_err(|e| e.to_string())?;
        match self
            .cluster
            .hand_over(
                HandOver {
                    gid,
                    from: from.id,
                    lid,
                    to: to.id,
                    template: name.clone(),
                    settings,
                },
                WRITE_DEADLINE,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.rebuilder.undo(&to, &name).await;
                return Err("the bot changed while it was being moved".into());
            }
            // In the tables already (the fence too); the write is still queued.
            Err(e) => log::error!("bot {gid}: its hand-over is not durable yet: {e}"),
        }
        let stopped = self.stop_old(&from, lid).await;
        if let Err(e) = &stopped {
            // The fence stays: the poller stops the copy as soon as the node answers.
            log::error!("bot {gid}: old copy on node {} not stopped: {e}", from.name);
        }
        self.finish(
            gid,
            &from,
            &to,
            &w.snapshot,
            playback,
            stopped.is_ok(),
            Some(reservation),
        )
        .await
    }

    /// Starts a handed-over bot on `to`, records it, cleans up after its old copy on `from`
    /// and restores its playback. `prepared`: its old copy was just stopped and its template
    /// written in this run (otherwise both are checked and redone).
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        gid: u32,
        from: &Arc<Node>,
        to: &Arc<Node>,
        snapshot: &BotSnapshot,
        playback: Option<Playback>,
        prepared: bool,
        reservation: Option<Reservation>,
    ) -> Result<(), String> {
        let name = template_name(snapshot);
        let settings = settings_for(snapshot);
        let waits = |e: String| {
            format!(
                "{e}; it waits on node `{}` and failover's restore brings it back",
                to.name
            )
        };
        let mut old_stopped = prepared;
        let started = if prepared {
            self.rebuilder.start(to, &name).await
        } else {
            // A copy already running there (started before the crash) is the bot: re-adopted.
            old_stopped = self.stop_fenced(from, gid).await.is_ok();
            let _slot = match reservation {
                Some(r) => Some(r),
                None => reserve_target(&self.placer, to).ok(),
            };
            self.rebuilder
                .rebuild_on(&self.cluster, gid, from.id, to, &name, &settings)
                .await
        }
        .map_err(|e| waits(e.to_string()))?;
        let moved = Move {
            gid,
            from: to.id,
            to: to.id,
            local_id: started.local_id,
            template: name.clone(),
            settings,
            server: started.server.or_else(|| snapshot.server.clone()),
        };
        match self.cluster.restore_bot(moved, WRITE_DEADLINE).await {
            Ok(true) => {}
            Ok(false) => {
                self.rebuilder.undo(to, &name).await;
                return Err("the bot changed while it was being moved".into());
            }
            Err(e) => log::error!("bot {gid}: its move is not durable yet: {e}"),
        }
        if old_stopped {
            if let Err(e) = self.clear_old(from, gid).await {
                log::warn!("bot {gid}: node {} is fenced until: {e}", from.name);
            }
        }
        if let Some(p) = playback {
            if let Err(e) = self.restore_playback(to, started.local_id, &p).await {
                log::warn!(
                    "bot {gid}: playback not fully restored on node {}: {e}",
                    to.name
                );
            }
        }
        Ok(())
    }

    /// Claims a bot, waiting a little for another mover to let go of it.
    async fn claim(&self, gid: u32) -> Result<MoveClaim, String> {
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            if let Some(c) = self.cluster.claim_move(gid) {
                return Ok(c);
            }
            if Instant::now() >= deadline {
                return Err("another move of this bot (failover, a restore) is under way".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Nodes no evacuated bot may go to: `from` and every node a running evacuation empties.
    fn evacuated_nodes(&self, from: NodeId) -> Vec<NodeId> {
        let names: Vec<String> = self
            .ops
            .lock()
            .values()
            .filter(|d| d.state == State::Running && d.kind == Kind::Evacuate)
            .filter_map(|d| d.target.clone())
            .collect();
        let mut v: Vec<NodeId> = names
            .iter()
            .filter_map(|n| self.cluster.node_by_name(n))
            .map(|n| n.id)
            .collect();
        v.push(from);
        v
    }

    /// Stops the old copy in slot `lid` (still running there: the view kept the slot until
    /// the hand-over). A refusal is checked against the node's list: gone is stopped.
    async fn stop_old(&self, from: &Node, lid: u32) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..3 {
            match self.rebuilder.call(from, &disconnect_target(lid)).await {
                Ok((200 | 204, _)) => return Ok(()),
                Ok((status, body)) => last = format!("bot disconnect: HTTP {status} {body}"),
                Err(e) => last = e,
            }
            let listed = read_bot_list(
                self.rebuilder.client(),
                &from.endpoint(),
                self.rebuilder.request_timeout(),
            )
            .await;
            if listed.is_ok_and(|l| l.iter().all(|b| b.id != Some(lid))) {
                return Ok(());
            }
        }
        Err(last)
    }

    /// After a restart: stops what bot `gid`'s fence on `from` still names (the copy left
    /// there), by the fencing rule (a template's copy by name, a temporary one by slot and
    /// address). No fence left: the poller already did it.
    async fn stop_fenced(&self, from: &Node, gid: u32) -> Result<(), String> {
        let fences: Vec<FenceRecord> = self
            .cluster
            .fences_on(from.id)
            .into_iter()
            .filter(|f| f.bot == gid)
            .collect();
        if fences.is_empty() {
            return Ok(());
        }
        let listed = read_bot_list(
            self.rebuilder.client(),
            &from.endpoint(),
            self.rebuilder.request_timeout(),
        )
        .await
        .map_err(|e| e.to_string())?;
        for b in listed {
            let Some(lid) = b.id else { continue };
            let hit = fences.iter().any(|f| match (&f.template, &b.name) {
                (Some(t), Some(n)) => t == n,
                (None, None) => f.local_id == lid && (f.address.is_none() || f.address == b.server),
                _ => false,
            });
            if hit {
                self.stop_old(from, lid).await?;
            }
        }
        Ok(())
    }

    /// Deletes the moved template on the old node and clears the bot's fence there (its copy
    /// is stopped).
    async fn clear_old(&self, from: &Node, gid: u32) -> Result<(), String> {
        let fences: Vec<FenceRecord> = self
            .cluster
            .fences_on(from.id)
            .into_iter()
            .filter(|f| f.bot == gid)
            .collect();
        for f in &fences {
            let Some(name) = &f.template else { continue };
            if self.cluster.template_owner(name) == Some(from.id) {
                continue;
            }
            match self
                .rebuilder
                .call(from, &delete_template_target(name))
                .await
            {
                // 422: not there (any more).
                Ok((200 | 204 | 422, _)) => {}
                Ok((status, body)) => {
                    return Err(format!("settings delete {name}: HTTP {status} {body}"))
                }
                Err(e) => return Err(e),
            }
        }
        self.cluster
            .clear_fences(from.id, &fences, WRITE_DEADLINE)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads a running bot's playback (see the module documentation).
    async fn read_playback(&self, node: &Node, lid: u32) -> Result<Playback, String> {
        let target = format!(
            "/api/bot/use/{lid}/(/json/merge/(/song)/(/volume)/(/repeat)/(/random)/(/info/0/20))"
        );
        let read_ms = now_ms();
        let first = self.get_json(node, &target).await?;
        let mut p = parse_playback(&first).ok_or("not a playback answer")?;
        p.read_ms = read_ms;
        let count = first
            .get(4)
            .and_then(|i| i.get("SongCount"))
            .and_then(Value::as_u64)
            .map_or(0, |c| usize::try_from(c).unwrap_or(usize::MAX))
            .min(MAX_QUEUE);
        while p.queue.len() < count {
            let page = format!("/api/bot/use/{lid}/(/info/{}/20)", p.queue.len());
            let info = self.get_json(node, &page).await?;
            let before = p.queue.len();
            p.queue.extend(queue_links(&info));
            if p.queue.len() == before {
                break;
            }
        }
        p.queue.truncate(MAX_QUEUE);
        Ok(p)
    }

    /// Restores a playback on the new copy in slot `lid`, then reads it back: inside a
    /// `json merge` a failed command and a void one are both `null`, so only the read says
    /// whether the song, volume, repeat and random took.
    async fn restore_playback(&self, node: &Node, lid: u32, p: &Playback) -> Result<(), String> {
        let elapsed = Duration::from_millis(now_ms().saturating_sub(p.read_ms));
        for batch in restore_batches(p, elapsed) {
            let target = format!("/api/bot/use/{lid}/(/json/merge/{})", batch.join("/"));
            self.get_json(node, &target).await?;
        }
        let back =
            format!("/api/bot/use/{lid}/(/json/merge/(/song)/(/volume)/(/repeat)/(/random))");
        let now = parse_playback(&self.get_json(node, &back).await?).ok_or("no playback")?;
        let mut wrong = Vec::new();
        if now.song.as_ref().map(|s| &s.link) != p.song.as_ref().map(|s| &s.link) {
            wrong.push("song");
        }
        if p.volume
            .is_some_and(|v| now.volume.is_none_or(|n| (n - v).abs() > 0.5))
        {
            wrong.push("volume");
        }
        if p.repeat.is_some() && now.repeat != p.repeat {
            wrong.push("repeat");
        }
        if p.random.is_some() && now.random != p.random {
            wrong.push("random");
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("not taken: {}", wrong.join(", ")))
        }
    }

    async fn get_json(&self, node: &Node, target: &str) -> Result<Value, String> {
        let r = self
            .rebuilder
            .client()
            .get(
                &node.endpoint(),
                target.as_bytes(),
                self.rebuilder.request_timeout(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("HTTP {} {}", r.status, r.snippet()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("not JSON: {e}"))
    }
}

/// Reserves a slot on a chosen target: it must take new bots and have room.
fn reserve_target(placer: &Placer, to: &Arc<Node>) -> Result<Reservation, String> {
    if !to.takes_new_bots() {
        return Err(format!(
            "node `{}` does not take bots now (down, draining or in maintenance)",
            to.name
        ));
    }
    placer.reserve_on(to.clone()).map_err(|_| {
        format!(
            "node `{}` is full (capacity {})",
            to.name,
            to.capacity.load(Ordering::Acquire)
        )
    })
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

/// A node's bots, as the rebalance plan sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBots {
    /// The node.
    pub node: NodeId,
    /// Its capacity.
    pub capacity: u32,
    /// Its bots' cluster ids.
    pub bots: Vec<u32>,
}

/// One planned move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Cluster id.
    pub gid: u32,
    /// From.
    pub from: NodeId,
    /// To.
    pub to: NodeId,
}

/// The rebalance plan: one bot at a time from the node furthest above its fair share (the
/// bots' total split in proportion to capacity) to the one furthest below it that has room,
/// until no move brings two nodes closer to their shares. Bots are taken from the end of a
/// node's list.
pub fn plan_rebalance(nodes: &[NodeBots]) -> Vec<Planned> {
    let total: f64 = nodes.iter().map(|n| n.bots.len() as f64).sum();
    let capacity: f64 = nodes.iter().map(|n| f64::from(n.capacity)).sum();
    if capacity <= 0.0 {
        return Vec::new();
    }
    let share: Vec<f64> = nodes
        .iter()
        .map(|n| total * f64::from(n.capacity) / capacity)
        .collect();
    let mut bots: Vec<Vec<u32>> = nodes.iter().map(|n| n.bots.clone()).collect();
    let mut count: Vec<f64> = bots.iter().map(|b| b.len() as f64).collect();
    let mut plan = Vec::new();
    loop {
        let excess = |i: usize, count: &[f64]| count[i] - share[i];
        let Some(i) = (0..nodes.len())
            .filter(|&i| !bots[i].is_empty())
            .max_by(|&a, &b| excess(a, &count).total_cmp(&excess(b, &count)))
        else {
            break;
        };
        let Some(j) = (0..nodes.len())
            .filter(|&j| j != i && count[j] < f64::from(nodes[j].capacity))
            .min_by(|&a, &b| excess(a, &count).total_cmp(&excess(b, &count)))
        else {
            break;
        };
        // A move narrows the gap between the two by two; below that it only swaps who is
        // ahead. It ends with the fullest and the emptiest (relative to their shares) less
        // than two bots apart, so every node is less than two, and on an even split within
        // one, from its share.
        if excess(i, &count) - excess(j, &count) < 2.0 {
            break;
        }
        let Some(gid) = bots[i].pop() else { break };
        count[i] -= 1.0;
        count[j] += 1.0;
        plan.push(Planned {
            gid,
            from: nodes[i].node,
            to: nodes[j].node,
        });
    }
    plan
}

/// The playback in a `json merge (song) (volume) (repeat) (random) (info 0 20)` answer.
fn parse_playback(v: &Value) -> Option<Playback> {
    let a = v.as_array()?;
    let basic = |x: Option<&Value>| x.map(|x| x.get("Value").unwrap_or(x).clone());
    let song = a.first().and_then(|s| {
        Some(Song {
            link: s.get("Link")?.as_str()?.to_string(),
            position: s.get("Position").and_then(Value::as_f64).unwrap_or(0.0),
            length: s.get("Length").and_then(Value::as_f64).unwrap_or(0.0),
            paused: s.get("Paused").and_then(Value::as_bool).unwrap_or(false),
        })
    });
    let repeat = basic(a.get(2)).and_then(|r| match &r {
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "off" => Some(0),
            "one" => Some(1),
            "all" => Some(2),
            _ => None,
        },
        _ => None,
    });
    let info = a.get(4);
    Some(Playback {
        song,
        volume: basic(a.get(1)).and_then(|x| x.as_f64()),
        repeat: repeat.filter(|r| *r <= 2),
        random: basic(a.get(3)).and_then(|x| x.as_bool()),
        queue: info.map(queue_links).unwrap_or_default(),
        index: info
            .and_then(|i| i.get("PlaybackIndex"))
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok()),
        read_ms: 0,
    })
}

/// The links of a `QueueInfo`'s items.
fn queue_links(info: &Value) -> Vec<String> {
    info.get("Items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("Link").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The inner commands that restore `p` on a new copy, `elapsed` after it was read, in
/// batches of one `json merge` request each: first what listeners hear (the song at its
/// position, volume, repeat, random), then the rest of the queue.
fn restore_batches(p: &Playback, elapsed: Duration) -> Vec<Vec<String>> {
    let mut first = Vec::new();
    let mut queue = Vec::new();
    if let Some(s) = &p.song {
        first.push(format!("(/play/{})", escape(&s.link)));
        let run = if s.paused { 0.0 } else { elapsed.as_secs_f64() };
        // Whole seconds (every TS3AudioBot time format takes them), short of the end.
        let at = (s.position + run).min((s.length - 1.0).max(0.0)).max(0.0);
        first.push(format!("(/seek/{})", at.floor() as u64));
        if s.paused {
            first.push("(/pause)".to_string());
        }
        // The queue around the song that is on, when it is the item the index names.
        if let Some(i) = p.index.filter(|i| p.queue.get(*i) == Some(&s.link)) {
            let after = p.queue.iter().skip(i + 1);
            let before = p.queue.iter().take(i);
            let links: Vec<&String> = if p.repeat == Some(2) {
                after.chain(before).collect()
            } else {
                after.collect()
            };
            queue = links
                .into_iter()
                .map(|l| format!("(/add/{})", escape(l)))
                .collect();
        }
    }
    if let Some(v) = p.volume {
        first.push(format!("(/volume/{v})"));
    }
    if let Some(r) = p.repeat {
        let mode = ["off", "one", "all"][usize::from(r.min(2))];
        first.push(format!("(/repeat/{mode})"));
    }
    if let Some(r) = p.random {
        first.push(format!("(/random/{})", if r { "on" } else { "off" }));
    }
    let mut batches = Vec::new();
    if !first.is_empty() {
        batches.push(first);
    }
    let mut batch: Vec<String> = Vec::new();
    let mut size = 0;
    for cmd in queue {
        if size + cmd.len() > REQUEST_BUDGET && !batch.is_empty() {
            batches.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += cmd.len() + 1;
        batch.push(cmd);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nb(node: u32, capacity: u32, n: u32, base: u32) -> NodeBots {
        NodeBots {
            node: NodeId(node),
            capacity,
            bots: (base..base + n).collect(),
        }
    }

    fn after(nodes: &[NodeBots], plan: &[Planned]) -> Vec<i64> {
        nodes
            .iter()
            .map(|n| {
                n.bots.len() as i64 - plan.iter().filter(|m| m.from == n.node).count() as i64
                    + plan.iter().filter(|m| m.to == n.node).count() as i64
            })
            .collect()
    }

    #[test]
    fn rebalance_reaches_fair_shares_by_capacity_and_respects_room() {
        let nodes = [nb(0, 50, 30, 0), nb(1, 50, 0, 100), nb(2, 50, 0, 200)];
        let plan = plan_rebalance(&nodes);
        assert_eq!(after(&nodes, &plan), vec![10, 10, 10]);
        assert_eq!(plan.len(), 20, "no bot moves twice or needlessly");
        // Capacity-weighted: 40 bots over capacities 10/30 → 10/30.
        let nodes = [nb(0, 10, 0, 0), nb(1, 30, 40, 100)];
        assert_eq!(after(&nodes, &plan_rebalance(&nodes)), vec![10, 30]);
        // A small node is never filled over its capacity.
        let nodes = [nb(0, 100, 60, 0), nb(1, 2, 0, 100)];
        let counts = after(&nodes, &plan_rebalance(&nodes));
        assert!(counts[1] <= 2, "{counts:?}");
        // Already balanced: nothing moves.
        let nodes = [nb(0, 10, 4, 0), nb(1, 10, 5, 100)];
        assert!(plan_rebalance(&nodes).is_empty());
    }

    #[test]
    fn playback_is_read_from_a_merge_answer() {
        let v = json!([
            {"Link": "https://x/a", "Title": "a", "AudioType": "media", "Position": 42.5, "Length": 200.0, "Paused": false},
            37.5,
            2,
            true,
            {"Id": ".mix", "SongCount": 3, "DisplayOffset": 0, "PlaybackIndex": 1,
             "Items": [{"Link": "https://x/z"}, {"Link": "https://x/a"}, {"Link": "https://x/b"}]}
        ]);
        let p = parse_playback(&v).expect("playback");
        let s = p.song.clone().expect("song");
        assert_eq!(
            (s.link.as_str(), s.position, s.paused),
            ("https://x/a", 42.5, false)
        );
        assert_eq!(p.volume, Some(37.5));
        assert_eq!(p.repeat, Some(2));
        assert_eq!(p.random, Some(true));
        assert_eq!(p.index, Some(1));
        assert_eq!(p.queue.len(), 3);
        // Idle: `song` failed inside the merge (null), the rest still counts.
        let idle =
            parse_playback(&json!([null, {"Value": 10.0}, "One", false, null])).expect("idle");
        assert!(idle.song.is_none());
        assert_eq!(
            (idle.volume, idle.repeat, idle.random),
            (Some(10.0), Some(1), Some(false))
        );
    }

    #[test]
    fn restore_continues_the_song_and_keeps_the_loop() {
        let p = Playback {
            song: Some(Song {
                link: "https://x/a b".into(),
                position: 42.4,
                length: 200.0,
                paused: false,
            }),
            volume: Some(37.5),
            repeat: Some(2),
            random: Some(false),
            queue: vec![
                "https://x/z".into(),
                "https://x/a b".into(),
                "https://x/b".into(),
            ],
            index: Some(1),
            read_ms: 0,
        };
        let b = restore_batches(&p, Duration::from_millis(3_000));
        assert_eq!(
            b[0],
            vec![
                "(/play/https%3A%2F%2Fx%2Fa%20b)",
                "(/seek/45)",
                "(/volume/37.5)",
                "(/repeat/all)",
                "(/random/off)"
            ]
        );
        // Repeat all: the songs before the current one follow the later ones.
        assert_eq!(
            b[1],
            vec!["(/add/https%3A%2F%2Fx%2Fb)", "(/add/https%3A%2F%2Fx%2Fz)"]
        );
        // Without repeat they are dropped; paused songs do not advance and stay paused.
        let paused = Playback {
            repeat: Some(0),
            song: p.song.clone().map(|s| Song { paused: true, ..s }),
            ..p.clone()
        };
        let b = restore_batches(&paused, Duration::from_secs(3));
        assert!(b[0].contains(&"(/seek/42)".to_string()) && b[0].contains(&"(/pause)".to_string()));
        assert_eq!(b[1], vec!["(/add/https%3A%2F%2Fx%2Fb)"]);
        // Long queues are split into requests that fit a request line.
        let long = Playback {
            queue: std::iter::once("https://x/a b".to_string())
                .chain((0..400).map(|i| format!("https://example.com/song/{i}")))
                .collect(),
            index: Some(0),
            ..p
        };
        let b = restore_batches(&long, Duration::ZERO);
        assert!(b.len() > 2);
        assert!(b.iter().all(|x| x.join("/").len() <= REQUEST_BUDGET + 64));
        assert_eq!(b.iter().skip(1).map(Vec::len).sum::<usize>(), 400);
    }

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
