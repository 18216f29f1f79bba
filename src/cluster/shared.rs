//! One cluster view among several routers on one store (MongoDB): claims of first-seen bots,
//! other routers' changes applied to this view, and which router leads.
//!
//! Owns: (1) claims: a bot this router meets first (in a poll, a BotInfo answer or a create's
//! answer) gets a provisional id from this router's reserved block and is then claimed in the
//! store under its instance key (node, local id, node start time); if another router recorded
//! the same bot first, this view adopts that router's id and drops its own, so every bot has
//! exactly one cluster id whichever router saw it first. Until its claim is settled a bot's
//! record is not written (the claim writes it). (2) Applying other routers' changes (bots,
//! templates, copies to fence, nodes) to the view without writing them back. (3) The lead
//! flag: failover and admin operations run only on the router that holds the store's lease.
//! Does not own: the store calls themselves (`store`), the loop that drives them (`server`),
//! keys and operations (their own layers apply those changes).
//!
//! With the embedded store (one router) none of this runs: ids come from the high-water
//! mark, every bot is written as it is learned, and this router always leads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::membership::{agent_of_record, current_agent, tls_of_record};
use crate::cluster::node::{Node, NodeId, NodeSource};
use crate::cluster::tables::{GoneBot, Tables, Template, DETACHED_LID};
use crate::cluster::view::Cluster;
use crate::config::NodeConfig;
use crate::store::{
    BotPatch, BotRecord, Change, Claim, NodeRecord, Op, StoreError, TemplateRecord,
};

/// How long a seat outlives a router that died holding it: longer than any create takes.
const SEAT_TTL: Duration = Duration::from_secs(60);

/// A seat a create holds on a node (shared stores); given up when dropped, which the create
/// does once the new bot's record is written (it counts itself from then on) or it failed.
pub struct Seat {
    held: Option<(crate::store::StoreHandle, String)>,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("id", &self.held.as_ref().map(|(_, id)| id))
            .finish()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some((store, id)) = self.held.take() {
            store.release_seat(id);
        }
    }
}

/// What one round of other routers' changes did to this view.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Bot records added, changed or removed.
    pub bots: usize,
    /// Template records added, changed or removed.
    pub templates: usize,
    /// Copies to fence added or removed.
    pub fences: usize,
    /// Nodes added, changed or removed.
    pub nodes: usize,
    /// Records for nodes this router does not have (kept in the store, not routed).
    pub skipped: usize,
}

impl Cluster {
    /// Whether other routers share this router's store.
    pub fn is_shared(&self) -> bool {
        self.ids.lock().shared
    }

    /// Whether the store answered its last call (false during a database outage: writes a
    /// client waits for are refused at once instead).
    pub fn store_available(&self) -> bool {
        self.store.available()
    }

    /// Claims template name `name` for `node` in a shared store before a create sends it
    /// there, so that two routers can never create one name on two nodes. Ok(false): another
    /// router holds the name. Always Ok(true) on an unshared store (the view's own pending
    /// claim is enough for one router).
    pub async fn claim_template_name(
        &self,
        name: &str,
        node: NodeId,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        if !self.is_shared() {
            return Ok(true);
        }
        let record = TemplateRecord {
            name: name.to_string(),
            node: self.node_name(node),
            settings: Default::default(),
            identity: None,
            owner: None,
        };
        Ok(matches!(
            self.store.claim_template(record, timeout).await?,
            Claim::Won
        ))
    }

    /// Holds a seat on `node` in a shared store for a create about to be sent there (see
    /// `Store::reserve_seat`): None when creates through other routers fill it already. On
    /// an unshared store every create gets one (placement's own reservation is the count).
    pub async fn reserve_seat(
        &self,
        node: &Node,
        timeout: Duration,
    ) -> Result<Option<Seat>, StoreError> {
        if !self.is_shared() {
            return Ok(Some(Seat { held: None }));
        }
        let capacity = node.capacity.load(Ordering::Acquire);
        Ok(self
            .store
            .reserve_seat(&node.name, capacity, SEAT_TTL, timeout)
            .await?
            .map(|id| Seat {
                held: Some((self.store.clone(), id)),
            }))
    }

