//! Config trees: the root `ts3audiobot.toml` and per-bot `bot.toml` as JSON, with the
//! inheritance, path lookup and typed `settings set` parsing TS3AudioBot applies.
//!
//! Owns: the default tree (keys in TS3AudioBot's order, TOML names), overlays holding only
//! explicitly set values (what a `bot.toml` holds), merging an overlay over the root `[bot]`
//! defaults, resolving dotted paths with `*` and `[..]`, and turning a `settings set` value
//! (raw text for strings and times, JSON for everything else) into a typed value.
//! Does not own: which overlay belongs to which bot or template (`state`), or errors' HTTP form.

use serde_json::{json, Map, Value};

/// The root config's defaults (what `settings global get` shows on a fresh node).
pub fn root_defaults() -> Value {
    json!({
        "bot": bot_defaults(),
        "configs": { "bots_path": "/fake/bots", "send_stats": true },
        "db": { "path": "ts3audiobot.db" },
        "factories": {
            "media": { "path": "" },
            "youtube": { "prefer_resolver": 1, "youtube_api_key": "" }
        },
        "tools": { "youtube-dl": { "path": "" }, "ffmpeg": { "path": "ffmpeg" } },
        "rights": { "path": "rights.toml" },
        "plugins": { "path": "plugins", "load": {} },
        "web": {
            "hosts": ["*"],
            "port": 58913,
            "api": { "enabled": true, "command_complexity": 64, "matcher": "exact" },
            "interface": { "enabled": true, "path": "" }
        }
    })
}

/// The `[bot]` defaults every bot and template inherits.
pub fn bot_defaults() -> Value {
    let pw = json!({ "pw": "", "hashed": false, "autohash": false });
    json!({
        "bot_group_id": 0,
        "generate_status_avatar": true,
        "set_status_description": true,
        "language": "en",
        "run": false,
        "commands": {
            "matcher": "ic3",
            "long_message": 0,
            "long_message_split_limit": 1,
            "color": true,
            "command_complexity": 64,
            "alias": {}
        },
        "connect": {
            "address": "",
            "channel": "",
            "badges": "",
            "name": "TS3AudioBot",
            "server_password": pw.clone(),
            "channel_password": pw,
            "client_version": { "build": "", "platform": "", "sign": "" },
            "identity": { "key": "", "offset": 0, "level": -1 }
        },
        "reconnect": {
            "ontimeout": ["1s", "2s", "5s", "10s", "30s", "1m", "5m", "repeat last"],
            "onkick": [],
            "onban": [],
            "onerror": ["30s", "repeat last"],
            "onshutdown": ["5m"]
        },
        "audio": {
            "volume": { "default": 50.0, "min": 25.0, "max": 75.0 },
            "max_user_volume": 100.0,
            "bitrate": 48,
            "send_mode": "voice"
        },
        "playlists": {},
        "history": { "enabled": true, "fill_deleted_ids": true },
        "events": {
            "onconnect": "",
            "ondisconnect": "",
            "onidle": "",
            "idletime": "00:00:00",
            "onalone": "",
            "alone_delay": "00:00:00",
            "onparty": "",
            "party_delay": "00:00:00",
            "onsongstart": ""
        }
    })
}

/// Settings stored as TimeSpans (set as raw text, shown as `hh:mm:ss`).
const TIME_KEYS: &[&str] = &["idletime", "alone_delay", "party_delay"];
/// Tables whose children are created on demand (`commands.alias`).
const DYNAMIC_TABLES: &[&str] = &["alias"];

/// Why a path or value was refused.
#[derive(Debug, PartialEq)]
pub enum ConfError {
    /// A `CommandError` (422) with this message.
    Command(String),
    /// A .NET `ArgumentException` from the path parser (500, ErrorCode 0).
    Argument(String),
}

/// Looks `path` up in `tree` (the effective tree) and returns the one node it names.
pub fn get_single<'a>(tree: &'a Value, path: &str) -> Result<(Vec<String>, &'a Value), ConfError> {
    let matches = resolve(tree, path)?;
    match matches.len() {
        0 => Err(ConfError::Command(
            "No config key matching the pattern found.".into(),
        )),
        1 => {
            let p = matches.into_iter().next().unwrap_or_default();
            let v = lookup(tree, &p).unwrap_or(&Value::Null);
            Ok((p, v))
        }
        _ => {
            let keys: Vec<&str> = matches
                .iter()
                .take(3)
                .map(|p| p.last().map_or("", String::as_str))
                .collect();
            Err(ConfError::Command(format!(
                "Found more than one matching key: {}\n",
                keys.join("\n  ")
            )))
        }
    }
}

