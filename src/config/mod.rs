//! The router's YAML configuration: schema, defaults and validation.
//!
//! Owns: turning YAML text (plus an environment lookup for secrets) into a validated [`Config`],
//! with error messages that name the key at fault. It is a pure function of its inputs: no file
//! system, no network, no global environment access, so every rule is unit-tested. The one
//! exception are the TLS files the config names (`tls`, `admin.tls`, `nodes[].ca_file`),
//! checked at load through an injected reader ([`Config::from_yaml_with`]; [`Config::from_yaml`]
//! reads the disk) so that a bad file is refused at start with its key named.
//! Does not own: reading the file (`main`), or applying the settings (`server`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

pub mod tls;

use crate::node::agent::AgentEndpoint;
use crate::node::endpoint::{parse_node_url, Endpoint, NodeTarget};
use crate::node::tls::NodeTls;
use crate::protocol::pattern::AllowPattern;
pub use tls::{ReadFile, TlsFiles};

use serde::Deserialize;

mod tenancy;
pub use tenancy::{tenant_tag, Cidr, Tenancy};

/// The default listen address: TS3AudioBot's own default API port, so clients change nothing.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:58913";
/// The admin listener's default: loopback only (like Envoy's and Caddy's admin), one port
/// above the API.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:58914";
/// The seed project's measured maximum of bots per host.
pub const DEFAULT_CAPACITY: u32 = 300;
/// Kestrel's request body cap, which TS3AudioBot inherits.
pub const DEFAULT_MAX_BODY: usize = 3_000_000;
/// Kestrel's default request-line limit (~8 KiB): longer targets never reach a node either.
pub const DEFAULT_MAX_TARGET: usize = 8192;
/// Kestrel's `MaxRequestHeadersTotalSize` (32 KiB): what a TS3AudioBot node accepts.
pub const DEFAULT_MAX_HEADERS: usize = 32 * 1024;
/// The one command TS3AudioBot's own WebInterface sends without credentials (an `<img>` tag).
pub const DEFAULT_ANONYMOUS_ALLOW: &str = "bot/use/<id>/(/data/song/cover/get)";

/// A configuration error; the message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML does not match the schema (unknown key, wrong type, bad syntax).
    #[error("{0}")]
    Syntax(String),
    /// A value is present but not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted path of the key, e.g. `nodes[1].url`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

pub use crate::store::{NodeState, Role, Scope};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// API keys (clients send `Basic base64(name:secret)`).
    pub keys: Vec<KeyConfig>,
    /// The TS3AudioBot nodes.
    pub nodes: Vec<NodeConfig>,
    /// Where the router keeps its state.
    pub storage: StorageConfig,
    /// Pingora server settings.
    pub server: ServerSettings,
    /// Request handling.
    pub routing: RoutingConfig,
    /// Node polling.
    pub health: HealthConfig,
    /// Bot placement.
    pub placement: PlacementConfig,
    /// Rebuilding a dead node's bots elsewhere.
    pub failover: FailoverConfig,
    /// The admin interface.
    pub admin: AdminConfig,
    /// HTTPS on the API listener (`tls: {cert, key}`); None: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The key that seals the store's secrets.
    pub secrets: SecretsKeySource,
}

/// Where the key that seals the store's secrets comes from (`secrets:`). Reading the file is
/// the server's job at start (this module touches no file system).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum SecretsKeySource {
    /// No key: secrets are stored as they are (the router warns at start).
    #[default]
    None,
    /// `secrets.key_file`: a file holding the key's text.
    File(String),
    /// `secrets.key_env`: the key's text, from the named environment variable. Secret.
    Text {
        /// The variable's name (for messages).
        var: String,
        /// Its value.
        text: String,
    },
}

impl std::fmt::Debug for SecretsKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretsKeySource::None => f.write_str("None"),
            SecretsKeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretsKeySource::Text { var, .. } => f
                .debug_struct("Text")
                .field("var", var)
                .finish_non_exhaustive(),
        }
    }
}

/// The admin listener (JSON API and panel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where it listens; None = no admin listener.
    pub listen: Option<SocketAddr>,
    /// How long a panel login lasts.
    pub session_ttl: Duration,
    /// Whether requests are recorded for `GET /metrics` (on by default; off only to measure
    /// what recording costs).
    pub metrics: bool,
    /// HTTPS on the admin listener (`admin.tls: {cert, key}`); None: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// One API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// The user id clients send (the part before `:`).
    pub name: String,
    /// The secret (the part after `:`).
    pub secret: String,
    /// What the key may do.
    pub role: Role,
    /// Which bots it reaches, how many it may have, where it may be used from.
    pub tenancy: Tenancy,
}

/// One TS3AudioBot node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// A unique, stable name (bots are recorded against it).
    pub name: String,
    /// The URL as written (`http://host:port`).
    pub url: String,
    /// The URL taken apart and resolved.
    pub target: NodeTarget,
    /// The node's own API token `uid:token`, or None when the node trusts the router's IP.
    pub auth: Option<String>,
    /// How many bots the node may run.
    pub capacity: u32,
    /// Ready, drain (no new bots; its bots keep running and stay reachable) or maint.
    pub state: NodeState,
    /// The node's agent, if it runs one (load figures for placement and the panel).
    pub agent: Option<AgentConfig>,
    /// For an `https://` node: how its certificate is verified (`ca_file`, `tls_host`).
    pub tls: NodeTls,
}

/// A node's agent (`ts3ab-lb-agent`): where its `/summary` is and the bearer token it wants.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The URL as written (`http://host:port`).
    pub url: String,
    /// The URL taken apart and resolved.
    pub target: NodeTarget,
    /// The agent's bearer token (`--token-env` on the agent), if it wants one. Secret.
    pub token: Option<String>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Storage backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// The embedded store (redb) in a directory.
    Embedded {
        /// Directory of the database file.
        path: String,
    },
    /// MongoDB, which several routers can share.
    Mongodb(MongoConfig),
}

/// `storage: {kind: mongodb, ...}`.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// The connection string (`mongodb://` or `mongodb+srv://`). Secret (may hold a password).
    pub uri: String,
    /// The database holding the router's collections.
    pub database: String,
    /// How often a router reads what other routers changed.
    pub sync_interval: Duration,
    /// This router's name in leases and written records (default: host name + process id).
    pub router_id: Option<String>,
}

impl MongoConfig {
    /// The connection string without its password (for logs and the admin API).
    pub fn redacted_uri(&self) -> String {
        redact_uri(&self.uri)
    }
}

