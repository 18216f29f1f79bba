//! A MongoDB server for tests: the one named by `TS3AB_LB_TEST_MONGODB_URI`, or else
//! nx-27017 (PyPI `nx-27017==0.8.1`, a MongoDB wire-protocol server on SQLite) started from a
//! venv under cargo's test tmp dir.
//!
//! [`uri`] gives the server every test of a binary shares (started once, on a free port); give
//! each test its own database ([`database`]) so tests never see each other's data.
//! [`MongoServer::start`] gives a test a server of its own, which it may stop or freeze
//! (SIGSTOP) to play an outage.
//!
//! A test binary's statics are never dropped, so the shared server cannot be stopped from
//! Rust: every server runs under a small shell watchdog that kills it (by PID) as soon as the
//! test process is gone, or after [`LIFETIME_SECS`] in any case.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable naming a real server to test against instead of nx-27017.
pub const URI_ENV: &str = "TS3AB_LB_TEST_MONGODB_URI";
/// The test server package.
pub const NX_PACKAGE: &str = "nx-27017==0.8.1";
/// The longest a test server lives, whatever happens to the test process.
pub const LIFETIME_SECS: u64 = 1800;

/// The URI of the server this test binary shares (started on first use).
pub fn uri() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static SERVER: OnceLock<MongoServer> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var(URI_ENV) {
            Ok(u) if !u.trim().is_empty() => u,
            _ => SERVER.get_or_init(MongoServer::start).uri(),
        })
        .clone()
}

/// Whether the tests run against nx-27017 (not a real MongoDB).
pub fn is_nx() -> bool {
    !matches!(std::env::var(URI_ENV), Ok(u) if !u.trim().is_empty())
}

/// A database name no other test (of any binary or run) uses: `tag` plus the process id and
/// a counter, within MongoDB's 63 bytes.
pub fn database(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("t{}_{n}_{tag}", std::process::id())
}

/// A test server of one's own, killed when it drops.
pub struct MongoServer {
    /// The shell watchdog.
    watchdog: Child,
    /// The server process.
    pid: u32,
    port: u16,
    /// Its log, PID files and output.
    dir: PathBuf,
    /// Its data: `memory` or a file in `dir`.
    db: String,
}

impl MongoServer {
    /// Starts nx-27017 on a free port (the server picks it: `-p 0`) and waits until it listens.
    pub fn start() -> MongoServer {
        MongoServer::launch_new(false)
    }

    /// Like [`MongoServer::start`], with its data in a file, so that [`MongoServer::restart`]
    /// after [`MongoServer::kill`] finds it again (a crashed and restarted database).
    pub fn start_on_disk() -> MongoServer {
        MongoServer::launch_new(true)
    }

    fn launch_new(on_disk: bool) -> MongoServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "nx-27017-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("server dir");
        let db = if on_disk {
            dir.join("data.sqlite").display().to_string()
        } else {
            "memory".to_string()
        };
        let (watchdog, pid, port) = launch(&dir, &db, 0);
        MongoServer {
            watchdog,
            pid,
            port,
            dir,
            db,
        }
    }

    /// Kills the server (SIGKILL, as a crash would) and its watchdog; its files stay.
    pub fn kill(&mut self) {
        signal(self.pid, libc::SIGKILL);
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }

    /// Starts the server again on the same port and data (after [`MongoServer::kill`]).
    pub fn restart(&mut self) {
        let (watchdog, pid, port) = launch(&self.dir, &self.db, self.port);
        assert_eq!(port, self.port, "nx-27017 came back on another port");
        self.watchdog = watchdog;
        self.pid = pid;
    }

    /// Its URI.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// Its `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, like a hung server.
    pub fn pause(&self) {
        signal(self.pid, libc::SIGSTOP);
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid, libc::SIGCONT);
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        signal(self.pid, libc::SIGKILL);
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts nx-27017 with data `db` (`memory` or a file) on `port` (0: its choice) under a
/// watchdog; returns the watchdog, the server's PID and its port.
// The watchdog goes back to the caller, whose `MongoServer` waits on it (`kill`, `Drop`).
#[allow(clippy::zombie_processes)]
fn launch(dir: &std::path::Path, db: &str, port: u16) -> (Child, u32, u16) {
    let venv = venv();
    let log = dir.join("server.log");
    let out = dir.join("server.out");
    let pid_file = dir.join("server.pid");
    let child_file = dir.join("child.pid");
    // An earlier run's files name its port and PID.
    for f in [&log, &out, &pid_file, &child_file] {
        let _ = std::fs::remove_file(f);
    }
    // The watchdog: starts the server in the background, then waits while the test process
    // lives (and at most LIFETIME_SECS), then kills the server. SIGKILL also ends a stopped
    // (SIGSTOPped) server. Then it removes the server's directory (not when the watchdog
    // itself is killed: `MongoServer::kill` keeps the data for a restart).
    let script = r#"
"$1" --db "$9" -p "${10}" --log-file "$2" --pid-file "$3" >"$4" 2>&1 &
child=$!
echo "$child" > "$5"
end=$(( $(date +%s) + $7 ))
while kill -0 "$6" 2>/dev/null && kill -0 "$child" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do
    sleep 0.5
done
kill -9 "$child" 2>/dev/null
wait "$child" 2>/dev/null
rm -rf "$8"
"#;
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("nx-watchdog")
        .arg(venv.join("bin/nx-27017"))
        .arg(&log)
        .arg(&pid_file)
        .arg(&out)
        .arg(&child_file)
        .arg(std::process::id().to_string())
        .arg(LIFETIME_SECS.to_string())
        .arg(dir)
        .arg(db)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pid = std::fs::read_to_string(&child_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let port = [&log, &out]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .find_map(|text| listening_port(&text));
        if let (Some(pid), Some(port)) = (pid, port) {
            return (watchdog, pid, port);
        }
        if Instant::now() >= deadline {
            let mut watchdog = watchdog;
            let _ = watchdog.kill();
            let _ = watchdog.wait();
            panic!(
                "nx-27017 did not start within 60 s; its output:\n{}\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a PID this harness started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The port in nx-27017's `Listening on 127.0.0.1:PORT` line.
fn listening_port(text: &str) -> Option<u16> {
    let rest = &text[text.find("Listening on ")? + "Listening on ".len()..];
    let line = rest.lines().next()?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// A venv with nx-27017, created once (under a file lock, as test binaries run in parallel)
/// and reused.
fn venv() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("mongo-venv");
    let ready = dir.join(".ready-nx-27017-0.8.1");
    if ready.exists() {
        return dir;
    }
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let lock = File::create(tmp.join("mongo-venv.lock")).expect("lock file");
    lock.lock().expect("lock");
    if !ready.exists() {
        // A venv left half-made by a killed run is made again from scratch.
        let _ = std::fs::remove_dir_all(&dir);
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv (is python3-venv installed?)",
        );
        run(
            Command::new(dir.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                NX_PACKAGE,
            ]),
            "pip install nx-27017==0.8.1 (PyPI must be reachable)",
        );
        std::fs::write(&ready, b"ok").expect("marker");
    }
    drop(lock);
    dir
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