/// Follows a concrete path.
pub fn lookup<'a>(tree: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(tree, |node, key| node.as_object()?.get(key))
}

fn is_ident_start(c: char) -> bool {
    !matches!(c, '.' | '[' | ']' | '*')
}

/// Resolves a path expression into the concrete paths it matches (TS3AudioBot's
/// `ConfigPart.ByPath`: identifiers, `.`, `*` wildcards and `[name]` / `[*]` indexers).
pub fn resolve(tree: &Value, path: &str) -> Result<Vec<Vec<String>>, ConfError> {
    let arg = |m: &str| ConfError::Argument(format!("{m} (Parameter 'pathM')"));
    if path.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    let mut current: Vec<Vec<String>> = vec![Vec::new()];
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    let mut expect_ident = true;
    while i < chars.len() {
        let c = chars[i];
        if expect_ident {
            match c {
                '*' => {
                    current = expand_all(tree, &current);
                    i += 1;
                }
                '[' => return Err(arg("Invalid array open bracket")),
                ']' => return Err(arg("Invalid array close bracket")),
                '.' => return Err(arg("Invalid dot")),
                _ => {
                    let start = i;
                    while i < chars.len() && is_ident_start(chars[i]) {
                        i += 1;
                    }
                    if i < chars.len() && chars[i] == '*' {
                        return Err(arg("Invalid wildcard position"));
                    }
                    let name: String = chars[start..i].iter().collect();
                    current = child(tree, &current, &name);
                }
            }
            expect_ident = false;
            continue;
        }
        match c {
            '.' => {
                if i + 1 >= chars.len() || !is_ident_start(chars[i + 1]) && chars[i + 1] != '*' {
                    return Err(arg("Expected identifier after dot"));
                }
                i += 1;
                expect_ident = true;
            }
            '[' => {
                let close = chars[i..].iter().position(|&c| c == ']').map(|p| p + i);
                let Some(close) = close else {
                    return Err(arg("Missing array close bracket"));
                };
                let inner: String = chars[i + 1..close].iter().collect();
                current = if inner == "*" {
                    expand_all(tree, &current)
                } else {
                    child(tree, &current, &inner)
                };
                i = close + 1;
            }
            _ => return Err(arg("Invalid expression name identifier")),
        }
    }
    Ok(current)
}

fn child(tree: &Value, current: &[Vec<String>], name: &str) -> Vec<Vec<String>> {
    current
        .iter()
        .filter(|p| {
            lookup(tree, p)
                .and_then(Value::as_object)
                .is_some_and(|o| o.contains_key(name))
        })
        .map(|p| {
            let mut p = p.clone();
            p.push(name.to_string());
            p
        })
        .collect()
}

fn expand_all(tree: &Value, current: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in current {
        if let Some(o) = lookup(tree, p).and_then(Value::as_object) {
            for k in o.keys() {
                let mut q = p.clone();
                q.push(k.clone());
                out.push(q);
            }
        }
    }
    out
}

/// Merges an overlay (explicit values) over defaults.
pub fn merged(defaults: &Value, overlay: &Map<String, Value>) -> Value {
    let mut out = defaults.clone();
    merge_into(&mut out, overlay);
    out
}

