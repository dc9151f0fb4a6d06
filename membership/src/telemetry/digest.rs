//! The record entries of an anti-entropy digest in their compact wire form:
//! which version of each node's record the sender holds, in node order.
//!
//! ```text
//! entry    node id length, node id bytes, generation, sequence
//!          (each number an unsigned LEB128 varint)
//! entries  concatenated, node ids strictly increasing (as bytes, which is
//!          how `NodeId`s order)
//! ```
//!
//! Why a format of its own rather than a MessagePack map: a digest names
//! every record held (≈ 12 bytes a node with ids like `db-123`) and its
//! receiver reads it twice (checks it, then walks it); written and read in
//! node order, it is walked in step with the map (a merge join), so reading
//! one costs neither an allocation nor a tree insert per entry, and
//! comparing it with the map no lookups (only the ids the receiver wants
//! are copied out, at most one `Reply`'s worth).
//! [`DigestEntries::parse`] checks the whole of a received digest (well
//! formed, UTF-8 ids, strictly increasing) before anything is done with it.

use std::cmp::Ordering;

use super::TelemetryError;
use super::record::{Sequence, Version};
use crate::{Generation, NodeId};

/// One entry of a digest: a node and the version of its record held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestEntry<'a> {
    node_id: &'a [u8],
    /// The version held.
    pub version: Version,
}

impl<'a> DigestEntry<'a> {
    /// The node, as the bytes of its id.
    pub fn node_id_bytes(&self) -> &'a [u8] {
        self.node_id
    }

    /// The node, read as a node id is read from the wire (its bytes were
    /// checked to be UTF-8 when the digest was parsed).
    pub fn node_id(&self) -> NodeId {
        NodeId::from_str_unchecked(std::str::from_utf8(self.node_id).expect("checked when parsed"))
    }

    /// Orders this entry's node against `node_id` (node ids order as their
    /// bytes do).
    pub fn cmp_node(&self, node_id: &NodeId) -> Ordering {
        self.node_id.cmp(node_id.as_str().as_bytes())
    }
}

/// The record entries of a digest in their wire form, checked: well formed
/// and in strictly increasing node order, so they can be walked in step
/// with the map. Iterating costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestEntries<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> DigestEntries<'a> {
    /// Entries this agent wrote ([`DigestWriter`]): known good.
    pub(crate) fn from_written(bytes: &'a [u8], len: usize) -> Self {
        debug_assert_eq!(Self::parse(bytes).map(|entries| entries.len), Ok(len));
        Self { bytes, len }
    }

    /// Checks `bytes` (see the module docs for the format): refused if an
    /// entry is cut short, a number overflows, a node id is not UTF-8, or
    /// node ids are not strictly increasing.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TelemetryError> {
        let malformed = |reason: &str| TelemetryError::Malformed {
            what: "digest",
            reason: reason.to_owned(),
        };
        let mut rest = bytes;
        let mut previous: Option<&[u8]> = None;
        let mut len = 0;
        while !rest.is_empty() {
            let entry = take_entry(&mut rest).ok_or_else(|| malformed("truncated entry"))?;
            if previous.is_some_and(|previous| previous >= entry.node_id) {
                return Err(malformed("node ids out of order"));
            }
            if std::str::from_utf8(entry.node_id).is_err() {
                return Err(malformed("node id not UTF-8"));
            }
            previous = Some(entry.node_id);
            len += 1;
        }
        Ok(Self { bytes, len })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries in node order.
    pub fn iter(&self) -> DigestIter<'a> {
        DigestIter { rest: self.bytes }
    }

    /// The entries' wire form.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Iterator over [`DigestEntries`], in node order.
#[derive(Clone, Debug)]
pub struct DigestIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for DigestIter<'a> {
    type Item = DigestEntry<'a>;

    fn next(&mut self) -> Option<DigestEntry<'a>> {
        let entry = take_entry(&mut self.rest);
        // Entries were checked when parsed (or written by us).
        debug_assert!(entry.is_some() || self.rest.is_empty());
        entry
    }
}

