//! A node that answers garbage (issue 13, point 6): invalid JSON, JSON of the wrong shape, huge
//! bodies (with and without a length), bytes that are not HTTP, a reset in the middle of an
//! answer, and another web server on the node's port.
//!
//! One router over two fake nodes (one stays healthy, the other gets each fault in turn), so
//! the router and its bots are shared while every case starts from both nodes up and ends
//! with them up again. For each fault, once on every request of the node and once aimed at a
//! single command while its polls still succeed, it checks what the issue asks: the node is
//! reported down in words, `bot/list` still answers, the faulty node's bots get
//! TS3AudioBot-shaped errors within the router's timeouts, nothing reaches the wrong node, the
//! router never panics, and the node comes back once the fault is cleared.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The router's `routing.request_timeout_ms` in the harness, plus room for a slow machine:
/// no answer may take longer.
const ANSWER_BOUND: Duration = Duration::from_secs(8);
/// The router's answer size limit (`node::client::MAX_RESPONSE`).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;
/// Far over it.
const HUGE: u64 = 64 * 1024 * 1024;

/// What came back for one request, however it ended.
struct Fetched {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    /// Whether the body arrived whole (its declared length, its last chunk, or a close for a
    /// close-delimited body); false when the connection ended early.
    complete: bool,
}

impl Fetched {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a TS3AudioBot error answer: a whole JSON body with ErrorCode, ErrorName and
    /// ErrorMessage, and returns the message.
    fn ts3ab_error(&self, what: &str) -> String {
        assert!(self.complete, "{what}: cut answer {:?}", self.text());
        let j: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", self.text()));
        assert!(j["ErrorCode"].is_i64(), "{what}: {j}");
        assert!(j["ErrorName"].is_string(), "{what}: {j}");
        let msg = j["ErrorMessage"].as_str().unwrap_or_default().to_string();
        assert!(!msg.is_empty(), "{what}: {j}");
        msg
    }
}

/// GET with the admin key on a fresh connection, read to its end however it ends (bodies
/// over `keep` bytes are counted but not kept), bounded by [`ANSWER_BOUND`].
fn fetch(router: &Router, target: &str, keep: usize) -> Fetched {
    let began = Instant::now();
    let mut s = TcpStream::connect_timeout(&router.addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(ANSWER_BOUND)).expect("timeout");
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: ts3ab\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
        basic(ADMIN)
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target}: bad status line {line:?}"));
    let (mut length, mut chunked, mut content_type) = (None, false, None);
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("header");
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<u64>().ok(),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "content-type" => content_type = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    let mut got = 0u64;
    let take = |data: &[u8], body: &mut Vec<u8>, got: &mut u64| {
        *got += data.len() as u64;
        let room = keep.saturating_sub(body.len());
        body.extend_from_slice(&data[..data.len().min(room)]);
    };
    let mut buf = vec![0u8; 64 * 1024];
    let complete = if chunked {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap_or(0) == 0 {
                break false;
            }
            let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            else {
                break false;
            };
            if n == 0 {
                break true;
            }
            let mut chunk = vec![0; n];
            if r.read_exact(&mut chunk).is_err() || r.read_exact(&mut [0u8; 2]).is_err() {
                break false;
            }
            take(&chunk, &mut body, &mut got);
        }
    } else {
        loop {
            if length.is_some_and(|n| got >= n) {
                break true;
            }
            match r.read(&mut buf) {
                Ok(0) => break length.is_none(),
                Ok(k) => take(&buf[..k], &mut body, &mut got),
                Err(_) => break false,
            }
        }
    };
    assert!(
        began.elapsed() < ANSWER_BOUND,
        "{target} took {:?}",
        began.elapsed()
    );
    Fetched {
        status,
        content_type,
        body,
        complete,
    }
}

