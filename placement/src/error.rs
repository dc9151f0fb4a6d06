//! The one error type of the crate: malformed input or policy.
//!
//! The planner never fails for operating conditions (dead nodes, full disks, too few zones):
//! those are reported as [`crate::Infeasible`] notes beside the moves it can still make.
//! An error here means the caller handed over something that cannot be a catalog.

/// Why [`crate::plan`] refused its input. In every case nothing was planned and no state
/// was touched (the planner has no state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A policy knob is out of range; the text names it.
    #[error("invalid policy: {0}")]
    Policy(&'static str),
    /// Two nodes share an id.
    #[error("duplicate node {0}")]
    DuplicateNode(String),
    /// Two shards share an id.
    #[error("duplicate shard {0}")]
    DuplicateShard(u64),
    /// A shard lists two replicas on the same node.
    #[error("shard {shard} has two replicas on node {node}")]
    DuplicateReplica {
        /// The shard.
        shard: u64,
        /// The node.
        node: String,
    },
    /// A shard's primary is not one of its replicas.
    #[error("shard {shard} has primary {node}, which holds no replica of it")]
    PrimaryNotReplica {
        /// The shard.
        shard: u64,
        /// The node named as primary.
        node: String,
    },
    /// More nodes or shards than the planner's named limits.
    #[error("input too large: {0}")]
    TooLarge(&'static str),
    /// [`crate::apply`] was given a move that does not fit the state; the text says why.
    /// The state was not changed.
    #[error("move not applicable: {0}")]
    NotApplicable(&'static str),
}
