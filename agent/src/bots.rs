//! Asking the local TS3AudioBot Web API which bots exist and in which state.
//!
//! Owns: one `GET <base>/api/bot/list` per call over a fresh HTTP/1.1 connection (with
//! `Authorization: Basic` when configured), its timeout and size bound, response framing
//! (Content-Length, chunked, or until close), and counting `BotInfo.Status` 0/1/2.
//! Does not own: how the counts are exported (`metrics`, `summary`), or any bot id: ids are
//! never kept, so they cannot leak into labels.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ApiUrl;

/// Responses larger than this are refused (a node with thousands of bots is far below it).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Bots by `BotInfo.Status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BotCounts {
    /// Status 0: a template that is not running.
    pub offline: u64,
    /// Status 1: running but not (yet) connected.
    pub connecting: u64,
    /// Status 2: connected.
    pub connected: u64,
}

impl BotCounts {
    /// The states in label order, with their counts.
    pub fn by_status(&self) -> [(&'static str, u64); 3] {
        [
            ("offline", self.offline),
            ("connecting", self.connecting),
            ("connected", self.connected),
        ]
    }
}

/// Why the API did not give a bot list.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Connecting, writing or reading failed.
    #[error("TS3AudioBot API at {authority}: {source}")]
    Io {
        /// Where.
        authority: String,
        /// Why.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("TS3AudioBot API at {authority}: no answer within {timeout:?}")]
    Timeout {
        /// Where.
        authority: String,
        /// The timeout.
        timeout: Duration,
    },
    /// An answer, but not a usable one.
    #[error("TS3AudioBot API at {authority}: {what}")]
    Bad {
        /// Where.
        authority: String,
        /// What was wrong.
        what: String,
    },
}

/// A client for one TS3AudioBot API.
#[derive(Clone, Debug)]
pub struct BotsClient {
    api: ApiUrl,
    authorization: Option<String>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct BotInfo {
    #[serde(rename = "Status")]
    status: Option<i64>,
}

impl BotsClient {
    /// A client for `api`, with `auth` as `uid:token` if given.
    pub fn new(api: ApiUrl, auth: Option<&str>, timeout: Duration) -> BotsClient {
        let authorization = auth.map(|a| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a.as_bytes())
            )
        });
        BotsClient {
            api,
            authorization,
            timeout,
        }
    }

    /// Lists the bots and counts them by status.
    pub async fn counts(&self) -> Result<BotCounts, ApiError> {
        let body = match tokio::time::timeout(self.timeout, self.get("/api/bot/list")).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ApiError::Timeout {
                    authority: self.api.authority.clone(),
                    timeout: self.timeout,
                })
            }
        };
        count_bots(&body).map_err(|what| self.bad(what))
    }

    fn bad(&self, what: impl Into<String>) -> ApiError {
        ApiError::Bad {
            authority: self.api.authority.clone(),
            what: what.into(),
        }
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, ApiError> {
        let io = |source| ApiError::Io {
            authority: self.api.authority.clone(),
            source,
        };
        let mut sock = TcpStream::connect(&self.api.authority).await.map_err(io)?;
        let mut req = format!(
            "GET {}{} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: ts3ab-lb-agent/{}\r\nConnection: close\r\n",
            self.api.base_path,
            path,
            self.api.authority,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(a) = &self.authorization {
            req.push_str("Authorization: ");
            req.push_str(a);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::with_capacity(8192);
        loop {
            if buf.len() > MAX_RESPONSE {
                return Err(self.bad(format!("response larger than {MAX_RESPONSE} bytes")));
            }
            // With `Connection: close` a complete framed response may arrive before EOF;
            // stop as soon as it is complete.
            if let Some(body) = parse_response(&buf).map_err(|w| self.bad(w))? {
                return Ok(body);
            }
            if buf.len() == buf.capacity() {
                buf.reserve(8192);
            }
            let n = sock.read_buf(&mut buf).await.map_err(io)?;
            if n == 0 {
                return match parse_response(&buf).map_err(|w| self.bad(w))? {
                    Some(body) => Ok(body),
                    None => until_close(&buf).map_err(|w| self.bad(w)),
                };
            }
        }
    }
}

/// A complete 200 response's body, `None` when more bytes are needed, `Err` for anything else.
/// Bodies framed by connection close are only complete at EOF (see [`until_close`]).
fn parse_response(buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        return Err(format!("HTTP {code} for bot/list"));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &buf[head_len..];
    if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        return dechunk(rest);
    }
    if let Some(cl) = header("content-length") {
        let n: usize = cl.parse().map_err(|_| "bad Content-Length".to_string())?;
        if n > MAX_RESPONSE {
            return Err(format!("response larger than {MAX_RESPONSE} bytes"));
        }
        return Ok((rest.len() >= n).then(|| rest[..n].to_vec()));
    }
    Ok(None)
}

/// The body of a response framed by connection close, once EOF was seen.
fn until_close(buf: &[u8]) -> Result<Vec<u8>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(buf[n..].to_vec()),
        Ok(httparse::Status::Partial) => {
            Err("connection closed before the response head ended".into())
        }
        Err(e) => Err(format!("malformed response: {e}")),
    }
}

/// Decodes a chunked body; `None` while the last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size".to_string())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size".to_string())?;
        if size > MAX_RESPONSE || out.len() + size > MAX_RESPONSE {
            return Err(format!("response larger than {MAX_RESPONSE} bytes"));
        }
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers are not needed; the body is complete.
            return Ok(Some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Counts a `bot/list` body (a JSON array of BotInfo) by `Status`. Unknown statuses are not
/// counted (a future TS3AudioBot state must not be reported as one of the three).
pub fn count_bots(body: &[u8]) -> Result<BotCounts, String> {
    let list: Vec<BotInfo> = serde_json::from_slice(body)
        .map_err(|e| format!("bot/list is not a BotInfo array: {e}"))?;
    let mut c = BotCounts::default();
    for b in list {
        match b.status {
            Some(0) => c.offline += 1,
            Some(1) => c.connecting += 1,
            Some(2) => c.connected += 1,
            _ => {}
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status() {
        let body = br#"[{"Id":0,"Name":"a","Server":"x","Status":2},{"Id":1,"Name":null,"Server":null,"Status":1},
            {"Id":null,"Name":"t","Server":"y","Status":0},{"Id":3,"Status":2},{"Id":4,"Status":7}]"#;
        assert_eq!(
            count_bots(body),
            Ok(BotCounts {
                offline: 1,
                connecting: 1,
                connected: 2
            })
        );
        assert!(count_bots(br#"{"ErrorCode":0}"#).is_err());
        assert!(count_bots(b"not json").is_err());
    }

    #[test]
    fn response_framing() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_response(cl), Ok(Some(b"[]".to_vec())));
        assert_eq!(parse_response(&cl[..cl.len() - 1]), Ok(None));
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1;x=y\r\n]\r\n0\r\n\r\n";
        assert_eq!(parse_response(ch), Ok(Some(b"[]".to_vec())));
        assert_eq!(parse_response(&ch[..ch.len() - 7]), Ok(None));
        let close = b"HTTP/1.1 200 OK\r\n\r\n[]";
        assert_eq!(parse_response(close), Ok(None));
        assert_eq!(until_close(close), Ok(b"[]".to_vec()));
        let e = parse_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(e, Err("HTTP 401 for bot/list".to_string()));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(until_close(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
