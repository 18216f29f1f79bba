//! Commands through the whole stack, as the spec describes them.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

#[test]
fn ids_are_reused_and_status_moves_to_connected() {
    let n = node();
    let first = get(&n, "/api/bot/connect/to/ts.example.com/pw").json();
    assert_eq!(
        first,
        json!({"Id":0,"Name":null,"Server":"ts.example.com","Status":1})
    );
    for i in 1..3 {
        assert_eq!(
            get(&n, &format!("/api/bot/connect/to/s{i}")).json()["Id"],
            i
        );
    }
    let d = get(&n, "/api/bot/use/1/(/bot/disconnect)");
    assert_eq!((d.status, d.body.len()), (204, 0));
    assert_eq!(d.header("Content-Type"), Some("application/json"));
    assert_eq!(get(&n, "/api/bot/connect/to/again").json()["Id"], 1);
    let list = get(&n, "/api/bot/list").json();
    assert!(list.as_array().unwrap().iter().all(|b| b["Status"] == 2));
    assert_eq!(n.bots()[0].server_password, "pw");
    let u = get(&n, "/api/bot/connect/to/ts.unreachable.example").json()["Id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        get(&n, &format!("/api/bot/use/{u}/(/bot/info)")).json()["Status"],
        1
    );
    assert_eq!(
        get(&n, &format!("/api/bot/use/{u}/(/bot/info/client)")).status,
        204,
        "not connected: no client"
    );
}

#[test]
fn connect_delay_keeps_bots_connecting() {
    let n = node_with(|c| c.connect_delay = Duration::from_millis(300));
    get(&n, "/api/bot/connect/to/a");
    assert_eq!(get(&n, "/api/bot/list").json()[0]["Status"], 1);
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(get(&n, "/api/bot/list").json()[0]["Status"], 2);
}

#[test]
fn bot_list_orders_named_templates_unnamed() {
    let n = node();
    n.connect_bot("temp.example");
    n.add_template("music", &[("connect.address", "ts.music")]);
    n.add_template("offline", &[]);
    let started = get(&n, "/api/bot/connect/template/music").json();
    assert_eq!(
        started,
        json!({"Id":1,"Name":"music","Server":"ts.music","Status":1})
    );
    let again = get(&n, "/api/bot/connect/template/music").json();
    assert_eq!(
        again["Id"], 1,
        "a running template answers with the running bot"
    );
    let list = get(&n, "/api/bot/list").json();
    assert_eq!(
        list,
        json!([
            {"Id":1,"Name":"music","Server":"ts.music","Status":2},
            {"Id":null,"Name":"offline","Server":"","Status":0},
            {"Id":0,"Name":null,"Server":"temp.example","Status":2}
        ])
    );
    let missing = get(&n, "/api/bot/connect/template/nope");
    assert_eq!(missing.status, 422);
    assert_eq!(
        missing.json()["ErrorMessage"],
        "Could not create new instance. (Could not find a part of the path '/fake/bots/nope/bot.toml'.)"
    );
    assert_eq!(
        get(&n, "/api/bot/info/template/offline").json(),
        json!({"Id":null,"Name":"offline","Server":"","Status":0})
    );
    assert_eq!(
        get(&n, "/api/bot/template/music/(/bot/info)").json()["Id"],
        1
    );
}

