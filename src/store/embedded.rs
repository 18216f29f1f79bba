//! The embedded store: one redb file, so the router runs with no database server.
//!
//! Owns: mapping [`Op`]s onto redb tables (records as JSON values, keyed by id or name),
//! the id counter, leases and claims of one router, and turning redb's failures into clear
//! [`StoreError`]s (corrupt file, locked by another router, unwritable directory). Does not
//! own: batching, retrying or threading (`store`).
//!
//! One router per file (the file is locked), so there is nothing to sync: `changes()` is
//! always empty, and a claim only has to look at what this router stored before (a scan of
//! the bots; a cluster has thousands of bots at most, and claims are rare).
//!
//! A failed write (a full disk, an I/O error) leaves redb refusing every later transaction
//! until the file is opened again; the store then reopens it before its next call, so the
//! router writes again by itself once the fault is gone (redb is crash-safe: reopening after a
//! failed commit yields the last committed state).
//!
//! redb was chosen over SQLite because it is pure Rust (no C build step in CI), crash-safe
//! (copy-on-write B-trees, a commit is durable once `commit` returns) and takes an exclusive
//! lock on the file, so two routers can never write one embedded store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{now_ms, BotRecord, Change, Claim, Op, Snapshot, Store, StoreError, TemplateRecord};

const BOTS: TableDefinition<'static, u32, &'static [u8]> = TableDefinition::new("bots");
const TEMPLATES: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("templates");
const NODES: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("nodes");
const KEYS: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("keys");
const FENCES: TableDefinition<'static, (&'static str, u32), &'static [u8]> =
    TableDefinition::new("fences");
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
const AUDIT: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("audit");
const OPERATIONS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("operations");
/// Leases by name: holder and expiry (JSON [`Lease`]).
const LEASES: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("leases");
const ID_HIGH_WATER: &str = "id_high_water";

/// A lease as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    holder: String,
    /// Milliseconds since the Unix epoch.
    until_ms: u64,
}

/// How the reason of an open refused because another process holds the file's lock begins
/// (a graceful upgrade waits while it says so).
pub const ALREADY_OPEN: &str = "it is already open in another process";

/// The file name inside the configured directory.
pub const FILE_NAME: &str = "ts3ab-lb.redb";

