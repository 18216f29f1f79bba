//! Bot-level commands: what runs inside `bot use <id> (...)` / `bot template <name> (...)`.
//!
//! Owns: playback (`play`, `add`, `pause`, `stop`, `next`, `previous`, `seek`, `song`,
//! `volume`, `repeat`, `random`, `info`, cover image), the TeamSpeak side
//! (`bot info|info client|name|move|commander|disconnect|save`, `server tree`, whisper and
//! subscriptions) and the bot's own `settings get|set`, with TS3AudioBot's messages.
//! Does not own: playlists (`playlists`), or whether a bot context exists (checked by `exec`
//! before any handler runs).

use serde_json::{json, Map, Value};

use crate::commands::s0;
use crate::corecmds::{conf_get, conf_set};
use crate::exec::{Exec, Fail, Pv, Val};
use crate::settings;
use crate::state::{self, Bot, Conf, ConfRef, Item, Template};

/// A 1x1 PNG: what `data song cover get` sends while something plays.
pub const COVER_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

pub type R = Result<Val, Fail>;

pub fn cur_id(ex: &Exec<'_>) -> Result<u32, Fail> {
    ex.bot
        .filter(|id| ex.st.bot(*id).is_some())
        .ok_or_else(|| Fail::other(500, "The bot is gone."))
}

pub fn cur<'a>(ex: &'a mut Exec<'_>) -> Result<&'a mut Bot, Fail> {
    let id = cur_id(ex)?;
    ex.st
        .bot_mut(id)
        .ok_or_else(|| Fail::other(500, "The bot is gone."))
}

/// The bot's `audio.volume` [min, max], applied when a song starts.
fn bounds(ex: &Exec<'_>) -> (f32, f32) {
    let eff = ex
        .bot
        .map(|id| ex.st.effective(&ConfRef::Bot(id)))
        .unwrap_or_default();
    let v = &eff["audio"]["volume"];
    (
        v["min"].as_f64().unwrap_or(0.0) as f32,
        v["max"].as_f64().unwrap_or(100.0) as f32,
    )
}

/// Runs a player operation with the volume bounds and the clock.
pub fn with_player(
    ex: &mut Exec<'_>,
    f: impl FnOnce(&mut state::Player, (f32, f32), std::time::Instant) -> Result<(), Fail>,
) -> R {
    let (b, now) = (bounds(ex), ex.now);
    f(&mut cur(ex)?.player, b, now)?;
    Ok(Val::Null)
}

pub fn info(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let now = ex.now;
    Ok(Val::Json(cur(ex)?.info(now)))
}

/// The bot's own TS client; 204 while it is not connected (`book.Self()` is null).
pub fn info_client(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let id = cur_id(ex)?;
    let eff = ex.st.effective(&ConfRef::Bot(id));
    let now = ex.now;
    let b = cur(ex)?;
    if b.status(now) != 2 {
        return Ok(Val::Null);
    }
    Ok(Val::Json(client_json(b, &eff)))
}

fn client_json(b: &Bot, eff: &Value) -> Value {
    let uid = state::uid_of(
        eff["connect"]["identity"]["key"]
            .as_str()
            .unwrap_or_default(),
    );
    let mut groups = vec![json!(8)];
    if let Some(g) = eff["bot_group_id"].as_u64().filter(|g| *g != 0) {
        groups.push(json!(g));
    }
    json!({
        "Id": b.clid,
        "Uid": uid,
        "Name": b.nickname,
        "Channel": b.channel,
        "DatabaseId": state::dbid_of(&uid),
        "ServerGroups": groups,
        "ChannelGroup": 8,
        "Badges": eff["connect"]["badges"],
        "Description": "",
        "IsChannelCommander": b.commander,
        "TalkPowerGranted": false,
        "AwayMessage": null,
    })
}

pub fn disconnect(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let id = cur_id(ex)?;
    ex.st.stop_bot(id);
    Ok(Val::Null)
}

/// `bot save <name>`: like TS3AudioBot it normally fails (the folder is never created);
/// with `bot_save_works` it writes the template and the bot takes the name.
pub fn save(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let name = s0(&v, 0);
    settings::check_name(&name).map_err(Fail::cmd)?;
    if ex.st.templates.contains_key(&name) {
        return Err(Fail::cmd("The file already exists."));
    }
    if !ex.st.bot_save_works {
        return Err(Fail::cmd("An error occoured saving the bot config."));
    }
    let id = cur_id(ex)?;
    let overlay = ex
        .st
        .bot(id)
        .and_then(|b| ex.st.overlay(&b.conf))
        .cloned()
        .unwrap_or_default();
    ex.st.templates.insert(
        name.clone(),
        Template {
            overlay,
            ..Template::default()
        },
    );
    cur(ex)?.conf = Conf::Template(name);
    Ok(Val::Null)
}

