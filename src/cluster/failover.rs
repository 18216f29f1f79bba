//! Failover: a dead node's bots are rebuilt on other nodes with the same cluster id and the
//! same TeamSpeak identity, and the copies the dead node may still hold are stopped before the
//! router uses that node again.
//!
//! Owns: [`Failover`], a Pingora background service that watches node liveness (decided by
//! `health`), and once a node has been down for `failover.after`, moves every bot the router
//! knows on it: a slot is reserved on the least-used other node (`placement`), the bot's
//! template is recreated there from the router's records (`settings create` and
//! `settings bot set`: address, server password, channel, nickname, every setting written
//! through the router, and the identity key, offset and level), the bot is started with
//! `bot connect template`, and the cluster view moves the cluster id to the new slot and
//! records a fence for the old copy (`Cluster::move_bot`). A temporary bot needs a template to
//! carry its identity, so it comes back as a template named `ts3ab-lb-<id>`.
//! The rebuild itself ([`Rebuilder`]: template, settings, start on a given node) is shared
//! with planned moves (`admin::operations`); a bot is moved by one of them at a time
//! (`Cluster::claim_move`).
//! Also a slow sweep that reads the identity of bots the router adopted from a node's list,
//! so they can move too.
//! Does not own: liveness (`health`), stopping the copies a returning node still holds
//! (`fencing`), the choice of node (`placement`) or the tables (`view`).
//!
//! A node is asked once more just before its bots move, and all the while they move: once it
//! answers (it was only frozen, and its bots are about to reconnect there) no further copy is
//! started, a rebuild whose template is written but not started is called off, and the copies
//! already started are fenced at once. A rebuild whose `bot connect` is under way at that
//! moment cannot be called off (the new copy may have joined its server already): it is
//! handed over (`Cluster::hand_over`, durable: the bot belongs to the target, its old copy
//! becomes a fence) and the old copy is stopped while the connect is still answering, so the
//! old copy never rejoins its server next to the new one. If that connect then fails while
//! the copy runs all the same (a late answer), the running copy is recorded as the bot; if no
//! copy runs, the bot waits on the target for failover's restore.
//!
//! Limits: a node that is alive but unreachable from the router (a partition) keeps running
//! its copies until it is reachable again and fenced; the TeamSpeak server then refuses one of
//! the two clients as a clone. `failover.after` is the guard against moving bots of a node that
//! is only restarting. A hand-over whose store write fails still stops the old copy (as a
//! planned move does): the bot is then safe in memory, but a router crash before the write
//! lands loses it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cluster::fencing::fence;
use crate::cluster::placement::Placer;
use crate::cluster::{BotSnapshot, Cluster, HandOver, Move, Node, NodeId};
use crate::config::{FailoverConfig, NodeState};
use crate::node::api::{
    delete_template_target, disconnect_target, fetch_identity, read_bot_list, single_bot_info,
};
use crate::node::client::NodeClient;
use crate::protocol::command::escape;
use crate::store::WRITE_DEADLINE;

/// Template names failover gives temporary bots (`ts3ab-lb-<cluster id>`); clients cannot
/// create names with this prefix.
pub const RESERVED_PREFIX: &str = "ts3ab-lb-";

/// Settings a rebuilt bot cannot do without: where it connects and who it is. Any other
/// recorded setting the target refuses is skipped with a warning.
const ESSENTIAL: [&str; 5] = [
    "connect.address",
    "connect.server_password.pw",
    "connect.identity.key",
    "connect.identity.offset",
    "connect.identity.level",
];

/// How often liveness is looked at.
const TICK: Duration = Duration::from_millis(200);
/// How long a node about to be failed over is waited for when asked once more whether it
/// answers (a frozen node answers the moment it runs), and how long failover then leaves a
/// node alone that did answer.
const BACK_WAIT: Duration = Duration::from_secs(1);
/// While its bots move, one request waits on the node this long (then a new one: a frozen
/// process has its kernel queue new connections, so they are not opened every second), and
/// a node that refused is asked again after [`ASK_AGAIN`].
const PROBE_WAIT: Duration = Duration::from_secs(30);
const ASK_AGAIN: Duration = Duration::from_millis(50);
/// Identity reads per sweep, and how long a failed read waits before it is tried again.
const IDENTITY_BATCH: usize = 64;
const IDENTITY_RETRY: Duration = Duration::from_secs(60);
/// A sweep read's deadline: a hung node must not hold up the failover loop for long.
const SWEEP_DEADLINE: Duration = Duration::from_secs(2);

