//! The node's world: running bots in their id slots, templates (the `bots/<name>/` folders
//! with their playlists), identities and the system monitor figures.
//!
//! Owns: lowest-free-slot ids and their reuse, the template/temporary distinction (a bot's
//! config either *is* a template's config or its own), config reads and writes through it,
//! identity generation and write-back, connection status over time, restarts (bots stop,
//! `run = true` templates start again from id 0, a new `starttime`), `bot list`, and handing
//! the templates to the data dir after every change ([`NodeState::persist`]).
//! Does not own: playback (`player`), parsing, rights or dispatch (`exec`), HTTP, or the
//! bot.toml files (`store`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::exec::Fail;
pub use crate::player::{resolve, Item, Player};
use crate::settings;
use crate::store::Store;

/// A playlist file (`bots/<name>/playlists/<id>`).
#[derive(Clone, Debug, Default)]
pub struct Playlist {
    pub title: String,
    pub items: Vec<Item>,
}

/// A template: its explicit settings and its playlists.
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub overlay: Map<String, Value>,
    pub playlists: BTreeMap<String, Playlist>,
}

/// Whose config a running bot uses: a template's (shared, like TS3AudioBot's cached
/// `ConfBot`) or its own in-memory one (a temporary bot).
#[derive(Clone, Debug)]
pub enum Conf {
    Template(String),
    Own(Map<String, Value>),
}

/// Voice target state (`IVoiceTarget`).
#[derive(Clone, Debug, Default)]
pub struct Whisper {
    pub send_mode: u8,
    pub clients: Vec<u64>,
    pub channels: Vec<u64>,
    pub group: Option<(u8, u8, u64)>,
}

/// A running bot instance.
#[derive(Clone, Debug)]
pub struct Bot {
    pub id: u32,
    pub conf: Conf,
    /// The address it connected with (BotInfo.Server).
    pub address: String,
    /// When it counts as connected; `None` = never (unreachable or unresolvable).
    pub connect_at: Option<Instant>,
    pub clid: u16,
    pub nickname: String,
    pub channel: u64,
    pub commander: bool,
    pub quiz: bool,
    pub player: Player,
    pub whisper: Whisper,
}

impl Bot {
    /// The template name, `None` for temporary bots.
    pub fn name(&self) -> Option<&str> {
        match &self.conf {
            Conf::Template(n) => Some(n),
            Conf::Own(_) => None,
        }
    }

    /// Connecting (1) until `connect_at`, then connected (2).
    pub fn status(&self, now: Instant) -> u8 {
        match self.connect_at {
            Some(t) if now >= t => 2,
            _ => 1,
        }
    }

    /// `{"Id","Name","Server","Status"}`.
    pub fn info(&self, now: Instant) -> Value {
        let server = (!self.address.is_empty()).then_some(self.address.as_str());
        json!({ "Id": self.id, "Name": self.name(), "Server": server, "Status": self.status(now) })
    }
}

/// The system monitor's last 60 samples.
#[derive(Clone, Debug)]
pub struct SysInfo {
    pub memory: Vec<i64>,
    pub cpu: Vec<f64>,
    pub starttime: String,
}

impl SysInfo {
    fn plausible(started: SystemTime) -> SysInfo {
        let mut rng = rand::rng();
        let base: i64 = rng.random_range(70_000_000..110_000_000);
        SysInfo {
            memory: (0..60)
                .map(|_| base + rng.random_range(-2_000_000..2_000_000))
                .collect(),
            cpu: (0..60)
                .map(|_| (rng.random_range(0.004..0.06f64) * 1e4).round() / 1e4)
                .collect(),
            starttime: iso_utc(started),
        }
    }
}

/// Everything behind the node's lock.
pub struct NodeState {
    /// The root config with every global set applied.
    pub root: Value,
    /// Templates in enumeration order (sorted, like a directory listing).
    pub templates: BTreeMap<String, Template>,
    /// Id slots; `None` is a free slot.
    pub bots: Vec<Option<Bot>>,
    pub connect_delay: Duration,
    pub bot_save_works: bool,
    pub sysinfo: SysInfo,
    /// When this "process" started: what `sysinfo.starttime` was made from.
    started: SystemTime,
    /// The data dir, if templates are kept on disk.
    pub store: Option<Store>,
    next_clid: u16,
}

