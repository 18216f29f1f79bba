//! Requests the router itself sends to nodes (polls, fan-outs, split merges, creates).
//!
//! Owns: one pooled HTTP/1.1 client built on Pingora's own connector, sending a raw request
//! target byte for byte with the node's own credentials, reading a bounded response, with a
//! deadline on the whole exchange. Does not own: what to send (`api`, `proxy`, `cluster`)
//! or how to read the answer.
//!
//! A `NodeClient` can be used from any runtime; each service that sends requests has its own
//! so pooled connections stay with the runtime that opened them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::node::endpoint::Endpoint;

/// Largest response body the router reads into memory (a `bot/list` of 300 bots is ~20 KB).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why a node request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Could not connect (refused, unreachable, TLS failure): nothing was sent.
    #[error("cannot connect to node {node}: {reason}")]
    Connect {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
    /// Connected, but the exchange failed or was cut.
    #[error("node {node} failed while answering: {reason}")]
    Exchange {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
    /// No complete answer in time.
    #[error("node {node} did not answer within {after:?}")]
    Timeout {
        /// Node name.
        node: String,
        /// The deadline.
        after: Duration,
    },
    /// The answer was too large.
    #[error("node {node} sent an answer larger than {MAX_RESPONSE} bytes")]
    TooLarge {
        /// Node name.
        node: String,
    },
}

impl NodeError {
    /// Whether the request certainly never reached the node (safe to send elsewhere).
    pub fn not_sent(&self) -> bool {
        matches!(self, NodeError::Connect { .. })
    }
}

/// A node's answer.
#[derive(Debug, Clone)]
pub struct NodeResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl NodeResponse {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body, for messages.
    pub fn snippet(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned()
    }
}

/// The gist of a failed exchange in words an operator or client can act on, when Pingora's
/// error type or text shows it (None: its own words are as good).
pub fn exchange_gist(e: &pingora::Error) -> Option<&'static str> {
    let lower = e.to_string().to_ascii_lowercase();
    match e.etype() {
        // The first bytes did not parse as a status line and headers: another protocol on
        // the node's port (SSH, TLS, a database...).
        pingora::ErrorType::InvalidHTTPHeader => Some("not an HTTP answer"),
        _ if lower.contains("reset by peer") || lower.contains("connection reset") => {
            Some("connection reset mid-answer")
        }
        _ if lower.contains("premature") || lower.contains("closed") => {
            Some("connection closed mid-answer")
        }
        _ => None,
    }
}

/// [`exchange_gist`], then Pingora's own text (which names the step and the cause).
fn exchange_words(e: &pingora::Error) -> String {
    match exchange_gist(e) {
        Some(w) => format!("{w} ({e})"),
        None => e.to_string(),
    }
}

/// Why a connection could not be made: a refused TLS handshake in words (which check
/// failed, rustls' detail), otherwise Pingora's own text.
pub fn connect_reason(e: &pingora::Error) -> String {
    let text = e.to_string();
    // The type, or the text when a context wrapped it.
    let tls = matches!(
        e.etype(),
        pingora::ErrorType::TLSHandshakeFailure | pingora::ErrorType::InvalidCert
    ) || text.contains("TLS connect() failed")
        || text.contains("invalid peer certificate");
    match tls
        .then(|| crate::node::tls::refusal_words(&text))
        .flatten()
    {
        Some(words) => words,
        None => text,
    }
}

/// A pooled client for router-made requests.
pub struct NodeClient {
    connector: Connector,
    connect_timeout: Duration,
}

