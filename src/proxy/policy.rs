//! What a caller may run, before anything is routed.
//!
//! Owns: the anonymous allow-list (patterns like `bot/use/<id>/(/data/song/cover/get)`),
//! commands refused for everyone (`system quit`), admin-only commands (node-wide state and
//! commands the router cannot inspect), and refusing command names computed at run time.
//! Every command anywhere in the tree is checked, so nesting cannot smuggle one past.
//! Does not own: authentication (`auth`) or redacting answers (`routing` decides, `json_edit`
//! edits).

use crate::protocol::api_json::{ApiError, Reason};
use crate::protocol::basic_auth::ERR_ANONYMOUS_DISABLED;
use crate::protocol::catalog::{identify, Kind};
use crate::protocol::command::{Arg, Command, Parsed};
use crate::protocol::pattern::AllowPattern;
use crate::protocol::settings::is_secret_path;
use crate::proxy::keys::Caller;

/// Text of the 403 for `system quit`.
pub const QUIT_REFUSED: &str = "'system quit' is disabled by ts3ab-lb: it would stop every bot on a node at once. \
To take a node out of service, drain it: set `draining: true` on the node in the router's configuration \
(new bots then go to other nodes), stop or move its bots, then remove the node and stop TS3AudioBot on its host.";

/// TS3AudioBot's answer when a request runs too many commands (its `command_complexity`).
pub fn too_complex() -> ApiError {
    ApiError::new(
        Reason::CommandError,
        "The command exceeded the maximum calling complexity.",
    )
}

/// Checks a parsed request against the caller's rights. `None` means go ahead.
///
/// `max_commands` bounds the commands in one request, as TS3AudioBot's
/// `web.api.command_complexity` does (every command costs at least 1 there): it also bounds the
/// work one request can make the router do (fan-outs, creates).
pub fn check(
    root: &Parsed,
    caller: &Caller,
    anonymous_allow: &[AllowPattern],
    max_commands: usize,
) -> Option<ApiError> {
    if *caller == Caller::Anonymous {
        let allowed = match root {
            Parsed::Command(c) => anonymous_allow.iter().any(|p| p.matches(c)),
            _ => false,
        };
        if !allowed {
            return Some(ApiError::unauthorized(ERR_ANONYMOUS_DISABLED));
        }
    }
    let root = match root {
        Parsed::Command(c) => c,
        Parsed::Plain(_) => return None,
        Parsed::TooDeep => return Some(too_complex()),
    };
    let mut commands = 0;
    root.walk(&mut |_| commands += 1);
    if commands > max_commands {
        return Some(too_complex());
    }
    let mut verdict = None;
    visit(
        root,
        Pos {
            result: true,
            in_merge: false,
        },
        caller.is_admin(),
        &mut verdict,
    );
    verdict
}

/// Where a command's result goes: straight into the answer (`result`), and whether as an
/// element of a `json merge` array.
#[derive(Clone, Copy)]
struct Pos {
    result: bool,
    in_merge: bool,
}

fn visit(c: &Command, pos: Pos, admin: bool, out: &mut Option<ApiError>) {
    if out.is_some() {
        return;
    }
    let id = identify(c);
    *out = verdict(c, &id, pos, admin);
    if out.is_some() {
        return;
    }
    for (i, arg) in c.args.iter().enumerate() {
        let Arg::Command(n) = arg else { continue };
        let child = match id.kind {
            // The nested command of a bot context answers for the whole command.
            Kind::BotUse { .. } | Kind::BotTemplate { .. } if i == 3 => pos,
            Kind::JsonMerge { first } if i >= first => Pos {
                result: pos.result,
                in_merge: true,
            },
            _ => Pos {
                result: false,
                in_merge: pos.in_merge,
            },
        };
        visit(n, child, admin, out);
    }
}

