//! The TS3AudioBot command parser and the step that turns its tree into executable nodes.
//!
//! Owns: splitting a raw command text (the request target minus `/api`, or a chat-syntax
//! string given to `eval`) into commands, free strings and quoted strings exactly the way
//! `CommandParser.ParseCommandRequest` does (runs of the delimiter skipped, `(` + command char
//! opens a nested command, a missing `)` tolerated, a `)` at the outermost level ends parsing,
//! quotes only count as the first character of an argument), .NET `Uri.UnescapeDataString`
//! for API values, and the TailString marking of trailing plain words.
//! Does not own: looking commands up or running them (`exec`), or anything HTTP.
//!
//! It works on bytes: every structural character is ASCII, so byte positions and the .NET
//! char positions agree for everything that matters, and non-ASCII bytes pass through.

/// A parsed argument that is text.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// The value as the command sees it (unescaped for the API).
    pub value: String,
    /// What a TailString parameter would receive: for the API the unescape overwrites it
    /// with `value`; for chat syntax it is the rest of the line (or of the enclosing command).
    pub tail: String,
    /// Whether it was a quoted string (quoted strings never become TailStrings).
    pub quoted: bool,
}

/// A node ready for execution (what TS3AudioBot's `AstToCommandResult` produces).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A command: its words and arguments, run through the root command group.
    Root(Vec<Node>),
    /// A plain string result.
    Str(String),
    /// A trailing plain word: serialises as `{"Content":..,"Tail":..}`.
    Tail { content: String, tail: String },
}

/// Parser output before conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    Command(Vec<Ast>),
    Value(Text),
}

/// Which syntax is parsed: the API (`/` and `/`, values unescaped) or chat (`!` and space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Api,
    Chat,
}

impl Syntax {
    fn chars(self) -> (u8, u8) {
        match self {
            Syntax::Api => (b'/', b'/'),
            Syntax::Chat => (b'!', b' '),
        }
    }
}

/// One value while parsing: where it starts, how long it is, and how far its tail reaches.
struct PVal {
    start: usize,
    len: usize,
    tail_len: usize,
    quoted: Option<Vec<u8>>,
}

enum PItem {
    Cmd(usize),
    Val(PVal),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    ParseCommand,
    SelectParam,
    FreeString,
    QuotedString,
    End,
}

/// .NET `char.IsWhiteSpace` for the ASCII range (all a request target can hold here).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Parses a command text into an AST.
pub fn parse(req: &[u8], syntax: Syntax) -> Ast {
    let (cmd_char, delim) = syntax.chars();
    let first = req.iter().position(|&b| !is_ws(b));
    if first.is_none_or(|i| req[i] != cmd_char) {
        return Ast::Value(make_text(req, 0, req.len(), 0, None, syntax));
    }
    // Commands live in an arena; the stack holds indices of the ones still open.
    let mut arena: Vec<Vec<PItem>> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut state = State::ParseCommand;
    let mut i = 0usize;
    let n = req.len();
    let is_next = |i: usize, c: u8| i + 1 < n && req[i + 1] == c;
    while i < n {
        match state {
            State::ParseCommand => {
                if req[i] == cmd_char {
                    i += 1;
                }
                let idx = arena.len();
                arena.push(Vec::new());
                if let Some(&parent) = stack.last() {
                    arena[parent].push(PItem::Cmd(idx));
                }
                stack.push(idx);
                state = State::SelectParam;
            }
            State::SelectParam => {
                while i < n && req[i] == delim {
                    i += 1;
                }
                if i >= n {
                    state = State::End;
                    continue;
                }
                match req[i] {
                    b'"' | b'\'' => state = State::QuotedString,
                    b'(' => {
                        if is_next(i, cmd_char) {
                            i += 1;
                            state = State::ParseCommand;
                        } else {
                            state = State::FreeString;
                        }
                    }
                    b')' => {
                        match stack.pop() {
                            None => state = State::End,
                            Some(done) => {
                                // Closing a command fixes how far its values' tails reach.
                                for item in &mut arena[done] {
                                    if let PItem::Val(v) = item {
                                        v.tail_len = i - v.start;
                                    }
                                }
                                if stack.is_empty() {
                                    state = State::End;
                                }
                            }
                        }
                        i += 1;
                    }
                    _ => state = State::FreeString,
                }
            }
            State::FreeString => {
                let start = i;
                while i < n {
                    let c = req[i];
                    if (c == b'(' && is_next(i, cmd_char)) || c == b')' || c == delim {
                        break;
                    }
                    i += 1;
                }
                if let Some(&top) = stack.last() {
                    arena[top].push(PItem::Val(PVal {
                        start,
                        len: i - start,
                        tail_len: 0,
                        quoted: None,
                    }));
                }
                state = State::SelectParam;
            }
            State::QuotedString => {
                let quote = req[i];
                i += 1;
                let start = i;
                let mut out = Vec::new();
                let mut escaped = false;
                while i < n {
                    let c = req[i];
                    if c == b'\\' {
                        escaped = true;
                    } else if c == quote {
                        if !escaped {
                            i += 1;
                            break;
                        }
                        // An escaped quote replaces the backslash before it.
                        out.pop();
                        escaped = false;
                    } else {
                        escaped = false;
                    }
                    out.push(c);
                    i += 1;
                }
                if let Some(&top) = stack.last() {
                    arena[top].push(PItem::Val(PVal {
                        start,
                        len: i - start,
                        tail_len: 0,
                        quoted: Some(out),
                    }));
                }
                state = State::SelectParam;
            }
            State::End => break,
        }
    }
    if arena.is_empty() {
        // Only reachable for an input of a lone command char, which still is a command.
        return Ast::Command(Vec::new());
    }
    build(&mut arena, 0, req, syntax)
}

