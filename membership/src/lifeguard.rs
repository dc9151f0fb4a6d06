//! Lifeguard on top of foca: the local health multiplier and suspicion
//! timeouts that shrink as independent accusers agree.
//!
//! foca implements plain SWIM. Lifeguard (Dadgar et al., 2018) adds two
//! things that stop a slow node from accusing healthy ones:
//!
//! * **Local health.** A score that rises when this node shows signs of being
//!   the slow one (its probes go unanswered, timers fire late, others suspect
//!   it) and falls when its probes succeed. Probe and suspicion timeouts are
//!   stretched by `1 + score`.
//! * **Suspicion confirmations.** A suspicion starts with a long timeout that
//!   shrinks, logarithmically, as independent members report that they too
//!   failed to reach the suspect.
//!
//! Both are pure arithmetic here; `swim.rs` feeds the events in.

use std::time::Duration;

/// The local health score: 0 when healthy, up to a configured maximum.
#[derive(Clone, Debug)]
pub struct LocalHealth {
    score: u32,
    score_max: u32,
}

impl LocalHealth {
    /// A healthy node whose score never exceeds `score_max`.
    pub fn new(score_max: u32) -> Self {
        Self {
            score: 0,
            score_max,
        }
    }

    /// The current score.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// Something suggests this node is slow: raise the score by one.
    pub fn worse(&mut self) {
        self.score = (self.score + 1).min(self.score_max);
    }

    /// A probe succeeded in time: lower the score by one.
    pub fn better(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// `timeout` stretched by `1 + score`.
    pub fn scale(&self, timeout: Duration) -> Duration {
        timeout.saturating_mul(1 + self.score)
    }
}

/// How long a suspicion lasts before the suspect is declared down, given
/// how many independent accusers (besides the first) agree.
///
/// The timeout falls from `timeout_max` with no confirmation to
/// `timeout_min` with `confirmations_expected` of them, along
/// `log(c + 1) / log(k + 1)` as in Lifeguard; with `k = 0` (too few members
/// to expect confirmations) it is `timeout_min` at once.
pub fn suspicion_timeout(
    timeout_min: Duration,
    timeout_max: Duration,
    confirmations: u32,
    confirmations_expected: u32,
) -> Duration {
    debug_assert!(timeout_min <= timeout_max);
    if confirmations_expected == 0 || confirmations >= confirmations_expected {
        return timeout_min;
    }
    let fraction = f64::from(confirmations + 1).ln() / f64::from(confirmations_expected + 1).ln();
    let span = timeout_max.saturating_sub(timeout_min).as_secs_f64();
    let timeout = timeout_max.as_secs_f64() - span * fraction;
    // Round to whole milliseconds so every platform computes the same value.
    let timeout = Duration::from_millis((timeout * 1000.0).round() as u64);
    timeout.clamp(timeout_min, timeout_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(8);

    #[test]
    fn health_is_bounded_both_ways() {
        let mut health = LocalHealth::new(3);
        health.better();
        assert_eq!(health.score(), 0);
        for _ in 0..10 {
            health.worse();
        }
        assert_eq!(health.score(), 3);
        assert_eq!(
            health.scale(Duration::from_millis(500)),
            Duration::from_secs(2)
        );
        health.better();
        assert_eq!(health.score(), 2);
    }

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations() {
        let timeouts: Vec<Duration> = (0..=4).map(|c| suspicion_timeout(MIN, MAX, c, 3)).collect();
        assert_eq!(timeouts[0], MAX);
        assert!(
            timeouts
                .windows(2)
                .all(|pair| pair[0] > pair[1] || pair[1] == MIN)
        );
        assert_eq!(timeouts[3], MIN);
        assert_eq!(timeouts[4], MIN);
        // No confirmations expected: the short timeout at once.
        assert_eq!(suspicion_timeout(MIN, MAX, 0, 0), MIN);
    }
}
