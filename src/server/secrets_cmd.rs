//! `ts3ab-lb store new-key` and `ts3ab-lb store rekey`: making a secrets key and rotating the
//! key a store's secrets are sealed with.
//!
//! Owns: writing a fresh key file (mode 0600, never over an existing file) and the rotation:
//! every record that can hold a secret is read with the configured (old) key and written
//! again sealed with the new one, then read back with the new key alone and compared. The
//! routers must be stopped (the embedded file is locked by a running router; routers on
//! MongoDB would write with the old key meanwhile). Does not own: sealing itself
//! (`store::sealed`) or naming stores (`store_cmd`).
//!
//! A rotation cut short (a crash, a lost database connection) leaves records under both
//! keys; it opens values sealed with either, so running it again finishes the job. Until it
//! has, a router refuses to start, naming the key it cannot open.

use std::io::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::server::store_cmd::StoreSpec;
use crate::server::sync::secrets_key;
use crate::store::sealed::{Sealer, SecretsKey};
use crate::store::{Op, Snapshot, Store};

/// Records written per batch (and per progress line).
const CHUNK: usize = 500;

/// Writes a new random key to `out` (created with mode 0600; an existing file is refused).
/// Returns the key's id.
pub fn new_key(out: &Path) -> Result<String, String> {
    let key = SecretsKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    writeln!(file, "{}", key.to_text())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(key.id().to_string())
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Records written again (bots, templates, nodes).
    pub records: usize,
    /// The old key's id (None: the store held secrets in plain text).
    pub old: Option<String>,
    /// The new key's id.
    pub new: String,
}

/// Seals the store `config` names with the key in `new_key_file` (see the module doc).
pub fn rekey(
    config: &Config,
    new_key_file: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<RekeyReport, String> {
    let old = secrets_key(config).map_err(|e| e.to_string())?;
    let new = SecretsKey::from_file(new_key_file).map_err(|e| e.to_string())?;
    let spec = StoreSpec::from_config(config);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(async {
            let store = spec.open().await.map_err(|e| e.to_string())?;
            rekey_store(store.as_ref(), old, new, progress).await
        })
}

/// The rotation on an opened (raw) store.
pub async fn rekey_store(
    store: &dyn Store,
    old: Option<SecretsKey>,
    new: SecretsKey,
    progress: &mut dyn FnMut(&str),
) -> Result<RekeyReport, String> {
    let old_id = old.as_ref().map(|k| k.id().to_string());
    let mut reader = Sealer::new(Some(new.clone()));
    if let Some(old) = old {
        reader = reader.also_opening(old);
    }
    let writer = Sealer::new(Some(new.clone()));
    let raw = store.load().await.map_err(|e| e.to_string())?;
    let opened = reader
        .open_snapshot(raw)
        .map_err(|e| format!("cannot read the store's secrets: {e}"))?;
    let ops: Vec<Op> = opened
        .bots
        .iter()
        .map(|b| Op::PutBot(b.clone()))
        .chain(opened.templates.iter().map(|t| Op::PutTemplate(t.clone())))
        .chain(opened.nodes.iter().map(|n| Op::PutNode(n.clone())))
        .collect();
    let total = ops.len();
    let mut done = 0;
    for chunk in ops.chunks(CHUNK) {
        let sealed = chunk
            .iter()
            .map(|op| writer.seal_op(op))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        store.apply(&sealed).await.map_err(|e| e.to_string())?;
        done += chunk.len();
        progress(&format!("re-sealed {done}/{total} records"));
    }
    let back = writer
        .open_snapshot(store.load().await.map_err(|e| e.to_string())?)
        .map_err(|e| format!("the store does not open with the new key alone: {e}"))?;
    if !same_secrets(&back, &opened) {
        return Err("the records read back differ from the ones written".into());
    }
    Ok(RekeyReport {
        records: total,
        old: old_id,
        new: new.id().to_string(),
    })
}

fn same_secrets(a: &Snapshot, b: &Snapshot) -> bool {
    a.bots == b.bots && a.templates == b.templates && a.nodes == b.nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::sealed::SealedStore;
    use crate::store::{BotRecord, Identity};

    fn bot(id: u32) -> BotRecord {
        BotRecord {
            id,
            node: "n1".into(),
            local_id: id,
            template: None,
            address: Some("ts.example".into()),
            server_password: Some(format!("pw-{id}")),
            channel: None,
            nickname: None,
            identity: Some(Identity {
                key: format!("identity-key-{id}"),
                offset: 1,
                level: 8,
            }),
            created_ms: 1,
            node_started: None,
            owner: None,
        }
    }

    fn raw_file(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(e.unwrap().path()).unwrap());
        }
        all
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn rotation_reseals_everything_and_is_safe_to_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (SecretsKey::generate(), SecretsKey::generate());
        {
            let s = SealedStore::new(
                Box::new(EmbeddedStore::open(dir.path()).unwrap()),
                Sealer::new(Some(k1.clone())),
            );
            s.apply(&[Op::PutBot(bot(1)), Op::PutBot(bot(2))])
                .await
                .unwrap();
        }
        let raw = EmbeddedStore::open(dir.path()).unwrap();
        // A rotation cut short: bot 1 already under the new key, bot 2 still under the old.
        let half = Sealer::new(Some(k2.clone()));
        raw.apply(&[Op::PutBot(half.seal_bot(&bot(1)).unwrap())])
            .await
            .unwrap();
        let r = rekey_store(&raw, Some(k1.clone()), k2.clone(), &mut |_| {})
            .await
            .unwrap();
        assert_eq!(r.records, 2);
        drop(raw);
        let opened = SealedStore::new(
            Box::new(EmbeddedStore::open(dir.path()).unwrap()),
            Sealer::new(Some(k2.clone())),
        );
        assert_eq!(opened.load().await.unwrap().bots, vec![bot(1), bot(2)]);
        drop(opened);
        let old = SealedStore::new(
            Box::new(EmbeddedStore::open(dir.path()).unwrap()),
            Sealer::new(Some(k1.clone())),
        );
        let e = old.load().await.unwrap_err().to_string();
        assert!(e.contains(k2.id()), "{e}");
        drop(old);
        let bytes = raw_file(dir.path());
        assert!(!contains(&bytes, "pw-1") && !contains(&bytes, "identity-key-2"));
    }

    #[tokio::test]
    async fn a_plain_store_is_sealed_when_a_key_is_first_set() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SealedStore::new(
                Box::new(EmbeddedStore::open(dir.path()).unwrap()),
                Sealer::new(None),
            );
            s.apply(&[Op::PutBot(bot(3))]).await.unwrap();
        }
        assert!(contains(&raw_file(dir.path()), "identity-key-3"));
        let k = SecretsKey::generate();
        let s = SealedStore::new(
            Box::new(EmbeddedStore::open(dir.path()).unwrap()),
            Sealer::new(Some(k)),
        );
        assert_eq!(s.load().await.unwrap().bots, vec![bot(3)]);
        drop(s);
        let bytes = raw_file(dir.path());
        assert!(
            !contains(&bytes, "identity-key-3") && !contains(&bytes, "pw-3"),
            "the first load with a key seals what was stored in plain text"
        );
    }

    #[test]
    fn a_new_key_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        let id = new_key(&f).unwrap();
        assert_eq!(SecretsKey::from_file(&f).unwrap().id(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(new_key(&f).unwrap_err().contains("cannot create"));
    }
}
