//! What a caller may run, before anything is routed.
//!
//! Owns: the anonymous allow-list (patterns like `bot/use/<id>/(/data/song/cover/get)`),
//! commands refused for everyone (`system quit`), admin-only commands (node-wide state and
//! commands the router cannot inspect), and refusing command names computed at run time.
//! Every command anywhere in the tree is checked, so nesting cannot smuggle one past.
//! Does not own: authentication (`auth`) or redacting answers (`routing` decides, `json_edit`
//! edits).

use crate::api_json::{ApiError, Reason};
use crate::auth::{Caller, ERR_ANONYMOUS_DISABLED};
use crate::catalog::{identify, Kind};
use crate::command::{self, parse_int32, Arg, Command, Parsed};

/// Text of the 403 for `system quit`.
pub const QUIT_REFUSED: &str = "'system quit' is disabled by ts3ab-lb: it would stop every bot on a node at once. \
To take a node out of service, drain it: set `draining: true` on the node in the router's configuration \
(new bots then go to other nodes), stop or move its bots, then remove the node and stop TS3AudioBot on its host.";

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

/// Checks a parsed request against the caller's rights. `None` means go ahead.
pub fn check(root: &Parsed, caller: &Caller, anonymous_allow: &[AllowPattern]) -> Option<ApiError> {
    if *caller == Caller::Anonymous {
        let allowed = match root {
            Parsed::Command(c) => anonymous_allow.iter().any(|p| p.matches(c)),
            Parsed::Plain(_) => false,
        };
        if !allowed {
            return Some(ApiError::unauthorized(ERR_ANONYMOUS_DISABLED));
        }
    }
    let Parsed::Command(root) = root else {
        return None;
    };
    let mut verdict = None;
    root.walk(&mut |c| {
        if verdict.is_some() {
            return;
        }
        let id = identify(c);
        verdict = match id.kind {
            Kind::SystemQuit => Some(ApiError::forbidden(QUIT_REFUSED)),
            Kind::Dynamic => Some(ApiError::new(
                Reason::NotSupported,
                "ts3ab-lb cannot route a command whose name is computed by a nested command; \
                 write the command name out",
            )),
            Kind::SettingsGlobalGet
            | Kind::SettingsGlobalSet
            | Kind::Plugin { .. }
            | Kind::Eval
            | Kind::RightsReload
            | Kind::SettingsBotReload { .. }
                if !caller.is_admin() =>
            {
                Some(ApiError::missing_rights(&id.words))
            }
            _ => None,
        };
    });
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use std::sync::Arc;

    fn parsed(s: &str) -> Parsed {
        command::parse(s.as_bytes())
    }

    fn user() -> Caller {
        Caller::Key {
            name: Arc::from("u"),
            role: Role::User,
        }
    }

    fn admin() -> Caller {
        Caller::Key {
            name: Arc::from("a"),
            role: Role::Admin,
        }
    }

    fn default_allow() -> Vec<AllowPattern> {
        vec![AllowPattern::parse(crate::config::DEFAULT_ANONYMOUS_ALLOW).expect("pattern")]
    }

    #[test]
    fn anonymous_cover_only() {
        let allow = default_allow();
        assert!(check(
            &parsed("/bot/use/3/(/data/song/cover/get)"),
            &Caller::Anonymous,
            &allow
        )
        .is_none());
        // Unclosed and percent-encoded forms parse the same.
        assert!(check(
            &parsed("/bot/use/3/(/data/song/cover/get"),
            &Caller::Anonymous,
            &allow
        )
        .is_none());
        assert!(check(
            &parsed("/bot/use/%33/(/data/song/cover/get)/"),
            &Caller::Anonymous,
            &allow
        )
        .is_none());
        for refused in [
            "/bot/use/3/(/song)",
            "/bot/use/x/(/data/song/cover/get)",
            "/bot/use/3/(/data/song/cover/get/(/bot/list))",
            "/bot/list",
            "",
        ] {
            let e = check(&parsed(refused), &Caller::Anonymous, &allow).expect(refused);
            assert_eq!(e.status, 401, "{refused}");
            assert_eq!(e.message, ERR_ANONYMOUS_DISABLED);
        }
    }

    #[test]
    fn quit_is_refused_for_everyone_at_any_depth() {
        for who in [user(), admin()] {
            for path in [
                "/system/quit",
                "/bot/use/0/(/json/merge/(/system/quit/force))",
            ] {
                let e = check(&parsed(path), &who, &[]).expect(path);
                assert_eq!(e.status, 403);
                assert!(e.message.contains("system quit"));
            }
        }
    }

    #[test]
    fn admin_only_commands() {
        for (path, right) in [
            ("/settings/global/set/a/b", "cmd.settings.global.set"),
            ("/plugin/list", "cmd.plugin.list"),
            ("/eval/x", "cmd.eval"),
            ("/rights/reload", "cmd.rights.reload"),
            ("/settings/bot/reload", "cmd.settings.bot.reload"),
            ("/xecute/(/bot/use/1/(/plugin/load/x))", "cmd.plugin.load"),
        ] {
            let e = check(&parsed(path), &user(), &[]).expect(path);
            assert_eq!(e.status, 403, "{path}");
            assert!(e.message.contains(right), "{path}: {}", e.message);
            assert!(check(&parsed(path), &admin(), &[]).is_none(), "{path}");
        }
        assert!(check(&parsed("/bot/list"), &user(), &[]).is_none());
    }

    #[test]
    fn dynamic_names_are_refused() {
        let e = check(&parsed("/bot/(/print/use)/0/(/song)"), &admin(), &[]).expect("dynamic");
        assert_eq!(e.status, 400);
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
