//! Request → decision: which node(s) serve a request, and which bytes change on the way.
//!
//! Owns: turning a parsed, authorised request into a [`Plan`] using only the in-memory cluster
//! view: pin to the node of every `bot use <id>` / `bot template <name>` / template-naming
//! command anywhere in the tree (rewriting only the id tokens), fan out `bot list` and
//! `system info`, broadcast node-wide commands, place creates, split a top-level `json merge`
//! whose elements live on different nodes, and refuse what cannot be served faithfully.
//! A cluster-level command nested in `bot use <id> (...)` is routed as if it were sent alone,
//! because real clients wrap everything in `bot use` (the PyPI client sends
//! `bot/use/0/(/bot/list`). Does not own: executing the plan (`proxy`, `exec`).
//!
//! The planner never waits: it reads the cluster tables and returns.
//!
//! Layout:
//! - [`plan`](mod@plan): the plan types handed to the proxy and `exec` ([`Plan`], [`Edits`],
//!   [`Effect`], ...);
//! - [`view`]: the read-only cluster view the planner works on ([`View`]);
//! - `planner`: request → plan (pins, id rewrites, answer edits, refusals);
//! - `merge`: splitting a top-level `json merge` across nodes;
//! - `effects`: what a confirmed answer changes in the cluster tables.

mod effects;
mod merge;
pub mod plan;
mod planner;
pub mod view;

pub use plan::{
    CreateInfoEq, CreateKind, CreateNode, CreatePlan, Edits, Effect, Element, MergePlan, Plan,
    ProxyPlan, ReadBack, Why,
};
pub use planner::plan;
pub use view::View;

#[cfg(test)]
mod tests;