pub fn bot_name(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    cur(ex)?.nickname = s0(&v, 0);
    Ok(Val::Null)
}

pub fn bot_move(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    cur(ex)?.channel = v.first().and_then(Pv::int).unwrap_or(1) as u64;
    Ok(Val::Null)
}

pub fn commander(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(Val::Bool(cur(ex)?.commander))
}

pub fn commander_on(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.commander = true;
    Ok(Val::Null)
}

pub fn commander_off(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.commander = false;
    Ok(Val::Null)
}

pub fn diagnose(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let b = cur(ex)?;
    let mut out = Vec::new();
    if b.player.volume == 0.0 {
        out.push(json!({ "Description": "The volume level is at 0.", "Category": "play", "Level": "Warning" }));
    }
    Ok(Val::Json(Value::Array(out)))
}

pub fn settings_get(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let id = cur_id(ex)?;
    conf_get(ex, &ConfRef::Bot(id), &s0(&v, 0))
}

pub fn settings_set(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let id = cur_id(ex)?;
    conf_set(
        ex,
        &ConfRef::Bot(id),
        &s0(&v, 0),
        v.get(1).and_then(Pv::str),
    )
}

pub fn play(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (item, _) = state::resolve(&s0(&v, 0))?;
    with_player(ex, |p, b, now| p.play_now(item, b, now))
}

pub fn from(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (item, _) = state::resolve(&s0(&v, 1))?;
    with_player(ex, |p, b, now| p.play_now(item, b, now))
}

pub fn play_resume(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    with_player(ex, |p, b, now| p.play_or_resume(b, now))
}

pub fn add(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (item, _) = state::resolve(&s0(&v, 0))?;
    with_player(ex, |p, b, now| p.enqueue(vec![item], b, now))
}

pub fn pause(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let now = ex.now;
    let p = &mut cur(ex)?.player;
    p.set_paused(!p.paused, now);
    Ok(Val::Null)
}

pub fn stop(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.player.stop();
    Ok(Val::Null)
}

pub fn next(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    with_player(ex, |p, b, now| p.next(b, now))
}

pub fn previous(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    with_player(ex, |p, b, now| p.previous(b, now))
}

pub fn clear(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.player.clear();
    Ok(Val::Null)
}

pub fn jump(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let index = index_expression(cur(ex)?.player.index, &s0(&v, 0))?;
    with_player(ex, |p, b, now| {
        p.index = usize::try_from(index).map_err(|_| Fail::plain("Nothing to play..."))?;
        p.current = None;
        p.play_or_resume(b, now)
    })
}

pub fn seek(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let t = v.first().and_then(Pv::f64).unwrap_or(0.0);
    let now = ex.now;
    let p = &mut cur(ex)?.player;
    let length = p.current.as_ref().map(|c| c.length);
    if t < 0.0 || length.is_some_and(|l| t > l) {
        return Err(Fail::cmd(
            "The point of time is not within the song length.",
        ));
    }
    if let Some(c) = p.current.as_mut() {
        c.seek_to(t, now);
    }
    Ok(Val::Null)
}

pub fn song(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let now = ex.now;
    cur(ex)?
        .player
        .song_json(now)
        .map(Val::Json)
        .ok_or_else(|| Fail::cmd("There is nothing on right now..."))
}

/// While idle the DataStream writer throws a plain AudioBotException after the status was
/// set: 200 with an error body.
pub fn cover(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(match cur(ex)?.player.current {
        Some(_) => Val::Image(COVER_PNG, "image/png"),
        None => Val::ImageError("There is nothing on right now...".into()),
    })
}

pub fn volume(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(Val::Float(cur(ex)?.player.volume))
}

pub fn volume_set(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let text = s0(&v, 0);
    let text = text.trim();
    let (rel, num) = match text.as_bytes().first() {
        Some(b'+') => (1.0, text[1..].trim_start()),
        Some(b'-') => (-1.0, text[1..].trim_start()),
        _ => (0.0, text),
    };
    let parsed: f32 = num
        .trim()
        .parse()
        .map_err(|_| Fail::cmd("The new volume could not be parsed"))?;
    let p = &mut cur(ex)?.player;
    let new = if rel == 0.0 {
        parsed
    } else {
        p.volume + rel * parsed
    };
    if !(0.0..=100.0).contains(&new) {
        return Err(Fail::cmd("The volume level must be between 0 and 100"));
    }
    p.volume = new;
    Ok(Val::Null)
}

pub fn repeat(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(Val::Json(json!(cur(ex)?.player.repeat)))
}

