//! Watching the seed group's Raft and every agent's catalog: the consensus
//! safety checks run after every input to a node, and the consensus metrics.
//!
//! * **One leader per term**: the first node seen leading a term owns it.
//! * **Committed entries never change or vanish**: every catalog seen at
//!   applied index `i` must carry the same hash chain as every other seen at
//!   `i` — across nodes, across crashes (`MemStorage::crash` drops unsynced
//!   writes) and restarts. A lost entry would show as a different entry at
//!   its index once the log moves on.
//! * **Every catalog is a prefix of the committed log**: no agent applies an
//!   index that no seed has committed, and its chain agrees at that index.
//! * **The minority never commits**: a seed's commit index only grows while
//!   it is connected (both ways, through no partition) to a majority of its
//!   voters. Messages never cross a cut (they are dropped at send and at
//!   arrival), so an increase inside a minority would be a Raft bug.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_consensus::Role as RaftRole;

use crate::network::Network;
use crate::node::Core;

/// How long after losing its majority a seed may still advance its commit
/// index (ten Raft ticks: far longer than in-flight acknowledgements take,
/// far shorter than any scenario's partition).
pub(crate) const MINORITY_GRACE: Duration = Duration::from_secs(1);

/// A problem found by [`RaftWatch::observe`].
#[derive(Debug)]
pub(crate) enum RaftViolation {
    TwoLeaders(String),
    Diverged(String),
    AheadOfCommit(String),
    MinorityCommit(String),
}

/// What the consensus observer keeps between events.
#[derive(Debug, Default)]
pub(crate) struct RaftWatch {
    /// Leader of each term, by node index.
    leaders: BTreeMap<u64, usize>,
    /// Chain hash seen at each applied index, and by whom first.
    chain: BTreeMap<u64, ([u8; 32], usize)>,
    /// Highest commit index any seed reported.
    pub(crate) committed_max: u64,
    /// Last commit index seen per node (0: none yet), by node index: read
    /// after every input, so a vector rather than a map.
    last_commit: Vec<u64>,
    /// When each seed last reached a majority of its voters, by node index.
    majority_seen: Vec<Option<Duration>>,
    /// Last applied index seen per node (0: none yet), to skip repeated work.
    last_applied: Vec<u64>,
    /// Role changes to leader (elections won).
    pub(crate) leader_changes: u64,
    /// Seconds without a majority-connected leader (sampled).
    pub(crate) leaderless: Duration,
}

impl RaftWatch {
    /// Terms that had a leader.
    pub(crate) fn elections(&self) -> usize {
        self.leaders.len()
    }

    /// Looks at node `index` after an input. `names` for messages;
    /// `net` for connectivity.
    pub(crate) fn observe(
        &mut self,
        index: usize,
        now: Duration,
        core: &Core,
        net: &Network,
        names: &[String],
        index_of_name: &dyn Fn(&str) -> Option<usize>,
    ) -> Vec<RaftViolation> {
        let mut violations = Vec::new();
        if self.last_applied.len() <= index {
            self.last_commit.resize(index + 1, 0);
            self.majority_seen.resize(index + 1, None);
            self.last_applied.resize(index + 1, 0);
        }
        if let Some(raft) = core.raft() {
            let term = raft.term().0;
            if raft.role() == RaftRole::Leader {
                let owner = *self.leaders.entry(term).or_insert_with(|| {
                    self.leader_changes += 1;
                    index
                });
                if owner != index {
                    violations.push(RaftViolation::TwoLeaders(format!(
                        "{} and {} both lead term {term}",
                        names[owner], names[index]
                    )));
                }
            }
            let commit = raft.commit_index().0;
            let last = std::mem::replace(&mut self.last_commit[index], commit);
            let voters: Vec<usize> = raft
                .voters()
                .iter()
                .filter_map(|voter| index_of_name(voter.as_str()))
                .collect();
            // A commit is explained by a voter that reaches a majority (both
            // ways) and can send to this node: the node itself as leader, or
            // a leader whose appends reach this follower.
            let majority = voters.iter().chain(std::iter::once(&index)).any(|&voter| {
                component_size(voter, &voters, net) * 2 > voters.len()
                    && (voter == index || !net.blocked(voter, index))
            });
            if majority {
                self.majority_seen[index] = Some(now);
            }
            if commit > last {
                let recently = self.majority_seen[index]
                    .is_some_and(|at| now.saturating_sub(at) <= MINORITY_GRACE);
                if voters.len() > 1 && !majority && !recently {
                    let reachable = component_size(index, &voters, net);
                    violations.push(RaftViolation::MinorityCommit(format!(
                        "{} advanced its commit index {last} → {commit} while reaching only {reachable} of {} voters and hearing from no majority",
                        names[index],
                        voters.len()
                    )));
                }
                self.committed_max = self.committed_max.max(commit);
            }
        }
        let catalog = core.catalog();
        let applied = catalog.applied_index().0;
        if applied > 0 && std::mem::replace(&mut self.last_applied[index], applied) != applied {
            if applied > self.committed_max && core.raft().is_none() {
                violations.push(RaftViolation::AheadOfCommit(format!(
                    "{} applied index {applied}, beyond any seed's commit index {}",
                    names[index], self.committed_max
                )));
            }
            let hash = catalog.chain_hash().0;
            match self.chain.get(&applied) {
                Some((seen, by)) if *seen != hash => {
                    violations.push(RaftViolation::Diverged(format!(
                        "{}'s catalog at index {applied} has another hash chain than {}'s",
                        names[index], names[*by]
                    )));
                }
                Some(_) => {}
                None => {
                    self.chain.insert(applied, (hash, index));
                }
            }
        }
        violations
    }

    /// A node restarted: its commit index starts over from its store.
    pub(crate) fn restarted(&mut self, index: usize) {
        if let Some(seen) = self.majority_seen.get_mut(index) {
            *seen = None;
            self.last_commit[index] = 0;
            self.last_applied[index] = 0;
        }
    }
}

/// How many of `voters` node `from` reaches through links open both ways
/// (itself included, if a voter), transitively: Raft needs round trips.
pub(crate) fn component_size(from: usize, voters: &[usize], net: &Network) -> usize {
    let mut reached = vec![from];
    let mut frontier = vec![from];
    while let Some(node) = frontier.pop() {
        for &voter in voters {
            if !reached.contains(&voter) && !net.blocked(node, voter) && !net.blocked(voter, node) {
                reached.push(voter);
                frontier.push(voter);
            }
        }
    }
    reached.iter().filter(|node| voters.contains(node)).count()
}
