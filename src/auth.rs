//! Client authentication with router-issued keys.
//!
//! Owns: the key table (name → secret, role) and checking a request's `Authorization` header
//! the way TS3AudioBot checks its own tokens, with TS3AudioBot's four failure texts. Secrets are
//! compared in constant time. Does not own: what a role may do (`policy`) or the node-side
//! credentials (`cluster`).

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::config::{KeyConfig, Role};

/// TS3AudioBot's texts for the four ways authentication fails (all HTTP 401).
pub const ERR_AUTH_FAILED: &str = "Authentication failed";
/// Non-Basic scheme.
pub const ERR_UNSUPPORTED_SCHEME: &str = "Unsupported authentication scheme";
/// Undecodable credentials.
pub const ERR_MALFORMED_BASE64: &str = "Malformed base64 string";
/// No such key.
pub const ERR_UNKNOWN_USER: &str = "Unknown user or no active token found";
/// TS3AudioBot's text when anonymous requests are not allowed.
pub const ERR_ANONYMOUS_DISABLED: &str = "This bot does not allow anonymous api requests";

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No space, no `:` or a wrong secret.
    #[error("{}", ERR_AUTH_FAILED)]
    Failed,
    /// Scheme other than Basic.
    #[error("{}", ERR_UNSUPPORTED_SCHEME)]
    UnsupportedScheme,
    /// Bad base64.
    #[error("{}", ERR_MALFORMED_BASE64)]
    MalformedBase64,
    /// Unknown key name.
    #[error("{}", ERR_UNKNOWN_USER)]
    UnknownUser,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A configured key.
    Key {
        /// The key name.
        name: Arc<str>,
        /// Its role.
        role: Role,
    },
}

impl Caller {
    /// Whether the caller holds an admin key.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Caller::Key {
                role: Role::Admin,
                ..
            }
        )
    }
}

/// The keys, by name.
#[derive(Debug, Default)]
pub struct KeyTable {
    /// name → (name, digest of the secret, role). Only digests are compared, so the time a
    /// comparison takes says nothing about the secret's length or content.
    keys: HashMap<String, (Arc<str>, [u8; 32], Role)>,
}

/// .NET's `Convert.FromBase64String`: padding required, whitespace ignored, lenient about the
/// unused bits of the last character.
const DOTNET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// A fixed-length digest of a secret (BLAKE2s-256), compared in constant time.
fn digest(secret: &[u8]) -> [u8; 32] {
    use blake2::Digest;
    blake2::Blake2s256::digest(secret).into()
}

impl KeyTable {
    /// Builds the table from configured keys.
    pub fn new(keys: &[KeyConfig]) -> Self {
        KeyTable {
            keys: keys
                .iter()
                .map(|k| {
                    (
                        k.name.clone(),
                        (
                            Arc::from(k.name.as_str()),
                            digest(k.secret.as_bytes()),
                            k.role,
                        ),
                    )
                })
                .collect(),
        }
    }

    /// Checks an `Authorization` header value (None when the header is absent), following
    /// TS3AudioBot's `WebApi.Authenticate` step by step.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, AuthError> {
        let Some(header) = header else {
            return Ok(Caller::Anonymous);
        };
        // Split on spaces into at most two non-empty parts.
        let trimmed = trim_start_spaces(header);
        let Some(space) = trimmed.iter().position(|&b| b == b' ') else {
            return Err(AuthError::Failed);
        };
        let (scheme, rest) = (&trimmed[..space], trim_start_spaces(&trimmed[space..]));
        if rest.is_empty() {
            return Err(AuthError::Failed);
        }
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return Err(AuthError::UnsupportedScheme);
        }
        let compact: Vec<u8> = rest
            .iter()
            .copied()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .collect();
        let decoded = DOTNET_BASE64
            .decode(&compact)
            .map_err(|_| AuthError::MalformedBase64)?;
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Err(AuthError::Failed);
        };
        let uid = String::from_utf8_lossy(&decoded[..colon]);
        let secret = &decoded[colon + 1..];
        let Some((name, expected, role)) = self.keys.get(uid.as_ref()) else {
            return Err(AuthError::UnknownUser);
        };
        if bool::from(expected.as_slice().ct_eq(digest(secret).as_slice())) {
            Ok(Caller::Key {
                name: name.clone(),
                role: *role,
            })
        } else {
            Err(AuthError::Failed)
        }
    }
}

fn trim_start_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    &b[start..]
}

/// Encodes `uid:token` as a Basic `Authorization` value (used towards nodes).
pub fn basic_header(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> KeyTable {
        KeyTable::new(&[
            KeyConfig {
                name: "alice".into(),
                secret: "alice-secret".into(),
                role: Role::User,
            },
            KeyConfig {
                name: "ops".into(),
                secret: "ops-secret".into(),
                role: Role::Admin,
            },
        ])
    }

    fn check(h: &str) -> Result<Caller, AuthError> {
        table().authenticate(Some(h.as_bytes()))
    }

    #[test]
    fn good_keys() {
        let c = check(&basic_header("alice:alice-secret")).expect("ok");
        assert!(matches!(
            c,
            Caller::Key {
                role: Role::User,
                ..
            }
        ));
        assert!(check(&basic_header("ops:ops-secret"))
            .expect("ok")
            .is_admin());
        // Scheme is case-insensitive, extra spaces are tolerated, base64 whitespace is ignored.
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:alice-secret");
        assert!(check(&format!("bAsIc   {b64}")).is_ok());
        let (a, b) = b64.split_at(4);
        assert!(check(&format!("Basic {a} {b}")).is_ok());
    }

    #[test]
    fn anonymous_without_header() {
        assert_eq!(table().authenticate(None), Ok(Caller::Anonymous));
    }

    #[test]
    fn the_four_failures() {
        assert_eq!(check(&basic_header("alice:wrong")), Err(AuthError::Failed));
        assert_eq!(check("Basic"), Err(AuthError::Failed));
        assert_eq!(check(""), Err(AuthError::Failed));
        assert_eq!(check("Basic "), Err(AuthError::Failed));
        assert_eq!(check(&basic_header("no-colon")), Err(AuthError::Failed));
        assert_eq!(check("Bearer abc"), Err(AuthError::UnsupportedScheme));
        assert_eq!(check("Basic !!!"), Err(AuthError::MalformedBase64));
        assert_eq!(check("Basic YWJj"), Err(AuthError::Failed)); // "abc": no colon
        assert_eq!(check("Basic YWJ"), Err(AuthError::MalformedBase64)); // unpadded
        assert_eq!(
            check(&basic_header("mallory:x")),
            Err(AuthError::UnknownUser)
        );
        // The secret is everything after the first colon.
        assert_eq!(
            check(&basic_header("alice:alice-secret:x")),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn secret_prefix_does_not_pass() {
        assert_eq!(
            check(&basic_header("alice:alice-secre")),
            Err(AuthError::Failed)
        );
        assert_eq!(check(&basic_header("alice:")), Err(AuthError::Failed));
    }
}