    /// Gives a claimed template name up again (the create did not happen).
    pub fn release_template_name(&self, name: &str) {
        if self.is_shared() && self.template_owner(name).is_none() {
            self.store
                .submit(vec![Op::DeleteTemplate(name.to_string())]);
        }
    }

    /// Whether this router runs failover and operations: it holds the lease, and the lease
    /// is surely still its own (always true with an unshared store). The answer turns false
    /// by itself when the lease runs out unrenewed, however busy the store is.
    pub fn leads(&self) -> bool {
        self.lead.load(Ordering::Acquire)
            && self
                .lead_until
                .lock()
                .is_none_or(|until| std::time::Instant::now() < until)
    }

    /// Records the lead lease: held until `until` (None: not held).
    pub fn set_lead_until(&self, until: Option<std::time::Instant>) {
        *self.lead_until.lock() = until;
        self.set_lead(until.is_some());
    }

    fn set_lead(&self, lead: bool) {
        let was = self.lead.swap(lead, Ordering::AcqRel);
        if was != lead {
            if lead {
                log::warn!(
                    "this router now leads the cluster (failover and admin operations run here)"
                );
            } else {
                log::warn!("this router no longer leads the cluster; another router runs failover and operations");
            }
        }
    }

    /// A bot met for the first time on a shared store: routed at once under its provisional
    /// id, written only once its claim is settled.
    pub(super) fn queue_claim(&self, t: &mut Tables, gid: u32) {
        t.unclaimed.insert(gid);
        self.claims.lock().push(gid);
        self.claims_waiting.notify_one();
    }

    /// Queues what a poll or an answer concluded. On a shared store only the leading router
    /// writes that (it alone moves bots, so only it can tell a bot that moved from one that
    /// stopped); another router keeps it in its own view until the leader's records arrive.
    /// Writes of bots whose claim is not settled are left out (the claim writes them).
    pub(super) fn submit_ops(&self, mut ops: Vec<Op>) {
        if self.is_shared() {
            if !self.leads() {
                return;
            }
            // A template a poll met first may have been created through another router whose
            // record (with the settings written through it) is on its way: claim the name
            // instead of overwriting that record.
            let mut claims = Vec::new();
            ops.retain(|op| match op {
                Op::PutTemplate(tp) => {
                    claims.push(tp.clone());
                    false
                }
                _ => true,
            });
            if !claims.is_empty() {
                self.template_claims.lock().extend(claims);
                self.claims_waiting.notify_one();
            }
        }
        self.submit(ops);
    }

    /// Queues writes. On a shared store the records of bots whose claim is not settled are
    /// left out: until then another router may own the bot under another id, and the claim
    /// writes the latest record if it wins.
    pub(super) fn submit(&self, mut ops: Vec<Op>) {
        if self.is_shared() {
            let t = self.tables.read();
            if !t.unclaimed.is_empty() {
                ops.retain(|op| match op {
                    Op::PutBot(b) => !t.unclaimed.contains(&b.id),
                    Op::PatchBot(p) => !t.unclaimed.contains(&p.id),
                    _ => true,
                });
            }
        }
        if !ops.is_empty() {
            self.store.submit(ops);
        }
    }

