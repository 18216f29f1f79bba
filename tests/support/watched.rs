//! A child process under a shell watchdog: killed (SIGKILL, by PID) when its guard drops, and
//! by the watchdog as soon as the test process is gone (even after a SIGKILL of the test, when
//! no `Drop` runs) or after a lifetime in any case. Its stdout and stderr go to a log file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process started by [`Watched::spawn`].
pub struct Watched {
    /// The shell watchdog (the process's parent).
    watchdog: Child,
    /// The process itself.
    pub pid: u32,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    name: String,
}

impl Watched {
    /// Starts `program args` with `envs` added to the environment, output to `log`; lives at
    /// most `lifetime`. Returns once the process's PID is known.
    // The watchdog goes back to the caller, whose `Watched` waits on it (`Drop`).
    #[allow(clippy::zombie_processes)]
    pub fn spawn(
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
        lifetime: Duration,
    ) -> Watched {
        let dir = log.parent().expect("log dir");
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pid_file = dir.join(format!(
            "{}.{}.pid",
            log.file_name().expect("log name").to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&pid_file);
        // $1 pid file, $2 log, $3 test pid, $4 lifetime, $5 program, then its arguments.
        let script = r#"
pid_file=$1; log=$2; parent=$3; life=$4; shift 4
"$@" >"$log" 2>&1 </dev/null &
child=$!
echo "$child" > "$pid_file"
end=$(( $(date +%s) + life ))
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do
    sleep 0.5
done
kill -9 "$child" 2>/dev/null
wait "$child" 2>/dev/null
"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(format!("{name}-watchdog"))
            .arg(&pid_file)
            .arg(log)
            .arg(std::process::id().to_string())
            .arg(lifetime.as_secs().max(1).to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut watchdog = cmd.spawn().expect("start sh for the watchdog");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if Instant::now() >= deadline {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
                panic!("{name} did not start under its watchdog within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = std::fs::remove_file(&pid_file);
        Watched {
            watchdog,
            pid,
            log: log.to_path_buf(),
            name,
        }
    }

    /// Whether the process still runs (its watchdog waits on it, so a dead one is reaped and
    /// the watchdog ends).
    pub fn running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None)) && alive(self.pid)
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its output (for failure messages).
    pub fn tail(&self, n: usize) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Kills it (SIGKILL) and its watchdog, and waits for the watchdog.
    pub fn kill(&mut self) {
        // The watchdog reaps the process only after this, so the PID cannot have been reused.
        if matches!(self.watchdog.try_wait(), Ok(None)) {
            signal(self.pid, libc::SIGKILL);
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }

    /// Stops it with SIGTERM and waits (bounded) for it to exit; SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.watchdog.try_wait(), Ok(None)) {
            signal(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while alive(self.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// The program's file name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command in parentheses, which may itself hold ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
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
