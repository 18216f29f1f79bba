//! The tables behind the cluster view: bots by cluster id, slots by node, templates.
//!
//! Owns: the table types and their invariants that need no lock discipline of their own
//! (the slot index and the per-node template index stay in step with the main tables), and
//! the slot-identity rule: a node's local id is trusted only while the node reports the same
//! bot there ([`same_bot`]), and the gone slots that keep an old report from bringing a bot
//! back ([`GoneSlots`]). Does not own: locking, ids or the store (`view`, `ids`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::cluster::failover::RESERVED_PREFIX;
use crate::cluster::node::NodeId;
use crate::protocol::api_json::BotInfo;
use crate::store::{BotRecord, FenceRecord, TemplateRecord};

#[derive(Debug)]
pub(super) struct Bot {
    pub(super) record: BotRecord,
    pub(super) node: NodeId,
    pub(super) server: Option<String>,
    /// Generation at which the router last learned this mapping from a response; a poll that
    /// started before it cannot contradict it.
    pub(super) since: u64,
    /// Went down with a restart of its node and waits to be rebuilt: in no slot (the
    /// node hands its old local id to other bots), routed nowhere, listed as connecting.
    pub(super) restoring: bool,
}

impl Bot {
    /// Whether a report says exactly what the router holds for this bot (same bot, same
    /// template name, same address where the report has one): nothing to change.
    pub(super) fn is_exactly(&self, name: Option<&str>, server: Option<&str>) -> bool {
        same_bot(self, name, server)
            && self.record.template.as_deref() == name
            && (server.is_none() || self.server.as_deref() == server)
    }
}

#[derive(Debug)]
pub(super) struct Template {
    pub(super) record: TemplateRecord,
    pub(super) node: NodeId,
    pub(super) since: u64,
}

#[derive(Debug, Default)]
pub(super) struct Tables {
    /// Template names being created right now (see `Cluster::claim_pending`).
    pub(super) pending: HashSet<String>,
    /// Bots being moved right now, by failover or a planned move (see
    /// `Cluster::claim_move`).
    pub(super) moving: HashSet<u32>,
    pub(super) bots: HashMap<u32, Bot>,
    /// Per node: local id → cluster id.
    pub(super) slots: HashMap<NodeId, BTreeMap<u32, u32>>,
    pub(super) templates: HashMap<String, Template>,
    /// Per node: the templates it holds (an index over `templates`).
    pub(super) node_templates: HashMap<NodeId, BTreeSet<String>>,
    /// Per node: copies of moved bots to stop when the node answers again.
    pub(super) fences: HashMap<NodeId, Vec<FenceRecord>>,
    /// Shared store: bots met first here whose claim is not settled yet.
    pub(super) unclaimed: HashSet<u32>,
    /// Of those, bots a create just made, with when it was sent (a record of their slot
    /// made before then is of a bot that is gone).
    pub(super) fresh: HashMap<u32, u64>,
    /// Provisional ids that turned out to be another router's bot: the id it has.
    pub(super) adopted: HashMap<u32, (u32, std::time::Instant)>,
    /// Slots whose bot the router saw go (stopped, no longer listed, dropped by another
    /// router), with the generation that change is published under: a poll that started
    /// before then may still list the bot, and must not bring it back as a new one.
    pub(super) gone: GoneSlots,
}

/// The slots whose bot went, for [`Tables::gone`]. Kept for [`GONE_KEEP`] (far longer than
/// any poll can take: each of its reads has a timeout), so a busy cluster's stops do not pile
/// up; pruned when it has doubled since the last prune. A mark stays while the slot holds a
/// newer bot: an answer read before the old one went still shows the old one.
#[derive(Debug, Default)]
pub(super) struct GoneSlots {
    /// Per slot: the generation it lost its bot in, that bot, and when.
    slots: HashMap<(NodeId, u32), (u64, GoneBot, std::time::Instant)>,
    prune_at: usize,
}

