//! A node's endpoint: where it is and how the router authenticates to it.
//!
//! Owns: parsing a node URL (`http[s]://host[:port]`, resolved once), the `Host` and SNI
//! names, and the router's own `Authorization` value for the node (never shown in Debug
//! output). An endpoint is immutable; a node whose URL or credentials change at run time
//! gets a new one. Does not own: the node's live state (`cluster`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::node::tls::NodeTls;
use crate::protocol::basic_auth::basic_header;

/// Where a node is and how to call it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The node's name (for messages).
    pub name: Arc<str>,
    /// The URL as written.
    pub url: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    /// Host for TLS SNI.
    pub host: String,
    /// TLS to the node.
    pub tls: bool,
    /// The router's own `uid:token` for the node, if any. Secret.
    pub credentials: Option<String>,
    /// Its `Authorization` value as sent.
    pub auth_header: Option<String>,
    /// With `tls`: how its certificate is verified (CA file, name).
    pub trust: NodeTls,
    /// The proxy's peer and `Authorization` value, built once (`NodeClient::proxy_peer`).
    pub proxy: ProxyParts,
}

/// What the proxy sends every request to this endpoint with, built on its first request
/// instead of on every one. An endpoint never changes once in use (a node whose URL,
/// credentials or TLS settings are edited gets a new endpoint, and with it new parts); a
/// clone starts empty, so a changed copy never keeps parts built from the original.
#[derive(Default)]
pub struct ProxyParts {
    /// The peer, for the connect and read timeouts it was built with.
    pub(crate) peer: std::sync::OnceLock<(
        std::time::Duration,
        std::time::Duration,
        pingora::upstreams::peer::HttpPeer,
    )>,
    /// `auth_header` as a header value.
    pub(crate) auth: std::sync::OnceLock<Option<http::HeaderValue>>,
}

impl Clone for ProxyParts {
    fn clone(&self) -> Self {
        ProxyParts::default()
    }
}

impl PartialEq for ProxyParts {
    /// A cache: endpoints are equal by what they say, not by what was built from them.
    fn eq(&self, _: &ProxyParts) -> bool {
        true
    }
}

impl Eq for ProxyParts {}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth header is a credential: only whether there is one.
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("addr", &self.addr)
            .field("auth", &self.auth_header.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint from a resolved URL and the node's `uid:token`, if any.
    pub fn new(name: &str, url: &str, target: NodeTarget, auth: Option<&str>) -> Endpoint {
        Endpoint {
            name: Arc::from(name),
            url: url.to_string(),
            addr: target.addr,
            authority: target.authority,
            host: target.host,
            tls: target.tls,
            credentials: auth.map(str::to_string),
            auth_header: auth.map(basic_header),
            trust: NodeTls::default(),
            proxy: ProxyParts::default(),
        }
    }

    /// The same endpoint with its certificate verified as `trust` says.
    pub fn with_tls(mut self, trust: NodeTls) -> Endpoint {
        self.trust = trust;
        self
    }

    /// The name the node's certificate must be valid for (also the SNI).
    pub fn tls_name(&self) -> &str {
        self.trust.tls_host.as_deref().unwrap_or(&self.host)
    }
}

/// A node URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The resolved address.
    pub addr: SocketAddr,
    /// `host:port` as written.
    pub authority: String,
    /// The host as written.
    pub host: String,
    /// `https`.
    pub tls: bool,
}

/// Parses `http[s]://host[:port][/]` and resolves the host (once, at start).
pub fn parse_node_url(url: &str) -> Result<NodeTarget, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("`{url}` must start with http:// or https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{url}` must be scheme://host:port with no path (TS3AudioBot serves its API at /api)"
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = split_host_port(authority, default_port)
        .ok_or_else(|| format!("`{url}` has a bad port"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    Ok(NodeTarget {
        addr,
        authority: authority.to_string(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        tls,
    })
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_node_url("http://[::1]:58913").expect("v6");
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority, "[::1]:58913");
        assert!(!t.tls);
        assert_eq!(
            parse_node_url("http://127.0.0.1")
                .expect("default port")
                .addr
                .port(),
            80
        );
        assert_eq!(
            parse_node_url("https://127.0.0.1/")
                .expect("https")
                .addr
                .port(),
            443
        );
        assert!(parse_node_url("ftp://x").is_err());
        assert!(parse_node_url("http://x/api").is_err());
        assert!(parse_node_url("http://127.0.0.1:x").is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let t = parse_node_url("http://127.0.0.1:1").expect("ok");
        let e = Endpoint::new("n", "http://127.0.0.1:1", t, Some("router:sekrit"));
        assert!(e
            .auth_header
            .as_deref()
            .is_some_and(|h| h.starts_with("Basic ")));
        assert!(!format!("{e:?}").contains("sekrit"));
        assert!(!format!("{e:?}").contains(e.auth_header.as_deref().unwrap_or("x")));
    }
}
