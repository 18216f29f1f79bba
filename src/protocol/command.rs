//! TS3AudioBot's API command syntax: parser, syntax tree and byte-exact rewriter.
//!
//! Owns: turning the raw text after `/api` into a tree that remembers, for every token, the exact
//! byte range it came from, and splicing replacements (bot id tokens) back into those bytes.
//! Does not own: what a command *means* (that is `routing`) or which ids map where (`cluster`).
//!
//! The grammar is TS3AudioBot's own `CommandParser` with command char `/` and delimiter `/`
//! (spec section 1): runs of `/` separate arguments, `(/` opens a nested command and `)` closes
//! it (a missing `)` is closed by the end of input, a `)` at the outermost level ends parsing),
//! an argument that *starts* with `"` or `'` is quoted (backslash escapes; an unclosed quote runs
//! to the end), and a lone `(` is ordinary text. Values are percent-decoded only after parsing,
//! with .NET `Uri.UnescapeDataString` rules, so `%2F`, `%28` and `%29` never act as syntax.
//!
//! All syntax characters are ASCII, so the parser works on bytes; multi-byte UTF-8 (or even
//! invalid UTF-8) inside arguments is carried through untouched.

use std::ops::Range;

/// The command character and the argument delimiter of the Web API (both `/`).
const SLASH: u8 = b'/';

/// A parsed request: either a command tree or, when the text does not start with `/`, a plain
/// value that TS3AudioBot echoes back as `{"Value": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The text is not a command (for example `/api` alone gives the empty text).
    Plain(String),
    /// The root command.
    Command(Command),
    /// Commands nested deeper than [`MAX_DEPTH`]: refused before anything recurses over it
    /// (TS3AudioBot's own complexity limit refuses such requests anyway).
    TooDeep,
}

/// Deepest nesting of `(/...)` the parser follows.
pub const MAX_DEPTH: usize = 128;

/// One command invocation: a list of arguments, the first ones naming the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Bytes of the whole command: for a nested command from its `(` to its `)` (or the end of
    /// input when unclosed); for the root command from the start of the text.
    pub span: Range<usize>,
    /// Bytes between `(` and `)` of a nested command (the sub-command text, starting with
    /// `/`); equal to `span` for the root command.
    pub inner: Range<usize>,
    /// Whether a `)` closed this command (for the root: a stray `)` ended the parse).
    pub closed: bool,
    /// The arguments in order.
    pub args: Vec<Arg>,
}

/// One argument of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A free or quoted string.
    Value(Value),
    /// A nested `(/...)` command.
    Command(Command),
}

/// A string argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Bytes of the token as sent, quotes included.
    pub span: Range<usize>,
    /// Whether the token was quoted.
    pub quoted: bool,
    /// The value after quote processing and percent-decoding, i.e. what the node sees.
    pub text: Text,
}

/// Bytes of decoded text a [`Text`] holds without a heap allocation: every command word and
/// id of a routed request fits (the request path parses each of them on every request).
const INLINE: usize = 22;

