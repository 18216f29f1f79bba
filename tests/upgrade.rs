//! Graceful upgrade and stop (issue 13, point 3): `serve --upgrade` plus SIGQUIT to the old
//! process under a steady load (keep-alive and fresh connections, pinned requests and creates,
//! one create in flight at SIGQUIT) loses no request and no bot and hands out no id twice; and
//! SIGTERM lets a slow request finish while new connections are refused at once.
//! The real binary on the embedded store, fake nodes.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The create that is in flight while the upgrade or the stop happens: the fake nodes answer
/// it this late.
const SLOW_SERVER: &str = "slow.example";

/// One answer as a load thread saw it: the status and the body, or what went wrong.
type Outcome = Result<(u16, Vec<u8>, bool), String>;

/// Reads one response, reporting instead of panicking (a reset or a cut answer is a failed
/// request here, not a test bug). The bool: the server closes the connection after it.
fn read_one(r: &mut impl BufRead) -> Outcome {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => return Err("connection closed before any answer".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("reading the status line: {e}")),
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).map_err(|e| format!("header: {e}"))?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if status == 204 {
    } else if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(|e| format!("chunk: {e}"))?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "bad chunk".to_string())?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)
                .map_err(|e| format!("chunk body: {e}"))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    } else {
        r.read_to_end(&mut body).map_err(|e| format!("body: {e}"))?;
        close = true;
    }
    Ok((status, body, close))
}

fn request_bytes(target: &str, keep_alive: bool) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: ts3ab\r\nAuthorization: {}\r\nConnection: {}\r\n\r\n",
        basic(ADMIN),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

/// One request on a fresh connection.
fn fresh(addr: SocketAddr, target: &str) -> Outcome {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .map_err(|e| e.to_string())?;
    s.write_all(&request_bytes(target, false))
        .map_err(|e| format!("write: {e}"))?;
    read_one(&mut BufReader::new(s))
}

/// What the load threads saw.
#[derive(Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    created: Vec<u64>,
    /// Keep-alive connections the router closed with `Connection: close` (reopened).
    closes: usize,
}

fn pinned(gid: u64) -> String {
    format!("/api/bot/use/{gid}/(/bot/info)")
}

/// The `Id` of a create's or an info's answer.
fn id_of(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body).ok()?["Id"].as_u64()
}

/// Checks a pinned request's answer names `gid`.
fn check_pinned(t: &Mutex<Tally>, gid: u64, what: &str, o: Outcome) -> bool {
    let mut t = t.lock().expect("tally");
    match o {
        Ok((200, body, close)) if id_of(&body) == Some(gid) => {
            t.ok += 1;
            if close {
                t.closes += 1;
            }
            close
        }
        Ok((status, body, _)) => {
            t.failures.push(format!(
                "{what} {}: {status} {}",
                pinned(gid),
                String::from_utf8_lossy(&body)
            ));
            true
        }
        Err(e) => {
            t.failures.push(format!("{what} {}: {e}", pinned(gid)));
            true
        }
    }
}

/// The load: `keep` keep-alive threads and `fresh_n` fresh-connection threads send pinned
/// requests for `bots`, one thread creates bots on fresh connections; until `stop`.
fn start_load(
    addr: SocketAddr,
    bots: &[u64],
    stop: &Arc<AtomicBool>,
    tally: &Arc<Mutex<Tally>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for k in 0..2 {
        let (bots, stop, tally) = (bots.to_vec(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = k;
            while !stop.load(Ordering::Acquire) {
                let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                    tally
                        .lock()
                        .expect("tally")
                        .failures
                        .push("keep-alive connect failed".into());
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(40)));
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(s);
                // Requests on this connection until the router closes it.
                while !stop.load(Ordering::Acquire) {
                    let gid = bots[i % bots.len()];
                    i += 1;
                    let o = match w.write_all(&request_bytes(&pinned(gid), true)) {
                        Ok(()) => read_one(&mut r),
                        Err(e) => Err(format!("write: {e}")),
                    };
                    if check_pinned(&tally, gid, "keep-alive", o) {
                        break;
                    }
                }
            }
        }));
    }
    for k in 0..2 {
        let (bots, stop, tally) = (bots.to_vec(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = k;
            while !stop.load(Ordering::Acquire) {
                let gid = bots[i % bots.len()];
                i += 1;
                check_pinned(&tally, gid, "fresh", fresh(addr, &pinned(gid)));
            }
        }));
    }
    let (stop, tally) = (stop.clone(), tally.clone());
    threads.push(std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Acquire) {
            n += 1;
            let o = fresh(addr, &format!("/api/bot/connect/to/load-{n}.example"));
            let mut t = tally.lock().expect("tally");
            match o {
                Ok((200, body, _)) if id_of(&body).is_some() => {
                    t.ok += 1;
                    t.created.extend(id_of(&body));
                }
                Ok((status, body, _)) => t.failures.push(format!(
                    "create {n}: {status} {}",
                    String::from_utf8_lossy(&body)
                )),
                Err(e) => t.failures.push(format!("create {n}: {e}")),
            }
            drop(t);
            std::thread::sleep(Duration::from_millis(30));
        }
    }));
    threads
}

