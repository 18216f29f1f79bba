//! The polled change feed: what other routers wrote since the last poll.
//!
//! Owns: the feed's memory ([`Feed`]: the revision floor, the revision last seen of each
//! document above it, the counter readings with their times), the poll itself and turning a
//! synced document into a [`Change`]. Does not own: how writes are stamped (`mongo`'s
//! `apply` takes a revision per batch and stamps every document it writes).
//!
//! A document is returned when its revision differs from the one last seen for it (not only
//! when it is higher: a writer that took an older revision may write after a newer one, and
//! its write is then the current state) and another router wrote it. The floor, below which
//! nothing is read again, only passes counter values read more than [`GAP`] ago: every
//! revision handed out by then is written (a slower writer stamps its documents again).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bson::{doc, Document};

use super::docs::{decode, id_text, int, is_tombstone};
use super::{Coll, MongoStore, GAP};
use crate::store::{Change, FenceRecord, OperationRecord, StoreError};

/// What the change feed remembers between two polls.
#[derive(Default)]
pub(super) struct Feed {
    /// Every revision at or below it is written and was read: a poll reads above it.
    floor: i64,
    /// The revision last seen of each document above the floor, so none is returned twice.
    seen: HashMap<(Coll, String), i64>,
    /// (counter value, when it was read): revisions up to the value were handed out by then.
    checkpoints: VecDeque<(i64, Instant)>,
    /// A load started it (a later load must not start it again).
    started: bool,
}

impl Feed {
    /// The feed right after a load: everything loaded is seen; the counter, read before the
    /// load, is the first checkpoint.
    pub(super) fn loaded(counter: i64, at: Instant, seen: HashMap<(Coll, String), i64>) -> Feed {
        Feed {
            floor: 0,
            seen,
            checkpoints: VecDeque::from([(counter, at)]),
            started: true,
        }
    }

    /// Whether a load (or a poll) started it.
    pub(super) fn started(&self) -> bool {
        self.started
    }

    /// Notes a counter reading; returns the floor to read above.
    fn start_poll(&mut self, counter: i64, at: Instant) -> i64 {
        if self.checkpoints.back().is_none_or(|(c, _)| *c < counter) {
            self.checkpoints.push_back((counter, at));
        }
        self.floor
    }

    /// Whether a document read at revision `rev` is news (and remembers it either way).
    fn is_new(&mut self, coll: Coll, id: String, rev: i64) -> bool {
        self.seen.insert((coll, id), rev) != Some(rev)
    }

    /// Raises the floor past every counter value read at least [`GAP`] before `now`.
    fn finish_poll(&mut self, now: Instant) {
        let Some(cutoff) = now.checked_sub(GAP) else {
            return;
        };
        let mut floor = self.floor;
        while let Some(&(c, at)) = self.checkpoints.front() {
            if at > cutoff {
                break;
            }
            floor = floor.max(c);
            self.checkpoints.pop_front();
        }
        if floor > self.floor {
            self.floor = floor;
            self.seen.retain(|_, r| *r > floor);
        }
    }
}

impl MongoStore {
    /// [`crate::store::Store::changes`] on MongoDB.
    pub(super) async fn poll_changes(&self) -> Result<Vec<Change>, StoreError> {
        // The counter first: every revision up to it is handed out now.
        let counter = self.current_rev().await?;
        let now = Instant::now();
        let floor = self.feed.lock().start_poll(counter, now);
        let mut docs = Vec::new();
        for coll in Coll::ALL {
            for d in self
                .find_all(coll.name(), doc! {"rev": {"$gt": floor}})
                .await?
            {
                docs.push((coll, d));
            }
        }
        let mut feed = self.feed.lock();
        let mut out = Vec::new();
        for (coll, d) in docs {
            let rev = int(&d, "rev").unwrap_or(0);
            if !feed.is_new(coll, id_text(&d), rev) {
                continue;
            }
            if d.get_str("by").ok() == Some(self.router_id.as_str()) {
                continue;
            }
            match to_change(coll, d) {
                Ok(c) => out.push(c),
                // One bad document must not stop the feed for good.
                Err(e) => log::error!("skipped a change another router wrote: {e}"),
            }
        }
        feed.finish_poll(now);
        Ok(out)
    }
}

