//! Applying a move to a [`ClusterState`]: the planner's model of what the controllers do.
//!
//! Tests and the benchmark use it to run plan → apply → plan loops without a cluster. It
//! completes each move at once (a new replica arrives caught up), updates the nodes' reported
//! disk usage and drops the matching in-flight entry. The real controllers perform the same
//! changes as multi-step catalog operations.

use crate::error::PlanError;
use crate::model::{ClusterState, Epoch, KeyRange, Move, Position, Replica, Shard};

fn shard_mut(state: &mut ClusterState, id: crate::ShardId) -> Result<&mut Shard, PlanError> {
    state
        .shards
        .iter_mut()
        .find(|shard| shard.id == id)
        .ok_or(PlanError::NotApplicable("no such shard"))
}

fn adjust_disk(state: &mut ClusterState, node: &crate::NodeId, add: bool, bytes: u64) {
    if let Some(node) = state.nodes.iter_mut().find(|n| n.id == *node) {
        node.usage.disk_bytes = if add {
            node.usage.disk_bytes.saturating_add(bytes)
        } else {
            node.usage.disk_bytes.saturating_sub(bytes)
        };
    }
}

/// Applies one move to `state` as if it had completed.
///
/// On error nothing changed: the move does not fit the state (it was planned against another
/// state, or was already applied).
pub fn apply(state: &mut ClusterState, action: &Move) -> Result<(), PlanError> {
    let now_ms = state.now_ms;
    match action {
        Move::AddReplica { shard, target } => {
            let shard = shard_mut(state, *shard)?;
            if shard.replicas.iter().any(|r| r.node == *target) {
                return Err(PlanError::NotApplicable("target already holds a replica"));
            }
            // The learner is promoted once caught up: it arrives at the shard's position.
            let applied = shard
                .replicas
                .iter()
                .map(|r| r.applied)
                .max()
                .unwrap_or(Position(0));
            shard.replicas.push(Replica {
                node: target.clone(),
                applied,
            });
            let size = shard.size_bytes;
            adjust_disk(state, target, true, size);
        }
        Move::RemoveReplica { shard, source } => {
            let shard = shard_mut(state, *shard)?;
            if shard.primary.as_ref() == Some(source) {
                return Err(PlanError::NotApplicable("cannot remove the primary"));
            }
            let before = shard.replicas.len();
            shard.replicas.retain(|r| r.node != *source);
            if shard.replicas.len() == before {
                return Err(PlanError::NotApplicable("source holds no replica"));
            }
            let size = shard.size_bytes;
            adjust_disk(state, source, false, size);
        }
        Move::TransferPrimary {
            shard,
            target,
            expected_epoch,
            new_epoch,
            ..
        } => {
            let shard = shard_mut(state, *shard)?;
            if shard.epoch != *expected_epoch || new_epoch <= expected_epoch {
                return Err(PlanError::NotApplicable("stale epoch"));
            }
            if !shard.replicas.iter().any(|r| r.node == *target) {
                return Err(PlanError::NotApplicable("target holds no replica"));
            }
            shard.primary = Some(target.clone());
            shard.epoch = *new_epoch;
        }
        Move::Split {
            shard,
            split_key,
            right,
        } => {
            if state.shards.iter().any(|s| s.id == *right) {
                return Err(PlanError::NotApplicable("right shard id taken"));
            }
            let left = shard_mut(state, *shard)?;
            if !left.range.splits_at(split_key) {
                return Err(PlanError::NotApplicable("split key outside the range"));
            }
            let (low, high): (Vec<_>, Vec<_>) = left
                .samples
                .drain(..)
                .partition(|sample| sample.start_key < *split_key);
            let share =
                |part: &[crate::KeySample], total: u64, get: fn(&crate::KeySample) -> u64| {
                    let all: u64 = low.iter().chain(high.iter()).map(get).sum();
                    if all == 0 {
                        total / 2
                    } else {
                        let mine: u64 = part.iter().map(get).sum();
                        (u128::from(total) * u128::from(mine) / u128::from(all)) as u64
                    }
                };
            let left_qps = share(&low, left.qps, |s| s.qps);
            let left_size = share(&low, left.size_bytes, |s| s.size_bytes);
            let epoch = Epoch(left.epoch.0 + 1);
            let new_shard = Shard {
                id: *right,
                table: left.table.clone(),
                range: KeyRange {
                    start: split_key.clone(),
                    end: left.range.end.clone(),
                },
                size_bytes: left.size_bytes - left_size,
                qps: left.qps - left_qps,
                replicas: left.replicas.clone(),
                primary: left.primary.clone(),
                epoch,
                reshaped_at_ms: Some(now_ms),
                samples: high,
            };
            left.range.end = Some(split_key.clone());
            left.size_bytes = left_size;
            left.qps = left_qps;
            left.samples = low;
            left.epoch = epoch;
            left.reshaped_at_ms = Some(now_ms);
            state.shards.push(new_shard);
        }
        Move::Merge { left, right } => {
            let position = state
                .shards
                .iter()
                .position(|s| s.id == *right)
                .ok_or(PlanError::NotApplicable("no such shard"))?;
            let right_shard = state.shards[position].clone();
            let left_shard = shard_mut(state, *left)?;
            if left_shard.range.end.as_ref() != Some(&right_shard.range.start)
                || left_shard.table != right_shard.table
            {
                return Err(PlanError::NotApplicable("shards are not adjacent"));
            }
            left_shard.range.end = right_shard.range.end.clone();
            left_shard.size_bytes += right_shard.size_bytes;
            left_shard.qps += right_shard.qps;
            left_shard.samples.extend(right_shard.samples);
            left_shard.epoch = Epoch(left_shard.epoch.0.max(right_shard.epoch.0) + 1);
            left_shard.reshaped_at_ms = Some(now_ms);
            state.shards.remove(position);
        }
    }
    state.in_flight.retain(|m| m != action);
    Ok(())
}
