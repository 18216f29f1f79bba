//! Errors in the operator's terms, and keeping the URI's secrets out of them.
//!
//! Owns: what an open failure says (a bad URI, an unreachable `host:port`, refused
//! credentials), the write errors of a raw write command's reply, telling a duplicate key
//! apart, MongoDB's database name rules, and redacting the URI. Does not own: which errors
//! count as an outage for a running store (`MongoStore::fail`).

use bson::Document;
use mongodb::error::{ErrorKind, WriteFailure};

use super::docs::int;
use super::DUPLICATE_KEY;
use crate::store::StoreError;

pub(super) fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Fails on the write errors (and the write concern error) of a write command's reply.
/// MongoDB error codes for a write that can never succeed as it is: BadValue (2),
/// FailedToParse (9), DocumentValidationFailure (121), BSONObjectTooLarge (10334),
/// KeyTooLong (17280), InvalidBSON (22), DollarPrefixedFieldName (52), EmptyFieldName (56),
/// DottedFieldName (57).
const REFUSED_FOR_GOOD: [i64; 9] = [2, 9, 22, 52, 56, 57, 121, 10334, 17280];

pub(super) fn check_write_reply(
    reply: &Document,
    what: &str,
    hosts: &str,
    dup_ok: bool,
) -> Result<(), StoreError> {
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors {
            let Some(e) = e.as_document() else { continue };
            let code = int(e, "code").unwrap_or(0);
            if dup_ok && code == i64::from(DUPLICATE_KEY) {
                continue;
            }
            let text = format!(
                "MongoDB refused a {what} (error {code}): {}",
                e.get_str("errmsg").unwrap_or("")
            );
            // Refusals no retry can change (a bad value, too large, failing validation)
            // versus those a retry may clear (a primary stepping down, an interrupted
            // write, a time limit): only the first kind is dropped by the store worker.
            return Err(if REFUSED_FOR_GOOD.contains(&code) {
                StoreError::Refused(text)
            } else {
                StoreError::Io(text)
            });
        }
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        // Written on the primary, not (yet) on a majority: not durable, so an outage.
        return Err(StoreError::Unavailable(format!(
            "MongoDB at {hosts} did not confirm a {what} on a majority: {}",
            wce.get_str("errmsg").unwrap_or("")
        )));
    }
    Ok(())
}

/// The open error for a failed first call, in the operator's terms.
pub(super) fn describe_open_failure(
    e: &mongodb::error::Error,
    hosts: &str,
    user: Option<&str>,
    redactor: &Redactor,
) -> String {
    let text = redactor.scrub(&error_text(e));
    let who = user.map_or_else(String::new, |u| format!(" of user {u}"));
    match &*e.kind {
        ErrorKind::Authentication { .. } => {
            format!("MongoDB refused the credentials{who}: {text}")
        }
        // 18: AuthenticationFailed; 13: Unauthorized (the user may not use this database).
        ErrorKind::Command(c) if c.code == 18 => {
            format!("MongoDB refused the credentials{who}: {text}")
        }
        ErrorKind::Command(c) if c.code == 13 => {
            format!("MongoDB does not let the user{who} use this database: {text}")
        }
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => {
            format!("cannot reach MongoDB at {hosts}: {text}")
        }
        _ => format!("MongoDB at {hosts} failed: {text}"),
    }
}

/// The driver error's own words: its kind (the error's Display adds the labels and an empty
/// source chain, noise for an operator).
pub(super) fn error_text(e: &mongodb::error::Error) -> String {
    e.kind.to_string()
}

/// Why a database name cannot be used (MongoDB's rules), if it cannot.
pub(super) fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "the database name {name:?} is longer than 63 bytes"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
    {
        return Err(format!("the database name {name:?} may not contain {c:?}"));
    }
    Ok(())
}

/// Keeps the secrets of a connection URI out of messages: the password of its user info and
/// the values of options that carry secrets.
pub(super) struct Redactor {
    shown: String,
    secrets: Vec<String>,
}

/// URI options whose values are secrets.
const SECRET_OPTIONS: [&str; 3] = [
    "tlscertificatekeyfilepassword",
    "authmechanismproperties",
    "password",
];

impl Redactor {
    pub(super) fn new(uri: &str) -> Redactor {
        let mut secrets = Vec::new();
        let (scheme, rest) = match uri.split_once("://") {
            Some((s, r)) => (format!("{s}://"), r),
            None => (String::new(), uri),
        };
        // The user info ends at the last '@' before the path: a password must encode '@'
        // and '/', so neither splits it.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, password)) => {
                    if !password.is_empty() {
                        secrets.push(password.to_string());
                        let decoded = percent_decode(password);
                        if decoded != password {
                            secrets.push(decoded);
                        }
                    }
                    format!("{user}:***@{hosts}")
                }
                None => format!("{userinfo}@{hosts}"),
            },
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v))
                            if SECRET_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) =>
                        {
                            if !v.is_empty() {
                                secrets.push(v.to_string());
                            }
                            format!("{k}=***")
                        }
                        _ => kv.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                format!("{path}?{query}")
            }
            None => tail.to_string(),
        };
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            shown: format!("{scheme}{authority}{tail}"),
            secrets,
        }
    }

    /// The URI with its secrets replaced by `***`.
    pub(super) fn uri(&self) -> &str {
        &self.shown
    }

    /// `text` with every secret of the URI replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn uri_passwords_are_redacted() {
        let r = Redactor::new("mongodb://ops:s3cr%40t@db1:27017,db2:27018/admin?replicaSet=rs0&tlsCertificateKeyFilePassword=kfp");
        assert_eq!(
            r.uri(),
            "mongodb://ops:***@db1:27017,db2:27018/admin?replicaSet=rs0&tlsCertificateKeyFilePassword=***"
        );
        let scrubbed = r.scrub("auth failed for s3cr@t / s3cr%40t, key kfp");
        assert!(!scrubbed.contains("s3cr"), "{scrubbed}");
        assert!(!scrubbed.contains("kfp"), "{scrubbed}");
    }

    #[test]
    fn uri_without_credentials_is_shown_as_is() {
        let r = Redactor::new("mongodb://127.0.0.1:27017");
        assert_eq!(r.uri(), "mongodb://127.0.0.1:27017");
        assert_eq!(r.scrub("plain text"), "plain text");
        let r = Redactor::new("mongodb+srv://user@cluster.example.net/x");
        assert_eq!(r.uri(), "mongodb+srv://user@cluster.example.net/x");
    }

    #[test]
    fn database_names_follow_mongodb_rules() {
        assert!(check_database_name("ts3ab").is_ok());
        assert!(check_database_name("").is_err());
        assert!(check_database_name("a.b").is_err());
        assert!(check_database_name("a/b").is_err());
        assert!(check_database_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn write_errors_are_reported_and_duplicates_skipped_when_asked() {
        let reply =
            doc! {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}]};
        assert!(check_write_reply(&reply, "write to x", "h:1", true).is_ok());
        let err = check_write_reply(&reply, "write to x", "h:1", false)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("11000") && err.contains("dup"), "{err}");
        let reply = doc! {"ok": 1, "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"}};
        let err = check_write_reply(&reply, "write to x", "h:1", false).expect_err("wce");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
}
