//! Creates: a new bot (`bot connect to`, `bot connect template`) or template (`settings create`).
//!
//! Owns: reserving a slot, sending the create (to another node if the first could not be
//! reached), recording the new bot or template durably before the client hears of it, taking
//! it back when that fails, and reading a new bot's identity. Does not own: choosing the node
//! (`cluster::placement`) or the id tables (`cluster`).

use std::sync::Arc;

use crate::cluster::placement::Reservation;
use crate::cluster::{CreateInfo, Node, Reported};
use crate::node::api::{
    delete_template_target, disconnect_target, fetch_identity, single_bot_info,
};
use crate::node::client::NodeResponse;
use crate::protocol::api_json::{ApiError, BotInfo, Reason};
use crate::protocol::json_edit;
use crate::proxy::exec::{withheld, Answer, Exec};
use crate::proxy::keys::Caller;
use crate::proxy::routing::{CreateKind, CreateNode, CreatePlan};
use crate::store::{now_ms, WRITE_DEADLINE};

impl Exec {
    /// Runs a create for `caller` (the owner of what it makes): reserve a slot, send, record
    /// the new bot or template durably, answer.
    pub async fn create(&self, plan: &CreatePlan, caller: &Caller) -> Answer {
        // A bot made while the store is down could not be recorded (and would have to be
        // stopped again): refuse before anything reaches a node.
        if !self.cluster.store_available() {
            return Answer::error(&ApiError::unavailable(
                "The router's storage is unavailable, so no new bot or template can be recorded. Try again later.",
            ));
        }
        // A key with a bot limit: one more of its bots is counted from here until the bot
        // is recorded (a template takes no bot).
        let _quota = match (caller.key_name(), caller.max_bots(), &plan.kind) {
            (_, _, CreateKind::SettingsCreate(_)) | (None, _, _) | (_, None, _) => None,
            (Some(key), Some(max), _) => match self.quota.seat(&self.cluster, key, max) {
                Ok(seat) => Some(seat),
                Err(e) => return Answer::error(&e),
            },
        };
        let owner = caller.key_name().map(|k| k.to_string());
        // Two concurrent creates of one template name must not both reach a node.
        let _claim = match &plan.kind {
            CreateKind::SettingsCreate(name) => match self.cluster.claim_pending(name) {
                Some(c) => Some(c),
                None => return Answer::error(&ApiError::file_exists()),
            },
            _ => None,
        };
        // Never the node of another tenant's template of the same name.
        let mut tried = plan.avoid.clone();
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
            if let CreateKind::SettingsCreate(name) = &plan.kind {
                // Several routers: the name is claimed in the database before any node
                // hears of it.
                match self
                    .cluster
                    .claim_template_name(name, node.id, WRITE_DEADLINE)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Answer::error(&ApiError::file_exists()),
                    Err(e) => {
                        return Answer::error(&ApiError::unavailable(format!(
                            "The router's storage is unavailable ({e}); the template was not created. Try again later."
                        )))
                    }
                }
            }
            // Several routers: a seat in the database, so that creates through other routers
            // cannot fill the node meanwhile (templates take no bot place).
            let _seat = if matches!(plan.kind, CreateKind::SettingsCreate(_)) {
                None
            } else {
                match self.cluster.reserve_seat(&node, WRITE_DEADLINE).await {
                    Ok(Some(seat)) => Some(seat),
                    Ok(None) if plan.node == CreateNode::Place => {
                        log::info!(
                            "node {} is full with the creates of other routers; placing elsewhere",
                            node.name
                        );
                        tried.push(node.id);
                        drop(reservation);
                        continue;
                    }
                    Ok(None) => {
                        return Answer::error(&ApiError::unavailable(format!(
                            "node {} has no room for the template's bot",
                            node.name
                        )))
                    }
                    Err(e) => {
                        return Answer::error(&ApiError::unavailable(format!(
                            "The router's storage is unavailable ({e}); no bot was created. Try again later."
                        )))
                    }
                }
            };
            let sent = (self.cluster.generation(), now_ms());
            match self
                .client
                .get(&node.endpoint(), &plan.target, self.cfg.request_timeout)
                .await
            {
                Ok(resp) => {
                    return self
                        .created(&node, plan, resp, reservation, sent, owner.as_deref())
                        .await
                }
                Err(e) if e.not_sent() && plan.node == CreateNode::Place => {
                    log::warn!("{e}; placing the create on another node");
                    tried.push(node.id);
                    drop(reservation);
                    if let CreateKind::SettingsCreate(name) = &plan.kind {
                        self.cluster.release_template_name(name);
                    }
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
        (sent, sent_ms): (u64, u64),
        owner: Option<&str>,
    ) -> Answer {
        match &plan.kind {
            CreateKind::SettingsCreate(name) => {
                if resp.status != 204 {
                    self.cluster.release_template_name(name);
                }
                if resp.status == 204 {
                    if let Err(e) = self
                        .cluster
                        .claim_template_durably(name, node.id, owner, WRITE_DEADLINE)
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
                let info = CreateInfo {
                    sent_ms: Some(sent_ms),
                    owner: owner.map(str::to_string),
                    ..info
                };
                let mut body = None;
                if resp.status == 200 {
                    // TS3AudioBot answers a create with the new bot's BotInfo, always: anything
                    // else is not passed on as if a bot had been made. Checked before anything
                    // is recorded.
                    if let Some(why) = json_edit::malformed_bot_infos(&resp.body) {
                        return self.garbage_create(node, &why);
                    }
                    let Some(BotInfo {
                        id: Some(lid),
                        name,
                        server,
                        status,
                    }) = single_bot_info(&resp.body)
                    else {
                        return self.garbage_create(node, "it holds no BotInfo of a running bot");
                    };
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
                    // After the bot is registered, so its local id translates to the id just
                    // recorded. The body parsed above, so this cannot refuse it.
                    body =
                        match Self::edit(&self.cluster, node.id, &resp.body, &plan.edits, u64::MAX)
                        {
                            Ok(edited) => edited,
                            Err(why) => return self.garbage_create(node, &why),
                        };
                }
                drop(reservation);
                Answer::from_node(resp, body)
            }
        }
    }

    /// The answer to a create the node answered with garbage: a 502, and the node's list read
    /// now (it may have made the bot anyway; the poll then adopts it like any bot met first).
    fn garbage_create(&self, node: &Arc<Node>, why: &str) -> Answer {
        log::warn!("node {} answered a create with garbage: {why}", node.name);
        self.poke(node.clone());
        Answer::error(&withheld("a create on ", &node.name, why))
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
}
