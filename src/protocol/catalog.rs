//! Which TS3AudioBot commands matter to the router, and where their arguments are.
//!
//! Owns: recognising a parsed [`Command`] as one of the commands the router treats specially
//! (bot context, templates, creation, fan-out, node-wide, secrets) and naming its arguments.
//! Matching is exact and case-sensitive, like the node's API matcher. Every other command is
//! [`Kind::Other`]: the router forwards it untouched to wherever its context pins it.
//! Does not own: decisions (`routing`, `policy`).

use crate::protocol::command::{Arg, Command, Value};

/// A recognised command.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// `bot use <id> (<cmd>)`.
    BotUse {
        /// The id argument (None when missing or computed by a nested command).
        id: Option<&'a Value>,
        /// The nested command.
        inner: Option<&'a Command>,
    },
    /// `bot template <name> (<cmd>)`.
    BotTemplate {
        /// Template name.
        name: Option<&'a Value>,
        /// The nested command.
        inner: Option<&'a Command>,
    },
    /// `bot list`.
    BotList,
    /// `bot connect to <address> [<password>]`.
    BotConnectTo {
        /// Address.
        address: Option<&'a Value>,
        /// Server password.
        password: Option<&'a Value>,
    },
    /// `bot connect template <name>`.
    BotConnectTemplate {
        /// Template name.
        name: Option<&'a Value>,
    },
    /// `bot info template <name>`.
    BotInfoTemplate {
        /// Template name.
        name: Option<&'a Value>,
    },
    /// `bot info` (bot level, returns BotInfo).
    BotInfo,
    /// `bot disconnect`.
    BotDisconnect,
    /// `bot save <name>`.
    BotSave {
        /// New template name.
        name: Option<&'a Value>,
    },
    /// `bot name <name>`.
    BotName {
        /// Nickname.
        name: Option<&'a Value>,
    },
    /// `bot move <channel> [<pw>]`.
    BotMove {
        /// Channel id.
        channel: Option<&'a Value>,
    },
    /// `settings create <name>`.
    SettingsCreate {
        /// Template name.
        name: Option<&'a Value>,
    },
    /// `settings copy <from> <to>`.
    SettingsCopy {
        /// Source template.
        from: Option<&'a Value>,
        /// New template.
        to: Option<&'a Value>,
    },
    /// `settings delete <name>`.
    SettingsDelete {
        /// Template name.
        name: Option<&'a Value>,
    },
    /// `settings bot get <name> [<path>]`.
    SettingsBotGet {
        /// Template name.
        name: Option<&'a Value>,
        /// Config path.
        path: Option<&'a Value>,
    },
    /// `settings bot set <name> <path> [<value>]`.
    SettingsBotSet {
        /// Template name.
        name: Option<&'a Value>,
        /// Config path.
        path: Option<&'a Value>,
        /// New value.
        value: Option<&'a Value>,
    },
    /// `settings bot reload [<name>]`.
    SettingsBotReload {
        /// Template name, or all.
        name: Option<&'a Value>,
    },
    /// `settings global get ...`.
    SettingsGlobalGet,
    /// `settings global set ...`.
    SettingsGlobalSet,
    /// `settings get [<path>]` (bot level).
    SettingsGet {
        /// Config path.
        path: Option<&'a Value>,
    },
    /// `settings set <path> [<value>]` (bot level).
    SettingsSet {
        /// Config path.
        path: Option<&'a Value>,
        /// New value.
        value: Option<&'a Value>,
    },
    /// `json merge (<a>) (<b>) ...`.
    JsonMerge {
        /// Index of the first element argument.
        first: usize,
    },
    /// `json api`.
    JsonApi,
    /// `system info`.
    SystemInfo,
    /// `system quit`.
    SystemQuit,
    /// `rights reload`.
    RightsReload,
    /// `plugin list|load|unload ...`.
    Plugin {
        /// Whether it changes state (load/unload).
        changes: bool,
    },
    /// `eval ...` (chat syntax the router cannot inspect).
    Eval,
    /// `alias add|remove|list|show ...` (an alias runs chat syntax with the caller's rights).
    Alias {
        /// Whether it changes aliases (add/remove).
        changes: bool,
    },
    /// A command name computed at run time by a nested command.
    Dynamic,
    /// Anything else.
    Other,
}

/// A recognised command with its name words (for messages and right names).
#[derive(Debug, Clone)]
pub struct Identified<'a> {
    /// What it is.
    pub kind: Kind<'a>,
    /// Its name as words, e.g. `["settings", "global", "set"]`.
    pub words: &'static [&'static str],
}

