//! TS3AudioBot's wire format, as the router reads and writes it.
//!
//! Owns: the command syntax with byte spans ([`command`]), which commands matter and where
//! their arguments are ([`catalog`]), the error JSON, headers and BotInfo ([`api_json`]),
//! Basic authentication as TS3AudioBot parses it ([`basic_auth`]), setting paths
//! ([`settings`]), byte splicing ([`splice`]), a span-keeping JSON scanner ([`json_scan`]) and
//! the byte-preserving edits of TS3AudioBot answers built on it ([`json_edit`]).
//! Does not own: anything about the cluster, nodes or keys; it imports nothing of the crate.

pub mod api_json;
pub mod basic_auth;
pub mod catalog;
pub mod command;
pub mod json_edit;
#[cfg(test)]
mod json_gen;
pub mod json_scan;
pub mod pattern;
pub mod settings;
pub mod splice;
