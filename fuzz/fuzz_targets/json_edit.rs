//! Fuzz target `json_edit`: the span-keeping JSON scanner (`protocol::json_scan`) and the answer
//! edits built on it (`protocol::json_edit`) on arbitrary node answers.
//!
//! Owns the properties checked on every input (an arbitrary answer body):
//! - nothing panics: `parse`, `rewrite_bot_ids`, `translate_bot_infos`, `redact_secrets`,
//!   `redact_scalar`, `array_items` / `join_array`, `rewrite_openapi_servers`;
//! - the scanner accepts what serde_json accepts (bar exponents serde_json cannot hold and its
//!   own depth limit);
//! - the id rewriters change only the `Id` number tokens of BotInfo objects: the output is the
//!   input with exactly those tokens replaced by the mapped ids (built byte by byte here), and,
//!   where serde_json can read the document, equals an oracle edit of serde_json's value;
//! - `redact_secrets` only turns values into `null`, leaves no identity key/offset/level or
//!   password `pw` readable, and is idempotent; `redact_scalar` nulls exactly a scalar document;
//! - `array_items` → `join_array` re-parses to the same elements, byte for byte;
//! - `rewrite_openapi_servers` gives valid JSON whose top-level `servers` are the input's with
//!   the bot urls mapped and the unknown ones dropped, and nothing else changed.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ts3ab_lb::protocol::json_edit::{
    array_items, drop_bot_infos, join_array, redact_scalar, redact_secrets, rewrite_bot_ids,
    rewrite_openapi_servers, translate_bot_infos,
};
use ts3ab_lb::protocol::json_scan::{int_value, parse, Node};

/// The id map under test: some ids unknown, the others moved (and so changing length).
fn map(id: i64) -> Option<i64> {
    if id.rem_euclid(3) == 0 {
        None
    } else {
        id.checked_add(1000)
    }
}

/// BotInfo by its definition (exactly the four keys), written here apart from the router's.
fn bot_info_members(n: &Node) -> Option<&[ts3ab_lb::protocol::json_scan::Member]> {
    let Node::Object { members, .. } = n else {
        return None;
    };
    let mut keys: Vec<&str> = members.iter().map(|m| m.key.as_str()).collect();
    keys.sort_unstable();
    (keys == ["Id", "Name", "Server", "Status"]).then_some(members.as_slice())
}

fn walk<'n>(n: &'n Node, f: &mut impl FnMut(&'n Node)) {
    f(n);
    match n {
        Node::Array { items, .. } => items.iter().for_each(|i| walk(i, f)),
        Node::Object { members, .. } => members.iter().for_each(|m| walk(&m.value, f)),
        _ => {}
    }
}

/// `src` with the given (sorted, disjoint) spans replaced, byte by byte.
fn replaced(src: &[u8], mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Vec<u8> {
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::new();
    let mut at = 0;
    for (r, with) in edits {
        assert!(r.start >= at, "oracle edits overlap");
        out.extend_from_slice(&src[at..r.start]);
        out.extend_from_slice(&with);
        at = r.end;
    }
    out.extend_from_slice(&src[at..]);
    out
}

/// The Id edits `rewrite_bot_ids` (or, with `need_status`, `translate_bot_infos`) must make.
fn id_edits(src: &[u8], root: &Node, need_status: bool) -> Vec<(Range<usize>, Vec<u8>)> {
    let mut edits = Vec::new();
    walk(root, &mut |n| {
        let Some(members) = bot_info_members(n) else {
            return;
        };
        let get = |k: &str| {
            &members
                .iter()
                .find(|m| m.key == k)
                .expect("four keys")
                .value
        };
        if need_status && int_value(src, get("Status")).is_none() {
            return;
        }
        let id_node = get("Id");
        if let Some(id) = int_value(src, id_node) {
            if let Some(new) = map(id).filter(|&n| n != id) {
                edits.push((id_node.span(), new.to_string().into_bytes()));
            }
        }
    });
    edits
}

/// Whether any object in the tree repeats a key (serde_json keeps the last, the router the
/// first: the serde oracles skip such documents).
fn has_duplicate_keys(root: &Node) -> bool {
    let mut dup = false;
    walk(root, &mut |n| {
        if let Node::Object { members, .. } = n {
            let mut keys: Vec<&str> = members.iter().map(|m| m.key.as_str()).collect();
            keys.sort_unstable();
            dup |= keys.windows(2).any(|w| w[0] == w[1]);
        }
    });
    dup
}

/// The serde_json-side oracle of `rewrite_bot_ids` with [`map`].
fn oracle_ids(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(oracle_ids),
        Value::Object(m) => {
            let bot = m.len() == 4
                && ["Id", "Name", "Server", "Status"]
                    .iter()
                    .all(|k| m.contains_key(*k));
            if bot {
                if let Some(new) = m["Id"].as_i64().and_then(map) {
                    m.insert("Id".into(), Value::from(new));
                }
            }
            m.values_mut().for_each(oracle_ids);
        }
        _ => {}
    }
}

