//! Moving bots between nodes in the view: what failover reads and what a move records.
//!
//! Owns: the snapshots failover rebuilds from ([`BotSnapshot`]), finding an earlier
//! attempt's copy ([`Cluster::holder_of`]), and recording a move ([`Cluster::move_bot`]: the
//! cluster id goes to the new slot and the old copy becomes a fence, in one durable batch),
//! plus the fences themselves; for planned moves of live bots (`admin::operations`) also
//! handing a bot over to its new node before its old copy is stopped
//! ([`Cluster::hand_over`]) and the claim that keeps two movers off one bot
//! ([`Cluster::claim_move`]). Does not own: sending the rebuild (`failover`) or carrying
//! fences out (`fencing`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::node::NodeId;
use crate::cluster::tables::{Bot, GoneBot, Tables, Template, DETACHED_LID};
use crate::cluster::view::Cluster;
use crate::protocol::settings::Identity;
use crate::store::{BotRecord, FenceRecord, Op, StoreError, TemplateRecord};

/// A bot as failover sees it: its record and its template's, if any.
#[derive(Debug, Clone)]
pub struct BotSnapshot {
    /// Cluster id.
    pub gid: u32,
    /// The bot's record.
    pub record: BotRecord,
    /// The address the node last reported for it.
    pub server: Option<String>,
    /// Its template's record.
    pub template: Option<TemplateRecord>,
}

/// A bot rebuilt on another node (see [`Cluster::move_bot`]).
#[derive(Debug)]
pub struct Move {
    /// Cluster id (kept).
    pub gid: u32,
    /// The node it was on.
    pub from: NodeId,
    /// The node it runs on now.
    pub to: NodeId,
    /// Its local id there.
    pub local_id: u32,
    /// The template it was started from there.
    pub template: String,
    /// Every setting written to that template.
    pub settings: BTreeMap<String, String>,
    /// The address it connects to.
    pub server: Option<String>,
}

/// The right to move one bot (held by failover or a planned move); released on drop.
#[derive(Debug)]
pub struct MoveClaim {
    cluster: Arc<Cluster>,
    gid: u32,
}

impl Drop for MoveClaim {
    fn drop(&mut self) {
        self.cluster.tables.write().moving.remove(&self.gid);
    }
}

/// A live bot handed over to its new node before its old copy is stopped (see
/// [`Cluster::hand_over`]).
#[derive(Debug)]
pub struct HandOver {
    /// Cluster id (kept).
    pub gid: u32,
    /// The node it runs on.
    pub from: NodeId,
    /// Its local id there.
    pub lid: u32,
    /// The node it goes to.
    pub to: NodeId,
    /// The template it will run from there.
    pub template: String,
    /// Every setting written to that template.
    pub settings: BTreeMap<String, String>,
}

/// Where a bot is, as a mover sees it.
#[derive(Debug, Clone)]
pub struct Whereabouts {
    /// Its node (for a bot waiting to be restored: the node it will be rebuilt on first).
    pub node: NodeId,
    /// It waits to be rebuilt (after a node restart, or handed over by a planned move).
    pub restoring: bool,
    /// What a rebuild needs.
    pub snapshot: BotSnapshot,
}

fn snapshot(t: &Tables, gid: u32, b: &Bot) -> BotSnapshot {
    BotSnapshot {
        gid,
        record: b.record.clone(),
        server: b.server.clone(),
        template: b
            .record
            .template
            .as_ref()
            .and_then(|n| t.templates.get(n))
            .map(|tp| tp.record.clone()),
    }
}

impl Cluster {
    /// The bots the router knows on a node, with their templates.
    pub fn bots_on(&self, node: NodeId) -> Vec<BotSnapshot> {
        let t = self.tables.read();
        t.slots
            .get(&node)
            .into_iter()
            .flat_map(|s| s.values())
            .filter_map(|gid| Some(snapshot(&t, *gid, t.bots.get(gid)?)))
            .collect()
    }

    /// Every bot with its node and whether it waits to be restored, by cluster id.
    pub fn all_bots(&self) -> Vec<(NodeId, bool, BotSnapshot)> {
        let t = self.tables.read();
        let mut v: Vec<(NodeId, bool, BotSnapshot)> = t
            .bots
            .iter()
            .map(|(gid, b)| (b.node, b.restoring, snapshot(&t, *gid, b)))
            .collect();
        v.sort_by_key(|(_, _, b)| b.gid);
        v
    }

