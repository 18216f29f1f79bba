//! The load-aware placement score (`placement.strategy: penalty`), as a pure function.
//!
//! Owns: the formula, its weights and curve, and the rule for missing figures. Does not own:
//! where the figures come from (`agents`), when a reading is too old to use (the caller
//! passes only a fresh one), or capacity, which the reservation enforces whatever the score
//! (`placement`).
//!
//! ```text
//! penalty = used / capacity
//!         + W_CPU × h(cpu_busy_ratio)
//!         + W_MEM × h(1 − memory_available_ratio)
//!
//! h(x)    = (1.05^(100·x) − 1) / (1.05^100 − 1)      h(0) = 0, h(1) = 1
//! W_CPU   = W_MEM = 1
//! ```
//!
//! Lower is better. Why each part:
//!
//! - **`used / capacity`** (running plus reserved bots over the node's capacity) is exactly
//!   `least_used`'s score, with weight 1: capacity is the operator's own statement of what a
//!   node carries, and a node without fresh agent figures scores exactly this, so a cluster
//!   without agents places bots exactly like `least_used`. (Lavalink scores a node without
//!   stats as the worst; here the agent is an optional hint, so its absence must not push bots
//!   around.)
//! - **The curve `h`** is Lavalink's `1.05^(100 × load)`, rescaled to 0-1 so that one
//!   saturated resource weighs as much as a full node. It is flat where hosts normally run
//!   (h(0.3) ≈ 0.02, h(0.5) ≈ 0.08) and steep near saturation (h(0.8) ≈ 0.37,
//!   h(0.9) ≈ 0.61), so ordinary utilisation and the noise of a 5-second CPU sample barely
//!   change placement, while a genuinely hot host is avoided.
//! - **CPU, weight 1**: TS3AudioBot decodes and Opus-encodes every bot's audio in real time,
//!   so a saturated CPU makes every bot on the host stutter, which is as bad as the node
//!   being full. A node with an idle CPU is not rewarded (h(0) = 0): the term only pushes
//!   bots away from pressure. The host's busy ratio already includes the TS3AudioBot
//!   process, so the process's own share is shown but not added a second time; `load1` is
//!   shown but not used either (it counts tasks blocked on I/O and is not per CPU).
//! - **Memory, weight 1**, on `1 − MemAvailable/MemTotal` (MemAvailable already counts
//!   reclaimable cache, so this is real pressure): a host out of memory gets TS3AudioBot
//!   killed with all its bots; the steep end of `h` does the work of keeping bots off a host
//!   long before that, so the weight need not exceed the CPU's.
//!
//! A node saturated in both scores at least 2 and so gets new bots only when every other node
//! with room is worse. A figure the agent sent as `null` (the CPU ratio right after the agent
//! started, say) adds nothing.

/// Weight of the CPU term: a saturated CPU counts as much as a full node.
pub const W_CPU: f64 = 1.0;
/// Weight of the memory term: no available memory counts as much as a full node.
pub const W_MEM: f64 = 1.0;
/// Lavalink's base: each percentage point of pressure multiplies the raw term by 1.05.
const BASE: f64 = 1.05;

/// What the penalty reads from an agent (each figure 0-1, `None` when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// Busy share of the host's CPU time.
    pub cpu_busy_ratio: Option<f64>,
    /// `MemAvailable / MemTotal`.
    pub memory_available_ratio: Option<f64>,
}

/// The curve: 0 at no pressure, 1 at saturation, convex (Lavalink's `1.05^(100·x)`).
pub fn curve(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    (BASE.powf(100.0 * x) - 1.0) / (BASE.powf(100.0) - 1.0)
}

/// The used fraction: `least_used`'s score.
pub fn used_fraction(used: u32, capacity: u32) -> f64 {
    f64::from(used) / f64::from(capacity.max(1))
}

/// A node's penalty from its counts and, when fresh, its agent's figures (`None`: no agent,
/// or its reading is missing or stale; the score is then exactly the used fraction).
pub fn penalty(used: u32, capacity: u32, pressure: Option<&Pressure>) -> f64 {
    let mut p = used_fraction(used, capacity);
    if let Some(f) = pressure {
        if let Some(cpu) = f.cpu_busy_ratio {
            p += W_CPU * curve(cpu);
        }
        if let Some(avail) = f.memory_available_ratio {
            p += W_MEM * curve(1.0 - avail);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.005
    }

    #[test]
    fn the_curve_is_flat_low_and_steep_high() {
        assert_eq!(curve(0.0), 0.0);
        assert!(close(curve(1.0), 1.0));
        assert!(close(curve(0.5), 0.080), "{}", curve(0.5));
        assert!(close(curve(0.8), 0.372), "{}", curve(0.8));
        assert!(close(curve(0.9), 0.611), "{}", curve(0.9));
        // Out-of-range inputs are clamped, never extrapolated.
        assert_eq!(curve(-1.0), 0.0);
        assert!(close(curve(7.0), 1.0));
        for i in 0..100 {
            let (a, b) = (f64::from(i) / 100.0, f64::from(i + 1) / 100.0);
            assert!(curve(a) < curve(b), "increasing at {a}");
        }
    }

    #[test]
    fn without_figures_the_penalty_is_the_used_fraction() {
        assert_eq!(penalty(3, 10, None), 0.3);
        assert_eq!(
            penalty(0, 0, None),
            0.0,
            "a zero capacity never divides by zero"
        );
        // An agent that could not read anything adds nothing either.
        assert_eq!(penalty(3, 10, Some(&Pressure::default())), 0.3);
        // An idle host is not rewarded below its count.
        let idle = Pressure {
            cpu_busy_ratio: Some(0.0),
            memory_available_ratio: Some(1.0),
        };
        assert_eq!(penalty(3, 10, Some(&idle)), 0.3);
    }

    #[test]
    fn pressure_adds_weighted_terms() {
        let hot = Pressure {
            cpu_busy_ratio: Some(0.9),
            memory_available_ratio: Some(0.2),
        };
        let want = 0.1 + W_CPU * curve(0.9) + W_MEM * curve(0.8);
        assert!(close(penalty(1, 10, Some(&hot)), want));
        assert!(close(want, 0.1 + 0.611 + 0.372), "{want}");
        let cpu_only = Pressure {
            cpu_busy_ratio: Some(1.0),
            memory_available_ratio: None,
        };
        // A saturated CPU alone weighs as much as a full node.
        assert!(close(
            penalty(0, 10, Some(&cpu_only)),
            penalty(10, 10, None)
        ));
    }

    /// A hot, empty node ranks behind a cool node that is half full, and behind a cool node
    /// up to its own penalty; a mildly busy host (50 % CPU, 40 % memory in use) costs little
    /// (about an eighth of its capacity).
    #[test]
    fn ordering() {
        let hot = Pressure {
            cpu_busy_ratio: Some(0.95),
            memory_available_ratio: Some(0.3),
        };
        let mild = Pressure {
            cpu_busy_ratio: Some(0.5),
            memory_available_ratio: Some(0.6),
        };
        assert!(penalty(0, 10, Some(&hot)) > penalty(5, 10, None));
        assert!(penalty(0, 10, Some(&hot)) > penalty(7, 10, Some(&mild)));
        assert!(penalty(0, 10, Some(&mild)) < 0.15);
        assert!(penalty(2, 10, Some(&mild)) > penalty(2, 10, None));
    }
}
