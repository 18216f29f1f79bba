//! The node API calls the router makes itself, and the request targets they use.
//!
//! Owns: reading a node's `bot/list` ([`read_bot_list`], [`parse_bot_list`]) and its process
//! start time ([`read_starttime`]), reading a running bot's TeamSpeak identity ([`fetch_identity`]), finding the BotInfo a create
//! answers with ([`single_bot_info`]), and formatting the targets of the commands the router
//! sends on its own behalf (stopping a bot, deleting a template).
//! Does not own: what is done with the answers (`cluster`, `proxy`).

use std::time::Duration;

use serde::Deserialize;

use crate::node::client::{NodeClient, NodeError};
use crate::node::endpoint::Endpoint;
use crate::protocol::api_json::{status_from, BotInfo};
use crate::protocol::command::escape;
use crate::protocol::json_edit;
use crate::protocol::settings::Identity;

/// The request target of a node's bot list.
pub const BOT_LIST: &[u8] = b"/api/bot/list";

/// The target that stops the bot in local slot `lid`.
pub fn disconnect_target(lid: u32) -> String {
    format!("/api/bot/use/{lid}/(/bot/disconnect)")
}

/// The target that deletes template `name` (percent-encoded as one argument).
pub fn delete_template_target(name: &str) -> String {
    format!("/api/settings/delete/{}", escape(name))
}

/// Why a node's bot list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The node could not be reached or did not answer.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The node answered with an error status (wrong token, missing rights...).
    #[error("node {node} answered bot/list with HTTP {status}: {body}")]
    Status {
        /// Node name.
        node: String,
        /// Status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not a bot list.
    #[error("node {node} answered bot/list with {reason}")]
    Format {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
}

impl ReadError {
    /// Whether the node could not be reached at all (refused, reset, timed out), as opposed
    /// to a node that answers but refuses or fails: only such a node is evacuated.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            ReadError::Node(
                NodeError::Connect { .. } | NodeError::Exchange { .. } | NodeError::Timeout { .. }
            )
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawBotInfo {
    id: Option<i64>,
    name: Option<String>,
    server: Option<String>,
    status: Option<i64>,
}

/// Parses a node's `bot/list` answer (local ids). The error says what the body is instead,
/// in words (it ends up in the admin API's `last_error`).
pub fn parse_bot_list(body: &[u8]) -> Result<Vec<BotInfo>, String> {
    // Checked first so the words say which it is: serde reports the first mismatch it meets,
    // which for broken JSON that starts like an object is a type error.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(format!("a body that is not JSON ({e})"));
    }
    let raw: Vec<RawBotInfo> =
        serde_json::from_slice(body).map_err(|e| format!("JSON that is not a bot list ({e})"))?;
    raw.into_iter()
        .map(|b| {
            let id = match b.id {
                Some(i) => Some(u32::try_from(i).map_err(|_| {
                    format!("JSON that is not a bot list (bot id {i} out of range)")
                })?),
                None => None,
            };
            Ok(BotInfo {
                id,
                name: b.name,
                server: b.server,
                status: status_from(b.status.unwrap_or(0)),
            })
        })
        .collect()
}

/// Reads one node's `bot/list` (the node's own view, local ids; nothing is reconciled).
pub async fn read_bot_list(
    client: &NodeClient,
    node: &Endpoint,
    timeout: Duration,
) -> Result<Vec<BotInfo>, ReadError> {
    let resp = client.get(node, BOT_LIST, timeout).await?;
    if resp.status != 200 {
        return Err(ReadError::Status {
            node: node.name.to_string(),
            status: resp.status,
            body: String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned(),
        });
    }
    // TS3AudioBot answers its API in JSON; another type is another server on the port (a web
    // server's page, a login portal). No type at all is let through to the parser.
    if let Some(ct) = resp.content_type.as_deref().filter(|ct| {
        !ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    }) {
        return Err(ReadError::Format {
            node: node.name.to_string(),
            reason: format!(
                "Content-Type {ct}, not TS3AudioBot's JSON: another server on its port? ({})",
                resp.snippet().chars().take(80).collect::<String>()
            ),
        });
    }
    parse_bot_list(&resp.body).map_err(|reason| ReadError::Format {
        node: node.name.to_string(),
        reason,
    })
}

/// The request target of a node's process information.
pub const SYSTEM_INFO: &[u8] = b"/api/system/info";

/// Reads the node process's start time (`system/info` `starttime`): it changes exactly when
/// TS3AudioBot restarts, which is how the router tells a restart from bots stopped on
/// purpose. `Ok(None)`: the node answered but will not say (an error status or no such field).
pub async fn read_starttime(
    client: &NodeClient,
    node: &Endpoint,
    timeout: Duration,
) -> Result<Option<String>, NodeError> {
    #[derive(Deserialize)]
    struct Info {
        starttime: Option<String>,
    }
    let resp = client.get(node, SYSTEM_INFO, timeout).await?;
    if resp.status != 200 {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<Info>(&resp.body)
        .ok()
        .and_then(|i| i.starttime)
        .filter(|t| !t.is_empty()))
}