fn merge_into(target: &mut Value, overlay: &Map<String, Value>) {
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in overlay {
        match (t.get_mut(k), v) {
            (Some(existing @ Value::Object(_)), Value::Object(o)) => merge_into(existing, o),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Writes one explicit value into an overlay, creating the tables on the way.
pub fn overlay_set(overlay: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, dirs)) = path.split_last() else {
        return;
    };
    let mut node = overlay;
    for d in dirs {
        let entry = node
            .entry(d.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
    node.insert(last.clone(), value);
}

/// Parses `raw` for the setting at `path` (whose default shape is `default`) into the
/// explicit values to store, as (path, value) pairs. `None` raw is TS3AudioBot's `""`.
pub fn parse_set(
    path: &[String],
    default: &Value,
    raw: Option<&str>,
) -> Result<Vec<(Vec<String>, Value)>, String> {
    let raw = raw.unwrap_or("");
    let key = path.last().map_or("", String::as_str);
    if default.is_string() || matches!(default, Value::Null) {
        if TIME_KEYS.contains(&key) {
            return parse_time(raw).map(|t| vec![(path.to_vec(), Value::String(t))]);
        }
        return Ok(vec![(path.to_vec(), Value::String(raw.to_string()))]);
    }
    let json: Value =
        serde_json::from_str(raw).map_err(|e| format!("Could not read value: {e}"))?;
    from_json(path, default, &json)
}

fn from_json(
    path: &[String],
    default: &Value,
    json: &Value,
) -> Result<Vec<(Vec<String>, Value)>, String> {
    let key = path.last().map_or("", String::as_str);
    let one = |v: Value| Ok(vec![(path.to_vec(), v)]);
    match default {
        Value::Object(children) => {
            let Value::Object(given) = json else {
                return Err(format!(
                    "Wrong type, expected start of object but found {}",
                    token_name(json)
                ));
            };
            let mut out = Vec::new();
            for (k, v) in given {
                let mut p = path.to_vec();
                p.push(k.clone());
                match children.get(k) {
                    Some(d) => out.extend(from_json(&p, d, v)?),
                    None if DYNAMIC_TABLES.contains(&key) => {
                        out.extend(from_json(&p, &Value::String(String::new()), v)?)
                    }
                    None => return Err("No child found".into()),
                }
            }
            Ok(out)
        }
        Value::Array(_) => match json {
            Value::Array(items) if items.iter().all(Value::is_string) => one(json.clone()),
            Value::Array(_) => Err("Wrong type, expected String".into()),
            other => Err(format!(
                "Wrong type, expected array but found {}",
                token_name(other)
            )),
        },
        Value::Bool(_) => match json {
            Value::Bool(_) => one(json.clone()),
            Value::Number(n) => one(Value::Bool(n.as_f64().is_some_and(|f| f != 0.0))),
            Value::String(s)
                if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
            {
                one(Value::Bool(s.eq_ignore_ascii_case("true")))
            }
            other => Err(format!(
                "Wrong type, expected Boolean, got {}",
                token_name(other)
            )),
        },
        Value::Number(d) => {
            let n = match json {
                Value::Number(n) => Some(n.clone()),
                Value::String(s) => s.trim().parse::<serde_json::Number>().ok(),
                _ => None,
            };
            let Some(n) = n else {
                return Err(format!(
                    "Wrong type, expected Number, got {}",
                    token_name(json)
                ));
            };
            if d.is_f64() {
                one(json!(n.as_f64().unwrap_or_default()))
            } else if key == "offset" || key == "bot_group_id" {
                n.as_u64()
                    .map(|u| json!(u))
                    .ok_or_else(|| "Value was either too large or too small for a UInt64.".into())
                    .and_then(one)
            } else {
                n.as_i64()
                    .filter(|i| i32::try_from(*i).is_ok())
                    .map(|i| json!(i))
                    .ok_or_else(|| "Value was either too large or too small for an Int32.".into())
                    .and_then(one)
            }
        }
        Value::String(_) | Value::Null => match json {
            Value::String(s) if TIME_KEYS.contains(&key) => {
                parse_time(s).map(|t| vec![(path.to_vec(), Value::String(t))])
            }
            Value::String(_) => one(json.clone()),
            Value::Number(_) | Value::Bool(_) => one(Value::String(json.to_string())),
            other => Err(format!(
                "Wrong type, expected String, got {}",
                token_name(other)
            )),
        },
    }
}

fn token_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "Float",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "StartArray",
        Value::Object(_) => "StartObject",
    }
}

/// Parses a TimeSpan the way TS3AudioBot's config reader does (an ISO 8601 duration, with
/// `PT` implied: `30s`, `1h5m`, `PT30S`, `P1DT2H`) and formats it as .NET's `c` format.
pub fn parse_time(raw: &str) -> Result<String, String> {
    let mut s = raw.trim().to_ascii_uppercase();
    if !s.starts_with('P') {
        s = if s.contains('T') {
            format!("P{s}")
        } else {
            format!("PT{s}")
        };
    }
    iso_duration(&s).map(format_timespan).ok_or_else(|| {
        format!("Could not read value: The string '{raw}' is not a valid TimeSpan value.")
    })
}

/// `XmlConvert.ToTimeSpan`: an ISO 8601 duration (`PT1H2M3.5S`, `P1D`), in seconds.
pub fn iso_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let body = s.strip_prefix('P')?;
    let mut total = 0f64;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in body.chars() {
        match c {
            'T' if !in_time && num.is_empty() => in_time = true,
            '0'..='9' | '.' => num.push(c),
            'D' | 'H' | 'M' | 'S' if !num.is_empty() => {
                let v: f64 = num.parse().ok()?;
                total += v * match (c, in_time) {
                    ('D', false) => 86_400.0,
                    ('H', true) => 3_600.0,
                    ('M', true) => 60.0,
                    ('S', true) => 1.0,
                    _ => return None,
                };
                num.clear();
                any = true;
            }
            _ => return None,
        }
    }
    (any && num.is_empty()).then_some(if neg { -total } else { total })
}

