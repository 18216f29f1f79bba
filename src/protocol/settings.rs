//! TS3AudioBot's config paths: dotted names with `*` wildcards, and which of them are secret.
//!
//! Owns: matching a path pattern the way TS3AudioBot's settings commands do, the list of
//! leaves that hold secrets (identity, passwords), and the identity object itself. Does not own: deciding who may read them
//! (`proxy::policy`) or redacting answers (`json_edit`).

/// A TeamSpeak identity (`connect.identity` of a bot): key, offset and security level.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The private key. Secret.
    pub key: String,
    /// The key offset.
    pub offset: u64,
    /// The target security level (-1 = raise on demand).
    pub level: i64,
}

impl std::fmt::Debug for Identity {
    /// Never prints the key: records end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key", &"<redacted>")
            .field("offset", &self.offset)
            .field("level", &self.level)
            .finish()
    }
}

/// Whether a config path (possibly with `*` wildcards) may resolve to a secret leaf:
/// `connect.identity.*` or a password's `pw`. Letter case is ignored (fail closed: whether a
/// node matches config paths case-insensitively must not decide what a user key sees).
pub fn is_secret_path(path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    let path = path.as_str();
    const SECRETS: [&str; 5] = [
        "connect.identity.key",
        "connect.identity.offset",
        "connect.identity.level",
        "connect.server_password.pw",
        "connect.channel_password.pw",
    ];
    SECRETS.iter().any(|s| glob_match(path, s))
}

/// `*` matches any run of characters (TS3AudioBot's config path wildcards).
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths() {
        assert!(is_secret_path("connect.identity.key"));
        assert!(
            is_secret_path("Connect.Identity.KEY"),
            "letter case never hides a secret"
        );
        assert!(is_secret_path("connect.identity.*"));
        assert!(is_secret_path("*.pw"));
        assert!(is_secret_path("connect.*"));
        assert!(!is_secret_path("connect.name"));
        assert!(!is_secret_path("connect.identity"));
    }
}
