//! Many seeds of one scenario, in parallel (one seed per thread, each run
//! single-threaded and independent), and shrinking of a failing run's
//! timeline by delta debugging so the replay is as small as possible.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Report, Scenario};

/// Most runs one minimization may spend.
pub const MINIMIZE_RUNS_MAX: usize = 64;

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// The run's report (`Err` if the scenario could not be built).
    pub report: Result<Report, String>,
}

impl SeedOutcome {
    /// Whether the run passed.
    pub fn pass(&self) -> bool {
        self.report.as_ref().is_ok_and(|report| report.pass)
    }

    /// Names of the failed checks (or "error").
    pub fn failed_checks(&self) -> Vec<String> {
        match &self.report {
            Ok(report) => report.failures().map(|check| check.name.clone()).collect(),
            Err(_) => vec!["error".into()],
        }
    }
}

/// Runs every seed in `seeds` on up to `threads` threads; the outcomes come
/// back in the order of `seeds`.
pub fn run_seeds(
    scenario: &Scenario,
    seeds: &[u64],
    threads: usize,
    replay: &str,
) -> Vec<SeedOutcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SeedOutcome>>> = Mutex::new(vec![None; seeds.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, seeds.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(index) else {
                        break;
                    };
                    let report =
                        crate::run(scenario, seed, replay).map_err(|error| format!("{error:#}"));
                    let outcome = SeedOutcome { seed, report };
                    // A poisoned lock means another run panicked; keep going.
                    let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                    results[index] = Some(outcome);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|outcome| outcome.expect("every seed ran"))
        .collect()
}

/// Shrinks `scenario`'s timeline while the run under `seed` still fails
/// `check` (ddmin over the timeline entries). Returns the smallest failing
/// scenario found and how many runs it took.
pub fn minimize(scenario: &Scenario, seed: u64, check: &str) -> (Scenario, usize) {
    let fails = |entries: &[crate::scenario::TimelineEntry]| {
        let mut candidate = scenario.clone();
        candidate.timeline = entries.to_vec();
        crate::run(&candidate, seed, "")
            .is_ok_and(|report| report.failures().any(|failed| failed.name == check))
    };
    let mut entries = scenario.timeline.clone();
    let mut runs = 0;
    let mut granularity = 2;
    while entries.len() >= 2 && runs < MINIMIZE_RUNS_MAX {
        let chunk = entries.len().div_ceil(granularity);
        let mut reduced = false;
        for start in (0..entries.len()).step_by(chunk) {
            if runs >= MINIMIZE_RUNS_MAX {
                break;
            }
            let complement: Vec<_> = entries[..start]
                .iter()
                .chain(&entries[(start + chunk).min(entries.len())..])
                .cloned()
                .collect();
            runs += 1;
            if fails(&complement) {
                entries = complement;
                granularity = (granularity - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if granularity >= entries.len() {
                break;
            }
            granularity = (granularity * 2).min(entries.len());
        }
    }
    if entries.len() == 1 && runs < MINIMIZE_RUNS_MAX {
        runs += 1;
        if fails(&[]) {
            entries.clear();
        }
    }
    let mut smallest = scenario.clone();
    smallest.timeline = entries;
    (smallest, runs)
}
