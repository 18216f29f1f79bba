//! ts3ab-lb: one TS3AudioBot API in front of many TS3AudioBot nodes.
//!
//! # Layers
//! Each layer imports only the layers below it (`ARCHITECTURE.md` states the rule, the code
//! map and a glossary; `python3 ../shared/tools/layers.py` checks it):
//! - [`server`]: assembling and starting everything; the demo cluster.
//! - [`admin`]: the operator side; moving bots on purpose ([`admin::operations`]).
//! - [`metrics`]: the Prometheus exposition (beside `admin`, which serves it).
//! - [`proxy`]: the Pingora `ProxyHttp` glue, keys, policy, routing plans, router-made answers.
//! - [`cluster`]: the in-memory view (nodes with stable ids, bots, templates, cluster ids),
//!   placement, health polling, fencing and failover.
//! - [`config`]: YAML → validated [`config::Config`] (pure).
//! - [`node`]: a node's endpoint, the HTTP client for router-made requests and the node API
//!   calls the router makes.
//! - [`store`]: durable state behind the `Store` trait (embedded redb by default).
//! - [`protocol`]: TS3AudioBot's wire format: command syntax, catalog, error JSON and BotInfo,
//!   Basic auth, byte-exact JSON edits.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod store;