/// A redb-backed [`Store`]. Its calls are made one at a time (by the store worker, or by
/// `store copy`), which is what lets [`EmbeddedStore::run`] close and reopen the file
/// between two calls: no transaction outlives the call that made it.
pub struct EmbeddedStore {
    /// None only between closing a failed database and opening it again.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// A call failed with an I/O error: reopen before the next one.
    broken: AtomicBool,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        let path = dir.join(FILE_NAME);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        let db = open_db(&path)?;
        Ok(EmbeddedStore {
            db: RwLock::new(Some(db)),
            path,
            broken: AtomicBool::new(false),
        })
    }

    /// The open database.
    fn db(&self) -> Result<MappedRwLockReadGuard<'_, Database>, StoreError> {
        RwLockReadGuard::try_map(self.db.read(), Option::as_ref)
            .map_err(|_| StoreError::Io(format!("{} is not open", self.path.display())))
    }

    /// Runs one call; after an I/O error the file is closed and opened again first (see the
    /// module documentation).
    fn run<T>(&self, call: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.broken.load(Ordering::Acquire) {
            let mut db = self.db.write();
            // Closed first: the file lock is released only when the old handle is dropped.
            *db = None;
            *db = Some(open_db(&self.path).map_err(|e| StoreError::Io(e.to_string()))?);
            self.broken.store(false, Ordering::Release);
            log::warn!(
                "reopened the store at {} after an I/O error",
                self.path.display()
            );
        }
        let r = call();
        if matches!(r, Err(StoreError::Io(_))) {
            self.broken.store(true, Ordering::Release);
        }
        r
    }

    fn load_sync(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db()?.begin_read().map_err(io)?;
        let mut snap = Snapshot::default();
        for item in tx.open_table(BOTS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snap.bots
                .push(decode(&format!("bot {}", k.value()), v.value())?);
        }
        for item in tx.open_table(TEMPLATES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snap.templates
                .push(decode(&format!("template {}", k.value()), v.value())?);
        }
        for item in tx.open_table(NODES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snap.nodes
                .push(decode(&format!("node {}", k.value()), v.value())?);
        }
        for item in tx.open_table(KEYS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snap.keys
                .push(decode(&format!("key {}", k.value()), v.value())?);
        }
        for item in tx.open_table(FENCES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let (node, bot) = k.value();
            snap.fences
                .push(decode(&format!("fence {node}/{bot}"), v.value())?);
        }
        for item in tx.open_table(AUDIT).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snap.audit
                .push(decode(&format!("audit {}", k.value()), v.value())?);
        }
        for item in tx.open_table(OPERATIONS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snap.operations
                .push(decode(&format!("operation {}", k.value()), v.value())?);
        }
        let meta = tx.open_table(META).map_err(io)?;
        let hw = meta
            .get(ID_HIGH_WATER)
            .map_err(io)?
            .map(|v| v.value())
            .unwrap_or(0);
        snap.id_high_water = u32::try_from(hw).map_err(|_| StoreError::Corrupt {
            what: ID_HIGH_WATER.into(),
            reason: format!("{hw} is out of range"),
        })?;
        Ok(snap)
    }

    fn apply_sync(&self, ops: &[Op]) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write().map_err(io)?;
        {
            let mut bots = tx.open_table(BOTS).map_err(io)?;
            let mut templates = tx.open_table(TEMPLATES).map_err(io)?;
            let mut nodes = tx.open_table(NODES).map_err(io)?;
            let mut keys = tx.open_table(KEYS).map_err(io)?;
            let mut fences = tx.open_table(FENCES).map_err(io)?;
            let mut meta = tx.open_table(META).map_err(io)?;
            let mut audit = tx.open_table(AUDIT).map_err(io)?;
            let mut operations = tx.open_table(OPERATIONS).map_err(io)?;
            for op in ops {
                match op {
                    Op::PutBot(b) => {
                        bots.insert(b.id, encode(b)?.as_slice()).map_err(io)?;
                    }
                    Op::DeleteBot(id) => {
                        bots.remove(*id).map_err(io)?;
                    }
                    Op::PatchBot(p) => {
                        let current = match bots.get(p.id).map_err(io)? {
                            Some(v) => {
                                Some(decode::<BotRecord>(&format!("bot {}", p.id), v.value())?)
                            }
                            None => None,
                        };
                        if let Some(mut rec) = current {
                            if p.apply_to(&mut rec) {
                                bots.insert(rec.id, encode(&rec)?.as_slice()).map_err(io)?;
                            }
                        }
                    }
                    Op::PutTemplate(t) => {
                        templates
                            .insert(t.name.as_str(), encode(t)?.as_slice())
                            .map_err(io)?;
                    }
                    Op::DeleteTemplate(name) => {
                        templates.remove(name.as_str()).map_err(io)?;
                    }
                    Op::PutNode(n) => {
                        nodes
                            .insert(n.name.as_str(), encode(n)?.as_slice())
                            .map_err(io)?;
                    }
                    Op::DeleteNode(name) => {
                        nodes.remove(name.as_str()).map_err(io)?;
                    }
                    Op::PutKey(k) => {
                        keys.insert(k.name.as_str(), encode(k)?.as_slice())
                            .map_err(io)?;
                    }
                    Op::DeleteKey(name) => {
                        keys.remove(name.as_str()).map_err(io)?;
                    }
                    Op::PutFence(f) => {
                        fences
                            .insert((f.node.as_str(), f.bot), encode(f)?.as_slice())
                            .map_err(io)?;
                    }
                    Op::DeleteFence(node, bot) => {
                        fences.remove((node.as_str(), *bot)).map_err(io)?;
                    }
                    Op::PutAudit(a) => {
                        audit.insert(a.seq, encode(a)?.as_slice()).map_err(io)?;
                    }
                    Op::PutOperation(o) => {
                        operations.insert(o.id, encode(o)?.as_slice()).map_err(io)?;
                    }
                    Op::DeleteOperation(id) => {
                        operations.remove(*id).map_err(io)?;
                    }
                    Op::RaiseIdHighWater(v) => {
                        let current = meta
                            .get(ID_HIGH_WATER)
                            .map_err(io)?
                            .map(|g| g.value())
                            .unwrap_or(0);
                        if u64::from(*v) > current {
                            meta.insert(ID_HIGH_WATER, u64::from(*v)).map_err(io)?;
                        }
                    }
                }
            }
        }
        tx.commit().map_err(io)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reserve_ids_sync(&self, count: u32) -> Result<u32, StoreError> {
        let tx = self.db()?.begin_write().map_err(io)?;
        let first = {
            let mut meta = tx.open_table(META).map_err(io)?;
            let first = meta
                .get(ID_HIGH_WATER)
                .map_err(io)?
                .map(|g| g.value())
                .unwrap_or(0);
            let next = first + u64::from(count);
            if next > u64::from(u32::MAX) {
                return Err(StoreError::Io(format!(
                    "cannot reserve {count} ids: the id space ends at {}",
                    u32::MAX
                )));
            }
            meta.insert(ID_HIGH_WATER, next).map_err(io)?;
            first
        };
        tx.commit().map_err(io)?;
        // Checked above: `first + count` fits a u32.
        u32::try_from(first).map_err(io)
    }

    fn acquire_lease_sync(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let tx = self.db()?.begin_write().map_err(io)?;
        {
            let mut leases = tx.open_table(LEASES).map_err(io)?;
            let current: Option<Lease> = match leases.get(name).map_err(io)? {
                Some(v) => Some(decode(&format!("lease {name}"), v.value())?),
                None => None,
            };
            if let Some(l) = current {
                if l.holder != holder && l.until_ms >= now {
                    return Ok(false);
                }
            }
            let lease = Lease {
                holder: holder.to_string(),
                until_ms: now.saturating_add(ttl.as_millis() as u64),
            };
            leases
                .insert(name, encode(&lease)?.as_slice())
                .map_err(io)?;
        }
        tx.commit().map_err(io)?;
        Ok(true)
    }

    fn release_lease_sync(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write().map_err(io)?;
        {
            let mut leases = tx.open_table(LEASES).map_err(io)?;
            let held = match leases.get(name).map_err(io)? {
                Some(v) => decode::<Lease>(&format!("lease {name}"), v.value())?.holder == holder,
                None => false,
            };
            if held {
                leases.remove(name).map_err(io)?;
            }
        }
        tx.commit().map_err(io)
    }

    fn claim_bot_sync(&self, bot: &BotRecord) -> Result<Claim<BotRecord>, StoreError> {
        let holder = {
            let tx = self.db()?.begin_read().map_err(io)?;
            let bots = tx.open_table(BOTS).map_err(io)?;
            let mut holder = None;
            for item in bots.iter().map_err(io)? {
                let (k, v) = item.map_err(io)?;
                let other: BotRecord = decode(&format!("bot {}", k.value()), v.value())?;
                if other.id != bot.id && same_instance(&other, bot) {
                    holder = Some(other);
                    break;
                }
            }
            holder
        };
        match holder {
            Some(other) => Ok(Claim::Lost(other)),
            None => {
                self.apply_sync(&[Op::PutBot(bot.clone())])?;
                Ok(Claim::Won)
            }
        }
    }

    fn claim_template_sync(&self, t: &TemplateRecord) -> Result<Claim<TemplateRecord>, StoreError> {
        let current: Option<TemplateRecord> = {
            let tx = self.db()?.begin_read().map_err(io)?;
            let templates = tx.open_table(TEMPLATES).map_err(io)?;
            let got = templates.get(t.name.as_str()).map_err(io)?;
            match got {
                Some(v) => Some(decode(&format!("template {}", t.name), v.value())?),
                None => None,
            }
        };
        match current {
            // A stored record is the template, wherever it is: never overwritten by a claim
            // (its settings and identity would be lost).
            Some(other) => Ok(Claim::Lost(other)),
            None => {
                self.apply_sync(&[Op::PutTemplate(t.clone())])?;
                Ok(Claim::Won)
            }
        }
    }

    fn clear_sync(&self) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write().map_err(io)?;
        // Deleting a table and opening it again is the cheapest way to empty it in redb.
        tx.delete_table(BOTS).map_err(io)?;
        tx.delete_table(TEMPLATES).map_err(io)?;
        tx.delete_table(NODES).map_err(io)?;
        tx.delete_table(KEYS).map_err(io)?;
        tx.delete_table(FENCES).map_err(io)?;
        tx.delete_table(META).map_err(io)?;
        tx.delete_table(AUDIT).map_err(io)?;
        tx.delete_table(OPERATIONS).map_err(io)?;
        tx.delete_table(LEASES).map_err(io)?;
        tx.open_table(BOTS).map_err(io)?;
        tx.open_table(TEMPLATES).map_err(io)?;
        tx.open_table(NODES).map_err(io)?;
        tx.open_table(KEYS).map_err(io)?;
        tx.open_table(FENCES).map_err(io)?;
        tx.open_table(META).map_err(io)?;
        tx.open_table(AUDIT).map_err(io)?;
        tx.open_table(OPERATIONS).map_err(io)?;
        tx.open_table(LEASES).map_err(io)?;
        tx.commit().map_err(io)
    }
}

