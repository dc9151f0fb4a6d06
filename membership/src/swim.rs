//! The membership node core: foca's SWIM with our runtime, timers,
//! Lifeguard, seeds and member metadata, shaped like `quinn-proto`.
//!
//! Inputs arrive through [`Membership::handle_datagram`] and
//! [`Membership::handle_timeout`], each with `now`; outputs leave through
//! [`Membership::poll_transmit`], [`Membership::poll_event`] and
//! [`Membership::poll_timeout`]. The driver (the agent's tokio shell or the
//! simulator) owns sockets and clocks; this file owns every timer, so timers
//! are delivered in order and stale ones do nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque, btree_map};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foca::{
    AccumulatingRuntime, BroadcastHandler, Foca, Incarnation, Invalidates, Member, Message,
    OwnedNotification, PeriodicParams, ProbeNumber, State, Timer, TimerToken,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::codec::{CLUSTER_NAME_LEN_MAX, DropReason, Envelope, MsgpackCodec};
use crate::lifeguard::{LocalHealth, suspicion_timeout};
use crate::lookup::LookupMap;
use crate::rings::ProbeRings;
use crate::summary::SummaryRow;
use crate::telemetry::{
    DatabaseReport, DeltaSource, HostMetrics, TelemetryAction, TelemetryConfig, TelemetryError,
    TelemetryKey, TelemetryStore,
};
use crate::{Generation, Identity, NodeId};

/// Most timers handled in one [`Membership::handle_timeout`] call; the rest
/// wait for the next call. Guards against a timer that keeps rescheduling
/// itself at `now`.
pub const TIMERS_PER_CALL_MAX: usize = 10_000;
/// Most a poor local health stretches a suspicion timeout (probe timeouts
/// stretch up to `1 + health_max`).
pub const SUSPICION_STRETCH_MAX: u32 = 2;
/// Most accusers remembered per suspected member and incarnation.
pub const ACCUSERS_PER_SUSPECT_MAX: usize = 16;
/// Most (suspect, incarnation) pairs with accusations remembered; past it
/// new accusations are dropped (they only shorten timeouts).
pub const ACCUSED_MAX: usize = 4_096;
/// Most queued outputs (transmits plus events) before the core refuses to
/// queue more; a driver that keeps up never sees it.
pub const OUTPUT_QUEUE_MAX: usize = 65_536;
/// Smallest datagram we can be asked to fit in; below this not even a header
/// with two identities fits.
pub const PACKET_BYTES_MIN: usize = 512;
/// Most indirect probes this node makes for others at once; more are not
/// tracked (and not nacked).
pub const HELPING_MAX: usize = 64;
/// How many of this node's latest probes remember the members they asked to
/// probe indirectly, so that a nack arriving after the probe ended counts.
const PROBES_ASKED_MAX: usize = 4;
/// First byte of a datagram payload that is a [`Nack`], not a foca packet.
/// 0xc1 is the one byte MessagePack never uses, and our codec writes foca's
/// packets in MessagePack, so no foca payload starts with it.
const NACK_MARKER: u8 = 0xc1;
/// How many telemetry deltas from others foca's backlog holds for this node
/// to pass on: relaying a new one drops the one relayed this many relays
/// before it, if it is still there. foca sends the entries with the most
/// transmissions left first and walks its whole backlog on every send, so
/// older deltas would only wait behind fresher ones, at a cost on every
/// packet; anti-entropy delivers what the gossip leaves out. Without the
/// bound, a boot of 1,000 agents puts every agent's first record in every
/// backlog. This node's own deltas and accusations are never dropped.
pub const TELEMETRY_RELAYS_HELD: u64 = 256;

/// Membership settings. Every duration is in virtual or real time alike.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// Packets of another cluster name are dropped. 1 to 64 bytes.
    pub cluster_name: String,
    /// How often this node probes one member. Default 500 ms. Lower detects
    /// faster at the cost of more messages per second (at 200 agents the
    /// simulator measured 14.6 datagrams and 14 KB per agent per second,
    /// telemetry included; see BENCHMARKS.md).
    pub probe_period: Duration,
    /// How long a direct probe waits for an ack before asking others to
    /// probe indirectly. Default 250 ms; must be below `probe_period`.
    pub probe_timeout: Duration,
    /// Probe targets from probe rings (default): in each probe period this
    /// node probes its successor on one of [`crate::rings::RINGS`] rings
    /// hashed from node ids, counted on the wall clock so that agents count
    /// alike, and every member is probed about once per period cluster-wide:
    /// a crash is probed within one period. `false`: foca's own shuffled
    /// round robin, where the wait for the first probe is close to
    /// exponential (see `rings.rs`).
    pub probe_rings: bool,
    /// How many members are asked to probe indirectly. Default 5: at 20%
    /// packet loss a probe then fails for a live member about 2.6% of the
    /// time instead of 7.4% (with 3), which the simulator measured as 1
    /// false "down" verdict instead of 54 (see BENCHMARKS.md). Indirect
    /// probes are sent only after a direct probe failed, so the cost is
    /// small when the network is healthy.
    pub indirect_probes: usize,
    /// Suspicion timeout once enough independent accusers agree (or at
    /// once, without Lifeguard). Default 2 s.
    pub suspect_timeout_min: Duration,
    /// Suspicion timeout with no confirmation (Lifeguard only). Default 5 s;
    /// must be at least `suspect_timeout_min`.
    pub suspect_timeout_max: Duration,
    /// Independent accusers after which the suspicion timeout reaches its
    /// minimum. Default 3.
    pub confirmations_expected: u32,
    /// Lifeguard on (default) or off (plain foca SWIM, for comparison).
    pub lifeguard: bool,
    /// Highest local health score; timeouts stretch by up to `1 + max`.
    /// Default 8.
    pub health_max: u32,
    /// A timer delivered this late counts as a sign that this node is slow.
    /// Default 200 ms.
    pub timer_late_threshold: Duration,
    /// How often pending updates are gossiped. Default 200 ms.
    pub gossip_period: Duration,
    /// Members gossiped to each period. Default 3.
    pub gossip_fanout: usize,
    /// Times each update is sent before it is dropped from the backlog.
    /// `None` (default): it grows with the cluster, 4 more than 4 × the
    /// number of decimal digits of the active member count `n` (this node
    /// included) — memberlist's `4 * ceil(log10(n + 1))` plus 4 — and never
    /// below 10: 10 below 10 members, 12 to 99, 16 to 999, 20 to 9,999. A
    /// member misses an update with a chance of about `e^-transmissions`
    /// (more under loss), so about `n * e^-transmissions` members miss each
    /// update: below 1e-3 at every size with these counts, while
    /// memberlist's 12 at 999 members left one member in ~160 updates to
    /// learn a crash from push-pull seconds later. The floor keeps
    /// refutations reaching everyone at 20 % loss (8 at 50 members gave 20x
    /// the false downs). `Some(k)`: always `k`.
    pub max_transmissions: Option<u8>,
    /// Most times a telemetry delta received from another agent is relayed
    /// (never more than the update count above; at least 1). `None`
    /// (default): [`RELAY_TRANSMISSIONS_MAX`] (10). An agent sends its own
    /// deltas, and relays Lifeguard accusations, the full update count.
    /// Telemetry relays need fewer: anti-entropy repairs a missed record
    /// within `anti_entropy_interval`, and about 90 % of the relayed copies
    /// an agent receives are of records it already holds. At 1,000 agents
    /// (20 transmissions), 10 cut the simulator's boot by about 12 % and a
    /// whole `steady_1000` run by 3–4 % (BENCHMARKS.md, thirteenth round).
    pub relay_transmissions: Option<u8>,
    /// How often the full member list is exchanged with a random member.
    /// Default 30 s.
    pub announce_period: Duration,
    /// How often down members are announced to, so partitions heal by
    /// themselves. Default 10 s.
    pub announce_down_period: Duration,
    /// How often seeds not seen alive are announced to. While this node
    /// knows nobody it retries every `probe_period` instead. Default 10 s.
    pub seed_announce_period: Duration,
    /// How long a down member is remembered (and announced to) before it is
    /// forgotten. Default 1 h. A partition longer than this still heals
    /// through the seeds.
    pub remove_down_after: Duration,
    /// Largest datagram, envelope included. Default 1150 bytes: below the
    /// smallest datagram QUIC guarantees before MTU discovery.
    pub packet_bytes_max: usize,
    /// How often this node exchanges its whole member table with a random
    /// member over a stream (push-pull), and with a seed when it joins.
    /// Default 30 s. This is how a joining or restarted node learns every
    /// member at once, and how views converge after a partition.
    pub push_pull_period: Duration,
    /// Telemetry dissemination: rates and sizes (see [`TelemetryConfig`]).
    pub telemetry: TelemetryConfig,
}

impl MembershipConfig {
    /// Defaults for a LAN cluster named `cluster_name`.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            probe_period: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(250),
            probe_rings: true,
            indirect_probes: 5,
            suspect_timeout_min: Duration::from_secs(2),
            suspect_timeout_max: Duration::from_secs(5),
            confirmations_expected: 3,
            lifeguard: true,
            health_max: 8,
            timer_late_threshold: Duration::from_millis(200),
            gossip_period: Duration::from_millis(200),
            gossip_fanout: 3,
            max_transmissions: None,
            relay_transmissions: None,
            announce_period: Duration::from_secs(30),
            announce_down_period: Duration::from_secs(10),
            seed_announce_period: Duration::from_secs(10),
            remove_down_after: Duration::from_secs(3600),
            packet_bytes_max: 1150,
            push_pull_period: Duration::from_secs(30),
            telemetry: TelemetryConfig::default(),
        }
    }

    /// foca's own `Config::new_lan(cluster_size)` timings with Lifeguard
    /// off: the baseline the benchmarks compare against.
    pub fn foca_lan_baseline(cluster_name: impl Into<String>, cluster_size: u32) -> Self {
        let lan = foca::Config::new_lan(std::num::NonZeroU32::new(cluster_size.max(1)).unwrap());
        Self {
            probe_period: lan.probe_period,
            probe_timeout: lan.probe_rtt,
            indirect_probes: lan.num_indirect_probes.get(),
            suspect_timeout_min: lan.suspect_to_down_after,
            suspect_timeout_max: lan.suspect_to_down_after,
            lifeguard: false,
            probe_rings: false,
            max_transmissions: Some(lan.max_transmissions.get()),
            // foca's one count for everything, whatever it is set to.
            relay_transmissions: Some(u8::MAX),
            ..Self::new(cluster_name)
        }
    }

    /// Checks every constraint; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: String| Err(ConfigError { field, problem });
        if self.cluster_name.is_empty() || self.cluster_name.len() > CLUSTER_NAME_LEN_MAX {
            return bad(
                "cluster_name",
                format!("must be 1 to {CLUSTER_NAME_LEN_MAX} bytes"),
            );
        }
        if self.probe_period.is_zero() {
            return bad("probe_period", "must be positive".into());
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_period {
            return bad(
                "probe_timeout",
                "must be positive and below probe_period".into(),
            );
        }
        if self.indirect_probes == 0 {
            return bad("indirect_probes", "must be at least 1".into());
        }
        if self.suspect_timeout_min.is_zero() {
            return bad("suspect_timeout_min", "must be positive".into());
        }
        if self.suspect_timeout_max < self.suspect_timeout_min {
            return bad(
                "suspect_timeout_max",
                "must be at least suspect_timeout_min".into(),
            );
        }
        if self.gossip_period.is_zero() || self.gossip_fanout == 0 {
            return bad("gossip_period", "period and fanout must be positive".into());
        }
        if self.max_transmissions == Some(0) {
            return bad("max_transmissions", "must be at least 1".into());
        }
        if self.relay_transmissions == Some(0) {
            return bad("relay_transmissions", "must be at least 1".into());
        }
        for (field, period) in [
            ("announce_period", self.announce_period),
            ("announce_down_period", self.announce_down_period),
            ("seed_announce_period", self.seed_announce_period),
            ("remove_down_after", self.remove_down_after),
            ("push_pull_period", self.push_pull_period),
        ] {
            if period.is_zero() {
                return bad(field, "must be positive".into());
            }
        }
        if self.packet_bytes_max < PACKET_BYTES_MIN || self.packet_bytes_max > 65_000 {
            return bad(
                "packet_bytes_max",
                format!("must be {PACKET_BYTES_MIN} to 65000"),
            );
        }
        Ok(())
    }

    /// Times each update is sent in a cluster of `members` active members
    /// (this node included); see [`Self::max_transmissions`].
    pub fn transmissions(&self, members: usize) -> NonZeroU8 {
        let count = self.max_transmissions.unwrap_or_else(|| {
            let digits = members.max(1).ilog10() + 1;
            u8::try_from(4 * digits + 4)
                .unwrap_or(u8::MAX)
                .max(TRANSMISSIONS_MIN)
        });
        NonZeroU8::new(count).expect("validated")
    }

    /// Times a telemetry delta from another agent is relayed in a cluster of
    /// `members`; see [`Self::relay_transmissions`].
    pub fn relay_transmissions(&self, members: usize) -> NonZeroU8 {
        let most = self.relay_transmissions.unwrap_or(RELAY_TRANSMISSIONS_MAX);
        let count = self.transmissions(members).get().min(most);
        NonZeroU8::new(count).expect("validated")
    }

    fn foca_config(&self, envelope_len: usize, members: usize) -> foca::Config {
        let nonzero = |n: usize| NonZeroUsize::new(n).expect("validated positive");
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_timeout,
            num_indirect_probes: nonzero(self.indirect_probes),
            max_transmissions: self.transmissions(members),
            // With Lifeguard our runtime replaces this timeout per suspicion.
            suspect_to_down_after: self.suspect_timeout_min,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: nonzero(self.packet_bytes_max - envelope_len),
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams {
                frequency: self.announce_period,
                num_members: nonzero(1),
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: self.announce_down_period,
                num_members: nonzero(2),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_period,
                num_members: nonzero(self.gossip_fanout),
            }),
        }
    }
}

