//! ts3ab-lb: one TS3AudioBot API in front of many TS3AudioBot nodes.
//!
//! # Layout
//! A request flows through these modules (see `ARCHITECTURE.md` for the invariants):
//! - [`config`]: YAML → validated [`config::Config`] (pure).
//! - [`proxy`]: the Pingora `ProxyHttp` glue.
//! - [`auth`]: router keys, constant-time check, TS3AudioBot's 401 texts.
//! - [`command`]: TS3AudioBot's command syntax, parsed with byte spans; byte-exact rewriting.
//! - [`catalog`]: which commands matter to the router and where their arguments are.
//! - [`policy`]: refused, admin-only and anonymous-allowed commands.
//! - [`routing`]: request → plan over the in-memory cluster view.
//! - [`exec`]: plans the router runs itself (fan-out, creates, split merges).
//! - [`cluster`]: the in-memory view: nodes, bots, templates, cluster ids.
//! - [`placement`]: least-used node selection with reservations (a Pingora `BackendSelection`).
//! - [`health`]: the node poller (a Pingora `HealthCheck`).
//! - [`failover`]: rebuilding a dead node's bots elsewhere (same id and identity), fencing.
//! - [`node_client`]: requests the router sends to nodes itself.
//! - [`store`]: durable state behind the `Store` trait (embedded redb by default).
//! - [`api_json`], [`json_edit`]: TS3AudioBot's JSON, written and edited byte-exactly.
//! - [`server`]: assembling and starting everything; [`demo`]: a local cluster of fake nodes.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api_json;
pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod command;
pub mod config;
pub mod demo;
pub mod exec;
pub mod failover;
pub mod health;
pub mod json_edit;
pub mod node_client;
pub mod placement;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod store;
