//! Answers the router writes, and the edits of node answers shared with the proxy path.
//!
//! Owns: [`Answer`] (status, content type, body), [`Exec::edit`] (local → cluster ids in
//! BotInfo, `json api` servers, redaction of secrets, refusing answers that cannot be edited)
//! and the error that replaces such a garbage answer ([`withheld`]).
//! Does not own: which edits apply (`routing`) or the JSON mechanics (`protocol::json_edit`).

use bytes::Bytes;

use crate::cluster::failover::is_router_template;
use crate::cluster::{Cluster, NodeId, Reported};
use crate::node::client::NodeResponse;
use crate::protocol::api_json::{status_from, ApiError, Reason, CONTENT_TYPE_JSON};
use crate::protocol::{json_edit, json_scan};
use crate::proxy::exec::Exec;
use crate::proxy::routing::Edits;

/// An answer the router writes itself.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Content type (TS3AudioBot's JSON type unless a node sent another).
    pub content_type: String,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Answer {
            status,
            content_type: CONTENT_TYPE_JSON.to_string(),
            body: body.into(),
        }
    }

    /// An error answer.
    pub fn error(e: &ApiError) -> Self {
        Answer::json(e.status, e.body())
    }

    /// A node's answer passed on, with `body` instead of the node's body when given.
    pub(super) fn from_node(r: NodeResponse, body: Option<Vec<u8>>) -> Self {
        Answer {
            status: r.status,
            content_type: r
                .content_type
                .unwrap_or_else(|| CONTENT_TYPE_JSON.to_string()),
            body: body.map(Bytes::from).unwrap_or(r.body),
        }
    }
}

impl Exec {
    /// Edits a node's JSON answer: BotInfo ids (learning bots the router has not seen yet),
    /// `json api` servers, redaction. `Ok(None)` = forward the bytes unchanged; `Err(why)`:
    /// the answer is garbage that must not be forwarded (see [`withheld`]).
    /// `sent` is the cluster's generation when the request went to the node: a bot the
    /// router saw go after that is shown under its id, not learned again.
    pub fn edit(
        cluster: &Cluster,
        node: NodeId,
        body: &[u8],
        edits: &Edits,
        sent: u64,
    ) -> Result<Option<Vec<u8>>, String> {
        Self::edit_for(cluster, node, body, edits, None, sent)
    }

    /// [`Self::edit`] for a key of scope `own` (`tenant`): BotInfos of bots and templates
    /// that are not its own are removed from lists, as if the node had never had them.
    pub fn edit_for(
        cluster: &Cluster,
        node: NodeId,
        body: &[u8],
        edits: &Edits,
        tenant: Option<&str>,
        sent: u64,
    ) -> Result<Option<Vec<u8>>, String> {
        if (edits.redact || edits.redact_scalar) && json_scan::parse(body).is_err() {
            // Never pass on what could not be checked for secrets.
            return Err(
                "it is not JSON, so it could not be checked for identities and passwords".into(),
            );
        }
        if edits.bot_ids {
            // A body the translation cannot read would reach the client with the node's own
            // local ids (or nonsense) where cluster ids belong: a client acting on such an id
            // reaches another bot.
            if let Some(why) = json_edit::malformed_bot_infos(body) {
                return Err(why);
            }
        }
        let mut out: Option<Vec<u8>> = None;
        if edits.bot_ids {
            // One parse: learn each bot (a cheap read for known ones) and map its id.
            // A rebuilt temporary bot runs as a router-named template: shown unnamed, as the
            // temporary bot it was.
            out = json_edit::translate_bot_infos(
                body,
                is_router_template,
                |lid, name, server, status| {
                    let lid = u32::try_from(lid).ok()?;
                    let status = status_from(status);
                    let reported = Reported {
                        lid,
                        name,
                        server,
                        status,
                    };
                    cluster.learn(node, reported, sent).map(i64::from)
                },
            );
        }
        if let (true, Some(tenant)) = (edits.bot_ids, tenant) {
            let cur = out.as_deref().unwrap_or(body);
            let keep = |id: Option<i64>, name: Option<&str>| match id {
                // After translation: a cluster id (a bot the router could not map is
                // nobody's, so it is not shown either).
                Some(gid) => u32::try_from(gid).is_ok_and(|g| cluster.bot_owned_by(g, tenant)),
                None => name.is_some_and(|n| cluster.template_owned_by(n, tenant)),
            };
            if let Some(n) = json_edit::drop_bot_infos(cur, keep) {
                out = Some(n);
            }
        }
        if edits.openapi {
            let cur = out.as_deref().unwrap_or(body);
            if let Some(n) = json_edit::rewrite_openapi_servers(cur, |lid| {
                u32::try_from(lid)
                    .ok()
                    .and_then(|l| cluster.gid_of(node, l))
                    // Another tenant's bot is no server of this tenant's API.
                    .filter(|&g| tenant.is_none_or(|t| cluster.bot_owned_by(g, t)))
                    .map(i64::from)
            }) {
                out = Some(n);
            }
        }
        if edits.redact_scalar {
            let cur = out.as_deref().unwrap_or(body);
            if let Some(n) = json_edit::redact_scalar(cur) {
                out = Some(n);
            }
        }
        if edits.redact {
            let cur = out.as_deref().unwrap_or(body);
            if let Some(n) = json_edit::redact_secrets(cur) {
                out = Some(n);
            }
        }
        Ok(out)
    }
}

/// `body` without any occurrence of a tenant's template `prefix`, so the tenant sees its
/// templates by the names it gave them (None when there is none). The prefix is plain
/// ASCII that JSON never escapes, so every place a node writes the name is found.
pub fn strip_names(body: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let p = prefix.as_bytes();
    if p.is_empty() || !body.windows(p.len()).any(|w| w == p) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(p) {
            i += p.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    Some(out)
}

impl Answer {
    /// The answer as a tenant with template `prefix` sees it (see [`strip_names`]).
    pub fn for_tenant(self, prefix: Option<&str>) -> Answer {
        match prefix.and_then(|p| strip_names(&self.body, p)) {
            Some(b) => Answer {
                body: b.into(),
                ..self
            },
            None => self,
        }
    }
}

/// The TS3AudioBot error sent instead of node `node`'s answer to `what` (e.g. "bot 3 on",
/// may be empty) that the router had to edit or check and could not: `why` says what is
/// wrong with it. A 502, as a gateway answers for an upstream that sent garbage.
pub fn withheld(what: &str, node: &str, why: &str) -> ApiError {
    ApiError::with_status(
        502,
        Reason::InternalError,
        format!(
            "{what}node {node} sent an answer the router cannot pass on ({why}); it is withheld"
        ),
    )
}
