//! Span-based JSON editing of node responses.
//!
//! Owns: a strict, allocation-light RFC 8259 scanner that turns a document into a tree of
//! byte ranges ([`parse`], [`Node`]), splicing replacements into the original bytes
//! ([`Splice`]), and the few response edits the router needs: translating bot ids in
//! TS3AudioBot `BotInfo` objects ([`rewrite_bot_ids`], [`visit_bot_infos`]), splitting and
//! joining `json/merge` result arrays ([`array_items`], [`join_array`]), rewriting the
//! `servers` list of the `json/api` OpenAPI document ([`rewrite_openapi_servers`]) and
//! redacting TeamSpeak secrets from settings answers ([`redact_secrets`], [`redact_scalar`]).
//!
//! Does not own: deciding *which* edits apply to a response or what an unknown id means
//! (`routing` decides policy), building new JSON answers (`api_json`), or id bookkeeping.
//!
//! Why spans instead of serde_json: responses must pass through byte-for-byte except for the
//! values we translate. Re-encoding would change number spelling (`1e3` becomes `1000.0`,
//! huge integers lose digits), string escapes, key order and whitespace, all of which clients
//! can observe. Every edit here therefore replaces only a value's byte span.

use std::ops::Range;

/// Maximum nesting depth of arrays/objects accepted by [`parse`]; deeper input is an error.
///
/// Bounds recursion so hostile input can never overflow the stack. A document with exactly
/// this many nested containers is accepted.
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value with byte spans into the source.
///
/// Every span is a half-open byte range of the source passed to [`parse`], covering the
/// value's token(s) exactly, without surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// The literal `null`.
    Null(Range<usize>),
    /// The literal `true` or `false`.
    Bool(Range<usize>),
    /// A number token, in its original spelling (see [`int_value`]).
    Number(Range<usize>),
    /// A string; the span includes both quotes (see [`string_value`]).
    String(Range<usize>),
    /// An array, from `[` to `]` inclusive, with its elements in order.
    Array {
        /// Span from `[` to `]` inclusive.
        span: Range<usize>,
        /// The elements in document order.
        items: Vec<Node>,
    },
    /// An object, from `{` to `}` inclusive, with its members in document order
    /// (duplicate keys are kept as they appear).
    Object {
        /// Span from `{` to `}` inclusive.
        span: Range<usize>,
        /// The members in document order.
        members: Vec<Member>,
    },
}

/// One `key: value` member of a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key, unescaped. A key holding an unpaired surrogate escape (`"\uD800"`) has it
    /// replaced by U+FFFD, so it never equals any key we look for.
    pub key: String,
    /// Span of the key string token, including its quotes.
    pub key_span: Range<usize>,
    /// The member's value.
    pub value: Node,
}

impl Node {
    /// The byte range of this value in the source it was parsed from.
    pub fn span(&self) -> Range<usize> {
        match self {
            Node::Null(s) | Node::Bool(s) | Node::Number(s) | Node::String(s) => s.clone(),
            Node::Array { span, .. } | Node::Object { span, .. } => span.clone(),
        }
    }

    /// The value of the first member named `key` (compared after unescaping); `None` for
    /// non-objects or when absent.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object { members, .. } => members.iter().find(|m| m.key == key).map(|m| &m.value),
            _ => None,
        }
    }
}

/// Why [`parse`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the input where the problem was detected.
    pub offset: usize,
    /// A short, fixed description of the problem.
    pub message: &'static str,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Strict RFC 8259 parse of the whole input (leading/trailing JSON whitespace allowed,
/// nothing else after the value). Depth limit 128 → error, never a stack overflow.
///
/// Strictness: the input must be UTF-8 (no byte-order mark), numbers follow the RFC grammar
/// (no leading zeros, `+`, `.5`, `NaN`), strings contain no raw control characters and only
/// the RFC escapes. Unpaired surrogate escapes are allowed, as the RFC grammar allows them;
/// [`string_value`] reports such strings as undecodable.
pub fn parse(src: &[u8]) -> Result<Node, ParseError> {
    // Checking UTF-8 once up front keeps the string scanner byte-oriented; outside strings
    // only ASCII is valid anyway, so this rejects nothing the grammar would accept.
    if let Err(e) = std::str::from_utf8(src) {
        return Err(ParseError {
            offset: e.valid_up_to(),
            message: "invalid UTF-8",
        });
    }
    let mut p = Parser { src, pos: 0 };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != src.len() {
        return Err(p.err("trailing characters after JSON value"));
    }
    Ok(value)
}

