//! Planner tests over a small fixed cluster view.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::cluster::NodeId;
use crate::protocol::api_json::ApiError;
use crate::protocol::catalog::{identify, Kind};
use crate::protocol::command::{self, Arg, Command, Parsed};
use crate::proxy::keys::test_callers::{admin, user};
use crate::proxy::keys::Caller;

/// Bots: gid → (node, lid). Templates: name → node.
struct MapView {
    bots: HashMap<u32, (NodeId, u32, Option<&'static str>)>,
    templates: HashMap<&'static str, NodeId>,
}

impl View for MapView {
    fn locate(&self, gid: u32) -> Option<(NodeId, u32)> {
        self.bots.get(&gid).map(|(n, l, _)| (*n, *l))
    }
    fn template_owner(&self, name: &str) -> Option<NodeId> {
        self.templates.get(name).copied()
    }
    fn node_name(&self, node: NodeId) -> String {
        format!("node-{}", node.0 + 1)
    }
    fn bot_template(&self, gid: u32) -> Option<String> {
        self.bots
            .get(&gid)
            .and_then(|(_, _, t)| t.map(str::to_string))
    }
}

fn view() -> MapView {
    MapView {
        // gid 0 → node 0 lid 5; gid 1 → node 1 lid 0; gid 2 → node 0 lid 1 (template "music");
        // gid 12 → node 2 lid 3.
        bots: [
            (0, (NodeId(0), 5, None)),
            (1, (NodeId(1), 0, None)),
            (2, (NodeId(0), 1, Some("music"))),
            (12, (NodeId(2), 3, None)),
        ]
        .into(),
        templates: [
            ("music", NodeId(0)),
            ("radio", NodeId(1)),
            ("quiet", NodeId(2)),
        ]
        .into(),
    }
}

fn plan_as(caller: &Caller, target: &str) -> Plan {
    let t = target.as_bytes();
    match command::parse(&t[4..]) {
        Parsed::Command(c) => plan(&view(), caller, t, 4, &c),
        other => panic!("not a command: {other:?}"),
    }
}

fn plan_of(target: &str) -> Plan {
    plan_as(&user(), target)
}

fn proxy(target: &str) -> ProxyPlan {
    match plan_of(target) {
        Plan::Proxy(p) => p,
        other => panic!("{target}: {other:?}"),
    }
}

fn sent(p: &ProxyPlan, original: &str) -> String {
    String::from_utf8(
        p.target
            .clone()
            .unwrap_or_else(|| original.as_bytes().to_vec()),
    )
    .expect("utf8")
}

fn local(target: &str) -> ApiError {
    match plan_of(target) {
        Plan::Local(e) => e,
        other => panic!("{target}: {other:?}"),
    }
}

#[test]
fn pins_and_rewrites_only_the_id_token() {
    let t = "/api/bot/use/12/(/play/https%3A%2F%2Fx.y%2Fa%28b%29)";
    let p = proxy(t);
    assert_eq!(p.node, Some(NodeId(2)));
    assert_eq!(
        sent(&p, t),
        "/api/bot/use/3/(/play/https%3A%2F%2Fx.y%2Fa%28b%29)"
    );
    assert!(!p.edits.any(), "playback answers carry no ids");
}

#[test]
fn unclosed_and_odd_forms_keep_every_other_byte() {
    for (t, want) in [
        ("/api/bot/use/0/(/song", "/api/bot/use/5/(/song"),
        ("/api/bot/use/0//(/volume//5", "/api/bot/use/5//(/volume//5"),
        ("/api/bot/use/0/(/song/", "/api/bot/use/5/(/song/"),
        ("/api/bot/use/%30/(/song)", "/api/bot/use/5/(/song)"),
        ("/api/bot/use/'0'/(/song)", "/api/bot/use/'5'/(/song)"),
        (
            "/api/bot/use/1/(/play/\"a b\")",
            "/api/bot/use/0/(/play/\"a b\")",
        ),
        ("/api/bot/use/0/(/song)?x=1", "/api/bot/use/5/(/song)?x=1"),
    ] {
        assert_eq!(sent(&proxy(t), t), want, "{t}");
    }
}

#[test]
fn nested_bot_use_anywhere_is_rewritten() {
    let t = "/api/json/merge/(/bot/use/2/(/song))/(/bot/use/0/(/volume))";
    let p = proxy(t);
    assert_eq!(p.node, Some(NodeId(0)));
    assert_eq!(
        sent(&p, t),
        "/api/json/merge/(/bot/use/1/(/song))/(/bot/use/5/(/volume))"
    );
    let t = "/api/xecute/(/bot/use/1/(/next))";
    assert_eq!(sent(&proxy(t), t), "/api/xecute/(/bot/use/0/(/next))");
}

#[test]
fn unknown_bot_is_the_nodes_422() {
    let e = local("/api/bot/use/7/(/song)");
    assert_eq!(e.status, 422);
    assert_eq!(e.message, "This bot does not exist.");
    assert_eq!(local("/api/bot/use/-1/(/song)").status, 422);
}

#[test]
fn unreadable_id_gets_the_nodes_own_error() {
    // Never forwarded: a node would read some forms (e.g. trailing NULs) as its own local id.
    let e = local("/api/bot/use/abc/(/song)");
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "Could not convert \"abc\" to Int32.")
    );
    assert_eq!(
        local("/api/bot/use/99999999999/(/song)").message,
        "The number is too big."
    );
    // Trailing NULs are read like .NET does: cluster id 0, rewritten to its local id.
    let t = "/api/bot/use/0%00/(/song)";
    assert_eq!(sent(&proxy(t), t), "/api/bot/use/5/(/song)");
    // A missing id is the node's business (it answers that arguments are missing).
    assert_eq!(proxy("/api/bot/use").node, None);
}