/// Why one bot could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// No other node has room.
    #[error("no node can take it: {0}")]
    NoRoom(String),
    /// The target node failed a step.
    #[error("node {node} failed `{step}`: {reason}")]
    Target {
        /// Target node.
        node: String,
        /// What was being done.
        step: &'static str,
        /// Status and body, or the transport error.
        reason: String,
    },
    /// The move could not be recorded (the new copy was stopped again).
    #[error("could not record the move: {0}")]
    Store(String),
    /// Another move of the same bot (failover, a restore or a planned move) is under way.
    #[error("another move of this bot is under way")]
    Busy,
    /// This router lost the lead (several routers on one store): the leader moves it.
    #[error("this router no longer leads the cluster; the leading router moves it")]
    NotLeading,
    /// Its old node answered again before the copy was started: the bot stays there.
    #[error("its node answers again; it stays there")]
    CalledOff,
    /// It was handed over to `node` while its copy was being started there (its old node
    /// answered again meanwhile), and that copy did not start: it waits there for failover's
    /// restore.
    #[error(
        "its copy on node {node} did not start ({reason}); it waits there for failover's restore"
    )]
    HandedOver {
        /// The node it now belongs to.
        node: String,
        /// Why the start failed.
        reason: String,
    },
}

/// The failover service.
pub struct Failover {
    cluster: Arc<Cluster>,
    placer: Arc<Placer>,
    rebuilder: Rebuilder,
    cfg: FailoverConfig,
    request_timeout: Duration,
}

/// The outcome of moving one node's bots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Bots moved.
    pub moved: usize,
    /// Bots that could not be moved this time.
    pub failed: usize,
    /// Bots left where they run because their node answered again meanwhile.
    pub stayed: usize,
}

/// Set once the node being evacuated answers again; rebuilds under way wait on it.
#[derive(Default)]
struct Answered {
    yes: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Answered {
    fn set(&self) {
        self.yes.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.yes.load(Ordering::Acquire)
    }

    /// Returns once [`Answered::set`] was called (at once if it was already).
    async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            // Registered before the flag is read, so a `set` in between is not missed.
            n.as_mut().enable();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}

impl Failover {
    /// A failover service with its own node client (its connections stay on its runtime).
    pub fn new(
        cluster: Arc<Cluster>,
        placer: Arc<Placer>,
        cfg: FailoverConfig,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let rebuild_view = cluster.clone();
        Failover {
            cluster,
            placer,
            rebuilder: Rebuilder::new(rebuild_view, connect_timeout, request_timeout),
            cfg,
            request_timeout,
        }
    }

    /// Whether `node` answers its `bot/list` within `within` at all (an error status is an
    /// answer: only a node the router cannot reach is taken for dead).
    async fn answers(&self, node: &Node, within: Duration) -> bool {
        match read_bot_list(self.rebuilder.client(), &node.endpoint(), within).await {
            Ok(_) => true,
            Err(e) => !e.unreachable(),
        }
    }

