//! Adding, editing and removing nodes while the router runs.
//!
//! Owns: the node-table changes and their rules: names and addresses are unique, a new or
//! edited node is down until its first successful poll, an edit keeps the node (and so its
//! load counters and bots), and a node is removed only when the router tracks nothing on it
//! (no bots, templates, fences or creates in flight: drain and move them first). Nodes added
//! at run time are stored before the change is visible; an edit of a config-file node is
//! stored as an override that wins over the file at the next start; config-file nodes are
//! removed in the file, not here.
//! Does not own: the HTTP admin API that calls these (`admin`), or checking that a URL
//! answers like a TS3AudioBot (the caller does that before adding).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::node::{Node, NodeId, NodeSource};
use crate::cluster::view::{Cluster, Holdings};
use crate::config::{AgentConfig, FieldError, NodeConfig, NodeState};
use crate::node::tls::NodeTls;
use crate::store::{AgentRecord, NodeRecord, Op, StoreError};

/// Why a node-table change was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeChangeError {
    /// A field is invalid (the same rules as the config file).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Another node has that name.
    #[error("a node named `{0}` exists already")]
    NameTaken(String),
    /// Another node has that address.
    #[error("{addr} is already used by node `{other}`")]
    AddressTaken {
        /// The address.
        addr: std::net::SocketAddr,
        /// The node using it.
        other: String,
    },
    /// No such node.
    #[error("no node named `{0}`")]
    NotFound(String),
    /// The node still holds something the router tracks.
    #[error(
        "node `{node}` still holds {} bots, {} templates and {} copies to stop, or creates are in flight; drain it and move its bots first",
        .holdings.bots, .holdings.templates, .holdings.fences
    )]
    NotEmpty {
        /// The node.
        node: String,
        /// What it holds.
        holdings: Holdings,
    },
    /// The node is defined in the config file.
    #[error("node `{0}` is defined in the config file; remove it there and restart (or reload) the router")]
    FromConfig(String),
    /// Failover is moving its bots right now.
    #[error("node `{0}` is being evacuated; try again when that is over")]
    Evacuating(String),
    /// The change could not be stored (nothing changed).
    #[error("the change could not be stored: {0}")]
    Store(#[from] StoreError),
}

/// Changes to one node; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct NodeEdit {
    /// A new URL.
    pub url: Option<String>,
    /// New credentials (`Some(None)` removes them).
    pub auth: Option<Option<String>>,
    /// A new capacity.
    pub capacity: Option<u32>,
    /// Ready, drain or maint.
    pub state: Option<NodeState>,
    /// A new agent (`Some(None)` removes it).
    pub agent: Option<Option<AgentEdit>>,
    /// New TLS settings (checked and read: [`NodeConfig::with_tls_files`]).
    pub tls: Option<NodeTls>,
}

/// A node's agent as an edit sets it.
#[derive(Debug, Clone, Default)]
pub struct AgentEdit {
    /// Its URL.
    pub url: String,
    /// Its token: `None` keeps the current one, `Some(None)` removes it.
    pub token: Option<Option<String>>,
}

fn record(c: &NodeConfig, source: NodeSource) -> NodeRecord {
    NodeRecord {
        name: c.name.clone(),
        url: c.url.clone(),
        auth: c.auth.clone(),
        capacity: c.capacity,
        draining: c.state == NodeState::Drain,
        state: c.state,
        from_config: source == NodeSource::Config,
        agent: Some(c.agent.as_ref().map(|a| AgentRecord {
            url: a.url.clone(),
            token: a.token.clone(),
        })),
        ca_file: c.tls.ca_file.clone(),
        tls_host: c.tls.tls_host.clone(),
    }
}

/// `c` (parsed from `rec`) with the TLS settings `rec` stores, its CA file read again; a
/// record without any keeps `current` (the config file's, or the live node's) for a
/// config-file node, whose `ca_file` then stays the file's like its token.
pub(crate) fn tls_of_record(
    rec: &NodeRecord,
    c: NodeConfig,
    current: Option<&NodeTls>,
) -> Result<NodeConfig, FieldError> {
    if !c.target.tls {
        return Ok(c);
    }
    match (rec.ca_file.is_none() && rec.tls_host.is_none(), current) {
        (true, Some(cur)) if rec.from_config => Ok(c.with_tls(cur.clone())),
        _ => c.with_tls_files(rec.ca_file.clone(), rec.tls_host.clone(), &|p| {
            std::fs::read(p)
        }),
    }
}

