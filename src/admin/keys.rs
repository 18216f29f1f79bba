//! The key endpoints: list, create (the secret is shown once), revoke.
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
use crate::config::{check_key_name, Role};
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
                json!({
                    "name": name,
                    "role": role_name(role),
                    "source": if meta.is_none_or(|m| m.from_config) { "config" } else { "admin" },
                    "created_ms": meta.map(|m| m.created_ms),
                    "last_used_ms": state.keys.last_used_ms(&name).or(meta.and_then(|m| m.last_used_ms)),
                })
            })
            .collect(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: String,
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
    let secret = random_hex(24)?;
    let d = digest(secret.as_bytes());
    let created_ms = now_ms();
    let record = KeyRecord {
        name: k.name.clone(),
        secret: None,
        digest: Some(digest_hex(&d)),
        role,
        created_ms,
        last_used_ms: None,
    };
    state
        .cluster
        .store()
        .commit(vec![Op::PutKey(record)], WRITE_DEADLINE)
        .await?;
    state.keys.put_digest(&k.name, d, role);
    state.key_book.0.lock().insert(
        k.name.clone(),
        KeyMeta {
            from_config: false,
            created_ms,
            last_used_ms: None,
        },
    );
    Ok(json!({ "name": k.name, "role": role_name(role), "secret": secret }))
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
