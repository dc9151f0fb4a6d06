//! Catalog replication to the copies: a copy's pull stays parked at the
//! seed after it is answered, so the copy is fed every commit without
//! pulling again, and still applies its own writes promptly.

mod common;

use std::time::Duration;

#[test]
fn copies_are_fed_each_commit_without_pulling_for_it() {
    // 30 agents (5 seeds), 2 writes a second through random agents.
    let scenario = common::scenario("steady_1000", Some(30), Some(Duration::from_secs(120)));
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    assert!(report.pass, "{}", report.summary());
    let consensus = &report.metrics.consensus;
    assert!(consensus.writes_applied > 100, "{consensus:?}");
    assert_eq!(consensus.writes_failed, 0, "{consensus:?}");
    let streams = &report.metrics.load.streams_by_kind;
    let rate = |kind: &str| streams.get(kind).map_or(0.0, |k| k.messages_per_node_s);
    let (pulls, entries) = (rate("catalog_pull"), rate("catalog_entries"));
    // A pull per commit would make them about equal; a kept pull is renewed
    // once per `catalog_wait` (5 s), while a commit comes every 0.5 s.
    assert!(
        pulls < 0.25 * entries,
        "{pulls} pulls and {entries} entries messages per node per second"
    );
    // Fed as the seeds apply, a copy completes the writes submitted at it
    // within a few round trips (simulated time).
    assert!(
        consensus.commit_latency.p50_ms < 300.0,
        "{:?}",
        consensus.commit_latency
    );
}
