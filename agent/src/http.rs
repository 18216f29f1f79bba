//! The agent's HTTP/1.1 server: `GET /metrics` and `GET /summary`, behind an optional bearer
//! token.
//!
//! Owns: accepting (with a bound on open connections), reading request heads (bounded in
//! size and time), keep-alive, the bearer check (constant-time), routing and the error
//! answers (400, 401, 404, 405, 431), and response framing.
//! Does not own: what the two documents contain ([`Handler`], implemented in `lib.rs`).
//!
//! Request bodies are never needed: a body up to [`MAX_BODY`] bytes is read and dropped so
//! the connection can be reused; a larger or chunked one is not read, and the connection is
//! closed after the answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Largest request head accepted; larger ones get 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and dropped) to keep a connection open.
pub const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Time allowed for a request head to arrive (also the keep-alive idle time).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server serves.
pub trait Handler: Send + Sync + 'static {
    /// The `/metrics` body (Prometheus text).
    fn metrics(&self) -> impl Future<Output = String> + Send;
    /// The `/summary` body (JSON).
    fn summary(&self) -> impl Future<Output = String> + Send;
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Method as sent.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The `Authorization` header, if one was sent.
    pub authorization: Option<String>,
    /// Body length by `Content-Length` (0 without).
    pub content_length: usize,
    /// `Transfer-Encoding` was sent (a body of unknown length).
    pub chunked: bool,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete; `Err(status)`: the
/// answer to give before closing.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(431)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    if len > MAX_HEAD {
        return Err(431);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(400);
    };
    let mut authorization = None;
    let mut content_length = None;
    let mut chunked = false;
    let mut connection = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| 400u16)?.trim();
        if h.name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(400);
            }
            authorization = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| 400u16)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(400);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection = Some(value.to_ascii_lowercase());
        }
    }
    let has = |t: &str| {
        connection
            .as_deref()
            .is_some_and(|c| c.split(',').any(|p| p.trim() == t))
    };
    let keep_alive = if version == 0 {
        has("keep-alive")
    } else {
        !has("close")
    };
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Some(Head {
        method: method.to_string(),
        path,
        authorization,
        content_length: content_length.unwrap_or(0),
        chunked,
        keep_alive,
        len,
    }))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    // Walk the longer one fully so a prefix match takes as long as a mismatch.
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

/// Whether an `Authorization` header carries `Bearer <token>` (scheme case-insensitive).
pub fn bearer_ok(header: Option<&str>, token: &str) -> bool {
    let Some(h) = header else { return false };
    let Some((scheme, cred)) = h.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && ct_eq(cred.trim().as_bytes(), token.as_bytes())
}

/// Which document a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`.
    Metrics,
    /// `/summary`.
    Summary,
}