/// The change a synced document (or tombstone) stands for.
pub(super) fn to_change(coll: Coll, d: Document) -> Result<Change, StoreError> {
    let key = id_text(&d);
    let what = format!("{} {key}", coll.name());
    let gone = is_tombstone(&d);
    let corrupt = |reason: String| StoreError::Corrupt {
        what: what.clone(),
        reason,
    };
    let number = |k: &str| -> Result<i64, StoreError> {
        k.parse::<i64>()
            .map_err(|e| corrupt(format!("bad _id: {e}")))
    };
    Ok(match coll {
        Coll::Bots => {
            let id = u32::try_from(number(&key)?).map_err(|e| corrupt(e.to_string()))?;
            Change::Bot(id, if gone { None } else { Some(decode(&what, d)?) })
        }
        Coll::Templates => Change::Template(key, if gone { None } else { Some(decode(&what, d)?) }),
        Coll::Nodes => Change::Node(key, if gone { None } else { Some(decode(&what, d)?) }),
        Coll::Keys => Change::Key(key, if gone { None } else { Some(decode(&what, d)?) }),
        Coll::Fences => {
            let (bot, node) = key
                .split_once(':')
                .ok_or_else(|| corrupt("bad _id".into()))?;
            let bot = u32::try_from(number(bot)?).map_err(|e| corrupt(e.to_string()))?;
            let rec: Option<FenceRecord> = if gone { None } else { Some(decode(&what, d)?) };
            Change::Fence(node.to_string(), bot, rec)
        }
        Coll::Operations => {
            let id = u64::try_from(number(&key)?).map_err(|e| corrupt(e.to_string()))?;
            let rec: Option<OperationRecord> = if gone { None } else { Some(decode(&what, d)?) };
            Change::Operation(id, rec)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::docs::fence_id;
    use super::*;

    #[test]
    fn fence_ids_round_trip_through_changes() {
        let d =
            doc! {"_id": fence_id("node:with:colons", 42), "deleted": true, "rev": 3i64, "by": "r"};
        assert_eq!(
            to_change(Coll::Fences, d).expect("change"),
            Change::Fence("node:with:colons".into(), 42, None)
        );
    }

    /// A revision handed out before the floor could pass it is still read after a newer
    /// one, until GAP has passed since the counter showed it; each (document, revision) once.
    #[test]
    fn the_floor_waits_for_revisions_in_flight() {
        let t0 = Instant::now();
        let mut feed = Feed::loaded(4, t0, HashMap::new());
        // Revision 5 is handed out (slow writer), 6 written (fast writer).
        assert_eq!(feed.start_poll(6, t0 + Duration::from_secs(1)), 0);
        assert!(feed.is_new(Coll::Nodes, "fast".into(), 6));
        feed.finish_poll(t0 + Duration::from_secs(1));
        assert!(!feed.is_new(Coll::Nodes, "fast".into(), 6), "once");
        // Ten seconds on: the floor has not moved, so revision 5 is still read.
        assert_eq!(feed.start_poll(6, t0 + Duration::from_secs(10)), 0);
        assert!(feed.is_new(Coll::Nodes, "slow".into(), 5));
        feed.finish_poll(t0 + Duration::from_secs(10));
        // GAP after the first reading the floor passes it (4), then the second (6).
        feed.finish_poll(t0 + GAP);
        assert_eq!(feed.start_poll(6, t0 + GAP), 4);
        feed.finish_poll(t0 + GAP + Duration::from_secs(1));
        assert_eq!(feed.start_poll(6, t0 + GAP + Duration::from_secs(1)), 6);
        assert!(
            feed.seen.is_empty(),
            "nothing at or below the floor is remembered"
        );
        // A write at an older revision than the one last seen is news too.
        let mut feed = Feed::default();
        assert!(feed.is_new(Coll::Bots, "1".into(), 9));
        assert!(feed.is_new(Coll::Bots, "1".into(), 8));
    }
}
