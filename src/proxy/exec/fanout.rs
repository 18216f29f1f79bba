//! The plans that ask every node: `bot list`, `system info` and node-wide broadcasts.
//!
//! Owns: the `bot list` fan-out (shared by concurrent callers, cached briefly, merged and
//! translated to cluster ids), `system info` summed over the nodes (shared and reused the
//! same way, for `routing.system_info_cache`), and sending a node-wide command everywhere.
//! A shared fan-out runs in a task of its own, to its end, whoever still waits for it. A node
//! that fails never fails a whole fan-out; every call has a deadline.
//! Does not own: reading one node's list (`node::api`) or reconciling it (`cluster`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{join_all, BoxFuture, FutureExt, Shared};

use crate::cluster::failover::is_router_template;
use crate::cluster::health::apply_list;
use crate::cluster::{Cluster, Node, NodeId};
use crate::node::api::read_bot_list;
use crate::node::client::NodeClient;
use crate::protocol::api_json::{bot_list_body, ApiError, BotInfo};
use crate::proxy::exec::{Answer, Exec};
use crate::store::WRITE_DEADLINE;

/// A `bot list` fan-out, running or done, that later callers may share.
pub(super) struct ListFanOut {
    /// Cluster generation when it started; any change makes it stale.
    generation: u64,
    started: Instant,
    fut: Shared<BoxFuture<'static, Listed>>,
}

/// A `system info` fan-out, running or done, that later callers may share.
pub(super) struct InfoFanOut {
    started: Instant,
    /// The healthy nodes when it started.
    asked: Vec<NodeId>,
    /// The summed answer, and whether every node asked answered.
    fut: Shared<BoxFuture<'static, (Answer, bool)>>,
}

impl Exec {
    /// Starts a fan-out that callers can share, with the cluster, the client and the fan-out
    /// deadline. It runs to its end in a task of its own: the callers that share it may all go
    /// away (clients hang up), and a fan-out nobody polls would stall in its slot, to be
    /// handed, stale, to the next caller.
    fn start_shared<T, Fut>(
        &self,
        fan_out: impl FnOnce(Arc<Cluster>, Arc<NodeClient>, Duration) -> Fut,
    ) -> Shared<BoxFuture<'static, T>>
    where
        T: Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        let run = fan_out(
            self.cluster.clone(),
            self.client.clone(),
            self.cfg.fanout_timeout,
        );
        let fut = run.boxed().shared();
        let driven = fut.clone();
        tokio::spawn(async move {
            let _ = driven.await;
        });
        fut
    }
}

/// A finished fan-out: the answer body, and the bots in it (a tenant's answer is cut from
/// them).
type Listed = Arc<(Bytes, Vec<BotInfo>)>;

impl Exec {
    /// `bot list` over every node, ids translated; a failed node shows its known bots as
    /// connecting; an offline template appears once, and not at all while it runs somewhere.
    ///
    /// Concurrent callers share one fan-out, and a finished one is reused for
    /// `routing.list_cache` while the cluster tables do not change (panels poll `bot/list`
    /// several times a second; 50 nodes must not see 50 times that).
    ///
    /// `tenant` (a key of scope `own`) sees only its own bots and templates, in the same
    /// order and shape.
    pub async fn bot_list(&self, tenant: Option<&str>) -> Answer {
        let fut = {
            let mut slot = self.list.lock();
            let generation = self.cluster.generation();
            let reusable = slot.as_ref().filter(|f| {
                f.generation == generation
                    && (f.fut.peek().is_none() || f.started.elapsed() < self.cfg.list_cache)
            });
            match reusable {
                Some(f) => f.fut.clone(),
                None => {
                    let fut = self.start_shared(|cluster, client, timeout| async move {
                        let infos = collect_list(cluster, client, timeout).await;
                        Arc::new((Bytes::from(bot_list_body(&infos)), infos))
                    });
                    *slot = Some(ListFanOut {
                        generation,
                        started: Instant::now(),
                        fut: fut.clone(),
                    });
                    fut
                }
            }
        };
        let listed = fut.await;
        let Some(tenant) = tenant else {
            return Answer::json(200, listed.0.clone());
        };
        let own: Vec<BotInfo> = listed
            .1
            .iter()
            .filter(|b| match b.id {
                Some(gid) => self.cluster.bot_owned_by(gid, tenant),
                None => b
                    .name
                    .as_deref()
                    .is_some_and(|n| self.cluster.template_owned_by(n, tenant)),
            })
            .cloned()
            .collect();
        Answer::json(200, bot_list_body(&own))
    }