/// `scheme://user:password@hosts/...` with the password replaced.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "<redacted>".to_string();
    };
    // The user info ends at the last `@` before the path (a password may hold `@` only
    // percent-encoded, but be safe with raw ones too).
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:<redacted>@{}", &rest[at + 1..])
        }
        None => uri.to_string(),
    }
}

impl std::fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &"<redacted>")
            .field("database", &self.database)
            .field("sync_interval", &self.sync_interval)
            .field("router_id", &self.router_id)
            .finish()
    }
}

/// Pingora server settings passed through to `ServerConf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Work-stealing tokio runtime (true) or Pingora's no-steal runtime (false).
    pub work_stealing: bool,
    /// Seconds to keep serving after SIGTERM (Pingora's default is 300; ours is short).
    pub grace_period_seconds: u64,
    /// Seconds to let in-flight requests finish on shutdown.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Idle keep-alive connections kept per node.
    pub upstream_keepalive_pool_size: usize,
    /// Pingora pid file.
    pub pid_file: String,
    /// Pingora graceful-upgrade socket.
    pub upgrade_sock: String,
}

/// How requests are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Commands anonymous callers may run (patterns, `<id>` matches any bot id).
    pub anonymous_allow: Vec<String>,
    /// Connecting to a node.
    pub connect_timeout: Duration,
    /// A whole proxied request (TS3AudioBot resolves links while you wait, so this is long).
    pub request_timeout: Duration,
    /// Each node's part of a fan-out (`bot/list`, `system/info`, split merges).
    pub fanout_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest request target accepted.
    pub max_target_bytes: usize,
    /// Most request header bytes (names and values) accepted: Kestrel's default, so the
    /// router refuses exactly what a node would (431).
    pub max_header_bytes: usize,
    /// Most commands in one request (TS3AudioBot's `web.api.command_complexity`).
    pub max_commands: usize,
    /// How long a cluster-wide `bot/list` may be reused while nothing changed.
    pub list_cache: Duration,
    /// How long a summed `system/info` may be reused (nodes sample once per second).
    pub system_info_cache: Duration,
    /// Failed authentications from one client address within `auth_failure_window` after
    /// which its further attempts get 429 until the window has passed (0: no limit).
    pub auth_failure_limit: usize,
    /// The window of `auth_failure_limit`.
    pub auth_failure_window: Duration,
    /// Connections one client address may hold at once on the API listener (0: no bound).
    pub max_connections_per_address: u32,
    /// From a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// How long a client connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Requests the router sends one node at once on clients' behalf (so connections to it);
    /// more wait for a place up to `connect_timeout`, then get 503 (0: no bound).
    pub max_node_connections: u32,
}

/// Node polling and liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often each node's `bot/list` is read.
    pub interval: Duration,
    /// Timeout of one poll.
    pub timeout: Duration,
    /// Consecutive failed polls before a node counts as down.
    pub failures_to_down: usize,
    /// Consecutive good polls before a down node counts as up again.
    pub successes_to_up: usize,
}

/// Failover: when a node has been down for `after`, its running bots are rebuilt on other
/// nodes with the same cluster id and TeamSpeak identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Whether the router moves a dead node's bots at all.
    pub enabled: bool,
    /// How long a node must have been down (after the poller declared it down) before its
    /// bots are moved: long enough to ride out a node restart.
    pub after: Duration,
    /// How many bots are rebuilt at once.
    pub concurrency: usize,
    /// Pause before retrying bots that could not be moved (no room, target failing).
    pub retry: Duration,
}

/// How new bots are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementConfig {
    /// The strategy.
    pub strategy: PlacementStrategy,
    /// The capacity of nodes that do not say (also for nodes added at run time).
    pub default_capacity: u32,
    /// How often each node's agent is read (`placement.agent_interval_ms`).
    pub agent_interval: Duration,
}

/// How many agent intervals a reading stays usable: one lost or slow answer is ridden out,
/// an agent that stopped answering no longer steers placement after three.
pub const AGENT_STALE_INTERVALS: u32 = 3;

impl PlacementConfig {
    /// How old (by the router's clock, from when it was received) an agent's reading may be
    /// before placement ignores it and falls back to bot counts.
    pub fn agent_stale_after(&self) -> Duration {
        self.agent_interval * AGENT_STALE_INTERVALS
    }
}

/// Placement strategies (named in the config so more can be added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStrategy {
    /// The healthy, non-draining node with the lowest `(running + reserved) / capacity`.
    LeastUsed,
    /// The node with the lowest penalty: its used fraction plus CPU and memory pressure
    /// from its agent (see `cluster::penalty`); without fresh agent data, `least_used`.
    Penalty,
}

impl PlacementStrategy {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementStrategy::LeastUsed => "least_used",
            PlacementStrategy::Penalty => "penalty",
        }
    }
}

// ---- raw YAML schema -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    storage: Option<RawStorage>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    placement: RawPlacement,
    #[serde(default)]
    failover: RawFailover,
    #[serde(default)]
    admin: RawAdmin,
    tls: Option<RawTls>,
    #[serde(default)]
    secrets: Option<RawSecrets>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    key_file: Option<String>,
    key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

fn tls_files(
    raw: Option<RawTls>,
    at: &str,
    read: ReadFile<'_>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let files = TlsFiles {
        cert: raw.cert,
        key: raw.key,
    };
    tls::load_pair(&files, read).map_err(|e| e.at(at))?;
    Ok(Some(files))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: String,
    #[serde(default = "default_session_ttl")]
    session_ttl_s: u64,
    #[serde(default = "default_true")]
    metrics: bool,
    tls: Option<RawTls>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            session_ttl_s: default_session_ttl(),
            metrics: true,
            tls: None,
        }
    }
}

fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.to_string()
}

fn default_true() -> bool {
    true
}

fn default_session_ttl() -> u64 {
    12 * 3600
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    secret: Option<String>,
    secret_env: Option<String>,
    #[serde(default = "default_role")]
    role: Role,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    max_bots: Option<u32>,
    #[serde(default)]
    allow_from: Vec<String>,
}