/// Reads one digest entry off the front of `rest`.
fn take_entry<'a>(rest: &mut &'a [u8]) -> Option<DigestEntry<'a>> {
    let id_len = usize::try_from(take_varint(rest)?).ok()?;
    if id_len > rest.len() {
        return None;
    }
    let (node_id, after) = rest.split_at(id_len);
    *rest = after;
    let generation = Generation(take_varint(rest)?);
    let sequence = Sequence(take_varint(rest)?);
    Some(DigestEntry {
        node_id,
        version: Version {
            generation,
            sequence,
        },
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An unsigned LEB128 number off the front of `rest`; `None` if cut short
/// or over 64 bits.
fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for index in 0..10 {
        let (&byte, after) = rest.split_first()?;
        *rest = after;
        // The tenth byte holds bit 63 only.
        if index == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Writes digest entries in node order.
#[derive(Debug)]
pub(crate) struct DigestWriter {
    bytes: Vec<u8>,
    len: usize,
    #[cfg(debug_assertions)]
    last: Option<NodeId>,
}

impl DigestWriter {
    /// A writer with room for about `capacity` entries.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity * 16),
            len: 0,
            #[cfg(debug_assertions)]
            last: None,
        }
    }

    /// Appends an entry; `node_id` must come after every one before.
    pub(crate) fn push(&mut self, node_id: &NodeId, version: Version) {
        #[cfg(debug_assertions)]
        {
            assert!(self.last.as_ref().is_none_or(|last| last < node_id));
            self.last = Some(node_id.clone());
        }
        let id = node_id.as_str().as_bytes();
        put_varint(&mut self.bytes, id.len() as u64);
        self.bytes.extend_from_slice(id);
        put_varint(&mut self.bytes, version.generation.0);
        put_varint(&mut self.bytes, version.sequence.0);
        self.len += 1;
    }

    /// The entries written and how many there are.
    pub(crate) fn finish(self) -> (Vec<u8>, usize) {
        (self.bytes, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::wire::tests::{id, version};

    fn written(entries: &[(&str, Version)]) -> Vec<u8> {
        let mut writer = DigestWriter::with_capacity(entries.len());
        for (node, version) in entries {
            writer.push(&id(node), *version);
        }
        writer.finish().0
    }

    #[test]
    fn telemetry_digest_entries_round_trip_and_are_checked() {
        let entries = [
            ("a", version(1, 1)),
            ("b", version(u64::MAX, u64::MAX)),
            ("bb", version(0, 300)),
        ];
        let bytes = written(&entries);
        let parsed = DigestEntries::parse(&bytes).unwrap();
        assert_eq!(parsed.len(), 3);
        let read: Vec<(&[u8], Version)> = parsed
            .iter()
            .map(|entry| (entry.node_id_bytes(), entry.version))
            .collect();
        let expected: Vec<(&[u8], Version)> = entries
            .iter()
            .map(|(node, version)| (node.as_bytes(), *version))
            .collect();
        assert_eq!(read, expected);

        // Out of order, repeated, truncated, overlong numbers: refused.
        let mut out_of_order = Vec::new();
        let mut repeated = Vec::new();
        for (bytes, nodes) in [(&mut out_of_order, ["b", "a"]), (&mut repeated, ["a", "a"])] {
            for node in nodes {
                put_varint(bytes, 1);
                bytes.extend_from_slice(node.as_bytes());
                put_varint(bytes, 1);
                put_varint(bytes, 1);
            }
        }
        let full = &bytes[..];
        let overlong = [
            1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 1,
        ];
        let long_id = [0x05, b'a', 1, 1];
        let not_utf8 = [1, 0xff, 1, 1];
        for bad in [
            &out_of_order[..],
            &repeated[..],
            &full[..full.len() - 1],
            &overlong[..],
            &long_id[..],
            &not_utf8[..],
        ] {
            assert!(
                matches!(
                    DigestEntries::parse(bad),
                    Err(TelemetryError::Malformed { what: "digest", .. })
                ),
                "{bad:x?}"
            );
        }
        assert!(DigestEntries::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn telemetry_varints_round_trip() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            let mut rest = &bytes[..];
            assert_eq!(take_varint(&mut rest), Some(value));
            assert!(rest.is_empty());
        }
    }
}
