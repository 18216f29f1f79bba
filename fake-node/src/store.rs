//! The node's data dir: templates kept on disk as `DIR/bots/<name>/bot.toml`, the way a real
//! TS3AudioBot keeps them under `configs.bots_path`, so a fake node *process* that is killed
//! and started again on the same dir still has its templates.
//!
//! Owns: the layout, the bot.toml text (the template's overlay, i.e. only the values set on it,
//! as TOML), loading at start (a malformed file is reported on stderr and skipped), and writing
//! changes crash-safely (temp file in the same folder, then rename), found by comparing the
//! templates with what was last written.
//! Does not own: the templates themselves or when a restart autostarts them (`state`).
//! Playlists, the root config and temporary bots are not stored (temporary bots are lost on a
//! real restart too).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};

use crate::settings;
use crate::state::Template;

/// The folder of one data dir and what its bot.toml files hold right now.
#[derive(Debug)]
pub struct Store {
    bots_dir: PathBuf,
    /// Each template's overlay as last written (or loaded); the diff against it is what
    /// [`Store::sync`] writes.
    saved: BTreeMap<String, Map<String, Value>>,
}

impl Store {
    /// Opens `data_dir` (creating `data_dir/bots`) and loads every template in it.
    /// Unreadable or malformed `bot.toml` files and folders with invalid names are reported
    /// on stderr and skipped; a folder without `bot.toml` is not a template (as in
    /// TS3AudioBot) and is skipped silently.
    pub fn open(data_dir: &Path) -> std::io::Result<(Store, BTreeMap<String, Template>)> {
        let bots_dir = data_dir.join("bots");
        std::fs::create_dir_all(&bots_dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", bots_dir.display()),
            )
        })?;
        let mut templates = BTreeMap::new();
        let entries = std::fs::read_dir(&bots_dir).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read {}: {e}", bots_dir.display()))
        })?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warn(format_args!(
                        "skipping an entry of {}: {e}",
                        bots_dir.display()
                    ));
                    continue;
                }
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let file = entry.path().join("bot.toml");
            if !file.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                warn(format_args!(
                    "skipping {}: the folder name is not UTF-8",
                    file.display()
                ));
                continue;
            };
            if let Err(e) = settings::check_name(&name) {
                warn(format_args!("skipping {}: {e}", file.display()));
                continue;
            }
            match read_bot_toml(&file) {
                Ok(overlay) => {
                    templates.insert(
                        name,
                        Template {
                            overlay,
                            ..Template::default()
                        },
                    );
                }
                Err(e) => warn(format_args!("skipping {}: {e}", file.display())),
            }
        }
        let saved = templates
            .iter()
            .map(|(n, t)| (n.clone(), t.overlay.clone()))
            .collect();
        Ok((Store { bots_dir, saved }, templates))
    }

    /// `DIR/bots`, what the node reports as `configs.bots_path`.
    pub fn bots_dir(&self) -> &Path {
        &self.bots_dir
    }

    /// Brings the disk in line with `templates`: writes the bot.toml of every new or changed
    /// template and removes the folder of every deleted one. A failure is reported on stderr
    /// and retried on the next call. The answer already given stays as it is (a real node
    /// would answer 422 "Value was set but could not be saved" to `settings bot set`; that is
    /// not modelled).
    pub fn sync(&mut self, templates: &BTreeMap<String, Template>) {
        let gone: Vec<String> = self
            .saved
            .keys()
            .filter(|n| !templates.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            // `settings delete` removes the whole folder (playlists and all) in TS3AudioBot.
            let dir = self.bots_dir.join(&name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn(format_args!("cannot remove {}: {e}", dir.display()));
                    continue;
                }
            }
            self.saved.remove(&name);
        }
        for (name, t) in templates {
            if self.saved.get(name) == Some(&t.overlay) {
                continue;
            }
            // Names reach here only through check_name, except from the test API
            // (`FakeNode::add_template`); never let one escape the folder.
            if let Err(e) = settings::check_name(name) {
                warn(format_args!("not saving template {name:?}: {e}"));
                continue;
            }
            match self.write(name, &t.overlay) {
                Ok(()) => {
                    self.saved.insert(name.clone(), t.overlay.clone());
                }
                Err(e) => warn(format_args!(
                    "cannot save {}: {e}",
                    self.bots_dir.join(name).join("bot.toml").display()
                )),
            }
        }
    }

    /// Writes one bot.toml: a temp file in the same folder, then a rename over the old file,
    /// so a crash leaves either the old or the new file, never half of one. No fsync: what is
    /// modelled is a process crash (SIGKILL), which the page cache survives; an fsync would
    /// only help against power loss and would slow every request that touches a template.
    fn write(&self, name: &str, overlay: &Map<String, Value>) -> std::io::Result<()> {
        let text = to_toml(overlay)?;
        let dir = self.bots_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".bot.toml.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, dir.join("bot.toml"))) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }
}

