//! Who is calling the admin API: admin keys (Basic, as on the bot API) or panel sessions.
//!
//! Owns: panel sessions (a random token in an HttpOnly, SameSite=Strict cookie, a CSRF token
//! that every change made with the cookie must echo, expiry, logout), slowing down failed
//! logins per client address, and making random secrets. Does not own: the key table
//! (`proxy::keys`) or which endpoints need what (`http`).

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::admin::error::AdminError;
use crate::config::Role;
use crate::proxy::keys::{Caller, Keys};

/// The session cookie's name.
pub const COOKIE: &str = "ts3ab_session";
/// Failures within this window slow the next login down.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// The longest a failed login's answer is held back.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// An authenticated admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The key name.
    pub name: String,
    /// Set when the caller came with a session cookie: changes must carry this CSRF token.
    pub csrf: Option<String>,
}

#[derive(Debug, Clone)]
struct Session {
    name: String,
    csrf: String,
    expires: Instant,
}

/// Sessions and login throttling.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// `n` random bytes from the kernel, as lowercase hex (also used for key secrets).
pub fn random_hex(n: usize) -> Result<String, AdminError> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| AdminError::Unavailable(format!("no randomness: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    /// Sessions that last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long a login from `ip` is held back before it is answered: one second per
    /// failure from that address in the last ten minutes, at most five.
    pub fn login_delay(&self, ip: Option<IpAddr>) -> Duration {
        let Some(ip) = ip else {
            return Duration::ZERO;
        };
        let mut f = self.failures.lock();
        let now = Instant::now();
        let q = f.entry(ip).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            q.pop_front();
        }
        let n = u32::try_from(q.len()).unwrap_or(u32::MAX);
        if q.is_empty() {
            f.remove(&ip);
        }
        (Duration::from_secs(1) * n).min(MAX_DELAY)
    }

    /// Notes a failed login from `ip`.
    pub fn login_failed(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            let mut f = self.failures.lock();
            let q = f.entry(ip).or_default();
            q.push_back(Instant::now());
            // Bounded: only the window's length matters.
            while q.len() > 64 {
                q.pop_front();
            }
        }
    }

    /// Opens a session for an admin; returns (cookie token, csrf token).
    pub fn open(&self, name: &str) -> Result<(String, String), AdminError> {
        let token = random_hex(32)?;
        let csrf = random_hex(32)?;
        let mut s = self.sessions.lock();
        let now = Instant::now();
        s.retain(|_, v| v.expires > now);
        s.insert(
            token.clone(),
            Session {
                name: name.to_string(),
                csrf: csrf.clone(),
                expires: now + self.ttl,
            },
        );
        Ok((token, csrf))
    }

    /// Ends a session.
    pub fn close(&self, token: &str) {
        self.sessions.lock().remove(token);
    }

    /// Ends every session of a key (it was revoked).
    pub fn close_all_of(&self, name: &str) {
        self.sessions.lock().retain(|_, s| s.name != name);
    }

    fn session(&self, token: &str) -> Option<Session> {
        let mut s = self.sessions.lock();
        match s.get(token) {
            Some(v) if v.expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                s.remove(token);
                None
            }
            None => None,
        }
    }

    /// Who is calling: an admin key in `Authorization`, else a live session cookie whose
    /// key is still an admin key.
    pub fn authenticate(
        &self,
        keys: &Keys,
        authorization: Option<&[u8]>,
        cookie: Option<&str>,
    ) -> Result<Admin, AdminError> {
        self.authenticate_from(keys, authorization, cookie, None)
    }

    /// [`Self::authenticate`] for a client at `peer`: a key's `allow_from` applies to Basic
    /// authentication here too (a session was opened by a login that checked it).
    pub fn authenticate_from(
        &self,
        keys: &Keys,
        authorization: Option<&[u8]>,
        cookie: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Admin, AdminError> {
        if let Some(h) = authorization {
            return match keys.authenticate_from(Some(h), peer) {
                Ok(Caller::Key {
                    name,
                    role: Role::Admin,
                    ..
                }) => Ok(Admin {
                    name: name.to_string(),
                    csrf: None,
                }),
                Ok(_) => Err(AdminError::Forbidden("this key is not an admin key".into())),
                Err(e) => Err(AdminError::Unauthorized(e.to_string())),
            };
        }
        let token = cookie.and_then(|c| cookie_value(c, COOKIE));
        let Some(s) = token.and_then(|t| self.session(t)) else {
            return Err(AdminError::Unauthorized(
                "log in (POST /admin/api/login) or send an admin key as Basic authorization".into(),
            ));
        };
        if !keys
            .list()
            .iter()
            .any(|(n, r)| *n == s.name && *r == Role::Admin)
        {
            return Err(AdminError::Unauthorized(
                "the key of this session was revoked".into(),
            ));
        }
        Ok(Admin {
            name: s.name,
            csrf: Some(s.csrf),
        })
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(token: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyConfig;
    use crate::protocol::basic_auth::basic_header;

    fn keys() -> Keys {
        Keys::new(&[
            KeyConfig {
                name: "ops".into(),
                secret: "ops-secret-1".into(),
                role: Role::Admin,
                tenancy: Default::default(),
            },
            KeyConfig {
                name: "alice".into(),
                secret: "alice-secret".into(),
                role: Role::User,
                tenancy: Default::default(),
            },
        ])
    }

    #[test]
    fn keys_sessions_and_their_refusals() {
        let s = Sessions::new(Duration::from_secs(60));
        let k = keys();
        let ops = basic_header("ops:ops-secret-1");
        assert_eq!(
            s.authenticate(&k, Some(ops.as_bytes()), None)
                .expect("admin")
                .csrf,
            None
        );
        let alice = basic_header("alice:alice-secret");
        assert!(matches!(
            s.authenticate(&k, Some(alice.as_bytes()), None),
            Err(AdminError::Forbidden(_))
        ));
        assert!(matches!(
            s.authenticate(&k, None, None),
            Err(AdminError::Unauthorized(_))
        ));
        let (token, csrf) = s.open("ops").expect("open");
        let cookie = format!("other=1; {COOKIE}={token}");
        let a = s.authenticate(&k, None, Some(&cookie)).expect("session");
        assert_eq!(a.csrf.as_deref(), Some(csrf.as_str()));
        // Revoking the key ends what its sessions may do.
        k.remove("ops");
        assert!(s.authenticate(&k, None, Some(&cookie)).is_err());
        s.close(&token);
        assert!(s.session(&token).is_none());
    }

    #[test]
    fn sessions_expire() {
        let s = Sessions::new(Duration::from_millis(1));
        let (token, _) = s.open("ops").expect("open");
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.session(&token).is_none());
    }

    #[test]
    fn failed_logins_slow_down_per_address() {
        let s = Sessions::new(Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(s.login_delay(Some(a)), Duration::ZERO);
        for _ in 0..3 {
            s.login_failed(Some(a));
        }
        assert_eq!(s.login_delay(Some(a)), Duration::from_secs(3));
        assert_eq!(s.login_delay(Some(b)), Duration::ZERO, "others unaffected");
        for _ in 0..10 {
            s.login_failed(Some(a));
        }
        assert_eq!(s.login_delay(Some(a)), MAX_DELAY);
    }

    #[test]
    fn random_secrets_are_long_and_differ() {
        let a = random_hex(24).expect("rand");
        assert_eq!(a.len(), 48);
        assert_ne!(a, random_hex(24).expect("rand"));
    }
}
