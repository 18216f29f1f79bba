//! The rebalance plan: which bots move where so every node holds its fair share.
//!
//! Owns: [`plan_rebalance`] and its input and output ([`NodeBots`], [`Planned`]), a pure
//! function of the nodes' capacities and bots.
//! Does not own: reading the cluster into that input or running the planned moves
//! (`Operations::rebalance` and the move steps, in the parent module and `moving`).

use crate::cluster::NodeId;

/// A node's bots, as the rebalance plan sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBots {
    /// The node.
    pub node: NodeId,
    /// Its capacity.
    pub capacity: u32,
    /// Its bots' cluster ids.
    pub bots: Vec<u32>,
}

/// One planned move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Cluster id.
    pub gid: u32,
    /// From.
    pub from: NodeId,
    /// To.
    pub to: NodeId,
}

/// The rebalance plan: one bot at a time from the node furthest above its fair share (the
/// bots' total split in proportion to capacity) to the one furthest below it that has room,
/// until no move brings two nodes closer to their shares. Bots are taken from the end of a
/// node's list.
pub fn plan_rebalance(nodes: &[NodeBots]) -> Vec<Planned> {
    let total: f64 = nodes.iter().map(|n| n.bots.len() as f64).sum();
    let capacity: f64 = nodes.iter().map(|n| f64::from(n.capacity)).sum();
    if capacity <= 0.0 {
        return Vec::new();
    }
    let share: Vec<f64> = nodes
        .iter()
        .map(|n| total * f64::from(n.capacity) / capacity)
        .collect();
    let mut bots: Vec<Vec<u32>> = nodes.iter().map(|n| n.bots.clone()).collect();
    let mut count: Vec<f64> = bots.iter().map(|b| b.len() as f64).collect();
    let mut plan = Vec::new();
    loop {
        let excess = |i: usize, count: &[f64]| count[i] - share[i];
        let Some(i) = (0..nodes.len())
            .filter(|&i| !bots[i].is_empty())
            .max_by(|&a, &b| excess(a, &count).total_cmp(&excess(b, &count)))
        else {
            break;
        };
        let Some(j) = (0..nodes.len())
            .filter(|&j| j != i && count[j] < f64::from(nodes[j].capacity))
            .min_by(|&a, &b| excess(a, &count).total_cmp(&excess(b, &count)))
        else {
            break;
        };
        // A move narrows the gap between the two by two; below that it only swaps who is
        // ahead. It ends with the fullest and the emptiest (relative to their shares) less
        // than two bots apart, so every node is less than two, and on an even split within
        // one, from its share.
        if excess(i, &count) - excess(j, &count) < 2.0 {
            break;
        }
        let Some(gid) = bots[i].pop() else { break };
        count[i] -= 1.0;
        count[j] += 1.0;
        plan.push(Planned {
            gid,
            from: nodes[i].node,
            to: nodes[j].node,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(node: u32, capacity: u32, n: u32, base: u32) -> NodeBots {
        NodeBots {
            node: NodeId(node),
            capacity,
            bots: (base..base + n).collect(),
        }
    }

    fn after(nodes: &[NodeBots], plan: &[Planned]) -> Vec<i64> {
        nodes
            .iter()
            .map(|n| {
                n.bots.len() as i64 - plan.iter().filter(|m| m.from == n.node).count() as i64
                    + plan.iter().filter(|m| m.to == n.node).count() as i64
            })
            .collect()
    }

    #[test]
    fn rebalance_reaches_fair_shares_by_capacity_and_respects_room() {
        let nodes = [nb(0, 50, 30, 0), nb(1, 50, 0, 100), nb(2, 50, 0, 200)];
        let plan = plan_rebalance(&nodes);
        assert_eq!(after(&nodes, &plan), vec![10, 10, 10]);
        assert_eq!(plan.len(), 20, "no bot moves twice or needlessly");
        // Capacity-weighted: 40 bots over capacities 10/30 → 10/30.
        let nodes = [nb(0, 10, 0, 0), nb(1, 30, 40, 100)];
        assert_eq!(after(&nodes, &plan_rebalance(&nodes)), vec![10, 30]);
        // A small node is never filled over its capacity.
        let nodes = [nb(0, 100, 60, 0), nb(1, 2, 0, 100)];
        let counts = after(&nodes, &plan_rebalance(&nodes));
        assert!(counts[1] <= 2, "{counts:?}");
        // Already balanced: nothing moves.
        let nodes = [nb(0, 10, 4, 0), nb(1, 10, 5, 100)];
        assert!(plan_rebalance(&nodes).is_empty());
    }
}