    /// `system info` summed over the nodes that answer: per sample (aligned on the newest),
    /// memory and CPU add up; `starttime` is the earliest.
    ///
    /// Concurrent callers share one fan-out, and a summed answer is reused for
    /// `routing.system_info_cache` (nodes sample once per second, and every open WebInterface
    /// overview asks every second: without it each would cost a request to every node). An
    /// error (no node answered) or a sum that misses a node is shared with the callers waiting
    /// for it, never reused.
    pub async fn system_info(&self) -> Answer {
        let fut = {
            let mut slot = self.info.lock();
            let nodes = self.cluster.nodes();
            let healthy = || nodes.iter().filter(|n| n.is_healthy());
            // A sum is reused only if every node asked answered and the same nodes are up now
            // (a node added, gone or down changes the sum at once).
            let reusable = slot.as_ref().filter(|f| match f.fut.peek() {
                None => true,
                Some((a, complete)) => {
                    a.status == 200
                        && *complete
                        && f.asked.iter().copied().eq(healthy().map(|n| n.id))
                        && f.started.elapsed() < self.cfg.system_info_cache
                }
            });
            match reusable {
                Some(f) => f.fut.clone(),
                None => {
                    // The nodes asked are the ones recorded: the sum is complete when all of
                    // them answered.
                    let ask: Vec<Arc<Node>> = healthy().cloned().collect();
                    let asked = ask.iter().map(|n| n.id).collect();
                    let fut = self.start_shared(|_, client, timeout| async move {
                        sum_system_info(&ask, &client, timeout).await
                    });
                    *slot = Some(InfoFanOut {
                        started: Instant::now(),
                        asked,
                        fut: fut.clone(),
                    });
                    fut
                }
            }
        };
        fut.await.0
    }

    /// Sends a node-wide command to every node. All succeed → the first node's answer; any
    /// node refuses → that answer; any node unreachable → 503 naming it.
    pub async fn broadcast(&self, target: &[u8]) -> Answer {
        let nodes = self.cluster.nodes();
        if nodes.is_empty() {
            return Answer::error(&ApiError::unavailable("no nodes are configured"));
        }
        // Known-down nodes are not waited for; they are reported as not reached.
        let results = join_all(nodes.iter().map(|n| async move {
            if n.is_healthy() {
                Some(
                    self.client
                        .get(&n.endpoint(), target, self.cfg.request_timeout)
                        .await,
                )
            } else {
                None
            }
        }))
        .await;
        let mut first_ok = None;
        let mut unreachable = Vec::new();
        for (node, r) in nodes.iter().zip(results) {
            let Some(r) = r else {
                unreachable.push(format!("{} (down)", node.name));
                continue;
            };
            match r {
                Ok(r) if r.ok() => {
                    first_ok.get_or_insert(r);
                }
                Ok(r) => return Answer::from_node(r, None),
                Err(e) => unreachable.push(format!("{} ({e})", node.name)),
            }
        }
        if !unreachable.is_empty() {
            return Answer::error(&ApiError::unavailable(format!(
                "the command reached {} of {} nodes; not reached: {}",
                nodes.len() - unreachable.len(),
                nodes.len(),
                unreachable.join(", ")
            )));
        }
        first_ok.map_or_else(
            || Answer::json(204, Bytes::new()),
            |r| Answer::from_node(r, None),
        )
    }
}

