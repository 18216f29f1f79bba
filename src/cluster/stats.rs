//! What the cluster counts: placements and refusals, bots rebuilt by failover and moved on
//! purpose, node polls, and answers that failed on their way from a node.
//!
//! Owns: the counters ([`ClusterStats`] for the cluster as a whole, [`PlacementStats`] on the
//! placer, [`NodeStats`] on each node, so a removed node's counters go with it), plain atomics
//! that cost one relaxed add.
//! Does not own: turning them into Prometheus families (`metrics`), or deciding what counts
//! (the placer, failover, the poller, the admin operations and the proxy call `record_*`).

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Started, completed, failed and called off: one bot's rebuild or move. Started minus the
/// other three is what is in flight.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Work begun (the bot was claimed for it).
    pub started: Counter,
    /// Work done: the bot runs on its new node and the change is recorded.
    pub completed: Counter,
    /// Work given up this time (no room, a node failing, the bot changed meanwhile); it may
    /// be tried again later.
    pub failed: Counter,
    /// Work called off because the bot's old node answered again (it stays there).
    pub called_off: Counter,
}

/// Why placement refused a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No healthy, non-draining node had room (the cluster is full or down).
    NoNode,
    /// The one node the bot must run on (where its template lives) was full or down.
    Full,
}

/// Counters of the cluster as a whole.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Bots rebuilt after their node died or restarted (`failover`).
    pub failovers: Outcomes,
    /// Bots moved on purpose (admin moves, evacuations, rebalances).
    pub moves: Outcomes,
}

/// The placer's refusals (its placements are counted on each node).
#[derive(Debug, Default)]
pub struct PlacementStats {
    /// Placements refused because no node could take the bot.
    pub refused_no_node: Counter,
    /// Placements refused because the bot's own node was full or down.
    pub refused_full: Counter,
}

impl PlacementStats {
    /// Counts a refused placement.
    pub fn record_refusal(&self, why: Refusal) {
        match why {
            Refusal::NoNode => self.refused_no_node.inc(),
            Refusal::Full => self.refused_full.inc(),
        }
    }
}

/// How a request to a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection could be made.
    Connect,
    /// The node did not answer (or finish answering) in time.
    Timeout,
    /// The node broke off or answered something that is not HTTP.
    Failed,
}

/// Counters of one node.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Bots placed on the node (slots reserved for a create, a failover or a move).
    pub placements: Counter,
    /// Polls (`bot/list`) that succeeded.
    pub checks_ok: Counter,
    /// Polls that failed.
    pub checks_failed: Counter,
    /// Proxied requests that could not connect.
    pub upstream_connect: Counter,
    /// Proxied requests that timed out.
    pub upstream_timeout: Counter,
    /// Proxied requests that failed otherwise.
    pub upstream_failed: Counter,
}

impl NodeStats {
    /// Counts one poll.
    pub fn record_check(&self, ok: bool) {
        if ok {
            self.checks_ok.inc()
        } else {
            self.checks_failed.inc()
        }
    }

    /// Counts one failed proxied request.
    pub fn record_upstream_error(&self, e: UpstreamError) {
        match e {
            UpstreamError::Connect => self.upstream_connect.inc(),
            UpstreamError::Timeout => self.upstream_timeout.inc(),
            UpstreamError::Failed => self.upstream_failed.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_lands_in_its_own_counter() {
        let c = PlacementStats::default();
        c.record_refusal(Refusal::Full);
        c.record_refusal(Refusal::Full);
        c.record_refusal(Refusal::NoNode);
        assert_eq!((c.refused_full.get(), c.refused_no_node.get()), (2, 1));
        let n = NodeStats::default();
        n.record_check(true);
        n.record_check(false);
        n.record_check(false);
        n.record_upstream_error(UpstreamError::Timeout);
        assert_eq!((n.checks_ok.get(), n.checks_failed.get()), (1, 2));
        assert_eq!(
            (
                n.upstream_connect.get(),
                n.upstream_timeout.get(),
                n.upstream_failed.get()
            ),
            (0, 1, 0)
        );
    }
}