/// A connection to `router` that process `pid` has accepted, with no request sent yet.
fn accepted_connection(router: &Router, pid: u32) -> TcpStream {
    let s = TcpStream::connect_timeout(&router.addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    wait_for(10, "the router to accept the early connection", || {
        holds_connection(pid, &s)
    });
    s
}

/// Once `stopped` holds (polled closely: the point is to send right after it), sends one
/// request on `early` from a thread and returns it, reading the answer.
fn ask_once_stopped(
    mut early: TcpStream,
    mut stopped: impl FnMut() -> bool,
    who: &str,
) -> std::thread::JoinHandle<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !stopped() {
        assert!(
            Instant::now() < deadline,
            "{who} did not stop accepting in time"
        );
        // Each poll reads /proc/net/tcp: closely enough for a 3 s window, not more.
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::spawn(move || {
        early
            .write_all(&request_bytes("/api/bot/list", false))
            .map_err(|e| format!("write: {e}"))?;
        read_one(&mut BufReader::new(early))
    })
}

/// Starts the slow create in its own thread and returns once a node received it.
fn slow_create_in_flight(
    addr: SocketAddr,
    nodes: &[&FakeNode],
) -> std::thread::JoinHandle<Outcome> {
    let slow =
        std::thread::spawn(move || fresh(addr, &format!("/api/bot/connect/to/{SLOW_SERVER}")));
    wait_for(10, "the slow create to reach a node", || {
        nodes
            .iter()
            .any(|n| targets(n).iter().any(|t| t.contains(SLOW_SERVER)))
    });
    slow
}

fn slow_nodes() -> (FakeNode, FakeNode) {
    let (a, b) = (fake_node(0), fake_node(1));
    for n in [&a, &b] {
        n.set_latency_on(Duration::from_secs(2), SLOW_SERVER);
    }
    (a, b)
}

/// The graceful upgrade under load: zero failed or reset requests, every bot created (the one
/// in flight at SIGQUIT too) routable by its id on the new process after the old one exited,
/// no id twice, the new process serving alone at the end.
#[test]
fn upgrade_under_load_loses_no_request_and_no_bot() {
    upgrade_under_load(RouterOpts::default());
}

/// The same on MongoDB: nothing is handed over (two routers share the database for a few
/// seconds), and still no request fails, no bot is lost, no id is handed out twice.
#[test]
fn mongodb_upgrade_under_load_loses_no_request_and_no_bot() {
    let (uri, db) = (mongo::uri(), mongo::database("upgrade"));
    upgrade_under_load(RouterOpts {
        storage: Some(format!(
            "{{ kind: mongodb, uri: \"{uri}\", database: \"{db}\", sync_interval_ms: 200 }}"
        )),
        ..RouterOpts::default()
    });
}

fn upgrade_under_load(opts: RouterOpts) {
    let (a, b) = slow_nodes();
    let mut router = Router::start(&[&a, &b], opts);
    // A grace period as in production (5 s there): the requests the old process forwards
    // as it stops listening finish within it.
    router.edit_config("grace_period_seconds: 0", "grace_period_seconds: 3");
    router.spawn();
    let mut bots = Vec::new();
    for i in 0..4 {
        let r = router.get(&format!("/api/bot/connect/to/before-{i}.example"));
        assert_eq!(r.status, 200, "{}", r.text());
        bots.push(id_of(&r.body).expect("id"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let threads = start_load(router.addr, &bots, &stop, &tally);
    wait_for(10, "some load before the upgrade", || {
        tally.lock().expect("tally").ok > 20
    });

    let slow = slow_create_in_flight(router.addr, &[&a, &b]);
    let old_pid = router.pid().expect("pid");
    // A connection the old process accepted whose request comes only after it stopped
    // accepting (a client that connected a moment before): still answered.
    let early = accepted_connection(&router, old_pid);
    // systemd's notify socket, as the unit in conf/ has it (Type=notify, NotifyAccess=all).
    let notify_path = router.dir_path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let notify_env = notify_path.display().to_string();
    let mut old = router.upgrade_begin_with_env(&[("NOTIFY_SOCKET", notify_env.as_str())]);
    let new_pid = router.pid().expect("pid");
    assert_ne!(old_pid, new_pid);
    // systemd must learn the new main process before the old one exits (or it would take
    // the old one's exit for the service's end).
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("a notify message from the new process");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(first, format!("MAINPID={new_pid}"));
    assert!(
        old.child.try_wait().ok().flatten().is_none(),
        "the old process exited before the new one named itself to systemd"
    );
    let port = router.addr.port();
    let late = ask_once_stopped(early, || !listens_on(old_pid, port), "the old process");
    // Checked once it stopped accepting, before the request goes out: 3 s of grace remain.
    assert!(
        old.child.try_wait().ok().flatten().is_none(),
        "the old process exited as soon as it stopped accepting"
    );
    let late = late.join().expect("late request");
    assert!(
        matches!(&late, Ok((200, _, _))),
        "a connection the old process accepted before it stopped accepting was not answered: \
         {late:?}\nlog:\n{}",
        router.stderr_text()
    );
    // Pingora's old process keeps accepting 5 s, then the grace period (3 s) and the runtime
    // shutdown (1 s); the store hand-over happens within that.
    let took = old.wait_exit(Duration::from_secs(20));
    assert!(
        took.is_some(),
        "the old process did not exit; log:\n{}",
        router.stderr_text()
    );
    let at_exit = tally.lock().expect("tally").ok;
    // The new process serves alone now: the load goes on against it.
    wait_for(10, "load served by the new process alone", || {
        tally.lock().expect("tally").ok > at_exit + 20
    });
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().expect("load thread");
    }
    let slow = slow.join().expect("slow create");
    let n = notify.recv(&mut buf).expect("READY from the new process");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("MAINPID={new_pid}\nREADY=1")
    );

    let t = tally.lock().expect("tally");
    assert!(
        t.failures.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}\nlog:\n{}",
        t.failures.len(),
        t.ok + t.failures.len(),
        t.failures,
        router.stderr_text()
    );
    assert!(
        t.closes > 0,
        "the old process never closed a keep-alive connection: no request was forwarded"
    );
    let slow_id = match &slow {
        Ok((200, body, _)) => id_of(body).expect("slow create's id"),
        other => panic!(
            "the create in flight at SIGQUIT failed: {other:?}\nlog:\n{}",
            router.stderr_text()
        ),
    };
    let mut all: Vec<u64> = bots.clone();
    all.extend(&t.created);
    all.push(slow_id);
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "an id was handed out twice: {all:?}"
    );
    assert!(t.created.len() > 3, "too few creates ran: {:?}", t.created);
    drop(t);
    // Every bot, also the one created while the old process was handing over, is known to
    // the new process (it loaded the store after the old one flushed and closed it).
    for gid in &all {
        let r = router.get(&pinned(*gid));
        assert_eq!(
            r.status,
            200,
            "bot {gid} is not routable after the upgrade: {}",
            r.text()
        );
        assert_eq!(id_of(&r.body), Some(*gid));
    }
    assert_eq!(router.pid(), Some(new_pid));
    assert!(
        std::fs::metadata(format!("/proc/{old_pid}")).is_err()
            || std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the old process still runs"
    );
}