/// Room a queue keeps when it gives back what a flood grew it to (see
/// `release_idle_capacity`).
const QUEUE_KEPT_CAPACITY: usize = 64;

/// The first periodic push-pull after the start; see `push_pull_interval`.
const PUSH_PULL_FIRST: Duration = Duration::from_secs(2);

/// The first telemetry anti-entropy round after a join; see
/// `TelemetryStore::anti_entropy_soon`. By then the joiner has heard of most
/// members (its first push-pull falls at the same time).
const JOIN_ANTI_ENTROPY_FIRST: Duration = Duration::from_secs(2);

/// Fewest transmissions of an update when the count grows with the cluster.
const TRANSMISSIONS_MIN: u8 = 10;

/// Most times a telemetry delta from another agent is relayed by default;
/// see [`MembershipConfig::relay_transmissions`].
pub const RELAY_TRANSMISSIONS_MAX: u8 = 10;

/// A configuration value that breaks a constraint; nothing was built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("membership.{field}: {problem}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// A datagram for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The node it is for (the driver checks the peer's certificate names it).
    pub node_id: NodeId,
    /// Where to send it.
    pub addr: SocketAddr,
    /// The whole datagram, envelope included.
    pub payload: Vec<u8>,
}

/// Something the driver may want to log or react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member became active (alive or suspect).
    MemberUp(Identity),
    /// A member was declared down (or left).
    MemberDown(Identity),
    /// A member's identity was replaced by a newer one (restart or rejoin).
    Renamed {
        /// The identity that was replaced.
        old: Identity,
        /// The identity that replaced it.
        new: Identity,
    },
    /// This node knows at least one active member.
    Active,
    /// This node knows no active member.
    Idle,
    /// The cluster declared this node down; it rejoins at once.
    Defunct,
    /// This node rejoined with a renewed identity.
    Rejoined(Identity),
}

/// A member's liveness as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Failed a probe; will be declared down unless it refutes in time.
    Suspect,
    /// Declared down (or left).
    Down,
}

impl MemberState {
    /// Every state, for exporting zeroed gauges.
    pub const ALL: [MemberState; 3] = [MemberState::Alive, MemberState::Suspect, MemberState::Down];

    /// Lowercase name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

/// One row of this node's member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Who, where, which generation, with metadata.
    pub identity: Identity,
    /// Alive, suspect or down.
    pub state: MemberState,
    /// When this node last received a packet from it (`None`: never directly,
    /// only through gossip). For the local node: now.
    pub last_heard: Option<Duration>,
    /// Whether this row is the local node itself.
    pub is_local: bool,
}

/// Counters of everything the core did, for metrics and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the driver.
    pub packets_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// Datagrams received (dropped or not).
    pub packets_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams dropped, by reason.
    pub drops: BTreeMap<DropReason, u64>,
    /// Direct probes started.
    pub probes: u64,
    /// Probes that got no ack, direct or indirect.
    pub probes_failed: u64,
    /// Suspicions this node raised after a failed probe.
    pub suspicions: u64,
    /// Suspicions that ran out and were handed to foca as "down".
    pub suspicions_expired: u64,
    /// Suspicions that ran out after the suspect had refuted them (a newer
    /// incarnation or identity was heard): settled without a verdict.
    pub suspicions_refuted_late: u64,
    /// Accusations received from other members.
    pub accusations_received: u64,
    /// Members this node learned were suspect, without timing the
    /// suspicion itself, that it asked directly whether they live.
    pub suspects_asked: u64,
    /// Accusations of this very node answered with a direct message to the
    /// accuser (which carries this node's current incarnation).
    pub accusations_answered: u64,
    /// Timers delivered later than `timer_late_threshold`.
    pub timers_late: u64,
    /// Times another member said this node was suspect.
    pub self_suspected: u64,
    /// Member-table push-pull exchanges merged (pushes and answers).
    pub push_pulls: u64,
    /// Periodic push-pulls skipped because both tables had the same summary.
    pub push_pulls_in_sync: u64,
    /// Stream messages that did not decode.
    pub streams_dropped: u64,
    /// Gossip rounds sent out of turn to spread a down verdict.
    pub early_gossips: u64,
    /// Nacks sent: this node probed a member for another and got no answer.
    pub nacks_sent: u64,
    /// Nacks received from members this node asked to probe indirectly;
    /// they confirm the suspicion the probe raised once all the helpers
    /// asked, or all but one, nacked (see `ProbeAsked::confirming`).
    pub nacks_received: u64,
    /// Telemetry deltas from others handed to foca to pass on; each drops
    /// the one handed over [`TELEMETRY_RELAYS_HELD`] relays before it.
    pub telemetry_relays: u64,
}

/// A member's claim that its probe of `target` failed: the Lifeguard
/// confirmation that shortens everyone else's suspicion of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Accusation {
    target: NodeId,
    target_generation: Generation,
    target_rejoin: u32,
    incarnation: Incarnation,
    accuser: NodeId,
}

/// A helper's answer to a member that asked it to probe `target`
/// indirectly: "I could not reach it either" (Lifeguard's nack). Sent
/// directly to the asker, never gossiped; it counts there as an independent
/// confirmation of the suspicion that probe raises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Nack {
    helper: NodeId,
    target: NodeId,
    probe_number: ProbeNumber,
}

/// One of this node's recent probes: the members it asked to probe the
/// target indirectly, and those that answered with a nack.
#[derive(Clone, Debug)]
struct ProbeAsked {
    target: NodeId,
    number: ProbeNumber,
    asked: BTreeSet<NodeId>,
    nacked: BTreeSet<NodeId>,
}

impl ProbeAsked {
    /// The helpers whose nacks confirm the suspicion: all of them once
    /// every helper asked, or all but one, nacked; none before.
    ///
    /// One helper's nack is weak evidence under loss: a single round trip
    /// to the target, lost a third of the time at 20 % packet loss, where
    /// an accuser's own failed probe took a direct and five indirect
    /// attempts. A crashed target is nacked by every helper that hears the
    /// request; a live one behind lossy links rarely by all but one.
    fn confirming(&self) -> impl Iterator<Item = &NodeId> {
        let quorum = !self.nacked.is_empty() && self.nacked.len() + 1 >= self.asked.len();
        self.nacked.iter().filter(move |_| quorum)
    }
}

/// First byte of a custom broadcast: what follows.
const BROADCAST_ACCUSATION: u8 = 1;
/// First byte of a custom broadcast carrying a telemetry delta.
const BROADCAST_TELEMETRY: u8 = 2;

/// What foca keeps per custom broadcast in its dissemination backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BroadcastKey {
    /// A Lifeguard accusation: (suspect, generation, rejoin, incarnation, accuser).
    Accusation(AccusationKey),
    /// A telemetry record or tombstone, and which relay of a delta from
    /// another member it is (`None`: this node's own).
    Telemetry(TelemetryKey, Option<u64>),
}

/// Identifies one accusation.
pub type AccusationKey = (NodeId, Generation, u32, Incarnation, NodeId);

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastKey::Accusation(mine), BroadcastKey::Accusation(theirs)) => mine == theirs,
            (BroadcastKey::Telemetry(mine, relay), BroadcastKey::Telemetry(theirs, older)) => {
                let aged_out = matches!((relay, older),
                    (Some(relay), Some(older)) if older + TELEMETRY_RELAYS_HELD <= *relay);
                aged_out || mine.invalidates(theirs)
            }
            _ => false,
        }
    }
}

/// State shared between the core and the codec/broadcast handler that foca
/// owns (foca offers no access to them once built). Only ever locked from
/// the thread driving the core, so never contended.
#[derive(Debug, Default)]
struct Inbox {
    local_node: Option<NodeId>,
    accusations_seen: BTreeSet<AccusationKey>,
    accusations_new: Vec<Accusation>,
    self_suspected_incarnation: Option<Incarnation>,
    self_suspected_new: u64,
    /// The authenticated sender of the datagram being decoded, if the driver
    /// knows it; a header claiming another sender is refused.
    expected_src: Option<NodeId>,
    impersonation: bool,
    /// The telemetry CRDT; it lives here because foca's broadcast handler
    /// must merge deltas as they arrive.
    telemetry: Option<TelemetryStore>,
    /// The core's `now`, for the handler.
    now: Duration,
    /// Telemetry deltas from others handed to foca to pass on, ever: the
    /// number of the latest relay (see [`TELEMETRY_RELAYS_HELD`]).
    relays: u64,
    /// How many times foca sends such a relay on; `None`: as any update.
    /// See [`MembershipConfig::relay_transmissions`].
    relay_transmissions: Option<NonZeroU8>,
}

#[derive(Clone, Debug)]
struct SharedInbox(Arc<Mutex<Inbox>>);

impl SharedInbox {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A poisoned lock means a panic in the core already; keep the state.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A broadcast that could not be decoded; the rest of the packet is dropped.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// An accusation that does not decode.
    #[error("bad accusation: {0}")]
    Accusation(#[from] rmp_serde::decode::Error),
    /// A telemetry delta that does not decode or validate.
    #[error("bad telemetry delta: {0}")]
    Telemetry(#[from] TelemetryError),
    /// An unknown broadcast kind.
    #[error("unknown broadcast kind {0}")]
    Kind(u8),
}

impl BroadcastHandler<Identity> for SharedInbox {
    type Key = BroadcastKey;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Identity>,
    ) -> Result<Option<BroadcastKey>, BroadcastError> {
        let Some((&kind, body)) = data.split_first() else {
            return Err(BroadcastError::Kind(0));
        };
        let mut inbox = self.lock();
        match kind {
            BROADCAST_ACCUSATION => {
                let accusation: Accusation = rmp_serde::from_slice(body)?;
                let key = (
                    accusation.target.clone(),
                    accusation.target_generation,
                    accusation.target_rejoin,
                    accusation.incarnation,
                    accusation.accuser.clone(),
                );
                if inbox.accusations_seen.len() >= ACCUSED_MAX * 4
                    || !inbox.accusations_seen.insert(key.clone())
                {
                    return Ok(None);
                }
                inbox.accusations_new.push(accusation);
                Ok(Some(BroadcastKey::Accusation(key)))
            }
            BROADCAST_TELEMETRY => {
                let now = inbox.now;
                let Some(store) = inbox.telemetry.as_mut() else {
                    return Ok(None);
                };
                let Some(key) = store.receive_delta(now, body, DeltaSource::from(sender))? else {
                    return Ok(None);
                };
                // foca hands this node's own deltas over without a sender.
                let relay = sender.map(|_| {
                    inbox.relays += 1;
                    inbox.relays
                });
                Ok(Some(BroadcastKey::Telemetry(key, relay)))
            }
            other => Err(BroadcastError::Kind(other)),
        }
    }

    /// Telemetry deltas from others are relayed fewer times than updates;
    /// accusations (nothing repairs a missed one) as many.
    fn relay_transmissions(&self, key: &BroadcastKey) -> Option<NonZeroU8> {
        match key {
            BroadcastKey::Telemetry(..) => self.lock().relay_transmissions,
            BroadcastKey::Accusation(_) => None,
        }
    }
}

/// foca's codec wrapped to notice when others suspect this node (a
/// Lifeguard sign that this node is the slow one).
#[derive(Debug)]
struct ObservingCodec {
    inner: MsgpackCodec,
    inbox: SharedInbox,
}

impl foca::Codec<Identity> for ObservingCodec {
    type Error = crate::codec::CodecError;

    fn encode_header(
        &mut self,
        header: &foca::Header<Identity>,
        buf: impl bytes::BufMut,
    ) -> Result<(), Self::Error> {
        self.inner.encode_header(header, buf)
    }

    fn decode_header(
        &mut self,
        buf: impl bytes::Buf,
    ) -> Result<foca::Header<Identity>, Self::Error> {
        let header = self.inner.decode_header(buf)?;
        let mut inbox = self.inbox.lock();
        if let Some(authenticated) = &inbox.expected_src
            && *authenticated != header.src.node_id
        {
            let error = crate::codec::CodecError::Impersonation {
                claimed: header.src.node_id.to_string(),
                authenticated: authenticated.to_string(),
            };
            inbox.impersonation = true;
            return Err(error);
        }
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &foca::Member<Identity>,
        buf: impl bytes::BufMut,
    ) -> Result<(), Self::Error> {
        self.inner.encode_member(member, buf)
    }