    /// Waits until a claim is queued (or `max` passed).
    pub async fn claims_queued(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.claims_waiting.notified()).await;
    }

    /// Settles every queued claim; those the store could not answer stay queued. Returns
    /// how many were settled.
    pub async fn settle_claims(&self, timeout: Duration) -> usize {
        // A create that met the sync loop's claim reads the outcome soon after; a minute is
        // far more than it waits.
        self.tables
            .write()
            .adopted
            .retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        let pending: Vec<u32> = std::mem::take(&mut *self.claims.lock());
        let templates: Vec<TemplateRecord> = std::mem::take(&mut *self.template_claims.lock());
        let mut settled = 0;
        for tp in templates {
            match self.store.claim_template(tp.clone(), timeout).await {
                Ok(Claim::Won) => settled += 1,
                Ok(Claim::Lost(theirs)) => {
                    settled += 1;
                    let mut t = self.tables.write();
                    let here = t.templates.get(&tp.name).map(|x| x.node);
                    match (here, self.node_by_name(&theirs.node)) {
                        // The same template: the stored record (with its settings) is it.
                        (Some(n), Some(theirs_node)) if theirs_node.id == n => {
                            t.remove_template(&tp.name);
                            t.add_template(Template {
                                record: theirs,
                                node: n,
                                since: 0,
                            });
                        }
                        _ => log::warn!(
                            "template `{}` is recorded on node `{}` but was also seen on `{}`; keeping the record",
                            tp.name,
                            theirs.node,
                            tp.node
                        ),
                    }
                }
                Err(e) => {
                    log::warn!(
                        "template `{}`: its claim could not be stored yet ({e}); retried",
                        tp.name
                    );
                    self.template_claims.lock().push(tp);
                }
            }
        }
        for gid in pending {
            match self.claim_one(gid, None, timeout).await {
                Ok(_) => settled += 1,
                Err(e) => {
                    log::warn!("bot {gid}: its claim could not be stored yet ({e}); retried");
                    self.claims.lock().push(gid);
                }
            }
        }
        settled
    }

    /// Claims one bot; returns the cluster id it has afterwards (its own, or the id of the
    /// router that recorded it first). `fresh_ms`: the bot was just made by a create sent at
    /// that time, so a record of that slot older than it is a bot that is gone.
    pub(super) async fn claim_one(
        &self,
        gid: u32,
        fresh_ms: Option<u64>,
        timeout: Duration,
    ) -> Result<u32, StoreError> {
        // A stale holder is deleted and the claim tried again; twice is plenty (a third
        // router would have to reuse the same slot in between).
        for _ in 0..3 {
            let (rec, fresh_ms) = {
                let mut t = self.tables.write();
                if !t.unclaimed.contains(&gid) {
                    // Settled meanwhile (the sync loop and a create's own claim may meet
                    // here): the id it ended up with.
                    return Ok(t.adopted.get(&gid).map_or(gid, |(w, _)| *w));
                }
                let fresh = fresh_ms.or_else(|| t.fresh.get(&gid).copied());
                let rec = match t.bots.get(&gid) {
                    Some(b) => b.record.clone(),
                    None => {
                        // Gone before its claim: nothing to record.
                        t.unclaimed.remove(&gid);
                        t.fresh.remove(&gid);
                        return Ok(gid);
                    }
                };
                (rec, fresh)
            };
            let outcome = self.store.claim_bot(rec.clone(), timeout).await?;
            {
                // Another claim of this bot (the sync loop's and a create's own can be in
                // flight together) settled it meanwhile: its outcome stands.
                let t = self.tables.read();
                if !t.unclaimed.contains(&gid) {
                    return Ok(t.adopted.get(&gid).map_or(gid, |(w, _)| *w));
                }
            }
            log::debug!(
                "claim of bot {gid} ({} local {} started {:?}): {}",
                rec.node,
                rec.local_id,
                rec.node_started,
                match &outcome {
                    Claim::Won => "won".to_string(),
                    Claim::Lost(w) => format!("lost to {}", w.id),
                }
            );
            match outcome {
                Claim::Won => {
                    let later = {
                        let mut t = self.tables.write();
                        t.unclaimed.remove(&gid);
                        t.fresh.remove(&gid);
                        t.bots
                            .get(&gid)
                            .map(|b| b.record.clone())
                            .filter(|r| *r != rec)
                    };
                    // Changes made while the claim was on its way were left out of the writes.
                    if let Some(r) = later {
                        self.store.submit(vec![Op::PutBot(r)]);
                    }
                    return Ok(gid);
                }
                Claim::Lost(w) if w.id == gid => {
                    let mut t = self.tables.write();
                    t.unclaimed.remove(&gid);
                    t.fresh.remove(&gid);
                    return Ok(gid);
                }
                Claim::Lost(w) => {
                    let same = {
                        let t = self.tables.read();
                        t.bots.get(&gid).is_some_and(|b| same_instance(b, &w))
                    };
                    let stale = !same || fresh_ms.is_some_and(|sent| w.created_ms < sent);
                    if !stale {
                        let id = w.id;
                        // What the create knew and a poll cannot (the address as given, the
                        // server password) goes to the winner's record.
                        let patch = BotPatch {
                            id,
                            node: w.node.clone(),
                            local_id: w.local_id,
                            address: rec.address.clone().filter(|_| w.address.is_none()),
                            server_password: rec
                                .server_password
                                .clone()
                                .filter(|_| w.server_password.is_none()),
                            ..BotPatch::default()
                        };
                        let mut merged = w;
                        let wants_patch = patch.apply_to(&mut merged)
                            && (patch.address.is_some() || patch.server_password.is_some());
                        self.adopt(gid, merged);
                        if wants_patch {
                            self.store.submit(vec![Op::PatchBot(patch)]);
                        }
                        return Ok(id);
                    }
                    if fresh_ms.is_none() && !self.leads() {
                        // Not sure enough to delete another router's record from here (the
                        // two may only write the address differently): the leader's poll
                        // decides, and this claim is tried again next round.
                        self.claims.lock().push(gid);
                        return Ok(gid);
                    }
                    // The slot holds another bot now (the identity rule of `view`): the
                    // recorded one is gone, whichever router recorded it.
                    log::info!(
                        "bot {} was recorded in slot {} of node {} but another bot runs there now; it is dropped",
                        w.id,
                        w.local_id,
                        w.node
                    );
                    self.drop_bot(w.id);
                    self.store
                        .commit(vec![Op::DeleteBot(w.id)], timeout)
                        .await?;
                }
            }
        }
        Err(StoreError::Io(format!(
            "bot {gid}: its slot kept changing hands while it was claimed"
        )))
    }

    /// Another router recorded bot `provisional` first, as `winner`: this view takes the
    /// winner's id for it.
    fn adopt(&self, provisional: u32, winner: BotRecord) {
        let mut t = self.tables.write();
        t.unclaimed.remove(&provisional);
        t.fresh.remove(&provisional);
        t.adopted
            .insert(provisional, (winner.id, std::time::Instant::now()));
        let Some(mine) = t.bots.remove(&provisional) else {
            return;
        };
        let node = mine.node;
        t.unslot(node, mine.record.local_id, provisional);
        log::info!(
            "bot first seen here as {provisional} was recorded by another router first; it is bot {}",
            winner.id
        );
        if !t.bots.contains_key(&winner.id) {
            let since = mine.since;
            t.insert_bot(node, winner, since);
        } else {
            // Known already (another router's record arrived first): what the create knew
            // (carried in `winner`) goes into that record too.
            if let Some(b) = t.bots.get_mut(&winner.id) {
                for (mine, theirs) in [
                    (&mut b.record.address, &winner.address),
                    (&mut b.record.server_password, &winner.server_password),
                ] {
                    if mine.is_none() {
                        mine.clone_from(theirs);
                    }
                }
            }
            if let Some(s) = t.slots.get_mut(&node) {
                s.insert(mine.record.local_id, winner.id);
            }
        }
        self.recount(&t, node);
        drop(t);
        self.bump();
    }

    /// Applies what other routers wrote to this view (keys and operations excepted: their
    /// layers apply those). Nothing is written back.
    pub fn apply_changes(&self, changes: &[Change]) -> Applied {
        let mut applied = Applied::default();
        // Removals first: a slot another router freed and filled again arrives as the old
        // bot's removal and the new bot's record, and the new one must not meet the old.
        let removals = changes.iter().filter(|c| is_removal(c));
        let puts = changes.iter().filter(|c| !is_removal(c));
        for c in removals.chain(puts) {
            match c {
                Change::Node(name, rec) => {
                    if self.apply_node(name, rec.as_ref()) {
                        applied.nodes += 1;
                    }
                }
                Change::Bot(id, rec) => match rec {
                    Some(r) => {
                        if self.apply_bot(r) {
                            applied.bots += 1;
                        } else {
                            applied.skipped += 1;
                        }
                    }
                    None => {
                        self.drop_bot(*id);
                        applied.bots += 1;
                    }
                },
                Change::Template(name, rec) => {
                    let mut t = self.tables.write();
                    match rec {
                        Some(r) => match self.node_by_name(&r.node) {
                            Some(n) => {
                                t.remove_template(name);
                                t.add_template(Template {
                                    record: r.clone(),
                                    node: n.id,
                                    since: 0,
                                });
                                applied.templates += 1;
                            }
                            None => applied.skipped += 1,
                        },
                        None => {
                            t.remove_template(name);
                            applied.templates += 1;
                        }
                    }
                }
                Change::Fence(node, bot, rec) => {
                    let Some(n) = self.node_by_name(node) else {
                        applied.skipped += 1;
                        continue;
                    };
                    let mut t = self.tables.write();
                    let list = t.fences.entry(n.id).or_default();
                    list.retain(|f| f.bot != *bot);
                    if let Some(f) = rec {
                        list.push(f.clone());
                    }
                    if list.is_empty() {
                        t.fences.remove(&n.id);
                    }
                    applied.fences += 1;
                }
                Change::Key(..) | Change::Operation(..) => {}
            }
        }
        if applied != Applied::default() {
            self.bump();
        }
        applied
    }

    fn apply_bot(&self, r: &BotRecord) -> bool {
        let Some(node) = self.node_by_name(&r.node) else {
            return false;
        };
        let mut t = self.tables.write();
        // Where the view had it before (it may have moved).
        let old_node = t.bots.get(&r.id).map(|b| (b.node, b.record.local_id));
        if let Some((n, lid)) = old_node.filter(|o| *o != (node.id, r.local_id)) {
            // It moved: a poll of ours read before then still lists it in its old slot.
            if let Some(gone) = t.bots.get(&r.id).map(|b| GoneBot::of(r.id, b)) {
                self.vacate(&mut t, n, lid, gone);
            }
        }
        // The slot is the other router's bot now: whatever this view kept there is stale
        // (or a provisional id whose claim will lose to this record). Except on the leader,
        // for the same bot instance it recorded itself (a move it made, which another
        // router's poll met before the move's record reached it): the leader's record
        // stands and the other router's copy of it is deleted.
        if r.local_id != DETACHED_LID {
            let holder = t
                .slots
                .get(&node.id)
                .and_then(|s| s.get(&r.local_id))
                .copied();
            if let Some(q) = holder.filter(|q| *q != r.id) {
                if t.unclaimed.contains(&q) {
                    // This router's provisional id for the bot another router recorded: a
                    // create waiting on its claim gets the recorded id.
                    t.adopted.insert(q, (r.id, std::time::Instant::now()));
                }
                t.fresh.remove(&q);
                let mine = !t.unclaimed.contains(&q)
                    && t.bots
                        .get(&q)
                        .is_some_and(|b| b.record.node_started == r.node_started);
                if mine && self.leads() {
                    let keep = t.bots.get(&q).map(|b| b.record.clone());
                    drop(t);
                    log::info!(
                        "bot {} is bot {q} (moved here by this router); the duplicate record is deleted",
                        r.id
                    );
                    // The duplicate's removal frees the slot's claim, which the leader's own
                    // record then takes.
                    let mut ops = vec![Op::DeleteBot(r.id)];
                    ops.extend(keep.map(Op::PutBot));
                    self.store.submit(ops);
                    return false;
                }
                t.unclaimed.remove(&q);
                t.bots.remove(&q);
                if let Some(s) = t.slots.get_mut(&node.id) {
                    s.remove(&r.local_id);
                }
            }
        }
        let since = self.generation() + 1;
        let moving = t.moving.contains(&r.id);
        t.insert_bot(node.id, r.clone(), since);
        if moving {
            t.moving.insert(r.id);
        }
        self.recount(&t, node.id);
        if let Some((n, _)) = old_node.filter(|(n, _)| *n != node.id) {
            self.recount(&t, n);
        }
        true
    }

    fn drop_bot(&self, id: u32) {
        let mut t = self.tables.write();
        t.unclaimed.remove(&id);
        t.fresh.remove(&id);
        if let Some(b) = t.bots.remove(&id) {
            // Another router saw it go: a poll of ours read before then still lists it.
            let freed = self.vacate(&mut t, b.node, b.record.local_id, GoneBot::of(id, &b));
            self.recount(&t, b.node);
            drop(t);
            if freed {
                // Publishes the mark now (not every caller bumps after).
                self.bump();
            }
        }
    }

    /// A node another router added, edited or removed. Returns whether the view changed.
    fn apply_node(&self, name: &str, rec: Option<&NodeRecord>) -> bool {
        let existing = self.node_by_name(name);
        let Some(rec) = rec else {
            return match existing {
                Some(n) if n.source == NodeSource::Admin => {
                    n.removed.store(true, Ordering::Release);
                    n.healthy.store(false, Ordering::Release);
                    self.tables.write().gone.drop_node(n.id);
                    self.nodes.store(Arc::new(self.nodes().without(n.id)));
                    self.nodes_changed();
                    log::info!("node {name} was removed by another router");
                    true
                }
                _ => false,
            };
        };
        // A config-file node's record without a token keeps this router's file token.
        let auth = match (&rec.auth, &existing) {
            (None, Some(n)) if rec.from_config => n.endpoint().credentials.clone(),
            (a, _) => a.clone(),
        };
        let current = existing.as_deref().and_then(current_agent);
        let current_tls = existing.as_deref().map(|n| n.endpoint().trust.clone());
        let parsed = NodeConfig::parse(name, &rec.url, auth, rec.capacity, rec.effective_state())
            .and_then(|c| Ok(c.with_agent(agent_of_record(rec, current.as_ref())?)))
            .and_then(|c| tls_of_record(rec, c, current_tls.as_ref()));
        let c = match parsed {
            Ok(c) => c,
            Err(e) => {
                log::warn!("node {name} as another router stored it is invalid here: {e}");
                return false;
            }
        };
        match existing {
            Some(n) => {
                let endpoint = c.endpoint();
                let agent = c.agent_endpoint();
                let changed = endpoint != *n.endpoint()
                    || n.capacity.load(Ordering::Acquire) != c.capacity
                    || n.state() != c.state
                    || n.agent().as_deref() != agent.as_ref();
                if endpoint != *n.endpoint() {
                    n.set_endpoint(endpoint);
                }
                n.capacity.store(c.capacity, Ordering::Release);
                n.set_state(c.state);
                n.set_agent(c.agent.clone());
                if changed {
                    self.nodes_changed();
                    log::info!("node {name} was edited by another router");
                }
                changed
            }
            None if rec.from_config => {
                // Another router's config file has it; this router's file does not.
                false
            }
            None => {
                let id = self.new_node_id();
                let node = Arc::new(Node::new(id, &c, NodeSource::Admin));
                self.nodes.store(Arc::new(self.nodes().with(node)));
                self.nodes_changed();
                log::info!(
                    "node {name} ({}) was added by another router, as {id}",
                    c.url
                );
                true
            }
        }
    }
}