impl NodeState {
    pub fn new(connect_delay: Duration, bot_save_works: bool) -> NodeState {
        let started = SystemTime::now();
        NodeState {
            root: settings::root_defaults(),
            templates: BTreeMap::new(),
            bots: Vec::new(),
            connect_delay,
            bot_save_works,
            sysinfo: SysInfo::plausible(started),
            started,
            store: None,
            next_clid: 1,
        }
    }

    /// The `web.api.command_complexity` limit in force.
    pub fn complexity_limit(&self) -> u32 {
        self.root["web"]["api"]["command_complexity"]
            .as_i64()
            .map_or(64, |v| v.clamp(0, i64::from(u32::MAX)) as u32)
    }

    pub fn bot(&self, id: u32) -> Option<&Bot> {
        self.bots.get(id as usize).and_then(Option::as_ref)
    }

    pub fn bot_mut(&mut self, id: u32) -> Option<&mut Bot> {
        self.bots.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// The running bot that uses template `name`.
    pub fn bot_by_name(&self, name: &str) -> Option<u32> {
        self.bots
            .iter()
            .flatten()
            .find(|b| b.name() == Some(name))
            .map(|b| b.id)
    }

    pub fn running(&self) -> impl Iterator<Item = &Bot> {
        self.bots.iter().flatten()
    }

    /// A config overlay: a template's, or a running bot's (which may be a template's).
    pub fn overlay<'a>(&'a self, conf: &'a Conf) -> Option<&'a Map<String, Value>> {
        match conf {
            Conf::Template(n) => self.templates.get(n).map(|t| &t.overlay),
            Conf::Own(o) => Some(o),
        }
    }

    pub fn overlay_mut(&mut self, conf: &ConfRef) -> Option<&mut Map<String, Value>> {
        match conf {
            ConfRef::Template(n) => self.templates.get_mut(n).map(|t| &mut t.overlay),
            ConfRef::Bot(id) => match self.bots.get_mut(*id as usize).and_then(Option::as_mut) {
                Some(Bot {
                    conf: Conf::Own(o), ..
                }) => Some(o),
                Some(Bot {
                    conf: Conf::Template(n),
                    ..
                }) => {
                    let n = n.clone();
                    self.templates.get_mut(&n).map(|t| &mut t.overlay)
                }
                None => None,
            },
        }
    }

    /// The effective config tree (overlay over the root `[bot]` defaults).
    pub fn effective(&self, conf: &ConfRef) -> Value {
        let empty = Map::new();
        let overlay = match conf {
            ConfRef::Template(n) => self.templates.get(n).map(|t| &t.overlay),
            ConfRef::Bot(id) => self.bot(*id).and_then(|b| self.overlay(&b.conf)),
        };
        settings::merged(&self.root["bot"], overlay.unwrap_or(&empty))
    }

    /// `settings get <path>` on any bot config.
    pub fn conf_get(&self, conf: &ConfRef, path: &str) -> Result<Value, Fail> {
        let eff = self.effective(conf);
        Ok(settings::get_single(&eff, path)?.1.clone())
    }

    /// `settings set <path> [<value>]` on any bot config (persisted wherever it lives).
    pub fn conf_set(
        &mut self,
        conf: &ConfRef,
        path: &str,
        value: Option<&str>,
    ) -> Result<(), Fail> {
        let eff = self.effective(conf);
        let (p, default) = settings::get_single(&eff, path)?;
        let sets = settings::parse_set(&p, default, value)
            .map_err(|e| Fail::cmd(format!("Failed to set the value ({e}).")))?;
        if let Some(overlay) = self.overlay_mut(conf) {
            for (p, v) in sets {
                settings::overlay_set(overlay, &p, v);
            }
        }
        Ok(())
    }

    /// Starts a bot with `conf` in the lowest free slot, generating its identity if its
    /// config has none (written back into the config, so a template keeps it).
    pub fn start_bot(&mut self, conf: Conf, now: Instant) -> u32 {
        let id = self
            .bots
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.bots.len());
        let eff = settings::merged(
            &self.root["bot"],
            self.overlay(&conf).unwrap_or(&Map::new()),
        );
        let address = eff["connect"]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut conf = conf;
        if eff["connect"]["identity"]["key"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            let (key, offset) = new_identity();
            let target = match &mut conf {
                Conf::Own(o) => Some(o),
                Conf::Template(n) => self.templates.get_mut(n).map(|t| &mut t.overlay),
            };
            if let Some(o) = target {
                settings::overlay_set(o, &path("connect.identity.key"), json!(key));
                settings::overlay_set(o, &path("connect.identity.offset"), json!(offset));
            }
        }
        let channel = eff["connect"]["channel"]
            .as_str()
            .and_then(|c| c.strip_prefix('/'))
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let reachable = !address.is_empty() && !address.contains("unreachable");
        let clid = self.next_clid;
        self.next_clid = self.next_clid.wrapping_add(1).max(1);
        let bot = Bot {
            id: id as u32,
            conf,
            connect_at: reachable.then(|| now + self.connect_delay),
            address,
            clid,
            nickname: eff["connect"]["name"]
                .as_str()
                .unwrap_or("TS3AudioBot")
                .to_string(),
            channel,
            commander: false,
            quiz: false,
            player: Player {
                volume: eff["audio"]["volume"]["default"].as_f64().unwrap_or(50.0) as f32,
                ..Player::default()
            },
            whisper: Whisper {
                send_mode: 1,
                ..Whisper::default()
            },
        };
        if id == self.bots.len() {
            self.bots.push(Some(bot));
        } else {
            self.bots[id] = Some(bot);
        }
        id as u32
    }