    fn decode_member(
        &mut self,
        buf: impl bytes::Buf,
    ) -> Result<foca::Member<Identity>, Self::Error> {
        let member = self.inner.decode_member(buf)?;
        if member.state() == State::Suspect {
            let mut inbox = self.inbox.lock();
            if inbox.local_node.as_ref() == Some(&member.id().node_id)
                && inbox.self_suspected_incarnation < Some(member.incarnation())
            {
                inbox.self_suspected_incarnation = Some(member.incarnation());
                inbox.self_suspected_new += 1;
            }
        }
        Ok(member)
    }
}

type SwimFoca = Foca<Identity, ObservingCodec, ChaCha8Rng, SharedInbox>;

/// A suspicion this node raised after its own probe failed.
#[derive(Clone, Debug)]
struct Suspicion {
    member: Identity,
    incarnation: Incarnation,
    token: TimerToken,
    started_at: Duration,
}

#[derive(Clone, Debug)]
enum CoreTimer {
    Foca(Timer<Identity>),
    SuspicionCheck(NodeId),
    /// Whether the target of an indirect probe made for another member
    /// answered: (target, origin, probe number).
    HelpCheck((NodeId, NodeId, ProbeNumber)),
    SeedAnnounce,
    /// Ask a suspect this node heard of (and does not time itself) again,
    /// unless its suspicion ended or was settled.
    AskSuspect(NodeId),
    Prune,
    Telemetry,
    PushPull,
}

/// The membership core of one node. See the module docs.
pub struct Membership {
    foca: SwimFoca,
    runtime: AccumulatingRuntime<Identity>,
    inbox: SharedInbox,
    config: MembershipConfig,
    envelope: Envelope,
    timers: BTreeMap<(Duration, u64), CoreTimer>,
    timer_seq: u64,
    health: LocalHealth,
    suspicions: BTreeMap<NodeId, Suspicion>,
    /// Members this node's own probes failed to reach (the identity's
    /// generation and rejoin, and the incarnation probed), kept while that
    /// incarnation stays suspect or down here: the unreachable peers its
    /// telemetry reports.
    probe_failures: BTreeMap<NodeId, (Generation, u32, Incarnation)>,
    /// The transmission count foca was last given.
    transmissions: NonZeroU8,
    /// Time to the next periodic push-pull: [`PUSH_PULL_FIRST`] after the
    /// start, doubling up to `push_pull_period`. Members that start
    /// together (a cluster's boot) learn each other from these exchanges
    /// within seconds; gossip alone, carrying n joins to n members, takes
    /// tens of seconds at 1,000 agents.
    push_pull_interval: Duration,
    /// Accusers heard of, by (suspect, generation, rejoin, incarnation).
    accusations: BTreeMap<(NodeId, Generation, u32, Incarnation), BTreeMap<NodeId, Duration>>,
    /// The probe in flight: target and probe number.
    probe: Option<(NodeId, foca::ProbeNumber)>,
    /// This node's latest probes that asked others to probe indirectly,
    /// newest last.
    probes_asked: VecDeque<ProbeAsked>,
    /// Indirect probes this node is making for others, by (target, origin,
    /// probe number): where the origin listens, for the nack.
    helping: BTreeMap<(NodeId, NodeId, ProbeNumber), SocketAddr>,
    seeds: BTreeMap<NodeId, SocketAddr>,
    /// When each member was last heard from: written for every packet
    /// received, never walked.
    last_heard: LookupMap<NodeId, Duration>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Anti-entropy messages for the driver to send on streams.
    streams: VecDeque<StreamOut>,
    /// For choices of our own (anti-entropy peers); foca has its own.
    rng: ChaCha8Rng,
    /// Whether [`Membership::leave`] was called.
    left: bool,
    /// Whom to probe in each probe period (see `MembershipConfig::probe_rings`).
    rings: ProbeRings,
    /// The wall-clock time at which `now` reads zero: probe periods are
    /// counted from the Unix epoch, alike on every agent.
    wall_base: Duration,
    /// foca's newest timer token (see `schedule_foca_timer`).
    foca_token: Option<TimerToken>,
    /// Since when each member has been suspect in this node's view.
    suspect_since: BTreeMap<NodeId, Duration>,
    /// Active members (alive or suspect) by node id, kept from foca's
    /// notifications: foca's own list is a vector walked from end to end,
    /// and the agent asks for seeds and addresses every Raft tick. Looked
    /// up for every packet, never walked. Only what is asked of it is kept:
    /// a whole identity per member, on every agent, was 7 % of a
    /// 1,000-agent simulation's memory.
    active: LookupMap<NodeId, ActiveMember>,
    /// The node ids in `active`, by role.
    active_by_role: BTreeMap<crate::Role, BTreeSet<NodeId>>,
    /// Bumped whenever a member of the role joins or leaves `active`.
    active_versions: BTreeMap<crate::Role, u64>,
    /// A member went down in this node's view: gossip the verdict now
    /// rather than at the next gossip period (see `drain_runtime`).
    gossip_now: bool,
    /// When this node last gossiped out of turn.
    gossiped_early_at: Option<Duration>,
    stats: Stats,
    now: Duration,
}

/// A membership-layer message for the driver to send on a stream to
/// `node_id`, which hands it to its [`Membership::handle_stream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOut {
    /// The receiver.
    pub node_id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The message.
    pub payload: Vec<u8>,
}

/// Most stream messages queued for the driver; more are dropped (the next
/// round repairs).
pub const STREAMS_QUEUED_MAX: usize = 64;
/// Most members accepted in one push-pull exchange.
pub const PUSH_PULL_MEMBERS_MAX: usize = 20_000;

