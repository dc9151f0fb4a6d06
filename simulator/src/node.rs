//! One simulated agent: how it is built, its local clock, and how one input
//! is handed to its [`NodeCore`] and its outputs collected.
//!
//! This is the only module that knows the node core's surface. The event
//! loop (`sim.rs`) speaks in node indices, virtual time and [`Output`]s;
//! everything that changes when the core grows (Raft with a `MemStorage`
//! kept across crashes, telemetry, reliable streams) lands here.
//!
//! Clock: each node sees `local = base_local + (virtual - base_virtual) ×
//! (1 + ppm / 10⁶)`. `skew` jumps `base_local`; `drift` changes the rate.
//! Timers the core asks for in local time are converted back to virtual time.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use shoal_agent::core::{NodeCore, NodeCoreConfig};
use shoal_consensus::MemStorage;
use shoal_membership::{Event, Generation, Identity, MemberMeta, MembershipConfig, NodeId, Role};

/// The node core under test, on the in-memory Raft store.
pub(crate) type Core = NodeCore<MemStorage>;

/// Wall-clock time every node's clock reads at virtual time zero (ms since
/// the Unix epoch): 2025-01-01. Only timestamps inside commands use it.
const WALL_BASE_UNIX_MS: u64 = 1_735_689_600_000;

/// Port every simulated agent "listens" on.
const PORT: u16 = 7400;

/// The address of node `index`: 10.x.y.z, unique for 16 million nodes.
pub(crate) fn addr_of(index: usize) -> SocketAddr {
    let n = index as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
        PORT,
    ))
}

/// The node index of an address made by [`addr_of`].
pub(crate) fn index_of(addr: &SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            let n = (u32::from(b) << 16) | (u32::from(c) << 8) | u32::from(d);
            (a == 10 && n > 0).then(|| n as usize - 1)
        }
        SocketAddr::V6(_) => None,
    }
}

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// Defined but never started.
    Absent,
    /// Running.
    Running,
    /// Stalled: inputs queue, timers wait.
    Paused,
    /// Stopped abruptly; may start again.
    Crashed,
    /// Left gracefully; removed for good.
    Left,
}

impl Status {
    /// Running or paused: the process exists.
    pub(crate) fn is_up(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// A node's fixed description.
#[derive(Clone, Debug)]
pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) node_id: NodeId,
    pub(crate) role: Role,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) start_at_boot: bool,
}

/// A node's local clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base_virtual: Duration,
    base_local: Duration,
    ppm: f64,
}

impl Clock {
    fn new() -> Self {
        Self {
            base_virtual: Duration::ZERO,
            base_local: Duration::ZERO,
            ppm: 0.0,
        }
    }

    /// Local time at virtual time `now`.
    pub(crate) fn local(&self, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.base_virtual);
        if self.ppm == 0.0 {
            return self.base_local + elapsed;
        }
        let scaled = elapsed.as_nanos() as f64 * (1.0 + self.ppm / 1e6);
        self.base_local + Duration::from_nanos(scaled as u64)
    }

    /// Virtual time at which the local clock reads `local` (at or after
    /// `now`; a reading already passed maps to `now`).
    pub(crate) fn virtual_at(&self, local: Duration, now: Duration) -> Duration {
        let Some(ahead) = local.checked_sub(self.base_local) else {
            return now;
        };
        let elapsed = if self.ppm == 0.0 {
            ahead
        } else {
            // Round up so the local clock has surely reached `local`.
            Duration::from_nanos((ahead.as_nanos() as f64 / (1.0 + self.ppm / 1e6)).ceil() as u64)
        };
        (self.base_virtual + elapsed).max(now)
    }

    /// Jumps the clock by `offset` at virtual time `now`. Monotonic time
    /// inside the core never goes back, so a backward jump only delays.
    pub(crate) fn skew(&mut self, now: Duration, negative: bool, offset: Duration) {
        let local = self.local(now);
        self.base_local = if negative {
            local.saturating_sub(offset)
        } else {
            local + offset
        };
        self.base_virtual = now;
    }

    /// Sets the rate error to `ppm` from virtual time `now` on.
    pub(crate) fn drift(&mut self, now: Duration, ppm: f64) {
        self.base_local = self.local(now);
        self.base_virtual = now;
        self.ppm = ppm;
    }
}

/// What one input made a node do.
#[derive(Debug)]
pub(crate) enum Output {
    /// A datagram for node `to`.
    Datagram { to: usize, payload: Vec<u8> },
    /// A peer message for node `to`, on a reliable stream.
    Message {
        to: usize,
        /// Shared with the other copies of one answer sent to many peers.
        bytes: bytes::Bytes,
        kind: &'static str,
        carries_snapshot: bool,
    },
    /// A membership event (boxed: identities are large).
    Event(Box<Event>),
}

