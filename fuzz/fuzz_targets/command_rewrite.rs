//! Fuzz target `command_rewrite`: the command parser (`protocol::command`) and the planner's id
//! rewriter (`proxy::routing::plan`) on arbitrary request targets.
//!
//! Owns the properties checked on every input (the raw text after `/api`):
//! - nothing panics: `parse`, `identify`, `plan` (as a user and as an admin), `escape`,
//!   `unescape`;
//! - the parse keeps its spans honest: value spans in order and in bounds, every nested command
//!   from its `(` to its `)` (or the end), its arguments inside it, and splicing every token with
//!   its own bytes gives the input back;
//! - the rewriter changes only id tokens: any request the planner sends to one node is the
//!   client's text (whole, or one command of it) with each `bot use <id>` token of a bot known
//!   under another node-local id replaced by that id (inside the client's quotes when it was
//!   quoted), found here independently of the planner, every other byte identical and in order;
//! - parse → print round-trips: a command the router prints out of the tree (a nested command
//!   sent alone, a broadcast or create target, a piece of a split `json merge`, the pieces of one
//!   node joined into its shorter merge) parses back to the same command (same words, with the
//!   translated ids) and the pieces stay separate arguments; `unescape(escape(s)) == s` and an
//!   escaped value is one argument.
#![no_main]

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ts3ab_lb::cluster::NodeId;
use ts3ab_lb::config::Role;
use ts3ab_lb::protocol::catalog::{identify, Kind};
use ts3ab_lb::protocol::command::{
    escape, parse, parse_int32, splice, unescape, Arg, Command, Parsed,
};
use ts3ab_lb::proxy::keys::Caller;
use ts3ab_lb::proxy::routing::{plan, Element, Plan, View};