/// Whether two records are the same bot instance: same slot under the same node start time
/// (a restarted node reuses local ids for new bots).
fn same_instance(a: &BotRecord, b: &BotRecord) -> bool {
    a.node == b.node
        && a.local_id == b.local_id
        && a.node_started.as_deref().unwrap_or("") == b.node_started.as_deref().unwrap_or("")
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.run(|| self.load_sync())
    }

    async fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.run(|| self.apply_sync(ops))
    }

    async fn reserve_ids(&self, count: u32) -> Result<u32, StoreError> {
        self.run(|| self.reserve_ids_sync(count))
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.run(|| self.acquire_lease_sync(name, holder, ttl))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.run(|| self.release_lease_sync(name, holder))
    }

    async fn claim_bot(&self, bot: &BotRecord) -> Result<Claim<BotRecord>, StoreError> {
        self.run(|| self.claim_bot_sync(bot))
    }

    async fn claim_template(
        &self,
        t: &TemplateRecord,
    ) -> Result<Claim<TemplateRecord>, StoreError> {
        self.run(|| self.claim_template_sync(t))
    }

    async fn changes(&self) -> Result<Vec<Change>, StoreError> {
        // The file is locked to this router: nobody else can have changed anything.
        Ok(Vec::new())
    }

    fn shared(&self) -> bool {
        false
    }

    async fn clear(&self) -> Result<(), StoreError> {
        self.run(|| self.clear_sync())
    }
}