/// An input held while a node is paused.
#[derive(Debug)]
enum Held {
    Datagram(usize, Vec<u8>),
    Message(usize, Vec<u8>),
}

/// One simulated agent.
#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) spec: NodeSpec,
    pub(crate) status: Status,
    /// The generation of the current (or last) run; 0 before the first.
    pub(crate) generation: u64,
    pub(crate) clock: Clock,
    core: Option<Core>,
    /// The Raft store: it outlives crashes, losing only unsynced writes.
    storage: MemStorage,
    /// Inputs received while paused, delivered on resume.
    paused_inbox: Vec<Held>,
    /// The wake-up scheduled in the event queue: virtual time and token.
    /// A queued wake-up with another token is stale and ignored.
    pub(crate) wake: Option<(Duration, u64)>,
    pub(crate) wake_token: u64,
    /// Finished client requests since last taken.
    pub(crate) completions: Vec<shoal_agent::core::Completion>,
}

/// Most datagrams queued for a paused node; past it the oldest are
/// dropped, as a real socket buffer would.
pub(crate) const PAUSED_INBOX_MAX: usize = 4096;

impl SimNode {
    pub(crate) fn new(spec: NodeSpec) -> Self {
        Self {
            spec,
            status: Status::Absent,
            generation: 0,
            clock: Clock::new(),
            core: None,
            storage: MemStorage::new(),
            paused_inbox: Vec::new(),
            wake: None,
            wake_token: 0,
            completions: Vec::new(),
        }
    }

    /// The running core, if any.
    pub(crate) fn core(&self) -> Option<&Core> {
        self.core.as_ref()
    }

    /// The identity the next start will use.
    fn identity(&self, index: usize) -> Identity {
        Identity {
            node_id: self.spec.node_id.clone(),
            addr: addr_of(index),
            generation: Generation(self.generation),
            rejoin: 0,
            meta: std::sync::Arc::new(MemberMeta {
                role: self.spec.role,
                labels: self.spec.labels.clone(),
                version: "sim".into(),
            }),
        }
    }

