//! The HTTP/1.1 server: accepting, reading requests byte for byte, answering like Kestrel
//! with TS3AudioBot's middleware in front (CORS, `/api`, static files), and the fault,
//! latency, service-time and concurrency knobs (the garbage faults' bytes are `faults`').
//!
//! Owns: the request line (parsed by hand so every byte 0x21..=0x7E and >= 0x80 reaches the
//! parser unchanged), headers (httparse), Content-Length and chunked bodies (read, counted,
//! discarded), keep-alive and `Connection: close`, preflights, response framing, recording.
//! Does not own: what a command does (`exec`), the test controls' semantics (`control`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::exec::{render, Answer, Caller, Effect, Exec, Fail, Reason};
use crate::{control, faults, Fault, Shared};

/// Kestrel's request line limit; longer lines get 414.
const MAX_REQUEST_LINE: usize = 8192;
/// Kestrel's header limit (32 KiB) plus the request line.
const MAX_HEAD: usize = 40 * 1024;

/// One parsed request head.
pub struct Request {
    pub method: String,
    pub target: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
    pub body_len: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Waits until the stop flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Accepts until stopped, then drops the listener and reports that it did.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    done: std::sync::mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    shared.conns.fetch_add(1, Ordering::SeqCst);
                    let (s, rx) = (shared.clone(), stop.clone());
                    tokio::spawn(async move {
                        connection(s.clone(), sock, rx).await;
                        s.conns.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                // Out of descriptors and the like: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    drop(listener);
    let _ = done.send(());
}

async fn connection(shared: Arc<Shared>, mut sock: TcpStream, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = stopped(&mut stop) => {}
        _ = serve(&shared, &mut sock) => {}
    }
}

/// Buffered reading with an offset, so bytes of a following request are kept.
struct Conn<'a> {
    sock: &'a mut TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

enum Next {
    Request(Request, usize),
    Close,
    Reject(u16),
}

impl Conn<'_> {
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(8192);
        }
        let n = self.sock.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    /// Drops consumed bytes, keeping any that belong to the next request.
    fn compact(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
    }

    async fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(Some(line));
            }
            if self.buf.len() - self.pos > MAX_HEAD || !self.fill().await? {
                return Ok(None);
            }
        }
    }

    async fn skip(&mut self, mut n: usize) -> std::io::Result<bool> {
        loop {
            let have = (self.buf.len() - self.pos).min(n);
            self.pos += have;
            n -= have;
            if n == 0 {
                return Ok(true);
            }
            self.compact();
            if !self.fill().await? {
                return Ok(false);
            }
        }
    }

    async fn next_request(&mut self) -> std::io::Result<Next> {
        self.compact();
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Ok(Next::Reject(431));
            }
            if !self.fill().await? {
                return Ok(Next::Close);
            }
        };
        let head = &self.buf[..end];
        let Some(line_end) = head.windows(2).position(|w| w == b"\r\n") else {
            return Ok(Next::Reject(400));
        };
        if line_end > MAX_REQUEST_LINE {
            return Ok(Next::Reject(414));
        }
        let Some((method, target, version)) = split_request_line(&head[..line_end]) else {
            return Ok(Next::Reject(400));
        };
        let mut raw_headers = [httparse::EMPTY_HEADER; 96];
        let headers = match httparse::parse_headers(&head[line_end + 2..], &mut raw_headers) {
            Ok(httparse::Status::Complete((_, hs))) => hs
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect::<Vec<_>>(),
            Err(httparse::Error::TooManyHeaders) => return Ok(Next::Reject(431)),
            _ => return Ok(Next::Reject(400)),
        };
        let http10 = version == b"HTTP/1.0";
        let mut req = Request {
            method: String::from_utf8_lossy(method).into_owned(),
            target: target.to_vec(),
            headers,
            keep_alive: !http10,
            body_len: 0,
        };
        if let Some(c) = req.header("connection") {
            let has = |t: &str| c.split(',').any(|p| p.trim().eq_ignore_ascii_case(t));
            if has("close") {
                req.keep_alive = false;
            } else if has("keep-alive") {
                req.keep_alive = true;
            }
        }
        self.pos = end;
        Ok(Next::Request(req, end))
    }

    /// Reads and discards the body, returning its size (`None`: broken framing).
    async fn discard_body(&mut self, req: &Request) -> std::io::Result<Option<usize>> {
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        let length = req
            .header("content-length")
            .map(|v| v.trim().parse::<usize>());
        if (chunked || matches!(length, Some(Ok(n)) if n > 0))
            && req
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.sock
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        if chunked {
            let mut total = 0usize;
            loop {
                let Some(line) = self.read_line().await? else {
                    return Ok(None);
                };
                let size_text = String::from_utf8_lossy(&line);
                let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
                let Ok(size) = usize::from_str_radix(&size_text, 16) else {
                    return Ok(None);
                };
                if size == 0 {
                    // Trailers up to the empty line.
                    loop {
                        match self.read_line().await? {
                            Some(l) if l.is_empty() => return Ok(Some(total)),
                            Some(_) => {}
                            None => return Ok(None),
                        }
                    }
                }
                if !self.skip(size).await? || self.read_line().await?.is_none_or(|l| !l.is_empty())
                {
                    return Ok(None);
                }
                total += size;
            }
        }
        match length {
            None => Ok(Some(0)),
            Some(Ok(n)) => Ok(self.skip(n).await?.then_some(n)),
            Some(Err(_)) => Ok(None),
        }
    }
}

