//! Order-free summaries of sets, for exchanges that first ask "do we hold
//! the same?" and send the whole only if not: the member table's push-pull
//! and telemetry anti-entropy. A summary is the wrapping sum of one hash
//! per row, so it does not depend on the order rows were learned in, and a
//! row that changes can be taken out and put back in O(1).
//!
//! Rows are hashed with 64-bit FNV-1a, which every agent computes alike,
//! then put through MurmurHash3's 64-bit finalizer. Without it the sums
//! collide on ordinary data: FNV-1a only multiplies after the last byte is
//! mixed in, so rows that differ in their last bytes (a sequence number, a
//! state) differ by a near-linear amount, and two maps holding (a at 2,
//! c at 2) and (a at 3, c at 1) summed to the same value (found by the
//! telemetry CRDT property test). The finalizer makes every row hash look
//! random, so two different sets collide with odds of about 2^-64.

use std::hash::Hasher;

/// Hashes one row of a summary; see the module docs.
#[derive(Default)]
pub(crate) struct SummaryRow(fnv::FnvHasher);

impl SummaryRow {
    /// Adds a field of variable length, prefixed by its length so that
    /// adjacent fields cannot trade bytes.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.write(&(bytes.len() as u64).to_le_bytes());
        self.0.write(bytes);
        self
    }

    /// Adds a number.
    pub(crate) fn number(&mut self, value: u64) -> &mut Self {
        self.0.write(&value.to_le_bytes());
        self
    }

    /// The row's hash.
    pub(crate) fn finish(&self) -> u64 {
        fmix64(self.0.finish())
    }
}

/// MurmurHash3's 64-bit finalizer: every input bit moves about half the
/// output bits.
pub(crate) fn fmix64(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}
