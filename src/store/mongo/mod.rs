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
//! Here: opening, the calls' time bounds, loading and writing batches. In submodules: claims
//! and leases (`claims`), the change feed (`feed`), document shapes (`docs`), and errors in the
//! operator's terms with the URI's secrets redacted (`errors`).
//!
//! # Collections
//! `bots`, `templates`, `nodes`, `keys`, `fences`, `operations` (the synced ones: every
//! document carries the revision `rev` of the batch that wrote it and the writer's router id
//! `by`; a delete leaves a tombstone `{_id, deleted: true, rev, by, gone_at}`), `counters`
//! (`ids`: the next cluster id; `rev`: the last revision handed out), `leases`, `audit`
//! (`_id` = router id + sequence, as every router numbers its own trail), `bot_slots`
//! (`_id` = the bot instance key node/local id/node start time, `bot` = the cluster id
//! holding it) and `seats` (a create in flight on a node, with its expiry). `_id` is unique
//! in every collection, which makes the cluster id, the template name and the slot key
//! unique; the other indexes (created at open) are `rev` in the synced collections, `bot` in
//! `bot_slots`, `seq` in `audit`, `node` in `bots` and `node` + `until_ms` in `seats` (a seat
//! counts a node's bots and seats), and TTL indexes that only clean up: expired leases and
//! seats after an hour, tombstones after a week. The expiry of a lease or seat is always
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

mod claims;
mod docs;
mod errors;
mod feed;

use std::collections::{BTreeMap, HashMap};
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
use serde::Serialize;

use self::docs::{decode, fence_id, id_text, int, is_tombstone, op_id};
use self::errors::{
    check_database_name, check_write_reply, describe_open_failure, error_text, Redactor,
};
use self::feed::Feed;
use super::{
    AuditRecord, BotRecord, Change, Claim, Op, Snapshot, Store, StoreError, TemplateRecord,
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
const SEATS: &str = "seats";

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
const ALL_COLLECTIONS: [&str; 11] = [
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
    SEATS,
];

/// A [`Store`] on a MongoDB database.
pub struct MongoStore {
    db: Database,
    router_id: String,
    /// `host:port` list, for error messages.
    hosts: String,
    feed: Mutex<Feed>,
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
        // A seat counts a node's bots and its other seats (`claims::take_seat`).
        wanted.push((
            Coll::Bots.name(),
            IndexModel::builder().keys(doc! {"node": 1}).build(),
        ));
        wanted.push((
            SEATS,
            IndexModel::builder()
                .keys(doc! {"node": 1, "until_ms": 1})
                .build(),
        ));
        wanted.push((
            SEATS,
            IndexModel::builder()
                .keys(doc! {"until": 1})
                .options(IndexOptions::builder().expire_after(LEASE_CLEANUP).build())
                .build(),
        ));
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
            .map_err(|e| StoreError::Refused(format!("cannot encode a record as BSON: {e}")))?;
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
        let started = Instant::now();
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
        // Only the first load starts the feed: a later one (the operations a router reads
        // when it takes the lead) must not mark other routers' writes seen before this
        // router's view has applied them.
        let mut feed = self.feed.lock();
        if !feed.started() {
            *feed = Feed::loaded(counter, started, seen);
        }
        drop(feed);
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
                Op::PatchBot(p) => {
                    // Only while the record still places the bot where the writer saw it;
                    // the slot is unchanged, so its claim key is too.
                    let id = Bson::Int64(i64::from(p.id));
                    let mut set = doc! {"rev": rev, "by": self.router_id.as_str()};
                    let fields = [
                        ("nickname", &p.nickname),
                        ("channel", &p.channel),
                        ("address", &p.address),
                        ("server_password", &p.server_password),
                    ];
                    for (k, v) in fields {
                        if let Some(v) = v {
                            set.insert(k, v.as_str());
                        }
                    }
                    if let Some(identity) = &p.identity {
                        let d = bson::to_document(identity).map_err(|e| {
                            StoreError::Refused(format!("cannot encode a record as BSON: {e}"))
                        })?;
                        set.insert("identity", d);
                    }
                    written.entry(Coll::Bots).or_default().push(id.clone());
                    let stmt = doc! {
                        // A tombstone keeps no `node`, so it never matches.
                        "q": {
                            "_id": id,
                            "node": p.node.as_str(),
                            "local_id": i64::from(p.local_id),
                        },
                        "u": {"$set": set},
                        "upsert": false,
                    };
                    push_run(&mut runs, Coll::Bots, stmt);
                    continue;
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
                    push_run(
                        &mut runs,
                        coll,
                        doc! {"q": {"_id": id}, "u": u, "upsert": true},
                    );
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
        self.take_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.give_up_lease(name, holder).await
    }

    async fn claim_bot(&self, bot: &BotRecord) -> Result<Claim<BotRecord>, StoreError> {
        self.claim_bot_instance(bot).await
    }

    async fn claim_template(
        &self,
        t: &TemplateRecord,
    ) -> Result<Claim<TemplateRecord>, StoreError> {
        self.claim_template_name(t).await
    }

    async fn changes(&self) -> Result<Vec<Change>, StoreError> {
        self.poll_changes().await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn reserve_seat(
        &self,
        node: &str,
        capacity: u32,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.take_seat(node, capacity, ttl).await
    }

    async fn release_seat(&self, seat: &str) -> Result<(), StoreError> {
        self.give_up_seat(seat).await
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

/// Adds a statement to the run of its collection when that run is the last one, else starts
/// a new run (runs keep the submission order across collections).
fn push_run(runs: &mut Vec<(Coll, Vec<Document>)>, coll: Coll, stmt: Document) {
    match runs.last_mut() {
        Some((c, stmts)) if *c == coll => stmts.push(stmt),
        _ => runs.push((coll, vec![stmt])),
    }
}