    /// Stops a bot and frees its id.
    pub fn stop_bot(&mut self, id: u32) -> bool {
        match self.bots.get_mut(id as usize) {
            Some(slot @ Some(_)) => {
                *slot = None;
                while self.bots.last().is_some_and(Option::is_none) {
                    self.bots.pop();
                }
                true
            }
            _ => false,
        }
    }

    /// A temporary bot like `bot connect to`.
    pub fn connect_to(&mut self, address: &str, password: Option<&str>, now: Instant) -> u32 {
        let mut o = Map::new();
        settings::overlay_set(&mut o, &path("connect.address"), json!(address));
        if let Some(pw) = password.filter(|p| !p.is_empty()) {
            settings::overlay_set(&mut o, &path("connect.server_password.pw"), json!(pw));
        }
        self.start_bot(Conf::Own(o), now)
    }

    /// Deletes a template; a bot running it keeps its config but loses the name.
    pub fn delete_template(&mut self, name: &str) {
        if let Some(t) = self.templates.remove(name) {
            for b in self.bots.iter_mut().flatten() {
                if b.name() == Some(name) {
                    b.conf = Conf::Own(t.overlay.clone());
                }
            }
        }
    }

    /// `bot list`: running named bots, offline templates, then unnamed running bots.
    pub fn bot_list(&self, now: Instant) -> Value {
        let mut out = Vec::new();
        let mut named = std::collections::HashSet::new();
        for b in self.running().filter(|b| b.name().is_some()) {
            named.insert(b.name().unwrap_or_default().to_string());
            out.push(b.info(now));
        }
        for (name, _) in self.templates.iter().filter(|(n, _)| !named.contains(*n)) {
            out.push(self.offline_info(name));
        }
        out.extend(
            self.running()
                .filter(|b| b.name().is_none())
                .map(|b| b.info(now)),
        );
        Value::Array(out)
    }

    /// `{Id:null, Name, Server: connect.address, Status:0}` for a template that is not running.
    pub fn offline_info(&self, name: &str) -> Value {
        let eff = self.effective(&ConfRef::Template(name.to_string()));
        json!({ "Id": null, "Name": name, "Server": eff["connect"]["address"].as_str().unwrap_or_default(), "Status": 0 })
    }