    /// Moves every bot the router knows on `node` to other nodes, until it answers again.
    pub async fn evacuate(&self, node: &Arc<Node>) -> Report {
        // The poller leaves the node alone while its bots move (see `fence`).
        node.evacuating.store(true, Ordering::Release);
        struct Done<'a>(&'a Node);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.evacuating.store(false, Ordering::Release);
            }
        }
        let _done = Done(node);
        let bots = self.cluster.bots_on(node.id);
        let started = Instant::now();
        log::warn!(
            "failover: node {} is down; moving its {} bots to other nodes",
            node.name,
            bots.len()
        );
        // A node that was only frozen may run again at any moment; its bots then rejoin
        // their servers, so a copy started after that would be the identity's second
        // client. The node is asked all along, and once it answers no further copy starts
        // (the copies already started are fenced there as it is back).
        let back = Answered::default();
        let probe = async {
            loop {
                let asked = Instant::now();
                if self.answers(node, PROBE_WAIT).await {
                    back.set();
                    log::warn!(
                        "failover: node {} answers again; its bots not moved yet stay there",
                        node.name
                    );
                    return;
                }
                // A refused connection fails at once: ask again shortly.
                if let Some(rest) = ASK_AGAIN.checked_sub(asked.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        };
        let back = &back;
        let moves: Vec<_> = bots
            .into_iter()
            .map(|b| async move {
                if back.is_set() {
                    return (b.gid, Err(MoveError::CalledOff));
                }
                (b.gid, self.rebuild(node, b, false, Some(back)).await)
            })
            .collect();
        let moves = futures::stream::iter(moves)
            .buffer_unordered(self.cfg.concurrency)
            .collect::<Vec<(u32, Result<bool, MoveError>)>>();
        let results = match futures::future::select(Box::pin(moves), Box::pin(probe)).await {
            futures::future::Either::Left((results, _)) => results,
            futures::future::Either::Right(((), moves)) => moves.await,
        };
        let mut report = Report::default();
        for (gid, r) in results {
            match r {
                Ok(true) => report.moved += 1,
                Ok(false) => {}
                Err(MoveError::CalledOff) => report.stayed += 1,
                Err(e @ MoveError::HandedOver { .. }) => {
                    report.failed += 1;
                    log::error!("failover: bot {gid}: {e}");
                }
                Err(e) => {
                    report.failed += 1;
                    log::error!("failover: bot {gid} stays on node {}: {e}", node.name);
                }
            }
        }
        log::warn!(
            "failover of node {}: moved {} bots in {} ms ({} could not be moved{}{})",
            node.name,
            report.moved,
            started.elapsed().as_millis(),
            report.failed,
            if report.stayed > 0 {
                format!("; {} stay there: the node answers again", report.stayed)
            } else {
                String::new()
            },
            if report.failed > 0 {
                format!("; retrying in {:?}", self.cfg.retry)
            } else {
                String::new()
            }
        );
        // Copies started while the node came back are fenced now, not at a later tick.
        if back.is_set() {
            self.fence_now(node).await;
        }
        report
    }

    /// Brings back the bots that went down with a restart of their node (see
    /// `Cluster::reconcile`): each on the same node while it is up and has room, otherwise on
    /// the least-used other node. A bot that failed waits `failover.retry` before the next
    /// attempt.
    pub async fn restore_pending(
        &self,
        next_try: &mut HashMap<u32, Instant>,
        down_since: &HashMap<NodeId, Instant>,
    ) -> Report {
        let now = Instant::now();
        let due: Vec<(NodeId, BotSnapshot)> = self
            .cluster
            .restoring()
            .into_iter()
            .filter(|(_, b)| next_try.get(&b.gid).is_none_or(|t| now >= *t))
            .collect();
        next_try.retain(|gid, _| self.cluster.locate(*gid).is_some());
        if due.is_empty() {
            return Report::default();
        }
        let started = Instant::now();
        // While a node is being evacuated its bots go with the evacuation. A bot whose node
        // is down waits for it, unless failover would move the node's bots anyway (enabled,
        // not in maintenance, unreachable for `failover.after`).
        let due: Vec<(Arc<Node>, BotSnapshot)> = due
            .into_iter()
            .filter_map(|(node, b)| Some((self.cluster.node(node)?, b)))
            .filter(|(node, _)| !node.evacuating.load(Ordering::Acquire))
            .filter(|(node, _)| {
                node.is_healthy()
                    || (self.cfg.enabled
                        && node.state() != NodeState::Maint
                        && node.unreachable.load(Ordering::Acquire)
                        && down_since
                            .get(&node.id)
                            .is_some_and(|t| t.elapsed() >= self.cfg.after))
            })
            .collect();
        let results: Vec<(u32, NodeId, Result<bool, MoveError>)> =
            futures::stream::iter(due)
                .map(|(node, b)| async move {
                    (b.gid, node.id, self.rebuild(&node, b, true, None).await)
                })
                .buffer_unordered(self.cfg.concurrency)
                .collect()
                .await;
        let mut report = Report::default();
        for (gid, node, r) in results {
            match r {
                Ok(true) => report.moved += 1,
                Ok(false) => {}
                Err(e) => {
                    report.failed += 1;
                    next_try.insert(gid, Instant::now() + self.cfg.retry);
                    // A planned move holds it: that move brings it back.
                    if matches!(e, MoveError::Busy | MoveError::NotLeading) {
                        log::debug!("restart of node {node}: bot {gid}: {e}");
                    } else {
                        log::error!("restart of node {node}: bot {gid} is not back yet: {e}");
                    }
                }
            }
        }
        if report.moved + report.failed > 0 {
            log::warn!(
                "brought back {} bots after node restarts in {} ms ({} to retry)",
                report.moved,
                started.elapsed().as_millis(),
                report.failed
            );
        }
        report
    }

    /// Rebuilds one bot: on another node (failover), or, when `restore`, after its node
    /// restarted, on that node first. Ok(false): the bot changed meanwhile (nothing done).
    async fn rebuild(
        &self,
        dead: &Node,
        bot: BotSnapshot,
        restore: bool,
        back: Option<&Answered>,
    ) -> Result<bool, MoveError> {
        // Several routers: a router that lost the lead mid-evacuation starts no more
        // rebuilds; the new leader takes them from the records.
        if !self.cluster.leads() {
            return Err(MoveError::NotLeading);
        }
        // A planned move (admin operations) of the same bot waits for its turn.
        let _claim = self.cluster.claim_move(bot.gid).ok_or(MoveError::Busy)?;
        let stats = &self.cluster.stats.failovers;
        stats.started.inc();
        let r = self.rebuild_claimed(dead, bot, restore, back).await;
        match r {
            Ok(true) => stats.completed.inc(),
            Err(MoveError::CalledOff) => stats.called_off.inc(),
            // Ok(false): the bot changed meanwhile and the copy was undone; not done, so
            // counted with the failures (started = completed + failed + in flight).
            Ok(false) | Err(_) => stats.failed.inc(),
        }
        r
    }

    /// [`Failover::rebuild`] once the bot is claimed. `back`: set once the node the bot is
    /// moved from answers again (a copy not started yet is then not started and its template
    /// removed; one being started is handed over and its old copy stopped at once).
    async fn rebuild_claimed(
        &self,
        dead: &Node,
        bot: BotSnapshot,
        restore: bool,
        back: Option<&Answered>,
    ) -> Result<bool, MoveError> {
        let name = template_name(&bot);
        // A healthy node that already holds the name holds an earlier attempt's copy (a
        // connect that timed out, a router crash before the move was recorded): finish the
        // move there rather than start the identity a second time elsewhere.
        let holder = self
            .cluster
            .holder_of(&name, dead.id)
            .and_then(|n| self.cluster.node(n));
        let reservation = match holder {
            Some(n) => self.placer.reserve_on(n),
            // Back where it was: the node is up and the bot's template (if any) is there.
            // Elsewhere when it has no room: not a refusal, the bot is placed all the same.
            None if restore => match self.placer.try_reserve_on(
                self.cluster
                    .node(dead.id)
                    .ok_or_else(|| MoveError::NoRoom("its node is gone".into()))?,
            ) {
                Some(r) => Ok(r),
                None => self.placer.reserve(&[dead.id]),
            },
            None => self.placer.reserve(&[dead.id]),
        }
        .map_err(|e| MoveError::NoRoom(e.message))?;
        let target = reservation.node().clone();
        let settings = settings_for(&bot);
        let created = self
            .rebuilder
            .prepare(&self.cluster, bot.gid, dead.id, &target, &name, &settings)
            .await?;
        // The last moment to leave the bot where it runs: its node is back, so the bot
        // reconnects there by itself. A template this rebuild created goes again (the poller
        // may have recorded it on the target meanwhile, which `undo` would respect); one that
        // was there before is undone like any other (untracked copies stopped, a template
        // the router records kept).
        if back.is_some_and(Answered::is_set) {
            if !created {
                self.rebuilder.undo(&target, &name).await;
                return Err(MoveError::CalledOff);
            }
            match self
                .rebuilder
                .call(&target, &delete_template_target(&name))
                .await
            {
                Ok((200 | 204, _)) => {}
                Ok((status, _)) => log::warn!(
                    "failover: node {}: template `{name}` of a rebuild called off stays (HTTP {status})",
                    target.name
                ),
                Err(e) => log::warn!(
                    "failover: node {}: template `{name}` of a rebuild called off stays: {e}",
                    target.name
                ),
            }
            return Err(MoveError::CalledOff);
        }
        let start = self.rebuilder.start(&target, &name);
        tokio::pin!(start);
        let (started, handed) = match back {
            None => (start.await, false),
            Some(back) => tokio::select! {
                biased;
                r = &mut start => (r, false),
                // The connect goes on meanwhile: its deadline runs.
                () = back.wait() => tokio::join!(
                    &mut start,
                    self.hand_over_started(dead, &bot, &target, &name, &settings)
                ),
            },
        };
        let started = match started {
            Ok(s) => s,
            // The connect may have failed late (its deadline) with the copy running all the
            // same: that copy is the bot (a second connect of the template would start the
            // identity twice on the node).
            Err(e) if handed => match self.running_copy(&target, &name).await {
                Some(s) => s,
                None => {
                    return Err(MoveError::HandedOver {
                        node: target.name.to_string(),
                        reason: e.to_string(),
                    })
                }
            },
            Err(e) => return Err(e),
        };
        let moved = Move {
            gid: bot.gid,
            // A handed-over bot belongs to the target already, as one to be restored there.
            from: if handed { target.id } else { dead.id },
            to: target.id,
            local_id: started.local_id,
            template: name.clone(),
            settings,
            server: started.server.or_else(|| bot.server.clone()),
        };
        let recorded = if restore || handed {
            self.cluster.restore_bot(moved, WRITE_DEADLINE).await
        } else {
            self.cluster.move_bot(moved, WRITE_DEADLINE).await
        };
        // A copy started just as the node answered again moved the ordinary way: its old
        // copy is stopped now, not when the evacuation ends.
        if !handed && back.is_some_and(Answered::is_set) {
            self.fence_now(dead).await;
        }
        match recorded {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.rebuilder.undo(&target, &name).await;
                Ok(false)
            }
            Err(e) => {
                // The move is in the tables (requests already go to the new copy) and its
                // write is still queued; undoing the copy now would lose the bot. Keep it and
                // say so: the fence lives in memory until the write lands.
                log::error!(
                    "failover: bot {} moved to node {}, but the move is not durable yet: {e}",
                    bot.gid,
                    target.name
                );
                Ok(true)
            }
        }
    }
    /// Fences `node` now; on a failure the fences stay, and the node is fenced before it is
    /// read again.
    async fn fence_now(&self, node: &Node) {
        if let Err(e) = fence(
            &self.cluster,
            self.rebuilder.client(),
            node,
            self.request_timeout,
        )
        .await
        {
            log::warn!("failover: {e}");
        }
    }

    /// The running bot of template `name` on `target`, if its list shows one.
    async fn running_copy(&self, target: &Node, name: &str) -> Option<Started> {
        let list = read_bot_list(
            self.rebuilder.client(),
            &target.endpoint(),
            self.request_timeout,
        )
        .await
        .ok()?;
        list.into_iter()
            .find(|b| b.id.is_some() && b.name.as_deref() == Some(name))
            .and_then(|b| {
                Some(Started {
                    local_id: b.id?,
                    server: b.server,
                })
            })
    }

    /// The node `dead` answered while bot `bot`'s copy on `target` is being started (its
    /// `bot connect` may have joined the server already): the bot is handed over to the target
    /// (durably: a router crash from here on restores it there, and fences the old copy) and
    /// the old copy is stopped now, before it rejoins its server next to the new one. Returns
    /// whether the bot was handed over (false: it changed meanwhile).
    async fn hand_over_started(
        &self,
        dead: &Node,
        bot: &BotSnapshot,
        target: &Node,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> bool {
        let h = HandOver {
            gid: bot.gid,
            from: dead.id,
            lid: bot.record.local_id,
            to: target.id,
            template: name.to_string(),
            settings: settings.clone(),
        };
        match self.cluster.hand_over(h, WRITE_DEADLINE).await {
            Ok(true) => {}
            Ok(false) => return false,
            // In the tables already (the fence too); the write is still queued.
            Err(e) => log::error!(
                "failover: bot {}: its hand-over is not durable yet: {e}",
                bot.gid
            ),
        }
        log::warn!(
            "failover: node {} answers again while bot {} starts on node {}: it moves there, its old copy is stopped",
            dead.name,
            bot.gid,
            target.name
        );
        self.fence_now(dead).await;
        true
    }

    /// Reads the identity of a few bots that have none recorded (adopted bots).
    async fn sweep_identities(&self, tried: &mut HashMap<u32, Instant>) {
        let now = Instant::now();
        tried.retain(|_, at| now.duration_since(*at) < IDENTITY_RETRY);
        let due: Vec<(u32, NodeId, u32)> = self
            .cluster
            .bots_without_identity(IDENTITY_BATCH + tried.len())
            .into_iter()
            .filter(|(gid, _, _)| !tried.contains_key(gid))
            .take(IDENTITY_BATCH)
            .collect();
        for (gid, _, _) in &due {
            tried.insert(*gid, now);
        }
        let reads = due.into_iter().map(|(gid, node, lid)| async move {
            let Some(node) = self.cluster.node(node) else {
                return;
            };
            match fetch_identity(
                self.rebuilder.client(),
                &node.endpoint(),
                lid,
                self.request_timeout.min(SWEEP_DEADLINE),
            )
            .await
            {
                Ok(id) => self.cluster.record_identity(gid, node.id, lid, id),
                Err(e) => log::debug!("bot {gid}: {e}"),
            }
        });
        futures::future::join_all(reads).await;
    }
}