impl Kind<'_> {
    /// Commands that work without a bot context and that the router handles differently from
    /// the bot's own node when they appear inside `bot use (...)`. (`json merge` is handled
    /// on its own: it is split only when its elements need it.)
    pub fn is_cluster_level(&self) -> bool {
        matches!(
            self,
            Kind::BotList
                | Kind::BotConnectTo { .. }
                | Kind::BotConnectTemplate { .. }
                | Kind::BotInfoTemplate { .. }
                | Kind::SettingsCreate { .. }
                | Kind::SettingsCopy { .. }
                | Kind::SettingsDelete { .. }
                | Kind::SettingsBotGet { .. }
                | Kind::SettingsBotSet { .. }
                | Kind::SettingsBotReload { .. }
                | Kind::SettingsGlobalSet
                | Kind::SystemInfo
                | Kind::RightsReload
        )
    }
}

fn nested_at(c: &Command, i: usize) -> bool {
    matches!(c.args.get(i), Some(Arg::Command(_)))
}

/// Recognises a command.
///
/// One long match on purpose: it is the catalog itself, one arm per command the router cares
/// about, in TS3AudioBot's own grouping; split up it would be harder to check against the spec.
pub fn identify(c: &Command) -> Identified<'_> {
    let w = |i: usize| c.word(i);
    let v = |i: usize| c.value(i);
    let id = |kind, words: &'static [&'static str]| Identified { kind, words };
    if nested_at(c, 0) {
        return id(Kind::Dynamic, &[]);
    }
    match w(0) {
        Some("bot") => {
            if nested_at(c, 1) {
                return id(Kind::Dynamic, &["bot"]);
            }
            match w(1) {
                Some("use") => id(
                    Kind::BotUse {
                        id: v(2),
                        inner: c.nested(3),
                    },
                    &["bot", "use"],
                ),
                Some("template") => id(
                    Kind::BotTemplate {
                        name: v(2),
                        inner: c.nested(3),
                    },
                    &["bot", "template"],
                ),
                Some("list") => id(Kind::BotList, &["bot", "list"]),
                Some("connect") => match w(2) {
                    _ if nested_at(c, 2) => id(Kind::Dynamic, &["bot", "connect"]),
                    Some("to") => id(
                        Kind::BotConnectTo {
                            address: v(3),
                            password: v(4),
                        },
                        &["bot", "connect", "to"],
                    ),
                    Some("template") => id(
                        Kind::BotConnectTemplate { name: v(3) },
                        &["bot", "connect", "template"],
                    ),
                    _ => id(Kind::Other, &["bot", "connect"]),
                },
                Some("info") => match w(2) {
                    _ if nested_at(c, 2) => id(Kind::Dynamic, &["bot", "info"]),
                    None => id(Kind::BotInfo, &["bot", "info"]),
                    Some("template") => id(
                        Kind::BotInfoTemplate { name: v(3) },
                        &["bot", "info", "template"],
                    ),
                    Some(_) => id(Kind::Other, &["bot", "info"]),
                },
                Some("disconnect") => id(Kind::BotDisconnect, &["bot", "disconnect"]),
                Some("save") => id(Kind::BotSave { name: v(2) }, &["bot", "save"]),
                Some("name") => id(Kind::BotName { name: v(2) }, &["bot", "name"]),
                Some("move") => id(Kind::BotMove { channel: v(2) }, &["bot", "move"]),
                _ => id(Kind::Other, &["bot"]),
            }
        }
        Some("settings") => {
            if nested_at(c, 1) {
                return id(Kind::Dynamic, &["settings"]);
            }
            match w(1) {
                Some("create") => id(Kind::SettingsCreate { name: v(2) }, &["settings", "create"]),
                Some("copy") => id(
                    Kind::SettingsCopy {
                        from: v(2),
                        to: v(3),
                    },
                    &["settings", "copy"],
                ),
                Some("delete") => id(Kind::SettingsDelete { name: v(2) }, &["settings", "delete"]),
                Some("get") => id(Kind::SettingsGet { path: v(2) }, &["settings", "get"]),
                Some("set") => id(
                    Kind::SettingsSet {
                        path: v(2),
                        value: v(3),
                    },
                    &["settings", "set"],
                ),
                Some("bot") => match w(2) {
                    _ if nested_at(c, 2) => id(Kind::Dynamic, &["settings", "bot"]),
                    Some("get") => id(
                        Kind::SettingsBotGet {
                            name: v(3),
                            path: v(4),
                        },
                        &["settings", "bot", "get"],
                    ),
                    Some("set") => id(
                        Kind::SettingsBotSet {
                            name: v(3),
                            path: v(4),
                            value: v(5),
                        },
                        &["settings", "bot", "set"],
                    ),
                    Some("reload") => id(
                        Kind::SettingsBotReload { name: v(3) },
                        &["settings", "bot", "reload"],
                    ),
                    _ => id(Kind::Other, &["settings", "bot"]),
                },
                Some("global") => match w(2) {
                    _ if nested_at(c, 2) => id(Kind::Dynamic, &["settings", "global"]),
                    Some("set") => id(Kind::SettingsGlobalSet, &["settings", "global", "set"]),
                    Some("get") => id(Kind::SettingsGlobalGet, &["settings", "global", "get"]),
                    // Any other word is an error on the node, but it names the global file:
                    // treat it as admin-only too.
                    _ => id(Kind::SettingsGlobalGet, &["settings", "global"]),
                },
                _ => id(Kind::Other, &["settings"]),
            }
        }
        Some("json") => match w(1) {
            _ if nested_at(c, 1) => id(Kind::Dynamic, &["json"]),
            Some("merge") => id(Kind::JsonMerge { first: 2 }, &["json", "merge"]),
            Some("api") => id(Kind::JsonApi, &["json", "api"]),
            _ => id(Kind::Other, &["json"]),
        },
        Some("system") => match w(1) {
            _ if nested_at(c, 1) => id(Kind::Dynamic, &["system"]),
            Some("info") => id(Kind::SystemInfo, &["system", "info"]),
            Some("quit") => id(Kind::SystemQuit, &["system", "quit"]),
            _ => id(Kind::Other, &["system"]),
        },
        Some("rights") => match w(1) {
            _ if nested_at(c, 1) => id(Kind::Dynamic, &["rights"]),
            Some("reload") => id(Kind::RightsReload, &["rights", "reload"]),
            _ => id(Kind::Other, &["rights"]),
        },
        Some("plugin") => match w(1) {
            _ if nested_at(c, 1) => id(Kind::Dynamic, &["plugin"]),
            Some("load") => id(Kind::Plugin { changes: true }, &["plugin", "load"]),
            Some("unload") => id(Kind::Plugin { changes: true }, &["plugin", "unload"]),
            Some("list") => id(Kind::Plugin { changes: false }, &["plugin", "list"]),
            _ => id(Kind::Plugin { changes: false }, &["plugin"]),
        },
        Some("eval") => id(Kind::Eval, &["eval"]),
        Some("alias") => match w(1) {
            Some("add") => id(Kind::Alias { changes: true }, &["alias", "add"]),
            Some("remove") => id(Kind::Alias { changes: true }, &["alias", "remove"]),
            _ => id(Kind::Alias { changes: false }, &["alias"]),
        },
        _ => id(Kind::Other, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::{parse, Parsed};

    fn kind(s: &str) -> String {
        match parse(s.as_bytes()) {
            Parsed::Command(c) => {
                let k = format!("{:?}", identify(&c).kind);
                k.split([' ', '{']).next().unwrap_or_default().to_string()
            }
            _ => "plain".into(),
        }
    }

    #[test]
    fn recognises_commands() {
        assert_eq!(kind("/bot/list"), "BotList");
        assert_eq!(kind("/bot/use/0/(/song)"), "BotUse");
        assert_eq!(kind("/bot/info"), "BotInfo");
        assert_eq!(kind("/bot/info/client"), "Other");
        assert_eq!(kind("/bot/info/template/x"), "BotInfoTemplate");
        assert_eq!(kind("/bot/connect/to/1.2.3.4"), "BotConnectTo");
        assert_eq!(kind("/bot/connect/template/x"), "BotConnectTemplate");
        assert_eq!(kind("/settings/bot/set/t/connect.name/x"), "SettingsBotSet");
        assert_eq!(kind("/settings/global/set/a/b"), "SettingsGlobalSet");
        assert_eq!(kind("/settings/global/help"), "SettingsGlobalGet");
        assert_eq!(kind("/json/merge/(/song)"), "JsonMerge");
        assert_eq!(kind("/system/quit/force"), "SystemQuit");
        assert_eq!(kind("/plugin/load/3"), "Plugin");
        assert_eq!(kind("/eval/x"), "Eval");
        assert_eq!(kind("/Bot/List"), "Other");
        assert_eq!(kind("/(/print/bot)/list"), "Dynamic");
        assert_eq!(kind("/bot/(/print/use)/0/(/song)"), "Dynamic");
        assert_eq!(kind("/b%6Ft/list"), "BotList");
    }
}