    /// Keeps the templates in `store` from now on, taking the ones it holds (they replace any
    /// in memory) and reporting its folder as `configs.bots_path`, as a real node does.
    pub fn attach_store(&mut self, store: Store, templates: BTreeMap<String, Template>) {
        if let Some(p) = self.root.pointer_mut("/configs/bots_path") {
            *p = json!(store.bots_dir().to_string_lossy());
        }
        self.templates = templates;
        self.store = Some(store);
    }

    /// Writes every template change since the last call to the data dir (if any). Called
    /// after each request and each control that may touch templates, while the lock is still
    /// held, so the disk never lags behind an answer that was sent.
    pub fn persist(&mut self) {
        if let Some(store) = &mut self.store {
            store.sync(&self.templates);
        }
    }

    /// What `system info` reports as `starttime`.
    pub fn starttime(&self) -> &str {
        &self.sysinfo.starttime
    }

    /// A process restart: everything running stops (temporary bots, and their identities,
    /// are gone), `starttime` moves on, and `run = true` templates start again with ids from 0.
    pub fn restart(&mut self, now: Instant) {
        self.bots.clear();
        self.new_starttime(SystemTime::now());
        self.autostart(now);
    }

    /// A fresh `starttime` from `now`, always different from the current one: a restart
    /// within the same clock tick (or clock steps back) still gives a later value, so a
    /// caller comparing `starttime` always sees the restart.
    fn new_starttime(&mut self, now: SystemTime) {
        // One .NET tick (100 ns), the finest step `iso_utc` shows.
        const TICK: Duration = Duration::from_nanos(100);
        let mut t = now.max(self.started + TICK);
        // `set_system_info` may have put any text there; step until it differs.
        while iso_utc(t) == self.sysinfo.starttime {
            t += TICK;
        }
        self.started = t;
        self.sysinfo.starttime = iso_utc(t);
    }

    /// Starts every `run = true` template that is not running, in enumeration order, each in
    /// the lowest free slot (`BotManager.RunBots` at process start).
    pub fn autostart(&mut self, now: Instant) {
        let autostart: Vec<String> = self
            .templates
            .keys()
            .filter(|n| {
                self.bot_by_name(n).is_none()
                    && self.effective(&ConfRef::Template((*n).clone()))["run"].as_bool()
                        == Some(true)
            })
            .cloned()
            .collect();
        for n in autostart {
            self.start_bot(Conf::Template(n), now);
        }
    }
}

/// Names a config for reading or writing: a template by name or a running bot's.
#[derive(Clone, Debug)]
pub enum ConfRef {
    Template(String),
    Bot(u32),
}

/// A dotted path as segments.
pub fn path(p: &str) -> Vec<String> {
    p.split('.').map(String::from).collect()
}

/// A fresh identity: a base64 key and an offset below 10^6.
pub fn new_identity() -> (String, u64) {
    let mut rng = rand::rng();
    let bytes: Vec<u8> = (0..96).map(|_| rng.random()).collect();
    (
        base64::engine::general_purpose::STANDARD.encode(bytes),
        rng.random_range(0..1_000_000),
    )
}

