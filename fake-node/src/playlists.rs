//! Playlists (`list *`): files under a template's `bots/<name>/playlists/`, plus the
//! special `.mix` list that is the bot's queue.
//!
//! Owns: TS3AudioBot's playlist rules and messages (temporary bots have no playlist folder,
//! name checks, "The playlist could not be found.", index range checks, `list list` patterns).
//! Does not own: playback (`state::Player`) or the bot context (`botcmds`).

use serde_json::{json, Value};

use crate::botcmds::{cur, cur_id, with_player, R};
use crate::commands::s0;
use crate::exec::{Exec, Fail, Pv, Val};
use crate::settings;
use crate::state::{self, Item, Playlist};

/// Which playlist store a bot has: its template's folder, or none (temporary bots).
fn template_of(ex: &Exec<'_>) -> Result<Option<String>, Fail> {
    let id = cur_id(ex)?;
    Ok(ex.st.bot(id).and_then(|b| b.name().map(String::from)))
}

/// `PlaylistManager.LoadPlaylist`: `.mix` is the queue, other names are files.
fn load_list(ex: &mut Exec<'_>, id: &str) -> Result<Playlist, Fail> {
    if id.starts_with('.') {
        if id != ".mix" {
            return Err(Fail::cmd("Special list not found."));
        }
        return Ok(Playlist {
            title: String::new(),
            items: cur(ex)?.player.queue.clone(),
        });
    }
    settings::check_name(id).map_err(Fail::cmd)?;
    let tpl = template_of(ex)?;
    tpl.and_then(|t| ex.st.templates.get(&t)?.playlists.get(id).cloned())
        .ok_or_else(|| Fail::cmd("The playlist could not be found."))
}

/// `PlaylistManager.ModifyPlaylist`.
fn modify_list<T>(
    ex: &mut Exec<'_>,
    id: &str,
    f: impl FnOnce(&mut Playlist) -> Result<T, Fail>,
) -> Result<T, Fail> {
    if id == ".mix" {
        let p = &mut cur(ex)?.player;
        let mut list = Playlist {
            title: String::new(),
            items: std::mem::take(&mut p.queue),
        };
        let r = f(&mut list);
        p.queue = list.items;
        return r;
    }
    load_list(ex, id)?;
    let tpl = template_of(ex)?.unwrap_or_default();
    let list = ex
        .st
        .templates
        .get_mut(&tpl)
        .and_then(|t| t.playlists.get_mut(id));
    f(list.ok_or_else(|| Fail::cmd("The playlist could not be found."))?)
}

fn index_in(list: &Playlist, i: i64) -> Result<usize, Fail> {
    usize::try_from(i)
        .ok()
        .filter(|i| *i < list.items.len())
        .ok_or_else(|| Fail::cmd("Index must be within playlist length."))
}

fn list_info(id: &str, list: &Playlist, offset: i64, count: i64) -> Value {
    let len = list.items.len() as i64;
    let off = offset.clamp(0, len);
    let cnt = count.clamp(0, 20.min(len - off).max(0));
    let items: Vec<Value> = list
        .items
        .iter()
        .skip(off as usize)
        .take(cnt as usize)
        .map(Item::to_json)
        .collect();
    json!({ "Id": id, "Title": list.title, "SongCount": len, "DisplayOffset": off, "Items": items })
}

pub fn list_create(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let id = s0(&v, 0);
    settings::check_name(&id).map_err(Fail::cmd)?;
    let title = v
        .get(1)
        .and_then(Pv::str)
        .map_or_else(|| id.clone(), String::from);
    let tpl =
        template_of(ex)?.ok_or_else(|| Fail::cmd("No playlist directory has been set up."))?;
    let lists = &mut ex.st.templates.entry(tpl).or_default().playlists;
    if lists.contains_key(&id) {
        return Err(Fail::cmd("Already exists"));
    }
    lists.insert(
        id,
        Playlist {
            title,
            items: Vec::new(),
        },
    );
    Ok(Val::Null)
}

pub fn list_delete(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let id = s0(&v, 0);
    settings::check_name(&id).map_err(Fail::cmd)?;
    let tpl = template_of(ex)?.unwrap_or_default();
    match ex
        .st
        .templates
        .get_mut(&tpl)
        .and_then(|t| t.playlists.remove(&id))
    {
        Some(_) => Ok(Val::Null),
        None => Err(Fail::cmd("The playlist could not be found.")),
    }
}