/// Recursive-descent scanner state; `pos` always points at the next unread byte.
struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            message,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, ParseError> {
        let start = self.pos;
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'n') => self.literal(b"null").map(|()| Node::Null(start..self.pos)),
            Some(b't') => self.literal(b"true").map(|()| Node::Bool(start..self.pos)),
            Some(b'f') => self.literal(b"false").map(|()| Node::Bool(start..self.pos)),
            Some(b'"') => self.string().map(|_| Node::String(start..self.pos)),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| Node::Number(start..self.pos)),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(_) => Err(self.err("expected a JSON value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ParseError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), ParseError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("expected digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("expected digit after decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected digit in exponent"));
            }
        }
        Ok(())
    }

    /// Scans a string token starting at its opening quote; returns whether it contains
    /// escapes (so keys without any can skip the decoder).
    fn string(&mut self) -> Result<bool, ParseError> {
        self.pos += 1; // opening quote
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    Some(c) if c.is_ascii_hexdigit() => self.pos += 1,
                                    _ => return Err(self.err("invalid \\u escape")),
                                }
                            }
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                // Multi-byte UTF-8 was validated up front; its bytes are all >= 0x80.
                Some(_) => self.pos += 1,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Node::Array {
                span: start..self.pos,
                items,
            });
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array {
                        span: start..self.pos,
                        items,
                    });
                }
                None => return Err(self.err("unexpected end of input in array")),
                Some(_) => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let start = self.pos;
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Node::Object {
                span: start..self.pos,
                members,
            });
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected string key"));
            }
            let key_start = self.pos;
            let escaped = self.string()?;
            let key_span = key_start..self.pos;
            let raw = &self.src[key_start + 1..self.pos - 1];
            let key = if escaped {
                decode(raw, true).unwrap_or_default()
            } else {
                // Already validated as UTF-8 and escape-free; lossy never substitutes here.
                String::from_utf8_lossy(raw).into_owned()
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push(Member {
                key,
                key_span,
                value,
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node::Object {
                        span: start..self.pos,
                        members,
                    });
                }
                None => return Err(self.err("unexpected end of input in object")),
                Some(_) => return Err(self.err("expected ',' or '}'")),
            }
        }
    }
}

/// Reads four hex digits at `raw[at..]`.
fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = raw.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16)?;
    }
    Some(v)
}

/// Decodes string content (between the quotes). With `lossy`, unpaired surrogates become
/// U+FFFD instead of failing; any other malformation fails either way.
fn decode(raw: &[u8], lossy: bool) -> Option<String> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let simple = match *raw.get(i + 1)? {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            _ => return None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        let hi = hex4(raw, i + 2)?;
        i += 6;
        let ch = if (0xD800..0xDC00).contains(&hi) {
            // A high surrogate must be followed by an escaped low surrogate.
            let lo = if raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
                hex4(raw, i + 2).filter(|lo| (0xDC00..0xE000).contains(lo))
            } else {
                None
            };
            match lo {
                Some(lo) => {
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                }
                None => None,
            }
        } else {
            char::from_u32(hi)
        };
        let ch = match ch {
            Some(c) => c,
            None if lossy => char::REPLACEMENT_CHARACTER,
            None => return None,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    String::from_utf8(out).ok()
}

/// Decode a string node's content (handles all escapes incl. surrogate pairs; invalid → None).
///
/// Also `None` for non-string nodes and for spans that do not fit `src`.
pub fn string_value(src: &[u8], node: &Node) -> Option<String> {
    let Node::String(span) = node else {
        return None;
    };
    let tok = src.get(span.clone())?;
    let inner = tok.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    decode(inner, false)
}