/// First byte of a stream message: a telemetry anti-entropy message.
const STREAM_TELEMETRY: u8 = 1;
/// First byte of a stream message: "here is my member table; send yours".
const STREAM_MEMBERS_PUSH: u8 = 2;
/// First byte of a stream message: the answer to a push.
const STREAM_MEMBERS_PULL: u8 = 3;
/// First byte of a stream message: "this is a summary of my member table";
/// the receiver answers with a push only if its own summary differs.
const STREAM_MEMBERS_SUMMARY: u8 = 4;

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.foca.identity())
            .field("health", &self.health.score())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A core for `identity`, not yet in touch with anyone: call
    /// [`Membership::add_seed`] to join. `rng_seed` seeds every random
    /// choice; `now` is the driver's monotonic time.
    pub fn new(
        identity: Identity,
        config: MembershipConfig,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        identity.meta.validate().map_err(|problem| ConfigError {
            field: "labels",
            problem,
        })?;
        let envelope = Envelope::new(&config.cluster_name);
        let telemetry = TelemetryStore::new(
            config.telemetry.clone(),
            identity.node_id.clone(),
            identity.generation,
            identity.meta.version.clone(),
            now,
        )
        .map_err(|error| ConfigError {
            field: "telemetry",
            problem: error.to_string(),
        })?;
        let inbox = SharedInbox(Arc::new(Mutex::new(Inbox {
            local_node: Some(identity.node_id.clone()),
            telemetry: Some(telemetry),
            now,
            relay_transmissions: Some(config.relay_transmissions(1)),
            ..Inbox::default()
        })));
        let codec = ObservingCodec {
            inner: MsgpackCodec,
            inbox: inbox.clone(),
        };
        let transmissions = config.transmissions(1);
        let push_pull_interval = PUSH_PULL_FIRST.min(config.push_pull_period);
        let rings = ProbeRings::new(&identity.node_id);
        let foca = Foca::with_custom_broadcast(
            identity,
            config.foca_config(envelope.len(), 1),
            ChaCha8Rng::seed_from_u64(rng_seed),
            codec,
            inbox.clone(),
        );
        let mut core = Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            inbox,
            health: LocalHealth::new(config.health_max),
            config,
            envelope,
            timers: BTreeMap::new(),
            timer_seq: 0,
            suspicions: BTreeMap::new(),
            probe_failures: BTreeMap::new(),
            transmissions,
            push_pull_interval,
            accusations: BTreeMap::new(),
            probe: None,
            seeds: BTreeMap::new(),
            last_heard: LookupMap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            streams: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(rng_seed ^ 0x7E1E_3E7B),
            left: false,
            foca_token: None,
            suspect_since: BTreeMap::new(),
            active: LookupMap::default(),
            active_by_role: BTreeMap::new(),
            active_versions: BTreeMap::new(),
            rings,
            wall_base: Duration::ZERO,
            gossip_now: false,
            gossiped_early_at: None,
            probes_asked: VecDeque::new(),
            helping: BTreeMap::new(),
            stats: Stats::default(),
            now,
        };
        core.schedule(now + core.config.probe_period, CoreTimer::SeedAnnounce);
        core.schedule(now + core.config.suspect_timeout_max, CoreTimer::Prune);
        // Agents started together should not refresh and gossip in step.
        let refresh_ms = core.config.telemetry.refresh_interval.as_millis().max(1) as u64;
        let phase = Duration::from_millis(core.rng.random_range(0..refresh_ms));
        core.with_telemetry_mut(|store| store.set_phase(phase));
        core.schedule(now + phase, CoreTimer::Telemetry);
        core.schedule(now + core.push_pull_interval, CoreTimer::PushPull);
        Ok(core)
    }

    /// Sets the wall-clock time at which the driver's `now` reads zero
    /// (the agent: the Unix time it started at). Probe periods are counted
    /// on it, so that agents with probe rings agree on the period's ring
    /// (see [`MembershipConfig::probe_rings`]). Default zero: `now` is
    /// taken to be wall-clock time already.
    pub fn set_wall_base(&mut self, wall_base: Duration) {
        self.wall_base = wall_base;
    }

    /// This node's current identity (it changes when it rejoins).
    pub fn identity(&self) -> &Identity {
        self.foca.identity()
    }

    /// The configuration in force.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The local health score (0 = healthy).
    pub fn local_health(&self) -> u32 {
        self.health.score()
    }

    /// Custom broadcasts (telemetry deltas, accusations) foca holds to pass
    /// on.
    pub fn broadcast_backlog(&self) -> usize {
        self.foca.custom_broadcast_backlog()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many other members are active (alive or suspect).
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Remembers a seed and announces to it now and periodically while it
    /// is not seen alive. The driver learns the seed's node id from the
    /// seed itself (its TLS certificate) before calling this.
    pub fn add_seed(&mut self, now: Duration, node_id: NodeId, addr: SocketAddr) {
        self.advance(now);
        if node_id == self.identity().node_id {
            return;
        }
        self.seeds.insert(node_id.clone(), addr);
        self.announce_to(node_id.clone(), addr);
        self.push_members(node_id, addr);
    }

    /// Handles one received datagram. `from` is the sender as authenticated
    /// by the transport (the node id in its TLS certificate), when known; a
    /// packet claiming to be from someone else is dropped. Garbage, foreign
    /// and oversized packets are counted in [`Stats::drops`] and change
    /// nothing.
    pub fn handle_datagram(&mut self, now: Duration, from: Option<&NodeId>, packet: &[u8]) {
        self.advance(now);
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        self.inbox.lock().expected_src = from.cloned();
        let received = self.receive(packet);
        let impersonation = {
            let mut inbox = self.inbox.lock();
            inbox.expected_src = None;
            std::mem::take(&mut inbox.impersonation)
        };
        let received = match received {
            Err(_) if impersonation => Err(DropReason::Impersonation),
            other => other,
        };
        if let Err(reason) = received {
            *self.stats.drops.entry(reason).or_default() += 1;
            tracing::debug!(
                reason = reason.as_str(),
                len = packet.len(),
                "dropped datagram"
            );
        }
        self.take_inbox(now);
        self.drain_runtime(now);
    }

    /// Records a datagram the driver dropped before handing it over (for
    /// instance one larger than any packet we would send).
    pub fn record_drop(&mut self, reason: DropReason, len: usize) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += len as u64;
        *self.stats.drops.entry(reason).or_default() += 1;
    }

    /// Hands a packet to foca.
    fn receive(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        if packet.len() > self.config.packet_bytes_max {
            return Err(DropReason::TooBig);
        }
        let payload = self.envelope.open(packet)?;
        if let Some((&NACK_MARKER, body)) = payload.split_first() {
            return self.receive_nack(body);
        }
        self.foca
            .handle_data(payload, &mut self.runtime)
            .map_err(|error| match error {
                foca::Error::DataFromOurselves => DropReason::FromSelf,
                foca::Error::DataTooBig => DropReason::TooBig,
                _ => DropReason::Decode,
            })
    }

    /// When [`Membership::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Delivers every timer due at `now`, in order.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        if let Some((&(due, _), _)) = self.timers.first_key_value()
            && now.saturating_sub(due) > self.config.timer_late_threshold
        {
            self.stats.timers_late += 1;
            if self.config.lifeguard {
                self.health.worse();
            }
        }
        for _ in 0..TIMERS_PER_CALL_MAX {
            let Some(entry) = self.timers.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.fire(now, timer);
            self.take_inbox(now);
            self.drain_runtime(now);
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Leaves the cluster: tells a few members this node is going down.
    /// Send the resulting transmits before stopping.
    pub fn leave(&mut self, now: Duration) {
        self.advance(now);
        self.left = true;
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(%error, "leave_cluster");
        }
        self.drain_runtime(now);
    }

    /// Where `node_id` listens and its state, without building the whole table.
    pub fn lookup(&self, node_id: &NodeId) -> Option<(SocketAddr, MemberState)> {
        if *node_id == self.identity().node_id {
            return Some((self.identity().addr, MemberState::Alive));
        }
        self.foca_member(node_id)
            .map(|member| (member.id().addr, member_state(member.state())))
    }

    /// foca's entry for `node_id` in any state (a walk of its member list).
    fn foca_member(&self, node_id: &NodeId) -> Option<&foca::Member<Identity>> {
        self.foca
            .iter_membership_state()
            .find(|member| member.id().node_id == *node_id)
    }

    /// Where an active (alive or suspect) member listens, in O(log n).
    pub fn active_addr(&self, node_id: &NodeId) -> Option<SocketAddr> {
        if *node_id == self.identity().node_id {
            return Some(self.identity().addr);
        }
        self.active.get(node_id).map(|member| member.addr)
    }

    /// Whether `node_id` is this node or an active (alive or suspect)
    /// member, with `role`; O(1).
    pub fn is_active_with_role(&self, node_id: &NodeId, role: crate::Role) -> bool {
        let me = self.identity();
        if *node_id == me.node_id {
            return me.meta.role == role;
        }
        self.active
            .get(node_id)
            .is_some_and(|member| member.role == role)
    }

    /// A number that changes whenever an active member with `role` is
    /// added, replaced or removed: callers that check the active members of
    /// a role often can skip the check while it stays the same.
    pub fn active_version(&self, role: crate::Role) -> u64 {
        self.active_versions.get(&role).copied().unwrap_or(0)
    }

    /// The node ids of active (alive or suspect) members with `role`, this
    /// node included if it has that role, ordered by node id. Unlike
    /// [`Membership::alive_with_role`] it does not walk the member table,
    /// so it suits callers that ask often (every Raft tick).
    pub fn active_with_role(&self, role: crate::Role) -> impl Iterator<Item = &NodeId> + '_ {
        let me = self.identity();
        let local = (me.meta.role == role).then_some(&me.node_id);
        let mut others = self
            .active_by_role
            .get(&role)
            .into_iter()
            .flatten()
            .peekable();
        let mut local = local.into_iter().peekable();
        std::iter::from_fn(move || match (others.peek(), local.peek()) {
            (Some(other), Some(mine)) if mine < other => local.next(),
            (Some(_), _) => others.next(),
            (None, _) => local.next(),
        })
    }

    /// The node ids of alive members with `role`, this node included if it
    /// has that role, in no particular order.
    pub fn alive_with_role(&self, role: crate::Role) -> impl Iterator<Item = &NodeId> + '_ {
        let me = self.identity();
        let local = (me.meta.role == role).then_some(&me.node_id);
        self.foca
            .iter_membership_state()
            .filter(move |member| {
                member.state() == State::Alive
                    && member.id().meta.role == role
                    && member.id().node_id != me.node_id
            })
            .map(|member| &member.id().node_id)
            .chain(local)
    }

    /// This node's member table, the local node included, ordered by node id:
    /// one row per node id (foca may remember an older generation of this
    /// very node as down; that row is not shown).
    pub fn members(&self) -> Vec<MemberView> {
        let me = &self.identity().node_id;
        let mut rows: Vec<MemberView> = self
            .foca
            .iter_membership_state()
            .filter(|member| member.id().node_id != *me)
            .map(|member| MemberView {
                identity: member.id().clone(),
                state: member_state(member.state()),
                last_heard: self.last_heard.get(&member.id().node_id).copied(),
                is_local: false,
            })
            .collect();
        rows.push(MemberView {
            identity: self.identity().clone(),
            state: MemberState::Alive,
            last_heard: Some(self.now),
            is_local: true,
        });
        rows.sort_by(|a, b| a.identity.node_id.cmp(&b.identity.node_id));
        rows
    }

    fn advance(&mut self, now: Duration) {
        // A driver may hand us an older `now` (clock reads race with event
        // delivery); time inside the core never goes backwards.
        self.now = self.now.max(now);
        self.inbox.lock().now = self.now;
    }

    fn schedule(&mut self, at: Duration, timer: CoreTimer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
    }

    /// Asks a suspect this node heard of whether it lives (an announce: its
    /// reply carries its incarnation, or the identity it rejoined under),
    /// and asks again every `suspect_timeout_min` until the suspicion ends
    /// or is settled. One ask is not enough: it or its answer may be lost,
    /// and nothing else may reach this node from the suspect before the
    /// settler declares it down (the stalled-observer case: everyone else
    /// has stopped repeating the refutation). An ask to a member that is
    /// really gone costs one small datagram.
    fn ask_suspect(&mut self, now: Duration, node_id: NodeId, addr: SocketAddr) {
        self.stats.suspects_asked += 1;
        self.announce_to(node_id.clone(), addr);
        self.schedule(
            now + self.config.suspect_timeout_min,
            CoreTimer::AskSuspect(node_id),
        );
    }

    fn announce_to(&mut self, node_id: NodeId, addr: SocketAddr) {
        let target = Identity::placeholder(node_id, addr);
        if let Err(error) = self.foca.announce(target, &mut self.runtime) {
            tracing::debug!(%error, "announce");
        }
        self.drain_runtime(self.now);
    }

    fn fire(&mut self, now: Duration, timer: CoreTimer) {
        match timer {
            CoreTimer::Foca(Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                token,
            }) => {
                self.declare_down(member_id, incarnation, token);
            }
            CoreTimer::Foca(timer) => {
                if matches!(timer, Timer::ProbeRandomMember(_)) {
                    self.choose_probe_target(now);
                }
                if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!(%error, "foca timer");
                }
            }
            CoreTimer::SuspicionCheck(node_id) => self.check_suspicion(now, &node_id),
            CoreTimer::HelpCheck(key) => {
                // A slow node's failure to reach a member is weak evidence:
                // only a healthy helper nacks.
                if let Some(origin_addr) = self.helping.remove(&key)
                    && self.health.score() == 0
                {
                    self.send_nack(key, origin_addr);
                }
            }
            CoreTimer::SeedAnnounce => {
                // `active` holds exactly foca's active members.
                let lonely: Vec<(NodeId, SocketAddr)> = self
                    .seeds
                    .iter()
                    .filter(|(node_id, _)| !self.active.contains_key(*node_id))
                    .map(|(node_id, addr)| (node_id.clone(), *addr))
                    .collect();
                for (node_id, addr) in lonely {
                    self.announce_to(node_id, addr);
                }
                let period = if self.foca.num_members() == 0 {
                    self.config.probe_period
                } else {
                    self.config.seed_announce_period
                };
                self.schedule(now + period, CoreTimer::SeedAnnounce);
            }
            CoreTimer::AskSuspect(node_id) => {
                if let Some((addr, MemberState::Suspect)) = self.lookup(&node_id)
                    && self.suspect_since.contains_key(&node_id)
                    && !self.suspicions.contains_key(&node_id)
                {
                    self.ask_suspect(now, node_id, addr);
                }
            }
            CoreTimer::Prune => {
                self.prune(now);
                self.schedule(now + self.config.suspect_timeout_max, CoreTimer::Prune);
            }
            CoreTimer::Telemetry => {
                self.forget_refuted_probe_failures();
                let unreachable: Vec<NodeId> = self.probe_failures.keys().cloned().collect();
                let (actions, next) = self.with_telemetry_mut(|store| {
                    store.set_unreachable_peers(unreachable);
                    let actions = store.handle_timeout(now);
                    (actions, store.poll_timeout())
                });
                for action in actions {
                    match action {
                        TelemetryAction::Broadcast(delta) => self.broadcast_telemetry(&delta.bytes),
                        TelemetryAction::StartAntiEntropy => self.start_anti_entropy(now),
                    }
                }
                self.schedule(
                    next.max(now + Duration::from_millis(1)),
                    CoreTimer::Telemetry,
                );
            }
            CoreTimer::PushPull => {
                if let Some((node_id, addr)) = self.random_member() {
                    let mut payload = vec![STREAM_MEMBERS_SUMMARY];
                    payload.extend_from_slice(&self.members_summary().to_be_bytes());
                    self.queue_stream(StreamOut {
                        node_id,
                        addr,
                        payload,
                    });
                }
                self.push_pull_interval =
                    (self.push_pull_interval * 2).min(self.config.push_pull_period);
                self.schedule(now + self.push_pull_interval, CoreTimer::PushPull);
            }
        }
    }

    /// This node's member table (itself included), as a stream message of
    /// `kind`.
    fn members_message(&self, kind: u8) -> Vec<u8> {
        /// The table as a sequence, encoded straight from foca's list.
        struct Table<'a>(&'a SwimFoca, foca::Member<Identity>);
        impl Serialize for Table<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(
                    self.0
                        .iter_membership_state()
                        .chain(std::iter::once(&self.1)),
                )
            }
        }
        let me = foca::Member::new(self.identity().clone(), 0, State::Alive);
        let mut payload = vec![kind];
        rmp_serde::encode::write(&mut payload, &Table(&self.foca, me))
            .expect("members always encode");
        payload
    }

    /// Drops the probe failures whose member foca now holds alive, or under
    /// another identity or incarnation (refuted, restarted, forgotten).
    fn forget_refuted_probe_failures(&mut self) {
        if self.probe_failures.is_empty() {
            return;
        }
        let standing: BTreeSet<NodeId> = self
            .foca
            .iter_membership_state()
            .filter(|member| member.state() != State::Alive)
            .filter(|member| {
                let id = member.id();
                self.probe_failures.get(&id.node_id)
                    == Some(&(id.generation, id.rejoin, member.incarnation()))
            })
            .map(|member| member.id().node_id.clone())
            .collect();
        self.probe_failures
            .retain(|node_id, _| standing.contains(node_id));
    }

    /// A summary of this node's member table for the periodic push-pull: the
    /// sum of a hash of every row (who, which run, which state; this node
    /// itself as alive). Two nodes with the same view have the same summary
    /// whatever the order of their tables, so a settled cluster exchanges 9
    /// bytes instead of two whole tables. Incarnations are left out: this
    /// node cannot see the one others hold for it, and a newer incarnation
    /// that matters (a refuted suspicion) also changes the state.
    fn members_summary(&self) -> u64 {
        fn row(identity: &Identity, state: State) -> u64 {
            let mut row = SummaryRow::default();
            row.field(identity.node_id.as_str().as_bytes());
            match identity.addr.ip() {
                std::net::IpAddr::V4(ip) => row.field(&ip.octets()),
                std::net::IpAddr::V6(ip) => row.field(&ip.octets()),
            };
            row.number(identity.addr.port().into())
                .number(identity.generation.0)
                .number(identity.rejoin.into())
                .number(state as u64)
                .finish()
        }
        self.foca
            .iter_membership_state()
            .map(|member| row(member.id(), member.state()))
            .fold(row(self.identity(), State::Alive), u64::wrapping_add)
    }

    /// Sends this node's member table to `node_id`, which answers with its own.
    fn push_members(&mut self, node_id: NodeId, addr: SocketAddr) {
        let payload = self.members_message(STREAM_MEMBERS_PUSH);
        self.queue_stream(StreamOut {
            node_id,
            addr,
            payload,
        });
    }

    /// Merges a member table received by push-pull, without gossiping it
    /// (the sender's knowledge is not news to spread).
    fn merge_members(&mut self, now: Duration, body: &[u8]) -> bool {
        let Ok(table) = rmp_serde::from_slice::<Vec<foca::Member<Identity>>>(body) else {
            return false;
        };
        if table.len() > PUSH_PULL_MEMBERS_MAX
            || table
                .iter()
                .any(|member| member.id().meta.validate().is_err())
        {
            return false;
        }
        // In a settled cluster nearly every row is one foca holds already,
        // and applying a row identical to the known one changes nothing
        // (foca only takes a newer incarnation or a stronger state). Only
        // the others go in.
        let known: BTreeMap<&NodeId, &foca::Member<Identity>> = self
            .foca
            .iter_membership_state()
            .map(|member| (&member.id().node_id, member))
            .collect();
        let news: Vec<foca::Member<Identity>> = table
            .into_iter()
            .filter(|row| {
                known.get(&row.id().node_id).is_none_or(|member| {
                    member.id() != row.id()
                        || member.incarnation() != row.incarnation()
                        || member.state() != row.state()
                })
            })
            .collect();
        // Rows about this node go to foca too: a stale suspicion of us that
        // gossip stopped repeating reaches us here, and foca refutes it.
        if let Err(error) = self
            .foca
            .apply_many(news.into_iter(), false, &mut self.runtime)
        {
            tracing::debug!(%error, "push-pull merge");
        }
        self.drain_runtime(now);
        true
    }

    /// Hands a telemetry delta to foca and pushes it out at once (rather than
    /// waiting for probes to piggyback on).
    fn broadcast_telemetry(&mut self, delta: &[u8]) {
        let mut data = Vec::with_capacity(delta.len() + 1);
        data.push(BROADCAST_TELEMETRY);
        data.extend_from_slice(delta);
        if let Err(error) = self.foca.add_broadcast(&data) {
            tracing::debug!(%error, "telemetry broadcast");
            return;
        }
        if let Err(error) = self.foca.broadcast(&mut self.runtime) {
            tracing::debug!(%error, "telemetry broadcast");
        }
    }

    fn start_anti_entropy(&mut self, now: Duration) {
        let Some((node_id, addr)) = self.random_member() else {
            return;
        };
        match self.with_telemetry_mut(|store| store.start_anti_entropy(now)) {
            Ok(request) => {
                let mut payload = vec![STREAM_TELEMETRY];
                payload.extend_from_slice(&request);
                self.queue_stream(StreamOut {
                    node_id,
                    addr,
                    payload,
                })
            }
            Err(error) => tracing::debug!(%error, "anti-entropy request"),
        }
    }

    /// Gives back the room the queues grew in a flood (a boot puts a
    /// thousand member events and sends in them at once) once they have
    /// drained: kept, it was about a tenth of a 1,000-agent simulation's
    /// memory. Changes nothing else.
    fn release_idle_capacity(&mut self) {
        fn shrink<T>(queue: &mut VecDeque<T>) {
            if queue.capacity() > QUEUE_KEPT_CAPACITY && queue.len() < queue.capacity() / 4 {
                queue.shrink_to(queue.len().max(QUEUE_KEPT_CAPACITY));
            }
        }
        shrink(&mut self.transmits);
        shrink(&mut self.events);
        shrink(&mut self.streams);
        shrink(&mut self.probes_asked);
        // foca's runtime hides its queues; an empty one is replaced whole.
        if self.runtime.backlog() == 0 {
            self.runtime = AccumulatingRuntime::new();
        }
    }

    /// A uniformly random active member, drawn without collecting the
    /// member list (the same draw as indexing the collected list).
    fn random_member(&mut self) -> Option<(NodeId, SocketAddr)> {
        let count = self.foca.num_members();
        debug_assert_eq!(count, self.foca.iter_members().count());
        if count == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..count);
        self.foca
            .iter_members()
            .nth(pick)
            .map(|member| (member.id().node_id.clone(), member.id().addr))
    }

    fn queue_stream(&mut self, out: StreamOut) {
        if self.streams.len() < STREAMS_QUEUED_MAX {
            self.streams.push_back(out);
        }
    }

    /// A stream message of the membership layer (telemetry anti-entropy or a
    /// member-table push-pull) arrived from `from` (as authenticated by TLS).
    /// Malformed messages are counted and change nothing; a reply, if any,
    /// comes out of [`Membership::poll_stream`].
    pub fn handle_stream(&mut self, now: Duration, from: &NodeId, bytes: &[u8]) {
        self.advance(now);
        let Some((&kind, body)) = bytes.split_first() else {
            self.stats.streams_dropped += 1;
            return;
        };
        let reply = match kind {
            STREAM_TELEMETRY => {
                match self.with_telemetry_mut(|store| store.handle_anti_entropy(now, body)) {
                    Ok(reply) => reply.map(|reply| {
                        let mut payload = vec![STREAM_TELEMETRY];
                        payload.extend_from_slice(&reply);
                        payload
                    }),
                    Err(_) => {
                        self.stats.streams_dropped += 1;
                        None
                    }
                }
            }
            STREAM_MEMBERS_SUMMARY => {
                let Ok(theirs) = <[u8; 8]>::try_from(body) else {
                    self.stats.streams_dropped += 1;
                    return;
                };
                if u64::from_be_bytes(theirs) == self.members_summary() {
                    self.stats.push_pulls_in_sync += 1;
                    None
                } else {
                    Some(self.members_message(STREAM_MEMBERS_PUSH))
                }
            }
            STREAM_MEMBERS_PUSH | STREAM_MEMBERS_PULL => {
                if !self.merge_members(now, body) {
                    self.stats.streams_dropped += 1;
                    return;
                }
                self.stats.push_pulls += 1;
                (kind == STREAM_MEMBERS_PUSH).then(|| self.members_message(STREAM_MEMBERS_PULL))
            }
            _ => {
                self.stats.streams_dropped += 1;
                None
            }
        };
        let Some(payload) = reply else { return };
        if let Some(addr) = self.known_addr(from) {
            self.queue_stream(StreamOut {
                node_id: from.clone(),
                addr,
                payload,
            });
        }
    }

    /// The next anti-entropy message to send on a stream.
    pub fn poll_stream(&mut self) -> Option<StreamOut> {
        self.streams.pop_front()
    }

    /// Runs `f` on the telemetry store.
    pub fn with_telemetry<R>(&self, f: impl FnOnce(&TelemetryStore) -> R) -> R {
        let inbox = self.inbox.lock();
        f(inbox
            .telemetry
            .as_ref()
            .expect("the store is set at construction"))
    }

    fn with_telemetry_mut<R>(&mut self, f: impl FnOnce(&mut TelemetryStore) -> R) -> R {
        let mut inbox = self.inbox.lock();
        f(inbox
            .telemetry
            .as_mut()
            .expect("the store is set at construction"))
    }

    /// Sets this host's metrics for the next telemetry refresh.
    pub fn set_host_metrics(&mut self, host: HostMetrics) -> Result<(), TelemetryError> {
        self.with_telemetry_mut(|store| store.set_host_metrics(host))
    }

    /// Sets the local database's report (validated; the error names the
    /// field and nothing changes).
    pub fn set_database_report(
        &mut self,
        now: Duration,
        report: DatabaseReport,
    ) -> Result<(), TelemetryError> {
        self.advance(now);
        self.with_telemetry_mut(|store| store.set_database_report(now, report))
    }

    /// The catalog removed `node_id` up to `generation`: forget its
    /// telemetry everywhere (broadcasts a tombstone). Idempotent.
    pub fn remove_telemetry(&mut self, now: Duration, node_id: &NodeId, generation: Generation) {
        self.advance(now);
        match self.with_telemetry_mut(|store| store.remove_node(now, node_id, generation)) {
            Ok(delta) => self.broadcast_telemetry(&delta.bytes),
            Err(error) => tracing::debug!(%error, "telemetry removal"),
        }
        self.drain_runtime(now);
    }

    /// Forgets accusations older than the longest suspicion, and when-heard
    /// times of members foca no longer knows. Also settles suspicions that no
    /// one is timing: a member this node learned was suspect (by gossip)
    /// whose accuser's verdict never arrived stays suspect until someone
    /// decides; after twice the longest suspicion this node starts its own.
    fn prune(&mut self, now: Duration) {
        self.check_active_index();
        self.release_idle_capacity();
        let suspects: Vec<(Identity, Incarnation)> = self
            .foca
            .iter_membership_state()
            .filter(|member| member.state() == State::Suspect)
            .map(|member| (member.id().clone(), member.incarnation()))
            .collect();
        self.suspect_since
            .retain(|node, _| suspects.iter().any(|(suspect, _)| suspect.node_id == *node));
        // Deadlines move with local health: one that came closer (health
        // recovered, e.g. after a partition healed) is checked again now.
        let deadlines: Vec<(NodeId, Duration)> = self
            .suspicions
            .iter()
            .map(|(node, suspicion)| (node.clone(), self.suspicion_deadline(suspicion)))
            .collect();
        for (node, deadline) in deadlines {
            self.schedule(deadline.max(now), CoreTimer::SuspicionCheck(node));
        }
        // Longer than any suspicion this node times itself without stretch.
        let stale_after = self.config.suspect_timeout_max + self.config.suspect_timeout_min;
        for (suspect, incarnation) in suspects {
            let since = match self.suspect_since.entry(suspect.node_id.clone()) {
                btree_map::Entry::Occupied(entry) => *entry.get(),
                btree_map::Entry::Vacant(entry) => {
                    entry.insert(now);
                    // Ask the suspect itself before anyone settles it: a
                    // live one answers (its reply carries its incarnation,
                    // or the identity it rejoined under) and ends the
                    // suspicion. An observer that was stalled while the
                    // refutation spread has no other way to hear it.
                    if !self.suspicions.contains_key(&suspect.node_id) {
                        self.ask_suspect(now, suspect.node_id.clone(), suspect.addr);
                    }
                    now
                }
            };
            if now.saturating_sub(since) < stale_after
                || self.suspicions.contains_key(&suspect.node_id)
            {
                continue;
            }
            tracing::debug!(member = %suspect.node_id, "settling a suspicion no one is timing");
            self.suspect_since.remove(&suspect.node_id);
            // Declared down: a live member hears it and rejoins at once.
            self.declare_down(suspect, incarnation, 0);
        }
        let horizon = now.saturating_sub(self.health.scale(self.config.suspect_timeout_max) * 2);
        self.accusations.retain(|_, accusers| {
            accusers.retain(|_, at| *at >= horizon);
            !accusers.is_empty()
        });
        // `last_heard` is only read for members foca holds; forgetting the
        // others just bounds it. Building the set of foca's members costs
        // O(n log n) on cold memory, so it is done only once more entries
        // are held than foca has members.
        if self.last_heard.len() > self.foca.iter_membership_state().count() {
            let known: BTreeSet<NodeId> = self
                .foca
                .iter_membership_state()
                .map(|member| member.id().node_id.clone())
                .collect();
            self.last_heard.retain(|node_id, _| known.contains(node_id));
        }
        let mut inbox = self.inbox.lock();
        let accusations = &self.accusations;
        inbox
            .accusations_seen
            .retain(|(target, generation, rejoin, incarnation, _)| {
                accusations.contains_key(&(target.clone(), *generation, *rejoin, *incarnation))
            });
    }

    /// Whether some member other than this node accused `target` (any
    /// incarnation of this generation).
    fn accused_by_others(&self, target: &Identity) -> bool {
        let me = &self.identity().node_id;
        self.accusations
            .range((target.node_id.clone(), target.generation, target.rejoin, 0)..)
            .take_while(|((node, generation, rejoin, _), _)| {
                *node == target.node_id
                    && *generation == target.generation
                    && *rejoin == target.rejoin
            })
            .any(|(_, accusers)| accusers.keys().any(|accuser| accuser != me))
    }

    /// Confirmations of a suspicion: accusers other than this node and the
    /// suspect itself.
    fn confirmations(&self, suspicion: &Suspicion) -> u32 {
        let key = (
            suspicion.member.node_id.clone(),
            suspicion.member.generation,
            suspicion.member.rejoin,
            suspicion.incarnation,
        );
        self.accusations.get(&key).map_or(0, |accusers| {
            accusers
                .keys()
                .filter(|accuser| **accuser != self.identity().node_id)
                .filter(|accuser| **accuser != suspicion.member.node_id)
                .count() as u32
        })
    }

    fn suspicion_deadline(&self, suspicion: &Suspicion) -> Duration {
        // Fewer members than expected confirmations: expect what is possible.
        let others = self.foca.num_members().saturating_sub(1) as u32;
        let expected = self.config.confirmations_expected.min(others);
        let timeout = suspicion_timeout(
            self.config.suspect_timeout_min,
            self.config.suspect_timeout_max,
            self.confirmations(suspicion),
            expected,
        );
        // Local health stretches suspicions too, but at most twofold: a node
        // that was cut off (every probe failed) must still settle its
        // suspicions soon after the partition heals.
        suspicion.started_at
            + timeout.saturating_mul((1 + self.health.score()).min(SUSPICION_STRETCH_MAX))
    }

    fn check_suspicion(&mut self, now: Duration, node_id: &NodeId) {
        let Some(suspicion) = self.suspicions.get(node_id) else {
            return;
        };
        let deadline = self.suspicion_deadline(suspicion);
        if deadline > now {
            self.schedule(deadline, CoreTimer::SuspicionCheck(node_id.clone()));
            return;
        }
        let suspicion = self.suspicions.remove(node_id).expect("present above");
        self.gossip_now = true;
        self.declare_down(suspicion.member, suspicion.incarnation, suspicion.token);
    }

    /// Settles a suspicion of `member` at `incarnation`: foca declares it
    /// down if it still holds exactly that identity as suspect at that
    /// incarnation, and otherwise nothing happens.
    ///
    /// foca checks the incarnation itself, but sends the member its
    /// "you are down" courtesy message (`TurnUndead`) even when the check
    /// fails. A live member that refuted the suspicion in time would take
    /// that message as a verdict and rejoin under a new identity, declaring
    /// its old one down to everyone: a false "down" verdict (the simulator
    /// found one at 5 % loss). So the check is made here first.
    ///
    /// foca also ignores a timer whose token is stale (its connection state
    /// changed since, e.g. through a partition); the suspicion is still ours
    /// to settle, and with the check above the newest token is safe to use.
    fn declare_down(&mut self, member: Identity, incarnation: Incarnation, token: TimerToken) {
        // Every entry is checked: foca may hold an old identity of the same
        // node (another address) beside the suspect.
        let still_suspect = self.foca.iter_membership_state().any(|known| {
            known.id() == &member
                && known.state() == State::Suspect
                && known.incarnation() == incarnation
        });
        if !still_suspect {
            self.stats.suspicions_refuted_late += 1;
            return;
        }
        self.stats.suspicions_expired += 1;
        let timer = Timer::ChangeSuspectToDown {
            member_id: member,
            incarnation,
            token: self.foca_token.unwrap_or(token),
        };
        if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
            tracing::debug!(%error, "suspect to down");
        }
    }

    /// Picks up what the codec and broadcast handler noticed.
    fn take_inbox(&mut self, now: Duration) {
        let (accusations, self_suspected) = {
            let mut inbox = self.inbox.lock();
            let new = std::mem::take(&mut inbox.self_suspected_new);
            self.stats.telemetry_relays = inbox.relays;
            (std::mem::take(&mut inbox.accusations_new), new)
        };
        if self_suspected > 0 {
            self.stats.self_suspected += self_suspected;
            if self.config.lifeguard {
                self.health.worse();
            }
        }
        for accusation in accusations {
            if accusation.accuser == self.identity().node_id {
                continue;
            }
            if accusation.target == self.identity().node_id {
                self.answer_accusation(&accusation);
                continue;
            }
            self.stats.accusations_received += 1;
            let key = (
                accusation.target,
                accusation.target_generation,
                accusation.target_rejoin,
                accusation.incarnation,
            );
            self.record_accuser(now, key, accusation.accuser);
        }
    }

    /// Remembers that `accuser` failed to reach the member of `key`; a
    /// confirmation may bring a suspicion's deadline forward.
    fn record_accuser(
        &mut self,
        now: Duration,
        key: (NodeId, Generation, u32, Incarnation),
        accuser: NodeId,
    ) {
        if !self.accusations.contains_key(&key) && self.accusations.len() >= ACCUSED_MAX {
            return;
        }
        let target = key.0.clone();
        let accusers = self.accusations.entry(key).or_default();
        if accusers.len() < ACCUSERS_PER_SUSPECT_MAX {
            accusers.insert(accuser, now);
        }
        if let Some(suspicion) = self.suspicions.get(&target) {
            let deadline = self.suspicion_deadline(suspicion);
            self.schedule(deadline.max(now), CoreTimer::SuspicionCheck(target));
        }
    }

    /// Sends a nack for the indirect probe `key` (target, origin, probe
    /// number) to its origin.
    fn send_nack(&mut self, key: (NodeId, NodeId, ProbeNumber), origin_addr: SocketAddr) {
        let (target, origin, probe_number) = key;
        let nack = Nack {
            helper: self.identity().node_id.clone(),
            target,
            probe_number,
        };
        let mut body = vec![NACK_MARKER];
        rmp_serde::encode::write(&mut body, &nack).expect("nacks always encode");
        let payload = self.envelope.wrap(&body);
        self.stats.nacks_sent += 1;
        self.stats.packets_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        if self.transmits.len() < OUTPUT_QUEUE_MAX {
            self.transmits.push_back(Transmit {
                node_id: origin,
                addr: origin_addr,
                payload,
            });
        }
    }

    /// A nack from a member this node asked to probe indirectly: it could
    /// not reach the target either. It counts as a confirmation of the
    /// suspicion the probe raised (now, or when the probe ends).
    fn receive_nack(&mut self, body: &[u8]) -> Result<(), DropReason> {
        let nack: Nack = rmp_serde::from_slice(body).map_err(|_| DropReason::Decode)?;
        let impersonation = {
            let mut inbox = self.inbox.lock();
            let impersonation = inbox
                .expected_src
                .as_ref()
                .is_some_and(|src| *src != nack.helper);
            inbox.impersonation |= impersonation;
            impersonation
        };
        if impersonation {
            return Err(DropReason::Impersonation);
        }
        let Some(probe) = self.probes_asked.iter_mut().find(|probe| {
            probe.target == nack.target
                && probe.number == nack.probe_number
                && probe.asked.contains(&nack.helper)
        }) else {
            // Not asked, or long ago: nothing to confirm.
            return Ok(());
        };
        if !probe.nacked.insert(nack.helper.clone()) {
            return Ok(());
        }
        self.stats.nacks_received += 1;
        let helpers: Vec<NodeId> = probe.confirming().cloned().collect();
        if let Some(suspicion) = self.suspicions.get(&nack.target) {
            let key = (
                suspicion.member.node_id.clone(),
                suspicion.member.generation,
                suspicion.member.rejoin,
                suspicion.incarnation,
            );
            for helper in helpers {
                self.record_accuser(self.now, key.clone(), helper);
            }
        }
        Ok(())
    }

    /// Another member suspects this node: refute and tell it directly.
    ///
    /// The accusation travels apart from foca's own "suspect" update, which
    /// may be lost; so a suspicion of this node's current incarnation is
    /// handed to foca here, and foca refutes it (a higher incarnation). Then
    /// an announce goes to the accuser: every datagram's header carries the
    /// sender's identity and incarnation, so it sets the accuser straight at
    /// once, even when its suspicion is of an incarnation (or a rejoin) this
    /// node has long refuted. Gossip alone cannot do that: the refutation is
    /// old news the others have stopped repeating, and an accuser that was
    /// itself stalled while it spread would time its stale suspicion out
    /// and declare this live node down.
    fn answer_accusation(&mut self, accusation: &Accusation) {
        let me = self.identity().clone();
        if accusation.target_generation == me.generation && accusation.target_rejoin == me.rejoin {
            let suspected = Member::new(me, accusation.incarnation, State::Suspect);
            if let Err(error) =
                self.foca
                    .apply_many(std::iter::once(suspected), true, &mut self.runtime)
            {
                tracing::debug!(%error, "refute an accusation");
            }
        }
        if let Some(addr) = self.known_addr(&accusation.accuser) {
            self.stats.accusations_answered += 1;
            self.announce_to(accusation.accuser.clone(), addr);
        }
    }

    /// Where `node_id` listens, if foca knows it (in any state).
    fn known_addr(&self, node_id: &NodeId) -> Option<SocketAddr> {
        self.active_addr(node_id)
            .or_else(|| self.foca_member(node_id).map(|member| member.id().addr))
    }

    /// Moves foca's sends, timers and notifications into our queues.
    ///
    /// A member that went down in this node's view (its own verdict or one
    /// it heard) is gossiped at once to `indirect_probes` random members,
    /// which do the same: the verdict then reaches everyone in a few network
    /// hops instead of one gossip period per hop (at 1,000 agents, about a
    /// second). At most once per gossip period, so a partition that takes
    /// many members down at once costs at most one extra gossip round per
    /// period.
    fn drain_runtime(&mut self, now: Duration) {
        self.drain_runtime_once(now);
        if std::mem::take(&mut self.gossip_now) {
            let recently = self
                .gossiped_early_at
                .is_some_and(|at| now < at + self.config.gossip_period);
            if !recently {
                self.gossiped_early_at = Some(now);
                self.stats.early_gossips += 1;
                if let Err(error) = self.foca.gossip(&mut self.runtime) {
                    tracing::debug!(%error, "gossip a down verdict");
                }
                self.drain_runtime_once(now);
                self.gossip_now = false;
            }
        }
    }

    fn drain_runtime_once(&mut self, now: Duration) {
        while let Some((target, data)) = self.runtime.to_send() {
            if self.transmits.len() >= OUTPUT_QUEUE_MAX {
                tracing::warn!("membership transmit queue full; dropping a datagram");
                continue;
            }
            let payload = self.envelope.wrap(&data);
            self.stats.packets_out += 1;
            self.stats.bytes_out += payload.len() as u64;
            self.transmits.push_back(Transmit {
                node_id: target.node_id.clone(),
                addr: target.addr,
                payload,
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.schedule_foca_timer(now, after, timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            self.notify(now, notification);
        }
    }

    fn schedule_foca_timer(&mut self, now: Duration, after: Duration, timer: Timer<Identity>) {
        let lifeguard = self.config.lifeguard;
        // foca changes its timer token when its connection state changes;
        // remember the newest, for suspicions that outlive such a change.
        match &timer {
            Timer::ProbeRandomMember(token)
            | Timer::PeriodicAnnounce(token)
            | Timer::PeriodicAnnounceDown(token)
            | Timer::PeriodicGossip(token)
            | Timer::SendIndirectProbe { token, .. }
            | Timer::ChangeSuspectToDown { token, .. } => self.foca_token = Some(*token),
            Timer::RemoveDown(_) => {}
        }
        match timer {
            Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } if lifeguard => {
                self.schedule(now + self.health.scale(after), CoreTimer::Foca(timer));
            }
            Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                token,
            } if lifeguard => {
                self.probe_failed(&member_id, incarnation);
                // Helpers that could not reach the member either confirm it.
                let helpers: Vec<NodeId> = self
                    .probes_asked
                    .iter()
                    .filter(|probe| probe.target == member_id.node_id)
                    .flat_map(|probe| probe.confirming().cloned())
                    .collect();
                for helper in helpers {
                    let key = (
                        member_id.node_id.clone(),
                        member_id.generation,
                        member_id.rejoin,
                        incarnation,
                    );
                    self.record_accuser(now, key, helper);
                }
                // Probing a suspect again (it stays in the probe rotation)
                // and failing again is the same suspicion: it keeps its start,
                // or repeated failures would push its end back for ever.
                if let Some(suspicion) = self.suspicions.get_mut(&member_id.node_id)
                    && suspicion.member == member_id
                    && suspicion.incarnation == incarnation
                {
                    suspicion.token = token;
                    return;
                }
                let accusation = Accusation {
                    target: member_id.node_id.clone(),
                    target_generation: member_id.generation,
                    target_rejoin: member_id.rejoin,
                    incarnation,
                    accuser: self.identity().node_id.clone(),
                };
                let suspicion = Suspicion {
                    member: member_id.clone(),
                    incarnation,
                    token,
                    started_at: now,
                };
                let deadline = self.suspicion_deadline(&suspicion);
                self.suspicions.insert(member_id.node_id.clone(), suspicion);
                self.schedule(deadline, CoreTimer::SuspicionCheck(member_id.node_id));
                let mut data = vec![BROADCAST_ACCUSATION];
                rmp_serde::encode::write(&mut data, &accusation)
                    .expect("accusations always encode");
                if let Err(error) = self.foca.add_broadcast(&data) {
                    tracing::debug!(%error, "accusation broadcast");
                }
            }
            Timer::ChangeSuspectToDown {
                ref member_id,
                incarnation,
                ..
            } => {
                self.probe_failed(member_id, incarnation);
                self.schedule(now + after, CoreTimer::Foca(timer));
            }
            timer => self.schedule(now + after, CoreTimer::Foca(timer)),
        }
    }

    /// foca's probe of `member` (at `incarnation`) failed, directly and
    /// through every indirect prober: this node raises a suspicion.
    fn probe_failed(&mut self, member: &Identity, incarnation: Incarnation) {
        self.stats.suspicions += 1;
        self.probe_failures.insert(
            member.node_id.clone(),
            (member.generation, member.rejoin, incarnation),
        );
    }

    /// This node asked `helper` to probe `target` indirectly.
    fn asked_to_probe(&mut self, target: NodeId, number: ProbeNumber, helper: NodeId) {
        let known = self
            .probes_asked
            .iter_mut()
            .find(|probe| probe.target == target && probe.number == number);
        match known {
            Some(probe) => {
                probe.asked.insert(helper);
            }
            None => {
                if self.probes_asked.len() >= PROBES_ASKED_MAX {
                    self.probes_asked.pop_front();
                }
                self.probes_asked.push_back(ProbeAsked {
                    target,
                    number,
                    asked: BTreeSet::from([helper]),
                    nacked: BTreeSet::new(),
                });
            }
        }
    }

    /// This node pinged `target` for `origin`: if the target does not
    /// answer within 80 % of a probe timeout (so the nack reaches the origin
    /// before its own probe ends), the origin gets a nack.
    fn help_probe(
        &mut self,
        now: Duration,
        target: NodeId,
        origin: Identity,
        probe_number: ProbeNumber,
    ) {
        if self.helping.len() >= HELPING_MAX {
            return;
        }
        let key = (target, origin.node_id, probe_number);
        self.helping.insert(key.clone(), origin.addr);
        let wait = self.config.probe_timeout * 4 / 5;
        self.schedule(now + wait, CoreTimer::HelpCheck(key));
    }

    fn notify(&mut self, now: Duration, notification: OwnedNotification<Identity>) {
        let event = match notification {
            OwnedNotification::MemberUp(identity) => {
                self.index_active(&identity);
                self.fit_transmissions();
                Event::MemberUp(identity)
            }
            OwnedNotification::MemberDown(identity) => {
                self.suspicions.remove(&identity.node_id);
                self.unindex_active(&identity.node_id);
                self.fit_transmissions();
                Event::MemberDown(identity)
            }
            OwnedNotification::Rename(old, new) => {
                // foca reports a change of the active set separately; a
                // member active before and after only changes identity.
                // The node id (foca's address) is the same: re-indexing
                // keeps its place on the rings.
                if self.active.contains_key(&new.node_id) {
                    self.index_active(&new);
                }
                Event::Renamed { old, new }
            }
            OwnedNotification::Active => {
                // Joined (or rejoined): tell everyone about this node now,
                // rather than at the next material change or heartbeat.
                // And catch up on the records published before the join.
                self.with_telemetry_mut(|store| {
                    store.publish_soon(now);
                    store.anti_entropy_soon(now, JOIN_ANTI_ENTROPY_FIRST);
                });
                Event::Active
            }
            OwnedNotification::Idle => Event::Idle,
            // After leaving, being out of the cluster is the point, not news.
            OwnedNotification::Defunct if self.left => return,
            OwnedNotification::Defunct => Event::Defunct,
            OwnedNotification::Rejoin(identity) => {
                self.inbox.lock().self_suspected_incarnation = None;
                Event::Rejoined(identity)
            }
            OwnedNotification::DataReceived(header) => {
                self.last_heard.insert(header.src.node_id.clone(), now);
                if let Message::IndirectAck {
                    target: origin,
                    probe_number,
                } = &header.message
                {
                    let key = (
                        header.src.node_id.clone(),
                        origin.node_id.clone(),
                        *probe_number,
                    );
                    self.helping.remove(&key);
                }
                let answered = match (&self.probe, &header.message) {
                    (Some((target, number)), Message::Ack(acked)) => {
                        *target == header.src.node_id && number == acked
                    }
                    (Some((_, number)), Message::IndirectAck { probe_number, .. }) => {
                        number == probe_number
                    }
                    _ => false,
                };
                if answered {
                    self.probe = None;
                    if self.config.lifeguard {
                        self.health.better();
                    }
                }
                return;
            }
            OwnedNotification::DataSent(header) => {
                match header.message {
                    Message::Ping(number) => {
                        self.stats.probes += 1;
                        self.probe = Some((header.dst.node_id.clone(), number));
                    }
                    Message::PingReq {
                        target,
                        probe_number,
                    } => self.asked_to_probe(target.node_id, probe_number, header.dst.node_id),
                    Message::IndirectPing {
                        origin,
                        probe_number,
                    } if self.config.lifeguard => {
                        self.help_probe(now, header.dst.node_id, origin, probe_number);
                    }
                    _ => {}
                }
                return;
            }
            OwnedNotification::ProbeFailed(_, target) => {
                self.stats.probes_failed += 1;
                self.probe = None;
                // A failed probe hints that this node is the slow one, unless
                // independent members also failed to reach the target: then
                // the target (or a partition) is the problem, not us. This
                // stands in for Lifeguard's nacks, which foca does not have.
                if self.config.lifeguard && !self.accused_by_others(&target) {
                    self.health.worse();
                }
                return;
            }
        };
        if self.events.len() < OUTPUT_QUEUE_MAX {
            self.events.push_back(event);
        }
    }
}

