//! The bound on a stop: once Pingora begins shutting its service runtimes down, the process
//! is gone within their timeout plus [`MARGIN`] (and then the store's close, itself bounded),
//! even when a runtime never finishes.
//!
//! Owns: the watchdog thread and its limit. Does not own: the signals or the order of the stop
//! (Pingora's), nor what finishing means (`serve` hands in the closing step it runs itself).
//!
//! Why: on SIGINT Pingora tells all its per-thread runtimes to shut down at once, in no set
//! order, while their tasks still run, with no time to finish. An accept loop whose listener
//! belongs to a thread already shut down gets an error from every accept and retries at once
//! without yielding, so its own thread never takes its stop and the process never exits (seen
//! in the benchmarks and in `tests/upgrade.rs`: about one stop in four with a few threads,
//! tens of thousands of "Accept() failed" lines a second, none of our code involved). SIGTERM
//! and upgrades stop the accept loops first and are not affected, but the bound holds for
//! them too.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pingora::server::ExecutionPhase;
use tokio::sync::broadcast;

/// How much longer than Pingora's own runtime timeout a stop may take before the watchdog
/// ends it (Pingora's quick stop takes milliseconds when nothing spins).
pub const MARGIN: Duration = Duration::from_secs(1);

/// Watches one process's stop; see the module doc.
pub struct StopWatchdog {
    /// Set (and signalled) once the runtimes stopped by themselves.
    done: Arc<(Mutex<bool>, Condvar)>,
    /// The thread: it ends with the process, at `Terminated` if it comes before
    /// `ShutdownRuntimes`, or once `done` is set after it.
    #[cfg_attr(not(test), allow(dead_code))]
    thread: std::thread::JoinHandle<()>,
}

impl StopWatchdog {
    /// Starts the thread. `runtime_timeout` is Pingora's `graceful_shutdown_timeout_seconds`
    /// (it applies after SIGTERM and upgrades; after SIGINT Pingora allows none), `margin`
    /// [`MARGIN`] outside tests. When the limit passes first, the thread runs `finish` (it
    /// closes what must be closed and returns the exit code) and then `exit` with that code
    /// (`std::process::exit` outside tests).
    pub fn start(
        mut phases: broadcast::Receiver<ExecutionPhase>,
        runtime_timeout: Duration,
        margin: Duration,
        finish: impl FnOnce() -> i32 + Send + 'static,
        exit: impl FnOnce(i32) + Send + 'static,
    ) -> std::io::Result<StopWatchdog> {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = done.clone();
        let thread = std::thread::Builder::new()
            .name("stop watchdog".into())
            .spawn(move || {
                let mut graceful = false;
                loop {
                    match phases.blocking_recv() {
                        Ok(ExecutionPhase::ShutdownGracePeriod) => graceful = true,
                        Ok(ExecutionPhase::ShutdownRuntimes) => break,
                        Ok(ExecutionPhase::Terminated)
                        | Err(broadcast::error::RecvError::Closed) => return,
                        // Lagged: a stop sends a handful of phases into a channel of 100.
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    }
                }
                let limit = stop_limit(graceful, runtime_timeout, margin);
                let (lock, signal) = &*watched;
                let Ok(guard) = lock.lock() else { return };
                match signal.wait_timeout_while(guard, limit, |done| !*done) {
                    Ok((done, _)) if !*done => {}
                    _ => return,
                }
                // The spinning accept loop logs an error on every retry, each taking the
                // stderr lock: silenced, it frees stderr for the lines below and stops
                // flooding the journal (the store's own log lines during the close go too;
                // its result is still printed).
                log::set_max_level(log::LevelFilter::Off);
                // Never a panic from here on (a failed stderr write, a panic in `finish`):
                // the thread would die and the process hang again.
                let _ = writeln!(
                    std::io::stderr(),
                    "error: the service runtimes did not stop within {limit:?} (a Pingora \
                     runtime kept running after the stop); closing the store and exiting"
                );
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(finish)).unwrap_or(1);
                exit(code);
            })?;
        Ok(StopWatchdog { done, thread })
    }

    /// The runtimes stopped by themselves: the thread ends without acting.
    pub fn finished(&self) {
        let (lock, signal) = &*self.done;
        if let Ok(mut done) = lock.lock() {
            *done = true;
        }
        signal.notify_all();
    }
}