#[test]
fn bots_on_two_nodes_outside_a_merge_are_refused() {
    let e = local("/api/xecute/(/bot/use/0/(/next))/(/bot/use/1/(/next))");
    assert_eq!(e.status, 400);
    assert!(
        e.message.contains("node-1") && e.message.contains("node-2"),
        "{}",
        e.message
    );
}

#[test]
fn merge_across_nodes_is_split_in_order() {
    let t = "/api/json/merge/(/bot/use/0/(/song))/(/version)/(/bot/use/1/(/volume))/(/bot/use/99/(/song))";
    let Plan::Merge(m) = plan_of(t) else {
        panic!("not split")
    };
    assert_eq!(
        m.elements,
        vec![
            Element::Node {
                node: Some(NodeId(0)),
                piece: b"(/bot/use/5/(/song))".to_vec()
            },
            Element::Node {
                node: None,
                piece: b"(/version)".to_vec()
            },
            Element::Node {
                node: Some(NodeId(1)),
                piece: b"(/bot/use/0/(/volume))".to_vec()
            },
            Element::Null,
        ]
    );
}

/// Found by fuzzing (fuzz/README.md, `command_rewrite`): the last element of a split merge may
/// run to the end of the request inside an unclosed quote, so a `)` printed after it would
/// become part of the quoted value (`x)` read as `x))`). Its piece, and the one wrapped back
/// into a bot context, must end where the element ended.
#[test]
fn merge_piece_of_an_element_ending_in_an_open_quote_adds_no_parenthesis() {
    let t = "/api/json/merge/(/bot/use/0/(/song))/(/bot/use/1/(/play/'x)";
    let Plan::Merge(m) = plan_of(t) else {
        panic!("not split")
    };
    assert_eq!(
        m.elements[1],
        Element::Node {
            node: Some(NodeId(1)),
            piece: b"(/bot/use/0/(/play/'x)".to_vec()
        }
    );
    let t = "/api/bot/use/0/(/json/merge/(/bot/use/1/(/song))/(/play/\"a)";
    let Plan::Merge(m) = plan_of(t) else {
        panic!("not split")
    };
    assert_eq!(
        m.elements[1],
        Element::Node {
            node: Some(NodeId(0)),
            piece: b"(/bot/use/5/(/play/\"a)".to_vec()
        }
    );
    // Every piece reads back as the client's element.
    for el in &m.elements {
        if let Element::Node { piece, .. } = el {
            let mut merge = b"/json/merge/".to_vec();
            merge.extend_from_slice(piece);
            let Parsed::Command(c) = command::parse(&merge) else {
                panic!("not a command")
            };
            assert_eq!(c.args.len(), 3, "{}", String::from_utf8_lossy(piece));
        }
    }
    let Parsed::Command(c) = command::parse(b"/json/merge/(/bot/use/5/(/play/\"a)") else {
        panic!("not a command")
    };
    let inner = c.nested(2).and_then(|b| b.nested(3)).expect("play");
    assert_eq!(inner.word(1), Some("a)"));
}

