//! The command table: every command TS3AudioBot 0.12 registers, in its declaration order.
//!
//! Owns: each command's path, C# method name (for MissingContext messages), the execution
//! modules it needs (in declaration order), its parameters, which handler runs it, and the
//! trivial handlers (no-ops, empty results, not implemented).
//! Does not own: the handlers with behaviour (`corecmds`, `botcmds`), dispatch (`exec`).
//! Commands a fake cannot meaningfully do (history database, search sessions, `get`,
//! `command parse|tree`, `getuser *`) answer 501, TS3AudioBot's NotImplementedException form.

use serde_json::json;

use crate::botcmds as b;
use crate::corecmds as c;
use crate::exec::{Dep, Exec, Fail, Pv, Val, P};
use crate::playlists as pl;

/// A handler: the execution and the fitted parameters.
pub type Handler = fn(&mut Exec<'_>, Vec<Pv<'_>>) -> Result<Val, Fail>;

/// One registered command (one overload).
pub struct Def {
    pub path: &'static str,
    pub method: &'static str,
    pub deps: &'static [Dep],
    pub params: &'static [P],
    pub h: Handler,
}

/// One line per command: `"path" CSharpMethod [deps] [params] handler;`.
macro_rules! defs {
    ($($path:literal $method:ident [$($dep:ident),*] [$($p:expr),*] $h:path;)*) => {
        &[$(Def {
            path: $path,
            method: stringify!($method),
            deps: &[$(Dep::$dep),*],
            params: &[$($p),*],
            h: $h,
        }),*]
    };
}

use P::{
    Audio, Cmd, Int, OptCmd, OptInt, OptStr, OptULong, Raw, Str, StrArr, Time, UInt, ULong,
    ULongArr, UShort,
};

const WHISPER_TYPES: &[&str] = &[
    "ServerGroup",
    "ChannelGroup",
    "ChannelCommander",
    "AllClients",
];
const WHISPER_TARGETS: &[&str] = &[
    "AllChannels",
    "CurrentChannel",
    "ParentChannel",
    "AllParentChannel",
    "ChannelFamily",
    "CompleteChannelFamily",
    "Subchannels",
];