/// The bot that went from a slot: its cluster id, and what a report of it looks like.
#[derive(Debug, Clone)]
pub(super) struct GoneBot {
    pub(super) gid: u32,
    pub(super) template: Option<String>,
    pub(super) address: Option<String>,
}

impl GoneBot {
    pub(super) fn of(gid: u32, b: &Bot) -> GoneBot {
        GoneBot {
            gid,
            template: b.record.template.clone(),
            address: b.server.clone().or_else(|| b.record.address.clone()),
        }
    }

    pub(super) fn of_fence(f: &FenceRecord) -> GoneBot {
        GoneBot {
            gid: f.bot,
            template: f.template.clone(),
            address: f.address.clone(),
        }
    }
}

/// How long a gone slot is remembered.
pub(super) const GONE_KEEP: std::time::Duration = std::time::Duration::from_secs(600);

impl GoneSlots {
    /// Records that slot `lid` of `node` lost its bot in generation `at`.
    pub(super) fn mark(&mut self, node: NodeId, lid: u32, bot: GoneBot, at: u64) {
        self.mark_at(node, lid, bot, at, std::time::Instant::now());
    }

    fn mark_at(&mut self, node: NodeId, lid: u32, bot: GoneBot, at: u64, now: std::time::Instant) {
        if lid == DETACHED_LID {
            return;
        }
        if self.slots.len() >= self.prune_at.max(1024) {
            self.slots
                .retain(|_, (_, _, when)| now.duration_since(*when) < GONE_KEEP);
            self.prune_at = self.slots.len() * 2;
        }
        self.slots.insert((node, lid), (at, bot, now));
    }

    /// Whether a list of `node` read by a poll that began at generation `started` is older
    /// than slot `lid`'s bot going (whatever it shows there is not believed).
    pub(super) fn is_stale(&self, node: NodeId, lid: u32, started: u64) -> bool {
        self.slots
            .get(&(node, lid))
            .is_some_and(|(at, _, _)| *at > started)
    }

    /// The cluster id of the bot a report of slot `lid` shows, when the report was read
    /// before generation `sent` and that bot went from the slot since (the report's name and
    /// address are its: see [`same_report`]).
    pub(super) fn shown_before(
        &self,
        node: NodeId,
        lid: u32,
        sent: u64,
        name: Option<&str>,
        server: Option<&str>,
    ) -> Option<u32> {
        self.slots
            .get(&(node, lid))
            .filter(|(at, b, _)| {
                *at > sent && same_report(b.template.as_deref(), b.address.as_deref(), name, server)
            })
            .map(|(_, b, _)| b.gid)
    }

    /// Forgets a removed node's slots.
    pub(super) fn drop_node(&mut self, node: NodeId) {
        self.slots.retain(|(n, _), _| *n != node);
    }
}

/// The local id a record keeps while its bot waits to be restored after a node restart
/// (the node may already have given its old id to another bot).
pub(super) const DETACHED_LID: u32 = u32::MAX;

impl Tables {
    /// Takes bot `gid` out of slot `lid` of `node`, if that slot still maps to it (another
    /// bot may hold it by now). Returns whether it did.
    pub(super) fn unslot(&mut self, node: NodeId, lid: u32, gid: u32) -> bool {
        match self.slots.get_mut(&node) {
            Some(s) if s.get(&lid) == Some(&gid) => {
                s.remove(&lid);
                true
            }
            _ => false,
        }
    }

    pub(super) fn insert_bot(&mut self, node: NodeId, record: BotRecord, since: u64) {
        let restoring = record.local_id == DETACHED_LID;
        if !restoring {
            self.slots
                .entry(node)
                .or_default()
                .insert(record.local_id, record.id);
        }
        self.bots.insert(
            record.id,
            Bot {
                node,
                server: record.address.clone(),
                since,
                restoring,
                record,
            },
        );
    }