/// Found by fuzzing (fuzz/README.md, `command_rewrite`): a quoted id token ends at its closing
/// quote, and text right after it is a new argument; written back bare, the new id would run
/// into that text (`'0'x` read as `5x`). A quoted id stays quoted, an unclosed one unclosed.
#[test]
fn quoted_id_token_stays_quoted() {
    for (t, want) in [
        ("/api/bot/use/'0'x/(/song)", "/api/bot/use/'5'x/(/song)"),
        (
            "/api/bot/use/\"0\"%FF/(/song)",
            "/api/bot/use/\"5\"%FF/(/song)",
        ),
        ("/api/bot/use/'%30'/(/song)", "/api/bot/use/'5'/(/song)"),
        ("/api/bot/use/'12", "/api/bot/use/'3"),
    ] {
        assert_eq!(sent(&proxy(t), t), want, "{t}");
    }
}

#[test]
fn merge_on_one_node_is_forwarded_whole() {
    let t = "/api/json/merge/(/bot/use/0/(/song))/(/bot/use/2/(/volume))/(/version)";
    let p = proxy(t);
    assert_eq!(p.node, Some(NodeId(0)));
}

#[test]
fn merge_with_bot_list_is_split() {
    let t = "/api/json/merge/(/bot/list)/(/bot/use/0/(/bot/info))";
    let Plan::Merge(m) = plan_of(t) else { panic!() };
    assert_eq!(m.elements[0], Element::FanOutList);
    assert!(m.edits.bot_ids);
}

#[test]
fn core_commands_inside_bot_use_route_like_top_level() {
    assert_eq!(plan_of("/api/bot/use/0/(/bot/list"), Plan::FanOutList);
    assert_eq!(plan_of("/api/bot/use/1/(/system/info)"), Plan::SystemInfo);
    assert!(matches!(
        plan_of("/api/bot/use/0/(/bot/connect/to/1.2.3.4"),
        Plan::Create(_)
    ));
    // bot 7 does not exist: a cluster-level command does not need it (clients wrap everything
    // in bot 0, which a cluster never reuses), a bot-level one does.
    assert_eq!(plan_of("/api/bot/use/7/(/bot/list"), Plan::FanOutList);
    assert_eq!(local("/api/bot/use/7/(/song").status, 422);
    // A template on another node: sent on its own to the template's node.
    let p = proxy("/api/bot/use/0/(/settings/bot/get/radio/connect.name)");
    assert_eq!(p.node, Some(NodeId(1)));
    assert_eq!(
        p.target.as_deref(),
        Some(&b"/api/settings/bot/get/radio/connect.name"[..])
    );
    // The same command for a template on the bot's own node stays as it is.
    let t = "/api/bot/use/0/(/settings/bot/get/music)";
    let p = proxy(t);
    assert_eq!(p.node, Some(NodeId(0)));
    assert_eq!(sent(&p, t), "/api/bot/use/5/(/settings/bot/get/music)");
}