/// A node's agent as its record stores it, given what this router has for the node now
/// (`current`: the config file's at start, the live node's later). A record written before
/// agents existed keeps `current`; a config-file node's record without a token keeps
/// `current`'s token, like its `auth` (the file's token stays the file's).
pub(crate) fn agent_of_record(
    rec: &NodeRecord,
    current: Option<&AgentConfig>,
) -> Result<Option<AgentConfig>, FieldError> {
    match &rec.agent {
        None => Ok(current.cloned()),
        Some(None) => Ok(None),
        Some(Some(a)) => {
            let token = match (&a.token, current) {
                (None, Some(cur)) if rec.from_config => cur.token.clone(),
                (t, _) => t.clone(),
            };
            AgentConfig::parse(&a.url, token).map(Some)
        }
    }
}

/// The agent a live node has, as configured (its host is not resolved again).
pub(crate) fn current_agent(node: &Node) -> Option<AgentConfig> {
    node.agent_config()
}

impl Cluster {
    fn check_unique(&self, c: &NodeConfig, except: Option<NodeId>) -> Result<(), NodeChangeError> {
        for n in self.nodes().iter().filter(|n| Some(n.id) != except) {
            if *n.name == *c.name {
                return Err(NodeChangeError::NameTaken(c.name.clone()));
            }
            if n.endpoint().addr == c.target.addr {
                return Err(NodeChangeError::AddressTaken {
                    addr: c.target.addr,
                    other: n.name.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Adds a node at run time under a new id. It is stored first, and is down (takes no
    /// bots, answers 503 for nothing yet) until its first successful poll.
    pub async fn add_node(
        &self,
        c: NodeConfig,
        timeout: Duration,
    ) -> Result<Arc<Node>, NodeChangeError> {
        let _changing = self.node_changes.lock().await;
        self.check_unique(&c, None)?;
        self.store
            .commit(vec![Op::PutNode(record(&c, NodeSource::Admin))], timeout)
            .await?;
        let id = NodeId(self.next_node.fetch_add(1, Ordering::AcqRel));
        let node = Arc::new(Node::new(id, &c, NodeSource::Admin));
        let list = self.nodes().with(node.clone());
        self.nodes.store(Arc::new(list));
        self.nodes_changed();
        log::info!("node {} ({}) added as {id}", c.name, c.url);
        Ok(node)
    }

    /// Edits a node in place: it keeps its id, bots and load counters. A new URL or new
    /// credentials make it down until a poll of the new endpoint succeeds.
    pub async fn edit_node(
        &self,
        name: &str,
        edit: NodeEdit,
        timeout: Duration,
    ) -> Result<Arc<Node>, NodeChangeError> {
        let _changing = self.node_changes.lock().await;
        let node = self
            .node_by_name(name)
            .ok_or_else(|| NodeChangeError::NotFound(name.to_string()))?;
        let old = node.endpoint();
        let auth_changed = edit.auth.is_some();
        let tls_changed = edit.tls.is_some();
        let auth = match edit.auth {
            Some(a) => a,
            None => old.credentials.clone(),
        };
        let current = node.agent();
        let agent_token_changed = matches!(&edit.agent, Some(Some(a)) if a.token.is_some());
        let agent = match edit.agent {
            None => current_agent(&node),
            Some(None) => None,
            Some(Some(a)) => {
                let token = match a.token {
                    Some(t) => t,
                    None => current.as_ref().and_then(|c| c.token().map(str::to_string)),
                };
                Some(AgentConfig::parse(&a.url, token)?)
            }
        };
        let c = NodeConfig::parse(
            name,
            edit.url.as_deref().unwrap_or(&old.url),
            auth,
            edit.capacity
                .unwrap_or_else(|| node.capacity.load(Ordering::Acquire)),
            edit.state.unwrap_or_else(|| node.state()),
        )?
        .with_agent(agent);
        // The node's TLS settings (checked when it was configured, or by the edit) stay
        // with it; a URL moved to http:// has none.
        let c = if c.target.tls {
            c.with_tls(edit.tls.unwrap_or_else(|| old.trust.clone()))
        } else {
            c
        };
        self.check_unique(&c, Some(node.id))?;
        // Stored for every node: a config-file node's record holds its run-time changes and
        // wins over the file at the next start.
        let mut rec = record(&c, node.source);
        if node.source == NodeSource::Config && !auth_changed {
            // The file's token (often from the environment) stays the file's: not copied
            // into the store, and a rotated one is picked up at the next start.
            rec.auth = None;
        }
        if node.source == NodeSource::Config && !agent_token_changed {
            // The same for the agent's token.
            if let Some(Some(a)) = &mut rec.agent {
                a.token = None;
            }
        }
        if node.source == NodeSource::Config && !tls_changed {
            // The file's `ca_file` stays the file's too (a changed file is read at the next
            // start).
            rec.ca_file = None;
            rec.tls_host = None;
        }
        self.store.commit(vec![Op::PutNode(rec)], timeout).await?;
        let endpoint = c.endpoint();
        if endpoint != *old {
            node.set_endpoint(endpoint);
        }
        node.capacity.store(c.capacity, Ordering::Release);
        node.set_state(c.state);
        node.set_agent(c.agent.clone());
        self.nodes_changed();
        log::info!("node {name} edited");
        Ok(node)
    }

    /// Removes a node that holds nothing the router tracks. Refused while it has bots,
    /// templates, copies to stop or creates in flight (which can never start meanwhile:
    /// the node is closed to reservations in the same step the check passes).
    pub async fn remove_node(&self, name: &str, timeout: Duration) -> Result<(), NodeChangeError> {
        let _changing = self.node_changes.lock().await;
        let node = self
            .node_by_name(name)
            .ok_or_else(|| NodeChangeError::NotFound(name.to_string()))?;
        if node.source == NodeSource::Config {
            return Err(NodeChangeError::FromConfig(name.to_string()));
        }
        if node.evacuating.load(Ordering::Acquire) {
            return Err(NodeChangeError::Evacuating(name.to_string()));
        }
        let refuse = |holdings| NodeChangeError::NotEmpty {
            node: name.to_string(),
            holdings,
        };
        if !node.load.close() {
            return Err(refuse(self.holdings(node.id)));
        }
        let holdings = self.holdings(node.id);
        if holdings != Holdings::default() {
            node.load.reopen();
            return Err(refuse(holdings));
        }
        if let Err(e) = self
            .store
            .commit(vec![Op::DeleteNode(name.to_string())], timeout)
            .await
        {
            node.load.reopen();
            return Err(e.into());
        }
        node.removed.store(true, Ordering::Release);
        node.healthy.store(false, Ordering::Release);
        self.tables.write().gone.drop_node(node.id);
        let list = self.nodes().without(node.id);
        self.nodes.store(Arc::new(list));
        self.nodes_changed();
        log::info!("node {name} removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::api_json::BotInfo;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{Snapshot, Store, StoreHandle};

    fn cfg(name: &str, port: u16) -> NodeConfig {
        NodeConfig::parse(
            name,
            &format!("http://127.0.0.1:{port}"),
            None,
            10,
            NodeState::Ready,
        )
        .expect("node")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn cluster(dir: &std::path::Path, nodes: &[NodeConfig]) -> Cluster {
        let store =
            StoreHandle::spawn(Box::new(EmbeddedStore::open(dir).expect("open"))).expect("spawn");
        let snap = futures::executor::block_on(store.load()).expect("load");
        Cluster::new(nodes, snap, store)
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn nodes_are_added_edited_and_removed_with_stable_ids() {
        let dir = tempfile::tempdir().expect("dir");
        let rt = rt();
        let c = cluster(dir.path(), &[cfg("a", 1), cfg("b", 2)]);
        let b = c.node_by_name("b").expect("b");
        assert_eq!(b.id, NodeId(1));
        let added = rt.block_on(c.add_node(cfg("c", 3), T)).expect("add");
        assert_eq!(added.id, NodeId(2));
        assert!(
            !added.is_healthy(),
            "a new node is down until its first poll"
        );
        assert!(matches!(
            rt.block_on(c.add_node(cfg("c", 9), T)),
            Err(NodeChangeError::NameTaken(_))
        ));
        assert!(matches!(
            rt.block_on(c.add_node(cfg("d", 1), T)),
            Err(NodeChangeError::AddressTaken { .. })
        ));
        // An edit keeps the node (id, load counters) and makes it down until polled again.
        added.observe_poll(true, 1, 1);
        added.load.force(3, 0);
        let edit = NodeEdit {
            url: Some("http://127.0.0.1:4".into()),
            capacity: Some(50),
            ..NodeEdit::default()
        };
        let edited = rt.block_on(c.edit_node("c", edit, T)).expect("edit");
        assert!(Arc::ptr_eq(&edited, &added));
        assert_eq!(edited.load.running(), 3, "load counters survive an edit");
        assert_eq!(edited.capacity.load(Ordering::Acquire), 50);
        assert_eq!(edited.endpoint().addr.port(), 4);
        assert!(!edited.is_healthy(), "a new URL is down until polled");
        let bad = NodeEdit {
            capacity: Some(0),
            ..NodeEdit::default()
        };
        match rt.block_on(c.edit_node("c", bad, T)) {
            Err(NodeChangeError::Invalid(e)) => assert_eq!(e.field, "capacity"),
            other => panic!("{other:?}"),
        }
        // Removal: refused while the node holds a bot or a create is in flight.
        let g = c.generation();
        let bot = BotInfo {
            id: Some(0),
            name: None,
            server: Some("ts.x".into()),
            status: 2,
        };
        c.reconcile(NodeId(2), std::slice::from_ref(&bot), g);
        assert!(matches!(
            rt.block_on(c.remove_node("c", T)),
            Err(NodeChangeError::NotEmpty { holdings, .. }) if holdings.bots == 1
        ));
        let g = c.generation();
        c.reconcile(NodeId(2), &[], g);
        assert!(edited.load.try_reserve(50));
        assert!(matches!(
            rt.block_on(c.remove_node("c", T)),
            Err(NodeChangeError::NotEmpty { .. })
        ));
        edited.load.release();
        rt.block_on(c.remove_node("c", T)).expect("remove");
        assert!(c.node(NodeId(2)).is_none());
        assert!(edited.removed.load(Ordering::Acquire));
        assert!(
            !edited.load.try_reserve(50),
            "a removed node takes no reservation"
        );
        assert!(matches!(
            rt.block_on(c.remove_node("c", T)),
            Err(NodeChangeError::NotFound(_))
        ));
        // A node added later never gets a removed node's id.
        let again = rt.block_on(c.add_node(cfg("c", 3), T)).expect("re-add");
        assert_eq!(again.id, NodeId(3));
    }

    fn reopen(dir: &std::path::Path) -> Snapshot {
        // Let the old store worker release the file.
        for _ in 0..100 {
            if let Ok(s) = EmbeddedStore::open(dir) {
                return futures::executor::block_on(s.load()).expect("load");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the store does not reopen");
    }

    /// Agents set at run time are stored and come back; a config-file node's agent token
    /// stays the file's (not copied into the store); a removed agent stays removed.
    #[test]
    fn agents_are_stored_and_a_config_nodes_token_stays_the_files() {
        let dir = tempfile::tempdir().expect("dir");
        let rt = rt();
        let file_agent =
            AgentConfig::parse("http://127.0.0.1:7001", Some("file-token".into())).expect("agent");
        let a = cfg("a", 1).with_agent(Some(file_agent.clone()));
        let b = cfg("b", 2).with_agent(Some(file_agent.clone()));
        {
            let c = cluster(dir.path(), &[a.clone(), b.clone()]);
            let set = |url: &str, token: Option<Option<&str>>| NodeEdit {
                agent: Some(Some(AgentEdit {
                    url: url.into(),
                    token: token.map(|t| t.map(str::to_string)),
                })),
                ..NodeEdit::default()
            };
            let x = rt.block_on(c.add_node(cfg("x", 5), T)).expect("add");
            assert!(x.agent().is_none());
            rt.block_on(c.edit_node("x", set("http://127.0.0.1:7005", Some(Some("x-token"))), T))
                .expect("edit x");
            // A new URL without a token keeps the current token.
            rt.block_on(c.edit_node("x", set("http://127.0.0.1:7006", None), T))
                .expect("edit x");
            let agent = x.agent().expect("agent");
            assert_eq!(
                (agent.url(), agent.token()),
                ("http://127.0.0.1:7006", Some("x-token"))
            );
            // A config-file node's agent moves; its token is the file's.
            rt.block_on(c.edit_node("a", set("http://127.0.0.1:7002", None), T))
                .expect("edit a");
            assert_eq!(
                c.node_by_name("a")
                    .and_then(|n| n.agent())
                    .and_then(|g| g.token().map(str::to_string))
                    .as_deref(),
                Some("file-token")
            );
            let off = NodeEdit {
                agent: Some(None),
                ..NodeEdit::default()
            };
            rt.block_on(c.edit_node("b", off, T)).expect("edit b");
            assert!(c.node_by_name("b").expect("b").agent().is_none());
            let bad = set("ftp://x", None);
            match rt.block_on(c.edit_node("x", bad, T)) {
                Err(NodeChangeError::Invalid(e)) => assert_eq!(e.field, "agent.url"),
                other => panic!("{other:?}"),
            }
            rt.block_on(c.store().flush(T)).expect("flush");
        }
        let snap = reopen(dir.path());
        let stored = |name: &str| {
            snap.nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.agent.clone())
        };
        let a_rec = stored("a").flatten().expect("a's agent");
        assert_eq!(
            (a_rec.url.as_str(), a_rec.token),
            ("http://127.0.0.1:7002", None)
        );
        assert_eq!(stored("b"), Some(None), "b's agent is stored as removed");
        let store = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        let c = Cluster::new(&[a, b], snap, store);
        let agent_of = |n: &str| {
            c.node_by_name(n)
                .and_then(|n| n.agent())
                .map(|g| (g.url().to_string(), g.token().map(str::to_string)))
        };
        assert_eq!(
            agent_of("a"),
            Some(("http://127.0.0.1:7002".into(), Some("file-token".into())))
        );
        assert_eq!(agent_of("b"), None);
        assert_eq!(
            agent_of("x"),
            Some(("http://127.0.0.1:7006".into(), Some("x-token".into())))
        );
    }

    #[test]
    fn run_time_nodes_are_stored_and_config_nodes_win_a_clash() {
        let dir = tempfile::tempdir().expect("dir");
        let rt = rt();
        {
            let c = cluster(dir.path(), &[cfg("a", 1)]);
            rt.block_on(c.add_node(cfg("x", 5), T)).expect("add");
            rt.block_on(c.add_node(cfg("y", 6), T)).expect("add");
            let edit = NodeEdit {
                capacity: Some(77),
                ..NodeEdit::default()
            };
            rt.block_on(c.edit_node("x", edit, T)).expect("edit");
            rt.block_on(c.remove_node("y", T)).expect("remove");
            // A config-file node's edit is stored as an override of the file.
            let edit = NodeEdit {
                capacity: Some(99),
                ..NodeEdit::default()
            };
            rt.block_on(c.edit_node("a", edit, T)).expect("edit a");
            rt.block_on(c.store().flush(T)).expect("flush");
        }
        // Let the old store worker release the file.
        let mut snap = None;
        for _ in 0..100 {
            if let Ok(s) = EmbeddedStore::open(dir.path()) {
                snap = Some(futures::executor::block_on(s.load()).expect("load"));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let snap: Snapshot = snap.expect("store reopens");
        let stored: Vec<(&str, u32, bool)> = snap
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.capacity, n.from_config))
            .collect();
        assert_eq!(stored, vec![("a", 99, true), ("x", 77, false)]);
        let store = StoreHandle::spawn(Box::new(EmbeddedStore::open(dir.path()).expect("open")))
            .expect("spawn");
        // The config file now also has an `x`: the file wins.
        let c = Cluster::new(&[cfg("a", 1), cfg("x", 8)], snap, store);
        let x = c.node_by_name("x").expect("x");
        assert_eq!(x.source, NodeSource::Config);
        assert_eq!(x.endpoint().addr.port(), 8);
        assert_eq!(
            c.node_by_name("a")
                .expect("a")
                .capacity
                .load(Ordering::Acquire),
            99,
            "the stored edit of a config-file node wins over the file"
        );
    }
}