    /// Takes the bots on `node` that ran under another process of it (their recorded start
    /// time is not `current`) out of their slots: they went down with a restart and wait to
    /// be restored. Returns their ids.
    pub(super) fn detach_restarted(&mut self, node: NodeId, current: &str) -> Vec<u32> {
        let Some(slots) = self.slots.get_mut(&node) else {
            return Vec::new();
        };
        let mut detached = Vec::new();
        slots.retain(|_, gid| {
            let restarted = self.bots.get(gid).is_some_and(|b| {
                b.record
                    .node_started
                    .as_deref()
                    .is_some_and(|s| s != current)
            });
            if restarted {
                detached.push(*gid);
            }
            !restarted
        });
        for gid in &detached {
            if let Some(b) = self.bots.get_mut(gid) {
                b.restoring = true;
                b.record.local_id = DETACHED_LID;
            }
        }
        detached
    }

    /// A bot of template `name` on `node` that waits to be restored (an autostarted
    /// `run = true` template is that bot; so is the router's own `ts3ab-lb-<id>` copy of a
    /// temporary bot that a poll sees before the restore recorded it).
    pub(super) fn restoring_template(&self, node: NodeId, name: &str) -> Option<u32> {
        self.bots
            .iter()
            .find(|(gid, b)| {
                b.restoring
                    && b.node == node
                    && (b.record.template.as_deref() == Some(name)
                        || name.strip_prefix(RESERVED_PREFIX) == Some(gid.to_string().as_str()))
            })
            .map(|(g, _)| *g)
    }

    /// Bots the router knows to run on `node`.
    pub(super) fn running_on(&self, node: NodeId) -> u32 {
        self.slots
            .get(&node)
            .map_or(0, |s| u32::try_from(s.len()).unwrap_or(u32::MAX))
    }

    pub(super) fn add_template(&mut self, tp: Template) {
        self.node_templates
            .entry(tp.node)
            .or_default()
            .insert(tp.record.name.clone());
        if let Some(old) = self.templates.insert(tp.record.name.clone(), tp) {
            let name = old.record.name;
            if self
                .templates
                .get(&name)
                .is_some_and(|n| n.node != old.node)
            {
                if let Some(set) = self.node_templates.get_mut(&old.node) {
                    set.remove(&name);
                }
            }
        }
    }

    pub(super) fn remove_template(&mut self, name: &str) -> Option<Template> {
        let tp = self.templates.remove(name)?;
        if let Some(set) = self.node_templates.get_mut(&tp.node) {
            set.remove(name);
        }
        Some(tp)
    }

    /// Whether a node's list says exactly what the tables already hold (the common case for a
    /// poll): the same bot in every listed slot, no slot gone, the same templates.
    /// `current` is the node's start time: a bot stamped with another one ran under another
    /// process, which is a change even when the list looks the same (a restart that brought
    /// back exactly the same `run = true` templates).
    pub(super) fn unchanged(
        &self,
        node: NodeId,
        listed: &[BotInfo],
        current: Option<&str>,
    ) -> bool {
        let slots = self.slots.get(&node);
        let mut running = 0;
        let mut names = 0;
        for e in listed {
            if let Some(name) = &e.name {
                names += 1;
                if self.templates.get(name).is_none_or(|tp| tp.node != node) {
                    return false;
                }
            }
            let Some(lid) = e.id else { continue };
            running += 1;
            let same = slots
                .and_then(|s| s.get(&lid))
                .and_then(|g| self.bots.get(g))
                .is_some_and(|b| {
                    b.is_exactly(e.name.as_deref(), e.server.as_deref())
                        && (current.is_none() || b.record.node_started.as_deref() == current)
                });
            if !same {
                return false;
            }
        }
        running == slots.map_or(0, |s| s.len())
            && names == self.node_templates.get(&node).map_or(0, |s| s.len())
    }
}

/// Whether the bot in a slot is still the one the router knows there.
pub(super) fn same_bot(b: &Bot, name: Option<&str>, server: Option<&str>) -> bool {
    let known = b.server.as_deref().or(b.record.address.as_deref());
    same_report(b.record.template.as_deref(), known, name, server)
}

