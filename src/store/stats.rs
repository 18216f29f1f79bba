//! What the store worker counts: calls by operation and outcome, their latency, and how many
//! requests wait in its queue.
//!
//! Owns: the instruments themselves ([`StoreStats`]) and the operation names they are
//! labelled with (a fixed set, so the labels stay bounded). Does not own: registering or
//! serving them (`metrics`), or the worker that records them (`StoreHandle`'s worker in the
//! parent module).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

/// Every operation the worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// A batch of writes.
    Write,
    /// Reading everything.
    Load,
    /// Reserving a block of cluster ids.
    ReserveIds,
    /// Taking or renewing a lease.
    AcquireLease,
    /// Giving a lease up.
    ReleaseLease,
    /// Claiming a bot's instance.
    ClaimBot,
    /// Claiming a template name.
    ClaimTemplate,
    /// Reading other routers' changes.
    Changes,
    /// Holding a seat for a create.
    ReserveSeat,
    /// Giving a seat up.
    ReleaseSeat,
}

/// The operations in label order.
const OPS: [StoreOp; 10] = [
    StoreOp::Write,
    StoreOp::Load,
    StoreOp::ReserveIds,
    StoreOp::AcquireLease,
    StoreOp::ReleaseLease,
    StoreOp::ClaimBot,
    StoreOp::ClaimTemplate,
    StoreOp::Changes,
    StoreOp::ReserveSeat,
    StoreOp::ReleaseSeat,
];

impl StoreOp {
    /// The `op` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Write => "write",
            StoreOp::Load => "load",
            StoreOp::ReserveIds => "reserve_ids",
            StoreOp::AcquireLease => "acquire_lease",
            StoreOp::ReleaseLease => "release_lease",
            StoreOp::ClaimBot => "claim_bot",
            StoreOp::ClaimTemplate => "claim_template",
            StoreOp::Changes => "changes",
            StoreOp::ReserveSeat => "reserve_seat",
            StoreOp::ReleaseSeat => "release_seat",
        }
    }
}

/// Latency buckets of one store call, in seconds: an embedded commit takes about a
/// millisecond, a MongoDB majority write tens to hundreds; the top buckets show the 5 s call
/// bound being hit.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The store worker's instruments.
pub struct StoreStats {
    /// `ts3ab_lb_store_operations_total{op,result}`.
    pub calls: IntCounterVec,
    /// `ts3ab_lb_store_operation_duration_seconds{op}`.
    pub duration: HistogramVec,
    /// `ts3ab_lb_store_queue_depth`: requests sent to the worker and not yet taken up.
    pub queued: IntGauge,
    /// Per operation (in [`OPS`] order): its ok and error counters and its histogram,
    /// resolved once so that recording never looks a label set up.
    each: Vec<(IntCounter, IntCounter, Histogram)>,
}

impl StoreStats {
    /// The instruments, every label set present at zero (a dashboard shows "0", not "no
    /// data", for an operation that never failed). Fails only on a bad metric definition.
    pub fn new() -> prometheus::Result<StoreStats> {
        let calls = IntCounterVec::new(
            Opts::new(
                "ts3ab_lb_store_operations_total",
                "Store calls made by the router's store worker, by operation and result.",
            ),
            &["op", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ts3ab_lb_store_operation_duration_seconds",
                "How long one store call took, retries of a failed write counted separately.",
            )
            .buckets(BUCKETS.to_vec()),
            &["op"],
        )?;
        let queued = IntGauge::new(
            "ts3ab_lb_store_queue_depth",
            "Requests waiting for the store worker (writes are batched from this queue).",
        )?;
        let mut each = Vec::with_capacity(OPS.len());
        for op in OPS {
            let name = op.as_str();
            each.push((
                calls.get_metric_with_label_values(&[name, "ok"])?,
                calls.get_metric_with_label_values(&[name, "error"])?,
                duration.get_metric_with_label_values(&[name])?,
            ));
        }
        Ok(StoreStats {
            calls,
            duration,
            queued,
            each,
        })
    }

    /// Records one call.
    pub fn record(&self, op: StoreOp, took: Duration, ok: bool) {
        let Some((good, bad, time)) = OPS
            .iter()
            .position(|o| *o == op)
            .and_then(|i| self.each.get(i))
        else {
            return;
        };
        if ok { good } else { bad }.inc();
        time.observe(took.as_secs_f64());
    }

    /// The instruments, for a registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.calls.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.queued.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_starts_at_zero_and_counts_by_result() {
        let s = StoreStats::new().expect("stats");
        assert_eq!(
            s.calls.with_label_values(&["release_seat", "error"]).get(),
            0
        );
        s.record(StoreOp::ClaimBot, Duration::from_millis(3), true);
        s.record(StoreOp::ClaimBot, Duration::from_millis(3), false);
        s.record(StoreOp::ClaimBot, Duration::from_millis(3), false);
        assert_eq!(s.calls.with_label_values(&["claim_bot", "ok"]).get(), 1);
        assert_eq!(s.calls.with_label_values(&["claim_bot", "error"]).get(), 2);
        let h = s.duration.with_label_values(&["claim_bot"]);
        assert_eq!(h.get_sample_count(), 3);
        let families: usize = s.collectors().iter().map(|c| c.collect().len()).sum();
        assert_eq!(families, 3);
    }
}