impl Membership {
    /// Hands foca the transmission count for the current cluster size when
    /// it changes (a different number of decimal digits), and the relay
    /// count, which follows from it.
    fn fit_transmissions(&mut self) {
        let members = self.active.len() + 1;
        let wanted = self.config.transmissions(members);
        if wanted != self.transmissions {
            self.transmissions = wanted;
            self.inbox.lock().relay_transmissions = Some(self.config.relay_transmissions(members));
            let config = self.config.foca_config(self.envelope.len(), members);
            self.foca
                .set_config(config)
                .expect("only the transmission count changes");
        }
    }

    /// Names this probe period's ring successor to foca, when probe rings
    /// are on. Periods are counted on the wall clock. foca schedules each
    /// probe a whole (or, with Lifeguard, a stretched) period after the last
    /// one, so a node probes at most once per period. A stale timer foca
    /// ignores leaves a name that the next probe's overwrites.
    fn choose_probe_target(&mut self, now: Duration) {
        if !self.config.probe_rings {
            return;
        }
        let period = self.config.probe_period.as_nanos().max(1);
        let slot = ((now + self.wall_base).as_nanos() / period) as u64;
        if let Some(target) = self.rings.target(slot) {
            self.foca.prefer_probe_target(target.clone());
        }
    }

    fn index_active(&mut self, identity: &Identity) {
        if !self.remove_from_active_index(&identity.node_id) {
            self.rings.join(&identity.node_id);
        }
        self.active
            .insert(identity.node_id.clone(), ActiveMember::of(identity));
        self.active_by_role
            .entry(identity.meta.role)
            .or_default()
            .insert(identity.node_id.clone());
        *self.active_versions.entry(identity.meta.role).or_default() += 1;
    }