/// `METHOD SP target SP version`, with any byte 0x21..=0x7E or >= 0x80 in the target.
fn split_request_line(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || target.is_empty() {
        return None;
    }
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let target_ok = |b: &u8| (0x21..=0x7E).contains(b) || *b >= 0x80;
    let version_ok = version == b"HTTP/1.1" || version == b"HTTP/1.0";
    (method.iter().all(token) && target.iter().all(target_ok) && version_ok)
        .then_some((method, target, version))
}

async fn serve(shared: &Arc<Shared>, sock: &mut TcpStream) {
    let mut conn = Conn {
        sock,
        buf: Vec::with_capacity(8192),
        pos: 0,
    };
    let mut out = Vec::with_capacity(4096);
    loop {
        let (req, head_len) = match conn.next_request().await {
            Ok(Next::Request(r, n)) => (r, n),
            Ok(Next::Reject(status)) => {
                out.clear();
                write_head(&mut out, status, None, &[], Some(0), false);
                let _ = conn.sock.write_all(&out).await;
                return;
            }
            Ok(Next::Close) | Err(_) => return,
        };
        let head: Box<[u8]> = conn.buf[..head_len].into();
        let mut req = req;
        match conn.discard_body(&req).await {
            Ok(Some(n)) => req.body_len = n,
            _ => return,
        }
        let is_control = control::is_control(&req.target);
        if !is_control {
            shared.record(head, req.body_len);
            match shared.fault_for(&req.target) {
                Some(Fault::Close) => return,
                Some(Fault::Hang) => {
                    // Never answer; notice when the client gives up.
                    let mut scratch = [0u8; 1024];
                    while matches!(conn.sock.read(&mut scratch).await, Ok(n) if n > 0) {}
                    return;
                }
                Some(
                    f @ (Fault::InvalidJson
                    | Fault::WrongTypes
                    | Fault::Huge { .. }
                    | Fault::NotHttp
                    | Fault::ResetMidAnswer
                    | Fault::WrongServer),
                ) => match faults::write(conn.sock, f, req.keep_alive).await {
                    Some(true) => continue,
                    _ => return,
                },
                Some(Fault::Status500) => {
                    let fail =
                        Fail::other(500, "Object reference not set to an instance of an object.");
                    let answer = Answer {
                        status: 500,
                        content_type: "application/json",
                        body: fail.body(),
                    };
                    if !respond(conn.sock, &mut out, &req, &answer, &api_headers()).await {
                        return;
                    }
                    continue;
                }
                None => {}
            }
        }
        let (answer, extra, effects) = dispatch(shared, &req, is_control).await;
        if !is_control && shared.holds(&req.target) {
            shared.held.fetch_add(1, Ordering::SeqCst);
            // The command has run; its answer waits for `release` (or a caller that left).
            while shared.holds(&req.target) && shared.listening.lock().is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let keep = respond(conn.sock, &mut out, &req, &answer, &extra).await;
        if effects.contains(&Effect::Quit) {
            // The answer is out; now the "process" goes away.
            shared.signal_kill();
            return;
        }
        if !keep {
            return;
        }
    }
}

fn api_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Access-Control-Allow-Origin", "*".into()),
        ("CacheControl", "no-cache, no-store, must-revalidate".into()),
    ]
}