    /// Claims bot `gid` for a move; None while another move of it is under way. Failover,
    /// restores and planned moves all claim first, so a bot is never rebuilt twice at once.
    pub fn claim_move(self: &Arc<Self>, gid: u32) -> Option<MoveClaim> {
        self.tables.write().moving.insert(gid).then(|| MoveClaim {
            cluster: self.clone(),
            gid,
        })
    }

    /// Where bot `gid` is and what a rebuild of it needs.
    pub fn whereabouts(&self, gid: u32) -> Option<Whereabouts> {
        let t = self.tables.read();
        let b = t.bots.get(&gid)?;
        Some(Whereabouts {
            node: b.node,
            restoring: b.restoring,
            snapshot: snapshot(&t, gid, b),
        })
    }

    /// A planned move's point of no return, before the old copy is stopped: bot `h.gid`,
    /// running on `h.from` in slot `h.lid`, now belongs to node `h.to` as a bot waiting to be
    /// rebuilt there from template `h.template` (with `h.settings`, written there already), and
    /// the copy on `from` becomes a fence, all in one durable batch. From here on a router
    /// crash loses nothing: `from` is fenced before it is read again (so the old copy is
    /// stopped and neither adopted nor taken for gone), and the bot is brought back on `to`
    /// like one whose node restarted (`restore_bot`, by the mover or by failover's restore).
    /// Returns false (and changes nothing) when the bot is no longer in that slot.
    pub async fn hand_over(&self, h: HandOver, timeout: Duration) -> Result<bool, StoreError> {
        let HandOver {
            gid,
            from,
            lid,
            to,
            template,
            settings,
        } = h;
        let template = template.as_str();
        let mut ops = Vec::new();
        {
            let mut t = self.tables.write();
            let Some(b) = t.bots.get(&gid) else {
                return Ok(false);
            };
            if b.node != from || b.restoring || b.record.local_id != lid {
                return Ok(false);
            }
            let fence = FenceRecord {
                node: self.node_name(from),
                bot: gid,
                local_id: lid,
                template: b.record.template.clone(),
                address: b.server.clone().or_else(|| b.record.address.clone()),
            };
            let identity = b.record.identity.clone();
            let old_template = b.record.template.clone();
            let bot_owner = b.record.owner.clone();
            let gone = GoneBot::of(gid, b);
            t.fences.entry(from).or_default().push(fence.clone());
            ops.push(Op::PutFence(fence));
            self.vacate(&mut t, from, lid, gone);
            if let Some(old) = old_template.filter(|o| o != template) {
                if t.remove_template(&old).is_some() {
                    ops.push(Op::DeleteTemplate(old));
                }
            }
            // The template's owner moves with it (its key still sees it).
            let owner = t
                .remove_template(template)
                .and_then(|tp| tp.record.owner)
                .or(bot_owner);
            let gen = self.bump();
            let record = TemplateRecord {
                name: template.to_string(),
                node: self.node_name(to),
                settings,
                identity,
                owner,
            };
            ops.push(Op::PutTemplate(record.clone()));
            t.add_template(Template {
                record,
                node: to,
                since: gen,
            });
            let to_name = self.node_name(to);
            let started = self.node(to).and_then(|n| n.starttime());
            if let Some(b) = t.bots.get_mut(&gid) {
                b.node = to;
                b.since = gen;
                b.restoring = true;
                b.record.node = to_name;
                b.record.node_started = started;
                b.record.local_id = DETACHED_LID;
                b.record.template = Some(template.to_string());
                ops.push(Op::PutBot(b.record.clone()));
            }
            self.recount(&t, from);
            self.recount(&t, to);
        }
        self.store.commit(ops, timeout).await.map(|()| true)
    }

    /// Bots that went down with a restart of their node and wait to be rebuilt, with that
    /// node.
    pub fn restoring(&self) -> Vec<(NodeId, BotSnapshot)> {
        let t = self.tables.read();
        t.bots
            .iter()
            .filter(|(_, b)| b.restoring)
            .map(|(gid, b)| (b.node, snapshot(&t, *gid, b)))
            .collect()
    }

