//! Reading settings back from nodes after requests that wrote them where the answer cannot
//! confirm it.
//!
//! Owns: building the read request for each [`ReadBack`], reading the value in the background
//! and recording what the node holds. Does not own: deciding what to read back (`routing`) or
//! storing the value (`cluster`).

use crate::proxy::exec::Exec;
use crate::proxy::routing::ReadBack;

impl Exec {
    /// Reads settings back from their nodes after a request that wrote them where the answer
    /// cannot confirm it, and records what the nodes hold (in the background; the values are
    /// what failover rebuilds a bot from). Values are recorded as `settings set` takes them:
    /// strings raw, anything else as JSON.
    pub fn read_back(&self, items: Vec<ReadBack>) {
        let client = self.client.clone();
        let cluster = self.cluster.clone();
        let deadline = self.cfg.request_timeout;
        tokio::spawn(async move {
            for item in items {
                let located = match &item {
                    ReadBack::Template { name, path } => cluster.template_owner(name).map(|n| {
                        let target = format!(
                            "/api/settings/bot/get/{}/{}",
                            crate::protocol::command::escape(name),
                            crate::protocol::command::escape(path)
                        );
                        (n, target)
                    }),
                    ReadBack::Bot { gid, path } => cluster.locate(*gid).map(|(n, lid)| {
                        let target = format!(
                            "/api/bot/use/{lid}/(/settings/get/{})",
                            crate::protocol::command::escape(path)
                        );
                        (n, target)
                    }),
                };
                let Some((node, target)) = located else {
                    continue;
                };
                let Some(node) = cluster.node(node) else {
                    continue;
                };
                let value = match client
                    .get(&node.endpoint(), target.as_bytes(), deadline)
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        match serde_json::from_slice::<serde_json::Value>(&r.body) {
                            Ok(serde_json::Value::String(v)) => v,
                            Ok(v) => v.to_string(),
                            Err(e) => {
                                log::warn!("node {}: unreadable setting: {e}", node.name);
                                continue;
                            }
                        }
                    }
                    // The value is never logged: it may be a secret.
                    Ok(r) => {
                        log::warn!(
                            "node {}: reading back a setting answered HTTP {}",
                            node.name,
                            r.status
                        );
                        continue;
                    }
                    Err(e) => {
                        log::warn!("reading back a setting failed: {e}");
                        continue;
                    }
                };
                match item {
                    ReadBack::Template { name, path } => {
                        cluster.record_template_setting(&name, &path, &value)
                    }
                    ReadBack::Bot { gid, path } => cluster.record_bot_setting(gid, &path, &value),
                }
            }
        });
    }
}
