//! Node-level (core) commands: everything that needs no bot context.
//!
//! Owns: `bot list|connect to|connect template|info template|use|template`, `settings *`
//! (templates and the root config), `json merge|api`, `version`, `system info|quit`,
//! `rights *`, `help *`, and the scripting commands (`print`, `rng`, `if`, `eval`, `take`,
//! `xecute`), with TS3AudioBot's results and messages.
//! Does not own: the command table (`commands`) or bot-level commands (`botcmds`).

use serde_json::{json, Value};

use crate::commands::{s0, DEFS};
use crate::exec::{registered_rights, tree, Exec, Fail, Pv, TNode, Val, P};
use crate::parser::{self, Syntax};
use crate::settings;
use crate::state::{ConfRef, Template};

fn missing_template_path(ex: &Exec<'_>, name: &str) -> String {
    let dir = ex.st.root["configs"]["bots_path"]
        .as_str()
        .unwrap_or("bots");
    format!("Could not find a part of the path '{dir}/{name}/bot.toml'.")
}

pub fn bot_list(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Json(ex.st.bot_list(ex.now)))
}

/// The BotInfo of a bot that was just started: it is always still connecting.
fn fresh_info(ex: &Exec<'_>, id: u32) -> Val {
    let mut info = ex.st.bot(id).map_or(Value::Null, |b| b.info(ex.now));
    info["Status"] = json!(1);
    Val::Json(info)
}

pub fn connect_to(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let id = ex
        .st
        .connect_to(&s0(&v, 0), v.get(1).and_then(Pv::str), ex.now);
    Ok(fresh_info(ex, id))
}

pub fn connect_template(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let name = s0(&v, 0);
    let fail = |m: &str| Fail::cmd(format!("Could not create new instance. ({m})"));
    settings::check_name(&name).map_err(fail)?;
    if let Some(id) = ex.st.bot_by_name(&name) {
        return Ok(Val::Json(
            ex.st.bot(id).map_or(Value::Null, |b| b.info(ex.now)),
        ));
    }
    if !ex.st.templates.contains_key(&name) {
        return Err(fail(&missing_template_path(ex, &name)));
    }
    let id = ex.st.start_bot(crate::state::Conf::Template(name), ex.now);
    Ok(fresh_info(ex, id))
}

pub fn info_template(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let name = s0(&v, 0);
    if let Some(id) = ex.st.bot_by_name(&name) {
        return Ok(Val::Json(
            ex.st.bot(id).map_or(Value::Null, |b| b.info(ex.now)),
        ));
    }
    settings::check_name(&name).map_err(Fail::cmd)?;
    if !ex.st.templates.contains_key(&name) {
        return Err(Fail::cmd(missing_template_path(ex, &name)));
    }
    Ok(Val::Json(ex.st.offline_info(&name)))
}

pub fn bot_use(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let id = v.first().and_then(Pv::int).unwrap_or(-1);
    let cmd = v.get(1).and_then(Pv::cmd);
    let found = u32::try_from(id).ok().filter(|i| ex.st.bot(*i).is_some());
    match (found, cmd) {
        (Some(id), Some(cmd)) => ex.in_bot(id, |ex| ex.exec_node(cmd, &[])),
        _ => Err(Fail::cmd("This bot does not exist.")),
    }
}

pub fn bot_template(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let found = ex.st.bot_by_name(&s0(&v, 0));
    match (found, v.get(1).and_then(Pv::cmd)) {
        (Some(id), Some(cmd)) => ex.in_bot(id, |ex| ex.exec_node(cmd, &[])),
        _ => Err(Fail::cmd("This bot does not exist.")),
    }
}

pub fn settings_usage(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Err(Fail::missing_param(
        "Please specify a key. E.g 'rights.path', 'web.api.enabled', 'tools.*'",
    ))
}

pub fn settings_create(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let name = s0(&v, 0);
    settings::check_name(&name).map_err(Fail::cmd)?;
    if ex.st.templates.contains_key(&name) {
        return Err(Fail::cmd("The file already exists."));
    }
    ex.st.templates.insert(name, Template::default());
    Ok(Val::Null)
}