fn set_repeat(ex: &mut Exec<'_>, mode: u8) -> R {
    cur(ex)?.player.repeat = mode;
    Ok(Val::Null)
}

pub fn repeat_off(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    set_repeat(ex, 0)
}

pub fn repeat_one(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    set_repeat(ex, 1)
}

pub fn repeat_all(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    set_repeat(ex, 2)
}

pub fn random(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(Val::Bool(cur(ex)?.player.random))
}

pub fn random_on(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.player.random = true;
    Ok(Val::Null)
}

pub fn random_off(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.player.random = false;
    Ok(Val::Null)
}

pub fn random_seed(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur_id(ex)?;
    Ok(Val::Str("<empty>".into()))
}

pub fn random_seed_set(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    cur_id(ex)?;
    if !s0(&v, 0).chars().all(char::is_alphabetic) {
        return Err(Fail::cmd("Only letters allowed."));
    }
    Ok(Val::Null)
}

pub fn quiz(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(Val::Bool(cur(ex)?.quiz))
}

pub fn quiz_on(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.quiz = true;
    Ok(Val::Null)
}

pub fn quiz_off(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.quiz = false;
    Ok(Val::Null)
}

/// `GetIndexExpression`: `@n` is relative to the playback index, a number is absolute.
fn index_expression(index: usize, expr: &str) -> Result<i64, Fail> {
    let bad = || Fail::cmd("Unrecognized descriptor.");
    if expr.is_empty() {
        return Ok(index as i64);
    }
    if let Some(rel) = expr.strip_prefix('@') {
        let rel = rel.trim();
        let n = if rel.is_empty() {
            0
        } else {
            rel.parse::<i32>().map_err(|_| bad())?
        };
        return Ok(i64::from(n) + index as i64);
    }
    match crate::value::parse_dotnet_integer(expr) {
        Some(Some(n)) if i32::try_from(n).is_ok() => Ok(n as i64),
        _ => Err(bad()),
    }
}

/// `info [offset|@±n] [count]`: a window of the queue (default `@-1`, 3 songs, at most 20).
pub fn info_queue(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let p = &cur(ex)?.player;
    let offset = match v.first() {
        Some(Pv::Int(i)) => *i,
        Some(Pv::Str(s)) => index_expression(p.index, s)?,
        _ => index_expression(p.index, "@-1")?,
    };
    let count = v.get(1).and_then(Pv::int).unwrap_or(3);
    let len = p.queue.len() as i64;
    let off = offset.clamp(0, len);
    let cnt = count.clamp(0, 20.min(len - off).max(0));
    let items: Vec<Value> = p
        .queue
        .iter()
        .skip(off as usize)
        .take(cnt as usize)
        .map(Item::to_json)
        .collect();
    Ok(Val::Json(json!({
        "Id": ".mix", "Title": "", "SongCount": len, "DisplayOffset": off, "Items": items, "PlaybackIndex": p.index
    })))
}

/// `server tree`: the bot's view of its server (empty while not connected).
pub fn server_tree(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let id = cur_id(ex)?;
    let eff = ex.st.effective(&ConfRef::Bot(id));
    let now = ex.now;
    let b = cur(ex)?;
    if b.status(now) != 2 {
        return Ok(Val::Json(
            json!({ "OwnClient": 0, "Server": {}, "Clients": {}, "Channels": {} }),
        ));
    }
    let server = json!({ "Name": format!("TeamSpeak ]I[ Server ({})", b.address), "Platform": "Linux", "Version": "3.13.7" });
    let mut channels = Map::new();
    let mut ids = vec![1u64, 2, 3];
    if !ids.contains(&b.channel) {
        ids.push(b.channel);
    }
    for (order, cid) in ids.iter().enumerate() {
        let name = match cid {
            1 => "Default Channel".to_string(),
            2 => "Music".to_string(),
            3 => "AFK".to_string(),
            n => format!("Channel {n}"),
        };
        let prev = if order == 0 { 0 } else { ids[order - 1] };
        channels.insert(
            cid.to_string(),
            json!({ "Id": cid, "Name": name, "Parent": 0, "Order": prev, "HasPassword": false, "Subscribed": true }),
        );
    }
    let mut clients = Map::new();
    clients.insert(b.clid.to_string(), client_json(b, &eff));
    Ok(Val::Json(
        json!({ "OwnClient": b.clid, "Server": server, "Clients": clients, "Channels": channels }),
    ))
}

pub fn whisper_list(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    let w = &cur(ex)?.whisper;
    let group = match (w.send_mode, w.group) {
        (3, Some((ty, target, tid))) => json!({ "Target": target, "TargetId": tid, "Type": ty }),
        _ => Value::Null,
    };
    Ok(Val::Json(json!({
        "SendMode": w.send_mode, "GroupWhisper": group, "WhisperClients": w.clients, "WhisperChannel": w.channels
    })))
}

