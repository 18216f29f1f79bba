//! Editing what the view records about bots and templates, as answers confirm it.
//!
//! Owns: claiming template names (a name being created is exclusive cluster-wide; a
//! confirmed create is durable before its answer), settings written through the router,
//! identities read from nodes. Every edit is queued to the store in the same step. Does not
//! own: reconciling with node lists (`view`) or moving bots (`moves`).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::node::NodeId;
use crate::cluster::view::{Cluster, PendingTemplate};
use crate::store::{BotPatch, BotRecord, Identity, Op, StoreError};

impl Cluster {
    /// The write for an edit of a bot's own fields: on a shared store only those fields, and
    /// only while the bot still runs where this router saw it (another router may have moved
    /// it meanwhile, and a whole record from here would move it back).
    fn bot_write(&self, old: &BotRecord, new: &BotRecord) -> Op {
        match BotPatch::between(old, new).filter(|_| self.is_shared()) {
            Some(p) => Op::PatchBot(p),
            None => Op::PutBot(new.clone()),
        }
    }

    /// Records a setting written in a bot's context: for a template bot it belongs to its
    /// template; for a temporary bot only what a rebuild needs is kept (nickname, channel,
    /// address).
    pub fn record_bot_setting(&self, gid: u32, path: &str, value: &str) {
        if let Some(name) = self.bot_template(gid) {
            return self.record_template_setting(&name, path, value);
        }
        self.update_bot(gid, |r| match path {
            "connect.name" => r.nickname = Some(value.to_string()),
            "connect.channel" => r.channel = Some(value.to_string()),
            "connect.address" => r.address = Some(value.to_string()),
            _ => {}
        })
    }

    /// Changes a bot's record (nickname, channel, identity, template after `bot save`).
    pub fn update_bot(&self, gid: u32, f: impl FnOnce(&mut BotRecord)) {
        let op = {
            let mut t = self.tables.write();
            let Some(b) = t.bots.get_mut(&gid) else {
                return;
            };
            let old = b.record.clone();
            f(&mut b.record);
            self.bot_write(&old, &b.record)
        };
        self.submit(vec![op]);
    }

    /// Reserves a template name for a create in flight (`settings create`, `settings copy`,
    /// `bot save`), so two concurrent creates of one name can never both reach a node. None
    /// when the name exists or is being created.
    pub fn claim_pending(self: &Arc<Self>, name: &str) -> Option<PendingTemplate> {
        let mut t = self.tables.write();
        if t.templates.contains_key(name) || !t.pending.insert(name.to_string()) {
            return None;
        }
        Some(PendingTemplate {
            cluster: self.clone(),
            name: name.to_string(),
        })
    }

    /// Records that `node` now holds template `name` (made by key `owner`), and waits until
    /// that is durable.
    pub async fn claim_template_durably(
        &self,
        name: &str,
        node: NodeId,
        owner: Option<&str>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        {
            let mut t = self.tables.write();
            let gen = self.bump();
            if t.templates.get(name).is_some_and(|tp| tp.node != node) {
                // An explicit create or save on `node` wins over a stale record.
                t.remove_template(name);
            }
            self.claim_template(&mut t, name, node, &mut ops);
            if let Some(tp) = t.templates.get_mut(name) {
                tp.since = gen;
                set_owner(tp, owner, &mut ops);
            }
        }
        self.store.commit(ops, timeout).await
    }

    /// Records that `node` now holds template `name` (made by key `owner`) without waiting
    /// (used from synchronous response hooks).
    pub fn claim_template_now(&self, name: &str, node: NodeId, owner: Option<&str>) {
        let mut ops = Vec::new();
        {
            let mut t = self.tables.write();
            let gen = self.bump();
            self.claim_template(&mut t, name, node, &mut ops);
            if let Some(tp) = t.templates.get_mut(name) {
                tp.since = gen;
                set_owner(tp, owner, &mut ops);
            }
        }
        self.submit(ops);
    }

    /// Forgets a template (`settings delete` answered 204).
    pub fn drop_template(&self, name: &str) {
        let removed = self.tables.write().remove_template(name).is_some();
        if removed {
            self.bump();
            self.store
                .submit(vec![Op::DeleteTemplate(name.to_string())]);
        }
    }

    /// Remembers a setting written to a template through the router.
    pub fn record_template_setting(&self, name: &str, path: &str, value: &str) {
        let op = {
            let mut t = self.tables.write();
            let Some(tp) = t.templates.get_mut(name) else {
                return;
            };
            tp.record
                .settings
                .insert(path.to_string(), value.to_string());
            Op::PutTemplate(tp.record.clone())
        };
        self.submit(vec![op]);
    }

    /// Stores the identity read from bot `gid` at `node`/`lid` (and its template's), unless
    /// the bot is no longer in that slot (moved, stopped, slot reused) by the time the read
    /// came back: then the identity is some other bot's.
    pub fn record_identity(&self, gid: u32, node: NodeId, lid: u32, identity: Identity) {
        let mut ops = Vec::new();
        {
            let mut t = self.tables.write();
            let Some(b) = t
                .bots
                .get_mut(&gid)
                .filter(|b| b.node == node && b.record.local_id == lid)
            else {
                return;
            };
            let old = b.record.clone();
            b.record.identity = Some(identity.clone());
            ops.push(self.bot_write(&old, &b.record));
            if let Some(name) = b.record.template.clone() {
                if let Some(tp) = t.templates.get_mut(&name) {
                    tp.record.identity = Some(identity);
                    ops.push(Op::PutTemplate(tp.record.clone()));
                }
            }
        }
        self.submit(ops);
    }
}

/// Gives a just-claimed template its creator as owner (a template already owned keeps its
/// owner: a key cannot take over another's template by saving over its name).
fn set_owner(tp: &mut crate::cluster::tables::Template, owner: Option<&str>, ops: &mut Vec<Op>) {
    if let (None, Some(o)) = (&tp.record.owner, owner) {
        tp.record.owner = Some(o.to_string());
        ops.push(Op::PutTemplate(tp.record.clone()));
    }
}