pub fn settings_copy(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let (from, to) = (s0(&v, 0), s0(&v, 1));
    settings::check_name(&from).map_err(Fail::cmd)?;
    settings::check_name(&to).map_err(Fail::cmd)?;
    let Some(src) = ex.st.templates.get(&from) else {
        return Err(Fail::cmd("The source bot does not exist."));
    };
    if ex.st.templates.contains_key(&to) {
        return Err(Fail::cmd(
            "The target bot already exists, delete it before to overwrite.",
        ));
    }
    // Only bot.toml is copied, not the playlists.
    let copy = Template {
        overlay: src.overlay.clone(),
        ..Template::default()
    };
    ex.st.templates.insert(to, copy);
    Ok(Val::Null)
}

pub fn settings_delete(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let name = s0(&v, 0);
    settings::check_name(&name).map_err(Fail::cmd)?;
    ex.st.delete_template(&name);
    Ok(Val::Null)
}

/// `GetConf`: a running bot with that template name, else the template itself.
fn conf_by_name(ex: &Exec<'_>, name: &str) -> Result<ConfRef, Fail> {
    if let Some(id) = ex.st.bot_by_name(name) {
        return Ok(ConfRef::Bot(id));
    }
    if settings::check_name(name).is_ok() && ex.st.templates.contains_key(name) {
        return Ok(ConfRef::Template(name.to_string()));
    }
    Err(Fail::cmd("This bot does not exist."))
}

/// `settings get` on any bot config.
pub fn conf_get(ex: &Exec<'_>, conf: &ConfRef, path: &str) -> Result<Val, Fail> {
    ex.st.conf_get(conf, path).map(Val::Json)
}

/// `settings set` on any bot config.
pub fn conf_set(
    ex: &mut Exec<'_>,
    conf: &ConfRef,
    path: &str,
    value: Option<&str>,
) -> Result<Val, Fail> {
    ex.st.conf_set(conf, path, value)?;
    Ok(Val::Null)
}

pub fn settings_bot_get(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let conf = conf_by_name(ex, &s0(&v, 0))?;
    conf_get(ex, &conf, &s0(&v, 1))
}

pub fn settings_bot_set(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let conf = conf_by_name(ex, &s0(&v, 0))?;
    conf_set(ex, &conf, &s0(&v, 1), v.get(2).and_then(Pv::str))
}

pub fn settings_global_get(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let (_, val) = settings::get_single(&ex.st.root, &s0(&v, 0))?;
    Ok(Val::Json(val.clone()))
}

pub fn settings_global_set(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let (p, default) = settings::get_single(&ex.st.root, &s0(&v, 0))?;
    let sets = settings::parse_set(&p, default, v.get(1).and_then(Pv::str))
        .map_err(|e| Fail::cmd(format!("Failed to set the value ({e}).")))?;
    if let Value::Object(root) = &mut ex.st.root {
        for (p, val) in sets {
            settings::overlay_set(root, &p, val);
        }
    }
    Ok(Val::Null)
}

pub fn settings_help(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    settings::get_single(&ex.st.root, &s0(&v, 0))?;
    Ok(Val::Str("<empty>".into()))
}

pub fn json_merge(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let mut out = Vec::new();
    for node in v.first().map(Pv::raw).unwrap_or_default() {
        match ex.exec_node(node, &[]) {
            Ok(val) => out.push(val.to_merge_json()),
            Err(f) if f.is_audiobot() => out.push(Value::Null),
            Err(f) => return Err(f),
        }
    }
    Ok(Val::Json(Value::Array(out)))
}

