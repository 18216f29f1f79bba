//! Talking to one TS3AudioBot node.
//!
//! Owns: a node's endpoint (address, TLS, host, the router's own credentials for it:
//! [`endpoint`]), the HTTP client for requests the router makes itself ([`client`]) and the
//! node API calls built on it ([`api`]: reading `bot/list`, a bot's identity, one BotInfo),
//! and reading the node agent's summary with it ([`agent`]); TLS trust and refusals ([`tls`]).
//! Does not own: what the router does with the answers (`cluster`, `proxy`).

pub mod agent;
pub mod api;
pub mod client;
pub mod endpoint;
pub mod tls;
