//! Test-only generators of JSON documents for the scanner and edit property tests.
//!
//! Owns: random JSON values (BotInfo-shaped objects among them, so the edits find something to
//! edit) rendered with varied whitespace and escapes. Does not own: any check; the tests in
//! `json_scan` and `json_edit` do those.

use proptest::prelude::*;

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

pub fn doc() -> impl Strategy<Value = String> {
    (json(), prop::collection::vec(any::<u8>(), 1..32)).prop_map(|(j, style)| render(&j, &style))
}

pub fn array_doc() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(json(), 0..6),
        prop::collection::vec(any::<u8>(), 1..32),
    )
        .prop_map(|(items, style)| render(&J::Arr(items), &style))
}
