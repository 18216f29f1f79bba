//! The TLS files a listener serves: a certificate chain and its private key, as PEM files.
//!
//! Owns: reading and checking a pair (both files readable, PEM, the key parses and matches
//! the leaf certificate) into the rustls [`CertifiedKey`] a handshake uses, with errors that
//! name the field at fault. The config check and the listener's renewal use the same
//! function, so a pair the router refuses at start is refused the same way when renewed.
//! Does not own: serving or renewing (`server::tls`).

use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;

use super::FieldError;

/// Reads a file (`std::fs::read` in production; tests pass their own).
pub type ReadFile<'a> = &'a dyn Fn(&str) -> std::io::Result<Vec<u8>>;

/// A listener's certificate chain and key, as PEM file paths (`tls: {cert, key}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (Let's Encrypt's `fullchain.pem`).
    pub cert: String,
    /// The private key (`privkey.pem`).
    pub key: String,
}

fn bad(field: &'static str, message: String) -> FieldError {
    FieldError { field, message }
}

/// Reads and checks the pair.
pub fn load_pair(files: &TlsFiles, read: ReadFile<'_>) -> Result<Arc<CertifiedKey>, FieldError> {
    let cert_pem =
        read(&files.cert).map_err(|e| bad("cert", format!("cannot read `{}`: {e}", files.cert)))?;
    let key_pem =
        read(&files.key).map_err(|e| bad("key", format!("cannot read `{}`: {e}", files.key)))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cert", format!("`{}` is not PEM: {e}", files.cert)))?;
    if chain.is_empty() {
        return Err(bad(
            "cert",
            format!(
                "`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                files.cert
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        bad(
            "key",
            format!("`{}` holds no PEM private key: {e}", files.key),
        )
    })?;
    // rustls wants a process-wide provider; Pingora installs the same one (ring).
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| bad("key", "no TLS crypto provider is installed".into()))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        let message = match e {
            pingora::tls::RusTlsError::InconsistentKeys(_) => format!(
                "`{}` is not the key of the certificate in `{}`",
                files.key, files.cert
            ),
            other => format!("`{}` cannot be used: {other}", files.key),
        };
        bad("key", message)
    })?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["router.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn load(files: &HashMap<&str, String>) -> Result<Arc<CertifiedKey>, FieldError> {
        let read = |p: &str| {
            files
                .get(p)
                .map(|s| s.clone().into_bytes())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        load_pair(
            &TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            },
            &read,
        )
    }

    #[test]
    fn pairs_are_checked() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let ok = HashMap::from([("c.pem", cert.clone()), ("k.pem", key.clone())]);
        assert!(load(&ok).is_ok());
        let missing = HashMap::from([("c.pem", cert.clone())]);
        let e = load(&missing).expect_err("no key");
        assert_eq!(e.field, "key");
        assert!(e.message.contains("cannot read `k.pem`"), "{e}");
        let not_pem = HashMap::from([("c.pem", "hello".to_string()), ("k.pem", key.clone())]);
        let e = load(&not_pem).expect_err("not pem");
        assert_eq!(e.field, "cert");
        assert!(e.message.contains("no PEM certificate"), "{e}");
        let key_as_cert = HashMap::from([("c.pem", cert.clone()), ("k.pem", cert.clone())]);
        assert_eq!(load(&key_as_cert).expect_err("cert as key").field, "key");
        let mismatch = HashMap::from([("c.pem", cert), ("k.pem", other_key)]);
        let e = load(&mismatch).expect_err("mismatch");
        assert_eq!(e.field, "key");
        assert!(
            e.message.contains("is not the key of the certificate"),
            "{e}"
        );
    }
}