    fn unindex_active(&mut self, node_id: &NodeId) {
        if self.remove_from_active_index(node_id) {
            let active = self.active_by_role.values().flatten();
            self.rings.leave(node_id, active);
        }
    }

    /// Takes `node_id` out of the index of active members; whether it was in.
    fn remove_from_active_index(&mut self, node_id: &NodeId) -> bool {
        let Some(previous) = self.active.remove(node_id) else {
            return false;
        };
        if let Some(ids) = self.active_by_role.get_mut(&previous.role) {
            ids.remove(node_id);
        }
        *self.active_versions.entry(previous.role).or_default() += 1;
        true
    }

    /// The index of active members holds exactly foca's active members.
    fn check_active_index(&self) {
        if cfg!(debug_assertions) {
            let foca_active: BTreeMap<&NodeId, ActiveMember> = self
                .foca
                .iter_members()
                .map(|member| (&member.id().node_id, ActiveMember::of(member.id())))
                .collect();
            let indexed: BTreeMap<&NodeId, ActiveMember> = self
                .active
                .sorted()
                .into_iter()
                .map(|(node_id, member)| (node_id, *member))
                .collect();
            debug_assert_eq!(foca_active, indexed, "active index out of step with foca");
            let by_role: usize = self.active_by_role.values().map(BTreeSet::len).sum();
            debug_assert_eq!(by_role, self.active.len());
        }
    }
}

