//! The effective configuration as the admin API shows it: every setting, no secret.
//!
//! Owns: rendering a [`Config`] as JSON with key secrets, node tokens and environment
//! variable values left out. Does not own: the configuration itself (`config`).

use serde_json::{json, Value};

use crate::config::{Config, Role, SecretsKeySource, StorageConfig};

/// The configuration with secrets redacted.
pub fn redacted(c: &Config) -> Value {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    json!({
        "listen": c.listen.to_string(),
        "admin": {
            "listen": c.admin.listen.map(|a| a.to_string()),
            "session_ttl_s": c.admin.session_ttl.as_secs(),
        },
        "keys": c.keys.iter().map(|k| json!({
            "name": k.name,
            "role": match k.role { Role::User => "user", Role::Admin => "admin" },
            "secret": "<redacted>",
        })).collect::<Vec<_>>(),
        "nodes": c.nodes.iter().map(|n| json!({
            "name": n.name,
            "url": n.url,
            "auth": n.auth.as_ref().map(|_| "<redacted>"),
            "capacity": n.capacity,
            "state": n.state.as_str(),
            "agent": n.agent.as_ref().map(|a| json!({
                "url": a.url,
                "token": a.token.as_ref().map(|_| "<redacted>"),
            })),
        })).collect::<Vec<_>>(),
        "storage": match &c.storage {
            StorageConfig::Embedded { path } => json!({"kind": "embedded", "path": path}),
            StorageConfig::Mongodb(m) => json!({
                "kind": "mongodb",
                "uri": m.redacted_uri(),
                "database": m.database,
                "sync_interval_ms": ms(m.sync_interval),
                "router_id": m.router_id,
            }),
        },
        // Where the key comes from, never the key.
        "secrets": match &c.secrets {
            SecretsKeySource::None => Value::Null,
            SecretsKeySource::File(p) => json!({"key_file": p}),
            SecretsKeySource::Text { var, .. } => json!({"key_env": var}),
        },
        "server": {
            "threads": c.server.threads,
            "work_stealing": c.server.work_stealing,
            "grace_period_seconds": c.server.grace_period_seconds,
            "graceful_shutdown_timeout_seconds": c.server.graceful_shutdown_timeout_seconds,
            "upstream_keepalive_pool_size": c.server.upstream_keepalive_pool_size,
        },
        "routing": {
            "anonymous_allow": c.routing.anonymous_allow,
            "connect_timeout_ms": ms(c.routing.connect_timeout),
            "request_timeout_ms": ms(c.routing.request_timeout),
            "fanout_timeout_ms": ms(c.routing.fanout_timeout),
            "max_body_bytes": c.routing.max_body_bytes,
            "max_target_bytes": c.routing.max_target_bytes,
            "max_commands": c.routing.max_commands,
            "list_cache_ms": ms(c.routing.list_cache),
            "system_info_cache_ms": ms(c.routing.system_info_cache),
        },
        "health": {
            "interval_ms": ms(c.health.interval),
            "timeout_ms": ms(c.health.timeout),
            "failures_to_down": c.health.failures_to_down,
            "successes_to_up": c.health.successes_to_up,
        },
        "placement": {
            "strategy": c.placement.strategy.as_str(),
            "default_capacity": c.placement.default_capacity,
            "agent_interval_ms": ms(c.placement.agent_interval),
        },
        "failover": {
            "enabled": c.failover.enabled,
            "after_ms": ms(c.failover.after),
            "concurrency": c.failover.concurrency,
            "retry_ms": ms(c.failover.retry),
        },
    })
}
