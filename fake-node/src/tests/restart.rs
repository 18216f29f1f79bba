//! Restarts as a real TS3AudioBot has them: in place (`FakeNode::restart`, `/__fake/restart`)
//! and as a new process on the same data dir (a new `FakeNode` on the same `data_dir`).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::*;

/// `(Id, Name)` of every entry of `bot list`.
fn listed(n: &FakeNode) -> Vec<(Value, Value)> {
    get(n, "/api/bot/list")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["Id"].clone(), b["Name"].clone()))
        .collect()
}

fn setting(n: &FakeNode, name: &str, path: &str) -> Value {
    let r = get(n, &format!("/api/settings/bot/get/{name}/{path}"));
    assert_eq!(r.status, 200, "{name} {path}: {:?}", r.json());
    r.json()
}

/// Starts template `name`, returning its id.
fn run(n: &FakeNode, name: &str) -> Value {
    let r = get(n, &format!("/api/bot/connect/template/{name}"));
    assert_eq!(r.status, 200, "{name}: {:?}", r.json());
    r.json()["Id"].clone()
}

fn ok(n: &FakeNode, target: &str) {
    let r = get(n, target);
    assert_eq!(
        r.status,
        204,
        "{target}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// `yyyy-MM-ddTHH:mm:ss[.f{1,7}]Z`, what Newtonsoft writes for a UTC DateTime.
fn is_dotnet_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let frac = &s[19.min(s.len())..s.len().saturating_sub(1)];
    s.len() >= 20
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19)
        && [b[4], b[7], b[10], b[13], b[16]] == *b"--T::"
        && s.ends_with('Z')
        && (frac.is_empty()
            || (frac.starts_with('.')
                && (2..=8).contains(&frac.len())
                && frac[1..].bytes().all(|d| d.is_ascii_digit())))
}

#[test]
fn restart_drops_temporary_bots_and_restarts_run_templates_from_id_0() {
    let n = node();
    n.add_template("b", &[("run", "true"), ("connect.address", "ts.b")]);
    n.add_template("a", &[("run", "true")]);
    n.add_template("c", &[]);
    let temp = n.connect_bot("temp.example");
    assert_eq!(temp, 0);
    run(&n, "c");
    let a = run(&n, "a");
    assert_eq!(
        a, 2,
        "a runs behind the temporary bot and c before the restart"
    );
    let before = n.bots();
    let temp_key = before[0].identity_key.clone();
    let a_key = before[2].identity_key.clone();
    let started = n.starttime();

    n.restart();

    assert_eq!(
        listed(&n),
        vec![
            (json!(0), json!("a")),
            (json!(1), json!("b")),
            (Value::Null, json!("c")),
        ],
        "temporary bot gone, c stopped (run = false), a and b from id 0 in name order"
    );
    let after = n.bots();
    assert_eq!(
        after[0].identity_key, a_key,
        "a template keeps its identity"
    );
    assert_eq!(after[1].server.as_deref(), Some("ts.b"));
    assert!(after.iter().all(|b| b.identity_key != temp_key));
    assert_eq!(
        n.connect_bot("temp.example"),
        2,
        "lowest free id after the autostarts"
    );
    assert_ne!(
        n.bots()[2].identity_key,
        temp_key,
        "a temporary identity does not survive a restart"
    );
    assert_ne!(n.starttime(), started);
    assert_eq!(n.templates(), vec!["a", "b", "c"]);
}