pub fn json_api(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let mut paths = serde_json::Map::new();
    for def in DEFS {
        let mut path = format!("/{}", def.path.replace(' ', "/"));
        let mut params = Vec::new();
        for (i, p) in def.params.iter().enumerate() {
            if *p == P::Raw {
                continue;
            }
            let name = format!("arg{i}");
            path.push_str(&format!("/{{{name}}}"));
            params.push(json!({ "name": name, "in": "path", "description": "useful help", "required": true, "schema": { "type": "string" } }));
        }
        let op = json!({
            "tags": [def.path.split(' ').next().unwrap_or_default()],
            "operationId": def.path.replace(' ', "_"),
            "parameters": params,
            "responses": { "200": { "description": "Success" } }
        });
        paths.entry(path).or_insert_with(|| json!({ "get": op }));
    }
    let mut servers = vec![json!({ "url": "/api", "description": "Your Ts3AudioBot server." })];
    for b in ex.st.running() {
        servers.push(json!({ "url": format!("/api/bot/use/{}/(/", b.id), "description": format!("Bot {}", b.name().unwrap_or_default()) }));
    }
    Ok(Val::Json(json!({
        "openapi": "3.0.0",
        "info": { "version": "1.0.0", "title": "Ts3AudioBot API", "description": "The Ts3AudioBot api interface." },
        "paths": paths,
        "servers": servers,
        "components": { "securitySchemes": { "default_basic": { "type": "http", "scheme": "basic" } } },
        "security": [{ "default_basic": [] }]
    })))
}

pub fn version(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Json(
        json!({ "Version": "0.12.0", "Branch": "master", "CommitSha": "4c6be036", "BuildConfiguration": "Release" }),
    ))
}

pub fn system_info(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let s = &ex.st.sysinfo;
    Ok(Val::Json(
        json!({ "memory": s.memory, "cpu": s.cpu, "starttime": s.starttime }),
    ))
}

pub fn system_quit(ex: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    ex.effects.push(crate::exec::Effect::Quit);
    Ok(Val::Empty)
}

/// `rights can`: the requested rights (wildcards expanded over the registered ones) that the
/// caller holds, in registration order.
pub fn rights_can(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let mut wanted: Vec<String> = Vec::new();
    for r in v.first().map(Pv::strs).unwrap_or_default() {
        match r.find('*') {
            None => wanted.push(r.clone()),
            Some(0) => wanted.extend(registered_rights().map(String::from)),
            Some(i) if r.as_bytes()[i - 1] == b'.' => {
                let prefix = &r[..i - 1];
                wanted.extend(
                    registered_rights()
                        .filter(|x| x.starts_with(prefix))
                        .map(String::from),
                );
            }
            Some(_) => {
                return Err(Fail::other(
                    500,
                    format!("The right \"{r}\" has a misused wildcard."),
                ))
            }
        }
    }
    let mut out: Vec<&str> = Vec::new();
    for r in registered_rights() {
        if wanted.iter().any(|w| w == r) && ex.caller.has(r) && !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(Val::Json(json!(out)))
}

pub fn help(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Str(
        "TS3AudioBot at your service!\nTo get some basic help on how to get started use one of the following commands:\n\
         !help play : basics for playing songs\n!help playlists : how to manage playlists\n\
         !help history : viewing and accesing the play history\n!help bot : useful features to configure your bot\n\
         !help all : show all commands\n!help command <command path> : help text of a specific command\n"
            .into(),
    ))
}

pub fn help_all(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let keys: Vec<&str> = tree().root.children.iter().map(|(k, _)| *k).collect();
    Ok(Val::Json(json!(keys)))
}

pub fn help_play(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Str(String::new()))
}

pub fn help_command(_: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let words = v.first().map(Pv::strs).unwrap_or_default();
    if words.is_empty() {
        return Ok(Val::Empty);
    }
    let mut node: Option<&TNode> = None;
    let mut group = &tree().root;
    for (i, w) in words.iter().enumerate() {
        let Some((_, found)) = group.children.iter().find(|(k, _)| k == w) else {
            return Err(Fail::cmd(
                "No matching command found! Try !help to get a list of all commands.",
            ));
        };
        node = Some(found);
        if i + 1 < words.len() {
            match found {
                TNode::Group(g) => group = g,
                _ => {
                    return Err(Fail::cmd(format!(
                        "The command has no further subfunctions after {}",
                        words[..i].join(" ")
                    )))
                }
            }
        }
    }
    Ok(match node {
        Some(TNode::Group(g)) => Val::Json(json!(g
            .children
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>())),
        Some(TNode::Func(i)) => {
            let def = &DEFS[*i];
            Val::Json(
                json!({ "Name": def.path, "Description": null, "Return": "Object", "Parameter": [], "Modules": [] }),
            )
        }
        _ => Val::Str(format!("\n!{}", words.join(" "))),
    })
}

