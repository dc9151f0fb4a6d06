//! Shoal's placement planner: a pure, deterministic function from cluster state to a
//! bounded plan.
//!
//! # Contract
//!
//! **No IO; deterministic.** This crate reads no clock, draws no randomness, spawns no
//! threads and touches no files or sockets. Time arrives as [`ClusterState::now_ms`]; ties
//! break by rendezvous hash, then id. The same input — in any order of its lists — and the
//! same policy give the same plan, byte for byte. It depends on nothing else in the workspace.
//!
//! # Use
//!
//! The controller (run by the Raft leader) converts the catalog, the membership view and the
//! telemetry into a [`ClusterState`], calls [`plan`], commits the moves as catalog operations
//! and stores [`Plan::history`] to pass back next round. [`apply`] simulates a completed move,
//! for tests, the benchmark and the simulator.
//!
//! ```
//! use shoal_placement::{plan, ClusterState, Policy};
//! let state = ClusterState::default();
//! let plan = plan(&state, &Policy::default()).expect("valid input");
//! assert!(plan.is_quiet());
//! ```
//!
//! # Priorities
//!
//! 1. Restore missing replicas (fewest live replicas first), then widen spread; remove dead,
//!    drained and excess replicas once their replacements are in place.
//! 2. Move primaries off dead or draining nodes to the alive replica with the most advanced
//!    applied position, under a strictly greater epoch.
//! 3. Split shards hot or large for `split_hold_ms` at the load midpoint; merge adjacent cold
//!    shards outside the reshape cool-down.
//! 4. Balance primaries (cheap), then replicas.
//!
//! A plan never lowers a shard's locality spread to improve balance, never targets a dead,
//! suspect, draining or full node, and never names a node in more than
//! [`Policy::moves_per_node_max`] moves (counting those in flight). Constraints it cannot meet
//! are returned as [`Infeasible`] notes *beside* the moves it can still make, so a partial
//! repair goes ahead while the operator is alerted.

mod apply;
mod error;
mod hash;
mod model;
mod planner;
mod policy;

pub use apply::apply;
pub use error::PlanError;
pub use model::{
    ClusterState, Epoch, History, Infeasible, Key, KeyRange, KeySample, Locality, Move, Node,
    NodeId, NodeStatus, Plan, PlannedMove, Position, Reason, Replica, Resources, Shard,
    ShardHistory, ShardId, TableId,
};
pub use planner::{NODES_MAX, SHARDS_MAX};
pub use policy::{Policy, REPLICATION_FACTOR_MAX, Tier};

/// Plans one round: the moves that bring `state` closer to `policy`, in priority order, at
/// most [`Policy::moves_per_round_max`] of them, plus notes on what cannot be done.
///
/// Pure and deterministic (see the crate docs). Fails only on malformed input — duplicate
/// ids, a primary that is not a replica, an out-of-range policy — never on the state of the
/// cluster. Replicas on nodes absent from `state.nodes` are treated as on dead nodes.
pub fn plan(state: &ClusterState, policy: &Policy) -> Result<Plan, PlanError> {
    planner::plan(state, policy)
}
