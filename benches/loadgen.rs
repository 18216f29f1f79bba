//! A small HTTP/1.1 keep-alive load generator for the benchmark runner (`benches/run.sh`).
//!
//! Two modes:
//! - **open loop** (`--rate R`): requests are due at fixed times `start + i/R`, whatever the
//!   answers do (no coordinated omission: latency counts from the *due* time, so a stalled
//!   server is charged for every request it delayed). Each connection is a thread that takes the
//!   next due time, sleeps until it (with 1 ns timer slack), sends, and reads the answer. This is
//!   what wrk2 or `oha -q` do; neither is a Debian package.
//! - **closed loop** (default): every connection sends its next request as soon as the previous
//!   answer is in (like wrk), latency counted from the send.
//!
//! - **fan-out** (`--fanout ADDR`, repeatable, with `--addr`): one connection per address, the
//!   same request written to all of them at once, then every answer read; a sample is the time
//!   from the first write to the last answer. This is what the fastest possible fan-out client
//!   takes to ask those servers together (the router's `bot/list` baseline: the nodes' time when
//!   all are asked at once, not one by one). `--connections`, `--rate`, `--path-mode` and every
//!   path but the first are ignored; every request carries `--addr` as its `Host`. Also prints
//!   the client's own CPU time per round over the measured span (`cpu_us_per_request`).
//!
//! Requests go to `--path`s (repeatable, or `--paths-file`, one per line): `rotate` takes the
//! next path for every request, `per-conn` gives connection `i` path `i % n` for good.
//! Prints one JSON object: counts, status histogram, requests/s and latency percentiles in µs.
//!
//! Usage: `loadgen --addr 127.0.0.1:8080 --path /api/bot/list [--header 'Authorization: Basic ..']
//!         [--connections 32] [--duration 10] [--warmup 1] [--rate 20000] [--requests N]
//!         [--path-mode rotate|per-conn]`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