    /// Starts a new run with the next generation, announcing to `seeds`.
    /// `bootstrap_expect` seeds form the first Raft group (unless
    /// `consensus` is off: membership only).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        index: usize,
        now: Duration,
        config: &MembershipConfig,
        bootstrap_expect: usize,
        consensus: bool,
        rng_seed: u64,
        seeds: &[(NodeId, SocketAddr)],
        out: &mut Vec<Output>,
    ) {
        assert!(
            !self.status.is_up(),
            "start of a running node {}",
            self.spec.name
        );
        self.generation += 1;
        let local = self.clock.local(now);
        let mut core_config =
            NodeCoreConfig::new(self.identity(index), config.clone(), bootstrap_expect);
        core_config.wall_base_unix_ms = WALL_BASE_UNIX_MS;
        core_config.consensus = consensus;
        let mut core = Core::new(core_config, self.storage.clone(), rng_seed, local)
            .expect("the scenario's config was validated and the store is in memory");
        for (node_id, addr) in seeds {
            core.add_seed(local, node_id.clone(), *addr);
        }
        self.core = Some(core);
        self.status = Status::Running;
        self.paused_inbox.clear();
        self.drain(out);
    }

    /// Stops abruptly: every in-memory state is gone, and so are the Raft
    /// store's unsynced writes.
    pub(crate) fn crash(&mut self) {
        self.core = None;
        self.storage.crash();
        self.status = Status::Crashed;
        self.paused_inbox.clear();
        self.wake = None;
    }

    /// Leaves gracefully: the goodbye datagrams go into `out`, then the
    /// node stops for good.
    pub(crate) fn leave(&mut self, now: Duration, out: &mut Vec<Output>) {
        if self.status == Status::Running
            && let Some(core) = self.core.as_mut()
        {
            core.leave(self.clock.local(now));
            self.drain(out);
        }
        self.crash();
        self.status = Status::Left;
    }

    pub(crate) fn pause(&mut self) {
        if self.status == Status::Running {
            self.status = Status::Paused;
        }
    }

    /// Resumes: the queued datagrams, then the overdue timers.
    pub(crate) fn resume(&mut self, now: Duration, names: &[NodeId], out: &mut Vec<Output>) {
        if self.status != Status::Paused {
            return;
        }
        self.status = Status::Running;
        for held in std::mem::take(&mut self.paused_inbox) {
            match held {
                Held::Datagram(from, payload) => {
                    self.handle_datagram(now, from, &names[from], &payload, out)
                }
                Held::Message(from, bytes) => {
                    self.handle_message(now, from, &names[from], &bytes, out)
                }
            }
        }
        self.handle_timeout(now, out);
    }

    /// A datagram from node `from` arrives.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Duration,
        from: usize,
        from_id: &NodeId,
        payload: &[u8],
        out: &mut Vec<Output>,
    ) {
        match self.status {
            Status::Running => {
                let local = self.clock.local(now);
                let core = self.core.as_mut().expect("running nodes have a core");
                core.handle_datagram(local, Some(from_id), payload);
                self.drain(out);
            }
            Status::Paused => {
                if self.paused_inbox.len() >= PAUSED_INBOX_MAX {
                    // Datagrams only: stream messages are never dropped here.
                    if let Some(oldest) = self
                        .paused_inbox
                        .iter()
                        .position(|held| matches!(held, Held::Datagram(..)))
                    {
                        self.paused_inbox.remove(oldest);
                    }
                }
                self.paused_inbox
                    .push(Held::Datagram(from, payload.to_vec()));
            }
            _ => {}
        }
    }

    /// A peer message from node `from` arrives on a stream.
    pub(crate) fn handle_message(
        &mut self,
        now: Duration,
        from: usize,
        from_id: &NodeId,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) {
        match self.status {
            Status::Running => {
                let local = self.clock.local(now);
                let core = self.core.as_mut().expect("running nodes have a core");
                core.handle_message(local, from_id, bytes);
                self.drain(out);
            }
            // Streams have flow control: nothing is dropped while paused.
            Status::Paused => self.paused_inbox.push(Held::Message(from, bytes.to_vec())),
            _ => {}
        }
    }

    /// Tells the core whether a snapshot it sent to `to` arrived.
    pub(crate) fn report_snapshot(
        &mut self,
        now: Duration,
        to: &NodeId,
        delivered: bool,
        out: &mut Vec<Output>,
    ) {
        if self.status != Status::Running {
            return;
        }
        let Ok(to) = shoal_consensus::NodeId::new(to.as_str()) else {
            return;
        };
        let local = self.clock.local(now);
        let core = self.core.as_mut().expect("running nodes have a core");
        core.report_snapshot(local, &to, delivered);
        self.drain(out);
    }

    /// The wake-up came: deliver due timers.
    pub(crate) fn handle_timeout(&mut self, now: Duration, out: &mut Vec<Output>) {
        if self.status != Status::Running {
            return;
        }
        let local = self.clock.local(now);
        self.core
            .as_mut()
            .expect("running nodes have a core")
            .handle_timeout(local);
        self.drain(out);
    }

    /// A client write submitted at this agent.
    pub(crate) fn submit(
        &mut self,
        now: Duration,
        command: shoal_consensus::Command,
        out: &mut Vec<Output>,
    ) {
        if self.status != Status::Running {
            return;
        }
        let local = self.clock.local(now);
        self.core
            .as_mut()
            .expect("running nodes have a core")
            .submit(local, command);
        self.drain(out);
    }

    /// When the core next wants `handle_timeout`, in virtual time.
    pub(crate) fn next_timeout(&self, now: Duration) -> Option<Duration> {
        if self.status != Status::Running {
            return None;
        }
        let local = self.core.as_ref()?.poll_timeout()?;
        Some(self.clock.virtual_at(local, now))
    }

    fn drain(&mut self, out: &mut Vec<Output>) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        while let Some(transmit) = core.poll_transmit() {
            // A core only addresses peers it heard of, all made by addr_of.
            if let Some(to) = index_of(&transmit.addr) {
                out.push(Output::Datagram {
                    to,
                    payload: transmit.payload,
                });
            }
        }
        while let Some(outgoing) = core.poll_message() {
            if let Some(to) = index_of(&outgoing.addr) {
                out.push(Output::Message {
                    to,
                    kind: outgoing.kind,
                    bytes: outgoing.bytes,
                    carries_snapshot: outgoing.carries_snapshot,
                });
            }
        }
        while let Some(event) = core.poll_event() {
            out.push(Output::Event(Box::new(event)));
        }
        // Completions of the agent's own writes; the workload reads its own
        // through `take_completions`.
        while let Some(completion) = core.poll_completion() {
            self.completions.push(completion);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for index in [0, 1, 255, 256, 9_999, 70_000] {
            assert_eq!(index_of(&addr_of(index)), Some(index));
        }
    }

    #[test]
    fn clocks_skew_and_drift() {
        let mut clock = Clock::new();
        let s = Duration::from_secs;
        assert_eq!(clock.local(s(5)), s(5));
        clock.skew(s(5), false, s(2));
        assert_eq!(clock.local(s(6)), s(8));
        assert_eq!(clock.virtual_at(s(10), s(6)), s(8));
        clock.drift(s(6), 100_000.0); // 10% fast
        assert_eq!(clock.local(s(16)), s(19));
        assert_eq!(clock.virtual_at(s(19), s(6)), s(16));
        // A reading in the past maps to now.
        assert_eq!(clock.virtual_at(s(1), s(16)), s(16));
    }
}
