//! Alert rules evaluated on the merged telemetry map (being written).
