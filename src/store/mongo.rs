//! The MongoDB store: one database shared by several stateless routers.
//!
//! Owns: mapping [`Op`]s onto collections (records as BSON documents of their serde form plus
//! `_id`, `rev` and `by`), the cluster-wide id counter, leases, the claim keys that keep two
//! routers from recording one bot instance or template name twice, the polled change feed
//! that tells a router what the others wrote, and turning driver failures into clear
//! [`StoreError`]s (a bad URI with its secrets redacted, an unreachable `host:port`, refused
//! credentials, an outage). Does not own: batching, retrying or threading (`store`), nor what a
//! router does with a change (`cluster`).
//!
//! # Collections
//! `bots`, `templates`, `nodes`, `keys`, `fences`, `operations` (the synced ones: every
//! document carries the revision `rev` of the batch that wrote it and the writer's router id
//! `by`; a delete leaves a tombstone `{_id, deleted: true, rev, by, gone_at}`), `counters`
//! (`ids`: the next cluster id; `rev`: the last revision handed out), `leases`, `audit`
//! (`_id` = router id + sequence, as every router numbers its own trail), and `bot_slots`
//! (`_id` = the bot instance key node/local id/node start time, `bot` = the cluster id holding
//! it). `_id` is unique in every collection, which makes the cluster id, the template name and
//! the slot key unique; the other indexes (created at open) are `rev` in the synced
//! collections, `bot` in `bot_slots`, `seq` in `audit`, and TTL indexes that only clean up:
//! expired leases after an hour, tombstones after a week. The expiry of a lease is always
//! checked in the query, because the TTL monitor runs only about once a minute.
//!
//! # Consistency
//! Writes use write concern `majority` with journaling and reads use read concern `majority`:
//! an acknowledged write is on disk on a majority of the replica set, so it survives an
//! election (a write acknowledged by a primary alone can be rolled back when that primary
//! loses its seat), and a router never acts on a record that may still be rolled back. On a
//! standalone server both are the same as the defaults. A batch is written document by
//! document (multi-document transactions need a replica set): the ops are idempotent and the
//! worker retries a failed batch whole, and the order that matters after a crash is kept
//! (counters first, then runs of ops in submission order, the audit trail last).
//!
//! # Change feed
//! Change streams need a replica set, so the feed is polled: each batch takes a revision
//! (`$inc` on `counters.rev`) and stamps it on what it writes. [`MongoStore::changes`] reads
//! the counter, then every synced document above a floor, and returns those written by other
//! routers that it has not returned at that revision. The floor only passes revisions that
//! were known to be handed out more than [`GAP`] ago, so a writer that took its revision
//! before a faster one but wrote after it is still seen; a writer slower than half the gap
//! stamps what it wrote again with a fresh revision.
//!
//! # MongoDB first, nx-27017 tolerated
//! The tests run against nx-27017 (a wire-protocol server on SQLite) unless a real server is
//! named. The code is written for MongoDB and avoids what nx-27017 gets wrong: an upserting
//! `findOneAndUpdate` whose filter misses an existing `_id` answers "no document" instead of
//! a duplicate key error (both mean "not acquired"); `$setOnInsert` is ignored (claims insert
//! and read the holder on a duplicate key instead); an upserting replacement without `_id`
//! gets an invented ObjectId (replacements carry `_id`); a top-level `_id` next to `$or` is
//! ignored by `findAndModify` (the lease filter puts both in an `$and`); a date written with
//! `$set` is stored as a string (lease expiry is compared in milliseconds).
//!
//! # Bounded time
//! The driver has no socket timeout, so a stopped server (SIGSTOP, a partition) would hold an
//! operation forever: every call is bounded by [`OP_TIMEOUT`] here (and server selection by
//! two seconds), so the store worker always gets an answer and can retry.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, IndexOptions, ReadConcern, ReturnDocument, WriteConcern,
};
use mongodb::{Client, Database, IndexModel};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    AuditRecord, BotRecord, Change, Claim, FenceRecord, Op, OperationRecord, Snapshot, Store,
    StoreError, TemplateRecord,
};

/// The longest one database call may take before it counts as an outage.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the driver looks for a usable server before it gives up on a call.
const SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening a TCP connection (and its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a revision may stay in flight (handed out, not yet written) before the change
/// feed stops looking below it.
pub const GAP: Duration = Duration::from_secs(15);
/// Statements per write command: far below the server's limits (100,000 statements, 16 MiB)
/// with records of a few KiB.
const CHUNK: usize = 500;
/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;
/// How long an expired lease document stays before the TTL monitor removes it.
const LEASE_CLEANUP: Duration = Duration::from_secs(3600);
/// How long a tombstone stays: a router that did not poll for that long has missed a delete.
const TOMBSTONE_CLEANUP: Duration = Duration::from_secs(7 * 24 * 3600);

const COUNTERS: &str = "counters";
const LEASES: &str = "leases";
const AUDIT: &str = "audit";
const BOT_SLOTS: &str = "bot_slots";

/// A synced collection: one record kind whose changes other routers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Coll {
    Bots,
    Templates,
    Nodes,
    Keys,
    Fences,
    Operations,
}

impl Coll {
    const ALL: [Coll; 6] = [
        Coll::Bots,
        Coll::Templates,
        Coll::Nodes,
        Coll::Keys,
        Coll::Fences,
        Coll::Operations,
    ];

