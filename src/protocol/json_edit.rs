//! TS3AudioBot-specific edits of node answers, built on the span scanner.
//!
//! Owns: the few answer edits the router needs: translating bot ids in TS3AudioBot `BotInfo`
//! objects ([`rewrite_bot_ids`], [`visit_bot_infos`], [`translate_bot_infos`]), splitting and
//! joining `json/merge` result arrays ([`array_items`], [`join_array`]), rewriting the
//! `servers` list of the `json/api` OpenAPI document ([`rewrite_openapi_servers`]) and
//! redacting TeamSpeak secrets from settings answers ([`redact_secrets`], [`redact_scalar`]),
//! and telling an answer that cannot hold translatable BotInfos apart ([`malformed_bot_infos`]).
//! Every edit replaces only a value's byte span (see `json_scan` for why).
//!
//! Does not own: scanning JSON (`json_scan`), applying replacements (`splice`), deciding
//! *which* edits apply to a response or what an unknown id means (`routing` decides policy),
//! building new JSON answers (`api_json`), or id bookkeeping.

use std::ops::Range;

use crate::protocol::json_scan::{int_value, parse, string_value, walk, Member, Node};
use crate::protocol::splice::Splice;

/// Applies `splice` when it holds edits; `None` (meaning "forward the original") otherwise.
fn finish(src: &[u8], splice: Splice) -> Option<Vec<u8>> {
    if splice.is_empty() {
        None
    } else {
        Some(splice.apply(src))
    }
}

/// TS3AudioBot's BotInfo object is exactly the four keys Id, Name, Server, Status (any order, no others).
pub fn is_bot_info(node: &Node) -> bool {
    let members = match node {
        Node::Object { members, .. } => members,
        _ => return false,
    };
    // Four members that include all four names cannot hold a duplicate or a stranger.
    members.len() == 4
        && ["Id", "Name", "Server", "Status"]
            .iter()
            .all(|k| members.iter().any(|m| m.key == *k))
}

/// Walk the whole document (any depth: top level, arrays, json/merge result arrays, nested objects) and, for every BotInfo object whose Id is an integer, call `map(id)`; when it returns Some(new) and new != id, replace the Id number token with the decimal `new`. `Id: null` is left alone. Returns None when nothing changed (caller then forwards the original bytes) and Some(new_bytes) otherwise. Input that is not valid JSON → None.
///
/// When `map` returns `None` (an id the caller does not know) the Id is left unchanged;
/// whether such a response may be forwarded at all is the caller's policy.
pub fn rewrite_bot_ids(src: &[u8], mut map: impl FnMut(i64) -> Option<i64>) -> Option<Vec<u8>> {
    let root = parse(src).ok()?;
    let mut splice = Splice::new();
    walk(&root, &mut |n| {
        if !is_bot_info(n) {
            return;
        }
        let Some(id_node) = n.get("Id") else { return };
        let Some(id) = int_value(src, id_node) else {
            return;
        };
        if let Some(new) = map(id) {
            if new != id {
                splice.replace(id_node.span(), new.to_string());
            }
        }
    });
    finish(src, splice)
}

/// Like rewrite_bot_ids but only visit, never change: call `seen(id, name, server, status)` for every BotInfo with an integer Id (name/server decoded, None for null). Used to learn bots from responses.
///
/// Name/Server are also `None` when they are not decodable strings. A BotInfo whose
/// Status is not an integer is skipped, since there is no honest status to report.
/// Invalid JSON visits nothing.
pub fn visit_bot_infos(src: &[u8], mut seen: impl FnMut(i64, Option<&str>, Option<&str>, i64)) {
    translate_bot_infos(
        src,
        |_| false,
        |id, name, server, status| {
            seen(id, name, server, status);
            None
        },
    );
}