#[test]
fn merge_inside_bot_context_keeps_the_context_when_split() {
    let t = "/api/bot/use/0/(/json/merge/(/bot/info)/(/bot/list)/(/song))";
    let Plan::Merge(m) = plan_of(t) else { panic!() };
    assert_eq!(
        m.elements,
        vec![
            Element::Node {
                node: Some(NodeId(0)),
                piece: b"(/bot/use/5/(/bot/info))".to_vec()
            },
            Element::FanOutList,
            Element::Node {
                node: Some(NodeId(0)),
                piece: b"(/bot/use/5/(/song))".to_vec()
            },
        ]
    );
    // The UI's refresh merge stays one request.
    let t = "/api/bot/use/0/(/json/merge/(/bot/info)/(/info/%40-1/5)/(/song)/(/repeat)/(/random)/(/volume))";
    assert_eq!(sent(&proxy(t), t), t.replacen("/use/0/", "/use/5/", 1));
}

#[test]
fn templates_pin_to_their_node() {
    assert_eq!(
        proxy("/api/bot/template/radio/(/song)").node,
        Some(NodeId(1))
    );
    assert_eq!(proxy("/api/bot/info/template/quiet").node, Some(NodeId(2)));
    assert_eq!(
        proxy("/api/settings/bot/set/music/connect.name/x").node,
        Some(NodeId(0))
    );
    assert_eq!(proxy("/api/settings/delete/radio").node, Some(NodeId(1)));
    assert_eq!(proxy("/api/settings/bot/get/unknown").node, None);
}

#[test]
fn creates() {
    match plan_of("/api/bot/connect/to/ts.example.com/pw") {
        Plan::Create(c) => {
            assert_eq!(c.node, CreateNode::Place);
            assert_eq!(
                c.kind,
                CreateKind::ConnectTo(CreateInfoEq {
                    address: Some("ts.example.com".into()),
                    server_password: Some("pw".into())
                })
            );
            assert_eq!(c.target, b"/api/bot/connect/to/ts.example.com/pw");
        }
        other => panic!("{other:?}"),
    }
    match plan_of("/api/bot/connect/template/radio") {
        Plan::Create(c) => assert_eq!(c.node, CreateNode::Fixed(NodeId(1))),
        other => panic!("{other:?}"),
    }
    match plan_of("/api/bot/connect/template/new") {
        Plan::Create(c) => assert_eq!(c.node, CreateNode::Place),
        other => panic!("{other:?}"),
    }
    let e = local("/api/settings/create/radio");
    assert_eq!(
        (e.status, e.message.as_str()),
        (422, "The file already exists.")
    );
    assert!(matches!(
        plan_of("/api/settings/create/fresh"),
        Plan::Create(_)
    ));
    // Nested where it cannot be split out.
    assert_eq!(local("/api/xecute/(/bot/connect/to/x)").status, 400);
}

#[test]
fn template_names_stay_unique() {
    // Failover's names are the router's own.
    for t in [
        "/api/settings/create/ts3ab-lb-3",
        "/api/bot/use/0/(/bot/save/ts3ab-lb-3)",
        "/api/settings/copy/music/ts3ab-lb-3",
    ] {
        let e = local(t);
        assert_eq!(e.status, 422, "{t}");
        assert!(e.message.contains("reserved"), "{t}: {}", e.message);
    }
    assert_eq!(local("/api/bot/use/0/(/bot/save/radio)").status, 422);
    assert_eq!(local("/api/settings/copy/music/radio").status, 422);
    let p = proxy("/api/settings/copy/music/newname");
    assert_eq!(p.node, Some(NodeId(0)));
    assert_eq!(p.effects, vec![Effect::ClaimTemplate("newname".into())]);
}