/// The serde_json-side oracle of `rewrite_openapi_servers` with [`map`].
fn oracle_servers(v: &mut Value) {
    let Some(Value::Array(servers)) = v.get_mut("servers") else {
        return;
    };
    servers.retain_mut(|s| {
        let Some(url) = s.get("url").and_then(Value::as_str) else {
            return true;
        };
        let Some(digits) = url
            .strip_prefix("/api/bot/use/")
            .and_then(|u| u.strip_suffix("/(/"))
        else {
            return true;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        let Ok(id) = digits.parse::<i64>() else {
            return true;
        };
        match map(id) {
            None => false,
            Some(new) => {
                s["url"] = Value::from(format!("/api/bot/use/{new}/(/"));
                true
            }
        }
    });
}

fn serde(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| {
        panic!(
            "edited answer is not JSON ({e}): {}",
            String::from_utf8_lossy(b)
        )
    })
}

/// No readable secret left in a redacted tree.
fn assert_redacted(src: &[u8], n: &Node, is_identity: bool) {
    match n {
        Node::Array { items, .. } => items.iter().for_each(|i| assert_redacted(src, i, false)),
        Node::Object { members, .. } => {
            let has = |k: &str| members.iter().any(|m| m.key == k);
            let nulled = |names: &[&str]| {
                for m in members.iter().filter(|m| names.contains(&m.key.as_str())) {
                    assert!(
                        matches!(m.value, Node::Null(_)),
                        "secret {:?} left readable: {}",
                        m.key,
                        String::from_utf8_lossy(src)
                    );
                }
            };
            if is_identity || (has("key") && has("offset")) {
                nulled(&["key", "offset", "level"]);
            }
            if has("pw") && (has("hashed") || has("autohash")) {
                nulled(&["pw"]);
            }
            for m in members {
                let identity = m.key == "identity" && matches!(m.value, Node::Object { .. });
                assert_redacted(src, &m.value, identity);
            }
        }
        _ => {}
    }
}

/// Spans of `src` values that became `null` in `out`, walking both trees in step; panics where
/// anything else differs.
fn nulled_spans(src: &[u8], a: &Node, out: &[u8], b: &Node, spans: &mut Vec<Range<usize>>) {
    match (a, b) {
        (a, Node::Null(_)) if !matches!(a, Node::Null(_)) => spans.push(a.span()),
        (Node::Array { items: x, .. }, Node::Array { items: y, .. }) => {
            assert_eq!(x.len(), y.len(), "redaction changed an array");
            for (p, q) in x.iter().zip(y) {
                nulled_spans(src, p, out, q, spans);
            }
        }
        (Node::Object { members: x, .. }, Node::Object { members: y, .. }) => {
            assert_eq!(x.len(), y.len(), "redaction changed an object");
            for (p, q) in x.iter().zip(y) {
                assert_eq!(
                    &src[p.key_span.clone()],
                    &out[q.key_span.clone()],
                    "redaction changed a key"
                );
                nulled_spans(src, &p.value, out, &q.value, spans);
            }
        }
        (a, b) => assert_eq!(&src[a.span()], &out[b.span()], "redaction changed a scalar"),
    }
}

