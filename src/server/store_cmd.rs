//! `ts3ab-lb store copy`: moves a cluster's state between the embedded store and MongoDB.
//!
//! Owns: naming a store on the command line (a config file's `storage`, a `mongodb://` URI,
//! or an embedded store's directory), copying every record and the id counter from one
//! store to another, refusing to overwrite a non-empty target unless told to, showing
//! progress, and verifying the copy (counts per record kind and a checksum over every
//! record, both read back from the target). Does not own: the stores (`store`).
//!
//! Both stores are opened on one runtime of the command's own (a MongoDB client must stay on
//! the runtime it was made on); the routers using them should be stopped (the embedded file
//! is locked by a running router anyway).

use std::fmt::Write as _;
use std::path::Path;

use blake2::{Blake2s256, Digest};
use serde::Serialize;

use crate::config::{redact_uri, Config, StorageConfig};
use crate::store::embedded::EmbeddedStore;
use crate::store::mongo::MongoStore;
use crate::store::{Op, Snapshot, Store, StoreError};

/// Records written per batch (and per progress line).
const CHUNK: usize = 500;

/// What `store copy` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Records per kind, as read back from the target.
    pub counts: Counts,
    /// The checksum over every record (equal on both sides).
    pub checksum: String,
    /// The id counter the target continues from.
    pub id_high_water: u32,
}

/// How many records of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bots.
    pub bots: usize,
    /// Templates.
    pub templates: usize,
    /// Nodes added or changed at run time.
    pub nodes: usize,
    /// Keys added at run time.
    pub keys: usize,
    /// Copies to fence.
    pub fences: usize,
    /// Audit entries.
    pub audit: usize,
    /// Admin operations.
    pub operations: usize,
}

impl Counts {
    fn of(s: &Snapshot) -> Counts {
        Counts {
            bots: s.bots.len(),
            templates: s.templates.len(),
            nodes: s.nodes.len(),
            keys: s.keys.len(),
            fences: s.fences.len(),
            audit: s.audit.len(),
            operations: s.operations.len(),
        }
    }

    fn total(&self) -> usize {
        self.bots
            + self.templates
            + self.nodes
            + self.keys
            + self.fences
            + self.audit
            + self.operations
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bots, {} templates, {} nodes, {} keys, {} fences, {} audit entries, {} operations",
            self.bots,
            self.templates,
            self.nodes,
            self.keys,
            self.fences,
            self.audit,
            self.operations
        )
    }
}

/// A store named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// An embedded store's directory.
    Embedded(String),
    /// MongoDB: URI and database.
    Mongodb {
        /// Connection string (secret).
        uri: String,
        /// Database.
        database: String,
    },
}

