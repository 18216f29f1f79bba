//! Transport-level behaviour: headers, CORS, keep-alive, faults, kill/revive, controls, auth.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::*;

#[test]
fn api_headers_and_value_wrapper() {
    let n = node();
    let r = get(&n, "/api");
    assert_eq!((r.status, r.json()), (200, json!({"Value": ""})));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(
        r.header("CacheControl"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(
        get(&n, "/api/version").json(),
        json!({"Version":"0.12.0","Branch":"master","CommitSha":"4c6be036","BuildConfiguration":"Release"})
    );
    assert_eq!(get(&n, "/API/print/a/b").json(), json!({"Value": "ab"}));
    assert_eq!(get(&n, "/apix").status, 404);
    let root = get(&n, "/api/");
    assert_eq!(root.status, 400);
    assert_eq!(root.json()["ErrorName"], "AmbiguousCall");
    assert!(root.json()["ErrorMessage"]
        .as_str()
        .unwrap()
        .starts_with("The command contains the following subfunctions: add, alias, api, bot,"));
    assert_eq!(
        get(&n, "/api/Bot/List").status,
        400,
        "lookup is case-sensitive"
    );
    assert_eq!(
        get(&n, "/api/bot/list?x=1").json()["ErrorMessage"]
            .as_str()
            .map(|m| m.contains("connect, info, list")),
        Some(true)
    );
}

#[test]
fn static_web_interface() {
    let n = node_with(|c| c.name = "alpha".into());
    let r = get(&n, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html"));
    assert!(String::from_utf8_lossy(&r.body).contains("fake node alpha"));
    assert_eq!(get(&n, "/index.html").status, 200);
    assert_eq!(get(&n, "/bundle.js").status, 200);
    let missing = get(&n, "/nope");
    assert_eq!((missing.status, missing.body.len()), (404, 0));
}

#[test]
fn preflight_never_executes_and_plain_options_does() {
    let n = node();
    let r = send(
        n.addr(),
        "OPTIONS",
        b"/api/bot/connect/to/a",
        &[
            ("Origin", "http://x"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(r.header("Access-Control-Allow-Methods"), Some("GET"));
    assert_eq!(
        r.header("Access-Control-Allow-Headers"),
        Some("authorization")
    );
    assert!(n.bots().is_empty());
    for m in ["OPTIONS", "POST", "PUT", "DELETE"] {
        assert_eq!(
            send(n.addr(), m, b"/api/bot/connect/to/a", &[], None).status,
            200,
            "{m}"
        );
    }
    let head = send(n.addr(), "HEAD", b"/api/version", &[], None);
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(n.bots().len(), 4);
}

#[test]
fn anonymous_rights_and_auth_messages() {
    let n = node_with(|c| {
        c.auth = Some("uid:secret".into());
        c.anonymous = AnonymousRights::Default;
    });
    let forbidden = get(&n, "/api/bot/list");
    assert_eq!(forbidden.status, 403);
    assert_eq!(
        forbidden.json(),
        json!({"ErrorCode":11,"ErrorName":"MissingRights","ErrorMessage":"You cannot execute 'bot list'. You are missing the 'cmd.bot.list' right!",
               "HelpLink":"https://github.com/Splamy/TS3AudioBot/wiki/FAQ#missing-rights"})
    );
    assert_eq!(get(&n, "/api/version").status, 200);
    assert_eq!(
        get(&n, "/api/json/merge/(/bot/list)/(/version)").json()[0],
        Value::Null,
        "MissingRights inside a merge is null"
    );
    assert_eq!(
        get(&n, "/api/rights/can/cmd.version/cmd.bot.list/cmd.help.*").json(),
        json!([
            "cmd.help",
            "cmd.help.all",
            "cmd.help.command",
            "cmd.help.play",
            "cmd.version"
        ])
    );
    let ok = send(
        n.addr(),
        "GET",
        b"/api/bot/list",
        &[("Authorization", &basic("uid:secret"))],
        None,
    );
    assert_eq!(ok.status, 200);
    let cases = [
        (basic("uid:wrong"), "Authentication failed"),
        (
            basic("nobody:secret"),
            "Unknown user or no active token found",
        ),
        ("Bearer x".to_string(), "Unsupported authentication scheme"),
        ("Basic abc".to_string(), "Malformed base64 string"),
        ("Basic".to_string(), "Authentication failed"),
    ];
    for (h, msg) in cases {
        let r = send(
            n.addr(),
            "GET",
            b"/api/version",
            &[("Authorization", &h)],
            None,
        );
        assert_eq!(r.status, 401, "{h}");
        assert_eq!(
            r.json(),
            json!({"ErrorCode":2,"ErrorName":"Unauthorized","ErrorMessage":msg,
                   "HelpMessage":"You have to authenticate yourself to call this method.",
                   "HelpLink":"https://github.com/Splamy/TS3AudioBot/wiki/WebAPI#authentication"})
        );
    }
    let none = node_with(|c| c.anonymous = AnonymousRights::None);
    assert_eq!(get(&none, "/api/version").status, 403);
}

#[test]
fn kill_revive_and_quit() {
    let n = node();
    n.connect_bot("a");
    let mut keep = TcpStream::connect(n.addr()).unwrap();
    n.kill();
    assert!(TcpStream::connect(n.addr()).is_err(), "refused after kill");
    let mut buf = [0u8; 1];
    keep.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(
        matches!(keep.read(&mut buf), Ok(0) | Err(_)),
        "open connections are dropped"
    );
    n.revive().unwrap();
    assert_eq!(
        get(&n, "/api/bot/list").json()[0]["Server"],
        "a",
        "same state"
    );
    let q = get(&n, "/api/system/quit");
    assert_eq!(q.status, 204);
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(n.addr()).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        TcpStream::connect(n.addr()).is_err(),
        "quit stops listening"
    );
    n.revive().unwrap();
    assert_eq!(get(&n, "/api/version").status, 200);
}

#[test]
fn latency_and_faults() {
    let n = node();
    n.set_latency(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(&n, "/api/version").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    n.set_latency(Duration::ZERO);
    n.set_fault(Some(Fault::Status500));
    let r = get(&n, "/api/version");
    assert_eq!(
        (
            r.status,
            r.json()["ErrorCode"].clone(),
            r.json()["ErrorName"].clone()
        ),
        (500, json!(0), json!("Unknown"))
    );
    n.set_fault(Some(Fault::Close));
    let mut s = TcpStream::connect(n.addr()).unwrap();
    s.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(matches!(s.read_to_end(&mut out), Ok(0)));
    n.set_fault(Some(Fault::Hang));
    let mut s = TcpStream::connect(n.addr()).unwrap();
    s.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(s.read(&mut [0u8; 16]).is_err(), "no answer while hanging");
    // Controls still work while faulted.
    let c = get(&n, "/__fake/fault/none");
    assert_eq!(c.json(), json!({"fault": "none"}));
    assert_eq!(get(&n, "/api/version").status, 200);
    let t = Instant::now();
    drop(n);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drop is bounded even with a hung connection"
    );
}

#[test]
fn recorded_requests_are_raw() {
    let n = node();
    send(
        n.addr(),
        "POST",
        b"/api/print/%28a%29//'b'",
        &[("Authorization", "Basic eDp5"), ("X-Thing", "1")],
        Some(b"hello"),
    );
    let mut s = TcpStream::connect(n.addr()).unwrap();
    s.write_all(b"PUT /api/version HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut BufReader::new(s), false).status, 200);
    get(&n, "/__fake/state");
    let reqs = n.requests();
    assert_eq!(reqs.len(), 2, "control paths are not recorded");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, b"/api/print/%28a%29//'b'");
    assert_eq!(reqs[0].authorization.as_deref(), Some("Basic eDp5"));
    assert!(reqs[0]
        .headers
        .iter()
        .any(|(k, v)| k == "X-Thing" && v == "1"));
    assert_eq!(reqs[0].body_len, 5);
    assert_eq!((reqs[1].method.as_str(), reqs[1].body_len), ("PUT", 7));
    let listed = get(&n, "/__fake/requests").json();
    assert_eq!(listed[0]["target"], "/api/print/%28a%29//'b'");
    n.clear_requests();
    assert!(n.requests().is_empty());
}

#[test]
fn keep_alive_and_connection_close() {
    let n = node();
    let s = TcpStream::connect(n.addr()).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..3 {
        w.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_resp(&mut r, false).status, 200);
    }
    w.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_resp(&mut r, false);
    assert_eq!(last.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0, "server closed");
    assert_eq!(send(n.addr(), "GET", b"/api/\x01", &[], None).status, 400);
}

#[test]
fn controls_over_http() {
    let n = node();
    n.add_template("auto", &[("run", "true"), ("connect.address", "ts.auto")]);
    n.connect_bot("temp");
    assert_eq!(
        get(&n, "/__fake/latency/5").json(),
        json!({"latency_ms": 5})
    );
    assert_eq!(get(&n, "/__fake/fault/bogus").status, 400);
    assert_eq!(get(&n, "/__fake/restart").status, 204);
    let bots = n.bots();
    assert_eq!(bots.len(), 1);
    assert_eq!((bots[0].id, bots[0].name.as_deref()), (0, Some("auto")));
    let st = get(&n, "/__fake/state").json();
    assert_eq!(st["bots"][0]["name"], "auto");
    assert_eq!(
        st["templates"][0]["settings"]["connect"]["address"],
        "ts.auto"
    );
    assert_eq!(get(&n, "/__fake/clear").status, 204);
    assert_eq!(get(&n, "/__fake/nope").status, 404);
}

#[test]
fn concurrency_limit_queues_requests() {
    let n = node_with(|c| {
        c.max_concurrency = Some(1);
        c.service_time = Duration::from_millis(100);
    });
    let addr = n.addr();
    let t = Instant::now();
    let hs: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || send(addr, "GET", b"/api/version", &[], None).status))
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn works_from_inside_a_runtime() {
    let n = node();
    n.connect_bot("a");
    let addr = n.addr();
    let status =
        tokio::task::spawn_blocking(move || send(addr, "GET", b"/api/bot/list", &[], None).status)
            .await
            .unwrap();
    assert_eq!(status, 200);
    n.kill();
    n.revive().unwrap();
    drop(n);
}

/// Sends one request on a fresh connection and reads everything until the node closes it
/// (or resets it: then the error), bounded by a read timeout.
fn raw_exchange(n: &FakeNode, request: &[u8]) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut s = TcpStream::connect(n.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

const GET_LIST: &[u8] = b"GET /api/bot/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[test]
fn invalid_json_fault() {
    let n = node();
    n.set_fault(Some(Fault::InvalidJson));
    let r = get(&n, "/api/bot/list");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(
        serde_json::from_slice::<Value>(&r.body).is_err(),
        "not JSON"
    );
    assert!(r.body.starts_with(b"{\"Id\":0"), "looks like JSON at first");
}

#[test]
fn wrong_types_fault() {
    let n = node();
    n.set_fault(Some(Fault::WrongTypes));
    let r = get(&n, "/api/bot/list");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"Id": "seven", "Name": null, "Server": "", "Status": true}),
        "an object where a list belongs, with the wrong types"
    );
}

#[test]
fn huge_fault_with_and_without_a_length() {
    let n = node();
    let bytes = 3 * 1024 * 1024 + 7;
    n.set_fault(Some(Fault::Huge {
        bytes,
        declared: true,
    }));
    let r = get(&n, "/api/bot/list");
    assert_eq!((r.status, r.body.len() as u64), (200, bytes));
    let zeros = r.json();
    assert!(zeros.as_array().is_some_and(|a| a.iter().all(|v| v == 0)));
    // Keep-alive holds after a declared huge answer.
    let s = TcpStream::connect(n.addr()).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut rd = BufReader::new(s);
    for _ in 0..2 {
        w.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_resp(&mut rd, false).body.len() as u64, bytes);
    }
    n.set_fault(Some(Fault::Huge {
        bytes: 1001,
        declared: false,
    }));
    let (out, err) = raw_exchange(&n, b"GET /api/bot/list HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(err, None, "ends with a close");
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body.len(), 1001);
    assert!(serde_json::from_str::<Value>(body).is_ok());
    for size in [2, 3, 4, 5] {
        n.set_fault(Some(Fault::Huge {
            bytes: size,
            declared: true,
        }));
        let r = get(&n, "/api/bot/list");
        assert_eq!(r.body.len() as u64, size);
        assert!(r.json().is_array(), "{size}");
    }
}