/// Opens (or creates) the database file with every table, naming the file in every error.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    let open_err = |reason: String| StoreError::Open {
        path: path.display().to_string(),
        reason,
    };
    let damaged = |m: String| {
        open_err(format!(
            "the file is damaged ({m}); restore it from a backup (a copy of the file taken while \
             the router was stopped, or `ts3ab-lb store copy` from a MongoDB or another copy) or \
             move it away to start empty"
        ))
    };
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            open_err(format!("{ALREADY_OPEN} (is another router using it?)"))
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => damaged(m),
        // redb reads a header it cannot make sense of as invalid data.
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            damaged(e.to_string())
        }
        other => open_err(other.to_string()),
    })?;
    // Create every table up front so reads never meet a missing one.
    let tx = db.begin_write().map_err(|e| open_err(e.to_string()))?;
    {
        tx.open_table(BOTS).map_err(|e| open_err(e.to_string()))?;
        tx.open_table(TEMPLATES)
            .map_err(|e| open_err(e.to_string()))?;
        tx.open_table(NODES).map_err(|e| open_err(e.to_string()))?;
        tx.open_table(KEYS).map_err(|e| open_err(e.to_string()))?;
        tx.open_table(FENCES).map_err(|e| open_err(e.to_string()))?;
        tx.open_table(META).map_err(|e| open_err(e.to_string()))?;
        tx.open_table(AUDIT).map_err(|e| open_err(e.to_string()))?;
        tx.open_table(OPERATIONS)
            .map_err(|e| open_err(e.to_string()))?;
        tx.open_table(LEASES).map_err(|e| open_err(e.to_string()))?;
    }
    tx.commit().map_err(|e| open_err(e.to_string()))?;
    Ok(db)
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(io)
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::store::{
        BotRecord, FenceRecord, Identity, KeyRecord, NodeRecord, StoreHandle, TemplateRecord,
    };
    use std::time::Duration;

    fn bot(id: u32) -> BotRecord {
        BotRecord {
            id,
            node: "node-1".into(),
            local_id: id,
            template: None,
            address: Some("ts.example.com".into()),
            server_password: None,
            channel: None,
            nickname: None,
            identity: Some(Identity {
                key: "k".into(),
                offset: 1,
                level: -1,
            }),
            created_ms: 7,
            node_started: Some("2026-12-01T10:00:00Z".into()),
            owner: None,
        }
    }

    #[test]
    fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = EmbeddedStore::open(dir.path()).expect("open");
            s.apply_sync(&[
                Op::PutBot(bot(1)),
                Op::PutBot(bot(2)),
                Op::DeleteBot(1),
                Op::PutTemplate(TemplateRecord {
                    name: "t".into(),
                    node: "node-1".into(),
                    settings: [("connect.name".to_string(), "Bob".to_string())].into(),
                    identity: None,
                    owner: None,
                }),
                Op::PutNode(NodeRecord {
                    name: "n9".into(),
                    url: "http://127.0.0.1:9".into(),
                    auth: None,
                    capacity: 5,
                    draining: true,
                    state: crate::store::NodeState::Drain,
                    from_config: false,
                    agent: None,
                    ca_file: None,
                    tls_host: None,
                }),
                Op::PutKey(KeyRecord {
                    name: "k".into(),
                    secret: None,
                    digest: Some("00ff".into()),
                    role: Role::Admin,
                    created_ms: 1,
                    last_used_ms: None,
                    scope: Default::default(),
                    max_bots: None,
                    allow_from: Vec::new(),
                }),
                Op::RaiseIdHighWater(100),
                Op::RaiseIdHighWater(50),
                Op::PutFence(fence("node-1", 4)),
                Op::PutFence(fence("node-1", 5)),
                Op::PutFence(fence("node/2", 4)),
                Op::DeleteFence("node-1".into(), 4),
            ])
            .expect("apply");
        }
        let s = EmbeddedStore::open(dir.path()).expect("reopen");
        let snap = s.load_sync().expect("load");
        assert_eq!(snap.bots, vec![bot(2)]);
        assert_eq!(snap.templates[0].settings["connect.name"], "Bob");
        assert!(snap.nodes[0].draining);
        assert_eq!(snap.keys[0].role, Role::Admin);
        assert_eq!(snap.id_high_water, 100);
        assert_eq!(snap.fences, vec![fence("node-1", 5), fence("node/2", 4)]);
    }

    fn fence(node: &str, bot: u32) -> FenceRecord {
        FenceRecord {
            node: node.into(),
            bot,
            local_id: 3,
            template: Some("t".into()),
            address: None,
        }
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = EmbeddedStore::open(dir.path()).expect("open");
        let err = EmbeddedStore::open(dir.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("already open"), "{err}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"this is not a redb file at all, not even close",
        )
        .expect("write");
        let err = EmbeddedStore::open(dir.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains(FILE_NAME), "{err}");
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").expect("write");
        // A path below a regular file can never be created, whatever our privileges.
        let err = EmbeddedStore::open(&blocker.join("sub"))
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("cannot create the directory"), "{err}");
    }

    #[test]
    fn corrupt_record_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = EmbeddedStore::open(dir.path()).expect("open");
        let tx = s.db().expect("db").begin_write().expect("tx");
        {
            let mut t = tx.open_table(BOTS).expect("table");
            t.insert(9, b"{not json".as_slice()).expect("insert");
        }
        tx.commit().expect("commit");
        let err = s.load_sync().expect_err("corrupt").to_string();
        assert!(err.contains("bot 9"), "{err}");
    }

    #[tokio::test]
    async fn handle_batches_and_orders_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        for i in 0..100 {
            h.submit(vec![Op::PutBot(bot(i))]);
        }
        h.submit(vec![Op::DeleteBot(5)]);
        h.commit(vec![Op::RaiseIdHighWater(100)], Duration::from_secs(5))
            .await
            .expect("commit");
        let snap = h.load().await.expect("load");
        assert_eq!(snap.bots.len(), 99);
        assert!(snap.bots.iter().all(|b| b.id != 5));
        assert_eq!(snap.id_high_water, 100);
    }

    /// The graceful upgrade's hand-over: what was submitted before `close` is written, the
    /// file's lock is free once it returns (another handle opens it), later calls fail.
    #[tokio::test]
    async fn close_writes_the_queue_and_releases_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        for i in 0..50 {
            h.submit(vec![Op::PutBot(bot(i))]);
        }
        h.close(Duration::from_secs(5)).await.expect("close");
        let next = EmbeddedStore::open(dir.path()).expect("the lock is free after close");
        assert_eq!(next.load_sync().expect("load").bots.len(), 50);
        assert!(matches!(
            h.flush(Duration::from_secs(1)).await,
            Err(crate::store::StoreError::Closed)
        ));
        h.close(Duration::from_secs(1))
            .await
            .expect("closing twice");
    }
}