fn default_role() -> Role {
    Role::User
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    url: String,
    auth: Option<String>,
    auth_env: Option<String>,
    capacity: Option<u32>,
    #[serde(default)]
    draining: bool,
    state: Option<NodeState>,
    agent: Option<RawAgent>,
    ca_file: Option<String>,
    tls_host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    url: String,
    token: Option<String>,
    token_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum RawStorage {
    Embedded {
        #[serde(default = "default_data_path")]
        path: String,
    },
    Mongodb {
        uri: Option<String>,
        uri_env: Option<String>,
        #[serde(default = "default_mongo_database")]
        database: String,
        #[serde(default = "default_sync_interval_ms")]
        sync_interval_ms: u64,
        router_id: Option<String>,
    },
}

fn default_mongo_database() -> String {
    "ts3ab_lb".to_string()
}

fn default_sync_interval_ms() -> u64 {
    1000
}

fn default_data_path() -> String {
    "data".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    threads: usize,
    work_stealing: bool,
    grace_period_seconds: u64,
    graceful_shutdown_timeout_seconds: u64,
    upstream_keepalive_pool_size: usize,
    pid_file: String,
    upgrade_sock: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            threads: 2,
            // Pingora's no-steal runtime: +3-12 % throughput in benches/ (BENCHMARKS.md).
            work_stealing: false,
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
            upstream_keepalive_pool_size: 128,
            pid_file: "/tmp/ts3ab-lb.pid".into(),
            upgrade_sock: "/tmp/ts3ab-lb-upgrade.sock".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRouting {
    anonymous_allow: Vec<String>,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    fanout_timeout_ms: u64,
    max_body_bytes: usize,
    max_target_bytes: usize,
    max_header_bytes: usize,
    max_commands: usize,
    list_cache_ms: u64,
    system_info_cache_ms: u64,
    auth_failure_limit: usize,
    auth_failure_window_s: u64,
    max_connections_per_address: u32,
    header_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_node_connections: u32,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            anonymous_allow: vec![DEFAULT_ANONYMOUS_ALLOW.to_string()],
            connect_timeout_ms: 1000,
            request_timeout_ms: 30_000,
            fanout_timeout_ms: 3000,
            max_body_bytes: DEFAULT_MAX_BODY,
            max_target_bytes: DEFAULT_MAX_TARGET,
            max_header_bytes: DEFAULT_MAX_HEADERS,
            max_commands: 64,
            list_cache_ms: 250,
            // TS3AudioBot samples memory and CPU once per second: a sum at most a second old
            // is at most one sample behind, and the WebInterface polls it every second.
            system_info_cache_ms: 1000,
            auth_failure_limit: 20,
            auth_failure_window_s: 60,
            max_connections_per_address: 512,
            // Kestrel's RequestHeadersTimeout, what a TS3AudioBot node allows.
            header_timeout_ms: 30_000,
            // Pingora's own keep-alive timeout.
            idle_timeout_ms: 60_000,
            max_node_connections: 512,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealth {
    interval_ms: u64,
    timeout_ms: u64,
    failures_to_down: usize,
    successes_to_up: usize,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            interval_ms: 2000,
            timeout_ms: 1500,
            failures_to_down: 2,
            successes_to_up: 1,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPlacement {
    strategy: PlacementStrategy,
    default_capacity: u32,
    agent_interval_ms: u64,
}

impl Default for RawPlacement {
    fn default() -> Self {
        RawPlacement {
            strategy: PlacementStrategy::LeastUsed,
            default_capacity: DEFAULT_CAPACITY,
            // The agent samples CPU every 5 s by default: reading it faster gives no news.
            agent_interval_ms: 5000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFailover {
    enabled: bool,
    after_ms: u64,
    concurrency: usize,
    retry_ms: u64,
}

impl Default for RawFailover {
    fn default() -> Self {
        RawFailover {
            enabled: true,
            after_ms: 10_000,
            concurrency: 16,
            retry_ms: 5_000,
        }
    }
}

// ---- parsing and validation ------------------------------------------------------------------

impl Config {
    /// Parses and validates YAML. `env` looks up environment variables named by `secret_env`
    /// and `auth_env` (pass `|k| std::env::var(k).ok()` in production).
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::from_yaml_with(text, env, &|p| std::fs::read(p))
    }

    /// [`Config::from_yaml`] with the TLS files read through `read`.
    pub fn from_yaml_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        read: ReadFile<'_>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            serde_yaml::from_str("{}")
        } else {
            serde_yaml::from_str(text)
        }
        .map_err(|e| ConfigError::Syntax(e.to_string()))?;
        validate(raw, env, read)
    }
}

fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    read: ReadFile<'_>,
) -> Result<Config, ConfigError> {
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        invalid(
            "listen",
            format!("`{}` is not an IP:port address", raw.listen),
        )
    })?;
    if raw.placement.default_capacity == 0 {
        return Err(invalid("placement.default_capacity", "must be at least 1"));
    }
    // Below 100 ms the reads would cost the agents more than they tell; above a minute the
    // figures (and so the stale limit, three intervals) are too old to steer placement.
    if !(100..=60_000).contains(&raw.placement.agent_interval_ms) {
        return Err(invalid(
            "placement.agent_interval_ms",
            "must be between 100 and 60000",
        ));
    }
    Ok(Config {
        listen,
        keys: validate_keys(raw.keys, env)?,
        nodes: validate_nodes(raw.nodes, raw.placement.default_capacity, env, read)?,
        storage: validate_storage(raw.storage, env)?,
        server: validate_server(raw.server)?,
        routing: validate_routing(raw.routing)?,
        health: validate_health(raw.health)?,
        placement: PlacementConfig {
            strategy: raw.placement.strategy,
            default_capacity: raw.placement.default_capacity,
            agent_interval: Duration::from_millis(raw.placement.agent_interval_ms),
        },
        failover: validate_failover(raw.failover)?,
        admin: validate_admin(raw.admin, listen, read)?,
        tls: tls_files(raw.tls, "tls", read)?,
        secrets: validate_secrets(raw.secrets, env)?,
    })
}

fn validate_secrets(
    raw: Option<RawSecrets>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretsKeySource, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SecretsKeySource::None);
    };
    match (raw.key_file, raw.key_env) {
        (Some(_), Some(_)) => Err(invalid(
            "secrets.key_file",
            "give either key_file or key_env, not both",
        )),
        (Some(f), None) if f.is_empty() => Err(invalid("secrets.key_file", "must not be empty")),
        (Some(f), None) => Ok(SecretsKeySource::File(f)),
        (None, Some(var)) => match env(&var) {
            Some(text) if !text.trim().is_empty() => Ok(SecretsKeySource::Text { var, text }),
            _ => Err(invalid(
                "secrets.key_env",
                format!("environment variable {var} is not set"),
            )),
        },
        (None, None) => Err(invalid(
            "secrets.key_file",
            "give key_file or key_env (make a key with `ts3ab-lb store new-key --out FILE`)",
        )),
    }
}

/// A value that is present but wrong, before it is placed in the file (`field` is the key's
/// last part, e.g. `url`): the config file prefixes its position, the admin API reports it
/// as the JSON field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

impl FieldError {
    fn at(self, prefix: &str) -> ConfigError {
        invalid(format!("{prefix}.{}", self.field), self.message)
    }
}