/// Whether a change removes a record.
fn is_removal(c: &Change) -> bool {
    matches!(
        c,
        Change::Bot(_, None)
            | Change::Template(_, None)
            | Change::Node(_, None)
            | Change::Key(_, None)
            | Change::Fence(_, _, None)
            | Change::Operation(_, None)
    )
}

/// Whether `w`, another router's record of this bot's slot, is this bot: the identity rule
/// of `view` (same template name; temporary bots: the same address), with addresses compared
/// loosely, since one side may hold the address a client gave and the other what the node
/// reports (case, TeamSpeak's default port).
fn same_instance(b: &crate::cluster::tables::Bot, w: &BotRecord) -> bool {
    fn norm(a: &str) -> String {
        let a = a.trim().to_ascii_lowercase();
        a.strip_suffix(":9987").map(str::to_string).unwrap_or(a)
    }
    let ours = b.server.as_deref().or(b.record.address.as_deref());
    match (b.record.template.as_deref(), w.template.as_deref()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => match (ours, w.address.as_deref()) {
            (Some(x), Some(y)) => norm(x) == norm(y),
            _ => true,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{Snapshot, StoreHandle};

    fn cluster(dir: &std::path::Path) -> Cluster {
        let store =
            StoreHandle::spawn(Box::new(EmbeddedStore::open(dir).expect("store"))).expect("spawn");
        Cluster::new(&[], Snapshot::default(), store)
    }

    /// Node `n1` as another router records it.
    fn n1_record() -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            url: "http://127.0.0.1:9".into(),
            auth: None,
            capacity: 10,
            draining: false,
            state: crate::store::NodeState::Ready,
            from_config: false,
            agent: None,
            ca_file: None,
            tls_host: None,
        }
    }

    /// A temporary bot on `n1` as another router records it.
    fn n1_bot(id: u32, lid: u32, addr: &str) -> BotRecord {
        BotRecord {
            id,
            node: "n1".into(),
            local_id: lid,
            template: None,
            address: Some(addr.into()),
            server_password: None,
            channel: None,
            nickname: None,
            identity: None,
            created_ms: 1,
            node_started: None,
            owner: None,
        }
    }

    /// The lead ends when its lease runs out, without anyone saying so (a leader whose
    /// renewals are stuck behind a busy store stops acting on time).
    #[test]
    fn the_lead_ends_with_its_lease() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        assert!(c.leads(), "an unshared store's router always leads");
        c.set_lead_until(Some(std::time::Instant::now() + Duration::from_millis(80)));
        assert!(c.leads());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!c.leads(), "the lease ran out");
        c.set_lead_until(None);
        assert!(!c.leads());
    }

    /// Other routers' changes: removals before records, so a slot freed and filled again
    /// holds the new bot; a record for an unknown node is skipped; a removed bot is gone.
    #[test]
    fn other_routers_changes_apply_removals_first() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        let node_rec = n1_record();
        let bot = |id: u32, lid: u32, addr: &str| BotRecord {
            node_started: Some("S".into()),
            ..n1_bot(id, lid, addr)
        };
        let a = c.apply_changes(&[Change::Node("n1".into(), Some(node_rec.clone()))]);
        assert_eq!(a.nodes, 1);
        let n1 = c.node_by_name("n1").expect("added");
        // Another router gave it an agent, then a record from before agents arrived (no
        // `agent` field): the agent stays; then another router removed it.
        let with_agent = |agent| NodeRecord {
            agent,
            ..node_rec.clone()
        };
        let agent = crate::store::AgentRecord {
            url: "http://127.0.0.1:58915".into(),
            token: Some("agent-token".into()),
        };
        c.apply_changes(&[Change::Node(
            "n1".into(),
            Some(with_agent(Some(Some(agent)))),
        )]);
        let url = |n: &crate::cluster::Node| n.agent().map(|a| a.url().to_string());
        assert_eq!(url(&n1).as_deref(), Some("http://127.0.0.1:58915"));
        c.apply_changes(&[Change::Node("n1".into(), Some(with_agent(None)))]);
        assert_eq!(url(&n1).as_deref(), Some("http://127.0.0.1:58915"));
        c.apply_changes(&[Change::Node("n1".into(), Some(with_agent(Some(None))))]);
        assert_eq!(url(&n1), None);
        c.apply_changes(&[Change::Bot(1, Some(bot(1, 0, "a")))]);
        assert_eq!(c.gid_of(n1.id, 0), Some(1));
        // Bot 1 stopped and bot 2 took its slot: in one round, listed put-first.
        c.apply_changes(&[Change::Bot(2, Some(bot(2, 0, "b"))), Change::Bot(1, None)]);
        assert_eq!(c.gid_of(n1.id, 0), Some(2));
        assert!(c.locate(1).is_none(), "bot 1 is gone");
        let skipped = c.apply_changes(&[Change::Bot(
            3,
            Some(BotRecord {
                node: "elsewhere".into(),
                ..bot(3, 1, "c")
            }),
        )]);
        assert_eq!(skipped.skipped, 1);
        assert!(c.locate(3).is_none());
        c.apply_changes(&[Change::Node("n1".into(), None)]);
        assert!(c.node_by_name("n1").is_none(), "removed by another router");
    }

    /// Another router stopped a bot: a poll of ours that read the node's list before then
    /// does not bring it back (as a provisional id it would claim in the shared store).
    #[test]
    fn a_bot_another_router_dropped_stays_gone_for_an_older_poll() {
        let dir = tempfile::tempdir().expect("dir");
        let c = cluster(dir.path());
        c.apply_changes(&[Change::Node("n1".into(), Some(n1_record()))]);
        let n1 = c.node_by_name("n1").expect("added");
        c.apply_changes(&[Change::Bot(5, Some(n1_bot(5, 3, "a.example")))]);
        assert_eq!(c.gid_of(n1.id, 3), Some(5));
        let before = c.generation();
        c.apply_changes(&[Change::Bot(5, None)]);
        assert!(c.generation() > before, "the drop is published");
        let listed = [crate::protocol::api_json::BotInfo {
            id: Some(3),
            name: None,
            server: Some("a.example".into()),
            status: 2,
        }];
        c.reconcile(n1.id, &listed, before);
        assert_eq!(c.gid_of(n1.id, 3), None, "not brought back");
        let now = c.generation();
        c.reconcile(n1.id, &listed, now);
        assert!(
            c.gid_of(n1.id, 3).is_some(),
            "a poll begun later is believed"
        );
    }
}
