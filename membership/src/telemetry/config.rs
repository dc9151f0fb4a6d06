//! [`TelemetryConfig`]: every rate and size of the telemetry core, with its
//! unit, default, constraints and when to change it.
//!
//! It deserializes from the `[telemetry]` table of the agent's TOML file;
//! durations are humantime strings (`"2s"`, `"1h"`). Missing fields take
//! their defaults; unknown fields are refused (a typo is an error, not a
//! silently ignored knob). Call [`TelemetryConfig::validate`] (the store does).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TelemetryError;

/// Hard ceiling on `record_bytes_max`: one MiB. Above it one record would
/// dominate an anti-entropy exchange.
pub const RECORD_BYTES_LIMIT: usize = 1 << 20;
/// Hard ceiling on `delta_bytes_max`: foca length-prefixes each broadcast
/// with a `u16`, and a datagram is far smaller anyway.
pub const DELTA_BYTES_LIMIT: usize = u16::MAX as usize;
/// Smallest allowed `delta_bytes_max`: a tombstone delta (the node id is at
/// most 64 bytes) must always fit.
pub const DELTA_BYTES_MIN: usize = 128;
/// Hard ceiling on anti-entropy messages: 64 MiB.
pub const ANTI_ENTROPY_BYTES_LIMIT: usize = 64 << 20;

/// Rates and sizes of telemetry dissemination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// How often the local record is rebuilt from the latest inputs. A new
    /// version is published only if it differs materially from the last one
    /// (see [`NodeRecord::differs_materially`]) or `heartbeat_interval` has
    /// passed, so a steady node costs almost nothing. Default 2 s;
    /// 100 ms..=1 h. Lower it for fresher alerts and placement input.
    ///
    /// [`NodeRecord::differs_materially`]: super::NodeRecord::differs_materially
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,

    /// A new version is published at least this often even when nothing
    /// changed materially (fresh positions and ages for the controllers).
    /// Default 30 s; at least `refresh_interval`, at most 1 h. Above
    /// [`HEARTBEAT_SCALE_NODES`] nodes it stretches with the cluster (see
    /// [`TelemetryConfig::heartbeat_for`]): every heartbeat reaches every
    /// agent, so a fixed interval would make each agent's share grow with
    /// the cluster.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,

    /// Largest encoded record, bytes. A local refresh that would exceed it is
    /// refused (the previous record stays) and a peer's record over it is
    /// dropped. Default 32 KiB (≈ 700 shards per node); `delta_bytes_max..=`
    /// [`RECORD_BYTES_LIMIT`]. Raise it for nodes hosting more shards.
    pub record_bytes_max: usize,

    /// Largest delta, bytes, i.e. the largest record that rides on SWIM
    /// packets; larger records travel only by anti-entropy. Default 1000;
    /// [`DELTA_BYTES_MIN`]..=[`DELTA_BYTES_LIMIT`], and it must stay below
    /// foca's `max_packet_size` minus room for SWIM's own header and updates
    /// (≈ 150 bytes), or large deltas will rarely find room in a packet.
    pub delta_bytes_max: usize,

    /// How often this agent opens an anti-entropy exchange with one random
    /// peer. Default 10 s; 1 s..=1 h. Lower it if broadcasts are often lost
    /// or records are mostly too large for deltas.
    #[serde(with = "humantime_serde")]
    pub anti_entropy_interval: Duration,

    /// Byte budget of the records and tombstones in one anti-entropy batch.
    /// What does not fit follows in later rounds (each round starts after
    /// the last node the previous one reached, so none starves). Default
    /// 256 KiB; `record_bytes_max..=`[`ANTI_ENTROPY_BYTES_LIMIT`] (so any
    /// single record fits).
    pub anti_entropy_bytes_max: usize,

    /// Most records in one anti-entropy batch, and most records one asks
    /// for. Default 512; at least 1.
    pub anti_entropy_records_max: usize,

    /// Largest digest, bytes. A digest's record entries cost ≈ (node id +
    /// 5) bytes per node (id length, generation and sequence are varints;
    /// see [`super::digest`]) and a tombstone ≈ (node id + 12); the default
    /// 1 MiB covers > 10,000 nodes. An agent whose own digest would exceed
    /// it sends no anti-entropy request; an incoming digest whose entries
    /// exceed it is refused (counted in `decode_errors`). Also bounds how
    /// large an incoming anti-entropy message may be, together with
    /// `anti_entropy_bytes_max`. `1 KiB..=`[`ANTI_ENTROPY_BYTES_LIMIT`].
    pub digest_bytes_max: usize,

    /// Most nodes whose records are held. A record of a new node beyond it is
    /// dropped (and counted); existing nodes keep updating. Default 10,000;
    /// at least 1. A safety valve against a flood of invented node ids.
    pub nodes_max: usize,

    /// How long a tombstone is kept after this agent learned of it (or the
    /// remaining retention its sender announced, whichever is shorter). While
    /// it is kept, the removed generation is refused; after it, a peer that
    /// was cut off for longer could bring the record back (the agent
    /// re-removes nodes the catalog says are removed). Default 1 h; at least
    /// 3 × `anti_entropy_interval` so every agent hears of the removal.
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,

    /// Most tombstones held; at the limit the one closest to expiry is
    /// dropped early. Default 10,000; at least 1.
    pub tombstones_max: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(30),
            record_bytes_max: 32 << 10,
            delta_bytes_max: 1000,
            anti_entropy_interval: Duration::from_secs(10),
            anti_entropy_bytes_max: 256 << 10,
            anti_entropy_records_max: 512,
            digest_bytes_max: 1 << 20,
            nodes_max: 10_000,
            tombstone_retention: Duration::from_secs(3600),
            tombstones_max: 10_000,
        }
    }
}

