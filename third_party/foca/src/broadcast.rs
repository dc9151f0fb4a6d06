/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
use alloc::{collections::BTreeMap, vec::Vec};
use core::cmp::Ordering;

use bytes::BufMut;

/// A type capable of decoding a (associated) broadcast from a buffer
/// and deciding whether to keep disseminating it for other members
/// of the cluster (when it's new information) or to discard it (when
/// its outdated/stale).
pub trait BroadcastHandler<T> {
    /// A unique identifier for the broadcasts this handler manages
    ///
    /// It should be able to compare itself against an arbitrary number
    /// of other [`Self::Key`] instances and decide wether it
    /// replaces it or not so conflicting/stale information isn't
    /// disseminated.
    type Key: Invalidates;

    /// The error type that `receive_item` may emit. Will be wrapped
    /// by [`crate::Error::CustomBroadcast`].
    type Error: core::error::Error + Send + Sync + 'static;

    /// Decodes a [`Self::Key`] from a buffer and either discards
    /// it or tells Foca to persist and disseminate it.
    ///
    /// `Sender` is `None` when you're adding broadcast data directly,
    /// via [`crate::Foca::add_broadcast`], otherwise it will be the
    /// address of the member that sent the data. Notice that Foca
    /// doesn't track the origin of packets- if you need it you
    /// have to add it to the data you're broadcasting.
    ///
    /// When you receive a broadcast you have to decide whether it's
    /// new information that needs to be disseminated (`Ok(Some(...))`)
    /// or not (`Ok(None)`).
    ///
    /// Always yielding `Some(...)` is wrong because Foca will never
    /// know when to stop sending this information to other members.
    ///
    /// Example: Assume your custom broadcast is a simple Set-Key-Value
    /// operation. When you receive it you should check if your map
    /// contains the Key-Value pair; If it didn't, you yield
    /// `Some`, otherwise the operation is stale, so you yield `None`.
    ///
    /// The `data` parameter is the exact data provided to
    /// [`crate::Foca::add_broadcast`]. When Foca receives N custom
    /// broadcasts at once, this gets called N times.
    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&T>,
    ) -> Result<Option<Self::Key>, Self::Error>;

    /// Decides whether Foca should add broadcast data to the message
    /// it's about to send to active member `T`.
    ///
    /// Normally when Foca sends a message it always tries to include
    /// custom broadcasts alongside the information it actually
    /// cares about; This allows implementations to override this
    /// logic with something else.
    ///
    /// Example: You are running a heterogeneous cluster and some nodes
    /// are always very busy and you'd rather they never have to deal
    /// with the extra cpu/bandwidth cost of receiving/sending
    /// your custom broadcasts.
    ///
    /// Returning `true` tells Foca to proceed as it would normally,
    /// including broadcasts in the messages it sends when it can.
    ///
    /// Returning `false` tells Foca to not include such broadcasts
    /// in the message. It does *not* prevent the message from being
    /// sent, just keeps Foca from attaching extra data to them.
    fn should_add_broadcast_data(&self, _member: &T) -> bool {
        true
    }

    /// (Shoal's patch) How many times a broadcast received from another
    /// member is passed on; `None` (the default): `Config::max_transmissions`.
    ///
    /// Broadcasts added with [`crate::Foca::add_broadcast`] are always sent
    /// `max_transmissions` times. A lower count suits data that something
    /// else repairs (an anti-entropy exchange): most of the copies a member
    /// receives of a relayed broadcast are then ones it already holds.
    fn relay_transmissions(&self, _key: &Self::Key) -> Option<core::num::NonZeroU8> {
        None
    }
}

/// A type that's able to look at another and decide wether it's
/// newer/fresher (i.e. invalidates) than it.
///
/// As you send/receive broadcasts, Foca will hold them for a while
/// as it disseminates the data to other cluster members. This trait
/// helps with replacing data that hasn't been fully disseminated
/// yet but you already know it's stale.
///
/// Example: Assume a versioned broadcast like `{key,version,...}`;
/// After you receive `{K, 0, ...}` and keep it, Foca will be
/// disseminating it. Soon after you receive `{K, 1, ...}` which
/// is a newer version for this broadcast. This trait enables
/// Foca to immediately stop disseminating the previous version,
/// even if it hasn't sent it to everyone it can yet.
pub trait Invalidates {
    /// When `item.invalidates(&other)` it means that Foca will
    /// keep `item` and discard `other` from its dissemination
    /// backlog.
    fn invalidates(&self, other: &Self) -> bool;
}

