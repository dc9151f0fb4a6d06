//! Shoal's membership core: SWIM failure detection (foca) with Lifeguard-style
//! local health, and the telemetry CRDT that rides on it.
//!
//! Contract: no IO in this crate. Time (`now`) and randomness (a seeded RNG)
//! come from the caller, nothing spawns, and every map whose order can leak
//! into bytes or decisions is ordered. The `shoal` agent drives this core from
//! tokio and QUIC; the simulator drives the very same code with a virtual
//! clock and network.

pub mod alerts;
pub mod codec;
pub mod id;
pub mod lifeguard;
mod lookup;
mod meta_cache;
pub mod rings;
mod summary;
pub mod swim;
pub mod telemetry;

pub use id::{Generation, Identity, InvalidNodeId, MemberMeta, NodeId, Role};
pub use swim::{
    ConfigError, Event, MemberState, MemberView, Membership, MembershipConfig, Stats, Transmit,
};