    /// Bots on healthy nodes whose identity the router has not read yet (adopted from a
    /// node's list rather than created through the router), at most `limit`.
    pub fn bots_without_identity(&self, limit: usize) -> Vec<(u32, NodeId, u32)> {
        let t = self.tables.read();
        t.bots
            .iter()
            .filter(|(_, b)| b.record.identity.is_none() && !b.restoring)
            .filter(|(_, b)| self.node(b.node).is_some_and(|n| n.is_healthy()))
            .take(limit)
            .map(|(gid, b)| (*gid, b.node, b.record.local_id))
            .collect()
    }

    /// A node other than `except` that holds template `name` or runs a bot of it (the poller
    /// may have adopted a copy an interrupted failover made, while the router still records
    /// the template on the dead node).
    pub fn holder_of(&self, name: &str, except: NodeId) -> Option<NodeId> {
        let t = self.tables.read();
        if let Some(tp) = t.templates.get(name).filter(|tp| tp.node != except) {
            return Some(tp.node);
        }
        t.bots
            .values()
            .find(|b| b.node != except && b.record.template.as_deref() == Some(name))
            .map(|b| b.node)
    }

    /// The bot that a copy of template `name` running on `node` would clone: a bot of that
    /// template (or, for the router's `ts3ab-lb-<id>`, that id) which the router places on
    /// another node that is up, which is not being moved, whose template `node` does not own
    /// (for a client's template), and whose identity is recorded. Such a copy is left by a rebuild the router started
    /// but never recorded (a crash after the `bot connect`) while the bot's own node only
    /// looked dead. Returns the bot's id and identity.
    pub fn stray_owner(&self, node: NodeId, name: &str) -> Option<(u32, Identity)> {
        let t = self.tables.read();
        let by_id = crate::cluster::failover::router_template_bot(name);
        // A client's template recorded on this node is at home here. The router's own
        // `ts3ab-lb-<id>` belongs wherever bot <id> is (a poll that adopted the copy may have
        // recorded the template here).
        if by_id.is_none() && t.templates.get(name).is_some_and(|tp| tp.node == node) {
            return None;
        }
        t.bots
            .iter()
            .filter(|(gid, b)| {
                by_id.map_or(b.record.template.as_deref() == Some(name), |g| g == **gid)
            })
            .find(|(gid, b)| {
                b.node != node
                    && !b.restoring
                    && !t.moving.contains(gid)
                    && self.node(b.node).is_some_and(|n| n.is_healthy())
            })
            .and_then(|(gid, b)| Some((*gid, b.record.identity.clone()?)))
    }

    /// The fences of bot `gid` on `node`.
    pub fn fences_of(&self, node: NodeId, gid: u32) -> Vec<FenceRecord> {
        self.tables
            .read()
            .fences
            .get(&node)
            .map(|l| l.iter().filter(|f| f.bot == gid).cloned().collect())
            .unwrap_or_default()
    }

