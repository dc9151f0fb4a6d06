//! Seeded randomness: one master seed split into named, independent streams.
//!
//! Every stream's seed is a hash of the master seed and the stream's name
//! (`node/db-3/2`, `net/db-3`, `timeline/60s/crash/0`), so adding a node or
//! editing one timeline entry changes only the draws of the streams it names;
//! the rest of the run keeps its randomness. The generator is xoshiro256++
//! seeded through SplitMix64: small, fast, and identical on every platform.
//! No OS randomness is ever read.

use std::time::Duration;

/// SplitMix64's finalizer: a good 64-bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the stream `name` under `master`.
pub(crate) fn stream_seed(master: u64, name: &str) -> u64 {
    // FNV-1a over the name, then mixed with the master seed.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(master ^ mix64(hash))
}

/// A small deterministic generator (xoshiro256++).
#[derive(Clone, Debug)]
pub(crate) struct SimRng {
    state: [u64; 4],
}

impl SimRng {
    /// A generator for the stream `name` of `master`.
    pub(crate) fn stream(master: u64, name: &str) -> Self {
        Self::new(stream_seed(master, name))
    }

    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(x)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (no draw when `p` is 0, so a lossless
    /// network does not consume randomness for loss).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        // Lemire's multiply-shift; the tiny bias is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[min, max]`.
    pub(crate) fn duration_between(&mut self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        let span = (max - min).as_nanos().min(u128::from(u64::MAX)) as u64;
        min + Duration::from_nanos(self.below(span.saturating_add(1)))
    }

    /// Exponential with the given mean.
    pub(crate) fn exponential(&mut self, mean: Duration) -> Duration {
        let u = self.unit();
        let nanos = -(1.0 - u).ln() * mean.as_nanos() as f64;
        Duration::from_nanos(nanos.min(3.6e12) as u64)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a1: Vec<u64> = (0..4)
            .map({
                let mut r = SimRng::stream(7, "net/a");
                move |_| r.next_u64()
            })
            .collect();
        let a2: Vec<u64> = (0..4)
            .map({
                let mut r = SimRng::stream(7, "net/a");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = SimRng::stream(7, "net/b");
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(stream_seed(7, "x"), stream_seed(8, "x"));
    }

    #[test]
    fn ranges_hold() {
        let mut r = SimRng::new(1);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let d = r.duration_between(Duration::from_millis(1), Duration::from_millis(2));
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(2));
        }
        assert!(!r.chance(0.0));
    }
}