fn build(arena: &mut Vec<Vec<PItem>>, idx: usize, req: &[u8], syntax: Syntax) -> Ast {
    let items = std::mem::take(&mut arena[idx]);
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            PItem::Cmd(c) => out.push(build(arena, c, req, syntax)),
            PItem::Val(v) => out.push(Ast::Value(make_text(
                req, v.start, v.len, v.tail_len, v.quoted, syntax,
            ))),
        }
    }
    Ast::Command(out)
}

fn make_text(
    req: &[u8],
    start: usize,
    len: usize,
    tail_len: usize,
    quoted: Option<Vec<u8>>,
    syntax: Syntax,
) -> Text {
    let is_quoted = quoted.is_some();
    let raw: Vec<u8> = quoted.unwrap_or_else(|| req[start..start + len].to_vec());
    match syntax {
        Syntax::Api => {
            let value = unescape_data_string(&raw);
            Text {
                tail: value.clone(),
                value,
                quoted: is_quoted,
            }
        }
        Syntax::Chat => {
            let end = if tail_len == 0 {
                req.len()
            } else {
                (start + tail_len).min(req.len())
            };
            let tail = String::from_utf8_lossy(&req[start.min(end)..end]).into_owned();
            Text {
                value: String::from_utf8_lossy(&raw).into_owned(),
                tail,
                quoted: is_quoted,
            }
        }
    }
}

