//! The virtual network: latency, loss, duplication, reordering and
//! partitions between simulated agents.
//!
//! Every datagram is routed at send time: the partitions in force decide
//! whether it leaves at all, the link's quality (the defaults, or the most
//! recent degradation touching either end) decides whether it is lost,
//! duplicated or held back, and the latency distribution plus half the
//! region-to-region RTT decide when it arrives. Randomness comes from one
//! stream per sender, so one node's traffic does not shift another's draws.
//! A datagram is also dropped if a partition separates the ends when it
//! arrives (a cable cut mid-flight).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::rng::SimRng;
use crate::scenario::{LatencySpec, NetworkSpec};

/// A set of node indices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    pub(crate) fn insert(&mut self, node: usize) {
        let word = node / 64;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (node % 64);
    }

    pub(crate) fn remove(&mut self, node: usize) {
        if let Some(word) = self.words.get_mut(node / 64) {
            *word &= !(1 << (node % 64));
        }
    }

    pub(crate) fn contains(&self, node: usize) -> bool {
        self.words
            .get(node / 64)
            .is_some_and(|word| word & (1 << (node % 64)) != 0)
    }

    pub(crate) fn from_nodes(nodes: &[usize]) -> Self {
        let mut set = Self::default();
        for node in nodes {
            set.insert(*node);
        }
        set
    }
}

/// How one link behaves.
#[derive(Clone, Debug)]
pub(crate) struct LinkQuality {
    pub(crate) latency: LatencySpec,
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) reorder: f64,
    pub(crate) reorder_delay: Duration,
}

/// Group of each node for a partition (`NO_GROUP`: unaffected).
const NO_GROUP: u16 = u16::MAX;

/// Which links a partition cuts.
#[derive(Clone, Debug)]
pub(crate) enum Cut {
    /// No datagram between nodes of different groups; nodes in no group
    /// (bridges, the unlisted) are unaffected.
    Groups(Vec<u16>),
    /// No datagram from `from` to `to`.
    OneWay { from: NodeSet, to: NodeSet },
}

impl Cut {
    fn blocks(&self, from: usize, to: usize) -> bool {
        match self {
            Cut::Groups(group_of) => {
                let a = group_of.get(from).copied().unwrap_or(NO_GROUP);
                let b = group_of.get(to).copied().unwrap_or(NO_GROUP);
                a != NO_GROUP && b != NO_GROUP && a != b
            }
            Cut::OneWay {
                from: senders,
                to: receivers,
            } => senders.contains(from) && receivers.contains(to),
        }
    }

    fn involves(&self, node: usize) -> bool {
        match self {
            Cut::Groups(group_of) => group_of.get(node).is_some_and(|g| *g != NO_GROUP),
            Cut::OneWay { from, to } => from.contains(node) || to.contains(node),
        }
    }

    /// A cut from groups of node indices.
    pub(crate) fn groups(n_nodes: usize, groups: &[Vec<usize>]) -> Self {
        let mut group_of = vec![NO_GROUP; n_nodes];
        for (index, group) in groups.iter().enumerate() {
            for node in group {
                group_of[*node] = index as u16;
            }
        }
        Cut::Groups(group_of)
    }
}

#[derive(Clone, Debug)]
struct Partition {
    id: Option<String>,
    cut: Cut,
}

#[derive(Clone, Debug)]
struct Degradation {
    id: Option<String>,
    nodes: NodeSet,
    quality: LinkQuality,
}

/// The network between all simulated nodes.
#[derive(Debug)]
pub(crate) struct Network {
    default: LinkQuality,
    region_of: Vec<u16>,
    /// Half the round-trip time between two regions, by region index.
    rtt_half: Vec<Vec<Duration>>,
    partitions: Vec<Partition>,
    /// Partitions healed, with the time they were healed, kept so that a
    /// "down" verdict shortly after a heal is attributed to the partition.
    healed: Vec<(Cut, Duration)>,
    degradations: Vec<Degradation>,
    rngs: Vec<SimRng>,
}

