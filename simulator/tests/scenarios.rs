//! CI's swarm: every shipped scenario, scaled down to fit a debug build,
//! over two seeds, must pass every check. A failure prints the command that
//! replays it.

mod common;

use std::time::Duration;

/// Nodes per scenario in CI (the 1,000-node ones much smaller).
fn ci_size(name: &str) -> (Option<usize>, Option<Duration>) {
    match name {
        "boot_1000" => (Some(24), Some(Duration::from_secs(30))),
        "churn_1000" => (Some(20), Some(Duration::from_secs(130))),
        "detection_1000" => (Some(20), None),
        "steady_1000" | "membership_1000" => (Some(20), Some(Duration::from_secs(60))),
        // Large enough that every node a timeline names (up to db-5) exists.
        _ => (Some(10), None),
    }
}

#[test]
fn every_shipped_scenario_passes_on_two_seeds() {
    let mut names: Vec<String> = std::fs::read_dir(common::scenarios_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 11, "{names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let (nodes, duration) = ci_size(name);
        let scenario = common::scenario(name, nodes, duration);
        let mut replay = format!("shoal-sim run simulator/scenarios/{name}.toml");
        if let Some(nodes) = nodes {
            replay.push_str(&format!(" --nodes {nodes}"));
        }
        if let Some(duration) = duration {
            replay.push_str(&format!(" --duration {}s", duration.as_secs()));
        }
        let outcomes = shoal_simulator::swarm::run_seeds(&scenario, &[1, 2], 2, &replay);
        for outcome in outcomes {
            match &outcome.report {
                Ok(report) if report.pass => {}
                Ok(report) => failures.push(report.summary()),
                Err(error) => failures.push(format!("{name} seed {}: {error}", outcome.seed)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