    fn name(self) -> &'static str {
        match self {
            Coll::Bots => "bots",
            Coll::Templates => "templates",
            Coll::Nodes => "nodes",
            Coll::Keys => "keys",
            Coll::Fences => "fences",
            Coll::Operations => "operations",
        }
    }
}

/// Every collection the store writes (what [`Store::clear`] empties).
const ALL_COLLECTIONS: [&str; 10] = [
    "bots",
    "templates",
    "nodes",
    "keys",
    "fences",
    "operations",
    COUNTERS,
    LEASES,
    AUDIT,
    BOT_SLOTS,
];

/// A [`Store`] on a MongoDB database.
pub struct MongoStore {
    db: Database,
    router_id: String,
    /// `host:port` list, for error messages.
    hosts: String,
    feed: Mutex<Feed>,
}

/// What the change feed remembers between two polls.
#[derive(Default)]
struct Feed {
    /// Every revision at or below it is written and was read: the next poll starts above.
    floor: i64,
    /// The revision last seen of each document above the floor, so none is returned twice.
    seen: HashMap<(Coll, String), i64>,
    /// (counter value, when it was read): revisions up to the value were handed out by then.
    checkpoints: VecDeque<(i64, Instant)>,
}

impl MongoStore {
    /// Connects to the database `database` at `uri` as router `router_id` (the id stamped on
    /// every document it writes, so it can tell its own writes from the others'), checks that
    /// the server answers and takes the credentials, and creates the indexes. Must run on the
    /// store worker's runtime ([`super::StoreHandle::open`]): the client lives on the runtime it
    /// was created on.
    pub async fn open(
        uri: &str,
        database: &str,
        router_id: &str,
    ) -> Result<MongoStore, StoreError> {
        let redactor = Redactor::new(uri);
        let shown = format!("{} (database {database})", redactor.uri());
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        check_database_name(database).map_err(&open_err)?;
        if router_id.is_empty() {
            return Err(open_err("the router id is empty".into()));
        }
        // Parsing may look up DNS SRV and TXT records (mongodb+srv://): bounded too.
        let mut options = match tokio::time::timeout(OP_TIMEOUT, ClientOptions::parse(uri)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                return Err(open_err(format!(
                    "invalid MongoDB URI: {}",
                    redactor.scrub(&error_text(&e))
                )))
            }
            Err(_) => {
                return Err(open_err(format!(
                    "resolving the URI took longer than {OP_TIMEOUT:?}"
                )))
            }
        };
        let hosts = options
            .hosts
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let user = options.credential.as_ref().and_then(|c| c.username.clone());
        options.app_name.get_or_insert_with(|| "ts3ab-lb".into());
        options.server_selection_timeout = Some(
            options
                .server_selection_timeout
                .map_or(SELECTION_TIMEOUT, |t| t.min(SELECTION_TIMEOUT)),
        );
        options.connect_timeout = Some(
            options
                .connect_timeout
                .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT)),
        );
        options.write_concern = Some(
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .w_timeout(OP_TIMEOUT)
                .build(),
        );
        options.read_concern = Some(ReadConcern::majority());
        let client =
            Client::with_options(options).map_err(|e| open_err(redactor.scrub(&error_text(&e))))?;
        let store = MongoStore {
            db: client.database(database),
            router_id: router_id.to_string(),
            hosts: hosts.clone(),
            feed: Mutex::new(Feed::default()),
        };
        match store
            .timed("ping", store.db.run_command(doc! {"ping": 1}))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(open_err(describe_open_failure(
                    &e,
                    &hosts,
                    user.as_deref(),
                    &redactor,
                )))
            }
            Err(_) => {
                return Err(open_err(format!(
                    "cannot reach MongoDB at {hosts}: no answer within {OP_TIMEOUT:?}"
                )))
            }
        }
        store
            .ensure_indexes()
            .await
            .map_err(|e| open_err(format!("cannot create the indexes: {e}")))?;
        Ok(store)
    }

    /// The router id this store stamps on its writes.
    pub fn router_id(&self) -> &str {
        &self.router_id
    }

    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let mut wanted: Vec<(&str, IndexModel)> = Vec::new();
        for c in Coll::ALL {
            wanted.push((
                c.name(),
                IndexModel::builder().keys(doc! {"rev": 1}).build(),
            ));
            wanted.push((
                c.name(),
                IndexModel::builder()
                    .keys(doc! {"gone_at": 1})
                    .options(
                        IndexOptions::builder()
                            .expire_after(TOMBSTONE_CLEANUP)
                            .build(),
                    )
                    .build(),
            ));
        }
        wanted.push((
            BOT_SLOTS,
            IndexModel::builder().keys(doc! {"bot": 1}).build(),
        ));
        wanted.push((AUDIT, IndexModel::builder().keys(doc! {"seq": 1}).build()));
        wanted.push((
            LEASES,
            IndexModel::builder()
                .keys(doc! {"until": 1})
                .options(IndexOptions::builder().expire_after(LEASE_CLEANUP).build())
                .build(),
        ));
        for (coll, model) in wanted {
            self.run(
                "create an index",
                self.db.collection::<Document>(coll).create_index(model),
            )
            .await?;
        }
        Ok(())
    }

    // === calls ===

    /// Runs one driver call within [`OP_TIMEOUT`]; the outer error is the timeout.
    async fn timed<T>(
        &self,
        what: &str,
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>, StoreError> {
        tokio::time::timeout(OP_TIMEOUT, call).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "MongoDB at {} did not answer ({what}) within {OP_TIMEOUT:?}",
                self.hosts
            ))
        })
    }

    /// Runs one driver call within [`OP_TIMEOUT`] and maps its error.
    async fn run<T>(
        &self,
        what: &str,
        call: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        self.timed(what, call)
            .await?
            .map_err(|e| self.fail(what, &e))
    }

    fn fail(&self, what: &str, e: &mongodb::error::Error) -> StoreError {
        let text = error_text(e);
        match *e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => StoreError::Unavailable(
                format!("MongoDB at {} failed to {what}: {text}", self.hosts),
            ),
            _ => StoreError::Io(format!("MongoDB failed to {what}: {text}")),
        }
    }

    fn coll(&self, name: &str) -> mongodb::Collection<Document> {
        self.db.collection::<Document>(name)
    }

    /// Runs write statements (`update` or `delete`) on `coll` in order, in chunks; duplicate
    /// key errors are returned as the count of them when `dup_ok`, otherwise every write error
    /// fails the call.
    async fn write_command(
        &self,
        command: &str,
        field: &str,
        coll: &str,
        statements: Vec<Document>,
        dup_ok: bool,
    ) -> Result<(), StoreError> {
        let what = format!("write to {coll}");
        for chunk in statements.chunks(CHUNK) {
            let cmd = doc! {
                command: coll,
                field: chunk.to_vec(),
                // Ordered: a later statement may depend on an earlier one (the same
                // document written twice in one batch), except for inserts that may meet
                // a duplicate key, which must not stop the rest.
                "ordered": !dup_ok,
                // run_command applies no write concern of its own: give it the client's.
                "writeConcern": {"w": "majority", "j": true, "wtimeout": OP_TIMEOUT.as_millis() as i64},
            };
            let reply = self.run(&what, self.db.run_command(cmd)).await?;
            check_write_reply(&reply, &what, &self.hosts, dup_ok)?;
        }
        Ok(())
    }

    /// The next revision (handed out to the caller alone).
    async fn next_rev(&self) -> Result<i64, StoreError> {
        let doc = self
            .run(
                "take a revision",
                self.coll(COUNTERS)
                    .find_one_and_update(doc! {"_id": "rev"}, doc! {"$inc": {"n": 1i64}})
                    .upsert(true)
                    .return_document(ReturnDocument::After),
            )
            .await?;
        doc.as_ref()
            .and_then(|d| int(d, "n"))
            .ok_or_else(|| StoreError::Io("MongoDB returned no revision counter".into()))
    }

    /// The last revision handed out (0: none yet).
    async fn current_rev(&self) -> Result<i64, StoreError> {
        let doc = self
            .run(
                "read the revision counter",
                self.coll(COUNTERS).find_one(doc! {"_id": "rev"}),
            )
            .await?;
        Ok(doc.as_ref().and_then(|d| int(d, "n")).unwrap_or(0))
    }

    async fn find_all(&self, coll: &str, filter: Document) -> Result<Vec<Document>, StoreError> {
        let what = format!("read {coll}");
        self.run(&what, async {
            let cursor = self.coll(coll).find(filter).max_time(OP_TIMEOUT).await?;
            cursor.try_collect::<Vec<Document>>().await
        })
        .await
    }

    // === writes ===

    /// The document a record is stored as.
    fn record_doc<T: Serialize>(
        &self,
        id: Bson,
        rec: &T,
        rev: i64,
    ) -> Result<Document, StoreError> {
        let mut d = bson::to_document(rec)
            .map_err(|e| StoreError::Io(format!("cannot encode a record as BSON: {e}")))?;
        d.insert("_id", id);
        d.insert("rev", rev);
        d.insert("by", self.router_id.as_str());
        Ok(d)
    }

    /// What a deleted record leaves, so other routers see the delete.
    fn tombstone(&self, id: Bson, rev: i64) -> Document {
        doc! {
            "_id": id,
            "deleted": true,
            "rev": rev,
            "by": self.router_id.as_str(),
            "gone_at": bson::DateTime::now(),
        }
    }

    /// Keeps the `bot_slots` keys in step with the bots a batch wrote: a bot put takes the key
    /// of its slot if it is free and gives up any other key it holds; a deleted bot gives up
    /// its keys. Giving up is conditional on the key still naming that bot.
    async fn sync_slots(&self, bots: &BTreeMap<u32, Option<&BotRecord>>) -> Result<(), StoreError> {
        let mut inserts = Vec::new();
        let mut deletes = Vec::new();
        for (id, rec) in bots {
            let id = i64::from(*id);
            match rec {
                Some(b) => {
                    let key = slot_key(b);
                    inserts.push(self.slot_doc(&key, b)?);
                    deletes.push(doc! {"q": {"bot": id, "_id": {"$ne": key}}, "limit": 0});
                }
                None => deletes.push(doc! {"q": {"bot": id}, "limit": 0}),
            }
        }
        if !inserts.is_empty() {
            // A key held by someone else stays theirs (duplicate key: skipped).
            self.write_command("insert", "documents", BOT_SLOTS, inserts, true)
                .await?;
        }
        if !deletes.is_empty() {
            self.write_command("delete", "deletes", BOT_SLOTS, deletes, false)
                .await?;
        }
        Ok(())
    }

    fn slot_doc(&self, key: &str, b: &BotRecord) -> Result<Document, StoreError> {
        let record = bson::to_document(b)
            .map_err(|e| StoreError::Io(format!("cannot encode a record as BSON: {e}")))?;
        Ok(doc! {
            "_id": key,
            "bot": i64::from(b.id),
            // The claimer's record, for a loser that reads the key before the winner's
            // record is written (or after the winner died in between).
            "record": record,
            "by": self.router_id.as_str(),
        })
    }

    /// Stamps what a slow batch wrote with a fresh revision (see the module doc).
    async fn restamp(
        &self,
        rev: i64,
        written: &BTreeMap<Coll, Vec<Bson>>,
    ) -> Result<(), StoreError> {
        let fresh = self.next_rev().await?;
        for (coll, ids) in written {
            let stmts = ids
                .chunks(CHUNK)
                .map(|ids| {
                    doc! {
                        "q": {"_id": {"$in": ids.to_vec()}, "rev": rev},
                        "u": {"$set": {"rev": fresh}},
                        "multi": true,
                    }
                })
                .collect();
            self.write_command("update", "updates", coll.name(), stmts, false)
                .await?;
        }
        Ok(())
    }
}