impl KeyConfig {
    /// Checks one key (the same rules for the config file and the admin API).
    pub fn new(name: &str, secret: String, role: Role) -> Result<KeyConfig, FieldError> {
        check_key_name(name)?;
        if secret.len() < 8 {
            return Err(field("secret", "must be at least 8 characters"));
        }
        Ok(KeyConfig {
            name: name.to_string(),
            secret,
            role,
            tenancy: Tenancy::default(),
        })
    }

    /// The key with a tenancy (checked by [`Tenancy::new`]).
    pub fn with_tenancy(self, tenancy: Tenancy) -> KeyConfig {
        KeyConfig { tenancy, ..self }
    }
}

/// Checks a key name: non-empty, no `:` (it ends the name in `Basic name:secret`), no
/// control characters.
pub fn check_key_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(field("name", "must not be empty"));
    }
    if name.contains(':') || name.chars().any(char::is_control) {
        return Err(field("name", "must not contain `:` or control characters"));
    }
    Ok(())
}

/// Checks a node name: non-empty, only `[A-Za-z0-9._-]` (it appears in records, logs and
/// metric labels).
pub fn check_node_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(field(
            "name",
            "must be non-empty and use only [A-Za-z0-9._-]",
        ));
    }
    Ok(())
}

impl NodeConfig {
    /// Checks one node (the same rules for the config file, stored nodes and the admin API):
    /// the name, the URL (resolved here, once), the `uid:token` form and the capacity.
    pub fn parse(
        name: &str,
        url: &str,
        auth: Option<String>,
        capacity: u32,
        state: NodeState,
    ) -> Result<NodeConfig, FieldError> {
        check_node_name(name)?;
        let target = parse_node_url(url).map_err(|m| field("url", m))?;
        if let Some(a) = &auth {
            if !a.contains(':') {
                return Err(field(
                    "auth",
                    "must be `uid:token` as printed by `!api token`",
                ));
            }
        }
        if capacity == 0 {
            return Err(field("capacity", "must be at least 1"));
        }
        Ok(NodeConfig {
            name: name.to_string(),
            url: url.to_string(),
            target,
            auth,
            capacity,
            state,
            agent: None,
            tls: NodeTls::default(),
        })
    }

    /// The same node with its TLS settings checked and read (the same rules for the config
    /// file, stored nodes and the admin API): only for an `https://` URL, a `tls_host` that
    /// is a name or an address, a `ca_file` of PEM certificates.
    pub fn with_tls_files(
        mut self,
        ca_file: Option<String>,
        tls_host: Option<String>,
        read: ReadFile<'_>,
    ) -> Result<NodeConfig, FieldError> {
        if !self.target.tls {
            if ca_file.is_some() {
                return Err(field("ca_file", "is only for an https:// url"));
            }
            if tls_host.is_some() {
                return Err(field("tls_host", "is only for an https:// url"));
            }
        }
        self.tls = NodeTls::load(ca_file, tls_host, read).map_err(|(f, m)| field(f, m))?;
        Ok(self)
    }

    /// The same node with TLS settings already checked (a live node's, kept on an edit).
    pub fn with_tls(mut self, tls: NodeTls) -> NodeConfig {
        self.tls = tls;
        self
    }

    /// The endpoint of the node's agent, if it has one.
    pub fn agent_endpoint(&self) -> Option<AgentEndpoint> {
        self.agent
            .as_ref()
            .map(|a| AgentEndpoint::new(&self.name, &a.url, a.target.clone(), a.token.as_deref()))
    }

    /// The same node with `agent` (checked by [`AgentConfig::parse`]) as its agent.
    pub fn with_agent(mut self, agent: Option<AgentConfig>) -> NodeConfig {
        self.agent = agent;
        self
    }

    /// The node's endpoint (address, names, the router's `Authorization` value).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(
            &self.name,
            &self.url,
            self.target.clone(),
            self.auth.as_deref(),
        )
        .with_tls(self.tls.clone())
    }
}

impl AgentConfig {
    /// Checks a node's agent (the same rules for the config file, stored nodes and the admin
    /// API): an `http[s]://host:port` URL without a path (the router asks for `/summary`
    /// itself) and a token that can travel in an `Authorization: Bearer` header.
    pub fn parse(url: &str, token: Option<String>) -> Result<AgentConfig, FieldError> {
        let target = parse_node_url(url).map_err(|m| field("agent.url", m))?;
        if let Some(t) = &token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(field(
                    "agent.token",
                    "must be non-empty printable ASCII without spaces",
                ));
            }
        }
        Ok(AgentConfig {
            url: url.to_string(),
            target,
            token,
        })
    }
}

fn validate_keys(
    raw: Vec<RawKey>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<KeyConfig>, ConfigError> {
    let mut keys = Vec::with_capacity(raw.len());
    let mut key_names = HashSet::new();
    let mut tags = HashSet::new();
    for (i, k) in raw.into_iter().enumerate() {
        let at = format!("keys[{i}]");
        check_key_name(&k.name).map_err(|e| e.at(&at))?;
        if !key_names.insert(k.name.clone()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("`{}` is used by another key", k.name),
            ));
        }
        if !tags.insert(tenant_tag(&k.name)) {
            // Two names whose template name spaces would be one (see `tenant_tag`).
            return Err(invalid(
                format!("{at}.name"),
                format!(
                    "`{}` cannot be told apart from another key's name; choose another",
                    k.name
                ),
            ));
        }
        let secret = secret_value(
            k.secret,
            k.secret_env,
            env,
            &format!("{at}.secret"),
            &format!("{at}.secret_env"),
        )?
        .ok_or_else(|| {
            invalid(
                format!("{at}.secret"),
                "missing (set `secret` or `secret_env`)",
            )
        })?;
        let tenancy = Tenancy::new(k.scope, k.max_bots, &k.allow_from).map_err(|e| e.at(&at))?;
        keys.push(
            KeyConfig::new(&k.name, secret, k.role)
                .map_err(|e| e.at(&at))?
                .with_tenancy(tenancy),
        );
    }
    Ok(keys)
}