/// Asks `nodes` for `system info` and sums the answers (see [`Exec::system_info`]); says
/// whether every one of them answered.
async fn sum_system_info(
    nodes: &[Arc<Node>],
    client: &NodeClient,
    timeout: Duration,
) -> (Answer, bool) {
    let results = join_all(nodes.iter().map(|n| async move {
        client
            .get(&n.endpoint(), b"/api/system/info", timeout)
            .await
    }))
    .await;
    #[derive(serde::Deserialize)]
    struct Info {
        memory: Vec<i64>,
        cpu: Vec<f64>,
        starttime: String,
    }
    let infos: Vec<Info> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).ok(),
            _ => None,
        })
        .collect();
    let complete = infos.len() == nodes.len();
    if infos.is_empty() {
        let none = Answer::error(&ApiError::unavailable("no node answered system info"));
        return (none, false);
    }
    let len = |f: &dyn Fn(&Info) -> usize| infos.iter().map(f).max().unwrap_or(0);
    let (mlen, clen) = (len(&|i| i.memory.len()), len(&|i| i.cpu.len()));
    let mut memory = vec![0i64; mlen];
    let mut cpu = vec![0f64; clen];
    for i in &infos {
        for (k, v) in i.memory.iter().rev().enumerate() {
            memory[mlen - 1 - k] = memory[mlen - 1 - k].saturating_add(*v);
        }
        for (k, v) in i.cpu.iter().rev().enumerate() {
            cpu[clen - 1 - k] += v;
        }
    }
    let starttime = infos
        .iter()
        .map(|i| i.starttime.as_str())
        .min()
        .unwrap_or_default();
    let body = serde_json::json!({ "memory": memory, "cpu": cpu, "starttime": starttime });
    let sum = Answer::json(200, serde_json::to_vec(&body).unwrap_or_default());
    (sum, complete)
}

/// One node's part of a merged list: its entries, each with the node and whether the node
/// listed it itself (false: from the router's records), and whether new ids were handed out.
type NodeList = (Vec<(BotInfo, NodeId, bool)>, bool);

/// Keeps one entry per cluster id. The nodes' lists are read and translated one after the
/// other, so a bot that moved meanwhile (a failover or a restore recorded between two nodes'
/// translations) can show up in two of them: in its new node's list and in the records of
/// its old node (`fallback_list`, `restoring_lists`), or in a slot its old node has reused.
/// The entry a node listed itself wins over one from the records, then the entry of the node
/// the router now places the bot on, then the first.
fn one_entry_per_id(cluster: &Cluster, results: Vec<NodeList>) -> Vec<(Vec<BotInfo>, bool)> {
    let mut best: HashMap<u32, (u8, usize)> = HashMap::new();
    let mut at = 0usize;
    for (infos, _) in &results {
        for (info, node, live) in infos {
            if let Some(gid) = info.id {
                let here = cluster.locate(gid).is_some_and(|(n, _)| n == *node);
                let rank = u8::from(*live) * 2 + u8::from(here);
                let e = best.entry(gid).or_insert((rank, at));
                if rank > e.0 {
                    *e = (rank, at);
                }
            }
            at += 1;
        }
    }
    let mut at = 0usize;
    results
        .into_iter()
        .map(|(infos, added)| {
            let kept = infos
                .into_iter()
                .filter_map(|(info, _, _)| {
                    let i = at;
                    at += 1;
                    match info.id {
                        Some(gid) if best.get(&gid).is_some_and(|(_, b)| *b != i) => None,
                        _ => Some(info),
                    }
                })
                .collect();
            (kept, added)
        })
        .collect()
}