/// A copy a [`Rebuilder`] started: its local id on the target and the address it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its local id on the target node.
    pub local_id: u32,
    /// The server address the target reports for it.
    pub server: Option<String>,
}

/// Rebuilding one bot's copy on a chosen node from the router's records: the one procedure
/// failover, restores after node restarts and planned moves (`admin::operations`) share.
/// It only talks to the target node; choosing the node, reserving its slot and recording the
/// outcome in the view are the caller's.
pub struct Rebuilder {
    cluster: Arc<Cluster>,
    client: NodeClient,
    request_timeout: Duration,
}

impl Rebuilder {
    /// A rebuilder with its own node client (its connections stay on the caller's runtime).
    pub fn new(
        cluster: Arc<Cluster>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Rebuilder {
            cluster,
            client: NodeClient::new(connect_timeout),
            request_timeout,
        }
    }

    /// The node client it uses.
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    /// The deadline of each node call.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// [`Rebuilder::prepare`] then [`Rebuilder::start`].
    pub async fn rebuild_on(
        &self,
        cluster: &Cluster,
        gid: u32,
        from: NodeId,
        target: &Node,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Started, MoveError> {
        self.prepare(cluster, gid, from, target, name, settings)
            .await?;
        self.start(target, name).await
    }

    /// Writes bot `gid`'s template `name` on `target` (`settings create`, then
    /// `settings bot set` for every value), without starting it. `from` is the node the bot
    /// is (or was) on: a template of that name the router records there or on `target` is
    /// this bot's own (an earlier attempt's); anybody else's is never overwritten. On a
    /// failure the half-written template is removed again. Returns whether it created the
    /// template (false: it was there already).
    pub async fn prepare(
        &self,
        cluster: &Cluster,
        gid: u32,
        from: NodeId,
        target: &Node,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<bool, MoveError> {
        let fail = |step: &'static str, reason: String| MoveError::Target {
            node: target.name.to_string(),
            step,
            reason,
        };
        let create = format!("/api/settings/create/{}", escape(name));
        let created = match self.call(target, &create).await {
            Ok((204, _)) => true,
            // The name exists there: acceptable only if it is this bot's own earlier copy (the
            // router knows no other owner for it); never overwrite somebody else's template.
            Ok((422, _))
                if cluster
                    .template_owner(name)
                    .is_none_or(|o| o == from || o == target.id) =>
            {
                false
            }
            Ok((status, body)) => return Err(fail("settings create", format!("{status} {body}"))),
            Err(e) => return Err(fail("settings create", e)),
        };
        for (path, value) in settings {
            let set = format!(
                "/api/settings/bot/set/{}/{}/{}",
                escape(name),
                escape(path),
                escape(value)
            );
            // The message names the setting, never its value or the node's answer (which may
            // echo the value, and the value may be an identity key).
            let problem = match self.call(target, &set).await {
                Ok((204 | 200, _)) => continue,
                Ok((status, _)) => format!("{path}: HTTP {status}"),
                Err(e) => format!("{path}: {e}"),
            };
            if ESSENTIAL.contains(&path.as_str()) {
                self.undo(target, name).await;
                return Err(fail("settings bot set", problem));
            }
            // Anything else is a nicety: the bot moves without it.
            log::warn!(
                "bot {gid} on node {}: setting not carried over ({problem})",
                target.name
            );
        }
        Ok(created)
    }

    /// Starts template `name` on `target` (`bot connect template`). On a failure whatever
    /// runs under the name there is stopped and the template removed.
    pub async fn start(&self, target: &Node, name: &str) -> Result<Started, MoveError> {
        let fail = |reason: String| MoveError::Target {
            node: target.name.to_string(),
            step: "bot connect template",
            reason,
        };
        let connect = format!("/api/bot/connect/template/{}", escape(name));
        let resp = match self
            .client
            .get(&target.endpoint(), connect.as_bytes(), self.request_timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // The node may have started it anyway: stop whatever runs under that name.
                self.undo(target, name).await;
                return Err(fail(e.to_string()));
            }
        };
        let Some((Some(local_id), server)) = (resp.status == 200)
            .then(|| single_bot_info(&resp.body))
            .flatten()
            .map(|b| (b.id, b.server))
        else {
            self.undo(target, name).await;
            return Err(fail(format!("{} {}", resp.status, resp.snippet())));
        };
        Ok(Started { local_id, server })
    }

