//! Basic authentication as TS3AudioBot parses it, and the texts it answers with.
//!
//! Owns: splitting an `Authorization` value into user id and secret with TS3AudioBot's exact
//! rules (.NET base64, spaces, the first colon) and failure texts, and encoding `uid:token`
//! for requests the router sends. Does not own: which keys exist or what they may do
//! (`proxy::keys`, `proxy::policy`).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

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

/// .NET's `Convert.FromBase64String`: padding required, whitespace ignored, lenient about the
/// unused bits of the last character.
const DOTNET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Decoded Basic credentials (one buffer, split at the first colon: no copy per half).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    decoded: Vec<u8>,
    colon: usize,
}

impl Credentials {
    /// Everything before the first colon (TS3AudioBot's user id; the router's key name).
    pub fn uid(&self) -> &[u8] {
        &self.decoded[..self.colon]
    }

    /// Everything after it.
    pub fn secret(&self) -> &[u8] {
        &self.decoded[self.colon + 1..]
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Credentials")
            .field("uid", &String::from_utf8_lossy(self.uid()))
            .finish_non_exhaustive()
    }
}

/// Splits a Basic `Authorization` value into user id and secret, following TS3AudioBot's
/// `WebApi.Authenticate` step by step (which failure gives which text is part of the API).
pub fn parse(header: &[u8]) -> Result<Credentials, AuthError> {
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
    Ok(Credentials { decoded, colon })
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