/// An argument's decoded text. Short texts live inline; longer ones (addresses, passwords,
/// setting values) in a `String`.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(String),
}

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled from a whole `&str` (`from_str`), so the bytes are UTF-8.
            Repr::Inline { len, buf } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    fn from_str(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline {
                len: s.len() as u8,
                buf,
            })
        } else {
            Text(Repr::Heap(s.to_string()))
        }
    }

    fn from_string(s: String) -> Text {
        if s.len() <= INLINE {
            Text::from_str(&s)
        } else {
            Text(Repr::Heap(s))
        }
    }

    /// [`unescape`] without a `String` for short texts that need no decoding.
    fn unescaped(raw: &[u8]) -> Text {
        match std::str::from_utf8(raw) {
            Ok(s) if !raw.contains(&b'%') => Text::from_str(s),
            _ => Text::from_string(unescape(raw)),
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, o: &Text) -> bool {
        self.as_str() == o.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, o: &Text) -> bool {
        *self == o.as_str()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Command {
    /// The argument at `i` as a value, if it is one.
    pub fn value(&self, i: usize) -> Option<&Value> {
        match self.args.get(i) {
            Some(Arg::Value(v)) => Some(v),
            _ => None,
        }
    }

    /// The argument at `i` as a nested command, if it is one.
    pub fn nested(&self, i: usize) -> Option<&Command> {
        match self.args.get(i) {
            Some(Arg::Command(c)) => Some(c),
            _ => None,
        }
    }

    /// The decoded text of the argument at `i`, if it is a value.
    pub fn word(&self, i: usize) -> Option<&str> {
        self.value(i).map(|v| v.text.as_str())
    }

    /// Visits this command and every command nested in it, depth first, parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Command)) {
        f(self);
        for arg in &self.args {
            if let Arg::Command(c) = arg {
                c.walk(f);
            }
        }
    }
}

/// Parses the raw (still percent-encoded) command text that follows `/api` in a request
/// target, exactly as TS3AudioBot does. Never fails: every input has a meaning to the node.
pub fn parse(text: &[u8]) -> Parsed {
    let trimmed = text
        .iter()
        .position(|b| !is_dotnet_space(*b))
        .map(|i| &text[i..]);
    if trimmed.is_none_or(|t| t[0] != SLASH) {
        return Parsed::Plain(unescape(text));
    }
    let mut p = Parser {
        s: text,
        i: 0,
        too_deep: false,
    };
    let root = p.command(0, 0);
    if p.too_deep {
        return Parsed::TooDeep;
    }
    Parsed::Command(root)
}

/// The byte splicer the rewriter uses; it lives in [`crate::protocol::splice`], shared with the
/// JSON edits, and stays reachable here for callers that rewrite command text.
pub use crate::protocol::splice::splice;

/// The whitespace .NET's `TrimStart` removes, restricted to the ASCII range (a request target
/// cannot carry the Unicode ones unencoded).
fn is_dotnet_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t'..=b'\r')
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    too_deep: bool,
}

/// What ended a nested command's argument list.
enum Close {
    /// A `)` closed it; `parse_args` consumed it.
    Paren,
    /// End of input, or an outer-level `)` ended the whole parse.
    End,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_next(&self) -> Option<u8> {
        self.s.get(self.i + 1).copied()
    }

    /// Parses one command starting at the current position (which is at its `/`, or anywhere
    /// for the root). `span_start` is where the command's span begins (its `(`), `depth` the
    /// nesting level (0 = root).
    fn command(&mut self, span_start: usize, depth: usize) -> Command {
        let inner_start = self.i;
        if depth > MAX_DEPTH {
            // Stop here: nothing deeper is built, so nothing recurses deeper later.
            self.too_deep = true;
            self.i = self.s.len();
            return Command {
                span: span_start..self.i,
                inner: inner_start..self.i,
                closed: false,
                args: Vec::new(),
            };
        }
        // TS3AudioBot consumes one command char if present; runs of `/` are then skipped as
        // delimiters, so this changes nothing observable but keeps spans tidy.
        if self.peek() == Some(SLASH) {
            self.i += 1;
        }
        let mut args = Vec::new();
        let close = self.parse_args(&mut args, depth);
        let (inner_end, closed) = match close {
            Close::Paren => (self.i - 1, true),
            Close::End => (self.i, false),
        };
        Command {
            span: span_start..self.i,
            inner: inner_start..inner_end,
            closed,
            args,
        }
    }

    fn parse_args(&mut self, args: &mut Vec<Arg>, depth: usize) -> Close {
        loop {
            while self.peek() == Some(SLASH) {
                self.i += 1;
            }
            let Some(c) = self.peek() else {
                return Close::End;
            };
            match c {
                b'"' | b'\'' => args.push(Arg::Value(self.quoted(c))),
                b'(' if self.peek_next() == Some(SLASH) => {
                    let open = self.i;
                    self.i += 1;
                    let nested = self.command(open, depth + 1);
                    let ended_everything = !nested.closed;
                    args.push(Arg::Command(nested));
                    if ended_everything {
                        return Close::End;
                    }
                }
                b')' => {
                    // A `)` closes the current command. At the outermost level it ends parsing
                    // and the rest is ignored; the root's span stops here, so callers can see
                    // what was ignored (and the root counts as "closed").
                    self.i += 1;
                    return Close::Paren;
                }
                _ => args.push(Arg::Value(self.free())),
            }
        }
    }

