//! The knobs of the planner and their constraints.
//!
//! Every bound the planner enforces is named here, with its unit and default. `Policy::check`
//! rejects combinations that would make the planner oscillate or divide by zero.

use crate::error::PlanError;

/// The locality level at which a shard's replicas must be spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Replicas in distinct regions.
    Region,
    /// Replicas in distinct zones (`region/zone`).
    Zone,
    /// Replicas in distinct racks (`region/zone/rack`).
    Rack,
    /// Replicas on distinct nodes only.
    Node,
}

/// What the planner aims for and how far it may go in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Replicas per shard. Default 3. Must be ≥ 1.
    pub replication_factor: usize,
    /// The locality tier replicas spread across. Default [`Tier::Zone`].
    pub spread_tier: Tier,
    /// Relative dead-band of balance, as a fraction of the mean load: a node is over-loaded
    /// only above `mean × (1 + band)` and under-loaded only below `mean × (1 − band)`.
    /// Default 0.05. Must be in `[0, 1)`.
    pub balance_band_ratio: f64,
    /// Absolute dead-band of balance, in mean-shard units (a shard of average size and QPS
    /// weighs 1): a node is over- or under-loaded only if it is also this far from the mean.
    /// Keeps small clusters from chasing single shards. Default 1.5: with unit shards a node
    /// sits at an integer count, possibly one above an integer mean; a band wider than one
    /// shard plus the fraction a joining or leaving node moves the mean keeps such a node
    /// still, so adding a node moves load onto it and nowhere else. Must be ≥ 0.
    pub balance_band_abs: f64,
    /// Share of QPS (vs size) in a shard's load weight, in `[0, 1]`. Default 0.5.
    pub qps_weight_ratio: f64,
    /// Most moves in one plan. Default 4096. Must be ≥ 1. Further work waits for the next
    /// round and is reported as [`crate::Infeasible::Budget`].
    pub moves_per_round_max: usize,
    /// Most moves (in flight plus planned) naming one node. Default 16. Must be ≥ 1.
    pub moves_per_node_max: usize,
    /// A node whose disk would pass this fraction of its capacity is full. Default 0.9.
    pub disk_full_ratio: f64,
    /// A node whose CPU usage is at or above this fraction of its capacity takes nothing new.
    /// Default 0.9. Ignored when the CPU capacity is zero (unknown).
    pub cpu_full_ratio: f64,
    /// A balance transfer of a primary only targets replicas at most this many positions
    /// behind the most advanced live replica. Default 1000.
    pub transfer_lag_max: u64,
    /// Split a shard whose QPS stays at or above this for `split_hold_ms`. `None` disables.
    pub split_qps_min: Option<u64>,
    /// Split a shard whose size stays at or above this for `split_hold_ms`. `None` disables.
    pub split_size_bytes_min: Option<u64>,
    /// How long a split condition must hold, in ms. Default 5 minutes.
    pub split_hold_ms: u64,
    /// Merge adjacent shards whose QPS both stay at or below this for `merge_hold_ms`.
    /// `None` disables merging.
    pub merge_qps_max: Option<u64>,
    /// … and whose sizes both stay at or below this. `None` disables merging.
    pub merge_size_bytes_max: Option<u64>,
    /// How long a merge condition must hold, in ms. Default 30 minutes.
    pub merge_hold_ms: u64,
    /// A shard created by a split or merge is neither split nor merged again for this long,
    /// in ms. Default 1 hour.
    pub reshape_cooldown_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            replication_factor: 3,
            spread_tier: Tier::Zone,
            balance_band_ratio: 0.05,
            balance_band_abs: 1.5,
            qps_weight_ratio: 0.5,
            moves_per_round_max: 4096,
            moves_per_node_max: 16,
            disk_full_ratio: 0.9,
            cpu_full_ratio: 0.9,
            transfer_lag_max: 1000,
            split_qps_min: None,
            split_size_bytes_min: None,
            split_hold_ms: 5 * 60 * 1000,
            merge_qps_max: None,
            merge_size_bytes_max: None,
            merge_hold_ms: 30 * 60 * 1000,
            reshape_cooldown_ms: 60 * 60 * 1000,
        }
    }
}

/// Largest replication factor accepted (a bound on per-shard work).
pub const REPLICATION_FACTOR_MAX: usize = 15;

impl Policy {
    /// Rejects knob combinations the planner cannot honour. No state is touched.
    pub fn check(&self) -> Result<(), PlanError> {
        let bad = |what: &'static str| Err(PlanError::Policy(what));
        if self.replication_factor == 0 || self.replication_factor > REPLICATION_FACTOR_MAX {
            return bad("replication_factor must be in 1..=15");
        }
        if !(0.0..1.0).contains(&self.balance_band_ratio) {
            return bad("balance_band_ratio must be in [0, 1)");
        }
        if !(self.balance_band_abs >= 0.0 && self.balance_band_abs.is_finite()) {
            return bad("balance_band_abs must be finite and >= 0");
        }
        if !(0.0..=1.0).contains(&self.qps_weight_ratio) {
            return bad("qps_weight_ratio must be in [0, 1]");
        }
        if self.moves_per_round_max == 0 || self.moves_per_node_max == 0 {
            return bad("moves_per_round_max and moves_per_node_max must be >= 1");
        }
        if !(self.disk_full_ratio > 0.0 && self.disk_full_ratio <= 1.0) {
            return bad("disk_full_ratio must be in (0, 1]");
        }
        if !(self.cpu_full_ratio > 0.0 && self.cpu_full_ratio <= 1.0) {
            return bad("cpu_full_ratio must be in (0, 1]");
        }
        // Hysteresis between split and merge: two merged shards must not be hot at once.
        if let (Some(split), Some(merge)) = (self.split_qps_min, self.merge_qps_max)
            && merge.saturating_mul(4) > split
        {
            return bad("merge_qps_max must be at most split_qps_min / 4");
        }
        if let (Some(split), Some(merge)) = (self.split_size_bytes_min, self.merge_size_bytes_max)
            && merge.saturating_mul(4) > split
        {
            return bad("merge_size_bytes_max must be at most split_size_bytes_min / 4");
        }
        Ok(())
    }
}
