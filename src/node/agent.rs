//! Reading a node agent's `/summary` (`ts3ab-lb-agent`, see `agent/README.md`).
//!
//! Owns: the agent's endpoint as the router calls it ([`AgentEndpoint`]: address, TLS, the
//! `Authorization: Bearer` value, never shown in Debug output), the router's own reading of
//! the summary JSON ([`AgentSummary`]: only the fields it uses, unknown fields ignored, a
//! `null` or out-of-range figure taken as missing) and one bounded `GET /summary`
//! ([`read_summary`]). The router does not depend on the agent crate: the two share only the
//! documented JSON.
//! Does not own: when agents are read or what the figures mean for placement (`cluster`).

use serde::Deserialize;

use crate::node::client::{NodeClient, NodeError};
use crate::node::endpoint::{Endpoint, NodeTarget};

/// A summary is a few hundred bytes; anything much larger is not an agent.
const MAX_SUMMARY: usize = 64 * 1024;

/// Why an agent's summary could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Not reached, cut off or too slow.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// It answered with an error status (401: the token is wrong or missing).
    #[error("agent of node {node} answered {status}")]
    Status {
        /// The node whose agent it is.
        node: String,
        /// The HTTP status.
        status: u16,
    },
    /// The answer is not a summary.
    #[error("agent of node {node} sent no summary: {reason}")]
    Body {
        /// The node whose agent it is.
        node: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a node's agent is and how the router authenticates to it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The node whose agent it is (for messages).
    node: String,
    /// The endpoint the node client calls (its `auth_header` is `Bearer <token>`).
    endpoint: Endpoint,
}