    /// Best-effort clean-up of a half-made copy on a target: stops whatever runs under the
    /// name, then deletes the template. Never what the router tracks there: a copy the poller
    /// already took in under its cluster id (a connect that answered late), or a template the
    /// router records on that node (a bot's own template on its home node after a restart:
    /// the user's, with its folder).
    pub async fn undo(&self, target: &Node, name: &str) {
        if let Ok(list) =
            read_bot_list(&self.client, &target.endpoint(), self.request_timeout).await
        {
            for b in list {
                if let (Some(lid), Some(n)) = (b.id, b.name.as_deref()) {
                    if n == name && self.cluster.gid_of(target.id, lid).is_none() {
                        let _ = self.call(target, &disconnect_target(lid)).await;
                    }
                }
            }
        }
        if self.cluster.template_owner(name) == Some(target.id) {
            log::warn!(
                "node {}: template `{name}` is kept: the router records it there",
                target.name
            );
            return;
        }
        let _ = self.call(target, &delete_template_target(name)).await;
    }

    /// One GET to `node`: status and the start of the body, or the transport error.
    pub async fn call(&self, node: &Node, target: &str) -> Result<(u16, String), String> {
        self.client
            .get(&node.endpoint(), target.as_bytes(), self.request_timeout)
            .await
            .map(|r| (r.status, r.snippet()))
            .map_err(|e| e.to_string())
    }
}

