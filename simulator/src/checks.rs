//! The checks a run is judged by: safety properties checked after every
//! event, liveness properties checked after the last fault ends, and bounds
//! on measured metrics checked at the end.
//!
//! A check records only its *first* violation (time and detail): the first
//! is the one worth replaying; what follows is usually its consequence.

use std::time::Duration;

use serde::Serialize;

/// When a check is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// After every event: something bad never happens.
    Safety,
    /// After the last fault plus a bound: something good happens.
    Liveness,
    /// At the end: a measured metric stays within a bound.
    Bound,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// Stable name (`membership.converged`, ...).
    pub name: String,
    /// Safety, liveness or bound.
    pub kind: CheckKind,
    /// What it checks, in a sentence.
    pub description: String,
    /// Whether it passed.
    pub pass: bool,
    /// Simulated seconds at the first violation.
    pub violation_at_s: Option<f64>,
    /// What went wrong first.
    pub detail: Option<String>,
    /// For liveness: simulated seconds at which it first held.
    pub held_at_s: Option<f64>,
}

/// The checks of one run, by name.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    results: Vec<CheckResult>,
}

impl Checks {
    /// Registers a check; returns its handle.
    pub(crate) fn add(&mut self, name: &str, kind: CheckKind, description: &str) -> usize {
        self.results.push(CheckResult {
            name: name.into(),
            kind,
            description: description.into(),
            pass: true,
            violation_at_s: None,
            detail: None,
            held_at_s: None,
        });
        self.results.len() - 1
    }

    /// Records a violation (only the first is kept).
    pub(crate) fn violate(&mut self, check: usize, now: Duration, detail: impl FnOnce() -> String) {
        let result = &mut self.results[check];
        if result.pass {
            result.pass = false;
            result.violation_at_s = Some(now.as_secs_f64());
            result.detail = Some(detail());
        }
    }

    /// Records that a liveness property held at `now` (first time only).
    pub(crate) fn held(&mut self, check: usize, now: Duration) {
        let result = &mut self.results[check];
        if result.held_at_s.is_none() {
            result.held_at_s = Some(now.as_secs_f64());
        }
    }

    pub(crate) fn has_held(&self, check: usize) -> bool {
        self.results[check].held_at_s.is_some()
    }

    pub(crate) fn is_failed(&self, check: usize) -> bool {
        !self.results[check].pass
    }

    pub(crate) fn into_results(self) -> Vec<CheckResult> {
        self.results
    }
}