/// [`visit_bot_infos`] and [`rewrite_bot_ids`] in one parse (the proxy path): `map(id, name,
/// server, status)` sees every BotInfo with an integer Id and Status, and a returned id replaces
/// the Id token as in [`rewrite_bot_ids`]. A BotInfo whose Name `hidden` holds for (a name
/// only the router uses) shows `"Name":null` instead, as a temporary bot does; `map` still
/// sees the name. Returns None when nothing changed.
pub fn translate_bot_infos(
    src: &[u8],
    hidden: impl Fn(&str) -> bool,
    mut map: impl FnMut(i64, Option<&str>, Option<&str>, i64) -> Option<i64>,
) -> Option<Vec<u8>> {
    let root = parse(src).ok()?;
    let mut splice = Splice::new();
    walk(&root, &mut |n| {
        if !is_bot_info(n) {
            return;
        }
        let field = |k: &str| n.get(k);
        if let Some(name_node) = field("Name") {
            if string_value(src, name_node).is_some_and(|name| hidden(&name)) {
                splice.replace(name_node.span(), "null".to_string());
            }
        }
        let (Some(id_node), Some(status)) =
            (field("Id"), field("Status").and_then(|v| int_value(src, v)))
        else {
            return;
        };
        let Some(id) = int_value(src, id_node) else {
            return;
        };
        let name = field("Name").and_then(|v| string_value(src, v));
        let server = field("Server").and_then(|v| string_value(src, v));
        if let Some(new) = map(id, name.as_deref(), server.as_deref(), status) {
            if new != id {
                splice.replace(id_node.span(), new.to_string());
            }
        }
    });
    finish(src, splice)
}

/// Removes from every array (at any depth) the BotInfo objects that `keep(id, name)`
/// refuses (`id` None for `"Id":null`, an offline template), as if the node had never listed them (a key of scope `own` must not learn that
/// other bots exist). An array that loses items is rebuilt compactly (`[a,b]`, as
/// TS3AudioBot writes JSON); every other byte stays. Returns None when nothing was removed.
pub fn drop_bot_infos(
    src: &[u8],
    keep: impl Fn(Option<i64>, Option<&str>) -> bool,
) -> Option<Vec<u8>> {
    let root = parse(src).ok()?;
    without_dropped(src, &root, &keep)
}

fn without_dropped(
    src: &[u8],
    node: &Node,
    keep: &dyn Fn(Option<i64>, Option<&str>) -> bool,
) -> Option<Vec<u8>> {
    match node {
        Node::Array { items, .. } => {
            let mut changed = false;
            let mut parts: Vec<Vec<u8>> = Vec::with_capacity(items.len());
            for it in items {
                let dropped = is_bot_info(it) && {
                    let id = it.get("Id").and_then(|v| int_value(src, v));
                    let name = it.get("Name").and_then(|v| string_value(src, v));
                    !keep(id, name.as_deref())
                };
                if dropped {
                    changed = true;
                    continue;
                }
                match without_dropped(src, it, keep) {
                    Some(b) => {
                        changed = true;
                        parts.push(b);
                    }
                    None => parts.push(src[it.span()].to_vec()),
                }
            }
            changed.then(|| join_array(parts.iter().map(Vec::as_slice)))
        }
        Node::Object { span, members } => {
            let mut splice = Splice::new();
            for m in members {
                if let Some(b) = without_dropped(src, &m.value, keep) {
                    let r = m.value.span();
                    splice.replace(r.start - span.start..r.end - span.start, b);
                }
            }
            finish(&src[span.clone()], splice)
        }
        _ => None,
    }
}

/// Why `src` cannot be an answer whose BotInfos the router translates: it is not JSON, or a
/// BotInfo in it has the wrong types (TS3AudioBot's Id is an integer or null, Status an
/// integer, Name and Server strings or null). `None`: it can be. Such an object is skipped
/// by [`translate_bot_infos`], so without this check its Id (a node's local id, or
/// nonsense) would reach a client untranslated.
pub fn malformed_bot_infos(src: &[u8]) -> Option<String> {
    let root = match parse(src) {
        Ok(r) => r,
        Err(_) => return Some("the body is not JSON".into()),
    };
    let mut why = None;
    walk(&root, &mut |n| {
        if why.is_some() || !is_bot_info(n) {
            return;
        }
        let is_null = |v: &Node| matches!(v, Node::Null(_));
        let int_or_null = |k: &str| {
            n.get(k)
                .is_some_and(|v| is_null(v) || int_value(src, v).is_some())
        };
        let text_or_null = |k: &str| {
            n.get(k)
                .is_some_and(|v| is_null(v) || string_value(src, v).is_some())
        };
        let status_ok = n.get("Status").is_some_and(|v| int_value(src, v).is_some());
        if !(int_or_null("Id") && status_ok && text_or_null("Name") && text_or_null("Server")) {
            why = Some("a BotInfo in it has the wrong types".to_string());
        }
    });
    why
}

