//! The embedded store failing under the router: a full disk at run time (creates refused in
//! TS3AudioBot's shape, existing bots still routed, recovery by itself when space returns,
//! nothing lost), and a store file damaged while the router was stopped (refused at start,
//! naming the file).
//!
//! The full disk is a real one: a small tmpfs mounted for the test (the tests run as root,
//! as CI does; without the right to mount, the test fails and says so).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = privileged("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill a real disk and needs root (or sudo without a password): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full; returns it.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk: byte by byte until nothing fits.
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = privileged("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// `program` as root: directly when the tests run as root (as in CI), else through
/// `sudo -n` (never asking for a password).
fn privileged(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

fn create(router: &Router) -> Response {
    router.get("/api/bot/connect/to/ts.example")
}

/// TS3AudioBot's error shape with this status.
fn ts3_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert!(j["ErrorCode"].is_number(), "{j}");
    assert!(j["ErrorName"].is_string(), "{j}");
    assert!(
        j["ErrorMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{j}"
    );
}

#[test]
fn a_full_disk_refuses_creates_keeps_routing_and_recovers_by_itself() {
    let disk = Tmpfs::mount("8m");
    let nodes: Vec<FakeNode> = (0..2).map(fake_node).collect();
    let refs: Vec<&FakeNode> = nodes.iter().collect();
    let opts = RouterOpts {
        admin: true,
        storage: Some(format!(
            "{{ kind: embedded, path: \"{}\" }}",
            disk.path().join("store").display()
        )),
        ..RouterOpts::default()
    };
    let mut router = Router::start(&refs, opts.clone());
    let before: Vec<u64> = (0..4)
        .map(|_| {
            let r = create(&router);
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["Id"].as_u64().expect("Id")
        })
        .collect();

    let filler = disk.fill();
    // Creates go on while redb finds room in pages it already has; the first one whose
    // record cannot be written is refused (TS3AudioBot's shape, never a hang), and so is every
    // one after it while the disk stays full. A refused create leaves no bot on a node.
    let running = || nodes.iter().map(|n| n.bots().len()).sum::<usize>();
    let mut before = before;
    let mut refused = false;
    for _ in 0..500 {
        let r = create(&router);
        if r.status == 200 {
            before.push(r.json()["Id"].as_u64().expect("Id"));
            continue;
        }
        ts3_error(&r, 503);
        refused = true;
        break;
    }
    assert!(refused, "creates on a full disk were never refused");
    for _ in 0..3 {
        ts3_error(&create(&router), 503);
    }
    router.wait_until(10, "refused creates to be taken back", |_| {
        running() == before.len()
    });
    // Existing bots are still routed, lists still answer.
    for id in &before {
        let r = router.get(&format!("/api/bot/use/{id}/(/song)"));
        assert!(r.status < 500, "bot {id}: {}", r.text());
    }
    assert_eq!(router.get("/api/bot/list").status, 200);
    let overview = raw_request(
        router.admin_addr.expect("admin"),
        "GET",
        b"/admin/api/overview",
        &[("Authorization", &basic(ADMIN))],
        None,
    )
    .json();
    assert_eq!(overview["store"]["available"], false, "{overview}");

    // Space returns: the router writes again by itself.
    std::fs::remove_file(&filler).expect("remove filler");
    let mut after = None;
    router.wait_until(30, "creates to work again", |r| {
        let c = create(r);
        if c.status == 200 {
            after = c.json()["Id"].as_u64();
            true
        } else {
            ts3_error(&c, 503);
            false
        }
    });
    let after = after.expect("a new bot");

    // Nothing was lost: a restarted router knows every bot under its id.
    router.stop();
    router.write_config(&refs, &opts);
    router.spawn();
    let ids: Vec<u64> = router
        .bot_list()
        .iter()
        .filter_map(|b| b["Id"].as_u64())
        .collect();
    for id in before.iter().chain([&after]) {
        assert!(ids.contains(id), "bot {id} lost: {ids:?}");
    }
    router.stop();
}

#[test]
fn a_damaged_store_file_is_refused_at_start_naming_it() {
    let node = fake_node(0);
    let mut router = Router::start(&[&node], RouterOpts::default());
    assert_eq!(create(&router).status, 200);
    router.stop();
    let file = std::fs::read_dir(&router.data)
        .expect("store dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("the store file");
    // Damage it as a failing disk or a bad copy would: its header overwritten.
    let mut bytes = std::fs::read(&file).expect("read");
    for b in bytes.iter_mut().take(4096) {
        *b = 0x5a;
    }
    std::fs::write(&file, bytes).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["serve", "--config"])
        .arg(&router.config)
        .output()
        .expect("run the router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("backup"), "says how to restore: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