/// Routes one request: control paths, CORS preflight, `/api`, static files.
async fn dispatch(
    shared: &Arc<Shared>,
    req: &Request,
    is_control: bool,
) -> (Answer, Vec<(&'static str, String)>, Vec<Effect>) {
    if is_control {
        return (control::handle(shared, &req.target), Vec::new(), Vec::new());
    }
    if req.method == "OPTIONS" {
        if let (Some(_), Some(m)) = (
            req.header("origin"),
            req.header("access-control-request-method"),
        ) {
            let mut h = vec![
                ("Access-Control-Allow-Origin", "*".to_string()),
                ("Access-Control-Allow-Methods", m.to_string()),
            ];
            if let Some(rh) = req.header("access-control-request-headers") {
                h.push(("Access-Control-Allow-Headers", rh.to_string()));
            }
            return (
                Answer {
                    status: 204,
                    content_type: "",
                    body: Vec::new(),
                },
                h,
                Vec::new(),
            );
        }
    }
    match api_command(&req.target) {
        Some(text) => {
            let (answer, effects) = api(shared, req, text).await;
            (answer, api_headers(), effects)
        }
        None => {
            let mut h = Vec::new();
            if req.header("origin").is_some() {
                h.push(("Access-Control-Allow-Origin", "*".to_string()));
            }
            (static_file(shared, &req.target), h, Vec::new())
        }
    }
}

/// The command text when the target is under `/api` (case-insensitive, at a segment
/// boundary): the raw target minus its first four characters.
pub fn api_command(target: &[u8]) -> Option<&[u8]> {
    let path = strip_authority(target);
    let is_api = path.len() >= 4
        && path[..4].eq_ignore_ascii_case(b"/api")
        && matches!(path.get(4), None | Some(b'/') | Some(b'?'));
    is_api.then(|| &path[4..])
}

/// An absolute-form target (`http://host/api/...`) counts from its path.
fn strip_authority(target: &[u8]) -> &[u8] {
    let lower = |n: usize| target.get(..n).map(|p| p.to_ascii_lowercase());
    let scheme = if lower(7).as_deref() == Some(b"http://") {
        7
    } else if lower(8).as_deref() == Some(b"https://") {
        8
    } else {
        return target;
    };
    let rest = &target[scheme..];
    rest.iter()
        .position(|&b| b == b'/')
        .map_or(&[][..], |i| &rest[i..])
}

async fn api(shared: &Arc<Shared>, req: &Request, text: &[u8]) -> (Answer, Vec<Effect>) {
    let result = match req.header("authorization") {
        None => Ok(Caller::Anonymous(shared.anonymous)),
        Some(h) => crate::auth::check(
            h,
            shared.auth.as_ref().map(|(u, t)| (u.as_str(), t.as_str())),
        )
        .map(|()| Caller::User),
    };
    let (answer, effects) = match result {
        Ok(caller) => execute(shared, caller, text).await,
        Err(msg) => {
            let mut f = Fail::new(Reason::Unauthorized, msg);
            f.help_message = Some("You have to authenticate yourself to call this method.");
            f.help_link = Some("https://github.com/Splamy/TS3AudioBot/wiki/WebAPI#authentication");
            (render(Err(f)), Vec::new())
        }
    };
    // Latency models the network: it delays every /api answer, errors included.
    let latency = Duration::from_nanos(shared.latency_ns.load(Ordering::Relaxed));
    let applies = shared
        .latency_only
        .lock()
        .as_ref()
        .is_none_or(|only| text.windows(only.len()).any(|w| w == only.as_slice()));
    if !latency.is_zero() && applies {
        tokio::time::sleep(latency).await;
    }
    (answer, effects)
}

/// Runs a command inside the concurrency limit, after the service time. The state lock is
/// taken only for the synchronous execution (and writing template changes to the data dir),
/// never across an await.
async fn execute(shared: &Arc<Shared>, caller: Caller, text: &[u8]) -> (Answer, Vec<Effect>) {
    let _permit = match &shared.sem {
        Some(sem) => sem.clone().acquire_owned().await.ok(),
        None => None,
    };
    if !shared.service_time.is_zero() {
        tokio::time::sleep(shared.service_time).await;
    }
    shared.mutate(|st| {
        let mut ex = Exec::new(st, caller, Instant::now());
        let res = ex.run_api(text);
        (render(res), std::mem::take(&mut ex.effects))
    })
}

/// The WebInterface files: `/`, `/index.html`, `/bundle.js`; 404 otherwise.
fn static_file(shared: &Shared, target: &[u8]) -> Answer {
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match path {
        b"/" | b"/index.html" => Answer {
            status: 200,
            content_type: "text/html",
            body: format!(
                "<!DOCTYPE html><html><head><title>TS3AudioBot</title></head><body>TS3AudioBot WebInterface (fake node {})<script src=\"bundle.js\"></script></body></html>",
                shared.name
            )
            .into_bytes(),
        },
        b"/bundle.js" => Answer {
            status: 200,
            content_type: "application/javascript",
            body: b"console.log(\"TS3AudioBot fake WebInterface\");\n".to_vec(),
        },
        _ => Answer { status: 404, content_type: "", body: Vec::new() },
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    extra: &[(&str, String)],
    len: Option<usize>,
    keep_alive: bool,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: Kestrel\r\n",
        reason_phrase(status)
    );
    if let Some(ct) = content_type.filter(|c| !c.is_empty()) {
        let _ = write!(out, "Content-Type: {ct}\r\n");
    }
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if let Some(n) = len {
        let _ = write!(out, "Content-Length: {n}\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an answer; `false` when the connection is to be closed.
async fn respond(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    req: &Request,
    a: &Answer,
    extra: &[(&str, String)],
) -> bool {
    out.clear();
    // A 204 carries no body and, per RFC 9110, no Content-Length.
    let len = (a.status != 204).then_some(a.body.len());
    write_head(
        out,
        a.status,
        Some(a.content_type),
        extra,
        len,
        req.keep_alive,
    );
    if req.method != "HEAD" && a.status != 204 {
        out.extend_from_slice(&a.body);
    }
    sock.write_all(out).await.is_ok() && req.keep_alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefix_matching() {
        assert_eq!(api_command(b"/api"), Some(&b""[..]));
        assert_eq!(api_command(b"/API/bot/list"), Some(&b"/bot/list"[..]));
        assert_eq!(api_command(b"/api?x=1"), Some(&b"?x=1"[..]));
        assert_eq!(api_command(b"/apix"), None);
        assert_eq!(api_command(b"/"), None);
        assert_eq!(
            api_command(b"http://h:1/api/version"),
            Some(&b"/version"[..])
        );
    }

    #[test]
    fn request_line_takes_raw_bytes() {
        let line = b"GET /api/print/\"a'(b)%28//\xc3\xa4? HTTP/1.1";
        let (m, t, v) = split_request_line(line).unwrap_or_default();
        assert_eq!(m, b"GET");
        assert_eq!(t, &b"/api/print/\"a'(b)%28//\xc3\xa4?"[..]);
        assert_eq!(v, b"HTTP/1.1");
        assert!(split_request_line(b"GET /a b HTTP/1.1").is_none());
        assert!(split_request_line(b"GET /a\x01 HTTP/1.1").is_none());
    }
}