fuzz_target!(|src: &[u8]| {
    let scanned = parse(src);

    // Scanner vs serde_json on acceptance.
    let theirs = serde_json::from_slice::<Value>(src);
    // serde_json refuses unpaired surrogate escapes (the RFC grammar, and so the scanner,
    // allows them) in several ways, so inputs with any surrogate escape are not compared.
    let surrogate = src
        .windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D'));
    let serde_limit = surrogate
        || matches!(&theirs, Err(e) if {
            let m = e.to_string();
            m.contains("out of range") || m.contains("recursion limit")
        });
    if !serde_limit {
        assert_eq!(
            scanned.is_ok(),
            theirs.is_ok(),
            "scanner and serde_json disagree: {:?}",
            theirs.as_ref().err()
        );
    }

    let ids = rewrite_bot_ids(src, map);
    let translated = translate_bot_infos(src, |_| false, |id, _, _, _| map(id));
    let redacted = redact_secrets(src);
    let scalar = redact_scalar(src);
    let items = array_items(src);
    let servers = rewrite_openapi_servers(src, map);
    // A tenant's view: bots with odd ids (and offline templates) are dropped.
    let dropped = drop_bot_infos(src, |id, _| id.is_some_and(|i| i % 2 == 0));

    let Ok(root) = scanned else {
        assert!(ids.is_none() && translated.is_none() && redacted.is_none() && scalar.is_none());
        assert!(items.is_none() && servers.is_none() && dropped.is_none());
        return;
    };
    let oracles = theirs.as_ref().ok().filter(|_| !has_duplicate_keys(&root));
    // What is left after dropping is JSON still, and holds no dropped bot.
    if let (Some(out), Some(_)) = (&dropped, oracles) {
        let v: serde_json::Value =
            serde_json::from_slice(out).expect("drop_bot_infos keeps the answer JSON");
        fn no_odd(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Array(a) => a.iter().all(|x| {
                    // A BotInfo as the router reads one: exactly these four members.
                    let bot_info = x.as_object().is_some_and(|o| {
                        o.len() == 4
                            && ["Id", "Name", "Server", "Status"]
                                .iter()
                                .all(|k| o.contains_key(*k))
                    });
                    let odd = bot_info
                        && x.get("Id")
                            .and_then(serde_json::Value::as_i64)
                            .is_some_and(|i| i % 2 != 0);
                    !odd && no_odd(x)
                }),
                serde_json::Value::Object(o) => o.values().all(no_odd),
                _ => true,
            }
        }
        assert!(no_odd(&v), "a dropped bot is still there");
    }

    // Ids: exactly the BotInfo Id tokens change.
    for (got, need_status) in [(&ids, false), (&translated, true)] {
        let edits = id_edits(src, &root, need_status);
        let want = replaced(src, edits.clone());
        assert_eq!(got.is_some(), !edits.is_empty(), "changed flag");
        let got_bytes = got.as_deref().unwrap_or(src);
        assert_eq!(
            String::from_utf8_lossy(got_bytes),
            String::from_utf8_lossy(&want),
            "id rewrite touched more than the Id tokens"
        );
    }
    if let (Some(v), Some(out)) = (oracles, &ids) {
        let mut want = v.clone();
        oracle_ids(&mut want);
        assert_eq!(serde(out), want, "id rewrite differs from the serde oracle");
    }

    // Redaction: values become null, no secret is left, a second pass finds nothing.
    let red_bytes = redacted.as_deref().unwrap_or(src);
    let red_root = parse(red_bytes).expect("redacted answer is not JSON");
    assert_redacted(red_bytes, &red_root, false);
    if let Some(out) = &redacted {
        let mut spans = Vec::new();
        nulled_spans(src, &root, out, &red_root, &mut spans);
        assert!(!spans.is_empty());
        let want = replaced(
            src,
            spans.into_iter().map(|r| (r, b"null".to_vec())).collect(),
        );
        assert_eq!(
            out, &want,
            "redaction changed bytes outside the values it nulled"
        );
        assert_eq!(redact_secrets(out), None, "redaction is not idempotent");
    }
    match (&scalar, &root) {
        (Some(out), Node::String(r) | Node::Number(r) | Node::Bool(r)) => {
            assert_eq!(out, &replaced(src, vec![(r.clone(), b"null".to_vec())]));
        }
        (None, Node::Null(_) | Node::Array { .. } | Node::Object { .. }) => {}
        _ => panic!("redact_scalar on the wrong kind of document"),
    }

    // Merge arrays: split → join → split gives the same element bytes.
    if let Some(spans) = &items {
        assert!(matches!(root, Node::Array { .. }));
        let joined = join_array(spans.iter().map(|r| &src[r.clone()]));
        let again = array_items(&joined).expect("joined array does not parse");
        assert_eq!(again.len(), spans.len());
        for (x, y) in again.iter().zip(spans) {
            assert_eq!(&joined[x.clone()], &src[y.clone()]);
        }
    } else {
        assert!(!matches!(root, Node::Array { .. }));
    }

    // OpenAPI servers: valid JSON, and the oracle's servers list.
    if let Some(out) = &servers {
        let got = parse(out);
        assert!(
            got.is_ok(),
            "servers rewrite broke the JSON: {}",
            String::from_utf8_lossy(out)
        );
        if let Some(v) = oracles {
            let mut want = v.clone();
            oracle_servers(&mut want);
            assert_eq!(
                serde(out),
                want,
                "servers rewrite differs from the serde oracle"
            );
        }
    } else if let Some(v) = oracles {
        let mut want = v.clone();
        oracle_servers(&mut want);
        assert_eq!(
            &want, v,
            "servers rewrite reported no change but one was due"
        );
    }
});