impl Network {
    /// A network for nodes with the given names and regions.
    pub(crate) fn new(
        spec: &NetworkSpec,
        master_seed: u64,
        names: &[String],
        regions: &[String],
    ) -> anyhow::Result<Self> {
        let mut region_names: Vec<String> = regions.to_vec();
        region_names.sort();
        region_names.dedup();
        let index_of: BTreeMap<&str, u16> = region_names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i as u16))
            .collect();
        let mut rtt_half = vec![vec![Duration::ZERO; region_names.len()]; region_names.len()];
        for (key, rtt) in &spec.rtt {
            let (a, b) = key.split_once(':').expect("validated");
            let (Some(a), Some(b)) = (index_of.get(a), index_of.get(b)) else {
                anyhow::bail!("network.rtt {key:?} names a region no node is in");
            };
            rtt_half[*a as usize][*b as usize] = rtt.0 / 2;
            rtt_half[*b as usize][*a as usize] = rtt.0 / 2;
        }
        Ok(Self {
            default: LinkQuality {
                latency: spec.latency.clone(),
                loss: spec.loss,
                duplicate: spec.duplicate,
                reorder: spec.reorder,
                reorder_delay: spec.reorder_delay,
            },
            region_of: regions.iter().map(|r| index_of[r.as_str()]).collect(),
            rtt_half,
            partitions: Vec::new(),
            healed: Vec::new(),
            degradations: Vec::new(),
            rngs: names
                .iter()
                .map(|name| SimRng::stream(master_seed, &format!("net/{name}")))
                .collect(),
        })
    }

    /// Whether a partition in force drops datagrams from `from` to `to`.
    pub(crate) fn blocked(&self, from: usize, to: usize) -> bool {
        self.partitions.iter().any(|p| p.cut.blocks(from, to))
    }

    /// Whether a partition in force, or one healed less than `grace` ago,
    /// cuts `node` off from some other node: a "down" verdict about it is
    /// then explained by the partition (directly, or by gossip from a node
    /// on the other side).
    pub(crate) fn involved_recently(&self, node: usize, now: Duration, grace: Duration) -> bool {
        self.partitions.iter().any(|p| p.cut.involves(node))
            || self.healed.iter().any(|(cut, healed_at)| {
                now.saturating_sub(*healed_at) <= grace && cut.involves(node)
            })
    }

    /// Whether any partition is in force.
    pub(crate) fn partitioned(&self) -> bool {
        !self.partitions.is_empty()
    }

    pub(crate) fn add_partition(&mut self, id: Option<String>, cut: Cut) {
        self.partitions.push(Partition { id, cut });
    }

    /// Heals the partition named `id`, or all of them. Returns how many.
    pub(crate) fn heal(&mut self, id: Option<&str>, now: Duration) -> usize {
        let before = self.partitions.len();
        let mut kept = Vec::new();
        for partition in std::mem::take(&mut self.partitions) {
            if id.is_none() || partition.id.as_deref() == id {
                self.healed.push((partition.cut, now));
            } else {
                kept.push(partition);
            }
        }
        self.partitions = kept;
        // Keep the healed list short: only the last few matter.
        if self.healed.len() > 64 {
            self.healed.drain(..self.healed.len() - 64);
        }
        before - self.partitions.len()
    }

    pub(crate) fn degrade(&mut self, id: Option<String>, nodes: NodeSet, quality: LinkQuality) {
        self.degradations.push(Degradation { id, nodes, quality });
    }

    /// The default link quality, for building degradations from.
    pub(crate) fn default_quality(&self) -> &LinkQuality {
        &self.default
    }

    /// Undoes the degradation named `id`, or all of them.
    pub(crate) fn restore(&mut self, id: Option<&str>) -> usize {
        let before = self.degradations.len();
        self.degradations
            .retain(|d| id.is_some() && d.id.as_deref() != id);
        before - self.degradations.len()
    }

    /// Routes one datagram sent at `now`: pushes each arrival time (none
    /// if lost, two if duplicated) into `arrivals`.
    pub(crate) fn transit(
        &mut self,
        from: usize,
        to: usize,
        now: Duration,
        arrivals: &mut Vec<Duration>,
    ) {
        arrivals.clear();
        if self.blocked(from, to) {
            return;
        }
        self.transit_ignoring_cuts(from, to, now, arrivals);
    }

    /// [`Network::transit`] as if no partition were in force (test-only
    /// breakage: `test_only.leaky_streams`).
    pub(crate) fn transit_ignoring_cuts(
        &mut self,
        from: usize,
        to: usize,
        now: Duration,
        arrivals: &mut Vec<Duration>,
    ) {
        arrivals.clear();
        let quality = self
            .degradations
            .iter()
            .rev()
            .find(|d| d.nodes.contains(from) || d.nodes.contains(to))
            .map_or(&self.default, |d| &d.quality);
        let rng = &mut self.rngs[from];
        if rng.chance(quality.loss) {
            return;
        }
        let copies = if rng.chance(quality.duplicate) { 2 } else { 1 };
        let base = self.rtt_half[self.region_of[from] as usize][self.region_of[to] as usize];
        for _ in 0..copies {
            let mut delay = base
                + match &quality.latency {
                    LatencySpec::Constant { value } => *value,
                    LatencySpec::Uniform { min, max } => rng.duration_between(*min, *max),
                    LatencySpec::Exponential { min, mean } => *min + rng.exponential(*mean),
                };
            if rng.chance(quality.reorder) {
                delay += rng.duration_between(Duration::ZERO, quality.reorder_delay);
            }
            arrivals.push(now + delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(spec: NetworkSpec, n: usize) -> Network {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let regions = vec!["r".to_string(); n];
        Network::new(&spec, 1, &names, &regions).unwrap()
    }

    #[test]
    fn partitions_cut_between_groups_only() {
        let mut network = net(NetworkSpec::default(), 5);
        // Bridge: {0,1} | {2,3}, node 4 in no group reaches both.
        network.add_partition(None, Cut::groups(5, &[vec![0, 1], vec![2, 3]]));
        assert!(network.blocked(0, 2) && network.blocked(3, 1));
        assert!(!network.blocked(0, 1) && !network.blocked(4, 0) && !network.blocked(2, 4));
        network.add_partition(
            Some("x".into()),
            Cut::OneWay {
                from: NodeSet::from_nodes(&[4]),
                to: NodeSet::from_nodes(&[0]),
            },
        );
        assert!(network.blocked(4, 0) && !network.blocked(0, 4));
        assert_eq!(network.heal(Some("x"), Duration::ZERO), 1);
        assert!(!network.blocked(4, 0) && network.blocked(0, 2));
        assert!(network.involved_recently(4, Duration::from_secs(1), Duration::from_secs(2)));
        assert_eq!(network.heal(None, Duration::ZERO), 1);
        assert!(!network.partitioned());
    }

    #[test]
    fn loss_duplicates_and_latency() {
        let spec = NetworkSpec {
            latency: LatencySpec::Constant {
                value: Duration::from_millis(3),
            },
            loss: 0.5,
            duplicate: 0.5,
            ..NetworkSpec::default()
        };
        let mut network = net(spec, 2);
        let mut arrivals = Vec::new();
        let (mut lost, mut doubled) = (0, 0);
        for _ in 0..1000 {
            network.transit(0, 1, Duration::ZERO, &mut arrivals);
            match arrivals.len() {
                0 => lost += 1,
                2 => doubled += 1,
                _ => {}
            }
            assert!(arrivals.iter().all(|at| *at == Duration::from_millis(3)));
        }
        assert!((400..600).contains(&lost), "{lost}");
        assert!((150..350).contains(&doubled), "{doubled}");
    }
}
