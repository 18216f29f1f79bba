//! Client authentication with router-issued keys.
//!
//! Owns: the key table (name → secret digest, role), changeable at run time ([`Keys`]: a
//! copy-on-write table, so a request never waits on a change and a revoked key fails from the
//! next request on), and checking a request's `Authorization` header the way TS3AudioBot
//! checks its own tokens, with TS3AudioBot's failure texts (`protocol::basic_auth`). Secrets
//! are compared as fixed-length digests in constant time. Does not own: what a role may do
//! (`policy`), storing keys (the admin layer) or node-side credentials (`node`).

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use subtle::ConstantTimeEq;

use crate::config::{KeyConfig, Role, Scope, Tenancy};
use crate::protocol::basic_auth::{self, AuthError};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A configured key.
    Key {
        /// The key name.
        name: Arc<str>,
        /// Its role.
        role: Role,
        /// Scope `own` (and not an admin): sees only the bots and templates it created.
        own: bool,
        /// How many bots it may have at once.
        max_bots: Option<u32>,
    },
}

impl Caller {
    /// Whether the caller holds an admin key.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Caller::Key {
                role: Role::Admin,
                ..
            }
        )
    }

    /// The tenant whose bots and templates are all this caller sees (a key of scope `own`
    /// that is not an admin); None: it sees everything.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Key {
                name, own: true, ..
            } => Some(name),
            _ => None,
        }
    }

    /// The key name that becomes the owner of what this caller creates.
    pub fn key_name(&self) -> Option<&Arc<str>> {
        match self {
            Caller::Key { name, .. } => Some(name),
            Caller::Anonymous => None,
        }
    }

    /// The caller's own bot limit.
    pub fn max_bots(&self) -> Option<u32> {
        match self {
            Caller::Key { max_bots, .. } => *max_bots,
            Caller::Anonymous => None,
        }
    }
}

/// The keys, by name.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    /// name → (name, digest of the secret, role). Only digests are compared, so the time a
    /// comparison takes says nothing about the secret's length or content.
    keys: HashMap<String, Entry>,
}

/// One key: its name (shared with callers), secret digest, role, tenancy, and when it was
/// last used (milliseconds since the epoch; kept across table changes).
#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    digest: [u8; 32],
    role: Role,
    tenancy: Arc<Tenancy>,
    used: Arc<AtomicU64>,
}

/// A fixed-length digest of a secret (BLAKE2s-256), compared in constant time; also what
/// the store keeps of a key made at run time.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    use blake2::Digest;
    blake2::Blake2s256::digest(secret).into()
}

impl KeyTable {
    /// Builds the table from configured keys.
    pub fn new(keys: &[KeyConfig]) -> Self {
        KeyTable {
            keys: keys.iter().map(|k| (k.name.clone(), entry(k))).collect(),
        }
    }

    /// Checks an `Authorization` header value (None when the header is absent), following
    /// TS3AudioBot's `WebApi.Authenticate` step by step, from any address.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, AuthError> {
        self.authenticate_from(header, None)
    }

    /// [`Self::authenticate`] for a client at `peer`: a key with `allow_from` used from
    /// elsewhere fails exactly as a wrong secret does (after the secret was checked, so the
    /// time taken does not tell the two apart), and is counted as a failed attempt.
    pub fn authenticate_from(
        &self,
        header: Option<&[u8]>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, AuthError> {
        let Some(header) = header else {
            return Ok(Caller::Anonymous);
        };
        let creds = basic_auth::parse(header)?;
        let uid = String::from_utf8_lossy(creds.uid());
        let secret = creds.secret();
        let Some(e) = self.keys.get(uid.as_ref()) else {
            return Err(AuthError::UnknownUser);
        };
        let good = bool::from(e.digest.as_slice().ct_eq(digest(secret).as_slice()));
        if good && e.tenancy.allows(peer) {
            e.used.store(crate::store::now_ms(), Ordering::Relaxed);
            Ok(Caller::Key {
                name: e.name.clone(),
                role: e.role,
                own: e.tenancy.scope == Scope::Own && e.role != Role::Admin,
                max_bots: e.tenancy.max_bots,
            })
        } else {
            Err(AuthError::Failed)
        }
    }
}

/// The live key table: read without locking by every request, replaced whole on a change.
#[derive(Debug, Default)]
pub struct Keys(ArcSwap<KeyTable>);

impl Keys {
    /// The table of the given keys.
    pub fn new(keys: &[KeyConfig]) -> Keys {
        Keys(ArcSwap::from_pointee(KeyTable::new(keys)))
    }

