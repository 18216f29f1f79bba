//! The background CPU sampler: host and TS3AudioBot CPU ratios over the last interval.
//!
//! Owns: keeping the previous CPU sample in memory, turning two samples into ratios, and the
//! loop that takes a sample every `--sample-interval`.
//! Does not own: reading files (`procfs`), or exporting the ratios (`summary`). `/metrics`
//! exports the raw counters instead, so Prometheus computes its own rates.
//!
//! A background sampler (rather than a ratio since the previous request) keeps the ratios
//! meaningful when Prometheus and the router both ask, at different rates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::procfs::{Proc, ProcessLocator};

/// CPU ratios over the last sampling interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ratios {
    /// Busy share of all host CPU time (0-1).
    pub cpu_busy: Option<f64>,
    /// The TS3AudioBot process's share of all host CPU time (0-1, so 1 / cores is one full
    /// core); `None` when the process was not there (the same pid) at both samples.
    pub process_cpu: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuSample {
    total: f64,
    busy: f64,
    /// (pid, CPU seconds) of the TS3AudioBot process.
    process: Option<(u32, f64)>,
}

/// Ratios from two samples.
fn ratios(prev: &CpuSample, cur: &CpuSample) -> Ratios {
    let dt = cur.total - prev.total;
    if dt <= 0.0 {
        return Ratios::default();
    }
    let clamp = |v: f64| v.clamp(0.0, 1.0);
    let process_cpu = match (prev.process, cur.process) {
        (Some((p0, c0)), Some((p1, c1))) if p0 == p1 => Some(clamp((c1 - c0) / dt)),
        _ => None,
    };
    Ratios {
        cpu_busy: Some(clamp((cur.busy - prev.busy) / dt)),
        process_cpu,
    }
}

#[derive(Default)]
struct State {
    prev: Option<CpuSample>,
    ratios: Ratios,
}

/// Takes CPU samples and keeps the latest ratios.
#[derive(Clone)]
pub struct Sampler {
    proc: Proc,
    locator: ProcessLocator,
    state: Arc<Mutex<State>>,
}

impl Sampler {
    /// A sampler with no samples yet.
    pub fn new(proc: Proc, locator: ProcessLocator) -> Sampler {
        Sampler {
            proc,
            locator,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Takes one sample and updates the ratios. A failed read of `stat` drops the previous
    /// sample, so the next ratio is not computed across the gap.
    pub fn tick(&self) {
        let cur = match self.proc.stat() {
            Ok(s) => Some(CpuSample {
                total: s.total.total(),
                busy: s.total.busy(),
                process: self
                    .proc
                    .find(&self.locator)
                    .and_then(|pid| self.proc.process(pid).ok())
                    .map(|p| (p.pid, p.cpu_seconds)),
            }),
            Err(e) => {
                log::warn!("cpu sample: {e}");
                None
            }
        };
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match (st.prev, cur) {
            // No CPU time passed (a fixture that did not change, or counters that went back):
            // keep the last ratios and measure the next one from the older sample.
            (Some(p), Some(c)) if c.total <= p.total => {}
            (Some(p), Some(c)) => {
                st.ratios = ratios(&p, &c);
                st.prev = Some(c);
            }
            (None, c) | (Some(_), c @ None) => {
                st.ratios = Ratios::default();
                st.prev = c;
            }
        }
    }

    /// The ratios over the last interval (all `None` before the second sample).
    pub fn ratios(&self) -> Ratios {
        match self.state.lock() {
            Ok(g) => g.ratios,
            Err(poisoned) => poisoned.into_inner().ratios,
        }
    }

    /// Samples every `interval`, forever. File reads are small; they run on the blocking pool
    /// so a slow /proc never stalls the server's tasks.
    pub async fn run(self, interval: Duration) {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let s = self.clone();
            if tokio::task::spawn_blocking(move || s.tick()).await.is_err() {
                log::error!("cpu sampler task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_from_two_samples() {
        let a = CpuSample {
            total: 100.0,
            busy: 10.0,
            process: Some((7, 1.0)),
        };
        let b = CpuSample {
            total: 200.0,
            busy: 35.0,
            process: Some((7, 6.0)),
        };
        assert_eq!(
            ratios(&a, &b),
            Ratios {
                cpu_busy: Some(0.25),
                process_cpu: Some(0.05)
            }
        );
        // Another pid (a restart) or no process: no process ratio.
        let c = CpuSample {
            process: Some((8, 6.0)),
            ..b
        };
        assert_eq!(ratios(&a, &c).process_cpu, None);
        let d = CpuSample { process: None, ..b };
        assert_eq!(ratios(&a, &d).process_cpu, None);
        // No time passed (or the counters went back): nothing.
        assert_eq!(ratios(&b, &a), Ratios::default());
    }

    #[test]
    fn sampler_over_fixture_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |user: u64, idle: u64, utime: u64| {
            std::fs::write(
                root.join("stat"),
                format!("cpu {user} 0 0 {idle} 0 0 0 0 0 0\n"),
            )
            .expect("write stat");
            std::fs::create_dir_all(root.join("9")).expect("mkdir");
            std::fs::write(root.join("9/comm"), "TS3AudioBot\n").expect("write comm");
            std::fs::write(
                root.join("9/stat"),
                format!("9 (TS3AudioBot) S 1 1 1 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1 0 5\n"),
            )
            .expect("write pid stat");
        };
        let s = Sampler::new(Proc::new(root), ProcessLocator::Name("TS3AudioBot".into()));
        write(1000, 9000, 100);
        s.tick();
        assert_eq!(s.ratios(), Ratios::default(), "one sample gives no ratio");
        write(1500, 9500, 200);
        s.tick();
        let r = s.ratios();
        assert_eq!(r.cpu_busy, Some(0.5));
        assert_eq!(r.process_cpu, Some(0.1));
        s.tick();
        assert_eq!(s.ratios(), r, "an unchanged sample keeps the last ratios");
        write(1600, 9900, 200);
        s.tick();
        assert_eq!(
            s.ratios().cpu_busy,
            Some(0.2),
            "measured from the last changed sample"
        );
        std::fs::remove_file(root.join("stat")).expect("rm");
        s.tick();
        assert_eq!(s.ratios(), Ratios::default(), "a failed read resets");
    }
}