    fn free(&mut self) -> Value {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == SLASH || c == b')' || (c == b'(' && self.peek_next() == Some(SLASH)) {
                break;
            }
            self.i += 1;
        }
        Value {
            span: start..self.i,
            quoted: false,
            text: Text::unescaped(&self.s[start..self.i]),
        }
    }

    /// A quoted string as TS3AudioBot reads it: a backslash is kept in the value unless it
    /// escapes the quote character, and an unclosed quote runs to the end of input.
    fn quoted(&mut self, quote: u8) -> Value {
        let start = self.i;
        self.i += 1;
        let mut value = Vec::new();
        let mut escaped = false;
        while let Some(c) = self.peek() {
            if c == b'\\' {
                escaped = true;
            } else if c == quote {
                if !escaped {
                    self.i += 1;
                    break;
                }
                value.pop();
                escaped = false;
            } else {
                escaped = false;
            }
            value.push(c);
            self.i += 1;
        }
        Value {
            span: start..self.i,
            quoted: true,
            text: Text::unescaped(&value),
        }
    }
}

/// The inverse of [`unescape`]: percent-encodes one argument for a TS3AudioBot path (which
/// decodes after splitting), so `/`, `(`, `)`, spaces and quotes in values stay inside their
/// argument. Used for the requests the router writes itself.
/// A request target as logs may show it: the path up to the command's first argument, at
/// most three plain words after `/api` (`/api/bot/connect/to/…`, `/api/bot/use/…`), never an
/// argument. Arguments carry server passwords, identity keys and setting values, and Pingora
/// puts this summary into its own warnings and errors.
pub fn log_summary(target: &[u8]) -> String {
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let mut out = String::new();
    let mut words = 0;
    let mut rest = false;
    for (i, seg) in path.split(|b| *b == b'/').enumerate() {
        if i == 0 && seg.is_empty() {
            continue;
        }
        let plain = !seg.is_empty() && seg.iter().all(|b| b.is_ascii_lowercase() || *b == b'_');
        let limit = if out.is_empty() { 1 } else { 3 };
        if !plain || (out != "/api" && words >= limit) || (out.is_empty() && seg != b"api") {
            rest = true;
            break;
        }
        out.push('/');
        out.push_str(std::str::from_utf8(seg).unwrap_or_default());
        if out != "/api" {
            words += 1;
        }
    }
    if rest {
        out.push_str("/…");
    }
    out
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// .NET `Uri.UnescapeDataString`: valid `%XX` escapes are decoded, runs of decoded bytes are
/// read as UTF-8, and escapes that do not form valid UTF-8 stay as written. `+` is not a space.
pub fn unescape(raw: &[u8]) -> String {
    if !raw.contains(&b'%') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        // Collect a run of consecutive valid escapes.
        let run_start = i;
        let mut bytes = Vec::new();
        while raw.get(i) == Some(&b'%') {
            match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                (Some(h), Some(l)) => {
                    bytes.push(h << 4 | l);
                    i += 3;
                }
                _ => break,
            }
        }
        if bytes.is_empty() {
            // Not an escape: copy the next UTF-8 character (or byte) as is.
            let len = utf8_len(raw[i]).min(raw.len() - i);
            out.push_str(&String::from_utf8_lossy(&raw[i..i + len]));
            i += len;
            continue;
        }
        decode_escaped_run(&bytes, &raw[run_start..i], &mut out);
    }
    out
}

/// Appends a run of percent-decoded bytes: valid UTF-8 sequences are decoded, every byte of an
/// invalid sequence is written back as its original three-character escape.
fn decode_escaped_run(bytes: &[u8], escapes: &[u8], out: &mut String) {
    let mut rest = bytes;
    let mut pos = 0; // index into `bytes`, for finding the escape text
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return;
            }
            Err(e) => {
                let good = e.valid_up_to();
                // valid_up_to guarantees this prefix is valid UTF-8.
                out.push_str(&String::from_utf8_lossy(&rest[..good]));
                let bad = e.error_len().unwrap_or(rest.len() - good);
                for k in 0..bad {
                    let at = (pos + good + k) * 3;
                    out.push_str(&String::from_utf8_lossy(&escapes[at..at + 3]));
                }
                pos += good + bad;
                rest = &rest[good + bad..];
            }
        }
    }
}

