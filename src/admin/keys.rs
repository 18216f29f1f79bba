//! The key endpoints: list, create (the secret is shown once), edit the tenancy (scope,
//! `max_bots`, `allow_from`, checked by the config file's rules), revoke.
//!
//! Owns: making keys at run time (a random secret of 48 hex digits; the store keeps only its
//! digest), revoking them at once (the next API request with one gets 401, its panel
//! sessions end), and the `Key` object the API shows. Does not own: checking keys on
//! requests (`proxy::keys`).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::auth::random_hex;
use crate::admin::error::AdminError;
use crate::admin::AdminState;
use crate::config::{check_key_name, Role, Scope, Tenancy};
use crate::proxy::keys::{digest, digest_hex};
use crate::store::{now_ms, KeyRecord, Op, WRITE_DEADLINE};

/// Where a key comes from and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// From the config file (cannot be revoked here).
    pub from_config: bool,
    /// When it was created (0: unknown, config-file keys).
    pub created_ms: u64,
    /// When it was last used, as stored.
    pub last_used_ms: Option<u64>,
}

/// What the admin layer knows about keys beyond the key table, and the lock that makes a
/// key change (check, store, table) one step.
#[derive(Debug, Default)]
pub struct KeyBook(
    pub Mutex<BTreeMap<String, KeyMeta>>,
    pub tokio::sync::Mutex<()>,
);

fn role_name(r: Role) -> &'static str {
    match r {
        Role::User => "user",
        Role::Admin => "admin",
    }
}

/// Every key, by name (never a secret).
pub fn list(state: &AdminState) -> Value {
    let book = state.key_book.0.lock();
    Value::Array(
        state
            .keys
            .list()
            .into_iter()
            .map(|(name, role)| {
                let meta = book.get(&name);
                let tenancy = state.keys.tenancy(&name).unwrap_or_default();
                json!({
                    "name": name,
                    "role": role_name(role),
                    "scope": scope_name(tenancy.scope),
                    "max_bots": tenancy.max_bots,
                    "allow_from": tenancy.allow_from_text(),
                    "source": if meta.is_none_or(|m| m.from_config) { "config" } else { "admin" },
                    "created_ms": meta.map(|m| m.created_ms),
                    "last_used_ms": state.keys.last_used_ms(&name).or(meta.and_then(|m| m.last_used_ms)),
                })
            })
            .collect(),
    )
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::All => "all",
        Scope::Own => "own",
    }
}