#[test]
fn broadcasts() {
    assert_eq!(
        plan_as(&admin(), "/api/rights/reload"),
        Plan::Broadcast {
            target: b"/api/rights/reload".to_vec()
        }
    );
    assert_eq!(
        plan_as(&admin(), "/api/bot/use/0/(/settings/bot/reload)"),
        Plan::Broadcast {
            target: b"/api/settings/bot/reload".to_vec()
        }
    );
    // With a name: only the template's node.
    match plan_as(&admin(), "/api/settings/bot/reload/radio") {
        Plan::Proxy(p) => assert_eq!(p.node, Some(NodeId(1))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn answer_edits() {
    assert!(proxy("/api/bot/use/0/(/bot/info)").edits.bot_ids);
    assert!(!proxy("/api/bot/use/0/(/bot/info/client)").edits.bot_ids);
    assert!(proxy("/api/json/api").edits.openapi);
    let p = proxy("/api/bot/use/0/(/settings/get)");
    assert!(p.edits.redact && !p.edits.redact_scalar);
    assert!(
        proxy("/api/bot/use/0/(/settings/get/connect.identity.key)")
            .edits
            .redact_scalar
    );
    assert!(
        proxy("/api/settings/bot/get/radio/connect.*.pw")
            .edits
            .redact_scalar
    );
    match plan_as(&admin(), "/api/bot/use/0/(/settings/get)") {
        Plan::Proxy(p) => assert!(!p.edits.redact),
        other => panic!("{other:?}"),
    }
}

#[test]
fn effects_of_confirmed_changes() {
    assert_eq!(
        proxy("/api/bot/use/0/(/bot/disconnect)").effects,
        vec![Effect::ForgetBot(0)]
    );
    assert_eq!(
        proxy("/api/bot/use/0/(/bot/save/new)").effects,
        vec![Effect::BotSaved {
            gid: 0,
            name: "new".into()
        }]
    );
    assert_eq!(
        proxy("/api/settings/delete/radio").effects,
        vec![Effect::DropTemplate("radio".into())]
    );
    assert_eq!(
        proxy("/api/settings/bot/set/radio/connect.name/Bob%20B").effects,
        vec![Effect::TemplateSetting {
            name: "radio".into(),
            path: "connect.name".into(),
            value: "Bob B".into()
        }]
    );
    // settings set on a template bot records into the template, on a temporary bot into the bot.
    assert_eq!(
        proxy("/api/bot/use/2/(/settings/set/audio.volume.default/30)").effects,
        vec![Effect::TemplateSetting {
            name: "music".into(),
            path: "audio.volume.default".into(),
            value: "30".into()
        }]
    );
    assert_eq!(
        proxy("/api/bot/use/0/(/bot/name/Alice)").effects,
        vec![Effect::BotSetting {
            gid: 0,
            path: "connect.name".into(),
            value: "Alice".into()
        }]
    );
    assert!(proxy("/api/json/merge/(/bot/use/0/(/bot/disconnect))").poke);
}

/// The spans (in the command text) of every `bot use` id token in the tree, in document order:
/// the tokens the planner may rewrite, found here through the catalog, not the planner.
fn bot_use_id_spans(c: &Command, out: &mut Vec<std::ops::Range<usize>>) {
    if let Kind::BotUse { id: Some(v), .. } = identify(c).kind {
        out.push(v.span.clone());
    }
    for arg in &c.args {
        if let Arg::Command(n) = arg {
            bot_use_id_spans(n, out);
        }
    }
}

/// `target` (`/api` + command text) with each command-text span replaced by `with`, built
/// byte by byte here so the check does not share the planner's splicer.
fn replaced(target: &[u8], spans: &[std::ops::Range<usize>], with: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in spans {
        out.extend_from_slice(&target[at..4 + r.start]);
        out.extend_from_slice(with.as_bytes());
        at = 4 + r.end;
    }
    out.extend_from_slice(&target[at..]);
    out
}

proptest! {
    /// With the id mapped to a *different* local id (cluster 1 → local 23: another value and
    /// another length, and the client also spells it `%31`), the planner's rewrite really runs,
    /// and the request it sends differs from the client's exactly at the `bot use` id tokens:
    /// it equals the client's bytes with each of those tokens replaced by `23`, and nothing
    /// else moved, was dropped or was added. Mapping that request back (local 23 → cluster 1)
    /// gives the client's request with its ids spelled `1`.
    #[test]
    fn rewrite_with_changed_ids_touches_only_id_tokens(
        parts in proptest::collection::vec(prop_oneof![
            Just("/bot/use/1/(/song)".to_string()),
            Just("/bot/use/%31/(/volume/5".to_string()),
            Just("/json/merge/(/bot/use/1/(/bot/info))/(/version)".to_string()),
            Just("//".to_string()),
            Just("/play/%28x%29/\"q\"".to_string()),
            Just("/(".to_string()),
            Just(")".to_string()),
        ], 1..6)
    ) {
        let text = parts.concat();
        let target = format!("/api{text}");
        let fwd = MapView { bots: [(1, (NodeId(0), 23, None))].into(), templates: HashMap::new() };
        if let Parsed::Command(c) = command::parse(text.as_bytes()) {
            if let Plan::Proxy(p) = plan(&fwd, &user(), target.as_bytes(), 4, &c) {
                let out = p.target.unwrap_or_else(|| target.as_bytes().to_vec());
                let mut ids = Vec::new();
                bot_use_id_spans(&c, &mut ids);
                let expect = replaced(target.as_bytes(), &ids, "23");
                prop_assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expect),
                    "from {}",
                    target
                );
                let back = MapView { bots: [(23, (NodeId(0), 1, None))].into(), templates: HashMap::new() };
                if let Parsed::Command(c2) = command::parse(&out[4..]) {
                    if let Plan::Proxy(p2) = plan(&back, &user(), &out, 4, &c2) {
                        let again = p2.target.unwrap_or_else(|| out.clone());
                        let canonical = replaced(target.as_bytes(), &ids, "1");
                        prop_assert_eq!(
                            String::from_utf8_lossy(&again),
                            String::from_utf8_lossy(&canonical)
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    /// With a real translation (cluster id 1 = local id 7), a request changes only in its id
    /// tokens: every byte is the client's own except a `1` that became `7`, and translating back
    /// gives the client's request again.
    #[test]
    fn rewrite_changes_only_id_tokens(
        parts in proptest::collection::vec(prop_oneof![
            Just("/bot/use/1/(/song)".to_string()),
            Just("/bot/use/1/(/volume/1".to_string()),
            Just("/json/merge/(/bot/use/1/(/bot/info))/(/version)".to_string()),
            Just("/xecute/(/bot/use/1/(/play/a%2F1))".to_string()),
            Just("//".to_string()),
            Just("/play/%28x1%29/\"q 1\"".to_string()),
            Just("/(".to_string()),
            Just(")".to_string()),
        ], 1..6)
    ) {
        let text = parts.concat();
        let target = format!("/api{text}");
        let fwd = MapView { bots: [(1, (NodeId(0), 7, None))].into(), templates: HashMap::new() };
        if let Parsed::Command(c) = command::parse(text.as_bytes()) {
            if let Plan::Proxy(p) = plan(&fwd, &user(), target.as_bytes(), 4, &c) {
                let out = p.target.unwrap_or_else(|| target.as_bytes().to_vec());
                prop_assert_eq!(out.len(), target.len());
                if text.starts_with("/bot/use/1/") {
                    prop_assert!(out.starts_with(b"/api/bot/use/7/"), "not translated: {}", String::from_utf8_lossy(&out));
                }
                for (a, b) in target.bytes().zip(out.iter().copied()) {
                    prop_assert!(a == b || (a == b'1' && b == b'7'), "{} -> {}", target, String::from_utf8_lossy(&out));
                }
                // Back: the node's request read with the inverse map is the client's request.
                let back = MapView { bots: [(7, (NodeId(0), 1, None))].into(), templates: HashMap::new() };
                let out_text = &out[4..];
                if let Parsed::Command(c2) = command::parse(out_text) {
                    if let Plan::Proxy(p2) = plan(&back, &user(), &out, 4, &c2) {
                        let again = p2.target.unwrap_or_else(|| out.clone());
                        prop_assert_eq!(again, target.as_bytes());
                    }
                }
            }
        }
    }
}