/// What the index of active members keeps of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ActiveMember {
    addr: SocketAddr,
    role: crate::Role,
}

impl ActiveMember {
    fn of(identity: &Identity) -> Self {
        Self {
            addr: identity.addr,
            role: identity.meta.role,
        }
    }
}

fn member_state(state: State) -> MemberState {
    match state {
        State::Alive => MemberState::Alive,
        State::Suspect => MemberState::Suspect,
        State::Down => MemberState::Down,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use foca::{Codec, Header};

    use super::*;
    use crate::telemetry::EncodedDelta;
    use crate::{Generation, MemberMeta, Role};

    fn identity(index: u8, generation: u64, rejoin: u32) -> Identity {
        Identity {
            node_id: NodeId::new(format!("n{index}")).unwrap(),
            addr: SocketAddr::from(([10, 0, 0, index], 7946)),
            generation: Generation(generation),
            rejoin,
            meta: Arc::new(MemberMeta {
                role: Role::Member,
                labels: BTreeMap::new(),
                version: "test".into(),
            }),
        }
    }

    /// A membership core for `me` that has heard from each of `peers` (a
    /// gossip from each at 10 ms, which makes them active members).
    fn knowing(config: &MembershipConfig, me: &Identity, peers: &[&Identity]) -> Membership {
        let mut membership =
            Membership::new(me.clone(), config.clone(), 1, Duration::ZERO).unwrap();
        for peer in peers {
            let hello = packet(peer, 0, me, Message::Gossip, &[], &[]);
            membership.handle_datagram(Duration::from_millis(10), None, &hello);
        }
        membership
    }

    /// A datagram from `src` to `dst`: `message`, `updates`, then
    /// `accusations` as custom broadcasts (foca's framing).
    fn packet(
        src: &Identity,
        src_incarnation: Incarnation,
        dst: &Identity,
        message: Message<Identity>,
        updates: &[Member<Identity>],
        accusations: &[Accusation],
    ) -> Vec<u8> {
        packet_with(
            src,
            src_incarnation,
            dst,
            message,
            updates,
            accusations,
            &[],
        )
    }

    /// [`packet`], with telemetry deltas after the accusations.
    fn packet_with(
        src: &Identity,
        src_incarnation: Incarnation,
        dst: &Identity,
        message: Message<Identity>,
        updates: &[Member<Identity>],
        accusations: &[Accusation],
        telemetry: &[EncodedDelta],
    ) -> Vec<u8> {
        let header = Header {
            src: src.clone(),
            src_incarnation,
            dst: dst.clone(),
            message,
        };
        let mut payload = Vec::new();
        MsgpackCodec.encode_header(&header, &mut payload).unwrap();
        payload.extend_from_slice(&(updates.len() as u16).to_be_bytes());
        for update in updates {
            MsgpackCodec.encode_member(update, &mut payload).unwrap();
        }
        let items = accusations.iter().map(|accusation| {
            let mut item = vec![BROADCAST_ACCUSATION];
            rmp_serde::encode::write(&mut item, accusation).unwrap();
            item
        });
        for item in items.chain(telemetry.iter().map(|delta| {
            let mut item = vec![BROADCAST_TELEMETRY];
            item.extend_from_slice(&delta.bytes);
            item
        })) {
            payload.extend_from_slice(&(item.len() as u16).to_be_bytes());
            payload.extend_from_slice(&item);
        }
        Envelope::new("test").wrap(&payload)
    }

    /// The headers of the datagrams `membership` sends to `to`.
    fn sent_to(membership: &mut Membership, to: &Identity) -> Vec<Header<Identity>> {
        let mut headers = Vec::new();
        while let Some(transmit) = membership.poll_transmit() {
            if transmit.addr == to.addr {
                let payload = Envelope::new("test").open(&transmit.payload).unwrap();
                headers.push(MsgpackCodec.decode_header(&mut &payload[..]).unwrap());
            }
        }
        headers
    }

    /// `membership` sent `to` an announce carrying `incarnation`.
    fn assert_announced(membership: &mut Membership, to: &Identity, incarnation: Incarnation) {
        let sent = sent_to(membership, to);
        assert!(
            sent.iter().any(|header| header.message == Message::Announce
                && header.src_incarnation == incarnation),
            "no announce at incarnation {incarnation} to {}: {sent:?}",
            to.node_id
        );
    }

    fn accusation(target: &Identity, incarnation: Incarnation, accuser: &Identity) -> Accusation {
        Accusation {
            target: target.node_id.clone(),
            target_generation: target.generation,
            target_rejoin: target.rejoin,
            incarnation,
            accuser: accuser.node_id.clone(),
        }
    }

    /// An accused member refutes at once, even when foca's own "suspect"
    /// update was lost, and tells the accuser directly (an announce, whose
    /// header carries the new incarnation); a stale accusation is answered
    /// without a new refutation, and a repeated one is not answered again.
    #[test]
    fn an_accusation_is_refuted_and_answered_to_the_accuser() {
        let me = identity(0, 1, 0);
        let (first, second) = (identity(1, 1, 0), identity(2, 1, 0));
        let mut membership =
            Membership::new(me.clone(), MembershipConfig::new("test"), 1, Duration::ZERO).unwrap();
        let mut now = Duration::from_millis(10);
        for peer in [&first, &second] {
            membership.handle_datagram(now, None, &packet(peer, 0, &me, Message::Gossip, &[], &[]));
        }
        sent_to(&mut membership, &first);
        assert_eq!(
            membership.lookup(&first.node_id).unwrap().1,
            MemberState::Alive
        );

        now += Duration::from_millis(10);
        let current = accusation(&me, 0, &first);
        let from_first = packet(&first, 0, &me, Message::Gossip, &[], &[current]);
        membership.handle_datagram(now, None, &from_first);
        assert_announced(&mut membership, &first, 1);
        assert_eq!(membership.stats().accusations_answered, 1);

        // The same accusation again: already answered.
        now += Duration::from_millis(10);
        membership.handle_datagram(now, None, &from_first);
        assert_eq!(membership.stats().accusations_answered, 1);

        // A stale accusation (incarnation 0 was refuted): answered with the
        // current incarnation, no new refutation.
        now += Duration::from_millis(10);
        let stale = accusation(&me, 0, &second);
        membership.handle_datagram(
            now,
            None,
            &packet(&first, 0, &me, Message::Gossip, &[], &[stale]),
        );
        assert_announced(&mut membership, &second, 1);
        assert_eq!(membership.stats().accusations_answered, 2);
    }

    /// A member this node heard is suspect, but does not time itself, is
    /// asked directly whether it lives before anyone settles it, and again
    /// while no answer comes; its answer (a newer incarnation) ends the
    /// suspicion and the asking.
    #[test]
    fn a_suspect_heard_of_by_gossip_is_asked_directly() {
        let mut config = MembershipConfig::new("test");
        // This node does not probe the suspect itself within the test (a
        // failed probe of its own would make the suspicion its own).
        config.probe_period = Duration::from_secs(600);
        let me = identity(0, 1, 0);
        let (suspect, gossiper) = (identity(1, 1, 0), identity(2, 1, 0));
        let mut membership = knowing(&config, &me, &[&suspect, &gossiper]);
        let mut now = Duration::from_millis(20);
        let suspected = Member::new(suspect.clone(), 0, State::Suspect);
        membership.handle_datagram(
            now,
            None,
            &packet(&gossiper, 0, &me, Message::Gossip, &[suspected], &[]),
        );
        assert_eq!(
            membership.lookup(&suspect.node_id).unwrap().1,
            MemberState::Suspect
        );
        sent_to(&mut membership, &suspect);

        // The next prune asks the suspect.
        now += config.suspect_timeout_max;
        membership.handle_timeout(now);
        assert_announced(&mut membership, &suspect, 0);
        assert_eq!(membership.stats().suspects_asked, 1);

        // The ask or its answer was lost: it is asked again.
        now += config.suspect_timeout_min;
        membership.handle_timeout(now);
        assert_announced(&mut membership, &suspect, 0);
        assert_eq!(membership.stats().suspects_asked, 2);

        // Its answer refutes the suspicion, and the asking stops.
        now += Duration::from_millis(10);
        membership.handle_datagram(
            now,
            None,
            &packet(&suspect, 1, &me, Message::Feed, &[], &[]),
        );
        assert_eq!(
            membership.lookup(&suspect.node_id).unwrap().1,
            MemberState::Alive
        );
        for _ in 0..3 {
            now += config.suspect_timeout_min;
            membership.handle_timeout(now);
            let announces = sent_to(&mut membership, &suspect)
                .into_iter()
                .filter(|header| header.message == Message::Announce)
                .count();
            assert_eq!(announces, 0);
        }
        assert_eq!(membership.stats().suspects_asked, 2);
    }

    /// foca is told to relay telemetry deltas the relay count, which follows
    /// the cluster's size, and accusations the full count.
    #[test]
    fn telemetry_relays_get_the_relay_count_and_accusations_the_full_one() {
        use foca::BroadcastHandler;
        let config = MembershipConfig {
            relay_transmissions: Some(11),
            ..MembershipConfig::new("test")
        };
        let me = identity(0, 1, 0);
        let telemetry = BroadcastKey::Telemetry(
            crate::telemetry::TelemetryKey {
                node_id: NodeId::new("n1").unwrap(),
                kind: crate::telemetry::TelemetryKeyKind::Record(crate::telemetry::Version {
                    generation: Generation(1),
                    sequence: crate::telemetry::Sequence(1),
                }),
            },
            Some(1),
        );
        let accusation = BroadcastKey::Accusation((
            NodeId::new("n1").unwrap(),
            Generation(1),
            0,
            0,
            NodeId::new("n2").unwrap(),
        ));
        // Alone, updates go out 10 times, and so do relays (at most 11).
        let alone = knowing(&config, &me, &[]);
        assert_eq!(
            alone.inbox.relay_transmissions(&telemetry),
            NonZeroU8::new(10)
        );
        assert_eq!(alone.inbox.relay_transmissions(&accusation), None);
        // With 12 others, updates go out 12 times and relays 11.
        let peers: Vec<Identity> = (1..=12).map(|index| identity(index, 1, 0)).collect();
        let grown = knowing(&config, &me, &peers.iter().collect::<Vec<_>>());
        assert_eq!(grown.active_members(), 12);
        assert_eq!(
            grown.inbox.relay_transmissions(&telemetry),
            NonZeroU8::new(11)
        );
        assert_eq!(grown.inbox.relay_transmissions(&accusation), None);
    }

    /// The payload of a nack from `helper` about `target`'s probe `number`.
    fn nack_packet(helper: &Identity, target: &Identity, number: ProbeNumber) -> Vec<u8> {
        let nack = Nack {
            helper: helper.node_id.clone(),
            target: target.node_id.clone(),
            probe_number: number,
        };
        let mut body = vec![NACK_MARKER];
        rmp_serde::encode::write(&mut body, &nack).unwrap();
        Envelope::new("test").wrap(&body)
    }

    /// The nacks among `membership`'s queued datagrams to `to` (the rest
    /// are dropped).
    fn nacks_to(membership: &mut Membership, to: &Identity) -> Vec<Nack> {
        let mut nacks = Vec::new();
        while let Some(transmit) = membership.poll_transmit() {
            let payload = Envelope::new("test").open(&transmit.payload).unwrap();
            if let Some((&NACK_MARKER, body)) = payload.split_first() {
                assert_eq!(transmit.addr, to.addr, "a nack goes to the asker");
                nacks.push(rmp_serde::from_slice(body).unwrap());
            }
        }
        nacks
    }

    /// A member asked to probe another indirectly tells the asker when the
    /// target does not answer it either (a nack), and stays silent when it
    /// answers.
    #[test]
    fn a_helper_nacks_when_the_target_does_not_answer() {
        let config = MembershipConfig::new("test");
        let me = identity(0, 1, 0);
        let (asker, target) = (identity(1, 1, 0), identity(2, 1, 0));
        let mut membership = knowing(&config, &me, &[&asker, &target]);
        let mut now = Duration::from_millis(10);
        nacks_to(&mut membership, &asker);
        let ping_req = |number| Message::PingReq {
            target: target.clone(),
            probe_number: number,
        };

        // No answer: a nack once the wait is over, not before.
        membership.handle_datagram(now, None, &packet(&asker, 0, &me, ping_req(7), &[], &[]));
        let pinged = sent_to(&mut membership, &target);
        assert!(
            pinged.iter().any(|header| matches!(
                header.message,
                Message::IndirectPing {
                    probe_number: 7,
                    ..
                }
            )),
            "{pinged:?}"
        );
        now += config.probe_timeout * 4 / 5 - Duration::from_millis(1);
        membership.handle_timeout(now);
        assert!(nacks_to(&mut membership, &asker).is_empty());
        now += Duration::from_millis(1);
        membership.handle_timeout(now);
        let nacks = nacks_to(&mut membership, &asker);
        let expected = Nack {
            helper: me.node_id.clone(),
            target: target.node_id.clone(),
            probe_number: 7,
        };
        assert_eq!(nacks, vec![expected]);
        assert_eq!(membership.stats().nacks_sent, 1);

        // The target answers: no nack.
        membership.handle_datagram(now, None, &packet(&asker, 0, &me, ping_req(8), &[], &[]));
        let answer = Message::IndirectAck {
            target: asker.clone(),
            probe_number: 8,
        };
        membership.handle_datagram(now, None, &packet(&target, 0, &me, answer, &[], &[]));
        now += config.probe_timeout;
        membership.handle_timeout(now);
        assert!(nacks_to(&mut membership, &asker).is_empty());
        assert_eq!(membership.stats().nacks_sent, 1);
    }

    /// Runs `membership`'s timers in 5 ms steps until `silent` is in
    /// `state` or `span` is over, acking every ping except those to
    /// `silent`, and answering the first `nacks` of each probe's requests to
    /// probe `silent` indirectly with a nack from the helper. Returns when
    /// `silent` reached `state`, and how many gossip messages went out in
    /// that step.
    fn probe_until(
        membership: &mut Membership,
        now: &mut Duration,
        span: Duration,
        (silent, state): (&Identity, MemberState),
        peers: &[Identity],
        nacks: usize,
    ) -> Option<(Duration, usize)> {
        let me = membership.identity().clone();
        let end = *now + span;
        while *now < end {
            *now += Duration::from_millis(5);
            membership.handle_timeout(*now);
            let mut replies = Vec::new();
            let mut gossips = 0;
            while let Some(transmit) = membership.poll_transmit() {
                let payload = Envelope::new("test").open(&transmit.payload).unwrap();
                let header = MsgpackCodec.decode_header(&mut &payload[..]).unwrap();
                let Some(peer) = peers.iter().find(|peer| peer.addr == transmit.addr) else {
                    continue;
                };
                match header.message {
                    Message::Ping(number) if peer != silent => {
                        replies.push(packet(peer, 0, &me, Message::Ack(number), &[], &[]));
                    }
                    Message::PingReq {
                        target,
                        probe_number,
                    } if target == *silent && replies.len() < nacks => {
                        replies.push(nack_packet(peer, silent, probe_number));
                    }
                    Message::Gossip => gossips += 1,
                    _ => {}
                }
            }
            for reply in replies {
                membership.handle_datagram(*now, None, &reply);
            }
            if membership.lookup(&silent.node_id).map(|(_, state)| state) == Some(state) {
                return Some((*now, gossips));
            }
        }
        None
    }

    /// The members `membership` pings while every ping is acked, over
    /// `span` from `now`, with the time of each.
    fn pings_over(
        membership: &mut Membership,
        now: &mut Duration,
        span: Duration,
        peers: &[Identity],
    ) -> Vec<(Duration, NodeId)> {
        let me = membership.identity().clone();
        let end = *now + span;
        let mut pings = Vec::new();
        while *now < end {
            *now += Duration::from_millis(5);
            membership.handle_timeout(*now);
            let mut replies = Vec::new();
            while let Some(transmit) = membership.poll_transmit() {
                let payload = Envelope::new("test").open(&transmit.payload).unwrap();
                let header = MsgpackCodec.decode_header(&mut &payload[..]).unwrap();
                if let Message::Ping(number) = header.message
                    && let Some(peer) = peers.iter().find(|peer| peer.addr == transmit.addr)
                {
                    pings.push((*now, peer.node_id.clone()));
                    replies.push(packet(peer, 0, &me, Message::Ack(number), &[], &[]));
                }
            }
            for reply in replies {
                membership.handle_datagram(*now, None, &reply);
            }
        }
        pings
    }

    /// With probe rings, each probe goes to this node's successor on the
    /// ring of the probe period, counted on the wall clock; with them off,
    /// foca's shuffled round robin picks.
    #[test]
    fn probes_follow_the_rings_in_step_with_the_wall_clock() {
        let me = identity(0, 1, 0);
        let peers: Vec<Identity> = (1..=11).map(|index| identity(index, 1, 0)).collect();
        let mut expected = ProbeRings::new(&me.node_id);
        for peer in &peers {
            expected.join(&peer.node_id);
        }
        // Two probe periods past a multiple of eight: counted from zero
        // instead of this base, every probe would be two rings off.
        let wall_base = Duration::from_millis(1_735_689_601_123);
        let span = Duration::from_secs(20);
        let follows_rings = |probe_rings: bool| {
            let mut config = MembershipConfig::new("test");
            config.probe_rings = probe_rings;
            let mut membership = knowing(&config, &me, &peers.iter().collect::<Vec<_>>());
            membership.set_wall_base(wall_base);
            let mut now = Duration::from_millis(10);
            let pings = pings_over(&mut membership, &mut now, span, &peers);
            assert!(pings.len() >= 30, "{} probes", pings.len());
            let period = config.probe_period.as_nanos();
            pings.iter().all(|(at, target)| {
                let slot = ((*at + wall_base).as_nanos() / period) as u64;
                expected.target(slot) == Some(target)
            })
        };
        assert!(follows_rings(true));
        assert!(!follows_rings(false));
        // The rings spread this node's probes over several members.
        let targets: BTreeSet<&NodeId> = (0..crate::rings::RINGS as u64)
            .filter_map(|slot| expected.target(slot))
            .collect();
        assert!(targets.len() >= 4, "{targets:?}");
    }

    /// A membership core (defaults) knowing seven peers, run until it
    /// suspects the first of them, which answers nothing, while `nacks` of
    /// the members asked to probe it indirectly nack each probe. Returns the
    /// core, the peers (the silent one first) and when it was suspected.
    fn suspecting_a_silent_member(nacks: usize) -> (Membership, Vec<Identity>, Duration) {
        let me = identity(0, 1, 0);
        let peers: Vec<Identity> = (1..=7).map(|index| identity(index, 1, 0)).collect();
        let config = MembershipConfig::new("test");
        let mut membership = knowing(&config, &me, &peers.iter().collect::<Vec<_>>());
        let mut now = Duration::from_millis(10);
        let span = Duration::from_secs(10);
        let suspect = (&peers[0], MemberState::Suspect);
        probe_until(&mut membership, &mut now, span, suspect, &peers, nacks)
            .expect("the silent member is probed and suspected");
        (membership, peers, now)
    }

    /// How long after it was first suspected a silent member is declared
    /// down, when `nacks` of the members asked to probe it indirectly
    /// answer each probe with a nack; and the membership core.
    fn suspicion_with_nacks(nacks: usize) -> (Duration, Membership) {
        let (mut membership, peers, suspected) = suspecting_a_silent_member(nacks);
        let (mut now, silent, span) = (suspected, peers[0].clone(), Duration::from_secs(10));
        let down = (&silent, MemberState::Down);
        let (downed, gossips) = probe_until(&mut membership, &mut now, span, down, &peers, nacks)
            .expect("declared down");
        // This node's own verdict is gossiped at once (the periodic gossip
        // may fall in the same step).
        assert!(
            gossips >= membership.config.indirect_probes,
            "{gossips} gossips"
        );
        assert_eq!(membership.stats().early_gossips, 1);
        // A member that was never asked: ignored.
        let received = membership.stats().nacks_received;
        membership.handle_datagram(now, None, &nack_packet(&peers[6], &silent, 200));
        assert_eq!(membership.stats().nacks_received, received);
        (downed - suspected, membership)
    }

    /// Nacks from all the members asked to probe a silent member
    /// indirectly (or all but one) confirm the suspicion at once: it lasts
    /// `suspect_timeout_min`, not the unconfirmed `suspect_timeout_max`.
    /// Fewer nacks confirm nothing, and a nack from a member that was not
    /// asked counts for nothing.
    #[test]
    fn nacks_from_helpers_confirm_a_suspicion() {
        let config = MembershipConfig::new("test");
        let step = Duration::from_millis(10);
        for nacks in [5, 4] {
            let (down_after, membership) = suspicion_with_nacks(nacks);
            assert!(
                membership.stats().nacks_received >= 4,
                "{:?}",
                membership.stats()
            );
            assert!(
                down_after >= config.suspect_timeout_min
                    && down_after <= config.suspect_timeout_min + step,
                "with {nacks} nacks: down {down_after:?} after the suspicion"
            );
        }
        for nacks in [3, 0] {
            let (down_after, _) = suspicion_with_nacks(nacks);
            assert!(
                down_after >= config.suspect_timeout_max,
                "with {nacks} nacks: down {down_after:?} after the suspicion"
            );
        }
    }

    /// A suspicion whose time runs out after the suspect refuted it ends
    /// with no verdict and no message to the suspect. foca on its own would
    /// still send the suspect "you are down" (`TurnUndead`), and the live
    /// suspect would rejoin under a new identity, declaring its old one down
    /// to everyone.
    #[test]
    fn a_suspicion_refuted_in_time_sends_no_verdict() {
        let (mut membership, peers, mut now) = suspecting_a_silent_member(5);
        let (config, me) = (membership.config.clone(), membership.identity().clone());
        let silent = peers[0].clone();
        // The suspect refutes: its header and its own update carry
        // incarnation 1.
        let refutation = Member::new(silent.clone(), 1, State::Alive);
        let gossip = packet(&silent, 1, &me, Message::Gossip, &[refutation], &[]);
        membership.handle_datagram(now, None, &gossip);
        assert_eq!(
            membership.lookup(&silent.node_id).unwrap().1,
            MemberState::Alive
        );
        // Every member answers from now on; the suspicion's deadline passes.
        let end = now + config.suspect_timeout_max * 2;
        let mut verdicts = 0;
        while now < end {
            now += Duration::from_millis(5);
            membership.handle_timeout(now);
            let mut replies = Vec::new();
            while let Some(transmit) = membership.poll_transmit() {
                let payload = Envelope::new("test").open(&transmit.payload).unwrap();
                let header = MsgpackCodec.decode_header(&mut &payload[..]).unwrap();
                match header.message {
                    Message::TurnUndead => verdicts += 1,
                    Message::Ping(number) => {
                        let from = peers.iter().find(|peer| peer.addr == transmit.addr);
                        let incarnation = u16::from(from == Some(&silent));
                        let ack = Message::Ack(number);
                        replies.push(packet(from.unwrap(), incarnation, &me, ack, &[], &[]));
                    }
                    _ => {}
                }
            }
            for reply in replies {
                membership.handle_datagram(now, None, &reply);
            }
        }
        assert_eq!(verdicts, 0, "the refuted suspect was told it is down");
        assert_eq!(
            membership.lookup(&silent.node_id).unwrap().1,
            MemberState::Alive
        );
        assert_eq!(membership.stats().suspicions_refuted_late, 1);
        assert_eq!(membership.stats().suspicions_expired, 0);
        while let Some(event) = membership.poll_event() {
            assert!(!matches!(event, Event::MemberDown(_)), "{event:?}");
        }
    }

    /// A down verdict heard from others is not gossiped out of turn (only
    /// this node's own verdicts are; see `nacks_from_helpers_confirm_a_suspicion`).
    #[test]
    fn a_down_verdict_heard_waits_for_the_gossip_period() {
        let me = identity(0, 1, 0);
        let peers: Vec<Identity> = (1..=8).map(|index| identity(index, 1, 0)).collect();
        let mut membership = knowing(
            &MembershipConfig::new("test"),
            &me,
            &peers.iter().collect::<Vec<_>>(),
        );
        let now = Duration::from_millis(10);
        while membership.poll_transmit().is_some() {}
        let down = Member::new(peers[1].clone(), 0, State::Down);
        membership.handle_datagram(
            now,
            None,
            &packet(&peers[0], 0, &me, Message::Ack(0), &[down], &[]),
        );
        assert_eq!(
            membership.lookup(&peers[1].node_id).unwrap().1,
            MemberState::Down
        );
        let mut gossips = 0;
        while let Some(transmit) = membership.poll_transmit() {
            let payload = Envelope::new("test").open(&transmit.payload).unwrap();
            let header = MsgpackCodec.decode_header(&mut &payload[..]).unwrap();
            gossips += usize::from(header.message == Message::Gossip);
        }
        assert_eq!(gossips, 0);
        assert_eq!(membership.stats().early_gossips, 0);
    }

    /// A member merges every telemetry delta it hears and passes them on,
    /// but foca holds only the latest [`TELEMETRY_RELAYS_HELD`] of those
    /// for it; its own delta stays whatever it relays.
    #[test]
    fn relayed_telemetry_deltas_are_bounded_and_the_own_one_stays() {
        let config = MembershipConfig::new("test");
        let (me, peer) = (identity(1, 1, 0), identity(2, 1, 0));
        let mut membership = knowing(&config, &me, &[&peer]);
        let mut now = Duration::from_millis(20);
        while membership.with_telemetry(|store| store.local_version().is_none()) {
            assert!(now < Duration::from_secs(10), "no local record");
            membership.handle_timeout(now);
            now += Duration::from_millis(10);
        }
        let own = membership.broadcast_backlog();
        assert!(own >= 1, "the first refresh queues this node's own record");
        let heard = TELEMETRY_RELAYS_HELD as usize + 40;
        let deltas: Vec<EncodedDelta> = (0..heard)
            .map(|i| {
                let node = NodeId::new(format!("t{i}")).unwrap();
                let mut store = TelemetryStore::new(
                    TelemetryConfig::default(),
                    node,
                    Generation(1),
                    "test",
                    now,
                )
                .unwrap();
                store.refresh(now).unwrap();
                store.local_delta(now).unwrap()
            })
            .collect();
        for (sent, chunk) in deltas.chunks(4).enumerate() {
            let gossip = packet_with(&peer, 0, &me, Message::Gossip, &[], &[], chunk);
            membership.handle_datagram(now, None, &gossip);
            let relayed = (sent * 4 + chunk.len()).min(TELEMETRY_RELAYS_HELD as usize);
            assert_eq!(membership.broadcast_backlog(), own + relayed);
        }
        assert_eq!(membership.stats().telemetry_relays, heard as u64);
        membership.with_telemetry(|store| {
            for delta in &deltas {
                assert!(
                    store.record(&delta.key.node_id).is_some(),
                    "{:?}",
                    delta.key
                );
            }
            assert!(store.local_version().is_some());
        });
    }
}