/// One admin API node object by name.
fn admin_node(router: &Router, name: &str) -> Value {
    let r = raw_request(
        router.admin_addr.expect("admin listener"),
        "GET",
        b"/admin/api/nodes",
        &[("Authorization", &basic(ADMIN))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The shared setup: node `healthy` keeps working, node `faulty` gets the faults.
struct Setup {
    nodes: Vec<FakeNode>,
    router: Router,
    healthy: usize,
    faulty: usize,
    /// Cluster ids of a bot on each node; the healthy node's bot has local id 1 and the
    /// faulty node's local id 0, so a request that reached the wrong node shows in its log.
    healthy_gid: u64,
    faulty_gid: u64,
}

impl Setup {
    fn start() -> Setup {
        let nodes = vec![fake_node(0), fake_node(1)];
        // Failover would move the bots of a node it cannot reach (a reset, bytes that are
        // not HTTP) after `after_ms`; these cases are about the node itself, so it is off.
        let router = Router::start(
            &[&nodes[0], &nodes[1]],
            RouterOpts {
                admin: true,
                poll_ms: 100,
                extra_yaml: "failover: { enabled: false }\n".into(),
                ..RouterOpts::default()
            },
        );
        // Bots created through the router: placement alternates, so three bots give one node
        // two (local ids 0 and 1) and the other one (local id 0).
        let mut gids = Vec::new();
        for i in 0..3 {
            let r = router.get(&format!("/api/bot/connect/to/ts{i}.example"));
            assert_eq!(r.status, 200, "{}", r.text());
            gids.push(r.json()["Id"].as_u64().expect("Id"));
        }
        let (healthy, faulty) = if nodes[0].bots().len() == 2 {
            (0, 1)
        } else {
            (1, 0)
        };
        assert_eq!(
            (nodes[healthy].bots().len(), nodes[faulty].bots().len()),
            (2, 1)
        );
        let gid_of = |node: usize, lid: u32| {
            let server = nodes[node]
                .bots()
                .into_iter()
                .find(|b| b.id == lid)
                .and_then(|b| b.server)
                .expect("bot");
            let i: usize = server
                .trim_start_matches("ts")
                .trim_end_matches(".example")
                .parse()
                .expect("address");
            gids[i]
        };
        let s = Setup {
            healthy_gid: gid_of(healthy, 1),
            faulty_gid: gid_of(faulty, 0),
            nodes,
            router,
            healthy,
            faulty,
        };
        s.both_up();
        s
    }

    fn name(i: usize) -> String {
        format!("node-{i}")
    }

    fn info(&self, gid: u64) -> String {
        format!("/api/bot/use/{gid}/(/bot/info)")
    }

    fn song(&self, gid: u64) -> String {
        format!("/api/bot/use/{gid}/(/song)")
    }

    /// Both nodes up, and each bot reachable with its own id.
    fn both_up(&self) {
        for i in [self.healthy, self.faulty] {
            self.router.wait_until(10, "the node to be up", |r| {
                admin_node(r, &Self::name(i))["healthy"] == true
            });
        }
        for gid in [self.healthy_gid, self.faulty_gid] {
            let r = fetch(&self.router, &self.info(gid), 1 << 20);
            assert_eq!(r.status, 200, "{}", r.text());
            let j: Value = serde_json::from_slice(&r.body).expect("BotInfo");
            assert_eq!(j["Id"].as_u64(), Some(gid), "{j}");
        }
    }

    /// Requests pinned to the healthy node's bot answer as usual.
    fn healthy_bot_works(&self) {
        let r = fetch(&self.router, &self.info(self.healthy_gid), 1 << 20);
        assert_eq!(r.status, 200, "{}", r.text());
        let j: Value = serde_json::from_slice(&r.body).expect("BotInfo");
        assert_eq!(j["Id"].as_u64(), Some(self.healthy_gid), "{j}");
        let song = fetch(&self.router, &self.song(self.healthy_gid), 1 << 20);
        assert!(song.complete && song.status < 500, "{}", song.text());
    }

    /// Nothing meant for one node reached the other since the logs were cleared: the
    /// healthy node never saw the faulty bot's local id 0 in a pinned request, and the faulty
    /// node never saw the healthy bot's local id 1.
    fn no_misrouting(&self, case: &str) {
        let pinned = |i: usize, lid: u32| {
            client_targets(&self.nodes[i])
                .into_iter()
                .filter(|t| t.starts_with(&format!("/api/bot/use/{lid}/")))
                .collect::<Vec<_>>()
        };
        assert_eq!(pinned(self.healthy, 0), Vec::<String>::new(), "{case}");
        assert_eq!(pinned(self.faulty, 1), Vec::<String>::new(), "{case}");
        assert!(
            !pinned(self.healthy, 1).is_empty(),
            "{case}: the healthy bot's requests reached its node"
        );
    }

    fn clear_logs(&self) {
        for n in &self.nodes {
            n.clear_requests();
        }
    }

    fn router_is_fine(&self, case: &str) {
        assert_eq!(self.router.get("/api/version").status, 200, "{case}");
        assert!(
            !self.router.stderr_text().contains("panicked"),
            "{case}: the router panicked:\n{}",
            self.router.stderr_text()
        );
    }
}

/// Each fault, and the words `last_error` must hold for it.
fn faults() -> Vec<(Fault, &'static str)> {
    let too_large = "larger than 16777216 bytes";
    vec![
        (Fault::InvalidJson, "not JSON"),
        (Fault::WrongTypes, "not a bot list"),
        (
            Fault::Huge {
                bytes: HUGE,
                declared: true,
            },
            too_large,
        ),
        (
            Fault::Huge {
                bytes: HUGE,
                declared: false,
            },
            too_large,
        ),
        (Fault::NotHttp, "not an HTTP answer"),
        (Fault::ResetMidAnswer, "connection reset"),
        (Fault::WrongServer, "text/html"),
    ]
}

#[test]
fn a_node_answering_garbage_is_down_in_words_and_its_bots_get_ts3ab_errors() {
    let s = Setup::start();
    assert_eq!(MAX_RESPONSE, 16 * 1024 * 1024, "the words below name it");
    let faulty = Setup::name(s.faulty);
    for (fault, words) in faults() {
        let case = format!("{fault:?} on every request");
        s.clear_logs();
        s.nodes[s.faulty].set_fault(Some(fault));
        // (a) Down, with the reason in words.
        s.router.wait_until(10, &format!("{case}: node down"), |r| {
            admin_node(r, &faulty)["healthy"] == false
        });
        let n = admin_node(&s.router, &faulty);
        let last = n["last_error"].as_str().unwrap_or_default();
        eprintln!("{case}: last_error {last:?}");
        assert!(
            last.contains(words),
            "{case}: last_error {last:?} lacks {words:?}"
        );
        // The list still answers, the faulty node's bot shown from the router's records as
        // TS3AudioBot's fallback does (connecting, 1).
        let list = s.router.bot_list();
        let find = |gid: u64| list.iter().find(|b| b["Id"].as_u64() == Some(gid)).cloned();
        assert_eq!(
            find(s.faulty_gid).map(|b| b["Status"].clone()),
            Some(Value::from(1)),
            "{case}: {list:?}"
        );
        assert!(find(s.healthy_gid).is_some(), "{case}: {list:?}");
        // (b) The faulty node's bot: a TS3AudioBot 503, at once.
        for target in [s.info(s.faulty_gid), s.song(s.faulty_gid)] {
            let r = fetch(&s.router, &target, 1 << 20);
            assert_eq!(r.status, 503, "{case} {target}: {}", r.text());
            let msg = r.ts3ab_error(&case);
            assert!(msg.contains(&faulty), "{case}: {msg}");
        }
        // (c) The healthy node's bots keep working, and nothing went astray.
        s.healthy_bot_works();
        s.no_misrouting(&case);
        // A create lands on the healthy node.
        let before = s.nodes[s.healthy].bots().len();
        let r = s.router.get("/api/bot/connect/to/extra.example");
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        let extra = r.json()["Id"].as_u64().expect("Id");
        assert_eq!(s.nodes[s.healthy].bots().len(), before + 1, "{case}");
        assert_eq!(
            s.router
                .get(&format!("/api/bot/use/{extra}/(/bot/disconnect)"))
                .status,
            204
        );
        // (d) Alive and without a panic.
        s.router_is_fine(&case);
        // (e) Back once cleared.
        s.nodes[s.faulty].set_fault(None);
        s.both_up();
    }
}

/// Whether a fault's garbage arrives with a 200 head that the router forwards before it can
/// see the body is garbage (every other fault fails before or with the head).
fn garbage_after_a_200_head(fault: Fault) -> bool {
    matches!(
        fault,
        Fault::InvalidJson
            | Fault::WrongTypes
            | Fault::ResetMidAnswer
            | Fault::Huge {
                declared: false,
                ..
            }
    )
}

#[test]
fn garbage_aimed_at_one_command_never_reaches_clients_as_an_answer() {
    let s = Setup::start();
    let faulty = Setup::name(s.faulty);
    for (fault, _) in faults() {
        let case = format!("{fault:?} on bot/info and song only");
        s.clear_logs();
        // The node's polls still succeed, so it stays up and requests reach it.
        s.nodes[s.faulty].set_fault_on(Some(fault), "bot/info");
        // (b) bot/info carries a cluster id the router must translate: garbage in its place
        // is withheld and replaced by a TS3AudioBot error. When the node's 200 head is already
        // on its way to the client (the router streams heads and can only check the body at
        // its end), the status stays 200 and the body is the error; otherwise it is a 502.
        let r = fetch(&s.router, &s.info(s.faulty_gid), 1 << 20);
        let msg = r.ts3ab_error(&case);
        eprintln!("{case}: bot/info gave {} {msg:?}", r.status);
        if garbage_after_a_200_head(fault) {
            assert!(
                r.status == 200 || r.status == 502,
                "{case}: {} {msg}",
                r.status
            );
        } else {
            assert_eq!(r.status, 502, "{case}: {msg}");
        }
        assert!(msg.contains(&faulty), "{case}: {msg}");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json"),
            "{case}"
        );
        // `song` is not edited: the router streams what the node sends, as a plain proxy in
        // front of TS3AudioBot would (its bytes are the node's, invariant 1). What a proxy
        // cannot stream is a broken exchange: no head is a 502 error, and a reset after the
        // head cuts the client's answer short too, never filled up with bytes of its own.
        s.nodes[s.faulty].set_fault_on(Some(fault), "/song");
        let r = fetch(&s.router, &s.song(s.faulty_gid), 4096);
        eprintln!(
            "{case}: song gave {} (complete: {}) {:?}",
            r.status,
            r.complete,
            r.text().chars().take(120).collect::<String>()
        );
        match fault {
            Fault::InvalidJson | Fault::WrongTypes | Fault::WrongServer => {
                assert_eq!(r.status, 200, "{case}");
                assert!(r.complete, "{case}");
                assert!(
                    serde_json::from_slice::<Value>(&r.body).map_or(true, |j| j["Id"] == "seven"),
                    "{case}: the node's own bytes: {}",
                    r.text()
                );
            }
            Fault::Huge { .. } => {
                assert_eq!((r.status, r.complete), (200, true), "{case}");
            }
            Fault::NotHttp => {
                assert_eq!(r.status, 502, "{case}");
                r.ts3ab_error(&case);
            }
            Fault::ResetMidAnswer => {
                if r.status == 502 {
                    r.ts3ab_error(&case);
                } else {
                    assert!(!r.complete, "{case}: a cut answer is cut: {:?}", r.text());
                    assert!(
                        !r.text().contains("ErrorCode"),
                        "{case}: the router's bytes inside the node's answer: {:?}",
                        r.text()
                    );
                }
            }
            _ => unreachable!(),
        }
        // (c) The healthy node is untouched, nothing went astray, the faulty node stays up
        // (its polls are fine).
        s.healthy_bot_works();
        s.no_misrouting(&case);
        assert_eq!(admin_node(&s.router, &faulty)["healthy"], true, "{case}");
        // A create whose answer is garbage, wherever it is placed: a TS3AudioBot error, never
        // the garbage as if a bot had been made.
        for n in &s.nodes {
            n.set_fault_on(Some(fault), "bot/connect");
        }
        let r = fetch(&s.router, "/api/bot/connect/to/garbage.example", 1 << 20);
        assert!(
            r.status >= 500,
            "{case}: create gave {} {}",
            r.status,
            r.text()
        );
        eprintln!("{case}: create gave {} {}", r.status, r.text());
        r.ts3ab_error(&case);
        for n in &s.nodes {
            n.set_fault(None);
        }
        // (d), (e)
        s.router_is_fine(&case);
        s.both_up();
    }
}
