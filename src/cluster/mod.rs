//! The cluster: everything the router knows and keeps up to date about nodes and bots.
//!
//! Owns: the node model with stable ids ([`node`]), run-time node changes ([`membership`]),
//! load counts ([`load`]), the in-memory view ([`view`]: bots, templates, cluster ids),
//! placement with reservations ([`placement`]) and its load-aware score ([`penalty`]), the
//! node poller ([`health`]), the node agents' readings ([`agents`]), fencing
//! returning nodes ([`fencing`]), failover ([`failover`]) and sharing one store with other
//! routers ([`shared`]), and the counters metrics are made of ([`stats`]). Does not own: client requests (`proxy`) or node I/O primitives (`node`).

pub mod agents;
pub mod failover;
pub mod fencing;
pub mod health;
mod ids;
mod lists;
pub mod load;
pub mod membership;
mod moves;
pub mod node;
mod owners;
pub mod penalty;
pub mod placement;
mod records;
pub mod returns;
pub mod shared;
pub mod stats;
mod tables;
pub mod view;

pub use moves::{BotSnapshot, HandOver, Move, MoveClaim, Whereabouts};
pub use node::{Node, NodeId, NodeList, NodeSource};
pub use view::*;