impl NodeClient {
    /// A client with the given connect timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        NodeClient {
            connector: Connector::new(None),
            connect_timeout,
        }
    }

    /// The peer for a node, with timeouts.
    pub fn peer(node: &Endpoint, connect_timeout: Duration, read_timeout: Duration) -> HttpPeer {
        // Pingora verifies the chain and the name by default, and skips both for an empty
        // SNI: the name is never empty (a URL always has a host).
        let mut peer = HttpPeer::new(node.addr, node.tls, node.tls_name().to_string());
        if node.tls {
            peer.options.verify_cert = true;
            peer.options.verify_hostname = true;
            if let Some(ca) = &node.trust.ca {
                peer.options.ca = Some(ca.certs.clone());
                peer.group_key = ca.pool_key;
            }
        }
        peer.options.connection_timeout = Some(connect_timeout);
        peer.options.total_connection_timeout = Some(connect_timeout);
        peer.options.read_timeout = Some(read_timeout);
        peer.options.write_timeout = Some(read_timeout);
        // Shorter than Kestrel's 2-minute keep-alive, so the node never closes a connection
        // the pool still hands out.
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer
    }

    /// The proxy's peer for a node: built once per endpoint (`ProxyParts`), then cloned for
    /// each request. A plain-HTTP peer gets no SNI: nothing reads it, and an empty one costs
    /// the clone no allocation.
    pub fn proxy_peer(
        node: &Endpoint,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Box<HttpPeer> {
        let build = || {
            let mut peer = Self::peer(node, connect_timeout, read_timeout);
            if !node.tls {
                peer.sni = String::new();
            }
            peer
        };
        let (c, r, peer) = node
            .proxy
            .peer
            .get_or_init(|| (connect_timeout, read_timeout, build()));
        if (*c, *r) == (connect_timeout, read_timeout) {
            Box::new(peer.clone())
        } else {
            Box::new(build())
        }
    }

    /// The node's `Authorization` value as a header value, built once per endpoint.
    pub fn proxy_auth(node: &Endpoint) -> Option<&http::HeaderValue> {
        node.proxy
            .auth
            .get_or_init(|| {
                node.auth_header
                    .as_deref()
                    .and_then(|a| http::HeaderValue::from_str(a).ok())
            })
            .as_ref()
    }

    /// Sends `GET <target>` (raw bytes, e.g. `/api/bot/list`) with the node's credentials and
    /// reads the whole answer within `deadline`.
    pub async fn get(
        &self,
        node: &Endpoint,
        target: &[u8],
        deadline: Duration,
    ) -> Result<NodeResponse, NodeError> {
        match tokio::time::timeout(deadline, self.exchange(node, target, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(NodeError::Timeout {
                node: node.name.to_string(),
                after: deadline,
            }),
        }
    }

    async fn exchange(
        &self,
        node: &Endpoint,
        target: &[u8],
        deadline: Duration,
    ) -> Result<NodeResponse, NodeError> {
        let name = || node.name.to_string();
        let exchange_err = |e: Box<pingora::Error>| NodeError::Exchange {
            node: name(),
            reason: exchange_words(&e),
        };
        let peer = Self::peer(node, self.connect_timeout.min(deadline), deadline);
        let (mut session, _reused) =
            self.connector
                .get_http_session(&peer)
                .await
                .map_err(|e| NodeError::Connect {
                    node: name(),
                    reason: connect_reason(&e),
                })?;
        let mut req = RequestHeader::build("GET", target, None).map_err(exchange_err)?;
        req.insert_header("Host", node.authority.as_str())
            .map_err(exchange_err)?;
        if let Some(auth) = &node.auth_header {
            req.insert_header("Authorization", auth.as_str())
                .map_err(exchange_err)?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(exchange_err)?;
        session.finish_request_body().await.map_err(exchange_err)?;
        session.read_response_header().await.map_err(exchange_err)?;
        let (status, content_type) = match session.response_header() {
            Some(h) => (
                h.status.as_u16(),
                h.headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            ),
            None => {
                return Err(NodeError::Exchange {
                    node: name(),
                    reason: "no response header".into(),
                })
            }
        };
        // A declared size over the limit is refused before any of it is read.
        let declared = session
            .response_header()
            .and_then(|h| h.headers.get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_RESPONSE as u64) {
            return Err(NodeError::TooLarge { node: name() });
        }
        // A body that arrives in one piece (a `Content-Length` answer read whole with its head,
        // the common case) is kept as the `Bytes` Pingora hands out, not copied a second time;
        // only a body in several pieces is joined.
        let (mut first, mut joined, mut total) = (None::<Bytes>, BytesMut::new(), 0usize);
        while let Some(chunk) = session.read_response_body().await.map_err(exchange_err)? {
            total += chunk.len();
            if total > MAX_RESPONSE {
                return Err(NodeError::TooLarge { node: name() });
            }
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if joined.is_empty() {
                        joined.extend_from_slice(f);
                    }
                    joined.extend_from_slice(&chunk);
                }
            }
        }
        let body = if joined.is_empty() {
            first.unwrap_or_default()
        } else {
            joined.freeze()
        };
        self.connector
            .release_http_session(session, &peer, None)
            .await;
        Ok(NodeResponse {
            status,
            content_type,
            body,
        })
    }
}
