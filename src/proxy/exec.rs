//! Plans the router carries out itself, calling nodes on the client's behalf.
//!
//! Owns: `bot list` fan-out and merge, `system info` aggregation, node-wide broadcasts, creates
//! (place, send, record durably, then answer), split `json merge` execution, and the answer
//! edits shared with the proxy path ([`Exec::edit`]: local → cluster ids, `json api` servers,
//! redaction). Every node call has a deadline; a node that fails never fails a whole fan-out.
//! Does not own: deciding the plan (`routing`) or the HTTP framing to the client (`proxy`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{join_all, BoxFuture, FutureExt, Shared};

use crate::cluster::health::poll_node;
use crate::cluster::placement::{Placer, Reservation};
use crate::cluster::{Cluster, CreateInfo, Node, NodeId, Reported};
use crate::config::RoutingConfig;
use crate::node::api::{
    delete_template_target, disconnect_target, fetch_identity, read_bot_list, single_bot_info,
};
use crate::node::client::{NodeClient, NodeResponse};
use crate::protocol::api_json::{
    bot_list_body, status_from, ApiError, BotInfo, Reason, CONTENT_TYPE_JSON,
};
use crate::protocol::{json_edit, json_scan};
use crate::proxy::routing::{
    CreateKind, CreateNode, CreatePlan, Edits, Element, MergePlan, ReadBack,
};
use crate::store::WRITE_DEADLINE;

/// An answer the router writes itself.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Content type (TS3AudioBot's JSON type unless a node sent another).
    pub content_type: String,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Answer {
            status,
            content_type: CONTENT_TYPE_JSON.to_string(),
            body: body.into(),
        }
    }

    /// An error answer.
    pub fn error(e: &ApiError) -> Self {
        Answer::json(e.status, e.body())
    }

    fn from_node(r: NodeResponse, body: Option<Vec<u8>>) -> Self {
        Answer {
            status: r.status,
            content_type: r
                .content_type
                .unwrap_or_else(|| CONTENT_TYPE_JSON.to_string()),
            body: body.map(Bytes::from).unwrap_or(r.body),
        }
    }
}

/// A `bot list` fan-out, running or done, that later callers may share.
struct ListFanOut {
    /// Cluster generation when it started; any change makes it stale.
    generation: u64,
    started: Instant,
    fut: Shared<BoxFuture<'static, Bytes>>,
}

/// Executes router-made plans.
pub struct Exec {
    list: parking_lot::Mutex<Option<ListFanOut>>,
    cluster: Arc<Cluster>,
    client: Arc<NodeClient>,
    placer: Arc<Placer>,
    cfg: RoutingConfig,
    health_timeout: Duration,
}

impl Exec {
    /// An executor.
    pub fn new(
        cluster: Arc<Cluster>,
        client: Arc<NodeClient>,
        placer: Arc<Placer>,
        cfg: RoutingConfig,
        health_timeout: Duration,
    ) -> Self {
        Exec {
            list: parking_lot::Mutex::new(None),
            cluster,
            client,
            placer,
            cfg,
            health_timeout,
        }
    }

    /// Edits a node's JSON answer: BotInfo ids (learning bots the router has not seen yet),
    /// `json api` servers, redaction. None = forward the bytes unchanged.
    pub fn edit(cluster: &Cluster, node: NodeId, body: &[u8], edits: &Edits) -> Option<Vec<u8>> {
        if (edits.redact || edits.redact_scalar) && json_scan::parse(body).is_err() {
            // Never pass on what could not be checked for secrets.
            return Some(redaction_failed());
        }
        let mut out: Option<Vec<u8>> = None;
        if edits.bot_ids {
            // One parse: learn each bot (a cheap read for known ones) and map its id.
            out = json_edit::translate_bot_infos(body, |lid, name, server, status| {
                let lid = u32::try_from(lid).ok()?;
                let status = status_from(status);
                let reported = Reported {
                    lid,
                    name,
                    server,
                    status,
                };
                cluster.learn(node, reported).map(i64::from)
            });
        }
        if edits.openapi {
            let cur = out.as_deref().unwrap_or(body);
            if let Some(n) = json_edit::rewrite_openapi_servers(cur, |lid| {
                u32::try_from(lid)
                    .ok()
                    .and_then(|l| cluster.gid_of(node, l))
                    .map(i64::from)
            }) {
                out = Some(n);
            }
        }
        if edits.redact_scalar {
            let cur = out.as_deref().unwrap_or(body);
            if let Some(n) = json_edit::redact_scalar(cur) {
                out = Some(n);
            }
        }
        if edits.redact {
            let cur = out.as_deref().unwrap_or(body);
            if let Some(n) = json_edit::redact_secrets(cur) {
                out = Some(n);
            }
        }
        out
    }

