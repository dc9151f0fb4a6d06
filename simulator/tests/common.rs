//! Helpers shared by the simulator's integration tests: loading shipped
//! scenarios, scaled down so a debug build runs them in seconds.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use shoal_simulator::{Overrides, Scenario};

/// The shipped scenario `name` (file stem), resized to `nodes` when given.
pub fn scenario(name: &str, nodes: Option<usize>, duration: Option<Duration>) -> Scenario {
    let path = scenarios_dir().join(format!("{name}.toml"));
    let mut scenario = Scenario::load(&path).expect("shipped scenarios load");
    scenario
        .apply(&Overrides { nodes, duration })
        .expect("overrides apply");
    scenario
}

/// `simulator/scenarios`.
pub fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}
