//! Running a split `json merge`: one shorter merge per node, the router's own elements locally.
//!
//! Owns: grouping the elements by node, sending each group as one `json merge`, cutting the
//! node's result array back into elements, computing the router's elements (fan-outs,
//! creates, literals, nulls) and joining everything in the original order.
//! Does not own: deciding the split (`routing::merge`).

use std::collections::BTreeMap;

use futures::future::join_all;

use crate::cluster::NodeId;
use crate::protocol::api_json::ApiError;
use crate::protocol::json_edit;
use crate::proxy::exec::{withheld, Answer, Exec};
use crate::proxy::keys::Caller;
use crate::proxy::routing::{Element, MergePlan};

/// A split merge's node elements by the node that runs them: each element's index in the merge
/// and its piece.
type Groups<'p> = BTreeMap<NodeId, Vec<(usize, &'p [u8])>>;

impl Exec {
    /// Runs a split `json merge`: one `json merge` per node with that node's elements, the
    /// router's own elements locally, results put back in the original order.
    pub async fn merge(&self, plan: &MergePlan, turn: usize, caller: &Caller) -> Answer {
        let answer = self.merge_parts(plan, turn, caller).await;
        if answer.status == 200 && !plan.read_back.is_empty() {
            self.read_back(plan.read_back.clone());
        }
        answer
    }

    async fn merge_parts(&self, plan: &MergePlan, turn: usize, caller: &Caller) -> Answer {
        let groups = match self.group_by_node(plan, turn) {
            Ok(g) => g,
            Err(answer) => return answer,
        };
        let mut results: Vec<Option<Vec<u8>>> = vec![None; plan.elements.len()];
        let calls = groups
            .iter()
            .map(|(node_id, items)| self.node_part(*node_id, items, plan, caller.tenant()));
        let outcome = join_all(calls).await;
        // Elements may have stopped, saved or renamed bots: re-read those nodes now.
        for node in groups.keys().filter_map(|id| self.cluster.node(*id)) {
            self.poke(node);
        }
        for r in outcome {
            match r {
                Ok(parts) => {
                    for (i, v) in parts {
                        results[i] = Some(v);
                    }
                }
                Err(answer) => return answer,
            }
        }
        self.local_parts(plan, &mut results, caller).await;
        let parts: Vec<Vec<u8>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| b"null".to_vec()))
            .collect();
        Answer::json(200, json_edit::join_array(parts.iter().map(Vec::as_slice)))
    }

    /// The node elements by the node that runs them, each with its index in the merge.
    /// Elements that can run anywhere join the first pinned node, else a healthy one.
    fn group_by_node<'p>(&self, plan: &'p MergePlan, turn: usize) -> Result<Groups<'p>, Answer> {
        let first_pinned = plan.elements.iter().find_map(|e| match e {
            Element::Node { node: Some(n), .. } => Some(*n),
            _ => None,
        });
        let mut groups: Groups<'_> = BTreeMap::new();
        for (i, el) in plan.elements.iter().enumerate() {
            if let Element::Node { node, piece } = el {
                let target = match node.or(first_pinned) {
                    Some(n) => n,
                    None => match self.any_node(turn, &[]) {
                        Some(n) => n.id,
                        None => {
                            return Err(Answer::error(&ApiError::unavailable("no healthy node")))
                        }
                    },
                };
                groups.entry(target).or_default().push((i, piece));
            }
        }
        Ok(groups)
    }

    /// Runs one node's elements as one `json merge` there and cuts its result array back into
    /// the elements' values (by merge index). Any other answer is the whole request's answer.
    async fn node_part(
        &self,
        node_id: NodeId,
        items: &[(usize, &[u8])],
        plan: &MergePlan,
        tenant: Option<&str>,
    ) -> Result<Vec<(usize, Vec<u8>)>, Answer> {
        let Some(node) = self.cluster.node(node_id) else {
            return Err(Answer::error(&ApiError::unavailable("node is gone")));
        };
        if !node.is_healthy() {
            return Err(Answer::error(&ApiError::unavailable(format!(
                "node {} is down",
                node.name
            ))));
        }
        let mut target = b"/api/json/merge".to_vec();
        for (_, piece) in items {
            target.push(b'/');
            target.extend_from_slice(piece);
        }
        let sent = self.cluster.generation();
        let resp = self
            .client
            .get(&node.endpoint(), &target, self.cfg.request_timeout)
            .await
            .map_err(|e| Answer::error(&ApiError::unavailable(e.to_string())))?;
        // Only a success is edited (an error answer carries no BotInfo); one that cannot be
        // edited is not cut into elements as if it were a result array.
        let edited = if resp.status == 200 {
            Self::edit_for(
                &self.cluster,
                node.id,
                &resp.body,
                &plan.edits,
                tenant,
                sent,
            )
            .map_err(|why| Answer::error(&withheld("", &node.name, &why)))?
        } else {
            None
        };
        let body = edited.unwrap_or_else(|| resp.body.to_vec());
        match (resp.status, json_edit::array_items(&body)) {
            (200, Some(spans)) if spans.len() == items.len() => Ok(items
                .iter()
                .zip(spans)
                .map(|((i, _), r)| (*i, body[r].to_vec()))
                .collect()),
            _ => Err(Answer::from_node(resp, Some(body))),
        }
    }

    /// Fills in the elements the router answers itself. The same cluster-wide value is
    /// computed once per request, however often it appears.
    async fn local_parts(
        &self,
        plan: &MergePlan,
        results: &mut [Option<Vec<u8>>],
        caller: &Caller,
    ) {
        let mut list: Option<Vec<u8>> = None;
        let mut info: Option<Vec<u8>> = None;
        for (i, el) in plan.elements.iter().enumerate() {
            let value = match el {
                Element::Node { .. } => continue,
                Element::Null => b"null".to_vec(),
                Element::Literal(json) => json.clone(),
                Element::FanOutList => match &list {
                    Some(l) => l.clone(),
                    None => list
                        .insert(self.bot_list(caller.tenant()).await.body.to_vec())
                        .clone(),
                },
                Element::SystemInfo => match &info {
                    Some(v) => v.clone(),
                    None => info.insert(ok_or_null(self.system_info().await)).clone(),
                },
                Element::Create(c) => ok_or_null(Box::pin(self.create(c, caller)).await),
            };
            results[i] = Some(value);
        }
    }
}

/// A router-made answer as a merge element: its body when it succeeded, else `null` (what a
/// node's merge gives for a failing element).
fn ok_or_null(a: Answer) -> Vec<u8> {
    if a.status == 200 {
        a.body.to_vec()
    } else {
        b"null".to_vec()
    }
}
