//! The JSON summary at `/summary`: a few numbers the router can use to place bots by load.
//!
//! Owns: the field names and their meaning (documented in README.md; a field is `null`
//! when its source could not be read), and the ratios derived from a snapshot.
//! Does not own: gathering (`snapshot`), CPU sampling (`sample`), or serving (`http`).

use serde::Serialize;

use crate::bots::BotCounts;
use crate::sample::Ratios;
use crate::snapshot::Snapshot;

/// The summary document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Busy share of all host CPU time over the last sampling interval (0-1).
    pub cpu_busy_ratio: Option<f64>,
    /// Number of CPUs (the `cpuN` lines of /proc/stat).
    pub cpu_count: Option<usize>,
    /// `MemTotal`, bytes.
    pub memory_total_bytes: Option<u64>,
    /// `MemAvailable`, bytes.
    pub memory_available_bytes: Option<u64>,
    /// `MemAvailable / MemTotal` (0-1).
    pub memory_available_ratio: Option<f64>,
    /// 1-minute load average.
    pub load1: Option<f64>,
    /// 5-minute load average.
    pub load5: Option<f64>,
    /// 15-minute load average.
    pub load15: Option<f64>,
    /// Whether the TS3AudioBot process was found.
    pub process_up: bool,
    /// The TS3AudioBot process's share of all host CPU time over the last sampling interval
    /// (0-1; one full core on a 4-core host is 0.25).
    pub process_cpu_ratio: Option<f64>,
    /// Resident memory of the TS3AudioBot process, bytes.
    pub process_resident_bytes: Option<u64>,
    /// Whether the TS3AudioBot API answered `bot/list`.
    pub api_up: bool,
    /// Bots by status; `null` when the API did not answer.
    pub bots: Option<BotCounts>,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The agent's version.
    pub version: &'static str,
}

impl Summary {
    /// The summary of a snapshot and the sampler's latest ratios.
    pub fn new(s: &Snapshot, r: Ratios) -> Summary {
        let total = s.meminfo.get("MemTotal").copied();
        let avail = s.meminfo.get("MemAvailable").copied();
        let process_up = s.process.is_some();
        Summary {
            cpu_busy_ratio: r.cpu_busy,
            cpu_count: s.stat.as_ref().map(|st| st.cpus.len()).filter(|&n| n > 0),
            memory_total_bytes: total,
            memory_available_bytes: avail,
            memory_available_ratio: match (avail, total) {
                (Some(a), Some(t)) if t > 0 => Some((a as f64 / t as f64).clamp(0.0, 1.0)),
                _ => None,
            },
            load1: s.load.map(|l| l.one),
            load5: s.load.map(|l| l.five),
            load15: s.load.map(|l| l.fifteen),
            process_up,
            // A ratio from before the process went away is not reported as current.
            process_cpu_ratio: r.process_cpu.filter(|_| process_up),
            process_resident_bytes: s.process.as_ref().and_then(|p| p.resident_bytes),
            api_up: s.bots.is_some(),
            bots: s.bots,
            at_ms: s.at_ms(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Serializing plain numbers, bools and strings cannot fail; keep a valid body anyway.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::{parse_meminfo, LoadAvg, ProcessStat};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn fields_and_nulls() {
        let s = Snapshot {
            meminfo: parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 250 kB\n"),
            load: Some(LoadAvg {
                one: 0.5,
                five: 0.25,
                fifteen: 0.0,
            }),
            process: Some(ProcessStat {
                resident_bytes: Some(77),
                ..ProcessStat::default()
            }),
            bots: Some(BotCounts {
                offline: 0,
                connecting: 1,
                connected: 5,
            }),
            at: UNIX_EPOCH + Duration::from_millis(1234),
            ..Snapshot::default()
        };
        let r = Ratios {
            cpu_busy: Some(0.12),
            process_cpu: Some(0.05),
        };
        let v: serde_json::Value =
            serde_json::from_str(&Summary::new(&s, r).to_json()).expect("json");
        assert_eq!(v["cpu_busy_ratio"], 0.12);
        assert_eq!(v["cpu_count"], serde_json::Value::Null);
        assert_eq!(v["memory_available_ratio"], 0.25);
        assert_eq!(v["memory_total_bytes"], 1024000);
        assert_eq!(v["load1"], 0.5);
        assert_eq!(v["process_up"], true);
        assert_eq!(v["process_cpu_ratio"], 0.05);
        assert_eq!(v["process_resident_bytes"], 77);
        assert_eq!(v["api_up"], true);
        assert_eq!(v["bots"]["connected"], 5);
        assert_eq!(v["bots"]["connecting"], 1);
        assert_eq!(v["bots"]["offline"], 0);
        assert_eq!(v["at_ms"], 1234);

        let down = Snapshot {
            process: None,
            bots: None,
            ..s
        };
        let v: serde_json::Value =
            serde_json::from_str(&Summary::new(&down, r).to_json()).expect("json");
        assert_eq!(v["process_up"], false);
        assert_eq!(v["process_cpu_ratio"], serde_json::Value::Null);
        assert_eq!(v["api_up"], false);
        assert_eq!(v["bots"], serde_json::Value::Null);
    }
}