#[test]
fn bot_use_errors_and_tail_strings() {
    let n = node();
    n.connect_bot("a");
    let e = |t: &str| {
        let r = get(&n, t);
        (
            r.status,
            r.json()["ErrorMessage"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    assert_eq!(
        e("/api/bot/use/x/(/song)"),
        (400, "Could not convert \"x\" to Int32.".into())
    );
    assert_eq!(
        e("/api/bot/use/99999999999/(/song)"),
        (400, "The number is too big.".into())
    );
    assert_eq!(
        e("/api/bot/use/7/(/song)"),
        (422, "This bot does not exist.".into())
    );
    assert_eq!(
        e("/api/bot/use/0"),
        (400, "Need at least two arguments to evaluate.".into())
    );
    assert_eq!(
        e("/api/bot/connect/to"),
        (400, "Need at least one argument to evaluate.".into())
    );
    assert_eq!(
        get(&n, "/api/bot/use/%200%20/(/bot/info)").json()["Id"],
        0,
        "Int32 parsing allows whitespace"
    );
    assert_eq!(
        get(&n, "/api/bot/use/0/play/x").json(),
        json!({"Content":"play","Tail":"play"})
    );
    assert_eq!(
        get(&n, "/api/bot/use/0/play/(/song)").json(),
        json!({"Value":"play"})
    );
}

#[test]
fn parser_quirks_reach_the_node_raw() {
    let n = node();
    n.connect_bot("a");
    assert_eq!(
        get(&n, "/api/bot/use/0/(/json/merge/(/volume)/(/random").json(),
        json!([50.0, false])
    );
    assert_eq!(get(&n, "//api").status, 404);
    assert_eq!(get(&n, "/api//bot//list/").status, 200);
    assert_eq!(
        get(&n, "/api/print/'a/b)c'/d").json(),
        json!({"Value":"a/b)cd"})
    );
    assert_eq!(
        get(&n, "/api/print/%28x%29/(y").json(),
        json!({"Value":"(x)(y"})
    );
    assert_eq!(
        get(&n, "/api/print/%22q%22/a+b/%C3%A4").json(),
        json!({"Value":"\"q\"a+bä"})
    );
    let raw = send(n.addr(), "GET", b"/api/print/\"x/y\"", &[], None);
    assert_eq!(raw.json(), json!({"Value":"x/y"}));
    assert_eq!(get(&n, "/api/bot/list)/ignored").status, 200);
    let r = get(&n, "/api/bot/info/");
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        json!({"ErrorCode":17,"ErrorName":"MissingContext","ErrorMessage":"Command 'CommandBotInfo' missing execution context 'Bot'",
               "HelpMessage":"You are trying to call a command which is specific to a bot. Use '!bot use' to switch to a bot instance",
               "HelpLink":"https://github.com/Splamy/TS3AudioBot/wiki/FAQ#api-missing-context"})
    );
    let body = get(&n, "/api/bot/info/client").json();
    assert_eq!(
        body["ErrorMessage"],
        "Command 'CommandBotInfoClient' missing execution context 'Connection'"
    );
    assert!(body.get("HelpMessage").is_none());
    assert_eq!(
        get(&n, "/api/repeat/x").json()["ErrorMessage"],
        "The command contains the following subfunctions: off, one, all"
    );
}

#[test]
fn merge_unwraps_and_nulls_failures() {
    let n = node();
    n.connect_bot("a");
    assert_eq!(get(&n, "/api/json/merge").json(), json!([]));
    let m = get(&n, "/api/bot/use/0/(/json/merge/(/bot/info)/(/song)/(/repeat)/(/random)/(/volume)/(/print/x)/(/stop)/word").json();
    assert_eq!(
        m,
        json!([{"Id":0,"Name":null,"Server":"a","Status":2}, null, 0, false, 50.0, "x", null, {"Content":"word","Tail":"word"}])
    );
    assert_eq!(get(&n, "/api/bot/use/0/(/repeat)").json(), json!(0));
    assert_eq!(
        get(&n, "/api/bot/use/0/(/random)").json(),
        json!({"Value": false})
    );
    assert_eq!(
        get(&n, "/api/bot/use/0/(/volume)").json(),
        json!({"Value": 50.0})
    );
    let gone = get(
        &n,
        "/api/bot/use/0/(/json/merge/(/bot/disconnect)/(/bot/info)",
    )
    .json();
    assert_eq!(gone[0], Value::Null);
}

#[test]
fn playback_song_cover_and_fail_links() {
    let n = node();
    n.connect_bot("a");
    let idle = get(&n, "/api/bot/use/0/(/song)");
    assert_eq!(
        (idle.status, idle.json()["ErrorMessage"].clone()),
        (422, json!("There is nothing on right now..."))
    );
    let idle_cover = get(&n, "/api/bot/use/0/(/data/song/cover/get)");
    assert_eq!(idle_cover.status, 200);
    assert_eq!(idle_cover.json()["ErrorCode"], 10);
    let fail = get(&n, "/api/bot/use/0/(/play/http%3A%2F%2Fx%2Ffail.mp3)");
    assert_eq!(
        fail.status, 200,
        "plain AudioBotException: 200 with an error body"
    );
    assert_eq!(fail.json()["ErrorName"], "CommandError");
    let nothing = get(&n, "/api/bot/use/0/(/play)");
    assert_eq!(
        (nothing.status, nothing.json()["ErrorMessage"].clone()),
        (200, json!("Nothing to play..."))
    );
    assert_eq!(
        get(
            &n,
            "/api/bot/use/0/(/play/https%3A%2F%2Fexample.com%2Fa%20b.mp3%3Fx%3D1)"
        )
        .status,
        204
    );
    let song = get(&n, "/api/bot/use/0/(/song)").json();
    assert_eq!(song["Link"], "https://example.com/a b.mp3?x=1");
    assert_eq!(song["Title"], "a b.mp3");
    assert_eq!(song["Paused"], false);
    assert!(song["Length"].as_f64().unwrap() > 0.0);
    let cover = get(&n, "/api/bot/use/0/(/data/song/cover/get)");
    assert_eq!(cover.header("Content-Type"), Some("image/png"));
    assert!(cover.body.starts_with(b"\x89PNG"));
    assert_eq!(get(&n, "/api/bot/use/0/(/pause)").status, 204);
    assert_eq!(
        get(&n, "/api/bot/use/0/(/json/merge/(/pause)/(/song)").json()[1]["Paused"],
        false,
        "pause toggles"
    );
    assert_eq!(
        get(&n, "/api/bot/use/0/(/add/http%3A%2F%2Fx%2Fb.mp3)").status,
        204
    );
    assert_eq!(get(&n, "/api/bot/use/0/(/next)").status, 204);
    assert_eq!(get(&n, "/api/bot/use/0/(/song)").json()["Title"], "b.mp3");
    assert_eq!(
        get(&n, "/api/bot/use/0/(/next)").json()["ErrorMessage"],
        "No next song could be played."
    );
    let info = get(&n, "/api/bot/use/0/(/info/%40-1/5)").json();
    assert_eq!(
        (
            info["SongCount"].clone(),
            info["PlaybackIndex"].clone(),
            info["DisplayOffset"].clone()
        ),
        (json!(2), json!(1), json!(0))
    );
    assert_eq!(get(&n, "/api/bot/use/0/(/seek/1:00)").status, 204);
    assert_eq!(get(&n, "/api/bot/use/0/(/seek/99999)").status, 422);
    assert_eq!(
        get(&n, "/api/bot/use/0/(/seek/abc)").json()["ErrorMessage"],
        "Could not convert \"abc\" to TimeSpan."
    );
    assert_eq!(get(&n, "/api/bot/use/0/(/stop)").status, 204);
    assert_eq!(n.bots()[0].playing, None);
}

#[test]
fn volume_rules() {
    let n = node();
    n.connect_bot("a");
    let msg = |t: &str| {
        get(&n, t).json()["ErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(get(&n, "/api/bot/use/0/(/volume/30)").status, 204);
    assert_eq!(get(&n, "/api/bot/use/0/(/volume/+5)").status, 204);
    assert_eq!(get(&n, "/api/bot/use/0/(/volume/-2.5)").status, 204);
    assert_eq!(
        get(&n, "/api/bot/use/0/(/volume)").json(),
        json!({"Value": 32.5})
    );
    assert_eq!(
        msg("/api/bot/use/0/(/volume/abc)"),
        "The new volume could not be parsed"
    );
    assert_eq!(
        msg("/api/bot/use/0/(/volume/101)"),
        "The volume level must be between 0 and 100"
    );
    assert_eq!(
        msg("/api/volume"),
        "Command 'CommandVolume' missing execution context 'Player'"
    );
}

#[test]
fn complexity_limit() {
    let n = node();
    let calls = |k: usize| format!("/api/xecute{}", "/(/rng)".repeat(k));
    assert_eq!(get(&n, &calls(63)).status, 204, "xecute + 63 = 64 tokens");
    let over = get(&n, &calls(64));
    assert_eq!(
        (over.status, over.json()["ErrorMessage"].clone()),
        (
            422,
            json!("The command exceeded the maximum calling complexity.")
        )
    );
}

#[test]
fn restart_keeps_templates_and_identities() {
    let n = node();
    n.add_template("b", &[("run", "true")]);
    n.add_template("a", &[("run", "true")]);
    n.add_template("c", &[]);
    n.connect_bot("x");
    n.restart();
    let bots = n.bots();
    let names: Vec<_> = bots.iter().map(|b| (b.id, b.name.clone())).collect();
    assert_eq!(names, vec![(0, Some("a".into())), (1, Some("b".into()))]);
    let key = bots[0].identity_key.clone();
    assert!(key.len() >= 64);
    n.restart();
    assert_eq!(
        n.bots()[0].identity_key,
        key,
        "a template keeps its identity"
    );
    assert_eq!(n.templates(), vec!["a", "b", "c"]);
}

#[test]
fn settings_and_templates() {
    let n = node();
    let msg = |t: &str| {
        get(&n, t).json()["ErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(get(&n, "/api/settings/create/tpl").status, 204);
    assert_eq!(msg("/api/settings/create/tpl"), "The file already exists.");
    assert_eq!(
        msg("/api/settings/create/a%20b"),
        "The name contains invalid characters; please only use [a-zA-Z0-9_-]."
    );
    assert_eq!(
        msg("/api/settings/create/''"),
        "An empty name is not valid."
    );
    assert_eq!(
        msg(&format!("/api/settings/create/{}", "a".repeat(65))),
        "The name length must be <64."
    );
    assert_eq!(
        get(&n, "/api/settings/bot/set/tpl/connect.name/My%20Bot").status,
        204
    );
    assert_eq!(
        get(&n, "/api/settings/bot/get/tpl/connect.name").json(),
        json!("My Bot")
    );
    assert_eq!(
        get(&n, "/api/settings/bot/get/tpl/audio.volume").json(),
        json!({"default":50.0,"min":25.0,"max":75.0})
    );
    assert_eq!(
        msg("/api/settings/bot/get/nope"),
        "This bot does not exist."
    );
    assert_eq!(
        msg("/api/settings/bot/get/tpl/connect.x"),
        "No config key matching the pattern found."
    );
    assert_eq!(get(&n, "/api/settings/bot/set/tpl/run/yes").status, 422);
    let full = get(&n, "/api/settings/bot/get/tpl").json();
    let keys: Vec<&String> = full.as_object().unwrap().keys().collect();
    assert_eq!(
        keys[..5],
        [
            "bot_group_id",
            "generate_status_avatar",
            "set_status_description",
            "language",
            "run"
        ]
    );
    // Running the template generates an identity and persists it.
    let id = get(&n, "/api/bot/connect/template/tpl").json()["Id"]
        .as_u64()
        .unwrap();
    let ident = get(
        &n,
        &format!("/api/bot/use/{id}/(/settings/get/connect.identity)"),
    )
    .json();
    assert_eq!(ident["level"], -1);
    assert!(ident["offset"].as_u64().unwrap() < 1_000_000);
    assert_eq!(
        get(&n, "/api/settings/bot/get/tpl/connect.identity.key").json(),
        ident["key"]
    );
    assert_eq!(
        get(
            &n,
            &format!("/api/bot/use/{id}/(/settings/set/audio.volume.default/30)")
        )
        .status,
        204
    );
    assert_eq!(
        get(&n, "/api/settings/bot/get/tpl/audio.volume.default").json(),
        json!(30.0)
    );
    assert_eq!(get(&n, "/api/settings/copy/tpl/tpl2").status, 204);
    assert_eq!(
        msg("/api/settings/copy/tpl/tpl2"),
        "The target bot already exists, delete it before to overwrite."
    );
    assert_eq!(get(&n, "/api/settings/delete/tpl").status, 204);
    assert_eq!(get(&n, "/api/settings/delete/never-was").status, 204);
    assert_eq!(
        get(&n, &format!("/api/bot/use/{id}/(/bot/info)")).json()["Name"],
        Value::Null,
        "a running bot loses its name"
    );
    assert_eq!(
        get(&n, "/api/settings/global/get/web.api.matcher").json(),
        json!("exact")
    );
    assert_eq!(
        get(&n, "/api/settings/global/set/web.api.command_complexity/3").status,
        204
    );
    assert_eq!(get(&n, "/api/xecute/(/rng)/(/rng)/(/rng)").status, 422);
    assert_eq!(
        get(&n, "/api/settings").json()["ErrorName"],
        "MissingParameter"
    );
}

#[test]
fn identities_give_the_same_uid_on_every_node() {
    let (a, b) = (node(), node());
    get(&a, "/api/bot/connect/to/s");
    let key = get(&a, "/api/bot/use/0/(/settings/get/connect.identity.key)").json();
    let key = key.as_str().unwrap();
    let enc: String = key.bytes().map(|c| format!("%{c:02X}")).collect();
    get(&b, "/api/settings/create/moved");
    assert_eq!(
        get(&b, "/api/settings/bot/set/moved/connect.address/s").status,
        204
    );
    assert_eq!(
        get(
            &b,
            &format!("/api/settings/bot/set/moved/connect.identity.key/{enc}")
        )
        .status,
        204
    );
    get(&b, "/api/bot/connect/template/moved");
    let ca = get(&a, "/api/bot/use/0/(/bot/info/client)").json();
    let cb = get(&b, "/api/bot/use/0/(/bot/info/client)").json();
    assert_eq!(ca["Uid"], cb["Uid"]);
    assert_eq!(ca["Name"], "TS3AudioBot");
    assert_eq!(get(&a, "/api/bot/use/0/(/bot/name/Nick)").status, 204);
    assert_eq!(
        get(&a, "/api/bot/use/0/(/bot/info/client)").json()["Name"],
        "Nick"
    );
    assert_eq!(a.bots()[0].nickname, "Nick");
}

#[test]
fn save_playlists_and_misc_bot_commands() {
    let n = node();
    n.connect_bot("a");
    let msg = |t: &str| {
        get(&n, t).json()["ErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        msg("/api/bot/use/0/(/bot/save/x)"),
        "An error occoured saving the bot config."
    );
    assert_eq!(
        msg("/api/bot/use/0/(/list/list)"),
        "Temporary bots cannot have playlists"
    );
    let saving = node_with(|c| c.bot_save_works = true);
    saving.connect_bot("a");
    assert_eq!(get(&saving, "/api/bot/use/0/(/bot/save/keep)").status, 204);
    assert_eq!(get(&saving, "/api/bot/list").json()[0]["Name"], "keep");
    assert_eq!(
        get(&saving, "/api/bot/use/0/(/bot/save/keep)").json()["ErrorMessage"],
        "The file already exists."
    );
    let p = |t: &str| get(&saving, &format!("/api/bot/use/0/(/{t})"));
    assert_eq!(p("list/create/mix1/Title").status, 204);
    assert_eq!(
        p("list/add/mix1/http%3A%2F%2Fx%2Fa.mp3").json(),
        json!({"Link":"http://x/a.mp3","Title":"a.mp3","AudioType":"media"})
    );
    assert_eq!(
        p("list/list").json(),
        json!([{"Id":"mix1","Title":"Title","SongCount":1,"DisplayOffset":0}])
    );
    assert_eq!(p("list/show/mix1").json()["Items"][0]["Title"], "a.mp3");
    assert_eq!(p("list/play/mix1").status, 204);
    assert_eq!(p("song").json()["Link"], "http://x/a.mp3");
    assert_eq!(p("list/delete/mix1").status, 204);
    assert_eq!(
        p("list/show/mix1").json()["ErrorMessage"],
        "The playlist could not be found."
    );
    assert_eq!(p("bot/commander").json(), json!({"Value": false}));
    assert_eq!(p("bot/commander/on").status, 204);
    assert_eq!(p("bot/move/5").status, 204);
    assert_eq!(saving.bots()[0].channel, 5);
    assert_eq!(p("whisper/subscription").status, 204);
    assert_eq!(p("subscribe/channel/3/4").status, 204);
    assert_eq!(
        p("whisper/list").json(),
        json!({"SendMode":2,"GroupWhisper":null,"WhisperClients":[],"WhisperChannel":[3,4]})
    );
    assert_eq!(
        p("server/tree").json()["OwnClient"],
        p("bot/info/client").json()["Id"]
    );
    assert_eq!(p("repeat/all").status, 204);
    assert_eq!(p("repeat").json(), json!(2));
    assert_eq!(get(&saving, "/api/plugin/list").json(), json!([]));
}

#[test]
fn core_utilities() {
    let n = node();
    n.connect_bot("s");
    n.set_system_info(vec![1, 2], vec![0.5], "2021-04-09T00:00:00Z");
    assert_eq!(
        get(&n, "/api/system/info").json(),
        json!({"memory":[1,2],"cpu":[0.5],"starttime":"2021-04-09T00:00:00Z"})
    );
    let api = get(&n, "/api/json/api").json();
    assert_eq!(
        api["servers"],
        json!([{"url":"/api","description":"Your Ts3AudioBot server."},{"url":"/api/bot/use/0/(/","description":"Bot "}])
    );
    assert!(api["paths"]["/bot/list"].is_object());
    assert!(get(&n, "/api/help").json()["Value"]
        .as_str()
        .unwrap()
        .starts_with("TS3AudioBot at your service!"));
    assert_eq!(get(&n, "/api/help/all").json()[0], "add");
    assert_eq!(
        get(&n, "/api/eval/'!print%20a%20b'").json(),
        json!({"Value":"ab"})
    );
    assert_eq!(
        get(&n, "/api/if/1/%3C/2/(/print/yes)/(/print/no)").json(),
        json!({"Value":"yes"})
    );
    assert_eq!(
        get(&n, "/api/take/2/a%20b%20c").json(),
        json!({"Value":"a b"})
    );
    let r = get(&n, "/api/rng/5").json()["Value"].as_i64().unwrap();
    assert!((0..5).contains(&r));
    assert_eq!(get(&n, "/api/rights/reload").status, 204);
    assert_eq!(
        get(&n, "/api/getmy/id").json()["HelpMessage"],
        "This command is not available as API."
    );
    assert_eq!(get(&n, "/api/history/last/5").json(), json!([]));
    assert_eq!(get(&n, "/api/command/tree").status, 501);
}

#[test]
fn overloads_contexts_and_extra_arguments() {
    let n = node();
    n.connect_bot("a");
    let msg = |t: &str| {
        get(&n, t).json()["ErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        msg("/api/bot/use/0/(/add)"),
        "No matching function overload could be found."
    );
    assert_eq!(
        msg("/api/play"),
        "Command 'CommandPlay' missing execution context 'PlayManager'"
    );
    assert_eq!(
        msg("/api/list/delete/x"),
        "Command 'CommandListDelete' missing execution context 'PlaylistManager'"
    );
    assert_eq!(
        get(&n, "/api/version/extra/args").status,
        200,
        "extra arguments are ignored"
    );
    assert_eq!(
        msg("/api/bot/info/x"),
        "The command contains the following subfunctions: client, template"
    );
    assert_eq!(
        get(&n, "/api/bot/use/0/(/info)").json()["Id"],
        ".mix",
        "falls through to the string overload"
    );
    // Every overload tried costs a token: `play` without arguments tries three.
    let limit = "/api/settings/global/set/web.api.command_complexity/3";
    assert_eq!(get(&n, limit).status, 204);
    assert_eq!(
        msg("/api/bot/use/0/(/play)"),
        "The command exceeded the maximum calling complexity."
    );
}