/// A small cluster: gid → (node, lid, template); template name → node.
struct FuzzView {
    bots: HashMap<u32, (NodeId, u32, Option<&'static str>)>,
    templates: HashMap<&'static str, NodeId>,
}

impl View for FuzzView {
    fn locate(&self, gid: u32) -> Option<(NodeId, u32)> {
        self.bots.get(&gid).map(|(n, l, _)| (*n, *l))
    }
    fn template_owner(&self, name: &str) -> Option<NodeId> {
        self.templates.get(name).copied()
    }
    fn node_name(&self, node: NodeId) -> String {
        format!("node-{}", node.0)
    }
    fn bot_template(&self, gid: u32) -> Option<String> {
        self.bots.get(&gid).and_then(|b| b.2.map(str::to_string))
    }
}

fn view() -> FuzzView {
    FuzzView {
        // Ids that shrink, grow, keep their length, stay the same, and one at Int32's edge.
        bots: [
            (0, (NodeId(0), 5, None)),
            (1, (NodeId(1), 0, None)),
            (2, (NodeId(0), 1, Some("music"))),
            (7, (NodeId(1), 7, None)),
            (12, (NodeId(2), 3, None)),
            (2147483647, (NodeId(2), 41, Some("radio"))),
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

/// A parsed tree as words: what a node makes of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum W {
    V(String),
    C(Vec<W>),
}

/// The words of `c`, with every `bot use` id token replaced as the router must (when `ids`).
fn words(c: &Command, v: &FuzzView, ids: bool) -> Vec<W> {
    let rewrite = if ids { id_rewrite(c, v) } else { None };
    c.args
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Arg::Value(_) if i == 2 && rewrite.is_some() => {
                W::V(rewrite.as_ref().expect("checked").1.clone())
            }
            Arg::Value(x) => W::V(x.text.clone()),
            Arg::Command(n) => W::C(words(n, v, ids)),
        })
        .collect()
}

/// When `c` is `bot use <id>` of a bot the view knows under another local id: the id token's span,
/// the local id to put there, and whether the token was quoted.
fn id_rewrite(c: &Command, v: &FuzzView) -> Option<(Range<usize>, String, bool)> {
    let Kind::BotUse { id: Some(tok), .. } = identify(c).kind else {
        return None;
    };
    let gid = u32::try_from(parse_int32(&tok.text).ok()?).ok()?;
    let (_, lid) = v.locate(gid)?;
    (lid != gid).then(|| (tok.span.clone(), lid.to_string(), tok.quoted))
}

/// Every command of the tree, parents first.
fn commands(root: &Command) -> Vec<&Command> {
    let mut all = Vec::new();
    root.walk(&mut |c| all.push(c));
    all
}

/// `text[range]` with the id tokens inside it replaced, built byte by byte here (not with the
/// router's splicer).
fn expected(text: &[u8], range: Range<usize>, all: &[&Command], v: &FuzzView) -> Vec<u8> {
    let mut edits: Vec<(Range<usize>, String, bool)> = all
        .iter()
        .filter_map(|c| id_rewrite(c, v))
        .filter(|(r, _, _)| r.start >= range.start && r.end <= range.end)
        .collect();
    edits.sort_by_key(|(r, _, _)| r.start);
    let mut out = Vec::new();
    let mut at = range.start;
    for (r, lid, quoted) in edits {
        out.extend_from_slice(&text[at..r.start]);
        if quoted {
            // The client's quotes stay: the opening one, and the closing one if it was closed.
            let q = text[r.start];
            out.push(q);
            out.extend_from_slice(lid.as_bytes());
            if r.len() > 1 && text[r.end - 1] == q {
                out.push(q);
            }
        } else {
            out.extend_from_slice(lid.as_bytes());
        }
        at = r.end;
    }
    out.extend_from_slice(&text[at..range.end]);
    out
}

/// Checks the spans of `c` (and below) against `text`; collects the value spans in order.
fn check_spans(text: &[u8], c: &Command, nested: bool, values: &mut Vec<Range<usize>>) {
    assert!(c.span.start <= c.inner.start && c.inner.end <= c.span.end && c.span.end <= text.len());
    if nested {
        assert_eq!(
            text[c.span.start], b'(',
            "nested span does not start at its ("
        );
        assert_eq!(c.inner.start, c.span.start + 1);
        assert_eq!(
            text[c.inner.start], b'/',
            "inner text does not start with /"
        );
        if c.closed {
            assert_eq!(
                text[c.span.end - 1],
                b')',
                "closed span does not end at its )"
            );
            assert_eq!(c.inner.end, c.span.end - 1);
        } else {
            assert_eq!(
                (c.inner.end, c.span.end),
                (text.len(), text.len()),
                "unclosed but not at end"
            );
        }
    }
    for a in &c.args {
        match a {
            Arg::Value(x) => {
                assert!(x.span.start < x.span.end, "empty value token");
                assert!(x.span.start >= c.inner.start && x.span.end <= c.inner.end);
                values.push(x.span.clone());
            }
            Arg::Command(n) => {
                assert!(
                    n.span.start >= c.inner.start && n.span.end <= c.inner.end,
                    "nested command outside its parent"
                );
                check_spans(text, n, true, values);
            }
        }
    }
}

/// Parses a printed command text (after `/api`) that must be a command.
fn reparse(text: &[u8]) -> Command {
    match parse(text) {
        Parsed::Command(c) => c,
        other => panic!(
            "printed {:?} does not parse as a command: {other:?}",
            String::from_utf8_lossy(text)
        ),
    }
}

/// A printed target must be `/api` + some command of the tree printed with its ids translated
/// (`ids`) or as sent; the root may also go whole. Returns that command.
fn printed_from<'a>(
    sent: &[u8],
    text: &[u8],
    all: &[&'a Command],
    v: &FuzzView,
    ids: bool,
) -> &'a Command {
    assert!(sent.starts_with(b"/api"), "target lost its /api");
    let body = &sent[4..];
    if ids && body == expected(text, 0..text.len(), all, v).as_slice() {
        return all[0];
    }
    let found = all.iter().find(|c| {
        if ids {
            body == expected(text, c.inner.clone(), all, v).as_slice()
        } else {
            body == &text[c.inner.clone()]
        }
    });
    let c = found.unwrap_or_else(|| {
        panic!(
            "sent {:?}, which is no command of {:?} with only its id tokens changed",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(text)
        )
    });
    // Print → parse: the node reads the same command.
    assert_eq!(
        words(&reparse(body), v, false),
        words(c, v, ids),
        "{:?} printed as {:?} reads differently",
        String::from_utf8_lossy(text),
        String::from_utf8_lossy(body)
    );
    c
}

