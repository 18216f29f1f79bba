//! Slowing down key guessing on the bot API: failed authentications counted per client
//! address, and that address refused for a while once it failed too often.
//!
//! Owns: [`AuthThrottle`] (a sliding window of failure times per address, bounded in memory)
//! and the 429 it answers. Does not own: checking credentials (`keys`) or the admin panel's
//! login slowdown (`admin::auth`).
//!
//! TS3AudioBot itself answers every wrong secret at once, so a client can try keys as fast as
//! the network allows; behind one router for a whole cluster that is worth stopping. Only the
//! offending address is held back: clients elsewhere never notice.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol::api_json::{ApiError, Reason};

/// Addresses remembered at most, so a flood from many addresses costs bounded memory: when
/// the table is full, addresses whose failures all left the window are swept out (at most
/// once a second, so a flood cannot make every failure pay for a scan), and a new address
/// finding it still full is not tracked. Each of a flood's addresses is then limited only by
/// TS3AudioBot's own cost per try; addresses already tracked stay held back.
const MAX_ADDRESSES: usize = 65_536;
/// The least time between two sweeps of a full table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Failed authentications per client address.
pub struct AuthThrottle {
    limit: usize,
    window: Duration,
    failures: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_addr: HashMap<IpAddr, VecDeque<Instant>>,
    swept: Option<Instant>,
}

impl AuthThrottle {
    /// A throttle refusing an address after `limit` failures within `window` (0: never).
    pub fn new(limit: usize, window: Duration) -> AuthThrottle {
        AuthThrottle {
            limit,
            window,
            failures: Mutex::new(Table::default()),
        }
    }

    /// Err(429) while `addr` is held back, with `Retry-After` set to when its oldest failure
    /// in the window expires.
    pub fn check(&self, addr: Option<IpAddr>, now: Instant) -> Result<(), ApiError> {
        let (Some(addr), true) = (addr, self.limit > 0) else {
            return Ok(());
        };
        let mut table = self.failures.lock();
        let map = &mut table.by_addr;
        let Some(times) = map.get_mut(&addr) else {
            return Ok(());
        };
        prune(times, now, self.window);
        if times.len() < self.limit {
            if times.is_empty() {
                map.remove(&addr);
            }
            return Ok(());
        }
        let wait = times
            .front()
            .map(|t| (*t + self.window).saturating_duration_since(now))
            .unwrap_or_default();
        let secs = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
        Err(ApiError::with_status(
            429,
            Reason::Unauthorized,
            format!(
                "Too many failed authentications from your address ({} within {} s); try again in {secs} s.",
                self.limit,
                self.window.as_secs()
            ),
        )
        .with_retry_after(secs))
    }

    /// Counts a failed authentication from `addr`.
    pub fn record_failure(&self, addr: Option<IpAddr>, now: Instant) {
        let (Some(addr), true) = (addr, self.limit > 0) else {
            return;
        };
        let mut table = self.failures.lock();
        if table.by_addr.len() >= MAX_ADDRESSES && !table.by_addr.contains_key(&addr) {
            if table
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
            {
                table.swept = Some(now);
                let window = self.window;
                table.by_addr.retain(|_, t| {
                    prune(t, now, window);
                    !t.is_empty()
                });
            }
            if table.by_addr.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let times = table.by_addr.entry(addr).or_default();
        prune(times, now, self.window);
        times.push_back(now);
        // Only the newest `limit` matter for the decision.
        while times.len() > self.limit {
            times.pop_front();
        }
    }
}

/// Drops failures older than the window.
fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn an_address_is_held_back_after_the_limit_and_only_that_address() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(t.check(ip(1), t0).is_ok(), "attempt {i}");
            t.record_failure(ip(1), t0 + Duration::from_secs(i));
        }
        let e = t
            .check(ip(1), t0 + Duration::from_secs(3))
            .expect_err("held back");
        assert_eq!(e.status, 429);
        assert_eq!(e.reason, Reason::Unauthorized);
        // The oldest failure (at 0 s) leaves the window at 60 s: 57 s from 3 s, rounded up.
        assert_eq!(e.retry_after, Some(58));
        assert!(e.message.contains("3 within 60 s"), "{}", e.message);
        assert!(t.check(ip(2), t0 + Duration::from_secs(3)).is_ok());
        // Once the oldest failure left the window, the address may try again.
        assert!(t.check(ip(1), t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn no_limit_and_no_address_never_hold_back() {
        let off = AuthThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..100 {
            off.record_failure(ip(1), now);
        }
        assert!(off.check(ip(1), now).is_ok());
        let on = AuthThrottle::new(1, Duration::from_secs(60));
        on.record_failure(None, now);
        assert!(on.check(None, now).is_ok());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let t = AuthThrottle::new(5, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 1000) {
            t.record_failure(Some(IpAddr::from(i.to_be_bytes())), now);
        }
        assert!(t.failures.lock().by_addr.len() <= MAX_ADDRESSES);
        // Addresses tracked before the flood are still held back.
        let early = AuthThrottle::new(1, Duration::from_secs(60));
        early.record_failure(ip(1), now);
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            early.record_failure(Some(IpAddr::from((i + 100).to_be_bytes())), now);
        }
        assert!(early.check(ip(1), now).is_err());
    }
}
