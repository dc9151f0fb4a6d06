//! The node core: everything one agent decides, with no IO.
//!
//! It composes the sans-IO parts (today: SWIM membership; telemetry and the
//! catalog replica join it) behind one `handle_* / poll_*` surface. The
//! tokio shell (`shell.rs`) drives it with real time and QUIC; the simulator
//! drives the very same type with virtual time and a virtual network.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_membership::{
    Event, Identity, MemberView, Membership, MembershipConfig, NodeId, Transmit,
};

/// One agent's decisions. See the module docs.
#[derive(Debug)]
pub struct NodeCore {
    membership: Membership,
}

impl NodeCore {
    /// A core for `identity`; every random choice derives from `rng_seed`.
    pub fn new(
        identity: Identity,
        membership: MembershipConfig,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Self, shoal_membership::ConfigError> {
        Ok(Self {
            membership: Membership::new(identity, membership, rng_seed, now)?,
        })
    }

    /// The membership part, for reading.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// A seed was resolved to its node id: announce to it.
    pub fn add_seed(&mut self, now: Duration, node_id: NodeId, addr: SocketAddr) {
        self.membership.add_seed(now, node_id, addr);
    }

    /// A SWIM datagram arrived from `from` (as authenticated by TLS).
    pub fn handle_datagram(&mut self, now: Duration, from: Option<&NodeId>, payload: &[u8]) {
        self.membership.handle_datagram(now, from, payload);
    }

    /// When [`NodeCore::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.membership.poll_timeout()
    }

    /// Delivers every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.membership.handle_timeout(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.membership.poll_transmit()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.membership.poll_event()
    }

    /// Leave the cluster gracefully.
    pub fn leave(&mut self, now: Duration) {
        self.membership.leave(now);
    }

    /// This agent's member table.
    pub fn members(&self) -> Vec<MemberView> {
        self.membership.members()
    }
}
