//! Reading the Linux process file system: host CPU times, memory, load, network counters, and
//! one process's CPU time and memory.
//!
//! Owns: the file layout under a configurable root (`/proc` in production, a fixture directory
//! in tests), the text formats of `stat`, `meminfo`, `loadavg`, `net/dev`, `<pid>/stat`,
//! `<pid>/status`, `<pid>/comm` and `<pid>/cmdline`, unit conversion to seconds and bytes, and
//! finding the TS3AudioBot process by pid file or by name.
//! Does not own: what is exported under which name (`metrics`, `summary`), ratios between two
//! samples (`sample`), or anything over the network (`bots`).
//!
//! Parsers are pure functions over text so they can be tested without a file system. A line
//! that does not parse is skipped, not fatal: a kernel that adds a column or a field must not
//! take the host metrics down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Clock ticks per second of the times in `/proc/stat` and `/proc/<pid>/stat`. The kernel
/// reports `USER_HZ`, which is 100 on every Linux ABI (node_exporter assumes the same).
pub const USER_HZ: f64 = 100.0;

/// An error reading a file under the proc root.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (missing, permission, ...).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but held nothing usable.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: &'static str,
    },
}

/// CPU time of one CPU (or all CPUs together), in seconds, per mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuTimes {
    /// Time in user mode (includes guest time, as in the kernel's accounting).
    pub user: f64,
    /// Time in user mode at low priority (includes guest_nice).
    pub nice: f64,
    /// Time in kernel mode.
    pub system: f64,
    /// Idle time.
    pub idle: f64,
    /// Idle while waiting for I/O.
    pub iowait: f64,
    /// Servicing interrupts.
    pub irq: f64,
    /// Servicing softirqs.
    pub softirq: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

impl CpuTimes {
    /// The modes in node_exporter's order and spelling, with their values.
    pub fn modes(&self) -> [(&'static str, f64); 8] {
        [
            ("idle", self.idle),
            ("iowait", self.iowait),
            ("irq", self.irq),
            ("nice", self.nice),
            ("softirq", self.softirq),
            ("steal", self.steal),
            ("system", self.system),
            ("user", self.user),
        ]
    }

    /// All time, busy or not.
    pub fn total(&self) -> f64 {
        self.modes().iter().map(|(_, v)| v).sum()
    }

    /// Time not idle: everything except `idle`, `iowait` and `steal` (the node-mixin's
    /// definition of CPU utilisation).
    pub fn busy(&self) -> f64 {
        self.total() - self.idle - self.iowait - self.steal
    }
}

/// What `/proc/stat` holds that the agent uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stat {
    /// The aggregate `cpu` line.
    pub total: CpuTimes,
    /// The `cpuN` lines, as (N, times), in file order.
    pub cpus: Vec<(u32, CpuTimes)>,
    /// `btime`: boot time, seconds since the epoch.
    pub boot_time: Option<u64>,
}

/// The three load averages of `/proc/loadavg`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadAvg {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// Counters of one network interface from `/proc/net/dev`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetDev {
    /// Interface name (the `device` label).
    pub device: String,
    /// Bytes received.
    pub receive_bytes: u64,
    /// Packets received.
    pub receive_packets: u64,
    /// Bytes sent.
    pub transmit_bytes: u64,
    /// Packets sent.
    pub transmit_packets: u64,
}

/// CPU time and memory of one process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStat {
    /// The pid read.
    pub pid: u32,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size (`VmRSS`), bytes; `None` for a zombie or a kernel thread.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size (`VmSize`), bytes.
    pub virtual_bytes: Option<u64>,
    /// Start time, seconds since boot.
    pub start_since_boot: f64,
    /// Number of threads.
    pub threads: Option<u64>,
}

/// Where to find the TS3AudioBot process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessLocator {
    /// A file holding the pid (as TS3AudioBot's service scripts write it).
    PidFile(PathBuf),
    /// A process name: matches `comm`, or the file name of the first two `cmdline` arguments
    /// without a `.dll`/`.exe` suffix (so `dotnet TS3AudioBot.dll` matches `TS3AudioBot`).
    Name(String),
}

// === parsers (pure) ===

fn parse_cpu_fields(fields: &[&str]) -> Option<CpuTimes> {
    let v: Vec<f64> = fields
        .iter()
        .take(8)
        .map(|f| f.parse::<u64>().ok().map(|t| t as f64 / USER_HZ))
        .collect::<Option<Vec<_>>>()?;
    // Kernels since 2.6.11 have at least eight columns; older formats are not supported.
    if v.len() < 8 {
        return None;
    }
    Some(CpuTimes {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
    })
}

