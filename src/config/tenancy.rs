//! A key's tenancy: which bots it reaches (`scope`), how many it may have (`max_bots`), and
//! where it may be used from (`allow_from`).
//!
//! Owns: the [`Tenancy`] of a key and its validation (one rule for the YAML `keys[]` and the
//! admin API, messages naming the field), CIDR networks ([`Cidr`], v4 and v6) and matching a
//! client address against them. Does not own: enforcing any of it (`proxy::keys` refuses an
//! address, the planner hides other tenants' bots, creates count `max_bots`) or storing it.

use std::net::IpAddr;

use crate::config::FieldError;
use crate::store::Scope;

/// What a key may reach beyond its role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// `own`: only the bots and templates the key created; every other looks nonexistent.
    pub scope: Scope,
    /// How many bots the key may have at once (None: no limit of its own).
    pub max_bots: Option<u32>,
    /// The client networks the key may be used from (empty: anywhere).
    pub allow_from: Vec<Cidr>,
}

impl Tenancy {
    /// Checks the tenancy fields of a key; `allow_from` entries are CIDR text.
    pub fn new(
        scope: Scope,
        max_bots: Option<u32>,
        allow_from: &[String],
    ) -> Result<Tenancy, FieldError> {
        let allow_from = allow_from
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Cidr::parse(s).ok_or_else(|| FieldError {
                    field: "allow_from",
                    message: format!(
                        "entry {i} (`{s}`) is not a network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or one address)"
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tenancy {
            scope,
            max_bots,
            allow_from,
        })
    }

    /// The tenancy a stored key record holds (checked as the admin API checked it).
    pub fn of_record(r: &crate::store::KeyRecord) -> Result<Tenancy, FieldError> {
        Tenancy::new(r.scope, r.max_bots, &r.allow_from)
    }

    /// Whether the key may be used from `addr` (an unknown address only when no list is set).
    pub fn allows(&self, addr: Option<IpAddr>) -> bool {
        if self.allow_from.is_empty() {
            return true;
        }
        addr.is_some_and(|a| self.allow_from.iter().any(|c| c.contains(a)))
    }

    /// The `allow_from` list as text (for the store and the admin API).
    pub fn allow_from_text(&self) -> Vec<String> {
        self.allow_from.iter().map(Cidr::to_string).collect()
    }
}

/// The fixed-length tag of a key's template name space (12 hex digits of the BLAKE2s
/// digest of its name; see `proxy::routing::view::tenant_prefix`). Keys whose tags are equal
/// are refused (config file and admin API), so two tenants never share a name space.
pub fn tenant_tag(key: &str) -> String {
    use blake2::Digest;
    let d: [u8; 32] = blake2::Blake2s256::digest(key.as_bytes()).into();
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a network of one). Host bits must be zero,
    /// so that `10.1.2.3/8` (most likely a typo) is not silently read as `10.0.0.0/8`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&n| n <= max)?
            }
            Some(_) => return None,
            None => max,
        };
        let c = Cidr { addr, prefix };
        (c.network_bits(addr) == Some(bits(addr))).then_some(c)
    }

    /// Whether `a` is in the network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack listener reports for IPv4 clients) counts as its IPv4 address.
    pub fn contains(&self, a: IpAddr) -> bool {
        let a = match a {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.network_bits(a) == self.network_bits(self.addr)
    }

    /// `a`'s bits under this network's mask, None when the families differ.
    fn network_bits(&self, a: IpAddr) -> Option<u128> {
        let width = match (self.addr, a) {
            (IpAddr::V4(_), IpAddr::V4(_)) => 32,
            (IpAddr::V6(_), IpAddr::V6(_)) => 128,
            _ => return None,
        };
        let host = u32::from(width - self.prefix);
        let mask = if host >= 128 {
            0
        } else {
            (u128::MAX >> (128 - width)) & !((1u128 << host) - 1)
        };
        Some(bits(a) & mask)
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.0.0.0/8").expect("v4");
        assert!(c.contains(ip("10.200.3.4")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")), "v4-mapped counts as v4");
        let one = Cidr::parse("127.0.0.1").expect("bare");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all = Cidr::parse("0.0.0.0/0").expect("all");
        assert!(all.contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").expect("all v6").contains(ip("::1")));
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_cidrs() {
        for s in [
            "",
            "10.0.0.0/33",
            "10.1.2.3/8",
            "x/8",
            "10.0.0.0/",
            "::/129",
            "1.2.3.4/+8",
        ] {
            assert!(Cidr::parse(s).is_none(), "{s}");
        }
        let e = Tenancy::new(Scope::Own, None, &["10.0.0.0/8".into(), "nope".into()])
            .expect_err("refused");
        assert_eq!(e.field, "allow_from");
        assert!(e.message.contains("entry 1"), "{}", e.message);
    }

    #[test]
    fn no_list_allows_everyone() {
        let t = Tenancy::default();
        assert!(t.allows(None) && t.allows(Some(ip("1.2.3.4"))));
        let t = Tenancy::new(Scope::All, None, &["127.0.0.0/8".into()]).expect("ok");
        assert!(t.allows(Some(ip("127.0.0.1"))));
        assert!(!t.allows(Some(ip("192.168.0.1"))));
        assert!(!t.allows(None));
    }

    #[test]
    fn yaml_keys_take_tenancy_and_errors_name_the_key() {
        let yaml = |keys: &str| {
            format!(
                "keys:\n{keys}\nnodes:\n  - {{ name: n, url: \"http://127.0.0.1:1\" }}\nstorage: {{ kind: embedded, path: s }}\n"
            )
        };
        let env = |_: &str| None;
        let c = crate::config::Config::from_yaml(
            &yaml("  - { name: t, secret: \"t-secret-1\", scope: own, max_bots: 3, allow_from: [\"10.0.0.0/8\", \"::1\"] }\n  - { name: u, secret: \"u-secret-1\" }"),
            &env,
        )
        .expect("valid");
        let t = &c.keys[0].tenancy;
        assert_eq!(t.scope, Scope::Own);
        assert_eq!(t.max_bots, Some(3));
        assert_eq!(t.allow_from_text(), vec!["10.0.0.0/8", "::1/128"]);
        assert_eq!(c.keys[1].tenancy, Tenancy::default());
        let e = crate::config::Config::from_yaml(
            &yaml("  - { name: u, secret: \"u-secret-1\" }\n  - { name: t, secret: \"t-secret-1\", allow_from: [\"10.0.0.1/8\"] }"),
            &env,
        )
        .expect_err("refused")
        .to_string();
        assert!(e.starts_with("keys[1].allow_from:"), "{e}");
        let e = crate::config::Config::from_yaml(
            &yaml("  - { name: t, secret: \"t-secret-1\", scope: mine }"),
            &env,
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("scope") || e.contains("mine"), "{e}");
    }
}
