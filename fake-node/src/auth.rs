//! The `Authorization` header check of TS3AudioBot's `WebApi.Authenticate`.
//!
//! Owns: the scheme split, .NET `Convert.FromBase64String` strictness (whitespace ignored,
//! padding required), the uid/token split at the first `:`, and the four exact messages.
//! Does not own: what an authenticated caller may do (`exec::Caller`), or the 401 body.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

const AUTH_FAILED: &str = "Authentication failed";

/// .NET's decoder: canonical padding required, stray trailing bits tolerated.
const DOTNET_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Checks a header value against the configured `uid:token`. `Ok(true)` = authenticated.
/// No header is handled by the caller (anonymous).
pub fn check(header: &str, configured: Option<(&str, &str)>) -> Result<(), &'static str> {
    let header = header.trim();
    let Some((scheme, rest)) = header.split_once(' ') else {
        return Err(AUTH_FAILED);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("Unsupported authentication scheme");
    }
    let compact: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    if !compact.len().is_multiple_of(4) {
        return Err("Malformed base64 string");
    }
    let data = DOTNET_B64
        .decode(compact.as_bytes())
        .map_err(|_| "Malformed base64 string")?;
    let Some(colon) = data.iter().position(|&b| b == b':') else {
        return Err(AUTH_FAILED);
    };
    let uid = String::from_utf8_lossy(&data[..colon]);
    let token = String::from_utf8_lossy(&data[colon + 1..]);
    match configured {
        Some((u, t)) if u == uid => {
            if t == token {
                Ok(())
            } else {
                Err(AUTH_FAILED)
            }
        }
        _ => Err("Unknown user or no active token found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn messages_match_ts3audiobot() {
        let cfg = Some(("uid", "tok"));
        assert_eq!(check(&format!("Basic {}", b64("uid:tok")), cfg), Ok(()));
        assert_eq!(check(&format!("bAsIc {}", b64("uid:tok")), cfg), Ok(()));
        assert_eq!(
            check(&format!("Basic {}", b64("uid:bad")), cfg),
            Err("Authentication failed")
        );
        assert_eq!(
            check(&format!("Basic {}", b64("other:tok")), cfg),
            Err("Unknown user or no active token found")
        );
        assert_eq!(
            check(&format!("Basic {}", b64("uid:tok")), None),
            Err("Unknown user or no active token found")
        );
        assert_eq!(
            check(&format!("Basic {}", b64("nocolon")), cfg),
            Err("Authentication failed")
        );
        assert_eq!(check("Basic", cfg), Err("Authentication failed"));
        assert_eq!(
            check("Bearer abc", cfg),
            Err("Unsupported authentication scheme")
        );
        assert_eq!(check("Basic dWlk", cfg), Err("Authentication failed"));
        assert_eq!(
            check("Basic dWlkOnRvaw", cfg),
            Err("Malformed base64 string")
        );
        assert_eq!(check("Basic !!!!", cfg), Err("Malformed base64 string"));
        // Whitespace inside the base64 text is ignored, as .NET does.
        let spaced = b64("uid:tok");
        assert_eq!(
            check(&format!("Basic {} {}", &spaced[..4], &spaced[4..]), cfg),
            Ok(())
        );
    }
}