impl StoreSpec {
    /// `mongodb://…/<database>` (default database `ts3ab_lb`), a YAML config file (its
    /// `storage`), or an embedded store's directory.
    pub fn parse(arg: &str) -> Result<StoreSpec, String> {
        if arg.starts_with("mongodb://") || arg.starts_with("mongodb+srv://") {
            let after = arg.split_once("://").map_or("", |(_, r)| r);
            let database = after
                .split_once('/')
                .map(|(_, p)| p.split('?').next().unwrap_or(""))
                .filter(|d| !d.is_empty())
                .unwrap_or("ts3ab_lb")
                .to_string();
            return Ok(StoreSpec::Mongodb {
                uri: arg.to_string(),
                database,
            });
        }
        let path = Path::new(arg);
        if path.is_dir() {
            return Ok(StoreSpec::Embedded(arg.to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("{arg}: not a mongodb:// URI, a config file or a store directory ({e})")
        })?;
        let config = Config::from_yaml(&text, &|k| std::env::var(k).ok())
            .map_err(|e| format!("{arg}: {e}"))?;
        Ok(StoreSpec::from_config(&config))
    }

    /// The store a config's `storage` names.
    pub fn from_config(config: &Config) -> StoreSpec {
        match &config.storage {
            StorageConfig::Embedded { path } => StoreSpec::Embedded(path.clone()),
            StorageConfig::Mongodb(m) => StoreSpec::Mongodb {
                uri: m.uri.clone(),
                database: m.database.clone(),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            StoreSpec::Embedded(p) => format!("the embedded store in {p}"),
            StoreSpec::Mongodb { uri, database } => {
                format!("MongoDB database {database} at {}", redact_uri(uri))
            }
        }
    }

    /// Opens it as it is stored (secrets sealed or not, as they are).
    pub async fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        let id = format!("store-copy-{}", std::process::id());
        Ok(match self {
            StoreSpec::Embedded(p) => Box::new(EmbeddedStore::open(Path::new(p))?),
            StoreSpec::Mongodb { uri, database } => {
                Box::new(MongoStore::open(uri, database, &id).await?)
            }
        })
    }
}

/// The command: progress on stderr, the result on stdout.
pub fn run(from: &str, to: &str, overwrite: bool) -> Result<(), String> {
    let (f, t) = (StoreSpec::parse(from)?, StoreSpec::parse(to)?);
    let report = copy(&f, &t, overwrite, &mut |line| eprintln!("{line}"))?;
    println!(
        "copied {} (checksum {}, ids continue from {})",
        report.counts, report.checksum, report.id_high_water
    );
    Ok(())
}

/// Copies everything from `from` to `to`; `progress` gets one line per step.
pub fn copy(
    from: &StoreSpec,
    to: &StoreSpec,
    overwrite: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<CopyReport, String> {
    if from == to {
        return Err("--from and --to name the same store".into());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(copy_async(from, to, overwrite, progress))
}

async fn copy_async(
    from: &StoreSpec,
    to: &StoreSpec,
    overwrite: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<CopyReport, String> {
    let src = from
        .open()
        .await
        .map_err(|e| format!("{}: {e}", from.describe()))?;
    let dst = to
        .open()
        .await
        .map_err(|e| format!("{}: {e}", to.describe()))?;
    let mut snap = src
        .load()
        .await
        .map_err(|e| format!("reading {}: {e}", from.describe()))?;
    if renumber_audit(&mut snap.audit) {
        // Several routers each number their own trail; the copy holds one sequence (the
        // embedded file keys entries by number, and this command writes as one router).
        progress("the audit entries of several routers are numbered afresh, in time order");
    }
    let want = Counts::of(&snap);
    let want_sum = checksum(&snap);
    progress(&format!("read {} from {}", want, from.describe()));
    let existing = dst
        .load()
        .await
        .map_err(|e| format!("reading {}: {e}", to.describe()))?;
    let there = Counts::of(&existing);
    if there.total() > 0 || existing.id_high_water > 0 {
        if !overwrite {
            return Err(format!(
                "{} is not empty ({there}, ids up to {}); pass --overwrite to replace it",
                to.describe(),
                existing.id_high_water
            ));
        }
        dst.clear()
            .await
            .map_err(|e| format!("clearing {}: {e}", to.describe()))?;
        progress(&format!("cleared {} ({there})", to.describe()));
    }
    // Ids never go below what the source handed out, whatever its records say.
    let high_water = snap.id_high_water.max(
        snap.bots
            .iter()
            .map(|b| b.id.saturating_add(1))
            .max()
            .unwrap_or(0),
    );
    let mut ops: Vec<Op> = Vec::with_capacity(want.total() + 1);
    ops.push(Op::RaiseIdHighWater(high_water));
    ops.extend(snap.nodes.iter().cloned().map(Op::PutNode));
    ops.extend(snap.keys.iter().cloned().map(Op::PutKey));
    ops.extend(snap.templates.iter().cloned().map(Op::PutTemplate));
    ops.extend(snap.bots.iter().cloned().map(Op::PutBot));
    ops.extend(snap.fences.iter().cloned().map(Op::PutFence));
    ops.extend(snap.operations.iter().cloned().map(Op::PutOperation));
    ops.extend(snap.audit.iter().cloned().map(Op::PutAudit));
    let total = ops.len();
    let mut done = 0;
    for chunk in ops.chunks(CHUNK) {
        dst.apply(chunk).await.map_err(|e| {
            format!(
                "writing {}: {e} (after {done} of {total} records)",
                to.describe()
            )
        })?;
        done += chunk.len();
        progress(&format!("wrote {done} of {total} records"));
    }
    let back = dst
        .load()
        .await
        .map_err(|e| format!("reading back {}: {e}", to.describe()))?;
    let got = Counts::of(&back);
    let got_sum = checksum(&back);
    if got != want || got_sum != want_sum {
        return Err(format!(
            "the copy does not match: {} holds {got} (checksum {got_sum}), {} holds {want} (checksum {want_sum})",
            to.describe(),
            from.describe()
        ));
    }
    if back.id_high_water < high_water {
        return Err(format!(
            "the copy's id counter is {} but ids up to {high_water} were handed out",
            back.id_high_water
        ));
    }
    progress(&format!("verified: {got}, checksum {got_sum}"));
    Ok(CopyReport {
        counts: got,
        checksum: got_sum,
        id_high_water: back.id_high_water,
    })
}

/// Gives audit entries one sequence in time order when their numbers repeat (the trails of
/// several routers); returns whether it did.
fn renumber_audit(audit: &mut [crate::store::AuditRecord]) -> bool {
    let mut seen = std::collections::HashSet::new();
    if audit.iter().all(|a| seen.insert(a.seq)) {
        return false;
    }
    audit.sort_by_key(|a| (a.at_ms, a.seq));
    for (a, seq) in audit.iter_mut().zip(1u64..) {
        a.seq = seq;
    }
    true
}

/// A checksum over every record, independent of the order a store returns them in.
pub fn checksum(s: &Snapshot) -> String {
    fn sorted<T: Serialize, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
        let mut v: Vec<&T> = items.iter().collect();
        v.sort_by_key(|x| key(x));
        v
    }
    let mut h = Blake2s256::new();
    let mut feed = |label: &str, json: Result<String, serde_json::Error>| {
        h.update(label.as_bytes());
        h.update(json.unwrap_or_default().as_bytes());
    };
    feed("bots", serde_json::to_string(&sorted(&s.bots, |b| b.id)));
    feed(
        "templates",
        serde_json::to_string(&sorted(&s.templates, |t| t.name.clone())),
    );
    feed(
        "nodes",
        serde_json::to_string(&sorted(&s.nodes, |n| n.name.clone())),
    );
    feed(
        "keys",
        serde_json::to_string(&sorted(&s.keys, |k| k.name.clone())),
    );
    feed(
        "fences",
        serde_json::to_string(&sorted(&s.fences, |f| (f.node.clone(), f.bot))),
    );
    feed("audit", serde_json::to_string(&sorted(&s.audit, |a| a.seq)));
    feed(
        "operations",
        serde_json::to_string(&sorted(&s.operations, |o| o.id)),
    );
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_parsed() {
        assert_eq!(
            StoreSpec::parse("mongodb://u:p@db1,db2/cluster?replicaSet=rs0").unwrap(),
            StoreSpec::Mongodb {
                uri: "mongodb://u:p@db1,db2/cluster?replicaSet=rs0".into(),
                database: "cluster".into()
            }
        );
        assert_eq!(
            StoreSpec::parse("mongodb://db1/?replicaSet=rs0").unwrap(),
            StoreSpec::Mongodb {
                uri: "mongodb://db1/?replicaSet=rs0".into(),
                database: "ts3ab_lb".into()
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert_eq!(
            StoreSpec::parse(&d).unwrap(),
            StoreSpec::Embedded(d.clone())
        );
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, "storage: {kind: embedded, path: /x/y}\n").unwrap();
        assert_eq!(
            StoreSpec::parse(&cfg.display().to_string()).unwrap(),
            StoreSpec::Embedded("/x/y".into())
        );
        std::fs::write(&cfg, "storage: {kind: nope}\n").unwrap();
        let e = StoreSpec::parse(&cfg.display().to_string()).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = StoreSpec::parse("/no/such/thing").unwrap_err();
        assert!(e.contains("not a mongodb:// URI"), "{e}");
    }

    #[test]
    fn repeated_audit_numbers_are_renumbered_in_time_order() {
        let entry = |seq: u64, at_ms: u64| crate::store::AuditRecord {
            seq,
            at_ms,
            who: "a".into(),
            from: String::new(),
            action: "x".into(),
            target: None,
            status: 200,
            outcome: "ok".into(),
        };
        let mut one = vec![entry(1, 10), entry(2, 20)];
        assert!(!renumber_audit(&mut one));
        let mut two = vec![entry(1, 30), entry(1, 10), entry(2, 20)];
        assert!(renumber_audit(&mut two));
        let got: Vec<(u64, u64)> = two.iter().map(|a| (a.seq, a.at_ms)).collect();
        assert_eq!(got, vec![(1, 10), (2, 20), (3, 30)]);
    }

    #[test]
    fn checksum_ignores_order_and_sees_every_field() {
        let bot = |id: u32, nick: &str| crate::store::BotRecord {
            id,
            node: "n".into(),
            local_id: id,
            template: None,
            address: Some("a".into()),
            server_password: None,
            channel: None,
            nickname: Some(nick.into()),
            identity: None,
            created_ms: 1,
            node_started: None,
            owner: None,
        };
        let a = Snapshot {
            bots: vec![bot(1, "x"), bot(2, "y")],
            ..Snapshot::default()
        };
        let b = Snapshot {
            bots: vec![bot(2, "y"), bot(1, "x")],
            ..Snapshot::default()
        };
        let c = Snapshot {
            bots: vec![bot(2, "y"), bot(1, "z")],
            ..Snapshot::default()
        };
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a), checksum(&c));
        assert_ne!(checksum(&a), checksum(&Snapshot::default()));
    }

    #[test]
    fn embedded_to_embedded_copies_verifies_and_refuses_to_overwrite() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let s1 = StoreSpec::Embedded(d1.path().display().to_string());
        let s2 = StoreSpec::Embedded(d2.path().display().to_string());
        {
            let src = EmbeddedStore::open(d1.path()).unwrap();
            let bot = crate::store::BotRecord {
                id: 7,
                node: "n".into(),
                local_id: 0,
                template: Some("t".into()),
                address: None,
                server_password: None,
                channel: None,
                nickname: None,
                identity: None,
                created_ms: 1,
                node_started: None,
                owner: None,
            };
            futures::executor::block_on(src.apply(&[Op::PutBot(bot), Op::RaiseIdHighWater(1024)]))
                .unwrap();
        }
        let mut lines = Vec::new();
        let r = copy(&s1, &s2, false, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(r.counts.bots, 1);
        assert!(r.id_high_water >= 1024);
        assert!(lines.iter().any(|l| l.starts_with("verified")), "{lines:?}");
        let e = copy(&s1, &s2, false, &mut |_| {}).unwrap_err();
        assert!(e.contains("--overwrite"), "{e}");
        assert_eq!(copy(&s1, &s2, true, &mut |_| {}).unwrap(), r);
        let e = copy(&s1, &s1, true, &mut |_| {}).unwrap_err();
        assert!(e.contains("same store"), "{e}");
    }
}