    /// Checks an `Authorization` header against the current table.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, AuthError> {
        self.0.load().authenticate(header)
    }

    /// Checks an `Authorization` header from client address `peer` (see
    /// [`KeyTable::authenticate_from`]).
    pub fn authenticate_from(
        &self,
        header: Option<&[u8]>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, AuthError> {
        self.0.load().authenticate_from(header, peer)
    }

    /// Adds a key, or replaces the one with its name (a new secret or role applies to the
    /// next request).
    pub fn put(&self, key: &KeyConfig) {
        self.0.rcu(|t| {
            let mut t = KeyTable::clone(t);
            t.keys.insert(key.name.clone(), entry(key));
            t
        });
    }

    /// Adds a key known only by its secret's digest (a stored key).
    pub fn put_digest(&self, name: &str, digest: [u8; 32], role: Role) {
        self.put_digest_with(name, digest, role, Tenancy::default());
    }

    /// [`Self::put_digest`] with a tenancy. A key replaced under the same name keeps its
    /// last-used time.
    pub fn put_digest_with(&self, name: &str, digest: [u8; 32], role: Role, tenancy: Tenancy) {
        let tenancy = Arc::new(tenancy);
        self.0.rcu(|t| {
            let mut t = KeyTable::clone(t);
            let used = t.keys.get(name).map(|e| e.used.clone()).unwrap_or_default();
            t.keys.insert(
                name.to_string(),
                Entry {
                    name: Arc::from(name),
                    digest,
                    role,
                    tenancy: tenancy.clone(),
                    used,
                },
            );
            t
        });
    }

    /// Changes the tenancy of an existing key (secret and role stay). Returns whether it
    /// existed.
    pub fn set_tenancy(&self, name: &str, tenancy: Tenancy) -> bool {
        let tenancy = Arc::new(tenancy);
        let mut existed = false;
        self.0.rcu(|t| {
            let mut t = KeyTable::clone(t);
            existed = false;
            if let Some(e) = t.keys.get_mut(name) {
                e.tenancy = tenancy.clone();
                existed = true;
            }
            t
        });
        existed
    }

    /// A key's secret digest and role.
    pub fn digest_and_role(&self, name: &str) -> Option<([u8; 32], Role)> {
        self.0.load().keys.get(name).map(|e| (e.digest, e.role))
    }

    /// A key's tenancy.
    pub fn tenancy(&self, name: &str) -> Option<Tenancy> {
        self.0
            .load()
            .keys
            .get(name)
            .map(|e| Tenancy::clone(&e.tenancy))
    }

    /// When key `name` was last used since the router started.
    pub fn last_used_ms(&self, name: &str) -> Option<u64> {
        let t = self.0.load();
        let v = t.keys.get(name)?.used.load(Ordering::Relaxed);
        (v > 0).then_some(v)
    }

    /// Whether a key of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.0.load().keys.contains_key(name)
    }

    /// Revokes a key: the next request with it is refused. Returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        let mut existed = false;
        self.0.rcu(|t| {
            let mut t = KeyTable::clone(t);
            existed = t.keys.remove(name).is_some();
            t
        });
        existed
    }

    /// The names and roles of all keys, sorted by name.
    pub fn list(&self) -> Vec<(String, Role)> {
        let mut v: Vec<(String, Role)> = self
            .0
            .load()
            .keys
            .iter()
            .map(|(n, e)| (n.clone(), e.role))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// A digest as the store keeps it (lowercase hex).
pub fn digest_hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest back from its hex form (None if it is not 64 hex digits).
pub fn digest_from_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn entry(k: &KeyConfig) -> Entry {
    Entry {
        name: Arc::from(k.name.as_str()),
        digest: digest(k.secret.as_bytes()),
        role: k.role,
        tenancy: Arc::new(k.tenancy.clone()),
        used: Arc::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::basic_auth::basic_header;

    fn table() -> KeyTable {
        KeyTable::new(&[
            KeyConfig {
                name: "alice".into(),
                secret: "alice-secret".into(),
                role: Role::User,
                tenancy: Tenancy::default(),
            },
            KeyConfig {
                name: "ops".into(),
                secret: "ops-secret".into(),
                role: Role::Admin,
                tenancy: Tenancy::default(),
            },
        ])
    }

    fn check(h: &str) -> Result<Caller, AuthError> {
        table().authenticate(Some(h.as_bytes()))
    }

    #[test]
    fn good_keys() {
        let c = check(&basic_header("alice:alice-secret")).expect("ok");
        assert!(matches!(
            c,
            Caller::Key {
                role: Role::User,
                ..
            }
        ));
        assert!(check(&basic_header("ops:ops-secret"))
            .expect("ok")
            .is_admin());
        // Scheme is case-insensitive, extra spaces are tolerated, base64 whitespace is ignored.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:alice-secret");
        assert!(check(&format!("bAsIc   {b64}")).is_ok());
        let (a, b) = b64.split_at(4);
        assert!(check(&format!("Basic {a} {b}")).is_ok());
    }

    #[test]
    fn anonymous_without_header() {
        assert_eq!(table().authenticate(None), Ok(Caller::Anonymous));
    }

    #[test]
    fn the_four_failures() {
        assert_eq!(check(&basic_header("alice:wrong")), Err(AuthError::Failed));
        assert_eq!(check("Basic"), Err(AuthError::Failed));
        assert_eq!(check(""), Err(AuthError::Failed));
        assert_eq!(check("Basic "), Err(AuthError::Failed));
        assert_eq!(check(&basic_header("no-colon")), Err(AuthError::Failed));
        assert_eq!(check("Bearer abc"), Err(AuthError::UnsupportedScheme));
        assert_eq!(check("Basic !!!"), Err(AuthError::MalformedBase64));
        assert_eq!(check("Basic YWJj"), Err(AuthError::Failed)); // "abc": no colon
        assert_eq!(check("Basic YWJ"), Err(AuthError::MalformedBase64)); // unpadded
        assert_eq!(
            check(&basic_header("mallory:x")),
            Err(AuthError::UnknownUser)
        );
        // The secret is everything after the first colon.
        assert_eq!(
            check(&basic_header("alice:alice-secret:x")),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn allow_from_and_scope() {
        let tenancy = Tenancy::new(Scope::Own, Some(2), &["10.0.0.0/8".into()]).expect("ok");
        let keys = Keys::new(&[
            KeyConfig {
                name: "t".into(),
                secret: "t-secret-1".into(),
                role: Role::User,
                tenancy: tenancy.clone(),
            },
            KeyConfig {
                name: "boss".into(),
                secret: "boss-secret".into(),
                role: Role::Admin,
                tenancy,
            },
        ]);
        let t = basic_header("t:t-secret-1");
        let near: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
        let far: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let c = keys
            .authenticate_from(Some(t.as_bytes()), Some(near))
            .expect("allowed");
        assert_eq!(c.tenant(), Some("t"));
        assert_eq!(c.max_bots(), Some(2));
        // From elsewhere (or from nowhere known) exactly as a wrong secret.
        assert_eq!(
            keys.authenticate_from(Some(t.as_bytes()), Some(far)),
            Err(AuthError::Failed)
        );
        assert_eq!(
            keys.authenticate_from(Some(t.as_bytes()), None),
            Err(AuthError::Failed)
        );
        // An admin key sees everything whatever its scope.
        let boss = basic_header("boss:boss-secret");
        let c = keys
            .authenticate_from(Some(boss.as_bytes()), Some(near))
            .expect("allowed");
        assert_eq!(c.tenant(), None);
        // A changed tenancy applies from the next request.
        assert!(keys.set_tenancy("t", Tenancy::default()));
        let c = keys
            .authenticate_from(Some(t.as_bytes()), Some(far))
            .expect("anywhere now");
        assert_eq!(c.tenant(), None);
    }

    #[test]
    fn secret_prefix_does_not_pass() {
        assert_eq!(
            check(&basic_header("alice:alice-secre")),
            Err(AuthError::Failed)
        );
        assert_eq!(check(&basic_header("alice:")), Err(AuthError::Failed));
    }

    #[test]
    fn keys_change_at_run_time() {
        let keys = Keys::new(&[KeyConfig {
            name: "alice".into(),
            secret: "alice-secret".into(),
            role: Role::User,
            tenancy: Tenancy::default(),
        }]);
        let alice = basic_header("alice:alice-secret");
        assert!(keys.authenticate(Some(alice.as_bytes())).is_ok());
        let bob = KeyConfig {
            name: "bob".into(),
            secret: "bob-secret-1".into(),
            role: Role::Admin,
            tenancy: Tenancy::default(),
        };
        let bob_header = basic_header("bob:bob-secret-1");
        assert_eq!(
            keys.authenticate(Some(bob_header.as_bytes())),
            Err(AuthError::UnknownUser)
        );
        keys.put(&bob);
        assert!(keys
            .authenticate(Some(bob_header.as_bytes()))
            .expect("added")
            .is_admin());
        // A new secret replaces the old one at once.
        keys.put(&KeyConfig {
            secret: "bob-secret-2".into(),
            ..bob
        });
        assert_eq!(
            keys.authenticate(Some(bob_header.as_bytes())),
            Err(AuthError::Failed)
        );
        assert!(keys.remove("alice"));
        assert!(!keys.remove("alice"));
        assert_eq!(
            keys.authenticate(Some(alice.as_bytes())),
            Err(AuthError::UnknownUser),
            "a revoked key fails from the next request on"
        );
        assert_eq!(keys.list(), vec![("bob".to_string(), Role::Admin)]);
    }
}

/// Callers for the unit tests of the modules that decide by caller (`policy`, `routing`), so
/// each does not build its own.
#[cfg(test)]
pub(crate) mod test_callers {
    use super::*;

    /// A caller with a user key named `u`.
    pub fn user() -> Caller {
        Caller::Key {
            name: Arc::from("u"),
            role: Role::User,
            own: false,
            max_bots: None,
        }
    }

    /// A caller with an admin key named `a`.
    pub fn admin() -> Caller {
        Caller::Key {
            name: Arc::from("a"),
            role: Role::Admin,
            own: false,
            max_bots: None,
        }
    }
}