impl std::fmt::Debug for AgentEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Endpoint`'s own Debug already leaves the header out.
        f.debug_struct("AgentEndpoint")
            .field("node", &self.node)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl AgentEndpoint {
    /// The endpoint of node `node`'s agent at `url` (checked and resolved by the config's
    /// `AgentConfig::parse`), with its bearer token.
    pub fn new(node: &str, url: &str, target: NodeTarget, token: Option<&str>) -> AgentEndpoint {
        // The client's messages name the endpoint: "node n1/agent did not answer ...".
        let mut endpoint = Endpoint::new(&format!("{node}/agent"), url, target, None);
        endpoint.auth_header = token.map(|t| format!("Bearer {t}"));
        endpoint.credentials = token.map(str::to_string);
        AgentEndpoint {
            node: node.to_string(),
            endpoint,
        }
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// The bearer token, if any. Secret.
    pub fn token(&self) -> Option<&str> {
        self.endpoint.credentials.as_deref()
    }
}

/// The figures of an agent's summary the router uses or shows. Every figure is optional: the
/// agent sends `null` for what it could not read, and a ratio outside 0-1 (or a negative
/// load) is taken as missing rather than trusted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AgentSummary {
    /// Busy share of all host CPU time over the agent's last sampling interval (0-1).
    pub cpu_busy_ratio: Option<f64>,
    /// CPUs of the host.
    pub cpu_count: Option<u64>,
    /// `MemAvailable / MemTotal` (0-1).
    pub memory_available_ratio: Option<f64>,
    /// `MemTotal`, bytes.
    pub memory_total_bytes: Option<u64>,
    /// 1-minute load average.
    pub load1: Option<f64>,
    /// Whether the TS3AudioBot process was found.
    pub process_up: Option<bool>,
    /// The TS3AudioBot process's share of all host CPU time (0-1).
    pub process_cpu_ratio: Option<f64>,
    /// Whether the TS3AudioBot API answered the agent.
    pub api_up: Option<bool>,
    /// When the agent read its values, by the agent's clock (shown, never used for
    /// staleness: the router goes by when it received the summary).
    pub at_ms: Option<u64>,
    /// The agent's version.
    pub version: Option<String>,
}

impl AgentSummary {
    /// Parses a summary body; a figure out of its range becomes `None`.
    pub fn parse(body: &[u8]) -> Result<AgentSummary, String> {
        // Serde would also fill the struct from an array; a summary is an object.
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let mut s: AgentSummary = serde_json::from_value(v).map_err(|e| e.to_string())?;
        let ratio = |v: Option<f64>| v.filter(|x| (0.0..=1.0).contains(x));
        s.cpu_busy_ratio = ratio(s.cpu_busy_ratio);
        s.memory_available_ratio = ratio(s.memory_available_ratio);
        s.process_cpu_ratio = ratio(s.process_cpu_ratio);
        s.load1 = s.load1.filter(|x| x.is_finite() && *x >= 0.0);
        if let Some(v) = &mut s.version {
            // At most 64 bytes, cut on a character boundary (a cut inside one panics).
            let cut = (0..=v.len().min(64))
                .rev()
                .find(|i| v.is_char_boundary(*i))
                .unwrap_or(0);
            v.truncate(cut);
        }
        Ok(s)
    }
}

/// Reads one agent's `/summary` within `deadline`.
pub async fn read_summary(
    client: &NodeClient,
    agent: &AgentEndpoint,
    deadline: std::time::Duration,
) -> Result<AgentSummary, AgentError> {
    let node = || agent.node.clone();
    let r = client.get(&agent.endpoint, b"/summary", deadline).await?;
    if !r.ok() {
        return Err(AgentError::Status {
            node: node(),
            status: r.status,
        });
    }
    if r.body.len() > MAX_SUMMARY {
        return Err(AgentError::Body {
            node: node(),
            reason: format!("{} bytes", r.body.len()),
        });
    }
    AgentSummary::parse(&r.body).map_err(|reason| AgentError::Body {
        node: node(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_version_is_cut_on_a_character_boundary() {
        // 2 + 21 × 3 = 65 bytes: byte 64 falls inside the last euro sign.
        let version = format!("ab{}", "€".repeat(21));
        let body = serde_json::json!({ "version": version }).to_string();
        let s = AgentSummary::parse(body.as_bytes()).expect("summary");
        let v = s.version.expect("version");
        assert!(v.len() <= 64, "{}", v.len());
        assert!(version.starts_with(&v));
    }

    #[test]
    fn summaries_are_read_leniently() {
        let s = AgentSummary::parse(
            br#"{"cpu_busy_ratio":0.12,"cpu_count":4,"memory_total_bytes":8589934592,
                 "memory_available_bytes":5411658752,"memory_available_ratio":0.63,"load1":0.4,
                 "load5":0.3,"load15":0.2,"process_up":true,"process_cpu_ratio":0.05,
                 "process_resident_bytes":134217728,"api_up":true,
                 "bots":{"offline":0,"connecting":1,"connected":5},"at_ms":1764590000000,
                 "version":"0.1.0","added_later":{"x":[1]}}"#,
        )
        .expect("summary");
        assert_eq!(s.cpu_busy_ratio, Some(0.12));
        assert_eq!(s.memory_available_ratio, Some(0.63));
        assert_eq!(s.cpu_count, Some(4));
        assert_eq!(s.process_up, Some(true));
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        // Nulls, missing fields and nonsense values are missing figures.
        let s = AgentSummary::parse(
            br#"{"cpu_busy_ratio":null,"memory_available_ratio":1.5,"load1":-1,"process_up":false}"#,
        )
        .expect("summary");
        assert_eq!(s.cpu_busy_ratio, None);
        assert_eq!(s.memory_available_ratio, None);
        assert_eq!(s.load1, None);
        assert_eq!(s.process_up, Some(false));
        assert_eq!(s.at_ms, None);
        assert!(AgentSummary::parse(b"[1,2]").is_err());
        assert!(AgentSummary::parse(b"<html>").is_err());
        assert!(AgentSummary::parse(br#"{"cpu_busy_ratio":"high"}"#).is_err());
    }

    #[test]
    fn the_token_is_a_bearer_header_and_never_in_debug_output() {
        let url = "http://127.0.0.1:58915";
        let target = crate::node::endpoint::parse_node_url(url).expect("url");
        let a = AgentEndpoint::new("n1", url, target.clone(), Some("agent-s3cret"));
        assert_eq!(
            a.endpoint.auth_header.as_deref(),
            Some("Bearer agent-s3cret")
        );
        assert_eq!(a.token(), Some("agent-s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));
        let none = AgentEndpoint::new("n1", url, target, None);
        assert_eq!(none.endpoint.auth_header, None);
    }
}