/// .NET `TimeSpan.ToString()` (`[d.]hh:mm:ss[.fffffff]`).
pub fn format_timespan(secs: f64) -> String {
    let ticks = (secs * 10_000_000.0).round() as u64;
    let whole = ticks / 10_000_000;
    let frac = ticks % 10_000_000;
    let (d, h, m, s) = (
        whole / 86_400,
        whole / 3_600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    let mut out = if d > 0 {
        format!("{d}.{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    };
    if frac > 0 {
        out.push_str(&format!(".{frac:07}"));
    }
    out
}

/// TS3AudioBot's template name check (`Util.IsSafeFileName`).
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("An empty name is not valid.");
    }
    if name.chars().count() > 64 {
        return Err("The name length must be <64.");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("The name contains invalid characters; please only use [a-zA-Z0-9_-].");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn paths_resolve_like_ts3audiobot() {
        let t = bot_defaults();
        assert_eq!(
            get_single(&t, "connect.name").map(|x| x.1.clone()),
            Ok(json!("TS3AudioBot"))
        );
        assert_eq!(get_single(&t, "").map(|x| x.0), Ok(vec![]));
        assert_eq!(
            get_single(&t, "connect.nope"),
            Err(ConfError::Command(
                "No config key matching the pattern found.".into()
            ))
        );
        assert!(
            matches!(get_single(&t, "connect.*"), Err(ConfError::Command(m)) if m.starts_with("Found more than one matching key: address\n  channel\n  badges"))
        );
        assert_eq!(
            get_single(&t, "audio.volume[default]").map(|x| x.1.clone()),
            Ok(json!(50.0))
        );
        assert!(matches!(get_single(&t, ".x"), Err(ConfError::Argument(_))));
    }

    #[test]
    fn values_parse_by_type() {
        let t = bot_defaults();
        let set = |path: &str, raw: &str| {
            let d = lookup(&t, &p(path)).cloned().unwrap_or(Value::Null);
            parse_set(&p(path), &d, Some(raw))
        };
        assert_eq!(
            set("connect.name", "My Bot"),
            Ok(vec![(p("connect.name"), json!("My Bot"))])
        );
        assert_eq!(set("run", "true"), Ok(vec![(p("run"), json!(true))]));
        assert_eq!(
            set("audio.volume.default", "30"),
            Ok(vec![(p("audio.volume.default"), json!(30.0))])
        );
        assert_eq!(
            set("connect.identity.offset", "12345"),
            Ok(vec![(p("connect.identity.offset"), json!(12345))])
        );
        assert_eq!(
            set("events.idletime", "3m30s"),
            Ok(vec![(p("events.idletime"), json!("00:03:30"))])
        );
        assert!(set("run", "yes").is_err());
        let table = set("audio.volume", r#"{"min":10,"max":90}"#).unwrap_or_default();
        assert_eq!(
            table,
            vec![
                (p("audio.volume.min"), json!(10.0)),
                (p("audio.volume.max"), json!(90.0))
            ]
        );
    }

    #[test]
    fn overlays_merge_over_defaults() {
        let mut o = Map::new();
        overlay_set(&mut o, &p("connect.address"), json!("ts.example.com"));
        let m = merged(&bot_defaults(), &o);
        assert_eq!(m["connect"]["address"], "ts.example.com");
        assert_eq!(m["connect"]["name"], "TS3AudioBot");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("ok_Name-1"), Ok(()));
        assert_eq!(check_name(" "), Err("An empty name is not valid."));
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_name("a b").is_err());
    }
}