/// SIGTERM: a slow request in flight finishes within the grace period, a new connection after
/// the listeners closed is refused at once (not left hanging), the process exits within the
/// grace period plus the runtime shutdown, and the bot the slow request created is in the
/// store afterwards.
#[test]
fn sigterm_finishes_in_flight_refuses_new_and_exits_in_time() {
    let (a, b) = slow_nodes();
    let mut router = Router::start(&[&a, &b], RouterOpts::default());
    router.edit_config("grace_period_seconds: 0", "grace_period_seconds: 4");
    router.spawn();
    let addr = router.addr;
    let slow = slow_create_in_flight(addr, &[&a, &b]);
    let early = accepted_connection(&router, router.pid().expect("pid"));
    let signalled = Instant::now();
    router.signal("TERM");
    // The listeners close at once: a connection is refused, not queued.
    let mut refused = None;
    while signalled.elapsed() < Duration::from_secs(3) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = Some(signalled.elapsed());
                break;
            }
            Err(e) => panic!("a connection after SIGTERM failed otherwise: {e}"),
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let refused = refused.expect("new connections were still accepted 3 s after SIGTERM");
    // A connection accepted before SIGTERM whose request comes after the listener closed is
    // answered within the grace period, not dropped.
    let late = ask_once_stopped(early, || true, "the router").join();
    let late = late.expect("late request");
    assert!(
        matches!(&late, Ok((200, _, _))),
        "a connection accepted before SIGTERM was not answered: {late:?}\nlog:\n{}",
        router.stderr_text()
    );
    let slow = slow.join().expect("slow create");
    let slow_id = match &slow {
        Ok((200, body, _)) => id_of(body).expect("id"),
        other => panic!(
            "the request in flight at SIGTERM failed: {other:?}\nlog:\n{}",
            router.stderr_text()
        ),
    };
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "the slow request did not finish within the grace period"
    );
    // Grace period 4 s + runtime shutdown 1 s + the store's close.
    let pid = router.pid().expect("pid");
    wait_for(8, "the router to exit after SIGTERM", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    let exited = signalled.elapsed();
    assert!(
        exited < Duration::from_secs(7),
        "exited {exited:?} after SIGTERM, over the bound"
    );
    eprintln!("refused after {refused:?}, exited after {exited:?}");
    router.spawn();
    let r = router.get(&pinned(slow_id));
    assert_eq!(
        r.status,
        200,
        "the slow create's bot is not in the store: {}",
        r.text()
    );
}