impl Invalidates for &[u8] {
    fn invalidates(&self, other: &Self) -> bool {
        self.eq(other)
    }
}

pub(crate) struct Broadcasts<V> {
    flip: alloc::collections::BinaryHeap<Slot>,
    flop: alloc::collections::BinaryHeap<Slot>,
    // (Shoal's patch) The entries themselves, where the heaps' slots
    // point; `None` where a freed slot waits in `free` for reuse. The
    // heaps order small slots, so that their sifts move 24 bytes instead
    // of the whole entry (a key as large as an identity, and the data's
    // `Vec`): moving entries was half the cost of `fill`, itself about a
    // tenth of a 1,000-member cluster's boot. The order is the same as
    // before, so what is sent does not change.
    entries: Vec<Option<Entry<V>>>,
    free: Vec<usize>,
    // (Shoal's patch) How many entries of `flip` have each data length,
    // so that `fill` stops as soon as nothing left in `flip` could fit.
    // Before, every send popped (and pushed back) the whole backlog
    // unless the packet happened to fill exactly: O(n log n) per message
    // with n pending broadcasts, the second largest cost of a
    // 1,000-member cluster's boot. What is sent does not change: `fill`
    // still takes, in priority order, every entry that fits.
    lengths: BTreeMap<usize, usize>,
}

impl<T> Broadcasts<T>
where
    T: Invalidates,
{
    pub(crate) fn new() -> Self {
        Self {
            flip: Default::default(),
            flop: Default::default(),
            entries: Vec::new(),
            free: Vec::new(),
            lengths: BTreeMap::new(),
        }
    }

    fn count_length(lengths: &mut BTreeMap<usize, usize>, len: usize) {
        *lengths.entry(len).or_insert(0) += 1;
    }

    fn uncount_length(lengths: &mut BTreeMap<usize, usize>, len: usize) {
        if let Some(count) = lengths.get_mut(&len) {
            *count -= 1;
            if *count == 0 {
                lengths.remove(&len);
            }
        }
    }

    /// Whether some entry left in `flip` fits in `room` bytes with
    /// `overhead` bytes of framing.
    fn any_fits(&self, room: usize, overhead: usize) -> bool {
        self.lengths
            .keys()
            .next()
            .is_some_and(|&shortest| room >= shortest + overhead)
    }

    /// Pops the next entry of `flip` in priority order.
    fn pop(&mut self) -> Option<Slot> {
        let slot = self.flip.pop()?;
        Self::uncount_length(&mut self.lengths, slot.len);
        Some(slot)
    }

    /// Returns the entries `fill` kept to `flip`.
    fn put_back_flop(&mut self) {
        for slot in &self.flop {
            Self::count_length(&mut self.lengths, slot.len);
        }
        self.flip.append(&mut self.flop);
    }

    /// Drops the entry at `at` and frees its slot.
    fn release(&mut self, at: usize) {
        self.entries[at] = None;
        self.free.push(at);
    }

    pub(crate) fn len(&self) -> usize {
        self.flip.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.flip.is_empty()
    }

    pub(crate) fn add_or_replace(&mut self, item: T, data: Vec<u8>, max_tx: usize) {
        debug_assert!(max_tx > 0);
        debug_assert!(self.flop.is_empty());
        let mut replaced = Vec::new();
        for (at, entry) in self.entries.iter_mut().enumerate() {
            if entry
                .as_ref()
                .is_some_and(|entry| item.invalidates(&entry.item))
            {
                *entry = None;
                replaced.push(at);
            }
        }
        if !replaced.is_empty() {
            let lengths = &mut self.lengths;
            self.flip.retain(|slot| {
                let keep = !replaced.contains(&slot.at);
                if !keep {
                    Self::uncount_length(lengths, slot.len);
                }
                keep
            });
            self.free.append(&mut replaced);
        }
        let len = data.len();
        Self::count_length(&mut self.lengths, len);
        let entry = Some(Entry { item, data });
        let at = if let Some(at) = self.free.pop() {
            self.entries[at] = entry;
            at
        } else {
            self.entries.push(entry);
            self.entries.len() - 1
        };
        self.flip.push(Slot {
            remaining_tx: max_tx,
            len,
            at,
        });
    }

    pub(crate) fn fill(&mut self, buffer: impl BufMut, max_items: usize) -> usize {
        self.fill_framed(buffer, max_items, false)
    }

    pub(crate) fn fill_with_len_prefix(&mut self, buffer: impl BufMut, max_items: usize) -> usize {
        self.fill_framed(buffer, max_items, true)
    }

    /// Takes into `buffer`, in priority order, every entry that fits (each
    /// after its length as a `u16` if `len_prefix`), up to `max_items`.
    fn fill_framed(
        &mut self,
        mut buffer: impl BufMut,
        max_items: usize,
        len_prefix: bool,
    ) -> usize {
        if self.flip.is_empty() {
            return 0;
        }
        debug_assert!(self.flop.is_empty());
        let overhead = if len_prefix { 2 } else { 0 };

        let mut num_taken = 0;
        let mut remaining = max_items;

        while buffer.has_remaining_mut()
            && remaining > 0
            && self.any_fits(buffer.remaining_mut(), overhead)
        {
            let Some(mut slot) = self.pop() else {
                break;
            };
            debug_assert!(slot.remaining_tx > 0);

            if buffer.remaining_mut() >= slot.len + overhead {
                num_taken += 1;
                remaining -= 1;

                let entry = self.entries[slot.at]
                    .as_ref()
                    .expect("a slot in a heap is live");
                if len_prefix {
                    debug_assert!(u16::try_from(slot.len).is_ok());
                    buffer.put_u16(slot.len as u16);
                }
                buffer.put_slice(&entry.data);
                slot.remaining_tx -= 1;
            }

            if slot.remaining_tx > 0 {
                self.flop.push(slot);
            } else {
                self.release(slot.at);
            }
        }

        self.put_back_flop();

        num_taken
    }

    /// (Shoal's patch) The heaps and the slab agree: each slot points at
    /// a live entry of its length, no two at the same one, and every other
    /// entry of the slab is free.
    #[cfg(test)]
    fn assert_consistent(&self) {
        assert!(self.flop.is_empty());
        let mut pointed = alloc::vec![false; self.entries.len()];
        for slot in self.flip.iter() {
            let entry = self.entries[slot.at]
                .as_ref()
                .expect("a slot points at a live entry");
            assert_eq!(entry.data.len(), slot.len);
            assert!(
                !core::mem::replace(&mut pointed[slot.at], true),
                "one slot per entry"
            );
        }
        for &at in &self.free {
            assert!(
                self.entries[at].is_none() && !pointed[at],
                "a free entry is empty"
            );
        }
        assert_eq!(self.flip.len() + self.free.len(), self.entries.len());
    }

    /// Every pending entry's key and data, in no particular order.
    #[cfg(test)]
    fn pending(&self) -> impl Iterator<Item = (&T, &[u8])> {
        self.entries
            .iter()
            .flatten()
            .map(|entry| (&entry.item, &entry.data[..]))
    }
}