/// Longest heartbeat interval, configured or scaled.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(3600);

/// Cluster size up to which heartbeats come every `heartbeat_interval`.
pub const HEARTBEAT_SCALE_NODES: usize = 128;

impl TelemetryConfig {
    /// The heartbeat interval in a cluster of `nodes` records:
    /// `heartbeat_interval` up to [`HEARTBEAT_SCALE_NODES`], then one more
    /// `heartbeat_interval` each time the cluster doubles — 2× to 256
    /// nodes, 3× to 512, 4× to 1,024, 8× at 10,000 — and never over 1 h
    /// (nor under `heartbeat_interval`). This is Consul's scaling of its
    /// anti-entropy interval (`1 + ceil(log2(n / 128))`). Each heartbeat
    /// version is merged by every agent, so a fixed interval costs each
    /// agent `n / heartbeat_interval` merges a second, and the bytes of `n`
    /// records; scaled, that grows as `n / log n`. Material changes are
    /// published at once whatever the size.
    pub fn heartbeat_for(&self, nodes: usize) -> Duration {
        let doublings = nodes
            .div_ceil(HEARTBEAT_SCALE_NODES)
            .next_power_of_two()
            .trailing_zeros();
        let scaled = self.heartbeat_interval.saturating_mul(doublings + 1);
        scaled.min(HEARTBEAT_LIMIT).max(self.heartbeat_interval)
    }

    /// Checks every constraint above; the error names the first field that
    /// breaks one.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        let invalid = |field: &'static str, reason: String| {
            Err(TelemetryError::InvalidConfig { field, reason })
        };
        let range = |value: Duration, min: Duration, max: Duration| value >= min && value <= max;
        if !range(
            self.refresh_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        ) {
            return invalid("refresh_interval", "must be 100ms..=1h".to_owned());
        }
        if !range(
            self.heartbeat_interval,
            self.refresh_interval,
            HEARTBEAT_LIMIT,
        ) {
            return invalid(
                "heartbeat_interval",
                "must be refresh_interval..=1h".to_owned(),
            );
        }
        if !(DELTA_BYTES_MIN..=DELTA_BYTES_LIMIT).contains(&self.delta_bytes_max) {
            return invalid(
                "delta_bytes_max",
                format!("must be {DELTA_BYTES_MIN}..={DELTA_BYTES_LIMIT}"),
            );
        }
        if !(self.delta_bytes_max..=RECORD_BYTES_LIMIT).contains(&self.record_bytes_max) {
            return invalid(
                "record_bytes_max",
                format!("must be delta_bytes_max..={RECORD_BYTES_LIMIT}"),
            );
        }
        if !range(
            self.anti_entropy_interval,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        ) {
            return invalid("anti_entropy_interval", "must be 1s..=1h".to_owned());
        }
        if !(self.record_bytes_max..=ANTI_ENTROPY_BYTES_LIMIT)
            .contains(&self.anti_entropy_bytes_max)
        {
            return invalid(
                "anti_entropy_bytes_max",
                format!("must be record_bytes_max..={ANTI_ENTROPY_BYTES_LIMIT}"),
            );
        }
        if self.anti_entropy_records_max == 0 {
            return invalid("anti_entropy_records_max", "must be at least 1".to_owned());
        }
        if !(1024..=ANTI_ENTROPY_BYTES_LIMIT).contains(&self.digest_bytes_max) {
            return invalid(
                "digest_bytes_max",
                format!("must be 1024..={ANTI_ENTROPY_BYTES_LIMIT}"),
            );
        }
        if self.nodes_max == 0 {
            return invalid("nodes_max", "must be at least 1".to_owned());
        }
        if self.tombstone_retention < self.anti_entropy_interval * 3 {
            return invalid(
                "tombstone_retention",
                "must be at least 3 × anti_entropy_interval".to_owned(),
            );
        }
        if self.tombstones_max == 0 {
            return invalid("tombstones_max", "must be at least 1".to_owned());
        }
        Ok(())
    }

    /// Largest incoming anti-entropy message accepted: a digest plus a full
    /// batch, plus envelope overhead.
    pub fn anti_entropy_message_bytes_max(&self) -> usize {
        self.digest_bytes_max + self.anti_entropy_bytes_max + 1024
    }
}
