//! A node's bot counts: running and reserved, in one atomic word.
//!
//! Owns: [`NodeLoad`], which keeps a node's running and reserved counts so that a slot passes
//! from "reserved" to "running" in one step: whichever sees the new bot first (the create's
//! answer, the poller, a fan-out) moves it, and the reservation that ends later finds it
//! already moved. Nobody ever sees a slot counted twice or not at all.
//! Does not own: choosing a node (`placement`) or knowing which bots run (`view`).

use std::sync::atomic::{AtomicU64, Ordering};

/// A node's bot counts, packed in one word so every change is a single atomic step.
///
/// Three 21-bit fields: `running` (bots the router knows on the node), `reserved` (creates in
/// flight whose bot is not counted yet) and `moved` (creates in flight whose bot is already
/// counted in `running`: when a count rises while creates are in flight, the new bots are
/// taken to be theirs and their slots move from `reserved` to `moved` in the same step).
/// A create that ends takes its slot from `moved` if there is one, else from `reserved`.
/// The used load is `running + reserved`.
///
/// The top bit closes the node to reservations (it is being removed): closing succeeds only
/// while no create is in flight, in the same atomic step, so a removal and a create can never
/// both win.
///
/// With creates only through the router this is exact. A bot started behind the router's
/// back while a create is in flight is counted as that create's bot until the create ends:
/// the node looks one bot emptier for that moment (what the next poll corrects anyway).
#[derive(Debug, Default)]
pub struct NodeLoad(AtomicU64);

const FIELD: u32 = 21;
const MASK: u64 = (1 << FIELD) - 1;
const CLOSED: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    running: u64,
    reserved: u64,
    moved: u64,
    closed: bool,
}

impl Counts {
    fn unpack(w: u64) -> Counts {
        Counts {
            running: w & MASK,
            reserved: (w >> FIELD) & MASK,
            moved: (w >> (2 * FIELD)) & MASK,
            closed: w & CLOSED != 0,
        }
    }

    fn pack(self) -> u64 {
        self.running.min(MASK)
            | (self.reserved.min(MASK) << FIELD)
            | (self.moved.min(MASK) << (2 * FIELD))
            | if self.closed { CLOSED } else { 0 }
    }
}

impl NodeLoad {
    fn update(&self, f: impl Fn(Counts) -> Option<Counts>) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                f(Counts::unpack(w)).map(Counts::pack)
            })
            .is_ok()
    }

    fn counts(&self) -> Counts {
        Counts::unpack(self.0.load(Ordering::Acquire))
    }

    /// Bots the router knows to run on the node.
    pub fn running(&self) -> u32 {
        self.counts().running as u32
    }

    /// Creates in flight whose bot is not counted yet.
    pub fn reserved(&self) -> u32 {
        self.counts().reserved as u32
    }

    /// Running plus reserved: what placement compares with the capacity.
    pub fn used(&self) -> u32 {
        let c = self.counts();
        (c.running + c.reserved) as u32
    }

    /// Sets the running count (from the cluster tables). A rise while creates are in flight
    /// moves their slots from reserved to running in the same step.
    pub fn set_running(&self, running: u32) {
        let running = u64::from(running);
        self.update(|c| {
            let rise = running.saturating_sub(c.running).min(c.reserved);
            Some(Counts {
                running,
                reserved: c.reserved - rise,
                moved: c.moved + rise,
                ..c
            })
        });
    }

    /// Closes the node to new reservations if no create is in flight; false (and nothing
    /// changes) otherwise.
    pub fn close(&self) -> bool {
        self.update(|c| (c.reserved == 0 && c.moved == 0).then_some(Counts { closed: true, ..c }))
    }

    /// Opens a closed node again (a removal that was refused after all).
    pub fn reopen(&self) {
        self.update(|c| Some(Counts { closed: false, ..c }));
    }

    /// Takes a slot if the node has room under `capacity` and is not closed.
    pub(crate) fn try_reserve(&self, capacity: u32) -> bool {
        self.update(|c| {
            let room = !c.closed && c.running + c.reserved < u64::from(capacity);
            room.then_some(Counts {
                reserved: c.reserved + 1,
                ..c
            })
        })
    }

    /// Ends a create: its slot is either already counted as running (`moved`) or still
    /// reserved.
    pub(crate) fn release(&self) {
        self.update(|c| {
            Some(if c.moved > 0 {
                Counts {
                    moved: c.moved - 1,
                    ..c
                }
            } else {
                Counts {
                    reserved: c.reserved.saturating_sub(1),
                    ..c
                }
            })
        });
    }

    /// For tests and benchmarks: sets the counts directly.
    #[doc(hidden)]
    pub fn force(&self, running: u32, reserved: u32) {
        self.0.store(
            Counts {
                running: running.into(),
                reserved: reserved.into(),
                moved: 0,
                closed: false,
            }
            .pack(),
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_moves_a_slot_from_reserved_to_running_once() {
        let l = NodeLoad::default();
        l.set_running(3);
        assert!(l.try_reserve(5));
        assert!(l.try_reserve(5));
        assert!(!l.try_reserve(5), "5 of 5 used");
        // One create's bot is counted (by whoever saw it first): still 5 used, not 6.
        l.set_running(4);
        assert_eq!((l.running(), l.reserved(), l.used()), (4, 1, 5));
        // The same create ends: nothing changes.
        l.release();
        assert_eq!(l.used(), 5);
        // The other create fails: its slot is free again.
        l.release();
        assert_eq!((l.running(), l.reserved(), l.used()), (4, 0, 4));
        // Bots going away never touch reservations.
        assert!(l.try_reserve(5));
        l.set_running(1);
        assert_eq!((l.running(), l.reserved()), (1, 1));
        l.release();
        assert_eq!(l.used(), 1);
        // Releasing more than was reserved never wraps.
        l.release();
        assert_eq!(l.used(), 1);
    }

    #[test]
    fn a_closed_node_takes_no_reservation_and_closing_waits_for_creates() {
        let l = NodeLoad::default();
        l.set_running(2);
        assert!(l.try_reserve(10));
        assert!(!l.close(), "a create is in flight");
        l.release();
        assert!(l.close());
        assert!(!l.try_reserve(10), "closed");
        assert_eq!(l.running(), 2, "closing keeps the counts");
        l.set_running(1);
        assert_eq!(l.running(), 1);
        assert!(!l.try_reserve(10), "still closed after a recount");
        l.reopen();
        assert!(l.try_reserve(10));
    }
}
