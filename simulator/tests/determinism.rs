//! Same scenario and seed, same run (byte for byte, by digest); another
//! seed, another run.

mod common;

use std::time::Duration;

#[test]
fn same_seed_same_digest_other_seed_other_digest() {
    let scenario = common::scenario("zone_failure", Some(9), Some(Duration::from_secs(60)));
    let first = shoal_simulator::run(&scenario, 7, "test").unwrap();
    let again = shoal_simulator::run(&scenario, 7, "test").unwrap();
    let other = shoal_simulator::run(&scenario, 8, "test").unwrap();
    assert_eq!(first.digest, again.digest);
    // Byte for byte, once the two wall-clock fields are set aside.
    let deterministic = |report: &shoal_simulator::Report| {
        let mut report = report.clone();
        report.wall_time_s = 0.0;
        report.events_per_s = 0.0;
        report.to_json()
    };
    assert_eq!(deterministic(&first), deterministic(&again));
    assert_eq!(first.events_processed, again.events_processed);
    assert_ne!(first.digest, other.digest);
}

#[test]
fn removing_a_timeline_entry_keeps_the_others_random_choices() {
    // Random targets are drawn from a stream named by the entry's time and
    // action, so deleting another entry does not change them.
    let base = common::scenario(
        "stalled_under_loss",
        Some(10),
        Some(Duration::from_secs(60)),
    );
    let mut noisy = base.clone();
    noisy
        .timeline
        .push(shoal_simulator::scenario::TimelineEntry {
            at: Duration::from_secs(25),
            action: shoal_simulator::scenario::Action::Drift,
            targets: vec!["random:1".into()],
            ppm: Some(100.0),
            duration: None,
            for_max: None,
            repeat: None,
            ..base.timeline[0].clone()
        });
    let pauses = |scenario: &shoal_simulator::Scenario| -> Vec<Vec<String>> {
        let report = shoal_simulator::run(scenario, 3, "test").unwrap();
        report
            .events
            .iter()
            .filter(|event| event.action == "pause")
            .map(|event| event.targets.clone())
            .collect()
    };
    let (without, with) = (pauses(&base), pauses(&noisy));
    assert!(!without.is_empty());
    assert_eq!(without, with);
}