fn warn(msg: std::fmt::Arguments<'_>) {
    eprintln!("ts3ab-fake-node: {msg}");
}

/// Reads a bot.toml into an overlay.
pub fn read_bot_toml(file: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    from_toml(&text)
}

/// bot.toml text → overlay. TOML dates (never written by TS3AudioBot's bot config) become
/// strings; a non-finite float is refused because the overlay is JSON.
pub fn from_toml(text: &str) -> Result<Map<String, Value>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("malformed TOML: {}", e.message()))?;
    match table_to_json(table)? {
        Value::Object(m) => Ok(m),
        _ => Err("not a table".into()),
    }
}

/// Overlay → bot.toml text. Nulls are left out (TOML has none, and an overlay holds only set
/// values); an integer beyond TOML's i64 range is refused rather than silently changed.
pub fn to_toml(overlay: &Map<String, Value>) -> std::io::Result<String> {
    let table = json_to_table(overlay).map_err(std::io::Error::other)?;
    toml::to_string(&table).map_err(std::io::Error::other)
}

fn table_to_json(t: toml::Table) -> Result<Value, String> {
    let mut m = Map::new();
    for (k, v) in t {
        m.insert(k, toml_to_json(v)?);
    }
    Ok(Value::Object(m))
}

fn toml_to_json(v: toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("the float {f} has no JSON form"))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => {
            Value::Array(a.into_iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => table_to_json(t)?,
    })
}

fn json_to_table(m: &Map<String, Value>) -> Result<toml::Table, String> {
    let mut t = toml::Table::new();
    for (k, v) in m {
        if let Some(v) = json_to_toml(v)? {
            t.insert(k.clone(), v);
        }
    }
    Ok(t)
}

fn json_to_toml(v: &Value) -> Result<Option<toml::Value>, String> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if !n.is_u64() => toml::Value::Float(f),
            _ => return Err(format!("the number {n} does not fit a TOML integer")),
        },
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                out.extend(json_to_toml(x)?);
            }
            toml::Value::Array(out)
        }
        Value::Object(o) => toml::Value::Table(json_to_table(o)?),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object: {v}"),
        }
    }

    #[test]
    fn bot_toml_round_trips_an_overlay() {
        let overlay = obj(json!({
            "run": true,
            "bot_group_id": 7,
            "connect": {
                "address": "ts.example.com:9987",
                "name": "Say \"hi\"\nnow",
                "identity": { "key": "a+b/c==", "offset": 123_456 }
            },
            "audio": { "volume": { "default": 30.0 } },
            "reconnect": { "onkick": [], "ontimeout": ["1s", "repeat last"] },
            "commands": { "alias": { "hi": "print hello" } }
        }));
        let text = to_toml(&overlay).unwrap();
        assert!(text.contains("run = true"), "{text}");
        assert!(text.contains("[connect.identity]"), "{text}");
        assert_eq!(from_toml(&text).unwrap(), overlay);
        assert_eq!(
            to_toml(&Map::new()).unwrap(),
            "",
            "an empty template is an empty file"
        );
    }

    #[test]
    fn values_toml_cannot_hold() {
        let with_null = obj(json!({ "run": null, "connect": { "name": "n" } }));
        assert_eq!(
            from_toml(&to_toml(&with_null).unwrap()).unwrap(),
            obj(json!({ "connect": { "name": "n" } }))
        );
        assert!(to_toml(&obj(json!({ "bot_group_id": u64::MAX }))).is_err());
        assert_eq!(
            from_toml("when = 1979-05-27T07:32:00Z").unwrap(),
            obj(json!({ "when": "1979-05-27T07:32:00Z" }))
        );
    }

    #[test]
    fn malformed_text_is_an_error() {
        for bad in [
            "run = = true",
            "run = true\nrun = false",
            "[connect",
            "x = nan",
        ] {
            assert!(from_toml(bad).is_err(), "{bad:?}");
        }
    }
}