#[test]
fn starttime_is_new_after_every_restart_and_stays_parseable() {
    let n = node();
    n.set_system_info(vec![1], vec![0.5], "2021-04-01T12:00:00Z");
    let mut seen = BTreeSet::new();
    seen.insert(n.starttime());
    for _ in 0..20 {
        n.restart();
        let s = get(&n, "/api/system/info").json()["starttime"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(is_dotnet_utc(&s), "{s:?}");
        assert_eq!(s, n.starttime());
        assert!(seen.insert(s.clone()), "starttime {s} repeated");
    }
    let info = get(&n, "/api/system/info").json();
    assert_eq!(
        (info["memory"].clone(), info["cpu"].clone()),
        (json!([1]), json!([0.5])),
        "only starttime changes"
    );
    // The same through the HTTP control, and /__fake/state shows it.
    let st = get(&n, "/__fake/state").json();
    assert_eq!(st["starttime"], n.starttime());
    assert_eq!(get(&n, "/__fake/restart").status, 204);
    let st2 = get(&n, "/__fake/state").json();
    assert_ne!(st2["starttime"], st["starttime"]);
    assert_eq!(
        st2["starttime"],
        get(&n, "/api/system/info").json()["starttime"]
    );
}

#[test]
fn data_dir_keeps_templates_for_a_new_process() {
    let dir = TempDir::new("roundtrip");
    let bots = dir.path().join("bots");
    let (music_key, spare_key, kept_key);
    {
        let n = node_with(|c| {
            c.data_dir = Some(dir.path().to_path_buf());
            c.bot_save_works = true;
        });
        assert_eq!(
            get(&n, "/api/settings/global/get/configs.bots_path").json(),
            json!(bots.to_string_lossy()),
            "the node reports where its templates are"
        );
        ok(&n, "/api/settings/create/music");
        assert_eq!(
            std::fs::read_to_string(bots.join("music/bot.toml")).unwrap(),
            ""
        );
        ok(&n, "/api/settings/bot/set/music/connect.address/ts.music");
        ok(&n, "/api/settings/bot/set/music/run/true");
        ok(&n, "/api/settings/bot/set/music/audio.volume.default/30");
        ok(&n, "/api/settings/copy/music/copied");
        ok(&n, "/api/settings/bot/set/copied/run/false");
        ok(&n, "/api/settings/create/gone");
        assert!(bots.join("gone/bot.toml").is_file());
        ok(&n, "/api/settings/delete/gone");
        assert!(
            !bots.join("gone").exists(),
            "settings delete removes the folder"
        );
        ok(&n, "/api/settings/create/spare");
        // Starting a template generates its identity, which is written back.
        let spare = run(&n, "spare");
        ok(
            &n,
            &format!("/api/bot/use/{spare}/(/alias/add/hi/print%20hello)"),
        );
        run(&n, "music");
        // A temporary bot saved as a template takes its identity along.
        let temp = n.connect_bot("ts.kept");
        ok(&n, &format!("/api/bot/use/{temp}/(/bot/save/kept)"));
        let key = |name: &str| {
            n.bots()
                .into_iter()
                .find(|b| b.name.as_deref() == Some(name))
                .unwrap()
                .identity_key
        };
        (music_key, spare_key, kept_key) = (key("music"), key("spare"), key("kept"));
        let text = std::fs::read_to_string(bots.join("music/bot.toml")).unwrap();
        for line in ["run = true", "address = \"ts.music\"", "default = 30.0"] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(text.contains(&music_key), "identity in\n{text}");
        let mut files: Vec<String> = walk(&bots);
        files.sort();
        assert_eq!(
            files,
            [
                "copied/bot.toml",
                "kept/bot.toml",
                "music/bot.toml",
                "spare/bot.toml"
            ],
            "one bot.toml per template, no temp files left"
        );
        n.stop();
    }

    let n = node_on(&dir);
    assert_eq!(n.templates(), vec!["copied", "kept", "music", "spare"]);
    assert_eq!(
        listed(&n),
        vec![
            (json!(0), json!("music")),
            (Value::Null, json!("copied")),
            (Value::Null, json!("kept")),
            (Value::Null, json!("spare")),
        ],
        "only the run = true template runs, from id 0"
    );
    assert_eq!(n.bots()[0].identity_key, music_key);
    assert_eq!(n.bots()[0].server.as_deref(), Some("ts.music"));
    assert_eq!(setting(&n, "music", "audio.volume.default"), json!(30.0));
    assert_eq!(setting(&n, "copied", "connect.address"), json!("ts.music"));
    assert_eq!(
        setting(&n, "spare", "connect.identity.key"),
        json!(spare_key)
    );
    assert_eq!(
        setting(&n, "spare", "commands.alias.hi"),
        json!("print hello")
    );
    assert_eq!(setting(&n, "kept", "connect.identity.key"), json!(kept_key));
    assert_eq!(setting(&n, "kept", "connect.address"), json!("ts.kept"));
    // The identity offset is kept with the key (the UID depends only on the key).
    let offset = setting(&n, "spare", "connect.identity.offset");
    assert!(offset.as_u64().is_some_and(|o| o < 1_000_000), "{offset}");
    drop(n);

    // A template started for the first time on the new node gets its identity written too.
    let n = node_on(&dir);
    assert_eq!(
        n.bots()[0].identity_key,
        music_key,
        "same key on every start"
    );
    ok(&n, "/api/settings/create/late");
    run(&n, "late");
    let late_key = setting(&n, "late", "connect.identity.key");
    assert!(late_key.as_str().is_some_and(|k| k.len() >= 64));
    drop(n);
    let n = node_on(&dir);
    assert_eq!(setting(&n, "late", "connect.identity.key"), late_key);
}

/// Files under `dir`, as paths relative to it.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            let sub = e.file_name().to_string_lossy().into_owned();
            out.extend(walk(&p).into_iter().map(|f| format!("{sub}/{f}")));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn restart_in_place_with_a_data_dir_writes_new_identities() {
    let dir = TempDir::new("inplace");
    let n = node_on(&dir);
    n.add_template("auto", &[("run", "true")]);
    assert!(
        !std::fs::read_to_string(dir.path().join("bots/auto/bot.toml"))
            .unwrap()
            .contains("key"),
        "not started yet: no identity"
    );
    n.restart();
    let key = n.bots()[0].identity_key.clone();
    let text = std::fs::read_to_string(dir.path().join("bots/auto/bot.toml")).unwrap();
    assert!(
        text.contains(&key),
        "the autostart wrote the identity:\n{text}"
    );
}

#[test]
fn malformed_bot_toml_is_skipped() {
    let dir = TempDir::new("malformed");
    let bots = dir.path().join("bots");
    let write = |rel: &str, text: &[u8]| {
        let p = bots.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "good/bot.toml",
        b"run = true\n[connect]\naddress = \"ts.good\"\n",
    );
    write("bad/bot.toml", b"run = = true\n");
    write("dup/bot.toml", b"run = true\nrun = false\n");
    write("binary/bot.toml", b"\xff\xfe run = true\n");
    write("bad name/bot.toml", b"run = true\n");
    write("nofile/playlists/x", b"");
    write("README", b"not a template\n");
    let n = node_on(&dir);
    assert_eq!(n.templates(), vec!["good"]);
    assert_eq!(listed(&n), vec![(json!(0), json!("good"))]);
    assert_eq!(n.bots()[0].server.as_deref(), Some("ts.good"));
    // The node writes only what it changes: the bad files stay as they are.
    ok(&n, "/api/settings/bot/set/good/connect.name/Good");
    assert_eq!(
        std::fs::read(bots.join("bad/bot.toml")).unwrap(),
        b"run = = true\n"
    );
    assert!(bots.join("nofile/playlists/x").is_file());
    assert!(std::fs::read_to_string(bots.join("good/bot.toml"))
        .unwrap()
        .contains("name = \"Good\""));
}

#[test]
fn initial_templates_only_fill_in_missing_ones() {
    let dir = TempDir::new("initial");
    let n = node_on(&dir);
    n.add_template("music", &[("connect.address", "ts.music")]);
    drop(n);
    let cfg = |c: &mut FakeNodeConfig| {
        c.data_dir = Some(dir.path().to_path_buf());
        c.initial_templates = vec![
            ("music".into(), vec![("run".into(), "true".into())]),
            ("fresh".into(), vec![("run".into(), "true".into())]),
            ("idle".into(), vec![]),
        ];
    };
    let n = node_with(cfg);
    // Written at start, before any request: the autostart gave fresh an identity.
    let fresh = std::fs::read_to_string(dir.path().join("bots/fresh/bot.toml")).unwrap();
    assert!(
        fresh.contains(&n.bots()[0].identity_key),
        "identity written at start:\n{fresh}"
    );
    assert_eq!(
        listed(&n),
        vec![
            (json!(0), json!("fresh")),
            (Value::Null, json!("idle")),
            (Value::Null, json!("music")),
        ],
        "music existed (run = false) and is left alone; fresh is new and runs"
    );
    drop(n);
    assert!(dir.path().join("bots/fresh/bot.toml").is_file());
    // Without a data dir they are simply created.
    let n = node_with(|c| c.initial_templates = vec![("solo".into(), vec![])]);
    assert_eq!(n.templates(), vec!["solo"]);
    let bad = FakeNode::start(FakeNodeConfig {
        initial_templates: vec![("a/b".into(), vec![])],
        ..FakeNodeConfig::default()
    });
    assert_eq!(
        bad.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
}