#[test]
fn not_http_fault() {
    let n = node();
    n.set_fault(Some(Fault::NotHttp));
    let (out, err) = raw_exchange(&n, GET_LIST);
    assert_eq!(
        (out.as_slice(), err),
        (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], None)
    );
}

#[test]
fn reset_mid_answer_fault() {
    let n = node();
    n.set_fault(Some(Fault::ResetMidAnswer));
    let (out, err) = raw_exchange(&n, GET_LIST);
    assert_eq!(err, Some(std::io::ErrorKind::ConnectionReset));
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(head.contains("Content-Length: 4096"));
    assert!(
        !body.is_empty() && body.len() < 4096,
        "part of the body: {body:?}"
    );
}

#[test]
fn wrong_server_fault_and_faults_aimed_at_one_command() {
    let n = node();
    n.set_fault_on(Some(Fault::WrongServer), "bot/list");
    let r = get(&n, "/api/bot/list");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html"));
    assert_eq!(r.header("Server"), Some("nginx/1.24.0"));
    assert!(String::from_utf8_lossy(&r.body).contains("Welcome to nginx!"));
    assert_eq!(get(&n, "/api/version").json()["Version"], "0.12.0");
    // Over HTTP too.
    assert_eq!(get(&n, "/__fake/fault/not-http").status, 200);
    assert_eq!(raw_exchange(&n, GET_LIST).0, b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(get(&n, "/__fake/fault/none").status, 200);
    assert_eq!(get(&n, "/api/bot/list").json(), json!([]));
}
