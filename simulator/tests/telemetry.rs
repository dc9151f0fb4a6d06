//! The telemetry freshness metric: it must see a partition hold new
//! versions back, and see them arrive after the heal.

mod common;

use std::time::Duration;

#[test]
fn staleness_grows_while_a_partition_holds_new_versions_back_and_ends_after_the_heal() {
    let scenario = common::scenario(
        "minority_partition",
        Some(12),
        Some(Duration::from_secs(150)),
    );
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    let band = &report.bands[0];
    let (start, end) = (band.start_s, band.end_s.unwrap());
    let stale = |from: f64, to: f64| {
        report
            .samples
            .iter()
            .filter(move |s| s.t_s >= from && s.t_s < to)
            .filter_map(|s| s.telemetry_stale_p99_s)
    };
    let worst = |from: f64, to: f64| stale(from, to).fold(0.0_f64, f64::max);
    // Booted, every copy is current within the first samples.
    assert!(worst(5.0, start) < 1.0, "{}", worst(5.0, start));
    // Each side publishes the peers it lost, and the other side cannot
    // hear it until the heal: stale for nearly the whole partition.
    assert!(
        worst(start, end) > 0.8 * (end - start),
        "{} over a partition of {} s",
        worst(start, end),
        end - start
    );
    // Healed, anti-entropy brings every sampled copy up to date.
    assert!(
        stale(end, end + 15.0).any(|p99| p99 == 0.0),
        "{:?}",
        stale(end, end + 15.0).collect::<Vec<_>>()
    );
    // Counted from the heal, copies do not stay behind for long: what the
    // partition left behind is caught up within seconds (counted from its
    // start instead, the p99 after the heal is a whole partition long).
    let telemetry = &report.metrics.telemetry;
    assert!(
        telemetry.staleness_after_faults.p99_ms < 0.5e3 * (end - start),
        "{telemetry:?}"
    );
    assert!(
        telemetry.staleness.max_ms > 0.8e3 * (end - start),
        "{telemetry:?}"
    );
}

#[test]
fn a_crashed_zone_is_not_counted_stale_for_its_downtime() {
    let scenario = common::scenario("zone_failure", Some(12), Some(Duration::from_secs(150)));
    let report = shoal_simulator::run(&scenario, 1, "test").unwrap();
    let band = &report.bands[0];
    let outage_ms = 1e3 * (band.end_s.unwrap() - band.start_s);
    // Copies held by the restarted agents, and copies of their records,
    // count from the restart: nothing is stale for the whole outage.
    let telemetry = &report.metrics.telemetry;
    assert!(telemetry.pairs > 0);
    assert!(
        telemetry.staleness.max_ms < outage_ms,
        "{telemetry:?}, outage {outage_ms} ms"
    );
}