/// A pending broadcast.
struct Entry<T> {
    item: T,
    data: Vec<u8>,
}

/// (Shoal's patch) An entry's place in the send order: the most
/// transmissions left first, then the longest; `at` is where the entry is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    remaining_tx: usize,
    len: usize,
    at: usize,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.remaining_tx
            .cmp(&other.remaining_tx)
            .then_with(|| self.len.cmp(&other.len))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    struct Key(&'static str);

    impl Invalidates for Key {
        fn invalidates(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    #[test]
    fn piggyback_behaviour() {
        let max_tx = 5;
        let mut piggyback = Broadcasts::new();

        assert!(piggyback.is_empty(), "Piggyback starts empty");

        piggyback.add_or_replace(Key("AA"), b"AAabc".to_vec(), max_tx);

        assert_eq!(1, piggyback.len());

        piggyback.add_or_replace(Key("AA"), b"AAcba".to_vec(), max_tx);

        assert_eq!(
            1,
            piggyback.len(),
            "add_or_replace with same key should replace"
        );

        let mut buf = Vec::new();

        for _i in 0..max_tx {
            buf.clear();
            let num_items = piggyback.fill(&mut buf, usize::MAX);
            assert_eq!(1, num_items);
            assert_eq!(
                b"AAcba",
                &buf[..],
                "Should transmit an item at most max_tx times"
            );
        }

        assert!(
            piggyback.is_empty(),
            "Should remove item after being used max_tx times"
        );
    }

    #[test]
    fn fill_does_nothing_if_buffer_full() {
        let mut piggyback = Broadcasts::new();
        piggyback.add_or_replace(Key("a "), b"a super long value".to_vec(), 1);

        let buf = bytes::BytesMut::new();
        let mut limited = buf.limit(5);

        let num_items = piggyback.fill(&mut limited, usize::MAX);

        assert_eq!(0, num_items);
        assert_eq!(5, limited.remaining_mut());
        assert_eq!(1, piggyback.len());
    }

    #[test]
    fn piggyback_consumes_largest_first() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("00"), b"00hi".to_vec(), max_tx);
        piggyback.add_or_replace(Key("01"), b"01hello".to_vec(), max_tx);
        piggyback.add_or_replace(Key("02"), b"02hey".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, usize::MAX);

        assert_eq!(3, num_items);
        assert_eq!(b"01hello02hey00hi", &buf[..]);
    }

    #[test]
    fn highest_max_tx_is_consumed_first() {
        let mut piggyback = Broadcasts::new();

        // 3 items, same byte size, distinct max_tx
        piggyback.add_or_replace(Key("10"), b"100".to_vec(), 1);
        piggyback.add_or_replace(Key("20"), b"200".to_vec(), 2);
        piggyback.add_or_replace(Key("30"), b"300".to_vec(), 3);

        let mut buf = Vec::new();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200100", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300", &buf[..]);

        assert_eq!(0, piggyback.len());
    }

    #[test]
    fn piggyback_respects_limit() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("fo"), b"foo".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"bar".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"baz".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = piggyback.fill(&mut buf, 2);
        assert_eq!(2, num_items);
    }

    #[test]
    fn fill_with_len_prefix() {
        let mut bcs = Broadcasts::new();

        bcs.add_or_replace(Key("fo"), b"foo".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"barr".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"bazz".to_vec(), 10);

        let mut buf = Vec::new();
        let num_items = bcs.fill_with_len_prefix(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = bcs.fill_with_len_prefix(&mut buf, 2);
        assert_eq!(2, num_items);

        use bytes::Buf;
        let mut buf = &buf[..];
        assert_eq!(4, buf.get_u16());
        assert_eq!(&b"bazz"[..], &buf[..4]);
        buf.advance(4);
        assert_eq!(3, buf.get_u16());
        assert_eq!(&b"foo"[..], &buf[..3]);
        buf.advance(3);
        assert!(buf.is_empty());
    }

    /// (Shoal's patch) The slots over a slab send exactly what the heaps
    /// of whole entries sent: `Model` is that earlier backlog (foca's,
    /// with patch 2), driven in lockstep with random adds, replacements
    /// and fills of both kinds.
    #[test]
    fn slots_send_what_whole_entries_sent() {
        use bytes::BufMut;
        use rand::{RngExt, SeedableRng, rngs::SmallRng};

        struct ModelEntry {
            remaining_tx: usize,
            data: Vec<u8>,
            item: Key,
        }
        impl PartialEq for ModelEntry {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other).is_eq()
            }
        }
        impl Eq for ModelEntry {}
        impl PartialOrd for ModelEntry {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for ModelEntry {
            fn cmp(&self, other: &Self) -> Ordering {
                (self.remaining_tx, self.data.len()).cmp(&(other.remaining_tx, other.data.len()))
            }
        }
        #[derive(Default)]
        struct Model(alloc::collections::BinaryHeap<ModelEntry>);
        impl Model {
            fn add_or_replace(&mut self, item: Key, data: Vec<u8>, max_tx: usize) {
                self.0.retain(|node| !item.invalidates(&node.item));
                self.0.push(ModelEntry {
                    remaining_tx: max_tx,
                    data,
                    item,
                });
            }
            fn fill(
                &mut self,
                mut buffer: impl BufMut,
                max_items: usize,
                overhead: usize,
            ) -> usize {
                let mut kept = alloc::collections::BinaryHeap::new();
                let (mut taken, mut remaining) = (0, max_items);
                while buffer.has_remaining_mut()
                    && remaining > 0
                    && self
                        .0
                        .iter()
                        .any(|n| buffer.remaining_mut() >= n.data.len() + overhead)
                {
                    let Some(mut node) = self.0.pop() else { break };
                    if buffer.remaining_mut() >= node.data.len() + overhead {
                        taken += 1;
                        remaining -= 1;
                        if overhead == 2 {
                            buffer.put_u16(node.data.len() as u16);
                        }
                        buffer.put_slice(&node.data);
                        node.remaining_tx -= 1;
                    }
                    if node.remaining_tx > 0 {
                        kept.push(node);
                    }
                }
                self.0.append(&mut kept);
                taken
            }
        }

        const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for seed in 0..50 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let (mut bcs, mut model) = (Broadcasts::<Key>::new(), Model::default());
            for round in 0..500u32 {
                for _ in 0..rng.random_range(0..3) {
                    let key = KEYS[rng.random_range(0..KEYS.len())];
                    let mut data = key.as_bytes().to_vec();
                    data.extend_from_slice(&round.to_be_bytes());
                    data.resize(data.len() + rng.random_range(0..30), b'.');
                    let max_tx = rng.random_range(1..5);
                    bcs.add_or_replace(Key(key), data.clone(), max_tx);
                    model.add_or_replace(Key(key), data, max_tx);
                }
                let (room, max_items) = (rng.random_range(0..100), rng.random_range(1..6));
                let prefixed = rng.random_range(0..2) == 1;
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                let taken = if prefixed {
                    bcs.fill_with_len_prefix((&mut ours).limit(room), max_items)
                } else {
                    bcs.fill((&mut ours).limit(room), max_items)
                };
                let overhead = if prefixed { 2 } else { 0 };
                let expected = model.fill((&mut theirs).limit(room), max_items, overhead);
                assert_eq!(
                    (taken, &ours),
                    (expected, &theirs),
                    "seed {seed}, round {round}"
                );
                assert_eq!(bcs.len(), model.0.len());
                bcs.assert_consistent();
            }
        }
    }

    /// (Shoal's patch) Stopping a fill early leaves nothing behind that
    /// would have fit: after every fill, each pending entry is longer than
    /// the room left (or the item limit was reached), the length counts
    /// match the backlog, and every entry not replaced is sent exactly
    /// `max_tx` times.
    #[test]
    fn fill_stops_only_when_nothing_left_fits() {
        use bytes::BufMut;
        use rand::{RngExt, SeedableRng, rngs::SmallRng};

        const KEYS: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        let mut rng = SmallRng::seed_from_u64(11);
        let mut bcs = Broadcasts::<Key>::new();
        let mut sent = alloc::collections::BTreeMap::<Vec<u8>, usize>::new();
        let mut replaced = alloc::collections::BTreeSet::<Vec<u8>>::new();
        let mut early_stops = 0;
        for round in 0..5_000u32 {
            if rng.random_range(0..3) == 0 {
                let key = KEYS[rng.random_range(0..KEYS.len())];
                // Unique data: the key, then the round, then padding.
                let mut data = key.as_bytes().to_vec();
                data.extend_from_slice(&round.to_be_bytes());
                data.resize(data.len() + rng.random_range(0..40), b'.');
                for (_, data) in bcs.pending().filter(|(item, _)| item.0 == key) {
                    replaced.insert(data.to_vec());
                }
                bcs.add_or_replace(Key(key), data, 3);
            }
            let room = rng.random_range(0..120);
            let max_items = rng.random_range(1..8);
            let prefixed = rng.random_range(0..2) == 1;
            let mut buf = Vec::new();
            let mut limited = (&mut buf).limit(room);
            let taken = if prefixed {
                bcs.fill_with_len_prefix(&mut limited, max_items)
            } else {
                bcs.fill(&mut limited, max_items)
            };
            let mut this_fill = Vec::new();
            let mut rest = &buf[..];
            while !rest.is_empty() {
                // Data is key (1 byte) + round (4 bytes) + padding dots.
                let len = if prefixed {
                    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    rest = &rest[2..];
                    len
                } else {
                    5 + rest[5..].iter().take_while(|&&b| b == b'.').count()
                };
                this_fill.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
            assert_eq!(taken, this_fill.len());
            let left = room - buf.len();
            let overhead = if prefixed { 2 } else { 0 };
            let mut passed_over = bcs
                .pending()
                .filter(|(_, data)| !this_fill.iter().any(|sent| sent == data));
            if taken < max_items {
                assert!(
                    passed_over.all(|(_, data)| data.len() + overhead > left),
                    "an entry that fits was left behind"
                );
                if !bcs.is_empty() && left > 0 {
                    early_stops += 1;
                }
            }
            let mut counted = alloc::collections::BTreeMap::new();
            for (_, data) in bcs.pending() {
                *counted.entry(data.len()).or_insert(0) += 1;
            }
            assert_eq!(counted, bcs.lengths);
            bcs.assert_consistent();
            for data in this_fill {
                *sent.entry(data).or_insert(0) += 1;
            }
        }
        // Drain what is left.
        while !bcs.is_empty() {
            let mut buf = Vec::new();
            bcs.fill_with_len_prefix(&mut buf, usize::MAX);
            let mut rest = &buf[..];
            while !rest.is_empty() {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                *sent.entry(rest[2..2 + len].to_vec()).or_insert(0) += 1;
                rest = &rest[2 + len..];
            }
        }
        assert!(early_stops > 100, "{early_stops}");
        for (data, times) in &sent {
            if !replaced.contains(data) {
                assert_eq!(*times, 3, "{data:?}");
            }
        }
    }
}
