//! The per-node telemetry record and its parts: what the host measures, what
//! the local database reports, and what the agent observes of its peers.
//!
//! A record is written only by its own node's agent and versioned by
//! `(Generation, Sequence)`; the CRDT in [`super::map`] keeps the newest one
//! per node. Everything here is plain data with `serde` in both directions:
//! MessagePack on the wire (compact, struct-as-array) and JSON at the agent's
//! HTTP API. Maps are `BTreeMap`s so encodings are deterministic, and every
//! list has a named limit checked by `validate`, both when the local agent
//! builds a record and when a record arrives from a peer (pair assertions).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::TelemetryError;
use crate::{Generation, NodeId};

/// Longest agent version string carried in a record, in bytes.
pub const AGENT_VERSION_LEN_MAX: usize = 64;
/// Most shards one database report may describe. A report with more is
/// refused with [`TelemetryError::InvalidReport`]; the record size limit
/// (`record_bytes_max`) usually binds first.
pub const REPORT_SHARDS_MAX: usize = 10_000;
/// Most tables one database report may list schema versions for.
pub const REPORT_TABLES_MAX: usize = 1_000;
/// Longest table name in a database report, in bytes.
pub const TABLE_NAME_LEN_MAX: usize = 128;
/// Most unreachable peers a record lists by name. Beyond it the list is cut
/// (lowest names kept) and `unreachable_peers_total` still gives the count,
/// so a node that is itself cut off does not grow its record without bound
/// exactly when its telemetry matters.
pub const UNREACHABLE_PEERS_MAX: usize = 64;
/// Largest latency a report may carry: one hour, in microseconds. A larger
/// value is a unit mistake (ns for µs), not a measurement.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Largest replication lag a report may carry: seven days, in milliseconds.
pub const REPLICATION_LAG_MS_MAX: u64 = 7 * 24 * 3_600_000;

macro_rules! counter_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter_newtype!(
    /// The number of a node's record within one [`Generation`]: starts at 1
    /// with the first record of a run and grows by one with every refresh.
    Sequence
);
counter_newtype!(
    /// A shard's identifier as the catalog assigns it (same wire form as the
    /// consensus crate's `ShardId`).
    ShardId
);
counter_newtype!(
    /// The fencing epoch a replica believes it holds (same wire form as the
    /// consensus crate's `Epoch`). Not a Raft term.
    Epoch
);
counter_newtype!(
    /// An opaque, monotonically growing position in a shard's replication log
    /// as the database reports it (an LSN, a log index).
    AppliedPosition
);
counter_newtype!(
    /// The schema version of one table the database has applied.
    SchemaVersion
);

/// The version of a node's record: newer generation first, then newer
/// sequence. The derived order is exactly that (fields compare in order).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Which run of the node's agent wrote the record.
    pub generation: Generation,
    /// Which record of that run.
    pub sequence: Sequence,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.generation, self.sequence)
    }
}

/// Host metrics the agent samples (the shell uses `sysinfo`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMetrics {
    /// CPU busy time over the last sample interval, all cores together,
    /// 0.0..=100.0.
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory installed, bytes.
    pub memory_total_bytes: u64,
    /// Bytes used on the file system holding the database's data dir.
    pub disk_used_bytes: u64,
    /// Capacity of that file system, bytes.
    pub disk_capacity_bytes: u64,
}