/// Element spans of a top-level JSON array (None if the document is not an array). Used to split json/merge results.
///
/// Also `None` for invalid JSON.
pub fn array_items(src: &[u8]) -> Option<Vec<Range<usize>>> {
    match parse(src).ok()? {
        Node::Array { items, .. } => Some(items.iter().map(Node::span).collect()),
        _ => None,
    }
}

/// Build `[e1,e2,...]` from raw element byte slices (no re-encoding).
pub fn join_array<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

const API_USE_PREFIX: &str = "/api/bot/use/";
const API_USE_SUFFIX: &str = "/(/";

/// The bot id in a server url of the exact form `/api/bot/use/<int>/(/`.
fn openapi_server_id(url: &str) -> Option<i64> {
    let digits = url
        .strip_prefix(API_USE_PREFIX)?
        .strip_suffix(API_USE_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// In TS3AudioBot's `json/api` OpenAPI document, `servers` is an array of {"url": "..."}; urls of the form `/api/bot/use/<int>/(/` carry node-local bot ids. Rewrite each such `<int>` through `map` (same contract as rewrite_bot_ids: None = unknown → drop that server entry entirely, including its separating comma, so the result stays valid JSON). Only the top-level `servers` member is touched. Returns None when unchanged.
///
/// A rewritten url is written as a fresh, escape-free string token (the url is plain
/// ASCII), so any escapes in the original url token are not preserved. Entries whose url
/// does not have that form are kept untouched. Invalid JSON → None.
pub fn rewrite_openapi_servers(
    src: &[u8],
    mut map: impl FnMut(i64) -> Option<i64>,
) -> Option<Vec<u8>> {
    let root = parse(src).ok()?;
    let Some(Node::Array {
        span: arr_span,
        items,
    }) = root.get("servers")
    else {
        return None;
    };
    let mut splice = Splice::new();
    let mut keep = vec![true; items.len()];
    for (i, item) in items.iter().enumerate() {
        let Some(url_node) = item.get("url") else {
            continue;
        };
        let Some(id) = string_value(src, url_node)
            .as_deref()
            .and_then(openapi_server_id)
        else {
            continue;
        };
        match map(id) {
            None => keep[i] = false,
            Some(new) if new != id => {
                splice.replace(
                    url_node.span(),
                    format!("\"{API_USE_PREFIX}{new}{API_USE_SUFFIX}\""),
                );
            }
            Some(_) => {}
        }
    }
    match keep.iter().rposition(|&k| k) {
        None if !items.is_empty() => {
            // Everything dropped: clear the whole interior, leaving `[]`.
            splice = Splice::new();
            splice.replace(arr_span.start + 1..arr_span.end - 1, Vec::new());
        }
        None => {}
        Some(last_kept) => {
            for (i, item) in items.iter().enumerate().filter(|&(i, _)| !keep[i]) {
                let range = if i < last_kept {
                    // Item, its comma and whitespace up to the next item: the next item
                    // (kept or also dropped) then sits where this one began.
                    item.span().start..items[i + 1].span().start
                } else {
                    // After the last kept item there is no following comma to take, so
                    // take the one before, from the previous item's end.
                    items[i - 1].span().end..item.span().end
                };
                splice.replace(range, Vec::new());
            }
        }
    }
    finish(src, splice)
}

/// Queues replacing each named member's value with `null` (unless already null).
/// Returns the indices of the members replaced so the caller does not descend into them.
fn null_members(members: &[Member], names: &[&str], splice: &mut Splice, out: &mut Vec<usize>) {
    for (i, m) in members.iter().enumerate() {
        if names.contains(&m.key.as_str()) && !matches!(m.value, Node::Null(_)) {
            splice.replace(m.value.span(), "null");
            out.push(i);
        }
    }
}

fn redact_walk(node: &Node, is_identity_value: bool, splice: &mut Splice) {
    match node {
        Node::Array { items, .. } => items.iter().for_each(|n| redact_walk(n, false, splice)),
        Node::Object { members, .. } => {
            let has = |k: &str| members.iter().any(|m| m.key == k);
            let mut redacted = Vec::new();
            if is_identity_value || (has("key") && has("offset")) {
                null_members(members, &["key", "offset", "level"], splice, &mut redacted);
            }
            if has("pw") && (has("hashed") || has("autohash")) {
                null_members(members, &["pw"], splice, &mut redacted);
            }
            for (i, m) in members.iter().enumerate() {
                // A value already replaced by null must not also be edited inside, or the
                // edits would overlap.
                if redacted.contains(&i) {
                    continue;
                }
                let identity = m.key == "identity" && matches!(m.value, Node::Object { .. });
                redact_walk(&m.value, identity, splice);
            }
        }
        _ => {}
    }
}

/// Redact TeamSpeak secrets from TS3AudioBot config JSON (settings get / settings bot get results) for non-admin callers, by shape, at any depth: in every object that has a member "identity" whose value is an object, or that itself looks like an identity (has "key" and "offset" members), replace the values of "key", "offset" and "level" with null; in every object that has a "pw" member together with "hashed" or "autohash" (a password object), replace "pw" with null. Returns None when unchanged.
///
/// For an `identity` member, the redacted fields are those inside the identity object.
/// Invalid JSON also returns `None`: callers that must fail closed check [`parse`] first.
pub fn redact_secrets(src: &[u8]) -> Option<Vec<u8>> {
    let root = parse(src).ok()?;
    let mut splice = Splice::new();
    redact_walk(&root, false, &mut splice);
    finish(src, splice)
}

/// Replace the whole document with `null` if it is a bare JSON scalar (string/number/bool) — used when the requested settings path is itself a secret leaf; returns None for objects/arrays/null.
///
/// Only the value token is replaced, so surrounding whitespace is kept. Invalid JSON also
/// returns `None`: callers that must fail closed check [`parse`] first.
pub fn redact_scalar(src: &[u8]) -> Option<Vec<u8>> {
    match parse(src).ok()? {
        n @ (Node::String(_) | Node::Number(_) | Node::Bool(_)) => {
            let mut splice = Splice::new();
            splice.replace(n.span(), "null");
            Some(splice.apply(src))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json_gen::{array_doc, doc};
    use proptest::prelude::*;
    use serde_json::Value;

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn malformed_bot_infos_are_told_apart_from_other_json() {
        for ok in [
            &br#"{"Id":3,"Name":null,"Server":"s","Status":2}"#[..],
            br#"[{"Id":null,"Name":"t","Server":"","Status":0}]"#,
            br#"{"Value":"not a BotInfo"}"#,
            br#"[null,{"Id":"x","Name":1}]"#,
        ] {
            assert_eq!(
                malformed_bot_infos(ok),
                None,
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        assert_eq!(
            malformed_bot_infos(br#"{"Id":0,"Name":"half" oops"#).as_deref(),
            Some("the body is not JSON")
        );
        for bad in [
            &br#"{"Id":"seven","Name":null,"Server":"","Status":true}"#[..],
            br#"[{"Id":1,"Name":null,"Server":"","Status":2},{"Id":2,"Name":null,"Server":"","Status":"up"}]"#,
            br#"{"Id":1.5,"Name":null,"Server":"","Status":2}"#,
            br#"{"Id":1,"Name":7,"Server":"","Status":2}"#,
        ] {
            assert!(malformed_bot_infos(bad).is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn translate_sees_fields_and_maps_ids_in_one_pass() {
        let src = br#"[{"Id":3,"Name":null,"Server":"a","Status":2},50.0,{"Status":1,"Server":null,"Name":"t","Id":7}]"#;
        let mut seen = Vec::new();
        let out = translate_bot_infos(
            src,
            |_| false,
            |id, name, server, status| {
                seen.push((
                    id,
                    name.map(str::to_string),
                    server.map(str::to_string),
                    status,
                ));
                Some(id * 10)
            },
        )
        .expect("changed");
        assert_eq!(
            s(&out),
            r#"[{"Id":30,"Name":null,"Server":"a","Status":2},50.0,{"Status":1,"Server":null,"Name":"t","Id":70}]"#
        );
        assert_eq!(
            seen,
            vec![
                (3, None, Some("a".into()), 2),
                (7, Some("t".into()), None, 1)
            ]
        );
        assert!(translate_bot_infos(src, |_| false, |_, _, _, _| None).is_none());
    }

    #[test]
    fn hidden_names_read_null_and_nothing_else_changes() {
        let src = br#"{"a":[{"Id":3, "Name" : "router-3","Server":"x","Status":2},{"Id":null,"Name":"router-9","Server":"","Status":0},{"Id":4,"Name":"music","Server":"y","Status":2}]}"#;
        let mut names = Vec::new();
        let out = translate_bot_infos(
            src,
            |n| n.starts_with("router-"),
            |id, name, _, _| {
                names.push(name.map(str::to_string));
                Some(id + 1)
            },
        )
        .expect("changed");
        assert_eq!(
            s(&out),
            r#"{"a":[{"Id":4, "Name" : null,"Server":"x","Status":2},{"Id":null,"Name":null,"Server":"","Status":0},{"Id":5,"Name":"music","Server":"y","Status":2}]}"#
        );
        // The caller still learns the bot under its real name.
        assert_eq!(names, vec![Some("router-3".into()), Some("music".into())]);
        // A string elsewhere with the same text is not a BotInfo Name.
        let other = br#"{"Name":"router-3","Other":1}"#;
        assert!(
            translate_bot_infos(other, |n| n.starts_with("router-"), |_, _, _, _| None).is_none()
        );
    }

    // ---------- bot ids ----------

    const BOT_LIST: &str = r#"[{"Id":0,"Name":"a","Server":"1.2.3.4","Status":2},{"Id":null,"Name":"t","Server":"","Status":0}]"#;

    #[test]
    fn rewrites_bot_list() {
        let out = rewrite_bot_ids(BOT_LIST.as_bytes(), |id| Some(id + 17)).unwrap();
        assert_eq!(s(&out), BOT_LIST.replacen("\"Id\":0", "\"Id\":17", 1));
        // Identity map and unknown ids change nothing.
        assert_eq!(rewrite_bot_ids(BOT_LIST.as_bytes(), Some), None);
        assert_eq!(rewrite_bot_ids(BOT_LIST.as_bytes(), |_| None), None);
        assert_eq!(rewrite_bot_ids(b"[1,", |id| Some(id + 1)), None);
    }

    #[test]
    fn rewrites_inside_merge_results_keeping_other_bytes() {
        let src = r#"[{"Id":1,"Name":"a","Server":"s","Status":2},50.0,null,{"Title":"x"},[{"Status":1,"Server":"","Name":null,"Id":-3}]]"#;
        let mut calls = Vec::new();
        let out = rewrite_bot_ids(src.as_bytes(), |id| {
            calls.push(id);
            Some(id * 100)
        })
        .unwrap();
        assert_eq!(calls, [1, -3]);
        assert_eq!(
            s(&out),
            r#"[{"Id":100,"Name":"a","Server":"s","Status":2},50.0,null,{"Title":"x"},[{"Status":1,"Server":"","Name":null,"Id":-300}]]"#
        );
    }

    #[test]
    fn extra_or_missing_keys_are_not_bot_info() {
        let src = r#"[{"Id":1,"Name":"a","Server":"s","Status":2,"X":1},{"Id":1,"Name":"a","Server":"s"},{"Id":1,"Id":2,"Name":"a","Server":"s"},{"\u0049d":4,"Name":"a","Server":"s","Status":2}]"#;
        let root = parse(src.as_bytes()).unwrap();
        let Node::Array { items, .. } = &root else {
            panic!()
        };
        let flags: Vec<_> = items.iter().map(is_bot_info).collect();
        assert_eq!(flags, [false, false, false, true]);
        assert!(!is_bot_info(&Node::Null(0..4)));
        let out = rewrite_bot_ids(src.as_bytes(), |id| Some(id + 1)).unwrap();
        assert_eq!(s(&out), src.replace("\"\\u0049d\":4", "\"\\u0049d\":5"));
    }

    #[test]
    fn pretty_printed_input_preserved() {
        let src = "{\n  \"bots\" : [\n    {\r\n\t\"Status\" : 2 ,\n      \"Id\" :   12 ,\n      \"Name\" : \"x\\u0041\",\n      \"Server\" : null\n    }\n  ]\n}\n";
        let out = rewrite_bot_ids(src.as_bytes(), |_| Some(3)).unwrap();
        assert_eq!(s(&out), src.replace(":   12 ,", ":   3 ,"));
    }

    #[test]
    fn visits_bot_infos() {
        let src = r#"{"a":[{"Id":7,"Name":"n\u00e9","Server":null,"Status":1},{"Id":null,"Name":"t","Server":"","Status":0},{"Id":8,"Name":5,"Server":"s","Status":"x"},{"Id":9,"Name":"m","Server":"h","Status":0}]}"#;
        let mut seen = Vec::new();
        visit_bot_infos(src.as_bytes(), |id, name, server, status| {
            seen.push((
                id,
                name.map(str::to_owned),
                server.map(str::to_owned),
                status,
            ));
        });
        assert_eq!(
            seen,
            [
                (7, Some("né".to_owned()), None, 1),
                (9, Some("m".to_owned()), Some("h".to_owned()), 0)
            ]
        );
        visit_bot_infos(b"{", |_, _, _, _| panic!("invalid JSON visits nothing"));
    }

    // ---------- arrays ----------

    #[test]
    fn array_split_and_join() {
        let src = b" [ 1 , {\"a\": [2]} ,\"x\",50.0 ] ";
        let spans = array_items(src).unwrap();
        let parts: Vec<&[u8]> = spans.iter().map(|r| &src[r.clone()]).collect();
        assert_eq!(parts, [&b"1"[..], b"{\"a\": [2]}", b"\"x\"", b"50.0"]);
        assert_eq!(s(&join_array(parts)), "[1,{\"a\": [2]},\"x\",50.0]");
        assert_eq!(array_items(b"[]"), Some(vec![]));
        assert_eq!(join_array(std::iter::empty()), b"[]");
        assert_eq!(array_items(b"{}"), None);
        assert_eq!(array_items(b"[1,"), None);
    }

    // ---------- openapi ----------

    fn api(urls: &[&str]) -> String {
        let servers: Vec<String> = urls
            .iter()
            .map(|u| format!("{{ \"url\": \"{u}\" }}"))
            .collect();
        format!("{{\"openapi\":\"3.0.0\",\"servers\": [ {} ],\"paths\":{{\"/x\":{{\"servers\":[{{\"url\":\"/api/bot/use/1/(/\"}}]}}}}}}", servers.join(" ,\n "))
    }

    fn u(id: i64) -> String {
        format!("/api/bot/use/{id}/(/")
    }

    #[test]
    fn openapi_rewrites_and_drops() {
        let map = |id: i64| if id == 2 { None } else { Some(id + 10) };
        let (a, b, c) = (u(1), u(2), u(3));
        let cases: [(&[&str], &[&str]); 7] = [
            (&[&a, &b, &c], &[&u(11), &u(13)]),
            (&[&b, &a, &c], &[&u(11), &u(13)]),
            (&[&a, &c, &b], &[&u(11), &u(13)]),
            (&[&b, &b, &a, &b, &c, &b], &[&u(11), &u(13)]),
            (&[&b], &[]),
            (&[&b, &b], &[]),
            (&[&a, "/other", &b], &[&u(11), "/other"]),
        ];
        for (input, want) in cases {
            let src = api(input);
            let out = rewrite_openapi_servers(src.as_bytes(), map).unwrap();
            let got: Value =
                serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", s(&out)));
            let urls: Vec<&str> = got["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["url"].as_str().unwrap())
                .collect();
            assert_eq!(urls, want, "{}", s(&out));
            // The nested per-path `servers` is not touched.
            assert_eq!(got["paths"]["/x"]["servers"][0]["url"], "/api/bot/use/1/(/");
        }
        // Byte-exact: dropping the first entry takes its trailing comma and whitespace.
        let exact = br#"{"servers":[ {"url":"/api/bot/use/2/(/"} ,
  {"url":"/api/bot/use/1/(/","description":"d"} ]}"#;
        let out = rewrite_openapi_servers(exact, map).unwrap();
        assert_eq!(
            s(&out),
            r#"{"servers":[ {"url":"/api/bot/use/11/(/","description":"d"} ]}"#
        );
        let exact = br#"{"servers":[{"url":"/api/bot/use/1/(/"} , {"url":"/api/bot/use/2/(/"}]}"#;
        let out = rewrite_openapi_servers(exact, map).unwrap();
        assert_eq!(s(&out), r#"{"servers":[{"url":"/api/bot/use/11/(/"}]}"#);
        let out = rewrite_openapi_servers(br#"{"servers":[ {"url":"/api/bot/use/2/(/"} ]}"#, map)
            .unwrap();
        assert_eq!(s(&out), r#"{"servers":[]}"#);
    }

    #[test]
    fn openapi_unchanged_cases() {
        let src = api(&[&u(1), "/api/bot/use/x/(/", "/api/bot/use/4/"]);
        assert_eq!(rewrite_openapi_servers(src.as_bytes(), Some), None);
        assert_eq!(rewrite_openapi_servers(api(&[]).as_bytes(), |_| None), None);
        assert_eq!(
            rewrite_openapi_servers(br#"{"servers":{}}"#, |_| None),
            None
        );
        assert_eq!(
            rewrite_openapi_servers(br#"[{"servers":[{"url":"/api/bot/use/1/(/"}]}]"#, |_| None),
            None
        );
        assert_eq!(rewrite_openapi_servers(b"{", |_| None), None);
        // Escaped url still recognized; rewritten token is plain.
        let esc = br#"{"servers":[{"url":"\/api\/bot\/use\/5\/(\/"}]}"#;
        let out = rewrite_openapi_servers(esc, |_| Some(6)).unwrap();
        assert_eq!(s(&out), r#"{"servers":[{"url":"/api/bot/use/6/(/"}]}"#);
    }

    // ---------- redaction ----------

    #[test]
    fn redacts_settings_tree() {
        let src = r#"{"connect":{"address":"a","identity":{"key":"SECRET","offset":123,"level":-1},"server_password":{"pw":"pw1","hashed":false,"autohash":false}},"audio":{"volume":{"default":50.0}}}"#;
        let out = redact_secrets(src.as_bytes()).unwrap();
        assert_eq!(
            s(&out),
            r#"{"connect":{"address":"a","identity":{"key":null,"offset":null,"level":null},"server_password":{"pw":null,"hashed":false,"autohash":false}},"audio":{"volume":{"default":50.0}}}"#
        );
        assert_eq!(redact_secrets(&out), None, "idempotent");
    }

    #[test]
    fn redacts_bare_identity_and_shapes() {
        let out = redact_secrets(br#"{"key":"K","offset":1,"level":-1}"#).unwrap();
        assert_eq!(s(&out), r#"{"key":null,"offset":null,"level":null}"#);
        // `identity` object with only some fields, nested in an array.
        let out = redact_secrets(br#"[{"identity":{"level":8}}, {"identity":"str"}]"#).unwrap();
        assert_eq!(
            s(&out),
            r#"[{"identity":{"level":null}}, {"identity":"str"}]"#
        );
        // Password object needs hashed or autohash.
        let out = redact_secrets(br#"{"a":{"pw":"x","autohash":true},"b":{"pw":"y"}}"#).unwrap();
        assert_eq!(
            s(&out),
            r#"{"a":{"pw":null,"autohash":true},"b":{"pw":"y"}}"#
        );
        // A redacted value containing other secrets is replaced once, without overlap.
        let out = redact_secrets(br#"{"key":{"pw":"p","hashed":1},"offset":0}"#).unwrap();
        assert_eq!(s(&out), r#"{"key":null,"offset":null}"#);
        assert_eq!(redact_secrets(br#"{"key":"k","x":1}"#), None);
        assert_eq!(redact_secrets(b"[1, "), None);
    }

    #[test]
    fn redacts_scalars() {
        assert_eq!(
            redact_scalar(b" \"secret\"\n").as_deref(),
            Some(&b" null\n"[..])
        );
        assert_eq!(redact_scalar(b"-12.5").as_deref(), Some(&b"null"[..]));
        assert_eq!(redact_scalar(b"true").as_deref(), Some(&b"null"[..]));
        assert_eq!(redact_scalar(b"null"), None);
        assert_eq!(redact_scalar(b"{}"), None);
        assert_eq!(redact_scalar(b"[1]"), None);
        assert_eq!(redact_scalar(b"\"x"), None);
    }

    /// The serde_json-side oracle of `rewrite_bot_ids` with `+1000`.
    fn add_1000(v: &mut Value) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(add_1000),
            Value::Object(map) => {
                let bot = map.len() == 4
                    && ["Id", "Name", "Server", "Status"]
                        .iter()
                        .all(|k| map.contains_key(*k));
                if bot {
                    if let Some(new) = map["Id"].as_i64().and_then(|id| id.checked_add(1000)) {
                        map.insert("Id".to_owned(), Value::from(new));
                    }
                }
                map.values_mut().for_each(add_1000);
            }
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn prop_identity_map_unchanged(src in doc()) {
            prop_assert_eq!(rewrite_bot_ids(src.as_bytes(), Some), None);
            prop_assert_eq!(rewrite_bot_ids(src.as_bytes(), |_| None), None);
        }

        #[test]
        fn prop_add_1000_matches_oracle(src in doc()) {
            let b = src.as_bytes();
            let out = rewrite_bot_ids(b, |id| id.checked_add(1000));
            let mut expect: Value = serde_json::from_slice(b).unwrap();
            add_1000(&mut expect);
            let got: Value = match &out {
                Some(o) => serde_json::from_slice(o).unwrap(),
                None => serde_json::from_slice(b).unwrap(),
            };
            prop_assert_eq!(got, expect);
            if let Some(o) = out {
                // Only Id tokens change, so the bytes outside them stay: same length up to
                // digits, and the same whitespace skeleton.
                let ws = |x: &[u8]| x.iter().filter(|c| c.is_ascii_whitespace()).count();
                prop_assert_eq!(ws(&o), ws(b));
            }
        }

        #[test]
        fn prop_array_split_join(src in array_doc()) {
            let b = src.as_bytes();
            let spans = array_items(b).unwrap();
            let joined = join_array(spans.iter().map(|r| &b[r.clone()]));
            let a: Value = serde_json::from_slice(&joined).unwrap();
            let e: Value = serde_json::from_slice(b).unwrap();
            prop_assert_eq!(a, e);
            // Each element is exactly the original text of that element.
            let again = array_items(&joined).unwrap();
            prop_assert_eq!(again.len(), spans.len());
            for (x, y) in again.iter().zip(&spans) {
                prop_assert_eq!(&joined[x.clone()], &b[y.clone()]);
            }
        }

        #[test]
        fn prop_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
            let _ = rewrite_bot_ids(&bytes, |i| Some(i + 1));
            let _ = redact_secrets(&bytes);
        }
    }

    #[test]
    fn dropping_bot_infos_at_any_depth() {
        let src = br#"[{"Id":1,"Name":null,"Server":"a","Status":2},{"Id":2,"Name":"m","Server":null,"Status":0},[{"Id":3,"Name":null,"Server":null,"Status":1},5],{"x":[{"Id":2,"Name":null,"Server":null,"Status":1}]},{"Id":null,"Name":"t","Server":null,"Status":0}]"#;
        let out = drop_bot_infos(src, |id, name| {
            id.is_none_or(|id| id != 2 && id != 3) && name != Some("u")
        })
        .expect("changed");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"[{"Id":1,"Name":null,"Server":"a","Status":2},[5],{"x":[]},{"Id":null,"Name":"t","Server":null,"Status":0}]"#
        );
        assert_eq!(drop_bot_infos(src, |_, _| true), None);
        assert_eq!(
            drop_bot_infos(
                br#"[{"Id":null,"Name":"u","Server":null,"Status":0}]"#,
                |_, n| n != Some("u")
            ),
            Some(b"[]".to_vec())
        );
        assert_eq!(
            drop_bot_infos(
                br#"{"Id":2,"Name":null,"Server":null,"Status":1}"#,
                |_, _| false
            ),
            None,
            "a single BotInfo is not in an array: the caller decides"
        );
    }
}
