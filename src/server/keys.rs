//! `ts3ab-lb key create`: the first admin key, made before the router runs.
//!
//! Owns: writing a new key (its digest only) into the configured store and returning the
//! secret, once. Does not own: keys made while the router runs (the admin API) or checking
//! keys (`proxy::keys`).

use crate::admin::auth::random_hex;
use crate::config::{check_key_name, Config, Role};
use crate::proxy::keys::{digest, digest_hex};
use crate::store::{now_ms, KeyRecord, Op, WRITE_DEADLINE};

/// Creates key `name` with `role` in the store of `config`; returns its secret.
pub fn create_key(config: &Config, name: &str, role: &str) -> Result<String, String> {
    check_key_name(name).map_err(|e| e.to_string())?;
    let role = match role {
        "user" => Role::User,
        "admin" => Role::Admin,
        other => return Err(format!("role: `{other}` is not one of user, admin")),
    };
    if config.keys.iter().any(|k| k.name == name) {
        return Err(format!(
            "a key named `{name}` is in the config file already"
        ));
    }
    let store = super::sync::open_store(config, &super::sync::router_id(config))
        .map_err(|e| e.to_string())?;
    let snap = futures::executor::block_on(store.load()).map_err(|e| e.to_string())?;
    if snap.keys.iter().any(|k| k.name == name) {
        return Err(format!("a key named `{name}` exists in the store already"));
    }
    let secret = random_hex(24).map_err(|e| e.to_string())?;
    let record = KeyRecord {
        name: name.to_string(),
        secret: None,
        digest: Some(digest_hex(&digest(secret.as_bytes()))),
        role,
        created_ms: now_ms(),
        last_used_ms: None,
        scope: Default::default(),
        max_bots: None,
        allow_from: Vec::new(),
    };
    futures::executor::block_on(store.commit(vec![Op::PutKey(record)], WRITE_DEADLINE))
        .map_err(|e| e.to_string())?;
    Ok(secret)
}