fn validate_nodes(
    raw: Vec<RawNode>,
    default_capacity: u32,
    env: &dyn Fn(&str) -> Option<String>,
    read: ReadFile<'_>,
) -> Result<Vec<NodeConfig>, ConfigError> {
    let mut nodes: Vec<NodeConfig> = Vec::with_capacity(raw.len());
    for (i, n) in raw.into_iter().enumerate() {
        let at = format!("nodes[{i}]");
        let auth = secret_value(
            n.auth,
            n.auth_env,
            env,
            &format!("{at}.auth"),
            &format!("{at}.auth_env"),
        )?;
        let node = NodeConfig::parse(
            &n.name,
            &n.url,
            auth,
            n.capacity.unwrap_or(default_capacity),
            match (n.state, n.draining) {
                (Some(_), true) => {
                    return Err(invalid(
                        format!("{at}.draining"),
                        "set either this or `state`, not both",
                    ))
                }
                (Some(s), false) => s,
                (None, true) => NodeState::Drain,
                (None, false) => NodeState::Ready,
            },
        )
        .map_err(|e| e.at(&at))?;
        let agent = match n.agent {
            None => None,
            Some(a) => {
                let token = secret_value(
                    a.token,
                    a.token_env,
                    env,
                    &format!("{at}.agent.token"),
                    &format!("{at}.agent.token_env"),
                )?;
                Some(AgentConfig::parse(&a.url, token).map_err(|e| e.at(&at))?)
            }
        };
        let node = node
            .with_agent(agent)
            .with_tls_files(n.ca_file, n.tls_host, read)
            .map_err(|e| e.at(&at))?;
        if nodes.iter().any(|o| o.name == node.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("`{}` is used by another node", node.name),
            ));
        }
        if nodes.iter().any(|o| o.target.addr == node.target.addr) {
            return Err(invalid(
                format!("{at}.url"),
                format!("{} is already used by another node", node.target.addr),
            ));
        }
        nodes.push(node);
    }
    Ok(nodes)
}

fn validate_storage(
    raw: Option<RawStorage>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StorageConfig, ConfigError> {
    match raw {
        None => Ok(StorageConfig::Embedded {
            path: default_data_path(),
        }),
        Some(RawStorage::Embedded { path }) => {
            if path.is_empty() {
                return Err(invalid("storage.path", "must not be empty"));
            }
            Ok(StorageConfig::Embedded { path })
        }
        Some(RawStorage::Mongodb {
            uri,
            uri_env,
            database,
            sync_interval_ms,
            router_id,
        }) => {
            let uri = match (uri, uri_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "storage.uri",
                        "give either uri or uri_env, not both",
                    ))
                }
                (Some(u), None) => u,
                (None, Some(var)) => env(&var).ok_or_else(|| {
                    invalid(
                        "storage.uri_env",
                        format!("environment variable {var} is not set"),
                    )
                })?,
                (None, None) => return Err(invalid(
                    "storage.uri",
                    "is required for kind: mongodb (e.g. mongodb://db1,db2,db3/?replicaSet=rs0)",
                )),
            };
            if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
                return Err(invalid(
                    "storage.uri",
                    "must start with mongodb:// or mongodb+srv://",
                ));
            }
            // MongoDB's own rules for database names: not empty, < 64 bytes, none of /\. "$*<>:|? or NUL.
            if database.is_empty()
                || database.len() >= 64
                || database.chars().any(|c| "/\\. \"$*<>:|?\0".contains(c))
            {
                return Err(invalid(
                    "storage.database",
                    "must be 1 to 63 characters without spaces or any of / \\ . \" $ * < > : | ?",
                ));
            }
            if !(100..=60_000).contains(&sync_interval_ms) {
                return Err(invalid(
                    "storage.sync_interval_ms",
                    "must be between 100 and 60000",
                ));
            }
            if let Some(id) = &router_id {
                if id.is_empty()
                    || id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                {
                    return Err(invalid(
                        "storage.router_id",
                        "must be 1 to 64 characters of letters, digits, - _ . :",
                    ));
                }
            }
            Ok(StorageConfig::Mongodb(MongoConfig {
                uri,
                database,
                sync_interval: Duration::from_millis(sync_interval_ms),
                router_id,
            }))
        }
    }
}

fn validate_server(s: RawServer) -> Result<ServerSettings, ConfigError> {
    if s.threads == 0 {
        return Err(invalid("server.threads", "must be at least 1"));
    }
    if s.upstream_keepalive_pool_size == 0 {
        return Err(invalid(
            "server.upstream_keepalive_pool_size",
            "must be at least 1",
        ));
    }
    Ok(ServerSettings {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: s.grace_period_seconds,
        graceful_shutdown_timeout_seconds: s.graceful_shutdown_timeout_seconds,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        pid_file: s.pid_file,
        upgrade_sock: s.upgrade_sock,
    })
}

/// A duration in milliseconds that must not be 0.
fn ms(key: &str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(Duration::from_millis(v))
    }
}

fn validate_routing(r: RawRouting) -> Result<RoutingConfig, ConfigError> {
    for (i, pattern) in r.anonymous_allow.iter().enumerate() {
        AllowPattern::parse(pattern)
            .map_err(|m| invalid(format!("routing.anonymous_allow[{i}]"), m))?;
    }
    Ok(RoutingConfig {
        anonymous_allow: r.anonymous_allow,
        connect_timeout: ms("routing.connect_timeout_ms", r.connect_timeout_ms)?,
        request_timeout: ms("routing.request_timeout_ms", r.request_timeout_ms)?,
        fanout_timeout: ms("routing.fanout_timeout_ms", r.fanout_timeout_ms)?,
        max_body_bytes: r.max_body_bytes,
        max_target_bytes: r.max_target_bytes.max(16),
        max_header_bytes: match r.max_header_bytes {
            0..1024 => {
                return Err(invalid(
                    "routing.max_header_bytes",
                    "must be at least 1024 (clients send a few hundred bytes of headers)",
                ))
            }
            n => n,
        },
        max_commands: match r.max_commands {
            0 => return Err(invalid("routing.max_commands", "must be at least 1")),
            n => n,
        },
        list_cache: Duration::from_millis(r.list_cache_ms),
        system_info_cache: match r.system_info_cache_ms {
            // Longer would show a panel's load graph minutes late.
            0..=60_000 => Duration::from_millis(r.system_info_cache_ms),
            _ => {
                return Err(invalid(
                    "routing.system_info_cache_ms",
                    "must be at most 60000 (a minute: TS3AudioBot keeps 60 one-second samples)",
                ))
            }
        },
        auth_failure_limit: r.auth_failure_limit,
        auth_failure_window: match r.auth_failure_window_s {
            // A day at most: the window is also how long an address is remembered.
            1..=86_400 => Duration::from_secs(r.auth_failure_window_s),
            _ => {
                return Err(invalid(
                    "routing.auth_failure_window_s",
                    "must be between 1 and 86400 seconds",
                ))
            }
        },
        max_connections_per_address: r.max_connections_per_address,
        header_timeout: match r.header_timeout_ms {
            100..=600_000 => Duration::from_millis(r.header_timeout_ms),
            _ => {
                return Err(invalid(
                    "routing.header_timeout_ms",
                    "must be between 100 and 600000",
                ))
            }
        },
        idle_timeout: match r.idle_timeout_ms {
            100..=3_600_000 => Duration::from_millis(r.idle_timeout_ms),
            _ => {
                return Err(invalid(
                    "routing.idle_timeout_ms",
                    "must be between 100 and 3600000",
                ))
            }
        },
        max_node_connections: r.max_node_connections,
    })
}

