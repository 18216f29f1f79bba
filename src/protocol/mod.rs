//! TS3AudioBot's wire format, as the router reads and writes it.
//!
//! Owns: the command syntax with byte spans ([`command`]), which commands matter and where
//! their arguments are ([`catalog`]), the error JSON, headers and BotInfo ([`api_json`]),
//! Basic authentication as TS3AudioBot parses it ([`basic_auth`]), setting paths
//! ([`settings`]) and byte-preserving JSON edits ([`json_edit`]).
//! Does not own: anything about the cluster, nodes or keys; it imports nothing of the crate.

pub mod api_json;
pub mod basic_auth;
pub mod catalog;
pub mod command;
pub mod json_edit;
pub mod pattern;
pub mod settings;