    /// Copies of moved bots still to stop on a node.
    pub fn fences_on(&self, node: NodeId) -> Vec<FenceRecord> {
        self.tables
            .read()
            .fences
            .get(&node)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets fences that were carried out, durably.
    pub async fn clear_fences(
        &self,
        node: NodeId,
        done: &[FenceRecord],
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let ops = done
            .iter()
            .map(|f| Op::DeleteFence(f.node.clone(), f.bot))
            .collect();
        // Durable first: a fence forgotten in memory but still stored would come back after a
        // restart and stop a bot that legitimately runs there by then.
        self.store.commit(ops, timeout).await?;
        {
            let mut t = self.tables.write();
            if let Some(list) = t.fences.get_mut(&node) {
                list.retain(|f| !done.contains(f));
                if list.is_empty() {
                    t.fences.remove(&node);
                }
            }
            // The copies are stopped: a list read before then (a fan-out in flight) still
            // shows them, and must not adopt them once the node is read again.
            let at = self.generation() + 1;
            for f in done {
                if t.slots
                    .get(&node)
                    .is_none_or(|s| !s.contains_key(&f.local_id))
                {
                    t.gone.mark(node, f.local_id, GoneBot::of_fence(f), at);
                }
            }
        }
        self.bump();
        Ok(())
    }

    /// Records that failover rebuilt bot `m.gid` on node `m.to` (same cluster id, same
    /// identity), and waits until that is durable. The copy left on `m.from` becomes a fence:
    /// it is stopped before that node is used again. Returns false (and changes nothing) when
    /// the bot is no longer where failover found it.
    pub async fn move_bot(&self, m: Move, timeout: Duration) -> Result<bool, StoreError> {
        self.relocate(m, false, timeout).await
    }

    /// Records that bot `m.gid`, which went down with a restart of node `m.from`, was rebuilt
    /// on `m.to` (the same node while it has room), and waits until that is durable. Nothing
    /// of it runs on `m.from` any more (the process restarted), so no copy is fenced there,
    /// except a template left on `m.from` when the bot went elsewhere: it is deleted before
    /// that node is used again, so a later restart cannot start it (`run = true`).
    /// Returns false when the bot is no longer waiting to be restored there.
    pub async fn restore_bot(&self, m: Move, timeout: Duration) -> Result<bool, StoreError> {
        self.relocate(m, true, timeout).await
    }

    async fn relocate(
        &self,
        m: Move,
        restoring: bool,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let mut ops = Vec::new();
        {
            let mut t = self.tables.write();
            let Some(b) = t.bots.get(&m.gid) else {
                return Ok(false);
            };
            // The poller may have seen the restored copy first and re-adopted it there.
            let adopted =
                restoring && !b.restoring && b.node == m.to && b.record.local_id == m.local_id;
            if !adopted && (b.node != m.from || b.restoring != restoring) {
                return Ok(false);
            }
            let fence =
                (!restoring || (m.to != m.from && b.record.template.is_some())).then(|| {
                    FenceRecord {
                        node: self.node_name(m.from),
                        bot: m.gid,
                        local_id: b.record.local_id,
                        template: b.record.template.clone(),
                        address: b.server.clone().or_else(|| b.record.address.clone()),
                    }
                });
            let gone = GoneBot::of(m.gid, b);
            let identity = b.record.identity.clone();
            let old_lid = b.record.local_id;
            let old_template = b.record.template.clone();
            let bot_owner = b.record.owner.clone();
            if let Some(fence) = fence {
                t.fences.entry(m.from).or_default().push(fence.clone());
                ops.push(Op::PutFence(fence));
            }
            self.vacate(&mut t, m.from, old_lid, gone);
            // The node just gave this slot to the moved bot: anything the router had learned
            // in it (a poll that saw the new bot first) is this bot.
            if let Some(other) = t.slots.get(&m.to).and_then(|s| s.get(&m.local_id)).copied() {
                if other != m.gid {
                    self.retire(&mut t, other, &mut ops);
                }
            }
            if let Some(old) = old_template.filter(|o| *o != m.template) {
                if t.remove_template(&old).is_some() {
                    ops.push(Op::DeleteTemplate(old));
                }
            }
            // The template's owner moves with it (its key still sees it).
            let owner = t
                .remove_template(&m.template)
                .and_then(|tp| tp.record.owner)
                .or(bot_owner);
            let gen = self.bump();
            let record = TemplateRecord {
                name: m.template.clone(),
                node: self.node_name(m.to),
                settings: m.settings,
                identity,
                owner,
            };
            ops.push(Op::PutTemplate(record.clone()));
            t.add_template(Template {
                record,
                node: m.to,
                since: gen,
            });
            let to_name = self.node_name(m.to);
            let started = self.node(m.to).and_then(|n| n.starttime());
            if let Some(b) = t.bots.get_mut(&m.gid) {
                b.node = m.to;
                b.server = m.server.clone();
                b.since = gen;
                b.restoring = false;
                b.record.node_started = started;
                b.record.node = to_name;
                b.record.local_id = m.local_id;
                b.record.template = Some(m.template.clone());
                if m.server.is_some() {
                    b.record.address = m.server.clone();
                }
                ops.push(Op::PutBot(b.record.clone()));
            }
            t.slots.entry(m.to).or_default().insert(m.local_id, m.gid);
            self.recount(&t, m.from);
            self.recount(&t, m.to);
        }
        self.store.commit(ops, timeout).await.map(|()| true)
    }
}
