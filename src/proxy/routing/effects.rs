//! What a confirmed answer changes: the bookkeeping a request implies once its node says yes.
//!
//! Owns: reading the request's own command for the [`Effect`]s a 204/200 confirms (a bot
//! stopped or saved, a template claimed, dropped or written, a bot's setting written), and which
//! settings written elsewhere in the tree must be read back instead ([`ReadBack`]).
//! Does not own: applying them to the cluster tables (`proxy::router`, `exec`).

use crate::protocol::catalog::{identify, Kind};
use crate::protocol::command::Command;
use crate::proxy::routing::plan::{Effect, ReadBack};
use crate::proxy::routing::planner::Planner;

impl Planner<'_> {
    /// Bookkeeping for a request proxied to one node: its own command's effects, plus a read-back
    /// of every settings write in its tree (`writes`, as the walk found them) that those effects
    /// do not already record.
    pub(super) fn effects(&self, cmd: &Command, writes: Vec<ReadBack>) -> Vec<Effect> {
        let mut effects = self.own_effects(cmd);
        // A root-level write is recorded from the request itself on the node's 204; every
        // other write in the tree is read back once the request succeeded.
        let root_write = effects.iter().any(|e| {
            matches!(
                e,
                Effect::TemplateSetting { .. } | Effect::BotSetting { .. }
            )
        });
        let skip = usize::from(root_write && writes.len() == 1);
        effects.extend(writes.into_iter().skip(skip).map(Effect::ReadBack));
        // Another tenant's template is never touched by what this request confirms (a
        // `settings delete` of a name a node does not have still answers 204).
        effects.retain(|e| {
            let name = match e {
                Effect::DropTemplate(n)
                | Effect::ClaimTemplate(n)
                | Effect::TemplateSetting { name: n, .. }
                | Effect::BotSaved { name: n, .. }
                | Effect::ReadBack(ReadBack::Template { name: n, .. }) => n,
                _ => return true,
            };
            !self.view.hides_node_template(name)
        });
        effects
    }

    /// Bookkeeping for the request's own command once the node confirms it.
    fn own_effects(&self, cmd: &Command) -> Vec<Effect> {
        let id = identify(cmd);
        let (cmd, gid) = match id.kind {
            Kind::BotUse {
                inner: Some(inner),
                id: gid,
            } => match self.bot_of(gid) {
                Ok(Some((gid, _, _))) => (inner, Some(gid)),
                _ => return Vec::new(),
            },
            _ => (cmd, None),
        };
        match identify(cmd).kind {
            Kind::BotDisconnect => gid.map(Effect::ForgetBot).into_iter().collect(),
            Kind::BotSave { name: Some(n) } => gid
                .map(|gid| Effect::BotSaved {
                    gid,
                    name: self.tname(&n.text),
                })
                .into_iter()
                .collect(),
            Kind::SettingsCopy { to: Some(to), .. } => {
                vec![Effect::ClaimTemplate(self.tname(&to.text))]
            }
            Kind::SettingsDelete { name: Some(n) } => {
                vec![Effect::DropTemplate(self.tname(&n.text))]
            }
            Kind::SettingsBotSet {
                name: Some(n),
                path: Some(p),
                value,
            } => vec![Effect::TemplateSetting {
                name: self.tname(&n.text),
                path: p.text.to_string(),
                value: self.text_of(value).unwrap_or_default(),
            }],
            Kind::SettingsSet {
                path: Some(p),
                value,
            } => match gid {
                Some(gid) => match self.view.bot_template(gid) {
                    Some(name) => vec![Effect::TemplateSetting {
                        name,
                        path: p.text.to_string(),
                        value: self.text_of(value).unwrap_or_default(),
                    }],
                    None => vec![Effect::BotSetting {
                        gid,
                        path: p.text.to_string(),
                        value: self.text_of(value).unwrap_or_default(),
                    }],
                },
                None => Vec::new(),
            },
            Kind::BotName { name: Some(n) } => gid
                .map(|gid| Effect::BotSetting {
                    gid,
                    path: "connect.name".into(),
                    value: n.text.to_string(),
                })
                .into_iter()
                .collect(),
            Kind::BotMove { channel: Some(c) } => gid
                .map(|gid| Effect::BotSetting {
                    gid,
                    path: "connect.channel".into(),
                    value: format!("/{}", c.text),
                })
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}