fn validate_health(h: RawHealth) -> Result<HealthConfig, ConfigError> {
    Ok(HealthConfig {
        interval: ms("health.interval_ms", h.interval_ms)?,
        timeout: ms("health.timeout_ms", h.timeout_ms)?,
        failures_to_down: h.failures_to_down.max(1),
        successes_to_up: h.successes_to_up.max(1),
    })
}

fn validate_admin(
    a: RawAdmin,
    api: SocketAddr,
    read: ReadFile<'_>,
) -> Result<AdminConfig, ConfigError> {
    let listen = match a.listen.as_str() {
        "" | "off" => None,
        s => {
            let addr: SocketAddr = s.parse().map_err(|_| {
                invalid(
                    "admin.listen",
                    format!("`{s}` is not an IP:port address (or `off`)"),
                )
            })?;
            if addr.port() == api.port() && (addr.ip() == api.ip() || api.ip().is_unspecified()) {
                return Err(invalid("admin.listen", "must not be the API's address"));
            }
            Some(addr)
        }
    };
    if a.session_ttl_s == 0 {
        return Err(invalid("admin.session_ttl_s", "must be greater than 0"));
    }
    Ok(AdminConfig {
        listen,
        session_ttl: Duration::from_secs(a.session_ttl_s),
        metrics: a.metrics,
        tls: tls_files(a.tls, "admin.tls", read)?,
    })
}

fn validate_failover(f: RawFailover) -> Result<FailoverConfig, ConfigError> {
    if f.concurrency == 0 {
        return Err(invalid("failover.concurrency", "must be at least 1"));
    }
    Ok(FailoverConfig {
        enabled: f.enabled,
        // 0 is allowed: move as soon as the poller declares the node down.
        after: Duration::from_millis(f.after_ms),
        concurrency: f.concurrency,
        retry: ms("failover.retry_ms", f.retry_ms)?,
    })
}