fn check_plan(p: &Plan, target: &[u8], text: &[u8], all: &[&Command], v: &FuzzView) {
    match p {
        Plan::Proxy(pp) => {
            let sent = pp.target.as_deref().unwrap_or(target);
            printed_from(sent, text, all, v, true);
        }
        Plan::Broadcast { target: t } => {
            printed_from(t, text, all, v, false);
        }
        Plan::Create(c) => {
            printed_from(&c.target, text, all, v, false);
        }
        Plan::Merge(m) => {
            let mut by_node: HashMap<Option<NodeId>, Vec<&[u8]>> = HashMap::new();
            for el in &m.elements {
                match el {
                    Element::Node { node, piece } => {
                        check_piece(piece, text, all, v);
                        by_node.entry(*node).or_default().push(piece);
                    }
                    Element::Create(c) => {
                        printed_from(&c.target, text, all, v, false);
                    }
                    _ => {}
                }
            }
            // One node's pieces joined into its shorter merge stay that many arguments.
            for pieces in by_node.values() {
                let mut t = b"/json/merge".to_vec();
                for piece in pieces {
                    t.push(b'/');
                    t.extend_from_slice(piece);
                }
                let c = reparse(&t);
                assert_eq!(
                    c.args.len(),
                    2 + pieces.len(),
                    "joined merge {:?} does not keep its {} pieces apart",
                    String::from_utf8_lossy(&t),
                    pieces.len()
                );
            }
        }
        Plan::Local(_) | Plan::FanOutList | Plan::SystemInfo => {}
    }
}

/// A merge piece is one argument `(...)` that reads as a command of the tree (ids translated),
/// possibly wrapped back into its `bot use <lid>` / `bot template <name>` context.
fn check_piece(piece: &[u8], text: &[u8], all: &[&Command], v: &FuzzView) {
    let mut t = b"/json/merge/".to_vec();
    t.extend_from_slice(piece);
    let c = reparse(&t);
    assert_eq!(
        c.args.len(),
        3,
        "piece {:?} is not one argument",
        String::from_utf8_lossy(piece)
    );
    let Some(Arg::Command(got)) = c.args.get(2) else {
        panic!(
            "piece {:?} is not a command",
            String::from_utf8_lossy(piece)
        );
    };
    let got = words(got, v, false);
    let ok = all.iter().any(|e| {
        let want = words(e, v, true);
        got == want
            || matches!(got.as_slice(),
                [W::V(b), W::V(u), W::V(_), W::C(inner)]
                    if ((b == "bot" && (u == "use" || u == "template")) && *inner == want))
    });
    assert!(
        ok,
        "piece {:?} reads as no command of {:?}: {got:?}",
        String::from_utf8_lossy(piece),
        String::from_utf8_lossy(text)
    );
}

fuzz_target!(|data: &[u8]| {
    // Escaping: any text survives escape → unescape, and is one argument.
    let s = String::from_utf8_lossy(data);
    let e = escape(&s);
    assert_eq!(unescape(e.as_bytes()), s, "escape/unescape round trip");
    if !s.is_empty() {
        let c = reparse(format!("/x/{e}").as_bytes());
        assert_eq!(c.args.len(), 2, "escaped {s:?} is not one argument");
        assert_eq!(c.word(1), Some(&*s));
    }

    let text = data;
    let Parsed::Command(root) = parse(text) else {
        return;
    };
    let mut values = Vec::new();
    check_spans(text, &root, false, &mut values);
    for w in values.windows(2) {
        assert!(w[0].end <= w[1].start, "value spans overlap or go back");
    }
    let mut identity: Vec<_> = values
        .iter()
        .map(|r| (r.clone(), text[r.clone()].to_vec()))
        .collect();
    assert_eq!(splice(text, &mut identity), text, "identity splice");

    let v = view();
    let all = commands(&root);
    let mut target = b"/api".to_vec();
    target.extend_from_slice(text);
    for role in [Role::User, Role::Admin] {
        let caller = Caller::Key {
            name: Arc::from("k"),
            role,
            own: false,
            max_bots: None,
        };
        let p = plan(&v, &caller, &target, 4, &root);
        check_plan(&p, &target, text, &all, &v);
    }
});