/// Reads every node's `bot/list` and merges them (see [`Exec::bot_list`]).
async fn collect_list(
    cluster: Arc<Cluster>,
    client: Arc<NodeClient>,
    timeout: Duration,
) -> Vec<BotInfo> {
    let (cluster, client) = (&*cluster, &*client);
    let nodes = cluster.nodes();
    // Bots being brought back, as the fan-out starts (merged below with those at its end: a
    // restore that finishes while the nodes answer is then in one of the two, never in neither).
    let restoring_before = cluster.restoring_lists();
    // Each node's list is read, reconciled and translated as soon as it arrives, so that work
    // overlaps the wait for slower nodes instead of following the slowest one.
    let results = join_all(nodes.iter().map(|node| async move {
        let listed = if node.is_healthy() {
            let started = cluster.generation();
            match read_bot_list(client, &node.endpoint(), timeout).await {
                Ok(l) => Some((started, l)),
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            }
        } else {
            None
        };
        match listed {
            Some((started, l)) => {
                let new_ids =
                    match apply_list(cluster, client, node, &l, started, timeout, false).await {
                        Ok(added) => added,
                        Err(e) => {
                            log::warn!("{e}");
                            false
                        }
                    };
                let infos: Vec<(BotInfo, NodeId, bool)> = l
                    .into_iter()
                    .filter_map(|b| {
                        let id = match b.id {
                            Some(lid) => Some(cluster.gid_of(node.id, lid)?),
                            None => None,
                        };
                        let name = match b.name {
                            // A rebuilt temporary bot runs as the router's template: shown
                            // as the unnamed bot it is, and such a template not running is
                            // not shown at all.
                            Some(n) if is_router_template(&n) => {
                                id?;
                                None
                            }
                            n => n,
                        };
                        let info = BotInfo {
                            id,
                            name,
                            server: b.server,
                            status: b.status,
                        };
                        Some((info, node.id, true))
                    })
                    .collect();
                (infos, new_ids, true)
            }
            None => (
                cluster
                    .fallback_list(node.id)
                    .into_iter()
                    .map(|b| (b, node.id, false))
                    .collect(),
                false,
                false,
            ),
        }
    }))
    .await;
    // Bots coming back after a restart of a node that answered, as "connecting", after its
    // own entries (a node that did not answer shows them in its fallback list). One pass over
    // the bots at the start and one at the end, for all nodes; an id in both, or in the node's
    // own list too, is kept once (`one_entry_per_id`).
    let (mut before, mut after) = (restoring_before, cluster.restoring_lists());
    let results: Vec<NodeList> = nodes
        .iter()
        .zip(results)
        .map(|(node, (mut infos, added, answered))| {
            if answered {
                let back = after.remove(&node.id).into_iter().flatten();
                let earlier = before.remove(&node.id).into_iter().flatten();
                infos.extend(back.chain(earlier).map(|b| (b, node.id, false)));
            }
            (infos, added)
        })
        .collect();
    let results = one_entry_per_id(cluster, results);
    let mut named = Vec::new();
    let mut offline = Vec::new();
    let mut unnamed = Vec::new();
    let mut new_ids = false;
    for (infos, added) in results {
        new_ids |= added;
        for info in infos {
            match (&info.id, &info.name) {
                (None, _) => offline.push(info),
                (Some(_), Some(_)) => named.push(info),
                (Some(_), None) => unnamed.push(info),
            }
        }
    }
    if new_ids {
        // Ids shown to a client must survive a crash.
        if let Err(e) = cluster.store().flush(WRITE_DEADLINE).await {
            log::error!("could not persist newly seen bots before listing them: {e}");
        }
    }
    let running: HashSet<String> = named.iter().filter_map(|b| b.name.clone()).collect();
    let mut shown = HashSet::new();
    offline.retain(|b| {
        b.name
            .as_ref()
            .is_some_and(|n| !running.contains(n) && shown.insert(n.clone()))
    });
    named.extend(offline);
    named.extend(unnamed);
    named
}