fn set_mode(ex: &mut Exec<'_>, mode: u8) -> R {
    cur(ex)?.whisper.send_mode = mode;
    Ok(Val::Null)
}

pub fn whisper_off(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    set_mode(ex, 1)
}

pub fn whisper_subscription(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    set_mode(ex, 2)
}

pub fn whisper_all(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur(ex)?.whisper.group = Some((3, 0, 0));
    set_mode(ex, 3)
}

pub fn whisper_group(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let ty = v.first().and_then(Pv::int).unwrap_or(0) as u8;
    let target = v.get(1).and_then(Pv::int).unwrap_or(0) as u8;
    let id = v.get(2).and_then(Pv::int);
    let tid = match (ty, id) {
        (0 | 1, None) => return Err(Fail::cmd("This type requires an additional target.")),
        (0 | 1, Some(i)) => i as u64,
        (_, Some(_)) => return Err(Fail::cmd("This type does not take an additional target.")),
        (_, None) => 0,
    };
    cur(ex)?.whisper.group = Some((ty, target, tid));
    set_mode(ex, 3)
}

fn edit_list(list: &mut Vec<u64>, ids: &[i64], add: bool) {
    for &id in ids {
        let id = id as u64;
        if add && !list.contains(&id) {
            list.push(id);
        } else if !add {
            list.retain(|x| *x != id);
        }
    }
}

pub fn subscribe_channel(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    edit_list(
        &mut cur(ex)?.whisper.channels,
        v.first().map(Pv::ints).unwrap_or_default(),
        true,
    );
    Ok(Val::Null)
}

pub fn unsubscribe_channel(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    edit_list(
        &mut cur(ex)?.whisper.channels,
        v.first().map(Pv::ints).unwrap_or_default(),
        false,
    );
    Ok(Val::Null)
}

pub fn subscribe_temp(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let ids: Vec<i64> = v.first().and_then(Pv::int).into_iter().collect();
    edit_list(&mut cur(ex)?.whisper.channels, &ids, true);
    Ok(Val::Null)
}

pub fn unsubscribe_temporary(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    cur_id(ex)?;
    Ok(Val::Null)
}

pub fn subscribe_client(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let ids: Vec<i64> = v.first().and_then(Pv::int).into_iter().collect();
    edit_list(&mut cur(ex)?.whisper.clients, &ids, true);
    Ok(Val::Null)
}

pub fn unsubscribe_client(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let ids: Vec<i64> = v.first().and_then(Pv::int).into_iter().collect();
    edit_list(&mut cur(ex)?.whisper.clients, &ids, false);
    Ok(Val::Null)
}

/// The alias table of the bot's config (`commands.alias`); the core has none.
fn aliases(ex: &Exec<'_>) -> Map<String, Value> {
    ex.bot
        .map(|id| ex.st.effective(&ConfRef::Bot(id)))
        .and_then(|e| e["commands"]["alias"].as_object().cloned())
        .unwrap_or_default()
}

pub fn alias_list(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> R {
    Ok(Val::Json(json!(aliases(ex).keys().collect::<Vec<_>>())))
}

pub fn alias_show(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    Ok(aliases(ex)
        .get(&s0(&v, 0))
        .and_then(Value::as_str)
        .map_or(Val::Null, |s| Val::Str(s.to_string())))
}

pub fn alias_add(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (name, command) = (s0(&v, 0), s0(&v, 1));
    let valid = !name.is_empty()
        && name.split(' ').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !valid {
        return Err(Fail::cmd(format!(
            "Command has an invalid invoke name: {name}"
        )));
    }
    if aliases(ex).contains_key(&name) {
        return Err(Fail::cmd("Already exists"));
    }
    let id = cur_id(ex)?;
    if let Some(o) = ex.st.overlay_mut(&ConfRef::Bot(id)) {
        settings::overlay_set(
            o,
            &[String::from("commands"), String::from("alias"), name],
            json!(command),
        );
    }
    Ok(Val::Null)
}

pub fn alias_remove(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let name = s0(&v, 0);
    if !aliases(ex).contains_key(&name) {
        return Err(Fail::cmd("Does not exist"));
    }
    let id = cur_id(ex)?;
    if let Some(alias) = ex
        .st
        .overlay_mut(&ConfRef::Bot(id))
        .and_then(|o| o.get_mut("commands"))
        .and_then(|c| c.get_mut("alias"))
        .and_then(Value::as_object_mut)
    {
        alias.remove(&name);
    }
    Ok(Val::Null)
}