/// Parses `/proc/stat`. `None` when there is no usable aggregate `cpu` line.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let mut total = None;
    let mut cpus = Vec::new();
    let mut boot_time = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(key) = it.next() else { continue };
        let rest: Vec<&str> = it.collect();
        if key == "cpu" {
            total = parse_cpu_fields(&rest);
        } else if let Some(n) = key.strip_prefix("cpu") {
            if let (Ok(n), Some(t)) = (n.parse::<u32>(), parse_cpu_fields(&rest)) {
                cpus.push((n, t));
            }
        } else if key == "btime" {
            boot_time = rest.first().and_then(|v| v.parse().ok());
        }
    }
    Some(Stat {
        total: total?,
        cpus,
        boot_time,
    })
}

/// Parses `/proc/meminfo` into bytes per field name (`MemTotal`, `MemAvailable`, ...).
/// Fields without a `kB` unit (the `HugePages_*` counts) are kept as they are.
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let Some(Ok(v)) = it.next().map(str::parse::<u64>) else {
            continue;
        };
        let v = match it.next() {
            Some("kB") => v.saturating_mul(1024),
            None => v,
            Some(_) => continue,
        };
        out.insert(key.trim().to_string(), v);
    }
    out
}

/// Parses `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(one)), Some(Ok(five)), Some(Ok(fifteen))) => Some(LoadAvg { one, five, fifteen }),
        _ => None,
    }
}

/// Parses `/proc/net/dev` (two header lines, then `name: 8 receive and 8 transmit columns`).
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let cols: Option<Vec<u64>> = rest.split_whitespace().map(|c| c.parse().ok()).collect();
        let Some(cols) = cols.filter(|c| c.len() >= 16) else {
            continue;
        };
        let device = name.trim();
        if device.is_empty() {
            continue;
        }
        out.push(NetDev {
            device: device.to_string(),
            receive_bytes: cols[0],
            receive_packets: cols[1],
            transmit_bytes: cols[8],
            transmit_packets: cols[9],
        });
    }
    out
}

/// Parses `/proc/<pid>/stat` and `/proc/<pid>/status` text into a [`ProcessStat`].
/// The command name in `stat` may hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_process(pid: u32, stat: &str, status: &str) -> Option<ProcessStat> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15, num_threads 20, starttime 22.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let utime = num(11)?;
    let stime = num(12)?;
    let starttime = num(19)?;
    let mem = parse_meminfo(status);
    Some(ProcessStat {
        pid,
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: mem.get("VmRSS").copied(),
        virtual_bytes: mem.get("VmSize").copied(),
        start_since_boot: starttime as f64 / USER_HZ,
        threads: mem.get("Threads").copied().or(num(17)),
    })
}

/// Whether a process with this `comm` and NUL-separated `cmdline` is called `name`.
pub fn process_matches(name: &str, comm: &str, cmdline: &[u8]) -> bool {
    if comm.trim_end_matches('\n') == name {
        return true;
    }
    cmdline
        .split(|&b| b == 0)
        .take(2)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .any(|arg| {
            let base = arg.rsplit('/').next().unwrap_or(arg);
            let base = base
                .strip_suffix(".dll")
                .or_else(|| base.strip_suffix(".exe"))
                .unwrap_or(base);
            base == name
        })
}

// === reading files ===

/// The proc file system under one root directory.
#[derive(Clone, Debug)]
pub struct Proc {
    root: PathBuf,
}

impl Proc {
    /// Reads under `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Proc {
        Proc { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn read(&self, rel: &str) -> Result<(PathBuf, String), ProcError> {
        let path = self.root.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok((path, t)),
            Err(source) => Err(ProcError::Read { path, source }),
        }
    }

    /// `stat`.
    pub fn stat(&self) -> Result<Stat, ProcError> {
        let (path, text) = self.read("stat")?;
        parse_stat(&text).ok_or(ProcError::Parse {
            path,
            what: "no aggregate cpu line",
        })
    }

    /// `meminfo`, bytes per field.
    pub fn meminfo(&self) -> Result<BTreeMap<String, u64>, ProcError> {
        let (_, text) = self.read("meminfo")?;
        Ok(parse_meminfo(&text))
    }