pub fn print(_: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Ok(Val::Str(
        v.first().map(Pv::strs).unwrap_or_default().concat(),
    ))
}

pub fn rng(_: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    use rand::Rng;
    let mut r = rand::rng();
    let (a, b) = (v.first().and_then(Pv::int), v.get(1).and_then(Pv::int));
    let n = match (a, b) {
        (Some(a), Some(b)) if a == b => a,
        (Some(a), Some(b)) => r.random_range(a.min(b)..a.max(b)),
        (Some(a), None) if a <= 0 => return Err(Fail::cmd("Value must be 0 or positive.")),
        (Some(a), None) => r.random_range(0..a),
        _ => r.random_range(0..100),
    };
    Ok(Val::Int(n))
}

pub fn param(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Err(Fail::cmd("No parameter available"))
}

pub fn plugin_missing(_: &mut Exec<'_>, _: Vec<Pv<'_>>) -> Result<Val, Fail> {
    Err(Fail::cmd("Plugin error: PluginNotFound"))
}

pub fn xecute(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    for node in v.first().map(Pv::raw).unwrap_or_default() {
        ex.exec_node(node, &[])?;
    }
    Ok(Val::Null)
}

/// `eval`: the first argument's text is parsed as chat syntax and run on the rest.
pub fn eval(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let args = v.first().map(Pv::raw).unwrap_or_default();
    let Some((first, rest)) = args.split_first() else {
        return Err(Fail::at_least(1));
    };
    let text = match ex.exec_node(first, &[])? {
        Val::Null => return Ok(Val::Null),
        other => other.to_text(),
    };
    let node = parser::to_node(parser::parse(text.as_bytes(), Syntax::Chat));
    ex.exec_node(&node, rest)
}

pub fn cmd_if(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let (a, cmp, b) = (s0(&v, 0), s0(&v, 1), s0(&v, 2));
    let check: fn(f64, f64) -> bool = match cmp.as_str() {
        "<" => |x, y| x < y,
        ">" => |x, y| x > y,
        "<=" => |x, y| x <= y,
        ">=" => |x, y| x >= y,
        "==" => |x, y| (x - y).abs() < 1e-6,
        "!=" => |x, y| (x - y).abs() > 1e-6,
        _ => return Err(Fail::cmd("Unknown comparison operator.")),
    };
    let result = match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => check(x, y),
        _ => check(a.cmp(&b) as i32 as f64, 0.0),
    };
    let branch = if result { v.get(3) } else { v.get(4) };
    match branch.and_then(Pv::cmd) {
        Some(node) => ex.exec_node(node, &[]),
        None => Ok(Val::Null),
    }
}

pub fn take(ex: &mut Exec<'_>, v: Vec<Pv<'_>>) -> Result<Val, Fail> {
    let args = v.first().map(Pv::raw).unwrap_or_default();
    if args.len() < 2 {
        return Err(Fail::at_least(2));
    }
    let int = |s: &str| {
        crate::value::parse_dotnet_integer(s)
            .flatten()
            .filter(|n| (0..=i128::from(i32::MAX)).contains(n))
    };
    let count = int(&ex.exec_node(args[0], &[])?.to_text())
        .ok_or_else(|| Fail::cmd("Count must be an integer >= 0"))?;
    let mut start = 0;
    if args.len() > 2 {
        start = int(&ex.exec_node(args[1], &[])?.to_text())
            .ok_or_else(|| Fail::cmd("Start must be an integer >= 0"))?;
    }
    let delim = if args.len() > 3 {
        Some(ex.exec_node(args[2], &[])?.to_text())
    } else {
        None
    };
    let text = ex.exec_node(args[(args.len() - 1).min(3)], &[])?.to_text();
    let parts: Vec<&str> = match &delim {
        Some(d) if !d.is_empty() => text.split(d.as_str()).collect(),
        _ => text.split(char::is_whitespace).collect(),
    };
    let (start, count) = (start as usize, count as usize);
    if parts.len() < start + count {
        return Err(Fail::cmd("Not enough arguments to take."));
    }
    Ok(Val::Str(
        parts[start..start + count].join(delim.as_deref().unwrap_or(" ")),
    ))
}