/// SIGINT (Ctrl-C) stops the router at once, every time: Pingora's quick stop can leave one of
/// its runtimes spinning for ever (an accept loop whose listener's thread was shut down
/// first), so the stop is bounded by the router's watchdog, which closes the store and exits.
/// Several stops in a row, with more threads than the default, because Pingora's race is
/// not hit every time; the bots created before each stop are there after it.
#[test]
fn sigint_stops_the_router_every_time_within_its_bound() {
    let a = fake_node(0);
    let mut router = Router::start(
        &[&a],
        RouterOpts {
            admin: true,
            ..RouterOpts::default()
        },
    );
    router.edit_config("threads: 2", "threads: 4");
    let mut bots = Vec::new();
    let mut ended = 0;
    for round in 0..12 {
        router.spawn();
        for gid in &bots {
            let r = router.get(&pinned(*gid));
            assert_eq!(
                r.status,
                200,
                "round {round}: bot {gid} is gone: {}",
                r.text()
            );
        }
        let r = router.get(&format!("/api/bot/connect/to/round-{round}.example"));
        assert_eq!(r.status, 200, "{}", r.text());
        bots.push(id_of(&r.body).expect("id"));
        let pid = router.pid().expect("pid");
        let signalled = Instant::now();
        router.signal("INT");
        // No grace after SIGINT: the watchdog's margin (1 s), then the store's close (at most
        // 5 s), and a second for a loaded machine. A spinning runtime never ends at all.
        let limit = Duration::from_secs(7);
        while signalled.elapsed() < limit
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z "));
        assert!(
            gone,
            "round {round}: the router still ran {limit:?} after SIGINT; log:\n{}",
            router.stderr_text()
        );
        // Whether Pingora's race came up this time (about one stop in four here): counted
        // (the log is cleared at the next start) and shown, not asserted, as it is Pingora's
        // and not ours to make happen.
        if router
            .stderr_text()
            .contains("the service runtimes did not stop within")
        {
            ended += 1;
        }
    }
    eprintln!("the watchdog ended {ended} of 12 stops");
}