/// Resolves a secret given inline or through an environment variable (exactly one of them).
fn secret_value(
    inline: Option<String>,
    var: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    inline_key: &str,
    env_key: &str,
) -> Result<Option<String>, ConfigError> {
    match (inline, var) {
        (Some(_), Some(_)) => Err(invalid(
            inline_key,
            format!("set either this or `{env_key}`, not both"),
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(name)) => match env(&name) {
            Some(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(invalid(
                env_key,
                format!("environment variable `{name}` is not set"),
            )),
        },
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_secrets_key_comes_from_a_file_or_the_environment_and_never_shows() {
        let c = Config::from_yaml("secrets: {key_file: /etc/k}", &no_env).unwrap();
        assert_eq!(c.secrets, SecretsKeySource::File("/etc/k".into()));
        let env = |k: &str| (k == "K").then(|| "c2VjcmV0LWtleS10ZXh0".to_string());
        let c = Config::from_yaml("secrets: {key_env: K}", &env).unwrap();
        assert!(
            matches!(&c.secrets, SecretsKeySource::Text { text, .. } if text == "c2VjcmV0LWtleS10ZXh0")
        );
        assert!(!format!("{c:?}").contains("c2VjcmV0LWtleS10ZXh0"));
        let c = Config::from_yaml("{}", &no_env).unwrap();
        assert_eq!(c.secrets, SecretsKeySource::None);
    }

    fn err(yaml: &str) -> String {
        match Config::from_yaml(yaml, &no_env) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = r#"
listen: "127.0.0.1:58913"
keys:
  - { name: alice, secret: "alice-secret", role: user }
  - { name: ops, secret: "ops-secret-1", role: admin }
nodes:
  - { name: node-1, url: "http://127.0.0.1:1001", auth: "uid:token", capacity: 100 }
  - { name: node-2, url: "http://127.0.0.1:1002/", draining: true }
storage: { kind: embedded, path: "state" }
server: { threads: 1, grace_period_seconds: 0 }
"#;

    #[test]
    fn full_example_parses() {
        let c = Config::from_yaml(GOOD, &no_env).expect("valid");
        assert_eq!(c.listen, "127.0.0.1:58913".parse().expect("addr"));
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[1].role, Role::Admin);
        assert_eq!(c.nodes[0].capacity, 100);
        assert_eq!(c.nodes[1].capacity, DEFAULT_CAPACITY);
        assert_eq!(c.nodes[1].auth, None);
        assert_eq!(
            (c.nodes[0].state, c.nodes[1].state),
            (NodeState::Ready, NodeState::Drain)
        );
        assert_eq!(c.nodes[1].target.authority, "127.0.0.1:1002");
        assert_eq!(
            c.storage,
            StorageConfig::Embedded {
                path: "state".into()
            }
        );
        assert_eq!(c.server.threads, 1);
        assert_eq!(c.server.grace_period_seconds, 0);
        assert_eq!(
            c.routing.anonymous_allow,
            vec![DEFAULT_ANONYMOUS_ALLOW.to_string()]
        );
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(c.placement.strategy, PlacementStrategy::LeastUsed);
        assert!(c.failover.enabled);
        assert_eq!(c.failover.after, Duration::from_secs(10));
    }

    #[test]
    fn defaults_for_an_empty_file() {
        let c = Config::from_yaml("", &no_env).expect("valid");
        assert_eq!(c.listen.port(), 58913);
        assert!(c.keys.is_empty() && c.nodes.is_empty());
        assert_eq!(
            c.storage,
            StorageConfig::Embedded {
                path: "data".into()
            }
        );
    }

    #[test]
    fn secrets_from_environment() {
        let env = |k: &str| match k {
            "S" => Some("from-env-secret".to_string()),
            "T" => Some("uid:from-env-token".to_string()),
            _ => None,
        };
        let c = Config::from_yaml(
            "keys: [{name: a, secret_env: S}]\nnodes: [{name: n, url: 'http://127.0.0.1:1', auth_env: T}]",
            &env,
        )
        .expect("valid");
        assert_eq!(c.keys[0].secret, "from-env-secret");
        assert_eq!(c.nodes[0].auth.as_deref(), Some("uid:from-env-token"));
        let e = Config::from_yaml("keys: [{name: a, secret_env: MISSING}]", &env)
            .expect_err("missing env");
        assert_eq!(
            e.to_string(),
            "keys[0].secret_env: environment variable `MISSING` is not set"
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("listen: nope").starts_with("listen:"));
        assert!(err("keys: [{name: a}]").starts_with("keys[0].secret:"));
        assert!(err("keys: [{name: a, secret: short}]").starts_with("keys[0].secret:"));
        assert!(err("keys: [{name: 'a:b', secret: longenough}]").starts_with("keys[0].name:"));
        assert!(
            err("keys: [{name: a, secret: longenough}, {name: a, secret: longenough}]")
                .starts_with("keys[1].name:")
        );
        assert!(err("keys: [{name: a, secret: longenough, secret_env: X}]")
            .starts_with("keys[0].secret:"));
        assert!(err("nodes: [{name: n, url: 'ftp://x'}]").starts_with("nodes[0].url:"));
        assert!(
            err("nodes: [{name: n, url: 'http://127.0.0.1:1/api'}]").starts_with("nodes[0].url:")
        );
        assert!(err("nodes: [{name: n, url: 'http://127.0.0.1:x'}]").starts_with("nodes[0].url:"));
        assert!(
            err("nodes: [{name: n, url: 'http://127.0.0.1:1', auth: tokenonly}]")
                .starts_with("nodes[0].auth:")
        );
        assert!(
            err("nodes: [{name: n, url: 'http://127.0.0.1:1', capacity: 0}]")
                .starts_with("nodes[0].capacity:")
        );
        assert!(
            err("nodes: [{name: 'bad name', url: 'http://127.0.0.1:1'}]")
                .starts_with("nodes[0].name:")
        );
        assert!(err(
            "nodes: [{name: a, url: 'http://127.0.0.1:1'}, {name: b, url: 'http://127.0.0.1:1'}]"
        )
        .starts_with("nodes[1].url:"));
        assert!(err("server: {threads: 0}").starts_with("server.threads:"));
        assert!(err("health: {interval_ms: 0}").starts_with("health.interval_ms:"));
        assert!(err("failover: {concurrency: 0}").starts_with("failover.concurrency:"));
        assert!(err("failover: {retry_ms: 0}").starts_with("failover.retry_ms:"));
        assert!(err("failover: {after: 5}").contains("after"));
        assert!(err("routing: {anonymous_allow: ['bot/use/<id>/(/song']}")
            .starts_with("routing.anonymous_allow[0]:"));
        assert!(err("storage: {kind: embedded, path: ''}").starts_with("storage.path:"));
        assert!(err("secrets: {}").starts_with("secrets.key_file:"));
        assert!(err("routing: {header_timeout_ms: 5}").starts_with("routing.header_timeout_ms:"));
        assert!(err("routing: {idle_timeout_ms: 0}").starts_with("routing.idle_timeout_ms:"));
        assert!(err("routing: {system_info_cache_ms: 60001}")
            .starts_with("routing.system_info_cache_ms:"));
        let c =
            Config::from_yaml("routing: {system_info_cache_ms: 60000}", &no_env).expect("a minute");
        assert_eq!(c.routing.system_info_cache, Duration::from_secs(60));
        let c = Config::from_yaml("routing: {system_info_cache_ms: 0}", &no_env).expect("off");
        assert_eq!(c.routing.system_info_cache, Duration::ZERO);
        let c = Config::from_yaml("{}", &no_env).expect("defaults");
        assert_eq!(c.routing.system_info_cache, Duration::from_secs(1));
        assert!(err("secrets: {key_file: ''}").starts_with("secrets.key_file:"));
        assert!(err("secrets: {key_file: a, key_env: B}").starts_with("secrets.key_file:"));
        assert!(err("secrets: {key_env: NOPE_NOT_SET}").starts_with("secrets.key_env:"));
        assert!(err("secrets: {key: x}").contains("unknown field"));
        assert!(err("storage: {kind: mongodb}").starts_with("storage.uri:"));
        assert!(err("storage: {kind: mongodb, uri: 'http://db'}").starts_with("storage.uri:"));
        assert!(
            err("storage: {kind: mongodb, uri_env: NOPE_NOT_SET}").starts_with("storage.uri_env:")
        );
        assert!(
            err("storage: {kind: mongodb, uri: 'mongodb://db', uri_env: X}")
                .starts_with("storage.uri:")
        );
        assert!(
            err("storage: {kind: mongodb, uri: 'mongodb://db', database: 'a.b'}")
                .starts_with("storage.database:")
        );
        assert!(
            err("storage: {kind: mongodb, uri: 'mongodb://db', sync_interval_ms: 5}")
                .starts_with("storage.sync_interval_ms:")
        );
        assert!(
            err("storage: {kind: mongodb, uri: 'mongodb://db', router_id: 'a b'}")
                .starts_with("storage.router_id:")
        );
    }

    #[test]
    fn agents_and_the_penalty_strategy() {
        let env = |k: &str| (k == "AGENT_TOKEN").then(|| "agent-s3cret".to_string());
        let c = Config::from_yaml(
            "placement: {strategy: penalty, agent_interval_ms: 1000}\nnodes:\n  \
             - {name: a, url: 'http://127.0.0.1:1', agent: {url: 'http://127.0.0.1:58915', token_env: AGENT_TOKEN}}\n  \
             - {name: b, url: 'http://127.0.0.1:2', agent: {url: 'https://127.0.0.1:3/'}}\n  \
             - {name: c, url: 'http://127.0.0.1:4'}",
            &env,
        )
        .expect("valid");
        assert_eq!(c.placement.strategy, PlacementStrategy::Penalty);
        assert_eq!(c.placement.strategy.as_str(), "penalty");
        assert_eq!(c.placement.agent_interval, Duration::from_secs(1));
        assert_eq!(c.placement.agent_stale_after(), Duration::from_secs(3));
        let a = c.nodes[0].agent.as_ref().expect("agent");
        assert_eq!(a.url, "http://127.0.0.1:58915");
        assert_eq!(a.target.addr.port(), 58915);
        assert_eq!(a.token.as_deref(), Some("agent-s3cret"));
        assert!(!format!("{:?}", c.nodes[0]).contains("agent-s3cret"));
        let b = c.nodes[1].agent.as_ref().expect("agent");
        assert!(b.target.tls && b.token.is_none());
        assert_eq!(c.nodes[2].agent, None);
        // Defaults: least_used, agents read every 5 s.
        let d = Config::from_yaml("", &no_env).expect("valid");
        assert_eq!(d.placement.strategy, PlacementStrategy::LeastUsed);
        assert_eq!(d.placement.agent_interval, Duration::from_secs(5));

        let node = |agent: &str| {
            format!("nodes: [{{name: a, url: 'http://127.0.0.1:1'}}, {{name: b, url: 'http://127.0.0.1:2', agent: {agent}}}]")
        };
        assert!(err(&node("{url: 'ftp://x'}")).starts_with("nodes[1].agent.url:"));
        assert!(
            err(&node("{url: 'http://127.0.0.1:3/summary'}")).starts_with("nodes[1].agent.url:")
        );
        assert!(err(&node("{url: 'http://127.0.0.1:x'}")).starts_with("nodes[1].agent.url:"));
        assert!(err(&node("{url: 'http://127.0.0.1:3', token: 'a b'}"))
            .starts_with("nodes[1].agent.token:"));
        assert!(err(&node("{url: 'http://127.0.0.1:3', token: ''}"))
            .starts_with("nodes[1].agent.token:"));
        assert!(
            err(&node("{url: 'http://127.0.0.1:3', token: t, token_env: T}"))
                .starts_with("nodes[1].agent.token:")
        );
        assert_eq!(
            err(&node("{url: 'http://127.0.0.1:3', token_env: NOT_SET}")),
            "nodes[1].agent.token_env: environment variable `NOT_SET` is not set"
        );
        assert!(err(&node("{token: t}")).contains("url"));
        assert!(err(&node("{url: 'http://127.0.0.1:3', tokn: t}")).contains("tokn"));
        assert!(
            err("placement: {agent_interval_ms: 50}").starts_with("placement.agent_interval_ms:")
        );
        assert!(err("placement: {agent_interval_ms: 60001}")
            .starts_with("placement.agent_interval_ms:"));
        assert!(err("placement: {strategy: lavalink}").contains("lavalink"));
    }

    #[test]
    fn mongodb_storage_defaults_and_env_uri() {
        let env =
            |k: &str| (k == "DB_URI").then(|| "mongodb://u:pw@db1,db2/?replicaSet=rs0".to_string());
        let c = Config::from_yaml("storage: {kind: mongodb, uri_env: DB_URI}", &env).unwrap();
        let StorageConfig::Mongodb(m) = &c.storage else {
            panic!("{:?}", c.storage)
        };
        assert_eq!(m.uri, "mongodb://u:pw@db1,db2/?replicaSet=rs0");
        assert_eq!(m.database, "ts3ab_lb");
        assert_eq!(m.sync_interval, Duration::from_millis(1000));
        assert_eq!(m.router_id, None);
        assert!(!format!("{:?}", c.storage).contains("pw"));
        assert_eq!(
            m.redacted_uri(),
            "mongodb://u:<redacted>@db1,db2/?replicaSet=rs0"
        );
        assert_eq!(redact_uri("mongodb://db1/x"), "mongodb://db1/x");
        assert_eq!(
            redact_uri("mongodb+srv://a:p@ss@c.example/db"),
            "mongodb+srv://a:<redacted>@c.example/db"
        );
    }

    #[test]
    fn unknown_keys_and_types_are_named() {
        let e = err("nodes: [{name: n, url: 'http://127.0.0.1:1', capcity: 3}]");
        assert!(e.contains("capcity"), "{e}");
        let e = err("storage: {kind: mongo}");
        assert!(e.contains("mongo"), "{e}");
        let e = err("storage: {kind: mongodb, url: 'mongodb://x'}");
        assert!(e.contains("url"), "{e}");
        let e = err("placement: {strategy: random}");
        assert!(e.contains("random"), "{e}");
        let e = err("keys: [{name: a, secret: longenough, role: root}]");
        assert!(e.contains("root"), "{e}");
        let e = err("listen: [1, 2]");
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn tls_files_are_checked_at_load_with_the_key_named() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["router.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let other = rcgen::KeyPair::generate().expect("key");
        let files = std::collections::HashMap::from([
            ("c.pem", cert.pem()),
            ("k.pem", key.serialize_pem()),
            ("other.pem", other.serialize_pem()),
            ("junk.pem", "not pem".to_string()),
        ]);
        let read = |p: &str| {
            files
                .get(p)
                .map(|s| s.clone().into_bytes())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let load = |yaml: &str| Config::from_yaml_with(yaml, &no_env, &read);
        let base = "listen: \"127.0.0.1:9000\"\n";
        let c = load(&format!(
            "{base}tls: {{ cert: c.pem, key: k.pem }}\nadmin: {{ listen: \"127.0.0.1:9001\", tls: {{ cert: c.pem, key: k.pem }} }}\nnodes:\n  - {{ name: n, url: \"https://127.0.0.1:1\", ca_file: c.pem, tls_host: node.test }}\n"
        ))
        .expect("valid");
        assert_eq!(c.tls.as_ref().map(|t| t.cert.as_str()), Some("c.pem"));
        assert!(c.admin.tls.is_some());
        assert_eq!(c.nodes[0].tls.ca.as_ref().map(|c| c.certs.len()), Some(1));
        assert_eq!(c.nodes[0].endpoint().tls_name(), "node.test");
        assert_eq!(load(base).expect("plain").tls, None);

        let err = |yaml: String| load(&yaml).expect_err("refused").to_string();
        let e = err(format!("{base}tls: {{ cert: missing.pem, key: k.pem }}"));
        assert!(e.starts_with("tls.cert: cannot read `missing.pem`"), "{e}");
        let e = err(format!("{base}tls: {{ cert: junk.pem, key: k.pem }}"));
        assert!(
            e.starts_with("tls.cert: `junk.pem` holds no PEM certificate"),
            "{e}"
        );
        let e = err(format!(
            "{base}admin: {{ listen: \"127.0.0.1:9001\", tls: {{ cert: c.pem, key: other.pem }} }}"
        ));
        assert!(
            e.starts_with("admin.tls.key: `other.pem` is not the key"),
            "{e}"
        );
        let e = err(format!("{base}tls: {{ cert: c.pem }}"));
        assert!(e.contains("key"), "{e}");
        let node = |extra: &str| {
            format!("{base}nodes:\n  - {{ name: n, url: \"https://127.0.0.1:1\", {extra} }}\n")
        };
        let e = err(node("ca_file: junk.pem"));
        assert!(
            e.starts_with("nodes[0].ca_file: `junk.pem` holds no PEM"),
            "{e}"
        );
        let e = err(node("ca_file: nope.pem"));
        assert!(e.starts_with("nodes[0].ca_file: cannot read"), "{e}");
        let e = err(node("tls_host: \"bad name!\""));
        assert!(e.starts_with("nodes[0].tls_host:"), "{e}");
        let e = err(format!(
            "{base}nodes:\n  - {{ name: n, url: \"http://127.0.0.1:1\", ca_file: c.pem }}\n"
        ));
        assert!(
            e.starts_with("nodes[0].ca_file: is only for an https:// url"),
            "{e}"
        );
    }
}