/// Whether a report (`name`, `server`) is of a bot known by its template and address.
pub(super) fn same_report(
    template: Option<&str>,
    known: Option<&str>,
    name: Option<&str>,
    server: Option<&str>,
) -> bool {
    match (template, name) {
        (Some(a), Some(n)) => a == n,
        // Temporary bots: the same address (None = not resolved yet, which matches anything).
        (None, None) => match (known, server) {
            (Some(a), Some(s)) => a == s,
            _ => true,
        },
        // Saved as a template (`bot save`), or its template deleted: the same bot only if the
        // address is known on both sides and equal.
        _ => matches!((known, server), (Some(a), Some(s)) if a == s),
    }
}

/// Keeps the connect address of an offline template for the fallback list.
pub(super) fn seen_template(t: &mut Tables, name: &str, node: NodeId, server: Option<&str>) {
    if let (Some(tp), Some(server)) = (t.templates.get_mut(name), server) {
        if tp.node == node
            && !server.is_empty()
            && !tp.record.settings.contains_key("connect.address")
        {
            tp.record
                .settings
                .insert("connect.address".into(), server.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn gone(gid: u32, template: Option<&str>, address: &str) -> GoneBot {
        GoneBot {
            gid,
            template: template.map(str::to_string),
            address: Some(address.to_string()),
        }
    }

    #[test]
    fn a_gone_slot_makes_older_reports_stale_and_names_the_bot_they_show() {
        let mut g = GoneSlots::default();
        let n = NodeId(3);
        g.mark(n, 7, gone(70, None, "a.example"), 10);
        assert!(g.is_stale(n, 7, 9), "read before the bot went");
        assert!(!g.is_stale(n, 7, 10), "read after");
        assert!(!g.is_stale(n, 8, 0), "another slot");
        assert!(!g.is_stale(NodeId(4), 7, 0), "another node");
        let shown = |g: &GoneSlots, sent, server| g.shown_before(n, 7, sent, None, Some(server));
        assert_eq!(shown(&g, 9, "a.example"), Some(70), "the bot it showed");
        assert_eq!(shown(&g, 9, "b.example"), None, "another bot");
        assert_eq!(shown(&g, 10, "a.example"), None, "sent after it went");
        g.mark(n, 6, gone(60, Some("music"), "m"), 10);
        assert_eq!(g.shown_before(n, 6, 9, Some("music"), Some("x")), Some(60));
        assert_eq!(g.shown_before(n, 6, 9, None, Some("other")), None);
        g.mark(NodeId(4), 7, gone(71, None, "a"), 10);
        g.drop_node(n);
        assert!(!g.is_stale(n, 7, 0));
        assert!(g.is_stale(NodeId(4), 7, 0));
        g.mark(n, DETACHED_LID, gone(72, None, "a"), 10);
        assert!(
            !g.is_stale(n, DETACHED_LID, 0),
            "no slot for a detached bot"
        );
    }

    #[test]
    fn gone_slots_are_pruned_once_old_and_kept_while_young() {
        let mut g = GoneSlots::default();
        let old = Instant::now();
        let now = old + GONE_KEEP + Duration::from_secs(1);
        for lid in 0..1024 {
            g.mark_at(NodeId(0), lid, gone(lid, None, "a"), 5, old);
        }
        // Young ones pile up past the threshold without loss; the old ones go at the prune.
        for lid in 0..3000 {
            g.mark_at(NodeId(1), lid, gone(lid, None, "a"), 5, now);
        }
        assert_eq!(g.slots.len(), 3000);
        assert!(!g.is_stale(NodeId(0), 0, 0), "an old gone slot was pruned");
        assert!(g.is_stale(NodeId(1), 0, 0), "a young one kept");
        assert!(g.is_stale(NodeId(1), 2999, 0));
    }
}
