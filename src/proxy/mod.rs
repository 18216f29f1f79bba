//! The client-facing side: what happens to one API request.
//!
//! Owns: the Pingora `ProxyHttp` hooks ([`router`]), router keys and callers ([`keys`]), what a
//! caller may run ([`policy`]), request → plan over the cluster view ([`routing`]) and the
//! plans the router answers itself ([`exec`]), what it counts per request ([`stats`]), the
//! failed-authentication limit ([`throttle`]), the framing of edited answers ([`framing`]),
//! the bounds on client connections ([`connections`]) and forwarding to a new process during a graceful upgrade ([`handover`]).
//! Does not own: the cluster view and its background work (`cluster`), node I/O (`node`).

pub mod connections;
pub mod exec;
pub mod framing;
pub mod handover;
pub mod keys;
pub mod policy;
pub mod router;
pub mod routing;
pub mod stats;
pub mod throttle;

pub use router::Router;
