//! The admin panel in a real browser: three fake nodes behind the router with its admin
//! listener (the first with a fake node agent), a fourth fake node for the panel to add, a few
//! bots, then
//! `node tests/browser/panel.test.mjs` drives Debian's chromium through the panel (login, nodes,
//! keys, bots, evacuation, maint, audit, logout) and writes screenshots to
//! `target/screenshots/`.
//!
//! The browser tooling is a prerequisite, not an option: without `node` or `chromium` this
//! test fails and says to run `scripts/prereqs.sh`; a missing `node_modules` is installed here
//! with `npm ci`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fake_agent::{summary, FakeAgent};
use support::{fake_node, free_port, node_token, Router, RouterOpts, ADMIN};

/// How long the browser script may run before it is killed.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

/// The chromium binary: `$CHROMIUM`, else Debian's.
fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

/// Whether `cmd --version` runs.
fn runs(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure node, npm's packages and chromium are there; panics with what to do otherwise.
fn browser_tooling(dir: &Path) -> PathBuf {
    assert!(
        runs("node"),
        "`node` is not installed: run scripts/prereqs.sh (it installs nodejs, npm and chromium)"
    );
    let Some(browser) = chromium() else {
        panic!("`chromium` is not installed: run scripts/prereqs.sh (it installs nodejs, npm and chromium)");
    };
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        assert!(
            runs("npm"),
            "`npm` is not installed: run scripts/prereqs.sh"
        );
        let verb = if dir.join("package-lock.json").is_file() {
            "ci"
        } else {
            "install"
        };
        let out = Command::new("npm")
            .args([verb, "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .expect("npm runs");
        assert!(
            out.status.success(),
            "npm {verb} in {} failed ({}); run scripts/prereqs.sh\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    browser
}

/// Waits until something accepts connections on `addr`.
fn wait_for_listener(addr: SocketAddr, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the admin listener on {addr} did not come up within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The whole panel, driven by a browser: see `tests/browser/panel.test.mjs` for the steps.
#[test]
fn panel_in_a_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    let browser = browser_tooling(&browser_dir);

    let nodes: Vec<_> = (0..4).map(fake_node).collect();
    // node-0 runs an agent, whose figures the panel shows.
    let agent = FakeAgent::start(Some(summary(0.42, 0.61)));
    let router = Router::start(
        &nodes[..3].iter().collect::<Vec<_>>(),
        RouterOpts {
            capacities: vec![20, 20, 20],
            admin: true,
            agents: vec![Some(agent.yaml())],
            extra_yaml: "placement: { agent_interval_ms: 500 }\n".into(),
            ..RouterOpts::default()
        },
    );
    let admin = router
        .admin_addr
        .expect("the harness router has an admin listener");
    wait_for_listener(admin, 20);

    // Nine bots, spread over the three nodes by placement.
    for i in 0..9 {
        let r = router.get(&format!("/api/bot/connect/to/panel{i}.example.com"));
        assert_eq!(r.status, 200, "create bot {i}: {}", r.text());
    }
    router.wait_until(10, "nine bots listed", |r| r.bot_list().len() == 9);

    // Nothing listens on a port that was just free: a node check there must fail.
    let bad_url = format!("http://127.0.0.1:{}", free_port());
    let shots = root.join("target/screenshots");
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg("panel.test.mjs")
        .current_dir(&browser_dir)
        .env("ADMIN_URL", format!("http://{admin}"))
        .env("API_URL", format!("http://{}", router.addr))
        .env("ADMIN_NAME", ADMIN.0)
        .env("ADMIN_SECRET", ADMIN.1)
        .env("NEW_NODE_URL", nodes[3].url())
        .env("NEW_NODE_AUTH", node_token(3))
        .env("BAD_NODE_URL", &bad_url)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &browser)
        .stdin(Stdio::null())
        .spawn()
        .expect("node starts");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for node") {
            break s;
        }
        if started.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser test did not finish within {BROWSER_DEADLINE:?} and was killed; \
                 see the screenshots in {}",
                shots.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "browser test: {status} after {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
    assert!(
        status.success(),
        "the browser test failed ({status}): its output above names the step; screenshots in {}",
        shots.display()
    );
}
