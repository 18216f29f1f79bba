//! `ts3ab-lb cert self-signed`: a certificate and key for trying HTTPS locally.
//!
//! Owns: generating a self-signed pair for the given host names (ECDSA P-256, 1 year) and
//! writing it as PEM, the key readable by its owner only and never over an existing file.
//! Does not own: serving it (`server::tls`) or real certificates (Let's Encrypt, see README).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How long a generated certificate is valid.
pub const VALID_DAYS: i64 = 365;

/// Where a pair was written.
#[derive(Debug)]
pub struct Written {
    /// The certificate (`cert.pem`).
    pub cert: PathBuf,
    /// The private key (`key.pem`, mode 0600).
    pub key: PathBuf,
}

/// Generates a self-signed certificate for `hosts` (names or IP addresses; the first is
/// also the common name) and writes `cert.pem` and `key.pem` into `out` (created, 0700,
/// if missing). Refuses to replace existing files.
pub fn self_signed(hosts: &[String], out: &Path) -> Result<Written, String> {
    let first = hosts.first().ok_or("give at least one --host")?;
    let mut params =
        rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| format!("--host: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, first.as_str());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(VALID_DAYS);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make the certificate: {e}"))?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let written = Written {
        cert: out.join("cert.pem"),
        key: out.join("key.pem"),
    };
    for p in [&written.cert, &written.key] {
        if p.exists() {
            return Err(format!(
                "{} exists; move it away first (it may be a real certificate or key)",
                p.display()
            ));
        }
    }
    write_new(&written.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&written.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(written)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    // `create_new` with the mode: the key is never readable by others, not even briefly.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_pair_the_listener_accepts() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("tls");
        let w = self_signed(&["router.test".into(), "127.0.0.1".into()], &out).expect("pair");
        let mode = std::fs::metadata(&w.key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let files = crate::config::TlsFiles {
            cert: w.cert.display().to_string(),
            key: w.key.display().to_string(),
        };
        crate::config::tls::load_pair(&files, &|p| std::fs::read(p)).expect("loads");
        // Never over an existing pair.
        let again = self_signed(&["router.test".into()], &out).expect_err("exists");
        assert!(again.contains("exists"), "{again}");
        assert!(self_signed(&[], &out).is_err());
    }
}
