//! Secrets at rest: the TeamSpeak identity keys, server and channel passwords, node tokens and
//! agent tokens a store holds are sealed with a key the operator supplies, so a copy of the
//! database alone (the redb file, a MongoDB dump or backup) reveals none of them.
//!
//! Owns: [`SecretsKey`] (reading it from a file or the environment's text, its short id),
//! [`Sealer`] (sealing and opening every secret field of every record and op, pure), and
//! [`SealedStore`], a [`Store`] that wraps a backend and seals on the way in and opens on the
//! way out, so both backends get the same treatment and neither knows about it. It runs on
//! the store worker like any store, never on the request path.
//! Does not own: where the key comes from in the config (`config`, `server::sync`) or
//! rotating it (`server::store_cmd`).
//!
//! A sealed value is the text `$ts3ab-sealed$v1$<key id>$<base64url(nonce ‖ ciphertext)>`
//! (XChaCha20-Poly1305, a random 192-bit nonce per value, the field's kind as associated
//! data so a sealed value cannot be moved into another kind of field). Values are sealed one
//! by one rather than whole records, so the records keep their shape (the MongoDB queries on
//! node, template and id keep working) and only the secrets are unreadable.
//! Without a key the router stores secrets as they are, and refuses to start on a store that
//! holds sealed ones (it could not rebuild a bot without its identity). With a key, plain
//! secrets found at start (a store written before the key was set) are sealed at once.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;

use crate::protocol::settings::is_secret_path;
use crate::store::{
    BotPatch, BotRecord, Change, Claim, NodeRecord, Op, Snapshot, Store, StoreError, TemplateRecord,
};

/// What every sealed value starts with.
const PREFIX: &str = "$ts3ab-sealed$v1$";
/// Nonce length of XChaCha20-Poly1305.
const NONCE: usize = 24;

