//! Telemetry records and their CRDT merge (being written).
