//! The audit trail: every change made through the admin interface, kept in the store.
//!
//! Owns: numbering entries, writing each to the store before the answer that reports the
//! change, and the most recent entries in memory for `GET /admin/api/audit`. Does not own:
//! what counts as a change (`http` records every POST, PATCH and DELETE).

use std::collections::VecDeque;

use parking_lot::Mutex;

use crate::store::{now_ms, AuditRecord, Op, StoreHandle, WRITE_DEADLINE};

/// How many entries are kept in memory (the store keeps all).
const IN_MEMORY: usize = 10_000;

/// The audit trail.
pub struct Audit {
    store: StoreHandle,
    inner: Mutex<(u64, VecDeque<AuditRecord>)>,
}

/// One change to record.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key name.
    pub who: String,
    /// The client address.
    pub from: String,
    /// `METHOD path`.
    pub action: String,
    /// What it was done to.
    pub target: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The outcome in words.
    pub outcome: String,
}

impl Audit {
    /// The trail, continuing after the stored entries.
    pub fn new(store: StoreHandle, stored: Vec<AuditRecord>) -> Audit {
        let next = stored.iter().map(|a| a.seq + 1).max().unwrap_or(1);
        let mut recent: VecDeque<AuditRecord> = stored.into();
        while recent.len() > IN_MEMORY {
            recent.pop_front();
        }
        Audit {
            store,
            inner: Mutex::new((next, recent)),
        }
    }

    /// Records a change, durably (bounded by the store's deadline; a failure is logged: the
    /// change itself already happened or was refused).
    pub async fn record(&self, e: Entry) {
        let rec = {
            let mut g = self.inner.lock();
            let seq = g.0;
            g.0 += 1;
            let rec = AuditRecord {
                seq,
                at_ms: now_ms(),
                who: e.who,
                from: e.from,
                action: e.action,
                target: e.target,
                status: e.status,
                outcome: e.outcome,
            };
            g.1.push_back(rec.clone());
            if g.1.len() > IN_MEMORY {
                g.1.pop_front();
            }
            rec
        };
        if !self.store.available() {
            // Kept by the store worker and written when the store is back; the answer does
            // not wait for that.
            self.store.submit(vec![Op::PutAudit(rec)]);
            return;
        }
        if let Err(err) = self
            .store
            .commit(vec![Op::PutAudit(rec.clone())], WRITE_DEADLINE)
            .await
        {
            log::error!("audit entry {} could not be stored: {err}", rec.seq);
        }
    }

    /// Entries newest first: at most `limit`, older than `before` if given.
    pub fn list(&self, limit: usize, before: Option<u64>) -> Vec<AuditRecord> {
        let g = self.inner.lock();
        g.1.iter()
            .rev()
            .filter(|a| before.is_none_or(|b| a.seq < b))
            .take(limit)
            .cloned()
            .collect()
    }
}