struct Args {
    addr: SocketAddr,
    paths: Vec<String>,
    headers: Vec<String>,
    connections: usize,
    duration: f64,
    warmup: f64,
    rate: Option<f64>,
    requests: Option<u64>,
    per_conn: bool,
    fanout: Vec<SocketAddr>,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!(
        "usage: loadgen --addr HOST:PORT --path P [--path P..|--paths-file F] [--header 'K: V'].. \
         [--connections C] [--duration S] [--warmup S] [--rate R] [--requests N] [--path-mode rotate|per-conn] [--fanout HOST:PORT].."
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut addr = None;
    let mut paths = Vec::new();
    let mut headers = Vec::new();
    let (mut connections, mut duration, mut warmup) = (32usize, 10.0f64, 1.0f64);
    let (mut rate, mut requests, mut per_conn) = (None, None, false);
    let mut fanout = Vec::new();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--addr" => addr = Some(val().parse().unwrap_or_else(|_| usage("bad --addr"))),
            "--path" => paths.push(val()),
            "--fanout" => fanout.push(val().parse().unwrap_or_else(|_| usage("bad --fanout"))),
            "--paths-file" => {
                let f = val();
                let text =
                    std::fs::read_to_string(&f).unwrap_or_else(|e| usage(&format!("{f}: {e}")));
                paths.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
            }
            "--header" => headers.push(val()),
            "--connections" => {
                connections = val().parse().unwrap_or_else(|_| usage("bad --connections"))
            }
            "--duration" => duration = val().parse().unwrap_or_else(|_| usage("bad --duration")),
            "--warmup" => warmup = val().parse().unwrap_or_else(|_| usage("bad --warmup")),
            "--rate" => rate = Some(val().parse().unwrap_or_else(|_| usage("bad --rate"))),
            "--requests" => {
                requests = Some(val().parse().unwrap_or_else(|_| usage("bad --requests")))
            }
            "--path-mode" => {
                per_conn = match val().as_str() {
                    "rotate" => false,
                    "per-conn" => true,
                    _ => usage("--path-mode is rotate or per-conn"),
                }
            }
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    if paths.is_empty() {
        usage("give at least one --path");
    }
    Args {
        addr,
        paths,
        headers,
        connections: connections.max(1),
        duration,
        warmup,
        rate,
        requests,
        per_conn,
        fanout,
    }
}

/// One keep-alive connection with a read buffer.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// The outcome of one request.
enum Outcome {
    Status(u16),
    IoError,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.buf.clear();
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("connected"))
    }

    /// Reads more bytes into the buffer; errors on EOF.
    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let s = self
            .stream
            .as_mut()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn request(&mut self, req: &[u8]) -> Outcome {
        match self.try_request(req) {
            Ok(status) => Outcome::Status(status),
            Err(_) => {
                self.stream = None;
                Outcome::IoError
            }
        }
    }

    fn try_request(&mut self, req: &[u8]) -> std::io::Result<u16> {
        self.stream()?.write_all(req)?;
        self.receive()
    }

    /// Reads one answer (head and body) to a request already sent.
    fn receive(&mut self) -> std::io::Result<u16> {
        // Headers.
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| std::io::ErrorKind::InvalidData)?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let (mut len, mut chunked, mut close) = (None, false, false);
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        self.buf.drain(..head_end);
        if status == 204 || status == 304 || (100..200).contains(&status) {
            len = Some(0);
        }
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    self.fill()?;
                };
                let size_text = std::str::from_utf8(&self.buf[..line_end])
                    .map_err(|_| std::io::ErrorKind::InvalidData)?;
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| std::io::ErrorKind::InvalidData)?;
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    self.fill()?;
                }
                self.buf.drain(..need);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = len {
            while self.buf.len() < n {
                self.fill()?;
            }
            self.buf.drain(..n);
        } else {
            // Body until close.
            while self.fill().is_ok() {}
            self.stream = None;
            return Ok(status);
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// What one connection thread saw.
struct Tally {
    hist: Histogram<u64>,
    status: BTreeMap<u16, u64>,
    io_errors: u64,
    /// How late sends were against their due time (open loop only), in ns.
    late: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("histogram"),
            status: BTreeMap::new(),
            io_errors: 0,
            late: Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("histogram"),
        }
    }

    fn add(&mut self, o: &Outcome, nanos: u64) {
        match o {
            Outcome::Status(s) => {
                *self.status.entry(*s).or_default() += 1;
                self.hist.saturating_record(nanos.max(1_000));
            }
            Outcome::IoError => self.io_errors += 1,
        }
    }

    fn merge(&mut self, o: Tally) {
        let _ = self.hist.add(&o.hist);
        let _ = self.late.add(&o.late);
        for (k, v) in o.status {
            *self.status.entry(k).or_default() += v;
        }
        self.io_errors += o.io_errors;
    }
}

fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack (1 ns: precise sleeps).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn main() {
    let a = parse_args();
    let mut extra = String::new();
    for h in &a.headers {
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    let reqs: Arc<Vec<Vec<u8>>> = Arc::new(
        a.paths
            .iter()
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", a.addr).into_bytes())
            .collect(),
    );
    if !a.fanout.is_empty() {
        fanout(&a, &reqs[0]);
        return;
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let end = measure_from + Duration::from_secs_f64(a.duration);
    let ticket = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let period_ns = a.rate.map(|r| 1e9 / r);
    let limit = a.requests;

    let mut handles = Vec::new();
    for c in 0..a.connections {
        let (reqs, ticket, done) = (reqs.clone(), ticket.clone(), done.clone());
        let addr = a.addr;
        let per_conn = a.per_conn;
        handles.push(std::thread::spawn(move || {
            set_timer_slack();
            let mut conn = Conn::new(addr);
            let mut t = Tally::new();
            // Connect before the clock starts.
            let _ = conn.stream();
            loop {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let i = ticket.fetch_add(1, Ordering::Relaxed);
                let req = if per_conn {
                    &reqs[c % reqs.len()]
                } else {
                    &reqs[(i as usize) % reqs.len()]
                };
                let due = match period_ns {
                    Some(p) => start + Duration::from_nanos((i as f64 * p) as u64),
                    None => Instant::now().max(start),
                };
                if due >= end || limit.is_some_and(|l| i >= l) {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let sent = Instant::now();
                let o = conn.request(req);
                let fin = Instant::now();
                if due >= measure_from || limit.is_some() {
                    t.add(&o, (fin - due).as_nanos() as u64);
                    if period_ns.is_some() {
                        t.late
                            .saturating_record(((sent - due).as_nanos() as u64).max(1_000));
                    }
                }
                if fin >= end {
                    break;
                }
            }
            done.store(true, Ordering::Relaxed);
            t
        }));
    }
    let mut total = Tally::new();
    for h in handles {
        total.merge(h.join().expect("connection thread"));
    }
    let elapsed = if limit.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        a.duration
    };
    let mode = if a.rate.is_some() { "open" } else { "closed" };
    report(mode, &a, &total, elapsed, None);
}

/// The fan-out mode: the same request to `--addr` and every `--fanout` address at once, one
/// sample per round (first write to last answer), rounds back to back.
fn fanout(a: &Args, req: &[u8]) {
    set_timer_slack();
    let mut conns: Vec<Conn> = std::iter::once(a.addr)
        .chain(a.fanout.iter().copied())
        .map(Conn::new)
        .collect();
    for c in &mut conns {
        let _ = c.stream();
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let end = measure_from + Duration::from_secs_f64(a.duration);
    let mut t = Tally::new();
    let mut rounds = 0u64;
    let (mut cpu_from, mut measured) = (None::<f64>, 0u64);
    loop {
        let cpu_us_before = own_cpu_us();
        let sent = Instant::now();
        if sent >= end || a.requests.is_some_and(|l| rounds >= l) {
            break;
        }
        // Every request goes out before any answer is read, as a fan-out sends them.
        let mut failed = vec![false; conns.len()];
        for (c, f) in conns.iter_mut().zip(failed.iter_mut()) {
            *f = c.stream().and_then(|s| s.write_all(req)).is_err();
        }
        // One outcome per round: an I/O error anywhere, else the last non-2xx status, else 200.
        let mut worst = Outcome::Status(200);
        for (c, f) in conns.iter_mut().zip(failed) {
            let got = if f {
                Err(std::io::ErrorKind::BrokenPipe.into())
            } else {
                c.receive()
            };
            match got {
                Ok(s) if !(200..300).contains(&s) => {
                    if !matches!(worst, Outcome::IoError) {
                        worst = Outcome::Status(s);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    c.stream = None;
                    worst = Outcome::IoError;
                }
            }
        }
        let fin = Instant::now();
        rounds += 1;
        if sent >= measure_from || a.requests.is_some() {
            // The CPU count starts with the first measured round.
            cpu_from.get_or_insert(cpu_us_before);
            measured += 1;
            t.add(&worst, (fin - sent).as_nanos() as u64);
        }
    }
    let cpu_us = cpu_from.map_or(0.0, |c0| (own_cpu_us() - c0) / measured.max(1) as f64);
    let elapsed = if a.requests.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        a.duration
    };
    report("fanout", a, &t, elapsed, Some(cpu_us));
}

/// This process's CPU time (user + system) so far, in µs.
fn own_cpu_us() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to a rusage, which getrusage only writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Prints the one JSON object the runner reads.
fn report(mode: &str, a: &Args, total: &Tally, elapsed: f64, cpu_us: Option<f64>) {
    let ok: u64 = total
        .status
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let all: u64 = total.status.values().sum();
    let us = |q: f64| total.hist.value_at_quantile(q) as f64 / 1000.0;
    let status: Vec<String> = total
        .status
        .iter()
        .map(|(s, n)| format!("\"{s}\":{n}"))
        .collect();
    println!(
        "{{\"mode\":\"{}\",\"connections\":{},\"rate\":{},\"duration_s\":{:.3},\"requests\":{},\"ok\":{},\"errors\":{},\
         \"io_errors\":{},\"status\":{{{}}},\"rps\":{:.1},\"lat_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\
         \"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\"late_us_p99\":{:.1}{}}}",
        mode,
        a.connections,
        a.rate.unwrap_or(0.0),
        elapsed,
        all,
        ok,
        all - ok,
        total.io_errors,
        status.join(","),
        all as f64 / elapsed,
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        total.hist.max() as f64 / 1000.0,
        total.hist.mean() / 1000.0,
        total.late.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_us.map_or(String::new(), |c| format!(",\"cpu_us_per_request\":{c:.1}")),
    );
}
