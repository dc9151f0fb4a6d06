//! Tests of the alert rules: a spike shorter than `for_at_least` never fires,
//! a sustained breach fires identically at every evaluator fed the same maps,
//! alerts clear when the value drops, and the p99 baseline rule.

use std::time::Duration;

use shoal_membership::alerts::{ActiveAlert, AlertConfig, AlertEvaluator, AlertRule};
use shoal_membership::telemetry::{
    DatabaseReport, DatabaseSnapshot, HostMetrics, NodeRecord, Sequence, TelemetryError,
    TelemetryMap, Version,
};
use shoal_membership::{Generation, NodeId};

/// A one-line change to a valid config, for table-driven validation tests.
type Mutation = fn(&mut AlertConfig);

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The inputs of one record: everything the rules look at.
#[derive(Clone, Copy)]
struct Sample {
    cpu_percent: f64,
    disk_used_percent: u64,
    lag_ms: u64,
    p99_us: u64,
}

const CALM: Sample = Sample {
    cpu_percent: 20.0,
    disk_used_percent: 50,
    lag_ms: 10,
    p99_us: 2000,
};

fn record(node: &str, generation: u64, sequence: u64, sample: Sample) -> NodeRecord {
    NodeRecord {
        node_id: id(node),
        version: Version {
            generation: Generation(generation),
            sequence: Sequence(sequence),
        },
        agent_version: "test".to_owned(),
        host: Some(Box::new(HostMetrics {
            cpu_percent: sample.cpu_percent,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            disk_used_bytes: sample.disk_used_percent,
            disk_capacity_bytes: 100,
        })),
        database: Some(Box::new(DatabaseSnapshot {
            report_age_ms: 0,
            report: DatabaseReport {
                qps: 10.0,
                latency_p50_us: 100.min(sample.p99_us),
                latency_p99_us: sample.p99_us,
                replication_lag_ms: sample.lag_ms,
                shards: Default::default(),
                schema_versions: Default::default(),
            },
        })),
        unreachable_peers: Default::default(),
        unreachable_peers_total: 0,
    }
}

/// Feeds `evaluator` one record per step (node "n", generation 1, sequence
/// = step + 1) at the given second, and returns what it reports after each.
fn run(evaluator: &mut AlertEvaluator, steps: &[(u64, Sample)]) -> Vec<Vec<ActiveAlert>> {
    let mut map = TelemetryMap::new();
    steps
        .iter()
        .enumerate()
        .map(|(index, (second, sample))| {
            map.merge_record(record("n", 1, index as u64 + 1, *sample));
            evaluator.evaluate(&map, secs(*second))
        })
        .collect()
}

fn evaluator() -> AlertEvaluator {
    AlertEvaluator::new(AlertConfig::default()).unwrap()
}

fn rules(alerts: &[ActiveAlert]) -> Vec<AlertRule> {
    alerts.iter().map(|alert| alert.rule).collect()
}

fn cpu(cpu_percent: f64) -> Sample {
    Sample {
        cpu_percent,
        ..CALM
    }
}

#[test]
fn spike_shorter_than_for_at_least_does_not_fire() {
    let steps = [
        (0, cpu(95.0)),
        (30, cpu(95.0)),
        (59, cpu(95.0)),
        (61, cpu(20.0)), // the spike ends just before it would have fired
        (100, cpu(95.0)),
        (159, cpu(95.0)),
        (160, cpu(95.0)),
    ];
    let reports = run(&mut evaluator(), &steps);
    for report in &reports[..6] {
        assert!(report.is_empty(), "{report:?}");
    }
    // The second breach started at 100 and held for 60 s.
    assert_eq!(rules(&reports[6]), [AlertRule::CpuHigh]);
    assert_eq!(reports[6][0].since, secs(100));
    assert_eq!(reports[6][0].value, 95.0);
    assert_eq!(reports[6][0].threshold, 80.0);
}

#[test]
fn sustained_breach_fires_identically_everywhere_and_clears() {
    let steps: Vec<(u64, Sample)> = (0..=12)
        .map(|step| {
            let second = step * 10;
            let sample = if second <= 90 { cpu(90.0) } else { CALM };
            (second, sample)
        })
        .collect();
    let reports: Vec<_> = (0..3).map(|_| run(&mut evaluator(), &steps)).collect();
    assert_eq!(reports[0], reports[1]);
    assert_eq!(reports[0], reports[2]);
    for (step, report) in reports[0].iter().enumerate() {
        let second = step * 10;
        let firing = (60..=90).contains(&second);
        assert_eq!(!report.is_empty(), firing, "at {second}s: {report:?}");
    }
    // Evaluating again without a new record and without time passing is stable.
    let mut evaluator = evaluator();
    let mut map = TelemetryMap::new();
    map.merge_record(record("n", 1, 1, cpu(90.0)));
    evaluator.evaluate(&map, secs(0));
    assert_eq!(evaluator.evaluate(&map, secs(60)).len(), 1);
    assert_eq!(evaluator.evaluate(&map, secs(60)).len(), 1);
}