/// The operator's secrets key: 32 bytes, written as base64 (what `ts3ab-lb store new-key`
/// makes).
#[derive(Clone)]
pub struct SecretsKey {
    bytes: [u8; 32],
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

impl SecretsKey {
    /// A key from its text (base64 of 32 bytes; surrounding white space is ignored). `what`
    /// names where it came from in the error.
    pub fn from_text(text: &str, what: &str) -> Result<SecretsKey, StoreError> {
        let bad = |why: &str| {
            StoreError::Secrets(format!(
                "{what}: {why} (make a key with `ts3ab-lb store new-key --out FILE`)"
            ))
        };
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|_| bad("is not base64 text"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("must be 32 bytes (44 characters of base64)"))?;
        Ok(SecretsKey::from_bytes(bytes))
    }

    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<SecretsKey, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Secrets(format!(
                "cannot read the secrets key file {}: {e}",
                path.display()
            ))
        })?;
        SecretsKey::from_text(&text, &format!("the secrets key file {}", path.display()))
    }

    /// A fresh random key.
    pub fn generate() -> SecretsKey {
        SecretsKey::from_bytes(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    fn from_bytes(bytes: [u8; 32]) -> SecretsKey {
        // The id tells keys apart in messages and sealed values without revealing the key.
        let mut h = Blake2s256::new();
        h.update(b"ts3ab-lb secrets key id\0");
        h.update(bytes);
        let id = h.finalize()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        SecretsKey { bytes, id }
    }

    /// The key as the text a key file holds.
    pub fn to_text(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// A short public name of the key (8 hex digits of a hash of it).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Seals and opens the secret fields of records with one key, or with none (then secrets are
/// written as they are and a sealed one cannot be opened).
#[derive(Clone, Debug)]
pub struct Sealer {
    key: Option<SecretsKey>,
    /// Keys that may also open values (never seal): the old key during `store rekey`, so a
    /// rotation cut short can simply be run again.
    also_open: Vec<SecretsKey>,
}

/// The kinds of secret fields (the associated data of their sealed values).
mod field {
    pub const SERVER_PASSWORD: &str = "server_password";
    pub const IDENTITY_KEY: &str = "identity.key";
    pub const NODE_AUTH: &str = "node.auth";
    pub const AGENT_TOKEN: &str = "agent.token";
    pub const SETTING: &str = "setting";
}

/// Whether a stored value is sealed.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

impl Sealer {
    /// A sealer for `key` (None: secrets stay as they are).
    pub fn new(key: Option<SecretsKey>) -> Sealer {
        Sealer {
            key,
            also_open: Vec::new(),
        }
    }

    /// The same sealer, also opening values sealed with `old`.
    pub fn also_opening(mut self, old: SecretsKey) -> Sealer {
        self.also_open.push(old);
        self
    }

    /// The key's id, if there is a key.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id())
    }

    fn seal_value(&self, kind: &str, value: &str) -> Result<String, StoreError> {
        let Some(key) = &self.key else {
            return Ok(value.to_string());
        };
        if is_sealed(value) {
            // Already sealed (a record read back and written again unchanged).
            return Ok(value.to_string());
        }
        let cipher = XChaCha20Poly1305::new((&key.bytes).into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: kind.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Secrets("sealing a secret failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}${}",
            key.id(),
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Opens one value; `what` names the record in errors.
    fn open_value(&self, kind: &str, value: &str, what: &str) -> Result<String, StoreError> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_string());
        };
        let (id, blob) = rest.split_once('$').ok_or_else(|| {
            StoreError::Secrets(format!("the sealed secret of {what} is damaged"))
        })?;
        let key = match self.key.as_ref().filter(|k| k.id() != id) {
            Some(_) => self
                .also_open
                .iter()
                .find(|k| k.id() == id)
                .or(self.key.as_ref()),
            None => self.key.as_ref(),
        };
        let key = match key {
            None => {
                return Err(StoreError::Secrets(format!(
                    "the store holds secrets sealed with key {id} ({what}) and no secrets key is \
                     configured: set secrets.key_file or secrets.key_env"
                )))
            }
            Some(k) if k.id() != id => {
                return Err(StoreError::Secrets(format!(
                    "the store's secrets are sealed with key {id} ({what}), the configured \
                     secrets key is {}: configure the key the store was sealed with (or \
                     rotate with `ts3ab-lb store rekey`)",
                    k.id()
                )))
            }
            Some(k) => k,
        };
        let blob = URL_SAFE_NO_PAD
            .decode(blob)
            .ok()
            .filter(|b| b.len() > NONCE)
            .ok_or_else(|| {
                StoreError::Secrets(format!("the sealed secret of {what} is damaged"))
            })?;
        let (nonce, sealed) = blob.split_at(NONCE);
        let cipher = XChaCha20Poly1305::new((&key.bytes).into());
        let plain = cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: sealed,
                    aad: kind.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Secrets(format!(
                    "the sealed secret of {what} does not open with key {id}: the store was \
                     edited or damaged"
                ))
            })?;
        String::from_utf8(plain)
            .map_err(|_| StoreError::Secrets(format!("the sealed secret of {what} is not text")))
    }

    fn map_opt(
        &self,
        v: &mut Option<String>,
        kind: &str,
        what: &str,
        seal: bool,
    ) -> Result<(), StoreError> {
        if let Some(s) = v {
            *s = if seal {
                self.seal_value(kind, s)?
            } else {
                self.open_value(kind, s, what)?
            };
        }
        Ok(())
    }

    fn map_bot(&self, b: &mut BotRecord, seal: bool) -> Result<(), StoreError> {
        let what = format!("bot {}", b.id);
        self.map_opt(&mut b.server_password, field::SERVER_PASSWORD, &what, seal)?;
        if let Some(i) = &mut b.identity {
            i.key = self.map_one(&i.key, field::IDENTITY_KEY, &what, seal)?;
        }
        Ok(())
    }

    fn map_patch(&self, p: &mut BotPatch, seal: bool) -> Result<(), StoreError> {
        let what = format!("a change to bot {}", p.id);
        self.map_opt(&mut p.server_password, field::SERVER_PASSWORD, &what, seal)?;
        if let Some(i) = &mut p.identity {
            i.key = self.map_one(&i.key, field::IDENTITY_KEY, &what, seal)?;
        }
        Ok(())
    }

    fn map_template(&self, t: &mut TemplateRecord, seal: bool) -> Result<(), StoreError> {
        let what = format!("template {}", t.name);
        for (path, value) in t.settings.iter_mut() {
            if is_secret_path(path) {
                *value = self.map_one(value, field::SETTING, &what, seal)?;
            }
        }
        if let Some(i) = &mut t.identity {
            i.key = self.map_one(&i.key, field::IDENTITY_KEY, &what, seal)?;
        }
        Ok(())
    }

    fn map_node(&self, n: &mut NodeRecord, seal: bool) -> Result<(), StoreError> {
        let what = format!("node {}", n.name);
        self.map_opt(&mut n.auth, field::NODE_AUTH, &what, seal)?;
        if let Some(Some(a)) = &mut n.agent {
            self.map_opt(&mut a.token, field::AGENT_TOKEN, &what, seal)?;
        }
        Ok(())
    }

    fn map_one(&self, v: &str, kind: &str, what: &str, seal: bool) -> Result<String, StoreError> {
        if seal {
            self.seal_value(kind, v)
        } else {
            self.open_value(kind, v, what)
        }
    }

    /// A bot record as it is written.
    pub fn seal_bot(&self, b: &BotRecord) -> Result<BotRecord, StoreError> {
        let mut b = b.clone();
        self.map_bot(&mut b, true)?;
        Ok(b)
    }

    /// A bot record as read.
    pub fn open_bot(&self, mut b: BotRecord) -> Result<BotRecord, StoreError> {
        self.map_bot(&mut b, false)?;
        Ok(b)
    }

    /// A template record as it is written.
    pub fn seal_template(&self, t: &TemplateRecord) -> Result<TemplateRecord, StoreError> {
        let mut t = t.clone();
        self.map_template(&mut t, true)?;
        Ok(t)
    }

    /// A template record as read.
    pub fn open_template(&self, mut t: TemplateRecord) -> Result<TemplateRecord, StoreError> {
        self.map_template(&mut t, false)?;
        Ok(t)
    }

    /// A node record as read.
    pub fn open_node(&self, mut n: NodeRecord) -> Result<NodeRecord, StoreError> {
        self.map_node(&mut n, false)?;
        Ok(n)
    }

    /// An op as it is written.
    pub fn seal_op(&self, op: &Op) -> Result<Op, StoreError> {
        Ok(match op {
            Op::PutBot(b) => Op::PutBot(self.seal_bot(b)?),
            Op::PatchBot(p) => {
                let mut p = p.clone();
                self.map_patch(&mut p, true)?;
                Op::PatchBot(p)
            }
            Op::PutTemplate(t) => Op::PutTemplate(self.seal_template(t)?),
            Op::PutNode(n) => {
                let mut n = n.clone();
                self.map_node(&mut n, true)?;
                Op::PutNode(n)
            }
            other => other.clone(),
        })
    }

    /// A snapshot as read: every secret opened.
    pub fn open_snapshot(&self, mut s: Snapshot) -> Result<Snapshot, StoreError> {
        for b in &mut s.bots {
            self.map_bot(b, false)?;
        }
        for t in &mut s.templates {
            self.map_template(t, false)?;
        }
        for n in &mut s.nodes {
            self.map_node(n, false)?;
        }
        Ok(s)
    }

    /// A change another router made, opened.
    pub fn open_change(&self, c: Change) -> Result<Change, StoreError> {
        Ok(match c {
            Change::Bot(id, Some(b)) => Change::Bot(id, Some(self.open_bot(b)?)),
            Change::Template(n, Some(t)) => Change::Template(n, Some(self.open_template(t)?)),
            Change::Node(n, Some(r)) => Change::Node(n, Some(self.open_node(r)?)),
            other => other,
        })
    }

    /// The records of a (raw, as stored) snapshot that hold a secret in plain text: what a
    /// sealer with a key must write again, sealed.
    pub fn plain_records(&self, raw: &Snapshot) -> Vec<Op> {
        let plain = |v: &str| !v.is_empty() && !is_sealed(v);
        let plain_opt = |v: &Option<String>| v.as_deref().is_some_and(plain);
        let mut ops = Vec::new();
        for b in &raw.bots {
            if plain_opt(&b.server_password) || b.identity.as_ref().is_some_and(|i| plain(&i.key)) {
                ops.push(Op::PutBot(b.clone()));
            }
        }
        for t in &raw.templates {
            if t.settings
                .iter()
                .any(|(p, v)| is_secret_path(p) && plain(v))
                || t.identity.as_ref().is_some_and(|i| plain(&i.key))
            {
                ops.push(Op::PutTemplate(t.clone()));
            }
        }
        for n in &raw.nodes {
            let agent_plain = matches!(&n.agent, Some(Some(a)) if plain_opt(&a.token));
            if plain_opt(&n.auth) || agent_plain {
                ops.push(Op::PutNode(n.clone()));
            }
        }
        ops
    }
}