    /// `loadavg`.
    pub fn loadavg(&self) -> Result<LoadAvg, ProcError> {
        let (path, text) = self.read("loadavg")?;
        parse_loadavg(&text).ok_or(ProcError::Parse {
            path,
            what: "expected three load averages",
        })
    }

    /// `net/dev`.
    pub fn net_dev(&self) -> Result<Vec<NetDev>, ProcError> {
        let (_, text) = self.read("net/dev")?;
        Ok(parse_net_dev(&text))
    }

    /// `<pid>/stat` and `<pid>/status`.
    pub fn process(&self, pid: u32) -> Result<ProcessStat, ProcError> {
        let (path, stat) = self.read(&format!("{pid}/stat"))?;
        // Without status (a restricted /proc) CPU time still counts; memory is then unknown.
        let status = self
            .read(&format!("{pid}/status"))
            .map(|(_, t)| t)
            .unwrap_or_default();
        parse_process(pid, &stat, &status).ok_or(ProcError::Parse {
            path,
            what: "too few fields after the command name",
        })
    }

    /// Finds the process: the pid in the pid file if that process exists, or the lowest pid
    /// whose name matches. `None` when there is none (or the pid file is missing or garbled).
    pub fn find(&self, locator: &ProcessLocator) -> Option<u32> {
        match locator {
            ProcessLocator::PidFile(file) => {
                let pid = std::fs::read_to_string(file)
                    .ok()?
                    .trim()
                    .parse::<u32>()
                    .ok()?;
                self.root.join(pid.to_string()).is_dir().then_some(pid)
            }
            ProcessLocator::Name(name) => {
                let mut pids: Vec<u32> = std::fs::read_dir(&self.root)
                    .ok()?
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .collect();
                pids.sort_unstable();
                pids.into_iter().find(|pid| {
                    let dir = self.root.join(pid.to_string());
                    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
                    process_matches(name, &comm, &cmdline)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1000 20 300 50000 40 5 6 7 0 0\n\
cpu0 600 10 200 25000 20 3 4 5 0 0\n\
cpu1 400 10 100 25000 20 2 2 2 0 0\n\
cpuX garbled line\n\
intr 12345 0 0\n\
ctxt 999\n\
btime 1700000000\n\
processes 42\n";

    #[test]
    fn stat_parses_total_cpus_and_btime() {
        let s = parse_stat(STAT).expect("parses");
        assert_eq!(s.total.user, 10.0);
        assert_eq!(s.total.nice, 0.2);
        assert_eq!(s.total.system, 3.0);
        assert_eq!(s.total.idle, 500.0);
        assert_eq!(s.total.steal, 0.07);
        assert_eq!(s.cpus.len(), 2, "the garbled cpuX line is skipped");
        assert_eq!(s.cpus[1].0, 1);
        assert_eq!(s.cpus[1].1.user, 4.0);
        assert_eq!(s.boot_time, Some(1_700_000_000));
        let busy = s.total.busy();
        assert!(
            (busy - (10.0 + 0.2 + 3.0 + 0.05 + 0.06)).abs() < 1e-9,
            "{busy}"
        );
    }

    #[test]
    fn stat_without_cpu_line_or_with_short_cpu_line_is_none() {
        assert_eq!(parse_stat("btime 1\n"), None);
        assert_eq!(parse_stat("cpu 1 2 3\n"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn meminfo_converts_kb_and_skips_garbage() {
        let m = parse_meminfo(
            "MemTotal:       16000 kB\nMemFree: 1000 kB\nMemAvailable:   8000 kB\n\
             garbage line\nBroken: abc kB\nHugePages_Total:       4\nOdd: 1 MB\n",
        );
        assert_eq!(m.get("MemTotal"), Some(&(16000 * 1024)));
        assert_eq!(m.get("MemAvailable"), Some(&(8000 * 1024)));
        assert_eq!(m.get("HugePages_Total"), Some(&4));
        assert_eq!(m.get("Broken"), None);
        assert_eq!(m.get("Odd"), None);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        assert_eq!(
            parse_loadavg("0.40 0.25 0.10 1/234 5678\n"),
            Some(LoadAvg {
                one: 0.4,
                five: 0.25,
                fifteen: 0.1
            })
        );
        assert_eq!(parse_loadavg("0.40 x 0.10\n"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn net_dev_parses_interfaces_and_skips_headers_and_garbled_lines() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 123456789 1000 0 0 0 0 0 0 987654321 2000 0 0 0 0 0 0\n  \
bad0: 1 2 3\n";
        let d = parse_net_dev(text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].device, "eth0");
        assert_eq!(d[1].receive_bytes, 123_456_789);
        assert_eq!(d[1].receive_packets, 1000);
        assert_eq!(d[1].transmit_bytes, 987_654_321);
        assert_eq!(d[1].transmit_packets, 2000);
    }

    #[test]
    fn process_stat_handles_spaces_and_parens_in_comm() {
        // Fields after the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
        let stat = "4242 (TS3 (Audio) Bot) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 12345 1000000 500 18446744073709551615\n";
        let status = "Name:\tTS3AudioBot\nVmSize:\t  200000 kB\nVmRSS:\t  51200 kB\nThreads:\t13\n";
        let p = parse_process(4242, stat, status).expect("parses");
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, Some(51200 * 1024));
        assert_eq!(p.virtual_bytes, Some(200000 * 1024));
        assert_eq!(p.start_since_boot, 123.45);
        assert_eq!(p.threads, Some(13));
        // A zombie has no VmRSS; threads then come from stat.
        let p = parse_process(4242, stat, "Name:\tx\n").expect("parses");
        assert_eq!(p.resident_bytes, None);
        assert_eq!(p.threads, Some(12));
    }

    #[test]
    fn process_stat_garbled_is_none() {
        assert_eq!(parse_process(1, "1 (x) S 1 2 3", ""), None);
        assert_eq!(parse_process(1, "no parens at all", ""), None);
        assert_eq!(
            parse_process(1, "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 50 0 0 20 0 1 0 5", ""),
            None
        );
    }

    #[test]
    fn process_name_matching() {
        assert!(process_matches("TS3AudioBot", "TS3AudioBot\n", b""));
        assert!(process_matches(
            "TS3AudioBot",
            "dotnet\n",
            b"/usr/bin/dotnet\0/opt/ts3ab/TS3AudioBot.dll\0--non-interactive\0"
        ));
        assert!(process_matches("TS3AudioBot", "x", b"/opt/TS3AudioBot\0"));
        assert!(!process_matches(
            "TS3AudioBot",
            "bash\n",
            b"bash\0-c\0TS3AudioBot\0"
        ));
        assert!(!process_matches("TS3AudioBot", "TS3AudioBotX\n", b""));
    }

    #[test]
    fn files_under_a_fixture_root_and_a_missing_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("stat"), STAT).expect("write");
        std::fs::write(root.join("loadavg"), "garbled\n").expect("write");
        std::fs::create_dir_all(root.join("77")).expect("mkdir");
        std::fs::write(root.join("77/comm"), "TS3AudioBot\n").expect("write");
        std::fs::write(
            root.join("77/stat"),
            "77 (TS3AudioBot) S 1 1 1 0 -1 0 0 0 0 0 100 100 0 0 20 0 1 0 5\n",
        )
        .expect("write");
        let proc = Proc::new(root);
        assert_eq!(proc.stat().expect("stat").cpus.len(), 2);
        let err = proc.loadavg().expect_err("garbled");
        assert!(err.to_string().contains("loadavg"), "{err}");
        let err = proc.meminfo().expect_err("missing");
        assert!(err.to_string().contains("meminfo"), "{err}");
        assert_eq!(
            proc.find(&ProcessLocator::Name("TS3AudioBot".into())),
            Some(77)
        );
        assert_eq!(proc.find(&ProcessLocator::Name("other".into())), None);
        // Stat without a status file: CPU is known, memory is not.
        let p = proc.process(77).expect("process");
        assert_eq!(p.cpu_seconds, 2.0);
        assert_eq!(p.resident_bytes, None);
        let err = proc.process(78).expect_err("missing pid");
        assert!(err.to_string().contains("78/stat"), "{err}");
        // Pid files: present and alive, pointing at a missing pid, garbled, missing.
        let pf = root.join("ts3ab.pid");
        std::fs::write(&pf, "77\n").expect("write");
        assert_eq!(proc.find(&ProcessLocator::PidFile(pf.clone())), Some(77));
        std::fs::write(&pf, "78\n").expect("write");
        assert_eq!(proc.find(&ProcessLocator::PidFile(pf.clone())), None);
        std::fs::write(&pf, "seventy-seven").expect("write");
        assert_eq!(proc.find(&ProcessLocator::PidFile(pf)), None);
        assert_eq!(
            proc.find(&ProcessLocator::PidFile(root.join("nope.pid"))),
            None
        );
    }
}