/// Whether a template name is one the router made for a rebuilt temporary bot:
/// `ts3ab-lb-<its cluster id>` exactly ([`template_name`]). Clients never see these names: a
/// node would show the bot as unnamed. Other names with the prefix (a template saved before
/// the prefix was reserved, or made on a node by hand) are not the router's.
pub fn is_router_template(name: &str) -> bool {
    router_template_bot(name).is_some()
}

/// The cluster id in a router-made template name (see [`is_router_template`]).
pub fn router_template_bot(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(RESERVED_PREFIX)?;
    // Exactly the decimal `template_name` writes: no sign, no leading zero.
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The template a bot runs from after a rebuild: its own, or `ts3ab-lb-<id>` for a temporary
/// bot (a temporary bot needs a template to carry its identity).
pub fn template_name(bot: &BotSnapshot) -> String {
    bot.record
        .template
        .clone()
        .unwrap_or_else(|| format!("{RESERVED_PREFIX}{}", bot.gid))
}

#[async_trait]
impl BackgroundService for Failover {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut down_since: HashMap<NodeId, Instant> = HashMap::new();
        let mut next_try: HashMap<NodeId, Instant> = HashMap::new();
        let mut identity_tries: HashMap<u32, Instant> = HashMap::new();
        let mut restore_tries: HashMap<u32, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            if !self.cluster.leads() {
                // Another router sharing the store runs failover; its moves reach this
                // view through the store. Downtime counts afresh if the lead comes here.
                down_since.clear();
                next_try.clear();
                continue;
            }
            let nodes = self.cluster.nodes();
            for node in nodes.iter().filter(|_| self.cfg.enabled) {
                // Only a node the router cannot reach at all is taken for dead; one that
                // answers but refuses (a revoked token, errors) still runs its bots. A node in
                // maintenance (a planned restart) is never failed over, and its downtime
                // counts from the end of the maintenance.
                if node.is_healthy()
                    || !node.unreachable.load(Ordering::Acquire)
                    || node.state() == NodeState::Maint
                {
                    down_since.remove(&node.id);
                    next_try.remove(&node.id);
                    continue;
                }
                let since = *down_since.entry(node.id).or_insert_with(Instant::now);
                let due = next_try.get(&node.id).is_none_or(|t| Instant::now() >= *t);
                if since.elapsed() < self.cfg.after || !due || node.load.running() == 0 {
                    continue;
                }
                // The last poll may be a while ago: a node that answers now is not dead.
                if self.answers(node, BACK_WAIT).await {
                    next_try.insert(node.id, Instant::now() + BACK_WAIT);
                    continue;
                }
                let report = self.evacuate(node).await;
                if report.failed > 0 {
                    next_try.insert(node.id, Instant::now() + self.cfg.retry);
                }
            }
            self.restore_pending(&mut restore_tries, &down_since).await;
            self.sweep_identities(&mut identity_tries).await;
        }
    }
}