fn hex(b: Option<&u8>) -> Option<u8> {
    match b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Parses an id the way .NET converts a string to `Int32` (`NumberStyles.Integer`): optional
/// surrounding whitespace, an optional sign, ASCII digits. `Err(true)` means "too big",
/// `Err(false)` means "not a number" (the node answers those with different messages).
pub fn parse_int32(text: &str) -> Result<i32, bool> {
    // .NET also ends the number at trailing NUL characters.
    let t = text
        .trim_end_matches('\0')
        .trim_matches(|c: char| c == ' ' || ('\t'..='\r').contains(&c));
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(false);
    }
    let mut v: i64 = 0;
    for b in digits.bytes() {
        v = v * 10 + i64::from(b - b'0');
        if v > i64::from(i32::MAX) + 1 {
            return Err(true);
        }
    }
    let v = if neg { -v } else { v };
    i32::try_from(v).map_err(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_short_and_long_read_as_what_the_node_sees() {
        let long = "x".repeat(INLINE + 1);
        for (raw, want) in [
            ("", ""),
            ("use", "use"),
            ("a%2Fb", "a/b"),
            ("%C3%A9t%C3%A9", "été"),
            ("%FF", "%FF"),
            ("ü", "ü"),
            (&"y".repeat(INLINE)[..], &"y".repeat(INLINE)[..]),
            (&long[..], &long[..]),
        ] {
            let t = Text::unescaped(raw.as_bytes());
            assert_eq!(t.as_str(), want, "{raw}");
            assert_eq!(t.as_str(), unescape(raw.as_bytes()), "{raw}");
            assert_eq!(t, want, "{raw}");
            assert_eq!(want, t, "{raw}");
            assert_eq!(t.to_string(), want);
            assert_eq!(format!("{t:?}"), format!("{want:?}"));
            assert_eq!(
                serde_json::to_string(&t).expect("json"),
                serde_json::to_string(want).expect("json")
            );
            assert_eq!(t.clone(), t);
        }
        // Short texts are inline, long ones on the heap: both compare by their text.
        assert!(matches!(Text::unescaped(b"bot").0, Repr::Inline { .. }));
        assert!(matches!(Text::unescaped(long.as_bytes()).0, Repr::Heap(_)));
        assert_ne!(Text::unescaped(b"bot"), Text::unescaped(b"bat"));
        // Invalid UTF-8 without escapes is read as .NET does (replacement characters).
        assert_eq!(Text::unescaped(b"a\xffb").as_str(), "a\u{fffd}b");
    }

    #[test]
    fn log_summaries_never_hold_an_argument() {
        let cases: [(&str, &str); 8] = [
            (
                "/api/bot/connect/to/localhost/hunter",
                "/api/bot/connect/to/…",
            ),
            ("/api/bot/use/7/(/bot/info)", "/api/bot/use/…"),
            (
                "/api/settings/bot/set/music/connect.identity.key/K",
                "/api/settings/bot/set/…",
            ),
            (
                "/api/settings/set/connect.server_password.pw/pw",
                "/api/settings/set/…",
            ),
            ("/api/json/merge/(/version)", "/api/json/merge/…"),
            ("/api/bot/list", "/api/bot/list"),
            ("/api/version?x=secret", "/api/version"),
            ("/other/secret", "/…"),
        ];
        for (target, want) in cases {
            assert_eq!(log_summary(target.as_bytes()), want, "{target}");
        }
        assert_eq!(log_summary(b"/api"), "/api");
        assert_eq!(log_summary(b""), "");
    }

    #[test]
    fn escape_encodes_every_separator() {
        assert_eq!(escape("a/b(c) d\"e%"), "a%2Fb%28c%29%20d%22e%25");
        assert_eq!(escape("ts.example.com:9987"), "ts.example.com%3A9987");
        assert_eq!(escape("Zm9v+/=="), "Zm9v%2B%2F%3D%3D");
        assert_eq!(escape("ünï"), "%C3%BCn%C3%AF");
        for s in ["a/b(c) d\"e%", "ünï", "Zm9v+/=="] {
            assert_eq!(unescape(escape(s).as_bytes()), s);
        }
    }

    use proptest::prelude::*;

    fn cmd(s: &str) -> Command {
        match parse(s.as_bytes()) {
            Parsed::Command(c) => c,
            other => panic!("not a command: {other:?}"),
        }
    }

    fn words(c: &Command) -> Vec<String> {
        c.args
            .iter()
            .map(|a| match a {
                Arg::Value(v) => v.text.to_string(),
                Arg::Command(c) => format!("({})", words(c).join(" ")),
            })
            .collect()
    }

    #[test]
    fn simple_and_nested() {
        let c = cmd("/bot/use/0/(/play/URL)");
        assert_eq!(words(&c), ["bot", "use", "0", "(play URL)"]);
        let n = c.nested(3).expect("nested");
        assert!(n.closed);
        assert_eq!(n.span, 11..22);
        assert_eq!(n.inner, 12..21);
    }

    #[test]
    fn deep_nesting_and_merge() {
        let c = cmd("/bot/use/0/(/json/merge/(/song)/(/volume))");
        assert_eq!(
            words(&c),
            ["bot", "use", "0", "(json merge (song) (volume))"]
        );
    }

    #[test]
    fn unclosed_parenthesis_is_closed_by_end_of_input() {
        let c = cmd("/bot/use/0/(/bot/list");
        assert_eq!(words(&c), ["bot", "use", "0", "(bot list)"]);
        let n = c.nested(3).expect("nested");
        assert!(!n.closed);
        assert_eq!(&"/bot/use/0/(/bot/list"[n.inner.clone()], "/bot/list");
    }

    #[test]
    fn runs_of_slashes_and_trailing_slash() {
        assert_eq!(words(&cmd("//bot//info/")), ["bot", "info"]);
        assert_eq!(
            words(&cmd("/bot/use/0/(/volume//5")),
            ["bot", "use", "0", "(volume 5)"]
        );
    }

    #[test]
    fn outer_paren_ends_parsing() {
        let c = cmd("/bot/list)/ignored/(/x)");
        assert_eq!(words(&c), ["bot", "list"]);
        assert_eq!(c.span, 0..10);
        assert!(c.closed);
        assert!(!cmd("/bot/list").closed);
    }

    #[test]
    fn lone_parenthesis_is_text() {
        assert_eq!(words(&cmd("/print/a(b/(c")), ["print", "a(b", "(c"]);
        assert_eq!(words(&cmd("/print/(")), ["print", "("]);
    }

    #[test]
    fn percent_escapes_are_decoded_after_parsing() {
        let c = cmd("/bot/use/0/(/play/https%3A%2F%2Fyoutu.be%2Fxyz%28a%29)");
        assert_eq!(
            words(&c),
            ["bot", "use", "0", "(play https://youtu.be/xyz(a))"]
        );
        assert_eq!(words(&cmd("/b%6Ft/list")), ["bot", "list"]);
        assert_eq!(words(&cmd("/print/a+b%20c")), ["print", "a+b c"]);
    }

    #[test]
    fn invalid_escapes_stay_literal() {
        assert_eq!(unescape(b"%zz%4"), "%zz%4");
        assert_eq!(unescape(b"%C3%A9"), "\u{e9}");
        assert_eq!(unescape(b"%FF%41"), "%FFA");
        assert_eq!(unescape(b"%C3"), "%C3");
        assert_eq!(unescape(b"100%"), "100%");
    }

    #[test]
    fn quotes() {
        assert_eq!(words(&cmd("/print/'a/b)c'/d")), ["print", "a/b)c", "d"]);
        assert_eq!(words(&cmd("/print/\"x\\\"y\"")), ["print", "x\"y"]);
        // An unclosed quote swallows the rest, parentheses included.
        assert_eq!(words(&cmd("/print/'abc/(/x)")), ["print", "abc/(/x)"]);
        // A quote counts only as the first character of an argument.
        assert_eq!(words(&cmd("/print/it's")), ["print", "it's"]);
        // Backslashes that do not escape the quote stay in the value.
        assert_eq!(words(&cmd("/print/'a\\b'")), ["print", "a\\b"]);
        // Text right after a closing quote is a new argument.
        assert_eq!(words(&cmd("/print/'a'b")), ["print", "a", "b"]);
    }

    #[test]
    fn raw_double_quotes_as_sent_by_php_panels() {
        let c = cmd("/bot/use/3/(/play/\"https%3A%2F%2Fx.y%2Fz\")");
        assert_eq!(words(&c), ["bot", "use", "3", "(play https://x.y/z)"]);
    }

    #[test]
    fn plain_text_is_not_a_command() {
        assert_eq!(parse(b""), Parsed::Plain(String::new()));
        assert_eq!(parse(b"?x=1"), Parsed::Plain("?x=1".into()));
        assert!(matches!(parse(b"  /bot/list"), Parsed::Command(_)));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("/bot/use/0/{}", "(/".repeat(5000));
        assert_eq!(parse(deep.as_bytes()), Parsed::TooDeep);
        let ok = format!("/x/{}", "(/x/".repeat(MAX_DEPTH));
        assert!(matches!(parse(ok.as_bytes()), Parsed::Command(_)));
    }

    #[test]
    fn query_string_sticks_to_the_last_word() {
        assert_eq!(words(&cmd("/bot/list?x=1")), ["bot", "list?x=1"]);
    }

    #[test]
    fn int32_like_dotnet() {
        assert_eq!(parse_int32("7"), Ok(7));
        assert_eq!(parse_int32(" +7 "), Ok(7));
        assert_eq!(parse_int32("-0"), Ok(0));
        assert_eq!(parse_int32("007"), Ok(7));
        assert_eq!(parse_int32("2147483647"), Ok(i32::MAX));
        assert_eq!(parse_int32("-2147483648"), Ok(i32::MIN));
        assert_eq!(parse_int32("2147483648"), Err(true));
        assert_eq!(parse_int32("99999999999999999999"), Err(true));
        assert_eq!(parse_int32("x"), Err(false));
        assert_eq!(parse_int32(""), Err(false));
        assert_eq!(parse_int32("1.0"), Err(false));
        assert_eq!(parse_int32("1\0\0"), Ok(1));
    }

    /// Generates text from the characters that matter to the grammar.
    fn grammar_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("/"),
                Just("("),
                Just(")"),
                Just("'"),
                Just("\""),
                Just("\\"),
                Just("%28"),
                Just("%2"),
                Just("bot"),
                Just("use"),
                Just("0"),
                Just("é"),
                Just("a"),
            ],
            0..40,
        )
        .prop_map(|v| v.concat())
    }

    /// Collects every value span in the tree.
    fn spans(c: &Command, out: &mut Vec<Range<usize>>) {
        for a in &c.args {
            match a {
                Arg::Value(v) => out.push(v.span.clone()),
                Arg::Command(n) => spans(n, out),
            }
        }
    }

    proptest! {
        #[test]
        fn identity_rewrite_returns_input(text in grammar_text()) {
            if let Parsed::Command(c) = parse(text.as_bytes()) {
                let mut all = Vec::new();
                spans(&c, &mut all);
                // Rewriting every token with its own bytes is the identity map.
                let mut edits: Vec<_> = all
                    .iter()
                    .map(|r| (r.clone(), text.as_bytes()[r.clone()].to_vec()))
                    .collect();
                prop_assert_eq!(splice(text.as_bytes(), &mut edits), text.as_bytes());
            }
        }

        #[test]
        fn spans_are_ordered_and_in_bounds(text in grammar_text()) {
            if let Parsed::Command(c) = parse(text.as_bytes()) {
                let mut all = Vec::new();
                spans(&c, &mut all);
                let mut last = 0;
                for r in all {
                    prop_assert!(r.start >= last && r.end <= text.len() && r.start <= r.end);
                    last = r.end;
                }
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
