//! The planned move of one live bot, step by step, for an operation of [`Operations`].
//!
//! Owns: the per-bot move steps (claiming the bot, reserving a slot on the target, preparing
//! its template there, handing it over, stopping the old copy, starting and recording the
//! new one, cleaning up the old node) and finishing a move an interrupted run left half-done.
//! Does not own: the operations, their records and their scheduling (the parent module),
//! reading and restoring playback (`playback`), the rebuild itself
//! (`cluster::failover::Rebuilder`), or the view's records of a move (`Cluster::hand_over`,
//! `Cluster::restore_bot`, fences).
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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::failover::{settings_for, template_name};
use crate::cluster::fencing::names_copy;
use crate::cluster::placement::{Placer, Reservation};
use crate::cluster::{BotSnapshot, HandOver, Move, MoveClaim, Node, NodeId};
use crate::node::api::{delete_template_target, disconnect_target, read_bot_list};
use crate::store::WRITE_DEADLINE;

use super::{Kind, Operations, Playback, State};

/// How long a move waits for another mover (failover, a restore) to let go of its bot.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

impl Operations {
    /// Moves one bot of operation `id` (see the module documentation), or finishes a move an
    /// interrupted run of it left half-done.
    ///
    /// Long on purpose: the steps of one move, in the order that makes a crash at any of them
    /// safe (each step is a call; read top to bottom it is the protocol).
    pub(super) async fn move_one(
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
                // A slot if there is one; the copy runs there already either way.
                None => self.placer.try_reserve_on(to.clone()),
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
        let fences = self.cluster.fences_of(from.id, gid);
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
            let hit = fences
                .iter()
                .any(|f| names_copy(f, b.id, b.name.as_deref(), b.server.as_deref()));
            if hit {
                self.stop_old(from, lid).await?;
            }
        }
        Ok(())
    }

    /// Deletes the moved template on the old node and clears the bot's fence there (its copy
    /// is stopped).
    async fn clear_old(&self, from: &Node, gid: u32) -> Result<(), String> {
        let fences = self.cluster.fences_of(from.id, gid);
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
}

/// Reserves a slot on a chosen target: it must take new bots and have room.
pub(super) fn reserve_target(placer: &Placer, to: &Arc<Node>) -> Result<Reservation, String> {
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