fn parse_scope(s: &str) -> Result<Scope, AdminError> {
    match s {
        "all" => Ok(Scope::All),
        "own" => Ok(Scope::Own),
        other => Err(AdminError::invalid(
            "scope",
            format!("`{other}` is not one of all, own"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    max_bots: Option<u32>,
    #[serde(default)]
    allow_from: Vec<String>,
}

/// A change of a key's tenancy: absent fields stay; `max_bots: null` removes the limit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEdit {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default, deserialize_with = "present")]
    max_bots: Option<Option<u32>>,
    #[serde(default)]
    allow_from: Option<Vec<String>>,
}

/// A field that is present (possibly `null`) is `Some`, an absent one (serde's default) None.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// Creates a key; the answer holds its secret, which is not kept anywhere.
pub async fn create(state: &AdminState, body: &[u8]) -> Result<Value, AdminError> {
    let k: NewKey = crate::admin::http::json_body(body)?;
    check_key_name(&k.name)?;
    let _changing = state.key_book.1.lock().await;
    let role = match k.role.as_str() {
        "user" => Role::User,
        "admin" => Role::Admin,
        other => {
            return Err(AdminError::invalid(
                "role",
                format!("`{other}` is not one of user, admin"),
            ))
        }
    };
    if state.keys.contains(&k.name) {
        return Err(AdminError::Conflict(format!(
            "a key named `{}` exists already",
            k.name
        )));
    }
    let tag = crate::config::tenant_tag(&k.name);
    if state
        .keys
        .list()
        .iter()
        .any(|(n, _)| crate::config::tenant_tag(n) == tag)
    {
        // Its templates' name space would be another key's (see `tenant_tag`).
        return Err(AdminError::invalid(
            "name",
            "cannot be told apart from another key's name; choose another",
        ));
    }
    let scope = k
        .scope
        .as_deref()
        .map(parse_scope)
        .transpose()?
        .unwrap_or_default();
    let tenancy = Tenancy::new(scope, k.max_bots, &k.allow_from)?;
    let secret = random_hex(24)?;
    let d = digest(secret.as_bytes());
    let created_ms = now_ms();
    let record = key_record(&k.name, &d, role, (created_ms, None), &tenancy);
    commit_key(state, record).await?;
    let shown = json!({
        "name": k.name,
        "role": role_name(role),
        "scope": scope_name(tenancy.scope),
        "max_bots": tenancy.max_bots,
        "allow_from": tenancy.allow_from_text(),
        "secret": secret,
    });
    state.keys.put_digest_with(&k.name, d, role, tenancy);
    state.key_book.0.lock().insert(
        k.name.clone(),
        KeyMeta {
            from_config: false,
            created_ms,
            last_used_ms: None,
        },
    );
    Ok(shown)
}

/// Changes a key's tenancy (made through the admin API; a config-file key is changed in
/// the file). The stored record is rewritten whole (its digest stays), then the table.
pub async fn edit(state: &AdminState, name: &str, body: &[u8]) -> Result<Value, AdminError> {
    let e: KeyEdit = crate::admin::http::json_body(body)?;
    let _changing = state.key_book.1.lock().await;
    let Some(old) = state.keys.tenancy(name) else {
        return Err(AdminError::NotFound(format!("no key named `{name}`")));
    };
    let Some(meta) = state
        .key_book
        .0
        .lock()
        .get(name)
        .filter(|m| !m.from_config)
        .cloned()
    else {
        return Err(AdminError::Conflict(format!(
            "key `{name}` is defined in the config file; change it there"
        )));
    };
    let scope = match e.scope.as_deref() {
        Some(s) => parse_scope(s)?,
        None => old.scope,
    };
    let max_bots = e.max_bots.unwrap_or(old.max_bots);
    let allow_from = e.allow_from.unwrap_or_else(|| old.allow_from_text());
    let tenancy = Tenancy::new(scope, max_bots, &allow_from)?;
    let Some((d, role)) = state.keys.digest_and_role(name) else {
        return Err(AdminError::NotFound(format!("no key named `{name}`")));
    };
    // The record as `create` wrote it, with the new tenancy.
    let used = state.keys.last_used_ms(name).or(meta.last_used_ms);
    let record = key_record(name, &d, role, (meta.created_ms, used), &tenancy);
    commit_key(state, record).await?;
    let shown = json!({
        "name": name,
        "role": role_name(role),
        "scope": scope_name(tenancy.scope),
        "max_bots": tenancy.max_bots,
        "allow_from": tenancy.allow_from_text(),
    });
    state.keys.set_tenancy(name, tenancy);
    Ok(shown)
}

/// Revokes a key at once.
pub async fn revoke(state: &AdminState, name: &str) -> Result<(), AdminError> {
    let _changing = state.key_book.1.lock().await;
    if !state.keys.contains(name) {
        return Err(AdminError::NotFound(format!("no key named `{name}`")));
    }
    if state
        .key_book
        .0
        .lock()
        .get(name)
        .is_none_or(|m| m.from_config)
    {
        return Err(AdminError::Conflict(format!(
            "key `{name}` is defined in the config file; remove it there"
        )));
    }
    state
        .cluster
        .store()
        .commit(vec![Op::DeleteKey(name.to_string())], WRITE_DEADLINE)
        .await?;
    state.keys.remove(name);
    state.key_book.0.lock().remove(name);
    state.sessions.close_all_of(name);
    Ok(())
}

/// A run-time key's record: only the digest of its secret, its role, times and tenancy.
fn key_record(
    name: &str,
    d: &[u8; 32],
    role: Role,
    (created_ms, last_used_ms): (u64, Option<u64>),
    tenancy: &Tenancy,
) -> KeyRecord {
    KeyRecord {
        name: name.to_string(),
        secret: None,
        digest: Some(digest_hex(d)),
        role,
        created_ms,
        last_used_ms,
        scope: tenancy.scope,
        max_bots: tenancy.max_bots,
        allow_from: tenancy.allow_from_text(),
    }
}

/// Writes a key's record before the answer (the change must survive a restart).
async fn commit_key(state: &AdminState, record: KeyRecord) -> Result<(), AdminError> {
    state
        .cluster
        .store()
        .commit(vec![Op::PutKey(record)], WRITE_DEADLINE)
        .await?;
    Ok(())
}