/// A backend whose secrets are sealed (see the module doc).
pub struct SealedStore {
    inner: Box<dyn Store>,
    sealer: Sealer,
}

impl SealedStore {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Store>, sealer: Sealer) -> SealedStore {
        SealedStore { inner, sealer }
    }

    fn seal_ops(&self, ops: &[Op]) -> Result<Vec<Op>, StoreError> {
        ops.iter().map(|op| self.sealer.seal_op(op)).collect()
    }
}

#[async_trait]
impl Store for SealedStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let raw = self.inner.load().await?;
        // Opening first: a wrong key fails before anything is written.
        let opened = self.sealer.open_snapshot(raw.clone())?;
        if self.sealer.key_id().is_some() {
            let plain = self.sealer.plain_records(&raw);
            if !plain.is_empty() {
                log::warn!(
                    "sealing {} store records that still held secrets in plain text",
                    plain.len()
                );
                self.inner.apply(&self.seal_ops(&plain)?).await?;
            }
        }
        Ok(opened)
    }

    async fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.inner.apply(&self.seal_ops(ops)?).await
    }

    async fn reserve_ids(&self, count: u32) -> Result<u32, StoreError> {
        self.inner.reserve_ids(count).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.acquire_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(name, holder).await
    }

    async fn claim_bot(&self, bot: &BotRecord) -> Result<Claim<BotRecord>, StoreError> {
        match self.inner.claim_bot(&self.sealer.seal_bot(bot)?).await? {
            Claim::Won => Ok(Claim::Won),
            Claim::Lost(b) => Ok(Claim::Lost(self.sealer.open_bot(b)?)),
        }
    }

    async fn claim_template(
        &self,
        t: &TemplateRecord,
    ) -> Result<Claim<TemplateRecord>, StoreError> {
        match self
            .inner
            .claim_template(&self.sealer.seal_template(t)?)
            .await?
        {
            Claim::Won => Ok(Claim::Won),
            Claim::Lost(t) => Ok(Claim::Lost(self.sealer.open_template(t)?)),
        }
    }

    async fn changes(&self) -> Result<Vec<Change>, StoreError> {
        // One by one: the backend has already marked the whole batch as seen, so a change
        // that does not open (another router writing with another key) must not take the
        // others with it.
        let mut out = Vec::new();
        for c in self.inner.changes().await? {
            match self.sealer.open_change(c) {
                Ok(c) => out.push(c),
                Err(e) => log::error!("a change another router made is skipped: {e}"),
            }
        }
        Ok(out)
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    async fn clear(&self) -> Result<(), StoreError> {
        self.inner.clear().await
    }

    async fn reserve_seat(
        &self,
        node: &str,
        capacity: u32,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.inner.reserve_seat(node, capacity, ttl).await
    }

    async fn release_seat(&self, seat: &str) -> Result<(), StoreError> {
        self.inner.release_seat(seat).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentRecord, Identity};
    use std::collections::BTreeMap;

    fn bot() -> BotRecord {
        BotRecord {
            id: 7,
            node: "n1".into(),
            local_id: 0,
            template: Some("music".into()),
            address: Some("ts.example".into()),
            server_password: Some("hunter2-server".into()),
            channel: None,
            nickname: Some("DJ".into()),
            identity: Some(Identity {
                key: "MG0DAgeAAgEgAiEA-identity".into(),
                offset: 5,
                level: 8,
            }),
            created_ms: 1,
            node_started: None,
            owner: None,
        }
    }

    fn template() -> TemplateRecord {
        let mut settings = BTreeMap::new();
        settings.insert("connect.address".into(), "ts.example".into());
        settings.insert("connect.identity.key".into(), "MG0D-template-key".into());
        settings.insert("connect.channel_password.pw".into(), "chanpw".into());
        TemplateRecord {
            name: "music".into(),
            node: "n1".into(),
            settings,
            identity: None,
            owner: None,
        }
    }

    fn node() -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            url: "http://n1:58913".into(),
            auth: Some("admin:node-token".into()),
            capacity: 10,
            draining: false,
            state: Default::default(),
            from_config: false,
            agent: Some(Some(AgentRecord {
                url: "http://n1:58915".into(),
                token: Some("agent-token".into()),
            })),
            ca_file: None,
            tls_host: None,
        }
    }

    fn text(op: &Op) -> String {
        serde_json::to_string(&match op {
            Op::PutBot(b) => serde_json::to_value(b).unwrap(),
            Op::PutTemplate(t) => serde_json::to_value(t).unwrap(),
            Op::PutNode(n) => serde_json::to_value(n).unwrap(),
            _ => serde_json::Value::Null,
        })
        .unwrap()
    }

    const SECRETS: [&str; 6] = [
        "hunter2-server",
        "MG0DAgeAAgEgAiEA-identity",
        "MG0D-template-key",
        "chanpw",
        "node-token",
        "agent-token",
    ];

    #[test]
    fn sealed_records_hold_no_secret_and_open_to_the_original() {
        let s = Sealer::new(Some(SecretsKey::generate()));
        let ops = [
            Op::PutBot(bot()),
            Op::PutTemplate(template()),
            Op::PutNode(node()),
        ];
        for op in &ops {
            let sealed = s.seal_op(op).unwrap();
            let t = text(&sealed);
            for secret in SECRETS {
                assert!(!t.contains(secret), "{secret} in {t}");
            }
            assert!(
                t.contains("ts.example") || t.contains("n1"),
                "the rest stays readable"
            );
            let snap = Snapshot {
                bots: match &sealed {
                    Op::PutBot(b) => vec![b.clone()],
                    _ => vec![],
                },
                templates: match &sealed {
                    Op::PutTemplate(t) => vec![t.clone()],
                    _ => vec![],
                },
                nodes: match &sealed {
                    Op::PutNode(n) => vec![n.clone()],
                    _ => vec![],
                },
                ..Default::default()
            };
            let opened = s.open_snapshot(snap).unwrap();
            match op {
                Op::PutBot(b) => assert_eq!(&opened.bots[0], b),
                Op::PutTemplate(t) => assert_eq!(&opened.templates[0], t),
                Op::PutNode(n) => assert_eq!(&opened.nodes[0], n),
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn a_wrong_or_missing_key_is_named_and_a_damaged_value_refused() {
        let a = Sealer::new(Some(SecretsKey::generate()));
        let b = Sealer::new(Some(SecretsKey::generate()));
        let sealed = a.seal_bot(&bot()).unwrap();
        let e = b.open_bot(sealed.clone()).unwrap_err().to_string();
        assert!(
            e.contains(a.key_id().unwrap()) && e.contains(b.key_id().unwrap()),
            "{e}"
        );
        let e = Sealer::new(None)
            .open_bot(sealed.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no secrets key is configured"), "{e}");
        let mut damaged = sealed;
        let pw = damaged.server_password.take().unwrap();
        let mut chars: Vec<char> = pw.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        damaged.server_password = Some(chars.into_iter().collect());
        let e = a.open_bot(damaged).unwrap_err().to_string();
        assert!(e.contains("bot 7"), "{e}");
    }

    #[test]
    fn a_sealed_value_cannot_be_moved_into_another_kind_of_field() {
        let s = Sealer::new(Some(SecretsKey::generate()));
        let sealed = s.seal_bot(&bot()).unwrap();
        let mut n = node();
        n.auth = sealed.server_password.clone();
        assert!(s.open_node(n).is_err());
    }

    #[test]
    fn without_a_key_secrets_stay_as_they_are_and_plain_ones_are_found() {
        let none = Sealer::new(None);
        assert_eq!(none.seal_bot(&bot()).unwrap(), bot());
        let raw = Snapshot {
            bots: vec![bot()],
            templates: vec![template()],
            nodes: vec![node()],
            ..Default::default()
        };
        let keyed = Sealer::new(Some(SecretsKey::generate()));
        assert_eq!(keyed.plain_records(&raw).len(), 3);
        let sealed = Snapshot {
            bots: vec![keyed.seal_bot(&bot()).unwrap()],
            templates: vec![keyed.seal_template(&template()).unwrap()],
            nodes: vec![match keyed.seal_op(&Op::PutNode(node())).unwrap() {
                Op::PutNode(n) => n,
                _ => unreachable!(),
            }],
            ..Default::default()
        };
        assert!(keyed.plain_records(&sealed).is_empty());
    }

    #[test]
    fn key_text_round_trips_and_bad_text_is_explained() {
        let k = SecretsKey::generate();
        let again = SecretsKey::from_text(&format!("{}\n", k.to_text()), "k").unwrap();
        assert_eq!(again.id(), k.id());
        assert!(SecretsKey::from_text("not base64!", "the file f")
            .unwrap_err()
            .to_string()
            .contains("the file f: is not base64"));
        assert!(SecretsKey::from_text("AAAA", "k")
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
        assert!(!format!("{k:?}").contains(&k.to_text()));
    }
}
