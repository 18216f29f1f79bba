//! Fuzz target `basic_auth`: the `Authorization` header parser (`protocol::basic_auth::parse`).
//!
//! Owns the properties checked on every input (an arbitrary header value):
//! - `parse` never panics;
//! - an accepted header splits the decoded credentials at their *first* colon: the user id holds
//!   no colon, and `uid ":" secret` is the decoded text again;
//! - the decoded text is what .NET's `Convert.FromBase64String` reads from the part after the
//!   scheme (checked against an independent decoder written here);
//! - parse → print round-trips: `basic_header` (the printer the router uses towards nodes) of
//!   credentials made from the input re-parses to exactly those credentials.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ts3ab_lb::protocol::basic_auth::{basic_header, parse, AuthError};

/// Standard base64 decoding as .NET does it, written independently of the `base64` crate:
/// whitespace removed by the caller, padding required (length a multiple of 4, at most two `=`
/// and only at the end), unused bits of the last character ignored.
fn dotnet_base64(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if s.len() % 4 != 0 {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &s[..s.len() - pad];
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);

    // The independent reading of the same header.
    let start = data.iter().position(|&b| b != b' ').unwrap_or(data.len());
    let t = &data[start..];
    let expect: Result<Vec<u8>, AuthError> = match t.iter().position(|&b| b == b' ') {
        None => Err(AuthError::Failed),
        Some(sp) => {
            let rest = &t[sp..];
            let rest = &rest[rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())..];
            if rest.is_empty() {
                Err(AuthError::Failed)
            } else if !t[..sp].eq_ignore_ascii_case(b"basic") {
                Err(AuthError::UnsupportedScheme)
            } else {
                let compact: Vec<u8> = rest
                    .iter()
                    .copied()
                    .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .collect();
                match dotnet_base64(&compact) {
                    None => Err(AuthError::MalformedBase64),
                    Some(d) if !d.contains(&b':') => Err(AuthError::Failed),
                    Some(d) => Ok(d),
                }
            }
        }
    };
    match (&parsed, &expect) {
        (Ok(c), Ok(decoded)) => {
            assert!(!c.uid().contains(&b':'), "uid holds a colon");
            let mut joined = c.uid().to_vec();
            joined.push(b':');
            joined.extend_from_slice(c.secret());
            assert_eq!(&joined, decoded, "credentials are not the decoded text");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "different refusal"),
        _ => panic!("parse gave {parsed:?}, the .NET reading {expect:?}"),
    }

    // Print → parse: credentials made of the input (split at its first colon, as a key name
    // never holds one) survive the router's own header encoding.
    let text = String::from_utf8_lossy(data);
    let (uid, secret) = text.split_once(':').unwrap_or((&text, ""));
    let header = basic_header(&format!("{uid}:{secret}"));
    let again = parse(header.as_bytes()).expect("the router's own header is refused");
    assert_eq!(again.uid(), uid.as_bytes());
    assert_eq!(again.secret(), secret.as_bytes());
});