/// Parse an integer number node as i64 (no fraction/exponent) → None otherwise.
///
/// Also `None` for values outside i64 and for `-0`: it is not the canonical spelling of
/// any integer (TS3AudioBot never emits it, and serde_json reads it as a float), so it is
/// never treated as a bot id.
pub fn int_value(src: &[u8], node: &Node) -> Option<i64> {
    let Node::Number(span) = node else {
        return None;
    };
    let tok = src.get(span.clone())?;
    let digits = tok.strip_prefix(b"-").unwrap_or(tok);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || tok == b"-0" {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(tok).ok()?.parse().ok()
}

/// A set of non-overlapping replacements applied to the source in one pass.
///
/// Edits are applied in order of their start offset. An edit that overlaps an earlier one
/// (shares at least one byte with it), or whose range is inverted or reaches past the end
/// of the source, is silently ignored rather than panicking; callers build edits from spans
/// of one parse, so this only guards against misuse. Empty ranges are insertions; at a
/// given offset they are applied before a replacement starting there.
#[derive(Debug, Clone, Default)]
pub struct Splice {
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl Splice {
    /// An empty set of edits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues replacing the bytes in `span` with `with`.
    pub fn replace(&mut self, span: Range<usize>, with: impl Into<Vec<u8>>) {
        self.edits.push((span, with.into()));
    }

    /// Whether no edit has been queued.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Produces `src` with all queued edits applied (invalid ones skipped, see the type doc).
    pub fn apply(mut self, src: &[u8]) -> Vec<u8> {
        // Stable sort on (start, end) so insertions precede a replacement at the same offset
        // and equal edits keep their queueing order.
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let growth: usize = self.edits.iter().map(|(_, w)| w.len()).sum();
        let mut out = Vec::with_capacity(src.len() + growth);
        let mut cursor = 0;
        for (r, with) in self.edits {
            if r.start < cursor || r.start > r.end || r.end > src.len() {
                continue;
            }
            out.extend_from_slice(&src[cursor..r.start]);
            out.extend_from_slice(&with);
            cursor = r.end;
        }
        out.extend_from_slice(&src[cursor..]);
        out
    }
}

/// Applies `splice` when it holds edits; `None` (meaning "forward the original") otherwise.
fn finish(src: &[u8], splice: Splice) -> Option<Vec<u8>> {
    if splice.is_empty() {
        None
    } else {
        Some(splice.apply(src))
    }
}

/// Calls `f` on `node` and every value nested in it, parents before children.
fn walk<'n>(node: &'n Node, f: &mut impl FnMut(&'n Node)) {
    f(node);
    match node {
        Node::Array { items, .. } => items.iter().for_each(|n| walk(n, f)),
        Node::Object { members, .. } => members.iter().for_each(|m| walk(&m.value, f)),
        _ => {}
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
    translate_bot_infos(src, |id, name, server, status| {
        seen(id, name, server, status);
        None
    });
}

/// [`visit_bot_infos`] and [`rewrite_bot_ids`] in one parse (the proxy path): `map(id, name,
/// server, status)` sees every BotInfo with an integer Id and Status, and a returned id replaces
/// the Id token as in [`rewrite_bot_ids`]. Returns None when nothing changed.
pub fn translate_bot_infos(
    src: &[u8],
    mut map: impl FnMut(i64, Option<&str>, Option<&str>, i64) -> Option<i64>,
) -> Option<Vec<u8>> {
    let root = parse(src).ok()?;
    let mut splice = Splice::new();
    walk(&root, &mut |n| {
        if !is_bot_info(n) {
            return;
        }
        let field = |k: &str| n.get(k);
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
    use proptest::prelude::*;
    use serde_json::Value;

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    fn text(src: &str, n: &Node) -> String {
        src[n.span()].to_string()
    }

    #[test]
    fn translate_sees_fields_and_maps_ids_in_one_pass() {
        let src = br#"[{"Id":3,"Name":null,"Server":"a","Status":2},50.0,{"Status":1,"Server":null,"Name":"t","Id":7}]"#;
        let mut seen = Vec::new();
        let out = translate_bot_infos(src, |id, name, server, status| {
            seen.push((
                id,
                name.map(str::to_string),
                server.map(str::to_string),
                status,
            ));
            Some(id * 10)
        })
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
        assert!(translate_bot_infos(src, |_, _, _, _| None).is_none());
    }

    // ---------- parse / spans ----------

    #[test]
    fn parses_scalars_with_spans() {
        let src = "  [null, true,false , -0, 1e3, \"a\\\"b\", 50.0 ]  ";
        let root = parse(src.as_bytes()).unwrap();
        let Node::Array { span, items } = &root else {
            panic!()
        };
        assert_eq!(
            &src[span.clone()],
            "[null, true,false , -0, 1e3, \"a\\\"b\", 50.0 ]"
        );
        let texts: Vec<_> = items.iter().map(|n| text(src, n)).collect();
        assert_eq!(
            texts,
            ["null", "true", "false", "-0", "1e3", "\"a\\\"b\"", "50.0"]
        );
        assert!(matches!(items[0], Node::Null(_)));
        assert!(matches!(items[1], Node::Bool(_)));
        assert!(matches!(items[3], Node::Number(_)));
        assert!(matches!(items[5], Node::String(_)));
    }

    #[test]
    fn object_members_and_get() {
        let src = r#"{ "\u0049d" : 5, "Id": 6, "x":{"y":[1]} }"#;
        let root = parse(src.as_bytes()).unwrap();
        let Node::Object { members, .. } = &root else {
            panic!()
        };
        assert_eq!(members[0].key, "Id");
        assert_eq!(&src[members[0].key_span.clone()], r#""\u0049d""#);
        // First member wins.
        assert_eq!(int_value(src.as_bytes(), root.get("Id").unwrap()), Some(5));
        let y = root.get("x").unwrap().get("y").unwrap();
        assert_eq!(text(src, y), "[1]");
        assert!(root.get("missing").is_none());
        assert!(y.get("y").is_none());
    }

    #[test]
    fn string_escapes_and_surrogates() {
        let src = r#"["a\"\\\/\b\f\n\r\t", "\u00e9\u20AC", "\ud83d\ude00", "é😀", "\ud800", "\udc00x", "\ud800\u0041"]"#;
        let b = src.as_bytes();
        let Node::Array { items, .. } = parse(b).unwrap() else {
            panic!()
        };
        let vals: Vec<_> = items.iter().map(|n| string_value(b, n)).collect();
        assert_eq!(vals[0].as_deref(), Some("a\"\\/\u{8}\u{c}\n\r\t"));
        assert_eq!(vals[1].as_deref(), Some("é€"));
        assert_eq!(vals[2].as_deref(), Some("😀"));
        assert_eq!(vals[3].as_deref(), Some("é😀"));
        // Lone or broken surrogates parse (RFC grammar) but do not decode.
        assert_eq!(vals[4], None);
        assert_eq!(vals[5], None);
        assert_eq!(vals[6], None);
        // Lossy key decoding for a lone surrogate key.
        let Node::Object { members, .. } = parse(br#"{"\ud800":1}"#).unwrap() else {
            panic!()
        };
        assert_eq!(members[0].key, "\u{FFFD}");
        assert_eq!(string_value(b, &Node::Null(0..4)), None);
        assert_eq!(string_value(b"\"a\"", &Node::String(0..10)), None);
    }

    #[test]
    fn rejects_invalid() {
        let bad: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"   ", 3),
            (b"[1] x", 4),
            (b"{} {}", 3),
            (b"[1,]", 3),
            (b"[1 2]", 3),
            (b"{\"a\" 1}", 5),
            (b"{\"a\":1,}", 7),
            (b"{1:2}", 1),
            (b"01", 1),
            (b"-", 1),
            (b"1.", 2),
            (b"1e", 2),
            (b"+1", 0),
            (b".5", 0),
            (b"tru", 0),
            (b"nul", 0),
            (b"\"abc", 4),
            (b"\"a\\x\"", 3),
            (b"\"\\u12g4\"", 5),
            (b"\"a\nb\"", 2),
            (b"\xef\xbb\xbf{}", 0),
            (b"\"\xff\"", 1),
            (b"[", 1),
            (b"{", 1),
            (b"NaN", 0),
        ];
        for (input, offset) in bad {
            let e = parse(input).expect_err(&String::from_utf8_lossy(input));
            assert_eq!(
                e.offset,
                *offset,
                "{:?}: {}",
                String::from_utf8_lossy(input),
                e
            );
        }
        assert_eq!(parse(b"").unwrap_err().message, "unexpected end of input");
        assert_eq!(
            parse(b"[1] x").unwrap_err().message,
            "trailing characters after JSON value"
        );
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = parse(deep.as_bytes()).unwrap_err();
        assert_eq!(e.message, "nesting too deep");
        assert_eq!(e.offset, MAX_DEPTH);
        // Far deeper, unbalanced, mixed: an error, not a stack overflow.
        let hostile = "{\"a\":[".repeat(100_000);
        assert_eq!(
            parse(hostile.as_bytes()).unwrap_err().message,
            "nesting too deep"
        );
    }

    #[test]
    fn numbers_and_int_value() {
        let src = "[0, -1, 9223372036854775807, -9223372036854775808, 9223372036854775808, \
                   123456789012345678901234567890, -0, 1e3, 1.0, 1E+2, -5e-1]";
        let b = src.as_bytes();
        let Node::Array { items, .. } = parse(b).unwrap() else {
            panic!()
        };
        let ints: Vec<_> = items.iter().map(|n| int_value(b, n)).collect();
        assert_eq!(
            ints,
            [
                Some(0),
                Some(-1),
                Some(i64::MAX),
                Some(i64::MIN),
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert_eq!(text(src, &items[5]), "123456789012345678901234567890");
        assert_eq!(int_value(b, &Node::String(0..1)), None);
        assert_eq!(int_value(b"1", &Node::Number(0..5)), None);
    }

    // ---------- splice ----------

    #[test]
    fn splice_sorts_and_ignores_bad_edits() {
        let src = b"0123456789";
        let mut sp = Splice::new();
        assert!(sp.is_empty());
        sp.replace(6..8, "X");
        sp.replace(1..3, "ab");
        sp.replace(2..4, "overlap");
        sp.replace(8..20, "out of range");
        #[allow(clippy::reversed_empty_ranges)]
        sp.replace(5..4, "inverted");
        sp.replace(0..0, "<");
        sp.replace(10..10, ">");
        assert!(!sp.is_empty());
        assert_eq!(s(&sp.apply(src)), "<0ab345X89>");
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

    // ---------- property tests ----------

    /// A generated JSON value that remembers member order and number spelling.
    #[derive(Debug, Clone)]
    enum J {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (-5i64..5).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("50.0".to_owned()),
            Just("-0".to_owned()),
            Just("1e3".to_owned()),
            Just("-2.5E-3".to_owned()),
            Just("123456789012345678901234567890".to_owned()),
            (-1.0e6f64..1.0e6).prop_map(|f| format!("{f:?}")),
        ]
    }

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z ]{0,6}",
            Just("Id".to_owned()),
            Just("key".to_owned()),
            any::<String>(),
            "[\"\\\\/\\x00-\\x1fé€😀]{0,4}",
        ]
    }

    fn bot_info() -> impl Strategy<Value = J> {
        let id = prop_oneof![
            (-50i64..5000).prop_map(|n| J::Num(n.to_string())),
            Just(J::Null),
            number().prop_map(J::Num),
            Just(J::Str("1".to_owned())),
        ];
        let name = prop_oneof![string().prop_map(J::Str), Just(J::Null)];
        let server = prop_oneof![string().prop_map(J::Str), Just(J::Null)];
        let status = (0i64..3).prop_map(|n| J::Num(n.to_string()));
        // Any key order: TS3AudioBot's is fixed, but `is_bot_info` must not depend on it.
        (id, name, server, status)
            .prop_flat_map(|(i, n, sv, st)| {
                Just(vec![
                    ("Id".to_owned(), i),
                    ("Name".to_owned(), n),
                    ("Server".to_owned(), sv),
                    ("Status".to_owned(), st),
                ])
                .prop_shuffle()
            })
            .prop_map(J::Obj)
    }

    fn json() -> impl Strategy<Value = J> {
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            number().prop_map(J::Num),
            string().prop_map(J::Str),
            bot_info(),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
                prop::collection::vec((string(), inner), 0..6).prop_map(|mut m| {
                    // Unique keys: serde_json keeps the last duplicate, we the first.
                    let mut seen = std::collections::HashSet::new();
                    m.retain(|(k, _)| seen.insert(k.clone()));
                    J::Obj(m)
                }),
            ]
        })
    }

    /// Serializes with whitespace and escape choices drawn cyclically from `style`.
    struct Writer<'a> {
        out: String,
        style: &'a [u8],
        at: usize,
    }

    impl Writer<'_> {
        fn pick(&mut self) -> u8 {
            let v = self
                .style
                .get(self.at % self.style.len().max(1))
                .copied()
                .unwrap_or(0);
            self.at += 1;
            v
        }

        fn ws(&mut self) {
            let w = ["", "", " ", "\n", "\t", "\r\n  ", "  "][usize::from(self.pick()) % 7];
            self.out.push_str(w);
        }

        fn string(&mut self, v: &str) {
            self.out.push('"');
            for c in v.chars() {
                let escape = self.pick().is_multiple_of(4);
                match c {
                    '"' => self.out.push_str("\\\""),
                    '\\' => self.out.push_str("\\\\"),
                    '\n' if !escape => self.out.push_str("\\n"),
                    c if (c as u32) < 0x20 || escape => {
                        let mut buf = [0u16; 2];
                        for unit in c.encode_utf16(&mut buf) {
                            self.out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    '/' if self.pick().is_multiple_of(2) => self.out.push_str("\\/"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }

        fn value(&mut self, j: &J) {
            match j {
                J::Null => self.out.push_str("null"),
                J::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
                J::Num(n) => self.out.push_str(n),
                J::Str(v) => self.string(v),
                J::Arr(items) => {
                    self.out.push('[');
                    for (i, it) in items.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                        }
                        self.ws();
                        self.value(it);
                        self.ws();
                    }
                    if items.is_empty() {
                        self.ws();
                    }
                    self.out.push(']');
                }
                J::Obj(members) => {
                    self.out.push('{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                        }
                        self.ws();
                        self.string(k);
                        self.ws();
                        self.out.push(':');
                        self.ws();
                        self.value(v);
                        self.ws();
                    }
                    if members.is_empty() {
                        self.ws();
                    }
                    self.out.push('}');
                }
            }
        }
    }

    fn render(j: &J, style: &[u8]) -> String {
        let mut w = Writer {
            out: String::new(),
            style,
            at: 0,
        };
        w.ws();
        w.value(j);
        w.ws();
        w.out
    }

    fn doc() -> impl Strategy<Value = String> {
        (json(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(j, style)| render(&j, &style))
    }

    fn array_doc() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(json(), 0..6),
            prop::collection::vec(any::<u8>(), 1..32),
        )
            .prop_map(|(items, style)| render(&J::Arr(items), &style))
    }

    /// Checks every node's span against the serde_json value at the same place.
    fn check_spans(src: &[u8], node: &Node, expect: &Value) {
        let reparsed: Value = serde_json::from_slice(&src[node.span()]).unwrap();
        assert_eq!(&reparsed, expect);
        match (node, expect) {
            (Node::Array { items, .. }, Value::Array(vals)) => {
                assert_eq!(items.len(), vals.len());
                for (n, v) in items.iter().zip(vals) {
                    check_spans(src, n, v);
                }
            }
            (Node::Object { members, .. }, Value::Object(map)) => {
                assert_eq!(members.len(), map.len());
                for m in members {
                    let key: Value = serde_json::from_slice(&src[m.key_span.clone()]).unwrap();
                    assert_eq!(key.as_str(), Some(m.key.as_str()));
                    check_spans(src, &m.value, &map[&m.key]);
                }
            }
            (Node::String(_), Value::String(v)) => {
                assert_eq!(string_value(src, node).as_deref(), Some(v.as_str()));
            }
            (Node::Number(_), Value::Number(n)) => assert_eq!(int_value(src, node), n.as_i64()),
            (Node::Null(_), Value::Null) | (Node::Bool(_), Value::Bool(_)) => {}
            (n, v) => panic!("kind mismatch {n:?} vs {v}"),
        }
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
        fn prop_spans_reparse(src in doc()) {
            let b = src.as_bytes();
            let node = parse(b).unwrap_or_else(|e| panic!("{e}: {src}"));
            let expect: Value = serde_json::from_slice(b).unwrap();
            check_spans(b, &node, &expect);
        }

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

        #[test]
        fn prop_parse_agrees_with_serde_on_jsonish(
            bytes in prop::collection::vec(prop::sample::select(b"[]{}\",:0123-.eE+ \\unlx/a".to_vec()), 0..40)
        ) {
            // On near-JSON noise, acceptance must match serde_json (modulo its lower depth
            // limit, unreachable at this length).
            let ours = parse(&bytes).is_ok();
            let theirs = serde_json::from_slice::<Value>(&bytes);
            // serde_json rejects exponents beyond f64; the grammar (and we) accept them.
            prop_assume!(!matches!(&theirs, Err(e) if e.to_string().contains("out of range")));
            let theirs = theirs.is_ok();
            prop_assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&bytes));
        }
    }
}