impl HostMetrics {
    /// Checks ranges: `cpu_percent` finite in 0..=100, used ≤ total for
    /// memory and disk. The error names the offending field.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        check_percent("host.cpu_percent", self.cpu_percent)?;
        if self.memory_used_bytes > self.memory_total_bytes {
            return Err(report_error(
                "host.memory_used_bytes",
                format!(
                    "{} exceeds memory_total_bytes {}",
                    self.memory_used_bytes, self.memory_total_bytes
                ),
            ));
        }
        if self.disk_used_bytes > self.disk_capacity_bytes {
            return Err(report_error(
                "host.disk_used_bytes",
                format!(
                    "{} exceeds disk_capacity_bytes {}",
                    self.disk_used_bytes, self.disk_capacity_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Disk use as a percentage of capacity (0 when the capacity is unknown, 0).
    pub fn disk_used_percent(&self) -> f64 {
        if self.disk_capacity_bytes == 0 {
            return 0.0;
        }
        // u64 → f64 loses precision above 2^53 bytes (8 PiB); fine for a percentage.
        self.disk_used_bytes as f64 * 100.0 / self.disk_capacity_bytes as f64
    }

    /// Memory use as a percentage of the installed memory (0 when unknown).
    pub fn memory_used_percent(&self) -> f64 {
        if self.memory_total_bytes == 0 {
            return 0.0;
        }
        self.memory_used_bytes as f64 * 100.0 / self.memory_total_bytes as f64
    }
}

/// The role a replica believes it has (the catalog is the authority; this is
/// the database's own view, which the controllers compare with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardRole {
    /// Accepts writes under its epoch.
    Primary,
    /// Follows the primary, serves reads.
    Secondary,
    /// Catching up; not yet counted as a replica.
    Learner,
}

/// What the database reports about one shard replica it hosts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardReport {
    /// Size of the replica on disk, bytes.
    pub size_bytes: u64,
    /// Queries per second served by this replica (reads and writes), ≥ 0.
    pub qps: f64,
    /// The last log position applied by this replica.
    pub applied_position: AppliedPosition,
    /// The role the replica believes it has.
    pub role: ShardRole,
    /// The epoch the replica believes it holds.
    pub epoch: Epoch,
}

/// What the local database pushes to its agent (`PUT /v1/agent/telemetry`,
/// JSON). Unknown fields are refused so a typo in the database's client is
/// an error, not a silently missing metric; call [`DatabaseReport::validate`]
/// before use (the store does).
///
/// ```json
/// { "qps": 1200.5, "latency_p50_us": 800, "latency_p99_us": 4200,
///   "replication_lag_ms": 12,
///   "shards": { "17": { "size_bytes": 1048576, "qps": 300.0, "applied_position": 99812,
///                        "role": "primary", "epoch": 4 } },
///   "schema_versions": { "orders": 7 } }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseReport {
    /// Queries per second served by the whole node, ≥ 0.
    pub qps: f64,
    /// Median query latency, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile query latency, microseconds; ≥ `latency_p50_us`.
    pub latency_p99_us: u64,
    /// The largest replication lag of any replica on this node, milliseconds.
    pub replication_lag_ms: u64,
    /// Per shard replica hosted here, by shard id.
    #[serde(default)]
    pub shards: BTreeMap<ShardId, ShardReport>,
    /// Applied schema version per table name.
    #[serde(default)]
    pub schema_versions: BTreeMap<String, SchemaVersion>,
}

impl DatabaseReport {
    /// Checks every field; the error names the first offending one as a path
    /// (`qps`, `latency_p50_us`, `shards.17.qps`, `schema_versions`):
    /// rates finite and ≥ 0, p50 ≤ p99, latencies ≤ [`LATENCY_US_MAX`], lag ≤
    /// [`REPLICATION_LAG_MS_MAX`], at most [`REPORT_SHARDS_MAX`] shards and
    /// [`REPORT_TABLES_MAX`] tables with names of 1..=[`TABLE_NAME_LEN_MAX`]
    /// bytes.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        check_rate("qps", self.qps)?;
        if self.latency_p99_us > LATENCY_US_MAX {
            return Err(report_error(
                "latency_p99_us",
                format!(
                    "{} is over {LATENCY_US_MAX} (one hour)",
                    self.latency_p99_us
                ),
            ));
        }
        if self.latency_p50_us > self.latency_p99_us {
            return Err(report_error(
                "latency_p50_us",
                format!(
                    "{} is above latency_p99_us {}",
                    self.latency_p50_us, self.latency_p99_us
                ),
            ));
        }
        if self.replication_lag_ms > REPLICATION_LAG_MS_MAX {
            return Err(report_error(
                "replication_lag_ms",
                format!(
                    "{} is over {REPLICATION_LAG_MS_MAX} (seven days)",
                    self.replication_lag_ms
                ),
            ));
        }
        if self.shards.len() > REPORT_SHARDS_MAX {
            return Err(report_error(
                "shards",
                format!("{} shards, at most {REPORT_SHARDS_MAX}", self.shards.len()),
            ));
        }
        for (shard_id, shard) in &self.shards {
            check_rate_path(|| format!("shards.{shard_id}.qps"), shard.qps)?;
        }
        if self.schema_versions.len() > REPORT_TABLES_MAX {
            return Err(report_error(
                "schema_versions",
                format!(
                    "{} tables, at most {REPORT_TABLES_MAX}",
                    self.schema_versions.len()
                ),
            ));
        }
        for table in self.schema_versions.keys() {
            if table.is_empty() || table.len() > TABLE_NAME_LEN_MAX {
                return Err(report_error(
                    "schema_versions",
                    format!("table name {table:?} must be 1 to {TABLE_NAME_LEN_MAX} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// The database part of a record: the last report and how old it was when
/// the record was written, so a reader can tell a database that stopped
/// reporting from one that reports zeros.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSnapshot {
    /// Time between the database's last report and the writing of this
    /// record, milliseconds (the writing agent's clock).
    pub report_age_ms: u64,
    /// The report itself.
    pub report: DatabaseReport,
}

/// One node's telemetry: written only by that node's agent, newest version
/// wins everywhere. Serializes to JSON for `GET /v1/telemetry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// The node this record describes (and whose agent wrote it).
    pub node_id: NodeId,
    /// `(generation, sequence)` of this record.
    pub version: Version,
    /// The writing agent's version and build (`0.3.1 (abc1234)`), at most
    /// [`AGENT_VERSION_LEN_MAX`] bytes.
    pub agent_version: String,
    /// The latest host sample, `None` until the agent took its first.
    /// Boxed, like `database`: every agent holds every node's record, and
    /// inline the two made each record 240 bytes, reported or not.
    pub host: Option<Box<HostMetrics>>,
    /// The latest database report, `None` until the database first reported.
    pub database: Option<Box<DatabaseSnapshot>>,
    /// Peers this agent currently finds unreachable: its own probe of them
    /// failed and it has not seen that identity alive since (independent
    /// evidence for the controllers' dead-node verdict; a verdict merely
    /// heard by gossip is not listed). At most [`UNREACHABLE_PEERS_MAX`],
    /// lowest names first.
    pub unreachable_peers: BTreeSet<NodeId>,
    /// How many peers this agent finds unreachable, including any cut from
    /// `unreachable_peers`.
    pub unreachable_peers_total: u32,
}

/// Relative change of a rate or latency that counts as material (10 %).
pub const MATERIAL_RELATIVE_CHANGE: f64 = 0.10;
/// Change of CPU use that counts as material, in percentage points.
pub const MATERIAL_CPU_POINTS: f64 = 5.0;
/// Change of memory or disk use that counts as material, in percent of the total.
pub const MATERIAL_USAGE_PERCENT: f64 = 1.0;

/// Whether `new` differs from `old` by more than `MATERIAL_RELATIVE_CHANGE`,
/// ignoring differences below `floor` (noise around zero).
fn rate_changed(old: f64, new: f64, floor: f64) -> bool {
    let delta = (new - old).abs();
    delta > floor && delta > MATERIAL_RELATIVE_CHANGE * old.abs().max(new.abs())
}

fn host_changed(old: &HostMetrics, new: &HostMetrics) -> bool {
    let usage_changed = |old_used: u64, new_used: u64, total: u64| {
        let delta = old_used.abs_diff(new_used) as f64;
        total > 0 && delta * 100.0 / total as f64 >= MATERIAL_USAGE_PERCENT
    };
    (old.cpu_percent - new.cpu_percent).abs() >= MATERIAL_CPU_POINTS
        || old.memory_total_bytes != new.memory_total_bytes
        || old.disk_capacity_bytes != new.disk_capacity_bytes
        || usage_changed(
            old.memory_used_bytes,
            new.memory_used_bytes,
            new.memory_total_bytes,
        )
        || usage_changed(
            old.disk_used_bytes,
            new.disk_used_bytes,
            new.disk_capacity_bytes,
        )
}

fn report_changed(old: &DatabaseReport, new: &DatabaseReport) -> bool {
    let shards_changed = old.shards.len() != new.shards.len()
        || old
            .shards
            .iter()
            .zip(&new.shards)
            .any(|((old_id, old), (new_id, new))| {
                old_id != new_id
                    || old.role != new.role
                    || old.epoch != new.epoch
                    || rate_changed(old.qps, new.qps, 1.0)
                    || rate_changed(old.size_bytes as f64, new.size_bytes as f64, 1_048_576.0)
            });
    shards_changed
        || old.schema_versions != new.schema_versions
        || rate_changed(old.qps, new.qps, 1.0)
        || rate_changed(old.latency_p50_us as f64, new.latency_p50_us as f64, 100.0)
        || rate_changed(old.latency_p99_us as f64, new.latency_p99_us as f64, 100.0)
        || rate_changed(
            old.replication_lag_ms as f64,
            new.replication_lag_ms as f64,
            100.0,
        )
}

impl NodeRecord {
    /// Whether this record says something materially different from `older`
    /// (the node's previous record): anything discrete (peers found
    /// unreachable, shard set, roles, epochs, schema versions, agent version)
    /// changed, or a measurement moved by more than its threshold (10 % for
    /// rates and latencies, 5 CPU points, 1 % of memory or disk). Applied
    /// positions and report ages alone are not material: they travel with the
    /// next material change or heartbeat.
    pub fn differs_materially(&self, older: &NodeRecord) -> bool {
        let database_changed = match (&older.database, &self.database) {
            (None, None) => false,
            (Some(old), Some(new)) => report_changed(&old.report, &new.report),
            _ => true,
        };
        let host_differs = match (&older.host, &self.host) {
            (None, None) => false,
            (Some(old), Some(new)) => host_changed(old, new),
            _ => true,
        };
        self.node_id != older.node_id
            || self.agent_version != older.agent_version
            || self.unreachable_peers != older.unreachable_peers
            || self.unreachable_peers_total != older.unreachable_peers_total
            || host_differs
            || database_changed
    }

    /// Checks every rule a record must satisfy, whoever wrote it. Used when
    /// the local agent builds its record and again on every record received,
    /// so a buggy or hostile peer cannot plant a NaN or an unbounded list.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        self.validate_inner().map_err(|error| match error {
            TelemetryError::InvalidReport { field, reason } => TelemetryError::InvalidRecord {
                node_id: self.node_id.to_string(),
                field,
                reason,
            },
            other => other,
        })
    }

    fn validate_inner(&self) -> Result<(), TelemetryError> {
        if self.version.sequence.0 == 0 {
            return Err(report_error(
                "version.sequence",
                "must be at least 1".to_owned(),
            ));
        }
        if self.agent_version.len() > AGENT_VERSION_LEN_MAX {
            return Err(report_error(
                "agent_version",
                format!(
                    "{} bytes, at most {AGENT_VERSION_LEN_MAX}",
                    self.agent_version.len()
                ),
            ));
        }
        if let Some(host) = &self.host {
            host.validate()?;
        }
        if let Some(database) = &self.database {
            database.report.validate().map_err(|error| match error {
                TelemetryError::InvalidReport { field, reason } => {
                    report_error(&format!("database.report.{field}"), reason)
                }
                other => other,
            })?;
        }
        if self.unreachable_peers.len() > UNREACHABLE_PEERS_MAX {
            return Err(report_error(
                "unreachable_peers",
                format!(
                    "{} peers, at most {UNREACHABLE_PEERS_MAX}",
                    self.unreachable_peers.len()
                ),
            ));
        }
        if (self.unreachable_peers_total as usize) < self.unreachable_peers.len() {
            return Err(report_error(
                "unreachable_peers_total",
                format!(
                    "{} is below the {} peers listed",
                    self.unreachable_peers_total,
                    self.unreachable_peers.len()
                ),
            ));
        }
        if self.unreachable_peers.contains(&self.node_id) {
            return Err(report_error(
                "unreachable_peers",
                "lists the node itself".to_owned(),
            ));
        }
        Ok(())
    }
}

fn report_error(field: &str, reason: String) -> TelemetryError {
    TelemetryError::InvalidReport {
        field: field.to_owned(),
        reason,
    }
}

fn check_percent(field: &str, value: f64) -> Result<(), TelemetryError> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(report_error(
            field,
            format!("{value} is not a percentage in 0..=100"),
        ));
    }
    Ok(())
}

fn check_rate(field: &str, value: f64) -> Result<(), TelemetryError> {
    check_rate_path(|| field.to_owned(), value)
}

fn check_rate_path(field: impl FnOnce() -> String, value: f64) -> Result<(), TelemetryError> {
    // `is_finite` rules out NaN and the infinities; then a plain comparison.
    if !value.is_finite() || value < 0.0 {
        return Err(TelemetryError::InvalidReport {
            field: field(),
            reason: format!("{value} must be a finite number ≥ 0"),
        });
    }
    Ok(())
}
