//! Shoal's simulator: many agents' real node cores in one process, driven by
//! a virtual clock and a virtual network, reproducible from one seed.
//!
//! Contract: the event loop is single-threaded and reads no clock and no OS
//! randomness; the only wall-clock reading is the report's `wall_time_s`,
//! taken outside the loop, and the only threads are `swarm`'s, one seed per
//! thread. The code under test is `shoal_agent::core::NodeCore`, exactly as
//! the `shoal` agent runs it.
//!
//! Map:
//! * [`scenario`] — the TOML format ([`Scenario`]), validation, overrides.
//! * `sim.rs` — the event loop, the timeline, the checks' hooks.
//! * `node.rs` — one simulated agent: construction, clock, driving its core.
//! * `network.rs` — latency, loss, duplication, reordering, partitions.
//! * `metrics.rs`, `checks.rs`, `report.rs`, `svg.rs` — what is measured and judged.
//! * [`swarm`] — many seeds in parallel, and delta-debugging of failures.

mod checks;
mod metrics;
mod network;
mod node;
mod raft;
mod report;
mod rng;
pub mod scenario;
mod sim;
mod svg;
pub mod swarm;

use std::time::Instant;

pub use checks::{CheckKind, CheckResult};
pub use metrics::{FRESHNESS_NODES, FRESHNESS_PERIOD, KindCount, Percentiles, Sample};
pub use report::{
    AppliedAction, Band, ConsensusReport, DetectionReport, DisseminationReport, FalseDownReport,
    KindRate, LoadReport, MetricsReport, Report, TelemetryReport,
};
pub use scenario::{Overrides, Scenario};

/// Runs `scenario` under `seed`. `replay` is the command line that would
/// rerun it without the seed (`shoal-sim run scenarios/x.toml`); the report
/// appends `--seed`.
pub fn run(scenario: &Scenario, seed: u64, replay: &str) -> anyhow::Result<Report> {
    run_world(scenario, seed, replay).map(|(report, _world)| report)
}

/// [`run`] for a process that exits once the report is written: the world is
/// left to the OS rather than dropped. Dropping a 1,000-agent world frees
/// millions of allocations one by one, a few per cent of such a run's CPU
/// (BENCHMARKS.md, sixteenth round). `shoal-sim run` uses it for its last run.
pub fn run_at_exit(scenario: &Scenario, seed: u64, replay: &str) -> anyhow::Result<Report> {
    let (report, world) = run_world(scenario, seed, replay)?;
    std::mem::forget(world);
    Ok(report)
}

fn run_world(scenario: &Scenario, seed: u64, replay: &str) -> anyhow::Result<(Report, sim::World)> {
    let scenario_text = scenario.to_toml();
    let scenario_hash = format!("{:016x}", rng::stream_seed(0, &scenario_text));
    let mut world = sim::World::new(scenario.clone(), seed)?;
    let started = Instant::now();
    world.run();
    let wall = started.elapsed();
    let command = format!("{replay} --seed {seed}");
    let mut report = report::build(&world, command, scenario_hash, wall);
    report.checks = std::mem::take(&mut world.checks).into_results();
    report.pass = report.checks.iter().all(|check| check.pass);
    // The digest covers the event trace and every deterministic field.
    let deterministic = serde_json::to_string(&(
        &report.checks,
        &report.metrics,
        &report.events,
        &report.samples,
        report.events_processed,
    ))
    .expect("reports serialize");
    report.digest = format!(
        "{}{:016x}",
        world.digest_hex(),
        rng::stream_seed(0, &deterministic)
    );
    Ok((report, world))
}
