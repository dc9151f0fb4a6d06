//! The one error type of the telemetry core and of the alert rules.
//!
//! Every variant says whether any state changed, so a caller knows whether a
//! retry, a log line or nothing at all is the right reaction. A malformed or
//! oversized message from a peer is an operating condition (count it, drop
//! it); a broken invariant is a bug and is asserted instead.

/// Why a telemetry or alert operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// A configuration value is out of range. Nothing was created or changed.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field, as written in the config file (`cpu_high.cpu_percent_max`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A report from the local database or host is invalid. Nothing changed:
    /// the previous report stays in effect.
    #[error("invalid report field `{field}`: {reason}")]
    InvalidReport {
        /// The offending field as a path (`shards.17.qps`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A record received from a peer breaks the record rules (a NaN, a
    /// percentage over 100, a list over its limit). It was dropped; nothing
    /// changed except the decode-error counter.
    #[error("invalid record of node {node_id}, field `{field}`: {reason}")]
    InvalidRecord {
        /// The node the record claims to describe.
        node_id: String,
        /// The offending field as a path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A record would encode larger than `record_bytes_max`. A local refresh
    /// was refused (the previous local record and its version stay); a
    /// peer's record was dropped. Lower the number of shards reported or
    /// raise `record_bytes_max`.
    #[error("record is {size_bytes} bytes, over record_bytes_max = {max_bytes}")]
    RecordTooLarge {
        /// Encoded size of the refused record.
        size_bytes: usize,
        /// The limit it broke.
        max_bytes: usize,
    },

    /// A delta would encode larger than `delta_bytes_max`. Nothing changed
    /// except the `deltas_dropped_for_size` counter; do not broadcast it —
    /// anti-entropy carries the record instead.
    #[error(
        "delta is {size_bytes} bytes, over delta_bytes_max = {max_bytes}; left to anti-entropy"
    )]
    DeltaTooLarge {
        /// Encoded size of the delta.
        size_bytes: usize,
        /// The limit it broke.
        max_bytes: usize,
    },

    /// An encoded message (outgoing or incoming) is over its size limit.
    /// Incoming: dropped before decoding, nothing changed. Outgoing: not
    /// produced, nothing changed.
    #[error("{what} is {size_bytes} bytes, over its limit of {max_bytes}")]
    MessageTooLarge {
        /// Which message (`delta`, `anti-entropy message`).
        what: &'static str,
        /// Size of the message.
        size_bytes: usize,
        /// The limit it broke.
        max_bytes: usize,
    },

    /// Incoming bytes are not a valid message. Dropped; nothing changed
    /// except the decode-error counter.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message was expected.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },

    /// Incoming message of a wire format version this agent does not speak
    /// (a newer agent during a rolling upgrade). Dropped; nothing changed.
    #[error("unsupported telemetry wire version {version} (this agent speaks {supported})")]
    UnsupportedVersion {
        /// The version found in the envelope.
        version: u16,
        /// The version this agent speaks.
        supported: u16,
    },

    /// The requested removal would tombstone this agent's own current
    /// generation (or a newer one). Refused; nothing changed.
    #[error(
        "cannot remove the local node {node_id} at generation {generation}: it is the running generation or newer"
    )]
    RemoveSelf {
        /// The local node.
        node_id: String,
        /// The generation asked to be removed.
        generation: u64,
    },

    /// No record is known for this node (never seen, or removed). Nothing
    /// changed.
    #[error("no telemetry record for node {node_id}")]
    UnknownNode {
        /// The node asked about.
        node_id: String,
    },

    /// A record of a node not yet known arrived while `nodes_max` records are
    /// held. Dropped; nothing changed except the `nodes_max_refused` counter.
    #[error("record of new node {node_id} dropped: nodes_max = {nodes_max} records already held")]
    TooManyNodes {
        /// The node whose record was dropped.
        node_id: String,
        /// The limit.
        nodes_max: usize,
    },

    /// The local node's running generation has been removed (tombstoned), so
    /// every agent refuses its records; the agent must restart with a newer
    /// generation to rejoin. The refresh was refused; nothing changed.
    #[error("local node {node_id} generation {generation} has been removed from telemetry")]
    LocalNodeRemoved {
        /// The local node.
        node_id: String,
        /// Its running generation.
        generation: u64,
    },
}
