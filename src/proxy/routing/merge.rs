//! Splitting a top-level `json merge` whose elements live on different nodes.
//!
//! Owns: deciding whether a merge needs splitting and turning each element into a
//! [`MergePlan`] [`Element`]: a piece for one node's shorter `json merge` (wrapped back into its
//! `bot use` / `bot template` context), or something the router answers itself (`null`, an
//! echoed word, a fan-out, a create). Does not own: running the pieces and joining the results
//! (`exec`), or walking a piece's tree (`planner`).

use crate::cluster::NodeId;
use crate::protocol::api_json::{ApiError, Reason};
use crate::protocol::catalog::{identify, Kind};
use crate::protocol::command::{Arg, Command};
use crate::proxy::routing::plan::{Edits, Element, MergePlan, Plan};
use crate::proxy::routing::planner::{
    conflict_error, splice_range, stuck_error, Gather, PlanCtx, Planner,
};

impl Planner<'_> {
    /// Plans a `json merge` in `ctx`. Returns None when it needs no splitting (one node serves
    /// it as it is).
    pub(super) fn merge(&self, cmd: &Command, first: usize, ctx: PlanCtx) -> Option<Plan> {
        let args = cmd.args.get(first..).unwrap_or_default();
        if args.is_empty() {
            return None;
        }
        let mut elements = Vec::with_capacity(args.len());
        let mut edits = Edits::default();
        let mut split = false;
        let mut pinned: Option<NodeId> = ctx.node();
        let last = args.len() - 1;
        for (i, arg) in args.iter().enumerate() {
            let el = match arg {
                // A plain word is echoed by the merge; answered here, because moved into a
                // node's shorter merge it could become the last argument, which TS3AudioBot
                // turns into a TailString.
                Arg::Value(v) => Element::Literal(
                    if i == last {
                        serde_json::to_vec(
                            &serde_json::json!({ "Content": v.text, "Tail": v.text }),
                        )
                    } else {
                        serde_json::to_vec(&v.text)
                    }
                    .unwrap_or_else(|_| b"null".to_vec()),
                ),
                Arg::Command(c) => match self.element(c, ctx) {
                    Ok((el, e)) => {
                        edits.merge(e);
                        el
                    }
                    Err(e) => return Some(Plan::Local(e)),
                },
            };
            match &el {
                Element::Node { node: Some(n), .. } => match pinned {
                    None => pinned = Some(*n),
                    Some(p) if p != *n => split = true,
                    _ => {}
                },
                Element::Node { node: None, .. } | Element::Literal(_) => {}
                _ => split = true,
            }
            elements.push(el);
        }
        if !split {
            return None;
        }
        // Settings written anywhere in the merge, in their bot or template context.
        let mut g = Gather::default();
        self.walk(cmd, ctx, &mut g);
        Some(Plan::Merge(MergePlan {
            elements,
            edits,
            // Never another tenant's template (see `effects`).
            read_back: g
                .writes
                .into_iter()
                .filter(|r| match r {
                    crate::proxy::routing::plan::ReadBack::Template { name, .. } => {
                        !self.view.hides_node_template(name)
                    }
                    _ => true,
                })
                .collect(),
        }))
    }

    /// Plans one merge element run in `ctx`.
    fn element(&self, c: &Command, ctx: PlanCtx) -> Result<(Element, Edits), ApiError> {
        let id = identify(c);
        // An element with its own bot context: unknown bot → null; a cluster-level command
        // inside it is planned as if it stood alone.
        if let Kind::BotUse { id: gid, inner } = id.kind {
            match self.bot_of(gid) {
                Err(_) => return Ok((Element::Null, Edits::default())),
                Ok(Some((_, node, _))) => {
                    if let Some(inner) = inner {
                        if !matches!(identify(inner).kind, Kind::JsonMerge { .. })
                            && self.reroutes(inner, node)
                        {
                            return self.element(inner, PlanCtx::Core);
                        }
                    }
                }
                Ok(None) => {}
            }
        }
        let own_ctx = matches!(id.kind, Kind::BotUse { .. } | Kind::BotTemplate { .. });
        let leaves = match ctx.node() {
            Some(node) => own_ctx || self.reroutes(c, node),
            None => true,
        };
        if leaves {
            match id.kind {
                Kind::BotList => return Ok((Element::FanOutList, Edits::default())),
                Kind::SystemInfo => return Ok((Element::SystemInfo, Edits::default())),
                Kind::BotConnectTo { .. } | Kind::BotConnectTemplate { .. } | Kind::SettingsCreate { .. } => {
                    return match self.create(c, &id.kind) {
                        Ok(p) => Ok((Element::Create(p), Edits::default())),
                        // A failing element is null in a merge, as on a node.
                        Err(_) => Ok((Element::Null, Edits::default())),
                    };
                }
                Kind::RightsReload | Kind::SettingsBotReload { name: None } | Kind::SettingsGlobalSet => {
                    return Err(ApiError::new(
                        Reason::NotSupported,
                        "ts3ab-lb sends node-wide commands to every node; send them on their own, not inside json merge",
                    ))
                }
                _ => {}
            }
        }
        let mut g = Gather::default();
        if !leaves {
            if let Some(node) = ctx.node() {
                g.pin = Some((node, self.ctx_why(ctx)));
            }
        }
        self.walk(c, if leaves { PlanCtx::Core } else { ctx }, &mut g);
        g.settle_hidden(self.view);
        if let Some(e) = g.error {
            return match e.reason {
                // Errors a node reports per element become null in its merge.
                Reason::CommandError => Ok((Element::Null, g.edits)),
                _ => Err(e),
            };
        }
        if let Some(what) = g.stuck {
            return Err(stuck_error(what));
        }
        if let Some(why) = g.conflict {
            return Err(conflict_error(&why));
        }
        let body = splice_range(self, &c.inner, &mut g.rewrites);
        let piece = self.piece(ctx, leaves, &body, c.closed);
        Ok((
            Element::Node {
                node: g.pin.map(|(n, _)| n),
                piece,
            },
            g.edits,
        ))
    }

    /// The argument an element becomes in its node's `json merge`: its (rewritten) command
    /// text wrapped back into the `bot use` / `bot template` context it ran in, or on its own
    /// when it left that context.
    ///
    /// An element that was not `closed` ran to the end of the request, possibly inside an
    /// unclosed quote: a `)` printed after it would land in that quoted value (found by
    /// fuzzing). Such an element is the merge's last, so it is also the last piece of its
    /// node's merge and needs no closing parentheses: the end of input closes it as it did.
    fn piece(&self, ctx: PlanCtx, leaves: bool, body: &[u8], closed: bool) -> Vec<u8> {
        let close: &[u8] = if closed { b"))" } else { b"" };
        let mut piece = Vec::with_capacity(body.len() + 32);
        match (ctx, leaves) {
            (PlanCtx::Bot { lid, .. }, false) => {
                piece.extend_from_slice(format!("(/bot/use/{lid}/(").as_bytes());
                piece.extend_from_slice(body);
                piece.extend_from_slice(close);
            }
            (
                PlanCtx::Template {
                    name_start,
                    name_end,
                    ..
                },
                false,
            ) => {
                piece.extend_from_slice(b"(/bot/template/");
                let raw = self.bytes(&(name_start..name_end));
                // A tenant's template goes by the node's name for it.
                match self
                    .view
                    .node_template(&crate::protocol::command::unescape(raw))
                {
                    Some(mapped) => piece.extend_from_slice(mapped.as_bytes()),
                    None => piece.extend_from_slice(raw),
                }
                piece.extend_from_slice(b"/(");
                piece.extend_from_slice(body);
                piece.extend_from_slice(close);
            }
            _ => {
                piece.push(b'(');
                piece.extend_from_slice(body);
                if closed {
                    piece.push(b')');
                }
            }
        }
        piece
    }
}