#[test]
fn disk_and_lag_rules() {
    let full = Sample {
        disk_used_percent: 95,
        lag_ms: 6000,
        ..CALM
    };
    let reports = run(&mut evaluator(), &[(0, full), (30, full), (60, full)]);
    assert!(reports[0].is_empty());
    assert_eq!(rules(&reports[1]), [AlertRule::ReplicationLag]);
    assert_eq!(
        rules(&reports[2]),
        [AlertRule::DiskFull, AlertRule::ReplicationLag]
    );
    assert_eq!(reports[2][1].value, 6000.0);
}

#[test]
fn latency_baseline_rule() {
    let p99 = |p99_us: u64| Sample { p99_us, ..CALM };
    let mut steps: Vec<(u64, Sample)> = (0..10).map(|second| (second, p99(2000))).collect();
    // 7 ms is above 3 × 2 ms; held from 10 s.
    steps.extend((10..=70).step_by(10).map(|second| (second, p99(7000))));
    steps.push((80, p99(2500)));
    let mut evaluator = evaluator();
    let reports = run(&mut evaluator, &steps);
    for report in &reports[..16] {
        assert!(report.is_empty(), "{report:?}");
    }
    let fired = &reports[16];
    assert_eq!(rules(fired), [AlertRule::LatencyP99Baseline]);
    assert_eq!(fired[0].since, secs(10));
    assert_eq!(fired[0].value, 7000.0);
    assert_eq!(fired[0].threshold, 6000.0);
    // Breaching samples were not learned, the recovery sample was.
    assert!(reports[17].is_empty());
    let baseline = evaluator.baseline_p99_us(&id("n")).unwrap();
    assert!((baseline - 2050.0).abs() < 1e-9, "{baseline}");
}

#[test]
fn latency_baseline_needs_warmup_and_a_floor() {
    let p99 = |p99_us: u64| Sample { p99_us, ..CALM };
    // Only 3 calm samples: not warmed up, a jump never fires.
    let mut steps: Vec<(u64, Sample)> = (0..3).map(|second| (second, p99(2000))).collect();
    steps.extend((10..=200).step_by(10).map(|second| (second, p99(9000))));
    assert!(run(&mut evaluator(), &steps).iter().all(Vec::is_empty));
    // Tiny latencies: 100 µs → 500 µs is 5 × but under the 1 ms floor.
    let mut steps: Vec<(u64, Sample)> = (0..10).map(|second| (second, p99(100))).collect();
    steps.extend((10..=200).step_by(10).map(|second| (second, p99(500))));
    assert!(run(&mut evaluator(), &steps).iter().all(Vec::is_empty));
}

#[test]
fn new_generation_restarts_the_baseline_and_removed_nodes_are_forgotten() {
    let mut evaluator = evaluator();
    let mut map = TelemetryMap::new();
    for sequence in 1..=10 {
        map.merge_record(record(
            "n",
            1,
            sequence,
            Sample {
                p99_us: 2000,
                ..CALM
            },
        ));
        evaluator.evaluate(&map, secs(sequence));
    }
    assert_eq!(evaluator.baseline_p99_us(&id("n")), Some(2000.0));
    map.merge_record(record(
        "n",
        2,
        1,
        Sample {
            p99_us: 9000,
            ..CALM
        },
    ));
    assert!(evaluator.evaluate(&map, secs(20)).is_empty());
    assert_eq!(evaluator.baseline_p99_us(&id("n")), Some(9000.0));

    map.merge_record(record("m", 1, 1, cpu(99.0)));
    evaluator.evaluate(&map, secs(20));
    assert_eq!(evaluator.evaluate(&map, secs(100)).len(), 1);
    map.merge_tombstone(&id("m"), Generation(1));
    assert!(evaluator.evaluate(&map, secs(101)).is_empty());
    assert_eq!(evaluator.baseline_p99_us(&id("m")), None);
}

#[test]
fn disabled_rules_never_fire() {
    let mut config = AlertConfig::default();
    config.cpu_high.enabled = false;
    let mut evaluator = AlertEvaluator::new(config).unwrap();
    let reports = run(&mut evaluator, &[(0, cpu(99.0)), (1000, cpu(99.0))]);
    assert!(reports.iter().all(Vec::is_empty));
}