/// One write statement of a batch, and where it goes.
enum Target {
    Synced(Coll, Bson),
    Audit,
}

#[async_trait]
impl Store for MongoStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        // The counter first: whatever is read below was written at or below it, or later.
        let counter = self.current_rev().await?;
        let mut snap = Snapshot::default();
        let mut seen = HashMap::new();
        for coll in Coll::ALL {
            for d in self.find_all(coll.name(), Document::new()).await? {
                let key = (coll, id_text(&d));
                seen.insert(key, int(&d, "rev").unwrap_or(0));
                if is_tombstone(&d) {
                    continue;
                }
                let what = format!("{} {}", coll.name(), id_text(&d));
                match coll {
                    Coll::Bots => snap.bots.push(decode(&what, d)?),
                    Coll::Templates => snap.templates.push(decode(&what, d)?),
                    Coll::Nodes => snap.nodes.push(decode(&what, d)?),
                    Coll::Keys => snap.keys.push(decode(&what, d)?),
                    Coll::Fences => snap.fences.push(decode(&what, d)?),
                    Coll::Operations => snap.operations.push(decode(&what, d)?),
                }
            }
        }
        for d in self.find_all(AUDIT, Document::new()).await? {
            let what = format!("audit {}", id_text(&d));
            snap.audit.push(decode::<AuditRecord>(&what, d)?);
        }
        // The same order as the embedded store (by key), so callers see no difference.
        snap.bots.sort_by_key(|b| b.id);
        snap.templates.sort_by(|a, b| a.name.cmp(&b.name));
        snap.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        snap.keys.sort_by(|a, b| a.name.cmp(&b.name));
        snap.fences
            .sort_by(|a, b| (&a.node, a.bot).cmp(&(&b.node, b.bot)));
        snap.operations.sort_by_key(|o| o.id);
        snap.audit.sort_by_key(|a| (a.seq, a.at_ms));
        let ids = self
            .run(
                "read the id counter",
                self.coll(COUNTERS).find_one(doc! {"_id": "ids"}),
            )
            .await?;
        let next = ids.as_ref().and_then(|d| int(d, "next")).unwrap_or(0);
        snap.id_high_water = u32::try_from(next).map_err(|_| StoreError::Corrupt {
            what: "counters ids".into(),
            reason: format!("{next} is out of range"),
        })?;
        let mut feed = self.feed.lock();
        *feed = Feed {
            floor: 0,
            seen,
            checkpoints: VecDeque::from([(counter, Instant::now())]),
        };
        Ok(snap)
    }

    async fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let synced = ops
            .iter()
            .any(|op| !matches!(op, Op::RaiseIdHighWater(_) | Op::PutAudit(_)));
        let rev = if synced { self.next_rev().await? } else { 0 };
        let started = Instant::now();

        let mut counters = Vec::new();
        let mut audit = Vec::new();
        // Runs of consecutive statements on one collection, in submission order.
        let mut runs: Vec<(Coll, Vec<Document>)> = Vec::new();
        let mut written: BTreeMap<Coll, Vec<Bson>> = BTreeMap::new();
        let mut bots: BTreeMap<u32, Option<&BotRecord>> = BTreeMap::new();
        for op in ops {
            let (target, doc) = match op {
                Op::RaiseIdHighWater(v) => {
                    counters.push(doc! {
                        "q": {"_id": "ids"},
                        "u": {"$max": {"next": i64::from(*v)}},
                        "upsert": true,
                    });
                    continue;
                }
                Op::PutAudit(a) => {
                    let id = Bson::String(format!("{}/{}", self.router_id, a.seq));
                    let d = self.record_doc(id.clone(), a, rev)?;
                    (Target::Audit, Some((id, d)))
                }
                Op::PutBot(b) => {
                    bots.insert(b.id, Some(b));
                    let id = Bson::Int64(i64::from(b.id));
                    let d = self.record_doc(id.clone(), b, rev)?;
                    (Target::Synced(Coll::Bots, id.clone()), Some((id, d)))
                }
                Op::DeleteBot(id) => {
                    bots.insert(*id, None);
                    let id = Bson::Int64(i64::from(*id));
                    (Target::Synced(Coll::Bots, id), None)
                }
                Op::PutTemplate(t) => {
                    let id = Bson::String(t.name.clone());
                    let d = self.record_doc(id.clone(), t, rev)?;
                    (Target::Synced(Coll::Templates, id.clone()), Some((id, d)))
                }
                Op::DeleteTemplate(name) => (
                    Target::Synced(Coll::Templates, Bson::String(name.clone())),
                    None,
                ),
                Op::PutNode(n) => {
                    let id = Bson::String(n.name.clone());
                    let d = self.record_doc(id.clone(), n, rev)?;
                    (Target::Synced(Coll::Nodes, id.clone()), Some((id, d)))
                }
                Op::DeleteNode(name) => (
                    Target::Synced(Coll::Nodes, Bson::String(name.clone())),
                    None,
                ),
                Op::PutKey(k) => {
                    let id = Bson::String(k.name.clone());
                    let d = self.record_doc(id.clone(), k, rev)?;
                    (Target::Synced(Coll::Keys, id.clone()), Some((id, d)))
                }
                Op::DeleteKey(name) => {
                    (Target::Synced(Coll::Keys, Bson::String(name.clone())), None)
                }
                Op::PutFence(f) => {
                    let id = Bson::String(fence_id(&f.node, f.bot));
                    let d = self.record_doc(id.clone(), f, rev)?;
                    (Target::Synced(Coll::Fences, id.clone()), Some((id, d)))
                }
                Op::DeleteFence(node, bot) => (
                    Target::Synced(Coll::Fences, Bson::String(fence_id(node, *bot))),
                    None,
                ),
                Op::PutOperation(o) => {
                    let id = Bson::Int64(op_id(o.id)?);
                    let d = self.record_doc(id.clone(), o, rev)?;
                    (Target::Synced(Coll::Operations, id.clone()), Some((id, d)))
                }
                Op::DeleteOperation(id) => (
                    Target::Synced(Coll::Operations, Bson::Int64(op_id(*id)?)),
                    None,
                ),
            };
            match target {
                Target::Audit => {
                    if let Some((id, d)) = doc {
                        audit.push(doc! {"q": {"_id": id}, "u": d, "upsert": true});
                    }
                }
                Target::Synced(coll, id) => {
                    // The replacement carries `_id` itself: an upsert then creates exactly
                    // that document (nx-27017 would otherwise invent an ObjectId).
                    let u = match doc {
                        Some((_, d)) => d,
                        None => self.tombstone(id.clone(), rev),
                    };
                    written.entry(coll).or_default().push(id.clone());
                    let stmt = doc! {"q": {"_id": id}, "u": u, "upsert": true};
                    match runs.last_mut() {
                        Some((c, stmts)) if *c == coll => stmts.push(stmt),
                        _ => runs.push((coll, vec![stmt])),
                    }
                }
            }
        }
        // The id mark first: a stored bot must always imply a stored mark above its id, and
        // raising the mark early is always safe.
        if !counters.is_empty() {
            self.write_command("update", "updates", COUNTERS, counters, false)
                .await?;
        }
        for (coll, stmts) in runs {
            self.write_command("update", "updates", coll.name(), stmts, false)
                .await?;
        }
        if !bots.is_empty() {
            self.sync_slots(&bots).await?;
        }
        if synced && started.elapsed() > GAP / 2 {
            self.restamp(rev, &written).await?;
        }
        // The trail last: nothing depends on it, and it is the bulk of many batches.
        if !audit.is_empty() {
            self.write_command("update", "updates", AUDIT, audit, false)
                .await?;
        }
        Ok(())
    }

    async fn reserve_ids(&self, count: u32) -> Result<u32, StoreError> {
        let doc = self
            .run(
                "reserve ids",
                self.coll(COUNTERS)
                    .find_one_and_update(
                        doc! {"_id": "ids"},
                        doc! {"$inc": {"next": i64::from(count)}},
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::After),
            )
            .await?;
        let next = doc
            .as_ref()
            .and_then(|d| int(d, "next"))
            .ok_or_else(|| StoreError::Io("MongoDB returned no id counter".into()))?;
        let first = next - i64::from(count);
        if next > i64::from(u32::MAX) || first < 0 {
            return Err(StoreError::Io(format!(
                "cannot reserve {count} ids: the id counter is at {next}"
            )));
        }
        u32::try_from(first).map_err(|e| StoreError::Io(e.to_string()))
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = bson::DateTime::now().timestamp_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let leases = self.coll(LEASES);
        // `_id` and the `$or` inside an explicit `$and`: MongoDB takes the `_id` for the upsert
        // either way, but nx-27017 ignores a top-level `_id` next to `$or` and would take over
        // any expired lease. The expiry is compared as milliseconds (`until_ms`), since
        // nx-27017 stores a date `$set` as a string; `until` (a date) only feeds the TTL
        // index that cleans up.
        let call = leases
            .find_one_and_update(
                doc! {"$and": [
                    {"_id": name},
                    {"$or": [{"holder": holder}, {"until_ms": {"$lt": now}}]},
                ]},
                doc! {"$set": {
                    "holder": holder,
                    "until_ms": until,
                    "until": bson::DateTime::from_millis(until),
                }},
            )
            .upsert(true)
            .return_document(ReturnDocument::After);
        match self.timed("take a lease", call).await? {
            Ok(Some(d)) => Ok(d.get_str("holder").ok() == Some(holder)),
            // nx-27017 answers "no document" where MongoDB answers duplicate key: the filter
            // missed a lease someone else holds, and the upsert could not insert its _id.
            Ok(None) => Ok(false),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(self.fail("take a lease", &e)),
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.run(
            "release a lease",
            self.coll(LEASES)
                .delete_one(doc! {"_id": name, "holder": holder}),
        )
        .await?;
        Ok(())
    }

    async fn claim_bot(&self, bot: &BotRecord) -> Result<Claim<BotRecord>, StoreError> {
        let key = slot_key(bot);
        let slots = self.coll(BOT_SLOTS);
        // A few rounds: the key can change hands between our insert and our read (its holder
        // released it); each round makes progress, so three are plenty.
        for _ in 0..3 {
            match self
                .timed("claim a bot", slots.insert_one(self.slot_doc(&key, bot)?))
                .await?
            {
                Ok(_) => {
                    self.apply(&[Op::PutBot(bot.clone())]).await?;
                    return Ok(Claim::Won);
                }
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(self.fail("claim a bot", &e)),
            }
            let Some(slot) = self
                .run(
                    "read a bot claim",
                    slots.find_one(doc! {"_id": key.as_str()}),
                )
                .await?
            else {
                continue;
            };
            let holder = int(&slot, "bot").unwrap_or(-1);
            if holder == i64::from(bot.id) {
                self.apply(&[Op::PutBot(bot.clone())]).await?;
                return Ok(Claim::Won);
            }
            let record = self
                .run(
                    "read a bot",
                    self.coll(Coll::Bots.name()).find_one(doc! {"_id": holder}),
                )
                .await?;
            match record {
                Some(d) if !is_tombstone(&d) => {
                    return Ok(Claim::Lost(decode(&format!("bots {holder}"), d)?))
                }
                Some(_) => {
                    // The holder was deleted and its key not yet given up (its batch is being
                    // retried): free the key, still only if it names that holder.
                    self.run(
                        "free a bot claim",
                        slots.delete_one(doc! {"_id": key.as_str(), "bot": holder}),
                    )
                    .await?;
                }
                None => {
                    // The winner is between its key and its record (or died there): its
                    // record as it claimed the key.
                    let rec = slot
                        .get_document("record")
                        .map_err(|e| StoreError::Corrupt {
                            what: format!("bot_slots {key}"),
                            reason: e.to_string(),
                        })?;
                    return Ok(Claim::Lost(decode(
                        &format!("bot_slots {key}"),
                        rec.clone(),
                    )?));
                }
            }
        }
        Err(StoreError::Io(format!(
            "the claim of bot instance {key} kept changing hands"
        )))
    }

    async fn claim_template(
        &self,
        t: &TemplateRecord,
    ) -> Result<Claim<TemplateRecord>, StoreError> {
        let templates = self.coll(Coll::Templates.name());
        let what = format!("templates {}", t.name);
        for _ in 0..3 {
            let current = self
                .run(
                    "read a template",
                    templates.find_one(doc! {"_id": t.name.as_str()}),
                )
                .await?;
            if let Some(d) = &current {
                if !is_tombstone(d) && d.get_str("node").ok() != Some(t.node.as_str()) {
                    return Ok(Claim::Lost(decode(&what, d.clone())?));
                }
            }
            let rev = self.next_rev().await?;
            let doc = self.record_doc(Bson::String(t.name.clone()), t, rev)?;
            match current {
                Some(d) => {
                    // Ours (same node) or deleted: replace it only as we read it, so a
                    // router that took the name meanwhile keeps it.
                    let seen = int(&d, "rev").unwrap_or(0);
                    let r = self
                        .run(
                            "claim a template",
                            templates.replace_one(doc! {"_id": t.name.as_str(), "rev": seen}, doc),
                        )
                        .await?;
                    if r.matched_count == 1 {
                        return Ok(Claim::Won);
                    }
                }
                None => match self
                    .timed("claim a template", templates.insert_one(doc))
                    .await?
                {
                    Ok(_) => return Ok(Claim::Won),
                    Err(e) if is_duplicate(&e) => {}
                    Err(e) => return Err(self.fail("claim a template", &e)),
                },
            }
        }
        Err(StoreError::Io(format!(
            "the claim of template {} kept changing hands",
            t.name
        )))
    }

    async fn changes(&self) -> Result<Vec<Change>, StoreError> {
        let counter = self.current_rev().await?;
        let now = Instant::now();
        let floor = {
            let mut feed = self.feed.lock();
            if feed.checkpoints.back().is_none_or(|(c, _)| *c < counter) {
                feed.checkpoints.push_back((counter, now));
            }
            feed.floor
        };
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
            let key = (coll, id_text(&d));
            let rev = int(&d, "rev").unwrap_or(0);
            // Any other revision than the one last seen is another write (a writer that took
            // an older revision can write after a newer one), so it is returned too.
            if feed.seen.get(&key) == Some(&rev) {
                continue;
            }
            feed.seen.insert(key, rev);
            if d.get_str("by").ok() == Some(self.router_id.as_str()) {
                continue;
            }
            match to_change(coll, d) {
                Ok(c) => out.push(c),
                // One bad document must not stop the feed for good.
                Err(e) => log::error!("skipped a change another router wrote: {e}"),
            }
        }
        // Revisions handed out more than GAP ago are all written: look above them from now on.
        if let Some(cutoff) = now.checked_sub(GAP) {
            let mut new_floor = feed.floor;
            while let Some(&(c, at)) = feed.checkpoints.front() {
                if at > cutoff {
                    break;
                }
                new_floor = new_floor.max(c);
                feed.checkpoints.pop_front();
            }
            if new_floor > feed.floor {
                feed.floor = new_floor;
                feed.seen.retain(|_, r| *r > new_floor);
            }
        }
        Ok(out)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn clear(&self) -> Result<(), StoreError> {
        for coll in ALL_COLLECTIONS {
            self.run(
                "clear the store",
                self.coll(coll).delete_many(Document::new()),
            )
            .await?;
        }
        *self.feed.lock() = Feed::default();
        Ok(())
    }
}