/// 64-bit FNV-1a with a salt, so derived values are the same on every node and build.
pub fn fnv(salt: u8, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(salt);
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The TS UID of an identity key (20 bytes, base64, like a real UID). It depends only on the
/// key, so the same key on another node gives the same UID.
pub fn uid_of(key: &str) -> String {
    let mut bytes = Vec::with_capacity(24);
    for salt in 0..3u8 {
        bytes.extend_from_slice(&fnv(salt, key.as_bytes()).to_le_bytes());
    }
    bytes.truncate(20);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A stable database id for a UID.
pub fn dbid_of(uid: &str) -> u64 {
    1 + fnv(7, uid.as_bytes()) % 100_000
}

/// `2021-04-09T12:34:56.789Z` (Newtonsoft's ISO format for a UTC DateTime).
pub fn iso_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = format!("{:07}", d.subsec_nanos() / 100);
    let frac = frac.trim_end_matches('0');
    let dot = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{dot}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> NodeState {
        NodeState::new(Duration::ZERO, false)
    }

    #[test]
    fn ids_are_lowest_free_and_reused() {
        let mut s = state();
        let now = Instant::now();
        assert_eq!(s.connect_to("a", None, now), 0);
        assert_eq!(s.connect_to("b", None, now), 1);
        assert_eq!(s.connect_to("c", None, now), 2);
        assert!(s.stop_bot(1));
        assert_eq!(s.connect_to("d", None, now), 1);
        assert!(s.stop_bot(2));
        assert!(s.stop_bot(1));
        assert_eq!(s.bots.len(), 1);
        assert_eq!(s.connect_to("e", None, now), 1);
    }

    #[test]
    fn templates_get_identities_and_list_order() {
        let mut s = state();
        let now = Instant::now();
        s.templates.insert("b".into(), Template::default());
        s.templates.insert("a".into(), Template::default());
        s.connect_to("x", None, now);
        let id = s.start_bot(Conf::Template("b".into()), now);
        let key = s.templates["b"].overlay["connect"]["identity"]["key"]
            .as_str()
            .map(str::len);
        assert!(key.is_some_and(|l| l >= 64));
        let list = s.bot_list(now);
        let names: Vec<_> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b["Name"].clone())
            .collect();
        assert_eq!(names, vec![json!("b"), json!("a"), Value::Null]);
        assert_eq!(list[0]["Id"], id);
        s.delete_template("b");
        assert_eq!(s.bot(id).and_then(Bot::name), None);
    }

    #[test]
    fn restart_frees_every_id_and_starts_run_templates_from_0() {
        let mut s = state();
        let now = Instant::now();
        for a in ["t0", "t1", "t2"] {
            s.connect_to(a, None, now);
        }
        let run = json!(true);
        let mut auto = Template::default();
        settings::overlay_set(&mut auto.overlay, &path("run"), run);
        s.templates.insert("z".into(), auto.clone());
        s.templates.insert("y".into(), auto);
        s.templates.insert("x".into(), Template::default());
        assert_eq!(s.start_bot(Conf::Template("z".into()), now), 3);
        s.restart(now);
        let running: Vec<_> = s.running().map(|b| (b.id, b.name())).collect();
        assert_eq!(running, vec![(0, Some("y")), (1, Some("z"))]);
        assert_eq!(s.bots.len(), 2, "no leftover slots");
        // Autostarting twice (start, then restart) never runs a template twice.
        s.autostart(now);
        assert_eq!(s.running().count(), 2);
    }

    #[test]
    fn starttime_moves_on_within_one_tick() {
        let mut s = state();
        // As if this "process" started long ago, so `t` is later than its start.
        s.started = UNIX_EPOCH;
        let t = UNIX_EPOCH + Duration::from_secs(1_618_000_000);
        s.new_starttime(t);
        let first = s.starttime().to_string();
        assert_eq!(first, "2021-04-09T20:26:40Z");
        s.new_starttime(t);
        assert_eq!(s.starttime(), "2021-04-09T20:26:40.0000001Z");
        // A clock that steps back still gives a later value.
        s.new_starttime(t - Duration::from_secs(5));
        assert_eq!(s.starttime(), "2021-04-09T20:26:40.0000002Z");
        // A starttime set by hand (`set_system_info`) is never repeated.
        s.sysinfo.starttime = "2021-04-09T20:26:40.0000003Z".into();
        s.new_starttime(t);
        assert_eq!(s.starttime(), "2021-04-09T20:26:40.0000004Z");
    }

    #[test]
    fn uid_depends_only_on_key() {
        assert_eq!(uid_of("k"), uid_of("k"));
        assert_ne!(uid_of("k"), uid_of("k2"));
        assert_eq!(uid_of("k").len(), 28);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso_utc(UNIX_EPOCH + Duration::from_millis(1_618_000_000_250)),
            "2021-04-09T20:26:40.25Z"
        );
    }
}
