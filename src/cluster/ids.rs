//! Cluster ids: handed out from a counter whose high-water mark is durable first.
//!
//! Owns: allocating cluster ids (from 0, never reused, Int32 at most), keeping the stored
//! high-water mark above every id handed out (in blocks, in the same batch as the first
//! record that uses one), the durable headroom for paths that cannot wait, and refusing once
//! the id space is used up. Does not own: which bot gets which id (`view`).
//!
//! A store several routers share (MongoDB) cannot use a high-water mark: two routers would
//! raise it past the same ids. There each router reserves whole blocks from the database's
//! atomic counter (`Store::reserve_ids`) before it hands out an id from them, and keeps the
//! next block reserved ahead, so no two routers ever hold the same id and a poll or an
//! answer never waits for the database.

use std::time::Duration;

use crate::cluster::view::Cluster;
use crate::store::{Op, StoreError};

/// How many ids one high-water-mark write reserves.
pub(super) const ID_BLOCK: u32 = 1024;
/// Largest cluster id: clients parse ids as Int32.
pub(super) const MAX_ID: u32 = i32::MAX as u32;

#[derive(Debug)]
pub(super) struct Ids {
    pub(super) next: u32,
    /// The highest high-water mark written (or being written).
    pub(super) limit: u32,
    /// The highest mark known to be durable: ids below it can never be handed out again,
    /// whatever happens to the records that use them.
    pub(super) durable: u32,
    /// Shared store: the ids handed out come from reserved blocks only; `[next, limit)` is
    /// the current block and `spare` the one reserved ahead.
    pub(super) shared: bool,
    pub(super) spare: Option<(u32, u32)>,
}

impl Ids {
    /// Ids that can go out without waiting for the store (shared stores).
    fn reserved_ahead(&self) -> u32 {
        self.limit.saturating_sub(self.next) + self.spare.map_or(0, |(a, b)| b.saturating_sub(a))
    }
}

impl Cluster {
    /// The next cluster id, or None when the id space is used up: ids are never reused, so
    /// the router then refuses new bots rather than hand out an id twice.
    pub(super) fn alloc_id(&self, ops: &mut Vec<Op>) -> Option<u32> {
        let mut ids = self.ids.lock();
        if ids.next >= MAX_ID {
            log::error!(
                "the cluster id space is used up: every id below {MAX_ID} was handed out once; new bots are refused"
            );
            return None;
        }
        if ids.shared && ids.next >= ids.limit {
            match ids.spare.take() {
                Some((first, end)) => {
                    ids.next = first;
                    ids.limit = end;
                }
                None => {
                    log::error!(
                        "no cluster ids are reserved (the store did not answer in time); the bot is learned later"
                    );
                    return None;
                }
            }
        }
        if ids.next >= ids.limit {
            // Persist the new high-water mark in the same batch as (and before) the record
            // that uses the id: a stored bot therefore always implies a stored mark above it,
            // so no id is handed out twice, even across crashes.
            ids.limit = ids.next.saturating_add(ID_BLOCK).min(MAX_ID);
            ops.push(Op::RaiseIdHighWater(ids.limit));
        }
        let id = ids.next;
        ids.next += 1;
        Some(id)
    }

    /// Whether every cluster id was handed out.
    pub fn ids_exhausted(&self) -> bool {
        self.ids.lock().next >= MAX_ID
    }

    /// Makes sure the next ids can be handed out without waiting for the store: the
    /// high-water mark is kept durably at least half a block above the next id. Paths that
    /// may meet new bots without being able to wait (a proxied answer's body edits) call this
    /// first, from an async hook; it costs nothing while there is headroom.
    pub async fn ensure_id_headroom(&self, timeout: Duration) -> Result<(), StoreError> {
        if self.ids.lock().shared {
            return self.reserve_id_block(timeout).await;
        }
        let target = {
            let ids = self.ids.lock();
            if ids.durable.saturating_sub(ids.next) >= ID_BLOCK / 2 || ids.durable >= MAX_ID {
                return Ok(());
            }
            ids.next.saturating_add(ID_BLOCK).min(MAX_ID)
        };
        self.store
            .commit(vec![Op::RaiseIdHighWater(target)], timeout)
            .await?;
        // Only now may ids below `target` go out without a mark of their own.
        let mut ids = self.ids.lock();
        ids.durable = ids.durable.max(target);
        ids.limit = ids.limit.max(target);
        Ok(())
    }

    /// Shared store: keeps at least half a block of ids reserved in the database ahead of
    /// the next one. Two callers at once may both reserve; the extra block is kept as spare
    /// or dropped (ids are plentiful, they are only never handed out twice).
    async fn reserve_id_block(&self, timeout: Duration) -> Result<(), StoreError> {
        {
            let ids = self.ids.lock();
            if ids.reserved_ahead() >= ID_BLOCK / 2 || ids.next >= MAX_ID {
                return Ok(());
            }
        }
        let first = self.store.reserve_ids(ID_BLOCK, timeout).await?;
        let end = first.saturating_add(ID_BLOCK).min(MAX_ID);
        let mut ids = self.ids.lock();
        if first >= MAX_ID {
            // The counter passed the id space: nothing left to hand out.
            ids.next = MAX_ID;
            ids.limit = MAX_ID;
            return Ok(());
        }
        if ids.next >= ids.limit {
            ids.next = first;
            ids.limit = end;
        } else if ids.spare.is_none() {
            ids.spare = Some((first, end));
        }
        ids.durable = ids.durable.max(end);
        Ok(())
    }
}