fn verdict(
    c: &Command,
    id: &crate::protocol::catalog::Identified<'_>,
    pos: Pos,
    admin: bool,
) -> Option<ApiError> {
    let dynamic = || {
        Some(ApiError::new(
            Reason::NotSupported,
            "ts3ab-lb cannot route a command whose name, bot id or template name is computed by a nested \
             command; write it out",
        ))
    };
    match id.kind {
        Kind::SystemQuit => Some(ApiError::forbidden(QUIT_REFUSED)),
        Kind::Dynamic => dynamic(),
        // A computed bot id or template name could address any bot on any node.
        Kind::BotUse { .. } | Kind::BotTemplate { .. } if c.nested(2).is_some() => dynamic(),
        Kind::SettingsGlobalGet
        | Kind::SettingsGlobalSet
        | Kind::Plugin { .. }
        | Kind::Eval
        | Kind::RightsReload
        | Kind::SettingsBotReload { .. }
        | Kind::Alias { changes: true }
            if !admin =>
        {
            Some(ApiError::missing_rights(id.words))
        }
        Kind::SettingsGet { path } | Kind::SettingsBotGet { path, .. } if !admin => {
            let path_at = if matches!(id.kind, Kind::SettingsGet { .. }) {
                2
            } else {
                4
            };
            if !pos.result {
                return Some(ApiError::forbidden(
                    "With a user key, settings can only be read as a request's own result (not inside other commands), \
                     so that identities and passwords can be redacted.",
                ));
            }
            if c.nested(path_at).is_some() || path.is_some_and(|p| !is_literal_path(&p.text)) {
                return Some(ApiError::forbidden(
                    "With a user key, a settings path must be written out as dotted names ([A-Za-z0-9_.]).",
                ));
            }
            if pos.in_merge && path.is_some_and(|p| is_secret_path(&p.text.to_ascii_lowercase())) {
                return Some(ApiError::forbidden(
                    "TeamSpeak identities and passwords are readable with admin keys only.",
                ));
            }
            None
        }
        Kind::SettingsSet { path, .. } | Kind::SettingsBotSet { path, .. } if !admin => {
            let ok = path.is_some_and(|p| is_literal_path(&p.text) && !runs_commands(&p.text));
            (!ok).then(|| {
                ApiError::forbidden(
                    "With a user key, settings that run commands (events.*, commands.*) cannot be changed, \
                     and a settings path must be written out as dotted names ([A-Za-z0-9_.]).",
                )
            })
        }
        _ => None,
    }
}

