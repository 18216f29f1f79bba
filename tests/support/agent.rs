//! The node agent (`ts3ab-lb-agent`, crate `agent/`) as a process for the router's tests: the
//! binary (built once per test binary, as it belongs to another package of the workspace),
//! a small fixture /proc tree, and the process under a watchdog on a free loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::watched::Watched;
use super::{raw_request, Response};

/// The longest a test agent lives, whatever happens to the test process.
pub const LIFETIME: Duration = Duration::from_secs(600);

/// The agent binary of the profile this test binary was built with. Used as it is when it is
/// newer than the agent's sources and the lock file (`cargo test --workspace` has just built
/// it); else built by cargo, once per test binary (a build of the agent package alone unifies
/// other dependency features than a workspace build, so an up-to-date binary is not rebuilt).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir
            .file_name()
            .expect("profile name")
            .to_string_lossy()
            .into_owned();
        let profile = if profile == "debug" {
            "dev".into()
        } else {
            profile
        };
        let bin = profile_dir.join("ts3ab-lb-agent");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let sources = [root.join("agent"), root.join("Cargo.lock")]
            .iter()
            .map(|p| newest(p))
            .max()
            .flatten();
        if let (Some(built), Some(sources)) = (built, sources) {
            if built >= sources {
                return bin;
            }
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "ts3ab-lb-agent",
                "--bin",
                "ts3ab-lb-agent",
            ])
            .args(["--profile", &profile, "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build for the agent");
        assert!(
            out.status.success(),
            "cargo build -p ts3ab-lb-agent failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(bin.is_file(), "no agent binary at {}", bin.display());
        bin
    })
    .clone()
}

/// The newest modification time of a file, or of any file under a directory (`target`
/// excluded).
fn newest(p: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(p).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(p)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "target")
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The pid of the fixture's TS3AudioBot process.
pub const FIXTURE_PID: u32 = 4242;

/// Writes a /proc tree with known numbers under `root`: two CPUs, 4 GiB with 3 GiB available,
/// load 0.5, `eth0` and `lo`, and a TS3AudioBot (`dotnet TS3AudioBot.dll`) as pid 4242 with
/// 128 MiB resident. `tick` moves the CPU counters (call it again with a larger one to make
/// rates non-zero).
pub fn write_fixture_proc(root: &Path, tick: u64) {
    let w = |rel: &str, text: String| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write fixture");
        std::fs::rename(&tmp, &p).expect("rename fixture");
    };
    let (u, i) = (1000 + 30 * tick, 9000 + 70 * tick);
    w(
        "stat",
        format!(
            "cpu  {} 0 100 {} 0 0 0 0 0 0\ncpu0 {u} 0 50 {i} 0 0 0 0 0 0\ncpu1 {u} 0 50 {i} 0 0 0 0 0 0\n\
             btime 1700000000\n",
            2 * u,
            2 * i
        ),
    );
    w(
        "meminfo",
        "MemTotal:        4194304 kB\nMemFree:          524288 kB\nMemAvailable:    3145728 kB\n\
         Buffers:           10240 kB\nCached:          1048576 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n"
            .into(),
    );
    w("loadavg", "0.50 0.25 0.125 2/300 4242\n".into());
    w(
        "net/dev",
        format!(
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:    5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0\n  \
             eth0: {} 1000 0 0 0 0 0 0 {} 2000 0 0 0 0 0 0\n",
            1_000_000 + 50_000 * tick,
            2_000_000 + 90_000 * tick
        ),
    );
    let pid = FIXTURE_PID;
    w(&format!("{pid}/comm"), "dotnet\n".into());
    w(
        &format!("{pid}/cmdline"),
        "/usr/bin/dotnet\0/opt/TS3AudioBot/TS3AudioBot.dll\0".into(),
    );
    w(
        &format!("{pid}/stat"),
        format!(
            "{pid} (dotnet) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {} 200 0 0 20 0 14 0 1000 1000000 500 18446744073709551615\n",
            300 + 10 * tick
        ),
    );
    w(
        &format!("{pid}/status"),
        "Name:\tdotnet\nVmSize:\t  400000 kB\nVmRSS:\t  131072 kB\nThreads:\t14\n".into(),
    );
}

/// A running agent.
pub struct Agent {
    proc: Watched,
    /// Where it serves.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `args` (plus `--listen 127.0.0.1:0`) and `envs`; waits for its
    /// `listening on http://ADDR` line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        let mut all = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut envs = envs.to_vec();
        envs.push(("RUST_LOG", "info"));
        let mut proc = Watched::spawn(&binary(), &all, &envs, &log, LIFETIME);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let out = proc.output();
            if let Some(addr) = out
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
            {
                break addr;
            }
            if !proc.running() || Instant::now() >= deadline {
                proc.kill();
                panic!("the agent did not report its address; its output:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Agent {
            proc,
            addr,
            _dir: dir,
        }
    }

    /// GET `path` with an optional `Authorization` value.
    pub fn get(&self, path: &str, auth: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        raw_request(self.addr, "GET", path.as_bytes(), &headers, None)
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        self.proc.output()
    }
}