/// Every command, in MainCommands' declaration order; overloads in TS3AudioBot's sorted
/// order (by parameter type: bool < ints < floats < TimeSpan < DateTime < string < others,
/// fewer parameters last).
pub static DEFS: &[Def] = defs! {
    "add" CommandAdd [PlayManager] [Audio, StrArr] not_impl;
    "add" CommandAdd [PlayManager] [Str, StrArr] b::add;
    "alias add" CommandAliasAdd [ConfBot] [Str, Str] b::alias_add;
    "alias remove" CommandAliasRemove [ConfBot] [Str] b::alias_remove;
    "alias list" CommandAliasList [] [] b::alias_list;
    "alias show" CommandAliasShow [] [Str] b::alias_show;
    "api token" CommandApiToken [ClientCall] [P::OptDouble] not_impl;
    "bot avatar set" CommandBotAvatarSet [Ts3Client] [Str] noop;
    "bot avatar clear" CommandBotAvatarClear [Ts3Client] [] noop;
    "bot badges" CommandBotBadges [Ts3Client] [Str] noop;
    "bot description set" CommandBotDescriptionSet [Ts3Client] [Str] noop;
    "bot diagnose" CommandBotDiagnose [Player, IVoiceTarget, Connection] [] b::diagnose;
    "bot disconnect" CommandBotDisconnect [Bot] [] b::disconnect;
    "bot commander" CommandBotCommander [Ts3Client] [] b::commander;
    "bot commander on" CommandBotCommanderOn [Ts3Client] [] b::commander_on;
    "bot commander off" CommandBotCommanderOff [Ts3Client] [] b::commander_off;
    "bot come" CommandBotCome [Ts3Client, ClientCall] [OptStr] not_impl;
    "bot connect template" CommandBotConnectTo [] [Str] c::connect_template;
    "bot connect to" CommandBotConnectNew [] [Str, OptStr] c::connect_to;
    "bot info" CommandBotInfo [Bot] [] b::info;
    "bot info client" CommandBotInfoClient [Connection] [] b::info_client;
    "bot info template" CommandBotInfo [] [Str] c::info_template;
    "bot list" CommandBotList [] [] c::bot_list;
    "bot move" CommandBotMove [Ts3Client] [ULong, OptStr] b::bot_move;
    "bot name" CommandBotName [Ts3Client] [Str] b::bot_name;
    "bot save" CommandBotSetup [ConfBot] [Str] b::save;
    "bot setup" CommandBotSetup [Ts3Client] [OptStr] noop;
    "bot template" CommandBotTemplate [] [Str, Cmd] c::bot_template;
    "bot use" CommandBotUse [] [Int, Cmd] c::bot_use;
    "clear" CommandClear [PlaylistManager] [] b::clear;
    "command parse" CommandParse [] [Str] not_impl;
    "command tree" CommandTree [] [] not_impl;
    "data song cover get" CommandData [ResolveContext, PlayManager] [] b::cover;
    "eval" CommandEval [] [Raw] c::eval;
    "from" CommandFrom [PlayManager] [Str, Str] b::from;
    "get" CommandGet [] [UInt, Raw] not_impl;
    "getmy id" CommandGetId [ClientCall] [] not_impl;
    "getmy uid" CommandGetUid [ClientCall] [] not_impl;
    "getmy name" CommandGetName [ClientCall] [] not_impl;
    "getmy dbid" CommandGetDbId [ClientCall] [] not_impl;
    "getmy channel" CommandGetChannel [ClientCall] [] not_impl;
    "getmy all" CommandGetUser [ClientCall] [] not_impl;
    "getuser uid byid" CommandGetUidById [Ts3Client] [UShort] not_impl;
    "getuser name byid" CommandGetNameById [Ts3Client] [UShort] not_impl;
    "getuser dbid byid" CommandGetDbIdById [Ts3Client] [UShort] not_impl;
    "getuser channel byid" CommandGetChannelById [Ts3Client] [UShort] not_impl;
    "getuser all byid" CommandGetUserById [Ts3Client] [UShort] not_impl;
    "getuser id byname" CommandGetIdByName [Ts3Client] [Str] not_impl;
    "getuser all byname" CommandGetUserByName [Ts3Client] [Str] not_impl;
    "getuser name bydbid" CommandGetNameByDbId [Ts3Client] [ULong] not_impl;
    "getuser uid bydbid" CommandGetUidByDbId [Ts3Client] [ULong] not_impl;
    "help" CommandHelp [] [] c::help;
    "help all" CommandHelpAll [] [] c::help_all;
    "help command" CommandHelpCommand [] [StrArr] c::help_command;
    "help play" CommandHelpPlay [] [] c::help_play;
    "history add" CommandHistoryQueue [PlayManager] [UInt] not_impl;
    "history clean" CommandHistoryClean [] [] empty;
    "history clean removedefective" CommandHistoryCleanRemove [ResolveContext] [] empty;
    "history clean upgrade" CommandHistoryCleanUpgrade [Ts3Client] [] noop;
    "history delete" CommandHistoryDelete [] [UInt] not_impl;
    "history from" CommandHistoryFrom [] [Str, OptInt] empty_list;
    "history id" CommandHistoryId [] [UInt] not_impl;
    "history id" CommandHistoryId [] [Str] not_impl;
    "history last" CommandHistoryLast [] [Int] empty_list;
    "history last" CommandHistoryLast [PlayManager] [] not_impl;
    "history play" CommandHistoryPlay [PlayManager] [UInt] not_impl;
    "history rename" CommandHistoryRename [] [UInt, Str] not_impl;
    "history till" CommandHistoryTill [] [P::DateTime] empty_list;
    "history till" CommandHistoryTill [] [Str] empty_list;
    "history title" CommandHistoryTitle [] [Str] empty_list;
    "if" CommandIf [] [Str, Str, Str, Cmd, OptCmd] c::cmd_if;
    "info" CommandInfo [ResolveContext, PlaylistManager] [Int, OptInt] b::info_queue;
    "info" CommandInfo [ResolveContext, PlaylistManager] [OptStr, OptInt] b::info_queue;
    "json merge" CommandJsonMerge [] [Raw] c::json_merge;
    "json api" CommandJsonApi [] [] c::json_api;
    "jump" CommandJump [PlayManager, PlaylistManager] [Str] b::jump;
    "kickme" CommandKickme [Ts3Client, ClientCall] [] not_impl;
    "kickme far" CommandKickmeFar [Ts3Client, ClientCall] [] not_impl;
    "list add" CommandListAdd [ResolveContext, PlaylistManager] [Str, Str] pl::list_add;
    "list clear" CommandListClear [PlaylistManager] [Str] pl::list_clear;
    "list create" CommandListCreate [PlaylistManager] [Str, OptStr] pl::list_create;
    "list delete" CommandListDelete [PlaylistManager, UserSession] [Str] not_impl;
    "list delete" CommandListDelete [PlaylistManager] [Str] pl::list_delete;
    "list from" PropagiateLoad [PlaylistManager, ResolveContext] [Str, Str, Str] not_impl;
    "list import" CommandListImport [PlaylistManager, ResolveContext] [Str, Str] not_impl;
    "list insert" CommandListAdd [PlaylistManager, ResolveContext] [Str, Int, Str] pl::list_insert;
    "list item get" CommandListItemMove [PlaylistManager] [Str, Int] not_impl;
    "list item move" CommandListItemMove [PlaylistManager] [Str, Int, Int] pl::list_item_move;
    "list item delete" CommandListItemDelete [PlaylistManager] [Str, Int] pl::list_item_delete;
    "list item name" CommandListItemName [PlaylistManager] [Str, Int, Str] pl::list_item_name;
    "list list" CommandListList [PlaylistManager] [OptStr] pl::list_list;
    "list merge" CommandListMerge [PlaylistManager] [Str, Str] pl::list_merge;
    "list name" CommandListName [PlaylistManager] [Str, Str] pl::list_name;
    "list play" CommandListPlayInternal [PlaylistManager, PlayManager] [Str, OptInt] pl::list_play;
    "list queue" CommandListQueue [PlaylistManager, PlayManager] [Str] pl::list_queue;
    "list show" CommandListShow [PlaylistManager, ResolveContext] [Str, OptInt, OptInt] pl::list_show;
    "next" CommandNext [PlayManager] [] b::next;
    "param" CommandParam [] [Int] c::param;
    "pm" CommandPm [ClientCall] [] not_impl;
    "pm channel" CommandPmChannel [Ts3Client] [Str] noop;
    "pm server" CommandPmServer [Ts3Client] [Str] noop;
    "pm user" CommandPmUser [Ts3Client] [UShort, Str] noop;
    "pause" CommandPause [Player] [] b::pause;
    "play" CommandPlay [PlayManager] [Audio, StrArr] not_impl;
    "play" CommandPlay [PlayManager] [Str, StrArr] b::play;
    "play" CommandPlay [PlayManager, Player] [] b::play_resume;
    "plugin list" CommandPluginList [] [] empty_list;
    "plugin unload" CommandPluginUnload [] [Str] c::plugin_missing;
    "plugin load" CommandPluginLoad [] [Str] c::plugin_missing;
    "previous" CommandPrevious [PlayManager] [] b::previous;
    "print" CommandPrint [] [StrArr] c::print;
    "quiz" CommandQuiz [Bot] [] b::quiz;
    "quiz on" CommandQuizOn [Bot, PlayManager] [] b::quiz_on;
    "quiz off" CommandQuizOff [Bot, PlayManager] [] b::quiz_off;
    "random" CommandRandom [PlaylistManager] [] b::random;
    "random on" CommandRandomOn [PlaylistManager] [] b::random_on;
    "random off" CommandRandomOff [PlaylistManager] [] b::random_off;
    "random seed" CommandRandomSeed [PlaylistManager] [Int] noop;
    "random seed" CommandRandomSeed [PlaylistManager] [Str] b::random_seed_set;
    "random seed" CommandRandomSeed [PlaylistManager] [] b::random_seed;
    "repeat" CommandRepeat [PlaylistManager] [] b::repeat;
    "repeat off" CommandRepeatOff [PlaylistManager] [] b::repeat_off;
    "repeat one" CommandRepeatOne [PlaylistManager] [] b::repeat_one;
    "repeat all" CommandRepeatAll [PlaylistManager] [] b::repeat_all;
    "rights can" CommandRightsCan [] [StrArr] c::rights_can;
    "rights reload" CommandRightsReload [] [] empty;
    "rng" CommandRng [] [OptInt, OptInt] c::rng;
    "seek" CommandSeek [Player] [Time] b::seek;
    "search add" CommandSearchAdd [PlayManager, UserSession] [Int] not_impl;
    "search from" PropagiateSearch [UserSession, ResolveContext] [Str, Str] not_impl;
    "search get" CommandSearchGet [UserSession] [Int] not_impl;
    "search play" CommandSeachPlay [PlayManager, ClientCall, UserSession] [Int] not_impl;
    "search show" CommandSearchShow [UserSession] [] not_impl;
    "server tree" CommandServerTree [Connection] [] b::server_tree;
    "settings" CommandSettings [] [] c::settings_usage;
    "settings copy" CommandSettingsCopy [] [Str, Str] c::settings_copy;
    "settings create" CommandSettingsCreate [] [Str] c::settings_create;
    "settings delete" CommandSettingsDelete [] [Str] c::settings_delete;
    "settings get" CommandSettingsGet [ConfBot] [OptStr] b::settings_get;
    "settings set" CommandSettingsSet [ConfBot] [Str, OptStr] b::settings_set;
    "settings bot get" CommandSettingsBotGet [] [Str, OptStr] c::settings_bot_get;
    "settings bot set" CommandSettingsBotSet [] [Str, Str, OptStr] c::settings_bot_set;
    "settings bot reload" CommandSettingsReload [] [OptStr] noop;
    "settings global get" CommandSettingsGlobalGet [] [OptStr] c::settings_global_get;
    "settings global set" CommandSettingsGlobalSet [] [Str, OptStr] c::settings_global_set;
    "settings help" CommandSettingsHelp [] [Str] c::settings_help;
    "song" CommandSong [PlayManager, Player, Bot] [] b::song;
    "stop" CommandStop [PlayManager] [] b::stop;
    "subscribe" CommandSubscribe [IVoiceTarget, ClientCall] [] not_impl;
    "subscribe tempchannel" CommandSubscribeTempChannel [IVoiceTarget] [OptULong] b::subscribe_temp;
    "subscribe channel" CommandSubscribeChannel [IVoiceTarget] [ULongArr] b::subscribe_channel;
    "subscribe client" CommandSubscribeUser [IVoiceTarget] [UShort] b::subscribe_client;
    "system info" CommandSystemInfo [] [] c::system_info;
    "system quit" CommandSystemQuit [] [OptStr] c::system_quit;
    "take" CommandTake [] [Raw] c::take;
    "unsubscribe" CommandUnsubscribe [IVoiceTarget, ClientCall] [] not_impl;
    "unsubscribe channel" CommandUnsubscribeChannel [IVoiceTarget] [ULongArr] b::unsubscribe_channel;
    "unsubscribe temporary" CommandUnsubscribeTemporary [IVoiceTarget] [] b::unsubscribe_temporary;
    "unsubscribe client" CommandUnsubscribeUser [IVoiceTarget] [UShort] b::unsubscribe_client;
    "version" CommandVersion [] [] c::version;
    "volume" CommandVolume [Player, ConfBot] [Str] b::volume_set;
    "volume" CommandVolume [Player] [] b::volume;
    "whisper all" CommandWhisperAll [IVoiceTarget] [] b::whisper_all;
    "whisper group" CommandWhisperGroup [IVoiceTarget] [P::Enum("GroupWhisperType", WHISPER_TYPES), P::Enum("GroupWhisperTarget", WHISPER_TARGETS), OptULong] b::whisper_group;
    "whisper list" CommandWhisperList [IVoiceTarget] [] b::whisper_list;
    "whisper off" CommandWhisperOff [IVoiceTarget] [] b::whisper_off;
    "whisper subscription" CommandWhisperSubsription [IVoiceTarget] [] b::whisper_subscription;
    "xecute" CommandXecute [] [Raw] c::xecute;
};

fn not_impl(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Err(Fail::not_implemented())
}

/// Commands whose effect is only on the TeamSpeak side: accepted, nothing to show.
fn noop(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Null)
}

fn empty(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Empty)
}

fn empty_list(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Json(json!([])))
}

/// First parameter as text (required parameters are always present after fitting).
pub fn s0(v: &[Pv<'_>], i: usize) -> String {
    v.get(i).and_then(Pv::str).unwrap_or_default().to_string()
}