/// Routes a request: the document, or the status to answer with (404 unknown path, 405
/// not GET, 401 token missing or wrong). Paths are checked first; they are not secret.
pub fn route(head: &Head, token: Option<&str>) -> Result<Route, u16> {
    let r = match head.path.as_str() {
        "/metrics" => Route::Metrics,
        "/summary" => Route::Summary,
        _ => return Err(404),
    };
    if head.method != "GET" {
        return Err(405);
    }
    match token {
        Some(t) if !bearer_ok(head.authorization.as_deref(), t) => Err(401),
        _ => Ok(r),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// A complete response.
fn response(status: u16, content_type: &str, body: &str, keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        reason(status),
        body.len()
    );
    match status {
        401 => out.push_str("WWW-Authenticate: Bearer realm=\"ts3ab-lb-agent\"\r\n"),
        405 => out.push_str("Allow: GET\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

fn error_response(status: u16, keep_alive: bool) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        &format!("{}\n", reason(status)),
        keep_alive,
    )
}

/// Waits until the flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Accepts and serves until `stop` is set.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    token: Option<Arc<str>>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, _)) => {
                let (h, t, mut rx) = (handler.clone(), token.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stopped(&mut rx) => {}
                        r = connection(sock, &*h, t.as_deref()) => {
                            if let Err(e) = r {
                                log::debug!("connection: {e}");
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                log::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<H: Handler>(
    mut sock: TcpStream,
    handler: &H,
    token: Option<&str>,
) -> std::io::Result<()> {
    let _ = sock.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(status) => {
                    sock.write_all(&error_response(status, false)).await?;
                    return sock.shutdown().await;
                }
            }
            if buf.len() == buf.capacity() {
                buf.reserve(2048);
            }
            match tokio::time::timeout(HEAD_TIMEOUT, sock.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        };
        buf.drain(..head.len);
        // Drop a small body so the next request can be read; otherwise close after answering.
        let mut keep_alive = head.keep_alive && !head.chunked;
        if head.content_length > MAX_BODY {
            keep_alive = false;
        } else if keep_alive && head.content_length > 0 {
            while buf.len() < head.content_length {
                if buf.len() == buf.capacity() {
                    buf.reserve(4096);
                }
                match tokio::time::timeout(HEAD_TIMEOUT, sock.read_buf(&mut buf)).await {
                    Ok(Ok(0)) | Err(_) => return Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                }
            }
            buf.drain(..head.content_length);
        }
        let bytes = match route(&head, token) {
            Ok(Route::Metrics) => response(
                200,
                crate::metrics::CONTENT_TYPE,
                &handler.metrics().await,
                keep_alive,
            ),
            Ok(Route::Summary) => response(
                200,
                "application/json",
                &handler.summary().await,
                keep_alive,
            ),
            Err(status) => error_response(status, keep_alive),
        };
        sock.write_all(&bytes).await?;
        if !keep_alive {
            return sock.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, u16> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn parses_requests() {
        let h =
            head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer  abc \r\n\r\nrest")
                .expect("ok")
                .expect("complete");
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/metrics");
        assert_eq!(h.authorization.as_deref(), Some("Bearer  abc"));
        assert!(h.keep_alive);
        assert_eq!(h.content_length, 0);
        assert_eq!(
            h.len,
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer  abc \r\n\r\n".len()
        );
        let h = head("GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive, "HTTP/1.0 closes by default");
        let h = head("GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive);
        let h = head("POST /x HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.content_length, 12);
        let h = head("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(h.chunked);
    }

    #[test]
    fn request_edge_cases() {
        assert_eq!(
            head("GET /metrics HTTP/1.1\r\nHost: a\r\n"),
            Ok(None),
            "partial"
        );
        assert_eq!(head(""), Ok(None));
        assert_eq!(head("GARBAGE\r\n\r\n"), Err(400));
        assert_eq!(head("GET /metrics HTTP/9.9\r\n\r\n"), Err(400));
        assert_eq!(head("GET /m HTTP/1.1\r\nBad Header\r\n\r\n"), Err(400));
        assert_eq!(
            head("GET /m HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            head("GET /m HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            head("GET /m HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n"),
            Err(400),
            "two Authorization headers are ambiguous"
        );
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(head(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(431));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&long), Err(431), "an endless head is cut off");
        // Non-UTF-8 header values are refused, not panicked on.
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"),
            Err(400)
        );
    }

    #[test]
    fn bearer_check() {
        assert!(bearer_ok(Some("Bearer s3cret"), "s3cret"));
        assert!(bearer_ok(Some("bearer s3cret"), "s3cret"));
        assert!(!bearer_ok(Some("Bearer s3cre"), "s3cret"), "prefix");
        assert!(!bearer_ok(Some("Bearer s3cretX"), "s3cret"), "longer");
        assert!(
            !bearer_ok(Some("Bearer S3cret"), "s3cret"),
            "case of the token counts"
        );
        assert!(!bearer_ok(Some("Basic s3cret"), "s3cret"), "scheme");
        assert!(!bearer_ok(Some("Bearer"), "s3cret"));
        assert!(!bearer_ok(Some("Bearer "), "s3cret"));
        assert!(!bearer_ok(None, "s3cret"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"", b"\xff"));
        assert!(!ct_eq(b"a\0", b"a"));
    }

    #[test]
    fn routing() {
        let req = |m: &str, p: &str, auth: Option<&str>| Head {
            method: m.into(),
            path: p.into(),
            authorization: auth.map(String::from),
            content_length: 0,
            chunked: false,
            keep_alive: true,
            len: 0,
        };
        assert_eq!(
            route(&req("GET", "/metrics", None), None),
            Ok(Route::Metrics)
        );
        assert_eq!(
            route(&req("GET", "/summary", None), None),
            Ok(Route::Summary)
        );
        assert_eq!(route(&req("GET", "/", None), None), Err(404));
        assert_eq!(route(&req("GET", "/metrics/", None), None), Err(404));
        assert_eq!(route(&req("POST", "/metrics", None), None), Err(405));
        assert_eq!(route(&req("HEAD", "/summary", None), None), Err(405));
        let t = Some("tok");
        assert_eq!(route(&req("GET", "/metrics", None), t), Err(401));
        assert_eq!(
            route(&req("GET", "/summary", Some("Bearer no")), t),
            Err(401)
        );
        assert_eq!(
            route(&req("GET", "/summary", Some("Bearer tok")), t),
            Ok(Route::Summary)
        );
    }

    #[test]
    fn responses_are_framed() {
        let r = String::from_utf8(response(200, "a/b", "hey", true)).expect("utf8");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("\r\nContent-Length: 3\r\n"));
        assert!(!r.contains("Connection: close"));
        assert!(r.ends_with("\r\n\r\nhey"));
        let r = String::from_utf8(error_response(401, false)).expect("utf8");
        assert!(r.contains("WWW-Authenticate: Bearer"));
        assert!(r.contains("Connection: close"));
        let r = String::from_utf8(error_response(405, true)).expect("utf8");
        assert!(r.contains("Allow: GET"));
    }
}