#[test]
fn config_deserializes_with_defaults_and_validation_names_the_field() {
    let config: AlertConfig =
        serde_json::from_str(r#"{ "cpu_high": { "cpu_percent_max": 70, "for_at_least": "30s" } }"#)
            .unwrap();
    assert_eq!(config.cpu_high.cpu_percent_max, 70.0);
    assert_eq!(config.cpu_high.for_at_least, secs(30));
    assert_eq!(config.disk_full, AlertConfig::default().disk_full);
    config.validate().unwrap();
    assert!(serde_json::from_str::<AlertConfig>(r#"{ "cpu_hihg": {} }"#).is_err());

    let cases: [(&str, Mutation); 6] = [
        ("cpu_high.cpu_percent_max", |c| {
            c.cpu_high.cpu_percent_max = 150.0
        }),
        ("cpu_high.cpu_percent_max", |c| {
            c.cpu_high.cpu_percent_max = f64::NAN
        }),
        ("disk_full.disk_used_percent_max", |c| {
            c.disk_full.disk_used_percent_max = 0.0
        }),
        ("replication_lag.lag_ms_max", |c| {
            c.replication_lag.lag_ms_max = 0
        }),
        ("latency_p99_baseline.factor", |c| {
            c.latency_p99_baseline.factor = 0.5
        }),
        ("latency_p99_baseline.baseline_weight", |c| {
            c.latency_p99_baseline.baseline_weight = 0.0
        }),
    ];
    for (expected, mutate) in cases {
        let mut config = AlertConfig::default();
        mutate(&mut config);
        match AlertEvaluator::new(config) {
            Err(TelemetryError::InvalidConfig { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
}

/// One step of the incremental-evaluation model test.
#[derive(Clone, Debug)]
enum Step {
    /// A new version of `node`'s record (sequence bumps, maybe a generation).
    Record {
        node: u8,
        restart: bool,
        cpu: bool,
        disk: bool,
        lag: bool,
        p99_us: u64,
    },
    /// The node's current generation is removed.
    Remove { node: u8 },
    /// Time passes and both evaluators run.
    Evaluate { seconds: u64 },
}

fn step_strategy() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..5u8, proptest::bool::weighted(0.1), any::<bool>(), any::<bool>(), any::<bool>(), prop_oneof![Just(2000u64), Just(50_000u64)])
            .prop_map(|(node, restart, cpu, disk, lag, p99_us)| Step::Record { node, restart, cpu, disk, lag, p99_us }),
        1 => (0..5u8).prop_map(|node| Step::Remove { node }),
        3 => (0..40u64).prop_map(|seconds| Step::Evaluate { seconds }),
    ]
}

proptest::proptest! {
    /// The incremental evaluator (only changed records, a deadline queue)
    /// says exactly what a walk over every record says, at every step.
    #[test]
    fn incremental_evaluation_matches_a_full_walk(steps in proptest::collection::vec(step_strategy(), 1..120)) {
        let mut config = AlertConfig::default();
        config.latency_p99_baseline.warmup_samples = 2;
        let mut incremental = AlertEvaluator::new(config.clone()).unwrap();
        let mut full = AlertEvaluator::new(config).unwrap();
        let mut map = TelemetryMap::new();
        let mut versions = [(1u64, 0u64); 5];
        let mut now = 0;
        for step in steps {
            match step {
                Step::Record { node, restart, cpu, disk, lag, p99_us } => {
                    let version = &mut versions[usize::from(node)];
                    if restart {
                        *version = (version.0 + 1, 0);
                    }
                    version.1 += 1;
                    let sample = Sample {
                        cpu_percent: if cpu { 95.0 } else { 20.0 },
                        disk_used_percent: if disk { 95 } else { 50 },
                        lag_ms: if lag { 9000 } else { 10 },
                        p99_us,
                    };
                    map.merge_record(record(&format!("n{node}"), version.0, version.1, sample));
                }
                Step::Remove { node } => {
                    let generation = Generation(versions[usize::from(node)].0);
                    map.merge_tombstone(&id(&format!("n{node}")), generation);
                    versions[usize::from(node)] = (generation.0 + 1, 0);
                }
                Step::Evaluate { seconds } => {
                    now += seconds;
                    let expected = full.evaluate_all(&map, secs(now));
                    proptest::prop_assert_eq!(incremental.evaluate(&map, secs(now)), expected);
                }
            }
        }
    }
}
