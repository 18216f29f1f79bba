//! TLS to a node: which certificate authorities the router trusts for it, the name its
//! certificate must carry, and a refused handshake in words.
//!
//! Owns: reading a node's `ca_file` (PEM certificates, checked once when the node is
//! configured), the [`CaCerts`] Pingora's connector verifies the node against, and turning
//! rustls' handshake errors into a reason an operator can act on. Does not own: the
//! connection itself (`client`, Pingora) or what a failure does to the node (`cluster`).
//!
//! There is no switch that turns verification off and no plain-text fallback: an `https://`
//! node whose certificate is refused is unreachable, and says why.

use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::tls::{CertificateDer, RootCertStore};
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls_pki_types::pem::PemObject;

/// The certificate authorities one node's certificate must chain to (instead of the system
/// roots), as Pingora's per-peer `ca` wants them.
#[derive(Clone)]
pub struct CaCerts {
    /// The certificates.
    pub certs: Arc<CaType>,
    /// A digest of them: Pingora's connection pool does not tell peers apart by their CA, so
    /// this goes in the peer's `group_key` (a connection verified against an old CA file is
    /// never handed out after the node's CA changed).
    pub pool_key: u64,
}

impl PartialEq for CaCerts {
    fn eq(&self, other: &Self) -> bool {
        self.certs.len() == other.certs.len()
            && self
                .certs
                .iter()
                .zip(other.certs.iter())
                .all(|(a, b)| a.borrow_raw_cert() == b.borrow_raw_cert())
    }
}

impl Eq for CaCerts {}

impl std::fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaCerts({} certificates)", self.certs.len())
    }
}

/// How one node's certificate is verified: against the system roots or its own CA file,
/// for the URL's host or another name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTls {
    /// The CA file as configured.
    pub ca_file: Option<String>,
    /// Its certificates, read when the node was configured (None: the system roots).
    pub ca: Option<CaCerts>,
    /// The name the certificate must be valid for (and the SNI), when not the URL's host.
    pub tls_host: Option<String>,
}

impl NodeTls {
    /// Checks and reads a node's TLS settings; `read` reads a file (`std::fs::read` in
    /// production). The error names the field.
    pub fn load(
        ca_file: Option<String>,
        tls_host: Option<String>,
        read: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<NodeTls, (&'static str, String)> {
        if let Some(h) = &tls_host {
            if pingora::tls::ServerName::try_from(h.as_str()).is_err() {
                return Err((
                    "tls_host",
                    format!("`{h}` is not a host name or IP address"),
                ));
            }
        }
        let ca = match &ca_file {
            None => None,
            Some(path) => {
                let pem =
                    read(path).map_err(|e| ("ca_file", format!("cannot read `{path}`: {e}")))?;
                Some(ca_from_pem(&pem).map_err(|e| ("ca_file", format!("`{path}` {e}")))?)
            }
        };
        Ok(NodeTls {
            ca_file,
            ca,
            tls_host,
        })
    }
}

/// PEM text → the certificates in it, each checked to parse as X.509 (Pingora's wrapper
/// would panic on one that does not).
pub fn ca_from_pem(pem: &[u8]) -> Result<CaCerts, String> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| format!("is not PEM: {e}"))?;
        // The same parser rustls verifies with: a certificate it cannot use as an anchor is
        // refused here rather than at every handshake.
        RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| format!("holds a certificate that cannot be a trust anchor: {e}"))?;
        certs.push(der.to_vec());
    }
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&certs, &mut hasher);
    let pool_key = std::hash::Hasher::finish(&hasher);
    let wrapped = certs
        .into_iter()
        .map(wrap)
        .collect::<Option<Vec<WrappedX509>>>()
        .ok_or("holds a certificate Pingora cannot parse")?;
    Ok(CaCerts {
        certs: Arc::from(wrapped.into_boxed_slice()),
        pool_key,
    })
}

/// Pingora's wrapper around a DER certificate. Its parser panics on what it cannot read (a
/// certificate webpki accepted but x509-parser does not): caught here, so a strange file is
/// an error at configuration and never a panic later.
pub fn wrap(der: Vec<u8>) -> Option<WrappedX509> {
    std::panic::catch_unwind(move || WrappedX509::new(der, parse_x509)).ok()
}

/// A failed TLS handshake with a node in words (`None`: the error is not about TLS).
/// `text` is Pingora's error text, which carries rustls' own detail (expected and presented
/// names, expiry times), kept in brackets.
pub fn refusal_words(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !(lower.contains("tls") || lower.contains("certificate")) {
        return None;
    }
    let gist = if lower.contains("not valid for name") || lower.contains("notvalidforname") {
        "its certificate is not valid for the host name the router connects to (the URL's host, or `tls_host`)"
    } else if lower.contains("expired") {
        "its certificate has expired"
    } else if lower.contains("not valid yet") || lower.contains("notvalidyet") {
        "its certificate is not valid yet"
    } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        "its certificate is signed by an authority the router does not trust (set the node's `ca_file`, or use a certificate the system trusts)"
    } else if lower.contains("badsignature") || lower.contains("bad signature") {
        "its certificate has a bad signature"
    } else if lower.contains("revoked") {
        "its certificate is revoked"
    } else if lower.contains("invalid peer certificate") || lower.contains("certificate") {
        "its certificate was refused"
    } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        "the TLS handshake failed: the node does not speak TLS on that port (plain HTTP? then use an http:// URL)"
    } else {
        "the TLS handshake failed"
    };
    let detail = text
        .split_once("TLS connect() failed: ")
        .map(|(_, d)| d.split(", SNI:").next().unwrap_or(d))
        .unwrap_or(text)
        .trim();
    Some(format!("TLS: {gist} ({detail})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_in_words() {
        let name = "TLSHandshakeFailure context: TLS connect() failed: invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"other.example\"), SNI: 127.0.0.1";
        let w = refusal_words(name).expect("tls");
        assert!(
            w.starts_with("TLS: its certificate is not valid for the host name"),
            "{w}"
        );
        assert!(w.contains("other.example") && !w.contains("SNI:"), "{w}");
        let exp = "TLS connect() failed: invalid peer certificate: certificate expired: verification time 1 (UNIX), but certificate is not valid after 0 (1 seconds ago)";
        assert!(refusal_words(exp).expect("tls").contains("has expired"));
        let ca = "TLS connect() failed: invalid peer certificate: UnknownIssuer, SNI: x";
        assert!(refusal_words(ca).expect("tls").contains("`ca_file`"));
        assert_eq!(refusal_words("Connection refused (os error 111)"), None);
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        assert!(ca_from_pem(b"").unwrap_err().contains("no PEM certificate"));
        assert!(ca_from_pem(b"hello")
            .unwrap_err()
            .contains("no PEM certificate"));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ca_from_pem(garbage).is_err());
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["ca.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let got = ca_from_pem(ca.pem().as_bytes()).expect("ca");
        assert_eq!(got.certs.len(), 1);
        assert_eq!(got, ca_from_pem(ca.pem().as_bytes()).expect("again"));
    }
}
