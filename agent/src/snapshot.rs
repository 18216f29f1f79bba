//! One look at the node: everything `/metrics` and `/summary` report, gathered per request.
//!
//! Owns: asking `procfs` and `bots` for their parts, and keeping a failed part from failing
//! the rest (a part that could not be read is `None`, and says so in the logs).
//! Does not own: the text or JSON made from a snapshot (`metrics`, `summary`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bots::{BotCounts, BotsClient};
use crate::procfs::{LoadAvg, NetDev, Proc, ProcessLocator, ProcessStat, Stat};

/// What the agent saw at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `/proc/stat`, if readable.
    pub stat: Option<Stat>,
    /// `/proc/meminfo` in bytes per field (empty if unreadable).
    pub meminfo: BTreeMap<String, u64>,
    /// `/proc/loadavg`, if readable.
    pub load: Option<LoadAvg>,
    /// `/proc/net/dev` (empty if unreadable).
    pub net: Vec<NetDev>,
    /// The TS3AudioBot process, if found and readable.
    pub process: Option<ProcessStat>,
    /// Bots by status, if the API answered.
    pub bots: Option<BotCounts>,
    /// Why the API did not answer, if it did not.
    pub api_error: Option<String>,
    /// How long gathering took.
    pub duration: Duration,
    /// When it was taken.
    pub at: SystemTime,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            stat: None,
            meminfo: BTreeMap::new(),
            load: None,
            net: Vec::new(),
            process: None,
            bots: None,
            api_error: None,
            duration: Duration::ZERO,
            at: UNIX_EPOCH,
        }
    }
}

impl Snapshot {
    /// Milliseconds since the epoch at which it was taken.
    pub fn at_ms(&self) -> u64 {
        self.at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// The process's start time in seconds since the epoch (needs `btime`).
    pub fn process_start_time(&self) -> Option<f64> {
        let boot = self.stat.as_ref()?.boot_time?;
        Some(boot as f64 + self.process.as_ref()?.start_since_boot)
    }
}

fn ok_or_log<T>(what: &str, r: Result<T, impl std::fmt::Display>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("{what}: {e}");
            None
        }
    }
}

/// Reads the host and process files (blocking, small reads).
fn read_proc(proc: &Proc, locator: &ProcessLocator) -> Snapshot {
    let process = proc.find(locator).and_then(|pid| match proc.process(pid) {
        Ok(p) => Some(p),
        // It may have exited between finding and reading: not worth a warning.
        Err(e) => {
            log::debug!("process {pid}: {e}");
            None
        }
    });
    Snapshot {
        stat: ok_or_log("host cpu", proc.stat()),
        meminfo: ok_or_log("host memory", proc.meminfo()).unwrap_or_default(),
        load: ok_or_log("host load", proc.loadavg()),
        net: ok_or_log("host network", proc.net_dev()).unwrap_or_default(),
        process,
        ..Snapshot::default()
    }
}

/// Gathers a snapshot: files on the blocking pool while the API is asked.
pub async fn take(proc: &Proc, locator: &ProcessLocator, bots: &BotsClient) -> Snapshot {
    let start = Instant::now();
    let at = SystemTime::now();
    let (p, l) = (proc.clone(), locator.clone());
    let files = tokio::task::spawn_blocking(move || read_proc(&p, &l));
    let counts = bots.counts().await;
    let mut snap = match files.await {
        Ok(s) => s,
        Err(e) => {
            log::error!("reading {}: {e}", proc.root().display());
            Snapshot::default()
        }
    };
    match counts {
        Ok(c) => snap.bots = Some(c),
        Err(e) => snap.api_error = Some(e.to_string()),
    }
    snap.at = at;
    snap.duration = start.elapsed();
    snap
}