pub fn list_add(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (item, _) = state::resolve(&s0(&v, 1))?;
    let out = item.to_json();
    modify_list(ex, &s0(&v, 0), |l| {
        l.items.push(item);
        Ok(())
    })?;
    Ok(Val::Json(out))
}

pub fn list_insert(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (item, _) = state::resolve(&s0(&v, 2))?;
    let out = item.to_json();
    let at = v.get(1).and_then(Pv::int).unwrap_or(-1);
    modify_list(ex, &s0(&v, 0), |l| {
        let i = index_in(l, at)?;
        l.items.insert(i, item);
        Ok(())
    })?;
    Ok(Val::Json(out))
}

pub fn list_item_move(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let (from, to) = (
        v.get(1).and_then(Pv::int).unwrap_or(-1),
        v.get(2).and_then(Pv::int).unwrap_or(-1),
    );
    modify_list(ex, &s0(&v, 0), |l| {
        let (f, t) = (index_in(l, from)?, index_in(l, to)?);
        let it = l.items.remove(f);
        l.items.insert(t, it);
        Ok(())
    })?;
    Ok(Val::Null)
}

pub fn list_item_delete(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let at = v.get(1).and_then(Pv::int).unwrap_or(-1);
    modify_list(ex, &s0(&v, 0), |l| {
        let i = index_in(l, at)?;
        l.items.remove(i);
        Ok(())
    })?;
    Ok(Val::Empty)
}

pub fn list_item_name(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let at = v.get(1).and_then(Pv::int).unwrap_or(-1);
    let title = s0(&v, 2);
    modify_list(ex, &s0(&v, 0), |l| {
        let i = index_in(l, at)?;
        l.items[i].title = title;
        Ok(())
    })?;
    Ok(Val::Null)
}

pub fn list_clear(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    modify_list(ex, &s0(&v, 0), |l| {
        l.items.clear();
        Ok(())
    })?;
    Ok(Val::Null)
}

pub fn list_name(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let title = s0(&v, 1);
    modify_list(ex, &s0(&v, 0), |l| {
        l.title = title;
        Ok(())
    })?;
    Ok(Val::Null)
}

pub fn list_merge(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let other = load_list(ex, &s0(&v, 1))?;
    modify_list(ex, &s0(&v, 0), |l| {
        l.items.extend(other.items);
        Ok(())
    })?;
    Ok(Val::Null)
}

pub fn list_list(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let tpl = template_of(ex)?.ok_or_else(|| Fail::cmd("Temporary bots cannot have playlists"))?;
    let pattern = v.first().and_then(Pv::str).unwrap_or("*").to_string();
    let lists = ex.st.templates.get(&tpl).map(|t| &t.playlists);
    let out: Vec<Value> = lists
        .into_iter()
        .flatten()
        .filter(|(id, _)| glob(&pattern, id))
        .map(|(id, l)| json!({ "Id": id, "Title": l.title, "SongCount": l.items.len(), "DisplayOffset": 0 }))
        .collect();
    Ok(Val::Json(Value::Array(out)))
}

/// A directory-listing pattern (`*` and `?`).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn m(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    pattern.is_empty() || m(&p, &n)
}

pub fn list_play(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let list = load_list(ex, &s0(&v, 0))?;
    if list.items.is_empty() {
        return Err(Fail::cmd("Nothing to play..."));
    }
    let start = match v.get(1).and_then(Pv::int) {
        Some(i) => index_in(&list, i)?,
        None => 0,
    };
    with_player(ex, |p, b, now| p.play_list(list.items, start, b, now))
}

pub fn list_queue(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let list = load_list(ex, &s0(&v, 0))?;
    if list.items.is_empty() {
        return Ok(Val::Null);
    }
    with_player(ex, |p, b, now| p.enqueue(list.items, b, now))
}

pub fn list_show(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> R {
    let id = s0(&v, 0);
    let list = load_list(ex, &id)?;
    let (off, cnt) = (
        v.get(1).and_then(Pv::int).unwrap_or(0),
        v.get(2).and_then(Pv::int).unwrap_or(20),
    );
    Ok(Val::Json(list_info(&id, &list, off, cnt)))
}