/// Converts an AST into executable nodes: trailing plain words (after the first) become
/// TailStrings, everything else keeps its shape.
pub fn to_node(ast: Ast) -> Node {
    match ast {
        Ast::Value(t) => Node::Str(t.value),
        Ast::Command(params) => {
            let tail_from = params
                .iter()
                .enumerate()
                .skip(1)
                .rev()
                .take_while(|(_, p)| matches!(p, Ast::Value(t) if !t.quoted))
                .last()
                .map_or(params.len(), |(i, _)| i);
            let nodes = params
                .into_iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Ast::Value(t) if i >= tail_from => Node::Tail {
                        content: t.value,
                        tail: t.tail,
                    },
                    other => to_node(other),
                })
                .collect();
            Node::Root(nodes)
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// .NET `Uri.UnescapeDataString`: every valid `%XX` is decoded, runs of escaped bytes are
/// decoded as UTF-8, escaped bytes that do not form valid UTF-8 stay as their `%XX` text, an
/// invalid or cut-off escape stays literal, and `+` stays `+`.
pub fn unescape_data_string(s: &[u8]) -> String {
    if !s.contains(&b'%') {
        return String::from_utf8_lossy(s).into_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut plain_start = 0;
    while i < s.len() {
        if s[i] != b'%' || escaped_byte(s, i).is_none() {
            i += 1;
            continue;
        }
        out.push_str(&String::from_utf8_lossy(&s[plain_start..i]));
        // Collect the run of consecutive escapes and decode it as one byte sequence.
        let run_start = i;
        let mut bytes = Vec::new();
        while let Some(b) = escaped_byte(s, i) {
            bytes.push(b);
            i += 3;
        }
        let mut pos = 0;
        for chunk in bytes.utf8_chunks() {
            out.push_str(chunk.valid());
            pos += chunk.valid().len();
            for _ in chunk.invalid() {
                let at = run_start + pos * 3;
                out.push_str(&String::from_utf8_lossy(&s[at..at + 3]));
                pos += 1;
            }
        }
        plain_start = i;
    }
    out.push_str(&String::from_utf8_lossy(&s[plain_start..]));
    out
}

fn escaped_byte(s: &[u8], i: usize) -> Option<u8> {
    if i + 2 < s.len() && s[i] == b'%' {
        Some(hex(s[i + 1])? << 4 | hex(s[i + 2])?)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(s: &str) -> Node {
        to_node(parse(s.as_bytes(), Syntax::Api))
    }
    fn st(s: &str) -> Node {
        Node::Str(s.into())
    }
    fn tl(s: &str) -> Node {
        Node::Tail {
            content: s.into(),
            tail: s.into(),
        }
    }

    #[test]
    fn plain_text_is_one_value() {
        assert_eq!(api(""), st(""));
        assert_eq!(api("?x=1"), st("?x=1"));
        assert_eq!(api("%2Fbot"), st("/bot"));
    }

    #[test]
    fn runs_of_slashes_and_trailing_slash() {
        assert_eq!(api("/bot/list"), Node::Root(vec![st("bot"), tl("list")]));
        assert_eq!(api("//bot//list/"), Node::Root(vec![st("bot"), tl("list")]));
        assert_eq!(api("/"), Node::Root(vec![]));
    }

    #[test]
    fn nested_commands_closed_and_unclosed() {
        let closed = api("/bot/use/0/(/play/x)");
        let unclosed = api("/bot/use/0/(/play/x");
        let want = Node::Root(vec![
            st("bot"),
            st("use"),
            st("0"),
            Node::Root(vec![st("play"), tl("x")]),
        ]);
        assert_eq!(closed, want);
        assert_eq!(unclosed, want);
        // Deeper nesting, all unclosed.
        assert_eq!(
            api("/a/(/b/(/c"),
            Node::Root(vec![
                st("a"),
                Node::Root(vec![st("b"), Node::Root(vec![st("c")])])
            ])
        );
    }

    #[test]
    fn outer_close_paren_ends_parsing() {
        assert_eq!(
            api("/bot/list)/ignored"),
            Node::Root(vec![st("bot"), tl("list")])
        );
        assert_eq!(
            api("/a/(/b)/c)/d"),
            Node::Root(vec![st("a"), Node::Root(vec![st("b")]), tl("c")])
        );
    }

    #[test]
    fn trailing_words_become_tail_strings() {
        assert_eq!(
            api("/bot/use/0/play/x"),
            Node::Root(vec![st("bot"), tl("use"), tl("0"), tl("play"), tl("x")])
        );
        // A word followed by a nested command stays a plain string.
        assert_eq!(
            api("/bot/use/0/play/(/song)"),
            Node::Root(vec![
                st("bot"),
                st("use"),
                st("0"),
                st("play"),
                Node::Root(vec![st("song")])
            ])
        );
    }

    #[test]
    fn lone_paren_is_ordinary_and_percent_28_is_text() {
        assert_eq!(api("/print/(a"), Node::Root(vec![st("print"), tl("(a")]));
        assert_eq!(
            api("/print/%28%2F"),
            Node::Root(vec![st("print"), tl("(/")])
        );
        assert_eq!(api("/print/a("), Node::Root(vec![st("print"), tl("a(")]));
    }

    #[test]
    fn quotes_only_at_the_start_and_unclosed_run_to_end() {
        assert_eq!(
            api("/print/'a/b)c'/d"),
            Node::Root(vec![st("print"), st("a/b)c"), tl("d")])
        );
        assert_eq!(
            api("/print/it's"),
            Node::Root(vec![st("print"), tl("it's")])
        );
        assert_eq!(
            api("/print/'a/b)/c"),
            Node::Root(vec![st("print"), st("a/b)/c")])
        );
        assert_eq!(api("/print/''"), Node::Root(vec![st("print"), st("")]));
        assert_eq!(
            api(r#"/print/"a\"b""#),
            Node::Root(vec![st("print"), st("a\"b")])
        );
    }

    #[test]
    fn unescape_follows_dotnet() {
        assert_eq!(unescape_data_string(b"a+b%20c"), "a+b c");
        assert_eq!(unescape_data_string(b"%C3%A4"), "ä");
        assert_eq!(unescape_data_string(b"%C3"), "%C3");
        assert_eq!(unescape_data_string(b"%zz%4"), "%zz%4");
        assert_eq!(unescape_data_string(b"%FF%41"), "%FFA");
        assert_eq!(unescape_data_string(b"100%"), "100%");
    }

    #[test]
    fn chat_syntax_tails_reach_the_end() {
        let n = to_node(parse(b"!bot name My Bot", Syntax::Chat));
        assert_eq!(
            n,
            Node::Root(vec![
                st("bot"),
                Node::Tail {
                    content: "name".into(),
                    tail: "name My Bot".into()
                },
                Node::Tail {
                    content: "My".into(),
                    tail: "My Bot".into()
                },
                Node::Tail {
                    content: "Bot".into(),
                    tail: "Bot".into()
                },
            ])
        );
    }
}