// === documents ===

/// The instance key of a bot: node, local id and node start time. The node name is length-
/// prefixed, so no name can make two different instances look alike.
fn slot_key(b: &BotRecord) -> String {
    format!(
        "{}:{}/{}/{}",
        b.node.len(),
        b.node,
        b.local_id,
        b.node_started.as_deref().unwrap_or("")
    )
}

/// A fence's `_id`: the bot id first (a number, so the first `:` ends it), then the node.
fn fence_id(node: &str, bot: u32) -> String {
    format!("{bot}:{node}")
}

fn op_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::Io(format!("operation id {id} does not fit BSON")))
}

fn is_tombstone(d: &Document) -> bool {
    d.get_bool("deleted").unwrap_or(false)
}

/// An integer field, whichever BSON number type the server chose.
fn int(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

/// `_id` as text (a map key and for messages).
fn id_text(d: &Document) -> String {
    match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => int(d, "_id").map_or_else(|| other.to_string(), |i| i.to_string()),
        None => String::new(),
    }
}

fn decode<T: DeserializeOwned>(what: &str, d: Document) -> Result<T, StoreError> {
    bson::from_document(d).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn to_change(coll: Coll, d: Document) -> Result<Change, StoreError> {
    let key = id_text(&d);
    let what = format!("{} {key}", coll.name());
    let gone = is_tombstone(&d);
    let number = |k: &str| -> Result<i64, StoreError> {
        k.parse::<i64>().map_err(|e| StoreError::Corrupt {
            what: what.clone(),
            reason: format!("bad _id: {e}"),
        })
    };
    Ok(match coll {
        Coll::Bots => {
            let id = u32::try_from(number(&key)?).map_err(|e| StoreError::Corrupt {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            Change::Bot(id, if gone { None } else { Some(decode(&what, d)?) })
        }
        Coll::Templates => Change::Template(key, if gone { None } else { Some(decode(&what, d)?) }),
        Coll::Nodes => Change::Node(key, if gone { None } else { Some(decode(&what, d)?) }),
        Coll::Keys => Change::Key(key, if gone { None } else { Some(decode(&what, d)?) }),
        Coll::Fences => {
            let (bot, node) = key.split_once(':').ok_or_else(|| StoreError::Corrupt {
                what: what.clone(),
                reason: "bad _id".into(),
            })?;
            let bot = u32::try_from(number(bot)?).map_err(|e| StoreError::Corrupt {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            let rec: Option<FenceRecord> = if gone { None } else { Some(decode(&what, d)?) };
            Change::Fence(node.to_string(), bot, rec)
        }
        Coll::Operations => {
            let id = u64::try_from(number(&key)?).map_err(|e| StoreError::Corrupt {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            let rec: Option<OperationRecord> = if gone { None } else { Some(decode(&what, d)?) };
            Change::Operation(id, rec)
        }
    })
}

// === errors ===

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Fails on the write errors (and the write concern error) of a write command's reply.
fn check_write_reply(
    reply: &Document,
    what: &str,
    hosts: &str,
    dup_ok: bool,
) -> Result<(), StoreError> {
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors {
            let Some(e) = e.as_document() else { continue };
            let code = int(e, "code").unwrap_or(0);
            if dup_ok && code == i64::from(DUPLICATE_KEY) {
                continue;
            }
            return Err(StoreError::Io(format!(
                "MongoDB refused a {what} (error {code}): {}",
                e.get_str("errmsg").unwrap_or("")
            )));
        }
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        // Written on the primary, not (yet) on a majority: not durable, so an outage.
        return Err(StoreError::Unavailable(format!(
            "MongoDB at {hosts} did not confirm a {what} on a majority: {}",
            wce.get_str("errmsg").unwrap_or("")
        )));
    }
    Ok(())
}

/// The open error for a failed first call, in the operator's terms.
fn describe_open_failure(
    e: &mongodb::error::Error,
    hosts: &str,
    user: Option<&str>,
    redactor: &Redactor,
) -> String {
    let text = redactor.scrub(&error_text(e));
    let who = user.map_or_else(String::new, |u| format!(" of user {u}"));
    match &*e.kind {
        ErrorKind::Authentication { .. } => {
            format!("MongoDB refused the credentials{who}: {text}")
        }
        // 18: AuthenticationFailed; 13: Unauthorized (the user may not use this database).
        ErrorKind::Command(c) if c.code == 18 => {
            format!("MongoDB refused the credentials{who}: {text}")
        }
        ErrorKind::Command(c) if c.code == 13 => {
            format!("MongoDB does not let the user{who} use this database: {text}")
        }
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => {
            format!("cannot reach MongoDB at {hosts}: {text}")
        }
        _ => format!("MongoDB at {hosts} failed: {text}"),
    }
}

/// The driver error's own words: its kind (the error's Display adds the labels and an empty
/// source chain, noise for an operator).
fn error_text(e: &mongodb::error::Error) -> String {
    e.kind.to_string()
}

/// Why a database name cannot be used (MongoDB's rules), if it cannot.
fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "the database name {name:?} is longer than 63 bytes"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
    {
        return Err(format!("the database name {name:?} may not contain {c:?}"));
    }
    Ok(())
}

/// Keeps the secrets of a connection URI out of messages: the password of its user info and
/// the values of options that carry secrets.
struct Redactor {
    shown: String,
    secrets: Vec<String>,
}

/// URI options whose values are secrets.
const SECRET_OPTIONS: [&str; 3] = [
    "tlscertificatekeyfilepassword",
    "authmechanismproperties",
    "password",
];

impl Redactor {
    fn new(uri: &str) -> Redactor {
        let mut secrets = Vec::new();
        let (scheme, rest) = match uri.split_once("://") {
            Some((s, r)) => (format!("{s}://"), r),
            None => (String::new(), uri),
        };
        // The user info ends at the last '@' before the path: a password must encode '@'
        // and '/', so neither splits it.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, password)) => {
                    if !password.is_empty() {
                        secrets.push(password.to_string());
                        let decoded = percent_decode(password);
                        if decoded != password {
                            secrets.push(decoded);
                        }
                    }
                    format!("{user}:***@{hosts}")
                }
                None => format!("{userinfo}@{hosts}"),
            },
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v))
                            if SECRET_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) =>
                        {
                            if !v.is_empty() {
                                secrets.push(v.to_string());
                            }
                            format!("{k}=***")
                        }
                        _ => kv.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                format!("{path}?{query}")
            }
            None => tail.to_string(),
        };
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            shown: format!("{scheme}{authority}{tail}"),
            secrets,
        }
    }

    /// The URI with its secrets replaced by `***`.
    fn uri(&self) -> &str {
        &self.shown
    }

    /// `text` with every secret of the URI replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_passwords_are_redacted() {
        let r = Redactor::new("mongodb://ops:s3cr%40t@db1:27017,db2:27018/admin?replicaSet=rs0&tlsCertificateKeyFilePassword=kfp");
        assert_eq!(
            r.uri(),
            "mongodb://ops:***@db1:27017,db2:27018/admin?replicaSet=rs0&tlsCertificateKeyFilePassword=***"
        );
        let scrubbed = r.scrub("auth failed for s3cr@t / s3cr%40t, key kfp");
        assert!(!scrubbed.contains("s3cr"), "{scrubbed}");
        assert!(!scrubbed.contains("kfp"), "{scrubbed}");
    }

    #[test]
    fn uri_without_credentials_is_shown_as_is() {
        let r = Redactor::new("mongodb://127.0.0.1:27017");
        assert_eq!(r.uri(), "mongodb://127.0.0.1:27017");
        assert_eq!(r.scrub("plain text"), "plain text");
        let r = Redactor::new("mongodb+srv://user@cluster.example.net/x");
        assert_eq!(r.uri(), "mongodb+srv://user@cluster.example.net/x");
    }

    #[test]
    fn database_names_follow_mongodb_rules() {
        assert!(check_database_name("ts3ab").is_ok());
        assert!(check_database_name("").is_err());
        assert!(check_database_name("a.b").is_err());
        assert!(check_database_name("a/b").is_err());
        assert!(check_database_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn slot_keys_cannot_be_confused() {
        let mut a = BotRecord {
            id: 1,
            node: "a/1".into(),
            local_id: 2,
            template: None,
            address: None,
            server_password: None,
            channel: None,
            nickname: None,
            identity: None,
            created_ms: 0,
            node_started: None,
        };
        let ka = slot_key(&a);
        a.node = "a".into();
        a.local_id = 1;
        a.node_started = Some("2/".into());
        assert_ne!(ka, slot_key(&a));
    }

    #[test]
    fn fence_ids_round_trip_through_changes() {
        let f = FenceRecord {
            node: "node:with:colons".into(),
            bot: 42,
            local_id: 1,
            template: None,
            address: None,
        };
        let d = doc! {"_id": fence_id(&f.node, f.bot), "deleted": true, "rev": 3i64, "by": "r"};
        assert_eq!(
            to_change(Coll::Fences, d).expect("change"),
            Change::Fence("node:with:colons".into(), 42, None)
        );
    }

    #[test]
    fn write_errors_are_reported_and_duplicates_skipped_when_asked() {
        let reply =
            doc! {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}]};
        assert!(check_write_reply(&reply, "write to x", "h:1", true).is_ok());
        let err = check_write_reply(&reply, "write to x", "h:1", false)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("11000") && err.contains("dup"), "{err}");
        let reply = doc! {"ok": 1, "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"}};
        let err = check_write_reply(&reply, "write to x", "h:1", false).expect_err("wce");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }

    #[test]
    fn numbers_of_either_width_are_read() {
        let d = doc! {"a": 5i32, "b": 6i64, "c": 7.0, "d": "x"};
        assert_eq!(int(&d, "a"), Some(5));
        assert_eq!(int(&d, "b"), Some(6));
        assert_eq!(int(&d, "c"), Some(7));
        assert_eq!(int(&d, "d"), None);
    }
}
