//! Deliberately broken variants must be caught: proof that the checks can
//! fail, not only pass.

mod common;

use std::time::Duration;

fn failed(report: &shoal_simulator::Report) -> Vec<String> {
    report.failures().map(|check| check.name.clone()).collect()
}

#[test]
fn a_crash_that_does_not_stop_the_node_fails_convergence_and_detection() {
    let mut scenario = common::scenario("zone_failure", Some(9), Some(Duration::from_secs(60)));
    scenario.test_only.zombie_crash = true;
    // Keep the zone down to the end so it must be seen down.
    for entry in &mut scenario.timeline {
        entry.duration = None;
    }
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    let failed = failed(&report);
    assert!(
        failed.contains(&"membership.converged".to_string()),
        "{failed:?}"
    );
    assert!(
        failed.contains(&"membership.detection_p99".to_string()),
        "{failed:?}"
    );
}

#[test]
fn raft_messages_leaking_through_a_partition_look_like_a_minority_commit() {
    let mut scenario = common::scenario("leader_isolated", Some(6), Some(Duration::from_secs(70)));
    scenario.test_only.leaky_streams = true;
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    let check = report
        .checks
        .iter()
        .find(|check| check.name == "raft.minority_never_commits")
        .unwrap();
    assert!(!check.pass, "{}", report.summary());
    assert!(check.violation_at_s.unwrap() >= 30.0);
    // The honest variant keeps the minority from committing.
    scenario.test_only.leaky_streams = false;
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    assert!(
        !failed(&report).contains(&"raft.minority_never_commits".to_string()),
        "{}",
        report.summary()
    );
}

#[test]
fn an_impossibly_short_liveness_bound_fails() {
    let mut scenario =
        common::scenario("minority_partition", Some(9), Some(Duration::from_secs(60)));
    scenario.checks.converge_within = Duration::from_millis(1);
    scenario.sim.sample_period = Duration::from_millis(100);
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    assert!(failed(&report).contains(&"membership.converged".to_string()));
    assert!(report.summary().contains("replay: test --seed 1"));
}

#[test]
fn minimizing_keeps_only_the_entries_that_matter() {
    let mut scenario = common::scenario("leader_isolated", Some(6), Some(Duration::from_secs(70)));
    scenario.test_only.leaky_streams = true;
    // Noise around the one entry that matters (isolating the leader).
    let noise = scenario::TimelineEntry {
        at: Duration::from_secs(10),
        action: scenario::Action::Skew,
        targets: vec!["db-1".into()],
        offset: Some("+1s".into()),
        ..scenario.timeline[0].clone()
    };
    let noise = scenario::TimelineEntry {
        duration: None,
        ..noise
    };
    scenario.timeline.insert(0, noise.clone());
    scenario.timeline.push(scenario::TimelineEntry {
        at: Duration::from_secs(20),
        ..noise
    });
    let (smallest, runs) =
        shoal_simulator::swarm::minimize(&scenario, 1, "raft.minority_never_commits");
    assert!(runs <= shoal_simulator::swarm::MINIMIZE_RUNS_MAX);
    assert_eq!(smallest.timeline.len(), 1, "{:?}", smallest.timeline);
    assert_eq!(smallest.timeline[0].action, scenario::Action::Isolate);
}

use shoal_simulator::scenario;
