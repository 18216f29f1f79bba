//! Command patterns such as `bot/use/<id>/(/data/song/cover/get)`, in TS3AudioBot's syntax.
//!
//! Owns: parsing a pattern and matching a parsed request against it. Does not own: which
//! patterns apply to whom (`config` reads them, `proxy::policy` applies them).

use crate::protocol::command::{self, parse_int32, Arg, Command, Parsed};

/// A command pattern anonymous callers may run. `<id>` matches any bot id, `*` any single
/// argument; everything else must match exactly (after percent-decoding).
#[derive(Debug, Clone)]
pub struct AllowPattern {
    root: Command,
}

impl AllowPattern {
    /// Parses a pattern such as `bot/use/<id>/(/data/song/cover/get)`.
    pub fn parse(pattern: &str) -> Result<AllowPattern, String> {
        let text = if pattern.starts_with('/') {
            pattern.to_string()
        } else {
            format!("/{pattern}")
        };
        let root = match command::parse(text.as_bytes()) {
            Parsed::Command(c) if !c.args.is_empty() => c,
            _ => return Err(format!("`{pattern}` is not a command")),
        };
        let mut unclosed = false;
        root.walk(&mut |c| {
            for a in &c.args {
                if let Arg::Command(n) = a {
                    unclosed |= !n.closed;
                }
            }
        });
        if unclosed || root.closed {
            return Err(format!("`{pattern}` has unbalanced parentheses"));
        }
        Ok(AllowPattern { root })
    }

    /// Whether a request's command matches the pattern exactly (extra arguments do not match).
    pub fn matches(&self, c: &Command) -> bool {
        matches_cmd(&self.root, c)
    }
}

fn matches_cmd(p: &Command, c: &Command) -> bool {
    p.args.len() == c.args.len()
        && p.args.iter().zip(&c.args).all(|(pa, ca)| match (pa, ca) {
            (Arg::Value(pv), Arg::Value(cv)) => match pv.text.as_str() {
                "*" => true,
                "<id>" => parse_int32(&cv.text).is_ok(),
                t => t == cv.text,
            },
            (Arg::Command(pc), Arg::Command(cc)) => matches_cmd(pc, cc),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Parsed {
        command::parse(s.as_bytes())
    }

    #[test]
    fn pattern_validation() {
        assert!(AllowPattern::parse("bot/use/<id>/(/song").is_err());
        assert!(AllowPattern::parse("").is_err());
        assert!(AllowPattern::parse("bot/use/<id>/(/song)/)").is_err());
        let p = AllowPattern::parse("/version").expect("ok");
        let Parsed::Command(c) = parsed("/version/") else {
            panic!()
        };
        assert!(p.matches(&c));
    }
}