/// A config path written out as dotted names, with nothing TS3AudioBot would interpret
/// (wildcards, indexers, whitespace).
fn is_literal_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('.').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Settings whose values TS3AudioBot executes as chat commands (event scripts, aliases): setting
/// them is running arbitrary commands with the router's rights on the node.
fn runs_commands(p: &str) -> bool {
    let first = p.split('.').next().unwrap_or_default().to_ascii_lowercase();
    first == "events" || first == "commands"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::keys::test_callers::{admin, user};

    fn parsed(s: &str) -> Parsed {
        crate::protocol::command::parse(s.as_bytes())
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
            &allow,
            64
        )
        .is_none());
        // Unclosed and percent-encoded forms parse the same.
        assert!(check(
            &parsed("/bot/use/3/(/data/song/cover/get"),
            &Caller::Anonymous,
            &allow,
            64
        )
        .is_none());
        assert!(check(
            &parsed("/bot/use/%33/(/data/song/cover/get)/"),
            &Caller::Anonymous,
            &allow,
            64
        )
        .is_none());
        for refused in [
            "/bot/use/3/(/song)",
            "/bot/use/x/(/data/song/cover/get)",
            "/bot/use/3/(/data/song/cover/get/(/bot/list))",
            "/bot/list",
            "",
        ] {
            let e = check(&parsed(refused), &Caller::Anonymous, &allow, 64).expect(refused);
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
                let e = check(&parsed(path), &who, &[], 64).expect(path);
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
            let e = check(&parsed(path), &user(), &[], 64).expect(path);
            assert_eq!(e.status, 403, "{path}");
            assert!(e.message.contains(right), "{path}: {}", e.message);
            assert!(check(&parsed(path), &admin(), &[], 64).is_none(), "{path}");
        }
        assert!(check(&parsed("/bot/list"), &user(), &[], 64).is_none());
    }

    #[test]
    fn dynamic_names_are_refused() {
        let e = check(&parsed("/bot/(/print/use)/0/(/song)"), &admin(), &[], 64).expect("dynamic");
        assert_eq!(e.status, 400);
    }

    #[test]
    fn computed_ids_and_names_are_refused() {
        for path in [
            "/bot/use/(/print/1)/(/bot/info)",
            "/bot/template/(/print/t)/(/song)",
        ] {
            let e = check(&parsed(path), &admin(), &[], 64).expect(path);
            assert_eq!(e.status, 400, "{path}");
        }
    }

    #[test]
    fn complexity_is_bounded_like_ts3audiobot() {
        let many = format!("/json/merge{}", "/(/bot/list)".repeat(64));
        let e = check(&parsed(&many), &admin(), &[], 64).expect("65 commands");
        assert_eq!(
            (e.status, e.message.as_str()),
            (422, "The command exceeded the maximum calling complexity.")
        );
        let ok = format!("/json/merge{}", "/(/bot/list)".repeat(63));
        assert!(check(&parsed(&ok), &admin(), &[], 64).is_none());
        let deep = format!("/bot/use/0/{}", "(/".repeat(4000));
        assert_eq!(
            check(&parsed(&deep), &admin(), &[], 64).map(|e| e.status),
            Some(422)
        );
    }

    /// Secrets can only be read where the router can redact them, and settings that run
    /// commands cannot be written, with user keys.
    #[test]
    fn settings_rules_for_user_keys() {
        for allowed in [
            "/bot/use/0/(/settings/get)",
            "/bot/use/0/(/settings/get/connect.identity)",
            "/bot/use/0/(/settings/get/connect.identity.key)",
            "/bot/use/0/(/json/merge/(/settings/get/connect.name)/(/song))",
            "/json/merge/(/bot/use/0/(/settings/get/audio))",
            "/settings/bot/get/t/connect",
            "/bot/use/0/(/settings/set/connect.name/x)",
            "/settings/bot/set/t/audio.volume.default/30",
            "/bot/use/0/(/alias/list)",
        ] {
            assert!(
                check(&parsed(allowed), &user(), &[], 64).is_none(),
                "{allowed}"
            );
        }
        for refused in [
            "/bot/use/0/(/json/merge/(/settings/get/connect.identity.key))",
            "/bot/use/0/(/print/(/settings/get/connect.identity))",
            "/bot/use/0/(/settings/get/(/print/connect.identity.key))",
            "/bot/use/0/(/settings/get/connect.identity%5Bkey%5D)",
            "/bot/use/0/(/settings/get/%20connect.identity.key)",
            "/bot/use/0/(/settings/get/connect.*)",
            "/settings/bot/get/t/connect.server_password.*",
            "/bot/use/0/(/settings/set/events.onsongstart/!system%20quit)",
            "/settings/bot/set/t/Events.onconnect/x",
            "/bot/use/0/(/settings/set/commands.alias.q/!eval)",
            "/bot/use/0/(/settings/set/events/%7B%7D)",
            "/bot/use/0/(/alias/add/q/!system%20quit)",
            "/bot/use/0/(/alias/remove/q)",
        ] {
            let e = check(&parsed(refused), &user(), &[], 64).expect(refused);
            assert_eq!(e.status, 403, "{refused}");
            assert!(
                check(&parsed(refused), &admin(), &[], 64).is_none(),
                "{refused}"
            );
        }
    }
}