    /// A healthy node, round-robin.
    pub fn any_node(&self, turn: usize, exclude: &[NodeId]) -> Option<Arc<Node>> {
        let nodes = self.cluster.nodes();
        let n = nodes.len();
        (0..n)
            .map(|i| &nodes[(turn + i) % n])
            .find(|node| node.is_healthy() && !exclude.contains(&node.id))
            .cloned()
    }

    /// `bot list` over every node, ids translated; a failed node shows its known bots as
    /// connecting; an offline template appears once, and not at all while it runs somewhere.
    ///
    /// Concurrent callers share one fan-out, and a finished one is reused for
    /// `routing.list_cache` while the cluster tables do not change (panels poll `bot/list`
    /// several times a second; 50 nodes must not see 50 times that).
    pub async fn bot_list(&self) -> Answer {
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
                    let (cluster, client, timeout) = (
                        self.cluster.clone(),
                        self.client.clone(),
                        self.cfg.fanout_timeout,
                    );
                    let fut = async move {
                        Bytes::from(bot_list_body(&collect_list(cluster, client, timeout).await))
                    }
                    .boxed()
                    .shared();
                    *slot = Some(ListFanOut {
                        generation,
                        started: Instant::now(),
                        fut: fut.clone(),
                    });
                    fut
                }
            }
        };
        Answer::json(200, fut.await)
    }

    /// `system info` summed over the nodes that answer: per sample (aligned on the newest),
    /// memory and CPU add up; `starttime` is the earliest.
    pub async fn system_info(&self) -> Answer {
        let nodes = self.cluster.nodes();
        let results = join_all(nodes.iter().filter(|n| n.is_healthy()).map(|n| async move {
            self.client
                .get(&n.endpoint(), b"/api/system/info", self.cfg.fanout_timeout)
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
        if infos.is_empty() {
            return Answer::error(&ApiError::unavailable("no node answered system info"));
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
        Answer::json(200, serde_json::to_vec(&body).unwrap_or_default())
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

    /// Runs a create: reserve a slot, send, record the new bot or template durably, answer.
    pub async fn create(&self, plan: &CreatePlan) -> Answer {
        // Two concurrent creates of one template name must not both reach a node.
        let _claim = match &plan.kind {
            CreateKind::SettingsCreate(name) => match self.cluster.claim_pending(name) {
                Some(c) => Some(c),
                None => {
                    return Answer::error(&ApiError::new(
                        Reason::CommandError,
                        "The file already exists.",
                    ))
                }
            },
            _ => None,
        };
        let mut tried = Vec::new();
        loop {
            let reservation: Reservation = match plan.node {
                CreateNode::Place => match self.placer.reserve(&tried) {
                    Ok(r) => r,
                    Err(e) => return Answer::error(&e),
                },
                CreateNode::Fixed(id) => match self.cluster.node(id) {
                    Some(n) => match self.placer.reserve_on(n) {
                        Ok(r) => r,
                        Err(e) => return Answer::error(&e),
                    },
                    None => {
                        return Answer::error(&ApiError::unavailable("the template's node is gone"))
                    }
                },
            };
            let node = reservation.node().clone();
            let sent = self.cluster.generation();
            match self
                .client
                .get(&node.endpoint(), &plan.target, self.cfg.request_timeout)
                .await
            {
                Ok(resp) => return self.created(&node, plan, resp, reservation, sent).await,
                Err(e) if e.not_sent() && plan.node == CreateNode::Place => {
                    log::warn!("{e}; placing the create on another node");
                    tried.push(node.id);
                    drop(reservation);
                }
                Err(e) => {
                    // The node may have made the bot anyway: read its list now.
                    self.poke(node);
                    let status = if matches!(e, crate::node::client::NodeError::Timeout { .. }) {
                        504
                    } else {
                        503
                    };
                    return Answer::error(&ApiError::with_status(
                        status,
                        Reason::InternalError,
                        e.to_string(),
                    ));
                }
            }
        }
    }

    async fn created(
        &self,
        node: &Arc<Node>,
        plan: &CreatePlan,
        resp: NodeResponse,
        reservation: Reservation,
        sent: u64,
    ) -> Answer {
        match &plan.kind {
            CreateKind::SettingsCreate(name) => {
                if resp.status == 204 {
                    if let Err(e) = self
                        .cluster
                        .claim_template_durably(name, node.id, WRITE_DEADLINE)
                        .await
                    {
                        // Unrecorded, the template could be created again on another node:
                        // take it back and say so.
                        self.cluster.drop_template(name);
                        let undo = delete_template_target(name);
                        return self.take_back(node, &undo, "template", "deleted", &e).await;
                    }
                }
                drop(reservation);
                Answer::from_node(resp, None)
            }
            CreateKind::ConnectTo(_) | CreateKind::ConnectTemplate(_) => {
                // `connect to` always makes a new bot; `connect template` may answer with the
                // template's running bot.
                let (info, fresh) = match &plan.kind {
                    CreateKind::ConnectTo(i) => (CreateInfo::from(i.clone()), Some(sent)),
                    _ => (CreateInfo::default(), None),
                };
                let mut body = None;
                if resp.status == 200 {
                    if let Some(BotInfo {
                        id: Some(lid),
                        name,
                        server,
                        status,
                    }) = single_bot_info(&resp.body)
                    {
                        let reported = Reported {
                            lid,
                            name: name.as_deref(),
                            server: server.as_deref(),
                            status,
                        };
                        match self
                            .cluster
                            .register_created(node.id, reported, info, fresh, WRITE_DEADLINE)
                            .await
                        {
                            Ok(gid) => self.read_identity(node.clone(), lid, gid),
                            Err((gid, e)) => {
                                // The client must not hold an id the router may not remember:
                                // stop the bot again and say so.
                                log::error!(
                                    "bot {gid:?} (node {} local {lid}) was created but could not be recorded: {e}; stopping it",
                                    node.name
                                );
                                if let Some(gid) = gid {
                                    self.cluster.forget_bot(gid, node.id);
                                }
                                let undo = disconnect_target(lid);
                                return self.take_back(node, &undo, "bot", "stopped", &e).await;
                            }
                        }
                    }
                    body = Self::edit(&self.cluster, node.id, &resp.body, &plan.edits);
                }
                drop(reservation);
                Answer::from_node(resp, body)
            }
        }
    }

    /// Undoes a create the router could not record (best effort: `undo` on the node) and
    /// answers the client with a 503 saying so.
    async fn take_back(
        &self,
        node: &Node,
        undo: &str,
        what: &str,
        done: &str,
        e: &(dyn std::fmt::Display + Sync),
    ) -> Answer {
        let _ = self
            .client
            .get(&node.endpoint(), undo.as_bytes(), self.cfg.request_timeout)
            .await;
        Answer::error(&ApiError::unavailable(format!(
            "The router could not record the new {what} ({e}); it was {done} again. Try again later."
        )))
    }

    /// Reads a new bot's TeamSpeak identity once, in the background, and records it.
    fn read_identity(&self, node: Arc<Node>, lid: u32, gid: u32) {
        let client = self.client.clone();
        let cluster = self.cluster.clone();
        let deadline = self.cfg.request_timeout;
        tokio::spawn(async move {
            match fetch_identity(&client, &node.endpoint(), lid, deadline).await {
                Ok(id) => cluster.record_identity(gid, node.id, lid, id),
                Err(e) => log::warn!("bot {gid}: {e}"),
            }
        });
    }

    /// Re-reads a node's list soon (after a change the answer did not show).
    pub fn poke(&self, node: Arc<Node>) {
        let client = self.client.clone();
        let cluster = self.cluster.clone();
        let timeout = self.health_timeout;
        tokio::spawn(async move {
            if let Err(e) = poll_node(&cluster, &client, &node, timeout).await {
                log::debug!("re-reading node {} failed: {e}", node.name);
            }
        });
    }

    /// Runs a split `json merge`: one `json merge` per node with that node's elements, the
    /// router's own elements locally, results put back in the original order.
    pub async fn merge(&self, plan: &MergePlan, turn: usize) -> Answer {
        let answer = self.merge_parts(plan, turn).await;
        if answer.status == 200 && !plan.read_back.is_empty() {
            self.read_back(plan.read_back.clone());
        }
        answer
    }

    /// Reads settings back from their nodes after a request that wrote them where the answer
    /// cannot confirm it, and records what the nodes hold (in the background; the values are
    /// what failover rebuilds a bot from). Values are recorded as `settings set` takes them:
    /// strings raw, anything else as JSON.
    pub fn read_back(&self, items: Vec<ReadBack>) {
        let client = self.client.clone();
        let cluster = self.cluster.clone();
        let deadline = self.cfg.request_timeout;
        tokio::spawn(async move {
            for item in items {
                let located = match &item {
                    ReadBack::Template { name, path } => cluster.template_owner(name).map(|n| {
                        let target = format!(
                            "/api/settings/bot/get/{}/{}",
                            crate::protocol::command::escape(name),
                            crate::protocol::command::escape(path)
                        );
                        (n, target)
                    }),
                    ReadBack::Bot { gid, path } => cluster.locate(*gid).map(|(n, lid)| {
                        let target = format!(
                            "/api/bot/use/{lid}/(/settings/get/{})",
                            crate::protocol::command::escape(path)
                        );
                        (n, target)
                    }),
                };
                let Some((node, target)) = located else {
                    continue;
                };
                let Some(node) = cluster.node(node) else {
                    continue;
                };
                let value = match client
                    .get(&node.endpoint(), target.as_bytes(), deadline)
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        match serde_json::from_slice::<serde_json::Value>(&r.body) {
                            Ok(serde_json::Value::String(v)) => v,
                            Ok(v) => v.to_string(),
                            Err(e) => {
                                log::warn!("node {}: unreadable setting: {e}", node.name);
                                continue;
                            }
                        }
                    }
                    // The value is never logged: it may be a secret.
                    Ok(r) => {
                        log::warn!(
                            "node {}: reading back a setting answered HTTP {}",
                            node.name,
                            r.status
                        );
                        continue;
                    }
                    Err(e) => {
                        log::warn!("reading back a setting failed: {e}");
                        continue;
                    }
                };
                match item {
                    ReadBack::Template { name, path } => {
                        cluster.record_template_setting(&name, &path, &value)
                    }
                    ReadBack::Bot { gid, path } => cluster.record_bot_setting(gid, &path, &value),
                }
            }
        });
    }

    async fn merge_parts(&self, plan: &MergePlan, turn: usize) -> Answer {
        // Elements that can run anywhere join the first pinned node, else a healthy one.
        let first_pinned = plan.elements.iter().find_map(|e| match e {
            Element::Node { node: Some(n), .. } => Some(*n),
            _ => None,
        });
        let mut groups: BTreeMap<NodeId, Vec<(usize, &[u8])>> = BTreeMap::new();
        for (i, el) in plan.elements.iter().enumerate() {
            if let Element::Node { node, piece } = el {
                let target = match node.or(first_pinned) {
                    Some(n) => n,
                    None => match self.any_node(turn, &[]) {
                        Some(n) => n.id,
                        None => return Answer::error(&ApiError::unavailable("no healthy node")),
                    },
                };
                groups.entry(target).or_default().push((i, piece));
            }
        }
        let mut results: Vec<Option<Vec<u8>>> = vec![None; plan.elements.len()];
        let calls = groups.iter().map(|(node_id, items)| async move {
            let Some(node) = self.cluster.node(*node_id) else {
                return Err(Answer::error(&ApiError::unavailable("node is gone")));
            };
            if !node.is_healthy() {
                return Err(Answer::error(&ApiError::unavailable(format!(
                    "node {} is down",
                    node.name
                ))));
            }
            let mut target = b"/api/json/merge".to_vec();
            for (_, piece) in items {
                target.push(b'/');
                target.extend_from_slice(piece);
            }
            let resp = self
                .client
                .get(&node.endpoint(), &target, self.cfg.request_timeout)
                .await
                .map_err(|e| Answer::error(&ApiError::unavailable(e.to_string())))?;
            let edited = Self::edit(&self.cluster, node.id, &resp.body, &plan.edits);
            let body = edited.unwrap_or_else(|| resp.body.to_vec());
            match (resp.status, json_edit::array_items(&body)) {
                (200, Some(spans)) if spans.len() == items.len() => Ok(items
                    .iter()
                    .zip(spans)
                    .map(|((i, _), r)| (*i, body[r].to_vec()))
                    .collect::<Vec<_>>()),
                _ => Err(Answer {
                    status: resp.status,
                    content_type: resp
                        .content_type
                        .unwrap_or_else(|| CONTENT_TYPE_JSON.into()),
                    body: Bytes::from(body),
                }),
            }
        });
        let outcome = join_all(calls).await;
        // Elements may have stopped, saved or renamed bots: re-read those nodes now.
        for node in groups.keys().filter_map(|id| self.cluster.node(*id)) {
            self.poke(node);
        }
        for r in outcome {
            match r {
                Ok(parts) => {
                    for (i, v) in parts {
                        results[i] = Some(v);
                    }
                }
                Err(answer) => return answer,
            }
        }
        // The same cluster-wide value is computed once per request, however often it appears.
        let mut list: Option<Vec<u8>> = None;
        let mut info: Option<Vec<u8>> = None;
        for (i, el) in plan.elements.iter().enumerate() {
            let value = match el {
                Element::Node { .. } => continue,
                Element::Null => b"null".to_vec(),
                Element::Literal(json) => json.clone(),
                Element::FanOutList => match &list {
                    Some(l) => l.clone(),
                    None => list.insert(self.bot_list().await.body.to_vec()).clone(),
                },
                Element::SystemInfo => match &info {
                    Some(v) => v.clone(),
                    None => {
                        let a = self.system_info().await;
                        let v = if a.status == 200 {
                            a.body.to_vec()
                        } else {
                            b"null".to_vec()
                        };
                        info.insert(v).clone()
                    }
                },
                Element::Create(c) => {
                    let a = Box::pin(self.create(c)).await;
                    if a.status == 200 {
                        a.body.to_vec()
                    } else {
                        b"null".to_vec()
                    }
                }
            };
            results[i] = Some(value);
        }
        let parts: Vec<Vec<u8>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| b"null".to_vec()))
            .collect();
        Answer::json(200, json_edit::join_array(parts.iter().map(Vec::as_slice)))
    }
}

/// Reads every node's `bot/list` and merges them (see [`Exec::bot_list`]).
async fn collect_list(
    cluster: Arc<Cluster>,
    client: Arc<NodeClient>,
    timeout: Duration,
) -> Vec<BotInfo> {
    let (cluster, client) = (&*cluster, &*client);
    let nodes = cluster.nodes();
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
                let new_ids = cluster.reconcile(node.id, &l, started);
                let infos: Vec<BotInfo> = l
                    .into_iter()
                    .filter_map(|b| {
                        let id = match b.id {
                            Some(lid) => Some(cluster.gid_of(node.id, lid)?),
                            None => None,
                        };
                        Some(BotInfo {
                            id,
                            name: b.name,
                            server: b.server,
                            status: b.status,
                        })
                    })
                    .collect();
                (infos, new_ids)
            }
            None => (cluster.fallback_list(node.id), false),
        }
    }))
    .await;
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

/// The body sent instead of a settings answer that could not be checked for secrets.
pub fn redaction_failed() -> Vec<u8> {
    ApiError::new(
        Reason::InternalError,
        "The node's answer could not be checked for identities and passwords, so it is withheld.",
    )
    .body()
}