/// What the rebuilt template must hold: everything written through the router, then what the
/// router knows of the bot itself (its own settings win), then its identity.
pub fn settings_for(bot: &BotSnapshot) -> BTreeMap<String, String> {
    let r = &bot.record;
    let mut s = bot
        .template
        .as_ref()
        .map(|t| t.settings.clone())
        .unwrap_or_default();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            s.insert(k.to_string(), v.clone());
        }
    };
    // What the node last reported is the freshest (a template's address may have been
    // changed and the bot restarted since the record was made).
    put(
        "connect.address",
        bot.server
            .as_ref()
            .filter(|a| !a.is_empty())
            .or(r.address.as_ref()),
    );
    put("connect.server_password.pw", r.server_password.as_ref());
    put("connect.channel", r.channel.as_ref());
    put("connect.name", r.nickname.as_ref());
    let identity = r
        .identity
        .as_ref()
        .or_else(|| bot.template.as_ref().and_then(|t| t.identity.as_ref()));
    match identity {
        Some(id) => {
            s.insert("connect.identity.key".into(), id.key.clone());
            s.insert("connect.identity.offset".into(), id.offset.to_string());
            s.insert("connect.identity.level".into(), id.level.to_string());
        }
        None => log::warn!(
            "bot {} has no recorded identity; it gets a new one on its new node",
            bot.gid
        ),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{BotRecord, Identity, TemplateRecord};

    #[test]
    fn only_names_failover_makes_are_router_templates() {
        assert_eq!(router_template_bot("ts3ab-lb-0"), Some(0));
        assert_eq!(router_template_bot("ts3ab-lb-4711"), Some(4711));
        for other in [
            "ts3ab-lb-music",
            "ts3ab-lb-",
            "ts3ab-lb-07",
            "ts3ab-lb-+7",
            "ts3ab-lb-7x",
            "ts3ab-lb-99999999999",
            "music",
        ] {
            assert!(!is_router_template(other), "{other}");
        }
    }

    fn record(template: Option<&str>) -> BotRecord {
        BotRecord {
            id: 7,
            node: "n".into(),
            local_id: 0,
            template: template.map(str::to_string),
            address: Some("ts.example.com".into()),
            server_password: Some("pw".into()),
            channel: None,
            nickname: Some("Bob".into()),
            identity: Some(Identity {
                key: "KEY".into(),
                offset: 12,
                level: 8,
            }),
            created_ms: 0,
            node_started: None,
            owner: None,
        }
    }

    #[test]
    fn settings_carry_identity_and_everything_recorded() {
        let bot = BotSnapshot {
            gid: 7,
            record: record(Some("music")),
            server: None,
            template: Some(TemplateRecord {
                name: "music".into(),
                node: "n".into(),
                settings: [
                    ("audio.volume.default".to_string(), "30".to_string()),
                    ("connect.name".to_string(), "Old".to_string()),
                ]
                .into(),
                identity: None,
                owner: None,
            }),
        };
        let s = settings_for(&bot);
        assert_eq!(s["audio.volume.default"], "30");
        assert_eq!(s["connect.name"], "Bob", "the bot's own setting wins");
        assert_eq!(s["connect.address"], "ts.example.com");
        assert_eq!(s["connect.server_password.pw"], "pw");
        assert_eq!(s["connect.identity.key"], "KEY");
        assert_eq!(s["connect.identity.offset"], "12");
        assert_eq!(s["connect.identity.level"], "8");
        assert!(!s.contains_key("connect.channel"));
        // What the node reported last beats an older record.
        let fresh = BotSnapshot {
            server: Some("new.example.com".into()),
            ..bot
        };
        assert_eq!(settings_for(&fresh)["connect.address"], "new.example.com");
    }
}
