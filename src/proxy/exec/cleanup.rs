//! Clean-up after a client stopped a bot that runs from one of the router's own templates.
//!
//! Owns: removing that template from its node once the bot is gone. A bot that was temporary
//! before failover rebuilt it runs as template `ts3ab-lb-<id>` (it needs one to carry its
//! identity); a real temporary bot leaves nothing behind when it disconnects, so neither may
//! this one: no template on the node's disk, no record of it in the router. Does not own:
//! deciding that a disconnect happened (`routing::effects`) or the template tables (`cluster`).

use std::sync::Arc;

use crate::cluster::Node;
use crate::node::api::delete_template_target;
use crate::proxy::exec::Exec;

/// How often removing the template is tried.
const DELETE_TRIES: u32 = 3;
/// The pause after the first failed try (then twice that, ...).
const DELETE_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl Exec {
    /// Forgets the router's template `name` and deletes it on `node`, in the background (the
    /// client's answer does not wait). A failed delete is logged; the template is never
    /// shown to clients either way (see `fanout`).
    pub fn remove_router_template(&self, node: Arc<Node>, name: String) {
        self.cluster.drop_template(&name);
        let client = self.client.clone();
        let deadline = self.cfg.request_timeout;
        tokio::spawn(async move {
            let target = delete_template_target(&name);
            // A node that blinks should not keep the file (and its identity key): a few
            // tries, seconds apart.
            for attempt in 1..=DELETE_TRIES {
                match client
                    .get(&node.endpoint(), target.as_bytes(), deadline)
                    .await
                {
                    Ok(r) if r.status < 300 => {
                        log::info!("node {}: removed template {name} of a stopped bot", node.name);
                        return;
                    }
                    Ok(r) => log::warn!(
                        "node {}: removing template {name} of a stopped bot answered HTTP {} (try {attempt} of {DELETE_TRIES})",
                        node.name,
                        r.status
                    ),
                    Err(e) => log::warn!(
                        "node {}: template {name} of a stopped bot not removed (try {attempt} of {DELETE_TRIES}): {e}",
                        node.name
                    ),
                }
                tokio::time::sleep(DELETE_PAUSE * attempt).await;
            }
        });
    }
}
