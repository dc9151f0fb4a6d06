//! A test harness in the style of raft-rs's own: 3–5 [`RaftNode`]s over an in-memory
//! network, driven tick by tick with one seeded RNG.
//!
//! This is the shape the simulator will drive: construct nodes on [`MemStorage`],
//! call `tick`, route `Output::Send` messages (through the byte codec, as the agent
//! does), and crash nodes by dropping them and calling [`MemStorage::crash`].
//!
//! Safety is checked after every delivery round: at most one leader per term, and
//! every node's catalog hash at its applied index equals every other node's hash at
//! that index (each catalog is a prefix of the committed history).

#![allow(dead_code)] // Helpers are added ahead of the tests that use them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    Actor, AppliedCommand, CatalogIndex, Command, Digest, MemStorage, NodeId, Op, Output,
    PendingSync, RaftConfig, RaftNode, RequestId, Role, Term, bootstrap, decode_message,
    encode_message,
};

/// Most delivery rounds after one tick before the harness declares a livelock.
const ROUNDS_PER_TICK_MAX: usize = 1_000;

pub(crate) fn node_id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

/// A `set_config` command with a given request id.
pub(crate) fn set_config(request_id: &str, key: &str, value: &str) -> Command {
    Command {
        request_id: RequestId::new(request_id).unwrap(),
        actor: Actor("test".to_owned()),
        time_unix_ms: 1_700_000_000_000,
        op: Op::SetConfig {
            key: key.to_owned(),
            value: value.to_owned(),
            expected_version: None,
        },
    }
}

pub(crate) struct Cluster {
    pub(crate) nodes: BTreeMap<NodeId, Option<RaftNode<MemStorage>>>,
    pub(crate) stores: BTreeMap<NodeId, MemStorage>,
    configs: BTreeMap<NodeId, RaftConfig>,
    in_flight: VecDeque<Vec<u8>>,
    rng: ChaCha8Rng,
    /// Links that drop every message (ordered pairs: from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Probability in percent that any message is dropped.
    pub(crate) loss_percent: u32,
    pub(crate) applied: BTreeMap<NodeId, Vec<AppliedCommand>>,
    pub(crate) reads: BTreeMap<NodeId, Vec<(Vec<u8>, CatalogIndex)>>,
    /// A trace of every output, for determinism checks.
    pub(crate) history: Vec<String>,
    leaders_by_term: BTreeMap<Term, NodeId>,
    hashes_by_index: BTreeMap<CatalogIndex, Digest>,
    pub(crate) now_ticks: u64,
    /// Nodes hand out their syncs; the network finishes them in random order
    /// with message deliveries, so a sync can take "long".
    background: bool,
    syncs: BTreeMap<NodeId, PendingSync>,
}

impl Cluster {
    /// `n` bootstrapped seeds `n1..=n{n}`.
    pub(crate) fn new(n: usize, seed: u64) -> Cluster {
        Cluster::with_config(n, seed, |_| {})
    }

    /// `n` bootstrapped seeds whose stores sync in the background (as the agent's do).
    pub(crate) fn with_background_syncs(n: usize, seed: u64) -> Cluster {
        Cluster::build(n, seed, true, |_| {})
    }

    pub(crate) fn with_config(n: usize, seed: u64, adjust: impl Fn(&mut RaftConfig)) -> Cluster {
        Cluster::build(n, seed, false, adjust)
    }

