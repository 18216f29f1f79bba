//! A strict, span-keeping JSON scanner: RFC 8259 text → a tree of byte ranges.
//!
//! Owns: parsing a document into [`Node`]s that remember the exact bytes each value came from
//! ([`parse`]), reading scalar values out of those bytes ([`string_value`], [`int_value`]) and
//! visiting a tree ([`walk`]).
//! Does not own: what any document means or how it is edited (that is `json_edit`, which knows
//! TS3AudioBot's shapes), or replacing bytes (`splice`). It knows nothing of TS3AudioBot.
//!
//! Why spans instead of serde_json: answers must pass through byte-for-byte except for the
//! values the router translates. Re-encoding would change number spelling (`1e3` becomes
//! `1000.0`, huge integers lose digits), string escapes, key order and whitespace, all of which
//! clients can observe. So the scanner keeps spans and leaves the bytes alone.

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

/// Calls `f` on `node` and every value nested in it, parents before children.
pub fn walk<'n>(node: &'n Node, f: &mut impl FnMut(&'n Node)) {
    f(node);
    match node {
        Node::Array { items, .. } => items.iter().for_each(|n| walk(n, f)),
        Node::Object { members, .. } => members.iter().for_each(|m| walk(&m.value, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json_gen::doc;
    use proptest::prelude::*;
    use serde_json::Value;

    fn text(src: &str, n: &Node) -> String {
        src[n.span()].to_string()
    }

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
