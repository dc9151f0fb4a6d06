//! Forming the seed group from `bootstrap_expect`, without an operator.
//!
//! A seed with an empty Raft store waits until SWIM shows exactly
//! `bootstrap_expect` seeds alive (itself included). It then asks each of
//! them, over a stream, whether it already runs a group and which seeds it
//! sees. Only when every one answers "no group" with the very same set does
//! it write the genesis state for that set — every seed computes the same
//! genesis from the same set, so no vote is needed. If any seed answers that
//! a group exists, this seed joins it with its empty store and waits for the
//! leader's snapshot (an operator adds a new seed with `shoal seeds add`).
//! The rule never lets two different sets form, so there is never more than
//! one group.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_consensus::{LogStore, NodeId, RaftConfig, RaftNode};

use super::messages::PeerMessage;
use super::{CoreError, NodeCore};

/// Where a seed stands in forming the group.
pub(super) enum Bootstrap<S: LogStore> {
    /// Not a seed: never runs Raft.
    NotSeed,
    /// A seed whose store is empty, waiting for the group to form.
    Waiting {
        storage: Option<S>,
        raft_seed: u64,
        next_probe_at: Duration,
        /// The set last probed, and each candidate's answer to it.
        probed: Vec<NodeId>,
        replies: BTreeMap<NodeId, (bool, Vec<NodeId>)>,
        warned_too_many: bool,
    },
    /// This seed runs a Raft node.
    Done,
}

/// Whether a store already holds Raft state (a restarted seed).
pub(super) fn is_initialized<S: LogStore>(storage: &S) -> Result<bool, CoreError> {
    let state = storage
        .initial_state()
        .map_err(|error| CoreError::Raft(shoal_consensus::Error::storage(error)))?;
    let last_index = storage
        .last_index()
        .map_err(|error| CoreError::Raft(shoal_consensus::Error::storage(error)))?;
    Ok(state.initialized() || last_index > 0)
}

impl<S: LogStore> Bootstrap<S> {
    pub(super) fn waiting(storage: S, raft_seed: u64, now: Duration) -> Self {
        Bootstrap::Waiting {
            storage: Some(storage),
            raft_seed,
            next_probe_at: now,
            probed: Vec::new(),
            replies: BTreeMap::new(),
            warned_too_many: false,
        }
    }

    /// Starts a Raft node on the empty store to join a group that exists.
    /// False if this agent is not a waiting seed.
    pub(super) fn join_existing(
        &mut self,
        node_id: &NodeId,
        raft: &mut Option<RaftNode<S>>,
    ) -> bool {
        let Bootstrap::Waiting {
            storage, raft_seed, ..
        } = self
        else {
            return false;
        };
        let storage = storage.take().expect("a waiting seed holds its store");
        match RaftNode::new(RaftConfig::new(node_id.clone()), storage, *raft_seed) {
            Ok(node) => {
                tracing::info!("joining the existing seed group with an empty log");
                *raft = Some(node);
                *self = Bootstrap::Done;
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot start raft to join the seed group");
                *self = Bootstrap::Done;
                false
            }
        }
    }
}

impl<S: LogStore> NodeCore<S> {
    /// The seeds this agent sees alive, sorted, itself included.
    pub(super) fn seed_candidates(&self) -> Vec<NodeId> {
        self.alive_seeds().into_iter().collect()
    }

    /// Called every Raft tick while this seed has no group.
    pub(super) fn bootstrap_step(&mut self, now: Duration) {
        if !matches!(self.bootstrap, Bootstrap::Waiting { .. }) {
            return;
        }
        let candidates = self.seed_candidates();
        let expect = self.config.bootstrap_expect;
        let me = self.node_id.clone();
        let Bootstrap::Waiting {
            probed,
            replies,
            warned_too_many,
            ..
        } = &mut self.bootstrap
        else {
            return;
        };
        if candidates.len() > expect && !*warned_too_many {
            *warned_too_many = true;
            tracing::warn!(
                seen = candidates.len(),
                expect,
                "more seeds alive than cluster.bootstrap_expect; not forming a group until they agree"
            );
        }
        if candidates.len() != expect || !candidates.contains(&me) {
            return;
        }
        if *probed != candidates {
            *probed = candidates.clone();
            replies.clear();
        }
        if self.try_bootstrap() {
            return;
        }
        let period = self.config.bootstrap_probe_period;
        let Bootstrap::Waiting { next_probe_at, .. } = &mut self.bootstrap else {
            return;
        };
        if now < *next_probe_at {
            return;
        }
        *next_probe_at = now + period;
        for candidate in candidates.iter().filter(|candidate| **candidate != me) {
            self.send(
                candidate,
                PeerMessage::BootstrapProbe {
                    candidates: candidates.clone(),
                },
            );
        }
    }

    pub(super) fn bootstrap_reply(
        &mut self,
        _now: Duration,
        from: &NodeId,
        bootstrapped: bool,
        candidates: Vec<NodeId>,
    ) {
        let Bootstrap::Waiting { replies, .. } = &mut self.bootstrap else {
            return;
        };
        replies.insert(from.clone(), (bootstrapped, candidates));
        if bootstrapped {
            let node_id = self.node_id.clone();
            self.bootstrap.join_existing(&node_id, &mut self.raft);
            self.after_raft();
            return;
        }
        self.try_bootstrap();
    }

    /// Forms the group if every candidate agreed; true if it did.
    fn try_bootstrap(&mut self) -> bool {
        let me = self.node_id.clone();
        let Bootstrap::Waiting {
            storage,
            raft_seed,
            probed,
            replies,
            ..
        } = &mut self.bootstrap
        else {
            return false;
        };
        if probed.len() != self.config.bootstrap_expect {
            return false;
        }
        let agreed = probed
            .iter()
            .filter(|candidate| **candidate != me)
            .all(|candidate| replies.get(candidate) == Some(&(false, probed.clone())));
        if !agreed {
            return false;
        }
        let mut store = storage.take().expect("a waiting seed holds its store");
        let voters = probed.clone();
        let raft_seed = *raft_seed;
        if let Err(error) = shoal_consensus::bootstrap(&mut store, &voters) {
            tracing::error!(%error, "cannot write the genesis state");
            self.bootstrap = Bootstrap::Done;
            return false;
        }
        match RaftNode::new(RaftConfig::new(me), store, raft_seed) {
            Ok(node) => {
                tracing::info!(voters = ?voters.iter().map(NodeId::as_str).collect::<Vec<_>>(), "seed group formed");
                self.raft = Some(node);
            }
            Err(error) => tracing::error!(%error, "cannot start raft after bootstrap"),
        }
        self.bootstrap = Bootstrap::Done;
        self.after_raft();
        true
    }
}