/// How long the runtimes' shutdown may take: Pingora's timeout after a graceful stop (none
/// after SIGINT), plus `margin`.
fn stop_limit(graceful: bool, runtime_timeout: Duration, margin: Duration) -> Duration {
    if graceful {
        runtime_timeout + margin
    } else {
        margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    const SHORT: Duration = Duration::from_millis(100);

    /// What the test's `finish` and `exit` did: which, the code, when.
    type Reports = mpsc::Receiver<(&'static str, i32, Instant)>;

    /// A watchdog whose `finish` and `exit` report to the returned channel instead of ending
    /// the test process.
    fn watchdog(
        runtime_timeout: Duration,
    ) -> (broadcast::Sender<ExecutionPhase>, StopWatchdog, Reports) {
        let (tx, rx) = broadcast::channel(100);
        let (report, reports) = mpsc::channel();
        let r2 = report.clone();
        let dog = StopWatchdog::start(
            rx,
            runtime_timeout,
            SHORT,
            move || {
                let _ = report.send(("finish", 0, Instant::now()));
                3
            },
            move |code| {
                let _ = r2.send(("exit", code, Instant::now()));
            },
        )
        .unwrap();
        (tx, dog, reports)
    }

    #[test]
    fn a_quick_stop_that_hangs_is_finished_and_exited_after_the_margin() {
        let (tx, dog, reports) = watchdog(Duration::from_secs(30));
        tx.send(ExecutionPhase::ShutdownStarted).unwrap();
        let began = Instant::now();
        tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
        let (what, _, at) = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(what, "finish");
        assert!(
            at - began >= SHORT,
            "not before the margin: {:?}",
            at - began
        );
        assert!(
            at - began < Duration::from_secs(5),
            "no graceful timeout after a quick stop"
        );
        let (what, code, _) = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((what, code), ("exit", 3), "exits with finish's code");
        dog.thread.join().unwrap();
    }

    #[test]
    fn a_graceful_stop_gets_the_runtime_timeout_and_the_margin() {
        let timeout = Duration::from_millis(300);
        let (tx, dog, reports) = watchdog(timeout);
        for p in [
            ExecutionPhase::GracefulTerminate,
            ExecutionPhase::ShutdownStarted,
            ExecutionPhase::ShutdownGracePeriod,
        ] {
            tx.send(p).unwrap();
        }
        let began = Instant::now();
        tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
        let (what, _, at) = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(what, "finish");
        assert!(at - began >= timeout + SHORT, "{:?}", at - began);
        dog.thread.join().unwrap();
    }

    #[test]
    fn a_stop_that_finishes_in_time_is_left_alone() {
        // A long limit: the test thread may be slow to say `finished` on a loaded machine.
        let (tx, dog, reports) = watchdog(Duration::from_secs(30));
        tx.send(ExecutionPhase::ShutdownStarted).unwrap();
        tx.send(ExecutionPhase::ShutdownGracePeriod).unwrap();
        tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
        dog.finished();
        // The thread was waiting out the limit: told, it ends at once, without acting.
        dog.thread.join().unwrap();
        assert!(reports.try_recv().is_err());
    }

    #[test]
    fn a_finish_that_panics_still_exits() {
        let (tx, rx) = broadcast::channel(100);
        let (report, reports) = mpsc::channel();
        let dog = StopWatchdog::start(
            rx,
            Duration::ZERO,
            SHORT,
            || panic!("the store's close panicked"),
            move |code| {
                let _ = report.send(code);
            },
        )
        .unwrap();
        tx.send(ExecutionPhase::ShutdownRuntimes).unwrap();
        assert_eq!(reports.recv_timeout(Duration::from_secs(5)), Ok(1));
        dog.thread.join().unwrap();
    }

    #[test]
    fn a_process_that_ends_without_a_runtime_shutdown_ends_the_thread() {
        let (tx, dog, reports) = watchdog(Duration::ZERO);
        tx.send(ExecutionPhase::Running).unwrap();
        drop(tx);
        dog.thread.join().unwrap();
        assert!(reports.try_recv().is_err());
    }
}
