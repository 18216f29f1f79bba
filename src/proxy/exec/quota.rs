//! `max_bots`: how many bots one key may have at once.
//!
//! Owns: the per-key count of creates in flight and the check a create passes before any
//! node hears of it: the key's recorded bots plus its creates in flight must stay under its
//! limit, checked and counted in one step under one lock (like placement's reservations), so
//! two concurrent creates at the limit cannot both pass. Does not own: whose bot is whose
//! (`cluster::owners`) or the limit itself (`config::Tenancy`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::Cluster;
use crate::protocol::api_json::{ApiError, Reason};

/// Creates in flight, by key.
#[derive(Debug, Default)]
pub(super) struct Quota(Arc<Mutex<HashMap<Arc<str>, u32>>>);

/// One create in flight for a key with a limit; counted until dropped (by then a bot it
/// made is recorded, and counts as the key's bot).
pub(super) struct QuotaSeat {
    inflight: Arc<Mutex<HashMap<Arc<str>, u32>>>,
    key: Arc<str>,
}

impl Quota {
    /// A seat for one more bot of `key`, or the refusal when it has `max` already.
    pub(super) fn seat(
        &self,
        cluster: &Cluster,
        key: &Arc<str>,
        max: u32,
    ) -> Result<QuotaSeat, ApiError> {
        let mut inflight = self.0.lock();
        let pending = inflight.get(key).copied().unwrap_or(0);
        let have = cluster.bots_owned_by(key);
        if have.saturating_add(pending as usize) >= max as usize {
            return Err(limit_reached(max));
        }
        *inflight.entry(key.clone()).or_insert(0) += 1;
        Ok(QuotaSeat {
            inflight: self.0.clone(),
            key: key.clone(),
        })
    }
}

impl Drop for QuotaSeat {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock();
        if let Some(n) = inflight.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                inflight.remove(&self.key);
            }
        }
    }
}

/// The refusal of a create beyond a key's `max_bots`: TS3AudioBot's error shape, a 429
/// (the client may try again once it stopped a bot), the limit in words.
pub(super) fn limit_reached(max: u32) -> ApiError {
    let bots = if max == 1 { "bot" } else { "bots" };
    ApiError::with_status(
        429,
        Reason::CommandError,
        format!(
            "This key may have at most {max} {bots} at once, and has that many already. Stop one of them (bot disconnect) before creating another."
        ),
    )
}
