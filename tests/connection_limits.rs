//! Limits against abuse on connections (issue 11 point 4): a client that sends its headers too
//! slowly or stays idle is dropped after `routing.header_timeout_ms` / `idle_timeout_ms`; one
//! address holds at most `routing.max_connections_per_address` connections (more get a 429 in
//! TS3AudioBot's shape, other addresses are unaffected); and however many clients there are,
//! the router has at most `routing.max_node_connections` requests in flight to one node.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

fn opts(routing: &str) -> RouterOpts {
    RouterOpts {
        routing_yaml: routing.to_string(),
        ..RouterOpts::default()
    }
}

/// Reads until the peer closes (Ok(bytes)) or `limit` passes (Err).
fn closed_within(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    let start = Instant::now();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Ok(got), // reset: closed too
        }
        if start.elapsed() > limit {
            return Err(format!("still open after {limit:?}"));
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect")
}

#[test]
fn slow_headers_and_idle_clients_are_dropped_but_slow_answers_are_not() {
    let node = fake_node(0);
    let router = Router::start(
        &[&node],
        opts("header_timeout_ms: 1000, idle_timeout_ms: 1500"),
    );
    let auth = basic(USER);

    // Slowloris: a header byte every 200 ms, never the empty line. Pingora alone allows 60 s
    // per read, so without the deadline this would stay open.
    let mut s = connect(router.addr);
    s.write_all(b"GET /api/bot/list HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let t0 = Instant::now();
    let mut dropped = false;
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(b"X").is_err() {
            dropped = true;
            break;
        }
        s.set_nonblocking(true).expect("nb");
        let mut b = [0u8; 64];
        let r = s.read(&mut b);
        s.set_nonblocking(false).expect("nb");
        if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a client trickling its headers was not dropped");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(3500),
        "dropped after {took:?}, want about the 1 s header timeout"
    );

    // Idle: a connection that sends nothing, and one that goes quiet after an answer.
    let mut s = connect(router.addr);
    let t0 = Instant::now();
    closed_within(&mut s, Duration::from_secs(4)).expect("an idle connection dropped");
    assert!(
        t0.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
    let mut s = connect(router.addr);
    let req = format!("GET /api/bot/list HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut reader = std::io::BufReader::new(s.try_clone().expect("clone"));
    let r = read_response(&mut reader, false);
    assert_eq!(r.status, 200);
    closed_within(&mut s, Duration::from_secs(4)).expect("quiet after an answer: dropped");

    // Not dropped: headers sent in pieces within the deadline, and an answer that takes
    // longer than the header timeout (the node is slow; the client waits, as it may).
    let mut s = connect(router.addr);
    for part in [
        "GET /api/bot/list HTTP/1.1\r\n".to_string(),
        "Host: x\r\n".to_string(),
        format!("Authorization: {auth}\r\n\r\n"),
    ] {
        s.write_all(part.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = read_response(&mut std::io::BufReader::new(s), false);
    assert_eq!(r.status, 200, "{}", r.text());
    node.set_latency(Duration::from_millis(2500));
    let r = router.get("/api/version");
    assert_eq!(
        r.status,
        200,
        "a slow answer is not a slow client: {}",
        r.text()
    );
}

#[test]
fn one_address_holds_a_bounded_number_of_connections() {
    let node = fake_node(0);
    let router = Router::start(&[&node], opts("max_connections_per_address: 3"));
    // Three connections, each answered once (so the router surely holds them) and kept open.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(router.addr);
            s.write_all(
                format!(
                    "GET /api/version HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
                    basic(USER)
                )
                .as_bytes(),
            )
            .expect("write");
            let r = read_response(
                &mut std::io::BufReader::new(s.try_clone().expect("clone")),
                false,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            s
        })
        .collect();
    // The router counts a connection once it has accepted it: wait until the fourth is refused.
    let mut refused = None;
    wait_for(5, "the fourth connection refused", || {
        let mut s = connect(router.addr);
        s.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let r = read_response(&mut std::io::BufReader::new(s), false);
        let done = r.status == 429;
        if done {
            refused = Some(r);
        }
        done
    });
    let r = refused.expect("refused");
    assert_eq!(r.header("Retry-After"), Some("1"));
    let v = r.json();
    assert_eq!(v["ErrorCode"], 10, "{v}");
    assert!(
        v["ErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("3 connections"),
        "{v}"
    );

    // Another address (127.0.0.2 is loopback too) is not affected.
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().expect("socket");
            sock.bind("127.0.0.2:0".parse().expect("addr"))
                .expect("bind");
            let s = sock.connect(router.addr).await.expect("connect");
            s.into_std().expect("std")
        });
    other.set_nonblocking(false).expect("blocking");
    let mut o = other;
    o.write_all(
        format!(
            "GET /api/version HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            basic(USER)
        )
        .as_bytes(),
    )
    .expect("write");
    let r = read_response(&mut std::io::BufReader::new(o), false);
    assert_eq!(r.status, 200, "{}", r.text());

    // A closed connection frees its place.
    drop(held);
    wait_for(5, "a place free again", || {
        router.get("/api/version").status == 200
    });
}

#[test]
fn requests_to_one_node_are_bounded_however_many_clients_there_are() {
    let node = fake_node(0);
    let router = Router::start(&[&node], opts("max_node_connections: 2"));
    let r = router.get("/api/bot/connect/to/a.example.com");
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["Id"].as_u64().expect("Id");
    node.set_latency(Duration::from_millis(1500));
    let target = format!("/api/bot/use/{id}/(/bot/info)");
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(|| router.get(&target))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Response> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        ok,
        2,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(busy.len(), 3);
    for r in busy {
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert!(
            r.json()["ErrorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("node node-0 has 2 requests from the router in flight"),
            "{}",
            r.text()
        );
    }
}