    fn build(n: usize, seed: u64, background: bool, adjust: impl Fn(&mut RaftConfig)) -> Cluster {
        let names: Vec<NodeId> = (1..=n).map(|i| node_id(&format!("n{i}"))).collect();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            stores: BTreeMap::new(),
            configs: BTreeMap::new(),
            in_flight: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            blocked: BTreeSet::new(),
            loss_percent: 0,
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            history: Vec::new(),
            leaders_by_term: BTreeMap::new(),
            hashes_by_index: BTreeMap::new(),
            now_ticks: 0,
            background,
            syncs: BTreeMap::new(),
        };
        for name in &names {
            let mut store = MemStorage::new().sync_in_background(background);
            bootstrap(&mut store, &names).unwrap();
            let mut config = RaftConfig::new(name.clone());
            adjust(&mut config);
            cluster.configs.insert(name.clone(), config);
            cluster.stores.insert(name.clone(), store);
            cluster.start(name);
        }
        cluster
    }

    /// Adds an empty (not bootstrapped) node that can then be added to the group.
    pub(crate) fn add_empty_node(&mut self, name: &NodeId) {
        let config = self.configs.values().next().unwrap().clone();
        self.configs.insert(
            name.clone(),
            RaftConfig {
                node_id: name.clone(),
                ..config
            },
        );
        self.stores.insert(
            name.clone(),
            MemStorage::new().sync_in_background(self.background),
        );
        self.start(name);
    }

    /// Starts (or restarts) a node on its store, with a per-node RNG seed drawn from
    /// the cluster's RNG.
    pub(crate) fn start(&mut self, name: &NodeId) {
        let seed = self.rng.random::<u64>();
        let node =
            RaftNode::new(self.configs[name].clone(), self.stores[name].clone(), seed).unwrap();
        self.nodes.insert(name.clone(), Some(node));
        self.collect(name);
    }

    /// Crashes a node: it stops, and its store loses every unsynced write.
    pub(crate) fn crash(&mut self, name: &NodeId) {
        self.nodes.insert(name.clone(), None);
        // A sync still running never finishes: its writes are lost.
        self.syncs.remove(name);
        self.stores[name].crash();
        self.history
            .push(format!("{} crash {name}", self.now_ticks));
    }

    pub(crate) fn node(&self, name: &NodeId) -> &RaftNode<MemStorage> {
        self.nodes[name].as_ref().expect("node is up")
    }

    pub(crate) fn node_mut(&mut self, name: &NodeId) -> &mut RaftNode<MemStorage> {
        self.nodes
            .get_mut(name)
            .unwrap()
            .as_mut()
            .expect("node is up")
    }

    /// Cuts both directions between `a` and every node in `others`.
    pub(crate) fn partition(&mut self, group: &[NodeId]) {
        let all: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for a in group {
            for b in &all {
                if !group.contains(b) {
                    self.blocked.insert((a.clone(), b.clone()));
                    self.blocked.insert((b.clone(), a.clone()));
                }
            }
        }
    }

    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
    }

    /// The unique leader among running nodes in the highest term, if any.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(Term, NodeId)> = None;
        for node in self.nodes.values().flatten() {
            if node.role() == Role::Leader
                && best.as_ref().is_none_or(|(term, _)| node.term() > *term)
            {
                best = Some((node.term(), node.node_id().clone()));
            }
        }
        best.map(|(_, name)| name)
    }

    /// One tick on every running node, then deliver until quiet.
    pub(crate) fn tick(&mut self) {
        self.now_ticks += 1;
        let names: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for name in &names {
            if let Some(node) = self.nodes.get_mut(name).unwrap().as_mut() {
                node.tick().unwrap();
                self.collect(name);
            }
        }
        self.deliver();
    }

    pub(crate) fn run_ticks(&mut self, n_ticks: u64) {
        for _ in 0..n_ticks {
            self.tick();
        }
    }

    /// Ticks until `done` holds or `n_ticks_max` ticks passed; returns whether it held.
    pub(crate) fn run_until(&mut self, n_ticks_max: u64, done: impl Fn(&Cluster) -> bool) -> bool {
        for _ in 0..n_ticks_max {
            if done(self) {
                return true;
            }
            self.tick();
        }
        done(self)
    }

    pub(crate) fn elect(&mut self) -> NodeId {
        assert!(
            self.run_until(500, |c| c.leader().is_some()),
            "no leader elected"
        );
        self.leader().unwrap()
    }

    /// Delivers in-flight messages and finishes running syncs (and what they
    /// cause) until none are left.
    pub(crate) fn deliver(&mut self) {
        for _ in 0..ROUNDS_PER_TICK_MAX {
            if !self.deliver_one() {
                self.check_safety();
                return;
            }
        }
        panic!("delivery did not quiesce");
    }

    /// At most `n` steps of [`Cluster::deliver`], then the safety checks: stops
    /// with messages and syncs still in flight.
    pub(crate) fn deliver_some(&mut self, n: usize) {
        for _ in 0..n {
            if !self.deliver_one() {
                break;
            }
        }
        self.check_safety();
    }

    /// Finishes a running sync or delivers (or drops) one message; false when
    /// there was nothing to do.
    fn deliver_one(&mut self) -> bool {
        if !self.syncs.is_empty() && (self.in_flight.is_empty() || self.rng.random_range(0..3) == 0)
        {
            self.finish_a_sync();
            return true;
        }
        let Some(bytes) = self.in_flight.pop_front() else {
            return false;
        };
        let message = decode_message(&bytes).unwrap();
        let dropped = self
            .blocked
            .contains(&(message.from.clone(), message.to.clone()))
            || (self.loss_percent > 0 && self.rng.random_range(0..100) < self.loss_percent);
        let receiver_up = matches!(self.nodes.get(&message.to), Some(Some(_)));
        if dropped || !receiver_up {
            if message.is_snapshot()
                && let Some(Some(sender)) = self.nodes.get_mut(&message.from)
            {
                sender.report_snapshot(&message.to, false).unwrap();
                let from = message.from.clone();
                self.collect(&from);
            }
            return true;
        }
        let to = message.to.clone();
        // Errors from step are operating conditions (e.g. stale peers); ignore.
        let _ = self.node_mut(&to).step(message);
        self.collect(&to);
        true
    }

    /// Finishes one running sync, chosen at random.
    fn finish_a_sync(&mut self) {
        let pick = self.rng.random_range(0..self.syncs.len());
        let name = self.syncs.keys().nth(pick).expect("in range").clone();
        let sync = self.syncs.remove(&name).expect("picked");
        let result = sync.job.run();
        self.node_mut(&name)
            .finish_sync(sync.ticket, result)
            .unwrap();
        self.collect(&name);
    }

    /// Moves a node's outputs into the network and the records, and takes the
    /// sync it waits on.
    pub(crate) fn collect(&mut self, name: &NodeId) {
        let Some(Some(node)) = self.nodes.get_mut(name) else {
            return;
        };
        if let Some(sync) = node.take_sync() {
            self.syncs.insert(name.clone(), sync);
        }
        for output in node.drain_outputs() {
            match output {
                Output::Send(message) => {
                    self.in_flight.push_back(encode_message(&message).unwrap());
                }
                Output::Applied(applied) => {
                    self.history.push(format!(
                        "{} {name} applied {} {:?}",
                        self.now_ticks, applied.index, applied.result
                    ));
                    self.applied.entry(name.clone()).or_default().push(applied);
                }
                Output::ReadReady { context, index } => {
                    self.reads
                        .entry(name.clone())
                        .or_default()
                        .push((context, index));
                }
                other => self
                    .history
                    .push(format!("{} {name} {other:?}", self.now_ticks)),
            }
        }
    }

    fn check_safety(&mut self) {
        for node in self.nodes.values().flatten() {
            if node.role() == Role::Leader {
                let leader = self
                    .leaders_by_term
                    .entry(node.term())
                    .or_insert_with(|| node.node_id().clone());
                assert_eq!(
                    leader,
                    node.node_id(),
                    "two leaders in term {}",
                    node.term()
                );
            }
            let catalog = node.catalog();
            let hash = self
                .hashes_by_index
                .entry(catalog.applied_index())
                .or_insert_with(|| catalog.chain_hash());
            assert_eq!(
                *hash,
                catalog.chain_hash(),
                "{} diverged at {}",
                node.node_id(),
                catalog.applied_index()
            );
        }
    }

    /// Proposes at the current leader and runs until every running node applied it.
    pub(crate) fn propose_and_commit(&mut self, command: &Command) -> CatalogIndex {
        let leader = self.elect();
        let index = self.node_mut(&leader).propose(command).unwrap();
        self.collect(&leader);
        self.deliver();
        let committed = self.run_until(200, |c| {
            c.nodes
                .values()
                .flatten()
                .all(|node| node.applied_index() >= index)
        });
        assert!(committed, "proposal at {index} did not apply everywhere");
        index
    }
}