/// Checks that `node` answers like a TS3AudioBot with its credentials, before it is added:
/// `version` must be TS3AudioBot's `{Version, Branch, CommitSha}` and `bot/list` a BotInfo
/// array. The error says what is wrong in words an operator can act on.
pub async fn check_node(
    client: &NodeClient,
    node: &Endpoint,
    timeout: Duration,
) -> Result<String, String> {
    let words = |e: NodeError| match e {
        // A refused certificate is not a missing TS3AudioBot: no hint about that.
        NodeError::Connect { reason, .. } if reason.starts_with("TLS: ") => {
            format!("cannot connect to {}: {reason}", node.url)
        }
        NodeError::Connect { reason, .. } => format!(
            "cannot connect to {}: {}; is TS3AudioBot running there and its web API enabled?",
            node.url,
            connect_words(&reason)
        ),
        NodeError::Timeout { after, .. } => {
            format!("{} did not answer within {after:?}", node.url)
        }
        other => other.to_string(),
    };
    let v = client
        .get(node, b"/api/version", timeout)
        .await
        .map_err(words)?;
    if v.status == 401 || v.status == 403 {
        let why = serde_json::from_slice::<serde_json::Value>(&v.body)
            .ok()
            .and_then(|j| j["ErrorMessage"].as_str().map(str::to_string))
            .unwrap_or_else(|| v.snippet());
        return Err(format!(
            "the node refused the credentials (HTTP {}: {why}); give the router a token (`!api token`) or a rights.toml rule for its address",
            v.status
        ));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Version {
        version: String,
    }
    let version = (v.status == 200)
        .then(|| serde_json::from_slice::<Version>(&v.body).ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "{} does not answer like a TS3AudioBot (its /api/version gave HTTP {}: {})",
                node.url,
                v.status,
                v.snippet()
            )
        })?;
    read_bot_list(client, node, timeout)
        .await
        .map_err(|e| match e {
            ReadError::Node(n) => words(n),
            other => other.to_string(),
        })?;
    Ok(version.version)
}

/// The gist of a connect failure (Pingora's error text repeats its context chain).
fn connect_words(reason: &str) -> String {
    let r = reason.to_ascii_lowercase();
    for (needle, words) in [
        ("connection refused", "connection refused"),
        ("timed out", "the connection timed out"),
        ("timeout", "the connection timed out"),
        ("no route", "no route to the host"),
        ("unreachable", "the network is unreachable"),
        ("certificate", "its TLS certificate was refused"),
        ("tls", "the TLS handshake failed"),
    ] {
        if r.contains(needle) {
            return words.to_string();
        }
    }
    reason
        .rsplit("cause:")
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

/// Reads a running bot's TeamSpeak identity (`connect.identity`: key, offset, level) from its
/// node. The error says why, without the key.
pub async fn fetch_identity(
    client: &NodeClient,
    node: &Endpoint,
    lid: u32,
    deadline: Duration,
) -> Result<Identity, String> {
    #[derive(Deserialize)]
    struct Raw {
        key: String,
        offset: u64,
        level: i64,
    }
    let target = format!("/api/bot/use/{lid}/(/settings/get/connect.identity)");
    let r = client
        .get(node, target.as_bytes(), deadline)
        .await
        .map_err(|e| format!("could not read its identity: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "node {} refused to show its identity (HTTP {})",
            node.name, r.status
        ));
    }
    let raw: Raw = serde_json::from_slice(&r.body)
        .map_err(|e| format!("unreadable identity from node {}: {e}", node.name))?;
    Ok(Identity {
        key: raw.key,
        offset: raw.offset,
        level: raw.level,
    })
}

/// The first BotInfo of a running bot in an answer (local id in `id`), as a create or
/// `bot connect template` answers.
pub fn single_bot_info(body: &[u8]) -> Option<BotInfo> {
    let mut found = None;
    json_edit::visit_bot_infos(body, |lid, name, server, status| {
        if found.is_none() {
            found = u32::try_from(lid).ok().map(|l| BotInfo {
                id: Some(l),
                name: name.map(str::to_string),
                server: server.map(str::to_string),
                status: status_from(status),
            });
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_node_list() {
        let l = parse_bot_list(
            br#"[{"Id":0,"Name":"a","Server":"s","Status":2},{"Id":null,"Name":"t","Server":"","Status":0},{"Id":3,"Name":null,"Server":null,"Status":1}]"#,
        )
        .expect("list");
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].id, Some(0));
        assert_eq!(l[1].id, None);
        assert_eq!(l[2].server, None);
        assert!(parse_bot_list(br#"{"ErrorCode":11}"#).is_err());
        // The words say which kind of garbage it is.
        let why = |b: &[u8]| parse_bot_list(b).err().unwrap_or_default();
        assert!(why(br#"{"Id":0,"Name":"half" oops"#).starts_with("a body that is not JSON"));
        assert!(why(b"").starts_with("a body that is not JSON"));
        assert!(why(br#"{"Id":"seven","Status":true}"#).starts_with("JSON that is not a bot list"));
        assert!(
            why(br#"[{"Id":"seven","Status":true}]"#).starts_with("JSON that is not a bot list")
        );
        assert!(parse_bot_list(br#"[{"Id":-1,"Name":null,"Server":null,"Status":1}]"#).is_err());
    }

    #[test]
    fn statuses_out_of_range_are_clamped_the_same_everywhere() {
        let l = parse_bot_list(br#"[{"Id":0,"Name":null,"Server":null,"Status":7},{"Id":1,"Name":null,"Server":null,"Status":-3}]"#)
            .expect("list");
        assert_eq!((l[0].status, l[1].status), (2, 0));
        let one =
            single_bot_info(br#"{"Id":4,"Name":null,"Server":"s","Status":9}"#).expect("info");
        assert_eq!((one.id, one.status), (Some(4), 2));
    }

    #[test]
    fn targets_escape_names() {
        assert_eq!(disconnect_target(3), "/api/bot/use/3/(/bot/disconnect)");
        assert_eq!(delete_template_target("a b"), "/api/settings/delete/a%20b");
    }
}
